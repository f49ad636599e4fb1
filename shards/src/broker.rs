//! Starting and stopping a node: one pinned glommio executor per shard.
//!
//! Start-up order: the data directory is locked and the listening address
//! checked to be free, shard 0 binds it first (resolving port 0 if asked),
//! then every other shard binds the same address with SO_REUSEPORT; all
//! shards connect the mesh, open and recover the partitions they own, and
//! only then accept connections. The caller is told the bound address once
//! every shard serves.
//!
//! Shutdown: when the stop flag is raised every shard stops accepting, lets
//! each connection finish the request it is serving (bounded by
//! `SHUTDOWN_DRAIN_TIMEOUT`), then closes its logs after their queued writes.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::groups::{OFFSETS_TOPIC, TICK_INTERVAL};
use crate::ids::ShardId;
use crate::mesh::{self, AdminRequest, Mesh, MeshEnds, NewTopic, SHARD_REQUESTS_IN_FLIGHT_MAX};
use crate::metadata::{ClusterMeta, MetadataStore};
use crate::server::{self, SHUTDOWN_DRAIN_TIMEOUT};
use crate::shard::Shard;

/// How often each shard looks at the process-wide stop flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long start-up waits for a shard to report in.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(600);

/// The CPUs shards are pinned to, in order.
fn cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|c| c.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

fn advertised(config: &BrokerConfig, bound: SocketAddr) -> (String, i32) {
    if let Some(adv) = &config.advertise {
        if let Some((host, port)) = adv.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                return (host.to_string(), port as i32);
            }
        }
        return (adv.clone(), bound.port() as i32);
    }
    if bound.ip().is_unspecified() {
        tracing::warn!(
            "listening on an unspecified address; clients are told 127.0.0.1 (set --advertise)"
        );
        return ("127.0.0.1".to_string(), bound.port() as i32);
    }
    (bound.ip().to_string(), bound.port() as i32)
}

/// How long the check that the listening address is free waits for one
/// connection attempt to be answered...
const LISTEN_PROBE_TIMEOUT: Duration = Duration::from_millis(200);
/// ...and for the address to fall free. A killed broker's listening socket
/// outlives the process for a moment (its io_uring is torn down
/// asynchronously), so a restart right after kill -9 still finds it.
const LISTEN_FREE_WAIT: Duration = Duration::from_secs(3);

/// Fails if anything keeps accepting connections on `addr`. A plain bind
/// cannot tell: it also fails on connections of a previous run still in
/// TIME_WAIT.
fn ensure_nothing_listens(addr: SocketAddr) -> Result<()> {
    let target = if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    };
    let deadline = Instant::now() + LISTEN_FREE_WAIT;
    // Each pass sleeps or returns; the deadline bounds the loop.
    loop {
        if std::net::TcpStream::connect_timeout(&target, LISTEN_PROBE_TIMEOUT).is_err() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Bind {
                addr,
                source: std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process already listens on this address",
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lock file of a data directory, as Kafka names it in its log directories.
pub const DATA_DIR_LOCK_FILE: &str = ".lock";

/// Takes an exclusive `flock` on the data directory's lock file; the lock
/// lasts as long as the returned file is open (and ends with the process).
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(DATA_DIR_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            op: "open lock file",
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let source = std::io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(Error::DataDirInUse(dir.to_path_buf()));
        }
        return Err(Error::Io {
            op: "lock data dir",
            path,
            source,
        });
    }
    Ok(file)
}

