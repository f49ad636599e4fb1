//! The Kafka RecordBatch v2 header, read in place.
//!
//! Layout (big-endian), offsets in bytes from the start of the batch:
//!
//! | offset | field                  | type  |
//! |-------:|------------------------|-------|
//! |      0 | base offset            | i64   |
//! |      8 | batch length           | i32   | bytes after this field
//! |     12 | partition leader epoch | i32   |
//! |     16 | magic (2)              | i8    |
//! |     17 | crc (CRC32C)           | u32   | covers bytes 21.. to the end
//! |     21 | attributes             | i16   |
//! |     23 | last offset delta      | i32   |
//! |     27 | base timestamp         | i64   |
//! |     35 | max timestamp          | i64   |
//! |     43 | producer id            | i64   |
//! |     51 | producer epoch         | i16   |
//! |     53 | base sequence          | i32   |
//! |     57 | record count           | i32   |
//! |     61 | records                |       |
//!
//! A produce request's record set is a run of such batches. [`split`] cuts it
//! into batches and checks each frame (length, magic, record count) without
//! touching the records; the CRC is checked by the storage engine right before
//! the batch is written, so that it is computed once per batch.

use bytes::{Buf, Bytes};

use crate::error::DecodeError;

/// Bytes of a v2 batch header, up to and including the record count.
pub const HEADER_BYTES: usize = 61;
/// Bytes before the batch length field ends: base offset and length.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// Where the CRC-covered part of a batch starts.
pub const CRC_START: usize = 21;
/// The only record format Sluice stores.
pub const MAGIC_V2: i8 = 2;

/// The compression codec named by a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// The decoded header of one v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads a header from the start of `buf`, checking length and magic.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, DecodeError> {
        if buf.len() < HEADER_BYTES {
            return Err(DecodeError::BatchTruncated {
                needed: HEADER_BYTES,
                available: buf.len(),
            });
        }
        let mut b = &buf[..HEADER_BYTES];
        let header = BatchHeader {
            base_offset: b.get_i64(),
            batch_length: b.get_i32(),
            partition_leader_epoch: b.get_i32(),
            magic: b.get_i8(),
            crc: b.get_u32(),
            attributes: b.get_i16(),
            last_offset_delta: b.get_i32(),
            base_timestamp: b.get_i64(),
            max_timestamp: b.get_i64(),
            producer_id: b.get_i64(),
            producer_epoch: b.get_i16(),
            base_sequence: b.get_i32(),
            record_count: b.get_i32(),
        };
        if (header.batch_length as i64) < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(DecodeError::BatchLength(header.batch_length));
        }
        if header.magic != MAGIC_V2 {
            return Err(DecodeError::BatchMagic(header.magic));
        }
        if header.record_count < 0 || header.last_offset_delta < 0 {
            return Err(DecodeError::BatchRecordCount(header.record_count));
        }
        Ok(header)
    }

    /// Bytes of the whole batch, header included.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD_BYTES + self.batch_length as usize
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & 0x7 {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// Whether the batch holds transaction control records.
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Computes the CRC32C a v2 batch should carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Cuts a record set into whole batches, each checked by [`BatchHeader::parse`].
///
/// Fails on a trailing partial batch: a producer never sends one.
pub fn split(records: &Bytes) -> Result<Vec<(BatchHeader, Bytes)>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < records.len() {
        let header = BatchHeader::parse(&records[pos..])?;
        let len = header.total_len();
        let available = records.len() - pos;
        if len > available {
            return Err(DecodeError::BatchTruncated {
                needed: len,
                available,
            });
        }
        out.push((header, records.slice(pos..pos + len)));
        pos += len;
    }
    Ok(out)
}
