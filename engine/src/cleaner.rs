//! Compaction: closed segments keep only the latest record of each key.
//!
//! A pass maps every key of the closed segments to the offset of its latest
//! record, then rewrites each closed segment keeping only those records
//! (and tombstones younger than `delete.retention.ms`). Offsets never change:
//! a kept batch keeps its base offset and last offset delta, only records
//! leave it, and an empty batch leaves the segment. Records without a key
//! cannot be compacted and are dropped, as Kafka's cleaner does. The active
//! segment is never touched, so a key whose latest record is still there
//! keeps its older ones until that segment closes; that is only late, never
//! wrong.
//!
//! The engine does not decode records: the caller passes a [`RecordCodec`]
//! (the wire crate owns the record format and its compression codecs).
//!
//! Swapping is atomic per segment: the new copy is written and synced as
//! `<base>.cleaned`, the old index files are removed, the copy is renamed
//! over `<base>.log` (one atomic rename), and new index files are written.
//! A crash leaves either the old segment or the new one, never a mix: a
//! leftover `.cleaned` file is deleted at open, and missing index files are
//! rebuilt by a scan.

use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

use bytes::Bytes;
use futures_lite::AsyncWriteExt;
use glommio::io::{DmaFile, DmaStreamWriterBuilder, OpenOptions, ReadResult};

use crate::batch::BatchView;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::log::{Log, CLEANER_OFFSET_FILE};
use crate::segment::{self, Segment, CLEANED_EXT};
use crate::{FilePos, Offset};

/// Keys one pass maps at most; the pass stops at the segment where the map
/// fills, and the next pass goes on from there. 4 Mi keys of 40 bytes take
/// about 400 MiB with the map's overhead.
pub const COMPACTION_KEYS_MAX: usize = 4 << 20;
/// Bytes read per step while walking a segment.
const WALK_WINDOW_BYTES: usize = 1 << 20;
/// The stream writer's buffer and how many of them are in flight.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
const WRITE_BEHIND: usize = 4;

/// One record as compaction sees it.
#[derive(Debug, Clone, Copy)]
pub struct RecordKey<'a> {
    pub offset: Offset,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    /// A null value: the key is deleted.
    pub tombstone: bool,
}

/// Reads and rewrites the records of a stored batch, for compaction.
pub trait RecordCodec {
    /// Calls `f` for every record of `batch`.
    fn visit(
        &self,
        batch: &[u8],
        f: &mut dyn FnMut(&RecordKey<'_>),
    ) -> std::result::Result<(), String>;

    /// The batch with only the records `keep` accepts: the same bytes if it
    /// accepts all, `None` if it accepts none. Control batches come back whole.
    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(&RecordKey<'_>) -> bool,
    ) -> std::result::Result<Option<Bytes>, String>;
}

/// What a compaction pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactionOutcome {
    /// Closed segments examined.
    pub segments_examined: usize,
    /// Segments rewritten (those from which something was removed).
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

struct ClosedSegment {
    base: Offset,
    file: Rc<DmaFile>,
    size: u64,
    next_offset: Offset,
}

impl Log {
    /// Runs one compaction pass if the log is compacted and dirty enough.
    pub async fn compact(&self, codec: &dyn RecordCodec) -> Result<CompactionOutcome> {
        let _permit = self.maintenance_permit().await?;
        let config = self.config();
        let mut outcome = CompactionOutcome::default();
        let closed: Vec<ClosedSegment> = {
            let st = self.state.borrow();
            if !config.cleanup.compact || st.offline {
                return Ok(outcome);
            }
            let n = st.segments.len() - 1;
            st.segments
                .values()
                .take(n)
                .map(|s| ClosedSegment {
                    base: s.base,
                    file: s.file.clone(),
                    size: s.size,
                    next_offset: s.next_offset,
                })
                .collect()
        };
        if closed.is_empty() {
            return Ok(outcome);
        }
        let cleaned_to = checkpoint::read_framed(&self.dir.join(CLEANER_OFFSET_FILE))
            .await?
            .and_then(|p| checkpoint::i64s::<1>(&p))
            .map_or(Offset(0), |[o]| Offset(o));
        let total: u64 = closed.iter().map(|s| s.size).sum();
        let dirty: u64 = closed
            .iter()
            .filter(|s| s.next_offset > cleaned_to)
            .map(|s| s.size)
            .sum();
        if total == 0
            || dirty == 0
            || (dirty as f64) < config.min_cleanable_dirty_ratio * total as f64
        {
            return Ok(outcome);
        }

        // Pass 1: the latest offset of every key.
        let mut latest: HashMap<Vec<u8>, Offset> = HashMap::new();
        let mut mapped = 0;
        for seg in &closed {
            let mut failure = None;
            self.walk_batches(&seg.file, seg.size, |batch| {
                let visited = codec.visit(batch, &mut |r| {
                    if let Some(key) = r.key {
                        match latest.get_mut(key) {
                            Some(o) => *o = r.offset,
                            None => {
                                latest.insert(key.to_vec(), r.offset);
                            }
                        }
                    }
                });
                if let Err(reason) = visited {
                    failure.get_or_insert(reason);
                }
            })
            .await?;
            if let Some(reason) = failure {
                return Err(Error::Records {
                    path: self
                        .dir
                        .join(segment::file_name(seg.base, segment::LOG_EXT)),
                    reason,
                });
            }
            mapped += 1;
            if latest.len() >= COMPACTION_KEYS_MAX {
                break;
            }
        }

        // Pass 2: rewrite the mapped segments.
        let now = self.context.clock.now_ms();
        let horizon = now - config.delete_retention.as_millis() as i64;
        for seg in closed.iter().take(mapped) {
            outcome.segments_examined += 1;
            outcome.bytes_before += seg.size;
            let rewritten = self.rewrite_segment(seg, codec, &latest, horizon).await?;
            match rewritten {
                Some((size, removed)) => {
                    outcome.segments_rewritten += 1;
                    outcome.records_removed += removed;
                    outcome.bytes_after += size;
                }
                None => outcome.bytes_after += seg.size,
            }
        }
        let end = closed[mapped - 1].next_offset;
        checkpoint::write_framed(
            &self.dir.join(CLEANER_OFFSET_FILE),
            &checkpoint::encode_i64s(&[end.0]),
        )
        .await?;
        checkpoint::sync_dir(&self.dir).await?;
        self.state.borrow_mut().cache.evict_below(end);
        if outcome.segments_rewritten > 0 {
            tracing::info!(
                log = %self.dir.display(),
                segments = outcome.segments_rewritten,
                records_removed = outcome.records_removed,
                bytes_before = outcome.bytes_before,
                bytes_after = outcome.bytes_after,
                "compacted"
            );
        }
        Ok(outcome)
    }

