//! ApiVersions: which APIs and versions this broker serves.

use std::rc::Rc;

use bytes::Bytes;
use sluice_wire::frame::encode_response;
use sluice_wire::kafka::messages::api_versions_response::ApiVersion;
use sluice_wire::kafka::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_wire::{DecodeError, ErrorCode};

use super::{RequestContext, Versions, SUPPORTED};
use crate::shard::Shard;

pub const VERSIONS: Versions = Versions { min: 0, max: 3 };

fn table() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(key, v)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(v.min)
                .with_max_version(v.max)
        })
        .collect()
}

pub async fn handle(
    _shard: &Rc<Shard>,
    _ctx: &RequestContext,
    _request: ApiVersionsRequest,
) -> Option<ApiVersionsResponse> {
    Some(ApiVersionsResponse::default().with_api_keys(table()))
}

/// The answer to an ApiVersions request of a version newer than served: a
/// version 0 response with UNSUPPORTED_VERSION and the table, from which the
/// client picks a version both sides know (KIP-511).
pub fn unsupported_version(correlation_id: i32) -> Result<Bytes, DecodeError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ErrorCode::UNSUPPORTED_VERSION.0)
        .with_api_keys(table());
    encode_response(
        ApiKey::ApiVersions,
        sluice_wire::ApiVersion(0),
        correlation_id,
        &response,
    )
}
