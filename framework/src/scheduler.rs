//! The scheduler: hands tasks to nodes and turns their results into task and
//! job transitions.
//!
//! It keeps no state of its own that matters: the task queue, leases and job
//! states all live in the database, and every method is one transaction, so
//! any number of schedulers (service replicas) can share a database. What it
//! does keep in memory is only a cache of immutable job facts and two wake-up
//! signals for long-polling nodes.
//!
//! Leasing: a node asks for up to N tasks; the oldest queued tasks of its
//! pool become `running` on that node, and each task's attempt counter goes
//! up. That counter is the fencing token: a result is accepted only from the
//! attempt that holds it, so a node that was presumed lost and comes back
//! late can never overwrite a newer attempt's result.
//!
//! Committing: a batch of attempt reports is applied in one transaction:
//! attempts recorded, outputs recorded, tasks succeeded / requeued / failed,
//! dependents released, and the job moved on (split → running → merging →
//! completed, or failed). Batching is what lets one SQLite file sustain tens
//! of thousands of task results per second with durable commits.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{Failure, FailureKind, JobInput, JobState, TaskKind, TaskState, now_ms};
use crate::protocol::{
    Assignment, AttemptKey, AttemptReport, Coordinator, Heartbeat, HeartbeatReply, InputFile,
    NodeRegistration, Outcome, SplitPlan, TaskLimits,
};
use crate::store::{AttemptRecord, CurrentTask, JobRecord, LeasedTask, NewTask, Store, Tx};

/// The name of a job's split step.
pub const SPLIT_TASK: &str = "_split";
/// The name of a job's merge step.
pub const MERGE_TASK: &str = "_merge";

/// Settings of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A node silent for this long is offline and its tasks run elsewhere.
    pub node_timeout: Duration,
    /// The most tasks a splitter may create for one job.
    pub max_tasks_per_job: usize,
    /// The largest parameters object of one task, in bytes.
    pub max_task_parameters: usize,
    /// Memory limit of one attempt, in bytes.
    pub task_memory_bytes: u64,
    /// Largest `/output` of one attempt, in bytes.
    pub task_output_bytes: u64,
    /// Largest stdout and stderr of one attempt, each, in bytes.
    pub task_log_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_secs(30),
            max_tasks_per_job: 1_000_000,
            max_task_parameters: 64 << 10,
            task_memory_bytes: 1 << 30,
            task_output_bytes: 4 << 30,
            task_log_bytes: 4 << 20,
        }
    }
}

/// Immutable facts about a job that every assignment repeats.
struct JobContext {
    account: String,
    pool: String,
    app: String,
    app_version: u32,
    image: Option<Digest>,
    splitter: Digest,
    processor: Digest,
    parameters: String,
    inputs: Vec<JobInput>,
    has_deps: bool,
    limits: TaskLimits,
}

/// The scheduler; cheap to clone. It is the in-process [`Coordinator`].
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    blobs: BlobStore,
    config: SchedulerConfig,
    /// Signalled when tasks become queued.
    work: Notify,
    /// Signalled when attempts are revoked (cancellation).
    revoked: Notify,
    jobs: Mutex<HashMap<String, Arc<JobContext>>>,
}

