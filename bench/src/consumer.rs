//! The consumer: a member of the run's consumer group that fetches its
//! assigned partitions and accounts for every message it reads.
//!
//! Membership follows the classic consumer protocol (FindCoordinator,
//! JoinGroup, SyncGroup, Heartbeat, OffsetCommit, LeaveGroup) with protocol
//! type `consumer`; the member the coordinator picks as leader assigns
//! partitions round-robin over members sorted by id. A partition starts at
//! the group's committed offset, or else at the log end offset the run saw
//! before producing began, so every message of the run and nothing older is
//! read. On a rebalance the member commits its positions before rejoining,
//! as a Kafka consumer does; `--verify` then reports any message read twice.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sluice_wire::batch::{BatchHeader, HEADER_BYTES};
use sluice_wire::kafka::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use sluice_wire::kafka::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_wire::kafka::messages::join_group_request::JoinGroupRequestProtocol;
use sluice_wire::kafka::messages::leave_group_request::MemberIdentity;
use sluice_wire::kafka::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use sluice_wire::kafka::messages::offset_fetch_request::OffsetFetchRequestTopic;
use sluice_wire::kafka::messages::sync_group_request::SyncGroupRequestAssignment;
use sluice_wire::kafka::messages::{
    ApiKey, BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FetchRequest,
    FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use sluice_wire::kafka::protocol::{Decodable, Encodable, StrBytes};
use sluice_wire::records::for_each_record;
use sluice_wire::ErrorCode;

use crate::client::Conn;
use crate::cluster::{topic_name, Layout, TopicPartition};
use crate::config::Workload;
use crate::payload::{digest, parse_track, TRACK_HEADER};
use crate::stats::{latency_histogram, record, ConsumerReport, Live, SeqSet};

const FIND_COORDINATOR_VERSION: i16 = 2;
const JOIN_GROUP_VERSION: i16 = 5;
const SYNC_GROUP_VERSION: i16 = 3;
const HEARTBEAT_VERSION: i16 = 3;
const LEAVE_GROUP_VERSION: i16 = 3;
const OFFSET_COMMIT_VERSION: i16 = 7;
const OFFSET_FETCH_VERSION: i16 = 5;
const FETCH_VERSION: i16 = 11;
/// Version of the consumer protocol's subscription and assignment.
const CONSUMER_PROTOCOL_VERSION: i16 = 0;
const PROTOCOL_NAME: &str = "roundrobin";
const SESSION_TIMEOUT_MS: i32 = 30_000;
const REBALANCE_TIMEOUT_MS: i32 = 60_000;
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a fetch waits on the broker for data.
const FETCH_WAIT_MS: i32 = 100;
const FETCH_BYTES_MAX: i32 = 64 << 20;
const FETCH_PARTITION_BYTES_MAX: i32 = 8 << 20;
/// Most decompressed bytes of one batch the consumer reads.
const BATCH_RECORDS_BYTES_MAX: usize = 64 << 20;
/// Most join attempts in a row before the consumer gives up.
const JOIN_ATTEMPTS_MAX: usize = 20;
const RETRY_DELAY: Duration = Duration::from_millis(200);

pub struct ConsumerPlan {
    pub index: usize,
    pub workload: Arc<Workload>,
    pub layout: Arc<Layout>,
    pub start_offsets: Arc<BTreeMap<TopicPartition, i64>>,
    pub live: Arc<Live>,
}

struct Member {
    coordinator: Conn,
    group: GroupId,
    member_id: StrBytes,
    generation: i32,
}

struct Accounts {
    e2e_ns: hdrhistogram::Histogram<u64>,
    seen: SeqSet,
    duplicates: u64,
    digest: u64,
    foreign: u64,
    warmup_ns: u64,
    verify: bool,
}

pub async fn run(plan: ConsumerPlan) -> anyhow::Result<ConsumerReport> {
    let w = plan.workload.clone();
    let live = plan.live.clone();
    let group = GroupId(StrBytes::from_string(w.group.clone()));
    let any_broker = plan
        .layout
        .brokers
        .values()
        .next()
        .context("no broker in metadata")?
        .clone();
    let coordinator_addr = find_coordinator(&any_broker, &w.group).await?;
    let mut member = Member {
        coordinator: Conn::connect(&coordinator_addr).await?,
        group,
        member_id: StrBytes::default(),
        generation: -1,
    };
    let mut accounts = Accounts {
        e2e_ns: latency_histogram(),
        seen: SeqSet::default(),
        duplicates: 0,
        digest: 0,
        foreign: 0,
        warmup_ns: u64::MAX,
        verify: w.verify,
    };
    let mut fetchers: BTreeMap<String, Conn> = BTreeMap::new();
    let mut rebalances = 0u64;
    'generations: loop {
        let assigned = join(&mut member, &w).await?;
        let mut positions = positions_for(&mut member, &assigned, &plan.start_offsets).await?;
        live.consumers_ready.fetch_add(1, Ordering::SeqCst);
        live.partitions_assigned
            .fetch_add(assigned.len(), Ordering::SeqCst);
        let mut heartbeat_at = Instant::now() + HEARTBEAT_INTERVAL;
        loop {
            if live.stop_consumers.load(Ordering::SeqCst) || live.abort.load(Ordering::Relaxed) {
                commit(&mut member, &positions).await?;
                leave(&mut member).await?;
                break 'generations;
            }
            if Instant::now() >= heartbeat_at {
                heartbeat_at = Instant::now() + HEARTBEAT_INTERVAL;
                if !heartbeat(&mut member).await? {
                    live.consumers_ready.fetch_sub(1, Ordering::SeqCst);
                    live.partitions_assigned
                        .fetch_sub(assigned.len(), Ordering::SeqCst);
                    commit(&mut member, &positions).await?;
                    rebalances += 1;
                    continue 'generations;
                }
            }
            if positions.is_empty() {
                glommio::timer::sleep(Duration::from_millis(FETCH_WAIT_MS as u64)).await;
                continue;
            }
            let mut by_leader: BTreeMap<String, Vec<TopicPartition>> = BTreeMap::new();
            for tp in positions.keys() {
                by_leader
                    .entry(plan.layout.addr_of(tp)?.to_string())
                    .or_default()
                    .push(tp.clone());
            }
            for (addr, tps) in by_leader {
                if !fetchers.contains_key(&addr) {
                    fetchers.insert(addr.clone(), Conn::connect(&addr).await?);
                }
                let conn = fetchers.get_mut(&addr).expect("fetcher just made");
                fetch_once(conn, &tps, &mut positions, &mut accounts, &live).await?;
            }
        }
    }
    Ok(ConsumerReport {
        e2e_ns: accounts.e2e_ns,
        seen: accounts.seen,
        duplicates: accounts.duplicates,
        digest: accounts.digest,
        foreign: accounts.foreign,
        rebalances,
    })
}

