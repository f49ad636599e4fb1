//! Index files, clean shutdown, retention, DeleteRecords, compaction and
//! crash recovery, on real files.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use sluice_engine::{
    BatchView, CleanupPolicy, Clock, Durability, Error, LeaderEpoch, Log, LogConfig, LogContext,
    Offset, RecordCodec, RecordKey, TailCacheBudget, TAIL_READ_TTL_MS,
};

use crate::{all_batches, batch, batches_of, open, run, small_config, varint};

/// A clock the test moves by hand.
struct TestClock(Cell<i64>);
impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

async fn open_with(dir: &Path, config: LogConfig, clock: Rc<TestClock>) -> Log {
    sluice_engine::prime_direct_io(dir.parent().unwrap(), ".probe")
        .await
        .expect("direct I/O works here");
    Log::open(
        dir.to_path_buf(),
        config,
        LogContext {
            clock,
            cache_budget: Rc::new(TailCacheBudget::new(1 << 20)),
            io_ring: Rc::default(),
        },
    )
    .await
    .expect("open log")
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw = 0u64;
    for i in 0..10 {
        let b = *buf.get(*pos)?;
        *pos += 1;
        raw |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// An uncompressed batch of keyed records (value `None` is a tombstone),
/// record i stamped `timestamp + i`.
fn keyed_batch(records: &[(&str, Option<&str>)], timestamp: i64) -> Bytes {
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = vec![0u8];
        varint(&mut r, i as i64);
        varint(&mut r, i as i64);
        varint(&mut r, key.len() as i64);
        r.extend_from_slice(key.as_bytes());
        match value {
            Some(v) => {
                varint(&mut r, v.len() as i64);
                r.extend_from_slice(v.as_bytes());
            }
            None => varint(&mut r, -1),
        }
        varint(&mut r, 0);
        varint(&mut body, r.len() as i64);
        body.extend(r);
    }
    let count = records.len();
    finish_batch(
        0,
        (count - 1) as i32,
        timestamp,
        timestamp + count as i64 - 1,
        count as i32,
        &body,
    )
}

fn finish_batch(
    base: i64,
    last_delta: i32,
    base_ts: i64,
    max_ts: i64,
    count: i32,
    body: &[u8],
) -> Bytes {
    let mut b = Vec::new();
    b.extend(base.to_be_bytes());
    b.extend(((49 + body.len()) as i32).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.push(2);
    b.extend(0u32.to_be_bytes());
    b.extend(0i16.to_be_bytes());
    b.extend(last_delta.to_be_bytes());
    b.extend(base_ts.to_be_bytes());
    b.extend(max_ts.to_be_bytes());
    b.extend((-1i64).to_be_bytes());
    b.extend((-1i16).to_be_bytes());
    b.extend((-1i32).to_be_bytes());
    b.extend(count.to_be_bytes());
    b.extend_from_slice(body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// (offset, timestamp, key, value, raw record bytes) of an uncompressed batch.
type Parsed = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

fn parse_records(batch: &[u8]) -> Result<Vec<Parsed>, String> {
    let view = BatchView::parse(batch)
        .map_err(|e| e.to_string())?
        .ok_or("short")?;
    let mut pos = 61;
    let mut out = Vec::new();
    for _ in 0..view.record_count {
        let start = pos;
        let len = read_varint(batch, &mut pos).ok_or("len")? as usize;
        let end = pos + len;
        pos += 1;
        let ts = read_varint(batch, &mut pos).ok_or("ts")?;
        let od = read_varint(batch, &mut pos).ok_or("od")?;
        let field = |pos: &mut usize| -> Result<Option<Vec<u8>>, String> {
            let n = read_varint(batch, pos).ok_or("field")?;
            if n < 0 {
                return Ok(None);
            }
            let v = batch
                .get(*pos..*pos + n as usize)
                .ok_or("field bytes")?
                .to_vec();
            *pos += n as usize;
            Ok(Some(v))
        };
        let key = field(&mut pos)?;
        let value = field(&mut pos)?;
        out.push((
            view.base_offset + od,
            view.base_timestamp + ts,
            key,
            value,
            batch[start..end].to_vec(),
        ));
        pos = end;
    }
    Ok(out)
}

/// The record codec compaction needs, for the uncompressed batches here.
struct TestCodec;
impl RecordCodec for TestCodec {
    fn visit(&self, batch: &[u8], f: &mut dyn FnMut(&RecordKey<'_>)) -> Result<(), String> {
        for (offset, timestamp, key, value, _) in parse_records(batch)? {
            f(&RecordKey {
                offset: Offset(offset),
                timestamp,
                key: key.as_deref(),
                tombstone: value.is_none(),
            });
        }
        Ok(())
    }

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(&RecordKey<'_>) -> bool,
    ) -> Result<Option<Bytes>, String> {
        let records = parse_records(batch)?;
        let view = BatchView::parse(batch).unwrap().unwrap();
        let kept: Vec<&Parsed> = records
            .iter()
            .filter(|(offset, timestamp, key, value, _)| {
                keep(&RecordKey {
                    offset: Offset(*offset),
                    timestamp: *timestamp,
                    key: key.as_deref(),
                    tombstone: value.is_none(),
                })
            })
            .collect();
        if kept.is_empty() {
            return Ok(None);
        }
        if kept.len() == records.len() {
            return Ok(Some(Bytes::copy_from_slice(batch)));
        }
        let body: Vec<u8> = kept.iter().flat_map(|r| r.4.clone()).collect();
        Ok(Some(finish_batch(
            view.base_offset,
            view.last_offset_delta,
            view.base_timestamp,
            view.max_timestamp,
            kept.len() as i32,
            &body,
        )))
    }
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

/// Appends `n` batches of 3 records, timestamps 100*i; returns the end offset.
async fn fill(log: &Log, n: i64) -> i64 {
    for i in 0..n {
        log.append(
            &[batch(3, 200, 100 * i, (i % 250) as u8)],
            LeaderEpoch(0),
            Durability::Written,
        )
        .await
        .unwrap();
    }
    log.high_watermark().0
}

/// A clean close lets the next open trust every segment without reading it;
/// after a crash only the active segment is scanned.
#[test]
fn clean_shutdown_skips_the_scan_and_a_crash_scans_only_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = open(&dir, small_config()).await;
            let end = fill(&log, 120).await;
            let segments = log.segment_count();
            assert!(segments >= 4, "{segments} segments");
            let before = all_batches(&log).await;
            log.close().await.unwrap();
            assert!(dir.join("clean-shutdown").exists());
            assert_eq!(files_with(&dir, "index").len(), segments);

            let log = open(&dir, small_config()).await;
            let report = log.open_report();
            assert!(report.clean_shutdown);
            assert_eq!(
                (report.segments_scanned, report.segments_loaded),
                (0, segments)
            );
            assert!(
                !dir.join("clean-shutdown").exists(),
                "the marker goes once the log is open"
            );
            assert_eq!(log.high_watermark(), Offset(end));
            assert_eq!(all_batches(&log).await, before);
            assert_eq!(
                log.offset_for_timestamp(100 * 60 + 1)
                    .await
                    .unwrap()
                    .map(|t| t.offset),
                Some(Offset(181))
            );
            let out = log
                .append(&[batch(2, 10, 1, 9)], LeaderEpoch(0), Durability::Written)
                .await
                .unwrap();
            assert_eq!(out.base_offset, Offset(end));
            drop(log); // a crash: no close

            let log = open(&dir, small_config()).await;
            let report = log.open_report();
            assert!(!report.clean_shutdown);
            assert_eq!(report.segments_scanned, 1, "only the active segment");
            assert_eq!(report.segments_loaded, log.segment_count() - 1);
            assert_eq!(log.high_watermark(), Offset(end + 2));
        })
    });
}

/// Missing or damaged index files are rebuilt from their segments.
#[test]
fn damaged_index_files_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = open(&dir, small_config()).await;
            fill(&log, 120).await;
            let before = all_batches(&log).await;
            log.close().await.unwrap();
            let indexes = files_with(&dir, "index");
            let times = files_with(&dir, "timeindex");
            let original = std::fs::read(&indexes[0]).unwrap();
            assert!(!original.is_empty(), "small intervals give entries");
            std::fs::write(&indexes[0], &original[..5]).unwrap();
            std::fs::remove_file(&times[1]).unwrap();
            let mut swapped = std::fs::read(&indexes[2]).unwrap();
            if swapped.len() >= 16 {
                swapped.swap(3, 11);
                std::fs::write(&indexes[2], &swapped).unwrap();
            }

            let log = open(&dir, small_config()).await;
            let report = log.open_report();
            assert!(report.segments_scanned >= 2, "{report:?}");
            assert_eq!(all_batches(&log).await, before);
            assert_eq!(
                std::fs::read(&indexes[0]).unwrap(),
                original,
                "rebuilt the same"
            );
            assert!(times[1].exists(), "rebuilt");
            // Batch i holds offsets 3i.. stamped 100i, 100i+1, 100i+2.
            for (target, offset, timestamp) in [
                (0i64, 0i64, 0i64),
                (250, 9, 300),
                (5_001, 151, 5_001),
                (11_000, 330, 11_000),
            ] {
                let found = log.offset_for_timestamp(target).await.unwrap().unwrap();
                assert_eq!(
                    (found.offset, found.timestamp),
                    (Offset(offset), timestamp),
                    "target {target}"
                );
            }
        })
    });
}

