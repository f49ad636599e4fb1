//! Topic administration through librdkafka's admin client.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::harness::Broker;

pub fn admin(addr: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client")
}

pub fn opts() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(20)))
        .request_timeout(Some(Duration::from_secs(20)))
}

pub fn block<F: std::future::Future>(f: F) -> F::Output {
    futures_lite::future::block_on(f)
}

pub fn create_topic(addr: &str, name: &str, partitions: i32) {
    let res = block(admin(addr).create_topics(
        &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
        &opts(),
    ))
    .expect("create_topics");
    assert_eq!(res, vec![Ok(name.to_string())]);
}

fn topic_partitions(admin: &AdminClient<DefaultClientContext>) -> Vec<(String, usize)> {
    let md = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(20))
        .expect("metadata");
    let mut topics: Vec<(String, usize)> = md
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__"))
        .map(|t| (t.name().to_string(), t.partitions().len()))
        .collect();
    topics.sort();
    topics
}

#[test]
fn create_list_describe_and_delete_topics() {
    let broker = Broker::start();
    let admin = admin(&broker.addr);
    let created = block(
        admin.create_topics(
            &[
                NewTopic::new("orders", 3, TopicReplication::Fixed(1)),
                NewTopic::new("logs.app_1-x", 1, TopicReplication::Fixed(1))
                    .set("segment.bytes", "1048576"),
            ],
            &opts(),
        ),
    )
    .unwrap();
    assert_eq!(
        created,
        vec![Ok("orders".to_string()), Ok("logs.app_1-x".to_string())]
    );
    assert_eq!(
        topic_partitions(&admin),
        vec![("logs.app_1-x".to_string(), 1), ("orders".to_string(), 3)]
    );

    let again = block(admin.create_topics(
        &[NewTopic::new("orders", 3, TopicReplication::Fixed(1))],
        &opts(),
    ))
    .unwrap();
    assert_eq!(
        again,
        vec![Err((
            "orders".to_string(),
            RDKafkaErrorCode::TopicAlreadyExists
        ))]
    );

    let too_many_replicas = block(admin.create_topics(
        &[NewTopic::new("replicated", 1, TopicReplication::Fixed(3))],
        &opts(),
    ))
    .unwrap();
    assert_eq!(
        too_many_replicas,
        vec![Err((
            "replicated".to_string(),
            RDKafkaErrorCode::InvalidReplicationFactor
        ))]
    );

    for bad in ["..", ".", "has space", "slash/name", &"x".repeat(250)] {
        let res = block(admin.create_topics(
            &[NewTopic::new(bad, 1, TopicReplication::Fixed(1))],
            &opts(),
        ))
        .unwrap();
        assert_eq!(
            res,
            vec![Err((bad.to_string(), RDKafkaErrorCode::InvalidTopic))],
            "name {bad:?}"
        );
    }

    let unknown_config = block(admin.create_topics(
        &[NewTopic::new("configured", 1, TopicReplication::Fixed(1)).set("no.such.config", "1")],
        &opts(),
    ))
    .unwrap();
    assert_eq!(
        unknown_config,
        vec![Err((
            "configured".to_string(),
            RDKafkaErrorCode::InvalidConfig
        ))]
    );

    let described =
        block(admin.describe_configs(&[ResourceSpecifier::Topic("logs.app_1-x")], &opts()))
            .unwrap();
    let resource = described
        .into_iter()
        .next()
        .unwrap()
        .expect("topic configs");
    let segment = resource.get("segment.bytes").expect("segment.bytes");
    assert_eq!(segment.value.as_deref(), Some("1048576"));
    assert!(!segment.is_default);
    let retention = resource.get("retention.ms").expect("retention.ms");
    assert_eq!(retention.value.as_deref(), Some("604800000"));
    assert!(retention.is_default);

    let broker_configs =
        block(admin.describe_configs(&[ResourceSpecifier::Broker(0)], &opts())).unwrap();
    let broker_resource = broker_configs
        .into_iter()
        .next()
        .unwrap()
        .expect("broker configs");
    assert_eq!(
        broker_resource
            .get("num.partitions")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        broker_resource
            .get("message.max.bytes")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("1048588")
    );

    // The rdkafka crate drops per-resource errors; errors.rs checks the
    // DescribeConfigs error code of a missing topic with a bare client.

    let grown =
        block(admin.create_partitions(&[NewPartitions::new("orders", 5)], &opts())).unwrap();
    assert_eq!(grown, vec![Ok("orders".to_string())]);
    let shrunk =
        block(admin.create_partitions(&[NewPartitions::new("orders", 4)], &opts())).unwrap();
    assert_eq!(
        shrunk,
        vec![Err((
            "orders".to_string(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
    let unknown =
        block(admin.create_partitions(&[NewPartitions::new("missing", 4)], &opts())).unwrap();
    assert_eq!(
        unknown,
        vec![Err((
            "missing".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );
    assert_eq!(
        topic_partitions(&admin),
        vec![("logs.app_1-x".to_string(), 1), ("orders".to_string(), 5)]
    );

    let deleted = block(admin.delete_topics(&["orders"], &opts())).unwrap();
    assert_eq!(deleted, vec![Ok("orders".to_string())]);
    let deleted_again = block(admin.delete_topics(&["orders"], &opts())).unwrap();
    assert_eq!(
        deleted_again,
        vec![Err((
            "orders".to_string(),
            RDKafkaErrorCode::UnknownTopicOrPartition
        ))]
    );
    assert_eq!(
        topic_partitions(&admin),
        vec![("logs.app_1-x".to_string(), 1)]
    );
    assert!(
        !broker.data_dir.join("orders-0").exists(),
        "deleted topic's log directory is removed"
    );
    assert!(broker.data_dir.join("logs.app_1-x-0").exists());
}
