//! Durability, retention, DeleteRecords, run-time config changes and
//! compaction through real Kafka clients.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AlterConfig, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::Broker;
use crate::topics::{admin, block, opts};

/// Bound on waiting for background work (retention, compaction) to show.
const UPKEEP_TIMEOUT: Duration = Duration::from_secs(30);

fn create_with(addr: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let res = block(admin(addr).create_topics(&[topic], &opts())).expect("create_topics");
    assert_eq!(res, vec![Ok(name.to_string())]);
}

pub(crate) fn watermarks(addr: &str, topic: &str, partition: i32) -> (i64, i64) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("consumer");
    c.fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks")
}

/// Every record of a partition from its log start: (offset, key, value).
fn read_partition(
    addr: &str,
    topic: &str,
    partition: i32,
) -> Vec<(i64, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let (low, high) = watermarks(addr, topic, partition);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "storage-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(low))
        .unwrap();
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    let mut next = low;
    while next < high {
        assert!(Instant::now() < deadline, "read up to {next} of {high}");
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.expect("record");
        next = m.offset() + 1;
        out.push((
            m.offset(),
            m.key().map(|k| k.to_vec()),
            m.payload().map(|v| v.to_vec()),
        ));
    }
    out
}

/// Producers with acks=all run while the broker is killed with SIGKILL;
/// after a restart every acknowledged record is there, in order, without
/// gaps, and new writes continue at the end.
#[test]
fn acknowledged_writes_survive_sigkill_under_load() {
    let mut broker = Broker::start();
    create_with(&broker.addr, "durable", 4, &[("segment.bytes", "65536")]);
    let acked: Arc<Mutex<Vec<(i32, i64, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..2)
        .map(|t| {
            let addr = broker.addr.clone();
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &addr)
                    .set("acks", "all")
                    .set("enable.idempotence", "false")
                    .set("linger.ms", "2")
                    .set("message.timeout.ms", "5000")
                    .create()
                    .expect("producer");
                let mut seq = 0u64;
                // Bounded: the test stops it, or 100k records at most.
                while !stop.load(Ordering::SeqCst) && seq < 100_000 {
                    let value = format!("p{t}-{seq}-{}", "x".repeat(100));
                    let key = format!("k{seq}");
                    let record = FutureRecord::to("durable")
                        .partition((seq % 4) as i32)
                        .key(&key)
                        .payload(&value);
                    let delivery = producer.send_result(record).map_err(|(e, _)| e);
                    seq += 1;
                    let Ok(future) = delivery else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    // Deliveries are awaited in a window so that many are in flight.
                    let acked = acked.clone();
                    let value_owned = value.clone();
                    std::thread::spawn(move || {
                        if let Ok(Ok(d)) = block(future) {
                            acked
                                .lock()
                                .unwrap()
                                .push((d.partition, d.offset, value_owned));
                        }
                    });
                    if seq % 64 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                }
            })
        })
        .collect();
    // Let acknowledgements pile up, then pull the plug mid-stream.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 3_000 {
        assert!(Instant::now() < deadline, "producers did not get going");
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill();
    stop.store(true, Ordering::SeqCst);
    for p in producers {
        p.join().expect("producer thread");
    }
    // Deliveries still in flight fail within message.timeout.ms.
    std::thread::sleep(Duration::from_millis(5_500));
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 3_000);
    broker.restart();

    let mut by_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for (p, o, v) in &acked {
        by_partition.entry(*p).or_default().push((*o, v.clone()));
    }
    for p in 0..4 {
        let stored = read_partition(&broker.addr, "durable", p);
        let offsets: Vec<i64> = stored.iter().map(|r| r.0).collect();
        assert_eq!(
            offsets,
            (0..stored.len() as i64).collect::<Vec<_>>(),
            "partition {p}: dense offsets from 0, no gaps"
        );
        let stored_values: BTreeMap<i64, Vec<u8>> = stored
            .iter()
            .map(|(o, _, v)| (*o, v.clone().unwrap()))
            .collect();
        for (o, v) in by_partition.get(&p).into_iter().flatten() {
            assert_eq!(
                stored_values.get(o).map(|b| b.as_slice()),
                Some(v.as_bytes()),
                "acknowledged record at {p}/{o} survives"
            );
        }
        // New writes continue right after what survived.
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &broker.addr)
            .set("acks", "all")
            .create()
            .unwrap();
        let d = block(
            producer
                .send_result(
                    FutureRecord::to("durable")
                        .partition(p)
                        .key("after")
                        .payload("after"),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
        )
        .unwrap()
        .map_err(|(e, _)| e)
        .unwrap();
        assert_eq!(d.offset, stored.len() as i64, "partition {p}");
    }
}

