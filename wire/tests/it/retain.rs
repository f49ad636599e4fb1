//! `retain_records` for every codec, and the batch attributes `for_each_record`
//! honours (LogAppendTime, control batches), on batches built here.

use bytes::Bytes;
use sluice_wire::batch::{compute_crc, BatchHeader, Compression};
use sluice_wire::records::{
    encode_batch_compressed, for_each_record, retain_records, Record, StoredRecord,
};

use crate::{seed, Rng, ALL_CODECS};

const BYTES_MAX: usize = 1 << 20;

/// The header fields of a stored batch that a producer and the broker set,
/// which a rewrite must keep.
const BASE_OFFSET: i64 = 1_000;
const PARTITION_LEADER_EPOCH: i32 = 7;
const PRODUCER_ID: i64 = 4_242;
const PRODUCER_EPOCH: i16 = 3;
const BASE_SEQUENCE: i32 = 500;

/// `n` keyed records; every third value is null (a tombstone), some carry
/// headers, and timestamps go back and forth around a base.
fn records(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{}", i % 5))),
            value: (i % 3 != 2).then(|| Bytes::from(format!("value {i} ").repeat(1 + i % 4))),
            headers: if i % 4 == 0 {
                vec![
                    ("trace".into(), Some(Bytes::from(format!("t{i}")))),
                    ("empty".into(), None),
                ]
            } else {
                vec![]
            },
            timestamp: 1_700_000_000_000 + (i as i64 * 37 % 11) * 1_000,
        })
        .collect()
}

/// Sets the fields a producer and the broker fill in (base offset, epoch,
/// producer id, epoch and sequence, and attribute bits) and fixes the CRC.
fn stored(batch: &[u8], extra_attributes: i16) -> Bytes {
    let mut b = batch.to_vec();
    b[0..8].copy_from_slice(&BASE_OFFSET.to_be_bytes());
    b[12..16].copy_from_slice(&PARTITION_LEADER_EPOCH.to_be_bytes());
    let attributes = i16::from_be_bytes([b[21], b[22]]) | extra_attributes;
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&PRODUCER_ID.to_be_bytes());
    b[51..53].copy_from_slice(&PRODUCER_EPOCH.to_be_bytes());
    b[53..57].copy_from_slice(&BASE_SEQUENCE.to_be_bytes());
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(b)
}

/// Each record of a batch, owned, with its stored bytes.
fn read(batch: &[u8]) -> Vec<(StoredRecord, Vec<u8>)> {
    let mut out = Vec::new();
    for_each_record(batch, BYTES_MAX, |r| {
        out.push((r.to_stored(), r.encoded().to_vec()))
    })
    .unwrap();
    out
}

/// Checks `retain_records` on `batch` keeping the records whose index
/// `keep` accepts, against filtering the decoded records.
fn check_retain(codec: Compression, batch: &Bytes, keep: &dyn Fn(usize) -> bool) {
    let before = read(batch);
    let expected: Vec<_> = before
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(_, r)| r.clone())
        .collect();
    let mut seen = 0usize;
    let result = retain_records(batch, BYTES_MAX, |r| {
        assert_eq!(
            r.offset, before[seen].0.offset,
            "{codec:?}: visited in order"
        );
        seen += 1;
        keep(seen - 1)
    })
    .unwrap();
    assert_eq!(seen, before.len(), "{codec:?}: every record offered");
    let Some(after) = result else {
        assert!(expected.is_empty(), "{codec:?}: None with records kept");
        return;
    };
    assert!(!expected.is_empty(), "{codec:?}: a batch with nothing kept");
    if expected.len() == before.len() {
        assert_eq!(after, *batch, "{codec:?}: all kept must be the same bytes");
        return;
    }
    let old = BatchHeader::parse(batch).unwrap();
    let new = BatchHeader::parse(&after).unwrap();
    assert_eq!(new.total_len(), after.len(), "{codec:?}: length");
    assert_eq!(new.crc, compute_crc(&after), "{codec:?}: crc");
    assert_eq!(
        new.record_count as usize,
        expected.len(),
        "{codec:?}: count"
    );
    assert_eq!(new.compression(), codec);
    assert_eq!(
        BatchHeader {
            batch_length: old.batch_length,
            crc: old.crc,
            record_count: old.record_count,
            ..new
        },
        old,
        "{codec:?}: every other header field is kept"
    );
    // Same records, offsets, timestamps and bytes (so the same deltas).
    assert_eq!(read(&after), expected, "{codec:?}: kept records");
}

#[test]
fn retain_keeps_exactly_the_chosen_records_for_every_codec() {
    let mut rng = Rng::new(seed());
    let n = 40;
    type Keep = Box<dyn Fn(usize) -> bool>;
    let patterns: Vec<(&str, Keep)> = vec![
        ("none", Box::new(|_| false)),
        ("all", Box::new(|_| true)),
        ("first only", Box::new(|i| i == 0)),
        ("last only", Box::new(move |i| i == n - 1)),
        (
            "all but first and last",
            Box::new(move |i| i != 0 && i != n - 1),
        ),
        ("even", Box::new(|i| i % 2 == 0)),
        ("no tombstones", Box::new(|i| i % 3 != 2)),
    ];
    for codec in ALL_CODECS {
        let batch = stored(&encode_batch_compressed(&records(n), codec), 0);
        for (name, keep) in &patterns {
            eprintln!("{codec:?} {name}");
            check_retain(codec, &batch, keep.as_ref());
        }
        for _ in 0..20 {
            let mask = rng.next() as usize;
            let mask = mask ^ (rng.next() as usize) << 20;
            check_retain(codec, &batch, &|i| mask >> (i % 64) & 1 == 1);
        }
    }
}

