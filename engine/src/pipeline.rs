//! The write pipeline of a log's active segment: which staged bytes go to
//! which direct-I/O writes, and what is on disk as they complete. Pure
//! bookkeeping; the log does the I/O.
//!
//! Bytes are staged in order and each write starts at the block holding the
//! staged end, so it carries the last, partly filled block again, filled
//! further. Several writes may be in flight at once and complete in any
//! order, but two writes in flight never share a block:
//!
//! * a write issued behind others carries whole blocks only and leaves the
//!   rest staged in the tail for the next write;
//! * a write ending inside a block (a partial write) is issued only when
//!   nothing else is in flight, so that an ack never waits for a block to
//!   fill. While it is in flight its last block is busy: later writes start
//!   at the next block, and the busy block, filled meanwhile, is stale and
//!   written again once the partial write has completed.
//!
//! Long runs go as several writes of at most a piece (1 MiB) each.
//!
//! Everything below [`Pipeline::on_disk`] is on disk: the ranges of the
//! completed writes, joined from the segment start. No write in flight
//! changes a byte below it (a block is only written again with the same
//! bytes in front), so a crash at any moment keeps that prefix.

/// The longest single write; longer runs go as several.
pub(crate) const WRITE_PIECE_BYTES: usize = 1 << 20;

/// A direct-I/O write to start: `len` bytes at `pos` (a block boundary), to
/// be padded with zeros to whole blocks. The bytes are the staged ones at
/// those positions, or `held` (a stale block, whose batches may be gone).
pub(crate) struct Write {
    pub(crate) id: u64,
    pub(crate) pos: u64,
    pub(crate) len: usize,
    pub(crate) held: Option<Vec<u8>>,
}

struct Flight {
    id: u64,
    /// The file range this write puts on disk in its final form.
    lo: u64,
    hi: u64,
    /// The write ends inside a block.
    partial: bool,
}

pub(crate) struct Pipeline {
    block: u64,
    /// The longest write.
    piece: usize,
    /// File position one past the last staged byte.
    staged_end: u64,
    /// The staged bytes past the last block boundary.
    tail: Vec<u8>,
    /// Staged bytes below this position were given to writes, but for a
    /// stale block.
    issued_end: u64,
    flights: Vec<Flight>,
    next_id: u64,
    /// The block of the partial write in flight.
    busy_block: Option<u64>,
    /// A block to write again once its partial write completes, with its
    /// full contents.
    stale: Option<(u64, Vec<u8>)>,
    on_disk: u64,
    /// Ranges of completed writes not yet joined to `on_disk`.
    done: Vec<(u64, u64)>,
}

impl Pipeline {
    /// The pipeline of a segment whose first `size` bytes are on disk, the
    /// last `tail` of them past the last block boundary; no write is longer
    /// than `piece` (a multiple of `block`).
    pub(crate) fn new(block: u64, piece: usize, size: u64, tail: Vec<u8>) -> Pipeline {
        assert!(block > 0, "writes have a block size");
        assert!(
            piece > 0 && piece as u64 % block == 0,
            "writes are whole blocks"
        );
        assert_eq!(size % block, tail.len() as u64, "the tail ends the segment");
        Pipeline {
            block,
            piece,
            staged_end: size,
            tail,
            issued_end: size,
            flights: Vec::new(),
            next_id: 0,
            busy_block: None,
            stale: None,
            on_disk: size,
            done: Vec::new(),
        }
    }

    pub(crate) fn staged_end(&self) -> u64 {
        self.staged_end
    }

    /// The staged bytes past the last block boundary, which the next
    /// [`Pipeline::issue`] writes again in front of the new bytes, from
    /// file position [`Pipeline::tail_block`].
    pub(crate) fn tail(&self) -> &[u8] {
        &self.tail
    }

    /// Where the last, partly filled block starts.
    pub(crate) fn tail_block(&self) -> u64 {
        self.staged_end - self.tail.len() as u64
    }

