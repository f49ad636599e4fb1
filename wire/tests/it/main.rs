//! wire against batches captured from a real client (see testdata/README.md).

use bytes::Bytes;
use sluice_wire::batch::{compute_crc, split, BatchHeader, Compression};
use sluice_wire::records::decode_records;

fn captured(name: &str) -> Bytes {
    let path = format!("{}/../testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
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
    let records = decode_records(&bytes).unwrap();
    type KeyValueOffset<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);
    let kv: Vec<KeyValueOffset<'_>> = records
        .iter()
        .map(|r| (r.record.key.as_deref(), r.record.value.as_deref(), r.offset))
        .collect();
    assert_eq!(
        kv,
        vec![
            (Some(&b"k1"[..]), Some(&b"first value"[..]), 0),
            (Some(&b"k2"[..]), Some(&b"second"[..]), 1),
            (Some(&b""[..]), Some(&b"no key"[..]), 2),
        ]
    );
    assert!(records
        .iter()
        .all(|r| r.record.timestamp == h.base_timestamp));
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
    assert!(
        decode_records(&bytes).is_err(),
        "compressed records are not decoded in place"
    );
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
