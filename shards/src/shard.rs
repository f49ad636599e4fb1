//! One shard: a pinned executor's partitions, metadata snapshot and mesh.
//!
//! All of a shard's state lives in [`Shard`], built at startup and shared
//! between the shard's own tasks as `Rc<Shard>`; `RefCell` borrows are never
//! held across an await. [`Shard::execute`] runs a [`ShardRequest`] on the
//! partitions this shard owns, whether the request came from this shard's own
//! connections or from another shard over the mesh.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::{LeaderEpoch, LogContext, SystemClock, TailCacheBudget};
use sluice_wire::ErrorCode;

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::groups::{Coordinator, OFFSETS_TOPIC};
use crate::ids::{PartitionId, ShardId, TopicPartition};
use crate::join::{join_all, select_first};
use crate::mesh::{
    Appended, DeleteRecordsPartition, Failure, FetchPartition, Fetched, Mesh, OffsetAnswer,
    OffsetQuery, PartitionResult, ProducePartition, ShardRequest, ShardResponse,
};
use crate::metadata::{self, ClusterMeta};
use crate::partition::Partition;
use crate::server::error_codes;
use sluice_engine::Signal;

/// How long one shard waits for another to answer ordinary work.
pub const SHARD_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a topic change may take (it opens or removes logs on every shard).
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Logs a shard opens (and recovers) at once.
const OPEN_CONCURRENCY: usize = 16;

pub struct Shard {
    pub id: ShardId,
    pub shard_count: usize,
    pub config: Rc<BrokerConfig>,
    /// `host` and `port` clients are told to connect to.
    pub advertised: (String, i32),
    meta: RefCell<Arc<ClusterMeta>>,
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
    pub mesh: Mesh,
    /// Notified whenever a partition of this shard gets new committed data.
    pub data_arrived: Signal,
    /// Notified once, when the shard starts shutting down.
    pub stopping: Signal,
    /// Present on shard 0 only: the one writer of cluster metadata.
    pub controller: Option<Controller>,
    /// The consumer groups this shard coordinates.
    pub groups: Coordinator,
    /// The clock and tail cache budget this shard's logs share.
    pub log_context: LogContext,
}

impl Shard {
    pub fn new(
        id: ShardId,
        shard_count: usize,
        config: Rc<BrokerConfig>,
        advertised: (String, i32),
        meta: Arc<ClusterMeta>,
        mesh: Mesh,
        controller: Option<Controller>,
    ) -> Shard {
        let log_context = LogContext {
            clock: Rc::new(SystemClock),
            cache_budget: Rc::new(TailCacheBudget::new(
                config.tail_cache_bytes / shard_count.max(1),
            )),
            io_ring: Rc::default(),
        };
        Shard {
            id,
            shard_count,
            log_context,
            advertised,
            meta: RefCell::new(meta),
            partitions: RefCell::new(HashMap::new()),
            mesh,
            data_arrived: Signal::default(),
            stopping: Signal::default(),
            groups: Coordinator::new(config.group_config()),
            config,
            controller,
        }
    }

    pub fn meta(&self) -> Arc<ClusterMeta> {
        self.meta.borrow().clone()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.generation() > 0
    }

    /// The shard owning a partition, if the topic and partition exist.
    pub fn owner_of(
        &self,
        meta: &ClusterMeta,
        topic: &str,
        partition: PartitionId,
    ) -> Option<ShardId> {
        let t = meta.topic(topic)?;
        let p = t.partitions.get(usize::try_from(partition.0).ok()?)?;
        Some(metadata::owner(p.shard, self.shard_count))
    }

    fn partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    /// Every partition this shard owns.
    pub fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// A partition this shard owns, if it exists.
    pub fn local_partition(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partition(tp)
    }