async fn find_coordinator(bootstrap: &str, group: &str) -> anyhow::Result<String> {
    let mut conn = Conn::connect(bootstrap).await?;
    for _ in 0..JOIN_ATTEMPTS_MAX {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_string()))
            .with_key_type(0);
        let answer: FindCoordinatorResponse = conn
            .call(ApiKey::FindCoordinator, FIND_COORDINATOR_VERSION, &request)
            .await?;
        if answer.error_code == 0 {
            return Ok(format!("{}:{}", answer.host, answer.port));
        }
        glommio::timer::sleep(RETRY_DELAY).await;
    }
    bail!("no coordinator found for group {group}")
}

fn encode_versioned<T: Encodable>(value: &T) -> anyhow::Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_i16(CONSUMER_PROTOCOL_VERSION);
    value
        .encode(&mut out, CONSUMER_PROTOCOL_VERSION)
        .context("encoding consumer protocol data")?;
    Ok(out.freeze())
}

fn decode_versioned<T: Decodable>(mut bytes: Bytes) -> anyhow::Result<T> {
    anyhow::ensure!(bytes.len() >= 2, "consumer protocol data too short");
    let version = bytes.get_i16();
    T::decode(&mut bytes, version.min(3)).context("decoding consumer protocol data")
}

/// Joins (or rejoins) the group and returns this member's partitions.
async fn join(member: &mut Member, w: &Workload) -> anyhow::Result<Vec<TopicPartition>> {
    let subscription = ConsumerProtocolSubscription::default().with_topics(
        w.topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect(),
    );
    let metadata = encode_versioned(&subscription)?;
    for _ in 0..JOIN_ATTEMPTS_MAX {
        let request = JoinGroupRequest::default()
            .with_group_id(member.group.clone())
            .with_session_timeout_ms(SESSION_TIMEOUT_MS)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT_MS)
            .with_member_id(member.member_id.clone())
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(PROTOCOL_NAME))
                .with_metadata(metadata.clone())]);
        let answer: JoinGroupResponse = member
            .coordinator
            .call(ApiKey::JoinGroup, JOIN_GROUP_VERSION, &request)
            .await?;
        let code = ErrorCode(answer.error_code);
        if code == ErrorCode::MEMBER_ID_REQUIRED {
            member.member_id = answer.member_id;
            continue;
        }
        if code == ErrorCode::UNKNOWN_MEMBER_ID {
            member.member_id = StrBytes::default();
            continue;
        }
        if code == ErrorCode::REBALANCE_IN_PROGRESS
            || code == ErrorCode::COORDINATOR_LOAD_IN_PROGRESS
        {
            glommio::timer::sleep(RETRY_DELAY).await;
            continue;
        }
        if !code.is_none() {
            bail!("JoinGroup {}: error code {}", w.group, answer.error_code);
        }
        member.member_id = answer.member_id.clone();
        member.generation = answer.generation_id;
        let assignments = if answer.leader == answer.member_id {
            assign(&answer, w)?
        } else {
            Vec::new()
        };
        let request = SyncGroupRequest::default()
            .with_group_id(member.group.clone())
            .with_generation_id(member.generation)
            .with_member_id(member.member_id.clone())
            .with_assignments(assignments);
        let answer: SyncGroupResponse = member
            .coordinator
            .call(ApiKey::SyncGroup, SYNC_GROUP_VERSION, &request)
            .await?;
        let code = ErrorCode(answer.error_code);
        if code == ErrorCode::REBALANCE_IN_PROGRESS || code == ErrorCode::ILLEGAL_GENERATION {
            continue;
        }
        if !code.is_none() {
            bail!("SyncGroup {}: error code {}", w.group, answer.error_code);
        }
        if answer.assignment.is_empty() {
            return Ok(Vec::new());
        }
        let assignment: ConsumerProtocolAssignment = decode_versioned(answer.assignment)?;
        let mut out = Vec::new();
        for t in assignment.assigned_partitions {
            for p in t.partitions {
                out.push(TopicPartition {
                    topic: t.topic.0.to_string(),
                    partition: p,
                });
            }
        }
        return Ok(out);
    }
    bail!(
        "could not join group {} in {JOIN_ATTEMPTS_MAX} attempts",
        w.group
    )
}

