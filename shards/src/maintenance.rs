//! Background upkeep of a shard's logs: `flush.ms` syncs, retention and
//! compaction.
//!
//! Each runs as its own named task on the shard that owns the logs, so no
//! log is ever touched from two threads. Compaction runs in a task queue of
//! low shares and latency not important: the executor serves produce and
//! fetch first, and the cleaner gets the time left over.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use glommio::{Latency, Shares};
use sluice_engine::{RecordCodec, RecordKey};

use crate::shard::Shard;

/// How often logs with `flush.ms` set are checked for due syncs.
const FLUSH_TICK: Duration = Duration::from_millis(50);
/// The cleaner's share of the executor against the default queue's 1000.
const CLEANER_SHARES: usize = 50;
/// The largest decompressed record section compaction handles per batch.
const COMPACTION_BATCH_BYTES_MAX: usize = 64 << 20;

/// Starts the flush, retention and compaction tasks of a shard.
pub fn spawn(shard: &Rc<Shard>) {
    spawn_flusher(shard);
    spawn_retention(shard);
    spawn_cleaner(shard);
}

fn spawn_flusher(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while !shard.is_stopping() {
            glommio::timer::sleep(FLUSH_TICK).await;
            for p in shard.local_partitions() {
                if let Err(e) = p.log.sync_if_due().await {
                    tracing::error!(partition = %p.tp, error = %e, "flush.ms sync failed; partition offline");
                }
            }
        }
    })
    .detach();
}

fn spawn_retention(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        let interval = shard.config.retention_check_interval();
        while !shard.is_stopping() {
            glommio::timer::sleep(interval).await;
            for p in shard.local_partitions() {
                if let Err(e) = p.log.apply_retention().await {
                    tracing::error!(partition = %p.tp, error = %e, "retention failed");
                }
            }
        }
    })
    .detach();
}

fn spawn_cleaner(shard: &Rc<Shard>) {
    let queue = glommio::executor().create_task_queue(
        Shares::Static(CLEANER_SHARES),
        Latency::NotImportant,
        "log-cleaner",
    );
    let shard = shard.clone();
    let task = glommio::spawn_local_into(
        async move {
            let interval = shard.config.cleaner_backoff();
            let codec = WireRecords;
            while !shard.is_stopping() {
                glommio::timer::sleep(interval).await;
                for p in shard.local_partitions() {
                    if !p.log.config().cleanup.compact {
                        continue;
                    }
                    if let Err(e) = p.log.compact(&codec).await {
                        tracing::error!(partition = %p.tp, error = %e, "compaction failed");
                    }
                }
            }
        },
        queue,
    );
    match task {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!(error = %e, "cannot start the log cleaner"),
    }
}

/// The record codec of the wire crate, as compaction needs it.
struct WireRecords;

impl RecordCodec for WireRecords {
    fn visit(
        &self,
        batch: &[u8],
        f: &mut dyn FnMut(&RecordKey<'_>),
    ) -> std::result::Result<(), String> {
        sluice_wire::records::for_each_record(batch, COMPACTION_BATCH_BYTES_MAX, |r| {
            // Transaction markers are not keyed data: they stay out of the map.
            if r.control {
                return;
            }
            f(&RecordKey {
                offset: sluice_engine::Offset(r.offset),
                timestamp: r.timestamp,
                key: r.key,
                tombstone: r.value.is_none(),
            })
        })
        .map_err(|e| e.to_string())
    }

    fn retain(
        &self,
        batch: &[u8],
        keep: &mut dyn FnMut(&RecordKey<'_>) -> bool,
    ) -> std::result::Result<Option<Bytes>, String> {
        sluice_wire::records::retain_records(batch, COMPACTION_BATCH_BYTES_MAX, |r| {
            keep(&RecordKey {
                offset: sluice_engine::Offset(r.offset),
                timestamp: r.timestamp,
                key: r.key,
                tombstone: r.value.is_none(),
            })
        })
        .map_err(|e| e.to_string())
    }
}
