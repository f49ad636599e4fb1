//! Every served API answers at every version it advertises, on its success
//! path and on an error path: a field that a version lacks must never be set
//! in that version's response.

use bytes::Bytes;
use sluice_wire::kafka::messages::create_partitions_request::CreatePartitionsTopic;
use sluice_wire::kafka::messages::create_topics_request::CreatableTopic;
use sluice_wire::kafka::messages::delete_topics_request::DeleteTopicState;
use sluice_wire::kafka::messages::describe_configs_request::DescribeConfigsResource;
use sluice_wire::kafka::messages::fetch_request::{FetchPartition, FetchTopic};
use sluice_wire::kafka::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use sluice_wire::kafka::messages::metadata_request::MetadataRequestTopic;
use sluice_wire::kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_wire::kafka::messages::*;
use sluice_wire::kafka::protocol::StrBytes;
use sluice_wire::records::{encode_batch, Record};
use sluice_wire::ErrorCode;

use crate::harness::{Broker, RawClient};

/// The versions ApiVersions advertises for `api`.
fn advertised(c: &mut RawClient, api: ApiKey) -> std::ops::RangeInclusive<i16> {
    let resp: ApiVersionsResponse =
        c.request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let k = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == api as i16)
        .unwrap_or_else(|| panic!("{api:?} advertised"));
    k.min_version..=k.max_version
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn produce_req(topic: &str, partition: i32) -> ProduceRequest {
    let batch = encode_batch(&[Record {
        key: None,
        value: Some(Bytes::from_static(b"v")),
        headers: vec![],
        timestamp: 7,
    }]);
    ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(batch))])])
}

pub fn fetch_req(topic: &str, partition: i32, offset: i64) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn list_req(topic: &str, partition: i32, timestamp: i64) -> ListOffsetsRequest {
    ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])])
}

