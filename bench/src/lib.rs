//! The Sluice load generator: drives any Kafka-compatible broker through the
//! protocol codec in `sluice_wire`, with its own pipelined producer and
//! consumer on pinned glommio executors, and reports throughput and latency.
//!
//! Modules: `config` (flags, presets, the resolved workload), `payload`
//! (values, keys, the tracking header), `client` (a framed Kafka
//! connection), `cluster` (metadata, topic creation, offsets), `producer`,
//! `consumer`, `stats` (live counters, histograms, sequence sets), `run`
//! (one run end to end), `report` (table, summary line, JSON), `html` (the
//! HTML report) and `disk` (the raw direct-I/O baseline).

pub mod client;
pub mod cluster;
pub mod config;
pub mod consumer;
pub mod disk;
pub mod html;
pub mod payload;
pub mod producer;
pub mod report;
pub mod run;
pub mod stats;

pub use config::{BenchArgs, Workload};

/// Runs `sluice bench` against `brokers` (labelled `target` in reports):
/// optional disk baseline, the run, then the table, the summary line and the
/// requested files. Returns the JSON document.
pub fn execute(
    args: &BenchArgs,
    workload: &Workload,
    brokers: &[String],
    target: &str,
) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let disk = match &args.disk_baseline {
        Some(dir) => {
            let bytes = args.disk_baseline_bytes.unwrap_or(1 << 30);
            eprintln!(
                "measuring raw direct-I/O bandwidth of {} ({} MiB)...",
                dir.display(),
                bytes >> 20
            );
            Some(disk::measure(dir, bytes)?)
        }
        None => None,
    };
    let outcome = run::run(workload, brokers, true)?;
    let doc = report::document(workload, target, &outcome, disk.as_ref());
    print!("{}", report::table(&doc));
    println!("{}", report::summary_line(&doc));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&doc).context("encoding the JSON report")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, html::render(&doc))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(doc)
}
