//! The tail cache: the most recently written batches of a log, in memory.
//!
//! Consumers that keep up read what was just written; serving them from
//! memory spares the disk a read per fetch. Each completed write copies its
//! batches, offsets stamped, into the cache's current block: a fixed piece
//! of memory filled front to back, each byte written once. A read is a slice
//! of one block, shared with the reader (on any shard) with no copy; a read
//! that reaches the end of a block comes back short, and the next one starts
//! in the next block. The oldest blocks are dropped when the log is over its
//! share of the shard's budget; the blocks always cover a contiguous run of
//! offsets ending at the written end.
//!
//! A shard's budget is split evenly between the logs it holds; a log's share
//! is re-read on every insert, so it shrinks as logs are opened. The budget
//! counts whole blocks, filled or not.
//!
//! The copy into the cache costs as much memory bandwidth as the copy into
//! the write buffers, so the cache fills only while someone reads near the
//! tail: a read served from the cache, a read at the high watermark, or a
//! read of the active segment within the log's share of its end. Once no
//! such read came for [`TAIL_READ_TTL_MS`], writes are not copied and the
//! cache is emptied; a reader that comes back reads from the disk until it
//! reaches the tail again.
//!
//! Blocks were once one allocation per write, with reads that spanned
//! several of them joined by a copy: a consumer following the tail then cost
//! a second copy of every byte (a tenth of the engine thread's time in the
//! 1 KiB append benchmark with a reader following), and every write a fresh
//! allocation. A block is reused, once evicted, if no reader still holds it.

use std::cell::Cell;
use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::sync::atomic::AtomicU8;
use std::sync::Arc;

use bytes::Bytes;

use crate::Offset;

/// How long after the last read near the tail the cache keeps filling:
/// long enough that a consumer long-polling with Kafka's default
/// `fetch.max.wait.ms` (500 ms) never lets it lapse.
pub const TAIL_READ_TTL_MS: i64 = 10_000;

/// A block is a quarter of the log's share, so that eviction frees a
/// quarter at a time and the cache holds at least three quarters of its
/// share once full, within these bounds: the upper one caps what one block
/// leaves unused and keeps short reads at block ends rare (a fetch asks for
/// 1 MiB of a partition by default); the lower one keeps tiny shares (many
/// thousands of partitions on a shard) from cutting reads into scraps, at
/// the cost of holding less than three quarters of them.
const BLOCK_BYTES_MIN: usize = 16 << 10;
const BLOCK_BYTES_MAX: usize = 4 << 20;

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

/// Memory batches are copied into. Its bytes are atomics only so that a
/// block may be shared with readers on other shards: the log's own shard
/// writes them with plain copies, past everything written before, and no
/// byte is written again while a reader may hold it.
struct Block {
    mem: Box<[AtomicU8]>,
}

impl Block {
    fn new(len: usize) -> Block {
        let zeroed: Box<[MaybeUninit<AtomicU8>]> = Box::new_zeroed_slice(len);
        // SAFETY: all-zero bytes are a valid `AtomicU8` (it has `u8`'s
        // size, alignment and bit validity).
        let mem = unsafe { zeroed.assume_init() };
        Block { mem }
    }

    fn ptr(&self, at: usize) -> *mut u8 {
        assert!(at <= self.mem.len());
        // `AtomicU8` is an `UnsafeCell<u8>`: a pointer derived from a shared
        // reference may write it.
        self.mem.as_ptr().wrapping_add(at).cast::<u8>().cast_mut()
    }
}

/// Written bytes of a block, held by a `Bytes` handed to a reader.
struct Written {
    block: Arc<Block>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for Written {
    fn as_ref(&self) -> &[u8] {
        assert!(self.start <= self.end && self.end <= self.block.mem.len());
        // SAFETY: the range is within the block and was written before this
        // view was made (views cover only filled bytes); a chunk writes only
        // past its filled length, and a block is filled again only once no
        // view holds it (`Arc::get_mut` succeeded), so these bytes do not
        // change while the reference lives.
        unsafe { std::slice::from_raw_parts(self.block.ptr(self.start), self.end - self.start) }
    }
}

/// A block and the batches in it.
struct Chunk {
    block: Arc<Block>,
    /// Bytes written, from the block's start.
    filled: usize,
    /// Offset of the first batch.
    base: Offset,
    /// One past the last offset.
    end: Offset,
    /// (base offset, position in the block) of every batch.
    batches: Vec<(Offset, u32)>,
}

impl Chunk {
    fn capacity(&self) -> usize {
        self.block.mem.len()
    }

    fn room(&self) -> usize {
        self.capacity() - self.filled
    }

