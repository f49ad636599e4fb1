//! DescribeConfigs for topics (effective values and their source) and for
//! this broker (its static settings).

use std::rc::Rc;

use sluice_wire::kafka::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use sluice_wire::kafka::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use sluice_wire::ErrorCode;

use super::create_topics::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC, SOURCE_STATIC_BROKER};
use super::{str_bytes, RequestContext, Versions};
use crate::config::BrokerConfig;
use crate::metadata::{effective_config, ConfigKind, TOPIC_CONFIGS};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 1, max: 4 };

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// `config_type` values (DescribeConfigs v3+).
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_DOUBLE: i8 = 6;
const TYPE_BOOLEAN: i8 = 1;

fn wanted(keys: &Option<Vec<sluice_wire::kafka::protocol::StrBytes>>, name: &str) -> bool {
    keys.as_ref()
        .is_none_or(|k| k.is_empty() || k.iter().any(|x| x.as_str() == name))
}

fn broker_configs(b: &BrokerConfig, advertised: &(String, i32)) -> Vec<(&'static str, String, i8)> {
    vec![
        ("node.id", b.node_id.0.to_string(), TYPE_INT),
        ("broker.id", b.node_id.0.to_string(), TYPE_INT),
        (
            "listeners",
            format!("PLAINTEXT://{}", b.listen),
            TYPE_STRING,
        ),
        (
            "advertised.listeners",
            format!("PLAINTEXT://{}:{}", advertised.0, advertised.1),
            TYPE_STRING,
        ),
        ("log.dirs", b.data_dir.display().to_string(), TYPE_STRING),
        ("num.partitions", b.num_partitions.to_string(), TYPE_INT),
        (
            "auto.create.topics.enable",
            b.auto_create_topics_enable.to_string(),
            TYPE_BOOLEAN,
        ),
        (
            "message.max.bytes",
            b.message_max_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "socket.request.max.bytes",
            b.socket_request_max_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "log.segment.bytes",
            b.log_segment_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "log.index.interval.bytes",
            b.log_index_interval_bytes.to_string(),
            TYPE_INT,
        ),
        (
            "connections.max.idle.ms",
            b.connections_max_idle_ms.to_string(),
            TYPE_LONG,
        ),
    ]
}

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> Option<DescribeConfigsResponse> {
    let meta = shard.meta();
    let results = request
        .resources
        .iter()
        .map(|res| {
            let name = res.resource_name.as_str();
            let result = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            match res.resource_type {
                RESOURCE_TOPIC => match meta.topic(name) {
                    None => result
                        .with_error_code(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0)
                        .with_error_message(Some(str_bytes(&format!(
                            "topic '{name}' does not exist"
                        )))),
                    Some(topic) => {
                        let configs = TOPIC_CONFIGS
                            .iter()
                            .filter(|def| wanted(&res.configuration_keys, def.name))
                            .map(|def| {
                                let value = effective_config(topic, &shard.config, def.name)
                                    .unwrap_or_default();
                                let own = topic.configs.contains_key(def.name);
                                let source = if own {
                                    SOURCE_DYNAMIC_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                let mut synonyms = Vec::new();
                                if request.include_synonyms {
                                    if own {
                                        synonyms.push(
                                            DescribeConfigsSynonym::default()
                                                .with_name(str_bytes(def.name))
                                                .with_value(Some(str_bytes(&value)))
                                                .with_source(SOURCE_DYNAMIC_TOPIC),
                                        );
                                    }
                                    synonyms.push(
                                        DescribeConfigsSynonym::default()
                                            .with_name(str_bytes(def.name))
                                            .with_value(Some(str_bytes(&(def.default)(
                                                &shard.config,
                                            ))))
                                            .with_source(SOURCE_DEFAULT),
                                    );
                                }
                                let config_type = match def.kind {
                                    ConfigKind::Long { .. } => TYPE_LONG,
                                    ConfigKind::Int { .. } => TYPE_INT,
                                    ConfigKind::Double => TYPE_DOUBLE,
                                    ConfigKind::Choice(_) => TYPE_STRING,
                                };
                                DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(def.name))
                                    .with_value(Some(str_bytes(&value)))
                                    .with_config_source(source)
                                    .with_synonyms(synonyms)
                                    .with_config_type(config_type)
                                    .with_documentation(if request.include_documentation {
                                        Some(str_bytes(def.doc))
                                    } else {
                                        None
                                    })
                            })
                            .collect();
                        result.with_configs(configs)
                    }
                },
                RESOURCE_BROKER
                    if name.is_empty() || name == shard.config.node_id.0.to_string() =>
                {
                    let configs = broker_configs(&shard.config, &shard.advertised)
                        .into_iter()
                        .filter(|(n, _, _)| wanted(&res.configuration_keys, n))
                        .map(|(n, v, t)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(str_bytes(n))
                                .with_value(Some(str_bytes(&v)))
                                .with_read_only(true)
                                .with_config_source(SOURCE_STATIC_BROKER)
                                .with_config_type(t)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                RESOURCE_BROKER => result
                    .with_error_code(ErrorCode::INVALID_REQUEST.0)
                    .with_error_message(Some(str_bytes(&format!(
                        "this is broker {}, not {name}",
                        shard.config.node_id.0
                    )))),
                other => result
                    .with_error_code(ErrorCode::INVALID_REQUEST.0)
                    .with_error_message(Some(str_bytes(&format!(
                        "resource type {other} is not supported"
                    )))),
            }
        })
        .collect();
    Some(DescribeConfigsResponse::default().with_results(results))
}