#[test]
fn every_api_answers_at_every_advertised_version() {
    let broker = Broker::start();
    let mut c = RawClient::connect(&broker.addr);
    let create = |c: &mut RawClient, topic: &str, partitions: i32, v: i16| -> i16 {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]);
        let resp: CreateTopicsResponse = c.request(ApiKey::CreateTopics, v, &req);
        resp.topics[0].error_code
    };
    for v in advertised(&mut c, ApiKey::CreateTopics) {
        assert_eq!(
            create(&mut c, &format!("v{v}"), 2, v),
            0,
            "CreateTopics v{v}"
        );
        assert_eq!(
            create(&mut c, &format!("v{v}"), 2, v),
            ErrorCode::TOPIC_ALREADY_EXISTS.0,
            "CreateTopics v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::ApiVersions) {
        let resp: ApiVersionsResponse =
            c.request(ApiKey::ApiVersions, v, &ApiVersionsRequest::default());
        assert_eq!(resp.error_code, 0, "ApiVersions v{v}");
    }
    for v in advertised(&mut c, ApiKey::Metadata) {
        let topics = vec![
            MetadataRequestTopic::default().with_name(Some(name("v2"))),
            MetadataRequestTopic::default().with_name(Some(name("bad name"))),
        ];
        // Before version 4 a Metadata request always allows auto-creation.
        let req = MetadataRequest::default()
            .with_topics(Some(topics))
            .with_allow_auto_topic_creation(v < 4);
        let resp: MetadataResponse = c.request(ApiKey::Metadata, v, &req);
        let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(
            codes,
            vec![0, ErrorCode::INVALID_TOPIC_EXCEPTION.0],
            "Metadata v{v}"
        );
        assert_eq!(resp.topics[0].partitions.len(), 2, "Metadata v{v}");
    }
    for v in advertised(&mut c, ApiKey::Produce) {
        let resp: ProduceResponse = c.request(ApiKey::Produce, v, &produce_req("v2", 0));
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, 0,
            "Produce v{v}"
        );
        let resp: ProduceResponse = c.request(ApiKey::Produce, v, &produce_req("v2", 9));
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
            "Produce v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::Fetch) {
        let resp: FetchResponse = c.request(ApiKey::Fetch, v, &fetch_req("v2", 0, 0));
        let p = &resp.responses[0].partitions[0];
        assert_eq!((p.error_code, p.high_watermark), (0, 7), "Fetch v{v}");
        assert!(!p.records.as_ref().unwrap().is_empty(), "Fetch v{v}");
        let resp: FetchResponse = c.request(ApiKey::Fetch, v, &fetch_req("v2", 0, 99));
        assert_eq!(
            resp.responses[0].partitions[0].error_code,
            ErrorCode::OFFSET_OUT_OF_RANGE.0,
            "Fetch v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::ListOffsets) {
        for (ts, expected) in [(-2i64, 0i64), (-1, 7), (7, 0)] {
            let resp: ListOffsetsResponse =
                c.request(ApiKey::ListOffsets, v, &list_req("v2", 0, ts));
            let p = &resp.topics[0].partitions[0];
            assert_eq!(
                (p.error_code, p.offset),
                (0, expected),
                "ListOffsets v{v} at {ts}"
            );
        }
        let resp: ListOffsetsResponse = c.request(ApiKey::ListOffsets, v, &list_req("v2", 5, -1));
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
            "ListOffsets v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::DescribeConfigs) {
        let resources = vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("v2")),
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("nope")),
            DescribeConfigsResource::default()
                .with_resource_type(4)
                .with_resource_name(StrBytes::from_static_str("0")),
        ];
        let resp: DescribeConfigsResponse = c.request(
            ApiKey::DescribeConfigs,
            v,
            &DescribeConfigsRequest::default()
                .with_resources(resources)
                .with_include_synonyms(true),
        );
        let codes: Vec<i16> = resp.results.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![0, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0, 0],
            "DescribeConfigs v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::AlterConfigs) {
        use sluice_wire::kafka::messages::alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let resource = |topic: &'static str, config: &'static str| {
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(topic))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str(config))
                    .with_value(Some(StrBytes::from_static_str("3600000")))])
        };
        let resp: AlterConfigsResponse = c.request(
            ApiKey::AlterConfigs,
            v,
            &AlterConfigsRequest::default().with_resources(vec![
                resource("v2", "retention.ms"),
                resource("nope", "retention.ms"),
                resource("v2", "no.such.config"),
            ]),
        );
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![
                0,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                ErrorCode::INVALID_CONFIG.0
            ],
            "AlterConfigs v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::IncrementalAlterConfigs) {
        use sluice_wire::kafka::messages::incremental_alter_configs_request::{
            AlterConfigsResource, AlterableConfig,
        };
        let resource = |topic: &'static str, op: i8, value: Option<&'static str>| {
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(topic))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("cleanup.policy"))
                    .with_config_operation(op)
                    .with_value(value.map(StrBytes::from_static_str))])
        };
        let resp: IncrementalAlterConfigsResponse = c.request(
            ApiKey::IncrementalAlterConfigs,
            v,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![
                resource("v2", 2, Some("compact")),
                resource("nope", 0, Some("delete")),
                resource("v2", 0, Some("shred")),
            ]),
        );
        let codes: Vec<i16> = resp.responses.iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            vec![
                0,
                ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
                ErrorCode::INVALID_CONFIG.0
            ],
            "IncrementalAlterConfigs v{v}"
        );
        let resp: IncrementalAlterConfigsResponse = c.request(
            ApiKey::IncrementalAlterConfigs,
            v,
            &IncrementalAlterConfigsRequest::default().with_resources(vec![resource(
                "v2",
                3,
                Some("compact"),
            )]),
        );
        assert_eq!(
            resp.responses[0].error_code, 0,
            "IncrementalAlterConfigs v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::DeleteRecords) {
        use sluice_wire::kafka::messages::delete_records_request::{
            DeleteRecordsPartition, DeleteRecordsTopic,
        };
        let req = |partition: i32, offset: i64| {
            DeleteRecordsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![DeleteRecordsTopic::default()
                    .with_name(name("v2"))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(partition)
                        .with_offset(offset)])])
        };
        let resp: DeleteRecordsResponse = c.request(ApiKey::DeleteRecords, v, &req(0, 0));
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.low_watermark),
            (0, 0),
            "DeleteRecords v{v}"
        );
        let resp: DeleteRecordsResponse = c.request(ApiKey::DeleteRecords, v, &req(0, 1_000));
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ErrorCode::OFFSET_OUT_OF_RANGE.0,
            "DeleteRecords v{v}"
        );
        let resp: DeleteRecordsResponse = c.request(ApiKey::DeleteRecords, v, &req(9, 0));
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
            "DeleteRecords v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::CreatePartitions) {
        let topic = format!("v{}", v + 2);
        let req = |count| {
            CreatePartitionsRequest::default()
                .with_timeout_ms(5_000)
                .with_topics(vec![CreatePartitionsTopic::default()
                    .with_name(name(&topic))
                    .with_count(count)
                    .with_assignments(None)])
        };
        let resp: CreatePartitionsResponse = c.request(ApiKey::CreatePartitions, v, &req(3));
        assert_eq!(resp.results[0].error_code, 0, "CreatePartitions v{v}");
        let resp: CreatePartitionsResponse = c.request(ApiKey::CreatePartitions, v, &req(3));
        assert_eq!(
            resp.results[0].error_code,
            ErrorCode::INVALID_PARTITIONS.0,
            "CreatePartitions v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::DeleteTopics) {
        let topic = format!("v{}", v + 1);
        let req = if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                DeleteTopicState::default().with_name(Some(name(&topic)))
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name(&topic)])
        };
        let resp: DeleteTopicsResponse =
            c.request(ApiKey::DeleteTopics, v, &req.clone().with_timeout_ms(5_000));
        assert_eq!(resp.responses[0].error_code, 0, "DeleteTopics v{v}");
        let resp: DeleteTopicsResponse =
            c.request(ApiKey::DeleteTopics, v, &req.with_timeout_ms(5_000));
        assert_eq!(
            resp.responses[0].error_code,
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION.0,
            "DeleteTopics v{v}"
        );
    }
}

