//! Records inside a v2 batch: encoding a batch from records, and decoding the
//! records of an uncompressed batch.
//!
//! Record layout (varints are zig-zag encoded, as in Kafka):
//! length varint, attributes i8, timestamp delta varlong, offset delta varint,
//! key length varint + key, value length varint + value, header count varint,
//! then per header: key length varint + key, value length varint + value.
//! A length of -1 stands for null.

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    BatchHeader, Compression, CRC_START, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2,
};
use crate::error::DecodeError;

/// One record as a producer hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    pub timestamp: i64,
}

/// A record read back out of a batch, with its absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub record: Record,
}

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i64, DecodeError> {
    let mut raw: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos) else {
            return Err(DecodeError::BatchTruncated {
                needed: *pos + 1,
                available: buf.len(),
            });
        };
        *pos += 1;
        raw |= ((b & 0x7f) as u64) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    Err(DecodeError::malformed("varint", "longer than 10 bytes"))
}

fn put_bytes(buf: &mut BytesMut, b: &Option<Bytes>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

fn get_bytes(buf: &[u8], pos: &mut usize) -> Result<Option<Bytes>, DecodeError> {
    let len = get_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let end = pos
        .checked_add(len as usize)
        .filter(|&e| e <= buf.len())
        .ok_or(DecodeError::BatchTruncated {
            needed: *pos + len as usize,
            available: buf.len(),
        })?;
    let out = Bytes::copy_from_slice(&buf[*pos..end]);
    *pos = end;
    Ok(Some(out))
}

/// Encodes an uncompressed v2 batch with base offset 0, as a producer sends it.
pub fn encode_batch(records: &[Record]) -> Bytes {
    encode_batch_with(records, Compression::None, |body| body.to_vec())
}

/// Encodes a v2 batch whose record section is passed through `compress`
/// (identity for [`Compression::None`]).
pub fn encode_batch_with(
    records: &[Record],
    compression: Compression,
    compress: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Bytes {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_ts = records
        .iter()
        .map(|r| r.timestamp)
        .min()
        .expect("non-empty");
    let max_ts = records
        .iter()
        .map(|r| r.timestamp)
        .max()
        .expect("non-empty");
    let mut body = BytesMut::new();
    let mut rec = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.put_i8(0);
        put_varint(&mut rec, r.timestamp - base_ts);
        put_varint(&mut rec, i as i64);
        put_bytes(&mut rec, &r.key);
        put_bytes(&mut rec, &r.value);
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_varint(&mut rec, k.len() as i64);
            rec.put_slice(k.as_bytes());
            put_bytes(&mut rec, v);
        }
        put_varint(&mut body, rec.len() as i64);
        body.put_slice(&rec);
    }
    let body = if compression == Compression::None {
        body.to_vec()
    } else {
        compress(&body)
    };
    let attributes: i16 = match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    let total = HEADER_BYTES + body.len();
    let mut out = BytesMut::with_capacity(total);
    out.put_i64(0);
    out.put_i32((total - LOG_OVERHEAD_BYTES) as i32);
    out.put_i32(-1);
    out.put_i8(MAGIC_V2);
    out.put_u32(0);
    out.put_i16(attributes);
    out.put_i32(records.len() as i32 - 1);
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(-1);
    out.put_i16(-1);
    out.put_i32(-1);
    out.put_i32(records.len() as i32);
    out.put_slice(&body);
    let crc = crc32c::crc32c(&out[CRC_START..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out.freeze()
}

/// Decodes every record of an uncompressed batch (the whole batch bytes).
pub fn decode_records(batch: &[u8]) -> Result<Vec<StoredRecord>, DecodeError> {
    let header = BatchHeader::parse(batch)?;
    if header.total_len() > batch.len() {
        return Err(DecodeError::BatchTruncated {
            needed: header.total_len(),
            available: batch.len(),
        });
    }
    if header.compression() != Compression::None {
        return Err(DecodeError::malformed(
            "record batch",
            "compressed batches are decoded by the caller",
        ));
    }
    let body = &batch[HEADER_BYTES..header.total_len()];
    let mut pos = 0usize;
    let mut out = Vec::with_capacity(header.record_count.clamp(0, 1 << 16) as usize);
    for _ in 0..header.record_count {
        let len = get_varint(body, &mut pos)?;
        let end = pos
            .checked_add(usize::try_from(len).map_err(|_| DecodeError::BatchLength(len as i32))?)
            .filter(|&e| e <= body.len())
            .ok_or(DecodeError::BatchTruncated {
                needed: pos + len as usize,
                available: body.len(),
            })?;
        let rec = &body[..end];
        pos += 1; // attributes
        let ts_delta = get_varint(rec, &mut pos)?;
        let off_delta = get_varint(rec, &mut pos)?;
        let key = get_bytes(rec, &mut pos)?;
        let value = get_bytes(rec, &mut pos)?;
        let header_count = get_varint(rec, &mut pos)?;
        let mut headers = Vec::new();
        for _ in 0..header_count.max(0) {
            let k = get_bytes(rec, &mut pos)?.unwrap_or_default();
            let v = get_bytes(rec, &mut pos)?;
            headers.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
        if pos != end {
            return Err(DecodeError::malformed(
                "record",
                "length does not match its fields",
            ));
        }
        out.push(StoredRecord {
            offset: header.base_offset + off_delta,
            record: Record {
                key,
                value,
                headers,
                timestamp: header.base_timestamp + ts_delta,
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips() {
        let records = vec![
            Record {
                key: Some(Bytes::from_static(b"k1")),
                value: Some(Bytes::from_static(b"hello")),
                headers: vec![
                    ("h".into(), Some(Bytes::from_static(b"v"))),
                    ("n".into(), None),
                ],
                timestamp: 1_000,
            },
            Record {
                key: None,
                value: None,
                headers: vec![],
                timestamp: 900,
            },
        ];
        let batch = encode_batch(&records);
        let header = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.total_len(), batch.len());
        assert_eq!(header.crc, crate::batch::compute_crc(&batch));
        assert_eq!(header.record_count, 2);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.base_timestamp, 900);
        assert_eq!(header.max_timestamp, 1_000);
        let back = decode_records(&batch).unwrap();
        assert_eq!(
            back.iter().map(|r| r.record.clone()).collect::<Vec<_>>(),
            records
        );
        assert_eq!(
            back.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![0, 1]
        );
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let batch = encode_batch(&[Record {
            key: None,
            value: Some(Bytes::from_static(b"abc")),
            headers: vec![],
            timestamp: 1,
        }]);
        for cut in 0..batch.len() {
            assert!(decode_records(&batch[..cut]).is_err(), "cut at {cut}");
        }
    }
}
