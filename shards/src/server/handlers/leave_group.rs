//! LeaveGroup: members leave at once instead of waiting for their session to expire.

use std::rc::Rc;

use sluice_wire::kafka::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: LeaveGroupRequest,
) -> Option<LeaveGroupResponse> {
    let group = request.group_id.0.to_string();
    Some(
        match call_group(
            shard,
            &group,
            GroupCall::Leave {
                request,
                version: ctx.version,
            },
            SHARD_CALL_TIMEOUT,
        )
        .await
        {
            Ok(GroupAnswer::Leave(response)) => response,
            Ok(other) => panic!("leave answered with {other:?}"),
            Err(code) => LeaveGroupResponse::default().with_error_code(code.0),
        },
    )
}
