//! Cluster metadata: which topics exist, their partitions, ids and configs.
//!
//! Shard 0 is the only writer: every change is made there, saved to
//! `<data-dir>/meta/cluster.json` (write to a temporary file, fsync, rename,
//! fsync the directory) and then sent to every shard as a new immutable
//! snapshot with a higher revision. Shards ignore snapshots older than the one
//! they hold. A snapshot is shared read-only between threads through `Arc`;
//! nothing in it is ever mutated in place.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::config::{BrokerConfig, FlushMode};
use crate::error::{Error, Result};
use crate::ids::{PartitionId, ShardId, TopicId};

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have on this node.
pub const TOPIC_PARTITIONS_MAX: i32 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMeta {
    /// The shard recorded at creation; the owner is this modulo the shard count.
    pub shard: ShardId,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: TopicId,
    pub partitions: Vec<PartitionMeta>,
    /// Configs set on the topic itself (dynamic topic configs).
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    pub revision: u64,
    pub topics: BTreeMap<String, TopicMeta>,
}

impl ClusterMeta {
    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: TopicId) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }
}

/// Why a topic name is illegal, or `None` if it is legal.
pub fn topic_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("topic name is empty");
    }
    if name == "." || name == ".." {
        return Some("topic name cannot be '.' or '..'");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Some("topic name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Some("topic name has characters other than ASCII alphanumerics, '.', '_' and '-'");
    }
    None
}

/// The shard that owns a partition, given the shard recorded at creation.
///
/// A pure function of its inputs, so every shard routes alike; taking the
/// remainder keeps partitions placed when a node restarts with fewer shards.
pub fn owner(recorded: ShardId, shard_count: usize) -> ShardId {
    assert!(shard_count > 0, "a node has a shard");
    ShardId((recorded.0 as usize % shard_count) as u16)
}

/// Shards for partitions `first..first + count` of a new topic or new partitions.
///
/// Consecutive partitions go to consecutive shards, starting at a shard chosen
/// by a stable hash of the topic name, so topics spread over all shards.
pub fn place(topic: &str, first: i32, count: i32, shard_count: usize) -> Vec<ShardId> {
    assert!(
        shard_count > 0 && shard_count <= u16::MAX as usize,
        "shard count fits a ShardId"
    );
    let start = (fnv1a(topic.as_bytes()) % shard_count as u64) as usize;
    (first..first + count)
        .map(|p| ShardId(((start + p as usize) % shard_count) as u16))
        .collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The directory of one partition's log, named as Kafka names it.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: PartitionId) -> PathBuf {
    data_dir.join(format!("{topic}-{}", partition.0))
}

/// Where cluster metadata lives on disk.
pub struct MetadataStore {
    path: PathBuf,
}

impl MetadataStore {
    pub fn new(data_dir: &Path) -> MetadataStore {
        MetadataStore {
            path: data_dir.join("meta").join("cluster.json"),
        }
    }

