//! The broker's settings, with Kafka's names and defaults where Kafka has one.
//!
//! The `sluice` binary fills a [`BrokerConfig`] from its TOML file and flags;
//! nothing in the broker reads configuration from anywhere else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ids::NodeId;

/// Settings of one broker node.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Address every shard accepts Kafka connections on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// `host:port` clients are told to connect to; the bound address if unset.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Shards (pinned executors); one per available core if unset.
    pub shards: Option<usize>,
    pub node_id: NodeId,
    /// `auto.create.topics.enable`
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of an auto-created topic or one created with -1.
    pub num_partitions: i32,
    /// `message.max.bytes`: the largest record batch accepted, unless a topic overrides it.
    pub message_max_bytes: usize,
    /// `socket.request.max.bytes`: the largest request frame accepted.
    pub socket_request_max_bytes: usize,
    /// `log.segment.bytes`
    pub log_segment_bytes: u64,
    /// `log.index.interval.bytes`
    pub log_index_interval_bytes: u64,
    /// `connections.max.idle.ms`
    pub connections_max_idle_ms: u64,
    /// Connections one shard serves at once; further ones wait in the backlog.
    pub shard_connections_max: usize,
    /// The cluster id reported in Metadata responses.
    pub cluster_id: String,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`, fixed at its creation.
    pub offsets_topic_num_partitions: i32,
    /// `offsets.retention.minutes`: committed offsets of an empty group live this long.
    pub offsets_retention_minutes: u64,
    /// `group.min.session.timeout.ms`
    pub group_min_session_timeout_ms: u64,
    /// `group.max.session.timeout.ms`
    pub group_max_session_timeout_ms: u64,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// `sluice.flush`: when an append waits for `fdatasync` (see [`FlushMode`]).
    pub flush: FlushMode,
    /// `log.flush.interval.messages`: sync once this many records are unsynced.
    pub log_flush_interval_messages: i64,
    /// `log.flush.interval.ms`: sync writes older than this.
    pub log_flush_interval_ms: i64,
    /// `log.roll.ms`: a segment is closed once its first batch is this old.
    pub log_roll_ms: i64,
    /// `log.retention.ms`; -1 for no time limit.
    pub log_retention_ms: i64,
    /// `log.retention.bytes`; -1 for no size limit.
    pub log_retention_bytes: i64,
    /// `log.retention.check.interval.ms`: how often retention runs.
    pub log_retention_check_interval_ms: u64,
    /// `log.cleanup.policy`
    pub log_cleanup_policy: String,
    /// `log.cleaner.backoff.ms`: how often compaction looks for dirty logs.
    pub log_cleaner_backoff_ms: u64,
    /// `log.cleaner.min.cleanable.ratio`
    pub log_cleaner_min_cleanable_ratio: f64,
    /// `log.cleaner.delete.retention.ms`: how long tombstones stay.
    pub log_cleaner_delete_retention_ms: i64,
    /// Memory for tail caches across the node, split evenly between shards.
    pub tail_cache_bytes: usize,
    /// Memory each shard sets aside for its direct-I/O buffers and
    /// registers with io_uring (glommio's `io_memory`); buffers that do not
    /// fit come from the heap. At least 1 MiB.
    pub shard_io_memory_bytes: usize,
}

/// When an acknowledged write reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushMode {
    /// acks=-1 produces wait for `fdatasync`; acks=1 and acks=0 do not.
    OnAckAll,
    /// Every produce waits for `fdatasync`.
    Always,
    /// No produce waits for `fdatasync`; only `flush.messages`, `flush.ms`
    /// and segment rolls sync.
    Never,
}

impl FlushMode {
    pub fn parse(s: &str) -> Option<FlushMode> {
        match s {
            "on-ack-all" => Some(FlushMode::OnAckAll),
            "always" => Some(FlushMode::Always),
            "never" => Some(FlushMode::Never),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FlushMode::OnAckAll => "on-ack-all",
            FlushMode::Always => "always",
            FlushMode::Never => "never",
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: "127.0.0.1:9092".parse().expect("valid default address"),
            advertise: None,
            data_dir: PathBuf::from("./sluice-data"),
            shards: None,
            node_id: NodeId(0),
            auto_create_topics_enable: true,
            num_partitions: 1,
            message_max_bytes: 1_048_588,
            socket_request_max_bytes: 104_857_600,
            log_segment_bytes: 1 << 30,
            log_index_interval_bytes: 4096,
            connections_max_idle_ms: 600_000,
            shard_connections_max: 10_000,
            cluster_id: "sluice-cluster".to_string(),
            offsets_topic_num_partitions: 50,
            offsets_retention_minutes: 10_080,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_initial_rebalance_delay_ms: 3_000,
            flush: FlushMode::OnAckAll,
            log_flush_interval_messages: i64::MAX,
            log_flush_interval_ms: i64::MAX,
            log_roll_ms: 604_800_000,
            log_retention_ms: 604_800_000,
            log_retention_bytes: -1,
            log_retention_check_interval_ms: 300_000,
            log_cleanup_policy: "delete".to_string(),
            log_cleaner_backoff_ms: 15_000,
            log_cleaner_min_cleanable_ratio: 0.5,
            log_cleaner_delete_retention_ms: 86_400_000,
            tail_cache_bytes: 256 << 20,
            shard_io_memory_bytes: 64 << 20,
        }
    }
}

impl BrokerConfig {
    pub fn connections_max_idle(&self) -> Duration {
        Duration::from_millis(self.connections_max_idle_ms)
    }

    pub fn retention_check_interval(&self) -> Duration {
        Duration::from_millis(self.log_retention_check_interval_ms.max(1))
    }

    /// [`BrokerConfig::shard_io_memory_bytes`], at least one segment write.
    pub fn shard_io_memory(&self) -> usize {
        self.shard_io_memory_bytes.max(1 << 20)
    }

    pub fn cleaner_backoff(&self) -> Duration {
        Duration::from_millis(self.log_cleaner_backoff_ms.max(1))
    }

    pub fn group_config(&self) -> crate::groups::GroupConfig {
        crate::groups::GroupConfig {
            min_session_timeout: Duration::from_millis(self.group_min_session_timeout_ms),
            max_session_timeout: Duration::from_millis(self.group_max_session_timeout_ms),
            initial_rebalance_delay: Duration::from_millis(self.group_initial_rebalance_delay_ms),
            offsets_retention: Duration::from_secs(
                self.offsets_retention_minutes.saturating_mul(60),
            ),
        }
    }
}
