//! The tail cache: the most recently written batches of a log, in memory.
//!
//! Consumers that keep up read what was just written; serving them from
//! memory spares the disk a read per fetch. Each completed write adds one
//! chunk (its batches as written, offsets stamped), and the oldest chunks are
//! dropped when the log is over its share of the shard's budget. The chunks
//! always cover a contiguous run of offsets ending at the written end.
//!
//! A shard's budget is split evenly between the logs it holds; a log's share
//! is re-read on every insert, so it shrinks as logs are opened.
//!
//! The copy into the cache costs as much memory bandwidth as the copy into
//! the write buffers, so the cache fills only while someone reads near the
//! tail: a read served from the cache, a read at the high watermark, or a
//! read of the active segment within the log's share of its end. Once no
//! such read came for [`TAIL_READ_TTL_MS`], writes are not copied and the
//! cache is emptied; a reader that comes back reads from the disk until it
//! reaches the tail again.

use std::cell::Cell;
use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::Offset;

/// How long after the last read near the tail the cache keeps filling:
/// long enough that a consumer long-polling with Kafka's default
/// `fetch.max.wait.ms` (500 ms) never lets it lapse.
pub const TAIL_READ_TTL_MS: i64 = 10_000;

/// A shard's memory for tail caches, shared by its logs.
#[derive(Debug)]
pub struct TailCacheBudget {
    bytes_max: usize,
    log_count: Cell<usize>,
}

impl TailCacheBudget {
    pub fn new(bytes_max: usize) -> Self {
        TailCacheBudget {
            bytes_max,
            log_count: Cell::new(0),
        }
    }

    pub(crate) fn register(&self) {
        self.log_count.set(self.log_count.get() + 1);
    }

    pub(crate) fn unregister(&self) {
        let n = self.log_count.get();
        assert!(n > 0, "a log leaves the budget it joined");
        self.log_count.set(n - 1);
    }

    pub(crate) fn share_bytes(&self) -> usize {
        self.bytes_max / self.log_count.get().max(1)
    }
}

struct Chunk {
    /// Offset of the first batch in `bytes`.
    base: Offset,
    /// One past the last offset in `bytes`.
    end: Offset,
    bytes: Bytes,
    /// (base offset, position in `bytes`) of every batch.
    batches: Vec<(Offset, u32)>,
}

#[derive(Default)]
pub(crate) struct TailCache {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    /// When a read last came near the tail.
    tail_read_ms: Option<i64>,
}

impl TailCache {
    /// Adds the batches of one completed write; `batches` lists each batch's
    /// base offset and position in `bytes`, `end` is one past its last offset.
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        budget: &TailCacheBudget,
        bytes: Bytes,
        batches: Vec<(Offset, u32)>,
        end: Offset,
    ) {
        self.insert_with(budget, bytes.len(), end, 0, || (bytes, batches));
    }

    /// Records a read near the tail at `now_ms`: writes are cached until
    /// [`TAIL_READ_TTL_MS`] after the last one.
    pub(crate) fn note_tail_read(&mut self, now_ms: i64) {
        self.tail_read_ms = Some(now_ms);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Like [`TailCache::insert`] for a chunk of `len` bytes that `build`
    /// makes at `now_ms`, called only if a read came near the tail lately
    /// and the chunk fits the log's share. Otherwise the cache empties (the
    /// rest would no longer reach the written end) and there is no copy.
    pub(crate) fn insert_with(
        &mut self,
        budget: &TailCacheBudget,
        len: usize,
        end: Offset,
        now_ms: i64,
        build: impl FnOnce() -> (Bytes, Vec<(Offset, u32)>),
    ) {
        let share = budget.share_bytes();
        let tailed = self
            .tail_read_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < TAIL_READ_TTL_MS);
        if len > share || !tailed {
            self.clear();
            return;
        }
        let (bytes, batches) = build();
        assert_eq!(bytes.len(), len, "the chunk is as long as announced");
        assert!(!batches.is_empty(), "a write holds batches");
        let base = batches[0].0;
        if let Some(last) = self.chunks.back() {
            if last.end != base {
                // Not contiguous (cannot happen on one log): start over.
                self.clear();
            }
        }
        self.bytes += bytes.len();
        self.chunks.push_back(Chunk {
            base,
            end,
            bytes,
            batches,
        });
        while self.bytes > share {
            let old = self
                .chunks
                .pop_front()
                .expect("over budget means non-empty");
            self.bytes -= old.bytes.len();
        }
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
    }

    /// Drops every chunk that starts below `offset`.
    pub(crate) fn evict_below(&mut self, offset: Offset) {
        while self.chunks.front().is_some_and(|c| c.base < offset) {
            let old = self.chunks.pop_front().expect("checked");
            self.bytes -= old.bytes.len();
        }
    }

    /// Whole batches from the one holding `from`, below `limit`, about
    /// `max_bytes` of them (at least one); `None` if `from` is not cached.
    ///
    /// Within one chunk the answer is a slice of it, with no copy; batches
    /// from later chunks are copied in only when the first one is short.
    pub(crate) fn read(&self, from: Offset, limit: Offset, max_bytes: usize) -> Option<Bytes> {
        let first = self.chunks.front()?;
        if from < first.base || from >= limit {
            return None;
        }
        let ci = self.chunks.partition_point(|c| c.end <= from);
        let chunk = self.chunks.get(ci)?;
        let bi = chunk.batches.partition_point(|&(b, _)| b <= from) - 1;
        let start = chunk.batches[bi].1 as usize;
        let (taken, complete) = take_batches(chunk, bi, limit, max_bytes);
        if taken == 0 {
            return None;
        }
        let slice = chunk.bytes.slice(start..start + taken);
        if !complete || taken >= max_bytes || ci + 1 >= self.chunks.len() {
            return Some(slice);
        }
        let mut out = BytesMut::with_capacity(max_bytes.min(taken * 4));
        out.extend_from_slice(&slice);
        for chunk in self.chunks.iter().skip(ci + 1) {
            let room = max_bytes - out.len();
            let (n, complete) = take_batches(chunk, 0, limit, room);
            if n == 0 || n > room {
                break;
            }
            out.extend_from_slice(&chunk.bytes[..n]);
            if !complete {
                break;
            }
        }
        Some(out.freeze())
    }
}

