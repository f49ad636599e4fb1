//! The pipelined producer.
//!
//! One producer is one task on a bench executor with one connection per
//! leader broker. It keeps a batch per partition, seals a batch when it
//! reaches `batch_bytes` or has waited `linger`, and sends the sealed batches
//! of one broker as one Produce request. Up to `max_in_flight` requests per
//! connection are unanswered at once; a reader task per connection takes the
//! answers in order and settles each message: acknowledged (latency
//! recorded, sequence number and digest kept for `--verify`) or failed.
//!
//! Latency is measured from the moment a message was meant to be sent: at a
//! fixed rate that is its slot in the schedule, whether or not the producer
//! was able to send it then, so a stall shows up in the percentiles instead of
//! silently delaying the schedule (no coordinated omission). At max rate the
//! intended time is the moment the message was made.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use glommio::channels::local_channel::{self, LocalReceiver};
use glommio::sync::Semaphore;
use hdrhistogram::Histogram;
use sluice_wire::kafka::messages::produce_request::{PartitionProduceData, TopicProduceData};
use sluice_wire::kafka::messages::{ApiKey, ProduceRequest, ProduceResponse};
use sluice_wire::records::BatchBuilder;
use sluice_wire::ErrorCode;

use crate::client::{Conn, Reader, Sent, Writer};
use crate::cluster::{topic_name, Layout, TopicPartition};
use crate::config::{Acks, KeyDist, Length, Workload};
use crate::payload::{digest, mix64, track_value, Generator, SEQ_PRODUCER_SHIFT, TRACK_HEADER};
use crate::stats::{latency_histogram, record, Live, ProducerReport, SeqSet};

const PRODUCE_VERSION: i16 = 7;
/// How long the broker may take to acknowledge a Produce request.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Most messages made before the producer lets other tasks run.
const MAKE_STEP_MAX: usize = 4096;
/// Shortest sleep between schedule checks at a fixed rate.
const PACE_SLEEP_MIN: Duration = Duration::from_micros(50);

/// Messages of one partition not yet sent.
struct Pending {
    builder: BatchBuilder,
    /// Every record carries the batch's creation time (wall clock, ms):
    /// latency is measured by the tracking header, not by this.
    base_ms: i64,
    /// (sequence, intended send time, digest) of each message.
    messages: Vec<(u64, u64, u64)>,
    payload_bytes: u64,
    first_intended_ns: u64,
}

/// A batch inside a request: whose messages it holds.
struct InFlightBatch {
    partition_index: usize,
    messages: Vec<(u64, u64, u64)>,
    payload_bytes: u64,
}

/// What a reader must settle when an answer arrives.
struct Request {
    sent: Sent,
    batches: Vec<InFlightBatch>,
}

