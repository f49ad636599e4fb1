//! `sluice bench-engine`: the storage engine alone on one disk, beside the
//! raw direct-I/O bandwidth of the same disk measured in the same run.
//!
//! For batch sizes of 1 KiB and 16 KiB it appends `--group-bytes` of batches
//! per `Log::append` call from `--appenders` concurrent tasks (as a shard
//! does for concurrent produce requests), once with `Durability::Written`
//! (no fdatasync) and once with `Durability::Synced` (every group synced;
//! concurrent groups share an fdatasync). Synced phases are also quoted
//! against the disk's synced write bandwidth (every 1 MiB write followed by
//! its own fdatasync, from as many writers), measured beside them too. It
//! then reads the 16 KiB log back from the start with `--readers`
//! concurrent sequential readers, each over its own range, from a freshly
//! opened log, so reads reach the disk.
//!
//! Logs get the tail cache share of one shard of a broker with default
//! settings (`--cache-bytes`); the cache copies writes only while a reader
//! follows the tail, which `--tail-reader` adds to each append phase. The
//! engine's executor registers as much memory for direct-I/O buffers as a
//! broker shard does (`--io-memory-bytes`). The defaults keep as many bytes
//! in flight as the baseline does (8 x 1 MiB).
//!
//! Throughput counts whole batch bytes as stored; MB is 10^6 bytes. The
//! disk under test is shared and noisy, so the whole sequence runs
//! `--rounds` times, each round beside its own baseline, and the medians are
//! reported. `--phases` runs only some phases, so that one can be measured
//! over many rounds. The harness lives in tools because it joins the engine
//! with the bench crate's disk baseline, and only tools may depend on both.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use sluice_bench::disk::DiskBaseline;
use sluice_engine::{
    Durability, LeaderEpoch, Log, LogConfig, LogContext, Offset, SystemClock, TailCacheBudget,
};
use sluice_wire::batch::Compression;
use sluice_wire::records::BatchBuilder;

/// The phases `--phases` may name, in the order they run.
const PHASES: [&str; 5] = [
    "append-1k-written",
    "append-1k-synced",
    "append-16k-written",
    "append-16k-synced",
    "read",
];

/// Bytes asked of each `Log::read`.
const READ_BYTES: usize = 1 << 20;

