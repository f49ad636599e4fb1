//! What a run prints and writes: the final table, the one-line summary, the
//! JSON document holding every figure and the full configuration, and (via
//! [`crate::html`]) the HTML report built from that same document.
//!
//! Units: MB is 10^6 bytes of message payload (key + value), never the
//! bench's tracking header or Kafka's batch framing; latencies are in
//! milliseconds.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::config::Workload;
use crate::disk::DiskBaseline;
use crate::run::Outcome;

/// Percentiles of the latency curves in the JSON and the HTML plot.
const CURVE_PERCENTILES: [f64; 16] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999,
    99.9999, 100.0,
];

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn latency_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({"count": 0, "p50": null, "p90": null, "p99": null, "p999": null, "p9999": null, "max": null, "mean": null});
    }
    json!({
        "count": h.len(),
        "p50": ms(h.value_at_quantile(0.50)),
        "p90": ms(h.value_at_quantile(0.90)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "p9999": ms(h.value_at_quantile(0.9999)),
        "max": ms(h.max()),
        "mean": h.mean() / 1e6,
    })
}

fn curve_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!([]);
    }
    Value::Array(
        CURVE_PERCENTILES
            .iter()
            .map(|p| json!({"percentile": p, "ms": ms(h.value_at_quantile(p / 100.0))}))
            .collect(),
    )
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The machine the run happened on, as far as Linux tells.
pub fn machine() -> Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let mem_total_kib = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    });
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": cpu_model,
        "memory_gib": mem_total_kib.map(|k| (k as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0),
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
        "hostname": read_trimmed("/proc/sys/kernel/hostname"),
    })
}

/// The whole JSON document of a run.
pub fn document(
    w: &Workload,
    target: &str,
    outcome: &Outcome,
    disk: Option<&DiskBaseline>,
) -> Value {
    let mut doc = json!({
        "title": format!("sluice bench: {}", w.preset),
        "sluice_bench_version": env!("CARGO_PKG_VERSION"),
        "started_at_unix_s": outcome.started_at_unix_s,
        "machine": machine(),
        "target": target,
        "config": w,
        "units": {
            "mb": "10^6 bytes of message payload (key + value)",
            "latency": "milliseconds",
            "publish_latency": "from the intended send time to the acknowledgement",
            "e2e_latency": "from the intended send time to the consumer reading the message",
        },
        "produce": outcome.produce,
        "consume": outcome.consume,
        "publish_latency_ms": latency_json(&outcome.publish_ns),
        "e2e_latency_ms": latency_json(&outcome.e2e_ns),
        "publish_latency_curve": curve_json(&outcome.publish_ns),
        "e2e_latency_curve": curve_json(&outcome.e2e_ns),
        "timeline": outcome.timeline,
        "verify": outcome.verdict,
        "rebalances": outcome.rebalances,
        "first_error": outcome.first_error,
    });
    if let Some(d) = disk {
        doc["disk_baseline"] = json!(d);
        doc["produce"]["fraction_of_disk_write"] =
            json!(outcome.produce.mb_per_s / d.write_mb_per_s);
        doc["consume"]["fraction_of_disk_read"] = json!(outcome.consume.mb_per_s / d.read_mb_per_s);
    }
    doc
}

fn fmt_ms(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.3}"))
}

/// The human-readable summary printed at the end of a run.
pub fn table(doc: &Value) -> String {
    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "{}  (target: {})",
            doc["title"].as_str().unwrap_or(""),
            doc["target"].as_str().unwrap_or("")
        ),
    );
    line(
        &mut out,
        "MB = 10^6 bytes of payload (key + value); latency in ms".into(),
    );
    line(
        &mut out,
        format!(
            "{:<10} {:>12} {:>12} {:>10} {:>10}",
            "", "msgs/s", "MB/s", "messages", "errors"
        ),
    );
    for side in ["produce", "consume"] {
        let d = &doc[side];
        line(
            &mut out,
            format!(
                "{:<10} {:>12.0} {:>12.2} {:>10} {:>10}",
                side,
                d["msgs_per_s"].as_f64().unwrap_or(0.0),
                d["mb_per_s"].as_f64().unwrap_or(0.0),
                d["messages"].as_u64().unwrap_or(0),
                d["errors"].as_u64().unwrap_or(0),
            ),
        );
    }
    line(
        &mut out,
        format!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        ),
    );
    for (name, key) in [("publish", "publish_latency_ms"), ("e2e", "e2e_latency_ms")] {
        let d = &doc[key];
        line(
            &mut out,
            format!(
                "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                name,
                fmt_ms(&d["p50"]),
                fmt_ms(&d["p90"]),
                fmt_ms(&d["p99"]),
                fmt_ms(&d["p999"]),
                fmt_ms(&d["p9999"]),
                fmt_ms(&d["max"]),
            ),
        );
    }
    if let Some(d) = doc.get("disk_baseline") {
        line(
            &mut out,
            format!(
                "disk baseline ({}): write {:.1} MB/s, read {:.1} MB/s; produce = {:.1}% of disk write",
                d["dir"].as_str().unwrap_or(""),
                d["write_mb_per_s"].as_f64().unwrap_or(0.0),
                d["read_mb_per_s"].as_f64().unwrap_or(0.0),
                doc["produce"]["fraction_of_disk_write"].as_f64().unwrap_or(0.0) * 100.0,
            ),
        );
    }
    let v = &doc["verify"];
    if v["enabled"].as_bool() == Some(true) {
        line(
            &mut out,
            format!(
                "verify: {} (acked {}, consumed {}, missing {}, duplicates {}, unexpected {}, checksums {} / {})",
                if v["passed"].as_bool() == Some(true) { "PASSED" } else { "FAILED" },
                v["acked"],
                v["consumed"],
                v["missing"],
                v["duplicates"],
                v["unexpected"],
                v["checksum_acked"].as_str().unwrap_or(""),
                v["checksum_consumed"].as_str().unwrap_or(""),
            ),
        );
    }
    if let Some(e) = doc["first_error"].as_str() {
        line(&mut out, format!("first produce error: {e}"));
    }
    out
}

/// The fixed-format line a script can grep: throughput, publish latency in
/// microseconds, seed and the build's commit.
pub fn summary_line(doc: &Value) -> String {
    let us = |k: &str| {
        doc["publish_latency_ms"][k]
            .as_f64()
            .map_or("-".into(), |v| format!("{:.0}", v * 1000.0))
    };
    format!(
        "RESULT preset={} produce_mb_per_s={:.2} consume_mb_per_s={:.2} p50_us={} p99_us={} p999_us={} seed={} commit={}",
        doc["config"]["preset"].as_str().unwrap_or(""),
        doc["produce"]["mb_per_s"].as_f64().unwrap_or(0.0),
        doc["consume"]["mb_per_s"].as_f64().unwrap_or(0.0),
        us("p50"),
        us("p99"),
        us("p999"),
        doc["config"]["seed"],
        option_env!("SLUICE_COMMIT").unwrap_or("unknown"),
    )
}
