//! `tessera node`: a node agent that joins a pool of a service over HTTP
//! and runs its tasks on this machine.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tessera_framework::node::{self, NodeConfig, WorkerCommand};
use tessera_framework::package::ArchiveLimits;
use tessera_framework::runtime::{Runtime, RuntimeConfig};

use crate::node_client::NodeClient;

/// Arguments of `tessera node`.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// The service's URL.
    #[arg(long, env = "TESSERA_URL", default_value = "http://127.0.0.1:7878")]
    url: String,
    /// The id of the pool to join (`tessera pool show NAME` gives it).
    #[arg(long)]
    pool: String,
    /// The pool's join token (`tessera pool token NAME`).
    #[arg(long, env = "TESSERA_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// Task slots (default: one per CPU core).
    #[arg(long)]
    slots: Option<usize>,
    /// Folder for the node's cache and task slots; what the node keeps
    /// there is deleted when it leaves its pool.
    #[arg(long, default_value = "tessera-node")]
    work_dir: PathBuf,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 1000, hide = true)]
    heartbeat_ms: u64,
    /// The node provider's handle of the allocation that started this
    /// agent (set by providers).
    #[arg(long, env = "TESSERA_NODE_AGENT", hide = true)]
    agent: Option<String>,
    /// Most MiB of fetched files (inputs, images, other tasks' results) the
    /// node keeps in its cache; the least recently used go first.
    #[arg(long, default_value_t = tessera_framework::node::DEFAULT_CACHE_BYTES >> 20)]
    cache_mib: u64,
    /// Stop after this many seconds without reaching the service (default:
    /// keep trying).
    #[arg(long)]
    give_up_after_secs: Option<u64>,
}

/// `tessera node`.
pub(super) async fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let slots = args
        .slots
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    anyhow::ensure!(slots > 0, "a node needs at least one slot (--slots)");
    let coordinator = Arc::new(NodeClient::new(&args.url, &args.pool, &args.token)?);
    // The agent compiles a component only when the service has no artifact
    // for this machine's engine; its slots run in worker processes.
    let runtime = Runtime::new(&RuntimeConfig {
        max_instances: 8,
        ..RuntimeConfig::default()
    })?;
    let hostname = tessera_framework::service::hostname();
    let config = NodeConfig {
        pool: args.pool.clone(),
        slots,
        memory_bytes: total_memory(),
        work_dir: args.work_dir.clone(),
        remove_work_dir: true,
        heartbeat_interval: Duration::from_millis(args.heartbeat_ms.max(50)),
        address: hostname.clone(),
        hostname,
        agent: args.agent.clone(),
        archive_limits: ArchiveLimits::default(),
        cache_bytes: args.cache_mib << 20,
        worker: WorkerCommand::current_exe().context("cannot find this executable")?,
        give_up_after: args.give_up_after_secs.map(Duration::from_secs),
    };
    let handle = node::start(coordinator, runtime, config)?;
    let stopper = handle.stopper();
    tokio::spawn(async move {
        super::commands::shutdown_signal().await;
        eprintln!("Stopping: leasing no more, committing finished tasks, releasing the rest...");
        stopper.stop();
    });
    if let Some(id) = handle.id().await {
        println!(
            "Tessera node {id} joined pool {} at {} with {slots} task slots. Stop with Ctrl-C.",
            args.pool, args.url
        );
    }
    handle.wait().await?;
    Ok(ExitCode::SUCCESS)
}

/// This machine's memory, in bytes (0 if unknown).
fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}
