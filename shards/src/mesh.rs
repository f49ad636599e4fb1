//! Typed messages between the shards of a node, over bounded glommio channels.
//!
//! Every ordered pair of shards has two single-producer channels: one for
//! requests, one for responses. A shard that needs work done on a partition
//! it does not own sends a [`ShardRequest`] and awaits the matching
//! [`ShardResponse`]; the owner executes it on its own executor. No state is
//! shared between shards except immutable metadata snapshots (`Arc`).
//!
//! Deadlock freedom: a shard's response receivers never block (they only hand
//! the response to the waiting task), and its request receivers start each
//! request as its own task, bounded by `SHARD_REQUESTS_IN_FLIGHT_MAX`, so a
//! full request channel always drains.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glommio::channels::local_channel::{self, LocalSender};
use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};
use sluice_wire::ErrorCode;

use crate::error::{Error, Result};
use crate::ids::{ShardId, TopicPartition};
use crate::metadata::{ClusterMeta, TopicMeta};

/// Messages queued on one channel between two shards.
pub const MESH_CHANNEL_CAPACITY: usize = 256;
/// Requests from other shards one shard executes at once.
pub const SHARD_REQUESTS_IN_FLIGHT_MAX: u64 = 1024;

/// Why one partition's (or topic's) part of a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

pub type PartitionResult<T> = std::result::Result<T, Failure>;

#[derive(Debug)]
pub struct ProducePartition {
    pub tp: TopicPartition,
    pub batches: Vec<Bytes>,
    /// Whether the answer waits for `fdatasync` (from acks and the flush policy).
    pub durability: sluice_engine::Durability,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub log_start_offset: i64,
}

#[derive(Debug)]
pub struct FetchPartition {
    pub tp: TopicPartition,
    pub offset: i64,
    pub max_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug)]
pub struct OffsetQuery {
    pub tp: TopicPartition,
    /// A timestamp, or -1 for the latest offset and -2 for the earliest.
    pub timestamp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAnswer {
    pub offset: i64,
    pub timestamp: i64,
    pub leader_epoch: i32,
}

/// A topic to create, as CreateTopics asks for it.
#[derive(Debug, Clone)]
pub struct NewTopic {
    pub name: String,
    /// -1 for the broker default.
    pub num_partitions: i32,
    /// -1 for the broker default.
    pub replication_factor: i16,
    /// Manual assignment: partition index and its replica node ids.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

/// Partitions to add to a topic, as CreatePartitions asks for them.
#[derive(Debug, Clone)]
pub struct NewPartitions {
    pub topic: String,
    pub count: i32,
    pub assignments: Option<Vec<Vec<i32>>>,
}

#[derive(Debug)]
pub enum AdminRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<TopicConfigChange>,
        validate_only: bool,
    },
}

/// How a config change applies to a topic's existing configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterMode {
    /// AlterConfigs: the topic's configs become exactly the ones given.
    Replace,
    /// IncrementalAlterConfigs: each operation changes one config.
    Incremental,
}

/// One operation of IncrementalAlterConfigs (or a value of AlterConfigs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOpKind {
    Set,
    Delete,
    Append,
    Subtract,
}