impl Scheduler {
    pub(crate) fn new(store: Store, blobs: BlobStore, config: SchedulerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                config,
                work: Notify::new(),
                revoked: Notify::new(),
                jobs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Wakes nodes waiting for work.
    pub(crate) fn work_available(&self) {
        self.inner.work.notify_waiters();
    }

    /// Wakes nodes waiting to hear about revoked attempts.
    pub(crate) fn attempts_revoked(&self) {
        self.inner.revoked.notify_waiters();
    }

    /// Marks nodes that stopped heartbeating as offline and requeues their
    /// tasks (without counting a failure); returns how many tasks.
    pub async fn expire_silent_nodes(&self) -> Result<u64, Error> {
        let cutoff = now_ms() - self.inner.config.node_timeout.as_millis() as i64;
        let mut tx = self.inner.store.begin().await?;
        let mut requeued = 0;
        for (node, pool) in tx.silent_nodes(cutoff).await? {
            tracing::warn!(%node, %pool, "node stopped heartbeating; requeueing its tasks");
            tx.set_node_state(&node, "offline").await?;
            requeued += tx.requeue_node_tasks(&pool, &node).await?;
        }
        tx.commit().await?;
        if requeued > 0 {
            self.work_available();
        }
        Ok(requeued)
    }

    /// Runs [`Scheduler::expire_silent_nodes`] periodically until the
    /// returned task is aborted.
    pub(crate) fn spawn_expiry(&self) -> tokio::task::JoinHandle<()> {
        let scheduler = self.clone();
        let period = (self.inner.config.node_timeout / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                if let Err(e) = scheduler.expire_silent_nodes().await {
                    tracing::error!(error = %e, "expiring silent nodes failed");
                }
            }
        })
    }

    fn forget_job(&self, job_id: &str) {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(job_id);
    }

    async fn job_context(&self, job_id: &str) -> Result<Arc<JobContext>, Error> {
        if let Some(ctx) = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_id)
        {
            return Ok(ctx.clone());
        }
        let job = self
            .inner
            .store
            .job(None, job_id)
            .await?
            .ok_or_else(|| Error::not_found("job", job_id))?;
        let version = self
            .inner
            .store
            .app_version(&job.account, &job.app, Some(job.app_version))
            .await?
            .ok_or_else(|| Error::Internal(format!("job {job_id} names a missing app version")))?;
        let config = &self.inner.config;
        let ctx = Arc::new(JobContext {
            limits: TaskLimits {
                memory_bytes: config.task_memory_bytes,
                timeout_ms: job.task_timeout_ms,
                output_bytes: config.task_output_bytes,
                log_bytes: config.task_log_bytes,
            },
            account: job.account,
            pool: job.pool,
            app: job.app,
            app_version: job.app_version,
            image: version.image.map(|f| f.sha256),
            splitter: version.splitter,
            processor: version.processor,
            parameters: job.parameters,
            inputs: serde_json::from_str(&job.inputs)
                .map_err(|e| Error::Internal(format!("job inputs: {e}")))?,
            has_deps: job.has_deps,
        });
        // Only a split job's facts are final (has_deps is set by the split).
        if job.state != JobState::Splitting {
            self.inner
                .jobs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(job_id.to_owned(), ctx.clone());
        }
        Ok(ctx)
    }

    async fn assignment(&self, task: LeasedTask) -> Result<Assignment, Error> {
        let ctx = self.job_context(&task.job_id).await?;
        let store = &self.inner.store;
        let all_inputs = || {
            ctx.inputs
                .iter()
                .map(|i| InputFile {
                    path: i.name.clone(),
                    digest: i.sha256,
                    size: i.size,
                })
                .collect::<Vec<_>>()
        };
        let (component, inputs, results) = match task.kind {
            TaskKind::Split => (ctx.splitter, all_inputs(), Vec::new()),
            TaskKind::Process => {
                let names: Vec<String> = serde_json::from_str(&task.inputs)
                    .map_err(|e| Error::Internal(format!("task inputs: {e}")))?;
                let mut inputs: Vec<InputFile> = all_inputs()
                    .into_iter()
                    .filter(|i| names.contains(&i.path))
                    .collect();
                if ctx.has_deps {
                    inputs.extend(store.dependency_outputs(&task.job_id, task.seq).await?);
                }
                (ctx.processor, inputs, Vec::new())
            }
            TaskKind::Merge => (
                ctx.processor,
                all_inputs(),
                store.task_results(&task.job_id).await?,
            ),
        };
        Ok(Assignment {
            key: AttemptKey {
                job_id: task.job_id,
                seq: task.seq,
                attempt: task.attempts,
            },
            task: task.name,
            kind: task.kind,
            account: ctx.account.clone(),
            pool: ctx.pool.clone(),
            app: ctx.app.clone(),
            app_version: ctx.app_version,
            image: ctx.image,
            component,
            job_parameters: ctx.parameters.clone(),
            parameters: task.parameters,
            env: serde_json::from_str(&task.env)
                .map_err(|e| Error::Internal(format!("task env: {e}")))?,
            inputs,
            results,
            limits: ctx.limits,
        })
    }

    /// Applies one job's reports inside `tx`; returns whether tasks were queued.
    async fn apply(
        &self,
        tx: &mut Tx,
        node_id: &str,
        job_id: &str,
        reports: &[&AttemptReport],
        now: i64,
    ) -> Result<bool, Error> {
        let Some(mut job) = tx.job(job_id).await? else {
            return Ok(false);
        };
        // The common case first: successful tasks, fenced and marked in one
        // statement that only touches attempts still holding their lease.
        let (successes, mut rest): (Vec<&AttemptReport>, Vec<&AttemptReport>) =
            reports.iter().copied().partition(|r| {
                matches!(r.outcome, Outcome::Succeeded { .. }) && !job.is_split(r.key.seq)
            });
        let pairs: Vec<(i64, u32)> = successes
            .iter()
            .map(|r| (r.key.seq, r.key.attempt))
            .collect();
        let accepted: HashMap<i64, TaskKind> =
            tx.succeed(job_id, &pairs, now).await?.into_iter().collect();
        let mut records = Vec::with_capacity(reports.len());
        let mut outputs = Vec::new();
        let mut processed = Vec::new();
        let mut merged = false;
        for report in successes {
            let Some(kind) = accepted.get(&report.key.seq) else {
                rest.push(report);
                continue;
            };
            records.push(attempt_record(job_id, node_id, report));
            if let Outcome::Succeeded { outputs: files, .. } = &report.outcome {
                outputs.extend(files.iter().map(|f| (report.key.seq, f)));
            }
            match kind {
                TaskKind::Process => processed.push(report.key.seq),
                TaskKind::Merge => merged = true,
                TaskKind::Split => {}
            }
        }

        // Everything else needs the task's current state: split results,
        // failures, and results that lost their lease.
        let mut queued = false;
        if !rest.is_empty() {
            let seqs: Vec<i64> = rest.iter().map(|r| r.key.seq).collect();
            let current: HashMap<i64, CurrentTask> = tx
                .current_tasks(job_id, &seqs)
                .await?
                .into_iter()
                .map(|c| (c.seq, c))
                .collect();
            for report in rest {
                // A superseded attempt (its task was leased again) is dropped;
                // the latest attempt is recorded even when cancelled, for its logs.
                let Some(task) = current
                    .get(&report.key.seq)
                    .filter(|t| t.attempts == report.key.attempt)
                else {
                    continue;
                };
                records.push(attempt_record(job_id, node_id, report));
                if task.state != TaskState::Running {
                    continue;
                }
                match &report.outcome {
                    Outcome::Succeeded { plan, .. } => {
                        match self.accept_plan(tx, &mut job, plan.as_ref()).await? {
                            Ok(()) => {
                                tx.succeed(job_id, &[(task.seq, task.attempts)], now)
                                    .await?;
                                queued = true;
                            }
                            Err(failure) => {
                                tx.fail_attempt(job_id, task, &failure, false, now).await?;
                                self.fail_job(tx, &mut job, &failure, now).await?;
                            }
                        }
                    }
                    Outcome::Failed(failure) => {
                        let retry = failure.kind.is_retryable()
                            && task.failures < job.max_task_retries
                            && !job.state.is_finished();
                        tx.fail_attempt(job_id, task, failure, retry, now).await?;
                        queued |= retry;
                        if !retry && task.kind != TaskKind::Process {
                            let step = if task.kind == TaskKind::Split {
                                "split"
                            } else {
                                "merge"
                            };
                            let failure = Failure::new(
                                failure.kind,
                                format!("the {step} step failed: {}", failure.message),
                            );
                            self.fail_job(tx, &mut job, &failure, now).await?;
                        }
                    }
                }
            }
        }
        tx.insert_attempts(&records).await?;
        tx.insert_outputs(job_id, &outputs).await?;
        if merged {
            tx.set_job_state(job_id, JobState::Completed, None, Some(now))
                .await?;
            job.state = JobState::Completed;
        }
        if job.has_deps && !processed.is_empty() {
            queued |= tx.release_dependents(job_id, &processed).await? > 0;
        }
        if job.state == JobState::Running {
            let mut fresh = tx
                .job(job_id)
                .await?
                .ok_or_else(|| Error::Internal(format!("job {job_id} vanished")))?;
            queued |= self.advance(tx, &mut fresh, now).await?;
            job = fresh;
        }
        if job.state.is_finished() {
            self.forget_job(job_id);
        }
        Ok(queued)
    }

    /// Moves a running job on once none of its tasks can run any more:
    /// to merging, completed, or failed. Returns whether it queued the merge.
    async fn advance(&self, tx: &mut Tx, job: &mut JobRecord, now: i64) -> Result<bool, Error> {
        let c = job.counts;
        if c.queued > 0 || c.running > 0 {
            return Ok(false);
        }
        let stuck = c.blocked + c.cancelled;
        if c.failed > 0 || stuck > 0 {
            let first = tx.first_failed_task(&job.id).await?;
            let mut message = format!("{} of {} tasks failed", c.failed, job.task_count);
            if stuck > 0 {
                message.push_str(&format!(
                    "; {stuck} could not run because a task they depend on failed"
                ));
            }
            if let Some((name, failure)) = &first {
                message.push_str(&format!("; first failure: task `{name}`: {failure}"));
            }
            let kind = first
                .as_ref()
                .map_or(FailureKind::GuestError, |(_, f)| f.kind);
            let failure = Failure::new(kind, message);
            self.fail_job(tx, job, &failure, now).await?;
            return Ok(false);
        }
        if job.merge {
            let merge = NewTask::step(job.task_count as i64 + 1, MERGE_TASK, TaskKind::Merge);
            tx.insert_merge(&job.id, &job.pool, &merge).await?;
            tx.set_job_state(&job.id, JobState::Merging, None, None)
                .await?;
            job.state = JobState::Merging;
            Ok(true)
        } else {
            tx.set_job_state(&job.id, JobState::Completed, None, Some(now))
                .await?;
            job.state = JobState::Completed;
            Ok(false)
        }
    }

    async fn fail_job(
        &self,
        tx: &mut Tx,
        job: &mut JobRecord,
        failure: &Failure,
        now: i64,
    ) -> Result<(), Error> {
        tx.set_job_state(&job.id, JobState::Failed, Some(failure), Some(now))
            .await?;
        job.state = JobState::Failed;
        job.failure = Some(failure.clone());
        Ok(())
    }

    /// Validates a split plan and inserts its tasks; a bad plan becomes the
    /// split attempt's failure.
    async fn accept_plan(
        &self,
        tx: &mut Tx,
        job: &mut JobRecord,
        plan: Option<&SplitPlan>,
    ) -> Result<Result<(), Failure>, Error> {
        let Some(plan) = plan else {
            return Ok(Err(Failure::new(
                FailureKind::Internal,
                "the node reported a split without a plan",
            )));
        };
        let inputs: Vec<JobInput> = serde_json::from_str(&job.inputs)
            .map_err(|e| Error::Internal(format!("job inputs: {e}")))?;
        let checked = match check_plan(plan, &inputs, &self.inner.config) {
            Ok(c) => c,
            Err(message) => {
                return Ok(Err(Failure::new(
                    FailureKind::InvalidPlan,
                    format!("the splitter returned an invalid plan: {message}"),
                )));
            }
        };
        tx.insert_tasks(&job.id, &job.pool, &checked.tasks).await?;
        tx.insert_deps(&job.id, &checked.deps).await?;
        let has_deps = !checked.deps.is_empty();
        tx.set_job_split(&job.id, checked.tasks.len() as u64, plan.merge, has_deps)
            .await?;
        tx.set_job_state(&job.id, JobState::Running, None, None)
            .await?;
        job.task_count = checked.tasks.len() as u64;
        job.merge = plan.merge;
        job.has_deps = has_deps;
        job.state = JobState::Running;
        Ok(Ok(()))
    }
}

