//! The hand-written Fetch response encoder writes exactly what
//! `kafka-protocol` writes, for every version it covers, and shares large
//! record sets instead of copying them.

use bytes::Bytes;
use sluice_wire::fetch::{
    encode_fetch_response, RECORDS_SHARED_BYTES_MIN, VERSION_MAX, VERSION_MIN,
};
use sluice_wire::frame::encode_response;
use sluice_wire::kafka::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use sluice_wire::kafka::messages::{ApiKey, BrokerId, FetchResponse, ProducerId, TopicName};
use sluice_wire::kafka::protocol::StrBytes;
use sluice_wire::ApiVersion;

use crate::{seed, Rng};

fn response(rng: &mut Rng, version: i16, records: &mut Vec<Bytes>) -> FetchResponse {
    let topics = (0..rng.below(4))
        .map(|t| {
            let partitions = (0..rng.below(5))
                .map(|p| {
                    let len =
                        [0, 10, 4000, RECORDS_SHARED_BYTES_MIN, 70_000][rng.below(5) as usize];
                    let data = Bytes::from(
                        (0..len)
                            .map(|i| (i * 7 + p as usize) as u8)
                            .collect::<Vec<u8>>(),
                    );
                    records.push(data.clone());
                    let aborted = match rng.below(3) {
                        0 => None,
                        1 => Some(Vec::new()),
                        _ => Some(vec![AbortedTransaction::default()
                            .with_producer_id(ProducerId(rng.next() as i64))
                            .with_first_offset(rng.below(1000) as i64)]),
                    };
                    PartitionData::default()
                        .with_partition_index(p as i32)
                        .with_error_code(rng.below(3) as i16)
                        .with_high_watermark(rng.next() as i64)
                        .with_last_stable_offset(rng.below(99) as i64)
                        .with_log_start_offset(if version >= 5 {
                            rng.below(50) as i64
                        } else {
                            -1
                        })
                        .with_aborted_transactions(aborted)
                        .with_preferred_read_replica(BrokerId(if version >= 11 {
                            rng.below(3) as i32 - 1
                        } else {
                            -1
                        }))
                        .with_records(if rng.below(6) == 0 { None } else { Some(data) })
                })
                .collect();
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_string(format!(
                    "topic-{t}-{}",
                    "x".repeat(rng.below(40) as usize)
                ))))
                .with_partitions(partitions)
        })
        .collect();
    let r = FetchResponse::default()
        .with_throttle_time_ms(rng.below(10) as i32)
        .with_responses(topics);
    if version >= 7 {
        r.with_error_code(rng.below(2) as i16)
            .with_session_id(rng.below(5) as i32)
    } else {
        r
    }
}

#[test]
fn hand_encoded_fetch_responses_match_kafka_protocol() {
    let mut rng = Rng::new(seed());
    for version in VERSION_MIN..=VERSION_MAX {
        for case in 0..200 {
            let mut records = Vec::new();
            let r = response(&mut rng, version, &mut records);
            let correlation = rng.next() as i32;
            let expected =
                encode_response(ApiKey::Fetch, ApiVersion(version), correlation, &r).unwrap();
            let frame = encode_fetch_response(ApiVersion(version), correlation, &r).unwrap();
            assert_eq!(frame.to_bytes(), expected, "version {version} case {case}");
            assert_eq!(frame.len(), expected.len());
            // Every large record set is one of the chunks, the same memory.
            for p in r.responses.iter().flat_map(|t| &t.partitions) {
                if let Some(data) = p
                    .records
                    .as_ref()
                    .filter(|d| d.len() >= RECORDS_SHARED_BYTES_MIN)
                {
                    assert!(
                        frame
                            .chunks
                            .iter()
                            .any(|c| c.as_ptr() == data.as_ptr() && c.len() == data.len()),
                        "version {version} case {case}: records copied"
                    );
                }
            }
        }
    }
}

#[test]
fn fields_the_hand_encoder_does_not_write_fall_back_to_kafka_protocol() {
    let r = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
        .with_topic(TopicName(StrBytes::from_static_str("t")))
        .with_partitions(vec![PartitionData::default()
            .with_current_leader(
                LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(3))
                    .with_leader_epoch(7),
            )
            .with_records(Some(Bytes::from(vec![1u8; RECORDS_SHARED_BYTES_MIN])))])]);
    let expected = encode_response(ApiKey::Fetch, ApiVersion(12), 9, &r).unwrap();
    let frame = encode_fetch_response(ApiVersion(12), 9, &r).unwrap();
    assert_eq!(frame.chunks.len(), 1);
    assert_eq!(frame.to_bytes(), expected);
}
