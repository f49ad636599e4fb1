//! The Fetch response, encoded by hand so that stored record bytes reach the
//! socket without being copied into the response.
//!
//! `kafka-protocol` encodes a whole message into one buffer, which for Fetch
//! means copying every fetched batch once more. [`encode_fetch_response`]
//! instead yields a [`ResponseFrame`]: small encoded pieces in one buffer
//! and each partition's records of [`RECORDS_SHARED_BYTES_MIN`] bytes or
//! more as the very `Bytes` the storage engine returned, to be written to
//! the socket one chunk after another. Smaller record sets are copied into
//! the pieces, since one write of a few KiB costs less than two.
//!
//! It covers Fetch versions 4 to 12 (the versions the broker serves) and
//! writes exactly the bytes `kafka-protocol` would; a response carrying
//! anything it does not write by hand (tagged fields with values, or a
//! preferred read replica below v11) falls back to `kafka-protocol`. The
//! layout per version follows Kafka's `FetchResponse.json`: throttle time;
//! error code and session id (v7+); per topic its name; per partition index,
//! error code, high watermark, last stable offset, log start offset (v5+),
//! aborted transactions, preferred read replica (v11+), records; v12 is
//! flexible (compact lengths and tagged-field counts, header v1).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, FetchResponse};

use crate::error::DecodeError;
use crate::frame::{encode_response, FRAME_PREFIX_BYTES};
use crate::ApiVersion;

/// Record sets at least this large are shared, not copied.
pub const RECORDS_SHARED_BYTES_MIN: usize = 16 << 10;
/// The first flexible Fetch version.
const FLEXIBLE_VERSION_MIN: i16 = 12;
/// The versions encoded by hand.
pub const VERSION_MIN: i16 = 4;
pub const VERSION_MAX: i16 = 12;

/// A response frame as a sequence of chunks, size prefix included; written
/// to the socket in order, they are the frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFrame {
    pub chunks: Vec<Bytes>,
}

impl ResponseFrame {
    pub fn single(frame: Bytes) -> ResponseFrame {
        ResponseFrame {
            chunks: vec![frame],
        }
    }

    /// Bytes of the whole frame, size prefix included.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frame in one buffer (tests and small responses).
    pub fn to_bytes(&self) -> Bytes {
        if self.chunks.len() == 1 {
            return self.chunks[0].clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        for c in &self.chunks {
            out.put_slice(c);
        }
        out.freeze()
    }
}

/// Pieces being built: encoded bytes collect in `pending` until a shared
/// record set forces a chunk boundary. The first piece stays mutable until
/// the end, when the frame's size is known and written into it.
struct Chunks {
    head: Option<BytesMut>,
    done: Vec<Bytes>,
    pending: BytesMut,
}

impl Chunks {
    fn share(&mut self, records: &Bytes) {
        let piece = std::mem::take(&mut self.pending);
        match self.head {
            None => self.head = Some(piece),
            Some(_) => self.done.push(piece.freeze()),
        }
        self.done.push(records.clone());
    }

