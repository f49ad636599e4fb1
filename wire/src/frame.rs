//! Kafka request framing: a 4-byte big-endian size, a request header whose
//! version depends on the API and its version, then the request body.
//!
//! The size is checked against the caller's limit before anything is
//! allocated for the body. The header's fixed prefix (api key, version,
//! correlation id) is read by hand so that a request for an unknown API still
//! yields its correlation id for logging.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::error::DecodeError;
use crate::ApiVersion;

/// Bytes of the size prefix in front of every request and response.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// The smallest request frame: api key, api version and correlation id.
pub const REQUEST_FRAME_BYTES_MIN: usize = 8;

/// Checks a frame's size prefix against `limit` and returns the body length.
pub fn frame_len(prefix: [u8; FRAME_PREFIX_BYTES], limit: usize) -> Result<usize, DecodeError> {
    let len = i32::from_be_bytes(prefix) as i64;
    if len < REQUEST_FRAME_BYTES_MIN as i64 {
        return Err(DecodeError::FrameTooShort(len));
    }
    if len as u64 > limit as u64 {
        return Err(DecodeError::FrameTooLarge { len, limit });
    }
    Ok(len as usize)
}

/// The fixed start of every request header, readable for any API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: ApiVersion,
    pub correlation_id: i32,
}

impl RequestPrefix {
    /// Reads the prefix without consuming the frame.
    pub fn peek(frame: &[u8]) -> Result<RequestPrefix, DecodeError> {
        if frame.len() < REQUEST_FRAME_BYTES_MIN {
            return Err(DecodeError::FrameTooShort(frame.len() as i64));
        }
        let mut b = &frame[..REQUEST_FRAME_BYTES_MIN];
        Ok(RequestPrefix {
            api_key: b.get_i16(),
            api_version: ApiVersion(b.get_i16()),
            correlation_id: b.get_i32(),
        })
    }
}

/// A request whose header has been decoded; the body is left undecoded.
#[derive(Debug)]
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub api_version: ApiVersion,
    pub header: RequestHeader,
    pub body: Bytes,
}

/// Decodes the request header of a whole frame (without its size prefix).
pub fn decode_request(mut frame: Bytes) -> Result<RequestFrame, DecodeError> {
    let prefix = RequestPrefix::peek(&frame)?;
    let api_key = ApiKey::try_from(prefix.api_key)
        .map_err(|()| DecodeError::UnknownApiKey(prefix.api_key))?;
    let header_version = api_key.request_header_version(prefix.api_version.0);
    let header = RequestHeader::decode(&mut frame, header_version)
        .map_err(|e| DecodeError::malformed("request header", e))?;
    Ok(RequestFrame {
        api_key,
        api_version: prefix.api_version,
        header,
        body: frame,
    })
}

/// Encodes a whole response frame: size prefix, response header and body.
///
/// ApiVersions responses always carry header version 0, whatever their body
/// version, so that a client can read them before it knows the broker's
/// versions; `kafka-protocol` reports that through `response_header_version`.
pub fn encode_response<R: Encodable>(
    api_key: ApiKey,
    api_version: ApiVersion,
    correlation_id: i32,
    body: &R,
) -> Result<Bytes, DecodeError> {
    let header_version = api_key.response_header_version(api_version.0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_len = header
        .compute_size(header_version)
        .map_err(|e| DecodeError::malformed("response header", e))?;
    let body_len = body
        .compute_size(api_version.0)
        .map_err(|e| DecodeError::malformed("response body", e))?;
    let mut out = BytesMut::with_capacity(FRAME_PREFIX_BYTES + header_len + body_len);
    out.put_i32((header_len + body_len) as i32);
    header
        .encode(&mut out, header_version)
        .map_err(|e| DecodeError::malformed("response header", e))?;
    body.encode(&mut out, api_version.0)
        .map_err(|e| DecodeError::malformed("response body", e))?;
    debug_assert_eq!(out.len(), FRAME_PREFIX_BYTES + header_len + body_len);
    Ok(out.freeze())
}

/// Encodes a whole request frame, for clients such as the load generator.
pub fn encode_request<R: Encodable>(
    header: &RequestHeader,
    body: &R,
) -> Result<Bytes, DecodeError> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|()| DecodeError::UnknownApiKey(header.request_api_key))?;
    let header_version = api_key.request_header_version(header.request_api_version);
    let version = header.request_api_version;
    let header_len = header
        .compute_size(header_version)
        .map_err(|e| DecodeError::malformed("request header", e))?;
    let body_len = body
        .compute_size(version)
        .map_err(|e| DecodeError::malformed("request body", e))?;
    let mut out = BytesMut::with_capacity(FRAME_PREFIX_BYTES + header_len + body_len);
    out.put_i32((header_len + body_len) as i32);
    header
        .encode(&mut out, header_version)
        .map_err(|e| DecodeError::malformed("request header", e))?;
    body.encode(&mut out, version)
        .map_err(|e| DecodeError::malformed("request body", e))?;
    Ok(out.freeze())
}

/// Decodes a response frame (without its size prefix) for a request of `api_key`.
pub fn decode_response<R: Decodable>(
    api_key: ApiKey,
    api_version: ApiVersion,
    mut frame: Bytes,
) -> Result<(i32, R), DecodeError> {
    let header_version = api_key.response_header_version(api_version.0);
    let header = ResponseHeader::decode(&mut frame, header_version)
        .map_err(|e| DecodeError::malformed("response header", e))?;
    let body = R::decode(&mut frame, api_version.0)
        .map_err(|e| DecodeError::malformed("response body", e))?;
    Ok((header.correlation_id, body))
}
