//! A partition owned by this shard: its log and its leadership.

use std::path::Path;

use sluice_engine::{LeaderEpoch, Log, LogConfig, LogContext};

use crate::error::{Error, Result};
use crate::ids::{TopicId, TopicPartition};
use crate::metadata::partition_dir;

pub struct Partition {
    pub tp: TopicPartition,
    /// The topic id this log was created for; a recreated topic gets new logs.
    pub topic_id: TopicId,
    pub leader_epoch: LeaderEpoch,
    pub log: Log,
}

impl Partition {
    /// Opens the partition's log, recovering it if it exists.
    pub async fn open(
        data_dir: &Path,
        tp: TopicPartition,
        topic_id: TopicId,
        leader_epoch: LeaderEpoch,
        config: LogConfig,
        context: LogContext,
    ) -> Result<Partition> {
        let dir = partition_dir(data_dir, &tp.topic, tp.partition);
        let log = Log::open(dir, config, context)
            .await
            .map_err(|source| Error::Storage {
                partition: tp.clone(),
                source: Box::new(source),
            })?;
        Ok(Partition {
            tp,
            topic_id,
            leader_epoch,
            log,
        })
    }
}