/// The producer's running results, shared by its reader tasks.
struct Tally {
    publish_ns: Histogram<u64>,
    acked: SeqSet,
    acked_digest: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Everything a producer needs, cloned into its task.
pub struct ProducerPlan {
    pub index: usize,
    pub workload: Arc<Workload>,
    pub layout: Arc<Layout>,
    pub partitions: Arc<Vec<TopicPartition>>,
    pub live: Arc<Live>,
}

struct Link {
    writer: Writer,
    slots: Rc<Semaphore>,
    requests: local_channel::LocalSender<Request>,
    reader: glommio::Task<anyhow::Result<()>>,
}

pub async fn run(plan: ProducerPlan) -> anyhow::Result<ProducerReport> {
    let w = plan.workload.clone();
    let live = plan.live.clone();
    let partitions = plan.partitions.clone();
    let tally = Rc::new(RefCell::new(Tally {
        publish_ns: latency_histogram(),
        acked: SeqSet::default(),
        acked_digest: 0,
        errors: 0,
        first_error: None,
    }));

    // One connection per leader broker, and each partition's link.
    let mut links: Vec<Link> = Vec::new();
    let mut link_of_addr: BTreeMap<String, usize> = BTreeMap::new();
    let mut link_of_partition = Vec::with_capacity(partitions.len());
    for tp in partitions.iter() {
        let addr = plan.layout.addr_of(tp)?.to_string();
        let link = match link_of_addr.get(&addr) {
            Some(l) => *l,
            None => {
                let conn = Conn::connect(&addr).await?;
                links.push(open_link(
                    conn,
                    &w,
                    &partitions,
                    tally.clone(),
                    live.clone(),
                ));
                link_of_addr.insert(addr, links.len() - 1);
                links.len() - 1
            }
        };
        link_of_partition.push(link);
    }

    let mut generator = Generator::new(&w, mix64(w.seed ^ plan.index as u64));
    let mut pending: Vec<Option<Pending>> = (0..partitions.len()).map(|_| None).collect();
    let limit = w.producer_messages(plan.index);
    let rate = w.producer_msgs_per_s();
    let go_ns = live.go_ns.load(Ordering::SeqCst);
    let end_ns = match w.length {
        Length::Duration(d) => Some(go_ns + d.as_nanos() as u64),
        Length::Messages(_) => None,
    };
    let mut sticky = plan.index % partitions.len();
    let seq_base = (plan.index as u64) << SEQ_PRODUCER_SHIFT;
    let mut made: u64 = 0;
    let start_ns = live.now_ns();
    let mut sealed: Vec<usize> = Vec::new();
    let batch_bytes = w.batch_bytes;
    let linger_ns = w.linger.as_nanos() as u64;

    loop {
        if live.abort.load(Ordering::Relaxed) {
            anyhow::bail!("run aborted");
        }
        let now = live.now_ns();
        let out_of_messages = limit.is_some_and(|l| made >= l);
        let out_of_time = end_ns.is_some_and(|e| now >= e);
        // The last pass sends every batch still open, then stops.
        let finishing = out_of_messages || out_of_time;
        // Make the messages that are due: at max rate until one batch is
        // full; at a fixed rate every message whose slot has come.
        let due = match rate {
            None => MAKE_STEP_MAX as u64,
            Some(r) => {
                let slots = ((now - start_ns) as f64 * r / 1e9) as u64 + 1;
                slots.saturating_sub(made).min(MAKE_STEP_MAX as u64)
            }
        };
        let due = match limit {
            Some(l) => due.min(l - made),
            None => due,
        };
        let due = if finishing { 0 } else { due };
        for _ in 0..due {
            let intended = match rate {
                None => live.now_ns(),
                Some(r) => start_ns + (made as f64 * 1e9 / r) as u64,
            };
            let m = generator.make();
            let index = match (&m.key, w.keys) {
                (Some(k), KeyDist::Random | KeyDist::Zipf) => {
                    (mix64(crc32c::crc32c(k) as u64) % partitions.len() as u64) as usize
                }
                _ => sticky,
            };
            let seq = seq_base | made;
            made += 1;
            let p = pending[index].get_or_insert_with(|| {
                let base_ms = wall_ms();
                Pending {
                    builder: BatchBuilder::new(base_ms, batch_bytes),
                    base_ms,
                    messages: Vec::new(),
                    payload_bytes: 0,
                    first_intended_ns: intended,
                }
            });
            let track = track_value(seq, intended);
            p.builder.push(
                p.base_ms,
                m.key.as_deref(),
                Some(&m.value),
                &[(TRACK_HEADER.as_bytes(), Some(&track))],
            );
            p.messages
                .push((seq, intended, digest(seq, m.key.as_deref(), &m.value)));
            p.payload_bytes += m.payload_bytes() as u64;
            if p.builder.section_bytes() >= batch_bytes {
                sealed.push(index);
                if w.keys == KeyDist::None {
                    sticky = (sticky + 1) % partitions.len();
                }
                if rate.is_none() {
                    break;
                }
            }
        }
        // Batches that waited long enough go too.
        let now = live.now_ns();
        for (i, p) in pending.iter().enumerate() {
            if let Some(p) = p {
                let waited = now.saturating_sub(p.first_intended_ns) >= linger_ns;
                if (finishing || waited) && !sealed.contains(&i) {
                    sealed.push(i);
                }
            }
        }
        if !sealed.is_empty() {
            send_sealed(
                &w,
                &partitions,
                &mut links,
                &link_of_partition,
                &mut pending,
                &mut sealed,
                &live,
            )
            .await?;
            if w.keys == KeyDist::None && rate.is_some() {
                sticky = (sticky + 1) % partitions.len();
            }
        }
        if finishing {
            break;
        }
        match rate {
            None => glommio::executor().yield_if_needed().await,
            Some(r) => {
                // Sleep until the next slot or the oldest batch's linger ends.
                let next_slot = start_ns + (made as f64 * 1e9 / r) as u64;
                let linger_end = pending
                    .iter()
                    .flatten()
                    .map(|p| p.first_intended_ns + linger_ns)
                    .min()
                    .unwrap_or(u64::MAX);
                let wake = next_slot.min(linger_end);
                let now = live.now_ns();
                if wake > now {
                    glommio::timer::sleep(Duration::from_nanos(wake - now).max(PACE_SLEEP_MIN))
                        .await;
                } else {
                    glommio::executor().yield_if_needed().await;
                }
            }
        }
    }
    // Wait for every answer.
    for link in links {
        let Link {
            writer,
            slots,
            requests,
            reader,
        } = link;
        drop(requests);
        reader.await.context("producer reader")?;
        drop((writer, slots));
    }
    let t = Rc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("producer tally still shared"))?
        .into_inner();
    Ok(ProducerReport {
        publish_ns: t.publish_ns,
        acked: t.acked,
        acked_digest: t.acked_digest,
        errors: t.errors,
        first_error: t.first_error,
    })
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn open_link(
    conn: Conn,
    w: &Arc<Workload>,
    partitions: &Arc<Vec<TopicPartition>>,
    tally: Rc<RefCell<Tally>>,
    live: Arc<Live>,
) -> Link {
    let Conn { writer, reader } = conn;
    let slots = Rc::new(Semaphore::new(w.max_in_flight as u64));
    let (tx, rx) = local_channel::new_bounded(w.max_in_flight);
    let reader = glommio::spawn_local(read_answers(
        reader,
        rx,
        slots.clone(),
        tally,
        live,
        w.clone(),
        partitions.clone(),
    ));
    Link {
        writer,
        slots,
        requests: tx,
        reader,
    }
}

async fn send_sealed(
    w: &Workload,
    partitions: &[TopicPartition],
    links: &mut [Link],
    link_of_partition: &[usize],
    pending: &mut [Option<Pending>],
    sealed: &mut Vec<usize>,
    live: &Live,
) -> anyhow::Result<()> {
    sealed.sort_unstable();
    sealed.dedup();
    for (link_index, link) in links.iter_mut().enumerate() {
        let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
        let mut batches = Vec::new();
        for &i in sealed
            .iter()
            .filter(|&&i| link_of_partition[i] == link_index)
        {
            let Some(p) = pending[i].take() else { continue };
            let tp = &partitions[i];
            let records = p.builder.finish(w.compression);
            topics.entry(&tp.topic).or_default().push(
                PartitionProduceData::default()
                    .with_index(tp.partition)
                    .with_records(Some(records)),
            );
            batches.push(InFlightBatch {
                partition_index: i,
                messages: p.messages,
                payload_bytes: p.payload_bytes,
            });
        }
        if batches.is_empty() {
            continue;
        }
        let request = ProduceRequest::default()
            .with_acks(w.acks.wire())
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        TopicProduceData::default()
                            .with_name(topic_name(t))
                            .with_partition_data(ps)
                    })
                    .collect(),
            );
        link.slots
            .acquire(1)
            .await
            .map_err(|_| anyhow::anyhow!("producer in-flight slots closed"))?;
        let sent = link
            .writer
            .send(ApiKey::Produce, PRODUCE_VERSION, &request)
            .await?;
        if w.acks == Acks::None {
            // No answer comes: a written request counts as sent and settled.
            for b in &batches {
                live.produced_msgs
                    .fetch_add(b.messages.len() as u64, Ordering::Relaxed);
                live.produced_bytes
                    .fetch_add(b.payload_bytes, Ordering::Relaxed);
            }
            link.slots.signal(1);
            continue;
        }
        live.in_flight.fetch_add(1, Ordering::Relaxed);
        link.requests
            .send(Request { sent, batches })
            .await
            .map_err(|_| anyhow::anyhow!("producer reader task ended early"))?;
    }
    sealed.clear();
    Ok(())
}

