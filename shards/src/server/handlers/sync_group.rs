//! SyncGroup: the leader's assignments, handed to every member.

use std::rc::Rc;
use std::time::Duration;

use sluice_wire::kafka::messages::{SyncGroupRequest, SyncGroupResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: SyncGroupRequest,
) -> Option<SyncGroupResponse> {
    let group = request.group_id.0.to_string();
    let timeout =
        Duration::from_millis(shard.config.group_max_session_timeout_ms) + SHARD_CALL_TIMEOUT;
    Some(
        match call_group(
            shard,
            &group,
            GroupCall::Sync {
                request,
                version: ctx.version,
            },
            timeout,
        )
        .await
        {
            Ok(GroupAnswer::Sync(response)) => response,
            Ok(other) => panic!("sync answered with {other:?}"),
            Err(code) => SyncGroupResponse::default().with_error_code(code.0),
        },
    )
}
