//! One benchmark run: set the cluster up, place consumers, produce, drain,
//! and gather every figure.
//!
//! Producers and consumers are tasks spread round-robin over pinned glommio
//! executors, one per core by default. The calling thread only coordinates:
//! it waits for every consumer to hold its partitions, raises `go`, samples
//! the live counters for the progress line and the timeline, and once every
//! producer is done waits (bounded) for consumers to catch up.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;

use crate::cluster::{self, Layout, TopicPartition};
use crate::config::Workload;
use crate::consumer::{self, ConsumerPlan};
use crate::producer::{self, ProducerPlan};
use crate::stats::{latency_histogram, ConsumerReport, Counts, Live, ProducerReport, SeqSet};

/// How long consumers may take to join and receive partitions.
const PLACEMENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long consumers may go without reading anything once producers are done.
const DRAIN_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest drain after producers finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a run may overrun its planned length (a stuck broker).
const OVERRUN_MAX: Duration = Duration::from_secs(600);
const TICK: Duration = Duration::from_millis(50);
/// Timeline and progress sampling interval.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One timeline sample: rates over the second before `t_s`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub produce_mb_per_s: f64,
    pub consume_mb_per_s: f64,
    pub produce_msgs_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub in_flight: u64,
}

/// Throughput over a measured window.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub msgs_per_s: f64,
    pub mb_per_s: f64,
    pub errors: u64,
}

impl Throughput {
    fn over(messages: u64, bytes: u64, seconds: f64, errors: u64) -> Throughput {
        let s = seconds.max(1e-9);
        Throughput {
            messages,
            bytes,
            seconds,
            msgs_per_s: messages as f64 / s,
            mb_per_s: bytes as f64 / 1e6 / s,
            errors,
        }
    }
}

/// The `--verify` verdict.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verdict {
    pub enabled: bool,
    pub passed: Option<bool>,
    pub acked: u64,
    pub consumed: u64,
    pub duplicates: u64,
    pub missing: u64,
    /// Consumed messages the producers never saw acknowledged.
    pub unexpected: u64,
    /// Records without the bench's tracking header.
    pub foreign: u64,
    pub checksum_acked: String,
    pub checksum_consumed: String,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Outcome {
    pub produce: Throughput,
    pub consume: Throughput,
    pub publish_ns: Histogram<u64>,
    pub e2e_ns: Histogram<u64>,
    pub timeline: Vec<Sample>,
    pub verdict: Verdict,
    pub rebalances: u64,
    pub first_error: Option<String>,
    pub started_at_unix_s: u64,
}

type ThreadResult = anyhow::Result<(Vec<ProducerReport>, Vec<ConsumerReport>)>;

fn cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Which executor thread each producer and consumer runs on.
fn placement(w: &Workload) -> Vec<(Vec<usize>, Vec<usize>)> {
    let threads = w.threads.min(w.producers + w.consumers).max(1);
    let mut out = vec![(Vec::new(), Vec::new()); threads];
    for p in 0..w.producers {
        out[p % threads].0.push(p);
    }
    for c in 0..w.consumers {
        out[(w.producers + c) % threads].1.push(c);
    }
    out
}

