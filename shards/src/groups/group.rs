//! One consumer group's membership and committed offsets (the classic group
//! protocol: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::local_channel::LocalSender;
use sluice_wire::ErrorCode;

use super::store::{StoredGroup, StoredMember, StoredOffset};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in ListGroups and DescribeGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

/// What a member waiting in JoinGroup is eventually told.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub error: ErrorCode,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// (member id, instance id, metadata) for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a member waiting in SyncGroup is eventually told.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub error: ErrorCode,
    pub assignment: Bytes,
}

pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// Protocols in the member's order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub last_heartbeat: Instant,
    pub join_waiter: Option<LocalSender<JoinOutcome>>,
    pub sync_waiter: Option<LocalSender<SyncOutcome>>,
}

impl Member {
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    fn answer_join(&mut self, outcome: JoinOutcome) {
        if let Some(tx) = self.join_waiter.take() {
            // The waiting request may have timed out and gone; then nobody listens.
            let _ = tx.try_send(outcome);
        }
    }

    fn answer_sync(&mut self, outcome: SyncOutcome) {
        if let Some(tx) = self.sync_waiter.take() {
            // As above: a gone waiter simply misses the answer.
            let _ = tx.try_send(outcome);
        }
    }
}

pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub generation: i32,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Static members: instance id to member id.
    pub instances: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, awaiting their rejoin.
    pub pending_ids: HashSet<String>,
    /// When a rebalance in progress completes even if some members did not rejoin.
    pub rebalance_deadline: Option<Instant>,
    /// While set, a rebalance of a formerly empty group waits for more members.
    pub initial_join_until: Option<Instant>,
    pub offsets: BTreeMap<(String, i32), StoredOffset>,
    /// When the group last became empty, for offset retention.
    pub empty_since_ms: Option<i64>,
}

impl Group {
    pub fn new(id: &str) -> Group {
        Group {
            id: id.to_string(),
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            instances: HashMap::new(),
            pending_ids: HashSet::new(),
            rebalance_deadline: None,
            initial_join_until: None,
            offsets: BTreeMap::new(),
            empty_since_ms: Some(now_ms()),
        }
    }

    /// Whether a member offering `protocols` of `protocol_type` fits the group.
    pub fn accepts(
        &self,
        protocol_type: &str,
        protocols: &[(String, Bytes)],
        ignoring: Option<&str>,
    ) -> bool {
        if protocols.is_empty() {
            return false;
        }
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| Some(m.id.as_str()) != ignoring)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self
            .protocol_type
            .as_deref()
            .is_some_and(|t| t != protocol_type)
        {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        // Ties go to the first member's preference order.
        candidates
            .iter()
            .max_by_key(|c| {
                (
                    votes.get(*c).copied().unwrap_or(0),
                    std::cmp::Reverse(candidates.iter().position(|x| x == *c)),
                )
            })
            .map(|c| (*c).clone())
    }