/// The attempt row of a report.
fn attempt_record<'a>(
    job_id: &'a str,
    node_id: &'a str,
    r: &'a AttemptReport,
) -> AttemptRecord<'a> {
    AttemptRecord {
        job_id,
        seq: r.key.seq,
        attempt: r.key.attempt,
        node: node_id,
        failure: match &r.outcome {
            Outcome::Failed(f) => Some(f),
            Outcome::Succeeded { .. } => None,
        },
        started_at: r.started_at,
        finished_at: r.finished_at,
        stdout: r.stdout,
        stderr: r.stderr,
        peak_memory: r.peak_memory,
    }
}

/// A plan turned into rows.
struct CheckedPlan {
    tasks: Vec<NewTask>,
    /// (dependency seq, dependent seq) pairs.
    deps: Vec<(i64, i64)>,
}

/// Checks a split plan against the job and the limits.
fn check_plan(
    plan: &SplitPlan,
    inputs: &[JobInput],
    config: &SchedulerConfig,
) -> Result<CheckedPlan, String> {
    if plan.tasks.len() > config.max_tasks_per_job {
        return Err(format!(
            "it has {} tasks; a job may have at most {}",
            plan.tasks.len(),
            config.max_tasks_per_job
        ));
    }
    let input_names: HashSet<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let mut seq_of: HashMap<&str, i64> = HashMap::with_capacity(plan.tasks.len());
    for (i, task) in plan.tasks.iter().enumerate() {
        check_task_name(&task.name).map_err(|e| format!("task {}: {e}", i + 1))?;
        if seq_of.insert(task.name.as_str(), i as i64 + 1).is_some() {
            return Err(format!("task name `{}` is used twice", task.name));
        }
    }
    let mut tasks = Vec::with_capacity(plan.tasks.len());
    let mut deps = Vec::new();
    for (i, task) in plan.tasks.iter().enumerate() {
        let seq = i as i64 + 1;
        let name = &task.name;
        if task.parameters.len() > config.max_task_parameters {
            return Err(format!(
                "task `{name}` has {} bytes of parameters; at most {} are allowed",
                task.parameters.len(),
                config.max_task_parameters
            ));
        }
        match serde_json::from_str::<serde_json::Value>(&task.parameters) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Err(format!("task `{name}`: parameters must be a JSON object")),
        }
        for input in &task.inputs {
            if !input_names.contains(input.as_str()) {
                return Err(format!(
                    "task `{name}` needs input `{input}`, which the job does not have"
                ));
            }
        }
        let mut seen = HashSet::new();
        for dep in &task.depends_on {
            let Some(&dep_seq) = seq_of.get(dep.as_str()) else {
                return Err(format!(
                    "task `{name}` depends on `{dep}`, which is not a task of the job"
                ));
            };
            if dep_seq == seq {
                return Err(format!("task `{name}` depends on itself"));
            }
            if !seen.insert(dep_seq) {
                continue;
            }
            if task
                .inputs
                .iter()
                .any(|i| i.split('/').next() == Some(dep.as_str()))
            {
                return Err(format!(
                    "task `{name}` reads input `{dep}` and depends on task `{dep}`: both would be /inputs/{dep}"
                ));
            }
            deps.push((dep_seq, seq));
        }
        for (key, value) in &task.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(format!(
                    "task `{name}` has an invalid environment variable `{key}`"
                ));
            }
            if key.starts_with("TESSERA_") {
                return Err(format!(
                    "task `{name}` may not set `{key}`: TESSERA_* variables are set by Tessera"
                ));
            }
        }
        let deps_remaining = seen.len() as i64;
        tasks.push(NewTask {
            seq,
            name: name.clone(),
            kind: TaskKind::Process,
            state: if deps_remaining > 0 {
                TaskState::Blocked
            } else {
                TaskState::Queued
            },
            parameters: task.parameters.clone(),
            inputs: serde_json::to_string(&task.inputs).expect("strings serialise"),
            depends_on: serde_json::to_string(&task.depends_on).expect("strings serialise"),
            env: serde_json::to_string(&task.env).expect("strings serialise"),
            deps_remaining,
        });
    }
    check_acyclic(plan.tasks.len(), &deps)?;
    Ok(CheckedPlan { tasks, deps })
}