/// The leader's assignment: every partition of the run's topics dealt
/// round-robin to members in member-id order.
fn assign(
    answer: &JoinGroupResponse,
    w: &Workload,
) -> anyhow::Result<Vec<SyncGroupRequestAssignment>> {
    let mut members: Vec<&StrBytes> = answer.members.iter().map(|m| &m.member_id).collect();
    members.sort();
    let mut dealt: Vec<BTreeMap<String, Vec<i32>>> = vec![BTreeMap::new(); members.len()];
    let mut i = 0;
    for t in &w.topics {
        for p in 0..w.partitions {
            dealt[i % members.len()]
                .entry(t.clone())
                .or_default()
                .push(p);
            i += 1;
        }
    }
    members
        .into_iter()
        .zip(dealt)
        .map(|(m, parts)| {
            let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
                parts
                    .into_iter()
                    .map(|(t, ps)| {
                        AssignedTopic::default()
                            .with_topic(topic_name(&t))
                            .with_partitions(ps)
                    })
                    .collect(),
            );
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(m.clone())
                .with_assignment(encode_versioned(&assignment)?))
        })
        .collect()
}

/// Where to start each assigned partition: the committed offset, or the
/// end offset seen before the run began.
async fn positions_for(
    member: &mut Member,
    assigned: &[TopicPartition],
    start: &BTreeMap<TopicPartition, i64>,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let mut out = BTreeMap::new();
    if assigned.is_empty() {
        return Ok(out);
    }
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for tp in assigned {
        topics.entry(&tp.topic).or_default().push(tp.partition);
    }
    let request = OffsetFetchRequest::default()
        .with_group_id(member.group.clone())
        .with_topics(Some(
            topics
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partition_indexes(ps.clone())
                })
                .collect(),
        ));
    let answer: OffsetFetchResponse = member
        .coordinator
        .call(ApiKey::OffsetFetch, OFFSET_FETCH_VERSION, &request)
        .await?;
    if answer.error_code != 0 {
        bail!("OffsetFetch: error code {}", answer.error_code);
    }
    let mut committed = BTreeMap::new();
    for t in answer.topics {
        for p in t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                committed.insert(
                    TopicPartition {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                    },
                    p.committed_offset,
                );
            }
        }
    }
    for tp in assigned {
        let at = match committed.get(tp) {
            Some(o) => *o,
            None => *start
                .get(tp)
                .with_context(|| format!("no start offset for {}-{}", tp.topic, tp.partition))?,
        };
        out.insert(tp.clone(), at);
    }
    Ok(out)
}

