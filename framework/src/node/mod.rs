//! The node agent: leases tasks from a [`Coordinator`], runs them on its
//! task slots, and commits the results.
//!
//! The embedded service's local pool is one such node running in process; a
//! remote node agent runs the same code against the service's HTTP API. A
//! node's moving parts:
//!
//! - the **lease loop** keeps enough tasks on hand to keep every slot busy
//!   (more when tasks are short, so that one lease serves many of them),
//!   fetches what they need into the local cache, and hands them to slots;
//! - **slots** are OS threads that run one attempt at a time;
//! - the **committer** sends finished attempts back in batches, retrying until
//!   the coordinator has them (a commit is idempotent);
//! - the **heartbeat** keeps the node's leases alive, reports progress, and
//!   cancels attempts the coordinator revoked.

mod cache;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::model::{Failure, FailureKind, TaskKind, now_ms};
use crate::protocol::{
    Assignment, AttemptKey, AttemptReport, Coordinator, Heartbeat, LogRef, NodeRegistration,
    Outcome, RunningAttempt,
};
use crate::runtime::{Role, Runtime};
use cache::Cache;
use worker::{Slot, Work};

/// How long one lease request waits for work before asking again.
const LEASE_WAIT: Duration = Duration::from_secs(20);

/// Most attempts committed in one call.
const COMMIT_BATCH: usize = 2048;

/// A node keeps about this much work per slot on hand, so that short tasks
/// are leased in batches and a slot never waits for the next lease.
const PREFETCH_WINDOW_MICROS: u64 = 100_000;

/// Most attempts a node holds per slot.
const MAX_HELD_PER_SLOT: usize = 2048;

/// Jobs whose task durations a node remembers.
const REMEMBERED_JOBS: usize = 1024;

/// Settings of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The node's id; keep it stable across restarts of the same node.
    pub node_id: String,
    /// The pool it serves.
    pub pool: String,
    /// How many tasks it runs at once.
    pub slots: usize,
    /// Its working folder (cache and slot folders).
    pub work_dir: PathBuf,
    /// How often it heartbeats.
    pub heartbeat_interval: Duration,
    /// Its host name, for operators.
    pub hostname: String,
    /// Where it can be reached, for operators.
    pub address: String,
    /// Limits on the application images it unpacks (as at publish).
    pub archive_limits: crate::package::ArchiveLimits,
}

impl NodeConfig {
    /// What the node tells the coordinator about itself.
    fn registration(&self) -> NodeRegistration {
        NodeRegistration {
            node_id: self.node_id.clone(),
            pool: self.pool.clone(),
            hostname: self.hostname.clone(),
            address: self.address.clone(),
            slots: self.slots as u32,
        }
    }
}

/// A running node; stop it with [`NodeHandle::stop`].
pub struct NodeHandle {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl NodeHandle {
    /// Stops leasing, cancels what is running, commits what finished,
    /// releases the rest to other nodes, and waits for all of it.
    pub async fn stop(self) -> Result<(), Error> {
        self.stop.cancel();
        self.task
            .await
            .map_err(|e| Error::Internal(format!("the node task failed: {e}")))?
    }
}

/// An attempt the node holds.
struct Held {
    cancel: Arc<AtomicBool>,
    progress: Arc<AtomicU32>,
}

/// State shared by the node's loops.
struct Shared {
    held: Mutex<HashMap<AttemptKey, Held>>,
    /// Attempts leased and not yet committed.
    outstanding: AtomicUsize,
    capacity: Notify,
    /// How long tasks take, per job.
    durations: Mutex<Durations>,
    stopping: AtomicBool,
}

/// Moving averages of task durations per job, and the job the node is
/// leasing from: prefetch follows what that job's tasks have shown, and
/// stays at one task per slot until one of them has finished.
#[derive(Default)]
struct Durations {
    micros: HashMap<String, u64>,
    current: Option<String>,
}

impl Shared {
    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptKey, Held>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn durations(&self) -> std::sync::MutexGuard<'_, Durations> {
        self.durations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many attempts to keep on hand.
    fn target(&self, slots: usize) -> usize {
        let durations = self.durations();
        let average = durations
            .current
            .as_ref()
            .and_then(|job| durations.micros.get(job));
        let per_slot = average.map_or(1, |&a| PREFETCH_WINDOW_MICROS.div_ceil(a.max(1)) as usize);
        slots * per_slot.clamp(1, MAX_HELD_PER_SLOT)
    }

    /// Records how long one of a job's tasks took.
    fn record_duration(&self, job_id: &str, micros: u64) {
        let mut durations = self.durations();
        if let Some(old) = durations.micros.get_mut(job_id) {
            *old = (*old * 7 + micros) / 8;
            return;
        }
        if durations.micros.len() >= REMEMBERED_JOBS {
            durations.micros.clear();
        }
        durations.micros.insert(job_id.to_owned(), micros);
    }

