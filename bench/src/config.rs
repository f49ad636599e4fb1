//! What a run does: the command-line knobs, the presets they start from, and
//! the resolved [`Workload`] every other module reads.
//!
//! A preset fills every knob; a flag given on the command line overrides the
//! preset's value. Resolution checks every bound once, so the producer and
//! consumer code can rely on them.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use serde::Serialize;
use sluice_wire::batch::Compression;

/// Largest message the generator makes (key + value), far below any broker's
/// request limit once batched.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// Largest batch the generator builds per partition.
pub const BATCH_BYTES_MAX: usize = 8 << 20;
/// Most requests one connection may have unanswered.
pub const IN_FLIGHT_MAX: usize = 64;
/// Most producer or consumer clients one run may start.
pub const CLIENTS_MAX: usize = 1024;
/// Most partitions of the benchmark topics.
pub const PARTITIONS_MAX: i32 = 10_000;
const _: () = assert!(MESSAGE_BYTES_MAX <= BATCH_BYTES_MAX);

/// `sluice bench` flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    /// Brokers to bootstrap from (host:port, comma-separated). Without it, a
    /// Sluice broker is started in a temporary directory on this machine.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Workload to start from: omb-max, omb-latency, logs or metrics [default: omb-max].
    #[arg(long)]
    pub preset: Option<String>,
    /// Total messages to produce (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    pub messages: Option<u64>,
    /// Seconds to produce for, warm-up included [default: 30].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds at the start whose latency and throughput are not reported.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Value bytes per message: a number (1024) or a range (100-2000).
    #[arg(long)]
    pub size: Option<String>,
    /// Acknowledgements: 0, 1 or all.
    #[arg(long)]
    pub acks: Option<String>,
    /// Check that every acknowledged message was consumed exactly once.
    #[arg(long)]
    pub verify: bool,
    /// Write every figure and the configuration as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write a self-contained HTML report to this file.
    #[arg(long)]
    pub html: Option<std::path::PathBuf>,
    /// Measure raw direct-I/O write and read bandwidth of this directory's disk first.
    #[arg(long)]
    pub disk_baseline: Option<std::path::PathBuf>,
    /// Bytes the disk baseline writes and reads back [default: 1 GiB].
    #[arg(long)]
    pub disk_baseline_bytes: Option<u64>,
    /// Topics to spread the load over.
    #[arg(long)]
    pub topics: Option<usize>,
    /// Partitions per topic.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// Name of the (first) topic; more topics get a suffix [default: a fresh name].
    #[arg(long)]
    pub topic: Option<String>,
    /// Keys: none, random or zipf (skewed, over --key-space keys).
    #[arg(long)]
    pub keys: Option<String>,
    /// Distinct keys for random and zipf keys.
    #[arg(long)]
    pub key_space: Option<u64>,
    /// Producer clients.
    #[arg(long)]
    pub producers: Option<usize>,
    /// Consumer clients, in one consumer group (0: produce only).
    #[arg(long)]
    pub consumers: Option<usize>,
    /// Rate over all producers: msgs/s (50000), MB/s (100MB/s) or max.
    #[arg(long)]
    pub rate: Option<String>,
    /// Compression: none, lz4, zstd, snappy or gzip.
    #[arg(long)]
    pub compression: Option<String>,
    /// Bytes per partition batch before it is sent.
    #[arg(long)]
    pub batch_bytes: Option<usize>,
    /// Milliseconds a partly filled batch may wait for more messages.
    #[arg(long)]
    pub linger_ms: Option<f64>,
    /// Unanswered requests per connection.
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Executor threads for producers and consumers [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of every random choice (payloads, keys, sizes).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Data directory of the embedded broker [default: a temporary directory].
    #[arg(long)]
    pub embedded_data_dir: Option<std::path::PathBuf>,
    /// Shards of the embedded broker [default: one per core].
    #[arg(long)]
    pub embedded_shards: Option<usize>,
}

/// How many messages a run produces.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Length {
    Messages(u64),
    Duration(#[serde(serialize_with = "secs")] Duration),
}

/// How fast producers send, over all producers together.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rate {
    Max,
    MsgsPerS(f64),
    MbPerS(f64),
}

/// Value sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SizeRange {
    pub bytes_min: usize,
    pub bytes_max: usize,
}

/// How message keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyDist {
    None,
    Random,
    Zipf,
}