/// Retention deletes whole closed segments, oldest first, by size and by
/// age; the log start offset moves and older offsets are out of range.
#[test]
fn retention_deletes_old_segments_and_moves_the_log_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let clock = Rc::new(TestClock(Cell::new(1_000_000)));
            let config = LogConfig {
                retention: None,
                ..small_config()
            };
            let log = open_with(&dir, config, clock.clone()).await;
            // Timestamps 100*i: old against the clock only when it moves on.
            let end = fill(&log, 120).await;
            let segments = log.segment_count();
            let total = log.size_bytes();
            let nothing = log.apply_retention().await.unwrap();
            assert_eq!(nothing.segments_deleted, 0, "no limits, nothing goes");

            log.set_config(LogConfig {
                retention_bytes: Some(total / 2),
                ..config
            });
            let by_size = log.apply_retention().await.unwrap();
            assert!(by_size.segments_deleted > 0);
            assert!(
                log.size_bytes() <= total / 2 + (16 << 10),
                "within a segment of the limit"
            );
            assert!(log.size_bytes() > total / 2 - (16 << 10));
            let start = log.log_start_offset();
            assert_eq!(start, log.segment_bases()[0]);
            assert_eq!(by_size.log_start_offset, start);
            assert!(matches!(
                log.read(Offset(start.0 - 1), 100).await,
                Err(Error::OffsetOutOfRange { .. })
            ));
            assert_eq!(all_batches(&log).await.first().unwrap().0, start.0);
            assert_eq!(
                files_with(&dir, "log").len(),
                segments - by_size.segments_deleted
            );

            // By age: every closed segment's newest record is older than 1 s.
            log.set_config(LogConfig {
                retention: Some(Duration::from_secs(1)),
                ..config
            });
            clock.0.set(100 * 120 + 1_001);
            log.apply_retention().await.unwrap();
            assert_eq!(log.segment_count(), 1, "the active segment stays");
            let start = log.log_start_offset();
            assert_eq!(start, log.segment_bases()[0]);
            assert_eq!(log.high_watermark(), Offset(end));
            drop(log);
            let log = open_with(&dir, config, clock.clone()).await;
            assert_eq!(log.log_start_offset(), start);
            assert_eq!(log.high_watermark(), Offset(end));
        })
    });
}

