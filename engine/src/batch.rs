//! The engine's read-only view of a RecordBatch v2 header.
//!
//! The engine needs only the framing and the offsets and timestamps of a
//! batch; the full record codec lives in the wire crate. The layout is
//! documented there (`sluice_wire::batch`); both read the same bytes.

use crate::error::{Error, Result};

pub(crate) const HEADER_BYTES: usize = 61;
pub(crate) const LOG_OVERHEAD_BYTES: usize = 12;
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;
const POS_PARTITION_LEADER_EPOCH: usize = 12;
const POS_ATTRIBUTES: usize = 21;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What the engine reads of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView {
    pub base_offset: i64,
    /// Bytes of the whole batch, header included.
    pub total_len: usize,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub record_count: i32,
}

impl BatchView {
    /// Reads the header at the start of `buf` and checks its framing.
    ///
    /// `Ok(None)` means `buf` is too short to hold the header.
    pub fn parse(buf: &[u8]) -> Result<Option<BatchView>> {
        if buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let batch_length = be_i32(buf, 8);
        if batch_length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
            return Err(Error::CorruptBatch("batch length too small"));
        }
        if buf[16] as i8 != MAGIC_V2 {
            return Err(Error::CorruptBatch("magic is not 2"));
        }
        let view = BatchView {
            base_offset: be_i64(buf, 0),
            total_len: LOG_OVERHEAD_BYTES + batch_length as usize,
            crc: u32::from_be_bytes(buf[17..21].try_into().expect("4 bytes")),
            attributes: be_i16(buf, POS_ATTRIBUTES),
            last_offset_delta: be_i32(buf, 23),
            base_timestamp: be_i64(buf, 27),
            max_timestamp: be_i64(buf, 35),
            record_count: be_i32(buf, 57),
        };
        if view.last_offset_delta < 0 || view.record_count < 0 {
            return Err(Error::CorruptBatch("negative offset delta or record count"));
        }
        if view.record_count > 0 && view.last_offset_delta < view.record_count - 1 {
            return Err(Error::CorruptBatch("offset delta below record count"));
        }
        Ok(Some(view))
    }

    /// Checks the CRC32C of a whole batch whose header is `self`.
    pub fn crc_matches(&self, batch: &[u8]) -> bool {
        batch.len() == self.total_len && crc32c::crc32c(&batch[CRC_START..]) == self.crc
    }

    /// Whether every batch's CRC32C matches its header; `views[i]` is the
    /// header of `batches[i]`. Several batches are checked at once, which
    /// is faster than one by one for small batches (see [`crc32c_each`]).
    pub fn crcs_match(views: &[BatchView], batches: &[bytes::Bytes]) -> bool {
        assert_eq!(views.len(), batches.len(), "one view per batch");
        // A view's length holds at least a header, so the CRC range is there.
        if views
            .iter()
            .zip(batches)
            .any(|(v, b)| b.len() != v.total_len)
        {
            return false;
        }
        let covered: Vec<&[u8]> = batches.iter().map(|b| &b[CRC_START..]).collect();
        crc32c_each(&covered)
            .into_iter()
            .zip(views)
            .all(|(crc, v)| crc == v.crc)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + self.last_offset_delta as i64
    }

    pub fn is_compressed(&self) -> bool {
        self.attributes & 0x7 != 0
    }

    /// The first record's timestamp at or after `target`, walking the records
    /// of an uncompressed batch; a compressed batch answers with its base
    /// offset, since the engine does not decompress.
    pub(crate) fn first_offset_at_or_after(&self, batch: &[u8], target: i64) -> Option<(i64, i64)> {
        if self.max_timestamp < target {
            return None;
        }
        if self.is_compressed() {
            return Some((self.base_offset, self.max_timestamp));
        }
        let mut pos = HEADER_BYTES;
        for _ in 0..self.record_count {
            let (len, n) = read_varint(batch.get(pos..)?)?;
            let body_start = pos + n;
            let body = batch.get(body_start..body_start + usize::try_from(len).ok()?)?;
            // A record: attributes (i8), timestamp delta (varlong), offset delta (varint), ...
            let (ts_delta, m) = read_varint(body.get(1..)?)?;
            let (off_delta, _) = read_varint(body.get(1 + m..)?)?;
            let ts = self.base_timestamp + ts_delta;
            if ts >= target {
                return Some((self.base_offset + off_delta, ts));
            }
            pos = body_start + len as usize;
        }
        Some((self.base_offset, self.max_timestamp))
    }
}

