//! Producing and fetching records with librdkafka: order, exact bytes,
//! compression, long polls, offsets by time and restarts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use std::process::Command;

use bytes::Bytes;
use sluice_wire::batch::Compression;
use sluice_wire::compression::lz4_compress;
use sluice_wire::records::{encode_batch_with, Record};

use crate::errors::{fetch, produce};
use crate::harness::{run, Broker, RawClient};
use crate::topics::{block, create_topic};

/// Bound on how long a test waits for records to come back.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(60);

/// What a test sent and expects back, per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

pub fn producer(addr: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("producer")
}

fn consumer(addr: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// Produces `records` to `topic` and returns the (partition, offset) of each.
pub fn produce_all(producer: &FutureProducer, topic: &str, records: &[Sent]) -> Vec<(i32, i64)> {
    let futures: Vec<_> = records
        .iter()
        .map(|r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            let record = FutureRecord::to(topic)
                .partition(r.partition)
                .key(&r.key)
                .payload(&r.value)
                .timestamp(r.timestamp)
                .headers(headers);
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("queue record")
        })
        .collect();
    futures
        .into_iter()
        .map(|f| {
            let delivery = block(f).expect("delivery not cancelled");
            let d = delivery.map_err(|(e, _)| e).expect("record acknowledged");
            (d.partition, d.offset)
        })
        .collect()
}

/// Reads `count` records from the start of every listed partition.
pub fn consume(addr: &str, topic: &str, partitions: i32, count: usize) -> Vec<(i32, i64, Sent)> {
    let consumer = consumer(addr);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("assign");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count} records before the deadline",
            out.len()
        );
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = msg.expect("consume without error");
        let headers = msg
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(|v| v.to_vec())))
                    .collect()
            })
            .unwrap_or_default();
        out.push((
            msg.partition(),
            msg.offset(),
            Sent {
                partition: msg.partition(),
                key: msg.key().unwrap_or_default().to_vec(),
                value: msg.payload().unwrap_or_default().to_vec(),
                headers,
                timestamp: msg.timestamp().to_millis().expect("timestamp"),
            },
        ));
    }
    // Nothing beyond what was produced.
    let extra = consumer.poll(Duration::from_millis(500));
    assert!(
        extra.is_none(),
        "unexpected extra record: {:?}",
        extra.map(|m| m.map(|m| m.offset()))
    );
    out
}

pub fn sample(count: usize, partitions: i32, value_bytes: usize) -> Vec<Sent> {
    let base_ts = 1_700_000_000_000i64;
    (0..count)
        .map(|i| {
            let mut value = format!("value-{i}-").into_bytes();
            value.extend((0..value_bytes).map(|j| ((i * 31 + j * 7) % 251) as u8));
            Sent {
                partition: (i % partitions as usize) as i32,
                key: format!("key-{i}").into_bytes(),
                value,
                headers: vec![
                    ("seq".to_string(), Some(i.to_string().into_bytes())),
                    ("empty".to_string(), None),
                ],
                timestamp: base_ts + i as i64,
            }
        })
        .collect()
}

/// Checks that every partition returned exactly its records, in order, at
/// the offsets the producer was told.
pub fn check_round_trip(sent: &[Sent], acked: &[(i32, i64)], got: &[(i32, i64, Sent)]) {
    let mut expected: BTreeMap<i32, Vec<(i64, &Sent)>> = BTreeMap::new();
    for (s, (p, o)) in sent.iter().zip(acked) {
        assert_eq!(*p, s.partition);
        expected.entry(*p).or_default().push((*o, s));
    }
    let mut actual: BTreeMap<i32, Vec<(i64, &Sent)>> = BTreeMap::new();
    for (p, o, s) in got {
        actual.entry(*p).or_default().push((*o, s));
    }
    assert_eq!(expected.len(), actual.len(), "partitions with records");
    for (p, exp) in &expected {
        let act = &actual[p];
        assert_eq!(act.len(), exp.len(), "records in partition {p}");
        for (i, ((eo, es), (ao, a))) in exp.iter().zip(act).enumerate() {
            assert_eq!(*eo, i as i64, "offsets are dense from 0 in partition {p}");
            assert_eq!(eo, ao, "offset of record {i} in partition {p}");
            assert_eq!(*es, *a, "record {i} in partition {p}");
        }
    }
}

#[test]
fn ten_thousand_keyed_records_round_trip_in_order() {
    let broker = Broker::start();
    create_topic(&broker.addr, "events", 4);
    let sent = sample(10_000, 4, 100);
    let acked = produce_all(&producer(&broker.addr, &[]), "events", &sent);
    let got = consume(&broker.addr, "events", 4, sent.len());
    check_round_trip(&sent, &acked, &got);
}