    /// Notes which job the node is now leasing from.
    fn leasing_from(&self, job_id: &str) {
        let mut durations = self.durations();
        if durations.current.as_deref() != Some(job_id) {
            durations.current = Some(job_id.to_owned());
        }
    }
}

/// Starts a node on the current tokio runtime.
pub fn start<C: Coordinator>(
    coordinator: Arc<C>,
    runtime: Runtime,
    config: NodeConfig,
) -> Result<NodeHandle, Error> {
    std::fs::create_dir_all(&config.work_dir)?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(coordinator, runtime, config, stop.clone()));
    Ok(NodeHandle { stop, task })
}

async fn run<C: Coordinator>(
    coordinator: Arc<C>,
    runtime: Runtime,
    config: NodeConfig,
    stop: CancellationToken,
) -> Result<(), Error> {
    let cache = Arc::new(Cache::new(
        &config.work_dir.join("cache"),
        config.archive_limits.clone(),
    )?);
    let registration = config.registration();
    if !register(&*coordinator, &registration, &stop).await {
        return Ok(());
    }
    let shared = Arc::new(Shared {
        held: Mutex::new(HashMap::new()),
        outstanding: AtomicUsize::new(0),
        capacity: Notify::new(),
        durations: Mutex::new(Durations::default()),
        stopping: AtomicBool::new(false),
    });
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Work>();
    let (done_tx, done_rx) = mpsc::unbounded_channel::<AttemptReport>();

    let mut slots = Vec::with_capacity(config.slots);
    for i in 0..config.slots {
        let (inputs, output) =
            Slot::<C>::prepare(&config.work_dir.join("slots").join(i.to_string()))?;
        let slot = Slot {
            node_id: config.node_id.clone(),
            runtime: runtime.clone(),
            coordinator: coordinator.clone(),
            cache: cache.clone(),
            handle: tokio::runtime::Handle::current(),
            inputs,
            output,
        };
        let rx = work_rx.clone();
        let tx = done_tx.clone();
        let timings = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("tessera-slot-{i}"))
            // Room for a guest's wasm stack, a program it runs, and the host.
            .stack_size(16 << 20)
            .spawn(move || {
                while let Ok(work) = rx.recv() {
                    let start = Instant::now();
                    let report = slot.run(&work);
                    if work.assignment.kind == TaskKind::Process {
                        let micros = start.elapsed().as_micros() as u64;
                        timings.record_duration(&work.assignment.key.job_id, micros);
                    }
                    if tx.send(report).is_err() {
                        break;
                    }
                }
            })?;
        slots.push(thread);
    }
    drop(work_rx);

    let committer = tokio::spawn(commit_loop(
        coordinator.clone(),
        config.node_id.clone(),
        done_rx,
        shared.clone(),
    ));
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat_loop(
        coordinator.clone(),
        registration.clone(),
        config.heartbeat_interval,
        shared.clone(),
        heartbeat_stop.clone(),
    ));

    lease_loop(
        &*coordinator,
        &runtime,
        &cache,
        &config,
        &shared,
        &work_tx,
        &done_tx,
        &stop,
    )
    .await;

    // Stop: cancel what is running or waiting, let slots drain, commit what
    // finished, then give the rest back.
    shared.stopping.store(true, Ordering::Relaxed);
    for held in shared.held().values() {
        held.cancel.store(true, Ordering::Relaxed);
    }
    drop(work_tx);
    drop(done_tx);
    let joined = tokio::task::spawn_blocking(move || {
        for slot in slots {
            let _ = slot.join();
        }
    })
    .await;
    if joined.is_err() {
        tracing::error!("a task slot thread panicked");
    }
    let _ = committer.await;
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    coordinator.deregister(&config.node_id).await
}

