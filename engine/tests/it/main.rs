//! The engine on real files with real direct I/O, under glommio.
//!
//! Randomized tests print their seed; `SEED=n` replays one.

use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use sluice_engine::{
    BatchView, Durability, Error, LeaderEpoch, Log, LogConfig, LogContext, Offset,
};

pub(crate) fn run<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
) -> T {
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move { f().await })
        .expect("executor")
        .join()
        .expect("executor finished")
}

pub(crate) fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x51u64);
    eprintln!("seed {seed} (replay with SEED={seed})");
    seed
}

pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A v2 batch of `count` records whose values are `value_bytes` long, as a
/// producer would send it (base offset 0), with a correct CRC32C.
/// Appends a zig-zag varint, as Kafka's records encode lengths and deltas.
pub(crate) fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn batch(count: usize, value_bytes: usize, timestamp: i64, fill: u8) -> Bytes {
    let mut records = Vec::new();
    for i in 0..count {
        let mut r = vec![0u8];
        varint(&mut r, i as i64); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        varint(&mut r, -1); // null key
        varint(&mut r, value_bytes as i64);
        r.extend(std::iter::repeat_n(fill, value_bytes));
        varint(&mut r, 0); // headers
        varint(&mut records, r.len() as i64);
        records.extend(r);
    }
    let mut b = Vec::new();
    b.extend(0i64.to_be_bytes());
    b.extend(((49 + records.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend(0u32.to_be_bytes());
    b.extend(0i16.to_be_bytes());
    b.extend(((count - 1) as i32).to_be_bytes());
    b.extend(timestamp.to_be_bytes());
    b.extend((timestamp + count as i64 - 1).to_be_bytes());
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend((count as i32).to_be_bytes());
    b.extend(records);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Splits read bytes into (base offset, record count, fill byte) per batch.
pub(crate) fn batches_of(bytes: &[u8]) -> Vec<(i64, i32, u8)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let v = BatchView::parse(&bytes[pos..])
            .unwrap()
            .expect("whole batch");
        assert!(
            v.crc_matches(&bytes[pos..pos + v.total_len]),
            "CRC of a read batch"
        );
        out.push((v.base_offset, v.record_count, bytes[pos + v.total_len - 2]));
        pos += v.total_len;
    }
    out
}

pub(crate) fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 10,
        index_interval_bytes: 1024,
        message_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

pub(crate) async fn open(dir: &Path, config: LogConfig) -> Log {
    sluice_engine::prime_direct_io(dir, ".probe")
        .await
        .expect("direct I/O works here");
    Log::open(dir.to_path_buf(), config, LogContext::default())
        .await
        .expect("open log")
}

/// Every batch from the log start to the high watermark, in large reads.
pub(crate) async fn all_batches(log: &Log) -> Vec<(i64, i32, u8)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset().0;
    let end = log.high_watermark().0;
    while offset < end {
        let got = batches_of(&log.read(Offset(offset), 1 << 20).await.unwrap().bytes);
        let last = *got.last().unwrap();
        offset = last.0 + last.1 as i64;
        out.extend(got);
    }
    out
}

/// Every offset reads back from the batch that holds it, across segments.
#[test]
fn appends_read_back_from_every_offset_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    let seed = seed();
    run(move || {
        Box::pin(async move {
            let log = open(&dir, small_config()).await;
            let mut rng = Rng(seed);
            let mut expected = Vec::new(); // (base offset, count, fill)
            let mut next = 0i64;
            for i in 0..300u32 {
                let count = 1 + rng.below(5) as usize;
                let fill = (i % 251) as u8;
                let b = batch(count, 1 + rng.below(700) as usize, 1_000 + i as i64, fill);
                let out = log
                    .append(&[b], LeaderEpoch(3), Durability::Written)
                    .await
                    .unwrap();
                assert_eq!(out.base_offset, Offset(next));
                assert_eq!(out.last_offset, Offset(next + count as i64 - 1));
                expected.push((next, count as i32, fill));
                next += count as i64;
            }
            assert_eq!(log.high_watermark(), Offset(next));
            assert!(
                log.segment_count() > 3,
                "small segments rolled: {}",
                log.segment_count()
            );
            check_reads(&log, &expected, next).await;
            log.close().await.unwrap();
            let log = open(&dir, small_config()).await;
            assert_eq!(log.high_watermark(), Offset(next));
            check_reads(&log, &expected, next).await;
            // Appends continue after a clean reopen.
            let out = log
                .append(&[batch(2, 10, 5, 7)], LeaderEpoch(4), Durability::Written)
                .await
                .unwrap();
            assert_eq!(out.base_offset, Offset(next));
        })
    });
}

