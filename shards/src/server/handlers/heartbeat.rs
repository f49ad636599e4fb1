//! Heartbeat: keeps a member's session alive and tells it of rebalances.

use std::rc::Rc;

use sluice_wire::kafka::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 4 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: HeartbeatRequest,
) -> Option<HeartbeatResponse> {
    let group = request.group_id.0.to_string();
    Some(
        match call_group(
            shard,
            &group,
            GroupCall::Heartbeat { request },
            SHARD_CALL_TIMEOUT,
        )
        .await
        {
            Ok(GroupAnswer::Heartbeat(response)) => response,
            Ok(other) => panic!("heartbeat answered with {other:?}"),
            Err(code) => HeartbeatResponse::default().with_error_code(code.0),
        },
    )
}
