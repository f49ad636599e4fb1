//! A partition's log: its segments, its write queue and its watermarks.
//!
//! Appends are validated and given offsets at once ([`Log::append`] does both
//! before its first await) and queued. Whichever appender finds the queue
//! non-empty and the pipeline open stages everything queued (copying it,
//! offsets stamped, into one buffer) and issues its direct-I/O writes, so
//! concurrent appenders share writes (group commit). Several writes may be
//! in flight at once; each runs as a short task of its own, so a cancelled
//! append never strands one. A batch counts as written, and moves the high
//! watermark, only when every write up to its end has completed (see
//! [`Pipeline`] for how writes behind others keep to whole blocks). An
//! append that asks for [`Durability::Synced`] also waits for an
//! `fdatasync` covering it; concurrent ones share one, and writes go on
//! while a sync runs.
//!
//! Watermarks, in order: `log_start_offset <= high_watermark <= written_offset
//! <= log_end_offset`, and `synced_offset <= written_offset`. On a single node
//! every written batch is committed, so the high watermark follows
//! `written_offset`; replication will hold it back until the in-sync replicas
//! have the batch.
//!
//! Files of a log directory: segments (`<base>.log`) with their indexes
//! (`<base>.index`, `<base>.timeindex`, written when the segment is closed),
//! `log-start-offset` (after DeleteRecords), `cleaner-offset` (where
//! compaction has reached) and `clean-shutdown` (present only while the log is
//! closed after a clean shutdown; it vouches for the active segment's extent
//! and indexes so that a clean restart reads no segment).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::io::{DmaFile, ReadResult};
use glommio::sync::Semaphore;

use crate::batch::{self, BatchView, HEADER_BYTES};
use crate::cache::{TailCache, TailCacheBudget};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, WRITE_PIECE_BYTES};
use crate::recovery;
use crate::ring::IoRing;
use crate::segment::{self, Segment, CLEANED_EXT, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT};
use crate::signal::Signal;
use crate::{FilePos, LeaderEpoch, Offset};

/// The most queued bytes one append stages at a time; they go out as writes
/// of at most `WRITE_PIECE_BYTES` each.
pub const WRITE_BYTES_MAX: usize = 8 << 20;
/// The most writes of one log in flight at once.
const FLIGHTS_MAX: usize = 16;
/// The most `fdatasync`s of one log in flight at once. An append whose
/// batches no sync in flight covers starts one at once rather than queue
/// behind them; the file system joins concurrent syncs into its journal
/// commits. Against one sync at a time, over 45 rounds of `sluice
/// bench-engine` each, synced appends went from 74% to 82% (1 KiB batches)
/// and from 85% to 91% (16 KiB) of the disk's synced write bandwidth, and
/// the broker's acks=all throughput did not move (docs/BENCHMARKS.md). 8 is
/// that benchmark's number of appenders, not a tuned value.
const SYNCS_MAX: usize = 8;
/// Space is allocated ahead of an active segment's writes in steps that
/// double from this size (so a quiet log holds little unused space)...
pub const PREALLOCATE_MIN_BYTES: u64 = 1 << 20;
/// ...up to this size (and never past `segment.bytes`).
pub const PREALLOCATE_MAX_BYTES: u64 = 32 << 20;
/// The most bytes one read returns when a single batch is smaller.
pub const READ_BYTES_MAX: usize = 64 << 20;

pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
pub(crate) const LOG_START_FILE: &str = "log-start-offset";
pub(crate) const CLEANER_OFFSET_FILE: &str = "cleaner-offset";

/// Which ways old data leaves a log (`cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Whole segments are deleted by `retention.ms` / `retention.bytes`.
    pub delete: bool,
    /// Closed segments keep only the latest record per key.
    pub compact: bool,
}

/// Per-partition settings, resolved by the caller from topic and broker configs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: a segment is closed before it would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: a segment is closed once its first batch is this old.
    pub segment_age_max: Option<Duration>,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub message_bytes_max: usize,
    /// `flush.messages`: an append waits for a sync once this many offsets
    /// are written but not synced.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: [`Log::sync_if_due`] syncs writes older than this.
    pub flush_interval: Option<Duration>,
    pub cleanup: CleanupPolicy,
    /// `retention.ms`: closed segments whose newest record is older go.
    pub retention: Option<Duration>,
    /// `retention.bytes`: oldest closed segments go while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `delete.retention.ms`: how long compaction keeps a tombstone.
    pub delete_retention: Duration,
    /// `min.cleanable.dirty.ratio`: compaction starts once this share of the
    /// closed bytes has not been compacted yet.
    pub min_cleanable_dirty_ratio: f64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_age_max: Some(Duration::from_millis(604_800_000)),
            index_interval_bytes: 4096,
            message_bytes_max: 1_048_588,
            flush_messages: None,
            flush_interval: None,
            cleanup: CleanupPolicy {
                delete: true,
                compact: false,
            },
            retention: Some(Duration::from_millis(604_800_000)),
            retention_bytes: None,
            delete_retention: Duration::from_millis(86_400_000),
            min_cleanable_dirty_ratio: 0.5,
        }
    }
}

/// When an append may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once its direct-I/O write completed: survives the process being killed.
    Written,
    /// Once an `fdatasync` covering it completed: survives power loss.
    Synced,
}

/// The time, injected so that tests control it.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// What a log shares with the other logs of its shard.
#[derive(Clone)]
pub struct LogContext {
    pub clock: Rc<dyn Clock>,
    pub cache_budget: Rc<TailCacheBudget>,
    /// Carries the writes and syncs of active segments; one per executor.
    pub io_ring: Rc<IoRing>,
}