/// DeleteRecords hides records below an offset, also after a crash, and
/// deletes the segments wholly below it.
#[test]
fn delete_records_moves_the_log_start_durably() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let log = open(&dir, small_config()).await;
            let end = fill(&log, 120).await;
            let segments = log.segment_count();
            let cut = Offset(200);
            assert_eq!(log.delete_records_before(cut).await.unwrap(), cut);
            assert_eq!(log.log_start_offset(), cut);
            assert!(log.segment_count() < segments);
            assert!(matches!(
                log.read(Offset(199), 100).await,
                Err(Error::OffsetOutOfRange { .. })
            ));
            let first = batches_of(&log.read(cut, 1).await.unwrap().bytes)[0];
            assert!(
                first.0 <= 200 && first.0 + first.1 as i64 > 200,
                "{first:?}"
            );
            assert_eq!(
                log.delete_records_before(Offset(100)).await.unwrap(),
                cut,
                "never backwards"
            );
            assert!(matches!(
                log.delete_records_before(Offset(end + 1)).await,
                Err(Error::OffsetOutOfRange { .. })
            ));
            drop(log);
            let log = open(&dir, small_config()).await;
            assert_eq!(log.log_start_offset(), cut);
            assert_eq!(log.high_watermark(), Offset(end));
            assert_eq!(
                log.offset_for_timestamp(0).await.unwrap().map(|t| t.offset),
                Some(cut),
                "timestamps below the start answer the start"
            );
        })
    });
}

