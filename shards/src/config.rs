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
        }
    }
}

impl BrokerConfig {
    pub fn connections_max_idle(&self) -> Duration {
        Duration::from_millis(self.connections_max_idle_ms)
    }
}