    /// Loads the saved metadata, or an empty one at revision 0.
    ///
    /// Blocks the reactor: startup only.
    pub fn load(&self) -> Result<ClusterMeta> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| Error::MetadataFormat {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClusterMeta::default()),
            Err(source) => Err(Error::Io {
                op: "read metadata",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Saves `meta` atomically: a crash leaves either the old or the new file.
    ///
    /// Blocks the reactor on file I/O and fsync: admin paths only (topic
    /// creation and deletion), never produce or fetch.
    pub fn save(&self, meta: &ClusterMeta) -> Result<()> {
        let dir = self.path.parent().expect("metadata path has a directory");
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        std::fs::create_dir_all(dir).map_err(io("create metadata dir", dir))?;
        let tmp = self.path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(meta).map_err(|source| Error::MetadataFormat {
            path: tmp.clone(),
            source,
        })?;
        let mut file = std::fs::File::create(&tmp).map_err(io("create metadata", &tmp))?;
        file.write_all(&bytes).map_err(io("write metadata", &tmp))?;
        file.sync_all().map_err(io("fsync metadata", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io("rename metadata", &self.path))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync metadata dir", dir))?;
        Ok(())
    }
}

/// The kind of value a topic config holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Long { min: i64 },
    Int { min: i32 },
    Double,
    Choice(&'static [&'static str]),
}

/// A topic config Sluice knows: its name, kind and the broker default.
pub struct ConfigDef {
    pub name: &'static str,
    pub kind: ConfigKind,
    pub default: fn(&BrokerConfig) -> String,
    pub doc: &'static str,
}

/// Every topic config accepted by CreateTopics and shown by DescribeConfigs.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        kind: ConfigKind::Choice(&["delete", "compact", "compact,delete", "delete,compact"]),
        default: |b| b.log_cleanup_policy.clone(),
        doc: "How old segments are removed: deleted by retention, or compacted by key.",
    },
    ConfigDef {
        name: "compression.type",
        kind: ConfigKind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
        default: |_| "producer".into(),
        doc: "Batches are stored as the producer compressed them.",
    },
    ConfigDef {
        name: "delete.retention.ms",
        kind: ConfigKind::Long { min: 0 },
        default: |b| b.log_cleaner_delete_retention_ms.to_string(),
        doc: "How long tombstones are kept in a compacted topic.",
    },
    ConfigDef {
        name: "flush.messages",
        kind: ConfigKind::Long { min: 1 },
        default: |b| b.log_flush_interval_messages.to_string(),
        doc: "Records between forced fdatasyncs of the log.",
    },
    ConfigDef {
        name: "flush.ms",
        kind: ConfigKind::Long { min: 0 },
        default: |b| b.log_flush_interval_ms.to_string(),
        doc: "Milliseconds between forced fdatasyncs of the log.",
    },
    ConfigDef {
        name: "index.interval.bytes",
        kind: ConfigKind::Int { min: 0 },
        default: |b| b.log_index_interval_bytes.to_string(),
        doc: "Bytes between entries of the sparse offset and time indexes.",
    },
    ConfigDef {
        name: "max.message.bytes",
        kind: ConfigKind::Int { min: 0 },
        default: |b| b.message_max_bytes.to_string(),
        doc: "The largest record batch accepted.",
    },
    ConfigDef {
        name: "message.timestamp.type",
        kind: ConfigKind::Choice(&["CreateTime"]),
        default: |_| "CreateTime".into(),
        doc: "Records keep the timestamp the producer set.",
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        kind: ConfigKind::Double,
        default: |b| b.log_cleaner_min_cleanable_ratio.to_string(),
        doc: "Share of a compacted log that must be uncleaned before it is cleaned.",
    },
    ConfigDef {
        name: "min.insync.replicas",
        kind: ConfigKind::Int { min: 1 },
        default: |_| "1".into(),
        doc: "Replicas that must have a batch before an acks=all produce succeeds.",
    },
    ConfigDef {
        name: "retention.bytes",
        kind: ConfigKind::Long { min: -1 },
        default: |b| b.log_retention_bytes.to_string(),
        doc: "Bytes a partition keeps before its oldest segments are deleted; -1 for no limit.",
    },
    ConfigDef {
        name: "retention.ms",
        kind: ConfigKind::Long { min: -1 },
        default: |b| b.log_retention_ms.to_string(),
        doc: "Milliseconds a segment is kept after its newest record; -1 for no limit.",
    },
    ConfigDef {
        name: "segment.bytes",
        kind: ConfigKind::Int { min: 14 },
        default: |b| b.log_segment_bytes.to_string(),
        doc: "Bytes after which a segment is closed and a new one started.",
    },
    ConfigDef {
        name: "segment.ms",
        kind: ConfigKind::Long { min: 1 },
        default: |b| b.log_roll_ms.to_string(),
        doc: "Milliseconds after which a segment is closed and a new one started.",
    },
    ConfigDef {
        name: "sluice.flush",
        kind: ConfigKind::Choice(&["on-ack-all", "always", "never"]),
        default: |b| b.flush.name().into(),
        doc: "When a produce waits for fdatasync: on-ack-all (acks=-1 only), always, or never.",
    },
];

pub fn topic_config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Why a topic config value is not acceptable, or `None` if it is.
pub fn topic_config_problem(name: &str, value: &str) -> Option<String> {
    let Some(def) = topic_config_def(name) else {
        return Some(format!("unknown topic config {name}"));
    };
    let ok = match def.kind {
        ConfigKind::Long { min } => value.parse::<i64>().is_ok_and(|v| v >= min),
        ConfigKind::Int { min } => value.parse::<i32>().is_ok_and(|v| v >= min),
        ConfigKind::Double => value.parse::<f64>().is_ok_and(|v| (0.0..=1.0).contains(&v)),
        ConfigKind::Choice(options) => options.contains(&value),
    };
    if ok {
        None
    } else {
        Some(format!("invalid value {value:?} for topic config {name}"))
    }
}

/// The value of a topic config in effect: the topic's own or the broker default.
pub fn effective_config(topic: &TopicMeta, broker: &BrokerConfig, name: &str) -> Option<String> {
    let def = topic_config_def(name)?;
    Some(
        topic
            .configs
            .get(name)
            .cloned()
            .unwrap_or_else(|| (def.default)(broker)),
    )
}

