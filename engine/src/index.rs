//! Sparse indexes of one segment, in memory and in their files.
//!
//! An offset index entry is added when at least `index.interval.bytes` have
//! been appended since the previous one, so a lookup lands within that many
//! bytes (plus one batch) of its target. Offsets are kept relative to the
//! segment's base so an entry costs 8 bytes.
//!
//! A time index entry `(T, O)` says that `T` is the largest timestamp of the
//! segment up to and including the batch at offset `O`, and that `O` is the
//! first batch that reached it; every batch before `O` is older than `T`. It
//! is added beside an offset index entry when the largest timestamp grew, and
//! once more when the segment is closed, so its last entry carries the
//! segment's largest timestamp.
//!
//! Files use Kafka's layouts, big-endian: `.index` holds (relative offset u32,
//! position u32) pairs, `.timeindex` (timestamp i64, relative offset u32).
//! A file is only trusted after [`OffsetIndex::decode`] or
//! [`TimeIndex::decode`] checked it against the segment it indexes.

use crate::{FilePos, Offset};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
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

    /// The position of the last entry, 0 when there is none.
    pub(crate) fn last_pos(&self) -> FilePos {
        FilePos(self.entries.last().map_or(0, |e| e.1 as u64))
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for &(rel, pos) in &self.entries {
            out.extend_from_slice(&rel.to_be_bytes());
            out.extend_from_slice(&pos.to_be_bytes());
        }
        out
    }

    /// Reads an index file of a segment `segment_bytes` long spanning
    /// `offset_count` offsets; `None` if it cannot be the index of that
    /// segment (torn, out of order or pointing past its end).
    pub(crate) fn decode(bytes: &[u8], segment_bytes: u64, offset_count: i64) -> Option<Self> {
        if bytes.len() % OFFSET_ENTRY_BYTES != 0 {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes(chunk[..4].try_into().expect("4 bytes"));
            let pos = u32::from_be_bytes(chunk[4..].try_into().expect("4 bytes"));
            let increasing = entries
                .last()
                .is_none_or(|&(r, p): &(u32, u32)| rel > r && pos > p);
            if !increasing || pos as u64 >= segment_bytes || rel as i64 >= offset_count {
                return None;
            }
            entries.push((rel, pos));
        }
        Some(OffsetIndex { entries })
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    /// (largest timestamp so far, offset - base of the batch that reached it).
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Adds an entry if `timestamp` is larger than the last one.
    pub(crate) fn push(&mut self, base: Offset, timestamp: i64, offset: Offset) {
        let rel = u32::try_from(offset.0 - base.0).expect("segment spans under 2^32 offsets");
        match self.entries.last() {
            Some(&(ts, _)) if timestamp <= ts => {}
            Some(&(_, last_rel)) => {
                assert!(rel >= last_rel, "time index offsets do not go back");
                self.entries.push((timestamp, rel));
            }
            None => self.entries.push((timestamp, rel)),
        }
    }

    /// An offset from which scanning finds the first batch whose largest
    /// timestamp reaches `target`: that of the last entry still below it.
    pub(crate) fn lookup(&self, base: Offset, target: i64) -> Offset {
        let i = self.entries.partition_point(|&(ts, _)| ts < target);
        if i == 0 {
            base
        } else {
            Offset(base.0 + self.entries[i - 1].1 as i64)
        }
    }

    /// The largest timestamp recorded, -1 when there is none.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.entries.last().map_or(-1, |e| e.0)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for &(ts, rel) in &self.entries {
            out.extend_from_slice(&ts.to_be_bytes());
            out.extend_from_slice(&rel.to_be_bytes());
        }
        out
    }

    /// Reads a time index file of a segment spanning `offset_count` offsets;
    /// `None` if it cannot be one.
    pub(crate) fn decode(bytes: &[u8], offset_count: i64) -> Option<Self> {
        if bytes.len() % TIME_ENTRY_BYTES != 0 {
            return None;
        }
        let mut entries = Vec::with_capacity(bytes.len() / TIME_ENTRY_BYTES);
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let ts = i64::from_be_bytes(chunk[..8].try_into().expect("8 bytes"));
            let rel = u32::from_be_bytes(chunk[8..].try_into().expect("4 bytes"));
            let increasing = entries
                .last()
                .is_none_or(|&(t, r): &(i64, u32)| ts > t && rel >= r);
            if !increasing || rel as i64 >= offset_count {
                return None;
            }
            entries.push((ts, rel));
        }
        Some(TimeIndex { entries })
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
        let base = Offset(0);
        let mut idx = TimeIndex::default();
        idx.push(base, 10, Offset(0));
        idx.push(base, 20, Offset(5));
        idx.push(base, 15, Offset(9));
        idx.push(base, 30, Offset(12));
        assert_eq!(idx.lookup(base, 5), Offset(0));
        assert_eq!(idx.lookup(base, 10), Offset(0));
        assert_eq!(idx.lookup(base, 11), Offset(0));
        assert_eq!(idx.lookup(base, 21), Offset(5));
        assert_eq!(idx.lookup(base, 99), Offset(12));
        assert_eq!(idx.max_timestamp(), 30);
    }

    #[test]
    fn index_files_round_trip_and_reject_damage() {
        let base = Offset(1000);
        let mut off = OffsetIndex::default();
        off.push(base, Offset(1010), FilePos(4096));
        off.push(base, Offset(1020), FilePos(8192));
        let bytes = off.encode();
        assert_eq!(OffsetIndex::decode(&bytes, 9000, 30), Some(off.clone()));
        assert_eq!(OffsetIndex::decode(&bytes[..12], 9000, 30), None, "torn");
        assert_eq!(OffsetIndex::decode(&bytes, 8192, 30), None, "past the end");
        assert_eq!(
            OffsetIndex::decode(&bytes, 9000, 20),
            None,
            "past the offsets"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert_eq!(
            OffsetIndex::decode(&swapped, 9000, 30),
            None,
            "out of order"
        );

        let mut time = TimeIndex::default();
        time.push(base, 5, Offset(1000));
        time.push(base, 9, Offset(1015));
        let bytes = time.encode();
        assert_eq!(TimeIndex::decode(&bytes, 30), Some(time.clone()));
        assert_eq!(TimeIndex::decode(&bytes[..20], 30), None);
        assert_eq!(TimeIndex::decode(&bytes, 15), None);
    }
}
