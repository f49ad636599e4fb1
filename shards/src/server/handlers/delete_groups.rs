//! DeleteGroups: removes empty groups and their committed offsets.

use std::rc::Rc;

use sluice_wire::kafka::messages::delete_groups_response::DeletableGroupResult;
use sluice_wire::kafka::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: DeleteGroupsRequest,
) -> Option<DeleteGroupsResponse> {
    let mut results = Vec::new();
    for id in &request.groups_names {
        let group = id.0.to_string();
        let call = GroupCall::Delete {
            groups: vec![group.clone()],
        };
        let code = match call_group(shard, &group, call, SHARD_CALL_TIMEOUT).await {
            Ok(GroupAnswer::Deleted(d)) => d
                .first()
                .map_or(sluice_wire::ErrorCode::UNKNOWN_SERVER_ERROR, |(_, c)| *c),
            Ok(other) => panic!("delete groups answered with {other:?}"),
            Err(code) => code,
        };
        if code.is_none() {
            tracing::info!(group, "deleted group");
        }
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id.clone())
                .with_error_code(code.0),
        );
    }
    Some(DeleteGroupsResponse::default().with_results(results))
}
