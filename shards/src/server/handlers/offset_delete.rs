//! OffsetDelete: removes committed offsets of topics the group no longer reads.

use std::rc::Rc;

use sluice_wire::kafka::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 0 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: OffsetDeleteRequest,
) -> Option<OffsetDeleteResponse> {
    let group = request.group_id.0.to_string();
    let topics = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    Some(
        match call_group(
            shard,
            &group,
            GroupCall::DeleteOffsets {
                group: group.clone(),
                topics,
            },
            SHARD_CALL_TIMEOUT,
        )
        .await
        {
            Ok(GroupAnswer::OffsetsDeleted(response)) => response,
            Ok(other) => panic!("offset delete answered with {other:?}"),
            Err(code) => OffsetDeleteResponse::default().with_error_code(code.0),
        },
    )
}