    #[cfg(test)]
    pub(crate) fn on_disk(&self) -> u64 {
        self.on_disk
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// Nothing is in flight.
    pub(crate) fn idle(&self) -> bool {
        self.flights.is_empty()
    }

    /// Staged bytes wait for a write.
    pub(crate) fn unissued(&self) -> bool {
        self.issued_end < self.staged_end || self.stale.is_some()
    }

    /// Everything staged is on disk.
    pub(crate) fn drained(&self) -> bool {
        self.idle() && !self.unissued()
    }

    /// The write of the stale block, once its partial write has completed.
    pub(crate) fn issue_stale(&mut self) -> Option<Write> {
        if self.busy_block.is_some() {
            return None;
        }
        let (pos, bytes) = self.stale.take()?;
        let len = bytes.len();
        let mut w = self.start(pos, pos + len as u64, len, false);
        w.held = Some(bytes);
        Some(w)
    }

    /// Whether [`Pipeline::issue`] with `new_bytes` more bytes would start a
    /// write.
    pub(crate) fn can_issue(&self, new_bytes: usize, whole_only: bool) -> bool {
        if new_bytes == 0 && self.issued_end == self.staged_end {
            return false;
        }
        let used = self.tail.len() + new_bytes;
        let whole = used - used % self.block as usize;
        if self.busy_block == Some(self.tail_block()) {
            whole > self.block as usize
        } else if whole_only {
            whole > 0
        } else {
            used > 0
        }
    }

    /// Stages `new_bytes` more bytes behind the tail and returns the writes
    /// to start: whole blocks only if `whole_only`, else everything, the
    /// last write ending inside a block. `fill(pos, dst)` copies the
    /// staged bytes from file position `pos` (the tail, then the new bytes)
    /// into `dst`; it is asked for the new tail and a stale block.
    pub(crate) fn issue(
        &mut self,
        new_bytes: usize,
        whole_only: bool,
        fill: &dyn Fn(u64, &mut [u8]),
    ) -> Vec<Write> {
        assert!(
            self.can_issue(new_bytes, whole_only),
            "issue only what can go"
        );
        let block = self.block as usize;
        let aligned = self.tail_block();
        let used = self.tail.len() + new_bytes;
        let whole = used - used % block;
        let whole_end = aligned + whole as u64;
        let end = aligned + used as u64;
        let mut writes = Vec::with_capacity(2);
        if self.busy_block == Some(aligned) {
            assert!(self.stale.is_none(), "one stale block at a time");
            let mut stale = vec![0; block];
            fill(aligned, &mut stale);
            self.stale = Some((aligned, stale));
            self.start_run(&mut writes, aligned + block as u64, whole - block);
            self.issued_end = whole_end;
        } else if whole_only {
            self.start_run(&mut writes, aligned, whole);
            self.issued_end = whole_end;
        } else {
            self.start_run(&mut writes, aligned, used);
            self.issued_end = end;
        }
        let mut tail = vec![0; used - whole];
        fill(whole_end, &mut tail);
        self.tail = tail;
        self.staged_end = end;
        writes
    }

    /// Records that write `id` completed; returns the new on-disk end.
    pub(crate) fn complete(&mut self, id: u64) -> u64 {
        let at = self
            .flights
            .iter()
            .position(|f| f.id == id)
            .expect("a completing write is in flight");
        let flight = self.flights.swap_remove(at);
        if flight.partial {
            self.busy_block = None;
        }
        self.done.push((flight.lo, flight.hi));
        // Each pass joins at least one range or ends; the ranges bound it.
        loop {
            let before = self.done.len();
            let mut on_disk = self.on_disk;
            self.done.retain(|&(lo, hi)| {
                if lo <= on_disk {
                    on_disk = on_disk.max(hi);
                    false
                } else {
                    true
                }
            });
            self.on_disk = on_disk;
            if self.done.len() == before {
                return self.on_disk;
            }
        }
    }

    /// Starts writes of the `len` bytes at `pos`, at most a piece each, so
    /// that the device works on several at once; the last one may end
    /// inside a block.
    fn start_run(&mut self, writes: &mut Vec<Write>, pos: u64, len: usize) {
        let mut at = 0;
        while at < len {
            let n = (len - at).min(self.piece);
            let lo = pos + at as u64;
            let hi = lo + n as u64;
            writes.push(self.start(lo, hi, n, hi % self.block != 0));
            at += n;
        }
    }

    fn start(&mut self, pos: u64, hi: u64, len: usize, partial: bool) -> Write {
        debug_assert_eq!(pos % self.block, 0, "writes start on a block");
        let id = self.next_id;
        self.next_id += 1;
        self.flights.push(Flight {
            id,
            lo: pos,
            hi,
            partial,
        });
        if partial {
            self.busy_block = Some(hi - hi % self.block);
        }
        Write {
            id,
            pos,
            len,
            held: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// A write in flight, as the disk will receive it: padded.
    struct InFlight {
        id: u64,
        pos: u64,
        padded: Vec<u8>,
    }

    fn blocks(w: &InFlight, block: u64) -> (u64, u64) {
        (w.pos / block, (w.pos + w.padded.len() as u64) / block)
    }

    /// Drives the pipeline as the log does, with writes completing in a
    /// random order, against a simulated file.
    fn simulate(seed: u64, steps: usize, block: u64, piece_blocks: usize) {
        let mut rng = Rng(seed | 1);
        let mut p = Pipeline::new(block, piece_blocks * block as usize, 0, Vec::new());
        let mut expected: Vec<u8> = Vec::new();
        let mut queued: Vec<u8> = Vec::new();
        let mut disk: Vec<u8> = Vec::new();
        let mut flights: Vec<InFlight> = Vec::new();
        let mut counter = 0u8;
        let issue = |p: &mut Pipeline,
                     queued: &mut Vec<u8>,
                     expected: &mut Vec<u8>,
                     flights: &mut Vec<InFlight>|
         -> bool {
            let writes = if let Some(w) = p.issue_stale() {
                vec![w]
            } else {
                let whole_only = !p.idle();
                if !p.can_issue(queued.len(), whole_only) {
                    return false;
                }
                let tail_block = p.tail_block() as usize;
                assert_eq!(
                    p.tail(),
                    &expected[tail_block..],
                    "the tail is the staged end"
                );
                let n = queued.len();
                expected.extend_from_slice(queued);
                queued.clear();
                let staged = expected.clone();
                p.issue(n, whole_only, &|pos, dst| {
                    let pos = pos as usize;
                    assert!(
                        pos >= tail_block,
                        "fill asks only for the tail and new bytes"
                    );
                    dst.copy_from_slice(&staged[pos..pos + dst.len()]);
                })
            };
            for w in writes {
                let staged = &expected[w.pos as usize..w.pos as usize + w.len];
                let bytes = match &w.held {
                    Some(held) => {
                        assert_eq!(&held[..], staged, "a held block holds the staged bytes");
                        held.clone()
                    }
                    None => staged.to_vec(),
                };
                assert!(
                    w.len <= piece_blocks * block as usize,
                    "no write is longer than a piece"
                );
                let mut padded = bytes.clone();
                padded.resize(bytes.len().div_ceil(block as usize) * block as usize, 0);
                // No byte below the on-disk end changes.
                let on_disk = p.on_disk() as usize;
                let pos = w.pos as usize;
                if pos < on_disk {
                    let n = (on_disk - pos).min(bytes.len());
                    assert_eq!(
                        &bytes[..n],
                        &expected[pos..pos + n],
                        "a rewrite keeps on-disk bytes"
                    );
                    assert!(
                        pos + padded.len() >= on_disk,
                        "no write ends inside on-disk bytes"
                    );
                }
                let f = InFlight {
                    id: w.id,
                    pos: w.pos,
                    padded,
                };
                let (lo, hi) = blocks(&f, block);
                for other in flights.iter() {
                    let (olo, ohi) = blocks(other, block);
                    assert!(hi <= olo || ohi <= lo, "writes in flight share no block");
                }
                flights.push(f);
            }
            true
        };
        let complete = |p: &mut Pipeline,
                        flights: &mut Vec<InFlight>,
                        disk: &mut Vec<u8>,
                        at: usize,
                        expected: &[u8]| {
            let f = flights.swap_remove(at);
            let end = f.pos as usize + f.padded.len();
            if disk.len() < end {
                disk.resize(end, 0);
            }
            disk[f.pos as usize..end].copy_from_slice(&f.padded);
            let on_disk = p.complete(f.id) as usize;
            assert!(on_disk <= p.staged_end() as usize);
            assert_eq!(
                &disk[..on_disk],
                &expected[..on_disk],
                "the on-disk prefix is what was staged"
            );
        };
        for _ in 0..steps {
            match rng.below(5) {
                0 | 1 => {
                    let n = 1 + rng.below(3 * block) as usize;
                    for _ in 0..n {
                        counter = counter.wrapping_add(1).max(1);
                        queued.push(counter);
                    }
                }
                2 | 3 if !flights.is_empty() => {
                    let at = rng.below(flights.len() as u64) as usize;
                    complete(&mut p, &mut flights, &mut disk, at, &expected);
                }
                _ => {
                    issue(&mut p, &mut queued, &mut expected, &mut flights);
                }
            }
        }
        // Drain: every pass issues or completes something.
        for _ in 0..10_000 {
            if p.drained() && queued.is_empty() {
                break;
            }
            if !issue(&mut p, &mut queued, &mut expected, &mut flights) {
                let at = rng.below(flights.len() as u64) as usize;
                complete(&mut p, &mut flights, &mut disk, at, &expected);
            }
        }
        assert!(p.drained() && queued.is_empty(), "the pipeline drains");
        assert_eq!(p.on_disk() as usize, expected.len());
        assert_eq!(&disk[..expected.len()], &expected[..]);
        assert!(
            disk[expected.len()..].iter().all(|&b| b == 0),
            "padding is zeros"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        #[test]
        fn writes_in_any_order_keep_the_on_disk_prefix(
            seed in any::<u64>(),
            steps in 1usize..400,
            block in prop::sample::select(vec![8u64, 64, 4096]),
            piece_blocks in 1usize..5,
        ) {
            simulate(seed, steps, block, piece_blocks);
        }
    }
}
