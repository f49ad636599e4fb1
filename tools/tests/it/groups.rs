//! Consumer groups with real clients: librdkafka consumers through the
//! `rdkafka` crate and `kcat -G`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::ClientContext;

use crate::harness::{run, Broker};
use crate::records::{produce_all, producer, sample};
use crate::topics::create_topic;

/// Settings that keep group tests short: no initial rebalance delay and
/// sessions as short as 2 s allowed.
const GROUP_BROKER: &str = "group_initial_rebalance_delay_ms = 0\ngroup_min_session_timeout_ms = 2000\noffsets_topic_num_partitions = 8\n";
/// Bound on waiting for a group to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts the assignments a consumer receives.
#[derive(Clone, Default)]
struct Counting(Arc<AtomicUsize>);
impl ClientContext for Counting {}
impl ConsumerContext for Counting {
    fn post_rebalance(&self, _base: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn member(addr: &str, group: &str, topic: &str, extra: &[(&str, &str)]) -> BaseConsumer<Counting> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    let c: BaseConsumer<Counting> = cfg
        .create_with_context(Counting::default())
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

fn assigned(c: &BaseConsumer<Counting>) -> BTreeSet<i32> {
    c.assignment()
        .expect("assignment")
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect()
}

/// Polls every consumer until `done` holds for their assignments.
fn settle(
    consumers: &[&BaseConsumer<Counting>],
    what: &str,
    done: impl Fn(&[BTreeSet<i32>]) -> bool,
) -> Vec<BTreeSet<i32>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        for c in consumers {
            if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
                eprintln!("consumer error while settling: {e}");
            }
        }
        let sets: Vec<BTreeSet<i32>> = consumers.iter().map(|c| assigned(c)).collect();
        if done(&sets) {
            return sets;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: group did not settle; assignments {sets:?}"
        );
    }
}

/// Every partition of 0..n assigned exactly once over non-empty members.
fn covers_exactly(sets: &[BTreeSet<i32>], n: i32) -> bool {
    let total: usize = sets.iter().map(|s| s.len()).sum();
    let union: BTreeSet<i32> = sets.iter().flatten().copied().collect();
    sets.iter().all(|s| !s.is_empty()) && total == n as usize && union == (0..n).collect()
}

#[test]
fn members_share_partitions_and_take_over_from_leavers_and_dead_members() {
    let broker = Broker::start_with_config(GROUP_BROKER);
    create_topic(&broker.addr, "shared", 12);
    let c1 = member(&broker.addr, "sharers", "shared", &[]);
    let c2 = member(&broker.addr, "sharers", "shared", &[]);
    let c3 = member(&broker.addr, "sharers", "shared", &[]);
    let sets = settle(&[&c1, &c2, &c3], "three members", |s| covers_exactly(s, 12));
    assert!(sets.iter().all(|s| s.len() == 4), "{sets:?}");

    // A member that leaves (LeaveGroup on close) hands its partitions over.
    drop(c3);
    settle(&[&c1, &c2], "after a leave", |s| covers_exactly(s, 12));

    // A member that is killed is dropped when its session expires.
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            &broker.addr,
            "-G",
            "sharers",
            "shared",
            "-q",
            "-X",
            "session.timeout.ms=3000",
            "-X",
            "heartbeat.interval.ms=300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat -G");
    settle(&[&c1, &c2], "kcat joined", |s| {
        let total: usize = s.iter().map(|x| x.len()).sum();
        total > 0 && total < 12
    });
    kcat.kill().expect("kill kcat");
    kcat.wait().expect("reap kcat");
    settle(&[&c1, &c2], "after kcat was killed", |s| {
        covers_exactly(s, 12)
    });
}

/// Consumes until `count` records arrived; returns (partition, offset) of each.
fn consume_n(c: &BaseConsumer<Counting>, count: usize) -> Vec<(i32, i64)> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut got = Vec::new();
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count}",
            got.len()
        );
        if let Some(m) = c.poll(Duration::from_millis(100)) {
            let m = m.expect("record");
            got.push((m.partition(), m.offset()));
        }
    }
    got
}

