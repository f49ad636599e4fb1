//! DeleteTopics, by name (all versions) or by topic id (version 6).

use std::rc::Rc;

use sluice_wire::kafka::messages::delete_topics_response::DeletableTopicResult;
use sluice_wire::kafka::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use sluice_wire::{ErrorCode, Uuid};

use super::{ask_controller, str_bytes, topic_name, RequestContext, Versions};
use crate::ids::TopicId;
use crate::mesh::AdminRequest;
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 1, max: 6 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: DeleteTopicsRequest,
) -> Option<DeleteTopicsResponse> {
    let meta = shard.meta();
    let mut responses = Vec::new();
    let mut names = Vec::new();
    if ctx.version >= 6 {
        for t in &request.topics {
            match (&t.name, t.topic_id.is_nil()) {
                (Some(name), _) => names.push(name.0.to_string()),
                (None, false) => match meta.topic_by_id(TopicId(*t.topic_id.as_bytes())) {
                    Some(topic) => names.push(topic.name.clone()),
                    None => responses.push(
                        DeletableTopicResult::default()
                            .with_topic_id(t.topic_id)
                            .with_error_code(ErrorCode::UNKNOWN_TOPIC_ID.0),
                    ),
                },
                (None, true) => responses.push(
                    DeletableTopicResult::default().with_error_code(ErrorCode::INVALID_REQUEST.0),
                ),
            }
        }
    } else {
        names.extend(request.topic_names.iter().map(|n| n.0.to_string()));
    }
    if !names.is_empty() {
        let outcomes = ask_controller(
            shard,
            AdminRequest::DeleteTopics {
                names: names.clone(),
            },
            names,
        )
        .await;
        for o in outcomes {
            let r = DeletableTopicResult::default().with_name(Some(topic_name(&o.name)));
            responses.push(match o.result {
                Ok(meta) => {
                    tracing::info!(topic = %o.name, "deleted topic");
                    r.with_topic_id(Uuid::from_bytes(meta.id.0))
                }
                Err(f) => r
                    .with_error_code(f.code.0)
                    .with_error_message(Some(str_bytes(&f.message))),
            });
        }
    }
    Some(DeleteTopicsResponse::default().with_responses(responses))
}
