//! `sluice bench`: a small verified run against the embedded broker, and one
//! against a separately started broker with keys and compression. Only
//! outcomes are asserted, never timings.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{run, Broker};

const BENCH_TIMEOUT: Duration = Duration::from_secs(180);

fn bench(args: &[&str], dir: &std::path::Path) -> (Value, String, String) {
    let json = dir.join("report.json");
    let html = dir.join("report.html");
    let stdout = run(
        Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("bench")
            .args(args)
            .args(["--verify", "--json"])
            .arg(&json)
            .arg("--html")
            .arg(&html),
        BENCH_TIMEOUT,
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
        .expect("valid json");
    let html = std::fs::read_to_string(&html).expect("html written");
    (doc, html, stdout)
}

/// Every figure the report promises is a number.
fn check_figures(doc: &Value, messages: u64) {
    for side in ["produce", "consume"] {
        for key in ["mb_per_s", "msgs_per_s"] {
            let v = doc[side][key]
                .as_f64()
                .unwrap_or_else(|| panic!("{side}.{key}: {doc}"));
            assert!(v > 0.0, "{side}.{key} = {v}");
        }
        assert_eq!(
            doc[side]["messages"].as_u64(),
            Some(messages),
            "{side}.messages"
        );
    }
    for family in ["publish_latency_ms", "e2e_latency_ms"] {
        for key in ["p50", "p90", "p99", "p999", "p9999", "max"] {
            let v = doc[family][key]
                .as_f64()
                .unwrap_or_else(|| panic!("{family}.{key}: {doc}"));
            assert!(v > 0.0, "{family}.{key} = {v}");
        }
        assert_eq!(
            doc[family]["count"].as_u64(),
            Some(messages),
            "{family}.count"
        );
        // Percentiles never decrease.
        let p: Vec<f64> = ["p50", "p90", "p99", "p999", "p9999", "max"]
            .iter()
            .map(|k| doc[family][k].as_f64().unwrap())
            .collect();
        assert!(p.windows(2).all(|w| w[0] <= w[1]), "{family}: {p:?}");
    }
    let v = &doc["verify"];
    assert_eq!(v["passed"], Value::Bool(true), "verify: {v}");
    assert_eq!(v["acked"].as_u64(), Some(messages));
    assert_eq!(v["consumed"].as_u64(), Some(messages));
    assert_eq!(v["missing"].as_u64(), Some(0));
    assert_eq!(v["duplicates"].as_u64(), Some(0));
    assert_eq!(v["checksum_acked"], v["checksum_consumed"]);
}

#[test]
fn verified_run_against_the_embedded_broker() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let (doc, html, stdout) = bench(
        &[
            "--messages",
            "3000",
            "--partitions",
            "4",
            "--producers",
            "2",
            "--consumers",
            "2",
            "--size",
            "512",
            "--disk-baseline",
            disk.to_str().unwrap(),
            "--disk-baseline-bytes",
            "67108864",
        ],
        dir.path(),
    );
    check_figures(&doc, 3000);
    assert!(doc["target"]
        .as_str()
        .unwrap()
        .starts_with("embedded sluice broker"));
    assert_eq!(doc["config"]["partitions"].as_u64(), Some(4));
    assert_eq!(doc["produce"]["bytes"].as_u64(), Some(3000 * 512));
    for key in ["write_mb_per_s", "read_mb_per_s"] {
        let v = doc["disk_baseline"][key]
            .as_f64()
            .unwrap_or_else(|| panic!("disk_baseline.{key}"));
        assert!(v > 0.0);
    }
    assert_eq!(
        std::fs::read_dir(&disk).unwrap().count(),
        0,
        "baseline scratch file removed"
    );
    assert!(stdout.contains("verify: PASSED"), "{stdout}");
    assert!(stdout.contains("RESULT preset=omb-max"), "{stdout}");
    assert!(html.contains("<svg"), "html report has plots");
}

#[test]
fn keyed_compressed_run_against_a_separate_broker() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let (doc, _html, _) = bench(
        &[
            "--brokers",
            &broker.addr,
            "--preset",
            "logs",
            "--messages",
            "4000",
            "--partitions",
            "3",
            "--producers",
            "3",
            "--consumers",
            "1",
            "--rate",
            "20000",
            "--topic",
            "bench-logs",
        ],
        dir.path(),
    );
    check_figures(&doc, 4000);
    assert_eq!(doc["config"]["compression"], "lz4");
    assert_eq!(doc["config"]["keys"], "zipf");
    assert_eq!(doc["target"].as_str(), Some(broker.addr.as_str()));
    // The topic holds exactly the run's messages, read back by librdkafka.
    let total: i64 = (0..3)
        .map(|p| crate::storage::watermarks(&broker.addr, "bench-logs", p))
        .map(|(low, high)| high - low)
        .sum();
    assert_eq!(total, 4000);
}