/// The storage settings of a topic's partitions.
pub fn log_config(topic: &TopicMeta, broker: &BrokerConfig) -> sluice_engine::LogConfig {
    let get = |name: &str| effective_config(topic, broker, name).expect("known config");
    let defaults = sluice_engine::LogConfig::default();
    // Values were validated when set; a bad one falls back to the default.
    let long = |name: &str| get(name).parse::<i64>().ok();
    let positive_u64 = |name: &str| long(name).filter(|v| *v >= 0).map(|v| v as u64);
    // Kafka's "no limit" is -1 for retention and Long.MAX for flushing.
    let limit_ms = |name: &str| {
        long(name)
            .filter(|v| *v >= 0 && *v < i64::MAX)
            .map(|v| Duration::from_millis(v as u64))
    };
    let policy = get("cleanup.policy");
    sluice_engine::LogConfig {
        segment_bytes: positive_u64("segment.bytes")
            .unwrap_or(defaults.segment_bytes)
            .clamp(4096, u32::MAX as u64),
        segment_age_max: limit_ms("segment.ms"),
        index_interval_bytes: positive_u64("index.interval.bytes")
            .unwrap_or(defaults.index_interval_bytes),
        message_bytes_max: positive_u64("max.message.bytes")
            .map_or(defaults.message_bytes_max, |v| v as usize),
        flush_messages: positive_u64("flush.messages").filter(|v| *v < i64::MAX as u64),
        flush_interval: limit_ms("flush.ms"),
        cleanup: sluice_engine::CleanupPolicy {
            delete: policy.contains("delete"),
            compact: policy.contains("compact"),
        },
        retention: limit_ms("retention.ms"),
        retention_bytes: positive_u64("retention.bytes"),
        delete_retention: limit_ms("delete.retention.ms").unwrap_or(defaults.delete_retention),
        min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
            .parse()
            .unwrap_or(defaults.min_cleanable_dirty_ratio),
    }
}

/// When a produce to `topic` with `acks` may be answered.
pub fn durability(
    topic: &TopicMeta,
    broker: &BrokerConfig,
    acks: i16,
) -> sluice_engine::Durability {
    let mode = effective_config(topic, broker, "sluice.flush")
        .and_then(|v| FlushMode::parse(&v))
        .unwrap_or(broker.flush);
    match (mode, acks) {
        (FlushMode::Always, _) | (FlushMode::OnAckAll, -1) => sluice_engine::Durability::Synced,
        _ => sluice_engine::Durability::Written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_mode_decides_which_acks_wait_for_a_sync() {
        use sluice_engine::Durability::{Synced, Written};
        let topic = |flush: Option<&str>| TopicMeta {
            name: "t".into(),
            id: TopicId([7; 16]),
            partitions: Vec::new(),
            configs: flush
                .map(|f| BTreeMap::from([("sluice.flush".to_string(), f.to_string())]))
                .unwrap_or_default(),
        };
        let broker = |flush| BrokerConfig {
            flush,
            ..BrokerConfig::default()
        };
        // (topic setting, broker setting) -> durability for acks 0, 1, -1.
        let cases = [
            (None, FlushMode::OnAckAll, [Written, Written, Synced]),
            (None, FlushMode::Always, [Synced, Synced, Synced]),
            (None, FlushMode::Never, [Written, Written, Written]),
            (Some("always"), FlushMode::Never, [Synced, Synced, Synced]),
            (
                Some("never"),
                FlushMode::Always,
                [Written, Written, Written],
            ),
            (
                Some("on-ack-all"),
                FlushMode::Always,
                [Written, Written, Synced],
            ),
        ];
        for (topic_flush, broker_flush, expected) in cases {
            let got =
                [0, 1, -1].map(|acks| durability(&topic(topic_flush), &broker(broker_flush), acks));
            assert_eq!(
                got, expected,
                "topic {topic_flush:?}, broker {broker_flush:?}"
            );
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert_eq!(topic_name_problem("logs.app-1_x"), None);
        assert!(topic_name_problem("").is_some());
        assert!(topic_name_problem(".").is_some());
        assert!(topic_name_problem("..").is_some());
        assert!(topic_name_problem("a b").is_some());
        assert!(topic_name_problem("é").is_some());
        assert_eq!(topic_name_problem(&"a".repeat(249)), None);
        assert!(topic_name_problem(&"a".repeat(250)).is_some());
    }

    #[test]
    fn placement_is_balanced_and_stable() {
        let shards = place("events", 0, 8, 4);
        assert_eq!(shards, place("events", 0, 8, 4));
        for s in 0..4u16 {
            assert_eq!(shards.iter().filter(|x| x.0 == s).count(), 2);
        }
        let more = place("events", 8, 4, 4);
        assert_eq!(more[0], shards[4]);
        assert_eq!(owner(ShardId(5), 4), ShardId(1));
    }
}
