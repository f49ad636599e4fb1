//! The one writer of cluster metadata, running on shard 0.
//!
//! Topic changes (create, delete, add partitions) are serialized here: each
//! builds the next [`ClusterMeta`] revision from the current one, saves it
//! durably, then installs it on every shard before the client is answered, so
//! a client that was told a topic exists finds it on every connection.
//! A future controller quorum replaces the local file with a Raft log; the
//! snapshot-and-broadcast shape stays.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;
use sluice_wire::ErrorCode;

use crate::config::BrokerConfig;
use crate::ids::{NodeId, TopicId};
use crate::mesh::{
    AdminRequest, AlterMode, ConfigOpKind, Failure, NewPartitions, NewTopic, TopicConfigChange,
    TopicOutcome,
};
use crate::metadata::{
    self, topic_config_problem, topic_name_problem, ClusterMeta, MetadataStore, PartitionMeta,
    TopicMeta, TOPIC_PARTITIONS_MAX,
};
use crate::shard::Shard;

pub struct Controller {
    store: MetadataStore,
    node_id: NodeId,
    /// One topic change at a time.
    lock: Semaphore,
    /// SplitMix64 state for topic ids, seeded by the caller.
    rng: Cell<u64>,
}

impl Controller {
    pub fn new(store: MetadataStore, node_id: NodeId, seed: u64) -> Controller {
        Controller {
            store,
            node_id,
            lock: Semaphore::new(1),
            rng: Cell::new(seed),
        }
    }

