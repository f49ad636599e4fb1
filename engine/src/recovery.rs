//! Rebuilding a segment's state from its file at startup.
//!
//! Every batch is checked (framing, CRC32C, offsets not going backwards; in
//! the active segment, each batch starting right after the one before); the
//! first one that fails ends the segment, and the file is truncated there, so
//! a torn write left by a crash or a power loss is cut off before new appends
//! land behind it (and with it any space allocated ahead of the writes).
//! The in-memory indexes are rebuilt on the way.

use crate::batch::BatchView;
use crate::error::{Error, Result};
use crate::log::LogConfig;
use crate::segment::Segment;
use crate::{FilePos, Offset};

/// Bytes read per step of the scan.
const SCAN_BYTES: usize = 1 << 20;

pub(crate) struct RecoveryOutcome {
    pub(crate) truncated_bytes: u64,
}

/// Scans `seg` from its start; `expected` is the offset the segment must not
/// start below (the end of the previous segment). `active` says the segment
/// was the one being written, whose file may hold space allocated ahead.
pub(crate) async fn recover_segment(
    seg: &mut Segment,
    expected: Offset,
    config: &LogConfig,
    active: bool,
) -> Result<RecoveryOutcome> {
    let file_size = seg
        .file
        .file_size()
        .await
        .map_err(|e| Error::glommio("stat segment", &seg.path, e))?;
    // `pos` is the end of the last batch accepted; the scan reads windows from it.
    let mut pos = 0u64;
    let mut next = expected.max(seg.base);
    seg.next_offset = seg.base;
    'scan: while pos < file_size {
        let len = (SCAN_BYTES as u64).min(file_size - pos) as usize;
        let buf = seg
            .file
            .read_at(pos, len)
            .await
            .map_err(|e| Error::glommio("read segment", &seg.path, e))?;
        let window_start = pos;
        let mut off = 0usize;
        while off < buf.len() {
            let view = match BatchView::parse(&buf[off..]) {
                Ok(Some(v)) => v,
                // A header cut by the window: read the next window from here.
                Ok(None) if off > 0 => break,
                Ok(None) | Err(_) => break 'scan,
            };
            // CRC32C does not cover a batch's base offset, so a damaged one
            // shows only as a jump. The engine gives every append the next
            // offset, so in the active segment (never compacted) batches are
            // dense; compacted closed segments keep gaps. A follower keeping
            // a compacted leader's offsets will need another check here.
            if view.total_len > config.message_bytes_max.max(SCAN_BYTES) * 2
                || window_start + (off + view.total_len) as u64 > file_size
                || view.base_offset < next.0
                || (active && view.base_offset != next.0)
            {
                break 'scan;
            }
            let batch_ok = if off + view.total_len <= buf.len() {
                view.crc_matches(&buf[off..off + view.total_len])
            } else if off == 0 {
                let whole = seg
                    .file
                    .read_at(pos, view.total_len)
                    .await
                    .map_err(|e| Error::glommio("read segment", &seg.path, e))?;
                whole.len() == view.total_len && view.crc_matches(&whole)
            } else {
                // A batch cut by the window: read the next window from it.
                break;
            };
            if !batch_ok {
                break 'scan;
            }
            let at = FilePos(window_start + off as u64);
            seg.index_batch(
                config.index_interval_bytes,
                Offset(view.base_offset),
                at,
                view.total_len as u64,
                view.max_timestamp,
            );
            next = Offset(view.last_offset() + 1);
            seg.next_offset = next;
            off += view.total_len;
            pos = window_start + off as u64;
        }
        if pos == window_start {
            break;
        }
    }
    assert_eq!(pos, seg.size, "every kept batch is indexed");
    let block = seg.block_bytes();
    let mut truncated_bytes = file_size - pos;
    if truncated_bytes > 0 {
        // Zeros up to the end of the last block are the padding of a direct-I/O
        // write, not damage. In the active segment, zeros from the last batch
        // on are also the space allocated ahead of the writes; only the next
        // two blocks are looked at, so bytes of writes that completed after
        // an unfinished one (never acknowledged) may go unreported.
        let look_end = if active {
            ((pos / block + 2) * block).min(file_size)
        } else if truncated_bytes < block && file_size % block == 0 {
            file_size
        } else {
            pos
        };
        if look_end > pos {
            let rest = seg
                .file
                .read_at(pos, (look_end - pos) as usize)
                .await
                .map_err(|e| Error::glommio("read segment", &seg.path, e))?;
            if rest.iter().all(|&b| b == 0) {
                truncated_bytes = 0;
            }
        }
        seg.file
            .truncate(pos)
            .await
            .map_err(|e| Error::glommio("truncate segment", &seg.path, e))?;
    }
    if !seg.load_tail().await? {
        return Err(Error::CorruptBatch("segment shorter than its batches"));
    }
    Ok(RecoveryOutcome { truncated_bytes })
}