    /// Reads the whole batches of a segment that start in the window at
    /// `pos`: the buffer and each batch's range in it. A batch larger than
    /// the window is read whole on its own. Empty only at the segment end.
    async fn read_window(
        &self,
        file: &DmaFile,
        pos: u64,
        size: u64,
    ) -> Result<(ReadResult, Vec<Range<usize>>)> {
        let len = WALK_WINDOW_BYTES.min((size - pos) as usize);
        let buf = self.read_exact(file, pos, len).await?;
        let mut ranges = Vec::new();
        let mut off = 0usize;
        while off < buf.len() {
            let Some(view) = BatchView::parse(&buf[off..])? else {
                break;
            };
            if off + view.total_len > buf.len() {
                if off == 0 {
                    if pos + view.total_len as u64 > size {
                        return Err(Error::CorruptBatch("batch runs past its segment"));
                    }
                    let whole = self.read_exact(file, pos, view.total_len).await?;
                    return Ok((whole, vec![0..view.total_len]));
                }
                break;
            }
            ranges.push(off..off + view.total_len);
            off += view.total_len;
        }
        if ranges.is_empty() {
            return Err(Error::CorruptBatch(
                "batch header straddles the segment end",
            ));
        }
        Ok((buf, ranges))
    }

    /// Calls `f(batch)` for every batch of a segment, in order.
    async fn walk_batches(
        &self,
        file: &DmaFile,
        size: u64,
        mut f: impl FnMut(&[u8]),
    ) -> Result<()> {
        let mut pos = 0u64;
        // Each window holds at least one batch, so `pos` advances every pass.
        while pos < size {
            let (buf, ranges) = self.read_window(file, pos, size).await?;
            for r in &ranges {
                f(&buf[r.clone()]);
            }
            pos += ranges.last().expect("a window holds a batch").end as u64;
        }
        Ok(())
    }

