//! `sluice bench-engine`: the storage engine alone on one disk, beside the
//! raw direct-I/O bandwidth of the same disk measured in the same run.
//!
//! For batch sizes of 1 KiB and 16 KiB it appends [`APPEND_GROUP_BYTES`] of
//! batches per `Log::append` call from [`APPENDERS`] concurrent tasks (as a
//! shard does for concurrent produce requests), once with `Durability::Written`
//! (no fdatasync) and once with `Durability::Synced` (every group synced;
//! concurrent groups share an fdatasync). It then reads the 16 KiB log back
//! from the start with [`READERS`] concurrent sequential readers, each over
//! its own range, with a tail cache too small to help, so reads reach the
//! disk. Throughput counts whole batch bytes as stored; MB is 10^6 bytes.
//! The harness lives in tools because it joins the engine with the bench
//! crate's disk baseline, and only tools may depend on both.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use sluice_engine::{
    Durability, LeaderEpoch, Log, LogConfig, LogContext, Offset, SystemClock, TailCacheBudget,
};
use sluice_wire::batch::Compression;
use sluice_wire::records::BatchBuilder;

/// Bytes appended per `Log::append` call.
const APPEND_GROUP_BYTES: usize = 256 << 10;
/// Concurrent appending tasks.
const APPENDERS: usize = 4;
/// Concurrent sequential readers in the read phase.
const READERS: usize = 4;
/// Bytes asked of each `Log::read`.
const READ_BYTES: usize = 1 << 20;
/// A tail cache far smaller than the data, so reads go to the disk.
const CACHE_BYTES: usize = 1 << 20;

