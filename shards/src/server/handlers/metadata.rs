//! Metadata: brokers, topics and partition leaders, auto-creating topics.

use std::rc::Rc;

use sluice_wire::kafka::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use sluice_wire::kafka::messages::{BrokerId, MetadataRequest, MetadataResponse};
use sluice_wire::{ErrorCode, Uuid};

use super::{auto_create, str_bytes, topic_name, RequestContext, Versions};
use crate::ids::TopicId;
use crate::metadata::{topic_name_problem, TopicMeta};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 12 };

/// The topic as Metadata describes it: this node leads every partition.
fn describe(shard: &Shard, t: &TopicMeta) -> MetadataResponseTopic {
    let node = BrokerId(shard.config.node_id.0);
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(node)
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(Uuid::from_bytes(t.id.0))
        .with_is_internal(t.name == crate::groups::OFFSETS_TOPIC)
        .with_partitions(partitions)
}

fn failed(name: Option<&str>, id: Uuid, code: ErrorCode) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(topic_name))
        .with_topic_id(id)
        .with_error_code(code.0)
}

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: MetadataRequest,
) -> Option<MetadataResponse> {
    // Version 0 asks for every topic with an empty list; later versions with null.
    let wanted = match request.topics {
        Some(list) if !(ctx.version == 0 && list.is_empty()) => Some(list),
        _ => None,
    };
    let allow_create = ctx.version < 4 || request.allow_auto_topic_creation;
    let topics = match wanted {
        None => shard
            .meta()
            .topics
            .values()
            .map(|t| describe(shard, t))
            .collect(),
        Some(list) => {
            let names: Vec<String> = list
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .collect();
            let meta = if allow_create {
                auto_create(shard, names).await
            } else {
                shard.meta()
            };
            list.iter()
                .map(|t| match &t.name {
                    Some(name) => {
                        let name = name.0.as_str();
                        match meta.topic(name) {
                            Some(topic) => describe(shard, topic),
                            None if topic_name_problem(name).is_some() => {
                                failed(Some(name), Uuid::nil(), ErrorCode::INVALID_TOPIC_EXCEPTION)
                            }
                            None => failed(
                                Some(name),
                                Uuid::nil(),
                                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
                            ),
                        }
                    }
                    None => match meta.topic_by_id(TopicId(*t.topic_id.as_bytes())) {
                        Some(topic) => describe(shard, topic),
                        None => failed(None, t.topic_id, ErrorCode::UNKNOWN_TOPIC_ID),
                    },
                })
                .collect()
        }
    };
    let (host, port) = &shard.advertised;
    let node = BrokerId(shard.config.node_id.0);
    Some(
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(node)
                .with_host(str_bytes(host))
                .with_port(*port)])
            .with_cluster_id(Some(str_bytes(&shard.config.cluster_id)))
            .with_controller_id(node)
            .with_topics(topics),
    )
}