/// Runs the workload against `brokers` and returns what it measured.
pub fn run(w: &Workload, brokers: &[String], progress: bool) -> anyhow::Result<Outcome> {
    let started_at_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (layout, start_offsets) = setup(brokers, w)?;
    let w = Arc::new(w.clone());
    let layout = Arc::new(layout);
    let partitions: Arc<Vec<TopicPartition>> = Arc::new(layout.leaders.keys().cloned().collect());
    let start_offsets = Arc::new(start_offsets);
    let live = Arc::new(Live::new(Instant::now()));
    let cpus = cpus();

    let mut handles = Vec::new();
    for (t, (producers, consumers)) in placement(&w).into_iter().enumerate() {
        let (w, layout, partitions, start_offsets, live) = (
            w.clone(),
            layout.clone(),
            partitions.clone(),
            start_offsets.clone(),
            live.clone(),
        );
        let abort = live.clone();
        let handle =
            glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpus[t % cpus.len()]))
                .name(&format!("bench-{t}"))
                .spawn(move || async move {
                    let consumer_tasks: Vec<_> = consumers
                        .into_iter()
                        .map(|index| {
                            glommio::spawn_local(consumer::run(ConsumerPlan {
                                index,
                                workload: w.clone(),
                                layout: layout.clone(),
                                start_offsets: start_offsets.clone(),
                                live: live.clone(),
                            }))
                        })
                        .collect();
                    let producer_tasks: Vec<_> = producers
                        .into_iter()
                        .map(|index| {
                            let plan = ProducerPlan {
                                index,
                                workload: w.clone(),
                                layout: layout.clone(),
                                partitions: partitions.clone(),
                                live: live.clone(),
                            };
                            glommio::spawn_local(async move {
                                while !plan.live.go.load(Ordering::SeqCst) {
                                    if plan.live.abort.load(Ordering::Relaxed) {
                                        bail!("run aborted before producing");
                                    }
                                    glommio::timer::sleep(Duration::from_millis(5)).await;
                                }
                                let live = plan.live.clone();
                                let report = producer::run(plan).await;
                                live.producers_done.fetch_add(1, Ordering::SeqCst);
                                report
                            })
                        })
                        .collect();
                    let mut first_error = None;
                    let produced = settle(producer_tasks, &live, &mut first_error).await;
                    let consumed = settle(consumer_tasks, &live, &mut first_error).await;
                    match first_error {
                        Some(e) => Err(e),
                        None => Ok((produced, consumed)),
                    }
                })
                .map_err(|e| anyhow::anyhow!("starting bench executor {t}: {e}"));
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                abort.abort.store(true, Ordering::SeqCst);
                join_all(handles);
                return Err(e);
            }
        }
    }

    let coordination = coordinate(&w, &live, progress);
    if coordination.is_err() {
        live.abort.store(true, Ordering::SeqCst);
    }
    let results = join_all(handles);
    let (timeline, windows) = coordination?;
    let mut producers = Vec::new();
    let mut consumers = Vec::new();
    for r in results {
        let (p, c) = r?;
        producers.extend(p);
        consumers.extend(c);
    }
    Ok(gather(
        &w,
        &live,
        producers,
        consumers,
        timeline,
        windows,
        started_at_unix_s,
    ))
}

/// Awaits every task; a failure raises `abort` so the others stop, and the
/// first failure is kept.
async fn settle<T>(
    tasks: Vec<glommio::Task<anyhow::Result<T>>>,
    live: &Live,
    first_error: &mut Option<anyhow::Error>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        match t.await {
            Ok(r) => out.push(r),
            Err(e) => {
                live.abort.store(true, Ordering::SeqCst);
                first_error.get_or_insert(e);
            }
        }
    }
    out
}

