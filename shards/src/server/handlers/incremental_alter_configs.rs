//! IncrementalAlterConfigs: sets, deletes, appends to or subtracts from
//! single topic configs.
//!
//! Broker configs are read from the config file at start and cannot change
//! at run time; a broker resource is refused with INVALID_REQUEST.

use std::rc::Rc;

use sluice_wire::kafka::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use sluice_wire::kafka::messages::{
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::{alter_topic_configs, RequestContext, Versions};
use crate::mesh::{AlterMode, ConfigOp, ConfigOpKind, TopicConfigChange};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 1 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> Option<IncrementalAlterConfigsResponse> {
    let mut bad_operation = Vec::new();
    let resources = request
        .resources
        .into_iter()
        .map(|r| {
            let ops = r
                .configs
                .iter()
                .map(|c| {
                    let kind = match c.config_operation {
                        0 => ConfigOpKind::Set,
                        1 => ConfigOpKind::Delete,
                        2 => ConfigOpKind::Append,
                        3 => ConfigOpKind::Subtract,
                        _ => {
                            bad_operation.push(r.resource_name.to_string());
                            ConfigOpKind::Set
                        }
                    };
                    ConfigOp {
                        name: c.name.to_string(),
                        kind,
                        value: c.value.as_ref().map(|v| v.to_string()),
                    }
                })
                .collect();
            let change = TopicConfigChange {
                topic: r.resource_name.to_string(),
                mode: AlterMode::Incremental,
                ops,
            };
            (r.resource_type, r.resource_name, change)
        })
        .collect::<Vec<_>>();
    let (bad, good): (Vec<_>, Vec<_>) = resources
        .into_iter()
        .partition(|(_, name, _)| bad_operation.contains(&name.to_string()));
    let mut answers = alter_topic_configs(shard, good, request.validate_only).await;
    answers.extend(
        bad.into_iter()
            .map(|(resource_type, resource_name, _)| super::AlterAnswer {
                resource_type,
                resource_name,
                error_code: sluice_wire::ErrorCode::INVALID_REQUEST,
                error_message: Some(super::str_bytes("unknown config operation")),
            }),
    );
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
    Some(IncrementalAlterConfigsResponse::default().with_responses(responses))
}
