//! Many appenders at once keep several writes of one log in flight: every
//! batch lands once, in offset order, readable while writes go on, across
//! segment rolls, after a clean close and after an unclean stop.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use sluice_engine::{Durability, LeaderEpoch, Log, LogConfig, LogContext, Offset, TailCacheBudget};

use crate::{all_batches, batch, batches_of, run, seed, Rng};

const TASKS: u64 = 16;
const GROUPS: u64 = 30;

fn config() -> LogConfig {
    LogConfig {
        // A few segments per round, each file grown by several allocations.
        segment_bytes: 3 << 20,
        index_interval_bytes: 4096,
        message_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

/// A tail cache too small for most writes, so reads also reach the disk.
async fn open_small_cache(dir: &Path) -> Log {
    sluice_engine::prime_direct_io(dir, ".probe")
        .await
        .expect("direct I/O works here");
    let context = LogContext {
        cache_budget: Rc::new(TailCacheBudget::new(24 << 10)),
        ..LogContext::default()
    };
    Log::open(dir.to_path_buf(), config(), context)
        .await
        .expect("open log")
}

/// Appends from `TASKS` concurrent tasks, each `GROUPS` groups of 1-5
/// batches of random sizes, some synced; returns every batch as stored.
async fn append_concurrently(log: &Rc<Log>, seed: u64, round: u8) -> Vec<(i64, i32, u8)> {
    let stored = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let log = log.clone();
            let stored = stored.clone();
            glommio::spawn_local(async move {
                let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut last_end = -1;
                for g in 0..GROUPS {
                    let fill = ((t * GROUPS + g) % 200) as u8 + round;
                    let group: Vec<_> = (0..1 + rng.below(5))
                        .map(|_| {
                            let count = 1 + rng.below(3) as usize;
                            batch(count, 1 + rng.below(9000) as usize, g as i64, fill)
                        })
                        .collect();
                    let durability = if rng.below(4) == 0 {
                        Durability::Synced
                    } else {
                        Durability::Written
                    };
                    // Staggered arrivals find writes of others in flight.
                    if rng.below(2) == 0 {
                        glommio::timer::sleep(Duration::from_micros(rng.below(300))).await;
                    }
                    let out = log
                        .append(&group, LeaderEpoch(3), durability)
                        .await
                        .unwrap();
                    assert!(
                        out.base_offset.0 > last_end,
                        "a task's appends keep their order"
                    );
                    assert!(
                        log.high_watermark() > out.last_offset,
                        "an append returns once written"
                    );
                    if durability == Durability::Synced {
                        assert!(
                            log.synced_offset() > out.last_offset,
                            "a synced append is synced"
                        );
                    }
                    last_end = out.last_offset.0;
                    let mut at = out.base_offset.0;
                    for b in &group {
                        let v = sluice_engine::BatchView::parse(b).unwrap().unwrap();
                        stored.borrow_mut().push((at, v.record_count, fill));
                        at += v.record_count as i64;
                    }
                    assert_eq!(at, out.last_offset.0 + 1, "the group's offsets are dense");
                }
            })
        })
        .collect();
    // A reader follows the writers: it never sees a batch that is not
    // wholly written, and what it sees stays.
    let appending = Rc::new(Cell::new(true));
    let reader = {
        let log = log.clone();
        let appending = appending.clone();
        glommio::spawn_local(async move {
            let mut seen = Vec::new();
            let mut at = log.high_watermark().0;
            for _ in 0..1_000_000 {
                let hw = log.high_watermark().0;
                if at < hw {
                    let got = batches_of(&log.read(Offset(at), 64 << 10).await.unwrap().bytes);
                    let last = *got.last().unwrap();
                    at = last.0 + last.1 as i64;
                    seen.extend(got);
                } else if !appending.get() {
                    return seen;
                } else {
                    glommio::timer::sleep(Duration::from_micros(200)).await;
                }
            }
            panic!("the reader did not catch up");
        })
    };
    for t in tasks {
        t.await;
    }
    appending.set(false);
    let followed = reader.await;
    let mut stored = Rc::try_unwrap(stored).unwrap().into_inner();
    stored.sort();
    let first = stored[0].0;
    let mut next = first;
    for (base, count, _) in &stored {
        assert_eq!(*base, next, "offsets are dense across tasks");
        next += *count as i64;
    }
    assert_eq!(
        followed, stored,
        "a reader following the writers saw every batch once, in order"
    );
    stored
}

