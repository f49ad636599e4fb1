//! How group state is kept in the internal `__consumer_offsets` topic.
//!
//! Each record's key says what it describes; a record with a null value
//! deletes it (a tombstone, kept for compaction). Strings are an i16 length
//! and UTF-8 bytes (-1 for null); bytes are an i32 length and the bytes.
//!
//! | key | layout | value layout |
//! |---|---|---|
//! | committed offset | i16 1, group, topic, i32 partition | i16 3, i64 offset, i32 leader epoch, metadata, i64 commit time ms |
//! | group | i16 2, group | i16 3, protocol type, i32 generation, protocol (nullable), leader (nullable), i64 time ms, i32 member count, then per member: member id, instance id (nullable), client id, client host, i32 rebalance timeout ms, i32 session timeout ms, subscription bytes, assignment bytes |
//!
//! The key versions follow Kafka's (1 for offsets, 2 for groups) so that keys
//! of one kind never collide with the other.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const OFFSET_KEY_VERSION: i16 = 1;
pub const GROUP_KEY_VERSION: i16 = 2;
const VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_time_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub time_ms: i64,
    pub members: Vec<StoredMember>,
}

/// What one record of the offsets topic says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<StoredOffset>,
    },
    Group {
        group: String,
        value: Option<StoredGroup>,
    },
}

fn put_str(b: &mut BytesMut, s: &str) {
    b.put_i16(s.len() as i16);
    b.put_slice(s.as_bytes());
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(v.len() as i32);
    b.put_slice(v);
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Option<()> {
        (self.0.remaining() >= n).then_some(())
    }
    fn i16(&mut self) -> Option<i16> {
        self.need(2)?;
        Some(self.0.get_i16())
    }
    fn i32(&mut self) -> Option<i32> {
        self.need(4)?;
        Some(self.0.get_i32())
    }
    fn i64(&mut self) -> Option<i64> {
        self.need(8)?;
        Some(self.0.get_i64())
    }
    fn opt_str(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        self.need(len as usize)?;
        let raw = self.0.split_to(len as usize);
        Some(Some(String::from_utf8(raw.to_vec()).ok()?))
    }
    fn str(&mut self) -> Option<String> {
        self.opt_str()?
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let len = usize::try_from(self.i32()?).ok()?;
        self.need(len)?;
        Some(self.0.split_to(len))
    }
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(OFFSET_KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

pub fn offset_value(v: &StoredOffset) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_time_ms);
    b.freeze()
}

pub fn group_value(g: &StoredGroup) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(VALUE_VERSION);
    put_str(&mut b, &g.protocol_type);
    b.put_i32(g.generation);
    put_opt_str(&mut b, g.protocol.as_deref());
    put_opt_str(&mut b, g.leader.as_deref());
    b.put_i64(g.time_ms);
    b.put_i32(g.members.len() as i32);
    for m in &g.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// Reads one record of the offsets topic; `None` if it is not one Sluice wrote.
pub fn decode(key: &Bytes, value: Option<&Bytes>) -> Option<Entry> {
    let mut k = Reader(key.clone());
    match k.i16()? {
        OFFSET_KEY_VERSION => {
            let group = k.str()?;
            let topic = k.str()?;
            let partition = k.i32()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader(v.clone());
                    if r.i16()? != VALUE_VERSION {
                        return None;
                    }
                    Some(StoredOffset {
                        offset: r.i64()?,
                        leader_epoch: r.i32()?,
                        metadata: r.str()?,
                        commit_time_ms: r.i64()?,
                    })
                }
            };
            Some(Entry::Offset {
                group,
                topic,
                partition,
                value,
            })
        }
        GROUP_KEY_VERSION => {
            let group = k.str()?;
            let value = match value {
                None => None,
                Some(v) => {
                    let mut r = Reader(v.clone());
                    if r.i16()? != VALUE_VERSION {
                        return None;
                    }
                    let protocol_type = r.str()?;
                    let generation = r.i32()?;
                    let protocol = r.opt_str()?;
                    let leader = r.opt_str()?;
                    let time_ms = r.i64()?;
                    let count = r.i32()?;
                    let mut members = Vec::new();
                    for _ in 0..count.clamp(0, 100_000) {
                        members.push(StoredMember {
                            member_id: r.str()?,
                            instance_id: r.opt_str()?,
                            client_id: r.str()?,
                            client_host: r.str()?,
                            rebalance_timeout_ms: r.i32()?,
                            session_timeout_ms: r.i32()?,
                            subscription: r.bytes()?,
                            assignment: r.bytes()?,
                        });
                    }
                    Some(StoredGroup {
                        protocol_type,
                        generation,
                        protocol,
                        leader,
                        time_ms,
                        members,
                    })
                }
            };
            Some(Entry::Group { group, value })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let o = StoredOffset {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_time_ms: 9,
        };
        let key = offset_key("g", "t", 5);
        assert_eq!(
            decode(&key, Some(&offset_value(&o))),
            Some(Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5,
                value: Some(o)
            })
        );
        assert_eq!(
            decode(&key, None),
            Some(Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 5,
                value: None
            })
        );
        let g = StoredGroup {
            protocol_type: "consumer".into(),
            generation: 7,
            protocol: Some("range".into()),
            leader: None,
            time_ms: 1,
            members: vec![StoredMember {
                member_id: "m-1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(
            decode(&group_key("g"), Some(&group_value(&g))),
            Some(Entry::Group {
                group: "g".into(),
                value: Some(g.clone())
            })
        );
        let v = group_value(&g);
        for cut in 0..v.len() {
            assert_eq!(
                decode(&group_key("g"), Some(&v.slice(..cut))),
                None,
                "cut {cut}"
            );
        }
    }
}