#[test]
fn every_compression_codec_round_trips() {
    let broker = Broker::start();
    // The batches must be stored compressed, exactly as librdkafka sent them.
    for (codec, expected) in [
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ] {
        let topic = format!("compressed-{codec}");
        create_topic(&broker.addr, &topic, 2);
        let sent = sample(500, 2, 300);
        let acked = produce_all(
            &producer(&broker.addr, &[("compression.codec", codec)]),
            &topic,
            &sent,
        );
        let got = consume(&broker.addr, &topic, 2, sent.len());
        check_round_trip(&sent, &acked, &got);
        assert_eq!(
            stored_codecs(&broker.addr, &topic),
            vec![expected],
            "{codec} batches stored as sent"
        );
    }
    // An LZ4 frame built by the wire codec: librdkafka and kcat decompress it.
    let topic = "wire-lz4";
    create_topic(&broker.addr, topic, 1);
    let records: Vec<Record> = (0..300)
        .map(|i| Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("lz4 value {i} ").repeat(10))),
            headers: vec![("seq".to_string(), Some(Bytes::from(i.to_string())))],
            timestamp: 1_700_000_000_000 + i,
        })
        .collect();
    let batch = encode_batch_with(&records, Compression::Lz4, lz4_compress);
    let mut c = RawClient::connect(&broker.addr);
    assert_eq!(produce(&mut c, topic, 0, batch, -1), (0, 0));
    assert_eq!(stored_codecs(&broker.addr, topic), vec![Compression::Lz4]);
    let got = consume(&broker.addr, topic, 1, records.len());
    for (i, (p, o, s)) in got.iter().enumerate() {
        let r = &records[i];
        assert_eq!((*p, *o), (0, i as i64));
        assert_eq!(s.key, r.key.as_ref().unwrap().to_vec());
        assert_eq!(s.value, r.value.as_ref().unwrap().to_vec());
        assert_eq!(
            s.headers,
            vec![("seq".to_string(), Some(i.to_string().into_bytes()))]
        );
        assert_eq!(s.timestamp, r.timestamp);
    }
    let out = run(
        Command::new("kcat").args([
            "-b",
            &broker.addr,
            "-t",
            topic,
            "-C",
            "-o",
            "beginning",
            "-e",
            "-c",
            "3",
            "-f",
            "%k|%s\n",
        ]),
        Duration::from_secs(60),
    );
    let expected: String = (0..3)
        .map(|i| format!("key-{i}|{}\n", format!("lz4 value {i} ").repeat(10)))
        .collect();
    assert_eq!(out, expected);
}

/// The distinct codecs of the batches stored in partition 0 of `topic`.
fn stored_codecs(addr: &str, topic: &str) -> Vec<Compression> {
    let mut c = RawClient::connect(addr);
    let stored = fetch(&mut c, topic, 0, 0, 0).records.unwrap();
    let mut codecs: Vec<Compression> = Vec::new();
    for (h, _) in sluice_wire::batch::split(&stored).unwrap() {
        if !codecs.contains(&h.compression()) {
            codecs.push(h.compression());
        }
    }
    codecs
}

#[test]
fn offsets_by_time_and_watermarks() {
    let broker = Broker::start();
    create_topic(&broker.addr, "timed", 1);
    let producer = producer(&broker.addr, &[("linger.ms", "0")]);
    let mut sent = Vec::new();
    for (i, ts) in [1_000i64, 2_000, 3_000, 3_000, 5_000].iter().enumerate() {
        let s = Sent {
            partition: 0,
            key: vec![i as u8],
            value: vec![i as u8; 10],
            headers: vec![],
            timestamp: *ts,
        };
        // One record per batch, so lookups must find the right batch.
        produce_all(&producer, "timed", std::slice::from_ref(&s));
        sent.push(s);
    }
    let consumer = consumer(&broker.addr);
    let (low, high) = consumer
        .fetch_watermarks("timed", 0, Duration::from_secs(20))
        .expect("watermarks");
    assert_eq!((low, high), (0, 5));
    for (ts, expected) in [
        (0i64, 0i64),
        (1_000, 0),
        (1_500, 1),
        (2_000, 1),
        (2_001, 2),
        (3_000, 2),
        (4_000, 4),
        (5_000, 4),
    ] {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("timed", 0, Offset::Offset(ts))
            .unwrap();
        let found = consumer
            .offsets_for_times(tpl, Duration::from_secs(20))
            .expect("offsets_for_times");
        let offset = found.find_partition("timed", 0).unwrap().offset();
        assert_eq!(
            offset,
            Offset::Offset(expected),
            "first offset at or after {ts}"
        );
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("timed", 0, Offset::Offset(6_000))
        .unwrap();
    let found = consumer
        .offsets_for_times(tpl, Duration::from_secs(20))
        .expect("offsets_for_times");
    assert_eq!(
        found.find_partition("timed", 0).unwrap().offset(),
        Offset::End,
        "no record that new"
    );
}

#[test]
fn restart_keeps_topics_and_records() {
    let mut broker = Broker::start_with(&["--shards", "2"]);
    create_topic(&broker.addr, "durable", 3);
    let sent = sample(900, 3, 50);
    let acked = produce_all(&producer(&broker.addr, &[]), "durable", &sent);

    broker.stop();
    broker.restart();
    let got = consume(&broker.addr, "durable", 3, sent.len());
    check_round_trip(&sent, &acked, &got);

    broker.kill();
    broker.restart();
    let got = consume(&broker.addr, "durable", 3, sent.len());
    check_round_trip(&sent, &acked, &got);

    // New writes continue at the next offsets.
    let more = sample(30, 3, 10);
    let acked_more = produce_all(&producer(&broker.addr, &[]), "durable", &more);
    for (p, o) in &acked_more {
        let before = acked.iter().filter(|(q, _)| q == p).count() as i64;
        assert!(
            *o >= before,
            "partition {p}: offset {o} continues after {before}"
        );
    }
    let got = consume(&broker.addr, "durable", 3, sent.len() + more.len());
    let mut all = sent.clone();
    all.extend(more);
    let mut all_acked = acked.clone();
    all_acked.extend(acked_more);
    check_round_trip(&all, &all_acked, &got);
}