#[test]
fn pipelined_appends_land_once_in_order_and_survive_reopening() {
    let seed = seed();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = Rc::new(open_small_cache(&dir).await);
            let mut expected = append_concurrently(&log, seed, 0).await;
            assert!(log.segment_count() >= 2, "appends rolled segments");
            assert_eq!(
                all_batches(&log).await,
                expected,
                "read back before closing"
            );
            log.close().await.unwrap();
            drop(log);

            let log = Rc::new(open_small_cache(&dir).await);
            assert!(
                log.open_report().clean_shutdown,
                "a closed log restarts clean"
            );
            assert_eq!(
                all_batches(&log).await,
                expected,
                "read back after a clean restart"
            );
            expected.extend(append_concurrently(&log, seed.wrapping_add(1), 50).await);
            // No close: the next open scans the active segment.
            drop(log);

            let log = Rc::new(open_small_cache(&dir).await);
            let report = log.open_report();
            assert!(!report.clean_shutdown);
            assert_eq!(
                report.truncated_bytes, 0,
                "every returned append was whole on disk"
            );
            assert_eq!(
                all_batches(&log).await,
                expected,
                "read back after an unclean stop"
            );
            let end = log.high_watermark();
            let out = log
                .append(&[batch(1, 10, 0, 7)], LeaderEpoch(3), Durability::Written)
                .await
                .unwrap();
            assert_eq!(out.base_offset, end, "appends go on at the end");
            log.close().await.unwrap();
        })
    });
}

/// Appends whose wait for a sync is cancelled strand no other: the appends
/// sharing their syncs, and those after them, still return synced.
#[test]
fn cancelled_synced_appends_strand_no_other() {
    let seed = seed();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c-0");
    run(move || {
        Box::pin(async move {
            let log = Rc::new(open_small_cache(&dir).await);
            let kept = Rc::new(RefCell::new(Vec::new()));
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let log = log.clone();
                    let kept = kept.clone();
                    glommio::spawn_local(async move {
                        let mut rng = Rng(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        for g in 0..GROUPS {
                            let fill = (t * GROUPS + g) as u8;
                            let group = vec![batch(
                                1 + rng.below(3) as usize,
                                1 + rng.below(20_000) as usize,
                                0,
                                fill,
                            )];
                            let append = log.append(&group, LeaderEpoch(1), Durability::Synced);
                            if t % 2 == 1 {
                                // Odd tasks give up after a moment, mostly
                                // while their write or sync is in flight.
                                let wait = Duration::from_micros(rng.below(3000));
                                let cancelled = async {
                                    glommio::timer::sleep(wait).await;
                                    None
                                };
                                let _ = futures_lite::future::or(
                                    async { Some(append.await) },
                                    cancelled,
                                )
                                .await;
                                continue;
                            }
                            let out = append.await.unwrap();
                            assert!(
                                log.synced_offset() > out.last_offset,
                                "a synced append is synced"
                            );
                            kept.borrow_mut().push((out.base_offset.0, fill));
                        }
                    })
                })
                .collect();
            let all = async {
                for t in tasks {
                    t.await;
                }
            };
            glommio::timer::timeout(Duration::from_secs(30), async {
                all.await;
                Ok(())
            })
            .await
            .expect("every append that was not cancelled returned");
            // Whatever a cancelled append queued is still written and synced.
            log.sync().await.unwrap();
            assert_eq!(log.synced_offset(), log.high_watermark());
            let end = log.high_watermark();
            log.close().await.unwrap();
            drop(log);

            let log = Rc::new(open_small_cache(&dir).await);
            assert_eq!(log.high_watermark(), end, "every queued batch was kept");
            let stored: Vec<(i64, u8)> = all_batches(&log)
                .await
                .into_iter()
                .map(|(base, _, fill)| (base, fill))
                .collect();
            let mut kept = Rc::try_unwrap(kept).unwrap().into_inner();
            kept.sort();
            assert_eq!(kept.len() as u64, (TASKS / 2) * GROUPS);
            for k in &kept {
                assert!(
                    stored.binary_search(k).is_ok(),
                    "returned batch {k:?} is stored"
                );
            }
            log.close().await.unwrap();
        })
    });
}
