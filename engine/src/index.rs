//! Sparse in-memory indexes of one segment.
//!
//! An entry is added when at least `index.interval.bytes` have been appended
//! since the previous one, so a lookup lands within that many bytes (plus one
//! batch) of its target. Offsets are kept relative to the segment's base so an
//! entry costs 8 bytes, as in Kafka's `.index` files.

use crate::{FilePos, Offset};

#[derive(Debug, Default)]
pub(crate) struct OffsetIndex {
    /// (offset - base, file position of the batch starting there), increasing.
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, base: Offset, offset: Offset, pos: FilePos) {
        let rel = u32::try_from(offset.0 - base.0).expect("segment spans under 2^32 offsets");
        let pos32 = u32::try_from(pos.0).expect("segment under 4 GiB");
        if let Some(&(last_rel, last_pos)) = self.entries.last() {
            assert!(rel > last_rel, "index offsets increase");
            assert!(pos32 > last_pos, "index positions increase");
        }
        self.entries.push((rel, pos32));
    }

    /// The position of the last indexed batch starting at or before `target`.
    pub(crate) fn lookup(&self, base: Offset, target: Offset) -> FilePos {
        if target.0 < base.0 {
            return FilePos(0);
        }
        let rel = (target.0 - base.0).min(u32::MAX as i64) as u32;
        let i = self.entries.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            FilePos(0)
        } else {
            FilePos(self.entries[i - 1].1 as u64)
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct TimeIndex {
    /// (largest timestamp so far, file position of the batch that raised it).
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    pub(crate) fn push(&mut self, timestamp: i64, pos: FilePos) {
        let pos32 = u32::try_from(pos.0).expect("segment under 4 GiB");
        match self.entries.last() {
            Some(&(ts, _)) if timestamp <= ts => {}
            _ => self.entries.push((timestamp, pos32)),
        }
    }

    /// A position from which scanning finds the first batch whose max timestamp
    /// reaches `target`: that of the last entry still below `target`.
    pub(crate) fn lookup(&self, target: i64) -> FilePos {
        let i = self.entries.partition_point(|&(ts, _)| ts < target);
        if i == 0 {
            FilePos(0)
        } else {
            FilePos(self.entries[i - 1].1 as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut idx = OffsetIndex::default();
        let base = Offset(100);
        idx.push(base, Offset(110), FilePos(4096));
        idx.push(base, Offset(130), FilePos(8200));
        assert_eq!(idx.lookup(base, Offset(100)), FilePos(0));
        assert_eq!(idx.lookup(base, Offset(109)), FilePos(0));
        assert_eq!(idx.lookup(base, Offset(110)), FilePos(4096));
        assert_eq!(idx.lookup(base, Offset(129)), FilePos(4096));
        assert_eq!(idx.lookup(base, Offset(500)), FilePos(8200));
    }

    #[test]
    fn time_lookup_starts_before_target() {
        let mut idx = TimeIndex::default();
        idx.push(10, FilePos(0));
        idx.push(20, FilePos(4096));
        idx.push(15, FilePos(9000));
        idx.push(30, FilePos(12288));
        assert_eq!(idx.lookup(5), FilePos(0));
        assert_eq!(idx.lookup(20), FilePos(0));
        assert_eq!(idx.lookup(21), FilePos(4096));
        assert_eq!(idx.lookup(99), FilePos(12288));
    }
}
