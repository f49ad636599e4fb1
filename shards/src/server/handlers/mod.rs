//! One module per Kafka API. Each declares the versions it serves in
//! `VERSIONS`; [`SUPPORTED`] collects them and is what ApiVersions reports.
//!
//! A request for an unknown API, for an API version outside the table (other
//! than ApiVersions, which answers UNSUPPORTED_VERSION as Kafka does), or whose
//! body cannot be decoded closes the connection: Kafka does the same, and a
//! client cannot parse an answer in a version it did not ask for.

pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_configs;
pub mod describe_groups;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use sluice_wire::fetch::{encode_fetch_response, ResponseFrame};
use sluice_wire::frame::{encode_response, RequestFrame};
use sluice_wire::kafka::messages::{ApiKey, TopicName};
use sluice_wire::kafka::protocol::{Decodable, StrBytes};
use sluice_wire::DecodeError;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use crate::ids::ShardId;
use crate::join::join_all;
use crate::mesh::{
    AdminRequest, Failure, NewTopic, PartitionResult, ShardRequest, ShardResponse, TopicOutcome,
};
use crate::metadata::{topic_name_problem, ClusterMeta};
use crate::server::error_codes;
use crate::shard::{Shard, ADMIN_CALL_TIMEOUT, SHARD_CALL_TIMEOUT};

/// Inclusive range of versions of one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    pub min: i16,
    pub max: i16,
}

/// Every API served, with its versions.
pub const SUPPORTED: &[(ApiKey, Versions)] = &[
    (ApiKey::Produce, produce::VERSIONS),
    (ApiKey::Fetch, fetch::VERSIONS),
    (ApiKey::ListOffsets, list_offsets::VERSIONS),
    (ApiKey::Metadata, metadata::VERSIONS),
    (ApiKey::ApiVersions, api_versions::VERSIONS),
    (ApiKey::CreateTopics, create_topics::VERSIONS),
    (ApiKey::DeleteTopics, delete_topics::VERSIONS),
    (ApiKey::DescribeConfigs, describe_configs::VERSIONS),
    (ApiKey::CreatePartitions, create_partitions::VERSIONS),
    (ApiKey::FindCoordinator, find_coordinator::VERSIONS),
    (ApiKey::JoinGroup, join_group::VERSIONS),
    (ApiKey::SyncGroup, sync_group::VERSIONS),
    (ApiKey::Heartbeat, heartbeat::VERSIONS),
    (ApiKey::LeaveGroup, leave_group::VERSIONS),
    (ApiKey::OffsetCommit, offset_commit::VERSIONS),
    (ApiKey::OffsetFetch, offset_fetch::VERSIONS),
    (ApiKey::ListGroups, list_groups::VERSIONS),
    (ApiKey::DescribeGroups, describe_groups::VERSIONS),
    (ApiKey::DeleteGroups, delete_groups::VERSIONS),
    (ApiKey::OffsetDelete, offset_delete::VERSIONS),
    (ApiKey::DeleteRecords, delete_records::VERSIONS),
    (ApiKey::AlterConfigs, alter_configs::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        incremental_alter_configs::VERSIONS,
    ),
];