    /// Rewrites one closed segment; `Some((new size, records removed))` if
    /// anything was removed, `None` if it was left as it was.
    async fn rewrite_segment(
        &self,
        seg: &ClosedSegment,
        codec: &dyn RecordCodec,
        latest: &HashMap<Vec<u8>, Offset>,
        horizon_ms: i64,
    ) -> Result<Option<(u64, u64)>> {
        let cleaned_path = self.dir.join(segment::file_name(seg.base, CLEANED_EXT));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(&cleaned_path)
            .await
            .map_err(|e| Error::glommio("create compacted segment", &cleaned_path, e))?;
        let mut writer = DmaStreamWriterBuilder::new(file)
            .with_buffer_size(WRITE_BUFFER_BYTES)
            .with_write_behind(WRITE_BEHIND)
            .build();
        let interval = self.config().index_interval_bytes;
        let mut shadow = Shadow::new(seg.base);
        let mut removed = 0u64;
        let mut changed = false;
        let mut pos = 0u64;
        // Kept batches are written window by window, so memory stays bounded
        // by the window whatever the segment size.
        while pos < seg.size {
            let (buf, ranges) = self.read_window(&seg.file, pos, seg.size).await?;
            pos += ranges.last().expect("a window holds a batch").end as u64;
            let mut kept = Vec::with_capacity(ranges.len());
            for r in ranges {
                let batch = &buf[r];
                let result = codec.retain(batch, &mut |rec| {
                    let keep = match rec.key {
                        Some(key) => {
                            latest.get(key) == Some(&rec.offset)
                                && !(rec.tombstone && rec.timestamp < horizon_ms)
                        }
                        None => false,
                    };
                    if !keep {
                        removed += 1;
                    }
                    keep
                });
                match result {
                    Ok(Some(bytes)) => {
                        changed |= bytes.len() != batch.len();
                        kept.push(bytes);
                    }
                    Ok(None) => changed = true,
                    Err(reason) => {
                        drop(writer);
                        checkpoint::remove_if_present(&cleaned_path).await?;
                        return Err(Error::Records {
                            path: seg_path(self, seg.base),
                            reason,
                        });
                    }
                }
            }
            for bytes in kept {
                let view = BatchView::parse(&bytes)?
                    .ok_or(Error::CorruptBatch("compacted batch shorter than a header"))?;
                if !view.crc_matches(&bytes) {
                    return Err(Error::CorruptBatch("compacted batch fails its CRC32C"));
                }
                shadow.add(interval, &view);
                writer
                    .write_all(&bytes)
                    .await
                    .map_err(|e| Error::io("write compacted segment", &cleaned_path, e))?;
            }
        }
        writer
            .close()
            .await
            .map_err(|e| Error::io("close compacted segment", &cleaned_path, e))?;
        if !changed {
            checkpoint::remove_if_present(&cleaned_path).await?;
            return Ok(None);
        }

        // The swap. Old indexes go first so that no index outlives its data.
        let old_path = seg_path(self, seg.base);
        let (index_path, time_path) = {
            let st = self.state.borrow();
            let old = st
                .segments
                .get(&seg.base)
                .expect("closed segments stay during maintenance");
            assert_eq!(old.size, seg.size, "closed segments do not change");
            (
                old.sibling(segment::INDEX_EXT),
                old.sibling(segment::TIME_INDEX_EXT),
            )
        };
        checkpoint::remove_if_present(&index_path).await?;
        checkpoint::remove_if_present(&time_path).await?;
        glommio::io::rename(&cleaned_path, &old_path)
            .await
            .map_err(|e| Error::glommio("swap in compacted segment", &old_path, e))?;
        checkpoint::sync_dir(&self.dir).await?;
        let mut fresh = Segment::open(&self.dir, seg.base).await?;
        fresh.size = shadow.size;
        fresh.next_offset = seg.next_offset;
        fresh.max_timestamp = shadow.max_timestamp;
        fresh.offset_of_max_timestamp = shadow.offset_of_max_timestamp;
        fresh.offset_index = shadow.offset_index;
        fresh.time_index = shadow.time_index;
        fresh.seal_time_index();
        fresh.write_index_files().await?;
        checkpoint::sync_dir(&self.dir).await?;
        let size = fresh.size;
        let old = self.state.borrow_mut().segments.insert(seg.base, fresh);
        assert!(old.is_some(), "a compacted segment replaces one");
        Ok(Some((size, removed)))
    }
}

fn seg_path(log: &Log, base: Offset) -> std::path::PathBuf {
    log.dir.join(segment::file_name(base, segment::LOG_EXT))
}

/// Indexes built for a compacted copy as its batches are written.
struct Shadow {
    base: Offset,
    size: u64,
    bytes_since_index: u64,
    max_timestamp: i64,
    offset_of_max_timestamp: Offset,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
}

impl Shadow {
    fn new(base: Offset) -> Self {
        Shadow {
            base,
            size: 0,
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
        }
    }

    /// The same indexing rule as [`Segment::index_batch`], for the next batch.
    fn add(&mut self, interval: u64, view: &BatchView) {
        let pos = self.size;
        if self.bytes_since_index >= interval && pos > 0 {
            self.offset_index
                .push(self.base, Offset(view.base_offset), FilePos(pos));
            if self.max_timestamp >= 0 {
                self.time_index
                    .push(self.base, self.max_timestamp, self.offset_of_max_timestamp);
            }
            self.bytes_since_index = 0;
        }
        if view.max_timestamp > self.max_timestamp {
            self.max_timestamp = view.max_timestamp;
            self.offset_of_max_timestamp = Offset(view.base_offset);
        }
        self.bytes_since_index += view.total_len as u64;
        self.size += view.total_len as u64;
    }
}
