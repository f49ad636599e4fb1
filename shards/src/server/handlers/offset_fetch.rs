//! OffsetFetch: committed offsets of one group (up to version 7) or of
//! several (version 8 on), each from its coordinating shard.

use std::rc::Rc;

use sluice_wire::kafka::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use sluice_wire::kafka::messages::{OffsetFetchRequest, OffsetFetchResponse};
use sluice_wire::ErrorCode;

use super::{call_group, str_bytes, topic_name, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall, TopicOffsets};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 1, max: 9 };

async fn fetch_group(
    shard: &Rc<Shard>,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
) -> (ErrorCode, Vec<TopicOffsets>) {
    let call = GroupCall::FetchOffsets {
        group: group.to_string(),
        topics,
    };
    match call_group(shard, group, call, SHARD_CALL_TIMEOUT).await {
        Ok(GroupAnswer::Offsets(code, offsets)) => (code, offsets),
        Ok(other) => panic!("offset fetch answered with {other:?}"),
        Err(code) => (code, Vec::new()),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: OffsetFetchRequest,
) -> Option<OffsetFetchResponse> {
    if ctx.version >= 8 {
        let mut groups = Vec::new();
        for g in &request.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect()
            });
            let (code, offsets) = fetch_group(shard, g.group_id.0.as_str(), topics).await;
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id.clone())
                    .with_error_code(code.0)
                    .with_topics(
                        offsets
                            .into_iter()
                            .map(|(name, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(&name))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, offset, epoch, metadata, code)| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(
                                                        metadata.as_deref().map(str_bytes),
                                                    )
                                                    .with_error_code(code.0)
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
            );
        }
        return Some(OffsetFetchResponse::default().with_groups(groups));
    }
    let topics = request.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let (code, offsets) = fetch_group(shard, request.group_id.0.as_str(), topics).await;
    let topics = offsets
        .into_iter()
        .map(|(name, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, offset, epoch, metadata, code)| {
                            let r = OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_metadata(metadata.as_deref().map(str_bytes))
                                .with_error_code(code.0);
                            // The leader epoch is part of the response from version 5 on.
                            if ctx.version >= 5 {
                                r.with_committed_leader_epoch(epoch)
                            } else {
                                r
                            }
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    // The top-level error code exists from version 2 on.
    Some(if ctx.version >= 2 {
        response.with_error_code(code.0)
    } else {
        response
    })
}