    /// Copies the batch `src` (offsets `base` up to `end`) after the filled
    /// bytes, and returns the copy for stamping.
    fn push(&mut self, base: Offset, end: Offset, src: &[u8]) -> &mut [u8] {
        assert!(src.len() <= self.room(), "a batch is pushed where it fits");
        let at = self.filled;
        // SAFETY: [at, at + len) is within the block and past every byte
        // written, so no view covers it; only this chunk, owned by one log
        // on its shard, writes the block; the slice lives no longer than
        // `&mut self`.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.block.ptr(at), src.len()) };
        dst.copy_from_slice(src);
        if self.batches.is_empty() {
            self.base = base;
        }
        self.batches.push((base, at as u32));
        self.end = end;
        self.filled += src.len();
        dst
    }

    fn view(&self, start: usize, end: usize) -> Bytes {
        assert!(end <= self.filled, "only written bytes are read");
        Bytes::from_owner(Written {
            block: self.block.clone(),
            start,
            end,
        })
    }
}

#[derive(Default)]
pub(crate) struct TailCache {
    chunks: VecDeque<Chunk>,
    /// Capacity of the blocks held: what counts against the share.
    held: usize,
    /// Bytes written into them.
    bytes: usize,
    /// When a read last came near the tail.
    tail_read_ms: Option<i64>,
}

/// What [`TailCache::insert_with`] hands its caller to copy batches in with.
pub(crate) struct Filler<'a> {
    cache: &'a mut TailCache,
    share: usize,
    /// Bytes pushed so far.
    pushed: usize,
}

impl Filler<'_> {
    /// Copies the batch `src` (offsets `base` up to `end`, following what
    /// was pushed before) into the cache, and returns the copy for stamping.
    pub(crate) fn push(&mut self, base: Offset, end: Offset, src: &[u8]) -> &mut [u8] {
        let cache = &mut *self.cache;
        if cache.chunks.back().is_some_and(|c| c.end != base) {
            // Not contiguous (cannot happen on one log): start over.
            cache.clear();
        }
        if cache.chunks.back().is_none_or(|c| c.room() < src.len()) {
            let block = cache.block_for(src.len(), self.share);
            cache.held += block.mem.len();
            cache.chunks.push_back(Chunk {
                block,
                filled: 0,
                base,
                end: base,
                batches: Vec::new(),
            });
        }
        cache.bytes += src.len();
        self.pushed += src.len();
        let chunk = cache.chunks.back_mut().expect("pushed above");
        chunk.push(base, end, src)
    }
}

impl TailCache {
    /// Adds the batches of one completed write: `bytes` holds them, each
    /// listed by base offset and position; `end` is one past the last offset.
    #[cfg(test)]
    pub(crate) fn insert(
        &mut self,
        budget: &TailCacheBudget,
        bytes: &[u8],
        batches: &[(Offset, u32)],
        end: Offset,
    ) {
        self.insert_with(budget, bytes.len(), 0, |fill| {
            for (i, &(base, pos)) in batches.iter().enumerate() {
                let (next_base, next_pos) = batches
                    .get(i + 1)
                    .map_or((end, bytes.len()), |&(b, p)| (b, p as usize));
                fill.push(base, next_base, &bytes[pos as usize..next_pos]);
            }
        });
    }

    /// Records a read near the tail at `now_ms`: writes are cached until
    /// [`TAIL_READ_TTL_MS`] after the last one.
    pub(crate) fn note_tail_read(&mut self, now_ms: i64) {
        self.tail_read_ms = Some(now_ms);
    }

    /// Bytes of batches held.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Lets `fill` copy in the `len` bytes of batches of one completed write
    /// at `now_ms`, only if a read came near the tail lately and they fit
    /// the log's share. Otherwise the cache empties (the rest would no
    /// longer reach the written end) and there is no copy.
    pub(crate) fn insert_with(
        &mut self,
        budget: &TailCacheBudget,
        len: usize,
        now_ms: i64,
        fill: impl FnOnce(&mut Filler<'_>),
    ) {
        let share = budget.share_bytes();
        let tailed = self
            .tail_read_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < TAIL_READ_TTL_MS);
        if len > share || !tailed {
            self.clear();
            return;
        }
        let mut filler = Filler {
            cache: self,
            share,
            pushed: 0,
        };
        fill(&mut filler);
        assert_eq!(filler.pushed, len, "the batches are as long as announced");
    }