/// Compaction keeps the latest record of each key in closed segments,
/// removes tombstones past delete.retention.ms, keeps offsets, and survives
/// a restart; an unfinished compacted copy is discarded at open.
#[test]
fn compaction_keeps_the_latest_record_per_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let clock = Rc::new(TestClock(Cell::new(1_000)));
            let config = LogConfig {
                cleanup: CleanupPolicy {
                    delete: false,
                    compact: true,
                },
                min_cleanable_dirty_ratio: 0.0,
                delete_retention: Duration::from_millis(500),
                ..small_config()
            };
            let log = open_with(&dir, config, clock.clone()).await;
            let pad = "v".repeat(300);
            let mut latest = std::collections::BTreeMap::new();
            for round in 0..30 {
                for k in 0..5 {
                    let key = format!("k{k}");
                    let value = format!("{round}-{pad}");
                    let tombstone = k == 1 && round == 29;
                    let v = (!tombstone).then_some(value.as_str());
                    let out = log
                        .append(
                            &[keyed_batch(&[(&key, v)], 900 + round)],
                            LeaderEpoch(0),
                            Durability::Written,
                        )
                        .await
                        .unwrap();
                    latest.insert(key, (out.base_offset.0, v.map(str::to_owned)));
                }
            }
            // Filler with its own keys closes the segments holding the above.
            append_filler(&log, "f", &pad).await;
            let end = log.high_watermark();
            let size_before = log.size_bytes();

            // Tombstones are younger than delete.retention.ms: they stay.
            let first = log.compact(&TestCodec).await.unwrap();
            assert!(first.segments_rewritten > 0, "{first:?}");
            assert!(log.size_bytes() < size_before);
            let records = read_records(&log).await;
            let keyed: Vec<&Parsed> = records
                .iter()
                .filter(|r| r.2.as_deref().is_some_and(|k| k.starts_with(b"k")))
                .collect();
            assert_eq!(keyed.len(), 5, "one record per key: {}", keyed.len());
            for (offset, _, key, value, _) in &keyed {
                let key = String::from_utf8(key.clone().unwrap()).unwrap();
                let (want_offset, want_value) = &latest[&key];
                assert_eq!(*offset, *want_offset, "{key} keeps its offset");
                assert_eq!(value.as_deref(), want_value.as_deref().map(str::as_bytes));
            }
            assert_eq!(log.high_watermark(), end);
            assert_eq!(log.log_start_offset(), Offset(0));

            // Past delete.retention.ms the tombstone goes too, at the next
            // pass, which new data makes due.
            append_filler(&log, "g", &pad).await;
            let end = log.high_watermark();
            clock.0.set(1_000_000);
            log.compact(&TestCodec).await.unwrap();
            let records = read_records(&log).await;
            let keys: Vec<String> = records
                .iter()
                .filter_map(|r| r.2.clone())
                .map(|k| String::from_utf8(k).unwrap())
                .filter(|k| k.starts_with('k'))
                .collect();
            assert_eq!(keys, ["k0", "k2", "k3", "k4"]);
            let offsets: Vec<i64> = records.iter().map(|r| r.0).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "offsets increase");
            log.close().await.unwrap();

            // A leftover copy from a crash mid-compaction is discarded.
            let bases = files_with(&dir, "log");
            let leftover = bases[0].with_extension("cleaned");
            std::fs::write(&leftover, b"partial").unwrap();
            let log = open_with(&dir, config, clock.clone()).await;
            assert!(!leftover.exists());
            assert_eq!(read_records(&log).await, records);
            assert_eq!(log.high_watermark(), end);
        })
    });
}

