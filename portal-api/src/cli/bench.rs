//! `tessera bench`: figures measured on this machine, printed as one JSON
//! line each.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Args;
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{Job, JobState};
use tessera_framework::protocol::TaskLimits;
use tessera_framework::runtime::{Logs, Role, Sandbox};

use super::{ServiceArgs, workloads};
use crate::client::Client;
use crate::embedded::Embedded;

/// Arguments of `tessera bench throughput`.
#[derive(Args, Debug)]
pub struct ThroughputArgs {
    /// Number of trivial tasks in the job.
    #[arg(long, default_value_t = 100_000)]
    tasks: u64,
    /// Keep the service's data here instead of in a temporary folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceArgs,
}

/// Arguments of `tessera bench compute`.
#[derive(Args, Debug)]
pub struct ComputeArgs {
    /// The sample to measure (default: every sample, one line each).
    #[arg(long)]
    sample: Option<String>,
    /// Monte Carlo paths (montecarlo only).
    #[arg(long, default_value_t = 20_000_000)]
    paths: u64,
    /// Tasks a job is split into where the sample lets the job choose
    /// (default: four per slot).
    #[arg(long)]
    tasks: Option<u64>,
    /// Steady-state jobs and native runs per sample; the fastest of each is
    /// reported, so that a run slowed by something else on the machine
    /// does not decide the ratio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Keep the service's data here instead of in a temporary folder.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    service: ServiceArgs,
}

