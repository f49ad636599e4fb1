//! The engine's error type: bad input is an `Err`, broken invariants panic.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op} {path}: {source}")]
    Glommio {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: glommio::GlommioError<()>,
    },
    #[error("corrupt record batch: {0}")]
    CorruptBatch(&'static str),
    #[error("record batch of {len} bytes exceeds the limit of {limit} bytes")]
    BatchTooLarge { len: usize, limit: usize },
    #[error("offset {requested} is outside [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        high_watermark: i64,
    },
    #[error("records of {path} cannot be read for compaction: {reason}")]
    Records { path: PathBuf, reason: String },
    #[error("log {0} is offline after an I/O failure")]
    Offline(PathBuf),
    #[error("log {0} is closed")]
    Closed(PathBuf),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn glommio(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: glommio::GlommioError<()>,
    ) -> Error {
        Error::Glommio {
            op,
            path: path.into(),
            source,
        }
    }
}