impl Default for LogContext {
    fn default() -> Self {
        LogContext {
            clock: Rc::new(SystemClock),
            cache_budget: Rc::new(TailCacheBudget::new(64 << 20)),
            io_ring: Rc::default(),
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

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: Offset,
}

/// How a log was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OpenReport {
    /// Segments whose batches were read and checked.
    pub segments_scanned: usize,
    /// Segments opened from their index files without reading them.
    pub segments_loaded: usize,
    /// Bytes cut off a torn or corrupt tail.
    pub truncated_bytes: u64,
    /// The clean-shutdown marker was found and trusted.
    pub clean_shutdown: bool,
}

struct PendingBatch {
    bytes: Bytes,
    base_offset: Offset,
    last_offset: Offset,
    max_timestamp: i64,
    leader_epoch: LeaderEpoch,
}

/// A batch given to writes, not yet counted as written; stored at `pos`.
struct StagedBatch {
    bytes: Bytes,
    base_offset: Offset,
    last_offset: Offset,
    max_timestamp: i64,
    leader_epoch: LeaderEpoch,
    pos: u64,
}

/// The active segment's writes: the [`Pipeline`] that plans them, the
/// batches they carry, and the file space ahead of them.
struct Writes {
    pipeline: Pipeline,
    /// Staged batches not yet written, in file order.
    staged: VecDeque<StagedBatch>,
    /// The active segment file's size: space allocated ahead of the
    /// writes, which then neither extend the file nor allocate blocks, so
    /// they need not wait in the kernel for one another.
    allocated_end: u64,
    /// An allocation is under way; writes go on below `allocated_end`.
    allocating: bool,
    /// A roll is under way: nothing is issued until it ends.
    rolling: bool,
}

impl Writes {
    fn new(pipeline: Pipeline, allocated_end: u64) -> Writes {
        Writes {
            pipeline,
            staged: VecDeque::new(),
            allocated_end,
            allocating: false,
            rolling: false,
        }
    }
}

pub(crate) struct State {
    pub(crate) segments: BTreeMap<Offset, Segment>,
    pending: VecDeque<PendingBatch>,
    writes: Writes,
    pub(crate) log_start_offset: Offset,
    high_watermark: Offset,
    pub(crate) written_offset: Offset,
    synced_offset: Offset,
    /// The offset below which the `fdatasync`s started so far cover.
    sync_started_to: Offset,
    /// `fdatasync`s in flight.
    syncs_in_flight: usize,
    log_end_offset: Offset,
    /// When the oldest unsynced write completed.
    unsynced_since_ms: Option<i64>,
    pub(crate) offline: bool,
    closed: bool,
    pub(crate) cache: TailCache,
}

impl State {
    pub(crate) fn active(&self) -> &Segment {
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
    pub(crate) dir: PathBuf,
    config: Cell<LogConfig>,
    /// Shared with the tasks that complete this log's writes.
    pub(crate) state: Rc<RefCell<State>>,
    /// Notified when a write completes, a roll ends or the log goes offline.
    written: Rc<Signal>,
    /// Notified when an `fdatasync` ends.
    synced: Rc<Signal>,
    /// Held by retention, DeleteRecords and compaction: one at a time
    /// changes the closed segments.
    pub(crate) maintenance_lock: Semaphore,
    pub(crate) context: LogContext,
    open_report: OpenReport,
}

/// What an appender waiting for its batches to be written does next.
enum Step {
    /// Issued a write; look again.
    Issued,
    /// Close the active segment and start one at this offset.
    Roll(Offset),
    /// Grow the active segment file to this size before writing on.
    Allocate(u64),
    /// Wait for a write to complete or a roll to end.
    Wait,
    /// Let the other runnable tasks go first, once: appenders woken by
    /// the last completion queue more, and the write that starts the idle
    /// pipeline carries theirs too, with one partial block at its end
    /// rather than one per appender.
    Defer,
}

/// Ends a roll (`true`) or an allocation (`false`) however it ends,
/// cancelled or not.
struct PipelineGuard<'a>(&'a Log, bool);

impl Drop for PipelineGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.borrow_mut();
        if self.1 {
            st.writes.rolling = false;
        } else {
            st.writes.allocating = false;
        }
        drop(st);
        self.0.written.notify();
    }
}

/// What one read near an index position found.
enum Near {
    Batches(Bytes),
    /// The batch holding the offset starts at the high watermark.
    AtHighWatermark,
    /// The segment ends before the offset.
    NotInSegment,
    /// The read was too short to tell: walk the headers.
    Unsure,
}

/// The active segment's extent as the clean-shutdown marker records it:
/// base, size, next offset, max timestamp, offset of max timestamp.
const MARKER_FIELDS: usize = 5;

