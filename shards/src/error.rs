//! The broker's error type.

use crate::ids::TopicPartition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage of {partition}: {source}")]
    Storage {
        partition: TopicPartition,
        #[source]
        source: Box<sluice_engine::Error>,
    },
    #[error("{0}: unknown topic or partition")]
    UnknownTopicOrPartition(TopicPartition),
    #[error("shard {0} did not answer: {1}")]
    ShardUnavailable(u16, &'static str),
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata file {path}: {source}")]
    MetadataFormat {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("executor: {0}")]
    Executor(String),
    #[error("data directory {0} is in use by another broker (its lock file is held)")]
    DataDirInUse(std::path::PathBuf),
    #[error("bind {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
