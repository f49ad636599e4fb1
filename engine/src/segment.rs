//! One segment file of a partition log and its in-memory indexes.
//!
//! The file is written with direct I/O in whole blocks. Its logical size is
//! `size`: bytes past it (up to the next block boundary, or beyond after a
//! crash) are not part of the log. The partially filled last block is kept in
//! `tail` so that the next append can rewrite it together with the new bytes.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::{FilePos, Offset};

/// The file name Kafka gives the segment starting at `base`.
pub(crate) fn file_name(base: Offset) -> String {
    format!("{:020}.log", base.0)
}

/// Parses a segment file name back into its base offset.
pub(crate) fn parse_file_name(name: &str) -> Option<Offset> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(Offset)
}

pub(crate) struct Segment {
    pub(crate) base: Offset,
    pub(crate) path: PathBuf,
    pub(crate) file: Rc<DmaFile>,
    /// Logical bytes: every batch in `[0, size)` has been written.
    pub(crate) size: u64,
    /// One past the last offset stored in the segment.
    pub(crate) next_offset: Offset,
    /// Largest batch max timestamp in the segment, -1 while empty.
    pub(crate) max_timestamp: i64,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// Bytes appended since the last index entry.
    pub(crate) bytes_since_index: u64,
    /// The bytes of the partially filled last block, `size % block` long.
    pub(crate) tail: Vec<u8>,
}

impl Segment {
    pub(crate) async fn open(dir: &Path, base: Offset) -> Result<Segment> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(&path)
            .await
            .map_err(|e| Error::glommio("open segment", &path, e))?;
        Ok(Segment {
            base,
            path,
            file: Rc::new(file),
            size: 0,
            next_offset: base,
            max_timestamp: -1,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            tail: Vec::new(),
        })
    }

    pub(crate) fn block_bytes(&self) -> u64 {
        self.file.alignment()
    }

    /// Records a batch of `len` bytes, written at `pos`, in the indexes.
    ///
    /// A time index entry pairs a position with the largest timestamp of all
    /// batches before it, so that scanning from the last entry below a target
    /// timestamp cannot miss a batch that reaches it.
    pub(crate) fn index_batch(
        &mut self,
        index_interval_bytes: u64,
        base_offset: Offset,
        pos: FilePos,
        len: u64,
        max_timestamp: i64,
    ) {
        assert_eq!(pos.0, self.size, "batches are indexed in file order");
        if self.bytes_since_index >= index_interval_bytes && pos.0 > 0 {
            self.offset_index.push(self.base, base_offset, pos);
            self.time_index.push(self.max_timestamp, pos);
            self.bytes_since_index = 0;
        }
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        self.bytes_since_index += len;
        self.size += len;
    }
}
