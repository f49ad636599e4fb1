//! `sluice bench`: resolves the workload, starts an embedded broker when no
//! `--brokers` is given, runs the load generator and exits non-zero when
//! `--verify` fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sluice_bench::BenchArgs;
use sluice_shards::BrokerConfig;

/// How long the embedded broker may take to start.
const EMBEDDED_START_TIMEOUT: Duration = Duration::from_secs(120);

/// A broker running on threads of this process, stopped on drop.
struct Embedded {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Embedded {
    fn start(args: &BenchArgs) -> anyhow::Result<Embedded> {
        let (dir, data_dir) = match &args.embedded_data_dir {
            Some(d) => (None, d.clone()),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("sluice-bench-")
                    .tempdir()
                    .context("creating the embedded broker's data directory")?;
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        let mut config = BrokerConfig {
            data_dir,
            listen: "127.0.0.1:0".parse().expect("loopback address"),
            ..BrokerConfig::default()
        };
        if let Some(n) = args.embedded_shards {
            anyhow::ensure!(n > 0, "--embedded-shards must be at least 1");
            config.shards = Some(n);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(1);
        let broker_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                sluice_shards::broker::run(config, broker_stop, |addr| {
                    let _ = tx.send(addr);
                })
                .map_err(|e| anyhow::anyhow!("embedded broker failed: {e}"))
            })
            .context("starting the embedded broker")?;
        let mut embedded = Embedded {
            addr: String::new(),
            stop,
            thread: Some(thread),
            _dir: dir,
        };
        match rx.recv_timeout(EMBEDDED_START_TIMEOUT) {
            Ok(addr) => {
                embedded.addr = addr.to_string();
                Ok(embedded)
            }
            Err(_) => {
                let outcome = embedded.shut();
                outcome?;
                anyhow::bail!("the embedded broker did not start")
            }
        }
    }

    fn shut(&mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the embedded broker panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Err(e) = self.shut() {
            tracing::error!(error = %e, "stopping the embedded broker");
        }
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let workload = args.resolve()?;
    let mut embedded = None;
    let (brokers, target) = match &args.brokers {
        Some(list) => (sluice_bench::client::bootstrap_list(list)?, list.clone()),
        None => {
            let e = Embedded::start(args)?;
            let label = format!("embedded sluice broker at {}", e.addr);
            let brokers = vec![e.addr.clone()];
            embedded = Some(e);
            (brokers, label)
        }
    };
    let outcome = sluice_bench::execute(args, &workload, &brokers, &target);
    if let Some(mut e) = embedded {
        e.shut()?;
    }
    let doc = outcome?;
    if doc["verify"]["enabled"].as_bool() == Some(true)
        && doc["verify"]["passed"].as_bool() != Some(true)
    {
        anyhow::bail!("verification failed");
    }
    Ok(())
}