#[derive(Debug, Clone)]
pub struct ConfigOp {
    pub name: String,
    pub kind: ConfigOpKind,
    pub value: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TopicConfigChange {
    pub topic: String,
    pub mode: AlterMode,
    pub ops: Vec<ConfigOp>,
}

/// DeleteRecords for one partition: records below `offset` go (-1: the
/// high watermark).
#[derive(Debug, Clone)]
pub struct DeleteRecordsPartition {
    pub tp: TopicPartition,
    pub offset: i64,
}

#[derive(Debug)]
pub struct TopicOutcome {
    pub name: String,
    pub result: std::result::Result<TopicMeta, Failure>,
}

/// Work one shard asks another to do.
#[derive(Debug)]
pub enum ShardRequest {
    Produce(Vec<ProducePartition>),
    Fetch(Vec<FetchPartition>),
    /// Answers each partition's new log start offset.
    DeleteRecords(Vec<DeleteRecordsPartition>),
    /// Answer `true` as soon as any partition has data past its offset, or
    /// `false` once `wait` has passed.
    WaitForData {
        partitions: Vec<(TopicPartition, i64)>,
        wait: Duration,
    },
    ListOffsets(Vec<OffsetQuery>),
    /// Install a newer metadata snapshot: open logs of partitions this shard
    /// now owns, remove those of deleted ones.
    ApplyMetadata(Arc<ClusterMeta>),
    /// Topic lifecycle changes; only shard 0 takes these.
    Admin(AdminRequest),
    /// Work for the consumer groups this shard coordinates.
    Group(Box<crate::groups::GroupCall>),
}

#[derive(Debug)]
pub enum ShardResponse {
    Produce(Vec<PartitionResult<Appended>>),
    Fetch(Vec<PartitionResult<Fetched>>),
    DeleteRecords(Vec<PartitionResult<i64>>),
    DataArrived(bool),
    ListOffsets(Vec<PartitionResult<OffsetAnswer>>),
    MetadataApplied(std::result::Result<(), String>),
    Admin(Vec<TopicOutcome>),
    Group(crate::groups::GroupAnswer),
}

#[derive(Debug)]
pub struct RequestEnvelope {
    pub id: u64,
    pub from: ShardId,
    pub body: ShardRequest,
}

#[derive(Debug)]
pub struct ResponseEnvelope {
    pub id: u64,
    pub body: ShardResponse,
}

/// One shard's unconnected channel ends, built before the executors start.
pub struct MeshEnds {
    pub requests_out: Vec<Option<SharedSender<RequestEnvelope>>>,
    pub requests_in: Vec<Option<SharedReceiver<RequestEnvelope>>>,
    pub responses_out: Vec<Option<SharedSender<ResponseEnvelope>>>,
    pub responses_in: Vec<Option<SharedReceiver<ResponseEnvelope>>>,
}

/// Builds the channels of a full mesh of `shard_count` shards; entry `i` of the
/// result belongs to shard `i`.
pub fn build(shard_count: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..shard_count)
        .map(|_| MeshEnds {
            requests_out: (0..shard_count).map(|_| None).collect(),
            requests_in: (0..shard_count).map(|_| None).collect(),
            responses_out: (0..shard_count).map(|_| None).collect(),
            responses_in: (0..shard_count).map(|_| None).collect(),
        })
        .collect();
    for from in 0..shard_count {
        for to in 0..shard_count {
            if from == to {
                continue;
            }
            let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY);
            ends[from].requests_out[to] = Some(tx);
            ends[to].requests_in[from] = Some(rx);
            let (tx, rx) = shared_channel::new_bounded(MESH_CHANNEL_CAPACITY);
            ends[from].responses_out[to] = Some(tx);
            ends[to].responses_in[from] = Some(rx);
        }
    }
    ends
}

/// The connected receiving ends, for the shard's receiver tasks.
pub struct Inbound {
    pub requests: Vec<(ShardId, ConnectedReceiver<RequestEnvelope>)>,
    pub responses: Vec<(ShardId, ConnectedReceiver<ResponseEnvelope>)>,
}

/// A shard's sending side of the mesh and its calls awaiting answers.
pub struct Mesh {
    me: ShardId,
    requests_out: Vec<Option<ConnectedSender<RequestEnvelope>>>,
    responses_out: Vec<Option<ConnectedSender<ResponseEnvelope>>>,
    waiting: RefCell<HashMap<u64, LocalSender<ShardResponse>>>,
    next_id: Cell<u64>,
}