#[test]
fn retain_of_a_large_batch_recompresses() {
    let many = records(5_000);
    for codec in ALL_CODECS {
        let batch = stored(&encode_batch_compressed(&many, codec), 0);
        check_retain(codec, &batch, &|i| i % 5 == 4);
    }
}

/// A rewritten batch is still a valid input: compacting twice is the same as
/// compacting once with both filters.
#[test]
fn retain_composes() {
    for codec in ALL_CODECS {
        let batch = stored(&encode_batch_compressed(&records(30), codec), 0);
        let once = retain_records(&batch, BYTES_MAX, |r| r.offset % 2 == 0)
            .unwrap()
            .unwrap();
        let twice = retain_records(&once, BYTES_MAX, |r| r.offset % 3 == 0)
            .unwrap()
            .unwrap();
        let direct = retain_records(&batch, BYTES_MAX, |r| r.offset % 6 == 0)
            .unwrap()
            .unwrap();
        assert_eq!(twice, direct, "{codec:?}");
    }
}

#[test]
fn control_batches_come_back_whole() {
    let batch = stored(
        &encode_batch_compressed(&records(3), Compression::None),
        0x20 | 0x10,
    );
    let mut offered = 0;
    let out = retain_records(&batch, BYTES_MAX, |_| {
        offered += 1;
        false
    })
    .unwrap();
    assert_eq!(out, Some(batch.clone()));
    assert_eq!(offered, 0);
    let mut control = Vec::new();
    for_each_record(&batch, BYTES_MAX, |r| control.push(r.control)).unwrap();
    assert_eq!(control, [true; 3]);
}

#[test]
fn log_append_time_batches_read_the_max_timestamp() {
    let batch = stored(
        &encode_batch_compressed(&records(6), Compression::Lz4),
        0x08,
    );
    let max = BatchHeader::parse(&batch).unwrap().max_timestamp;
    let mut seen = Vec::new();
    for_each_record(&batch, BYTES_MAX, |r| seen.push(r.timestamp)).unwrap();
    assert_eq!(seen, [max; 6]);
    let plain = stored(&encode_batch_compressed(&records(6), Compression::Lz4), 0);
    let mut seen = Vec::new();
    for_each_record(&plain, BYTES_MAX, |r| seen.push(r.timestamp)).unwrap();
    let expected: Vec<i64> = records(6).iter().map(|r| r.timestamp).collect();
    assert_eq!(seen, expected);
}

#[test]
fn headers_read_back() {
    let batch = stored(&encode_batch_compressed(&records(1), Compression::Gzip), 0);
    let mut headers = Vec::new();
    for_each_record(&batch, BYTES_MAX, |r| {
        headers = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
    })
    .unwrap();
    assert_eq!(
        headers,
        vec![
            (b"trace".to_vec(), Some(b"t0".to_vec())),
            (b"empty".to_vec(), None)
        ]
    );
}

/// A bad CRC, an unknown codec, a short bound and bytes after the last record
/// are all errors, for reading and for rewriting: a rewrite must never give
/// damaged records a fresh, valid CRC.
#[test]
fn bad_batches_are_refused() {
    let good = stored(&encode_batch_compressed(&records(4), Compression::Zstd), 0);
    let mut bad_crc = good.to_vec();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let with_codec = |bits: i16| {
        let mut b = good.to_vec();
        b[21..23].copy_from_slice(&bits.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    };
    let unknown_codec = with_codec(5);
    let wrong_codec = with_codec(1);
    let plain = encode_batch_compressed(&records(2), Compression::None);
    let mut trailing = plain.to_vec();
    trailing.push(0);
    let len = i32::from_be_bytes(trailing[8..12].try_into().unwrap()) + 1;
    trailing[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = compute_crc(&trailing);
    trailing[17..21].copy_from_slice(&crc.to_be_bytes());
    for (name, batch, bytes_max) in [
        ("bad crc", &bad_crc[..], BYTES_MAX),
        ("unknown codec", &unknown_codec[..], BYTES_MAX),
        ("zstd read as gzip", &wrong_codec[..], BYTES_MAX),
        ("short bound", &good[..], 10),
        ("trailing byte", &trailing[..], BYTES_MAX),
    ] {
        assert!(for_each_record(batch, bytes_max, |_| {}).is_err(), "{name}");
        assert!(
            retain_records(batch, bytes_max, |_| true).is_err(),
            "{name}"
        );
        assert!(
            retain_records(batch, bytes_max, |_| false).is_err(),
            "{name}"
        );
    }
}

/// Random damage to the record section of a batch (CRC fixed up, so the
/// decoder itself is exercised) never panics.
#[test]
fn damaged_record_sections_never_panic() {
    let mut rng = Rng::new(seed());
    for codec in ALL_CODECS {
        let good = stored(&encode_batch_compressed(&records(8), codec), 0);
        for _ in 0..500 {
            let mut b = good.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = 61 + rng.below((b.len() - 61) as u64) as usize;
                b[at] = rng.next() as u8;
            }
            let crc = compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            let mut n = 0;
            if for_each_record(&b, BYTES_MAX, |_| n += 1).is_ok() {
                assert_eq!(n, 8, "{codec:?}: Ok means every record was read");
            }
            if let Ok(Some(out)) = retain_records(&b, BYTES_MAX, |r| r.offset % 2 == 0) {
                assert_eq!(BatchHeader::parse(&out).unwrap().crc, compute_crc(&out));
            }
        }
    }
}
