//! Malformed input closes the offending connection and nothing else.

use sluice_wire::kafka::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest,
};

use crate::harness::{Broker, RawClient};

/// The broker still answers a well-formed request on a new connection.
fn still_serves(broker: &mut Broker) {
    assert!(
        broker.is_running(),
        "broker died; log:\n{}",
        broker.log_text()
    );
    let mut c = RawClient::connect(&broker.addr);
    let resp: ApiVersionsResponse =
        c.request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(resp.error_code, 0);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let len = 8 + 2 + body.len();
    f.extend_from_slice(&(len as i32).to_be_bytes());
    f.extend_from_slice(&api_key.to_be_bytes());
    f.extend_from_slice(&version.to_be_bytes());
    f.extend_from_slice(&7i32.to_be_bytes());
    f.extend_from_slice(&(-1i16).to_be_bytes());
    f.extend_from_slice(body);
    f
}

#[test]
fn bad_frames_close_only_their_connection() {
    let mut broker = Broker::start();
    // A bystander connection opened before the abuse keeps working after it.
    let mut bystander = RawClient::connect(&broker.addr);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "http request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("oversized length prefix", i32::MAX.to_be_bytes().to_vec()),
        (
            "just over the request limit",
            (104_857_600i32 + 1).to_be_bytes().to_vec(),
        ),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("length below a header", 3i32.to_be_bytes().to_vec()),
        ("unknown api key", frame(999, 0, &[])),
        (
            "unsupported metadata version",
            frame(ApiKey::Metadata as i16, 99, &[]),
        ),
        (
            "truncated produce body",
            frame(ApiKey::Produce as i16, 9, &[0, 1, 2]),
        ),
        (
            "garbage create topics body",
            frame(ApiKey::CreateTopics as i16, 7, &[0xff; 40]),
        ),
    ];
    for (what, bytes) in cases {
        let mut c = RawClient::connect(&broker.addr);
        c.send_bytes(&bytes).unwrap();
        assert!(c.is_closed_by_peer(), "{what}: connection should be closed");
        still_serves(&mut broker);
    }

    // A frame that promises more bytes than it sends, then hangs up.
    let mut c = RawClient::connect(&broker.addr);
    c.send_bytes(&1000i32.to_be_bytes()).unwrap();
    c.send_bytes(&[0u8; 10]).unwrap();
    drop(c);
    still_serves(&mut broker);

    let resp: sluice_wire::kafka::messages::MetadataResponse = bystander.request(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default().with_topics(None),
    );
    assert_eq!(resp.brokers.len(), 1);
}

#[test]
fn random_frames_never_take_the_broker_down() {
    let mut broker = Broker::start();
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234);
    eprintln!("random_frames seed {seed} (replay with SEED={seed})");
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let apis = [0i16, 1, 2, 3, 18, 19, 20, 32, 37];
    for round in 0..300 {
        let api = apis[(next() % apis.len() as u64) as usize];
        let version = (next() % 14) as i16;
        let body: Vec<u8> = (0..(next() % 200)).map(|_| next() as u8).collect();
        let mut c = RawClient::connect(&broker.addr);
        c.send_bytes(&frame(api, version, &body)).unwrap();
        // Either an answer or a closed connection; never a hang (the read is bounded).
        let _ = c.read_frame();
        if round % 50 == 0 {
            still_serves(&mut broker);
        }
    }
    still_serves(&mut broker);
}