async fn check_reads(log: &Log, expected: &[(i64, i32, u8)], end: i64) {
    for offset in 0..end {
        let r = log.read(Offset(offset), 1).await.unwrap();
        let got = batches_of(&r.bytes);
        assert_eq!(
            got.len(),
            1,
            "a 1-byte budget still returns one whole batch"
        );
        let want = expected
            .iter()
            .rev()
            .find(|(b, _, _)| *b <= offset)
            .unwrap();
        assert_eq!(got[0], *want, "batch holding offset {offset}");
    }
    // Large reads return consecutive whole batches.
    let mut offset = 0i64;
    let mut seen = Vec::new();
    while offset < end {
        let r = log.read(Offset(offset), 5_000).await.unwrap();
        let got = batches_of(&r.bytes);
        assert!(!got.is_empty());
        assert!(r.bytes.len() <= 5_000 || got.len() == 1);
        let last = got.last().unwrap();
        offset = last.0 + last.1 as i64;
        seen.extend(got);
    }
    assert_eq!(seen, expected);
    assert_eq!(log.read(Offset(end), 100).await.unwrap().bytes.len(), 0);
    assert!(matches!(
        log.read(Offset(end + 1), 100).await,
        Err(Error::OffsetOutOfRange { .. })
    ));
}

/// Damage to the tail (a torn write or flipped bits) costs only the damaged
/// batch and what follows it; the log reopens as a valid prefix and goes on.
#[test]
fn recovery_keeps_a_valid_prefix_after_tail_damage() {
    let base_seed = seed();
    for round in 0..12u64 {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let seed = base_seed.wrapping_add(round * 7919);
        let (expected, ends) = run({
            let dir = dir.clone();
            move || {
                Box::pin(async move {
                    let log = open(&dir, small_config()).await;
                    let mut rng = Rng(seed);
                    let mut expected = Vec::new();
                    let mut ends = Vec::new(); // file end position of each batch in the last segment
                    let mut next = 0i64;
                    for i in 0..40u32 {
                        let count = 1 + rng.below(3) as usize;
                        let b = batch(count, 1 + rng.below(300) as usize, i as i64, (i + 1) as u8);
                        log.append(&[b], LeaderEpoch(0), Durability::Written)
                            .await
                            .unwrap();
                        expected.push((next, count as i32, (i + 1) as u8));
                        next += count as i64;
                        ends.push(log.size_bytes());
                    }
                    // No close: as after kill -9.
                    (expected, ends)
                })
            }
        });
        let mut segments: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        segments.sort();
        let last = segments.last().unwrap().clone();
        let earlier: u64 = segments[..segments.len() - 1]
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let mut rng = Rng(seed ^ 0xdead);
        let mut bytes = std::fs::read(&last).unwrap();
        let logical = ends.last().unwrap() - earlier;
        let damage_at = if round % 2 == 0 {
            // A torn write: the file ends early.
            let cut = rng.below(logical + 1);
            bytes.truncate(cut as usize);
            cut
        } else {
            // Flipped bits inside the stored batches, anywhere but in a
            // partition leader epoch: CRC32C does not cover it and nothing
            // else on disk records it, so damage there goes unseen.
            let starts: Vec<u64> = std::iter::once(earlier)
                .chain(ends.iter().copied())
                .filter(|&s| s >= earlier)
                .map(|s| s - earlier)
                .collect();
            let in_epoch = |at: u64| starts.iter().any(|&s| (s + 12..s + 16).contains(&at));
            let mut at = rng.below(logical);
            if in_epoch(at) {
                // Into the magic byte or the CRC, which follow it.
                at += 4;
            }
            bytes[at as usize] ^= 1 << rng.below(8);
            at
        };
        std::fs::write(&last, &bytes).unwrap();
        let damage_global = earlier + damage_at;
        // Batches that end at or before the damage survive; none after it.
        let kept = ends.iter().filter(|&&e| e <= damage_global).count();
        let survivors: Vec<(i64, i32, u8)> = expected[..kept].to_vec();
        run(move || {
            Box::pin(async move {
                let log = open(&dir, small_config()).await;
                let end = survivors.last().map_or(0, |(b, c, _)| b + *c as i64);
                assert_eq!(
                    log.high_watermark(),
                    Offset(end),
                    "round {round}: kept {kept} batches"
                );
                assert_eq!(all_batches(&log).await, survivors, "round {round}");
                let out = log
                    .append(
                        &[batch(1, 5, 99, 0xee)],
                        LeaderEpoch(1),
                        Durability::Written,
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    out.base_offset,
                    Offset(end),
                    "round {round}: appends continue at the end"
                );
                log.close().await.unwrap();
                let log = open(&dir, small_config()).await;
                assert_eq!(log.high_watermark(), Offset(end + 1), "round {round}");
            })
        });
    }
}