    /// A block for a batch of `len` bytes (at most `share`): the oldest
    /// blocks are evicted until it fits the share, and one of them is
    /// reused if no reader holds it.
    fn block_for(&mut self, len: usize, share: usize) -> Arc<Block> {
        let size = (share / 4)
            .clamp(BLOCK_BYTES_MIN, BLOCK_BYTES_MAX)
            .min(share)
            .max(len);
        let mut spare = None;
        while self.held + size > share {
            let Some(mut old) = self.chunks.pop_front() else {
                break;
            };
            self.held -= old.capacity();
            self.bytes -= old.filled;
            if old.capacity() == size && Arc::get_mut(&mut old.block).is_some() {
                spare = Some(old.block);
            }
        }
        spare.unwrap_or_else(|| Arc::new(Block::new(size)))
    }

    pub(crate) fn clear(&mut self) {
        self.chunks.clear();
        self.held = 0;
        self.bytes = 0;
    }

    /// Drops every block wholly below `offset`.
    pub(crate) fn evict_below(&mut self, offset: Offset) {
        while self.chunks.front().is_some_and(|c| c.end <= offset) {
            let old = self.chunks.pop_front().expect("checked");
            self.held -= old.capacity();
            self.bytes -= old.filled;
        }
    }

    /// Whole batches of one block from the one holding `from`, below
    /// `limit`, about `max_bytes` of them (at least one), with no copy;
    /// `None` if `from` is not cached.
    pub(crate) fn read(&self, from: Offset, limit: Offset, max_bytes: usize) -> Option<Bytes> {
        let first = self.chunks.front()?;
        if from < first.base || from >= limit {
            return None;
        }
        let ci = self.chunks.partition_point(|c| c.end <= from);
        let chunk = self.chunks.get(ci)?;
        let bi = chunk.batches.partition_point(|&(b, _)| b <= from) - 1;
        let start = chunk.batches[bi].1 as usize;
        let taken = take_batches(chunk, bi, limit, max_bytes);
        if taken == 0 {
            return None;
        }
        Some(chunk.view(start, start + taken))
    }
}