impl Log {
    /// Opens (or creates) the log in `dir`, recovering it.
    ///
    /// Blocks the reactor on directory listing and creation: call it at
    /// startup or from admin paths, never from produce or fetch.
    pub async fn open(dir: PathBuf, config: LogConfig, context: LogContext) -> Result<Log> {
        assert!(
            config.segment_bytes > HEADER_BYTES as u64,
            "segment.bytes holds a batch"
        );
        assert!(
            config.segment_bytes <= u32::MAX as u64,
            "segment positions fit in u32"
        );
        let created = !dir.exists();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create log dir", &dir, e))?;
        if created {
            if let Some(parent) = dir.parent() {
                checkpoint::sync_dir(parent).await?;
            }
        }
        let mut report = OpenReport::default();
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("list log dir", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list log dir", &dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match segment::parse_file_name(name) {
                Some((base, LOG_EXT)) => bases.push(base),
                Some((_, ext)) if ext.ends_with(".tmp") || ext == CLEANED_EXT => {
                    // An unfinished compaction or state file write: the
                    // original is intact.
                    checkpoint::remove_if_present(&entry.path()).await?;
                }
                _ if name.ends_with(".tmp") => {
                    checkpoint::remove_if_present(&entry.path()).await?;
                }
                _ => {}
            }
        }
        bases.sort();
        let marker = Self::read_marker(&dir).await?;
        let persisted_start = checkpoint::read_framed(&dir.join(LOG_START_FILE))
            .await?
            .and_then(|p| checkpoint::i64s::<1>(&p))
            .map(|[o]| Offset(o));
        // Segments wholly below a persisted log start were being deleted.
        if let Some(start) = persisted_start {
            while bases.len() > 1 && bases[1] <= start {
                let base = bases.remove(0);
                for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                    checkpoint::remove_if_present(&dir.join(segment::file_name(base, ext))).await?;
                }
            }
        }
        if bases.is_empty() {
            bases.push(persisted_start.unwrap_or(Offset(0)));
        }
        let mut segments = BTreeMap::new();
        let mut next = bases[0];
        let mut cut_short = false;
        let last_base = *bases.last().expect("one segment");
        for (i, &base) in bases.iter().enumerate() {
            if cut_short {
                // A damaged segment ended the log; later ones no longer follow it.
                for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                    let path = dir.join(segment::file_name(base, ext));
                    tracing::warn!(path = %path.display(), "removing a file after a damaged segment");
                    checkpoint::remove_if_present(&path).await?;
                }
                continue;
            }
            let seg = if base == last_base {
                match marker {
                    Some(m) if m[0] == base.0 => {
                        report.clean_shutdown = true;
                        Self::load_active(&dir, base, m).await?
                    }
                    _ => None,
                }
            } else {
                Segment::load_closed(&dir, base, bases[i + 1]).await?
            };
            let seg = match seg {
                Some(seg) => {
                    report.segments_loaded += 1;
                    seg
                }
                None => {
                    let mut seg = Segment::open(&dir, base).await?;
                    let outcome =
                        recovery::recover_segment(&mut seg, next, &config, base == last_base)
                            .await?;
                    report.segments_scanned += 1;
                    if outcome.truncated_bytes > 0 {
                        tracing::warn!(
                            path = %seg.path.display(),
                            kept_bytes = seg.size,
                            truncated_bytes = outcome.truncated_bytes,
                            "truncated a torn or corrupt segment tail"
                        );
                        report.truncated_bytes += outcome.truncated_bytes;
                        cut_short = true;
                    }
                    if base != last_base && !cut_short {
                        // Offsets between the last batch and the next segment
                        // were removed by compaction; the segment spans them.
                        seg.next_offset = seg.next_offset.max(bases[i + 1]);
                        seg.seal_time_index();
                        seg.write_index_files().await?;
                    }
                    seg
                }
            };
            next = seg.next_offset;
            segments.insert(base, seg);
        }
        if marker.is_some() {
            // From here on the active segment changes: a crash must scan it.
            checkpoint::remove_if_present(&dir.join(CLEAN_SHUTDOWN_FILE)).await?;
        }
        checkpoint::sync_dir(&dir).await?;
        let first_base = *segments.keys().next().expect("one segment");
        let end = segments
            .values()
            .next_back()
            .expect("one segment")
            .next_offset;
        let log_start_offset = persisted_start.map_or(first_base, |s| s.max(first_base).min(end));
        let (active_size, active_file, active_block, active_tail) = {
            let active = segments.values_mut().next_back().expect("one segment");
            let tail = std::mem::take(&mut active.tail);
            (active.size, active.file.clone(), active.block_bytes(), tail)
        };
        let allocated_end = active_file
            .file_size()
            .await
            .map_err(|e| Error::glommio("stat segment", &dir, e))?;
        let state = State {
            segments,
            pending: VecDeque::new(),
            writes: Writes::new(
                Pipeline::new(active_block, WRITE_PIECE_BYTES, active_size, active_tail),
                allocated_end,
            ),
            log_start_offset,
            high_watermark: end,
            written_offset: end,
            synced_offset: end,
            sync_started_to: end,
            syncs_in_flight: 0,
            log_end_offset: end,
            unsynced_since_ms: None,
            offline: false,
            closed: false,
            cache: TailCache::default(),
        };
        assert!(
            state.log_start_offset <= state.high_watermark,
            "watermarks in order"
        );
        context.cache_budget.register();
        Ok(Log {
            dir,
            config: Cell::new(config),
            state: Rc::new(RefCell::new(state)),
            written: Rc::new(Signal::default()),
            synced: Rc::new(Signal::default()),
            maintenance_lock: Semaphore::new(1),
            context,
            open_report: report,
        })
    }

    /// The maintenance lock, held by retention, DeleteRecords, compaction
    /// and close.
    pub(crate) async fn maintenance_permit(&self) -> Result<glommio::sync::Permit<'_>> {
        self.maintenance_lock
            .acquire_permit(1)
            .await
            .map_err(|e| Error::glommio("acquire maintenance lock", &self.dir, e))
    }

    async fn read_marker(dir: &Path) -> Result<Option<[i64; MARKER_FIELDS]>> {
        Ok(checkpoint::read_framed(&dir.join(CLEAN_SHUTDOWN_FILE))
            .await?
            .and_then(|p| checkpoint::i64s::<MARKER_FIELDS>(&p)))
    }

    /// The active segment as the clean-shutdown marker describes it, if its
    /// file and index files agree with the marker.
    async fn load_active(
        dir: &Path,
        base: Offset,
        m: [i64; MARKER_FIELDS],
    ) -> Result<Option<Segment>> {
        let [_, size, next, max_ts, offset_of_max] = m;
        if size < 0 || next < base.0 {
            return Ok(None);
        }
        let Some(mut seg) = Segment::load_closed(dir, base, Offset(next)).await? else {
            return Ok(None);
        };
        let size = size as u64;
        let file_size = seg.size;
        let block = seg.block_bytes();
        // The file holds the logical size rounded up to whole blocks.
        if file_size < size || file_size > size.div_ceil(block) * block {
            return Ok(None);
        }
        seg.size = size;
        seg.max_timestamp = max_ts;
        seg.offset_of_max_timestamp = Offset(offset_of_max);
        seg.bytes_since_index = size.saturating_sub(seg.offset_index.last_pos().0);
        if !seg.load_tail().await? {
            return Ok(None);
        }
        Ok(Some(seg))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.get()
    }

    /// Applies changed topic settings; they take effect from the next append,
    /// roll, retention pass or compaction.
    pub fn set_config(&self, config: LogConfig) {
        assert!(
            config.segment_bytes > HEADER_BYTES as u64,
            "segment.bytes holds a batch"
        );
        self.config.set(config);
    }

    pub fn open_report(&self) -> OpenReport {
        self.open_report
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

    /// Offsets below this are on stable storage.
    pub fn synced_offset(&self) -> Offset {
        self.state.borrow().synced_offset
    }

    /// Bytes stored in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().segments.values().map(|s| s.size).sum()
    }

    /// Bytes the tail cache holds.
    pub fn cached_bytes(&self) -> usize {
        self.state.borrow().cache.bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<Offset> {
        self.state.borrow().segments.keys().copied().collect()
    }

    /// Appends whole v2 batches; returns once all of them are written, and
    /// synced if `durability` or `flush.messages` asks for it.
    ///
    /// Every batch is checked (framing, size limit, CRC32C) before any is
    /// queued, so a bad batch rejects the whole set. Offsets are assigned
    /// before the first await: appends are ordered as they are called.
    pub async fn append(
        &self,
        batches: &[Bytes],
        leader_epoch: LeaderEpoch,
        durability: Durability,
    ) -> Result<AppendOutcome> {
        let (base_offset, last_offset) = self.enqueue(batches, leader_epoch)?;
        let end = Offset(last_offset.0 + 1);
        self.write_until(end).await?;
        let flush_due = self.config().flush_messages.is_some_and(|n| {
            let st = self.state.borrow();
            (st.written_offset.0 - st.synced_offset.0) as u64 >= n
        });
        if durability == Durability::Synced || flush_due {
            self.sync_until(end).await?;
        }
        Ok(AppendOutcome {
            base_offset,
            last_offset,
            log_start_offset: self.log_start_offset(),
        })
    }

    fn enqueue(&self, batches: &[Bytes], leader_epoch: LeaderEpoch) -> Result<(Offset, Offset)> {
        assert!(!batches.is_empty(), "append of no batches");
        let message_bytes_max = self.config().message_bytes_max;
        let mut views = Vec::with_capacity(batches.len());
        for bytes in batches {
            if bytes.len() > message_bytes_max {
                return Err(Error::BatchTooLarge {
                    len: bytes.len(),
                    limit: message_bytes_max,
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
            views.push(view);
        }
        if !BatchView::crcs_match(&views, batches) {
            return Err(Error::CorruptBatch("CRC32C mismatch"));
        }
        let mut st = self.state.borrow_mut();
        if st.offline {
            return Err(Error::Offline(self.dir.clone()));
        }
        if st.closed {
            return Err(Error::Closed(self.dir.clone()));
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

    /// Waits until every offset below `end` is written, issuing writes and
    /// rolls as they become possible.
    async fn write_until(&self, end: Offset) -> Result<()> {
        // Each pass issues a write of queued bytes, rolls, allocates, defers
        // (once), or waits for a write issued earlier to complete; the
        // offsets below `end` were all queued before this call, so finitely
        // many passes reach them.
        let mut deferred = false;
        loop {
            let seen = self.written.generation();
            {
                let st = self.state.borrow();
                if st.offline {
                    return Err(Error::Offline(self.dir.clone()));
                }
                if st.written_offset >= end {
                    return Ok(());
                }
            }
            match self.step(!deferred)? {
                Step::Issued => {}
                Step::Defer => {
                    deferred = true;
                    futures_lite::future::yield_now().await;
                }
                Step::Roll(base) => {
                    self.state.borrow_mut().writes.rolling = true;
                    let _guard = PipelineGuard(self, true);
                    self.roll(base).await?;
                }
                Step::Allocate(size) => {
                    self.state.borrow_mut().writes.allocating = true;
                    let _guard = PipelineGuard(self, false);
                    self.allocate(size).await?;
                }
                Step::Wait => self.written.changed_since(seen).await,
            }
        }
    }

    /// What to do next; `may_defer` lets a write that would start an idle
    /// pipeline wait for the tasks already runnable to queue theirs first.
    fn step(&self, may_defer: bool) -> Result<Step> {
        let mut st = self.state.borrow_mut();
        if st.offline {
            return Err(Error::Offline(self.dir.clone()));
        }
        if st.writes.rolling || st.writes.pipeline.in_flight() >= FLIGHTS_MAX {
            return Ok(Step::Wait);
        }
        let (file, block) = {
            let seg = st.active();
            (seg.file.clone(), seg.block_bytes())
        };
        if let Some(w) = st.writes.pipeline.issue_stale() {
            self.write_out(&file, block, w, None);
            return Ok(Step::Issued);
        }
        let idle = st.writes.pipeline.idle();
        let staged_end = st.writes.pipeline.staged_end();
        let config = self.config();
        let segment_bytes = config.segment_bytes;
        if let Some(first) = st.pending.front() {
            let full = staged_end + first.bytes.len() as u64 > segment_bytes;
            let aged = match (config.segment_age_max, st.active().first_append_ms) {
                (Some(age), Some(first_ms)) => {
                    self.context.clock.now_ms() - first_ms >= age.as_millis() as i64
                }
                _ => false,
            };
            if staged_end > 0 && (full || aged) {
                // The segment is done: finish its writes, then roll.
                if !idle || st.writes.allocating {
                    return Ok(Step::Wait);
                }
                if st.writes.pipeline.unissued() {
                    // Idle, and the stale block went above: only the tail is left.
                    self.issue(&mut st, &file, block, 0, 0, false);
                    return Ok(Step::Issued);
                }
                assert!(st.writes.staged.is_empty(), "drained means all written");
                return Ok(Step::Roll(first.base_offset));
            }
        }
        let mut count = 0;
        let mut bytes = 0usize;
        for b in &st.pending {
            let len = b.bytes.len();
            let fits_segment = staged_end + (bytes + len) as u64 <= segment_bytes;
            let fits_write = bytes + len <= WRITE_BYTES_MAX;
            if count > 0 && !(fits_segment && fits_write) {
                break;
            }
            count += 1;
            bytes += len;
        }
        // Behind other writes only whole blocks go: whatever follows soon
        // fills the last one. With nothing in flight the partial block goes
        // now.
        let whole_only = !idle;
        if !st.writes.pipeline.can_issue(bytes, whole_only) {
            return Ok(Step::Wait);
        }
        if idle && may_defer {
            return Ok(Step::Defer);
        }
        // Space is allocated ahead, half a step before it is needed, while
        // writes go on below the allocated end.
        let reach = (staged_end + bytes as u64).div_ceil(block) * block;
        let allocated_end = st.writes.allocated_end;
        let alloc_step = allocated_end
            .clamp(PREALLOCATE_MIN_BYTES, PREALLOCATE_MAX_BYTES)
            .min(segment_bytes.div_ceil(block) * block);
        let allocate = (!st.writes.allocating && reach + alloc_step / 2 > allocated_end)
            .then(|| reach.max(allocated_end + alloc_step));
        if reach > allocated_end {
            return Ok(allocate.map_or(Step::Wait, Step::Allocate));
        }
        self.issue(&mut st, &file, block, count, bytes, whole_only);
        Ok(allocate.map_or(Step::Issued, Step::Allocate))
    }

    /// Grows the active segment file to `size` bytes of allocated space.
    async fn allocate(&self, size: u64) -> Result<()> {
        let file = self.state.borrow().active().file.clone();
        if let Err(e) = file.pre_allocate(size, false).await {
            self.state.borrow_mut().offline = true;
            return Err(Error::glommio("allocate segment space", &self.dir, e));
        }
        let mut st = self.state.borrow_mut();
        st.writes.allocated_end = st.writes.allocated_end.max(size);
        Ok(())
    }

    /// Stages the first `count` queued batches (`bytes` long) behind the
    /// pipeline's tail and starts the writes it plans for them, copying
    /// each batch, stamped, straight into the writes' buffers. The caller
    /// has checked that the pipeline can issue them.
    fn issue(
        &self,
        st: &mut State,
        file: &Rc<DmaFile>,
        block: u64,
        count: usize,
        bytes: usize,
        whole_only: bool,
    ) {
        let start = st.writes.pipeline.tail_block();
        let tail = st.writes.pipeline.tail().to_vec();
        let mut at = st.writes.pipeline.staged_end();
        let mut batches = Vec::with_capacity(count);
        for _ in 0..count {
            let b = st.pending.pop_front().expect("counted batches are queued");
            let staged = StagedBatch {
                bytes: b.bytes,
                base_offset: b.base_offset,
                last_offset: b.last_offset,
                max_timestamp: b.max_timestamp,
                leader_epoch: b.leader_epoch,
                pos: at,
            };
            at += staged.bytes.len() as u64;
            batches.push(staged);
        }
        let staging = Staging {
            start,
            tail: &tail,
            batches: &batches,
        };
        let writes = st
            .writes
            .pipeline
            .issue(bytes, whole_only, &|pos, dst| staging.fill(pos, dst));
        for w in writes {
            self.write_out(file, block, w, Some(&staging));
        }
        st.writes.staged.extend(batches);
    }

    /// Fills the buffer of a planned write, padded with zeros to whole
    /// blocks, from `staging` or the bytes the write holds, and starts it.
    fn write_out(
        &self,
        file: &Rc<DmaFile>,
        block: u64,
        w: crate::pipeline::Write,
        staging: Option<&Staging<'_>>,
    ) {
        let len = w.len.div_ceil(block as usize) * block as usize;
        let mut buf = file.alloc_dma_buffer(len);
        let dst = buf.as_bytes_mut();
        match (&w.held, staging) {
            (Some(held), _) => dst[..w.len].copy_from_slice(held),
            (None, Some(staging)) => staging.fill(w.pos, &mut dst[..w.len]),
            (None, None) => unreachable!("a write without held bytes comes with its staging"),
        }
        dst[w.len..].fill(0);
        self.launch(file.clone(), w.id, w.pos, buf);
    }

    /// Starts a planned write on the I/O ring, and a task of its own that
    /// waits for it, so that no cancelled append can strand it; it
    /// completes through [`complete_write`].
    fn launch(&self, file: Rc<DmaFile>, id: u64, pos: u64, buf: glommio::io::DmaBuffer) {
        let len = buf.len();
        let state = self.state.clone();
        let written = self.written.clone();
        let context = self.context.clone();
        let interval = self.config().index_interval_bytes;
        let dir = self.dir.clone();
        let completion = self.context.io_ring.write(&file, buf, pos);
        glommio::spawn_local(async move {
            // glommio polls a spawned task at once, inside the caller's
            // borrow of the state, and the write may have completed by
            // then: the outcome is recorded from the run queue instead.
            futures_lite::future::yield_now().await;
            let ok = match completion.await {
                Ok(n) if n as usize >= len => true,
                Ok(n) => {
                    tracing::error!(dir = %dir.display(), pos, "short segment write: {n} of {len} bytes");
                    false
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), pos, error = %e, "segment write failed");
                    false
                }
            };
            complete_write(&mut state.borrow_mut(), id, ok, interval, &context);
            written.notify();
        })
        .detach();
    }

    /// Syncs until every offset below `end` is on stable storage. An
    /// append waits for a sync in flight that covers it, or else starts one
    /// covering everything written so far, which the appends behind it
    /// share; closed segments were synced when they were closed.
    async fn sync_until(&self, end: Offset) -> Result<()> {
        // Each pass starts a sync, returns, or waits for a sync in flight
        // to end; syncs run as tasks of their own and always end.
        loop {
            let seen = self.synced.generation();
            {
                let mut st = self.state.borrow_mut();
                if st.offline {
                    return Err(Error::Offline(self.dir.clone()));
                }
                if st.synced_offset >= end {
                    return Ok(());
                }
                if st.sync_started_to < end && st.syncs_in_flight < SYNCS_MAX {
                    let target = st.written_offset;
                    assert!(target >= end, "an offset is synced only after its write");
                    st.sync_started_to = target;
                    st.syncs_in_flight += 1;
                    let file = st.active().file.clone();
                    drop(st);
                    self.launch_sync(file, target);
                }
            }
            self.synced.changed_since(seen).await;
        }
    }

    /// Starts an `fdatasync` of the active segment on the I/O ring, and a
    /// task of its own that waits for it, so that no cancelled append can
    /// strand the appends waiting for it.
    fn launch_sync(&self, file: Rc<DmaFile>, target: Offset) {
        let state = self.state.clone();
        let synced = self.synced.clone();
        let dir = self.dir.clone();
        let completion = self.context.io_ring.fdatasync(&file);
        glommio::spawn_local(async move {
            let outcome = completion.await;
            let mut st = state.borrow_mut();
            st.syncs_in_flight -= 1;
            match outcome {
                Ok(_) => {
                    st.synced_offset = st.synced_offset.max(target);
                    if st.synced_offset == st.written_offset {
                        st.unsynced_since_ms = None;
                    }
                }
                Err(e) => {
                    // After a failed fsync what is on disk is unknown.
                    tracing::error!(dir = %dir.display(), error = %e, "segment sync failed");
                    st.offline = true;
                }
            }
            drop(st);
            synced.notify();
        })
        .detach();
    }

    /// Waits until no `fdatasync` is in flight.
    async fn syncs_ended(&self) {
        loop {
            let seen = self.synced.generation();
            if self.state.borrow().syncs_in_flight == 0 {
                return;
            }
            self.synced.changed_since(seen).await;
        }
    }

    /// Syncs everything written, whatever the policy.
    pub async fn sync(&self) -> Result<()> {
        let end = self.state.borrow().written_offset;
        self.sync_until(end).await
    }

    /// Syncs if a write has waited longer than `flush.ms`; returns whether it did.
    pub async fn sync_if_due(&self) -> Result<bool> {
        let Some(interval) = self.config().flush_interval else {
            return Ok(false);
        };
        let due = self.state.borrow().unsynced_since_ms.is_some_and(|since| {
            self.context.clock.now_ms() - since >= interval.as_millis() as i64
        });
        if due {
            self.sync().await?;
        }
        Ok(due)
    }

    /// Closes the active segment and starts one at `base`.
    ///
    /// The closed segment is cut to its batches, synced, and given index
    /// files; the new file's directory entry is synced, so a closed segment
    /// is durable whatever the flush policy.
    async fn roll(&self, base: Offset) -> Result<()> {
        let (old_file, old_size) = {
            let st = self.state.borrow();
            assert_eq!(
                st.written_offset, base,
                "a new segment starts at the written end"
            );
            let old = st.active();
            (old.file.clone(), old.size)
        };
        let closing = async {
            old_file
                .truncate(old_size)
                .await
                .map_err(|e| Error::glommio("truncate closed segment", &self.dir, e))?;
            old_file
                .fdatasync()
                .await
                .map_err(|e| Error::glommio("sync closed segment", &self.dir, e))?;
            let (index, time) = {
                let mut st = self.state.borrow_mut();
                let old = st.active_mut();
                old.seal_time_index();
                (old.sibling(INDEX_EXT), old.sibling(TIME_INDEX_EXT))
            };
            let (index_bytes, time_bytes) = {
                let st = self.state.borrow();
                let old = st.active();
                (old.offset_index.encode(), old.time_index.encode())
            };
            checkpoint::write_raw(&index, index_bytes).await?;
            checkpoint::write_raw(&time, time_bytes).await?;
            let seg = Segment::open(&self.dir, base).await?;
            checkpoint::sync_dir(&self.dir).await?;
            Ok::<Segment, Error>(seg)
        };
        let seg = match closing.await {
            Ok(seg) => seg,
            Err(e) => {
                self.state.borrow_mut().offline = true;
                return Err(e);
            }
        };
        tracing::debug!(path = %seg.path.display(), "rolled segment");
        let mut st = self.state.borrow_mut();
        st.segments.insert(base, seg);
        assert!(
            st.writes.pipeline.drained() && st.writes.staged.is_empty(),
            "a segment closes with all its writes done"
        );
        let block = st.active().block_bytes();
        st.writes = Writes::new(Pipeline::new(block, WRITE_PIECE_BYTES, 0, Vec::new()), 0);
        // Everything before the new segment was synced with the old one.
        st.synced_offset = st.synced_offset.max(base);
        if st.synced_offset == st.written_offset {
            st.unsynced_since_ms = None;
        }
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
        let now_ms = self.context.clock.now_ms();
        if from == hw {
            self.state.borrow_mut().cache.note_tail_read(now_ms);
            return Ok(empty);
        }
        {
            let mut st = self.state.borrow_mut();
            if let Some(bytes) = st.cache.read(from, hw, max_bytes) {
                st.cache.note_tail_read(now_ms);
                return Ok(ReadOutcome {
                    bytes,
                    high_watermark: hw,
                    log_start_offset: log_start,
                });
            }
        }
        let mut seg_key = {
            let mut st = self.state.borrow_mut();
            let key = match st.segments.range(..=from).next_back() {
                Some((k, _)) => *k,
                None => *st.segments.keys().next().expect("one segment"),
            };
            // A read of the active segment within the cache's reach of its
            // end comes from a reader about to catch up: cache what follows.
            let active = st.active();
            if active.base == key {
                let pos = active.offset_index.lookup(active.base, from).0;
                let behind = active.size.saturating_sub(pos);
                if behind <= self.context.cache_budget.share_bytes() as u64 {
                    st.cache.note_tail_read(now_ms);
                }
            }
            key
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
            let found = match self
                .read_near(&file, start_pos.0, size, from, max_bytes, hw)
                .await?
            {
                Near::Batches(bytes) => {
                    return Ok(ReadOutcome {
                        bytes,
                        high_watermark: hw,
                        log_start_offset: log_start,
                    })
                }
                Near::AtHighWatermark => return Ok(empty),
                Near::NotInSegment => None,
                Near::Unsure => {
                    self.find_batch(&file, start_pos.0, size, |v| v.last_offset() >= from.0)
                        .await?
                }
            };
            if let Some(found) = found {
                if found.1.base_offset >= hw.0 {
                    return Ok(empty);
                }
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

    /// Reads batches from `from` with one read from the index position `pos`
    /// (the usual case: the batch holding `from` starts close after it),
    /// taking whole batches as [`Log::read`] does.
    async fn read_near(
        &self,
        file: &DmaFile,
        pos: u64,
        size: u64,
        from: Offset,
        max_bytes: usize,
        hw: Offset,
    ) -> Result<Near> {
        let window = (2 * self.config().index_interval_bytes as usize).max(64 << 10);
        let want = max_bytes.min(READ_BYTES_MAX);
        let len = ((want + window) as u64).min(size - pos) as usize;
        if len == 0 {
            return Ok(Near::NotInSegment);
        }
        let buf = self.read_exact(file, pos, len).await?;
        let mut off = 0usize;
        let first = loop {
            let Some(view) = BatchView::parse(&buf[off..])? else {
                return Ok(Near::Unsure);
            };
            if view.last_offset() >= from.0 {
                break view;
            }
            off += view.total_len;
            if off >= buf.len() {
                let whole_segment = pos + buf.len() as u64 >= size;
                return Ok(if whole_segment && off == buf.len() {
                    Near::NotInSegment
                } else {
                    Near::Unsure
                });
            }
        };
        if first.base_offset >= hw.0 {
            return Ok(Near::AtHighWatermark);
        }
        let limit = want.max(first.total_len);
        let start = off;
        while off < buf.len() {
            let Some(view) = BatchView::parse(&buf[off..])? else {
                break;
            };
            let end = off + view.total_len;
            if view.base_offset >= hw.0 || end > buf.len() || (off > start && end - start > limit) {
                break;
            }
            off = end;
        }
        if off == start {
            return Ok(Near::Unsure);
        }
        Ok(Near::Batches(Bytes::copy_from_slice(&buf[start..off])))
    }

    /// Walks batch headers from `pos` and returns the first batch (position and
    /// header) for which `wanted` holds, or `None` at the end of the segment.
    pub(crate) async fn find_batch(
        &self,
        file: &DmaFile,
        mut pos: u64,
        size: u64,
        wanted: impl Fn(&BatchView) -> bool,
    ) -> Result<Option<(u64, BatchView)>> {
        let window = (2 * self.config().index_interval_bytes as usize).max(64 << 10);
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

    pub(crate) async fn read_exact(
        &self,
        file: &DmaFile,
        pos: u64,
        len: usize,
    ) -> Result<ReadResult> {
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
        let (candidates, hw, log_start) = {
            let st = self.state.borrow();
            let candidates: Vec<(Rc<DmaFile>, u64, u64)> = st
                .segments
                .values()
                .filter(|s| s.max_timestamp >= target && s.next_offset > st.log_start_offset)
                .map(|s| {
                    let from = s.time_index.lookup(s.base, target);
                    (
                        s.file.clone(),
                        s.size,
                        s.offset_index.lookup(s.base, from).0,
                    )
                })
                .collect();
            (candidates, st.high_watermark, st.log_start_offset)
        };
        for (file, size, pos) in candidates {
            let Some((at, view)) = self
                .find_batch(&file, pos, size, |v| {
                    v.max_timestamp >= target && v.last_offset() >= log_start.0
                })
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
                    offset: Offset(offset.max(log_start.0)),
                    timestamp,
                }));
            }
        }
        Ok(None)
    }

    /// Deletes closed segments past `retention.ms` or beyond `retention.bytes`
    /// (oldest first, never the active one) and moves the log start offset.
    pub async fn apply_retention(&self) -> Result<RetentionOutcome> {
        let _permit = self.maintenance_permit().await?;
        let config = self.config();
        let doomed: Vec<Offset> = {
            let st = self.state.borrow();
            if !config.cleanup.delete || st.offline {
                return Ok(RetentionOutcome {
                    log_start_offset: st.log_start_offset,
                    ..RetentionOutcome::default()
                });
            }
            let now = self.context.clock.now_ms();
            let total: u64 = st.segments.values().map(|s| s.size).sum();
            let mut excess = config
                .retention_bytes
                .map_or(0, |limit| total.saturating_sub(limit));
            let closed = st.segments.len() - 1;
            let mut doomed = Vec::new();
            for seg in st.segments.values().take(closed) {
                let expired = config.retention.is_some_and(|r| {
                    seg.max_timestamp >= 0 && now - seg.max_timestamp > r.as_millis() as i64
                });
                let oversize = excess > 0 && excess >= seg.size;
                let below_start = seg.next_offset <= st.log_start_offset;
                if !(expired || oversize || below_start) {
                    break;
                }
                excess = excess.saturating_sub(seg.size);
                doomed.push(seg.base);
            }
            doomed
        };
        let outcome = self.delete_segments(&doomed).await?;
        if outcome.segments_deleted > 0 {
            tracing::info!(
                log = %self.dir.display(),
                segments = outcome.segments_deleted,
                bytes = outcome.bytes_deleted,
                log_start_offset = outcome.log_start_offset.0,
                "retention deleted segments"
            );
        }
        Ok(outcome)
    }

    /// Removes the given oldest closed segments; the maintenance lock is held.
    async fn delete_segments(&self, bases: &[Offset]) -> Result<RetentionOutcome> {
        let mut removed = Vec::new();
        let log_start_offset = {
            let mut st = self.state.borrow_mut();
            for base in bases {
                assert!(st.segments.len() > 1, "the active segment is never deleted");
                let first = *st.segments.keys().next().expect("segments");
                assert_eq!(first, *base, "segments go oldest first");
                removed.push(st.segments.remove(base).expect("listed segment"));
            }
            let first = *st.segments.keys().next().expect("segments");
            st.log_start_offset = st.log_start_offset.max(first);
            let start = st.log_start_offset;
            st.cache.evict_below(start);
            start
        };
        let mut outcome = RetentionOutcome {
            segments_deleted: removed.len(),
            bytes_deleted: removed.iter().map(|s| s.size).sum(),
            log_start_offset,
        };
        for seg in removed {
            // Readers still holding the file keep reading the unlinked inode.
            for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT] {
                checkpoint::remove_if_present(&seg.sibling(ext)).await?;
            }
        }
        if outcome.segments_deleted > 0 {
            checkpoint::sync_dir(&self.dir).await?;
        }
        outcome.log_start_offset = self.log_start_offset();
        Ok(outcome)
    }

    /// Moves the log start offset up to `offset` (DeleteRecords): records
    /// below it are no longer readable, and segments wholly below it go.
    /// Returns the new log start offset.
    pub async fn delete_records_before(&self, offset: Offset) -> Result<Offset> {
        let _permit = self.maintenance_permit().await?;
        let (hw, start) = {
            let st = self.state.borrow();
            if st.offline {
                return Err(Error::Offline(self.dir.clone()));
            }
            (st.high_watermark, st.log_start_offset)
        };
        if offset > hw || offset.0 < 0 {
            return Err(Error::OffsetOutOfRange {
                requested: offset.0,
                log_start: start.0,
                high_watermark: hw.0,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        // Durable first: a crash after this point still hides the records.
        checkpoint::write_framed(
            &self.dir.join(LOG_START_FILE),
            &checkpoint::encode_i64s(&[offset.0]),
        )
        .await?;
        checkpoint::sync_dir(&self.dir).await?;
        let doomed: Vec<Offset> = {
            let mut st = self.state.borrow_mut();
            st.log_start_offset = offset;
            let closed = st.segments.len() - 1;
            st.segments
                .values()
                .take(closed)
                .take_while(|s| s.next_offset <= offset)
                .map(|s| s.base)
                .collect()
        };
        self.delete_segments(&doomed).await?;
        Ok(self.log_start_offset())
    }

    /// Waits for queued writes, syncs, writes the active segment's indexes
    /// and the clean-shutdown marker, and closes every segment file.
    pub async fn close(&self) -> Result<()> {
        let end = {
            let mut st = self.state.borrow_mut();
            st.closed = true;
            st.log_end_offset
        };
        match self.write_until(end).await {
            Ok(()) | Err(Error::Offline(_)) => {}
            Err(e) => return Err(e),
        }
        let _maintenance = self.maintenance_permit().await?;
        let offline = self.state.borrow().offline;
        if !offline {
            // Give back the space allocated ahead: the marker vouches for a
            // file that ends with the block holding the last batch.
            let (file, kept) = {
                let st = self.state.borrow();
                let active = st.active();
                let block = active.block_bytes();
                (active.file.clone(), active.size.div_ceil(block) * block)
            };
            if self.state.borrow().writes.allocated_end > kept {
                file.truncate(kept)
                    .await
                    .map_err(|e| Error::glommio("truncate active segment", &self.dir, e))?;
                self.state.borrow_mut().writes.allocated_end = kept;
                file.fdatasync()
                    .await
                    .map_err(|e| Error::glommio("sync active segment", &self.dir, e))?;
            }
            self.sync().await?;
            let (index, time, index_bytes, time_bytes, marker) = {
                let st = self.state.borrow();
                let active = st.active();
                let mut time_index = active.time_index.clone();
                if active.max_timestamp >= 0 {
                    time_index.push(
                        active.base,
                        active.max_timestamp,
                        active.offset_of_max_timestamp,
                    );
                }
                let marker = checkpoint::encode_i64s(&[
                    active.base.0,
                    active.size as i64,
                    active.next_offset.0,
                    active.max_timestamp,
                    active.offset_of_max_timestamp.0,
                ]);
                (
                    active.sibling(INDEX_EXT),
                    active.sibling(TIME_INDEX_EXT),
                    active.offset_index.encode(),
                    time_index.encode(),
                    marker,
                )
            };
            checkpoint::write_raw(&index, index_bytes).await?;
            checkpoint::write_raw(&time, time_bytes).await?;
            checkpoint::write_framed(&self.dir.join(CLEAN_SHUTDOWN_FILE), &marker).await?;
            checkpoint::sync_dir(&self.dir).await?;
        }
        // Syncs started for earlier appends still hold the active file.
        self.syncs_ended().await;
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
        self.maintenance_lock.close();
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.context.cache_budget.unregister();
    }
}

/// Records the completion of write `id`, and counts as written (indexed,
/// cached, below the high watermark) each batch now wholly on disk. A
/// failed write takes the log offline: what follows it on disk is unknown.
fn complete_write(st: &mut State, id: u64, ok: bool, interval: u64, context: &LogContext) {
    if !ok {
        st.offline = true;
        return;
    }
    let on_disk = st.writes.pipeline.complete(id);
    let now_ms = context.clock.now_ms();
    let mut batches = Vec::new();
    while st
        .writes
        .staged
        .front()
        .is_some_and(|b| b.pos + b.bytes.len() as u64 <= on_disk)
    {
        batches.push(st.writes.staged.pop_front().expect("checked"));
    }
    let Some(last) = batches.last() else {
        return;
    };
    let new_written = Offset(last.last_offset.0 + 1);
    let seg = st.active_mut();
    seg.first_append_ms.get_or_insert(now_ms);
    for b in &batches {
        let len = b.bytes.len() as u64;
        seg.index_batch(
            interval,
            b.base_offset,
            FilePos(b.pos),
            len,
            b.max_timestamp,
        );
        seg.next_offset = Offset(b.last_offset.0 + 1);
    }
    // The cache takes its own stamped copy, made only if it keeps it (a
    // reader came near the tail lately and the batches fit), and after the
    // writes went out.
    let len: usize = batches.iter().map(|b| b.bytes.len()).sum();
    st.cache
        .insert_with(&context.cache_budget, len, now_ms, |fill| {
            for b in &batches {
                let end = Offset(b.last_offset.0 + 1);
                let copy = fill.push(b.base_offset, end, &b.bytes);
                batch::stamp(copy, b.base_offset.0, b.leader_epoch.0);
            }
        });
    if st.synced_offset == st.written_offset {
        st.unsynced_since_ms = Some(now_ms);
    }
    st.written_offset = new_written;
    st.high_watermark = new_written;
}

/// The staged bytes of one [`Log::issue`]: the pipeline's tail from file
/// position `start`, then the batches, each with its header stamped.
struct Staging<'a> {
    start: u64,
    tail: &'a [u8],
    batches: &'a [StagedBatch],
}

impl Staging<'_> {
    /// Copies the staged bytes from file position `pos` into `dst`.
    fn fill(&self, pos: u64, dst: &mut [u8]) {
        let end = pos + dst.len() as u64;
        let tail_end = self.start + self.tail.len() as u64;
        assert!(pos >= self.start, "only staged bytes are asked for");
        if pos < tail_end {
            let from = (pos - self.start) as usize;
            let n = (tail_end.min(end) - pos) as usize;
            dst[..n].copy_from_slice(&self.tail[from..from + n]);
        }
        let first = self
            .batches
            .partition_point(|b| b.pos + b.bytes.len() as u64 <= pos);
        for b in &self.batches[first..] {
            if b.pos >= end {
                break;
            }
            let lo = b.pos.max(pos);
            let hi = (b.pos + b.bytes.len() as u64).min(end);
            let src = &b.bytes[(lo - b.pos) as usize..(hi - b.pos) as usize];
            dst[(lo - pos) as usize..(hi - pos) as usize].copy_from_slice(src);
            // The stamped header fields, where they fall in `dst`.
            let h_hi = (b.pos + batch::STAMPED_BYTES as u64).min(end);
            if lo < h_hi {
                let mut header = [0u8; batch::STAMPED_BYTES];
                header.copy_from_slice(&b.bytes[..batch::STAMPED_BYTES]);
                batch::stamp(&mut header, b.base_offset.0, b.leader_epoch.0);
                let from = (lo - b.pos) as usize;
                let to = (h_hi - b.pos) as usize;
                dst[(lo - pos) as usize..(h_hi - pos) as usize].copy_from_slice(&header[from..to]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Any range of a staging fills exactly as the concatenation of the
    /// tail and the stamped batches, also where a range cuts a header.
    #[test]
    fn staging_fills_any_range_with_stamped_batches() {
        let tail: Vec<u8> = (0..37u8).collect();
        let start = 4096;
        let mut batches = Vec::new();
        let mut whole = tail.clone();
        let mut pos = start + tail.len() as u64;
        for (i, len) in [70usize, 16, 300, 17, 61].into_iter().enumerate() {
            let bytes: Vec<u8> = (0..len).map(|j| (i * 50 + j) as u8).collect();
            let b = StagedBatch {
                bytes: Bytes::from(bytes.clone()),
                base_offset: Offset(1000 + i as i64),
                last_offset: Offset(1000 + i as i64),
                max_timestamp: 0,
                leader_epoch: LeaderEpoch(7 + i as i32),
                pos,
            };
            let mut stamped = bytes;
            batch::stamp(&mut stamped, b.base_offset.0, b.leader_epoch.0);
            whole.extend(stamped);
            pos += len as u64;
            batches.push(b);
        }
        let staging = Staging {
            start,
            tail: &tail,
            batches: &batches,
        };
        for from in 0..whole.len() {
            for to in from..=whole.len() {
                let mut dst = vec![0xee; to - from];
                staging.fill(start + from as u64, &mut dst);
                assert_eq!(dst, &whole[from..to], "range {from}..{to}");
            }
        }
    }
}
