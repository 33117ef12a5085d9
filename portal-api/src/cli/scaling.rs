//! `tessera bench scaling`: what node agents add. A CPU-bound job on one
//! agent process and then on two (one slot each), trivial tasks through
//! remote agents against the embedded pool in the same run, and how long a
//! task waits from queued to running on a remote node.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Args;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, LOCAL_POOL, NodeState};
use tessera_framework::pools::{NewPool, PoolSpec};

use super::bench::{publish_sample, round, run_sample, start};
use super::{ServiceArgs, workloads};
use crate::client::Client;

/// Arguments of `tessera bench scaling`.
#[derive(Args, Debug)]
pub struct ScalingArgs {
    /// Monte Carlo paths of the CPU-bound job.
    #[arg(long, default_value_t = 16_000_000)]
    paths: u64,
    /// Trivial tasks run through the remote agents and the embedded pool.
    #[arg(long, default_value_t = 20_000)]
    tasks: u64,
    /// One-task jobs whose dispatch latency is measured.
    #[arg(long, default_value_t = 200)]
    dispatches: u32,
    /// Keep the service's data here instead of in a temporary folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceArgs,
}

/// A `tessera node` process of this executable, stopped when dropped.
struct AgentProcess(Child);

impl AgentProcess {
    fn start(url: &str, pool: &str, token: &str, work_dir: &Path) -> anyhow::Result<Self> {
        let child = Command::new(std::env::current_exe()?)
            .args(["node", "--url", url, "--pool", pool, "--slots", "1"])
            .arg("--work-dir")
            .arg(work_dir)
            .env("TESSERA_NODE_TOKEN", token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a node agent")?;
        Ok(Self(child))
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal to the agent this process started.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

/// Waits until `pool` has `count` idle nodes.
async fn idle_nodes(client: &Client, pool: &str, count: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = client.pool(pool).await?;
        let idle = shown
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Idle)
            .count();
        if idle >= count {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{count} node agents did not join the pool within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The CPU-bound job on `pool`, run once to warm the agents' caches and
/// then measured; its seconds.
async fn cpu_bound(client: &Client, pool: &str, paths: u64) -> anyhow::Result<f64> {
    let workload = workloads::workload("montecarlo", 8, paths)?;
    run_sample(
        client,
        "montecarlo",
        workload.parameters.clone(),
        Vec::new(),
        Some(pool),
    )
    .await?;
    let (_, secs) = run_sample(
        client,
        "montecarlo",
        workload.parameters,
        Vec::new(),
        Some(pool),
    )
    .await?;
    Ok(secs)
}

/// Trivial tasks per second through `pool`.
async fn trivial_rate(client: &Client, pool: &str, tasks: u64) -> anyhow::Result<f64> {
    let (job, secs) = run_sample(
        client,
        "noop",
        serde_json::json!({ "tasks": tasks }),
        Vec::new(),
        Some(pool),
    )
    .await?;
    ensure!(job.progress.succeeded == tasks, "not every task succeeded");
    Ok(tasks as f64 / secs)
}

/// Milliseconds from queued to running of the one task of each of
/// `count` jobs run one after the other on an idle `pool`: from the end of
/// its job's split, which queues it, to the start of its attempt.
async fn dispatch_latencies(client: &Client, pool: &str, count: u32) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let job = client
            .submit(&SubmitJob {
                app: "noop".into(),
                parameters: [("tasks".to_owned(), serde_json::json!(1))]
                    .into_iter()
                    .collect(),
                pool: Some(pool.into()),
                max_task_retries: Some(0),
                ..SubmitJob::default()
            })
            .await?;
        let job = client
            .wait(&job.id, Duration::from_millis(5), |_| {})
            .await?;
        ensure!(job.state == JobState::Completed, "a dispatch job failed");
        let tasks = client.tasks(&job.id, None, None, None).await?.tasks;
        let split = client
            .task(&job.id, tessera_framework::scheduler::SPLIT_TASK)
            .await?;
        let queued = split
            .attempt_history
            .last()
            .context("the split ran")?
            .finished_at;
        let task = tasks
            .iter()
            .find(|t| t.kind == tessera_framework::model::TaskKind::Process)
            .context("the job has a task")?;
        let detail = client.task(&job.id, &task.name).await?;
        let started = detail
            .attempt_history
            .last()
            .context("the task ran")?
            .started_at;
        let micros = (started - queued).num_microseconds().unwrap_or(0);
        latencies.push(micros.max(0) as f64 / 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

/// `tessera bench scaling`.
pub(super) async fn scaling(args: ScalingArgs) -> anyhow::Result<ExitCode> {
    let (embedded, temp) = start(args.data_dir.clone(), &args.service).await?;
    let slots = embedded.service.config().embedded_slots;
    ensure!(
        slots > 0,
        "the benchmark compares with the embedded pool: give --slots 1 or more"
    );
    let client = embedded.admin_client()?;
    publish_sample(&client, "montecarlo").await?;
    publish_sample(&client, "noop").await?;
    let pool = client
        .create_pool(&NewPool {
            name: "agents".into(),
            shared: false,
            spec: PoolSpec::default(),
        })
        .await?;
    let token = pool.join_token.context("a new pool shows its token")?;
    let work = match &temp {
        Some(t) => t.path().join("agents"),
        None => std::env::temp_dir().join(format!("tessera-bench-agents-{}", std::process::id())),
    };
    let url = client.url().to_owned();
    let mut agents = vec![AgentProcess::start(
        &url,
        &pool.id,
        &token,
        &work.join("a"),
    )?];
    idle_nodes(&client, "agents", 1).await?;
    let one_secs = cpu_bound(&client, "agents", args.paths).await?;
    agents.push(AgentProcess::start(
        &url,
        &pool.id,
        &token,
        &work.join("b"),
    )?);
    idle_nodes(&client, "agents", 2).await?;
    let two_secs = cpu_bound(&client, "agents", args.paths).await?;

    // Warm both agents and the embedded pool, then measure each.
    trivial_rate(&client, "agents", 1_000).await?;
    let remote = trivial_rate(&client, "agents", args.tasks).await?;
    trivial_rate(&client, LOCAL_POOL, 1_000).await?;
    let local = trivial_rate(&client, LOCAL_POOL, args.tasks).await?;

    let latencies = dispatch_latencies(&client, "agents", args.dispatches).await?;
    drop(agents);
    embedded.stop().await?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "scaling",
            "cpu_job_one_agent_secs": round(one_secs),
            "cpu_job_two_agents_secs": round(two_secs),
            "speedup": round(one_secs / two_secs),
            "remote_tasks_per_sec": round(remote),
            "embedded_tasks_per_sec": round(local),
            "embedded_slots": slots,
            "remote_slots": 2,
            "remote_ratio": round(remote / local),
            "dispatches": latencies.len(),
            "dispatch_p50_ms": round(percentile(&latencies, 0.5)),
            "dispatch_p99_ms": round(percentile(&latencies, 0.99)),
        })
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
