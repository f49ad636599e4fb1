//! Exact Kafka error codes, checked with a bare protocol client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice_wire::kafka::messages::create_partitions_request::CreatePartitionsTopic;
use sluice_wire::kafka::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use sluice_wire::kafka::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use sluice_wire::kafka::messages::metadata_request::MetadataRequestTopic;
use sluice_wire::kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_wire::kafka::messages::*;
use sluice_wire::kafka::protocol::StrBytes;
use sluice_wire::records::{encode_batch, Record};
use sluice_wire::ErrorCode;

use crate::harness::{Broker, RawClient};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create(client: &mut RawClient, topics: Vec<CreatableTopic>) -> Vec<i16> {
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000);
    let resp: CreateTopicsResponse = client.request(ApiKey::CreateTopics, 7, &req);
    resp.topics.iter().map(|t| t.error_code).collect()
}

fn topic(n: &str, partitions: i32, rf: i16) -> CreatableTopic {
    CreatableTopic::default()
        .with_name(name(n))
        .with_num_partitions(partitions)
        .with_replication_factor(rf)
}

fn record(value: &str, timestamp: i64) -> Record {
    Record {
        key: None,
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![],
        timestamp,
    }
}

pub fn produce(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    batch: Bytes,
    acks: i16,
) -> (i16, i64) {
    let req = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])]);
    let resp: ProduceResponse = client.request(ApiKey::Produce, 9, &req);
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

pub fn fetch(
    client: &mut RawClient,
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
) -> fetch_response::PartitionData {
    let req = crate::versions::fetch_req(topic, partition, offset)
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1);
    let resp: FetchResponse = client.request(ApiKey::Fetch, 12, &req);
    assert_eq!(resp.error_code, 0);
    resp.responses[0].partitions[0].clone()
}

#[test]
fn create_topics_errors() {
    let broker = Broker::start();
    let mut c = RawClient::connect(&broker.addr);
    let code = |e: ErrorCode| e.0;
    assert_eq!(create(&mut c, vec![topic("ok", 2, 1)]), vec![0]);
    assert_eq!(
        create(&mut c, vec![topic("ok", 2, 1)]),
        vec![code(ErrorCode::TOPIC_ALREADY_EXISTS)]
    );
    for bad in ["", ".", "..", "a b", "é", &"y".repeat(250)] {
        assert_eq!(
            create(&mut c, vec![topic(bad, 1, 1)]),
            vec![code(ErrorCode::INVALID_TOPIC_EXCEPTION)],
            "{bad:?}"
        );
    }
    assert_eq!(
        create(&mut c, vec![topic(&"z".repeat(249), 1, 1)]),
        vec![0],
        "249 characters is legal"
    );
    assert_eq!(
        create(&mut c, vec![topic("p0", 0, 1)]),
        vec![code(ErrorCode::INVALID_PARTITIONS)]
    );
    assert_eq!(
        create(&mut c, vec![topic("pneg", -5, 1)]),
        vec![code(ErrorCode::INVALID_PARTITIONS)]
    );
    assert_eq!(
        create(&mut c, vec![topic("rf3", 1, 3)]),
        vec![code(ErrorCode::INVALID_REPLICATION_FACTOR)]
    );
    assert_eq!(
        create(&mut c, vec![topic("rf0", 1, 0)]),
        vec![code(ErrorCode::INVALID_REPLICATION_FACTOR)]
    );
    assert_eq!(
        create(&mut c, vec![topic("dup", 1, 1), topic("dup", 1, 1)]),
        vec![
            code(ErrorCode::INVALID_REQUEST),
            code(ErrorCode::INVALID_REQUEST)
        ]
    );
    let bad_value = topic("cfg", 1, 1).with_configs(vec![CreatableTopicConfig::default()
        .with_name(StrBytes::from_static_str("retention.ms"))
        .with_value(Some(StrBytes::from_static_str("soon")))]);
    assert_eq!(
        create(&mut c, vec![bad_value]),
        vec![code(ErrorCode::INVALID_CONFIG)]
    );
    // Defaults: -1 partitions and -1 replication factor take the broker's.
    let resp: CreateTopicsResponse = c.request(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![topic("defaults", -1, -1)]),
    );
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].num_partitions, 1);
    assert_eq!(resp.topics[0].replication_factor, 1);
    assert!(!resp.topics[0].topic_id.is_nil());
    // validate_only creates nothing.
    let resp: CreateTopicsResponse = c.request(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default()
            .with_topics(vec![topic("dry", 3, 1)])
            .with_validate_only(true),
    );
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(
        create(&mut c, vec![topic("dry", 3, 1)]),
        vec![0],
        "the dry run created nothing"
    );

    let resp: DeleteTopicsResponse = c.request(
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default()
            .with_topic_names(vec![name("nope")])
            .with_timeout_ms(10_000),
    );
    assert_eq!(
        resp.responses[0].error_code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );

    let resp: CreatePartitionsResponse = c.request(
        ApiKey::CreatePartitions,
        2,
        &CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("ok"))
                .with_count(1)])
            .with_timeout_ms(10_000),
    );
    assert_eq!(resp.results[0].error_code, ErrorCode::INVALID_PARTITIONS.0);

    let describe = |c: &mut RawClient, resource_type: i8, name: &str| -> i16 {
        let req = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(resource_type)
                .with_resource_name(StrBytes::from_string(name.to_string())),
        ]);
        let resp: DescribeConfigsResponse = c.request(ApiKey::DescribeConfigs, 4, &req);
        resp.results[0].error_code
    };
    assert_eq!(describe(&mut c, 2, "ok"), 0);
    assert_eq!(
        describe(&mut c, 2, "missing"),
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
    assert_eq!(describe(&mut c, 4, "0"), 0);
    assert_eq!(describe(&mut c, 4, "17"), ErrorCode::INVALID_REQUEST.0);
}

