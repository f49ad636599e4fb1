//! The protocols Sluice speaks, as pure bytes in and bytes out.
//!
//! * [`frame`]: Kafka request framing: the size prefix, the request header and
//!   the response envelope.
//! * [`batch`]: the RecordBatch v2 view used to split and check a produce
//!   request's record set without decoding its records.
//! * [`records`]: the records inside a batch of any codec: encoding, visiting
//!   and rewriting a batch with some records dropped (compaction).
//! * [`compression`]: the record-section codecs (gzip, snappy, LZ4, zstd) as
//!   Kafka frames them, with bounded decompression.
//! * [`error`]: decode errors and the Kafka error codes Sluice answers with.
//!
//! Invariants: nothing here touches a socket, a file or an executor; decoders
//! never panic on input and never allocate from a length prefix before it has
//! been checked against a limit. Message schemas come from the `kafka-protocol`
//! crate, re-exported as [`kafka`].

pub mod batch;
pub mod compression;
pub mod error;
pub mod fetch;
pub mod frame;
pub mod records;

pub use error::{DecodeError, ErrorCode};
pub use kafka_protocol as kafka;
pub use uuid::Uuid;

/// A Kafka API version number as carried in a request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(pub i16);