/// Runs a broker node until `stop` is raised. `on_ready` gets the bound
/// address once every shard accepts connections.
pub fn run(
    config: BrokerConfig,
    stop: Arc<AtomicBool>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let cpus = cpus();
    let shard_count = config
        .shards
        .unwrap_or(cpus.len())
        .clamp(1, u16::MAX as usize);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::Io {
        op: "create data dir",
        path: config.data_dir.clone(),
        source,
    })?;
    // Held until this function returns: a second broker on the same data
    // directory would write the same segments.
    let _lock = lock_data_dir(&config.data_dir)?;
    // The shards bind with SO_REUSEPORT, which would let them share a port
    // with another broker's shards and split its clients between the two.
    if config.listen.port() != 0 {
        ensure_nothing_listens(config.listen)?;
    }
    let meta = Arc::new(MetadataStore::new(&config.data_dir).load()?);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ ((std::process::id() as u64) << 32);
    tracing::info!(shards = shard_count, data_dir = %config.data_dir.display(), topics = meta.topics.len(), "starting broker");

    let (addr_tx, addr_rx) = sync_channel::<std::result::Result<SocketAddr, String>>(1);
    let (ready_tx, ready_rx) = sync_channel::<std::result::Result<(), String>>(shard_count);
    let mut handles = Vec::with_capacity(shard_count);
    let mut ends: Vec<Option<MeshEnds>> = mesh::build(shard_count).into_iter().map(Some).collect();
    let mut listen = config.listen;
    for id in 0..shard_count {
        let cpu = cpus[id % cpus.len()];
        let shard_config = config.clone();
        let shard_meta = meta.clone();
        let shard_ends = ends[id].take().expect("mesh ends per shard");
        let shard_stop = stop.clone();
        let shard_ready = ready_tx.clone();
        let shard_addr = if id == 0 { Some(addr_tx.clone()) } else { None };
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{id}"))
            .io_memory(config.shard_io_memory())
            .spawn(move || async move {
                let ctx = ShardStart {
                    id: ShardId(id as u16),
                    shard_count,
                    config: Rc::new(shard_config),
                    meta: shard_meta,
                    listen,
                    addr_tx: shard_addr,
                    ready_tx: shard_ready.clone(),
                    stop: shard_stop,
                    seed,
                };
                let outcome = shard_main(ctx, shard_ends).await;
                if let Err(e) = &outcome {
                    // The main thread may have stopped waiting; nothing to report to then.
                    let _ = shard_ready.try_send(Err(e.to_string()));
                }
                outcome
            })
            .map_err(|e| Error::Executor(format!("starting shard {id}: {e}")))?;
        handles.push(handle);
        if id == 0 {
            listen = match addr_rx.recv_timeout(STARTUP_TIMEOUT) {
                Ok(Ok(addr)) => addr,
                Ok(Err(e)) => {
                    stop.store(true, Ordering::SeqCst);
                    join_all(handles);
                    return Err(Error::Executor(e));
                }
                Err(_) => return Err(Error::Executor("shard 0 never bound its listener".into())),
            };
        }
    }
    drop(ready_tx);
    for _ in 0..shard_count {
        match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop.store(true, Ordering::SeqCst);
                join_all(handles);
                return Err(Error::Executor(e));
            }
            Err(_) => {
                stop.store(true, Ordering::SeqCst);
                return Err(Error::Executor("a shard did not start".into()));
            }
        }
    }
    on_ready(listen);
    let errors = join_all(handles);
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn join_all(handles: Vec<glommio::ExecutorJoinHandle<Result<()>>>) -> Vec<Error> {
    let mut errors = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(Error::Executor(format!("shard panicked or failed: {e}"))),
        }
    }
    errors
}

struct ShardStart {
    id: ShardId,
    shard_count: usize,
    config: Rc<BrokerConfig>,
    meta: Arc<ClusterMeta>,
    listen: SocketAddr,
    addr_tx: Option<SyncSender<std::result::Result<SocketAddr, String>>>,
    ready_tx: SyncSender<std::result::Result<(), String>>,
    stop: Arc<AtomicBool>,
    seed: u64,
}

async fn shard_main(start: ShardStart, ends: MeshEnds) -> Result<()> {
    let listener = match TcpListener::bind(start.listen) {
        Ok(l) => l,
        Err(e) => {
            let err = Error::Bind {
                addr: start.listen,
                source: std::io::Error::other(e.to_string()),
            };
            if let Some(tx) = &start.addr_tx {
                // The main thread waits on this; a closed channel means it already gave up.
                let _ = tx.send(Err(err.to_string()));
            }
            return Err(err);
        }
    };
    let bound = listener.local_addr().map_err(|e| Error::Bind {
        addr: start.listen,
        source: std::io::Error::other(e.to_string()),
    })?;
    if let Some(tx) = &start.addr_tx {
        if tx.send(Ok(bound)).is_err() {
            return Err(Error::Executor("start-up was abandoned".into()));
        }
    }
    let (mesh, inbound) = Mesh::connect(start.id, ends).await;
    let controller = (start.id == ShardId(0)).then(|| {
        Controller::new(
            MetadataStore::new(&start.config.data_dir),
            start.config.node_id,
            start.seed,
        )
    });
    let shard = Rc::new(Shard::new(
        start.id,
        start.shard_count,
        start.config.clone(),
        advertised(&start.config, bound),
        start.meta.clone(),
        mesh,
        controller,
    ));
    let began = Instant::now();
    let probe_name = format!(".direct-io-probe-{}", start.id.0);
    sluice_engine::prime_direct_io(&start.config.data_dir, &probe_name)
        .await
        .map_err(|source| {
            Error::Executor(format!(
                "direct I/O on {}: {source}",
                start.config.data_dir.display()
            ))
        })?;
    if let Err(problem) = shard.apply_metadata(start.meta.clone()).await {
        return Err(Error::Executor(format!(
            "shard {} recovery: {problem}",
            start.id.0
        )));
    }
    tracing::info!(
        shard = start.id.0,
        partitions = shard.partition_count(),
        elapsed_ms = began.elapsed().as_millis() as u64,
        "recovered partitions"
    );
    spawn_mesh_receivers(&shard, inbound);
    spawn_stop_watch(&shard, start.stop.clone());
    if start.id == ShardId(0) {
        ensure_offsets_topic(&shard).await?;
    }
    spawn_group_ticker(&shard);
    crate::maintenance::spawn(&shard);
    let slots_max = start.config.shard_connections_max as u64;
    let slots = Rc::new(Semaphore::new(slots_max));
    if start.ready_tx.send(Ok(())).is_err() {
        return Err(Error::Executor("start-up was abandoned".into()));
    }
    server::serve(shard.clone(), listener, slots.clone()).await;
    let drain_deadline = Instant::now() + SHUTDOWN_DRAIN_TIMEOUT;
    while slots.available() < slots_max && Instant::now() < drain_deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
    shard.close_partitions().await;
    tracing::info!(shard = start.id.0, "shard stopped");
    Ok(())
}