    /// Starts a rebalance: members must rejoin before `deadline`.
    pub fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        let was_empty = self.state == GroupState::Empty;
        for m in self.members.values_mut() {
            m.answer_sync(SyncOutcome {
                error: ErrorCode::REBALANCE_IN_PROGRESS,
                assignment: Bytes::new(),
            });
        }
        let rebalance_timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + rebalance_timeout);
        if was_empty {
            self.initial_join_until = Some(now + initial_delay.min(rebalance_timeout));
        }
    }

    /// Completes the join phase if every member has rejoined (or the deadline
    /// passed, dropping those that did not). Returns true if the group changed.
    pub fn maybe_complete_join(&mut self, now: Instant) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        let all_joined = self.members.values().all(|m| m.join_waiter.is_some());
        let initial_wait = self.initial_join_until.is_some_and(|d| now < d);
        if !(deadline_passed || (all_joined && !initial_wait)) {
            return false;
        }
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.initial_join_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return true;
        }
        self.protocol = self.select_protocol();
        self.protocol_type = self
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self
            .leader
            .clone()
            .expect("a group with members has a leader");
        let protocol = self.protocol.clone().unwrap_or_default();
        let roster: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| {
                (
                    m.id.clone(),
                    m.instance_id.clone(),
                    m.metadata_for(&protocol),
                )
            })
            .collect();
        let (generation, protocol_type, protocol_name) = (
            self.generation,
            self.protocol_type.clone(),
            self.protocol.clone(),
        );
        for m in self.members.values_mut() {
            m.last_heartbeat = now;
            m.assignment = Bytes::new();
            let members = if m.id == leader {
                roster.clone()
            } else {
                Vec::new()
            };
            m.answer_join(JoinOutcome {
                error: ErrorCode::NONE,
                generation,
                protocol_type: protocol_type.clone(),
                protocol: protocol_name.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                members,
            });
        }
        true
    }

    pub fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.leader = None;
        self.protocol = None;
        self.rebalance_deadline = None;
        self.initial_join_until = None;
        self.empty_since_ms = Some(now_ms());
    }

    pub fn remove_member(&mut self, id: &str) -> Option<Member> {
        let mut m = self.members.remove(id)?;
        if let Some(instance) = &m.instance_id {
            if self.instances.get(instance).is_some_and(|x| x == id) {
                self.instances.remove(instance);
            }
        }
        m.answer_join(JoinOutcome::error(ErrorCode::UNKNOWN_MEMBER_ID, id));
        m.answer_sync(SyncOutcome {
            error: ErrorCode::UNKNOWN_MEMBER_ID,
            assignment: Bytes::new(),
        });
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        Some(m)
    }

    /// After members left or expired: rebalance the rest, or become empty.
    pub fn after_departure(&mut self, now: Instant, initial_delay: Duration) {
        match self.state {
            _ if self.members.is_empty() => {
                if self.state != GroupState::Empty {
                    self.generation += 1;
                }
                self.become_empty();
            }
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now, initial_delay)
            }
            GroupState::PreparingRebalance => {
                self.maybe_complete_join(now);
            }
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Completes the sync phase with the leader's assignments.
    pub fn complete_sync(&mut self, assignments: &HashMap<String, Bytes>) {
        for m in self.members.values_mut() {
            m.assignment = assignments.get(&m.id).cloned().unwrap_or_default();
        }
        self.state = GroupState::Stable;
        for m in self.members.values_mut() {
            let assignment = m.assignment.clone();
            m.answer_sync(SyncOutcome {
                error: ErrorCode::NONE,
                assignment,
            });
        }
    }

    /// The join result for a member of a group whose membership is settled.
    pub fn current_join(&self, member_id: &str) -> JoinOutcome {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| {
                    (
                        m.id.clone(),
                        m.instance_id.clone(),
                        m.metadata_for(&protocol),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: ErrorCode::NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol: self.protocol.clone(),
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    pub fn to_stored(&self) -> StoredGroup {
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            time_ms: now_ms(),
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: self
                        .protocol
                        .as_ref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// Restores membership saved by [`Group::to_stored`]; members get a full
    /// session from `now` to come back.
    pub fn restore(&mut self, stored: StoredGroup, now: Instant) {
        self.protocol_type = Some(stored.protocol_type.clone()).filter(|t| !t.is_empty());
        self.generation = stored.generation;
        self.protocol = stored.protocol.clone();
        self.leader = stored.leader.clone();
        self.members.clear();
        self.instances.clear();
        for m in stored.members {
            if let Some(i) = &m.instance_id {
                self.instances.insert(i.clone(), m.member_id.clone());
            }
            let protocols = match &stored.protocol {
                Some(p) => vec![(p.clone(), m.subscription.clone())],
                None => Vec::new(),
            };
            self.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(m.rebalance_timeout_ms.max(0) as u64),
                    protocol_type: stored.protocol_type.clone(),
                    protocols,
                    assignment: m.assignment,
                    last_heartbeat: now,
                    join_waiter: None,
                    sync_waiter: None,
                },
            );
        }
        if self.members.is_empty() {
            self.become_empty();
            self.empty_since_ms = Some(stored.time_ms);
        } else {
            self.state = GroupState::Stable;
            self.empty_since_ms = None;
        }
    }
}

impl JoinOutcome {
    pub fn error(error: ErrorCode, member_id: &str) -> JoinOutcome {
        JoinOutcome {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// Wall-clock milliseconds, for commit times and offset retention.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