/// The CRC32C of each of `parts`.
///
/// One CRC32C chain is bound by the instruction's latency (3 cycles per 8
/// bytes on current x86_64 cores), while a core can start one such
/// instruction per cycle. The `crc32c` crate runs three chains within one
/// buffer and joins them with table lookups, but only in whole chunks of
/// 768 bytes; the rest of a buffer goes one chain long. For a 1 KiB batch
/// that leaves about a quarter of it, and the joins, on the slow path.
/// Batches are independent, so here three batches run as three chains side
/// by side, with nothing to join; each one's tail past the shortest of the
/// three goes through the crate. `benches/crc.rs` measures both.
pub fn crc32c_each(parts: &[&[u8]]) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sse4.2") {
        let mut out = Vec::with_capacity(parts.len());
        let mut threes = parts.chunks_exact(3);
        for t in &mut threes {
            // SAFETY: the CPU has SSE 4.2, checked just above.
            out.extend(unsafe { crc32c_three(t[0], t[1], t[2]) });
        }
        out.extend(threes.remainder().iter().map(|p| crc32c::crc32c(p)));
        return out;
    }
    parts.iter().map(|p| crc32c::crc32c(p)).collect()
}

/// CRC32C of three buffers, as three interleaved chains over the 8-byte
/// words they all have, then the rest of each through the crate.
///
/// # Safety
/// The CPU must support SSE 4.2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_three(a: &[u8], b: &[u8], c: &[u8]) -> [u32; 3] {
    use std::arch::x86_64::_mm_crc32_u64;
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
    let words = a.len().min(b.len()).min(c.len()) / 8;
    // CRC32C starts from all ones and ends inverted (as the crate does).
    let (mut x, mut y, mut z) = (0xffff_ffffu64, 0xffff_ffffu64, 0xffff_ffffu64);
    for ((wa, wb), wc) in a
        .chunks_exact(8)
        .zip(b.chunks_exact(8))
        .zip(c.chunks_exact(8))
        .take(words)
    {
        x = _mm_crc32_u64(x, word(wa));
        y = _mm_crc32_u64(y, word(wb));
        z = _mm_crc32_u64(z, word(wc));
    }
    let done = words * 8;
    // `crc32c_append` goes on from a finished CRC32C value.
    let rest = |crc: u64, part: &[u8]| crc32c::crc32c_append(!(crc as u32), &part[done..]);
    [rest(x, a), rest(y, b), rest(z, c)]
}

/// The leading bytes of a batch that hold every field [`stamp`] sets.
pub(crate) const STAMPED_BYTES: usize = POS_PARTITION_LEADER_EPOCH + 4;

/// Stamps the broker-assigned base offset and leader epoch into a batch.
pub(crate) fn stamp(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[POS_PARTITION_LEADER_EPOCH..POS_PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Reads a zig-zag varint (as Kafka's records use) and its length in bytes.
fn read_varint(buf: &[u8]) -> Option<(i64, usize)> {
    let mut raw: u64 = 0;
    for (i, byte) in buf.iter().take(10).enumerate() {
        raw |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            let value = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn crc32c_each_matches_the_crate(
            parts in prop::collection::vec(
                (0usize..8, prop::collection::vec(any::<u8>(), 0..3000)),
                0..10,
            ),
        ) {
            // Each part starts at a random misalignment within its buffer.
            let slices: Vec<&[u8]> = parts
                .iter()
                .map(|(skip, bytes)| &bytes[(*skip).min(bytes.len())..])
                .collect();
            let expected: Vec<u32> = slices.iter().map(|p| crc32c::crc32c(p)).collect();
            prop_assert_eq!(crc32c_each(&slices), expected);
        }
    }

    #[test]
    fn varint_zigzag() {
        assert_eq!(read_varint(&[0x00]), Some((0, 1)));
        assert_eq!(read_varint(&[0x01]), Some((-1, 1)));
        assert_eq!(read_varint(&[0x02]), Some((1, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]), Some((150, 2)));
        assert_eq!(read_varint(&[0x80]), None);
    }
}
