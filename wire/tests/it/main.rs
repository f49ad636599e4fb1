//! The wire crate's integration tests: batches captured from a real client
//! (see testdata/README.md), the compression codecs and batch rewriting.
//!
//! Randomized tests print their seed; `SEED=n` replays one.

mod compression;
mod fetch;
mod retain;

use bytes::Bytes;
use sluice_wire::batch::{compute_crc, split, BatchHeader, Compression};
use sluice_wire::records::{decode_records, for_each_record, StoredRecord};

pub(crate) const ALL_CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

pub(crate) fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("seed {seed} (replay with SEED={seed})");
    seed
}

/// xorshift64; never seeded with 0.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }
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

fn captured(name: &str) -> Bytes {
    let path = format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// A record as `for_each_record` shows it, owned.
type Seen = (i64, i64, Option<Vec<u8>>, Option<Vec<u8>>, usize);

/// Checks that `for_each_record` and `decode_records` read `batch` as
/// `expected` (offset, timestamp, key, value, header count).
fn check_decodes_to(batch: &[u8], expected: &[Seen]) {
    let mut seen: Vec<Seen> = Vec::new();
    for_each_record(batch, 1 << 20, |r| {
        seen.push((
            r.offset,
            r.timestamp,
            r.key.map(<[u8]>::to_vec),
            r.value.map(<[u8]>::to_vec),
            r.headers.len(),
        ))
    })
    .unwrap();
    assert_eq!(seen, expected);
    let stored: Vec<StoredRecord> = decode_records(batch).unwrap();
    let stored: Vec<Seen> = stored
        .into_iter()
        .map(|s| {
            (
                s.offset,
                s.record.timestamp,
                s.record.key.map(|k| k.to_vec()),
                s.record.value.map(|v| v.to_vec()),
                s.record.headers.len(),
            )
        })
        .collect();
    assert_eq!(stored, expected);
}

#[test]
fn uncompressed_librdkafka_batch() {
    let bytes = captured("librdkafka-2.0-uncompressed.batch");
    let h = BatchHeader::parse(&bytes).unwrap();
    assert_eq!(h.base_offset, 0);
    assert_eq!(h.total_len(), bytes.len());
    assert_eq!(h.magic, 2);
    assert_eq!(h.crc, compute_crc(&bytes));
    assert_eq!(h.compression(), Compression::None);
    assert_eq!(h.record_count, 3);
    assert_eq!(h.last_offset_delta, 2);
    assert_eq!(h.producer_id, -1);
    // kcat stamps every record of the batch with the same create time.
    let ts = 0x0000_01a2_0285_68ae;
    assert_eq!(h.base_timestamp, ts);
    assert_eq!(h.max_timestamp, ts);
    let some = |b: &[u8]| Some(b.to_vec());
    check_decodes_to(
        &bytes,
        &[
            (0, ts, some(b"k1"), some(b"first value"), 0),
            (1, ts, some(b"k2"), some(b"second"), 0),
            // `:no key` gives an empty key, not a null one.
            (2, ts, some(b""), some(b"no key"), 0),
        ],
    );
    assert_eq!(split(&bytes).unwrap().len(), 1);
}

#[test]
fn zstd_librdkafka_batch() {
    let bytes = captured("librdkafka-2.0-zstd.batch");
    let h = BatchHeader::parse(&bytes).unwrap();
    assert_eq!(h.total_len(), bytes.len());
    assert_eq!(h.crc, compute_crc(&bytes));
    assert_eq!(h.compression(), Compression::Zstd);
    assert_eq!(h.record_count, 3);
    assert_eq!(h.last_offset_delta, 2);
    let ts = 0x0000_01a2_0287_86ec;
    assert_eq!(h.base_timestamp, ts);
    let some = |b: &[u8]| Some(b.to_vec());
    check_decodes_to(
        &bytes,
        &[
            (
                0,
                ts,
                some(b"k1"),
                some(&b"log line repeated ".repeat(20)),
                0,
            ),
            (
                1,
                ts,
                some(b"k2"),
                some(&b"metric sample 42 ".repeat(20)),
                0,
            ),
            (2, ts, some(b""), some(&b"no key ".repeat(20)), 0),
        ],
    );
    // Three values of 360, 340 and 140 bytes need that much room once
    // decompressed.
    assert!(for_each_record(&bytes, 200, |_| {}).is_err());
}

#[test]
fn every_truncation_of_a_record_set_is_an_error() {
    let bytes = captured("librdkafka-2.0-uncompressed.batch");
    let mut two = bytes.to_vec();
    two.extend_from_slice(&bytes);
    let two = Bytes::from(two);
    assert_eq!(split(&two).unwrap().len(), 2);
    for cut in 1..two.len() {
        if cut == bytes.len() {
            continue;
        }
        assert!(split(&two.slice(..cut)).is_err(), "cut at {cut}");
    }
}

#[test]
fn every_truncation_or_bit_flip_of_a_captured_batch_is_an_error() {
    for name in [
        "librdkafka-2.0-uncompressed.batch",
        "librdkafka-2.0-zstd.batch",
    ] {
        let bytes = captured(name);
        for cut in 0..bytes.len() {
            assert!(
                for_each_record(&bytes[..cut], 1 << 20, |_| {}).is_err(),
                "{name} cut at {cut}"
            );
        }
        // The CRC covers everything after it, and a flip in the length,
        // the magic or the CRC itself is caught too. Only the base offset and
        // the partition leader epoch are outside the CRC, as in Kafka, since
        // the broker rewrites them.
        for at in 0..bytes.len() {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x10;
            let result = for_each_record(&bad, 1 << 20, |_| {});
            let unchecked = at < 8 || (12..16).contains(&at);
            assert_eq!(result.is_err(), !unchecked, "{name} flip at {at}");
        }
    }
}

#[test]
fn batch_builder_writes_what_it_was_given_for_every_codec() {
    use sluice_wire::records::BatchBuilder;
    let mut rng = Rng::new(seed());
    for codec in ALL_CODECS {
        let base = 1_700_000_000_000i64;
        let mut builder = BatchBuilder::new(base, 0);
        let mut expected: Vec<Seen> = Vec::new();
        for i in 0..200i64 {
            // Deltas below the base timestamp and lengths across varint
            // size steps (127/128, 16383/16384) exercise the length sums.
            let ts = base + rng.below(2000) as i64 - 1000;
            let value_len = [0, 1, 127, 128, 300, 16_383, 16_384][(i % 7) as usize];
            let value: Vec<u8> = (0..value_len).map(|_| rng.next() as u8).collect();
            let key = (i % 3 != 0).then(|| format!("key-{i}").into_bytes());
            let header_value = i.to_be_bytes();
            let headers: Vec<(&[u8], Option<&[u8]>)> = match i % 4 {
                0 => vec![],
                1 => vec![(b"sb", Some(&header_value))],
                _ => vec![(b"a", None), (b"trace", Some(b"x"))],
            };
            let value = (i % 11 != 5).then_some(value);
            builder.push(ts, key.as_deref(), value.as_deref(), &headers);
            expected.push((i, ts, key, value, headers.len()));
        }
        assert_eq!(builder.record_count(), 200);
        let batch = builder.finish(codec);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.compression(), codec);
        assert_eq!(header.crc, compute_crc(&batch));
        assert_eq!(header.base_timestamp, base);
        assert_eq!(
            header.max_timestamp,
            expected.iter().map(|e| e.1).max().unwrap()
        );
        check_decodes_to(&batch, &expected);
        let mut n = 0;
        for_each_record(&batch, 64 << 20, |r| {
            if let Some((k, Some(v))) = r.headers.iter().next() {
                if k == b"sb" {
                    assert_eq!(v, r.offset.to_be_bytes());
                }
            }
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 200);
    }
}
