//! The node: leases tasks from a [`Coordinator`], runs them on its task
//! slots, and commits the results.
//!
//! The embedded service's local pool is one such node running in process;
//! `tessera node` runs the same code against the service's HTTP API. A
//! node's moving parts:
//!
//! - a **session** per registration: the coordinator gives the node a fresh
//!   id each time it registers, and the attempts leased under that id
//!   belong to the session. A session ends when the node stops, leaves its
//!   pool, or the coordinator no longer knows the id (the node was declared
//!   lost); the node then registers again, naming the id it had;
//! - the **lease loop** keeps enough tasks on hand to keep every slot busy
//!   (more when tasks are short, so that one lease serves many of them),
//!   fetches what they need into the local cache, and hands them to slots;
//! - **slots** are worker processes that run one attempt at a time, with no
//!   checks inside the guest: a deadline or a cancellation stops the
//!   worker, and its supervisor starts another ([`worker`]);
//! - the **committer** sends finished attempts back in batches, retrying
//!   until the coordinator has them (a commit is idempotent), splitting a
//!   batch the coordinator refuses and dropping the reports it refuses;
//! - the **heartbeat** keeps the session alive, confirms its leases,
//!   reports progress, cancels attempts the coordinator revoked, and hears
//!   when the node should leave.

mod cache;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorClass};
use crate::model::{Failure, FailureKind, TaskKind, now_ms};
use crate::protocol::{
    Assignment, AttemptKey, AttemptReport, Coordinator, Heartbeat, NodeError, NodeRegistration,
    Outcome, RunningAttempt, Usage,
};
use crate::runtime::{Role, Runtime};
use cache::Cache;
pub use worker::{WORKER_ARG, WorkerCommand, run_if_worker};

/// How long one lease request waits for work before asking again.
const LEASE_WAIT: Duration = Duration::from_secs(20);

/// Most attempts committed in one call.
const COMMIT_BATCH: usize = 2048;

/// Default bound of a node's cache of fetched files (10 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// How long fetching what an attempt needs waits out an unreachable
/// service before the attempt fails.
const PREPARE_PATIENCE: Duration = Duration::from_secs(300);

/// A node keeps about this much work per slot on hand, so that short tasks
/// are leased in batches and a slot never waits for the next lease.
const PREFETCH_WINDOW_MICROS: u64 = 100_000;

/// Most attempts a node holds per slot.
const MAX_HELD_PER_SLOT: usize = 2048;

/// Jobs whose task durations a node remembers.
const REMEMBERED_JOBS: usize = 1024;

/// The file in the work folder that remembers the node's last id, so that a
/// restarted node can tell the coordinator to release that id's attempts.
const ID_FILE: &str = "node-id";

/// What a node keeps in its work folder.
const LOCAL_FILES: [&str; 6] = ["cache", "slots", "programs", "outbox", "shared", ID_FILE];

/// Uploads in flight at once, across a node's slots.
const UPLOADS: usize = 16;

/// Finished attempts a node may hold per slot while their files upload and
/// their reports commit, on top of the work it keeps on hand: leasing goes
/// on while they upload, but stops if uploads fall this far behind.
const FINISHING_PER_SLOT: usize = 8;

/// Attempts sent ahead to a slot's worker at most, when tasks are short.
const MAX_PIPELINE: usize = 64;

/// About this much work (in microseconds) is sent ahead to a busy worker.
const PIPELINE_MICROS: u64 = 2_000;