/// 40 batches of one record each, keyed `<prefix><i>`.
async fn append_filler(log: &Log, prefix: &str, value: &str) {
    for i in 0..40 {
        log.append(
            &[keyed_batch(&[(&format!("{prefix}{i}"), Some(value))], 100)],
            LeaderEpoch(0),
            Durability::Written,
        )
        .await
        .unwrap();
    }
}

async fn read_records(log: &Log) -> Vec<Parsed> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset().0;
    let end = log.high_watermark().0;
    while offset < end {
        let bytes = log.read(Offset(offset), 1 << 20).await.unwrap().bytes;
        let mut pos = 0;
        while pos < bytes.len() {
            let v = BatchView::parse(&bytes[pos..]).unwrap().unwrap();
            let batch = &bytes[pos..pos + v.total_len];
            assert!(v.crc_matches(batch));
            out.extend(parse_records(batch).unwrap());
            offset = v.last_offset() + 1;
            pos += v.total_len;
        }
    }
    out
}

/// How a crash damages the unsynced part of the last segment.
#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(f64),
    FlipBit(f64, u8),
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Random appends (some synced) with rolls, retention and compaction,
    /// then a crash that damages what was not synced: the log reopens as a
    /// prefix of what was written, keeps every synced batch, and never
    /// returns a batch that fails its CRC.
    #[test]
    fn a_crash_loses_at_most_the_unsynced_tail(
        sizes in prop::collection::vec((1usize..4, 1usize..900, any::<bool>()), 1..60),
        retain_at in prop::option::of(0usize..60),
        compact_at in prop::option::of(0usize..60),
        damage in prop_oneof![
            Just(Damage::None),
            (0.0f64..1.0).prop_map(Damage::Truncate),
            ((0.0f64..1.0), 0u8..8).prop_map(|(at, bit)| Damage::FlipBit(at, bit)),
        ],
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p-0");
        let config = LogConfig {
            cleanup: CleanupPolicy { delete: true, compact: true },
            min_cleanable_dirty_ratio: 0.0,
            retention_bytes: Some(40 << 10),
            retention: None,
            ..small_config()
        };
        let written = run({
            let dir = dir.clone();
            let sizes = sizes.clone();
            move || Box::pin(async move {
                let clock = Rc::new(TestClock(Cell::new(0)));
                let log = open_with(&dir, config, clock).await;
                let mut expected = Vec::new();
                for (i, (count, len, sync)) in sizes.iter().enumerate() {
                    let durability = if *sync { Durability::Synced } else { Durability::Written };
                    let fill = (i % 250) as u8;
                    let out = log.append(&[batch(*count, *len, i as i64, fill)], LeaderEpoch(0), durability).await.unwrap();
                    expected.push((out.base_offset.0, *count as i32, fill));
                    if retain_at == Some(i) {
                        log.apply_retention().await.unwrap();
                    }
                    if compact_at == Some(i) {
                        // Null keys: compaction may drop every record of a
                        // closed segment, never an offset.
                        log.compact(&TestCodec).await.unwrap();
                    }
                }
                let synced = log.synced_offset().0;
                let start = log.log_start_offset().0;
                let compacted_to = if compact_at.is_some() { log.segment_bases().last().unwrap().0 } else { 0 };
                (expected, synced, start, compacted_to)
            })
        });
        let (expected, synced, start, compacted_to) = written;
        // Damage lands after the synced bytes of the last segment.
        let last = files_with(&dir, "log").pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let synced_pos = synced_position(&bytes, synced);
        match damage {
            Damage::None => {}
            Damage::Truncate(at) => {
                let cut = synced_pos + ((bytes.len() - synced_pos) as f64 * at) as usize;
                bytes.truncate(cut);
            }
            Damage::FlipBit(at, bit) => {
                if bytes.len() > synced_pos {
                    let i = synced_pos + ((bytes.len() - synced_pos - 1) as f64 * at) as usize;
                    bytes[i] ^= 1 << bit;
                }
            }
        }
        std::fs::write(&last, &bytes).unwrap();
        let (got, hw) = run(move || Box::pin(async move {
            let clock = Rc::new(TestClock(Cell::new(0)));
            let log = open_with(&dir, config, clock).await;
            let got = all_batches(&log).await;
            let hw = log.high_watermark().0;
            let out = log.append(&[batch(1, 5, 0, 1)], LeaderEpoch(0), Durability::Written).await.unwrap();
            assert_eq!(out.base_offset.0, hw, "appends continue at the end");
            (got, hw)
        }));
        prop_assert!(hw >= synced, "synced offsets survive: hw {} synced {}", hw, synced);
        // What is read is what was written, from the log start: compaction
        // may have emptied batches below the compacted point.
        let visible: Vec<_> = expected
            .iter()
            .filter(|(b, c, _)| b + *c as i64 > start && b + (*c as i64) <= hw)
            .filter(|(b, _, _)| *b >= compacted_to)
            .copied()
            .collect();
        let got_after: Vec<_> = got.iter().filter(|(b, _, _)| *b >= compacted_to).copied().collect();
        prop_assert_eq!(got_after, visible);
    }
}