/// Task names: 1 to 128 characters from `A-Z a-z 0-9 . _ -`, not starting
/// with `_` (reserved for the split and merge steps) or `.`.
pub(crate) fn check_task_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['_', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid task name (1 to 128 characters from A-Z a-z 0-9 . _ -, not starting with `_` or `.`)",
            name.chars().take(140).collect::<String>()
        ))
    }
}

/// Fails if the dependency graph has a cycle (Kahn's algorithm).
fn check_acyclic(count: usize, deps: &[(i64, i64)]) -> Result<(), String> {
    let mut indegree = vec![0usize; count + 1];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count + 1];
    for &(dep, seq) in deps {
        indegree[seq as usize] += 1;
        dependents[dep as usize].push(seq as usize);
    }
    let mut ready: Vec<usize> = (1..=count).filter(|&s| indegree[s] == 0).collect();
    let mut visited = 0;
    while let Some(s) = ready.pop() {
        visited += 1;
        for &d in &dependents[s] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    if visited == count {
        Ok(())
    } else {
        Err(format!(
            "its task dependencies form a cycle ({} tasks can never start)",
            count - visited
        ))
    }
}

impl Coordinator for Scheduler {
    async fn register(&self, node: NodeRegistration) -> Result<(), Error> {
        let mut tx = self.inner.store.begin().await?;
        if !tx.pool_exists(&node.pool).await? {
            return Err(Error::not_found("pool", &node.pool));
        }
        tx.upsert_node(&node, now_ms()).await?;
        let requeued = tx.requeue_node_tasks(&node.pool, &node.node_id).await?;
        tx.commit().await?;
        tracing::info!(node = %node.node_id, pool = %node.pool, slots = node.slots, requeued, "node registered");
        if requeued > 0 {
            self.work_available();
        }
        Ok(())
    }

