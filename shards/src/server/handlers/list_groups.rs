//! ListGroups: the groups of every shard, filtered by state (version 4 on).

use std::rc::Rc;

use sluice_wire::kafka::messages::{ListGroupsRequest, ListGroupsResponse};

use super::{RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::ids::ShardId;
use crate::join::join_all;
use crate::mesh::{ShardRequest, ShardResponse};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: ListGroupsRequest,
) -> Option<ListGroupsResponse> {
    let calls = (0..shard.shard_count)
        .map(|s| {
            shard.call(
                ShardId(s as u16),
                ShardRequest::Group(Box::new(GroupCall::List)),
                SHARD_CALL_TIMEOUT,
            )
        })
        .collect();
    let mut groups = Vec::new();
    let mut error = 0i16;
    for answer in join_all(calls).await {
        match answer {
            Ok(ShardResponse::Group(GroupAnswer::Listed(mut listed))) => groups.append(&mut listed),
            Ok(other) => panic!("list groups answered with {other:?}"),
            Err(_) => error = sluice_wire::ErrorCode::COORDINATOR_NOT_AVAILABLE.0,
        }
    }
    if ctx.version >= 4 && !request.states_filter.is_empty() {
        groups.retain(|g| {
            request
                .states_filter
                .iter()
                .any(|s| s.as_str().eq_ignore_ascii_case(g.group_state.as_str()))
        });
    }
    if ctx.version >= 5 && !request.types_filter.is_empty() {
        groups.retain(|g| {
            request
                .types_filter
                .iter()
                .any(|t| t.as_str().eq_ignore_ascii_case(g.group_type.as_str()))
        });
    }
    for g in groups.iter_mut() {
        // State and type are part of the response from versions 4 and 5 on.
        if ctx.version < 4 {
            g.group_state = Default::default();
        }
        if ctx.version < 5 {
            g.group_type = Default::default();
        }
    }
    groups.sort_by(|a, b| a.group_id.0.as_str().cmp(b.group_id.0.as_str()));
    Some(
        ListGroupsResponse::default()
            .with_error_code(error)
            .with_groups(groups),
    )
}
