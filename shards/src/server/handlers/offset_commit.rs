//! OffsetCommit: durable in `__consumer_offsets` before it is acknowledged.

use std::rc::Rc;

use sluice_wire::kafka::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use sluice_wire::kafka::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 2, max: 9 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: OffsetCommitRequest,
) -> Option<OffsetCommitResponse> {
    let group = request.group_id.0.to_string();
    let layout: Vec<_> = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions
                    .iter()
                    .map(|p| p.partition_index)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    Some(
        match call_group(
            shard,
            &group,
            GroupCall::Commit { request },
            SHARD_CALL_TIMEOUT,
        )
        .await
        {
            Ok(GroupAnswer::Commit(response)) => response,
            Ok(other) => panic!("commit answered with {other:?}"),
            Err(code) => OffsetCommitResponse::default().with_topics(
                layout
                    .into_iter()
                    .map(|(name, parts)| {
                        OffsetCommitResponseTopic::default()
                            .with_name(name)
                            .with_partitions(
                                parts
                                    .into_iter()
                                    .map(|p| {
                                        OffsetCommitResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_error_code(code.0)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            ),
        },
    )
}
