//! `sluice`: the one binary. `sluice broker` runs a node.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice_shards::ids::NodeId;
use sluice_shards::BrokerConfig;

mod admin;
mod alloc;
mod bench;
mod engine_bench;

#[global_allocator]
static ALLOCATOR: alloc::LazyLargeAlloc = alloc::LazyLargeAlloc;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "A Kafka-compatible event-streaming broker"
)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace or a tracing directive); RUST_LOG if unset.
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker node with embedded defaults, overridden by --config and flags.
    Broker(BrokerArgs),
    /// Drive a Kafka-compatible broker and report throughput and latency;
    /// without --brokers, against a Sluice broker started on this machine.
    Bench(Box<sluice_bench::BenchArgs>),
    /// Measure the storage engine alone beside the raw bandwidth of the same disk.
    BenchEngine(engine_bench::EngineBenchArgs),
    /// Consumer groups: list them, or describe one with its lag.
    Group {
        /// A broker to ask.
        #[arg(long, default_value = "127.0.0.1:9092", global = true)]
        bootstrap: String,
        #[command(subcommand)]
        command: GroupCommand,
    },
}

#[derive(Subcommand)]
enum GroupCommand {
    /// List every group with its state.
    List,
    /// Members, assignments, committed offsets, log end offsets and lag of a group.
    Describe { group: String },
}

#[derive(clap::Args)]
struct BrokerArgs {
    /// TOML file of broker settings (keys as in BrokerConfig, e.g. data_dir, num_partitions).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to accept Kafka clients on [default: 127.0.0.1:9092].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// host:port clients are told to connect to [default: the bound address].
    #[arg(long)]
    advertise: Option<String>,
    /// Directory holding topics and metadata [default: ./sluice-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shards (pinned executor threads) [default: one per available core].
    #[arg(long)]
    shards: Option<usize>,
    /// This node's id [default: 0].
    #[arg(long)]
    node_id: Option<i32>,
}

fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn broker_config(args: &BrokerArgs) -> anyhow::Result<BrokerConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<BrokerConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => BrokerConfig::default(),
    };
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = &args.advertise {
        config.advertise = Some(v.clone());
    }
    if let Some(v) = &args.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(v) = args.shards {
        anyhow::ensure!(v > 0, "--shards must be at least 1");
        config.shards = Some(v);
    }
    if let Some(v) = args.node_id {
        config.node_id = NodeId(v);
    }
    Ok(config)
}

fn run_broker(args: &BrokerArgs) -> anyhow::Result<()> {
    let config = broker_config(args)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handler")?;
    }
    sluice_shards::broker::run(config, stop, |addr| {
        tracing::info!(%addr, "broker ready");
        let mut out = std::io::stdout().lock();
        // Tests and scripts read this line to learn the bound port.
        let _ = writeln!(out, "sluice broker listening on {addr}");
        let _ = out.flush();
    })
    // The broker's error holds executor errors that are not `Sync`; keep its text.
    .map_err(|e| anyhow::anyhow!("broker failed: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The bench prints its own progress; an embedded broker's start-up
    // chatter would bury it, so the bench logs warnings only unless asked.
    let level = match (&cli.command, cli.log_level.as_deref()) {
        (Command::Bench(_), None) if std::env::var_os("RUST_LOG").is_none() => Some("warn"),
        (_, level) => level,
    };
    init_logging(level);
    match &cli.command {
        Command::Broker(args) => run_broker(args),
        Command::Bench(args) => bench::run(args),
        Command::BenchEngine(args) => engine_bench::run(args),
        Command::Group { bootstrap, command } => {
            let text = match command {
                GroupCommand::List => admin::group_list(bootstrap)?,
                GroupCommand::Describe { group } => admin::group_describe(bootstrap, group)?,
            };
            print!("{text}");
            Ok(())
        }
    }
}