/// The file position just past the batch holding `synced - 1` in a segment
/// file, or 0 when none of it is synced.
fn synced_position(bytes: &[u8], synced: i64) -> usize {
    let mut pos = 0;
    let mut end = 0;
    while pos < bytes.len() {
        let Ok(Some(v)) = BatchView::parse(&bytes[pos..]) else {
            break;
        };
        if pos + v.total_len > bytes.len() {
            break;
        }
        if v.last_offset() < synced {
            end = pos + v.total_len;
        }
        pos += v.total_len;
    }
    end
}

/// `segment.ms` closes the active segment at the first append once its
/// first batch is that old; `flush.messages` makes an append wait for a
/// sync once that many offsets are unsynced; `flush.ms` has `sync_if_due`
/// sync writes once the oldest unsynced one is that old.
#[test]
fn segment_age_and_flush_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let clock = Rc::new(TestClock(Cell::new(10_000)));
            let config = LogConfig {
                segment_bytes: 1 << 30,
                segment_age_max: Some(Duration::from_millis(1_000)),
                flush_messages: Some(3),
                flush_interval: Some(Duration::from_millis(100)),
                ..LogConfig::default()
            };
            let log = open_with(&dir, config, clock.clone()).await;
            let append = |fill: u8| {
                let log = &log;
                async move {
                    log.append(
                        &[batch(1, 100, 0, fill)],
                        LeaderEpoch(0),
                        Durability::Written,
                    )
                    .await
                    .unwrap()
                    .base_offset
                }
            };

            // flush.messages = 3: the third unsynced offset brings a sync.
            assert_eq!(append(1).await, Offset(0));
            assert_eq!(append(2).await, Offset(1));
            assert_eq!(log.synced_offset(), Offset(0), "two offsets wait");
            assert_eq!(append(3).await, Offset(2));
            assert_eq!(log.synced_offset(), Offset(3), "the third brings a sync");

            // flush.ms = 100: due 100 ms after the oldest unsynced write.
            clock.0.set(10_500);
            assert_eq!(append(4).await, Offset(3));
            clock.0.set(10_599);
            assert!(!log.sync_if_due().await.unwrap());
            assert_eq!(log.synced_offset(), Offset(3));
            clock.0.set(10_600);
            assert!(log.sync_if_due().await.unwrap());
            assert_eq!(log.synced_offset(), Offset(4));
            assert!(!log.sync_if_due().await.unwrap(), "nothing left to sync");

            // segment.ms = 1 s from the segment's first append (at 10,000).
            clock.0.set(10_999);
            assert_eq!(append(5).await, Offset(4));
            assert_eq!(log.segment_bases(), vec![Offset(0)]);
            clock.0.set(11_000);
            assert_eq!(append(6).await, Offset(5));
            assert_eq!(
                log.segment_bases(),
                vec![Offset(0), Offset(5)],
                "the aged segment closed before the append"
            );
            assert!(
                log.synced_offset() >= Offset(5),
                "a closed segment is synced"
            );
            clock.0.set(11_999);
            assert_eq!(append(7).await, Offset(6));
            assert_eq!(
                log.segment_count(),
                2,
                "the new segment's age starts at its first append"
            );
            let stored: Vec<u8> = all_batches(&log)
                .await
                .into_iter()
                .map(|(_, _, f)| f)
                .collect();
            assert_eq!(stored, vec![1, 2, 3, 4, 5, 6, 7]);
            log.close().await.unwrap();
        })
    });
}