    fn next_u64(&self) -> u64 {
        let mut z = self.rng.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.rng.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn new_topic_id(&self, meta: &ClusterMeta) -> TopicId {
        // Bounded: a collision among 2^128 ids is astronomically unlikely.
        for _ in 0..16 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&self.next_u64().to_be_bytes());
            id[8..].copy_from_slice(&self.next_u64().to_be_bytes());
            let id = TopicId(id);
            if id.0 != [0; 16] && meta.topic_by_id(id).is_none() {
                return id;
            }
        }
        panic!("topic id generator keeps colliding");
    }

    pub async fn handle(&self, shard: &Rc<Shard>, request: AdminRequest) -> Vec<TopicOutcome> {
        let _permit = match self.lock.acquire_permit(1).await {
            Ok(p) => p,
            Err(e) => {
                return names_of(&request)
                    .into_iter()
                    .map(|name| TopicOutcome {
                        name,
                        result: Err(Failure::new(
                            ErrorCode::COORDINATOR_NOT_AVAILABLE,
                            e.to_string(),
                        )),
                    })
                    .collect()
            }
        };
        let current = shard.meta();
        let mut next = (*current).clone();
        next.revision += 1;
        let (outcomes, changed) = match request {
            AdminRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let outcomes = self.create_topics(shard, &mut next, topics);
                let changed = !validate_only && outcomes.iter().any(|o| o.result.is_ok());
                (outcomes, changed)
            }
            AdminRequest::DeleteTopics { names } => {
                let outcomes = delete_topics(&mut next, names);
                let changed = outcomes.iter().any(|o| o.result.is_ok());
                (outcomes, changed)
            }
            AdminRequest::CreatePartitions {
                topics,
                validate_only,
            } => {
                let outcomes = self.create_partitions(shard, &mut next, topics);
                let changed = !validate_only && outcomes.iter().any(|o| o.result.is_ok());
                (outcomes, changed)
            }
            AdminRequest::AlterConfigs {
                changes,
                validate_only,
            } => {
                let outcomes = alter_configs(&mut next, changes, &shard.config);
                let changed = !validate_only && outcomes.iter().any(|o| o.result.is_ok());
                (outcomes, changed)
            }
        };
        if !changed {
            return outcomes;
        }
        if let Err(e) = self.store.save(&next) {
            tracing::error!(error = %e, "saving metadata failed");
            return fail_successes(outcomes, ErrorCode::KAFKA_STORAGE_ERROR, &e.to_string());
        }
        if let Err(e) = shard.broadcast_metadata(Arc::new(next)).await {
            tracing::error!(error = %e, "installing metadata failed");
            return fail_successes(outcomes, ErrorCode::UNKNOWN_SERVER_ERROR, &e.to_string());
        }
        outcomes
    }

    fn check_replicas(&self, replicas: &[i32]) -> Result<(), Failure> {
        if replicas != [self.node_id.0] {
            return Err(Failure::new(
                ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                format!(
                    "replicas {replicas:?} must be exactly this node, [{}]",
                    self.node_id.0
                ),
            ));
        }
        Ok(())
    }

    fn new_topic(
        &self,
        shard: &Shard,
        meta: &ClusterMeta,
        t: &NewTopic,
    ) -> Result<TopicMeta, Failure> {
        if let Some(problem) = topic_name_problem(&t.name) {
            return Err(Failure::new(ErrorCode::INVALID_TOPIC_EXCEPTION, problem));
        }
        if meta.topic(&t.name).is_some() {
            return Err(Failure::new(
                ErrorCode::TOPIC_ALREADY_EXISTS,
                format!("topic '{}' already exists", t.name),
            ));
        }
        let count = if t.assignments.is_empty() {
            let count = if t.num_partitions == -1 {
                shard.config.num_partitions
            } else {
                t.num_partitions
            };
            if count <= 0 {
                return Err(Failure::new(
                    ErrorCode::INVALID_PARTITIONS,
                    "number of partitions must be larger than 0",
                ));
            }
            let rf = if t.replication_factor == -1 {
                1
            } else {
                t.replication_factor
            };
            if rf <= 0 {
                return Err(Failure::new(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    "replication factor must be larger than 0",
                ));
            }
            if rf > 1 {
                return Err(Failure::new(
                    ErrorCode::INVALID_REPLICATION_FACTOR,
                    format!("replication factor: {rf} larger than available brokers: 1"),
                ));
            }
            count
        } else {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(Failure::new(
                    ErrorCode::INVALID_REQUEST,
                    "both partition count/replication factor and a manual assignment were given",
                ));
            }
            let indexes: BTreeSet<i32> = t.assignments.iter().map(|(p, _)| *p).collect();
            let expected: BTreeSet<i32> = (0..t.assignments.len() as i32).collect();
            if indexes != expected {
                return Err(Failure::new(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    "partitions of a manual assignment must be 0..n",
                ));
            }
            for (_, replicas) in &t.assignments {
                self.check_replicas(replicas)?;
            }
            t.assignments.len() as i32
        };
        if count > TOPIC_PARTITIONS_MAX {
            return Err(Failure::new(
                ErrorCode::INVALID_PARTITIONS,
                format!("number of partitions is above the limit of {TOPIC_PARTITIONS_MAX}"),
            ));
        }
        let mut configs = BTreeMap::new();
        for (name, value) in &t.configs {
            let Some(value) = value else {
                return Err(Failure::new(
                    ErrorCode::INVALID_CONFIG,
                    format!("null value for config {name}"),
                ));
            };
            if let Some(problem) = topic_config_problem(name, value) {
                return Err(Failure::new(ErrorCode::INVALID_CONFIG, problem));
            }
            configs.insert(name.clone(), value.clone());
        }
        let partitions = metadata::place(&t.name, 0, count, shard.shard_count)
            .into_iter()
            .map(|s| PartitionMeta {
                shard: s,
                leader_epoch: 0,
            })
            .collect();
        Ok(TopicMeta {
            name: t.name.clone(),
            id: self.new_topic_id(meta),
            partitions,
            configs,
        })
    }

    fn create_topics(
        &self,
        shard: &Shard,
        next: &mut ClusterMeta,
        topics: Vec<NewTopic>,
    ) -> Vec<TopicOutcome> {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &topics {
            *seen.entry(t.name.as_str()).or_default() += 1;
        }
        let mut outcomes = Vec::with_capacity(topics.len());
        for t in &topics {
            let result = if seen[t.name.as_str()] > 1 {
                Err(Failure::new(
                    ErrorCode::INVALID_REQUEST,
                    format!("topic '{}' appears more than once", t.name),
                ))
            } else {
                self.new_topic(shard, next, t)
            };
            if let Ok(meta) = &result {
                next.topics.insert(meta.name.clone(), meta.clone());
            }
            outcomes.push(TopicOutcome {
                name: t.name.clone(),
                result,
            });
        }
        outcomes
    }

    fn create_partitions(
        &self,
        shard: &Shard,
        next: &mut ClusterMeta,
        topics: Vec<NewPartitions>,
    ) -> Vec<TopicOutcome> {
        let mut outcomes = Vec::with_capacity(topics.len());
        for t in topics {
            let result = self.add_partitions(shard, next, &t);
            outcomes.push(TopicOutcome {
                name: t.topic,
                result,
            });
        }
        outcomes
    }

    fn add_partitions(
        &self,
        shard: &Shard,
        next: &mut ClusterMeta,
        t: &NewPartitions,
    ) -> Result<TopicMeta, Failure> {
        let Some(topic) = next.topics.get_mut(&t.topic) else {
            return Err(Failure::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("topic '{}' does not exist", t.topic),
            ));
        };
        let current = topic.partitions.len() as i32;
        if t.count <= current {
            return Err(Failure::new(
                ErrorCode::INVALID_PARTITIONS,
                format!("topic currently has {current} partitions, which is not fewer than the requested {}", t.count),
            ));
        }
        if t.count > TOPIC_PARTITIONS_MAX {
            return Err(Failure::new(
                ErrorCode::INVALID_PARTITIONS,
                format!("number of partitions is above the limit of {TOPIC_PARTITIONS_MAX}"),
            ));
        }
        if let Some(assignments) = &t.assignments {
            if assignments.len() as i32 != t.count - current {
                return Err(Failure::new(
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT,
                    format!(
                        "{} assignments given for {} new partitions",
                        assignments.len(),
                        t.count - current
                    ),
                ));
            }
            for replicas in assignments {
                self.check_replicas(replicas)?;
            }
        }
        let added = metadata::place(&topic.name, current, t.count - current, shard.shard_count);
        topic
            .partitions
            .extend(added.into_iter().map(|s| PartitionMeta {
                shard: s,
                leader_epoch: 0,
            }));
        Ok(topic.clone())
    }
}

