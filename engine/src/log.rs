//! A partition's log: its segments, its write queue and its watermarks.
//!
//! Appends are validated and given offsets at once ([`Log::append`] does both
//! before its first await), queued, and written by whichever appender holds
//! the write lock: it writes everything queued so far in one direct-I/O write,
//! so concurrent appenders share writes (group commit). A batch counts as
//! written, and moves the high watermark, only when its write has completed.
//!
//! Watermarks, in order: `log_start_offset <= high_watermark <= written_offset
//! <= log_end_offset`. On a single node every written batch is committed, so
//! the high watermark follows `written_offset`; replication will hold it back
//! until the in-sync replicas have the batch.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, ReadResult};
use glommio::sync::Semaphore;

use crate::batch::{self, BatchView, HEADER_BYTES};
use crate::error::{Error, Result};
use crate::recovery;
use crate::segment::{self, Segment};
use crate::{FilePos, LeaderEpoch, Offset};

/// The most bytes one direct-I/O write carries; larger queues take several.
pub const WRITE_BYTES_MAX: usize = 8 << 20;
/// The most bytes one read returns when a single batch is smaller.
pub const READ_BYTES_MAX: usize = 64 << 20;

/// Per-partition settings, resolved by the caller from topic and broker configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: a segment is closed before it would grow past this.
    pub segment_bytes: u64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub message_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            index_interval_bytes: 4096,
            message_bytes_max: 1_048_588,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub log_start_offset: Offset,
}

/// Whole batches read from the log, with the watermarks seen at the time.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    pub bytes: Bytes,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

/// The first record at or after a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampLookup {
    pub offset: Offset,
    pub timestamp: i64,
}

struct PendingBatch {
    bytes: Bytes,
    base_offset: Offset,
    last_offset: Offset,
    max_timestamp: i64,
    leader_epoch: LeaderEpoch,
}

struct State {
    segments: BTreeMap<Offset, Segment>,
    pending: VecDeque<PendingBatch>,
    log_start_offset: Offset,
    high_watermark: Offset,
    written_offset: Offset,
    log_end_offset: Offset,
    offline: bool,
}

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }
    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }
}

/// One partition's log. Owned by one shard; not `Send`.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    state: RefCell<State>,
    write_lock: Semaphore,
}

enum WritePlan {
    Idle,
    Roll(Offset),
    Write(WriteJob),
}

