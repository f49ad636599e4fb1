//! Fetch: read stored batches from each partition's owner, waiting (long poll)
//! until `min_bytes` have arrived or `max_wait_ms` has passed.
//!
//! The wait is event driven: the owners are asked to answer as soon as any of
//! the partitions gets data past what was just seen, so a consumer is woken
//! by the append itself, not by a polling interval. Incremental fetch sessions
//! (KIP-227) are declined by answering session id 0, which clients accept by
//! sending full fetches.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_wire::kafka::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_wire::kafka::messages::{FetchRequest, FetchResponse};
use sluice_wire::ErrorCode;

use super::{scatter, topic_name, RequestContext, Versions};
use crate::ids::{PartitionId, ShardId, TopicPartition};
use crate::join::select_first;
use crate::mesh::{Failure, FetchPartition, Fetched, PartitionResult, ShardRequest, ShardResponse};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 4, max: 12 };

/// The longest a fetch may wait for data, whatever the client asks.
pub const FETCH_WAIT_MAX: Duration = Duration::from_secs(300);
/// Kafka's FETCH_SESSION_ID_NOT_FOUND.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;

struct Wanted {
    tp: TopicPartition,
    offset: i64,
    max_bytes: usize,
    owner: Result<ShardId, Failure>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: FetchRequest,
) -> Option<FetchResponse> {
    if request.session_id != 0 {
        // This broker never hands out sessions, so an incremental fetch names
        // one it does not know; the client then starts over with a full fetch.
        return Some(FetchResponse::default().with_error_code(FETCH_SESSION_ID_NOT_FOUND));
    }
    let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FETCH_WAIT_MAX);
    let deadline = Instant::now() + wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let response_bytes_max = if request.max_bytes <= 0 {
        usize::MAX
    } else {
        request.max_bytes as usize
    };
    let read_committed = request.isolation_level == 1;
    let meta = shard.meta();
    let mut wanted = Vec::new();
    let mut layout: Vec<(String, Vec<usize>)> = Vec::new();
    for topic in &request.topics {
        let name = topic.topic.0.to_string();
        let mut slots = Vec::new();
        for p in &topic.partitions {
            let tp = TopicPartition {
                topic: name.clone(),
                partition: PartitionId(p.partition),
            };
            let owner = shard.owner_of(&meta, &name, tp.partition).ok_or_else(|| {
                Failure::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{tp} does not exist"),
                )
            });
            slots.push(wanted.len());
            wanted.push(Wanted {
                tp,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
                owner,
            });
        }
        layout.push((name, slots));
    }
    // Each pass either answers or waits for new data or the deadline, so the
    // loop ends by the deadline at the latest.
    let results = loop {
        let mut results = read_all(shard, &wanted).await;
        trim_to(&mut results, response_bytes_max);
        let bytes: usize = results
            .iter()
            .map(|r| r.as_ref().map_or(0, |f| f.records.len()))
            .sum();
        let errors = results.iter().any(|r| r.is_err());
        let now = Instant::now();
        if bytes >= min_bytes.max(1) || errors || now >= deadline || shard.is_stopping() {
            break results;
        }
        let seen: Vec<i64> = results
            .iter()
            .zip(&wanted)
            .map(|(r, w)| match r {
                Ok(f) if w.max_bytes > 0 => f.high_watermark,
                _ => i64::MAX,
            })
            .collect();
        wait_for_data(shard, &wanted, &seen, deadline).await;
        if Instant::now() >= deadline {
            let mut results = read_all(shard, &wanted).await;
            trim_to(&mut results, response_bytes_max);
            break results;
        }
    };
    let mut results: Vec<Option<PartitionResult<Fetched>>> =
        results.into_iter().map(Some).collect();
    let responses = layout
        .into_iter()
        .map(|(name, slots)| {
            let partitions = slots
                .into_iter()
                .map(|slot| {
                    let index = wanted[slot].tp.partition.0;
                    let d = PartitionData::default().with_partition_index(index);
                    match results[slot].take().expect("one result per partition") {
                        Ok(f) => d
                            .with_high_watermark(f.high_watermark)
                            .with_last_stable_offset(f.high_watermark)
                            .with_log_start_offset(f.log_start_offset)
                            .with_aborted_transactions(if read_committed {
                                Some(Vec::new())
                            } else {
                                None
                            })
                            .with_records(Some(f.records)),
                        Err(e) => d
                            .with_error_code(e.code.0)
                            .with_high_watermark(-1)
                            .with_last_stable_offset(-1)
                            .with_log_start_offset(-1)
                            .with_records(Some(Bytes::new())),
                    }
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    Some(FetchResponse::default().with_responses(responses))
}

/// Keeps whole partitions' data while the response stays under `limit`; the
/// first partition with data is always kept, as Kafka does (KIP-74).
fn trim_to(results: &mut [PartitionResult<Fetched>], limit: usize) {
    let mut total = 0usize;
    for f in results.iter_mut().flatten() {
        let len = f.records.len();
        if total > 0 && total + len > limit {
            f.records = Bytes::new();
        } else {
            total += len;
        }
    }
}

async fn read_all(shard: &Rc<Shard>, wanted: &[Wanted]) -> Vec<PartitionResult<Fetched>> {
    let mut results: Vec<Option<PartitionResult<Fetched>>> = Vec::with_capacity(wanted.len());
    let mut by_shard: BTreeMap<ShardId, Vec<(usize, FetchPartition)>> = BTreeMap::new();
    for (slot, w) in wanted.iter().enumerate() {
        match &w.owner {
            Ok(owner) => {
                if w.max_bytes == 0 {
                    // A zero byte budget gets an empty, error-free answer.
                    results.push(Some(Ok(Fetched {
                        records: Bytes::new(),
                        high_watermark: -1,
                        log_start_offset: -1,
                    })));
                    continue;
                }
                by_shard.entry(*owner).or_default().push((
                    slot,
                    FetchPartition {
                        tp: w.tp.clone(),
                        offset: w.offset,
                        max_bytes: w.max_bytes,
                    },
                ));
                results.push(None);
            }
            Err(f) => results.push(Some(Err(f.clone()))),
        }
    }
    scatter(
        shard,
        by_shard,
        &mut results,
        ShardRequest::Fetch,
        |r| match r {
            ShardResponse::Fetch(a) => Some(a),
            _ => None,
        },
    )
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every partition answered"))
        .collect()
}

/// Waits until some owner reports data past `seen`, or the deadline passes.
async fn wait_for_data(shard: &Rc<Shard>, wanted: &[Wanted], seen: &[i64], deadline: Instant) {
    let wait = deadline.saturating_duration_since(Instant::now());
    let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, i64)>> = BTreeMap::new();
    for (w, hw) in wanted.iter().zip(seen) {
        if let (Ok(owner), true) = (w.owner.as_ref(), *hw != i64::MAX) {
            by_shard
                .entry(*owner)
                .or_default()
                .push((w.tp.clone(), *hw));
        }
    }
    let mut waits: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = by_shard
        .into_iter()
        .map(|(owner, partitions)| {
            let fut: Pin<Box<dyn Future<Output = ()>>> = Box::pin(async move {
                let request = ShardRequest::WaitForData { partitions, wait };
                match shard.call(owner, request, wait + SHARD_CALL_TIMEOUT).await {
                    Ok(ShardResponse::DataArrived(true)) => {}
                    // No data from this owner: stay pending so another owner,
                    // or the deadline, ends the wait.
                    Ok(ShardResponse::DataArrived(false)) | Err(_) => {
                        std::future::pending::<()>().await
                    }
                    Ok(other) => panic!("wait answered with {other:?}"),
                }
            });
            fut
        })
        .collect();
    waits.push(Box::pin(glommio::timer::sleep(wait)));
    select_first(waits).await;
}