/// retention.bytes set at run time deletes old segments and moves the log
/// start offset; DeleteRecords moves it further; both survive a restart.
#[test]
fn retention_and_delete_records_move_the_log_start() {
    let mut broker = Broker::start_with_config("log_retention_check_interval_ms = 200\n");
    create_with(&broker.addr, "retained", 1, &[("segment.bytes", "8192")]);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for i in 0..400 {
        let value = format!("{i:04}-{}", "r".repeat(200));
        block(
            producer
                .send_result(
                    FutureRecord::to("retained")
                        .partition(0)
                        .key("k")
                        .payload(&value),
                )
                .map_err(|(e, _)| e)
                .unwrap(),
        )
        .unwrap()
        .map_err(|(e, _)| e)
        .unwrap();
    }
    assert_eq!(watermarks(&broker.addr, "retained", 0), (0, 400));

    // Nothing goes before a limit is set, then the oldest segments go.
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("retained")).set("retention.bytes", "30000");
    let res = block(admin(&broker.addr).alter_configs(&[alter], &opts())).unwrap();
    assert!(res[0].is_ok(), "{:?}", res[0]);
    let deadline = Instant::now() + UPKEEP_TIMEOUT;
    let low = loop {
        let (low, high) = watermarks(&broker.addr, "retained", 0);
        assert_eq!(high, 400);
        if low > 0 {
            break low;
        }
        assert!(Instant::now() < deadline, "retention did not run");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        low < 400 - 30_000 / 260 + 40,
        "kept about 30000 bytes: low {low}"
    );
    let stored = read_partition(&broker.addr, "retained", 0);
    assert_eq!(
        stored.first().unwrap().0,
        low,
        "reads start at the log start"
    );
    assert_eq!(stored.len() as i64, 400 - low);

    // DeleteRecords through the admin client.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("retained", 0, Offset::Offset(390))
        .unwrap();
    let deleted = block(admin(&broker.addr).delete_records(&tpl, &opts())).expect("delete_records");
    let e = deleted.elements_for_topic("retained");
    assert_eq!(e[0].offset(), Offset::Offset(390));
    assert_eq!(watermarks(&broker.addr, "retained", 0), (390, 400));
    let stored = read_partition(&broker.addr, "retained", 0);
    assert_eq!(
        stored.iter().map(|r| r.0).collect::<Vec<_>>(),
        (390..400).collect::<Vec<_>>()
    );

    broker.kill();
    broker.restart();
    assert_eq!(watermarks(&broker.addr, "retained", 0), (390, 400));
}

/// Compaction through the broker: only the latest value of each key
/// remains in closed segments, and tombstones go after delete.retention.ms.
#[test]
fn compacted_topics_keep_the_latest_value_per_key() {
    let broker = Broker::start_with_config("log_cleaner_backoff_ms = 200\n");
    create_with(
        &broker.addr,
        "compacted",
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.bytes", "8192"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("delete.retention.ms", "0"),
        ],
    );
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("linger.ms", "0")
        .set("compression.type", "lz4")
        .create()
        .unwrap();
    let send = |key: &str, value: Option<&str>| {
        let mut record = FutureRecord::to("compacted").partition(0).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        block(producer.send_result(record).map_err(|(e, _)| e).unwrap())
            .unwrap()
            .map_err(|(e, _)| e)
            .unwrap()
            .offset
    };
    let pad = "c".repeat(200);
    let mut latest: BTreeMap<String, (i64, String)> = BTreeMap::new();
    for round in 0..20 {
        for k in 0..5 {
            let key = format!("key-{k}");
            let value = format!("{round}-{pad}");
            let offset = send(&key, Some(&value));
            latest.insert(key, (offset, value));
        }
    }
    let deleted_at = send("key-1", None);
    latest.remove("key-1");
    // Filler closes the segments holding the keys above.
    for i in 0..60 {
        send(&format!("filler-{i}"), Some(&pad));
    }
    let deadline = Instant::now() + UPKEEP_TIMEOUT;
    loop {
        let stored = read_partition(&broker.addr, "compacted", 0);
        let keyed: Vec<_> = stored
            .iter()
            .filter(|(_, k, _)| k.as_deref().is_some_and(|k| k.starts_with(b"key-")))
            .collect();
        let compacted = keyed.len() == latest.len();
        if compacted {
            for (offset, key, value) in keyed {
                let key = String::from_utf8(key.clone().unwrap()).unwrap();
                let (want_offset, want_value) = &latest[&key];
                assert_eq!(offset, want_offset, "{key} keeps its offset");
                assert_eq!(value.as_deref(), Some(want_value.as_bytes()));
            }
            assert!(
                stored.iter().all(|(o, _, _)| *o != deleted_at),
                "the tombstone is gone"
            );
            let offsets: Vec<i64> = stored.iter().map(|r| r.0).collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(
                watermarks(&broker.addr, "compacted", 0).0,
                0,
                "the log start stays"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not compacted: {} keyed records",
            keyed.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs `sluice broker` with `listen` and `data_dir`, expecting it to refuse
/// to start; returns what it wrote to stderr.
fn refused_broker(listen: &str, data_dir: &std::path::Path) -> String {
    let mut broker = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["broker", "--shards", "1", "--listen", listen, "--data-dir"])
        .arg(data_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a second broker");
    let deadline = Instant::now() + Duration::from_secs(30);
    while broker.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = broker.kill();
            panic!("a broker that should have refused to start kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = broker.wait_with_output().expect("broker output");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the broker must not start: {stderr}");
    stderr
}

/// A second broker on a data directory or an address in use refuses to
/// start, and says why; once the first broker has stopped, the directory
/// can be used again.
#[test]
fn a_data_directory_and_an_address_serve_one_broker_at_a_time() {
    let mut first = Broker::start();
    let stderr = refused_broker("127.0.0.1:0", &first.data_dir);
    assert!(
        stderr.contains("is in use by another broker"),
        "the second broker names the reason: {stderr}"
    );
    let other_dir = tempfile::tempdir().expect("temp dir");
    let stderr = refused_broker(&first.addr, other_dir.path());
    assert!(
        stderr.contains(&format!("bind {}", first.addr)),
        "the second broker names the address: {stderr}"
    );
    assert!(first.is_running(), "the first broker is untouched");
    first.stop();
    first.restart();
    assert!(
        first.is_running(),
        "the directory is free once the first broker stopped"
    );
    first.stop();
}
