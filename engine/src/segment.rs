//! One segment file of a partition log and its indexes.
//!
//! The file is written with direct I/O in whole blocks. Its logical size is
//! `size`: bytes past it (up to the next block boundary, or beyond after a
//! crash) are not part of the log. At startup the bytes past the last block
//! boundary are read into `tail`, for the active segment's write pipeline,
//! whose next write carries that block again, filled further.
//!
//! A closed segment's file is cut to exactly its batches and made durable
//! before its index files are written, so a valid pair of index files next to
//! a segment means the segment itself needs no scan at startup.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaFile, OpenOptions};

use crate::checkpoint;
use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::{FilePos, Offset};

/// The smallest unit of segment writes.
const WRITE_BLOCK_MIN: u64 = 4096;

/// The extension of a segment's data file.
pub(crate) const LOG_EXT: &str = "log";
/// The extension of a segment's offset index.
pub(crate) const INDEX_EXT: &str = "index";
/// The extension of a segment's time index.
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
/// The extension of a compacted copy not yet swapped in.
pub(crate) const CLEANED_EXT: &str = "cleaned";

/// The file name Kafka gives a file of the segment starting at `base`.
pub(crate) fn file_name(base: Offset, ext: &str) -> String {
    format!("{:020}.{ext}", base.0)
}

/// Parses a segment file name back into its base offset and extension.
pub(crate) fn parse_file_name(name: &str) -> Option<(Offset, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok().map(|base| (Offset(base), ext))
}

pub(crate) struct Segment {
    pub(crate) base: Offset,
    pub(crate) path: PathBuf,
    pub(crate) file: Rc<DmaFile>,
    /// Logical bytes: every batch in `[0, size)` has been written.
    pub(crate) size: u64,
    /// One past the last offset stored in the segment (for a closed segment,
    /// the base of the next one).
    pub(crate) next_offset: Offset,
    /// Largest batch max timestamp in the segment, -1 while empty.
    pub(crate) max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`.
    pub(crate) offset_of_max_timestamp: Offset,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// Bytes appended since the last index entry.
    pub(crate) bytes_since_index: u64,
    /// The bytes past the last block boundary as loaded at startup
    /// (`size % block` long); the log's write pipeline takes them over.
    pub(crate) tail: Vec<u8>,
    /// When the segment took its first batch (clock milliseconds), for `segment.ms`.
    pub(crate) first_append_ms: Option<i64>,
}

impl Segment {
    pub(crate) async fn open(dir: &Path, base: Offset) -> Result<Segment> {
        let path = dir.join(file_name(base, LOG_EXT));
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
            offset_of_max_timestamp: base,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            tail: Vec::new(),
            first_append_ms: None,
        })
    }

    /// Opens a closed segment ending at `next_offset` from its index files,
    /// without reading its batches. `None` if an index file is missing or
    /// does not fit the segment: the caller scans it instead.
    pub(crate) async fn load_closed(
        dir: &Path,
        base: Offset,
        next_offset: Offset,
    ) -> Result<Option<Segment>> {
        let mut seg = Segment::open(dir, base).await?;
        let size = seg
            .file
            .file_size()
            .await
            .map_err(|e| Error::glommio("stat segment", &seg.path, e))?;
        let offset_count = next_offset.0 - base.0;
        let index = checkpoint::read_raw(&dir.join(file_name(base, INDEX_EXT))).await?;
        let time = checkpoint::read_raw(&dir.join(file_name(base, TIME_INDEX_EXT))).await?;
        let (Some(index), Some(time)) = (index, time) else {
            return Ok(None);
        };
        let (Some(offset_index), Some(time_index)) = (
            OffsetIndex::decode(&index, size.max(1), offset_count),
            TimeIndex::decode(&time, offset_count),
        ) else {
            return Ok(None);
        };
        seg.size = size;
        seg.next_offset = next_offset;
        seg.max_timestamp = time_index.max_timestamp();
        seg.offset_index = offset_index;
        seg.time_index = time_index;
        seg.bytes_since_index = size - seg.offset_index.last_pos().0;
        Ok(Some(seg))
    }

    /// The unit of writes: the device's direct-I/O alignment, but never
    /// under 4 KiB, the page and file system block size. A write of part of
    /// a file system block makes the file system serialize it against every
    /// other write of the file and wait for it, and makes a device with
    /// 4 KiB sectors read before it writes.
    pub(crate) fn block_bytes(&self) -> u64 {
        self.file.alignment().max(WRITE_BLOCK_MIN)
    }

    pub(crate) fn sibling(&self, ext: &str) -> PathBuf {
        self.path.with_extension(ext)
    }

    /// Records a batch of `len` bytes, written at `pos`, in the indexes.
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
            if self.max_timestamp >= 0 {
                self.time_index
                    .push(self.base, self.max_timestamp, self.offset_of_max_timestamp);
            }
            self.bytes_since_index = 0;
        }
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.offset_of_max_timestamp = base_offset;
        }
        self.bytes_since_index += len;
        self.size += len;
    }

    /// Adds the final time index entry, carrying the largest timestamp.
    pub(crate) fn seal_time_index(&mut self) {
        if self.max_timestamp >= 0 {
            self.time_index
                .push(self.base, self.max_timestamp, self.offset_of_max_timestamp);
        }
    }

    /// Reads the partial last block of a segment `size` long into `tail`;
    /// false if the file is shorter than that.
    pub(crate) async fn load_tail(&mut self) -> Result<bool> {
        let block = self.block_bytes();
        let tail_start = self.size - self.size % block;
        let tail_len = (self.size - tail_start) as usize;
        self.tail = if tail_len > 0 {
            let buf = self
                .file
                .read_at(tail_start, tail_len)
                .await
                .map_err(|e| Error::glommio("read segment tail", &self.path, e))?;
            if buf.len() != tail_len {
                return Ok(false);
            }
            buf.to_vec()
        } else {
            Vec::new()
        };
        Ok(true)
    }

    /// Writes both index files durably (the directory is synced by the caller).
    pub(crate) async fn write_index_files(&self) -> Result<()> {
        checkpoint::write_raw(&self.sibling(INDEX_EXT), self.offset_index.encode()).await?;
        checkpoint::write_raw(&self.sibling(TIME_INDEX_EXT), self.time_index.encode()).await
    }
}