/// What message values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// Incompressible random bytes.
    Random,
    /// Text log lines keyed by host.
    LogLines,
    /// Metric samples in line protocol keyed by series.
    MetricSamples,
}

/// Acknowledgements asked of the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Acks {
    #[serde(rename = "0")]
    None,
    #[serde(rename = "1")]
    Leader,
    #[serde(rename = "all")]
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// A fully resolved run.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    pub preset: String,
    pub length: Length,
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    pub size: SizeRange,
    pub acks: Acks,
    pub verify: bool,
    pub topics: Vec<String>,
    pub partitions: i32,
    pub keys: KeyDist,
    pub key_space: u64,
    pub payload: PayloadKind,
    pub producers: usize,
    pub consumers: usize,
    pub rate: Rate,
    #[serde(serialize_with = "codec_name")]
    pub compression: Compression,
    pub batch_bytes: usize,
    #[serde(serialize_with = "secs")]
    pub linger: Duration,
    pub max_in_flight: usize,
    pub threads: usize,
    pub seed: u64,
    pub group: String,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn codec_name<S: serde::Serializer>(c: &Compression, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(compression_name(*c))
}

pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// The preset names, for help and errors.
pub const PRESETS: [&str; 4] = ["omb-max", "omb-latency", "logs", "metrics"];

/// The defaults a preset stands for, before flags override them.
fn preset(name: &str) -> anyhow::Result<Workload> {
    // OpenMessaging Benchmark's Kafka workloads: one topic of 16 partitions,
    // 1 KiB random payloads, no keys, acks=all; "max" drives as hard as
    // possible, the latency variant at a fixed rate well below that.
    let omb = Workload {
        preset: name.to_string(),
        length: Length::Duration(Duration::from_secs(30)),
        warmup: Duration::from_secs(5),
        size: SizeRange {
            bytes_min: 1024,
            bytes_max: 1024,
        },
        acks: Acks::All,
        verify: false,
        topics: Vec::new(),
        partitions: 16,
        keys: KeyDist::None,
        key_space: 0,
        payload: PayloadKind::Random,
        producers: 2,
        consumers: 2,
        rate: Rate::Max,
        compression: Compression::None,
        batch_bytes: 128 * 1024,
        linger: Duration::from_millis(1),
        max_in_flight: 5,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        seed: 0x5eed_5e1c,
        group: String::new(),
    };
    Ok(match name {
        "omb-max" => omb,
        "omb-latency" => Workload {
            rate: Rate::MsgsPerS(50_000.0),
            ..omb
        },
        // Service logs: lines of a few hundred bytes from 500 hosts, a few
        // hosts much busier than the rest, compressed, acks=1.
        "logs" => Workload {
            size: SizeRange {
                bytes_min: 120,
                bytes_max: 600,
            },
            acks: Acks::Leader,
            partitions: 8,
            keys: KeyDist::Zipf,
            key_space: 500,
            payload: PayloadKind::LogLines,
            compression: Compression::Lz4,
            batch_bytes: 256 * 1024,
            linger: Duration::from_millis(5),
            ..omb
        },
        // Metric samples: short lines, 10,000 series keyed by series name.
        "metrics" => Workload {
            size: SizeRange {
                bytes_min: 60,
                bytes_max: 160,
            },
            acks: Acks::Leader,
            partitions: 8,
            keys: KeyDist::Zipf,
            key_space: 10_000,
            payload: PayloadKind::MetricSamples,
            compression: Compression::Zstd,
            batch_bytes: 256 * 1024,
            linger: Duration::from_millis(5),
            ..omb
        },
        other => bail!(
            "unknown preset {other:?}; presets are {}",
            PRESETS.join(", ")
        ),
    })
}

fn parse_size(text: &str) -> anyhow::Result<SizeRange> {
    let (lo, hi) = match text
        .split_once(['-', ':'])
        .or_else(|| text.split_once(".."))
    {
        Some((lo, hi)) => (lo.trim(), hi.trim().trim_start_matches('.')),
        None => (text.trim(), text.trim()),
    };
    let bytes_min: usize = lo.parse().with_context(|| format!("--size {text:?}"))?;
    let bytes_max: usize = hi.parse().with_context(|| format!("--size {text:?}"))?;
    ensure!(
        bytes_min <= bytes_max,
        "--size {text:?}: minimum above maximum"
    );
    ensure!(
        bytes_max <= MESSAGE_BYTES_MAX,
        "--size {text:?}: at most {MESSAGE_BYTES_MAX} bytes"
    );
    Ok(SizeRange {
        bytes_min,
        bytes_max,
    })
}

