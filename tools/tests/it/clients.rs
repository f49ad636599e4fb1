//! Independent clients: Debian's kcat (librdkafka 2.0) and kafka-python.

use std::process::Command;
use std::time::Duration;

use crate::harness::{run, run_with_input, Broker};
use crate::topics::create_topic;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn kcat_produces_lists_and_consumes() {
    let broker = Broker::start();
    create_topic(&broker.addr, "kcat-topic", 2);
    let lines: Vec<String> = (0..50).map(|i| format!("key{i}:value {i}")).collect();
    let input = lines.join("\n") + "\n";
    for (partition, codec) in [("0", "none"), ("1", "snappy")] {
        run_with_input(
            Command::new("kcat").args([
                "-b",
                &broker.addr,
                "-t",
                "kcat-topic",
                "-P",
                "-K:",
                "-p",
                partition,
                "-z",
                codec,
            ]),
            input.as_bytes(),
            CLIENT_TIMEOUT,
        );
    }
    let listing = run(
        Command::new("kcat").args(["-b", &broker.addr, "-L", "-t", "kcat-topic"]),
        CLIENT_TIMEOUT,
    );
    assert!(
        listing.contains("topic \"kcat-topic\" with 2 partitions"),
        "{listing}"
    );

    for partition in ["0", "1"] {
        let out = run(
            Command::new("kcat").args([
                "-b",
                &broker.addr,
                "-t",
                "kcat-topic",
                "-C",
                "-p",
                partition,
                "-o",
                "beginning",
                "-e",
                "-f",
                "%k=%s@%o\n",
            ]),
            CLIENT_TIMEOUT,
        );
        let expected: String = (0..50).map(|i| format!("key{i}=value {i}@{i}\n")).collect();
        assert_eq!(out, expected, "partition {partition}");
    }
    // Consume from an offset in the middle.
    let out = run(
        Command::new("kcat").args([
            "-b",
            &broker.addr,
            "-t",
            "kcat-topic",
            "-C",
            "-p",
            "0",
            "-o",
            "45",
            "-e",
            "-f",
            "%s\n",
        ]),
        CLIENT_TIMEOUT,
    );
    assert_eq!(
        out,
        (45..50).map(|i| format!("value {i}\n")).collect::<String>()
    );
}

#[test]
fn kafka_python_round_trip() {
    let broker = Broker::start();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/kafka_python_roundtrip.py"
    );
    let out = run(
        Command::new("python3").args([script, &broker.addr, "py-topic", "40"]),
        CLIENT_TIMEOUT,
    );
    let mut expected: Vec<(i32, i64, String)> = (0..40)
        .map(|i: i64| {
            let p = (i % 2) as i32;
            let line = format!(
                "{p} {} k{i} v{i} [('n', '{i}')] {}",
                i / 2,
                1_600_000_000_000i64 + i
            );
            (p, i / 2, line)
        })
        .collect();
    expected.sort();
    let expected: String = expected
        .into_iter()
        .map(|(_, _, l)| l + "\n")
        .collect::<String>()
        + "total 40\n";
    assert_eq!(out, expected);
}