/// Sends a heartbeat; false when the group is rebalancing and this member
/// must rejoin.
async fn heartbeat(member: &mut Member) -> anyhow::Result<bool> {
    let request = HeartbeatRequest::default()
        .with_group_id(member.group.clone())
        .with_generation_id(member.generation)
        .with_member_id(member.member_id.clone());
    let answer: HeartbeatResponse = member
        .coordinator
        .call(ApiKey::Heartbeat, HEARTBEAT_VERSION, &request)
        .await?;
    let code = ErrorCode(answer.error_code);
    if code.is_none() {
        return Ok(true);
    }
    if code == ErrorCode::REBALANCE_IN_PROGRESS
        || code == ErrorCode::ILLEGAL_GENERATION
        || code == ErrorCode::UNKNOWN_MEMBER_ID
    {
        if code == ErrorCode::UNKNOWN_MEMBER_ID {
            member.member_id = StrBytes::default();
        }
        return Ok(false);
    }
    bail!("Heartbeat: error code {}", answer.error_code)
}

async fn commit(
    member: &mut Member,
    positions: &BTreeMap<TopicPartition, i64>,
) -> anyhow::Result<()> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for (tp, at) in positions {
        topics.entry(&tp.topic).or_default().push(
            OffsetCommitRequestPartition::default()
                .with_partition_index(tp.partition)
                .with_committed_offset(*at)
                .with_committed_leader_epoch(-1),
        );
    }
    let request = OffsetCommitRequest::default()
        .with_group_id(member.group.clone())
        .with_generation_id_or_member_epoch(member.generation)
        .with_member_id(member.member_id.clone())
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let answer: OffsetCommitResponse = member
        .coordinator
        .call(ApiKey::OffsetCommit, OFFSET_COMMIT_VERSION, &request)
        .await?;
    for t in &answer.topics {
        for p in &t.partitions {
            // A commit refused because the group moved on leaves the next
            // owner to start from the previous commit; `--verify` shows it.
            if p.error_code != 0 {
                tracing::warn!(topic = %t.name.0, partition = p.partition_index, code = p.error_code, "offset commit refused");
            }
        }
    }
    Ok(())
}