#[test]
fn commits_survive_a_restart_and_consumers_resume_after_them() {
    let mut broker = Broker::start_with_config(GROUP_BROKER);
    create_topic(&broker.addr, "commits", 3);
    let sent = sample(300, 3, 20);
    produce_all(&producer(&broker.addr, &[]), "commits", &sent);

    let first = member(&broker.addr, "resumers", "commits", &[]);
    let mut seen: Vec<(i32, i64)> = consume_n(&first, 150);
    first
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &seen {
        let e = positions.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    // The committed offsets, as the group tool reads them (OffsetFetch).
    let described = run(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args([
            "group",
            "describe",
            "resumers",
            "--bootstrap",
            &broker.addr,
        ]),
        Duration::from_secs(30),
    );
    let committed: BTreeMap<i32, i64> = described
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|row| row[2] != "-")
        .map(|row| (row[1].parse().unwrap(), row[2].parse().unwrap()))
        .collect();
    assert_eq!(committed, positions, "{described}");
    drop(first);

    // Commits were acknowledged only once written: they survive kill -9.
    broker.kill();
    broker.restart();

    // Only what was consumed after the last commit may come again; here that
    // is nothing, since the first consumer committed everything it read.
    let second = member(&broker.addr, "resumers", "commits", &[]);
    seen.extend(consume_n(&second, 150));
    let unique: BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    assert_eq!(
        unique.len(),
        300,
        "every record exactly once over both consumers"
    );
    assert_eq!(seen.len(), 300);
    assert!(
        second.poll(Duration::from_millis(500)).is_none(),
        "nothing beyond the 300 records"
    );

    // Another group reads everything again, independently.
    let other = member(&broker.addr, "others", "commits", &[]);
    let all: BTreeSet<(i32, i64)> = consume_n(&other, 300).into_iter().collect();
    assert_eq!(all, unique);

    // The group tools see both groups and the lag.
    second
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    let list = run(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args([
            "group",
            "list",
            "--bootstrap",
            &broker.addr,
        ]),
        Duration::from_secs(30),
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("resumers ") && l.contains("Stable")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("others ") && l.contains("Stable")),
        "{list}"
    );
    let described = run(
        Command::new(env!("CARGO_BIN_EXE_sluice")).args([
            "group",
            "describe",
            "resumers",
            "--bootstrap",
            &broker.addr,
        ]),
        Duration::from_secs(30),
    );
    let rows: Vec<Vec<&str>> = described
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{described}");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], "commits");
        assert_eq!(row[1], i.to_string());
        assert_eq!((row[2], row[3], row[4]), ("100", "100", "0"), "{described}");
        assert!(row[5].starts_with("rdkafka-"), "member id in {described}");
    }
    assert!(
        described.starts_with("GROUP resumers STATE Stable PROTOCOL range MEMBERS 1"),
        "{described}"
    );
    drop(other);
}

#[test]
fn static_members_rejoin_without_a_rebalance() {
    let broker = Broker::start_with_config(GROUP_BROKER);
    create_topic(&broker.addr, "static", 4);
    let s1 = member(
        &broker.addr,
        "statics",
        "static",
        &[("group.instance.id", "s1")],
    );
    let s2 = member(
        &broker.addr,
        "statics",
        "static",
        &[("group.instance.id", "s2")],
    );
    let sets = settle(&[&s1, &s2], "two static members", |s| covers_exactly(s, 4));
    let s2_assigns = s2.context().0.load(Ordering::SeqCst);
    let s1_had = sets[0].clone();
    // A static member closes without leaving, and comes back within its session.
    drop(s1);
    let s1 = member(
        &broker.addr,
        "statics",
        "static",
        &[("group.instance.id", "s1")],
    );
    let again = settle(&[&s1, &s2], "s1 back", |s| !s[0].is_empty());
    assert_eq!(
        again[0], s1_had,
        "the returning member gets its old partitions"
    );
    assert_eq!(again[1], sets[1]);
    // Give a rebalance, if one had been started, time to reach s2.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        let _ = s2.poll(Duration::from_millis(100));
        let _ = s1.poll(Duration::from_millis(100));
    }
    assert_eq!(
        s2.context().0.load(Ordering::SeqCst),
        s2_assigns,
        "s2 saw no rebalance"
    );
}