pub fn versions_of(api: ApiKey) -> Option<Versions> {
    SUPPORTED.iter().find(|(k, _)| *k == api).map(|(_, v)| *v)
}

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum Disconnect {
    #[error("api {api:?} is not served")]
    UnsupportedApi { api: ApiKey },
    #[error("api {api:?} version {version} is not served")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error(transparent)]
    Codec(#[from] DecodeError),
}

/// The facts of the request being served that handlers may need.
pub struct RequestContext {
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: String,
    /// The client's address as Kafka shows it (`/127.0.0.1`).
    pub client_host: String,
}

fn decode<R: Decodable>(
    what: &'static str,
    body: &mut Bytes,
    version: i16,
) -> Result<R, Disconnect> {
    R::decode(body, version).map_err(|e| Disconnect::Codec(DecodeError::malformed(what, e)))
}

/// Serves one request; `Ok(None)` means no response is sent (acks=0).
pub async fn dispatch(
    shard: &Rc<Shard>,
    request: RequestFrame,
    client_host: &str,
) -> Result<Option<ResponseFrame>, Disconnect> {
    let RequestFrame {
        api_key,
        api_version,
        header,
        mut body,
    } = request;
    let Some(versions) = versions_of(api_key) else {
        return Err(Disconnect::UnsupportedApi { api: api_key });
    };
    let version = api_version.0;
    let ctx = RequestContext {
        version,
        correlation_id: header.correlation_id,
        client_id: header
            .client_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        client_host: format!("/{client_host}"),
    };
    if version < versions.min || version > versions.max {
        if api_key == ApiKey::ApiVersions {
            return Ok(Some(ResponseFrame::single(
                api_versions::unsupported_version(ctx.correlation_id)?,
            )));
        }
        return Err(Disconnect::UnsupportedVersion {
            api: api_key,
            version,
        });
    }
    macro_rules! serve {
        ($module:ident, $request:ty) => {{
            let request: $request = decode(stringify!($request), &mut body, version)?;
            match $module::handle(shard, &ctx, request).await {
                Some(response) => Some(ResponseFrame::single(encode_response(
                    api_key,
                    api_version,
                    ctx.correlation_id,
                    &response,
                )?)),
                None => None,
            }
        }};
    }
    use sluice_wire::kafka::messages as m;
    let response = match api_key {
        ApiKey::Produce => serve!(produce, m::ProduceRequest),
        // Fetch has its own encoder, which hands the stored record bytes to
        // the socket instead of copying them into the response.
        ApiKey::Fetch => {
            let request: m::FetchRequest = decode("FetchRequest", &mut body, version)?;
            match fetch::handle(shard, &ctx, request).await {
                Some(response) => Some(encode_fetch_response(
                    api_version,
                    ctx.correlation_id,
                    &response,
                )?),
                None => None,
            }
        }
        ApiKey::ListOffsets => serve!(list_offsets, m::ListOffsetsRequest),
        ApiKey::Metadata => serve!(metadata, m::MetadataRequest),
        ApiKey::ApiVersions => serve!(api_versions, m::ApiVersionsRequest),
        ApiKey::CreateTopics => serve!(create_topics, m::CreateTopicsRequest),
        ApiKey::DeleteTopics => serve!(delete_topics, m::DeleteTopicsRequest),
        ApiKey::DescribeConfigs => serve!(describe_configs, m::DescribeConfigsRequest),
        ApiKey::CreatePartitions => serve!(create_partitions, m::CreatePartitionsRequest),
        ApiKey::FindCoordinator => serve!(find_coordinator, m::FindCoordinatorRequest),
        ApiKey::JoinGroup => serve!(join_group, m::JoinGroupRequest),
        ApiKey::SyncGroup => serve!(sync_group, m::SyncGroupRequest),
        ApiKey::Heartbeat => serve!(heartbeat, m::HeartbeatRequest),
        ApiKey::LeaveGroup => serve!(leave_group, m::LeaveGroupRequest),
        ApiKey::OffsetCommit => serve!(offset_commit, m::OffsetCommitRequest),
        ApiKey::OffsetFetch => serve!(offset_fetch, m::OffsetFetchRequest),
        ApiKey::ListGroups => serve!(list_groups, m::ListGroupsRequest),
        ApiKey::DescribeGroups => serve!(describe_groups, m::DescribeGroupsRequest),
        ApiKey::DeleteGroups => serve!(delete_groups, m::DeleteGroupsRequest),
        ApiKey::OffsetDelete => serve!(offset_delete, m::OffsetDeleteRequest),
        ApiKey::DeleteRecords => serve!(delete_records, m::DeleteRecordsRequest),
        ApiKey::AlterConfigs => serve!(alter_configs, m::AlterConfigsRequest),
        ApiKey::IncrementalAlterConfigs => {
            serve!(incremental_alter_configs, m::IncrementalAlterConfigsRequest)
        }
        other => return Err(Disconnect::UnsupportedApi { api: other }),
    };
    Ok(response)
}

pub fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

pub fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

/// Sends a topic change to the controller on shard 0 and returns its outcomes;
/// if shard 0 cannot be reached, every topic fails with the reason.
pub async fn ask_controller(
    shard: &Rc<Shard>,
    request: AdminRequest,
    names: Vec<String>,
) -> Vec<TopicOutcome> {
    match shard
        .call(ShardId(0), ShardRequest::Admin(request), ADMIN_CALL_TIMEOUT)
        .await
    {
        Ok(ShardResponse::Admin(outcomes)) => outcomes,
        Ok(other) => panic!("admin request answered with {other:?}"),
        Err(e) => {
            let code = error_codes::broker(&e);
            names
                .into_iter()
                .map(|name| TopicOutcome {
                    name,
                    result: Err(Failure::new(code, e.to_string())),
                })
                .collect()
        }
    }
}

/// Creates the named topics that do not exist yet, if the broker allows
/// auto-creation and the names are legal; returns the metadata afterwards.
pub async fn auto_create(shard: &Rc<Shard>, names: Vec<String>) -> Arc<ClusterMeta> {
    let meta = shard.meta();
    if !shard.config.auto_create_topics_enable {
        return meta;
    }
    let missing: Vec<String> = names
        .into_iter()
        .filter(|n| meta.topic(n).is_none() && topic_name_problem(n).is_none())
        .collect();
    if missing.is_empty() {
        return meta;
    }
    let topics = missing
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Vec::new(),
        })
        .collect();
    for outcome in ask_controller(
        shard,
        AdminRequest::CreateTopics {
            topics,
            validate_only: false,
        },
        missing,
    )
    .await
    {
        match outcome.result {
            Ok(t) => {
                tracing::info!(topic = %t.name, partitions = t.partitions.len(), "auto-created topic")
            }
            Err(f) if f.code == sluice_wire::ErrorCode::TOPIC_ALREADY_EXISTS => {}
            Err(f) => {
                tracing::warn!(topic = %outcome.name, error = %f.message, "auto-creating topic failed")
            }
        }
    }
    shard.meta()
}