/// Settings of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The pool it serves.
    pub pool: String,
    /// How many tasks it runs at once.
    pub slots: usize,
    /// The memory it offers its tasks, in bytes.
    pub memory_bytes: u64,
    /// Its working folder (cache and slot folders).
    pub work_dir: PathBuf,
    /// Whether what the node keeps in its working folder is deleted when it
    /// leaves its pool (a node that leaves loses its local files); the
    /// embedded node keeps its cache across restarts of the service.
    pub remove_work_dir: bool,
    /// How often it heartbeats.
    pub heartbeat_interval: Duration,
    /// Its host name, for operators.
    pub hostname: String,
    /// Where it can be reached, for operators.
    pub address: String,
    /// The node provider's handle of the allocation that started it.
    pub agent: Option<String>,
    /// Limits on the application images it unpacks (as at publish).
    pub archive_limits: crate::package::ArchiveLimits,
    /// Most bytes of fetched files its cache keeps (the least recently
    /// used go first; files a running attempt holds stay).
    pub cache_bytes: u64,
    /// How it starts its slots' worker processes.
    pub worker: WorkerCommand,
    /// A node that cannot reach its coordinator for this long stops (an
    /// agent a provider started should not outlive its service forever);
    /// `None`: it keeps trying.
    pub give_up_after: Option<Duration>,
}

impl NodeConfig {
    /// What the node tells the coordinator about itself.
    fn registration(&self, previous: Option<String>) -> NodeRegistration {
        NodeRegistration {
            pool: self.pool.clone(),
            hostname: self.hostname.clone(),
            address: self.address.clone(),
            slots: self.slots as u32,
            memory_bytes: self.memory_bytes,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            previous,
            agent: self.agent.clone(),
        }
    }
}

/// A running node; stop it with [`NodeHandle::stop`].
pub struct NodeHandle {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
    id: watch::Receiver<Option<String>>,
}

impl NodeHandle {
    /// The node's id once it has registered (it changes if the node has to
    /// register again); `None` if it stopped before registering.
    pub async fn id(&self) -> Option<String> {
        let mut id = self.id.clone();
        id.wait_for(Option::is_some).await.ok()?.clone()
    }

    /// A handle that asks the node to stop (as [`NodeHandle::stop`] does,
    /// without waiting), for a signal handler.
    pub fn stopper(&self) -> NodeStopper {
        NodeStopper(self.stop.clone())
    }

    /// Stops leasing, cancels what is running, commits what finished,
    /// releases the rest to other nodes, and waits for all of it.
    pub async fn stop(self) -> Result<(), Error> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until the node ends by itself: it left its pool, or met an
    /// error it cannot recover from (its pool is gone, its token refused).
    pub async fn wait(self) -> Result<(), Error> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Node(e)),
            Err(e) => Err(Error::Internal(format!("the node task failed: {e}"))),
        }
    }
}

/// Asks a node to stop.
#[derive(Clone, Debug)]
pub struct NodeStopper(CancellationToken);

impl NodeStopper {
    /// Asks the node to stop; [`NodeHandle::wait`] returns once it has.
    pub fn stop(&self) {
        self.0.cancel();
    }
}

/// An attempt the node holds.
struct Held {
    cancel: Arc<AtomicBool>,
    progress: Arc<AtomicU32>,
}

/// One registration of the node: its id, the attempts leased under it, and
/// whether it is still live.
struct Session {
    node_id: String,
    held: Mutex<HashMap<AttemptKey, Held>>,
    /// Cancelled when the session stops leasing (it ends, or drains).
    ended: CancellationToken,
    /// Why it ended, once it has.
    end: Mutex<Option<SessionEnd>>,
}

/// How a session ended.
#[derive(Clone, Debug)]
enum SessionEnd {
    /// The node was asked to stop.
    Stopped,
    /// The coordinator asked the node to leave its pool.
    Left,
    /// The coordinator no longer knows the session's id: register again.
    Lost,
    /// An error the node cannot recover from.
    Fatal(NodeError),
}

impl Session {
    fn held(&self) -> MutexGuard<'_, HashMap<AttemptKey, Held>> {
        lock(&self.held)
    }

    /// Ends the session (the first reason given wins).
    fn end(&self, why: SessionEnd) {
        let mut end = lock(&self.end);
        if end.is_none() {
            *end = Some(why);
        }
        self.ended.cancel();
    }

    /// Ends the session for the error a call met, unless the error is
    /// transient; returns whether it ended.
    fn end_on(&self, error: &NodeError) -> bool {
        match error {
            NodeError::Unavailable(_) | NodeError::Refused(_) => return false,
            NodeError::UnknownNode(_) => self.end(SessionEnd::Lost),
            NodeError::PoolGone(_) | NodeError::TokenRefused(_) => {
                self.end(SessionEnd::Fatal(error.clone()));
            }
        }
        true
    }

    /// Whether the session still leases work.
    fn is_live(&self) -> bool {
        !self.ended.is_cancelled()
    }

    /// Whether the coordinator still knows the session, so that committing
    /// its results can work (it may have stopped leasing).
    fn can_commit(&self) -> bool {
        !matches!(
            *lock(&self.end),
            Some(SessionEnd::Lost | SessionEnd::Fatal(_))
        )
    }
}

