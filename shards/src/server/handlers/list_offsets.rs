//! ListOffsets: earliest (-2), latest (-1) or the first offset at a timestamp.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use sluice_wire::kafka::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use sluice_wire::kafka::messages::{ListOffsetsRequest, ListOffsetsResponse};
use sluice_wire::ErrorCode;

use super::{topic_name, RequestContext, Versions};
use crate::ids::{PartitionId, ShardId, TopicPartition};
use crate::join::join_all;
use crate::mesh::{
    Failure, OffsetAnswer, OffsetQuery, PartitionResult, ShardRequest, ShardResponse,
};
use crate::server::error_codes;
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 1, max: 6 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
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
    let calls: Vec<
        Pin<Box<dyn Future<Output = (Vec<usize>, Vec<PartitionResult<OffsetAnswer>>)> + '_>>,
    > = by_shard
        .into_iter()
        .map(|(owner, queries)| {
            let fut: Pin<Box<dyn Future<Output = _>>> = Box::pin(async move {
                let slots: Vec<usize> = queries.iter().map(|(s, _)| *s).collect();
                let count = slots.len();
                let request =
                    ShardRequest::ListOffsets(queries.into_iter().map(|(_, q)| q).collect());
                let answers = match shard.call(owner, request, SHARD_CALL_TIMEOUT).await {
                    Ok(ShardResponse::ListOffsets(answers)) => answers,
                    Ok(other) => panic!("list offsets answered with {other:?}"),
                    Err(e) => {
                        vec![Err(Failure::new(error_codes::broker(&e), e.to_string())); count]
                    }
                };
                assert_eq!(answers.len(), count, "one answer per partition");
                (slots, answers)
            });
            fut
        })
        .collect();
    for (slots, answers) in join_all(calls).await {
        for (slot, answer) in slots.into_iter().zip(answers) {
            results[slot] = Some(answer);
        }
    }
    let topics = layout
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, slot)| {
                    let r = ListOffsetsPartitionResponse::default().with_partition_index(index);
                    match results[slot].take().expect("every partition answered") {
                        Ok(a) => r
                            .with_offset(a.offset)
                            .with_timestamp(a.timestamp)
                            .with_leader_epoch(a.leader_epoch),
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
