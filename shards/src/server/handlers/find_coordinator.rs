//! FindCoordinator: this node coordinates every group (key type 0).
//! Transaction coordinators (key type 1) are not served yet.

use std::rc::Rc;

use sluice_wire::kafka::messages::find_coordinator_response::Coordinator;
use sluice_wire::kafka::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use sluice_wire::ErrorCode;

use super::{coordinator_of, str_bytes, RequestContext, Versions};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 4 };

const KEY_TYPE_GROUP: i8 = 0;

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> Option<FindCoordinatorResponse> {
    let node = BrokerId(shard.config.node_id.0);
    let (host, port) = &shard.advertised;
    let find = |key: &str| -> ErrorCode {
        if request.key_type != KEY_TYPE_GROUP {
            return ErrorCode::COORDINATOR_NOT_AVAILABLE;
        }
        match coordinator_of(shard, key) {
            Ok(_) => ErrorCode::NONE,
            Err(code) => code,
        }
    };
    if ctx.version >= 4 {
        let coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let code = find(key.as_str());
                let c = Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(code.0);
                if code.is_none() {
                    c.with_node_id(node)
                        .with_host(str_bytes(host))
                        .with_port(*port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return Some(FindCoordinatorResponse::default().with_coordinators(coordinators));
    }
    let code = find(request.key.as_str());
    let response = FindCoordinatorResponse::default().with_error_code(code.0);
    Some(if code.is_none() {
        response
            .with_node_id(node)
            .with_host(str_bytes(host))
            .with_port(*port)
    } else {
        response.with_node_id(BrokerId(-1)).with_port(-1)
    })
}
