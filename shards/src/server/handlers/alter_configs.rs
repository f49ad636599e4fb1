//! AlterConfigs: replaces a topic's configs with the given set.
//!
//! Broker configs are read from the config file at start and cannot change
//! at run time; a broker resource is refused with INVALID_REQUEST.

use std::rc::Rc;

use sluice_wire::kafka::messages::alter_configs_response::AlterConfigsResourceResponse;
use sluice_wire::kafka::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::{alter_topic_configs, RequestContext, Versions};
use crate::mesh::{AlterMode, ConfigOp, ConfigOpKind, TopicConfigChange};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 2 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: AlterConfigsRequest,
) -> Option<AlterConfigsResponse> {
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let change = TopicConfigChange {
                topic: r.resource_name.to_string(),
                mode: AlterMode::Replace,
                ops: r
                    .configs
                    .iter()
                    .map(|c| ConfigOp {
                        name: c.name.to_string(),
                        kind: ConfigOpKind::Set,
                        value: c.value.as_ref().map(|v| v.to_string()),
                    })
                    .collect(),
            };
            (r.resource_type, r.resource_name, change)
        })
        .collect();
    let answers = alter_topic_configs(shard, resources, request.validate_only).await;
    let responses = answers
        .into_iter()
        .map(|a| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(a.resource_type)
                .with_resource_name(a.resource_name)
                .with_error_code(a.error_code.0)
                .with_error_message(a.error_message)
        })
        .collect();
    Some(AlterConfigsResponse::default().with_responses(responses))
}