fn delete_topics(next: &mut ClusterMeta, names: Vec<String>) -> Vec<TopicOutcome> {
    names
        .into_iter()
        .map(|name| {
            let result = match next.topics.remove(&name) {
                Some(meta) => Ok(meta),
                None => Err(Failure::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic '{name}' does not exist"),
                )),
            };
            TopicOutcome { name, result }
        })
        .collect()
}

/// Applies config changes to topics; a topic whose change has any bad
/// operation keeps its configs and fails as a whole, as in Kafka.
fn alter_configs(
    next: &mut ClusterMeta,
    changes: Vec<TopicConfigChange>,
    broker: &BrokerConfig,
) -> Vec<TopicOutcome> {
    changes
        .into_iter()
        .map(|change| {
            let result = match next.topics.get_mut(&change.topic) {
                None => Err(Failure::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("topic '{}' does not exist", change.topic),
                )),
                Some(topic) => changed_configs(&topic.configs, &change, broker).map(|configs| {
                    topic.configs = configs;
                    topic.clone()
                }),
            };
            TopicOutcome {
                name: change.topic,
                result,
            }
        })
        .collect()
}

/// The configs a topic has after `change`, or why the change is refused.
fn changed_configs(
    current: &BTreeMap<String, String>,
    change: &TopicConfigChange,
    broker: &BrokerConfig,
) -> Result<BTreeMap<String, String>, Failure> {
    let invalid = |message: String| Failure::new(ErrorCode::INVALID_CONFIG, message);
    let mut configs = match change.mode {
        AlterMode::Replace => BTreeMap::new(),
        AlterMode::Incremental => current.clone(),
    };
    let mut seen = BTreeSet::new();
    for op in &change.ops {
        if !seen.insert(op.name.as_str()) {
            return Err(Failure::new(
                ErrorCode::INVALID_REQUEST,
                format!("config {} appears more than once", op.name),
            ));
        }
        let Some(def) = metadata::topic_config_def(&op.name) else {
            return Err(invalid(format!("unknown topic config {}", op.name)));
        };
        let list_config = op.name == "cleanup.policy";
        match (op.kind, &op.value) {
            (ConfigOpKind::Delete, _) => {
                configs.remove(&op.name);
            }
            (ConfigOpKind::Set, Some(value)) => {
                configs.insert(op.name.clone(), value.clone());
            }
            (ConfigOpKind::Append | ConfigOpKind::Subtract, _) if !list_config => {
                return Err(invalid(format!("config {} is not a list", op.name)));
            }
            (ConfigOpKind::Append, Some(value)) => {
                // Appending to an unset list appends to its default, as in Kafka.
                let current = configs
                    .get(&op.name)
                    .cloned()
                    .unwrap_or_else(|| (def.default)(broker));
                let mut items: Vec<String> = current
                    .split(',')
                    .filter(|i| !i.is_empty())
                    .map(str::to_owned)
                    .collect();
                for item in value.split(',') {
                    if !items.iter().any(|i| i == item) {
                        items.push(item.to_owned());
                    }
                }
                configs.insert(op.name.clone(), items.join(","));
            }
            (ConfigOpKind::Subtract, Some(value)) => {
                let remove: Vec<&str> = value.split(',').collect();
                let current = configs
                    .get(&op.name)
                    .cloned()
                    .unwrap_or_else(|| (def.default)(broker));
                let items: Vec<&str> = current
                    .split(',')
                    .filter(|i| !i.is_empty() && !remove.contains(i))
                    .collect();
                if items.is_empty() {
                    configs.remove(&op.name);
                } else {
                    configs.insert(op.name.clone(), items.join(","));
                }
            }
            (_, None) => return Err(invalid(format!("null value for config {}", op.name))),
        }
        if let Some(value) = configs.get(&op.name) {
            if let Some(problem) = topic_config_problem(&op.name, value) {
                return Err(invalid(problem));
            }
        }
    }
    Ok(configs)
}

fn names_of(request: &AdminRequest) -> Vec<String> {
    match request {
        AdminRequest::CreateTopics { topics, .. } => {
            topics.iter().map(|t| t.name.clone()).collect()
        }
        AdminRequest::DeleteTopics { names } => names.clone(),
        AdminRequest::CreatePartitions { topics, .. } => {
            topics.iter().map(|t| t.topic.clone()).collect()
        }
        AdminRequest::AlterConfigs { changes, .. } => {
            changes.iter().map(|c| c.topic.clone()).collect()
        }
    }
}

fn fail_successes(
    outcomes: Vec<TopicOutcome>,
    code: ErrorCode,
    message: &str,
) -> Vec<TopicOutcome> {
    outcomes
        .into_iter()
        .map(|o| match o.result {
            Ok(_) => TopicOutcome {
                name: o.name,
                result: Err(Failure::new(code, message)),
            },
            Err(_) => o,
        })
        .collect()
}