    fn finish(mut self) -> Result<Vec<Bytes>, DecodeError> {
        let mut head = match self.head.take() {
            Some(head) => {
                self.done.push(self.pending.freeze());
                head
            }
            None => self.pending,
        };
        let total =
            head.len() + self.done.iter().map(Bytes::len).sum::<usize>() - FRAME_PREFIX_BYTES;
        let size = i32::try_from(total).map_err(|_| too_large("response size", total))?;
        head[..FRAME_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
        let mut chunks = Vec::with_capacity(self.done.len() + 1);
        chunks.push(head.freeze());
        chunks.extend(self.done.into_iter().filter(|c| !c.is_empty()));
        Ok(chunks)
    }
}

fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// An array or byte-string length: int32 before v12, unsigned varint of
/// length + 1 (0 for null) from v12.
fn put_len(buf: &mut BytesMut, flexible: bool, len: Option<usize>) -> Result<(), DecodeError> {
    let len = match len {
        Some(n) => Some(i32::try_from(n).map_err(|_| too_large("length", n))?),
        None => None,
    };
    if flexible {
        put_uvarint(buf, len.map_or(0, |n| n as u32 + 1));
    } else {
        buf.put_i32(len.unwrap_or(-1));
    }
    Ok(())
}

fn too_large(what: &'static str, n: usize) -> DecodeError {
    DecodeError::malformed(
        "fetch response",
        std::io::Error::other(format!("{what} of {n} does not fit the protocol")),
    )
}

/// Whether `p` holds only what the hand encoder writes.
fn plain(p: &PartitionData, version: i16) -> bool {
    p.unknown_tagged_fields.is_empty()
        && p.diverging_epoch == Default::default()
        && p.current_leader == Default::default()
        && p.snapshot_id == Default::default()
        && (version >= 11 || p.preferred_read_replica.0 == -1)
        && p.aborted_transactions
            .iter()
            .flatten()
            .all(|a| a.unknown_tagged_fields.is_empty())
}

/// Encodes a whole Fetch response frame for `version`, sharing large record
/// sets instead of copying them.
pub fn encode_fetch_response(
    version: ApiVersion,
    correlation_id: i32,
    response: &FetchResponse,
) -> Result<ResponseFrame, DecodeError> {
    let v = version.0;
    let hand = (VERSION_MIN..=VERSION_MAX).contains(&v)
        && response.unknown_tagged_fields.is_empty()
        && response.node_endpoints.is_empty()
        && response.responses.iter().all(|t| {
            t.unknown_tagged_fields.is_empty() && t.partitions.iter().all(|p| plain(p, v))
        });
    if !hand {
        return encode_response(ApiKey::Fetch, version, correlation_id, response)
            .map(ResponseFrame::single);
    }
    let flexible = v >= FLEXIBLE_VERSION_MIN;
    let mut c = Chunks {
        head: None,
        done: Vec::new(),
        pending: BytesMut::with_capacity(256),
    };
    let b = &mut c.pending;
    b.put_i32(0); // the size, patched below
    b.put_i32(correlation_id);
    if flexible {
        put_uvarint(b, 0); // response header v1: no tagged fields
    }
    b.put_i32(response.throttle_time_ms);
    if v >= 7 {
        b.put_i16(response.error_code);
        b.put_i32(response.session_id);
    }
    put_len(b, flexible, Some(response.responses.len()))?;
    for t in &response.responses {
        let name = t.topic.0.as_bytes();
        if flexible {
            put_uvarint(&mut c.pending, name.len() as u32 + 1);
        } else {
            let n = i16::try_from(name.len()).map_err(|_| too_large("topic name", name.len()))?;
            c.pending.put_i16(n);
        }
        c.pending.put_slice(name);
        put_len(&mut c.pending, flexible, Some(t.partitions.len()))?;
        for p in &t.partitions {
            let b = &mut c.pending;
            b.put_i32(p.partition_index);
            b.put_i16(p.error_code);
            b.put_i64(p.high_watermark);
            b.put_i64(p.last_stable_offset);
            if v >= 5 {
                b.put_i64(p.log_start_offset);
            }
            put_len(b, flexible, p.aborted_transactions.as_ref().map(Vec::len))?;
            for a in p.aborted_transactions.iter().flatten() {
                b.put_i64(a.producer_id.0);
                b.put_i64(a.first_offset);
                if flexible {
                    put_uvarint(b, 0);
                }
            }
            if v >= 11 {
                b.put_i32(p.preferred_read_replica.0);
            }
            put_len(b, flexible, p.records.as_ref().map(Bytes::len))?;
            if let Some(records) = &p.records {
                if records.len() >= RECORDS_SHARED_BYTES_MIN {
                    c.share(records);
                } else {
                    c.pending.put_slice(records);
                }
            }
            if flexible {
                put_uvarint(&mut c.pending, 0);
            }
        }
        if flexible {
            put_uvarint(&mut c.pending, 0);
        }
    }
    if flexible {
        put_uvarint(&mut c.pending, 0);
    }
    let chunks = c.finish()?;
    Ok(ResponseFrame { chunks })
}
