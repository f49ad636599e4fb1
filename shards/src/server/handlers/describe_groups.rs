//! DescribeGroups: state, protocol and members of each group.

use std::rc::Rc;

use sluice_wire::kafka::messages::describe_groups_response::DescribedGroup;
use sluice_wire::kafka::messages::{DescribeGroupsRequest, DescribeGroupsResponse};

use super::{call_group, RequestContext, Versions};
use crate::groups::{GroupAnswer, GroupCall};
use crate::shard::{Shard, SHARD_CALL_TIMEOUT};

pub const VERSIONS: Versions = Versions { min: 0, max: 5 };

pub async fn handle(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
) -> Option<DescribeGroupsResponse> {
    let mut groups = Vec::new();
    for id in &request.groups {
        let group = id.0.to_string();
        let call = GroupCall::Describe {
            groups: vec![group.clone()],
        };
        let mut described = match call_group(shard, &group, call, SHARD_CALL_TIMEOUT).await {
            Ok(GroupAnswer::Described(d)) => d,
            Ok(other) => panic!("describe groups answered with {other:?}"),
            Err(code) => vec![DescribedGroup::default()
                .with_group_id(id.clone())
                .with_error_code(code.0)],
        };
        if ctx.version < 4 {
            // Instance ids are part of the response from version 4 on.
            for g in described.iter_mut() {
                for m in g.members.iter_mut() {
                    m.group_instance_id = None;
                }
            }
        }
        groups.append(&mut described);
    }
    Some(DescribeGroupsResponse::default().with_groups(groups))
}