/// Bytes of whole batches of `chunk` from batch `from_batch`, stopping before
/// `limit` and after `max_bytes` (the first batch is always taken); and
/// whether the chunk's end was reached.
fn take_batches(
    chunk: &Chunk,
    from_batch: usize,
    limit: Offset,
    max_bytes: usize,
) -> (usize, bool) {
    let start = chunk.batches[from_batch].1 as usize;
    let mut end = start;
    for i in from_batch..chunk.batches.len() {
        let (base, pos) = chunk.batches[i];
        if base >= limit {
            return (end - start, false);
        }
        let next = chunk
            .batches
            .get(i + 1)
            .map_or(chunk.bytes.len(), |&(_, p)| p as usize);
        if end > start && next - start > max_bytes {
            return (end - start, false);
        }
        debug_assert_eq!(pos as usize, end, "batches are contiguous");
        end = next;
    }
    (end - start, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_of(base: i64, sizes: &[usize]) -> (Bytes, Vec<(Offset, u32)>, Offset) {
        let mut bytes = Vec::new();
        let mut batches = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            batches.push((Offset(base + i as i64 * 10), bytes.len() as u32));
            bytes.extend(std::iter::repeat_n((base + i as i64) as u8, n));
        }
        (
            Bytes::from(bytes),
            batches,
            Offset(base + sizes.len() as i64 * 10),
        )
    }

    #[test]
    fn serves_slices_and_respects_budget() {
        let budget = TailCacheBudget::new(1000);
        budget.register();
        let mut cache = TailCache::default();
        cache.note_tail_read(0);
        let (b, idx, end) = chunk_of(0, &[100, 100, 100]);
        cache.insert(&budget, b, idx, end);
        let (b, idx, end) = chunk_of(30, &[200, 200]);
        cache.insert(&budget, b, idx, end);
        // Offset 15 is inside the second batch of the first chunk.
        let got = cache.read(Offset(15), Offset(50), 150).expect("cached");
        assert_eq!(got.len(), 100, "one batch when two would pass max_bytes");
        let got = cache.read(Offset(15), Offset(50), 10_000).expect("cached");
        assert_eq!(
            got.len(),
            200 + 400,
            "rest of the first chunk and all the second"
        );
        let got = cache.read(Offset(0), Offset(30), 10_000).expect("cached");
        assert_eq!(got.len(), 300, "nothing at or past the limit");
        assert!(cache.read(Offset(50), Offset(50), 100).is_none());
        // A third chunk pushes the first out of a 1000-byte budget.
        let (b, idx, end) = chunk_of(50, &[400]);
        cache.insert(&budget, b, idx, end);
        assert!(cache.read(Offset(0), Offset(60), 100).is_none());
        assert_eq!(cache.read(Offset(31), Offset(60), 100).unwrap().len(), 200);
    }

    #[test]
    fn fills_only_while_reads_come_near_the_tail() {
        let budget = TailCacheBudget::new(1000);
        budget.register();
        let mut cache = TailCache::default();
        let put = |cache: &mut TailCache, base: i64, now_ms: i64| {
            let (b, idx, end) = chunk_of(base, &[100]);
            let mut built = false;
            cache.insert_with(&budget, b.len(), end, now_ms, || {
                built = true;
                (b, idx)
            });
            built
        };
        assert!(!put(&mut cache, 0, 5), "no read yet: no copy");
        assert_eq!(cache.bytes(), 0);
        cache.note_tail_read(1_000);
        assert!(put(&mut cache, 10, 1_000));
        assert!(put(&mut cache, 20, 1_000 + TAIL_READ_TTL_MS - 1));
        assert_eq!(cache.bytes(), 200);
        assert_eq!(cache.read(Offset(10), Offset(30), 1000).unwrap().len(), 200);
        assert!(!put(&mut cache, 30, 1_000 + TAIL_READ_TTL_MS), "lapsed");
        assert_eq!(cache.bytes(), 0, "a lapsed cache empties");
        assert!(cache.read(Offset(20), Offset(40), 1000).is_none());
        cache.note_tail_read(20_000);
        assert!(put(&mut cache, 40, 20_000));
        assert_eq!(cache.read(Offset(40), Offset(50), 1000).unwrap().len(), 100);
    }
}
