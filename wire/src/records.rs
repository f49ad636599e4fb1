//! Records inside a v2 batch: encoding a batch from records, visiting the
//! records of a batch of any codec, and rewriting a batch with some of its
//! records dropped, as compaction does.
//!
//! Record layout (varints are zig-zag encoded, as in Kafka):
//! length varint, attributes i8, timestamp delta varlong, offset delta varint,
//! key length varint + key, value length varint + value, header count varint,
//! then per header: key length varint + key, value length varint + value.
//! A length of -1 stands for null (a header key is never null). The record
//! section after the batch header is this run of records, compressed as a
//! whole with the codec the batch attributes name.
//!
//! Invariants: a batch is read only after its CRC matches, so a rewrite never
//! turns corrupt bytes into a batch with a valid CRC; decoding never panics on
//! input and allocates only the decompressed record section, bounded by the
//! caller's `bytes_max`; a batch must hold exactly `record count` records with
//! nothing after them; [`retain_records`] changes only the batch length, the
//! CRC, the record count and the record section, and copies each kept record
//! byte for byte.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{
    compute_crc, BatchHeader, Compression, CRC_START, HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2,
};
use crate::compression;
use crate::error::DecodeError;

/// The largest decompressed record section [`decode_records`] accepts. Its
/// callers read small batches (group metadata, tests); readers of arbitrary
/// batches pass their own bound to [`for_each_record`].
pub const DECODE_RECORDS_BYTES_MAX: usize = 64 << 20;

/// Where the batch length sits in a batch header.
const BATCH_LENGTH_AT: usize = 8;
/// Where the CRC sits in a batch header.
const CRC_AT: usize = 17;
/// Where the record count sits in a batch header: its last field.
const RECORD_COUNT_AT: usize = 57;
const _: () = assert!(BATCH_LENGTH_AT + 4 == LOG_OVERHEAD_BYTES);
const _: () = assert!(CRC_AT + 4 == CRC_START);
const _: () = assert!(RECORD_COUNT_AT + 4 == HEADER_BYTES);

/// The attribute bits naming the codec.
const ATTRIBUTES_CODEC_MASK: i16 = 0x07;
/// The attribute bit saying the broker stamped the batch's max timestamp on
/// every record (`LogAppendTime`).
const ATTRIBUTES_LOG_APPEND_TIME: i16 = 0x08;

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

/// A record of a batch, borrowed from the batch (or from its decompressed
/// record section) while [`for_each_record`] or [`retain_records`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Base offset plus the record's offset delta.
    pub offset: i64,
    /// Base timestamp plus the record's timestamp delta, or the batch's max
    /// timestamp when the batch has `LogAppendTime`.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    pub headers: Headers<'a>,
    /// Whether the batch is a transaction control batch, whose records are
    /// commit or abort markers rather than data.
    pub control: bool,
    encoded: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The record exactly as stored, length prefix included.
    pub fn encoded(&self) -> &'a [u8] {
        self.encoded
    }

    /// An owned copy, with header keys read as UTF-8 (lossily).
    pub fn to_stored(&self) -> StoredRecord {
        StoredRecord {
            offset: self.offset,
            record: Record {
                key: self.key.map(Bytes::copy_from_slice),
                value: self.value.map(Bytes::copy_from_slice),
                headers: self
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            v.map(Bytes::copy_from_slice),
                        )
                    })
                    .collect(),
                timestamp: self.timestamp,
            },
        }
    }
}