fn setup(
    brokers: &[String],
    w: &Workload,
) -> anyhow::Result<(Layout, BTreeMap<TopicPartition, i64>)> {
    let layout = cluster::setup(brokers, &w.topics, w.partitions)?;
    let for_offsets = layout.clone();
    let offsets = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("bench-offsets")
        .spawn(move || async move { cluster::end_offsets(&for_offsets).await })
        .map_err(|e| anyhow::anyhow!("starting the setup executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("setup executor: {e}"))??;
    Ok((layout, offsets))
}

fn join_all(handles: Vec<glommio::ExecutorJoinHandle<ThreadResult>>) -> Vec<ThreadResult> {
    handles
        .into_iter()
        .map(|h| match h.join() {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("bench executor failed: {e}")),
        })
        .collect()
}

/// Counter readings that bound the measured windows.
#[derive(Debug, Clone, Copy)]
struct Windows {
    warm: Counts,
    warm_at: Instant,
    produced: Counts,
    produced_at: Instant,
    consumed: Counts,
    consumed_at: Instant,
}

fn coordinate(w: &Workload, live: &Live, progress: bool) -> anyhow::Result<(Vec<Sample>, Windows)> {
    // Consumers first: producing starts only once every partition has an owner.
    let placed_by = Instant::now() + PLACEMENT_TIMEOUT;
    while w.consumers > 0
        && (live.consumers_ready.load(Ordering::SeqCst) < w.consumers
            || live.partitions_assigned.load(Ordering::SeqCst) < w.partition_count_total())
    {
        if live.abort.load(Ordering::SeqCst) {
            bail!("a producer or consumer failed while consumers joined");
        }
        if Instant::now() >= placed_by {
            bail!(
                "consumers did not all get partitions within {PLACEMENT_TIMEOUT:?} ({} of {} ready)",
                live.consumers_ready.load(Ordering::SeqCst),
                w.consumers
            );
        }
        std::thread::sleep(TICK);
    }
    let go_at = Instant::now();
    let go_ns = live.now_ns();
    live.go_ns.store(go_ns, Ordering::SeqCst);
    live.warmup_end_ns
        .store(go_ns + w.warmup.as_nanos() as u64, Ordering::SeqCst);
    live.go.store(true, Ordering::SeqCst);

    let planned = match w.length {
        crate::config::Length::Duration(d) => d,
        crate::config::Length::Messages(_) => Duration::ZERO,
    };
    let deadline = go_at + planned + OVERRUN_MAX;
    let mut timeline = Vec::new();
    let mut last = live.snapshot();
    let mut last_at = go_at;
    let mut warm: Option<(Counts, Instant)> = if w.warmup.is_zero() {
        Some((last, go_at))
    } else {
        None
    };
    let mut produced: Option<(Counts, Instant)> = None;
    let mut consumed_progress = (last.consumed_msgs, Instant::now());
    let mut drain_started: Option<Instant> = None;
    let tty = progress && std::io::IsTerminal::is_terminal(&std::io::stderr());
    loop {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let counts = live.snapshot();
        if live.abort.load(Ordering::SeqCst) {
            bail!("a producer or consumer failed");
        }
        if now >= deadline {
            bail!("run overran its plan by {OVERRUN_MAX:?}");
        }
        if warm.is_none() && now >= go_at + w.warmup {
            warm = Some((counts, now));
        }
        if counts.consumed_msgs != consumed_progress.0 {
            consumed_progress = (counts.consumed_msgs, now);
        }
        if now - last_at >= SAMPLE_INTERVAL {
            let s = (now - last_at).as_secs_f64();
            let sample = Sample {
                t_s: (now - go_at).as_secs_f64(),
                produce_mb_per_s: (counts.produced_bytes - last.produced_bytes) as f64 / 1e6 / s,
                consume_mb_per_s: (counts.consumed_bytes - last.consumed_bytes) as f64 / 1e6 / s,
                produce_msgs_per_s: (counts.produced_msgs - last.produced_msgs) as f64 / s,
                consume_msgs_per_s: (counts.consumed_msgs - last.consumed_msgs) as f64 / s,
                in_flight: counts.in_flight,
            };
            if progress {
                print_progress(&sample, &counts, tty);
            }
            timeline.push(sample);
            last = counts;
            last_at = now;
        }
        if produced.is_none() && live.producers_done.load(Ordering::SeqCst) == w.producers {
            produced = Some((counts, now));
            drain_started = Some(now);
            // A warm-up longer than the run (messages mode) starts at go.
            warm.get_or_insert((Counts::default(), go_at));
        }
        if let Some(drain) = drain_started {
            let caught_up = counts.consumed_msgs >= counts.produced_msgs;
            let idle = now - consumed_progress.1 >= DRAIN_IDLE_TIMEOUT;
            if w.consumers == 0 || caught_up || idle || now - drain >= DRAIN_TIMEOUT {
                live.stop_consumers.store(true, Ordering::SeqCst);
                if tty {
                    eprintln!();
                }
                let (warm, warm_at) = warm.expect("warm-up reading taken");
                let (produced, produced_at) = produced.expect("production reading taken");
                let consumed_at = if w.consumers == 0 {
                    produced_at
                } else {
                    consumed_progress.1
                };
                return Ok((
                    timeline,
                    Windows {
                        warm,
                        warm_at,
                        produced,
                        produced_at,
                        consumed: counts,
                        consumed_at,
                    },
                ));
            }
        }
    }
}

fn print_progress(s: &Sample, c: &Counts, tty: bool) {
    let line = format!(
        "[{:6.1}s] produce {:8.1} MB/s {:9.0} msg/s | consume {:8.1} MB/s {:9.0} msg/s | in flight {:4} | errors {}",
        s.t_s,
        s.produce_mb_per_s,
        s.produce_msgs_per_s,
        s.consume_mb_per_s,
        s.consume_msgs_per_s,
        c.in_flight,
        c.produce_errors
    );
    if tty {
        eprint!("\r{line}");
    } else {
        eprintln!("{line}");
    }
}

fn gather(
    w: &Workload,
    live: &Live,
    producers: Vec<ProducerReport>,
    consumers: Vec<ConsumerReport>,
    timeline: Vec<Sample>,
    win: Windows,
    started_at_unix_s: u64,
) -> Outcome {
    let mut publish_ns = latency_histogram();
    let mut e2e_ns = latency_histogram();
    let mut acked = SeqSet::default();
    let mut acked_digest = 0u64;
    let mut first_error = None;
    for p in &producers {
        // Histograms of equal bounds always merge.
        publish_ns
            .add(&p.publish_ns)
            .expect("same histogram bounds");
        acked.merge(&p.acked);
        acked_digest = acked_digest.wrapping_add(p.acked_digest);
        if first_error.is_none() {
            first_error = p.first_error.clone();
        }
    }
    let mut seen = SeqSet::default();
    let mut duplicates = 0;
    let mut consumed_digest = 0u64;
    let mut foreign = 0;
    let mut rebalances = 0;
    for c in &consumers {
        e2e_ns.add(&c.e2e_ns).expect("same histogram bounds");
        duplicates += c.duplicates + seen.merge(&c.seen);
        consumed_digest = consumed_digest.wrapping_add(c.digest);
        foreign += c.foreign;
        rebalances += c.rebalances;
    }
    let totals = live.snapshot();
    let verdict = if w.verify {
        let missing = acked.missing_from(&seen);
        let unexpected = seen.missing_from(&acked);
        let passed = missing == 0
            && unexpected == 0
            && duplicates == 0
            && foreign == 0
            && acked_digest == consumed_digest
            && acked.len() == totals.produced_msgs;
        Verdict {
            enabled: true,
            passed: Some(passed),
            acked: acked.len(),
            consumed: seen.len() + duplicates,
            duplicates,
            missing,
            unexpected,
            foreign,
            checksum_acked: format!("{acked_digest:016x}"),
            checksum_consumed: format!("{consumed_digest:016x}"),
        }
    } else {
        Verdict::default()
    };
    let produce = Throughput::over(
        win.produced.produced_msgs - win.warm.produced_msgs,
        win.produced.produced_bytes - win.warm.produced_bytes,
        win.produced_at
            .saturating_duration_since(win.warm_at)
            .as_secs_f64(),
        totals.produce_errors,
    );
    let consume = Throughput::over(
        win.consumed.consumed_msgs - win.warm.consumed_msgs,
        win.consumed.consumed_bytes - win.warm.consumed_bytes,
        win.consumed_at
            .saturating_duration_since(win.warm_at)
            .as_secs_f64(),
        0,
    );
    Outcome {
        produce,
        consume,
        publish_ns,
        e2e_ns,
        timeline,
        verdict,
        rebalances,
        first_error,
        started_at_unix_s,
    }
}