/// Bad batches are rejected whole and leave no trace.
#[test]
fn bad_batches_are_rejected_without_storing_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = open(
                &dir,
                LogConfig {
                    message_bytes_max: 2_000,
                    ..small_config()
                },
            )
            .await;
            let good = batch(2, 10, 1, 1);
            let mut corrupt = good.to_vec();
            let n = corrupt.len();
            corrupt[n - 1] ^= 0x40;
            let big = batch(1, 3_000, 1, 2);
            let short = good.slice(..good.len() - 1);
            assert!(matches!(
                log.append(
                    &[good.clone(), Bytes::from(corrupt)],
                    LeaderEpoch(0),
                    Durability::Written
                )
                .await,
                Err(Error::CorruptBatch(_))
            ));
            assert!(matches!(
                log.append(&[big], LeaderEpoch(0), Durability::Written)
                    .await,
                Err(Error::BatchTooLarge { .. })
            ));
            assert!(matches!(
                log.append(&[short], LeaderEpoch(0), Durability::Written)
                    .await,
                Err(Error::CorruptBatch(_))
            ));
            assert_eq!(log.log_end_offset(), Offset(0));
            assert_eq!(
                log.append(&[good], LeaderEpoch(0), Durability::Written)
                    .await
                    .unwrap()
                    .base_offset,
                Offset(0)
            );
            assert_eq!(log.high_watermark(), Offset(2));
        })
    });
}

/// Timestamp lookups find the first record at or after the target.
#[test]
fn offsets_for_timestamps() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = open(&dir, small_config()).await;
            // Batch i holds 3 records stamped 100*i, 100*i+1, 100*i+2.
            for i in 0..200i64 {
                log.append(
                    &[batch(3, 50, 100 * i, 1)],
                    LeaderEpoch(0),
                    Durability::Written,
                )
                .await
                .unwrap();
            }
            for (target, offset, ts) in [
                (0i64, 0i64, 0i64),
                (1, 1, 1),
                (2, 2, 2),
                (3, 3, 100),
                (150, 6, 200),
                (19_902, 599, 19_902),
                (19_900, 597, 19_900),
            ] {
                let found = log
                    .offset_for_timestamp(target)
                    .await
                    .unwrap()
                    .expect("found");
                assert_eq!(
                    (found.offset, found.timestamp),
                    (Offset(offset), ts),
                    "target {target}"
                );
            }
            assert_eq!(log.offset_for_timestamp(19_903).await.unwrap(), None);
        })
    });
}

