//! The Sluice storage engine: one durable, ordered log per partition.
//!
//! A [`Log`] is a directory of segment files named by their base offset
//! (`00000000000000000000.log`), each holding Kafka RecordBatch v2 bytes exactly
//! as the producer sent them, with the base offset and partition leader epoch
//! filled in by the engine. Segments are opened, read and written with
//! direct I/O, in buffers from glommio's allocator; a sparse offset index
//! and time index per segment (in memory, and in `.index` / `.timeindex`
//! files once the segment is closed) lead a read to the right block without
//! scanning the segment. The writes and syncs of active segments go to the
//! kernel at once on the engine's own io_uring ring ([`IoRing`]), not at
//! glommio's next poll. Recently written batches are also kept in a bounded
//! tail cache. Retention deletes whole closed segments; compaction rewrites
//! closed segments through a caller-supplied record codec.
//!
//! Invariants:
//! * the engine never opens a socket and reads no configuration of its own:
//!   the caller passes a [`LogConfig`]; the only tasks it spawns are its
//!   segment writes and syncs, each ending with its I/O, and one task per
//!   [`IoRing`] reaping their completions, on the caller's task queue;
//! * offsets are dense and increasing: every stored batch starts where the
//!   previous one ended;
//! * a batch is visible to readers (below the high watermark) only once its
//!   write has completed, so a read never returns bytes that could vanish on a
//!   kill -9;
//! * bytes read from disk are input: a bad batch found by recovery ends the log
//!   there, it never panics.

mod batch;
mod cache;
mod checkpoint;
mod cleaner;
mod device;
mod error;
mod index;
mod log;
mod pipeline;
mod recovery;
mod ring;
mod segment;
mod signal;

pub use batch::{crc32c_each, BatchView};
pub use cache::{TailCacheBudget, TAIL_READ_TTL_MS};
pub use cleaner::{CompactionOutcome, RecordCodec, RecordKey, COMPACTION_KEYS_MAX};
pub use device::prime_direct_io;
pub use error::{Error, Result};
pub use log::{
    AppendOutcome, CleanupPolicy, Clock, Durability, Log, LogConfig, LogContext, OpenReport,
    ReadOutcome, RetentionOutcome, SystemClock, TimestampLookup,
};
pub use ring::IoRing;
pub use signal::Signal;

/// A Kafka record offset within one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

/// A byte position within a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct FilePos(pub u64);

/// The epoch of a partition's leader, stamped on every batch it appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub i32);