/// The group APIs at every advertised version: a member joins, syncs,
/// heartbeats, commits, reads its commit back, is listed and described,
/// leaves, and the empty group is deleted.
#[test]
fn every_group_api_answers_at_every_advertised_version() {
    use sluice_wire::kafka::messages::join_group_request::JoinGroupRequestProtocol;
    use sluice_wire::kafka::messages::leave_group_request::MemberIdentity;
    use sluice_wire::kafka::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use sluice_wire::kafka::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use sluice_wire::kafka::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use sluice_wire::kafka::messages::sync_group_request::SyncGroupRequestAssignment;

    let broker = Broker::start_with_config(
        "group_initial_rebalance_delay_ms = 0\noffsets_topic_num_partitions = 4\n",
    );
    let mut c = RawClient::connect(&broker.addr);
    let s = |x: &str| StrBytes::from_string(x.to_string());
    let resp: CreateTopicsResponse = c.request(
        ApiKey::CreateTopics,
        7,
        &CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
            .with_name(name("gt"))
            .with_num_partitions(1)
            .with_replication_factor(1)]),
    );
    assert_eq!(resp.topics[0].error_code, 0);
    for v in advertised(&mut c, ApiKey::FindCoordinator) {
        let req = if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")])
        } else {
            FindCoordinatorRequest::default().with_key(s("g"))
        };
        let resp: FindCoordinatorResponse = c.request(ApiKey::FindCoordinator, v, &req);
        let code = if v >= 4 {
            resp.coordinators[0].error_code
        } else {
            resp.error_code
        };
        assert_eq!(code, 0, "FindCoordinator v{v}");
    }
    let join_versions = advertised(&mut c, ApiKey::JoinGroup);
    let sync_max = *advertised(&mut c, ApiKey::SyncGroup).end();
    let hb_max = *advertised(&mut c, ApiKey::Heartbeat).end();
    let leave_max = *advertised(&mut c, ApiKey::LeaveGroup).end();
    let commit_versions = advertised(&mut c, ApiKey::OffsetCommit);
    let fetch_versions = advertised(&mut c, ApiKey::OffsetFetch);
    for v in join_versions {
        let group = format!("gv{v}");
        let join = |c: &mut RawClient, member: &str| -> JoinGroupResponse {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(if v >= 1 { 5_000 } else { -1 })
                .with_member_id(s(member))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(b"m"))]);
            c.request(ApiKey::JoinGroup, v, &req)
        };
        let mut joined = join(&mut c, "");
        if v >= 4 {
            assert_eq!(
                joined.error_code,
                ErrorCode::MEMBER_ID_REQUIRED.0,
                "JoinGroup v{v}"
            );
            let id = joined.member_id.to_string();
            joined = join(&mut c, &id);
        }
        assert_eq!(
            (joined.error_code, joined.generation_id),
            (0, 1),
            "JoinGroup v{v}"
        );
        let me = joined.member_id.to_string();
        let sv = v.min(sync_max);
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id(1)
            .with_member_id(s(&me))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&me))
                .with_assignment(Bytes::from_static(b"a"))]);
        let synced: SyncGroupResponse = c.request(ApiKey::SyncGroup, sv, &sync);
        assert_eq!(synced.error_code, 0, "SyncGroup v{sv}");
        let hv = v.min(hb_max);
        let hb: HeartbeatResponse = c.request(
            ApiKey::Heartbeat,
            hv,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_generation_id(1)
                .with_member_id(s(&me)),
        );
        assert_eq!(hb.error_code, 0, "Heartbeat v{hv}");
        let cv =
            *commit_versions.start() + (v % (commit_versions.end() - commit_versions.start() + 1));
        let commit = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&group)))
            .with_generation_id_or_member_epoch(1)
            .with_member_id(s(&me))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("gt"))
                .with_partitions(vec![
                    OffsetCommitRequestPartition::default().with_committed_offset(3)
                ])]);
        let committed: OffsetCommitResponse = c.request(ApiKey::OffsetCommit, cv, &commit);
        assert_eq!(
            committed.topics[0].partitions[0].error_code, 0,
            "OffsetCommit v{cv}"
        );
        let fv =
            *fetch_versions.start() + (v % (fetch_versions.end() - fetch_versions.start() + 1));
        let offset = if fv >= 8 {
            let req =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(GroupId(s(&group)))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(name("gt"))
                        .with_partition_indexes(vec![0])]))]);
            let resp: OffsetFetchResponse = c.request(ApiKey::OffsetFetch, fv, &req);
            resp.groups[0].topics[0].partitions[0].committed_offset
        } else {
            let req = OffsetFetchRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(name("gt"))
                    .with_partition_indexes(vec![0])]));
            let resp: OffsetFetchResponse = c.request(ApiKey::OffsetFetch, fv, &req);
            resp.topics[0].partitions[0].committed_offset
        };
        assert_eq!(offset, 3, "OffsetFetch v{fv}");
        let lv = v.min(leave_max);
        let leave = if lv >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_members(vec![MemberIdentity::default().with_member_id(s(&me))])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(&group)))
                .with_member_id(s(&me))
        };
        let left: LeaveGroupResponse = c.request(ApiKey::LeaveGroup, lv, &leave);
        let code = if lv >= 3 {
            left.members[0].error_code
        } else {
            left.error_code
        };
        assert_eq!(code, 0, "LeaveGroup v{lv}");
    }
    for v in advertised(&mut c, ApiKey::ListGroups) {
        let resp: ListGroupsResponse =
            c.request(ApiKey::ListGroups, v, &ListGroupsRequest::default());
        assert_eq!(resp.error_code, 0, "ListGroups v{v}");
        assert!(
            resp.groups.iter().any(|g| g.group_id.0.as_str() == "gv0"),
            "ListGroups v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::DescribeGroups) {
        let resp: DescribeGroupsResponse = c.request(
            ApiKey::DescribeGroups,
            v,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("gv1"))]),
        );
        assert_eq!(
            (
                resp.groups[0].error_code,
                resp.groups[0].group_state.as_str()
            ),
            (0, "Empty"),
            "DescribeGroups v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::OffsetDelete) {
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("gv2")))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(name("gt"))
                .with_partitions(vec![OffsetDeleteRequestPartition::default()])]);
        let resp: OffsetDeleteResponse = c.request(ApiKey::OffsetDelete, v, &req);
        assert_eq!(
            (resp.error_code, resp.topics[0].partitions[0].error_code),
            (0, 0),
            "OffsetDelete v{v}"
        );
    }
    for v in advertised(&mut c, ApiKey::DeleteGroups) {
        let group = format!("gv{}", v + 3);
        let resp: DeleteGroupsResponse = c.request(
            ApiKey::DeleteGroups,
            v,
            &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s(&group))]),
        );
        assert_eq!(resp.results[0].error_code, 0, "DeleteGroups v{v}");
    }
}
