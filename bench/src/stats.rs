//! Counting and timing.
//!
//! Live counters are process-wide atomics that the progress line and the
//! throughput timeline sample once a second; latency histograms and the
//! verification sets belong to one producer or consumer each and are merged
//! only when the run ends, so the hot path shares nothing but a few relaxed
//! atomic adds.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::payload::SEQ_PRODUCER_SHIFT;

/// The longest latency a histogram holds: one hour, in nanoseconds.
const LATENCY_NS_MAX: u64 = 3_600_000_000_000;

/// A latency histogram in nanoseconds with three significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Records `ns`, saturating at the histogram's bound.
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, LATENCY_NS_MAX));
}

/// Counters every producer and consumer adds to while the run goes on.
#[derive(Debug)]
pub struct Live {
    /// The instant every timestamp of the run counts from.
    pub epoch: Instant,
    pub produced_msgs: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub consumed_msgs: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub produce_errors: AtomicU64,
    pub in_flight: AtomicU64,
    /// Producers that have sent their last message and heard every answer.
    pub producers_done: AtomicUsize,
    /// Consumers holding an assignment in the current generation.
    pub consumers_ready: AtomicUsize,
    /// Partitions assigned across consumers in the latest generation.
    pub partitions_assigned: AtomicUsize,
    /// Raised once every consumer is placed: producers may start.
    pub go: AtomicBool,
    /// When producing began and when its warm-up ends (ns since the epoch);
    /// set before `go` is raised.
    pub go_ns: AtomicU64,
    pub warmup_end_ns: AtomicU64,
    /// Raised when consumers should leave.
    pub stop_consumers: AtomicBool,
    /// Raised to abandon the run (an error elsewhere).
    pub abort: AtomicBool,
}

impl Live {
    pub fn new(epoch: Instant) -> Live {
        Live {
            epoch,
            produced_msgs: AtomicU64::new(0),
            produced_bytes: AtomicU64::new(0),
            consumed_msgs: AtomicU64::new(0),
            consumed_bytes: AtomicU64::new(0),
            produce_errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            producers_done: AtomicUsize::new(0),
            consumers_ready: AtomicUsize::new(0),
            partitions_assigned: AtomicUsize::new(0),
            go: AtomicBool::new(false),
            go_ns: AtomicU64::new(0),
            warmup_end_ns: AtomicU64::new(0),
            stop_consumers: AtomicBool::new(false),
            abort: AtomicBool::new(false),
        }
    }

    /// Nanoseconds since the run's epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn snapshot(&self) -> Counts {
        Counts {
            produced_msgs: self.produced_msgs.load(Ordering::Relaxed),
            produced_bytes: self.produced_bytes.load(Ordering::Relaxed),
            consumed_msgs: self.consumed_msgs.load(Ordering::Relaxed),
            consumed_bytes: self.consumed_bytes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            produce_errors: self.produce_errors.load(Ordering::Relaxed),
        }
    }
}

/// One sample of the live counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub produced_msgs: u64,
    pub produced_bytes: u64,
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    pub in_flight: u64,
    pub produce_errors: u64,
}

/// A set of message sequence numbers: one bitmap per producer, since each
/// producer numbers its messages densely from zero.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    bits: BTreeMap<u64, Vec<u64>>,
    len: u64,
}

impl SeqSet {
    /// Adds `seq`; false if it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        let producer = seq >> SEQ_PRODUCER_SHIFT;
        let n = seq & ((1 << SEQ_PRODUCER_SHIFT) - 1);
        let words = self.bits.entry(producer).or_default();
        let word = (n / 64) as usize;
        if words.len() <= word {
            words.resize(word + 1, 0);
        }
        let mask = 1u64 << (n % 64);
        let fresh = words[word] & mask == 0;
        words[word] |= mask;
        self.len += fresh as u64;
        fresh
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds every member of `other`; returns how many were already here.
    pub fn merge(&mut self, other: &SeqSet) -> u64 {
        let mut overlap = 0;
        for (producer, words) in &other.bits {
            let mine = self.bits.entry(*producer).or_default();
            if mine.len() < words.len() {
                mine.resize(words.len(), 0);
            }
            for (m, w) in mine.iter_mut().zip(words) {
                overlap += (*m & *w).count_ones() as u64;
                self.len += (w & !*m).count_ones() as u64;
                *m |= *w;
            }
        }
        overlap
    }

    /// Members of `self` missing from `other`.
    pub fn missing_from(&self, other: &SeqSet) -> u64 {
        let mut missing = 0;
        for (producer, words) in &self.bits {
            let theirs = other.bits.get(producer);
            for (i, w) in words.iter().enumerate() {
                let t = theirs.and_then(|v| v.get(i)).copied().unwrap_or(0);
                missing += (w & !t).count_ones() as u64;
            }
        }
        missing
    }
}

/// What one producer reports at the end.
#[derive(Debug)]
pub struct ProducerReport {
    pub publish_ns: Histogram<u64>,
    pub acked: SeqSet,
    pub acked_digest: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// What one consumer reports at the end.
#[derive(Debug)]
pub struct ConsumerReport {
    pub e2e_ns: Histogram<u64>,
    pub seen: SeqSet,
    /// Messages this consumer saw more than once.
    pub duplicates: u64,
    /// Wrapping sum of the digests of every message seen (duplicates too).
    pub digest: u64,
    /// Records without a readable tracking header.
    pub foreign: u64,
    pub rebalances: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets_count_overlap_and_missing() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for n in 0..100 {
            assert!(a.insert(n));
        }
        assert!(!a.insert(5));
        for n in 50..120 {
            b.insert(n);
        }
        b.insert((3 << SEQ_PRODUCER_SHIFT) | 7);
        assert_eq!(a.missing_from(&b), 50);
        assert_eq!(b.missing_from(&a), 21);
        let mut m = a.clone();
        assert_eq!(m.merge(&b), 50);
        assert_eq!(m.len(), 121);
    }
}