/// The tail cache copies writes only while reads come near the tail: at the
/// high watermark, from the cache, or within the log's share of the end.
#[test]
fn tail_cache_fills_while_reads_come_near_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p-0");
    run(move || {
        Box::pin(async move {
            let clock = Rc::new(TestClock(Cell::new(1_000_000)));
            // A 1 MiB share; 64 KiB batches of one record.
            let log = open_with(&dir, LogConfig::default(), clock.clone()).await;
            let append = |fill: u8| {
                let log = &log;
                async move {
                    log.append(
                        &[batch(1, 64 << 10, 0, fill)],
                        LeaderEpoch(0),
                        Durability::Written,
                    )
                    .await
                    .unwrap()
                    .base_offset
                }
            };
            let read_one = |from: i64| {
                let log = &log;
                async move {
                    let read = log.read(Offset(from), 1).await.unwrap();
                    batches_of(&read.bytes)
                }
            };

            // Nobody reads: nothing is copied.
            for fill in 1..=3 {
                append(fill).await;
            }
            assert_eq!(log.cached_bytes(), 0);

            // A reader at the high watermark: what follows is cached, and
            // reads of it come back stamped.
            assert!(read_one(3).await.is_empty());
            assert_eq!(append(4).await, Offset(3));
            assert_eq!(append(5).await, Offset(4));
            let cached = log.cached_bytes();
            assert!(cached > 2 * (64 << 10), "two batches cached: {cached}");
            assert_eq!(read_one(3).await, vec![(3, 1, 4)]);
            assert_eq!(read_one(4).await, vec![(4, 1, 5)]);

            // Cache hits keep it filling; ten seconds without a read near
            // the tail empty it.
            clock.0.set(1_000_000 + TAIL_READ_TTL_MS - 1);
            assert_eq!(append(6).await, Offset(5));
            assert!(log.cached_bytes() > cached);
            clock.0.set(1_000_000 + 2 * TAIL_READ_TTL_MS);
            assert_eq!(append(7).await, Offset(6));
            assert_eq!(log.cached_bytes(), 0);

            // A reader more than the share (1 MiB) behind the end reads from
            // the disk and starts no copying...
            for fill in 8..=30 {
                append(fill).await;
            }
            assert_eq!(read_one(0).await, vec![(0, 1, 1)]);
            append(31).await;
            assert_eq!(log.cached_bytes(), 0);
            // ...one within it does.
            assert_eq!(read_one(25).await, vec![(25, 1, 26)]);
            assert_eq!(append(32).await, Offset(31));
            assert!(log.cached_bytes() > 0);
            assert_eq!(read_one(31).await, vec![(31, 1, 32)]);
            log.close().await.unwrap();
        })
    });
}