/// State shared by the node's loops across sessions.
struct Shared {
    /// Attempts leased and not yet committed.
    outstanding: AtomicUsize,
    /// Of those, the ones that finished running (or never will) and are
    /// uploading or waiting to commit.
    finishing: AtomicUsize,
    capacity: Notify,
    /// How long tasks take, per job.
    durations: Mutex<Durations>,
    /// Set once the node is stopping: cancelled attempts are released, not
    /// committed.
    stopping: AtomicBool,
    /// Why the node cannot run tasks, if it cannot.
    unusable: Mutex<Option<String>>,
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
    fn durations(&self) -> MutexGuard<'_, Durations> {
        lock(&self.durations)
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

    /// How many attempts a slot's worker may hold when it runs one of
    /// `job`'s: one (it runs alone) unless that job's tasks are known to be
    /// short, and then only about [`PIPELINE_MICROS`] of work, so that a
    /// worker never waits for the next attempt to arrive while a task that
    /// turns out long delays little behind it.
    fn pipeline_depth(&self, job: Option<&str>) -> usize {
        let Some(job) = job else { return 1 };
        match self.durations().micros.get(job) {
            Some(&micros) => {
                (PIPELINE_MICROS / micros.max(1)).clamp(1, MAX_PIPELINE as u64) as usize
            }
            None => 1,
        }
    }

    fn set_unusable(&self, why: Option<String>) {
        *lock(&self.unusable) = why;
    }

    fn unusable(&self) -> Option<String> {
        lock(&self.unusable).clone()
    }

    /// An attempt finished running (or will not run): its slot is free,
    /// although its report is not committed yet.
    fn ran(&self) {
        self.finishing.fetch_add(1, Ordering::AcqRel);
        self.capacity.notify_one();
    }

    /// Attempts were committed or dropped: room for more.
    fn finished(&self, n: usize) {
        self.finishing.fetch_sub(n, Ordering::AcqRel);
        self.outstanding.fetch_sub(n, Ordering::AcqRel);
        self.capacity.notify_one();
    }
}

/// Where a prepared attempt's files are on this machine.
#[derive(Clone, Debug)]
struct Prepared {
    /// The component's compiled artifact.
    artifact: PathBuf,
    /// The extracted application image.
    app: PathBuf,
    /// Files under `/inputs`: their path there and the cached copy.
    mounts: Vec<(String, PathBuf)>,
    /// Keeps the cached copies from eviction until the attempt is done.
    _pins: Arc<Vec<cache::FilePin>>,
}

/// An attempt ready to run: its assignment and everything fetched for it.
struct Work {
    session: Arc<Session>,
    assignment: Assignment,
    prepared: Prepared,
    cancel: Arc<AtomicBool>,
    progress: Arc<AtomicU32>,
}

/// A finished attempt on its way to the committer.
struct Done {
    session: Arc<Session>,
    report: AttemptReport,
}

/// Starts a node on the current tokio runtime.
pub fn start<C: Coordinator>(
    coordinator: Arc<C>,
    runtime: Runtime,
    config: NodeConfig,
) -> Result<NodeHandle, Error> {
    std::fs::create_dir_all(&config.work_dir)?;
    let cache = Arc::new(Cache::new(
        &config.work_dir.join("cache"),
        config.archive_limits.clone(),
        config.cache_bytes,
    )?);
    let stop = CancellationToken::new();
    let (id_tx, id) = watch::channel(None);
    let node = Node {
        coordinator,
        runtime,
        cache,
        config,
        stop: stop.clone(),
        shared: Arc::new(Shared {
            outstanding: AtomicUsize::new(0),
            finishing: AtomicUsize::new(0),
            capacity: Notify::new(),
            durations: Mutex::new(Durations::default()),
            stopping: AtomicBool::new(false),
            unusable: Mutex::new(None),
        }),
        id: id_tx,
    };
    let task = tokio::spawn(node.run());
    Ok(NodeHandle { stop, task, id })
}

