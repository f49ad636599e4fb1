//! Produce: split each partition's record set into batches, send each
//! partition's batches to the shard that owns it, answer once all are written.
//!
//! Batches are checked for framing here and for CRC by the engine, right
//! before they are written; a partition with a bad batch is rejected whole.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_wire::kafka::messages::produce_response::{
    PartitionProduceResponse, TopicProduceResponse,
};
use sluice_wire::kafka::messages::{ProduceRequest, ProduceResponse};
use sluice_wire::ErrorCode;

use super::{auto_create, scatter, str_bytes, topic_name, RequestContext, Versions};
use crate::ids::{PartitionId, ShardId, TopicPartition};
use crate::mesh::{
    Appended, Failure, PartitionResult, ProducePartition, ShardRequest, ShardResponse,
};
use crate::metadata::{self, topic_name_problem};
use crate::server::error_codes;
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 3, max: 9 };

type Slots = Vec<Option<PartitionResult<Appended>>>;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: ProduceRequest,
) -> Option<ProduceResponse> {
    let acks = request.acks;
    let acks_valid = matches!(acks, -1..=1);
    let names: Vec<String> = request
        .topic_data
        .iter()
        .map(|t| t.name.0.to_string())
        .collect();
    let meta = if acks_valid && names.iter().any(|n| shard.meta().topic(n).is_none()) {
        auto_create(shard, names.clone()).await
    } else {
        shard.meta()
    };
    let mut results: Slots = Vec::new();
    let mut layout: Vec<(String, Vec<(i32, usize)>)> = Vec::new();
    let mut by_shard: BTreeMap<ShardId, Vec<(usize, ProducePartition)>> = BTreeMap::new();
    for (topic, name) in request.topic_data.into_iter().zip(names) {
        let mut parts = Vec::new();
        for p in topic.partition_data {
            let slot = results.len();
            parts.push((p.index, slot));
            let tp = TopicPartition {
                topic: name.clone(),
                partition: PartitionId(p.index),
            };
            let routed = route(shard, &meta, &tp, acks_valid).and_then(|owner| {
                let records = p.records.unwrap_or_default();
                if records.is_empty() {
                    return Err(Failure::new(ErrorCode::INVALID_RECORD, "no record batches"));
                }
                let batches = sluice_wire::batch::split(&records)
                    .map_err(|e| Failure::new(error_codes::decode(&e), e.to_string()))?;
                Ok((owner, batches.into_iter().map(|(_, b)| b).collect()))
            });
            match routed {
                Ok((owner, batches)) => {
                    let topic = meta.topic(&tp.topic).expect("routed partitions exist");
                    let durability = metadata::durability(topic, &shard.config, acks);
                    by_shard.entry(owner).or_default().push((
                        slot,
                        ProducePartition {
                            tp,
                            batches,
                            durability,
                        },
                    ));
                    results.push(None);
                }
                Err(f) => results.push(Some(Err(f))),
            }
        }
        layout.push((name, parts));
    }
    scatter(
        shard,
        by_shard,
        &mut results,
        ShardRequest::Produce,
        |r| match r {
            ShardResponse::Produce(a) => Some(a),
            _ => None,
        },
    )
    .await;
    if acks == 0 {
        return None;
    }
    let responses = layout
        .into_iter()
        .map(|(name, parts)| {
            let partition_responses = parts
                .into_iter()
                .map(|(index, slot)| {
                    let r = PartitionProduceResponse::default()
                        .with_index(index)
                        .with_log_append_time_ms(-1);
                    match results[slot].take().expect("every partition answered") {
                        Ok(a) => r
                            .with_base_offset(a.base_offset)
                            .with_log_start_offset(a.log_start_offset),
                        Err(f) => r
                            .with_error_code(f.code.0)
                            .with_base_offset(-1)
                            .with_log_start_offset(-1)
                            .with_error_message(Some(str_bytes(&f.message))),
                    }
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(topic_name(&name))
                .with_partition_responses(partition_responses)
        })
        .collect();
    Some(ProduceResponse::default().with_responses(responses))
}

fn route(
    shard: &Shard,
    meta: &crate::metadata::ClusterMeta,
    tp: &TopicPartition,
    acks_valid: bool,
) -> Result<ShardId, Failure> {
    if !acks_valid {
        return Err(Failure::new(
            ErrorCode::INVALID_REQUIRED_ACKS,
            "acks must be -1, 0 or 1",
        ));
    }
    if let Some(problem) = topic_name_problem(&tp.topic) {
        return Err(Failure::new(ErrorCode::INVALID_TOPIC_EXCEPTION, problem));
    }
    shard
        .owner_of(meta, &tp.topic, tp.partition)
        .ok_or_else(|| {
            Failure::new(
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                format!("{tp} does not exist"),
            )
        })
}