/// The group protocol's error codes, with a bare protocol client.
#[test]
fn group_protocol_error_codes() {
    use bytes::Bytes;
    use sluice_wire::kafka::messages::join_group_request::JoinGroupRequestProtocol;
    use sluice_wire::kafka::messages::sync_group_request::SyncGroupRequestAssignment;
    use sluice_wire::kafka::messages::*;
    use sluice_wire::kafka::protocol::StrBytes;
    use sluice_wire::ErrorCode;

    use crate::harness::RawClient;

    let broker = Broker::start_with_config(GROUP_BROKER);
    let mut c = RawClient::connect(&broker.addr);
    let s = |x: &str| StrBytes::from_string(x.to_string());
    let join = |c: &mut RawClient,
                group: &str,
                member: &str,
                session_ms: i32,
                version: i16|
     -> JoinGroupResponse {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(session_ms)
            .with_rebalance_timeout_ms(5_000)
            .with_member_id(s(member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(b"m"))]);
        c.request(ApiKey::JoinGroup, version, &req)
    };
    let heartbeat = |c: &mut RawClient, member: &str, generation: i32| -> i16 {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id(generation)
            .with_member_id(s(member));
        let resp: HeartbeatResponse = c.request(ApiKey::Heartbeat, 4, &req);
        resp.error_code
    };

    let found: FindCoordinatorResponse = c.request(
        ApiKey::FindCoordinator,
        3,
        &FindCoordinatorRequest::default().with_key(s("g")),
    );
    assert_eq!((found.error_code, found.node_id.0), (0, 0));
    assert_eq!(
        join(&mut c, "", "", 10_000, 5).error_code,
        ErrorCode::INVALID_GROUP_ID.0
    );
    assert_eq!(
        join(&mut c, "g", "", 100, 5).error_code,
        ErrorCode::INVALID_SESSION_TIMEOUT.0
    );
    let first = join(&mut c, "g", "", 10_000, 5);
    assert_eq!(first.error_code, ErrorCode::MEMBER_ID_REQUIRED.0);
    let me = first.member_id.to_string();
    assert!(!me.is_empty());
    assert_eq!(
        join(&mut c, "g", "stranger", 10_000, 5).error_code,
        ErrorCode::UNKNOWN_MEMBER_ID.0
    );
    let joined = join(&mut c, "g", &me, 10_000, 5);
    assert_eq!(
        (
            joined.error_code,
            joined.generation_id,
            joined.leader.as_str()
        ),
        (0, 1, me.as_str())
    );
    assert_eq!(joined.members.len(), 1);
    assert_eq!(heartbeat(&mut c, &me, 1), 0);
    assert_eq!(heartbeat(&mut c, &me, 99), ErrorCode::ILLEGAL_GENERATION.0);
    assert_eq!(
        heartbeat(&mut c, "nobody", 1),
        ErrorCode::UNKNOWN_MEMBER_ID.0
    );
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id(1)
        .with_member_id(s(&me))
        .with_assignments(vec![SyncGroupRequestAssignment::default()
            .with_member_id(s(&me))
            .with_assignment(Bytes::from_static(b"mine"))]);
    let synced: SyncGroupResponse = c.request(ApiKey::SyncGroup, 3, &sync);
    assert_eq!(
        (synced.error_code, &synced.assignment[..]),
        (0, &b"mine"[..])
    );

    // A second member's join starts a rebalance; the first learns of it.
    let addr = broker.addr.clone();
    let second = std::thread::spawn(move || {
        let mut c2 = RawClient::connect(&addr);
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(5_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"m2"))]);
        let resp: JoinGroupResponse = c2.request(ApiKey::JoinGroup, 3, &req);
        resp
    });
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while heartbeat(&mut c, &me, 1) != ErrorCode::REBALANCE_IN_PROGRESS.0 {
        assert!(Instant::now() < deadline, "no rebalance signalled");
        std::thread::sleep(Duration::from_millis(20));
    }
    // While the group prepares its rebalance, the member of generation 1
    // still commits, as a Kafka consumer does before it rejoins.
    let early: OffsetCommitResponse = c.request(
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(1)
            .with_member_id(s(&me))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("__consumer_offsets")))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(1),
                    ]),
            ]),
    );
    assert_eq!(early.topics[0].partitions[0].error_code, 0);
    let rejoined = join(&mut c, "g", &me, 10_000, 5);
    assert_eq!((rejoined.error_code, rejoined.generation_id), (0, 2));
    assert_eq!(rejoined.members.len(), 2, "the leader sees both members");
    let other = second.join().unwrap();
    assert_eq!(
        (other.error_code, other.generation_id, other.leader.as_str()),
        (0, 2, me.as_str())
    );

    let commit = OffsetCommitRequest::default()
        .with_group_id(GroupId(s("g")))
        .with_generation_id_or_member_epoch(1)
        .with_member_id(s(&me));
    let committed: OffsetCommitResponse = c.request(
        ApiKey::OffsetCommit,
        8,
        &commit.with_topics(vec![
            offset_commit_request::OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("__consumer_offsets")))
                .with_partitions(vec![
                    offset_commit_request::OffsetCommitRequestPartition::default()
                        .with_committed_offset(1),
                ]),
        ]),
    );
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        ErrorCode::ILLEGAL_GENERATION.0
    );

    let deleted: DeleteGroupsResponse = c.request(
        ApiKey::DeleteGroups,
        2,
        &DeleteGroupsRequest::default()
            .with_groups_names(vec![GroupId(s("g")), GroupId(s("none"))]),
    );
    let codes: Vec<i16> = deleted.results.iter().map(|r| r.error_code).collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::NON_EMPTY_GROUP.0,
            ErrorCode::GROUP_ID_NOT_FOUND.0
        ]
    );
}