/// Bytes of whole batches of `chunk` from batch `from_batch`, stopping before
/// `limit` and after `max_bytes` (the first batch is always taken).
fn take_batches(chunk: &Chunk, from_batch: usize, limit: Offset, max_bytes: usize) -> usize {
    let start = chunk.batches[from_batch].1 as usize;
    let mut end = start;
    for i in from_batch..chunk.batches.len() {
        let (base, pos) = chunk.batches[i];
        if base >= limit {
            break;
        }
        let next = chunk
            .batches
            .get(i + 1)
            .map_or(chunk.filled, |&(_, p)| p as usize);
        if end > start && next - start > max_bytes {
            break;
        }
        debug_assert_eq!(pos as usize, end, "batches are contiguous");
        end = next;
    }
    end - start
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;

    /// Batches of `sizes` bytes from offset `base`, ten offsets each, every
    /// byte of one batch the same: the bytes, the batch list, and the end.
    fn chunk_of(base: i64, sizes: &[usize]) -> (Vec<u8>, Vec<(Offset, u32)>, Offset) {
        let mut bytes = Vec::new();
        let mut batches = Vec::new();
        for (i, &n) in sizes.iter().enumerate() {
            batches.push((Offset(base + i as i64 * 10), bytes.len() as u32));
            bytes.extend(std::iter::repeat_n((base + i as i64) as u8, n));
        }
        (bytes, batches, Offset(base + sizes.len() as i64 * 10))
    }

    /// A log's budget of `share` bytes and its cache, with a read at the
    /// tail just noted so that inserts are kept.
    fn read_at_the_tail(share: usize) -> (TailCacheBudget, TailCache) {
        let budget = TailCacheBudget::new(share);
        budget.register();
        let mut cache = TailCache::default();
        cache.note_tail_read(0);
        (budget, cache)
    }

    fn put(cache: &mut TailCache, budget: &TailCacheBudget, base: i64, sizes: &[usize]) {
        let (b, idx, end) = chunk_of(base, sizes);
        cache.insert(budget, &b, &idx, end);
    }

    #[test]
    fn serves_slices_of_one_block_within_the_budget() {
        // A 256 KiB share: blocks of 64 KiB, four of them at most.
        let (budget, mut cache) = read_at_the_tail(256 * KIB);
        put(&mut cache, &budget, 0, &[20 * KIB; 3]);
        // Offset 30 does not fit the first block's last 4 KiB: a second block.
        put(&mut cache, &budget, 30, &[20 * KIB; 2]);
        assert_eq!(cache.bytes(), 100 * KIB);
        assert_eq!(cache.held, 128 * KIB);

        // Offset 15 is inside the second batch of the first block. (The
        // views are dropped at the end of this scope.)
        {
            let got = cache
                .read(Offset(15), Offset(50), 30 * KIB)
                .expect("cached");
            assert_eq!(
                got.len(),
                20 * KIB,
                "one batch when two would pass max_bytes"
            );
            assert!(got.iter().all(|&b| b == 1));
            let got = cache.read(Offset(15), Offset(50), 1 << 20).expect("cached");
            assert_eq!(got.len(), 40 * KIB, "a read stops at its block's end");
            let again = cache.read(Offset(10), Offset(50), 1 << 20).expect("cached");
            assert_eq!(again.as_ptr(), got.as_ptr(), "reads share the block");
            let got = cache.read(Offset(30), Offset(50), 1 << 20).expect("cached");
            assert_eq!(got.len(), 40 * KIB);
            assert_eq!((got[0], got[20 * KIB]), (30, 31));
            let got = cache.read(Offset(0), Offset(30), 1 << 20).expect("cached");
            assert_eq!(got.len(), 60 * KIB, "nothing at or past the limit");
            assert!(cache.read(Offset(50), Offset(50), 100).is_none());
            assert!(cache.read(Offset(49), Offset(40), 100).is_none());
        }

        // Two more blocks fill the share; a fifth evicts the first, which no
        // reader holds, and reuses its memory.
        let first_block = cache
            .read(Offset(0), Offset(30), 1)
            .expect("cached")
            .as_ptr();
        put(&mut cache, &budget, 50, &[60 * KIB]);
        put(&mut cache, &budget, 60, &[60 * KIB]);
        assert_eq!(cache.held, 256 * KIB);
        put(&mut cache, &budget, 70, &[60 * KIB]);
        assert_eq!(cache.held, 256 * KIB);
        assert_eq!(cache.bytes(), (40 + 3 * 60) * KIB);
        assert!(cache.read(Offset(0), Offset(80), 100).is_none());
        assert!(cache.read(Offset(29), Offset(80), 100).is_none());
        let newest = cache.read(Offset(70), Offset(80), 1 << 20).expect("cached");
        assert_eq!(newest.as_ptr(), first_block, "the evicted block is reused");

        // A block a reader holds is not reused, and what the reader holds
        // does not change.
        let held = cache.read(Offset(30), Offset(80), 1 << 20).expect("cached");
        put(&mut cache, &budget, 80, &[60 * KIB]);
        assert!(cache.read(Offset(30), Offset(90), 100).is_none());
        let latest = cache.read(Offset(80), Offset(90), 1 << 20).expect("cached");
        assert_ne!(latest.as_ptr(), held.as_ptr());
        assert_eq!(held.len(), 40 * KIB);
        assert!(held[..20 * KIB].iter().all(|&b| b == 30));
        assert!(held[20 * KIB..].iter().all(|&b| b == 31));
        assert!(latest.iter().all(|&b| b == 80));
    }

    #[test]
    fn a_batch_larger_than_a_block_gets_one_of_its_own() {
        let (budget, mut cache) = read_at_the_tail(1 << 20);
        put(&mut cache, &budget, 0, &[KIB, 300 * KIB, KIB]);
        assert_eq!(cache.held, 256 * KIB + 300 * KIB + 256 * KIB);
        let got = cache.read(Offset(0), Offset(30), 1 << 20).expect("cached");
        assert_eq!(got.len(), KIB);
        let got = cache.read(Offset(10), Offset(30), 1 << 20).expect("cached");
        assert_eq!(got.len(), 300 * KIB);
        // More than the share: the cache empties instead.
        put(&mut cache, &budget, 30, &[(1 << 20) + 1]);
        assert_eq!((cache.bytes(), cache.held), (0, 0));
    }

    #[test]
    fn retention_drops_only_blocks_wholly_below_the_start() {
        let (budget, mut cache) = read_at_the_tail(256 * KIB);
        put(&mut cache, &budget, 0, &[40 * KIB]);
        put(&mut cache, &budget, 10, &[40 * KIB]);
        cache.evict_below(Offset(5));
        assert_eq!(cache.bytes(), 80 * KIB);
        cache.evict_below(Offset(10));
        assert_eq!(cache.bytes(), 40 * KIB);
        assert!(cache.read(Offset(10), Offset(20), 1).is_some());
    }

    #[test]
    fn fills_only_while_reads_come_near_the_tail() {
        let budget = TailCacheBudget::new(1000);
        budget.register();
        let mut cache = TailCache::default();
        let put = |cache: &mut TailCache, base: i64, now_ms: i64| {
            let (b, idx, end) = chunk_of(base, &[100]);
            let mut built = false;
            cache.insert_with(&budget, b.len(), now_ms, |fill| {
                built = true;
                fill.push(idx[0].0, end, &b);
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
