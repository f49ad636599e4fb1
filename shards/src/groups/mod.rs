//! Consumer groups: the group coordinator of one shard.
//!
//! A group is coordinated by the shard that owns its partition of the
//! internal topic `__consumer_offsets` (partition = hash of the group id
//! modulo the topic's partition count), so every shard routes a group's
//! requests alike and the coordinator writes the group's state to a log it
//! owns. Committed offsets and group membership are appended there before a
//! client is answered, and replayed when the shard opens the partition.
//!
//! Time-driven work (session expiry, rebalance deadlines, the initial
//! rebalance delay, offset retention) runs in [`Coordinator::tick`], called
//! by one task per shard at a fixed interval.

pub mod group;
pub mod store;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel;
use sluice_engine::{Durability, LeaderEpoch, Offset};
use sluice_wire::kafka::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use sluice_wire::kafka::messages::join_group_response::JoinGroupResponseMember;
use sluice_wire::kafka::messages::leave_group_response::MemberResponse;
use sluice_wire::kafka::messages::list_groups_response::ListedGroup;
use sluice_wire::kafka::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_wire::kafka::messages::*;
use sluice_wire::kafka::protocol::StrBytes;
use sluice_wire::records::{encode_batch, Record};
use sluice_wire::ErrorCode;

use crate::ids::{PartitionId, TopicPartition};
use crate::partition::Partition;
use crate::shard::Shard;
use group::{now_ms, Group, GroupState, JoinOutcome, Member, SyncOutcome};
use store::{Entry, StoredOffset};

/// The internal topic holding committed offsets and group state.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often a shard runs its groups' timers.
pub const TICK_INTERVAL: Duration = Duration::from_millis(100);
/// Longest metadata string stored with a committed offset (Kafka's default).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// Bytes read per step while replaying an offsets partition.
const LOAD_READ_BYTES: usize = 1 << 20;
/// Extra time a joining or syncing member waits beyond its rebalance timeout.
const JOIN_WAIT_SLACK: Duration = Duration::from_secs(5);

/// Group settings, with Kafka's names.
#[derive(Debug, Clone, Copy)]
pub struct GroupConfig {
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
    pub initial_rebalance_delay: Duration,
    pub offsets_retention: Duration,
}

/// The offsets-topic partition of a group.
pub fn offsets_partition(group: &str, partitions: usize) -> PartitionId {
    let mut h: u32 = 0x811c_9dc5;
    for b in group.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    PartitionId((h as usize % partitions.max(1)) as i32)
}

/// A group request forwarded to the group's coordinating shard.
#[derive(Debug)]
pub enum GroupCall {
    Join {
        request: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    },
    Sync {
        request: SyncGroupRequest,
        version: i16,
    },
    Heartbeat {
        request: HeartbeatRequest,
    },
    Leave {
        request: LeaveGroupRequest,
        version: i16,
    },
    Commit {
        request: OffsetCommitRequest,
    },
    FetchOffsets {
        group: String,
        topics: Option<Vec<(String, Vec<i32>)>>,
    },
    List,
    Describe {
        groups: Vec<String>,
    },
    Delete {
        groups: Vec<String>,
    },
    DeleteOffsets {
        group: String,
        topics: Vec<(String, Vec<i32>)>,
    },
}

/// Committed offsets of one topic: (partition, offset, leader epoch, metadata, error).
pub type TopicOffsets = (String, Vec<(i32, i64, i32, Option<String>, ErrorCode)>);

#[derive(Debug)]
pub enum GroupAnswer {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
    Commit(OffsetCommitResponse),
    Offsets(ErrorCode, Vec<TopicOffsets>),
    Listed(Vec<ListedGroup>),
    Described(Vec<DescribedGroup>),
    Deleted(Vec<(String, ErrorCode)>),
    OffsetsDeleted(OffsetDeleteResponse),
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    config: GroupConfig,
    next_member: std::cell::Cell<u64>,
}

impl Coordinator {
    pub fn new(config: GroupConfig) -> Coordinator {
        Coordinator {
            groups: RefCell::new(HashMap::new()),
            config,
            next_member: std::cell::Cell::new(1),
        }
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.get();
        self.next_member.set(n + 1);
        let salt = now_ms() as u64 ^ (std::process::id() as u64) << 40;
        format!(
            "{client_id}-{:016x}-{n}",
            salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        )
    }

    pub fn group_count(&self) -> usize {
        self.groups.borrow().len()
    }