/// Offsets of a group that stays empty past `offsets_retention_minutes` go.
#[test]
fn offsets_of_empty_groups_expire() {
    use sluice_wire::kafka::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use sluice_wire::kafka::messages::*;
    use sluice_wire::kafka::protocol::StrBytes;

    use crate::harness::RawClient;

    let s = |x: &str| StrBytes::from_string(x.to_string());
    let fetch = |c: &mut RawClient, group: &str| -> i64 {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_topics(None);
        let resp: OffsetFetchResponse = c.request(ApiKey::OffsetFetch, 7, &req);
        resp.topics
            .first()
            .and_then(|t| t.partitions.first())
            .map_or(-1, |p| p.committed_offset)
    };
    let commit = |c: &mut RawClient, group: &str| {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(s("kept")))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default().with_committed_offset(5)
                ])]);
        let resp: OffsetCommitResponse = c.request(ApiKey::OffsetCommit, 8, &req);
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    };
    // Kept with the default retention of a week...
    let broker = Broker::start_with_config(GROUP_BROKER);
    create_topic(&broker.addr, "kept", 1);
    let mut c = RawClient::connect(&broker.addr);
    commit(&mut c, "standalone");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fetch(&mut c, "standalone"), 5);
    // ...and removed within a few timer ticks when retention is zero.
    let broker =
        Broker::start_with_config(&format!("{GROUP_BROKER}offsets_retention_minutes = 0\n"));
    create_topic(&broker.addr, "kept", 1);
    let mut c = RawClient::connect(&broker.addr);
    commit(&mut c, "standalone");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while fetch(&mut c, "standalone") != -1 {
        assert!(Instant::now() < deadline, "offsets never expired");
        std::thread::sleep(Duration::from_millis(50));
    }
}