/// The headers of a [`RecordRef`], checked when the record was read and
/// decoded again on iteration, so that visiting a record allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    count: usize,
    /// The headers' bytes, after the header count.
    bytes: &'a [u8],
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each header as its key and its value (`None` for a null value).
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            remaining: self.count,
            bytes: self.bytes,
            pos: 0,
        }
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    type IntoIter = HeaderIter<'a>;

    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Headers`].
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    remaining: usize,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The bytes were parsed with the same function when the record was
        // read, so failing now is a bug, not bad input.
        let header = get_header(self.bytes, &mut self.pos)
            .expect("headers are checked when their record is read");
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for HeaderIter<'_> {}

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
                needed: pos.saturating_add(1),
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

/// The next `len` bytes of `buf`, or an error if it holds fewer.
fn get_slice<'a>(buf: &'a [u8], pos: &mut usize, len: u64) -> Result<&'a [u8], DecodeError> {
    let out = usize::try_from(len)
        .ok()
        .and_then(|len| pos.checked_add(len))
        .and_then(|end| buf.get(*pos..end))
        .ok_or(DecodeError::BatchTruncated {
            needed: usize::try_from(len)
                .unwrap_or(usize::MAX)
                .saturating_add(*pos),
            available: buf.len(),
        })?;
    *pos += out.len();
    Ok(out)
}

/// A length-prefixed byte string where a negative length stands for null.
fn get_nullable<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>, DecodeError> {
    let len = get_varint(buf, pos)?;
    if len < 0 {
        return Ok(None);
    }
    get_slice(buf, pos, len.unsigned_abs()).map(Some)
}

fn get_header<'a>(
    buf: &'a [u8],
    pos: &mut usize,
) -> Result<(&'a [u8], Option<&'a [u8]>), DecodeError> {
    let key_len = get_varint(buf, pos)?;
    if key_len < 0 {
        return Err(DecodeError::malformed("record header", "null key"));
    }
    let key = get_slice(buf, pos, key_len.unsigned_abs())?;
    let value = get_nullable(buf, pos)?;
    Ok((key, value))
}

/// Encodes an uncompressed v2 batch with base offset 0, as a producer sends it.
pub fn encode_batch(records: &[Record]) -> Bytes {
    encode_batch_with(records, Compression::None, |body| body.to_vec())
}

/// Encodes a v2 batch with base offset 0 whose record section is compressed
/// with `codec` by [`compression::compress`].
pub fn encode_batch_compressed(records: &[Record], codec: Compression) -> Bytes {
    encode_batch_with(records, codec, |body| compression::compress(codec, body))
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
    let mut builder = BatchBuilder::new(base_ts, 0);
    let mut headers: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
    for r in records {
        headers.clear();
        headers.extend(r.headers.iter().map(|(k, v)| (k.as_bytes(), v.as_deref())));
        builder.push(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers);
    }
    builder.finish_with(compression, compress)
}

/// Bytes of `v` as a zig-zag varint.
fn varint_len(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    // One byte per started group of 7 bits; zero takes one byte.
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(b.len() as i64) + b.len(),
        None => varint_len(-1),
    }
}

fn put_opt_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

/// Builds a v2 batch with base offset 0 one record at a time, as a producer
/// does: each record is written once, straight into the batch buffer, whose
/// first [`HEADER_BYTES`] are left for the header. An uncompressed batch is
/// then finished in place without copying its records.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    base_timestamp: i64,
    timestamp_max: i64,
    record_count: i32,
}

impl BatchBuilder {
    /// A builder whose timestamp deltas count from `base_timestamp`;
    /// `capacity_bytes` is a hint for the record section.
    pub fn new(base_timestamp: i64, capacity_bytes: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(HEADER_BYTES + capacity_bytes);
        buf.put_bytes(0, HEADER_BYTES);
        BatchBuilder {
            buf,
            base_timestamp,
            timestamp_max: i64::MIN,
            record_count: 0,
        }
    }

    /// Appends one record; header keys are never null.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
    ) {
        let timestamp_delta = timestamp - self.base_timestamp;
        let offset_delta = self.record_count as i64;
        let mut len = 1
            + varint_len(timestamp_delta)
            + varint_len(offset_delta)
            + bytes_len(key)
            + bytes_len(value)
            + varint_len(headers.len() as i64);
        for (k, v) in headers {
            len += bytes_len(Some(k)) + bytes_len(*v);
        }
        self.buf.reserve(varint_len(len as i64) + len);
        let start = self.buf.len();
        put_varint(&mut self.buf, len as i64);
        let body_start = self.buf.len();
        self.buf.put_i8(0);
        put_varint(&mut self.buf, timestamp_delta);
        put_varint(&mut self.buf, offset_delta);
        put_opt_bytes(&mut self.buf, key);
        put_opt_bytes(&mut self.buf, value);
        put_varint(&mut self.buf, headers.len() as i64);
        for (k, v) in headers {
            put_opt_bytes(&mut self.buf, Some(k));
            put_opt_bytes(&mut self.buf, *v);
        }
        assert_eq!(self.buf.len() - body_start, len, "record length computed");
        debug_assert!(self.buf.len() > start);
        self.timestamp_max = self.timestamp_max.max(timestamp);
        self.record_count += 1;
    }

    pub fn record_count(&self) -> usize {
        self.record_count as usize
    }

    /// Bytes of the uncompressed record section so far.
    pub fn section_bytes(&self) -> usize {
        self.buf.len() - HEADER_BYTES
    }

    /// Finishes the batch, compressing its record section with `codec`.
    pub fn finish(self, codec: Compression) -> Bytes {
        self.finish_with(codec, |body| compression::compress(codec, body))
    }

    /// Finishes the batch, passing its record section through `compress`
    /// unless `compression` is [`Compression::None`].
    pub fn finish_with(
        self,
        compression: Compression,
        compress: impl FnOnce(&[u8]) -> Vec<u8>,
    ) -> Bytes {
        assert!(self.record_count > 0, "a batch holds at least one record");
        let mut out = if compression == Compression::None {
            self.buf
        } else {
            let body = compress(&self.buf[HEADER_BYTES..]);
            let mut out = BytesMut::with_capacity(HEADER_BYTES + body.len());
            out.put_bytes(0, HEADER_BYTES);
            out.put_slice(&body);
            out
        };
        let attributes: i16 = match compression {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        };
        let total = out.len();
        let mut header = &mut out[..HEADER_BYTES];
        header.put_i64(0);
        header.put_i32((total - LOG_OVERHEAD_BYTES) as i32);
        header.put_i32(-1);
        header.put_i8(MAGIC_V2);
        header.put_u32(0);
        header.put_i16(attributes);
        header.put_i32(self.record_count - 1);
        header.put_i64(self.base_timestamp);
        header.put_i64(self.timestamp_max);
        header.put_i64(-1);
        header.put_i16(-1);
        header.put_i32(-1);
        header.put_i32(self.record_count);
        assert!(header.is_empty(), "header fields fill the header");
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[CRC_AT..CRC_START].copy_from_slice(&crc.to_be_bytes());
        out.freeze()
    }
}

/// Decodes every record of a batch of any codec (the whole batch bytes),
/// accepting up to [`DECODE_RECORDS_BYTES_MAX`] of decompressed records.
pub fn decode_records(batch: &[u8]) -> Result<Vec<StoredRecord>, DecodeError> {
    let mut out = Vec::new();
    for_each_record(batch, DECODE_RECORDS_BYTES_MAX, |r| out.push(r.to_stored()))?;
    Ok(out)
}

/// Calls `f` for every record of one v2 batch of any codec, in order.
///
/// `batch` starts with the batch header; bytes after the batch's length are
/// ignored. `bytes_max` bounds the decompressed record section of a
/// compressed batch; an uncompressed batch is read in place. The CRC is
/// checked first. On an error `f` may have seen the records before it.
pub fn for_each_record(
    batch: &[u8],
    bytes_max: usize,
    f: impl FnMut(RecordRef<'_>),
) -> Result<(), DecodeError> {
    let (header, batch) = checked_batch(batch)?;
    let codec = codec(&header)?;
    let section = record_section(&header, codec, batch, bytes_max)?;
    visit(&header, &section, f)
}

/// Rewrites one stored v2 batch keeping only the records `keep` accepts, as
/// Kafka's log cleaner does.
///
/// The result has the same base offset, last offset delta, partition leader
/// epoch, attributes (so the same codec: kept records are compressed again
/// with it), base and max timestamps, producer id, epoch and base sequence;
/// its kept records are byte for byte as they were, with their offset and
/// timestamp deltas; its record count, length and CRC are computed afresh.
///
/// Returns `Ok(None)` if `keep` accepts no record, and a copy of the batch if
/// it accepts every record. A control batch comes back whole without `keep`
/// seeing it. `bytes_max` bounds the decompressed record section, as in
/// [`for_each_record`].
pub fn retain_records(
    batch: &[u8],
    bytes_max: usize,
    mut keep: impl FnMut(&RecordRef<'_>) -> bool,
) -> Result<Option<Bytes>, DecodeError> {
    let (header, batch) = checked_batch(batch)?;
    if header.is_control() {
        return Ok(Some(Bytes::copy_from_slice(batch)));
    }
    let codec = codec(&header)?;
    let section = record_section(&header, codec, batch, bytes_max)?;
    let mut kept = Vec::with_capacity(section.len());
    let mut kept_count: i32 = 0;
    visit(&header, &section, |r| {
        if keep(&r) {
            kept.extend_from_slice(r.encoded);
            kept_count += 1;
        }
    })?;
    if kept_count == 0 {
        return Ok(None);
    }
    if kept_count == header.record_count {
        return Ok(Some(Bytes::copy_from_slice(batch)));
    }
    let section = match codec {
        Compression::None => kept,
        codec => compression::compress(codec, &kept),
    };
    let total = HEADER_BYTES + section.len();
    // Kept records are fewer than the stored ones and compress with the same
    // codec, so this fails only for a batch that was itself near 2 GiB.
    let batch_length = i32::try_from(total - LOG_OVERHEAD_BYTES)
        .map_err(|e| DecodeError::malformed("rewritten record batch", e))?;
    let mut out = BytesMut::with_capacity(total);
    out.put_slice(&batch[..RECORD_COUNT_AT]);
    out.put_i32(kept_count);
    out.put_slice(&section);
    out[BATCH_LENGTH_AT..LOG_OVERHEAD_BYTES].copy_from_slice(&batch_length.to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_START].copy_from_slice(&crc.to_be_bytes());
    let out = out.freeze();
    assert_eq!(out.len(), total);
    debug_assert_eq!(
        {
            let mut n = 0;
            for_each_record(&out, bytes_max, |_| n += 1)
                .map(|()| n)
                .ok()
        },
        Some(kept_count),
        "a rewritten batch reads back with its kept records"
    );
    Ok(Some(out))
}

/// Parses the header of `batch`, cuts the batch to its length and checks its
/// CRC.
fn checked_batch(batch: &[u8]) -> Result<(BatchHeader, &[u8]), DecodeError> {
    let header = BatchHeader::parse(batch)?;
    let batch = batch
        .get(..header.total_len())
        .ok_or(DecodeError::BatchTruncated {
            needed: header.total_len(),
            available: batch.len(),
        })?;
    let crc = compute_crc(batch);
    if crc != header.crc {
        return Err(DecodeError::malformed(
            "record batch",
            format!(
                "stored crc {:#010x} but the batch sums to {crc:#010x}",
                header.crc
            ),
        ));
    }
    Ok((header, batch))
}

/// The batch's codec, refusing the codec numbers Kafka does not define
/// (which [`BatchHeader::compression`] reads as none).
fn codec(header: &BatchHeader) -> Result<Compression, DecodeError> {
    let bits = header.attributes & ATTRIBUTES_CODEC_MASK;
    if bits > 4 {
        return Err(DecodeError::malformed(
            "record batch",
            format!("unknown compression codec {bits}"),
        ));
    }
    Ok(header.compression())
}

/// The batch's records, decompressed if they are compressed.
fn record_section<'a>(
    header: &BatchHeader,
    codec: Compression,
    batch: &'a [u8],
    bytes_max: usize,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    let raw = &batch[HEADER_BYTES..];
    // An empty batch (the cleaner's way to keep a producer's state once its
    // records are gone) has no record section to decompress.
    if codec == Compression::None || (raw.is_empty() && header.record_count == 0) {
        return Ok(Cow::Borrowed(raw));
    }
    compression::decompress(codec, raw, bytes_max).map(Cow::Owned)
}

/// Reads the `record count` records of `section` and calls `f` on each;
/// fails if the section holds fewer or has bytes after them.
fn visit<'a>(
    header: &BatchHeader,
    section: &'a [u8],
    mut f: impl FnMut(RecordRef<'a>),
) -> Result<(), DecodeError> {
    let log_append_time = header.attributes & ATTRIBUTES_LOG_APPEND_TIME != 0;
    let mut pos = 0usize;
    for _ in 0..header.record_count {
        let start = pos;
        let len = get_varint(section, &mut pos)?;
        if len < 0 {
            return Err(DecodeError::malformed("record", format!("length {len}")));
        }
        let rec = get_slice(section, &mut pos, len.unsigned_abs())?;
        let encoded = &section[start..pos];
        let mut at = 0usize;
        let _attributes = get_slice(rec, &mut at, 1)?;
        let timestamp_delta = get_varint(rec, &mut at)?;
        let offset_delta = get_varint(rec, &mut at)?;
        let key = get_nullable(rec, &mut at)?;
        let value = get_nullable(rec, &mut at)?;
        let header_count = get_varint(rec, &mut at)?;
        if header_count < 0 {
            return Err(DecodeError::malformed(
                "record",
                format!("{header_count} headers"),
            ));
        }
        let headers_at = at;
        let mut count = 0usize;
        // Each header takes at least two bytes, so a huge count runs out of
        // bytes long before it runs long.
        while (count as u64) < header_count.unsigned_abs() {
            get_header(rec, &mut at)?;
            count += 1;
        }
        if at != rec.len() {
            return Err(DecodeError::malformed(
                "record",
                "length does not match its fields",
            ));
        }
        let offset = header
            .base_offset
            .checked_add(offset_delta)
            .ok_or_else(|| DecodeError::malformed("record", "offset overflows"))?;
        let timestamp = if log_append_time {
            header.max_timestamp
        } else {
            header
                .base_timestamp
                .checked_add(timestamp_delta)
                .ok_or_else(|| DecodeError::malformed("record", "timestamp overflows"))?
        };
        f(RecordRef {
            offset,
            timestamp,
            key,
            value,
            headers: Headers {
                count,
                bytes: &rec[headers_at..],
            },
            control: header.is_control(),
            encoded,
        });
    }
    if pos != section.len() {
        return Err(DecodeError::malformed(
            "record batch",
            format!(
                "{} bytes after its {} records",
                section.len() - pos,
                header.record_count
            ),
        ));
    }
    Ok(())
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