#[test]
fn produce_fetch_and_list_offsets_errors() {
    let broker = Broker::start();
    let mut c = RawClient::connect(&broker.addr);
    assert_eq!(create(&mut c, vec![topic("t", 1, 1)]), vec![0]);

    let good = encode_batch(&[record("a", 10), record("b", 11)]);
    assert_eq!(produce(&mut c, "t", 0, good.clone(), -1), (0, 0));
    assert_eq!(produce(&mut c, "t", 0, good.clone(), 1), (0, 2));

    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        produce(&mut c, "t", 0, Bytes::from(corrupt), 1).0,
        ErrorCode::CORRUPT_MESSAGE.0
    );

    let mut truncated = good.to_vec();
    truncated.truncate(good.len() - 3);
    assert_eq!(
        produce(&mut c, "t", 0, Bytes::from(truncated), 1).0,
        ErrorCode::CORRUPT_MESSAGE.0
    );

    let mut old_magic = good.to_vec();
    old_magic[16] = 1;
    assert_eq!(
        produce(&mut c, "t", 0, Bytes::from(old_magic), 1).0,
        ErrorCode::UNSUPPORTED_FOR_MESSAGE_FORMAT.0
    );

    let big = encode_batch(&[record(&"x".repeat(1_100_000), 12)]);
    assert_eq!(
        produce(&mut c, "t", 0, big, 1).0,
        ErrorCode::MESSAGE_TOO_LARGE.0
    );
    assert_eq!(
        produce(&mut c, "t", 7, good.clone(), 1).0,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
    assert_eq!(
        produce(&mut c, "t", 0, good.clone(), 2).0,
        ErrorCode::INVALID_REQUIRED_ACKS.0
    );
    assert_eq!(
        produce(&mut c, "bad name", 0, good.clone(), 1).0,
        ErrorCode::INVALID_TOPIC_EXCEPTION.0
    );

    // Nothing rejected was stored: the log still holds offsets 0..4.
    let data = fetch(&mut c, "t", 0, 0, 0);
    assert_eq!(data.error_code, 0);
    assert_eq!(data.high_watermark, 4);
    let records = sluice_wire::batch::split(data.records.as_ref().unwrap()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].0.base_offset, 2);

    assert_eq!(
        fetch(&mut c, "t", 0, 5, 0).error_code,
        ErrorCode::OFFSET_OUT_OF_RANGE.0
    );
    assert_eq!(
        fetch(&mut c, "t", 0, -3, 0).error_code,
        ErrorCode::OFFSET_OUT_OF_RANGE.0
    );
    assert_eq!(
        fetch(&mut c, "t", 3, 0, 0).error_code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
    assert_eq!(
        fetch(&mut c, "missing", 0, 0, 0).error_code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
    let at_end = fetch(&mut c, "t", 0, 4, 0);
    assert_eq!((at_end.error_code, at_end.records.unwrap().len()), (0, 0));

    let list = |c: &mut RawClient, t: &str, p: i32, ts: i64| -> (i16, i64) {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name(t))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(p)
                    .with_timestamp(ts)])]);
        let resp: ListOffsetsResponse = c.request(ApiKey::ListOffsets, 6, &req);
        let r = &resp.topics[0].partitions[0];
        (r.error_code, r.offset)
    };
    assert_eq!(list(&mut c, "t", 0, -2), (0, 0));
    assert_eq!(list(&mut c, "t", 0, -1), (0, 4));
    assert_eq!(list(&mut c, "t", 0, 11), (0, 1));
    assert_eq!(list(&mut c, "t", 0, 12), (0, -1));
    assert_eq!(
        list(&mut c, "t", 9, -1).0,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );

    // ApiVersions newer than served: UNSUPPORTED_VERSION in a version 0 body.
    let mut raw = Vec::new();
    raw.extend_from_slice(&(ApiKey::ApiVersions as i16).to_be_bytes());
    raw.extend_from_slice(&9i16.to_be_bytes());
    raw.extend_from_slice(&77i32.to_be_bytes());
    raw.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    raw.push(0); // no tagged fields
    let mut framed = (raw.len() as i32).to_be_bytes().to_vec();
    framed.extend(raw);
    c.send_bytes(&framed).unwrap();
    let frame = c.read_frame().unwrap();
    let (correlation, resp) = sluice_wire::frame::decode_response::<ApiVersionsResponse>(
        ApiKey::ApiVersions,
        sluice_wire::ApiVersion(0),
        frame,
    )
    .unwrap();
    assert_eq!(correlation, 77);
    assert_eq!(resp.error_code, ErrorCode::UNSUPPORTED_VERSION.0);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::ApiVersions as i16 && k.max_version == 3));

    // Metadata: an illegal name is INVALID_TOPIC_EXCEPTION, not auto-created.
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("no/slash")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 12, &req);
    assert_eq!(
        resp.topics[0].error_code,
        ErrorCode::INVALID_TOPIC_EXCEPTION.0
    );
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("not-asked-to-create")))
        ]))
        .with_allow_auto_topic_creation(false);
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 12, &req);
    assert_eq!(
        resp.topics[0].error_code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
}