    async fn heartbeat(
        &self,
        heartbeat: Heartbeat,
        wait: Duration,
    ) -> Result<HeartbeatReply, Error> {
        let deadline = Instant::now() + wait;
        {
            let mut tx = self.inner.store.begin().await?;
            let busy = if heartbeat.held.is_empty() {
                "idle"
            } else {
                "busy"
            };
            if !tx.touch_node(&heartbeat.node_id, busy, now_ms()).await? {
                return Err(Error::not_found("node", &heartbeat.node_id));
            }
            let progress: Vec<_> = heartbeat
                .held
                .iter()
                .filter(|h| h.progress > 0.0)
                .map(|h| (&h.key, h.progress))
                .collect();
            tx.set_progress(&progress).await?;
            tx.commit().await?;
        }
        loop {
            let notified = self.inner.revoked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let revoked = self.revoked(&heartbeat.held).await?;
            if !revoked.is_empty() || Instant::now() >= deadline {
                return Ok(HeartbeatReply { revoked });
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn lease(
        &self,
        node_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Assignment>, Error> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.inner.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let leased = {
                let mut tx = self.inner.store.begin().await?;
                let pool = tx
                    .node_pool(node_id)
                    .await?
                    .ok_or_else(|| Error::not_found("node", node_id))?;
                let leased = tx.lease(&pool, node_id, max, now_ms()).await?;
                tx.commit().await?;
                leased
            };
            if !leased.is_empty() {
                let mut out = Vec::with_capacity(leased.len());
                for task in leased {
                    out.push(self.assignment(task).await?);
                }
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Look again at least every second: another replica may have
            // queued work this process was not told about.
            let recheck = (now + Duration::from_secs(1)).min(deadline);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    async fn commit(&self, node_id: &str, reports: &[AttemptReport]) -> Result<(), Error> {
        if reports.is_empty() {
            return Ok(());
        }
        let mut by_job: BTreeMap<&str, Vec<&AttemptReport>> = BTreeMap::new();
        for r in reports {
            by_job.entry(r.key.job_id.as_str()).or_default().push(r);
        }
        let now = now_ms();
        let mut tx = self.inner.store.begin().await?;
        let mut queued = false;
        for (job_id, reports) in &by_job {
            queued |= self.apply(&mut tx, node_id, job_id, reports, now).await?;
        }
        tx.commit().await?;
        if queued {
            self.work_available();
        }
        Ok(())
    }

    async fn deregister(&self, node_id: &str) -> Result<(), Error> {
        let mut tx = self.inner.store.begin().await?;
        let requeued = match tx.node_pool(node_id).await? {
            Some(pool) => {
                tx.set_node_state(node_id, "offline").await?;
                tx.requeue_node_tasks(&pool, node_id).await?
            }
            None => 0,
        };
        tx.commit().await?;
        if requeued > 0 {
            self.work_available();
        }
        Ok(())
    }

    async fn fetch_file(&self, digest: &Digest, dest: &Path) -> Result<(), Error> {
        self.inner.blobs.download(digest, dest).await
    }

    async fn store_file(&self, path: &Path) -> Result<(Digest, u64), Error> {
        self.inner.blobs.put_file(path).await
    }

    async fn store_bytes(&self, bytes: Bytes) -> Result<Digest, Error> {
        self.inner.blobs.put_bytes(bytes).await
    }

    async fn fetch_artifact(&self, key: &str) -> Result<Option<Bytes>, Error> {
        self.inner.blobs.get_artifact(key).await
    }

    async fn store_artifact(&self, key: &str, bytes: Bytes) -> Result<(), Error> {
        self.inner.blobs.put_artifact(key, bytes).await
    }
}

impl Scheduler {
    /// Which of `held` are no longer the node's to run.
    async fn revoked(
        &self,
        held: &[crate::protocol::RunningAttempt],
    ) -> Result<Vec<AttemptKey>, Error> {
        let mut by_job: BTreeMap<&str, Vec<&AttemptKey>> = BTreeMap::new();
        for h in held {
            by_job
                .entry(h.key.job_id.as_str())
                .or_default()
                .push(&h.key);
        }
        let mut revoked = Vec::new();
        for (job_id, keys) in by_job {
            let seqs: Vec<i64> = keys.iter().map(|k| k.seq).collect();
            let current: HashMap<i64, _> = self
                .inner
                .store
                .current_tasks(job_id, &seqs)
                .await?
                .into_iter()
                .map(|c| (c.seq, c))
                .collect();
            for key in keys {
                let live = current
                    .get(&key.seq)
                    .is_some_and(|c| c.state == TaskState::Running && c.attempts == key.attempt);
                if !live {
                    revoked.push(key.clone());
                }
            }
        }
        Ok(revoked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskSpec;

    fn spec(name: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            parameters: "{}".into(),
            inputs: vec![],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            env: vec![],
        }
    }

    fn check(tasks: Vec<TaskSpec>) -> Result<CheckedPlan, String> {
        check_plan(
            &SplitPlan { tasks, merge: true },
            &[],
            &SchedulerConfig::default(),
        )
    }

    #[test]
    fn plans_number_tasks_and_record_dependencies() {
        let plan = check(vec![
            spec("a", &[]),
            spec("b", &["a"]),
            spec("c", &["a", "b", "a"]),
        ])
        .unwrap();
        let states: Vec<_> = plan
            .tasks
            .iter()
            .map(|t| (t.seq, t.state, t.deps_remaining))
            .collect();
        assert_eq!(
            states,
            vec![
                (1, TaskState::Queued, 0),
                (2, TaskState::Blocked, 1),
                (3, TaskState::Blocked, 2)
            ]
        );
        assert_eq!(plan.deps, vec![(1, 2), (1, 3), (2, 3)]);
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let cases = [
            (vec![spec("a", &[]), spec("a", &[])], "used twice"),
            (vec![spec("a", &["zz"])], "not a task of the job"),
            (vec![spec("a", &["a"])], "depends on itself"),
            (vec![spec("a", &["b"]), spec("b", &["a"])], "cycle"),
            (vec![spec("_merge", &[])], "not a valid task name"),
            (vec![spec("a/b", &[])], "not a valid task name"),
            (vec![spec("", &[])], "not a valid task name"),
        ];
        for (tasks, expected) in cases {
            let err = check(tasks).err().unwrap();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let mut bad_params = spec("a", &[]);
        bad_params.parameters = "[1]".into();
        assert!(
            check(vec![bad_params])
                .err()
                .unwrap()
                .contains("JSON object")
        );
        let mut bad_input = spec("a", &[]);
        bad_input.inputs = vec!["missing.txt".into()];
        assert!(
            check(vec![bad_input])
                .err()
                .unwrap()
                .contains("does not have")
        );
        let mut bad_env = spec("a", &[]);
        bad_env.env = vec![("TESSERA_JOB_ID".into(), "x".into())];
        assert!(
            check(vec![bad_env])
                .err()
                .unwrap()
                .contains("set by Tessera")
        );
    }

    #[test]
    fn too_many_tasks_are_refused() {
        let config = SchedulerConfig {
            max_tasks_per_job: 2,
            ..SchedulerConfig::default()
        };
        let plan = SplitPlan {
            tasks: vec![spec("a", &[]), spec("b", &[]), spec("c", &[])],
            merge: false,
        };
        let err = check_plan(&plan, &[], &config).err().unwrap();
        assert!(err.contains("at most 2"), "{err}");
    }
}