/// The answer for one resource of AlterConfigs or IncrementalAlterConfigs.
pub struct AlterAnswer {
    pub resource_type: i8,
    pub resource_name: StrBytes,
    pub error_code: sluice_wire::ErrorCode,
    pub error_message: Option<StrBytes>,
}

/// Kafka's resource type for topics in the config APIs.
pub const RESOURCE_TOPIC: i8 = 2;

/// Sends topic config changes to the controller; other resource types are
/// refused, since broker settings come only from the config file.
pub async fn alter_topic_configs(
    shard: &Rc<Shard>,
    resources: Vec<(i8, StrBytes, crate::mesh::TopicConfigChange)>,
    validate_only: bool,
) -> Vec<AlterAnswer> {
    let mut answers = Vec::new();
    let mut changes = Vec::new();
    let mut names = Vec::new();
    for (resource_type, resource_name, change) in resources {
        if resource_type != RESOURCE_TOPIC {
            answers.push(AlterAnswer {
                resource_type,
                resource_name,
                error_code: sluice_wire::ErrorCode::INVALID_REQUEST,
                error_message: Some(str_bytes(
                    "only topic configs change at run time; broker settings come from the config file",
                )),
            });
            continue;
        }
        if let Some(problem) = topic_name_problem(&change.topic) {
            answers.push(AlterAnswer {
                resource_type,
                resource_name,
                error_code: sluice_wire::ErrorCode::INVALID_TOPIC_EXCEPTION,
                error_message: Some(str_bytes(&problem)),
            });
            continue;
        }
        names.push(change.topic.clone());
        changes.push(change);
    }
    if !changes.is_empty() {
        let outcomes = ask_controller(
            shard,
            AdminRequest::AlterConfigs {
                changes,
                validate_only,
            },
            names,
        )
        .await;
        for o in outcomes {
            let (error_code, error_message) = match o.result {
                Ok(_) => {
                    if !validate_only {
                        tracing::info!(topic = %o.name, "changed topic configs");
                    }
                    (sluice_wire::ErrorCode::NONE, None)
                }
                Err(f) => (f.code, Some(str_bytes(&f.message))),
            };
            answers.push(AlterAnswer {
                resource_type: RESOURCE_TOPIC,
                resource_name: str_bytes(&o.name),
                error_code,
                error_message,
            });
        }
    }
    answers
}