#[test]
fn auto_creation_follows_the_broker_setting() {
    let on = Broker::start();
    let mut c = RawClient::connect(&on.addr);
    let good = encode_batch(&[record("a", 1)]);
    assert_eq!(
        produce(&mut c, "auto-by-produce", 0, good.clone(), 1),
        (0, 0)
    );
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("auto-by-metadata")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 12, &req);
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 1);

    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("broker.toml");
    std::fs::write(
        &config,
        "auto_create_topics_enable = false\nnum_partitions = 3\n",
    )
    .unwrap();
    let off = Broker::start_with(&["--config", config.to_str().unwrap()]);
    let mut c = RawClient::connect(&off.addr);
    assert_eq!(
        produce(&mut c, "not-created", 0, good.clone(), 1).0,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
    let resp: MetadataResponse = c.request(ApiKey::Metadata, 12, &req);
    assert_eq!(
        resp.topics[0].error_code,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0
    );
    assert_eq!(create(&mut c, vec![topic("three", -1, -1)]), vec![0]);
    let resp: MetadataResponse = c.request(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name("three")))
        ])),
    );
    assert_eq!(
        resp.topics[0].partitions.len(),
        3,
        "num_partitions from the config file"
    );
}

#[test]
fn fetch_long_poll_wakes_on_data_and_honours_max_wait() {
    let broker = Broker::start();
    let mut c = RawClient::connect(&broker.addr);
    assert_eq!(create(&mut c, vec![topic("poll", 4, 1)]), vec![0]);

    // Nothing arrives: the fetch waits about max_wait_ms, then answers empty.
    let began = Instant::now();
    let empty = fetch(&mut c, "poll", 0, 0, 400);
    let waited = began.elapsed();
    assert_eq!((empty.error_code, empty.records.unwrap().len()), (0, 0));
    assert!(
        waited >= Duration::from_millis(350),
        "answered after {waited:?}, before max_wait_ms"
    );

    // Data arrives while a fetch with a long max_wait_ms waits on every partition.
    for partition in 0..4 {
        let addr = broker.addr.clone();
        let waiter = std::thread::spawn(move || {
            let mut c = RawClient::connect(&addr);
            let began = Instant::now();
            let data = fetch(&mut c, "poll", partition, 0, 25_000);
            (data, began.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut producer = RawClient::connect(&broker.addr);
        assert_eq!(
            produce(
                &mut producer,
                "poll",
                partition,
                encode_batch(&[record("wake", 5)]),
                1
            ),
            (0, 0)
        );
        let (data, waited) = waiter.join().unwrap();
        assert_eq!(data.error_code, 0);
        assert_eq!(data.high_watermark, 1);
        let stored = sluice_wire::records::decode_records(data.records.as_ref().unwrap()).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].record.value.as_deref(), Some(&b"wake"[..]));
        assert!(
            waited < Duration::from_secs(20),
            "partition {partition}: woken after {waited:?}, not by the append"
        );
    }
}