    /// Replays an offsets partition this shard owns into its groups.
    pub async fn load(&self, partition: &Partition) -> sluice_engine::Result<usize> {
        let log = &partition.log;
        let mut offset = log.log_start_offset();
        let end = log.high_watermark();
        let mut entries = 0usize;
        let now = Instant::now();
        // Each read returns at least one batch, so the loop advances to `end`.
        while offset < end {
            let read = log.read(offset, LOAD_READ_BYTES).await?;
            let mut pos = 0usize;
            let bytes = read.bytes;
            if bytes.is_empty() {
                break;
            }
            while pos < bytes.len() {
                let Ok(header) = sluice_wire::batch::BatchHeader::parse(&bytes[pos..]) else {
                    break;
                };
                let batch = &bytes[pos..pos + header.total_len()];
                if let Ok(records) = sluice_wire::records::decode_records(batch) {
                    for r in records {
                        if let Some(key) = &r.record.key {
                            if let Some(entry) = store::decode(key, r.record.value.as_ref()) {
                                self.apply(entry, now);
                                entries += 1;
                            }
                        }
                    }
                }
                offset = Offset(header.base_offset + header.last_offset_delta as i64 + 1);
                pos += header.total_len();
            }
        }
        Ok(entries)
    }

    fn apply(&self, entry: Entry, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        match entry {
            Entry::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                let g = groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group));
                match value {
                    Some(v) => {
                        g.offsets.insert((topic, partition), v);
                    }
                    None => {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            }
            Entry::Group { group, value } => match value {
                Some(v) => groups
                    .entry(group.clone())
                    .or_insert_with(|| Group::new(&group))
                    .restore(v, now),
                None => {
                    groups.remove(&group);
                }
            },
        }
    }

    /// Appends records to the group's offsets partition; `Err` carries the code.
    async fn persist(
        &self,
        shard: &Shard,
        group: &str,
        records: Vec<Record>,
    ) -> Result<(), ErrorCode> {
        if records.is_empty() {
            return Ok(());
        }
        let meta = shard.meta();
        let Some(topic) = meta.topic(OFFSETS_TOPIC) else {
            return Err(ErrorCode::COORDINATOR_NOT_AVAILABLE);
        };
        let tp = TopicPartition {
            topic: OFFSETS_TOPIC.to_string(),
            partition: offsets_partition(group, topic.partitions.len()),
        };
        let Some(partition) = shard.local_partition(&tp) else {
            return Err(ErrorCode::NOT_COORDINATOR);
        };
        let batch = encode_batch(&records);
        match partition
            .log
            .append(&[batch], LeaderEpoch(0), Durability::Synced)
            .await
        {
            Ok(_) => {
                shard.data_arrived.notify();
                Ok(())
            }
            Err(e) => {
                tracing::error!(group, error = %e, "writing group state failed");
                Err(ErrorCode::COORDINATOR_NOT_AVAILABLE)
            }
        }
    }

    fn group_record(&self, id: &str) -> Option<Record> {
        let groups = self.groups.borrow();
        let g = groups.get(id)?;
        Some(Record {
            key: Some(store::group_key(id)),
            value: Some(store::group_value(&g.to_stored())),
            headers: Vec::new(),
            timestamp: now_ms(),
        })
    }

    async fn persist_group(&self, shard: &Shard, id: &str) {
        if let Some(record) = self.group_record(id) {
            if let Err(code) = self.persist(shard, id, vec![record]).await {
                tracing::warn!(group = id, code = code.0, "group state not saved");
            }
        }
    }

    pub async fn handle(&self, shard: &Rc<Shard>, call: GroupCall) -> GroupAnswer {
        match call {
            GroupCall::Join {
                request,
                version,
                client_id,
                client_host,
            } => GroupAnswer::Join(
                self.join(shard, request, version, client_id, client_host)
                    .await,
            ),
            GroupCall::Sync { request, version } => {
                GroupAnswer::Sync(self.sync(shard, request, version).await)
            }
            GroupCall::Heartbeat { request } => GroupAnswer::Heartbeat(self.heartbeat(request)),
            GroupCall::Leave { request, version } => {
                GroupAnswer::Leave(self.leave(shard, request, version).await)
            }
            GroupCall::Commit { request } => GroupAnswer::Commit(self.commit(shard, request).await),
            GroupCall::FetchOffsets { group, topics } => {
                let (code, offsets) = self.fetch_offsets(&group, topics);
                GroupAnswer::Offsets(code, offsets)
            }
            GroupCall::List => GroupAnswer::Listed(self.list()),
            GroupCall::Describe { groups } => GroupAnswer::Described(self.describe(&groups)),
            GroupCall::Delete { groups } => GroupAnswer::Deleted(self.delete(shard, groups).await),
            GroupCall::DeleteOffsets { group, topics } => {
                GroupAnswer::OffsetsDeleted(self.delete_offsets(shard, group, topics).await)
            }
        }
    }

    async fn join(
        &self,
        shard: &Rc<Shard>,
        req: JoinGroupRequest,
        version: i16,
        client_id: String,
        client_host: String,
    ) -> JoinGroupResponse {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let respond = |o: JoinOutcome| {
            JoinGroupResponse::default()
                .with_error_code(o.error.0)
                .with_generation_id(o.generation)
                .with_protocol_type(if version >= 7 {
                    o.protocol_type.as_deref().map(sb)
                } else {
                    None
                })
                .with_protocol_name(o.protocol.as_deref().map(sb))
                .with_leader(sb(&o.leader))
                .with_member_id(sb(&o.member_id))
                .with_members(
                    o.members
                        .into_iter()
                        .map(|(id, instance, metadata)| {
                            JoinGroupResponseMember::default()
                                .with_member_id(sb(&id))
                                .with_group_instance_id(if version >= 5 {
                                    instance.as_deref().map(sb)
                                } else {
                                    None
                                })
                                .with_metadata(metadata)
                        })
                        .collect(),
                )
        };
        if group_id.is_empty() {
            return respond(JoinOutcome::error(ErrorCode::INVALID_GROUP_ID, &member_id));
        }
        let session = Duration::from_millis(req.session_timeout_ms.max(0) as u64);
        if session < self.config.min_session_timeout || session > self.config.max_session_timeout {
            return respond(JoinOutcome::error(
                ErrorCode::INVALID_SESSION_TIMEOUT,
                &member_id,
            ));
        }
        let rebalance = if version >= 1 {
            Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        };
        let protocol_type = req.protocol_type.to_string();
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect();
        let instance_id = req.group_instance_id.as_ref().map(|s| s.to_string());
        let now = Instant::now();
        let (tx, rx) = local_channel::new_bounded(1);
        let mut persist_after = false;
        let immediate: Option<JoinOutcome> = {
            let mut groups = self.groups.borrow_mut();
            if !member_id.is_empty() && !groups.contains_key(&group_id) {
                return respond(JoinOutcome::error(ErrorCode::UNKNOWN_MEMBER_ID, &member_id));
            }
            let g = groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id));
            let new_member = |id: &str| Member {
                id: id.to_string(),
                instance_id: instance_id.clone(),
                client_id: client_id.clone(),
                client_host: client_host.clone(),
                session_timeout: session,
                rebalance_timeout: rebalance,
                protocol_type: protocol_type.clone(),
                protocols: protocols.clone(),
                assignment: Bytes::new(),
                last_heartbeat: now,
                join_waiter: None,
                sync_waiter: None,
            };
            if g.state == GroupState::Dead {
                Some(JoinOutcome::error(
                    ErrorCode::COORDINATOR_NOT_AVAILABLE,
                    &member_id,
                ))
            } else if member_id.is_empty() {
                let existing_static = instance_id
                    .as_ref()
                    .and_then(|i| g.instances.get(i).cloned());
                if !g.accepts(&protocol_type, &protocols, existing_static.as_deref()) {
                    Some(JoinOutcome::error(
                        ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                        &member_id,
                    ))
                } else if let (Some(old_id), Some(instance)) =
                    (existing_static, instance_id.clone())
                {
                    // A static member coming back: it takes over its old
                    // identity's place (and assignment) under a new member id.
                    let new_id = self.new_member_id(&client_id);
                    let mut old = g.remove_member(&old_id).expect("instance maps to a member");
                    old.join_waiter.take();
                    let same_protocols = old
                        .protocols
                        .iter()
                        .map(|(n, _)| n)
                        .eq(protocols.iter().map(|(n, _)| n));
                    let mut m = new_member(&new_id);
                    m.assignment = old.assignment.clone();
                    let was_leader = g.leader.is_none() && g.state == GroupState::Stable;
                    g.members.insert(new_id.clone(), m);
                    g.instances.insert(instance, new_id.clone());
                    if was_leader {
                        g.leader = Some(new_id.clone());
                    }
                    if g.state == GroupState::Stable && same_protocols {
                        persist_after = true;
                        Some(g.current_join(&new_id))
                    } else {
                        g.members.get_mut(&new_id).expect("just added").join_waiter = Some(tx);
                        if g.state != GroupState::PreparingRebalance {
                            g.prepare_rebalance(now, self.config.initial_rebalance_delay);
                        }
                        g.maybe_complete_join(now);
                        None
                    }
                } else if version >= 4 && instance_id.is_none() {
                    let new_id = self.new_member_id(&client_id);
                    g.pending_ids.insert(new_id.clone());
                    Some(JoinOutcome::error(ErrorCode::MEMBER_ID_REQUIRED, &new_id))
                } else {
                    let new_id = self.new_member_id(&client_id);
                    let mut m = new_member(&new_id);
                    m.join_waiter = Some(tx);
                    g.members.insert(new_id.clone(), m);
                    if let Some(i) = &instance_id {
                        g.instances.insert(i.clone(), new_id.clone());
                    }
                    if g.state != GroupState::PreparingRebalance {
                        g.prepare_rebalance(now, self.config.initial_rebalance_delay);
                    }
                    g.maybe_complete_join(now);
                    None
                }
            } else if g.pending_ids.remove(&member_id) {
                if !g.accepts(&protocol_type, &protocols, None) {
                    Some(JoinOutcome::error(
                        ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                        &member_id,
                    ))
                } else {
                    let mut m = new_member(&member_id);
                    m.join_waiter = Some(tx);
                    g.members.insert(member_id.clone(), m);
                    if g.state != GroupState::PreparingRebalance {
                        g.prepare_rebalance(now, self.config.initial_rebalance_delay);
                    }
                    g.maybe_complete_join(now);
                    None
                }
            } else if !g.members.contains_key(&member_id) {
                let fenced = instance_id
                    .as_ref()
                    .is_some_and(|i| g.instances.contains_key(i));
                let code = if fenced {
                    ErrorCode::FENCED_INSTANCE_ID
                } else {
                    ErrorCode::UNKNOWN_MEMBER_ID
                };
                Some(JoinOutcome::error(code, &member_id))
            } else if !g.accepts(&protocol_type, &protocols, Some(&member_id)) {
                Some(JoinOutcome::error(
                    ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                    &member_id,
                ))
            } else {
                let state = g.state;
                let is_leader = g.leader.as_deref() == Some(member_id.as_str());
                let m = g.members.get_mut(&member_id).expect("checked above");
                let unchanged = m.protocols == protocols;
                m.protocols = protocols.clone();
                m.session_timeout = session;
                m.rebalance_timeout = rebalance;
                m.last_heartbeat = now;
                match state {
                    GroupState::CompletingRebalance | GroupState::Stable
                        if unchanged && !(state == GroupState::Stable && is_leader) =>
                    {
                        Some(g.current_join(&member_id))
                    }
                    _ => {
                        m.join_waiter = Some(tx);
                        if state != GroupState::PreparingRebalance {
                            g.prepare_rebalance(now, self.config.initial_rebalance_delay);
                        }
                        g.maybe_complete_join(now);
                        None
                    }
                }
            }
        };
        if let Some(outcome) = immediate {
            if persist_after {
                self.persist_group(shard, &group_id).await;
            }
            return respond(outcome);
        }
        let wait = rebalance.max(self.config.initial_rebalance_delay) + JOIN_WAIT_SLACK;
        let outcome = futures_lite::future::or(async { rx.recv().await }, async {
            glommio::timer::sleep(wait).await;
            None
        })
        .await;
        match outcome {
            Some(o) => {
                if o.error == ErrorCode::NONE && o.leader == o.member_id {
                    tracing::info!(group = %group_id, generation = o.generation, members = o.members.len(), "group rebalanced");
                }
                respond(o)
            }
            None => respond(JoinOutcome::error(
                ErrorCode::REBALANCE_IN_PROGRESS,
                &member_id,
            )),
        }
    }

    async fn sync(
        &self,
        shard: &Rc<Shard>,
        req: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let (tx, rx) = local_channel::new_bounded(1);
        let mut completed = false;
        let (immediate, protocol_type, protocol, wait) = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(&group_id) else {
                return SyncGroupResponse::default()
                    .with_error_code(ErrorCode::UNKNOWN_MEMBER_ID.0);
            };
            let fenced = req
                .group_instance_id
                .as_ref()
                .is_some_and(|i| g.instances.get(i.as_str()).is_some_and(|m| *m != member_id));
            let protocol_type = g.protocol_type.clone();
            let protocol = g.protocol.clone();
            let immediate = if fenced {
                Some(SyncOutcome {
                    error: ErrorCode::FENCED_INSTANCE_ID,
                    assignment: Bytes::new(),
                })
            } else if !g.members.contains_key(&member_id) {
                Some(SyncOutcome {
                    error: ErrorCode::UNKNOWN_MEMBER_ID,
                    assignment: Bytes::new(),
                })
            } else if req.generation_id != g.generation {
                Some(SyncOutcome {
                    error: ErrorCode::ILLEGAL_GENERATION,
                    assignment: Bytes::new(),
                })
            } else if version >= 5
                && (req
                    .protocol_type
                    .as_ref()
                    .is_some_and(|t| Some(t.as_str()) != g.protocol_type.as_deref())
                    || req
                        .protocol_name
                        .as_ref()
                        .is_some_and(|n| Some(n.as_str()) != g.protocol.as_deref()))
            {
                Some(SyncOutcome {
                    error: ErrorCode::INCONSISTENT_GROUP_PROTOCOL,
                    assignment: Bytes::new(),
                })
            } else {
                match g.state {
                    GroupState::PreparingRebalance => Some(SyncOutcome {
                        error: ErrorCode::REBALANCE_IN_PROGRESS,
                        assignment: Bytes::new(),
                    }),
                    GroupState::Stable => Some(SyncOutcome {
                        error: ErrorCode::NONE,
                        assignment: g.members[&member_id].assignment.clone(),
                    }),
                    GroupState::CompletingRebalance => {
                        let m = g.members.get_mut(&member_id).expect("checked above");
                        m.sync_waiter = Some(tx);
                        m.last_heartbeat = Instant::now();
                        if g.leader.as_deref() == Some(member_id.as_str()) {
                            let assignments: HashMap<String, Bytes> = req
                                .assignments
                                .iter()
                                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                                .collect();
                            g.complete_sync(&assignments);
                            completed = true;
                        }
                        None
                    }
                    GroupState::Empty | GroupState::Dead => Some(SyncOutcome {
                        error: ErrorCode::UNKNOWN_MEMBER_ID,
                        assignment: Bytes::new(),
                    }),
                }
            };
            let wait = g
                .members
                .get(&member_id)
                .map_or(Duration::ZERO, |m| m.session_timeout)
                + JOIN_WAIT_SLACK;
            (immediate, protocol_type, protocol, wait)
        };
        if completed {
            self.persist_group(shard, &group_id).await;
        }
        let outcome = match immediate {
            Some(o) => o,
            None => futures_lite::future::or(async { rx.recv().await }, async {
                glommio::timer::sleep(wait).await;
                None
            })
            .await
            .unwrap_or(SyncOutcome {
                error: ErrorCode::REBALANCE_IN_PROGRESS,
                assignment: Bytes::new(),
            }),
        };
        let ok = outcome.error == ErrorCode::NONE;
        SyncGroupResponse::default()
            .with_error_code(outcome.error.0)
            .with_assignment(outcome.assignment)
            .with_protocol_type(if version >= 5 && ok {
                protocol_type.as_deref().map(sb)
            } else {
                None
            })
            .with_protocol_name(if version >= 5 && ok {
                protocol.as_deref().map(sb)
            } else {
                None
            })
    }

    fn heartbeat(&self, req: HeartbeatRequest) -> HeartbeatResponse {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let mut groups = self.groups.borrow_mut();
        let code = match groups.get_mut(&group_id) {
            None => ErrorCode::UNKNOWN_MEMBER_ID,
            Some(g) => {
                let fenced = req
                    .group_instance_id
                    .as_ref()
                    .is_some_and(|i| g.instances.get(i.as_str()).is_some_and(|m| *m != member_id));
                if fenced {
                    ErrorCode::FENCED_INSTANCE_ID
                } else if !g.members.contains_key(&member_id) {
                    ErrorCode::UNKNOWN_MEMBER_ID
                } else if req.generation_id != g.generation {
                    ErrorCode::ILLEGAL_GENERATION
                } else {
                    g.members
                        .get_mut(&member_id)
                        .expect("checked")
                        .last_heartbeat = Instant::now();
                    match g.state {
                        GroupState::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
                        GroupState::CompletingRebalance | GroupState::Stable => ErrorCode::NONE,
                        GroupState::Empty | GroupState::Dead => ErrorCode::UNKNOWN_MEMBER_ID,
                    }
                }
            }
        };
        HeartbeatResponse::default().with_error_code(code.0)
    }

    async fn leave(
        &self,
        shard: &Rc<Shard>,
        req: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let group_id = req.group_id.0.to_string();
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            req.members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(req.member_id.to_string(), None)]
        };
        let mut results = Vec::new();
        let mut changed = false;
        {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(&group_id) else {
                return LeaveGroupResponse::default()
                    .with_error_code(ErrorCode::UNKNOWN_MEMBER_ID.0);
            };
            for (member_id, instance) in leaving {
                let target = match &instance {
                    Some(i) => match g.instances.get(i) {
                        Some(m) if member_id.is_empty() || *m == member_id => Ok(m.clone()),
                        Some(_) => Err(ErrorCode::FENCED_INSTANCE_ID),
                        None => Err(ErrorCode::UNKNOWN_MEMBER_ID),
                    },
                    None if g.members.contains_key(&member_id) => Ok(member_id.clone()),
                    None => Err(ErrorCode::UNKNOWN_MEMBER_ID),
                };
                let code = match target {
                    Ok(id) => {
                        g.remove_member(&id);
                        changed = true;
                        ErrorCode::NONE
                    }
                    Err(code) => code,
                };
                results.push((member_id, instance, code));
            }
            if changed {
                g.after_departure(Instant::now(), self.config.initial_rebalance_delay);
            }
        }
        if changed {
            self.persist_group(shard, &group_id).await;
        }
        if version >= 3 {
            LeaveGroupResponse::default().with_members(
                results
                    .into_iter()
                    .map(|(m, i, code)| {
                        MemberResponse::default()
                            .with_member_id(sb(&m))
                            .with_group_instance_id(i.as_deref().map(sb))
                            .with_error_code(code.0)
                    })
                    .collect(),
            )
        } else {
            LeaveGroupResponse::default().with_error_code(results.first().map_or(0, |r| r.2 .0))
        }
    }

    async fn commit(&self, shard: &Rc<Shard>, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group_id = req.group_id.0.to_string();
        let member_id = req.member_id.to_string();
        let generation = req.generation_id_or_member_epoch;
        let group_error = {
            let mut groups = self.groups.borrow_mut();
            if group_id.is_empty() {
                Some(ErrorCode::INVALID_GROUP_ID)
            } else if generation < 0 && member_id.is_empty() {
                // A commit from a consumer outside group management.
                let g = groups
                    .entry(group_id.clone())
                    .or_insert_with(|| Group::new(&group_id));
                (g.state != GroupState::Empty).then_some(ErrorCode::UNKNOWN_MEMBER_ID)
            } else {
                match groups.get(&group_id) {
                    None => Some(ErrorCode::ILLEGAL_GENERATION),
                    Some(g) if !g.members.contains_key(&member_id) => {
                        Some(ErrorCode::UNKNOWN_MEMBER_ID)
                    }
                    Some(g) if generation != g.generation => Some(ErrorCode::ILLEGAL_GENERATION),
                    // As in Kafka: a member of the current generation may
                    // still commit while the group prepares a rebalance (it
                    // learns of the rebalance from its heartbeat and commits
                    // before rejoining), but not between join and sync.
                    Some(g) if g.state == GroupState::CompletingRebalance => {
                        Some(ErrorCode::REBALANCE_IN_PROGRESS)
                    }
                    Some(_) => None,
                }
            }
        };
        let meta = shard.meta();
        let mut codes: Vec<(String, Vec<(i32, ErrorCode)>)> = Vec::new();
        let mut records = Vec::new();
        let mut accepted = Vec::new();
        let now = now_ms();
        for t in &req.topics {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in &t.partitions {
                let metadata = p
                    .committed_metadata
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                let exists = meta.topic(&name).is_some_and(|topic| {
                    (p.partition_index as usize) < topic.partitions.len() && p.partition_index >= 0
                });
                let code = match group_error {
                    Some(code) => code,
                    None if !exists => ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    None if metadata.len() > OFFSET_METADATA_BYTES_MAX => {
                        ErrorCode::OFFSET_METADATA_TOO_LARGE
                    }
                    None => {
                        let value = StoredOffset {
                            offset: p.committed_offset,
                            leader_epoch: p.committed_leader_epoch,
                            metadata,
                            commit_time_ms: now,
                        };
                        records.push(Record {
                            key: Some(store::offset_key(&group_id, &name, p.partition_index)),
                            value: Some(store::offset_value(&value)),
                            headers: Vec::new(),
                            timestamp: now,
                        });
                        accepted.push(((name.clone(), p.partition_index), value));
                        ErrorCode::NONE
                    }
                };
                parts.push((p.partition_index, code));
            }
            codes.push((name, parts));
        }
        let written = self.persist(shard, &group_id, records).await;
        match written {
            Ok(()) => {
                let mut groups = self.groups.borrow_mut();
                if let Some(g) = groups.get_mut(&group_id) {
                    for (key, value) in accepted {
                        g.offsets.insert(key, value);
                    }
                }
            }
            Err(code) => {
                for (_, parts) in codes.iter_mut() {
                    for (_, c) in parts.iter_mut() {
                        if *c == ErrorCode::NONE {
                            *c = code;
                        }
                    }
                }
            }
        }
        OffsetCommitResponse::default().with_topics(
            codes
                .into_iter()
                .map(|(name, parts)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(TopicName(sb(&name)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(i, c)| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(i)
                                        .with_error_code(c.0)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> (ErrorCode, Vec<TopicOffsets>) {
        let groups = self.groups.borrow();
        let g = groups.get(group_id);
        let topics: Vec<(String, Vec<i32>)> = match topics {
            Some(t) => t,
            None => {
                let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                if let Some(g) = g {
                    for (t, p) in g.offsets.keys() {
                        all.entry(t.clone()).or_default().push(*p);
                    }
                }
                all.into_iter().collect()
            }
        };
        let out = topics
            .into_iter()
            .map(|(topic, parts)| {
                let parts = parts
                    .into_iter()
                    .map(
                        |p| match g.and_then(|g| g.offsets.get(&(topic.clone(), p))) {
                            Some(o) => (
                                p,
                                o.offset,
                                o.leader_epoch,
                                Some(o.metadata.clone()),
                                ErrorCode::NONE,
                            ),
                            None => (p, -1, -1, Some(String::new()), ErrorCode::NONE),
                        },
                    )
                    .collect();
                (topic, parts)
            })
            .collect();
        (ErrorCode::NONE, out)
    }

    fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut out: Vec<ListedGroup> = groups
            .values()
            .filter(|g| g.state != GroupState::Dead)
            .map(|g| {
                ListedGroup::default()
                    .with_group_id(GroupId(sb(&g.id)))
                    .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("consumer")))
                    .with_group_state(sb(g.state.name()))
                    .with_group_type(sb("classic"))
            })
            .collect();
        out.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
        out
    }

    fn describe(&self, ids: &[String]) -> Vec<DescribedGroup> {
        let groups = self.groups.borrow();
        ids.iter()
            .map(|id| {
                let d = DescribedGroup::default().with_group_id(GroupId(sb(id)));
                match groups.get(id) {
                    None => d.with_group_state(sb("Dead")),
                    Some(g) => {
                        let stable = g.state == GroupState::Stable;
                        d.with_group_state(sb(g.state.name()))
                            .with_protocol_type(sb(g.protocol_type.as_deref().unwrap_or("")))
                            .with_protocol_data(sb(if stable {
                                g.protocol.as_deref().unwrap_or("")
                            } else {
                                ""
                            }))
                            .with_members(
                                g.members
                                    .values()
                                    .map(|m| {
                                        let protocol = g.protocol.clone().unwrap_or_default();
                                        DescribedGroupMember::default()
                                            .with_member_id(sb(&m.id))
                                            .with_group_instance_id(
                                                m.instance_id.as_deref().map(sb),
                                            )
                                            .with_client_id(sb(&m.client_id))
                                            .with_client_host(sb(&m.client_host))
                                            .with_member_metadata(if stable {
                                                m.metadata_for(&protocol)
                                            } else {
                                                Bytes::new()
                                            })
                                            .with_member_assignment(if stable {
                                                m.assignment.clone()
                                            } else {
                                                Bytes::new()
                                            })
                                    })
                                    .collect(),
                            )
                    }
                }
            })
            .collect()
    }

    async fn delete(&self, shard: &Rc<Shard>, ids: Vec<String>) -> Vec<(String, ErrorCode)> {
        let mut out = Vec::new();
        for id in ids {
            let records = {
                let groups = self.groups.borrow();
                match groups.get(&id) {
                    None => Err(ErrorCode::GROUP_ID_NOT_FOUND),
                    Some(g) if g.state != GroupState::Empty => Err(ErrorCode::NON_EMPTY_GROUP),
                    Some(g) => {
                        let mut records: Vec<Record> = g
                            .offsets
                            .keys()
                            .map(|(t, p)| tombstone(store::offset_key(&id, t, *p)))
                            .collect();
                        records.push(tombstone(store::group_key(&id)));
                        Ok(records)
                    }
                }
            };
            let code = match records {
                Err(code) => code,
                Ok(records) => match self.persist(shard, &id, records).await {
                    Ok(()) => {
                        self.groups.borrow_mut().remove(&id);
                        ErrorCode::NONE
                    }
                    Err(code) => code,
                },
            };
            out.push((id, code));
        }
        out
    }

    async fn delete_offsets(
        &self,
        shard: &Rc<Shard>,
        group_id: String,
        topics: Vec<(String, Vec<i32>)>,
    ) -> OffsetDeleteResponse {
        use sluice_wire::kafka::messages::offset_delete_response::{
            OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
        };
        let subscribed: Option<Vec<String>> = {
            let groups = self.groups.borrow();
            match groups.get(&group_id) {
                None => {
                    return OffsetDeleteResponse::default()
                        .with_error_code(ErrorCode::GROUP_ID_NOT_FOUND.0)
                }
                Some(g) if g.state == GroupState::Empty => None,
                Some(g) => Some(
                    g.members
                        .values()
                        .flat_map(|m| {
                            subscribed_topics(&m.metadata_for(g.protocol.as_deref().unwrap_or("")))
                        })
                        .collect(),
                ),
            }
        };
        let mut records = Vec::new();
        let mut removed = Vec::new();
        let mut result = Vec::new();
        for (topic, parts) in topics {
            let busy = subscribed.as_ref().is_some_and(|s| s.contains(&topic));
            let mut out = Vec::new();
            for p in parts {
                let code = if busy {
                    ErrorCode::GROUP_SUBSCRIBED_TO_TOPIC
                } else {
                    records.push(tombstone(store::offset_key(&group_id, &topic, p)));
                    removed.push((topic.clone(), p));
                    ErrorCode::NONE
                };
                out.push(
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p)
                        .with_error_code(code.0),
                );
            }
            result.push(
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(sb(&topic)))
                    .with_partitions(out),
            );
        }
        if let Err(code) = self.persist(shard, &group_id, records).await {
            return OffsetDeleteResponse::default().with_error_code(code.0);
        }
        if let Some(g) = self.groups.borrow_mut().get_mut(&group_id) {
            for key in removed {
                g.offsets.remove(&key);
            }
        }
        OffsetDeleteResponse::default().with_topics(result)
    }

    /// Runs the groups' timers: expired sessions leave, overdue rebalances
    /// complete, and offsets of groups empty for longer than the retention
    /// are removed. Groups whose membership changed are saved.
    pub async fn tick(&self, shard: &Rc<Shard>, now: Instant) {
        let mut changed = Vec::new();
        let mut expired_offsets: Vec<(String, Vec<(String, i32)>)> = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            let retention_ms = self.config.offsets_retention.as_millis() as i64;
            let wall = now_ms();
            for g in groups.values_mut() {
                let expired: Vec<String> = g
                    .members
                    .values()
                    .filter(|m| {
                        m.join_waiter.is_none()
                            && now.duration_since(m.last_heartbeat) > m.session_timeout
                    })
                    .map(|m| m.id.clone())
                    .collect();
                for id in &expired {
                    tracing::info!(group = %g.id, member = %id, "member session expired");
                    g.remove_member(id);
                }
                if !expired.is_empty() {
                    g.after_departure(now, self.config.initial_rebalance_delay);
                    changed.push(g.id.clone());
                } else if g.maybe_complete_join(now) {
                    changed.push(g.id.clone());
                }
                if g.state == GroupState::Empty
                    && g.empty_since_ms.is_some_and(|t| wall - t > retention_ms)
                {
                    let old: Vec<(String, i32)> = g
                        .offsets
                        .iter()
                        .filter(|(_, o)| wall - o.commit_time_ms > retention_ms)
                        .map(|(k, _)| k.clone())
                        .collect();
                    if !old.is_empty() {
                        expired_offsets.push((g.id.clone(), old));
                    }
                }
            }
        }
        for id in changed {
            self.persist_group(shard, &id).await;
        }
        for (id, keys) in expired_offsets {
            let records = keys
                .iter()
                .map(|(t, p)| tombstone(store::offset_key(&id, t, *p)))
                .collect();
            if self.persist(shard, &id, records).await.is_ok() {
                if let Some(g) = self.groups.borrow_mut().get_mut(&id) {
                    for k in &keys {
                        g.offsets.remove(k);
                    }
                }
                tracing::info!(group = %id, offsets = keys.len(), "expired committed offsets");
            }
        }
    }
}

/// A record deleting `key` from the offsets topic.
fn tombstone(key: Bytes) -> Record {
    Record {
        key: Some(key),
        value: None,
        headers: Vec::new(),
        timestamp: now_ms(),
    }
}

/// The topics in a consumer-protocol subscription (version, topic array, ...).
fn subscribed_topics(metadata: &Bytes) -> Vec<String> {
    let b = &metadata[..];
    let mut out = Vec::new();
    if b.len() < 6 {
        return out;
    }
    let count = i32::from_be_bytes([b[2], b[3], b[4], b[5]]);
    let mut pos = 6usize;
    for _ in 0..count.clamp(0, 100_000) {
        let Some(len) = b
            .get(pos..pos + 2)
            .map(|x| i16::from_be_bytes([x[0], x[1]]))
        else {
            break;
        };
        pos += 2;
        let Some(name) = b.get(pos..pos + len.max(0) as usize) else {
            break;
        };
        out.push(String::from_utf8_lossy(name).into_owned());
        pos += len.max(0) as usize;
    }
    out
}