    /// Runs `request` on shard `to`: directly when that is this shard.
    pub fn call<'a>(
        self: &'a Rc<Self>,
        to: ShardId,
        request: ShardRequest,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<ShardResponse>> + 'a>> {
        Box::pin(async move {
            if to == self.id {
                Ok(self.execute(request).await)
            } else {
                self.mesh.call(to, request, timeout).await
            }
        })
    }

    /// Executes work on this shard's own partitions.
    pub async fn execute(self: &Rc<Self>, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Produce(parts) => ShardResponse::Produce(self.produce(parts).await),
            ShardRequest::Fetch(parts) => ShardResponse::Fetch(self.fetch(parts).await),
            ShardRequest::DeleteRecords(parts) => {
                ShardResponse::DeleteRecords(self.delete_records(parts).await)
            }
            ShardRequest::WaitForData { partitions, wait } => ShardResponse::DataArrived(
                self.wait_for_data(&partitions, Instant::now() + wait).await,
            ),
            ShardRequest::ListOffsets(queries) => {
                ShardResponse::ListOffsets(self.list_offsets(queries).await)
            }
            ShardRequest::ApplyMetadata(meta) => {
                ShardResponse::MetadataApplied(self.apply_metadata(meta).await)
            }
            ShardRequest::Group(call) => {
                ShardResponse::Group(self.groups.handle(self, *call).await)
            }
            ShardRequest::Admin(admin) => match &self.controller {
                Some(controller) => ShardResponse::Admin(controller.handle(self, admin).await),
                None => panic!(
                    "admin request sent to shard {} instead of shard 0",
                    self.id.0
                ),
            },
        }
    }

    fn missing(tp: &TopicPartition) -> Failure {
        Failure::new(
            ErrorCode::NOT_LEADER_OR_FOLLOWER,
            format!("{tp} is not on shard that received it"),
        )
    }

    async fn produce(&self, parts: Vec<ProducePartition>) -> Vec<PartitionResult<Appended>> {
        let futures: Vec<Pin<Box<dyn Future<Output = PartitionResult<Appended>> + '_>>> = parts
            .into_iter()
            .map(|part| {
                let fut: Pin<Box<dyn Future<Output = PartitionResult<Appended>>>> = Box::pin(async move {
                    let partition = self.partition(&part.tp).ok_or_else(|| Self::missing(&part.tp))?;
                    let outcome = partition.log.append(&part.batches, partition.leader_epoch, part.durability).await;
                    match outcome {
                        Ok(o) => {
                            self.data_arrived.notify();
                            Ok(Appended { base_offset: o.base_offset.0, log_start_offset: o.log_start_offset.0 })
                        }
                        Err(e) => {
                            let code = error_codes::engine(&e);
                            if code == ErrorCode::KAFKA_STORAGE_ERROR {
                                tracing::error!(partition = %part.tp, error = %e, "append failed; partition offline");
                            }
                            Err(Failure::new(code, e.to_string()))
                        }
                    }
                });
                fut
            })
            .collect();
        join_all(futures).await
    }

    async fn delete_records(
        &self,
        parts: Vec<DeleteRecordsPartition>,
    ) -> Vec<PartitionResult<i64>> {
        let futures: Vec<Pin<Box<dyn Future<Output = PartitionResult<i64>> + '_>>> = parts
            .into_iter()
            .map(|part| {
                let fut: Pin<Box<dyn Future<Output = PartitionResult<i64>>>> = Box::pin(async move {
                    let partition = self.partition(&part.tp).ok_or_else(|| Self::missing(&part.tp))?;
                    let offset = if part.offset == -1 {
                        partition.log.high_watermark()
                    } else {
                        sluice_engine::Offset(part.offset)
                    };
                    match partition.log.delete_records_before(offset).await {
                        Ok(start) => {
                            tracing::info!(partition = %part.tp, log_start_offset = start.0, "deleted records");
                            Ok(start.0)
                        }
                        Err(e) => Err(Failure::new(error_codes::engine(&e), e.to_string())),
                    }
                });
                fut
            })
            .collect();
        join_all(futures).await
    }

    async fn fetch(&self, parts: Vec<FetchPartition>) -> Vec<PartitionResult<Fetched>> {
        let futures: Vec<Pin<Box<dyn Future<Output = PartitionResult<Fetched>> + '_>>> = parts
            .into_iter()
            .map(|part| {
                let fut: Pin<Box<dyn Future<Output = PartitionResult<Fetched>>>> = Box::pin(async move {
                    let partition = self.partition(&part.tp).ok_or_else(|| Self::missing(&part.tp))?;
                    match partition.log.read(sluice_engine::Offset(part.offset), part.max_bytes).await {
                        Ok(r) => Ok(Fetched {
                            records: r.bytes,
                            high_watermark: r.high_watermark.0,
                            log_start_offset: r.log_start_offset.0,
                        }),
                        Err(e) => {
                            let code = error_codes::engine(&e);
                            if code == ErrorCode::KAFKA_STORAGE_ERROR {
                                tracing::error!(partition = %part.tp, error = %e, "read failed");
                            }
                            Err(Failure::new(code, e.to_string()))
                        }
                    }
                });
                fut
            })
            .collect();
        join_all(futures).await
    }

    /// True once any partition's high watermark passes its offset (or the
    /// partition is gone, so the asker re-reads and sees the error); false at
    /// the deadline.
    async fn wait_for_data(&self, partitions: &[(TopicPartition, i64)], deadline: Instant) -> bool {
        loop {
            let seen = self.data_arrived.generation();
            let ready = partitions
                .iter()
                .any(|(tp, offset)| match self.partition(tp) {
                    Some(p) => p.log.high_watermark().0 > *offset,
                    None => true,
                });
            if ready {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || self.is_stopping() {
                return false;
            }
            let woke = select_first(vec![
                Box::pin(async {
                    self.data_arrived.changed_since(seen).await;
                    true
                }),
                Box::pin(async {
                    glommio::timer::sleep(deadline - now).await;
                    false
                }),
                Box::pin(async {
                    self.stopping.changed_since(0).await;
                    false
                }),
            ])
            .await;
            if woke != Some(true) {
                return false;
            }
        }
    }

    async fn list_offsets(&self, queries: Vec<OffsetQuery>) -> Vec<PartitionResult<OffsetAnswer>> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let Some(partition) = self.partition(&q.tp) else {
                out.push(Err(Self::missing(&q.tp)));
                continue;
            };
            let epoch = partition.leader_epoch.0;
            let log = &partition.log;
            let answer = match q.timestamp {
                -1 => Ok(OffsetAnswer {
                    offset: log.high_watermark().0,
                    timestamp: -1,
                    leader_epoch: epoch,
                }),
                -2 => Ok(OffsetAnswer {
                    offset: log.log_start_offset().0,
                    timestamp: -1,
                    leader_epoch: epoch,
                }),
                ts if ts < 0 => Err(Failure::new(
                    ErrorCode::INVALID_REQUEST,
                    format!("unsupported timestamp {ts}"),
                )),
                ts => match log.offset_for_timestamp(ts).await {
                    Ok(Some(found)) => Ok(OffsetAnswer {
                        offset: found.offset.0,
                        timestamp: found.timestamp,
                        leader_epoch: epoch,
                    }),
                    Ok(None) => Ok(OffsetAnswer {
                        offset: -1,
                        timestamp: -1,
                        leader_epoch: -1,
                    }),
                    Err(e) => Err(Failure::new(error_codes::engine(&e), e.to_string())),
                },
            };
            out.push(answer);
        }
        out
    }

    /// Installs a newer snapshot: opens logs of partitions this shard now
    /// owns and removes the logs of partitions that no longer exist.
    ///
    /// Blocks the reactor while directories are created or removed: it runs
    /// for topic changes only.
    pub async fn apply_metadata(&self, meta: Arc<ClusterMeta>) -> std::result::Result<(), String> {
        if meta.revision < self.meta.borrow().revision {
            return Ok(());
        }
        *self.meta.borrow_mut() = meta.clone();
        let gone: Vec<Rc<Partition>> = {
            let parts = self.partitions.borrow();
            parts
                .values()
                .filter(|p| match meta.topic(&p.tp.topic) {
                    Some(t) => {
                        t.id != p.topic_id || p.tp.partition.0 as usize >= t.partitions.len()
                    }
                    None => true,
                })
                .cloned()
                .collect()
        };
        let mut problems = Vec::new();
        for p in gone {
            self.partitions.borrow_mut().remove(&p.tp);
            if let Err(e) = p.log.close().await {
                problems.push(format!("closing {}: {e}", p.tp));
            }
            if let Err(e) = std::fs::remove_dir_all(p.log.dir()) {
                problems.push(format!("removing {}: {e}", p.log.dir().display()));
            }
            tracing::info!(partition = %p.tp, "removed partition");
        }
        // Partitions this shard should own but has not opened yet; settings
        // of open ones follow the snapshot.
        let mut to_open = Vec::new();
        for topic in meta.topics.values() {
            let config = metadata::log_config(topic, &self.config);
            for (index, pm) in topic.partitions.iter().enumerate() {
                if metadata::owner(pm.shard, self.shard_count) != self.id {
                    continue;
                }
                let tp = TopicPartition {
                    topic: topic.name.clone(),
                    partition: PartitionId(index as i32),
                };
                match self.partition(&tp) {
                    Some(p) => {
                        if p.log.config() != config {
                            p.log.set_config(config);
                        }
                    }
                    None => to_open.push((tp, topic.id, LeaderEpoch(pm.leader_epoch), config)),
                }
            }
        }
        // Logs open a few at a time: recovery reads overlap without holding
        // every segment of every partition open at once.
        let total = to_open.len();
        let mut opened_count = 0usize;
        for chunk in to_open.chunks(OPEN_CONCURRENCY) {
            let opens = chunk
                .iter()
                .map(|(tp, id, epoch, config)| {
                    Box::pin(Partition::open(
                        &self.config.data_dir,
                        tp.clone(),
                        *id,
                        *epoch,
                        *config,
                        self.log_context.clone(),
                    )) as Pin<Box<dyn Future<Output = Result<Partition>> + '_>>
                })
                .collect();
            for opened in join_all(opens).await {
                opened_count += 1;
                match opened {
                    Ok(p) => {
                        let p = Rc::new(p);
                        let tp = p.tp.clone();
                        let report = p.log.open_report();
                        if report.segments_scanned > 0 || report.truncated_bytes > 0 {
                            tracing::info!(
                                partition = %tp,
                                scanned = report.segments_scanned,
                                loaded = report.segments_loaded,
                                truncated_bytes = report.truncated_bytes,
                                clean_shutdown = report.clean_shutdown,
                                "recovered log"
                            );
                        }
                        self.partitions.borrow_mut().insert(tp.clone(), p.clone());
                        if tp.topic == OFFSETS_TOPIC {
                            match self.groups.load(&p).await {
                                Ok(entries) if entries > 0 => {
                                    tracing::info!(partition = %tp, entries, "loaded group state")
                                }
                                Ok(_) => {}
                                Err(e) => problems.push(format!("loading groups from {tp}: {e}")),
                            }
                        }
                    }
                    Err(e) => problems.push(e.to_string()),
                }
            }
            if total > OPEN_CONCURRENCY {
                tracing::info!(
                    shard = self.id.0,
                    opened = opened_count,
                    total,
                    "opening partitions"
                );
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Sends `meta` to every shard (this one included) and waits for all.
    pub async fn broadcast_metadata(self: &Rc<Self>, meta: Arc<ClusterMeta>) -> Result<()> {
        let calls = (0..self.shard_count)
            .map(|s| {
                self.call(
                    ShardId(s as u16),
                    ShardRequest::ApplyMetadata(meta.clone()),
                    ADMIN_CALL_TIMEOUT,
                )
            })
            .collect();
        for answer in join_all(calls).await {
            match answer? {
                ShardResponse::MetadataApplied(Ok(())) => {}
                ShardResponse::MetadataApplied(Err(problem)) => {
                    return Err(Error::Executor(format!("applying metadata: {problem}")));
                }
                other => panic!("ApplyMetadata answered with {other:?}"),
            }
        }
        Ok(())
    }

    /// Closes every log after its queued writes; used at shutdown.
    pub async fn close_partitions(&self) {
        let parts: Vec<Rc<Partition>> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in parts {
            if let Err(e) = p.log.close().await {
                tracing::error!(partition = %p.tp, error = %e, "closing log failed");
            }
        }
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.borrow().len()
    }
}