async fn read_answers(
    mut reader: Reader,
    requests: LocalReceiver<Request>,
    slots: Rc<Semaphore>,
    tally: Rc<RefCell<Tally>>,
    live: Arc<Live>,
    w: Arc<Workload>,
    partitions: Arc<Vec<TopicPartition>>,
) -> anyhow::Result<()> {
    let warmup_ns = live.warmup_end_ns.load(Ordering::SeqCst);
    while let Some(request) = requests.recv().await {
        let answer: ProduceResponse = reader.recv(request.sent).await?;
        let now = live.now_ns();
        live.in_flight.fetch_sub(1, Ordering::Relaxed);
        slots.signal(1);
        let mut codes: BTreeMap<(&str, i32), (i16, Option<String>)> = BTreeMap::new();
        for t in &answer.responses {
            for p in &t.partition_responses {
                codes.insert(
                    (t.name.0.as_str(), p.index),
                    (
                        p.error_code,
                        p.error_message.as_ref().map(|m| m.to_string()),
                    ),
                );
            }
        }
        let mut t = tally.borrow_mut();
        for batch in request.batches {
            let tp = &partitions[batch.partition_index];
            let (code, message) = codes
                .get(&(tp.topic.as_str(), tp.partition))
                .cloned()
                .unwrap_or((
                    ErrorCode::UNKNOWN_SERVER_ERROR.0,
                    Some("partition missing from the answer".into()),
                ));
            if code != 0 {
                t.errors += batch.messages.len() as u64;
                live.produce_errors
                    .fetch_add(batch.messages.len() as u64, Ordering::Relaxed);
                if t.first_error.is_none() {
                    t.first_error = Some(format!(
                        "{}-{}: error code {code} {}",
                        tp.topic,
                        tp.partition,
                        message.unwrap_or_default()
                    ));
                }
                continue;
            }
            for (seq, intended, d) in &batch.messages {
                if *intended >= warmup_ns {
                    record(&mut t.publish_ns, now.saturating_sub(*intended));
                }
                if w.verify {
                    t.acked.insert(*seq);
                    t.acked_digest = t.acked_digest.wrapping_add(*d);
                }
            }
            live.produced_msgs
                .fetch_add(batch.messages.len() as u64, Ordering::Relaxed);
            live.produced_bytes
                .fetch_add(batch.payload_bytes, Ordering::Relaxed);
        }
    }
    Ok(())
}