#[derive(clap::Args)]
pub struct EngineBenchArgs {
    /// Directory on the disk to measure (a scratch subdirectory is made and removed).
    #[arg(long)]
    dir: PathBuf,
    /// Bytes each phase writes [default: 1 GiB].
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
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

/// A log with default settings and a tail cache too small to serve reads.
async fn open_log(dir: &Path) -> anyhow::Result<Rc<Log>> {
    let context = LogContext {
        clock: Rc::new(SystemClock),
        cache_budget: Rc::new(TailCacheBudget::new(CACHE_BYTES)),
    };
    let log = Log::open(dir.to_path_buf(), LogConfig::default(), context)
        .await
        .map_err(|e| anyhow::anyhow!("opening a log in {}: {e}", dir.display()))?;
    Ok(Rc::new(log))
}

async fn append_phase(
    dir: &Path,
    batch: &Bytes,
    bytes_total: u64,
    durability: Durability,
) -> anyhow::Result<f64> {
    let log = open_log(dir).await?;
    let group: Vec<Bytes> = (0..(APPEND_GROUP_BYTES / batch.len()).max(1))
        .map(|_| batch.clone())
        .collect();
    let group_bytes = (group.len() * batch.len()) as u64;
    let groups_total = bytes_total.div_ceil(group_bytes);
    let started = Instant::now();
    let tasks: Vec<_> = (0..APPENDERS as u64)
        .map(|lane| {
            let log = log.clone();
            let group = group.clone();
            glommio::spawn_local(async move {
                let mut n = lane;
                while n < groups_total {
                    log.append(&group, LeaderEpoch(0), durability).await?;
                    n += APPENDERS as u64;
                }
                Ok::<(), sluice_engine::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| anyhow::anyhow!("appending: {e}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    log.close().await.map_err(engine)?;
    Ok(seconds)
}

async fn read_phase(dir: &Path) -> anyhow::Result<(u64, f64)> {
    let log = open_log(dir).await?;
    let end = log.log_end_offset().0;
    let started = Instant::now();
    let tasks: Vec<_> = (0..READERS as i64)
        .map(|lane| {
            let log = log.clone();
            let (from, to) = (
                end * lane / READERS as i64,
                end * (lane + 1) / READERS as i64,
            );
            glommio::spawn_local(async move {
                let mut at = from;
                let mut bytes = 0u64;
                while at < to {
                    let read = log.read(Offset(at), READ_BYTES).await.map_err(engine)?;
                    anyhow::ensure!(!read.bytes.is_empty(), "empty read at offset {at} of {end}");
                    let batches = sluice_wire::batch::split(&read.bytes)?;
                    let (last, _) = batches.last().context("no batch read")?;
                    at = last.base_offset + last.last_offset_delta as i64 + 1;
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

pub fn run(args: &EngineBenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("sluice-engine-bench-")
        .tempdir_in(&args.dir)
        .context("creating the scratch directory")?;
    eprintln!(
        "raw direct-I/O baseline of {} ({} MiB)...",
        args.dir.display(),
        args.bytes >> 20
    );
    let disk = sluice_bench::disk::measure(scratch.path(), args.bytes)?;
    let root = scratch.path().to_path_buf();
    let bytes = args.bytes;
    let (write_mb, read_mb) = (disk.write_mb_per_s, disk.read_mb_per_s);
    let phases = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("engine-bench")
        .spawn(move || async move {
            sluice_engine::prime_direct_io(&root, ".probe")
                .await
                .map_err(engine)?;
            let mut phases = Vec::new();
            for batch_bytes in [1024usize, 16 << 10] {
                for (durability, name) in [
                    (Durability::Written, "written"),
                    (Durability::Synced, "synced"),
                ] {
                    let dir = root.join(format!("append-{batch_bytes}-{name}"));
                    let batch = batch_of(batch_bytes);
                    eprintln!(
                        "appending {} MiB of {batch_bytes}-byte batches, {name}...",
                        bytes >> 20
                    );
                    let seconds = append_phase(&dir, &batch, bytes, durability).await?;
                    let written = bytes.div_ceil(APPEND_GROUP_BYTES as u64)
                        * (APPEND_GROUP_BYTES / batch.len()).max(1) as u64
                        * batch.len() as u64;
                    let mb_per_s = written as f64 / 1e6 / seconds;
                    phases.push(Phase {
                        name: format!("append {batch_bytes} B batches"),
                        batch_bytes: batch.len(),
                        durability: name,
                        bytes: written,
                        seconds,
                        mb_per_s,
                        fraction_of_disk: mb_per_s / write_mb,
                    });
                    if !(batch_bytes == 16 << 10 && durability == Durability::Synced) {
                        std::fs::remove_dir_all(&dir)?;
                    }
                }
            }
            eprintln!("reading the 16 KiB log back...");
            let (read_bytes, seconds) =
                read_phase(&root.join(format!("append-{}-synced", 16 << 10))).await?;
            let mb_per_s = read_bytes as f64 / 1e6 / seconds;
            phases.push(Phase {
                name: "sequential read".into(),
                batch_bytes: 16 << 10,
                durability: "-",
                bytes: read_bytes,
                seconds,
                mb_per_s,
                fraction_of_disk: mb_per_s / read_mb,
            });
            Ok::<_, anyhow::Error>(phases)
        })
        .map_err(|e| anyhow::anyhow!("starting the engine bench executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("engine bench executor: {e}"))??;
    println!(
        "disk {}: raw direct-I/O write {:.1} MB/s, read {:.1} MB/s ({} x {} B in flight)",
        disk.dir, disk.write_mb_per_s, disk.read_mb_per_s, disk.in_flight, disk.block_bytes
    );
    println!(
        "{:<28} {:>9} {:>10} {:>10} {:>9}",
        "phase", "sync", "MB/s", "seconds", "of disk"
    );
    for p in &phases {
        println!(
            "{:<28} {:>9} {:>10.1} {:>10.2} {:>8.1}%",
            p.name,
            p.durability,
            p.mb_per_s,
            p.seconds,
            p.fraction_of_disk * 100.0
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "machine": sluice_bench::report::machine(),
            "disk_baseline": disk,
            "appenders": APPENDERS,
            "append_group_bytes": APPEND_GROUP_BYTES,
            "readers": READERS,
            "phases": phases,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