/// A service for one benchmark, in a temporary folder unless one is given.
pub(super) async fn start(
    data_dir: Option<PathBuf>,
    args: &ServiceArgs,
) -> anyhow::Result<(Embedded, Option<tempfile::TempDir>)> {
    let (dir, temp) = match data_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("tessera-bench-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let embedded =
        Embedded::start(args.config(dir), SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    Ok((embedded, temp))
}

/// Publishes a sample.
pub(super) async fn publish_sample(client: &Client, sample: &str) -> anyhow::Result<()> {
    let sample = tessera_samples::get(sample).context("the sample is missing")?;
    client
        .publish_bytes(
            sample.name,
            sample.assembly.to_vec(),
            sample.image.map(<[u8]>::to_vec),
        )
        .await?;
    Ok(())
}

/// Submits a job of a published sample (on `pool`, default `local`) and
/// waits for it; returns the job and the seconds from its submission to its
/// end, as the service recorded them.
pub(super) async fn run_sample(
    client: &Client,
    sample: &str,
    parameters: serde_json::Value,
    inputs: Vec<InputRef>,
    pool: Option<&str>,
) -> anyhow::Result<(Job, f64)> {
    let serde_json::Value::Object(parameters) = parameters else {
        bail!("parameters must be an object");
    };
    let job = client
        .submit(&SubmitJob {
            app: sample.into(),
            parameters,
            inputs,
            max_task_retries: Some(0),
            pool: pool.map(str::to_owned),
            ..SubmitJob::default()
        })
        .await?;
    let job = client
        .wait(&job.id, Duration::from_millis(100), |_| {})
        .await?;
    let finished = job.finished_at.context("a finished job has an end time")?;
    let secs = (finished - job.created_at).num_microseconds().unwrap_or(0) as f64 / 1e6;
    ensure!(
        job.state == JobState::Completed,
        "the benchmark job ended {}: {}",
        job.state,
        job.failure
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    Ok((job, secs))
}

/// A state or blob backend as a benchmark reports it: its location
/// (passwords hidden) or `embedded` for the data folder's own.
fn backend_name(location: Option<String>) -> String {
    location.unwrap_or_else(|| "embedded".into())
}

/// `tessera bench throughput`.
pub(super) async fn throughput(args: ThroughputArgs) -> anyhow::Result<ExitCode> {
    let (embedded, _temp) = start(args.data_dir.clone(), &args.service).await?;
    let slots = embedded.service.config().embedded_slots;
    ensure!(
        slots > 0,
        "the benchmark needs an embedded pool: give --slots 1 or more"
    );
    let client = embedded.admin_client()?;
    let cpu_before = cpu_secs();
    publish_sample(&client, "noop").await?;
    let (job, secs) = run_sample(
        &client,
        "noop",
        serde_json::json!({ "tasks": args.tasks }),
        Vec::new(),
        None,
    )
    .await?;
    ensure!(
        job.progress.succeeded == args.tasks,
        "only {} tasks succeeded",
        job.progress.succeeded
    );
    let tasks_per_sec = args.tasks as f64 / secs;
    let version = client.app_version("noop", job.app_version).await?;
    let service = embedded.service.clone();
    // Stopping reaps the slots' worker processes, so that their CPU time
    // is counted with this process's.
    embedded.stop().await?;
    let cpu_per_task = (cpu_secs() - cpu_before) / args.tasks as f64;

    // The same processor on the same engine, without the service around it.
    let folders = tempfile::tempdir()?;
    for d in ["app", "inputs", "output"] {
        std::fs::create_dir(folders.path().join(d))?;
    }
    let runtime = service.runtime().clone();
    let key = runtime.artifact_key(Role::Processor, &version.processor);
    let artifact = service
        .blobs()
        .get_artifact(&key)
        .await?
        .context("the service keeps the processor's compiled artifact")?;
    let artifact_path = folders.path().join("processor.cwasm");
    std::fs::write(&artifact_path, &artifact)?;
    runtime.load_file(Role::Processor, &version.processor, &artifact_path)?;
    let config = service.config().scheduler.clone();
    let limits = TaskLimits {
        memory_bytes: config.task_memory_bytes,
        timeout_ms: 60_000,
        output_bytes: config.task_output_bytes,
        log_bytes: config.task_log_bytes,
    };
    let sandbox = Sandbox {
        app: folders.path().join("app"),
        inputs: folders.path().join("inputs"),
        output: Some(folders.path().join("output")),
        shared: None,
        env: vec![("TESSERA_JOB_ID".into(), "bench".into())],
        limits,
        logs: Logs::new(limits.log_bytes),
        progress: Arc::new(AtomicU32::new(0)),
    };
    let calls = args.tasks.clamp(1_000, 200_000) as usize;
    let raw_per_sec = tokio::task::spawn_blocking(move || {
        runtime.measure_process_rate(&version.processor, &sandbox, slots, calls)
    })
    .await?
    .map_err(|f| anyhow::anyhow!("the raw measurement failed: {f}"))?;
    println!(
        "{}",
        serde_json::json!({
            "bench": "throughput",
            "tasks": args.tasks,
            "slots": slots,
            "secs": round(secs),
            "tasks_per_sec": round(tasks_per_sec),
            "raw_per_sec": round(raw_per_sec),
            "ratio": round(tasks_per_sec / raw_per_sec),
            "cpu_us_per_task": round(cpu_per_task * 1e6),
            "database": backend_name(args.service.database.as_ref().map(ToString::to_string)),
            "storage": backend_name(args.service.storage.as_ref().map(ToString::to_string)),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// `tessera bench compute`: each sample's job on the embedded pool, then
/// the same computation natively on as many threads as the pool has slots.
pub(super) async fn compute(args: ComputeArgs) -> anyhow::Result<ExitCode> {
    let samples: Vec<&str> = match &args.sample {
        Some(name) => vec![name.as_str()],
        None => workloads::SAMPLES.to_vec(),
    };
    let (embedded, _temp) = start(args.data_dir.clone(), &args.service).await?;
    let slots = embedded.service.config().embedded_slots;
    ensure!(
        slots > 0,
        "the benchmark needs an embedded pool: give --slots 1 or more"
    );
    let tasks = args.tasks.unwrap_or(slots as u64 * 4);
    let client = embedded.admin_client()?;
    let mut all_identical = true;
    for sample in samples {
        let workload = workloads::workload(sample, tasks, args.paths)?;
        let mut inputs = Vec::with_capacity(workload.inputs.len());
        for (name, bytes) in workload.inputs {
            let file = client.upload_bytes(bytes.into()).await?;
            inputs.push(InputRef {
                name,
                sha256: file.sha256,
            });
        }
        // The first job compiles what only runs on nodes (programs started
        // with `run-program`); the next ones show the steady state.
        publish_sample(&client, sample).await?;
        let run = || {
            run_sample(
                &client,
                sample,
                workload.parameters.clone(),
                inputs.clone(),
                None,
            )
        };
        let (_, first_secs) = run().await?;
        let mut best: Option<(Job, f64)> = None;
        for _ in 0..args.runs {
            let (job, secs) = run().await?;
            if best.as_ref().is_none_or(|(_, b)| secs < *b) {
                best = Some((job, secs));
            }
        }
        let (job, wasm_secs) = best.expect("at least one run");
        let outputs = client.outputs(&job.id).await?;

        let native = workload.native;
        let runs = args.runs;
        let native = tokio::task::spawn_blocking(move || {
            let mut best: Option<workloads::NativeRun> = None;
            for _ in 0..runs {
                let run = native(slots)?;
                if best.as_ref().is_none_or(|b| run.secs < b.secs) {
                    best = Some(run);
                }
            }
            Ok::<_, anyhow::Error>(best.expect("at least one run"))
        })
        .await??;
        let native_secs = native.secs;
        let mut identical = true;
        for (path, matches) in native.checks {
            let output = outputs
                .iter()
                .find(|o| o.task.is_none() && o.path == path)
                .with_context(|| format!("the {sample} job wrote no {path}"))?;
            identical &= matches(&client.output_bytes(&job.id, output).await?);
        }
        all_identical &= identical;
        println!(
            "{}",
            serde_json::json!({
                "bench": "compute",
                "sample": sample,
                "work": workload.size,
                "tasks": job.progress.total,
                "slots": slots,
                "runs": args.runs,
                "first_job_secs": round(first_secs),
                "wasm_secs": round(wasm_secs),
                "native_secs": round(native_secs),
                "ratio": round(wasm_secs / native_secs),
                "identical": identical,
            })
        );
    }
    embedded.stop().await?;
    Ok(if all_identical {
        ExitCode::SUCCESS
    } else {
        eprintln!("a job's outputs differ from the native computation's");
        ExitCode::FAILURE
    })
}

/// CPU seconds used by this process and its children that have ended (the
/// slots' worker processes, once the service has stopped).
fn cpu_secs() -> f64 {
    let used = |who| {
        // SAFETY: getrusage only writes the struct it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        if unsafe { libc::getrusage(who, &mut usage) } != 0 {
            return 0.0;
        }
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        secs(usage.ru_utime) + secs(usage.ru_stime)
    };
    used(libc::RUSAGE_SELF) + used(libc::RUSAGE_CHILDREN)
}

/// `x` rounded to three decimals, as the figures are printed.
pub(super) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
