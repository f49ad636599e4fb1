//! The Sluice broker: thread-per-core shards serving the Kafka protocol.
//!
//! * [`broker`] starts one pinned glommio executor per shard and stops them.
//! * [`shard`] holds a shard's state and runs work on the partitions it owns.
//! * [`mesh`] carries typed requests and responses between shards.
//! * [`controller`] (shard 0) is the one writer of cluster [`metadata`].
//! * [`groups`] coordinates the consumer groups whose offsets partition a shard owns.
//! * [`server`] accepts Kafka connections; `server::handlers` has one module
//!   per Kafka API.
//!
//! Invariants: each partition is owned by exactly one shard, chosen by
//! [`metadata::owner`]; a shard touches only its own partitions' logs; shards
//! share no mutable state and no locks, only bounded channels and immutable
//! metadata snapshots.

pub mod broker;
pub mod config;
pub mod controller;
pub mod error;
pub mod groups;
pub mod ids;
pub mod join;
pub mod maintenance;
pub mod mesh;
pub mod metadata;
pub mod partition;
pub mod server;
pub mod shard;

pub use config::BrokerConfig;
pub use error::{Error, Result};
