//! CreateTopics: validated and carried out by the controller on shard 0.

use std::rc::Rc;

use sluice_wire::kafka::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use sluice_wire::kafka::messages::{CreateTopicsRequest, CreateTopicsResponse};
use sluice_wire::Uuid;

use super::{ask_controller, str_bytes, RequestContext, Versions};
use crate::mesh::{AdminRequest, NewTopic};
use crate::metadata::{effective_config, TOPIC_CONFIGS};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 2, max: 7 };

/// `config_source` values of DescribeConfigs and CreateTopics.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: CreateTopicsRequest,
) -> Option<CreateTopicsResponse> {
    let topics: Vec<NewTopic> = request
        .topics
        .iter()
        .map(|t| NewTopic {
            name: t.name.0.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            assignments: t
                .assignments
                .iter()
                .map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                })
                .collect(),
            configs: t
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect(),
        })
        .collect();
    let names = topics.iter().map(|t| t.name.clone()).collect();
    let outcomes = ask_controller(
        shard,
        AdminRequest::CreateTopics {
            topics,
            validate_only: request.validate_only,
        },
        names,
    )
    .await;
    let results = outcomes
        .into_iter()
        .map(|o| {
            let result = CreatableTopicResult::default().with_name(super::topic_name(&o.name));
            match o.result {
                Ok(meta) => {
                    let configs = TOPIC_CONFIGS
                        .iter()
                        .map(|def| {
                            let source = if meta.configs.contains_key(def.name) {
                                SOURCE_DYNAMIC_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            CreatableTopicConfigs::default()
                                .with_name(str_bytes(def.name))
                                .with_value(
                                    effective_config(&meta, &shard.config, def.name)
                                        .map(|v| str_bytes(&v)),
                                )
                                .with_config_source(source)
                        })
                        .collect();
                    result
                        .with_topic_id(Uuid::from_bytes(meta.id.0))
                        .with_num_partitions(meta.partitions.len() as i32)
                        .with_replication_factor(1)
                        .with_configs(Some(configs))
                }
                Err(f) => result
                    .with_error_code(f.code.0)
                    .with_error_message(Some(str_bytes(&f.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    Some(CreateTopicsResponse::default().with_topics(results))
}