fn parse_rate(text: &str) -> anyhow::Result<Rate> {
    let t = text.trim().to_ascii_lowercase();
    if t == "max" {
        return Ok(Rate::Max);
    }
    let (number, rate): (&str, fn(f64) -> Rate) = if let Some(n) = t.strip_suffix("mb/s") {
        (n, Rate::MbPerS)
    } else {
        (t.strip_suffix("/s").unwrap_or(&t), Rate::MsgsPerS)
    };
    let v: f64 = number
        .trim()
        .parse()
        .with_context(|| format!("--rate {text:?}: a number of msgs/s, N MB/s or max"))?;
    ensure!(v.is_finite() && v > 0.0, "--rate {text:?} must be positive");
    Ok(rate(v))
}

pub fn parse_compression(text: &str) -> anyhow::Result<Compression> {
    Ok(match text {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => bail!("unknown compression {other:?}: none, lz4, zstd, snappy or gzip"),
    })
}

impl BenchArgs {
    /// The preset named by `--preset`, with every given flag applied.
    pub fn resolve(&self) -> anyhow::Result<Workload> {
        let mut w = preset(self.preset.as_deref().unwrap_or("omb-max"))?;
        w.seed = self.seed.unwrap_or(w.seed);
        if let Some(n) = self.messages {
            ensure!(n > 0, "--messages must be at least 1");
            w.length = Length::Messages(n);
            w.warmup = Duration::ZERO;
        }
        if let Some(s) = self.duration {
            ensure!(s.is_finite() && s > 0.0, "--duration must be positive");
            w.length = Length::Duration(Duration::from_secs_f64(s));
            w.warmup = Duration::from_secs_f64((s / 6.0).min(5.0));
        }
        if let Some(s) = self.warmup {
            ensure!(s.is_finite() && s >= 0.0, "--warmup must not be negative");
            w.warmup = Duration::from_secs_f64(s);
        }
        if let Length::Duration(d) = w.length {
            ensure!(w.warmup < d, "--warmup must be shorter than --duration");
        }
        if let Some(s) = &self.size {
            w.size = parse_size(s)?;
        }
        if let Some(a) = &self.acks {
            w.acks = match a.as_str() {
                "0" => Acks::None,
                "1" => Acks::Leader,
                "all" | "-1" => Acks::All,
                other => bail!("--acks {other:?}: 0, 1 or all"),
            };
        }
        w.verify = self.verify;
        if w.verify {
            ensure!(
                w.acks != Acks::None,
                "--verify needs acknowledgements: --acks 1 or all"
            );
        }
        let topic_count = self.topics.unwrap_or(1);
        ensure!(
            (1..=1000).contains(&topic_count),
            "--topics must be 1 to 1000"
        );
        let base = match &self.topic {
            Some(t) => t.clone(),
            None => format!("sluice-bench-{:08x}", fresh_suffix(w.seed)),
        };
        w.topics = if topic_count == 1 {
            vec![base]
        } else {
            (0..topic_count).map(|i| format!("{base}-{i}")).collect()
        };
        w.group = format!("{}-group", w.topics[0]);
        if let Some(p) = self.partitions {
            ensure!(
                (1..=PARTITIONS_MAX).contains(&p),
                "--partitions must be 1 to {PARTITIONS_MAX}"
            );
            w.partitions = p;
        }
        if let Some(k) = &self.keys {
            w.keys = match k.as_str() {
                "none" => KeyDist::None,
                "random" => KeyDist::Random,
                "zipf" => KeyDist::Zipf,
                other => bail!("--keys {other:?}: none, random or zipf"),
            };
        }
        if let Some(n) = self.key_space {
            w.key_space = n;
        }
        if w.keys != KeyDist::None {
            if w.key_space == 0 {
                w.key_space = 10_000;
            }
            ensure!(
                (1..=100_000_000).contains(&w.key_space),
                "--key-space must be 1 to 100000000"
            );
        }
        if let Some(n) = self.producers {
            w.producers = n;
        }
        ensure!(
            (1..=CLIENTS_MAX).contains(&w.producers),
            "--producers must be 1 to {CLIENTS_MAX}"
        );
        if let Some(n) = self.consumers {
            w.consumers = n;
        }
        ensure!(
            w.consumers <= CLIENTS_MAX,
            "--consumers must be at most {CLIENTS_MAX}"
        );
        if w.verify {
            ensure!(w.consumers > 0, "--verify needs at least one consumer");
        }
        if let Some(r) = &self.rate {
            w.rate = parse_rate(r)?;
        }
        if let Some(c) = &self.compression {
            w.compression = parse_compression(c)?;
        }
        if let Some(b) = self.batch_bytes {
            w.batch_bytes = b;
        }
        ensure!(
            (1024..=BATCH_BYTES_MAX).contains(&w.batch_bytes),
            "--batch-bytes must be 1024 to {BATCH_BYTES_MAX}"
        );
        if let Some(ms) = self.linger_ms {
            ensure!(
                ms.is_finite() && (0.0..=10_000.0).contains(&ms),
                "--linger-ms must be 0 to 10000"
            );
            w.linger = Duration::from_secs_f64(ms / 1000.0);
        }
        if let Some(n) = self.max_in_flight {
            w.max_in_flight = n;
        }
        ensure!(
            (1..=IN_FLIGHT_MAX).contains(&w.max_in_flight),
            "--max-in-flight must be 1 to {IN_FLIGHT_MAX}"
        );
        if let Some(n) = self.threads {
            w.threads = n;
        }
        ensure!((1..=256).contains(&w.threads), "--threads must be 1 to 256");
        Ok(w)
    }
}