/// One owner's share of a request: (slot in the response, item) pairs.
pub type Shares<T> = BTreeMap<ShardId, Vec<(usize, T)>>;

/// Sends each owning shard its share of a request, all at once, and stores
/// each answer at its slot. `request` wraps a share into the message for its
/// owner; `answers` takes the per-item answers out of the owner's response
/// (`None` if the response is of the wrong kind, which is a bug). If an owner
/// cannot be reached, each of its items fails with the reason.
pub async fn scatter<T, A: Clone>(
    shard: &Rc<Shard>,
    shares: Shares<T>,
    slots: &mut [Option<PartitionResult<A>>],
    request: fn(Vec<T>) -> ShardRequest,
    answers: fn(ShardResponse) -> Option<Vec<PartitionResult<A>>>,
) {
    type Call<'a, A> = Pin<Box<dyn Future<Output = (Vec<usize>, Vec<PartitionResult<A>>)> + 'a>>;
    let calls: Vec<Call<'_, A>> = shares
        .into_iter()
        .map(|(owner, items)| {
            let call: Call<'_, A> = Box::pin(async move {
                let indexes: Vec<usize> = items.iter().map(|(i, _)| *i).collect();
                let count = indexes.len();
                let message = request(items.into_iter().map(|(_, item)| item).collect());
                let got = match shard.call(owner, message, SHARD_CALL_TIMEOUT).await {
                    Ok(response) => {
                        answers(response).expect("an owner answers in the kind it was asked")
                    }
                    Err(e) => {
                        vec![Err(Failure::new(error_codes::broker(&e), e.to_string())); count]
                    }
                };
                assert_eq!(got.len(), count, "one answer per item");
                (indexes, got)
            });
            call
        })
        .collect();
    for (indexes, got) in join_all(calls).await {
        for (i, answer) in indexes.into_iter().zip(got) {
            slots[i] = Some(answer);
        }
    }
}

/// The shard coordinating `group`, or why there is none.
pub fn coordinator_of(shard: &Shard, group: &str) -> Result<ShardId, sluice_wire::ErrorCode> {
    let meta = shard.meta();
    let Some(topic) = meta.topic(crate::groups::OFFSETS_TOPIC) else {
        return Err(sluice_wire::ErrorCode::COORDINATOR_NOT_AVAILABLE);
    };
    let partition = crate::groups::offsets_partition(group, topic.partitions.len());
    shard
        .owner_of(&meta, crate::groups::OFFSETS_TOPIC, partition)
        .ok_or(sluice_wire::ErrorCode::COORDINATOR_NOT_AVAILABLE)
}

/// Sends a group request to its coordinating shard and waits up to `timeout`.
pub async fn call_group(
    shard: &Rc<Shard>,
    group: &str,
    call: crate::groups::GroupCall,
    timeout: std::time::Duration,
) -> Result<crate::groups::GroupAnswer, sluice_wire::ErrorCode> {
    let owner = coordinator_of(shard, group)?;
    match shard
        .call(owner, ShardRequest::Group(Box::new(call)), timeout)
        .await
    {
        Ok(ShardResponse::Group(answer)) => Ok(answer),
        Ok(other) => panic!("group request answered with {other:?}"),
        Err(e) => {
            tracing::warn!(group, error = %e, "group coordinator unreachable");
            Err(sluice_wire::ErrorCode::COORDINATOR_NOT_AVAILABLE)
        }
    }
}