/// Starts the tasks that drain this shard's inbound mesh channels. They are
/// owned by the executor and end with it.
fn spawn_mesh_receivers(shard: &Rc<Shard>, inbound: mesh::Inbound) {
    for (_from, rx) in inbound.responses {
        let shard = shard.clone();
        glommio::spawn_local(async move {
            while let Some(envelope) = rx.recv().await {
                shard.mesh.deliver(envelope);
            }
        })
        .detach();
    }
    let in_flight = Rc::new(Semaphore::new(SHARD_REQUESTS_IN_FLIGHT_MAX));
    for (_from, rx) in inbound.requests {
        let shard = shard.clone();
        let in_flight = in_flight.clone();
        glommio::spawn_local(async move {
            loop {
                let Ok(permit) = in_flight.acquire_static_permit(1).await else {
                    return;
                };
                let Some(envelope) = rx.recv().await else {
                    return;
                };
                let shard = shard.clone();
                // One task per request from another shard, bounded by `in_flight`.
                glommio::spawn_local(async move {
                    let response = shard.execute(envelope.body).await;
                    shard
                        .mesh
                        .respond(envelope.from, envelope.id, response)
                        .await;
                    drop(permit);
                })
                .detach();
            }
        })
        .detach();
    }
}

/// Creates the internal `__consumer_offsets` topic on first start.
async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<()> {
    if shard.meta().topic(OFFSETS_TOPIC).is_some() {
        return Ok(());
    }
    let controller = shard
        .controller
        .as_ref()
        .expect("shard 0 runs the controller");
    let topic = NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: shard.config.offsets_topic_num_partitions,
        replication_factor: -1,
        assignments: Vec::new(),
        configs: vec![("cleanup.policy".to_string(), Some("compact".to_string()))],
    };
    let outcomes = controller
        .handle(
            shard,
            AdminRequest::CreateTopics {
                topics: vec![topic],
                validate_only: false,
            },
        )
        .await;
    match outcomes.into_iter().next().map(|o| o.result) {
        Some(Ok(_)) => Ok(()),
        Some(Err(f)) => Err(Error::Executor(format!(
            "creating {OFFSETS_TOPIC}: {}",
            f.message
        ))),
        None => Err(Error::Executor(format!(
            "creating {OFFSETS_TOPIC}: no answer"
        ))),
    }
}

/// Runs the shard's group timers every `TICK_INTERVAL` until the shard stops.
fn spawn_group_ticker(shard: &Rc<Shard>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while !shard.is_stopping() {
            glommio::timer::sleep(TICK_INTERVAL).await;
            shard.groups.tick(&shard, Instant::now()).await;
        }
    })
    .detach();
}

/// Watches the process-wide stop flag and turns it into the shard's event.
fn spawn_stop_watch(shard: &Rc<Shard>, stop: Arc<AtomicBool>) {
    let shard = shard.clone();
    glommio::spawn_local(async move {
        while !stop.load(Ordering::SeqCst) {
            glommio::timer::sleep(STOP_POLL_INTERVAL).await;
        }
        tracing::info!(shard = shard.id.0, "stopping");
        shard.stopping.notify();
    })
    .detach();
}

/// The data directory's metadata file, for tools that inspect a stopped node.
pub fn metadata_path(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("meta").join("cluster.json")
}
