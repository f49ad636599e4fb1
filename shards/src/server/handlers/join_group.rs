//! JoinGroup: forwarded to the group's coordinating shard, where the member
//! waits until the rebalance completes.

use std::rc::Rc;
use std::time::Duration;

use sluice_wire::kafka::messages::{JoinGroupRequest, JoinGroupResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 9 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: JoinGroupRequest,
) -> Option<JoinGroupResponse> {
    let group = request.group_id.0.to_string();
    let wait_ms = request
        .rebalance_timeout_ms
        .max(request.session_timeout_ms)
        .max(0) as u64
        + shard.config.group_initial_rebalance_delay_ms;
    let timeout = Duration::from_millis(wait_ms) + SHARD_CALL_TIMEOUT;
    let call = GroupCall::Join {
        request,
        version: ctx.version,
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.clone(),
    };
    Some(match call_group(shard, &group, call, timeout).await {
        Ok(GroupAnswer::Join(response)) => response,
        Ok(other) => panic!("join answered with {other:?}"),
        Err(code) => JoinGroupResponse::default()
            .with_error_code(code.0)
            .with_generation_id(-1),
    })
}