/// Registers, retrying until it works or the node is stopped.
async fn register<C: Coordinator>(
    coordinator: &C,
    registration: &NodeRegistration,
    stop: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match coordinator.register(registration.clone()).await {
            Ok(()) => return true,
            Err(e) => tracing::warn!(error = %e, "registering the node failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

#[allow(clippy::too_many_arguments)]
async fn lease_loop<C: Coordinator>(
    coordinator: &C,
    runtime: &Runtime,
    cache: &Cache,
    config: &NodeConfig,
    shared: &Shared,
    work_tx: &crossbeam_channel::Sender<Work>,
    done_tx: &mpsc::UnboundedSender<AttemptReport>,
    stop: &CancellationToken,
) {
    loop {
        // Wait until at most half the wanted work is on hand.
        let want = loop {
            let notified = shared.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let target = shared.target(config.slots);
            let outstanding = shared.outstanding.load(Ordering::Acquire);
            if outstanding < config.slots || outstanding <= target / 2 {
                break target.saturating_sub(outstanding).max(1);
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut notified => {}
            }
        };
        let leased = tokio::select! {
            () = stop.cancelled() => return,
            leased = coordinator.lease(&config.node_id, want, LEASE_WAIT) => leased,
        };
        let assignments = match leased {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "leasing failed; retrying");
                if matches!(e, Error::NotFound { what: "node", .. })
                    && !register(coordinator, &config.registration(), stop).await
                {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        if let Some(last) = assignments.last() {
            shared.leasing_from(&last.key.job_id);
        }
        for assignment in assignments {
            shared.outstanding.fetch_add(1, Ordering::AcqRel);
            let cancel = Arc::new(AtomicBool::new(false));
            let progress = Arc::new(AtomicU32::new(0));
            shared.held().insert(
                assignment.key.clone(),
                Held {
                    cancel: cancel.clone(),
                    progress: progress.clone(),
                },
            );
            match prepare(coordinator, runtime, cache, &assignment).await {
                Ok(app_dir) => {
                    let work = Work {
                        assignment,
                        app_dir,
                        cancel,
                        progress,
                    };
                    if work_tx.send(work).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let now = now_ms();
                    let report = AttemptReport {
                        key: assignment.key,
                        outcome: Outcome::Failed(Failure::new(
                            FailureKind::Internal,
                            format!("the node could not prepare the attempt: {e}"),
                        )),
                        stdout: LogRef::default(),
                        stderr: LogRef::default(),
                        started_at: now,
                        finished_at: now,
                        peak_memory: 0,
                    };
                    let _ = done_tx.send(report);
                }
            }
        }
    }
}

/// Fetches everything an attempt needs; returns its application folder.
async fn prepare<C: Coordinator>(
    coordinator: &C,
    runtime: &Runtime,
    cache: &Cache,
    a: &Assignment,
) -> Result<PathBuf, Error> {
    let role = if a.kind == TaskKind::Split {
        Role::Splitter
    } else {
        Role::Processor
    };
    cache
        .component(coordinator, runtime, role, &a.component)
        .await?;
    let app_dir = cache.app(coordinator, a.image).await?;
    for input in &a.inputs {
        cache.file(coordinator, &input.digest).await?;
    }
    for result in &a.results {
        for output in &result.outputs {
            cache.file(coordinator, &output.digest).await?;
        }
    }
    Ok(app_dir)
}

/// Commits finished attempts in batches until every slot has stopped.
async fn commit_loop<C: Coordinator>(
    coordinator: Arc<C>,
    node_id: String,
    mut done: mpsc::UnboundedReceiver<AttemptReport>,
    shared: Arc<Shared>,
) {
    let mut batch = Vec::with_capacity(COMMIT_BATCH);
    while let Some(first) = done.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < COMMIT_BATCH {
            match done.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let keys: Vec<AttemptKey> = batch.iter().map(|r| r.key.clone()).collect();
        // While stopping, cancelled attempts are released instead (deregister
        // requeues them without counting a failure).
        let stopping = shared.stopping.load(Ordering::Relaxed);
        let reports: Vec<AttemptReport> = batch
            .drain(..)
            .filter(|r| {
                !(stopping
                    && matches!(&r.outcome, Outcome::Failed(f) if f.kind == FailureKind::Cancelled))
            })
            .collect();
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        while let Err(e) = coordinator.commit(&node_id, &reports).await {
            tries += 1;
            tracing::warn!(error = %e, tries, "committing results failed; retrying");
            if stopping && tries >= 5 {
                break;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        {
            let mut held = shared.held();
            for key in &keys {
                held.remove(key);
            }
        }
        shared.outstanding.fetch_sub(keys.len(), Ordering::AcqRel);
        shared.capacity.notify_one();
    }
}

/// Heartbeats until stopped; cancels the attempts the coordinator revokes.
async fn heartbeat_loop<C: Coordinator>(
    coordinator: Arc<C>,
    registration: NodeRegistration,
    interval: Duration,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let held: Vec<RunningAttempt> = shared
            .held()
            .iter()
            .map(|(key, h)| RunningAttempt {
                key: key.clone(),
                progress: f32::from_bits(h.progress.load(Ordering::Relaxed)),
            })
            .collect();
        let heartbeat = Heartbeat {
            node_id: registration.node_id.clone(),
            held,
        };
        let reply = tokio::select! {
            () = stop.cancelled() => return,
            reply = coordinator.heartbeat(heartbeat, interval) => reply,
        };
        match reply {
            Ok(reply) => {
                let held = shared.held();
                for key in &reply.revoked {
                    if let Some(h) = held.get(key) {
                        h.cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                if matches!(e, Error::NotFound { what: "node", .. })
                    && !register(&*coordinator, &registration, &stop).await
                {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        }
    }
}