/// A node: its settings, its link to the coordinator and what its loops
/// share.
struct Node<C> {
    coordinator: Arc<C>,
    runtime: Runtime,
    cache: Arc<Cache>,
    config: NodeConfig,
    stop: CancellationToken,
    shared: Arc<Shared>,
    id: watch::Sender<Option<String>>,
}

impl<C: Coordinator> Node<C> {
    async fn run(self) -> Result<(), NodeError> {
        let (work_tx, work_rx) = mpsc::channel::<Work>(self.channel_bound());
        // Reports are few compared to the capacity: at most what is held.
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
        let slots = self.start_slots(work_rx, &done_tx).map_err(|e| {
            NodeError::Unavailable(format!("cannot start the node's task slots: {e}"))
        })?;
        let committer = tokio::spawn(commit_loop(
            self.coordinator.clone(),
            done_rx,
            self.shared.clone(),
        ));
        let id_file = self.config.work_dir.join(ID_FILE);
        let mut previous = std::fs::read_to_string(&id_file)
            .ok()
            .map(|s| s.trim().to_owned());
        let end = loop {
            let Some(registered) = self.register(previous.take()).await? else {
                break SessionEnd::Stopped;
            };
            let node_id = registered.node_id.clone();
            if let Err(e) = std::fs::write(&id_file, &node_id) {
                tracing::warn!(error = %e, "cannot remember the node id");
            }
            let _ = self.id.send(Some(node_id.clone()));
            let session = Arc::new(Session {
                node_id: node_id.clone(),
                held: Mutex::new(HashMap::new()),
                ended: CancellationToken::new(),
                end: Mutex::new(None),
            });
            let end = self
                .run_session(&session, registered.start_task, &work_tx, &done_tx)
                .await;
            match end {
                SessionEnd::Lost => {
                    tracing::warn!(node = %node_id, "the service declared this node lost; registering again");
                    previous = Some(node_id);
                }
                other => break other,
            }
        };
        drop(work_tx);
        drop(done_tx);
        for slot in slots {
            if slot.await.is_err() {
                tracing::error!("a task slot's supervisor panicked");
            }
        }
        let _ = committer.await;
        if matches!(end, SessionEnd::Stopped | SessionEnd::Left) && self.config.remove_work_dir {
            self.remove_local_files();
        }
        match end {
            SessionEnd::Fatal(e) => Err(e),
            _ => Ok(()),
        }
    }

