//! ListOffsets: earliest (-2), latest (-1) or the first offset at a timestamp.

use std::collections::BTreeMap;
use std::rc::Rc;

use sluice_wire::kafka::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_wire::kafka::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_wire::ErrorCode;

use super::{scatter, topic_name, RequestContext, Versions};
use crate::ids::{PartitionId, ShardId, TopicPartition};
use crate::mesh::{
    Failure, OffsetAnswer, OffsetQuery, PartitionResult, ShardRequest, ShardResponse,
};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 1, max: 6 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: ListOffsetsRequest,
) -> Option<ListOffsetsResponse> {
    let meta = shard.meta();
    let mut results: Vec<Option<PartitionResult<OffsetAnswer>>> = Vec::new();
    let mut layout: Vec<(String, Vec<(i32, usize)>)> = Vec::new();
    let mut by_shard: BTreeMap<ShardId, Vec<(usize, OffsetQuery)>> = BTreeMap::new();
    for topic in &request.topics {
        let name = topic.name.0.to_string();
        let mut parts = Vec::new();
        for p in &topic.partitions {
            let slot = results.len();
            parts.push((p.partition_index, slot));
            let tp = TopicPartition {
                topic: name.clone(),
                partition: PartitionId(p.partition_index),
            };
            match shard.owner_of(&meta, &name, tp.partition) {
                Some(owner) => {
                    by_shard.entry(owner).or_default().push((
                        slot,
                        OffsetQuery {
                            tp,
                            timestamp: p.timestamp,
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
        ShardRequest::ListOffsets,
        |r| match r {
            ShardResponse::ListOffsets(a) => Some(a),
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
                    let r = ListOffsetsPartitionResponse::default().with_partition_index(index);
                    match results[slot].take().expect("every partition answered") {
                        // The leader epoch is part of the response from version 4 on.
                        Ok(a) if ctx.version >= 4 => r
                            .with_offset(a.offset)
                            .with_timestamp(a.timestamp)
                            .with_leader_epoch(a.leader_epoch),
                        Ok(a) => r.with_offset(a.offset).with_timestamp(a.timestamp),
                        Err(f) => r
                            .with_error_code(f.code.0)
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions)
        })
        .collect();
    Some(ListOffsetsResponse::default().with_topics(topics))
}
