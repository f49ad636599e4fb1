//! What the bench learns from the cluster before it runs: brokers, topic
//! leaders and log end offsets; and the topics it creates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sluice_wire::kafka::messages::{
    create_topics_request::CreatableTopic, list_offsets_request::ListOffsetsPartition,
    list_offsets_request::ListOffsetsTopic, metadata_request::MetadataRequestTopic, ApiKey,
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, TopicName,
};
use sluice_wire::kafka::protocol::StrBytes;
use sluice_wire::ErrorCode;

use crate::client::Conn;

pub const METADATA_VERSION: i16 = 8;
const CREATE_TOPICS_VERSION: i16 = 4;
const LIST_OFFSETS_VERSION: i16 = 5;
/// How long topic creation may take to show leaders for every partition.
const LEADERS_TIMEOUT: Duration = Duration::from_secs(60);
const LEADERS_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One partition of a benchmark topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

/// Where each partition's leader is.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Broker addresses by node id.
    pub brokers: BTreeMap<i32, String>,
    /// Leader node of every partition, in topic then partition order.
    pub leaders: BTreeMap<TopicPartition, i32>,
}

impl Layout {
    pub fn addr_of(&self, tp: &TopicPartition) -> anyhow::Result<&str> {
        let node = self
            .leaders
            .get(tp)
            .with_context(|| format!("no leader known for {}-{}", tp.topic, tp.partition))?;
        self.brokers.get(node).map(String::as_str).with_context(|| {
            format!(
                "leader node {node} of {}-{} not in metadata",
                tp.topic, tp.partition
            )
        })
    }
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Connects to the first bootstrap broker that answers.
pub async fn bootstrap(brokers: &[String]) -> anyhow::Result<Conn> {
    let mut last = None;
    for addr in brokers {
        match Conn::connect(addr).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no bootstrap broker")))
}

async fn metadata(conn: &mut Conn, topics: &[String]) -> anyhow::Result<MetadataResponse> {
    let request = MetadataRequest::default()
        .with_topics(Some(
            topics
                .iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(false);
    conn.call(ApiKey::Metadata, METADATA_VERSION, &request)
        .await
}

/// Creates the topics that do not exist yet with `partitions` each, then
/// waits until every partition has a leader, and returns the layout.
pub async fn prepare_topics(
    conn: &mut Conn,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<Layout> {
    let request = CreateTopicsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(topic_name(t))
                        .with_num_partitions(partitions)
                        .with_replication_factor(-1)
                })
                .collect(),
        )
        .with_timeout_ms(30_000);
    let answer: CreateTopicsResponse = conn
        .call(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &request)
        .await?;
    for t in &answer.topics {
        let code = ErrorCode(t.error_code);
        if !code.is_none() && code != ErrorCode::TOPIC_ALREADY_EXISTS {
            bail!(
                "creating topic {}: error {} {}",
                t.name.0,
                t.error_code,
                t.error_message.as_deref().unwrap_or("")
            );
        }
    }
    let deadline = Instant::now() + LEADERS_TIMEOUT;
    loop {
        let meta = metadata(conn, topics).await?;
        match layout_of(&meta, topics) {
            Ok(layout) => return Ok(layout),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context("topics never got a leader for every partition"))
            }
            Err(_) => glommio::timer::sleep(LEADERS_POLL_INTERVAL).await,
        }
    }
}

fn layout_of(meta: &MetadataResponse, topics: &[String]) -> anyhow::Result<Layout> {
    let brokers: BTreeMap<i32, String> = meta
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let mut leaders = BTreeMap::new();
    for t in &meta.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        if !ErrorCode(t.error_code).is_none() {
            bail!("metadata for {name}: error {}", t.error_code);
        }
        for p in &t.partitions {
            if !ErrorCode(p.error_code).is_none() || p.leader_id == BrokerId(-1) {
                bail!("{name}-{} has no leader yet", p.partition_index);
            }
            leaders.insert(
                TopicPartition {
                    topic: name.clone(),
                    partition: p.partition_index,
                },
                p.leader_id.0,
            );
        }
    }
    for t in topics {
        if !leaders.keys().any(|tp| &tp.topic == t) {
            bail!("metadata names no partition of {t}");
        }
    }
    Ok(Layout { brokers, leaders })
}

/// The log end offset of every partition, asked of each partition's leader.
pub async fn end_offsets(layout: &Layout) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    let mut by_node: BTreeMap<i32, Vec<&TopicPartition>> = BTreeMap::new();
    for (tp, node) in &layout.leaders {
        by_node.entry(*node).or_default().push(tp);
    }
    let mut out = BTreeMap::new();
    for (node, tps) in by_node {
        let addr = layout
            .brokers
            .get(&node)
            .with_context(|| format!("node {node} not in metadata"))?;
        let mut conn = Conn::connect(addr).await?;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in tps {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        ListOffsetsTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(
                                ps.iter()
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(*p)
                                            .with_current_leader_epoch(-1)
                                            .with_timestamp(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let answer: ListOffsetsResponse = conn
            .call(ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request)
            .await?;
        for t in answer.topics {
            for p in t.partitions {
                if !ErrorCode(p.error_code).is_none() {
                    bail!(
                        "end offset of {}-{}: error {}",
                        t.name.0,
                        p.partition_index,
                        p.error_code
                    );
                }
                out.insert(
                    TopicPartition {
                        topic: t.name.0.to_string(),
                        partition: p.partition_index,
                    },
                    p.offset,
                );
            }
        }
    }
    Ok(out)
}

/// Looks the cluster up and prepares the topics, on a throwaway executor.
pub fn setup(brokers: &[String], topics: &[String], partitions: i32) -> anyhow::Result<Layout> {
    let brokers = brokers.to_vec();
    let topics = topics.to_vec();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("bench-setup")
        .spawn(move || async move {
            let mut conn = bootstrap(&brokers).await?;
            prepare_topics(&mut conn, &topics, partitions).await
        })
        .map_err(|e| anyhow::anyhow!("starting the setup executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("setup executor: {e}"))?
}