async fn leave(member: &mut Member) -> anyhow::Result<()> {
    let request = LeaveGroupRequest::default()
        .with_group_id(member.group.clone())
        .with_members(vec![
            MemberIdentity::default().with_member_id(member.member_id.clone())
        ]);
    let answer: LeaveGroupResponse = member
        .coordinator
        .call(ApiKey::LeaveGroup, LEAVE_GROUP_VERSION, &request)
        .await?;
    if answer.error_code != 0 {
        tracing::warn!(code = answer.error_code, "leaving the group failed");
    }
    Ok(())
}

async fn fetch_once(
    conn: &mut Conn,
    tps: &[TopicPartition],
    positions: &mut BTreeMap<TopicPartition, i64>,
    accounts: &mut Accounts,
    live: &Live,
) -> anyhow::Result<()> {
    let mut topics: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for tp in tps {
        topics.entry(&tp.topic).or_default().push(
            FetchPartition::default()
                .with_partition(tp.partition)
                .with_current_leader_epoch(-1)
                .with_fetch_offset(positions[tp])
                .with_log_start_offset(-1)
                .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX),
        );
    }
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(FETCH_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(topic_name(t))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let answer: FetchResponse = conn.call(ApiKey::Fetch, FETCH_VERSION, &request).await?;
    if answer.error_code != 0 {
        bail!("Fetch: error code {}", answer.error_code);
    }
    let now = live.now_ns();
    if live.go.load(Ordering::SeqCst) {
        accounts.warmup_ns = live.warmup_end_ns.load(Ordering::SeqCst);
    }
    for t in answer.responses {
        for p in t.partitions {
            let tp = TopicPartition {
                topic: t.topic.0.to_string(),
                partition: p.partition_index,
            };
            if p.error_code != 0 {
                bail!(
                    "Fetch {}-{}: error code {}",
                    tp.topic,
                    tp.partition,
                    p.error_code
                );
            }
            let Some(records) = p.records else { continue };
            let Some(position) = positions.get_mut(&tp) else {
                continue;
            };
            read_records(&records, position, accounts, live, now)
                .with_context(|| format!("reading {}-{}", tp.topic, tp.partition))?;
        }
    }
    Ok(())
}

/// Accounts for every record at or past `position` in a fetched record set
/// and moves `position` past the last whole batch. A trailing partial batch,
/// which a broker may send, is left for the next fetch.
fn read_records(
    records: &Bytes,
    position: &mut i64,
    accounts: &mut Accounts,
    live: &Live,
    now: u64,
) -> anyhow::Result<()> {
    let mut at = 0usize;
    let (mut msgs, mut bytes) = (0u64, 0u64);
    while records.len() - at >= HEADER_BYTES {
        let header = BatchHeader::parse(&records[at..])?;
        let len = header.total_len();
        if len > records.len() - at {
            break;
        }
        let batch = &records[at..at + len];
        at += len;
        let next = header.base_offset + header.last_offset_delta as i64 + 1;
        if next <= *position {
            continue;
        }
        if !header.is_control() {
            let from = *position;
            for_each_record(batch, BATCH_RECORDS_BYTES_MAX, |r| {
                if r.offset < from {
                    return;
                }
                let track = r
                    .headers
                    .iter()
                    .find(|(k, _)| *k == TRACK_HEADER.as_bytes())
                    .and_then(|(_, v)| v)
                    .and_then(parse_track);
                let value = r.value.unwrap_or(&[]);
                msgs += 1;
                bytes += (r.key.map_or(0, |k| k.len()) + value.len()) as u64;
                let Some((seq, intended)) = track else {
                    accounts.foreign += 1;
                    return;
                };
                if intended >= accounts.warmup_ns {
                    record(&mut accounts.e2e_ns, now.saturating_sub(intended));
                }
                if accounts.verify {
                    if !accounts.seen.insert(seq) {
                        accounts.duplicates += 1;
                    }
                    accounts.digest = accounts.digest.wrapping_add(digest(seq, r.key, value));
                }
            })?;
        }
        *position = next;
    }
    live.consumed_msgs.fetch_add(msgs, Ordering::Relaxed);
    live.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
    Ok(())
}