#[derive(clap::Args)]
pub struct EngineBenchArgs {
    /// Directory on the disk to measure (a scratch subdirectory is made and removed).
    #[arg(long)]
    dir: PathBuf,
    /// Bytes each phase writes [default: 1 GiB].
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Concurrent appending tasks, as concurrent produce requests of a shard.
    #[arg(long, default_value_t = 8)]
    appenders: usize,
    /// Bytes each appender hands to one `Log::append` call.
    #[arg(long, default_value_t = 1 << 20)]
    group_bytes: usize,
    /// Concurrent sequential readers in the read phase.
    #[arg(long, default_value_t = 8)]
    readers: usize,
    /// Tail cache budget of the log [default: the broker's default budget
    /// over this machine's cores, as one shard has].
    #[arg(long)]
    cache_bytes: Option<usize>,
    /// Memory the engine's executor registers for direct-I/O buffers
    /// [default: a broker shard's default].
    #[arg(long)]
    io_memory_bytes: Option<usize>,
    /// In each append phase, one more task reads the log from the start as
    /// it grows, as a consumer that keeps up does (its reads come from the
    /// tail cache, which then copies every write).
    #[arg(long)]
    tail_reader: bool,
    /// Split each append phase into this many parts, with a raw baseline of
    /// the part's bytes beside each, so that the engine and the disk see
    /// the same stretches of a noisy machine.
    #[arg(long, default_value_t = 1)]
    slices: usize,
    /// Rounds of baseline and phases; the medians of the rounds are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Phases to run: append-1k-written, append-1k-synced,
    /// append-16k-written, append-16k-synced, read (which reads the log of
    /// the last append phase run) [default: all of them].
    #[arg(long, value_delimiter = ',', value_parser = PHASES)]
    phases: Vec<String>,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct Phase {
    name: String,
    batch_bytes: usize,
    durability: &'static str,
    bytes: u64,
    seconds: f64,
    mb_per_s: f64,
    fraction_of_disk: f64,
    /// Synced appends: the raw synced write bandwidth beside the phase.
    synced_disk_mb_per_s: Option<f64>,
    fraction_of_synced_disk: Option<f64>,
}

/// The engine's error holds glommio errors that are not `Sync`; keep its text.
fn engine(e: sluice_engine::Error) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// One batch of about `bytes` bytes holding 1 KiB-ish records.
fn batch_of(bytes: usize) -> Bytes {
    let records = (bytes / 1024).max(1);
    let overhead = 61 + records * 12;
    let value_bytes = (bytes - overhead.min(bytes - 1)) / records;
    let value = vec![0x42u8; value_bytes];
    let mut b = BatchBuilder::new(1_700_000_000_000, bytes);
    for _ in 0..records {
        b.push(1_700_000_000_000, None, Some(&value), &[]);
    }
    b.finish(Compression::None)
}

/// A log with default settings and a tail cache of `cache_bytes`.
async fn open_log(dir: &Path, cache_bytes: usize) -> anyhow::Result<Rc<Log>> {
    let context = LogContext {
        clock: Rc::new(SystemClock),
        cache_budget: Rc::new(TailCacheBudget::new(cache_bytes)),
        io_ring: Rc::default(),
    };
    let log = Log::open(dir.to_path_buf(), LogConfig::default(), context)
        .await
        .map_err(|e| anyhow::anyhow!("opening a log in {}: {e}", dir.display()))?;
    Ok(Rc::new(log))
}

/// How the append phases load the log.
#[derive(Clone, Copy)]
struct Shape {
    appenders: usize,
    group_bytes: usize,
    cache_bytes: usize,
    tail_reader: bool,
    slices: usize,
}

/// Appends `bytes_total` of `batch` in `shape.slices` parts, with the raw
/// disk measured beside each part (see [`beside`]): before it in odd
/// rounds, after it in even ones. Returns the joined baselines, the bytes
/// appended (whole groups) and the seconds the parts took, summed.
async fn append_phase(
    dir: &Path,
    batch: &Bytes,
    bytes_total: u64,
    durability: Durability,
    shape: Shape,
    (root, round): (&Path, usize),
) -> anyhow::Result<(Beside, u64, f64)> {
    let log = open_log(dir, shape.cache_bytes).await?;
    let group: Vec<Bytes> = (0..(shape.group_bytes / batch.len()).max(1))
        .map(|_| batch.clone())
        .collect();
    let (header, _) = sluice_wire::batch::split(batch)?
        .into_iter()
        .next()
        .context("the benchmark's batch parses")?;
    let group_offsets = group.len() as u64 * (header.last_offset_delta as u64 + 1);
    let group_bytes = (group.len() * batch.len()) as u64;
    let groups_total = bytes_total.div_ceil(group_bytes);
    let slices = (shape.slices as u64).clamp(1, groups_total);
    let synced = durability == Durability::Synced;
    let appenders = shape.appenders as u64;
    let mut raws = Vec::new();
    let mut seconds = 0.0;
    for k in 0..slices {
        let (lo, hi) = (groups_total * k / slices, groups_total * (k + 1) / slices);
        let slice_bytes = (hi - lo) * group_bytes;
        let slice = async {
            let started = Instant::now();
            let tasks: Vec<_> = (0..appenders)
                .map(|lane| {
                    let log = log.clone();
                    let group = group.clone();
                    glommio::spawn_local(async move {
                        let mut n = lo + lane;
                        while n < hi {
                            log.append(&group, LeaderEpoch(0), durability).await?;
                            n += appenders;
                        }
                        Ok::<(), sluice_engine::Error>(())
                    })
                })
                .collect();
            let (from, to) = ((lo * group_offsets) as i64, (hi * group_offsets) as i64);
            let reader = shape
                .tail_reader
                .then(|| glommio::spawn_local(follow(log.clone(), Offset(from), Offset(to))));
            for t in tasks {
                t.await.map_err(|e| anyhow::anyhow!("appending: {e}"))?;
            }
            if let Some(reader) = reader {
                reader.await?;
            }
            Ok(started.elapsed().as_secs_f64())
        };
        let (raw, slice_seconds) = beside(root, slice_bytes, synced, round, slice).await?;
        raws.push(raw);
        seconds += slice_seconds;
    }
    log.close().await.map_err(engine)?;
    Ok((join_raws(raws), groups_total * group_bytes, seconds))
}

/// The offset after the last batch of a read.
///
/// It walks the batch headers and keeps none: a broker serving a fetch does
/// no per-batch work at all, so the reader should cost the engine's shard
/// as little as it can (cutting the read into `Bytes` slices with
/// `sluice_wire::batch::split` took a tenth of the thread with 1 KiB batches).
fn offset_after(read: &[u8]) -> anyhow::Result<i64> {
    let mut pos = 0;
    let mut after = None;
    // Each pass moves past one batch of at least a header's length.
    while pos < read.len() {
        let header = sluice_wire::batch::BatchHeader::parse(&read[pos..])?;
        after = Some(header.base_offset + header.last_offset_delta as i64 + 1);
        pos += header.total_len();
    }
    anyhow::ensure!(pos == read.len(), "a read ends with a whole batch");
    after.context("no batch read")
}

/// Reads the log from `from` up to `to` as it is written, as a consumer
/// that keeps up does; at the high watermark it waits a millisecond.
async fn follow(log: Rc<Log>, from: Offset, to: Offset) -> anyhow::Result<()> {
    let mut at = from.0;
    // Each pass reads at least one batch or waits; the appenders reach `to`
    // or fail, and a failed log fails the read.
    while at < to.0 {
        let read = log.read(Offset(at), READ_BYTES).await.map_err(engine)?;
        if read.bytes.is_empty() {
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        }
        at = offset_after(&read.bytes)?;
    }
    Ok(())
}

async fn read_phase(dir: &Path, readers: usize, cache_bytes: usize) -> anyhow::Result<(u64, f64)> {
    let log = open_log(dir, cache_bytes).await?;
    let end = log.log_end_offset().0;
    let started = Instant::now();
    let readers = readers.max(1) as i64;
    let tasks: Vec<_> = (0..readers)
        .map(|lane| {
            let log = log.clone();
            let (from, to) = (end * lane / readers, end * (lane + 1) / readers);
            glommio::spawn_local(async move {
                let mut at = from;
                let mut bytes = 0u64;
                while at < to {
                    let read = log.read(Offset(at), READ_BYTES).await.map_err(engine)?;
                    anyhow::ensure!(!read.bytes.is_empty(), "empty read at offset {at} of {end}");
                    at = offset_after(&read.bytes)?;
                    bytes += read.bytes.len() as u64;
                }
                Ok(bytes)
            })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    log.close().await.map_err(engine)?;
    Ok((bytes, seconds))
}

/// What the raw disk did beside a phase.
struct Beside {
    disk: DiskBaseline,
    /// The synced write bandwidth, if asked for.
    synced: Option<f64>,
}

/// Measures the raw disk with `bytes` (its synced write bandwidth too if
/// `synced`). It runs on a thread of its own and blocks the caller's
/// executor meanwhile, so it is called when the engine has no I/O left in
/// flight.
fn measure_raw(dir: &Path, bytes: u64, synced: bool) -> anyhow::Result<Beside> {
    Ok(Beside {
        disk: sluice_bench::disk::measure(dir, bytes)?,
        synced: if synced {
            Some(sluice_bench::disk::measure_synced(dir, bytes)?)
        } else {
            None
        },
    })
}

/// The baselines of several parts as one: each bandwidth is the parts'
/// bytes over their summed seconds.
fn join_raws(parts: Vec<Beside>) -> Beside {
    let bytes: u64 = parts.iter().map(|p| p.disk.bytes).sum();
    let seconds = |mb_per_s: &dyn Fn(&Beside) -> f64| -> f64 {
        parts
            .iter()
            .map(|p| p.disk.bytes as f64 / 1e6 / mb_per_s(p))
            .sum()
    };
    let over = |s: f64| bytes as f64 / 1e6 / s.max(1e-9);
    let write_mb_per_s = over(seconds(&|p| p.disk.write_mb_per_s));
    let read_mb_per_s = over(seconds(&|p| p.disk.read_mb_per_s));
    let synced = parts
        .iter()
        .map(|p| Some(p.disk.bytes as f64 / 1e6 / p.synced?))
        .sum::<Option<f64>>()
        .map(over);
    let first = &parts[0].disk;
    Beside {
        disk: DiskBaseline {
            dir: first.dir.clone(),
            bytes,
            block_bytes: first.block_bytes,
            in_flight: first.in_flight,
            write_mb_per_s,
            read_mb_per_s,
        },
        synced,
    }
}

/// Measures the raw disk beside a phase: just before it in odd rounds,
/// just after it in even ones, so that neither side always runs first.
async fn beside<T>(
    dir: &Path,
    bytes: u64,
    synced: bool,
    round: usize,
    phase: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<(Beside, T)> {
    if round % 2 == 1 {
        let disk = measure_raw(dir, bytes, synced)?;
        Ok((disk, phase.await?))
    } else {
        let out = phase.await?;
        Ok((measure_raw(dir, bytes, synced)?, out))
    }
}

/// The log's tail cache budget: as asked, else one shard's part of a
/// default broker's.
fn cache_bytes(args: &EngineBenchArgs) -> usize {
    args.cache_bytes.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        sluice_shards::BrokerConfig::default().tail_cache_bytes / cores
    })
}

/// Memory the engine's executor registers for direct-I/O buffers: as
/// asked, else a default broker shard's.
fn io_memory(args: &EngineBenchArgs) -> usize {
    args.io_memory_bytes
        .unwrap_or_else(|| sluice_shards::BrokerConfig::default().shard_io_memory())
}

/// One round: every phase, each quoted against a raw disk baseline
/// measured beside it.
fn round(args: &EngineBenchArgs, round: usize) -> anyhow::Result<Vec<(DiskBaseline, Phase)>> {
    let scratch = tempfile::Builder::new()
        .prefix("sluice-engine-bench-")
        .tempdir_in(&args.dir)
        .context("creating the scratch directory")?;
    let root = scratch.path().to_path_buf();
    let bytes = args.bytes;
    let cache_bytes = cache_bytes(args);
    let shape = Shape {
        appenders: args.appenders.max(1),
        group_bytes: args.group_bytes.max(1),
        cache_bytes,
        tail_reader: args.tail_reader,
        slices: args.slices.max(1),
    };
    let readers = args.readers;
    let wanted = |phase: &str| args.phases.is_empty() || args.phases.iter().any(|p| p == phase);
    let appends: Vec<(usize, Durability, &'static str)> = [1024usize, 16 << 10]
        .into_iter()
        .flat_map(|b| {
            [
                (b, Durability::Written, "written"),
                (b, Durability::Synced, "synced"),
            ]
        })
        .filter(|(b, _, name)| wanted(&format!("append-{}k-{name}", b >> 10)))
        .collect();
    let read = wanted("read");
    anyhow::ensure!(
        !read || !appends.is_empty(),
        "the read phase reads the log of an append phase; name one too"
    );
    let io_memory = io_memory(args);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("engine-bench")
        .io_memory(io_memory)
        .spawn(move || async move {
            sluice_engine::prime_direct_io(&root, ".probe")
                .await
                .map_err(engine)?;
            let mut phases = Vec::new();
            let last = appends.len().saturating_sub(1);
            let mut kept = None;
            for (i, (batch_bytes, durability, name)) in appends.into_iter().enumerate() {
                let dir = root.join(format!("append-{batch_bytes}-{name}"));
                let batch = batch_of(batch_bytes);
                eprintln!(
                    "round {round}: appending {} MiB of {batch_bytes}-byte batches, {name}, beside the raw disk...",
                    bytes >> 20
                );
                let (raw, written, seconds) =
                    append_phase(&dir, &batch, bytes, durability, shape, (&root, round)).await?;
                let disk = raw.disk;
                let mb_per_s = written as f64 / 1e6 / seconds;
                let fraction_of_disk = mb_per_s / disk.write_mb_per_s;
                phases.push((
                    disk,
                    Phase {
                        name: format!("append {batch_bytes} B batches"),
                        batch_bytes: batch.len(),
                        durability: name,
                        bytes: written,
                        seconds,
                        mb_per_s,
                        fraction_of_disk,
                        synced_disk_mb_per_s: raw.synced,
                        fraction_of_synced_disk: raw.synced.map(|d| mb_per_s / d),
                    },
                ));
                if i == last && read {
                    kept = Some((dir, batch_bytes));
                } else {
                    std::fs::remove_dir_all(&dir)?;
                }
            }
            let Some((log_dir, batch_bytes)) = kept else {
                return Ok(phases);
            };
            eprintln!(
                "round {round}: reading the log of {batch_bytes}-byte batches back, beside the raw disk..."
            );
            let phase = read_phase(&log_dir, readers, cache_bytes);
            let (raw, (read_bytes, seconds)) = beside(&root, bytes, false, round, phase).await?;
            let disk = raw.disk;
            let mb_per_s = read_bytes as f64 / 1e6 / seconds;
            let fraction_of_disk = mb_per_s / disk.read_mb_per_s;
            phases.push((
                disk,
                Phase {
                    name: "sequential read".into(),
                    batch_bytes,
                    durability: "-",
                    bytes: read_bytes,
                    seconds,
                    mb_per_s,
                    fraction_of_disk,
                    synced_disk_mb_per_s: None,
                    fraction_of_synced_disk: None,
                },
            ));
            Ok::<_, anyhow::Error>(phases)
        })
        .map_err(|e| anyhow::anyhow!("starting the engine bench executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("engine bench executor: {e}"))?
}

/// The middle value (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The median over the rounds of a figure phase `i` has, if it has one.
fn median_of(
    results: &[Vec<(DiskBaseline, Phase)>],
    i: usize,
    figure: impl Fn(&Phase) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = results.iter().filter_map(|r| figure(&r[i].1)).collect();
    (!v.is_empty()).then(|| median(v))
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    name: String,
    durability: &'static str,
    median_mb_per_s: f64,
    /// The median of the baselines beside the phase: write bandwidth for
    /// appends, read bandwidth for reads.
    median_disk_mb_per_s: f64,
    median_fraction_of_disk: f64,
    min_fraction_of_disk: f64,
    max_fraction_of_disk: f64,
    /// Synced appends: the median raw synced write bandwidth beside them,
    /// and the median fraction of it.
    median_synced_disk_mb_per_s: Option<f64>,
    median_fraction_of_synced_disk: Option<f64>,
}

pub fn run(args: &EngineBenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let rounds = args.rounds.max(1);
    let mut results = Vec::with_capacity(rounds);
    for r in 1..=rounds {
        results.push(round(args, r)?);
    }
    let first = &results[0];
    let summary: Vec<Summary> = (0..first.len())
        .map(|i| {
            let fractions: Vec<f64> = results.iter().map(|r| r[i].1.fraction_of_disk).collect();
            let phase = &first[i].1;
            Summary {
                name: phase.name.clone(),
                durability: phase.durability,
                median_mb_per_s: median(results.iter().map(|r| r[i].1.mb_per_s).collect()),
                median_disk_mb_per_s: median(
                    results
                        .iter()
                        .map(|r| {
                            let (d, p) = &r[i];
                            if p.durability == "-" {
                                d.read_mb_per_s
                            } else {
                                d.write_mb_per_s
                            }
                        })
                        .collect(),
                ),
                median_fraction_of_disk: median(fractions.clone()),
                min_fraction_of_disk: fractions.iter().copied().fold(f64::INFINITY, f64::min),
                max_fraction_of_disk: fractions.iter().copied().fold(0.0, f64::max),
                median_synced_disk_mb_per_s: median_of(&results, i, |p| p.synced_disk_mb_per_s),
                median_fraction_of_synced_disk: median_of(&results, i, |p| {
                    p.fraction_of_synced_disk
                }),
            }
        })
        .collect();
    println!(
        "{} rounds on {}; each phase beside a raw direct-I/O baseline of the same \
         bytes ({} x {} B in flight); medians, and the range of the fraction; \
         tail cache {} MiB, {}; {} MiB of registered I/O memory; appends in {} part(s)",
        rounds,
        args.dir.display(),
        sluice_bench::disk::IN_FLIGHT,
        sluice_bench::disk::BLOCK_BYTES,
        cache_bytes(args) >> 20,
        if args.tail_reader {
            "a reader following the appends"
        } else {
            "no reader during the appends"
        },
        io_memory(args) >> 20,
        args.slices.max(1)
    );
    println!(
        "{:<26} {:>8} {:>9} {:>9} {:>8} {:>15} {:>11} {:>9}",
        "phase",
        "sync",
        "MB/s",
        "disk MB/s",
        "of disk",
        "range of disk",
        "synced disk",
        "of synced"
    );
    for p in &summary {
        let (synced_disk, of_synced) = match (
            p.median_synced_disk_mb_per_s,
            p.median_fraction_of_synced_disk,
        ) {
            (Some(d), Some(f)) => (format!("{d:.1}"), format!("{:.1}%", f * 100.0)),
            _ => ("-".into(), "-".into()),
        };
        println!(
            "{:<26} {:>8} {:>9.1} {:>9.1} {:>7.1}% {:>6.1}%-{:>5.1}% {:>11} {:>9}",
            p.name,
            p.durability,
            p.median_mb_per_s,
            p.median_disk_mb_per_s,
            p.median_fraction_of_disk * 100.0,
            p.min_fraction_of_disk * 100.0,
            p.max_fraction_of_disk * 100.0,
            synced_disk,
            of_synced
        );
    }
    if let Some(path) = &args.json {
        let rounds: Vec<_> = results
            .iter()
            .map(|r| {
                r.iter()
                    .map(|(disk, phase)| serde_json::json!({ "disk_baseline": disk, "phase": phase }))
                    .collect::<Vec<_>>()
            })
            .collect();
        let doc = serde_json::json!({
            "machine": sluice_bench::report::machine(),
            "appenders": args.appenders,
            "append_group_bytes": args.group_bytes,
            "readers": args.readers,
            "cache_bytes": cache_bytes(args),
            "io_memory_bytes": io_memory(args),
            "tail_reader": args.tail_reader,
            "slices": args.slices.max(1),
            "summary": summary,
            "rounds": rounds,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