impl Mesh {
    /// Connects every channel end; resolves once all peers have connected theirs.
    ///
    /// A connect waits for the other end, so all of them are awaited together:
    /// connecting one at a time would deadlock two shards each waiting on the
    /// other's first channel.
    pub async fn connect(me: ShardId, ends: MeshEnds) -> (Mesh, Inbound) {
        enum End {
            RequestOut(usize, ConnectedSender<RequestEnvelope>),
            ResponseOut(usize, ConnectedSender<ResponseEnvelope>),
            RequestIn(usize, ConnectedReceiver<RequestEnvelope>),
            ResponseIn(usize, ConnectedReceiver<ResponseEnvelope>),
        }
        let n = ends.requests_out.len();
        let mut futures: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = End>>>> =
            Vec::new();
        for (i, end) in ends.requests_out.into_iter().enumerate() {
            if let Some(s) = end {
                futures.push(Box::pin(
                    async move { End::RequestOut(i, s.connect().await) },
                ));
            }
        }
        for (i, end) in ends.responses_out.into_iter().enumerate() {
            if let Some(s) = end {
                futures.push(Box::pin(
                    async move { End::ResponseOut(i, s.connect().await) },
                ));
            }
        }
        for (i, end) in ends.requests_in.into_iter().enumerate() {
            if let Some(r) = end {
                futures.push(Box::pin(
                    async move { End::RequestIn(i, r.connect().await) },
                ));
            }
        }
        for (i, end) in ends.responses_in.into_iter().enumerate() {
            if let Some(r) = end {
                futures.push(Box::pin(
                    async move { End::ResponseIn(i, r.connect().await) },
                ));
            }
        }
        let mut requests_out: Vec<Option<ConnectedSender<RequestEnvelope>>> =
            (0..n).map(|_| None).collect();
        let mut responses_out: Vec<Option<ConnectedSender<ResponseEnvelope>>> =
            (0..n).map(|_| None).collect();
        let mut requests = Vec::new();
        let mut responses = Vec::new();
        for end in crate::join::join_all(futures).await {
            match end {
                End::RequestOut(i, s) => requests_out[i] = Some(s),
                End::ResponseOut(i, s) => responses_out[i] = Some(s),
                End::RequestIn(i, r) => requests.push((ShardId(i as u16), r)),
                End::ResponseIn(i, r) => responses.push((ShardId(i as u16), r)),
            }
        }
        let mesh = Mesh {
            me,
            requests_out,
            responses_out,
            waiting: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
        };
        (
            mesh,
            Inbound {
                requests,
                responses,
            },
        )
    }

    pub fn me(&self) -> ShardId {
        self.me
    }

    /// Sends `body` to shard `to` and waits up to `timeout` for its answer.
    pub async fn call(
        &self,
        to: ShardId,
        body: ShardRequest,
        timeout: Duration,
    ) -> Result<ShardResponse> {
        assert_ne!(to, self.me, "local work is not sent over the mesh");
        let sender = self.requests_out[to.0 as usize]
            .as_ref()
            .expect("a channel to every other shard");
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = local_channel::new_bounded(1);
        self.waiting.borrow_mut().insert(id, tx);
        if sender
            .send(RequestEnvelope {
                id,
                from: self.me,
                body,
            })
            .await
            .is_err()
        {
            self.waiting.borrow_mut().remove(&id);
            return Err(Error::ShardUnavailable(to.0, "request channel closed"));
        }
        let answer = futures_lite::future::or(async { rx.recv().await.map(Ok) }, async {
            glommio::timer::sleep(timeout).await;
            Some(Err(()))
        })
        .await;
        self.waiting.borrow_mut().remove(&id);
        match answer {
            Some(Ok(response)) => Ok(response),
            Some(Err(())) => Err(Error::Timeout(timeout)),
            None => Err(Error::ShardUnavailable(to.0, "response dropped")),
        }
    }

    /// Hands an answer from another shard to the task waiting for it.
    pub fn deliver(&self, envelope: ResponseEnvelope) {
        if let Some(tx) = self.waiting.borrow_mut().remove(&envelope.id) {
            // The waiter may have timed out and gone; its answer is then dropped.
            let _ = tx.try_send(envelope.body);
        }
    }

    /// Sends the answer to a request that came from shard `to`.
    pub async fn respond(&self, to: ShardId, id: u64, body: ShardResponse) {
        let sender = self.responses_out[to.0 as usize]
            .as_ref()
            .expect("a channel to every other shard");
        if sender.send(ResponseEnvelope { id, body }).await.is_err() {
            tracing::debug!(
                to = to.0,
                "dropping an answer: the asking shard has stopped"
            );
        }
    }
}