    /// A node that leaves its pool loses its local files: everything it
    /// made in its work folder (not the folder, which may be the user's).
    fn remove_local_files(&self) {
        let dir = &self.config.work_dir;
        for name in LOCAL_FILES {
            let path = dir.join(name);
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), error = %e, "cannot delete a node file");
            }
        }
    }

    /// Room in the slots' queue: whatever the node holds at most.
    fn channel_bound(&self) -> usize {
        self.config.slots.max(1) * MAX_HELD_PER_SLOT
    }

    /// Starts a supervisor per slot; each starts its worker process.
    fn start_slots(
        &self,
        work_rx: mpsc::Receiver<Work>,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, Error> {
        let dir = &self.config.work_dir;
        let outbox = dir.join("outbox");
        // Files of an earlier run were uploaded or are of no use now.
        if outbox.exists() {
            std::fs::remove_dir_all(&outbox)?;
        }
        std::fs::create_dir_all(&outbox)?;
        let queue = Arc::new(tokio::sync::Mutex::new(work_rx));
        let uploads = Arc::new(Semaphore::new(UPLOADS));
        let slots = (0..self.config.slots)
            .map(|i| {
                tokio::spawn(worker::supervise(worker::SlotContext {
                    command: self.config.worker.clone(),
                    setup: self.setup(&dir.join("slots").join(i.to_string())),
                    queue: queue.clone(),
                    done: done_tx.clone(),
                    coordinator: self.coordinator.clone(),
                    shared: self.shared.clone(),
                    uploads: uploads.clone(),
                }))
            })
            .collect();
        Ok(slots)
    }

    /// How a worker of this node is set up, its slot folder `slot_dir`.
    fn setup(&self, slot_dir: &std::path::Path) -> worker::Setup {
        let dir = &self.config.work_dir;
        worker::Setup {
            slot_dir: slot_dir.to_path_buf(),
            outbox: dir.join("outbox"),
            program_cache: dir.join("programs"),
            shared_dir: dir.join("shared"),
            max_memory_bytes: self.runtime.config().max_memory_bytes,
        }
    }

    /// Runs the pool's start task and reports how it ended (a node whose
    /// start task failed stays, leased nothing, for operators to see).
    async fn start_task(&self, node_id: &str, task: crate::protocol::StartTaskRun) {
        tracing::info!(node = %node_id, program = %task.program, "running the pool's start task");
        let report = match self
            .cache
            .app(&*self.coordinator, node_id, task.image)
            .await
        {
            Ok(app) => {
                let job = worker::StartTask {
                    app,
                    program: task.program,
                    args: task.args,
                    timeout_ms: task.timeout_ms,
                    env: vec![
                        ("TESSERA_POOL_ID".to_owned(), self.config.pool.clone()),
                        ("TESSERA_NODE_ID".to_owned(), node_id.to_owned()),
                    ],
                };
                let setup = self.setup(&self.config.work_dir.join("slots").join("start"));
                worker::run_start_task(&self.config.worker, &setup, job).await
            }
            Err(e) => crate::protocol::StartTaskReport {
                status: None,
                error: Some(format!("cannot fetch its image: {e}")),
                stdout: String::new(),
                stderr: String::new(),
            },
        };
        if let Err(e) = self.coordinator.start_task_finished(node_id, &report).await {
            tracing::warn!(error = %e, "reporting the start task failed");
        }
    }

    /// Registers, retrying transient errors until it works; `None` if the
    /// node was stopped first.
    async fn register(
        &self,
        previous: Option<String>,
    ) -> Result<Option<crate::protocol::Registered>, NodeError> {
        let registration = self.config.registration(previous);
        let mut delay = Duration::from_millis(200);
        let since = tokio::time::Instant::now();
        loop {
            match self.coordinator.register(registration.clone()).await {
                Ok(registered) => return Ok(Some(registered)),
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "registering the node failed; retrying");
                    if let Some(limit) = self.config.give_up_after
                        && since.elapsed() >= limit
                    {
                        return Err(unreachable(limit, &e));
                    }
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                () = self.stop.cancelled() => return Ok(None),
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    /// Runs one session until it ends; on the way out, what it holds is
    /// committed or released.
    async fn run_session(
        &self,
        session: &Arc<Session>,
        start_task: Option<crate::protocol::StartTaskRun>,
        work_tx: &mpsc::Sender<Work>,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) -> SessionEnd {
        let heartbeat = tokio::spawn(heartbeat_loop(
            self.coordinator.clone(),
            session.clone(),
            self.shared.clone(),
            self.config.heartbeat_interval,
            self.config.give_up_after,
        ));
        // The start task runs while the session heartbeats, before any
        // lease: a node takes tasks only once it succeeded.
        if let Some(task) = start_task {
            tokio::select! {
                () = self.stop.cancelled() => {}
                () = session.ended.cancelled() => {}
                () = self.start_task(&session.node_id, task) => {}
            }
        }
        let drain = self.lease_loop(session, work_tx, done_tx).await;
        if drain {
            // Leaving the pool: what is held finishes and is committed.
            self.wait_until_idle(session).await;
        }
        if self.stop.is_cancelled() || !drain {
            // Stopping (or lost): cancel what is running or waiting, let it
            // come back, commit what finished; the rest is released below.
            self.shared.stopping.store(true, Ordering::Relaxed);
            for held in session.held().values() {
                held.cancel.store(true, Ordering::Relaxed);
            }
            self.wait_until_idle(session).await;
        }
        let end = if drain {
            SessionEnd::Left
        } else if self.stop.is_cancelled() {
            SessionEnd::Stopped
        } else {
            lock(&session.end).clone().unwrap_or(SessionEnd::Lost)
        };
        session.end(end.clone());
        heartbeat.abort();
        let _ = heartbeat.await;
        self.shared.stopping.store(false, Ordering::Relaxed);
        if matches!(end, SessionEnd::Stopped | SessionEnd::Left)
            && let Err(e) = self.coordinator.deregister(&session.node_id).await
        {
            tracing::warn!(error = %e, "deregistering the node failed");
        }
        end
    }

    /// Waits until the session holds no attempt, or it ended.
    async fn wait_until_idle(&self, session: &Session) {
        loop {
            let notified = self.shared.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if session.held().is_empty() {
                return;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Leases and prepares work until the node stops or the session ends;
    /// returns whether the node should leave its pool (drain).
    async fn lease_loop(
        &self,
        session: &Arc<Session>,
        work_tx: &mpsc::Sender<Work>,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) -> bool {
        loop {
            let Some(want) = self.wait_for_capacity(session).await else {
                return matches!(*lock(&session.end), Some(SessionEnd::Left));
            };
            let leased = tokio::select! {
                () = self.stop.cancelled() => return false,
                () = session.ended.cancelled() => continue,
                leased = self.coordinator.lease(&session.node_id, want, LEASE_WAIT) => leased,
            };
            let assignments = match leased {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "leasing failed");
                    if !session.end_on(&e) {
                        tokio::select! {
                            () = self.stop.cancelled() => return false,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            };
            if let Some(last) = assignments.last() {
                self.shared.leasing_from(&last.key.job_id);
            }
            for assignment in assignments {
                if !self.hand_over(session, assignment, work_tx, done_tx).await {
                    return false;
                }
            }
        }
    }

    /// Waits until at most half the wanted work is on hand (attempts queued
    /// or running: finished ones uploading do not count, unless uploads
    /// fall far behind); returns how much to lease, or `None` once the node
    /// stops or the session ends.
    async fn wait_for_capacity(&self, session: &Session) -> Option<usize> {
        loop {
            let notified = self.shared.capacity.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.stop.is_cancelled() || !session.is_live() {
                return None;
            }
            let slots = self.config.slots;
            let target = self.shared.target(slots);
            let outstanding = self.shared.outstanding.load(Ordering::Acquire);
            let finishing = self.shared.finishing.load(Ordering::Acquire);
            let on_hand = outstanding.saturating_sub(finishing);
            if (on_hand < slots || on_hand <= target / 2) && finishing < slots * FINISHING_PER_SLOT
            {
                return Some(target.saturating_sub(on_hand).max(1));
            }
            tokio::select! {
                () = self.stop.cancelled() => return None,
                () = session.ended.cancelled() => return None,
                () = &mut notified => {}
            }
        }
    }

    /// Records a leased attempt as held, fetches what it needs, and hands
    /// it to the slots (or reports why it could not). Returns `false` once
    /// the slots are gone.
    async fn hand_over(
        &self,
        session: &Arc<Session>,
        assignment: Assignment,
        work_tx: &mpsc::Sender<Work>,
        done_tx: &mpsc::UnboundedSender<Done>,
    ) -> bool {
        self.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        let cancel = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU32::new(0));
        session.held().insert(
            assignment.key.clone(),
            Held {
                cancel: cancel.clone(),
                progress: progress.clone(),
            },
        );
        match self.prepare_patiently(session, &assignment).await {
            // The queue holds at most what the node holds, so this waits
            // only while the node is far behind.
            Ok(prepared) => work_tx
                .send(Work {
                    session: session.clone(),
                    assignment,
                    prepared,
                    cancel,
                    progress,
                })
                .await
                .is_ok(),
            Err(e) => {
                self.shared.ran();
                let now = now_ms();
                let report = AttemptReport {
                    key: assignment.key,
                    outcome: Outcome::Failed(Failure::new(
                        FailureKind::Internal,
                        format!("the node could not prepare the attempt: {e}"),
                    )),
                    stdout: None,
                    stderr: None,
                    started_at: now,
                    finished_at: now,
                    usage: Usage::default(),
                };
                done_tx
                    .send(Done {
                        session: session.clone(),
                        report,
                    })
                    .is_ok()
            }
        }
    }

    /// [`Node::prepare`], waiting out a service that is away (restarting,
    /// say) for up to [`PREPARE_PATIENCE`], while the session may commit.
    async fn prepare_patiently(
        &self,
        session: &Session,
        a: &Assignment,
    ) -> Result<Prepared, Error> {
        let deadline = tokio::time::Instant::now() + PREPARE_PATIENCE;
        let mut delay = Duration::from_millis(100);
        loop {
            match self.prepare(&session.node_id, a).await {
                Err(e)
                    if e.class() == ErrorClass::Internal
                        && session.can_commit()
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::warn!(error = %e, "fetching what an attempt needs failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                result => return result,
            }
        }
    }

    /// Fetches everything an attempt needs into the cache.
    async fn prepare(&self, node_id: &str, a: &Assignment) -> Result<Prepared, Error> {
        let role = if a.kind == TaskKind::Split {
            Role::Splitter
        } else {
            Role::Processor
        };
        let coordinator = &*self.coordinator;
        let cache = &self.cache;
        let artifact = cache
            .artifact(coordinator, node_id, &self.runtime, role, &a.component)
            .await?;
        let app = cache.app(coordinator, node_id, a.image).await?;
        let mut files: Vec<(String, crate::digest::Digest)> = a
            .inputs
            .iter()
            .map(|i| (i.path.clone(), i.digest))
            .collect();
        for r in &a.results {
            files.extend(
                r.outputs
                    .iter()
                    .map(|o| (format!("{}/{}", r.name, o.path), o.digest)),
            );
        }
        let mut mounts = Vec::with_capacity(files.len());
        let mut pins = Vec::with_capacity(files.len());
        for (path, digest) in files {
            let (cached, pin) = cache.file(coordinator, node_id, &digest).await?;
            mounts.push((path, cached));
            pins.push(pin);
        }
        Ok(Prepared {
            artifact,
            app,
            mounts,
            _pins: Arc::new(pins),
        })
    }
}

/// Commits finished attempts in batches until every slot has stopped.
async fn commit_loop<C: Coordinator>(
    coordinator: Arc<C>,
    mut done: mpsc::UnboundedReceiver<Done>,
    shared: Arc<Shared>,
) {
    let mut batch: Vec<Done> = Vec::with_capacity(COMMIT_BATCH);
    while let Some(first) = done.recv().await {
        batch.clear();
        batch.push(first);
        while batch.len() < COMMIT_BATCH {
            match done.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // Batches are almost always of one session; keep its order.
        while !batch.is_empty() {
            let session = batch[0].session.clone();
            let (mine, rest): (Vec<Done>, Vec<Done>) = batch
                .drain(..)
                .partition(|d| Arc::ptr_eq(&d.session, &session));
            batch = rest;
            let reports: Vec<AttemptReport> = mine.into_iter().map(|d| d.report).collect();
            commit_session(&*coordinator, &session, reports, &shared).await;
        }
    }
}

/// Commits one session's reports, then forgets them.
async fn commit_session<C: Coordinator>(
    coordinator: &C,
    session: &Session,
    reports: Vec<AttemptReport>,
    shared: &Shared,
) {
    let keys: Vec<AttemptKey> = reports.iter().map(|r| r.key.clone()).collect();
    // While stopping, cancelled attempts are released instead (deregister
    // requeues them without counting a failure).
    let stopping = shared.stopping.load(Ordering::Relaxed);
    let reports: Vec<AttemptReport> = reports
        .into_iter()
        .filter(|r| {
            !(stopping
                && matches!(&r.outcome, Outcome::Failed(f) if f.kind == FailureKind::Cancelled))
        })
        .collect();
    if session.can_commit() {
        commit_or_split(coordinator, session, &reports, stopping).await;
    }
    {
        let mut held = session.held();
        for key in &keys {
            held.remove(key);
        }
    }
    shared.finished(keys.len());
}

/// Commits reports, retrying while the coordinator is unavailable; a batch
/// it refuses as a whole is split in halves until the bad report is alone,
/// and that one is dropped.
async fn commit_or_split<C: Coordinator>(
    coordinator: &C,
    session: &Session,
    reports: &[AttemptReport],
    stopping: bool,
) {
    let mut pending: Vec<&[AttemptReport]> = vec![reports];
    while let Some(part) = pending.pop() {
        if part.is_empty() {
            continue;
        }
        let mut delay = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match coordinator.commit(&session.node_id, part).await {
                Ok(reply) => {
                    for refusal in reply.refused {
                        tracing::warn!(job = %refusal.key.job_id, seq = refusal.key.seq,
                            attempt = refusal.key.attempt, reason = ?refusal.reason,
                            "the service refused a result: {}", refusal.message);
                    }
                    break;
                }
                Err(NodeError::Refused(message)) if part.len() > 1 => {
                    tracing::warn!(reports = part.len(), %message, "the service refused a batch of results; splitting it");
                    let (a, b) = part.split_at(part.len() / 2);
                    pending.push(b);
                    pending.push(a);
                    break;
                }
                Err(NodeError::Refused(message)) => {
                    let key = &part[0].key;
                    tracing::error!(job = %key.job_id, seq = key.seq, attempt = key.attempt,
                        %message, "the service refused a result; dropping it");
                    break;
                }
                Err(e) if e.is_transient() => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, "committing results failed; retrying");
                    if (stopping && tries >= 5) || !session.can_commit() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "committing results failed");
                    session.end_on(&e);
                    return;
                }
            }
        }
    }
}

/// Heartbeats until aborted (at the end of its session) or the coordinator
/// no longer knows the session; cancels the attempts the coordinator
/// revokes, and stops the session's leasing when the node must leave.
async fn heartbeat_loop<C: Coordinator>(
    coordinator: Arc<C>,
    session: Arc<Session>,
    shared: Arc<Shared>,
    interval: Duration,
    give_up_after: Option<Duration>,
) {
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        let held: Vec<RunningAttempt> = session
            .held()
            .iter()
            .map(|(key, h)| RunningAttempt {
                key: key.clone(),
                progress: f32::from_bits(h.progress.load(Ordering::Relaxed)),
            })
            .collect();
        let heartbeat = Heartbeat {
            node_id: session.node_id.clone(),
            held,
            unusable: shared.unusable(),
        };
        match coordinator.heartbeat(heartbeat, interval).await {
            Ok(reply) => {
                failing_since = None;
                cancel(&session, &reply.revoked);
                if reply.drain && session.is_live() {
                    tracing::info!(node = %session.node_id, "the service asked this node to leave its pool");
                    session.end(SessionEnd::Left);
                }
                if reply.drain {
                    // Waiting on a drain answers at once: pace the beats.
                    tokio::time::sleep(interval).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                if session.end_on(&e) {
                    return;
                }
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if let Some(limit) = give_up_after
                    && since.elapsed() >= limit
                {
                    session.end(SessionEnd::Fatal(unreachable(limit, &e)));
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// The error of a node that gave up reaching its coordinator.
fn unreachable(limit: Duration, last: &NodeError) -> NodeError {
    NodeError::Unavailable(format!(
        "the service was unreachable for {} s, so the node stopped (last error: {last})",
        limit.as_secs()
    ))
}

/// Cancels the session's attempts named in `keys`.
fn cancel(session: &Session, keys: &[AttemptKey]) {
    let held = session.held();
    for key in keys {
        if let Some(h) = held.get(key) {
            h.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked
/// (plain maps and counters, changed in single steps).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
