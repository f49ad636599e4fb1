//! Every error the broker can meet, mapped to the Kafka error code a client
//! gets for it. The matches are exhaustive on purpose: a new variant does not
//! compile until someone decides its code.

use sluice_wire::ErrorCode;

use crate::error::Error;

/// The code for a storage engine error.
pub fn engine(e: &sluice_engine::Error) -> ErrorCode {
    use sluice_engine::Error as E;
    match e {
        E::Io { .. } | E::Glommio { .. } | E::Offline(_) => ErrorCode::KAFKA_STORAGE_ERROR,
        E::CorruptBatch(_) | E::Records { .. } => ErrorCode::CORRUPT_MESSAGE,
        E::BatchTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
        E::OffsetOutOfRange { .. } => ErrorCode::OFFSET_OUT_OF_RANGE,
        // The partition is being deleted or the broker is stopping: the
        // client looks up the leader again.
        E::Closed(_) => ErrorCode::NOT_LEADER_OR_FOLLOWER,
    }
}

/// The code for a broker error.
pub fn broker(e: &Error) -> ErrorCode {
    match e {
        Error::Storage { source, .. } => engine(source),
        Error::UnknownTopicOrPartition(_) => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        Error::ShardUnavailable(..) => ErrorCode::NOT_LEADER_OR_FOLLOWER,
        Error::Timeout(_) => ErrorCode::REQUEST_TIMED_OUT,
        Error::Io { .. } | Error::MetadataFormat { .. } => ErrorCode::KAFKA_STORAGE_ERROR,
        Error::Executor(_) | Error::Bind { .. } | Error::DataDirInUse(_) => {
            ErrorCode::UNKNOWN_SERVER_ERROR
        }
    }
}

/// The code for a record set that could not be split into batches.
pub fn decode(e: &sluice_wire::DecodeError) -> ErrorCode {
    use sluice_wire::DecodeError as D;
    match e {
        D::BatchTruncated { .. } | D::BatchLength(_) | D::BatchRecordCount(_) => {
            ErrorCode::CORRUPT_MESSAGE
        }
        D::BatchMagic(_) => ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT,
        D::FrameTooLarge { .. } => ErrorCode::MESSAGE_TOO_LARGE,
        D::FrameTooShort(_) | D::UnknownApiKey(_) | D::Malformed { .. } => {
            ErrorCode::INVALID_REQUEST
        }
    }
}