/// The first `batch_count` queued batches (`bytes` long), to be written at
/// `pos` of the active segment together with its partial last block.
struct WriteJob {
    batch_count: usize,
    bytes: usize,
    file: Rc<DmaFile>,
    pos: u64,
    tail_len: usize,
    block: u64,
}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering every segment.
    ///
    /// Blocks the reactor on directory listing and creation: call it at
    /// startup or from admin paths, never from produce or fetch.
    pub async fn open(dir: PathBuf, config: LogConfig) -> Result<Log> {
        assert!(
            config.segment_bytes > HEADER_BYTES as u64,
            "segment.bytes holds a batch"
        );
        assert!(
            config.segment_bytes <= u32::MAX as u64,
            "segment positions fit in u32"
        );
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create log dir", &dir, e))?;
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list log dir", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list log dir", &dir, e))?;
            if let Some(base) = entry
                .file_name()
                .to_str()
                .and_then(segment::parse_file_name)
            {
                bases.push(base);
            }
        }
        bases.sort();
        if bases.is_empty() {
            bases.push(Offset(0));
        }
        let mut segments = BTreeMap::new();
        let mut next = bases[0];
        let mut cut_short = false;
        for base in bases {
            if cut_short {
                // A damaged segment ended the log; later ones no longer follow it.
                let path = dir.join(segment::file_name(base));
                tracing::warn!(path = %path.display(), "removing segment after a damaged one");
                std::fs::remove_file(&path).map_err(|e| Error::io("remove segment", &path, e))?;
                continue;
            }
            let mut seg = Segment::open(&dir, base).await?;
            let outcome = recovery::recover_segment(&mut seg, next, &config).await?;
            if outcome.truncated_bytes > 0 {
                tracing::warn!(
                    path = %seg.path.display(),
                    kept_bytes = seg.size,
                    truncated_bytes = outcome.truncated_bytes,
                    "truncated a torn or corrupt segment tail"
                );
                cut_short = true;
            }
            next = seg.next_offset;
            segments.insert(base, seg);
        }
        let log_start_offset = *segments.keys().next().expect("one segment");
        let end = segments
            .values()
            .next_back()
            .expect("one segment")
            .next_offset;
        let state = State {
            segments,
            pending: VecDeque::new(),
            log_start_offset,
            high_watermark: end,
            written_offset: end,
            log_end_offset: end,
            offline: false,
        };
        Ok(Log {
            dir,
            config,
            state: RefCell::new(state),
            write_lock: Semaphore::new(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config
    }

    pub fn log_start_offset(&self) -> Offset {
        self.state.borrow().log_start_offset
    }

    pub fn high_watermark(&self) -> Offset {
        self.state.borrow().high_watermark
    }

    pub fn log_end_offset(&self) -> Offset {
        self.state.borrow().log_end_offset
    }

    /// Bytes stored in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Appends whole v2 batches; returns once all of them are written.
    ///
    /// Every batch is checked (framing, size limit, CRC32C) before any is
    /// queued, so a bad batch rejects the whole set. Offsets are assigned
    /// before the first await: appends are ordered as they are called.
    pub async fn append(
        &self,
        batches: &[Bytes],
        leader_epoch: LeaderEpoch,
    ) -> Result<AppendOutcome> {
        let (base_offset, last_offset) = self.enqueue(batches, leader_epoch)?;
        self.write_until(Offset(last_offset.0 + 1)).await?;
        Ok(AppendOutcome {
            base_offset,
            last_offset,
            log_start_offset: self.log_start_offset(),
        })
    }

    fn enqueue(&self, batches: &[Bytes], leader_epoch: LeaderEpoch) -> Result<(Offset, Offset)> {
        assert!(!batches.is_empty(), "append of no batches");
        let mut views = Vec::with_capacity(batches.len());
        for bytes in batches {
            if bytes.len() > self.config.message_bytes_max {
                return Err(Error::BatchTooLarge {
                    len: bytes.len(),
                    limit: self.config.message_bytes_max,
                });
            }
            let view = BatchView::parse(bytes)?
                .ok_or(Error::CorruptBatch("shorter than a batch header"))?;
            if view.total_len != bytes.len() {
                return Err(Error::CorruptBatch("batch length does not match its bytes"));
            }
            if view.record_count == 0 {
                return Err(Error::CorruptBatch("batch without records"));
            }
            if !view.crc_matches(bytes) {
                return Err(Error::CorruptBatch("CRC32C mismatch"));
            }
            views.push(view);
        }
        let mut st = self.state.borrow_mut();
        if st.offline {
            return Err(Error::Offline(self.dir.clone()));
        }
        let base_offset = st.log_end_offset;
        for (bytes, view) in batches.iter().zip(&views) {
            let base = st.log_end_offset;
            let last = Offset(base.0 + view.last_offset_delta as i64);
            st.pending.push_back(PendingBatch {
                bytes: bytes.clone(),
                base_offset: base,
                last_offset: last,
                max_timestamp: view.max_timestamp,
                leader_epoch,
            });
            st.log_end_offset = Offset(last.0 + 1);
        }
        let last_offset = Offset(st.log_end_offset.0 - 1);
        Ok((base_offset, last_offset))
    }

    /// Writes queued batches until every offset below `end` is written.
    async fn write_until(&self, end: Offset) -> Result<()> {
        let _permit = self
            .write_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::glommio("acquire write lock", &self.dir, e))?;
        loop {
            {
                let st = self.state.borrow();
                if st.written_offset >= end {
                    return Ok(());
                }
            }
            match self.plan_write()? {
                WritePlan::Idle => {
                    // The batches were queued and not written: only a failed write does that.
                    return Err(Error::Offline(self.dir.clone()));
                }
                WritePlan::Roll(base) => self.roll(base).await?,
                WritePlan::Write(job) => self.write_batches(job).await?,
            }
        }
    }

    fn plan_write(&self) -> Result<WritePlan> {
        let st = self.state.borrow();
        if st.offline {
            return Err(Error::Offline(self.dir.clone()));
        }
        let Some(first) = st.pending.front() else {
            return Ok(WritePlan::Idle);
        };
        let seg = st.active();
        let segment_bytes = self.config.segment_bytes;
        if seg.size > 0 && seg.size + first.bytes.len() as u64 > segment_bytes {
            return Ok(WritePlan::Roll(first.base_offset));
        }
        let mut batch_count = 0;
        let mut bytes = 0usize;
        for b in &st.pending {
            let len = b.bytes.len();
            let fits_segment = seg.size + (bytes + len) as u64 <= segment_bytes;
            let fits_write = bytes + len <= WRITE_BYTES_MAX;
            if batch_count > 0 && !(fits_segment && fits_write) {
                break;
            }
            batch_count += 1;
            bytes += len;
        }
        Ok(WritePlan::Write(WriteJob {
            batch_count,
            bytes,
            file: seg.file.clone(),
            pos: seg.size,
            tail_len: seg.tail.len(),
            block: seg.block_bytes(),
        }))
    }

    async fn write_batches(&self, job: WriteJob) -> Result<()> {
        let WriteJob {
            batch_count,
            bytes,
            file,
            pos,
            tail_len,
            block,
        } = job;
        let aligned_pos = pos - tail_len as u64;
        assert_eq!(aligned_pos % block, 0, "a write starts on a block boundary");
        let used = tail_len + bytes;
        let buf_len = used.div_ceil(block as usize) * block as usize;
        let mut buf = file.alloc_dma_buffer(buf_len);
        {
            let dst = buf.as_bytes_mut();
            // The write lock is held: the tail and the queue are as planned.
            let st = self.state.borrow();
            let tail = &st.active().tail;
            assert_eq!(
                tail.len(),
                tail_len,
                "the tail did not change since planning"
            );
            dst[..tail_len].copy_from_slice(tail);
            let mut at = tail_len;
            for b in st.pending.iter().take(batch_count) {
                let end = at + b.bytes.len();
                dst[at..end].copy_from_slice(&b.bytes);
                batch::stamp(&mut dst[at..end], b.base_offset.0, b.leader_epoch.0);
                at = end;
            }
            assert_eq!(at, used, "planned bytes were copied");
            dst[used..].fill(0);
        }
        let buf = Rc::new(buf);
        let written = match file.write_rc_at(buf.clone(), aligned_pos).await {
            Ok(n) => n,
            Err(e) => {
                self.state.borrow_mut().offline = true;
                return Err(Error::glommio("write segment", &self.dir, e));
            }
        };
        if written < buf_len {
            self.state.borrow_mut().offline = true;
            return Err(Error::io(
                "write segment",
                &self.dir,
                std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("{written} of {buf_len} bytes"),
                ),
            ));
        }
        let mut st = self.state.borrow_mut();
        let interval = self.config.index_interval_bytes;
        let mut at = pos;
        let mut new_written = st.written_offset;
        let mut done = Vec::with_capacity(batch_count);
        for _ in 0..batch_count {
            done.push(st.pending.pop_front().expect("planned batches are queued"));
        }
        let seg = st.active_mut();
        assert_eq!(seg.size, pos, "nothing else wrote this segment");
        for b in &done {
            let len = b.bytes.len() as u64;
            seg.index_batch(interval, b.base_offset, FilePos(at), len, b.max_timestamp);
            seg.next_offset = Offset(b.last_offset.0 + 1);
            at += len;
            new_written = seg.next_offset;
        }
        let tail_start = (used / block as usize) * block as usize;
        seg.tail = buf.as_bytes()[tail_start..used].to_vec();
        st.written_offset = new_written;
        st.high_watermark = new_written;
        Ok(())
    }

    async fn roll(&self, base: Offset) -> Result<()> {
        {
            let st = self.state.borrow();
            assert_eq!(
                st.written_offset, base,
                "a new segment starts at the written end"
            );
        }
        // Cut the closed segment's block padding so its file holds exactly its
        // batches, as a Kafka segment does.
        let (old_file, old_path, old_size) = {
            let st = self.state.borrow();
            let old = st.active();
            (old.file.clone(), old.path.clone(), old.size)
        };
        if let Err(e) = old_file.truncate(old_size).await {
            self.state.borrow_mut().offline = true;
            return Err(Error::glommio("truncate closed segment", old_path, e));
        }
        let seg = Segment::open(&self.dir, base).await?;
        tracing::debug!(path = %seg.path.display(), "rolled segment");
        self.state.borrow_mut().segments.insert(base, seg);
        Ok(())
    }

    /// Reads whole batches from `from`, at most `max_bytes` of them unless the
    /// first batch alone is larger (it is then returned whole, as Kafka does).
    pub async fn read(&self, from: Offset, max_bytes: usize) -> Result<ReadOutcome> {
        let (hw, log_start) = {
            let st = self.state.borrow();
            if st.offline {
                return Err(Error::Offline(self.dir.clone()));
            }
            (st.high_watermark, st.log_start_offset)
        };
        if from < log_start || from > hw {
            return Err(Error::OffsetOutOfRange {
                requested: from.0,
                log_start: log_start.0,
                high_watermark: hw.0,
            });
        }
        let empty = ReadOutcome {
            bytes: Bytes::new(),
            high_watermark: hw,
            log_start_offset: log_start,
        };
        if from == hw {
            return Ok(empty);
        }
        let mut seg_key = {
            let st = self.state.borrow();
            match st.segments.range(..=from).next_back() {
                Some((k, _)) => *k,
                None => *st.segments.keys().next().expect("one segment"),
            }
        };
        // Each pass moves to a later segment; the segment count bounds the loop.
        loop {
            let (file, size, start_pos) = {
                let st = self.state.borrow();
                let Some(seg) = st.segments.get(&seg_key) else {
                    return Ok(empty);
                };
                (
                    seg.file.clone(),
                    seg.size,
                    seg.offset_index.lookup(seg.base, from),
                )
            };
            if let Some(found) = self
                .find_batch(&file, start_pos.0, size, |v| v.last_offset() >= from.0)
                .await?
            {
                let bytes = self.read_batches(&file, found, size, max_bytes, hw).await?;
                return Ok(ReadOutcome {
                    bytes,
                    high_watermark: hw,
                    log_start_offset: log_start,
                });
            }
            let st = self.state.borrow();
            match st
                .segments
                .range((
                    std::ops::Bound::Excluded(seg_key),
                    std::ops::Bound::Unbounded,
                ))
                .next()
            {
                Some((k, _)) => seg_key = *k,
                None => return Ok(empty),
            }
        }
    }

    /// Walks batch headers from `pos` and returns the first batch (position and
    /// header) for which `wanted` holds, or `None` at the end of the segment.
    async fn find_batch(
        &self,
        file: &DmaFile,
        mut pos: u64,
        size: u64,
        wanted: impl Fn(&BatchView) -> bool,
    ) -> Result<Option<(u64, BatchView)>> {
        let window = (2 * self.config.index_interval_bytes as usize).max(64 << 10);
        while pos < size {
            let len = window.min((size - pos) as usize);
            let buf = self.read_exact(file, pos, len).await?;
            let mut off = 0usize;
            while off < buf.len() {
                let Some(view) = BatchView::parse(&buf[off..])? else {
                    break;
                };
                if wanted(&view) {
                    return Ok(Some((pos + off as u64, view)));
                }
                off += view.total_len;
            }
            if off == 0 {
                return Err(Error::CorruptBatch(
                    "batch header straddles the segment end",
                ));
            }
            pos += off as u64;
        }
        Ok(None)
    }

    async fn read_batches(
        &self,
        file: &DmaFile,
        (start, first): (u64, BatchView),
        size: u64,
        max_bytes: usize,
        hw: Offset,
    ) -> Result<Bytes> {
        let limit = max_bytes
            .max(first.total_len)
            .min(READ_BYTES_MAX.max(first.total_len));
        let len = (limit as u64).min(size - start) as usize;
        let buf = self.read_exact(file, start, len).await?;
        let mut off = 0usize;
        while off < buf.len() {
            let Some(view) = BatchView::parse(&buf[off..])? else {
                break;
            };
            if view.base_offset >= hw.0 || off + view.total_len > buf.len() {
                break;
            }
            off += view.total_len;
        }
        if off == 0 {
            return Err(Error::CorruptBatch("first batch does not fit its segment"));
        }
        Ok(Bytes::copy_from_slice(&buf[..off]))
    }

    async fn read_exact(&self, file: &DmaFile, pos: u64, len: usize) -> Result<ReadResult> {
        let buf = file
            .read_at(pos, len)
            .await
            .map_err(|e| Error::glommio("read segment", &self.dir, e))?;
        if buf.len() < len {
            return Err(Error::io(
                "read segment",
                &self.dir,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} of {len} bytes at {pos}", buf.len()),
                ),
            ));
        }
        Ok(buf)
    }

    /// The first record whose timestamp is at least `target`, as ListOffsets
    /// asks; `None` when every record is older.
    pub async fn offset_for_timestamp(&self, target: i64) -> Result<Option<TimestampLookup>> {
        let candidates: Vec<(Rc<DmaFile>, u64, u64)> = {
            let st = self.state.borrow();
            st.segments
                .values()
                .filter(|s| s.max_timestamp >= target)
                .map(|s| (s.file.clone(), s.size, s.time_index.lookup(target).0))
                .collect()
        };
        let hw = self.high_watermark();
        for (file, size, pos) in candidates {
            let Some((at, view)) = self
                .find_batch(&file, pos, size, |v| v.max_timestamp >= target)
                .await?
            else {
                continue;
            };
            if view.base_offset >= hw.0 {
                return Ok(None);
            }
            let batch = self.read_exact(&file, at, view.total_len).await?;
            if let Some((offset, timestamp)) = view.first_offset_at_or_after(&batch, target) {
                return Ok(Some(TimestampLookup {
                    offset: Offset(offset),
                    timestamp,
                }));
            }
        }
        Ok(None)
    }

    /// Waits for queued writes and closes every segment file.
    pub async fn close(&self) -> Result<()> {
        let _permit = self
            .write_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::glommio("acquire write lock", &self.dir, e))?;
        let files: Vec<(PathBuf, Rc<DmaFile>)> = {
            let st = self.state.borrow();
            st.segments
                .values()
                .map(|s| (s.path.clone(), s.file.clone()))
                .collect()
        };
        for (path, file) in files {
            file.close_rc()
                .await
                .map_err(|e| Error::glommio("close segment", &path, e))?;
        }
        self.write_lock.close();
        Ok(())
    }
}
