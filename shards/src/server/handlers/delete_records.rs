//! DeleteRecords: moves partitions' log start offsets forward.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_wire::kafka::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use sluice_wire::kafka::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use sluice_wire::ErrorCode;

use super::{scatter, topic_name, RequestContext, Versions};
use crate::ids::{PartitionId, ShardId, TopicPartition};
use crate::mesh::{DeleteRecordsPartition, Failure, PartitionResult, ShardRequest, ShardResponse};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: DeleteRecordsRequest,
) -> Option<DeleteRecordsResponse> {
    let meta = shard.meta();
    let mut results: Vec<Option<PartitionResult<i64>>> = Vec::new();
    let mut layout: Vec<(String, Vec<(i32, usize)>)> = Vec::new();
    let mut by_shard: BTreeMap<ShardId, Vec<(usize, DeleteRecordsPartition)>> = BTreeMap::new();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut parts = Vec::new();
        for p in topic.partitions {
            let slot = results.len();
            parts.push((p.partition_index, slot));
            let tp = TopicPartition {
                topic: name.clone(),
                partition: PartitionId(p.partition_index),
            };
            if p.offset < -1 {
                results.push(Some(Err(Failure::new(
                    ErrorCode::OFFSET_OUT_OF_RANGE,
                    format!("offset {} is negative", p.offset),
                ))));
                continue;
            }
            match shard.owner_of(&meta, &name, tp.partition) {
                Some(owner) => {
                    by_shard.entry(owner).or_default().push((
                        slot,
                        DeleteRecordsPartition {
                            tp,
                            offset: p.offset,
                        },
                    ));
                    results.push(None);
                }
                None => results.push(Some(Err(Failure::new(
                    ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                    format!("{tp} does not exist"),
                )))),
            }
        }
        layout.push((name, parts));
    }
    scatter(
        shard,
        by_shard,
        &mut results,
        ShardRequest::DeleteRecords,
        |r| match r {
            ShardResponse::DeleteRecords(a) => Some(a),
            _ => None,
        },
    )
    .await;
    let topics = layout
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, slot)| {
                    let r = DeleteRecordsPartitionResult::default().with_partition_index(index);
                    match results[slot].take().expect("every partition answered") {
                        Ok(low) => r.with_low_watermark(low),
                        Err(f) => r.with_low_watermark(-1).with_error_code(f.code.0),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    Some(DeleteRecordsResponse::default().with_topics(topics))
}
