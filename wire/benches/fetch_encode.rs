//! Encoding a Fetch response: `kafka-protocol` (copies every record set into
//! one buffer) against `fetch::encode_fetch_response` (shares them). Prints
//! one line per shape with the time per response for each and their ratio.
//! Run with `cargo bench -p sluice-wire --bench fetch_encode`.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use sluice_wire::fetch::encode_fetch_response;
use sluice_wire::frame::encode_response;
use sluice_wire::kafka::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use sluice_wire::kafka::messages::{ApiKey, FetchResponse, TopicName};
use sluice_wire::kafka::protocol::StrBytes;
use sluice_wire::ApiVersion;

fn response(partitions: i32, records_bytes: usize) -> FetchResponse {
    let records = Bytes::from(vec![0x5a; records_bytes]);
    FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("bench")))
        .with_partitions(
            (0..partitions)
                .map(|p| {
                    PartitionData::default()
                        .with_partition_index(p)
                        .with_high_watermark(1_000_000)
                        .with_records(Some(records.clone()))
                })
                .collect(),
        )])
}

fn time_per(iterations: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_secs_f64() / iterations as f64
}

fn main() {
    for (partitions, bytes) in [(1, 1 << 20), (16, 64 << 10), (16, 1 << 20)] {
        let r = response(partitions, bytes);
        let iterations = (2_000_000_000 / (partitions as usize * bytes)).clamp(10, 10_000) as u32;
        let copied = time_per(iterations, || {
            black_box(encode_response(ApiKey::Fetch, ApiVersion(11), 1, black_box(&r)).unwrap());
        });
        let shared = time_per(iterations, || {
            black_box(encode_fetch_response(ApiVersion(11), 1, black_box(&r)).unwrap());
        });
        let total_mb = (partitions as usize * bytes) as f64 / 1e6;
        println!(
            "fetch encode {partitions} x {bytes} B: kafka-protocol {:.1} us ({:.0} MB/s), shared {:.2} us; {:.0}x",
            copied * 1e6,
            total_mb / copied,
            shared * 1e6,
            copied / shared
        );
    }
}