/// A topic-name suffix that differs between runs but is reproducible from
/// the seed and the start time, for humans reading broker logs.
fn fresh_suffix(seed: u64) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (crate::payload::mix64(seed ^ now ^ std::process::id() as u64) >> 32) as u32
}

impl Workload {
    /// Messages per second each producer aims at, if the rate is fixed;
    /// MB/s rates are turned into messages by the mean message size.
    pub fn producer_msgs_per_s(&self) -> Option<f64> {
        let mean_bytes = (self.size.bytes_min + self.size.bytes_max) as f64 / 2.0;
        let total = match self.rate {
            Rate::Max => return None,
            Rate::MsgsPerS(r) => r,
            Rate::MbPerS(mb) => mb * 1e6 / mean_bytes.max(1.0),
        };
        Some(total / self.producers as f64)
    }

    /// Messages each producer sends when the run is counted in messages.
    pub fn producer_messages(&self, producer: usize) -> Option<u64> {
        match self.length {
            Length::Messages(n) => {
                let each = n / self.producers as u64;
                let extra = (producer as u64) < n % self.producers as u64;
                Some(each + extra as u64)
            }
            Length::Duration(_) => None,
        }
    }

    pub fn partition_count_total(&self) -> usize {
        self.topics.len() * self.partitions as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_presets() {
        let args = BenchArgs {
            preset: Some("logs".into()),
            size: Some("100-200".into()),
            rate: Some("25MB/s".into()),
            messages: Some(10),
            ..BenchArgs::default()
        };
        let w = args.resolve().unwrap();
        assert_eq!(w.payload, PayloadKind::LogLines);
        assert_eq!(
            w.size,
            SizeRange {
                bytes_min: 100,
                bytes_max: 200
            }
        );
        assert_eq!(w.rate, Rate::MbPerS(25.0));
        assert_eq!(w.length, Length::Messages(10));
        assert_eq!(w.warmup, Duration::ZERO);
        assert_eq!(w.producer_messages(0), Some(5));
        assert_eq!(w.producer_msgs_per_s(), Some(25e6 / 150.0 / 2.0));
    }

    #[test]
    fn bad_flags_are_refused() {
        for args in [
            BenchArgs {
                preset: Some("nope".into()),
                ..Default::default()
            },
            BenchArgs {
                size: Some("9-1".into()),
                ..Default::default()
            },
            BenchArgs {
                rate: Some("-3".into()),
                ..Default::default()
            },
            BenchArgs {
                acks: Some("2".into()),
                ..Default::default()
            },
            BenchArgs {
                verify: true,
                consumers: Some(0),
                ..Default::default()
            },
            BenchArgs {
                max_in_flight: Some(0),
                ..Default::default()
            },
        ] {
            assert!(args.resolve().is_err(), "{args:?}");
        }
    }
}