/// Concurrent appenders get dense, distinct offsets and share writes.
#[test]
fn concurrent_appends_get_dense_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = Rc::new(open(&dir, small_config()).await);
            let tasks: Vec<_> = (0..64u8)
                .map(|i| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let out = log
                            .append(&[batch(2, 40, 1, i)], LeaderEpoch(0), Durability::Written)
                            .await
                            .unwrap();
                        (out.base_offset.0, i)
                    })
                })
                .collect();
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await);
            }
            results.sort();
            let offsets: Vec<i64> = results.iter().map(|(o, _)| *o).collect();
            assert_eq!(offsets, (0..64).map(|i| i * 2).collect::<Vec<i64>>());
            let mut seen = Vec::new();
            let mut offset = 0;
            while offset < 128 {
                let got = batches_of(&log.read(Offset(offset), 1 << 20).await.unwrap().bytes);
                offset = got.last().unwrap().0 + 2;
                seen.extend(got);
            }
            let expected: Vec<(i64, i32, u8)> = results.iter().map(|(o, i)| (*o, 2, *i)).collect();
            assert_eq!(seen, expected);
        })
    });
}

/// The engine's header view reads the batches a real client sent (see
/// testdata/README.md) exactly as the wire codec does.
#[test]
fn captured_client_batches_parse_and_check() {
    for (name, records) in [
        ("librdkafka-2.0-uncompressed.batch", 3),
        ("librdkafka-2.0-zstd.batch", 3),
    ] {
        let path = format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
        let bytes = std::fs::read(&path).unwrap();
        let v = BatchView::parse(&bytes).unwrap().expect("a whole header");
        assert_eq!(v.total_len, bytes.len(), "{name}");
        assert!(v.crc_matches(&bytes), "{name}");
        assert_eq!(v.record_count, records, "{name}");
        assert_eq!(v.last_offset(), 2, "{name}");
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(
            !v.crc_matches(&flipped),
            "{name}: a flipped bit fails the CRC"
        );
    }
}

mod pipeline;
mod upkeep;

/// A batch larger than the first read's window is still returned whole,
/// before and after a restart, with the tail cache too small to serve it.
#[test]
fn batches_larger_than_the_read_window_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let config = LogConfig {
                message_bytes_max: 1 << 20,
                ..LogConfig::default()
            };
            let open_uncached = || async {
                sluice_engine::prime_direct_io(&dir, ".probe")
                    .await
                    .unwrap();
                let context = LogContext {
                    cache_budget: Rc::new(sluice_engine::TailCacheBudget::new(1024)),
                    ..LogContext::default()
                };
                Log::open(dir.clone(), config, context).await.unwrap()
            };
            let log = open_uncached().await;
            let mut expected = Vec::new();
            for (i, value) in [(0u8, 10usize), (1, 300_000), (2, 10), (3, 200_000)] {
                let out = log
                    .append(
                        &[batch(2, value, 1, i)],
                        LeaderEpoch(0),
                        Durability::Written,
                    )
                    .await
                    .unwrap();
                expected.push((out.base_offset.0, 2, i));
            }
            let mut log = Some(log);
            for round in 0..2 {
                let l = log.as_ref().unwrap();
                for (base, _, fill) in &expected {
                    for offset in [*base, base + 1] {
                        let got = batches_of(&l.read(Offset(offset), 1).await.unwrap().bytes);
                        assert_eq!(
                            got,
                            vec![(*base, 2, *fill)],
                            "offset {offset}, round {round}"
                        );
                    }
                }
                let got = batches_of(&l.read(Offset(0), 1 << 20).await.unwrap().bytes);
                assert_eq!(got, expected, "round {round}");
                l.close().await.unwrap();
                log = Some(open_uncached().await);
            }
        })
    });
}
