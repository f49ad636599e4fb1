//! CreatePartitions: adds partitions to an existing topic.

use std::rc::Rc;

use sluice_wire::kafka::messages::create_partitions_response::CreatePartitionsTopicResult;
use sluice_wire::kafka::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{ask_controller, str_bytes, topic_name, RequestContext, Versions};
use crate::mesh::{AdminRequest, NewPartitions};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 3 };

pub async fn handle(
    shard: &Rc<Shard>,
    _ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> Option<CreatePartitionsResponse> {
    let topics: Vec<NewPartitions> = request
        .topics
        .iter()
        .map(|t| NewPartitions {
            topic: t.name.0.to_string(),
            count: t.count,
            assignments: t.assignments.as_ref().map(|a| {
                a.iter()
                    .map(|x| x.broker_ids.iter().map(|b| b.0).collect())
                    .collect()
            }),
        })
        .collect();
    let names = topics.iter().map(|t| t.topic.clone()).collect();
    let outcomes = ask_controller(
        shard,
        AdminRequest::CreatePartitions {
            topics,
            validate_only: request.validate_only,
        },
        names,
    )
    .await;
    let results = outcomes
        .into_iter()
        .map(|o| {
            let r = CreatePartitionsTopicResult::default().with_name(topic_name(&o.name));
            match o.result {
                Ok(_) => r,
                Err(f) => r
                    .with_error_code(f.code.0)
                    .with_error_message(Some(str_bytes(&f.message))),
            }
        })
        .collect();
    Some(CreatePartitionsResponse::default().with_results(results))
}
