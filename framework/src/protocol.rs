//! What nodes and the coordinator say to each other.
//!
//! A node registers, then loops: it leases work ([`Assignment`]s), runs it,
//! and commits the results ([`AttemptReport`]s); heartbeats keep it alive and
//! tell it which of its attempts were revoked (cancelled, or superseded).
//! The [`Coordinator`] trait is that conversation. The embedded pool's nodes
//! talk to the in-process [`crate::scheduler::Scheduler`] through it; remote
//! node agents will talk to the same scheduler over HTTP with the same types.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::Error;
use crate::model::{Failure, TaskKind};

/// A node announcing itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// The node's id, stable across its restarts.
    pub node_id: String,
    /// The pool it serves.
    pub pool: String,
    /// Its host name.
    pub hostname: String,
    /// Where it can be reached, for operators.
    pub address: String,
    /// How many tasks it runs at once.
    pub slots: u32,
}

/// Identifies one attempt at one task; the attempt number is the fencing token.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptKey {
    /// The job.
    pub job_id: String,
    /// The task's position in the job.
    pub seq: i64,
    /// The attempt number the lease granted.
    pub attempt: u32,
}

/// Limits one attempt runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLimits {
    /// Largest linear memory, in bytes.
    pub memory_bytes: u64,
    /// Wall-clock limit, in milliseconds.
    pub timeout_ms: u64,
    /// Largest total size of `/output`, in bytes.
    pub output_bytes: u64,
    /// Largest stdout and stderr, each, in bytes.
    pub log_bytes: u64,
}

/// A file to mount read-only under `/inputs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Its path under `/inputs`.
    pub path: String,
    /// Its content address.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// A finished task, as handed to the merge step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskResultRef {
    /// The task's name (its outputs appear under `/inputs/<name>/`).
    pub name: String,
    /// The task's parameters (JSON object).
    pub parameters: String,
    /// Its output files, paths relative to its own folder.
    pub outputs: Vec<InputFile>,
}

/// Everything a node needs to run one attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// Which attempt this is.
    pub key: AttemptKey,
    /// The task's name.
    pub task: String,
    /// What to run.
    pub kind: TaskKind,
    /// The owning account.
    pub account: String,
    /// The pool.
    pub pool: String,
    /// The application's name.
    pub app: String,
    /// The application's version.
    pub app_version: u32,
    /// The application image zip, if any.
    pub image: Option<Digest>,
    /// The component to run (splitter or processor).
    pub component: Digest,
    /// The job's parameters (JSON object).
    pub job_parameters: String,
    /// The task's parameters (JSON object).
    pub parameters: String,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Files under `/inputs`: the task's inputs (with its dependencies'
    /// outputs as `<task>/<path>`), or for the split and merge steps every
    /// job input.
    pub inputs: Vec<InputFile>,
    /// For the merge step: every task's outputs, mounted at `/inputs/<task>/`.
    pub results: Vec<TaskResultRef>,
    /// Limits for the attempt.
    pub limits: TaskLimits,
}

/// One task the splitter asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique name in the job.
    pub name: String,
    /// Parameters (JSON object).
    pub parameters: String,
    /// Job inputs it needs.
    pub inputs: Vec<String>,
    /// Tasks it depends on.
    pub depends_on: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// What the splitter returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitPlan {
    /// The tasks.
    pub tasks: Vec<TaskSpec>,
    /// Whether the merge step runs.
    pub merge: bool,
}

/// A file an attempt wrote to `/output`, already stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path under `/output`.
    pub path: String,
    /// Content address.
    pub digest: Digest,
    /// Size.
    pub size: u64,
}

/// How an attempt ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// It succeeded with these outputs (and, for a split, this plan).
    Succeeded {
        /// Files it wrote.
        outputs: Vec<OutputFile>,
        /// The split plan, for a split step.
        plan: Option<SplitPlan>,
    },
    /// It failed.
    Failed(Failure),
}

/// A stored attempt log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRef {
    /// Content address, `None` when empty.
    pub digest: Option<Digest>,
    /// Size in bytes.
    pub size: u64,
}

/// The result of one attempt, sent by the node that ran it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptReport {
    /// Which attempt.
    pub key: AttemptKey,
    /// How it ended.
    pub outcome: Outcome,
    /// Its stdout.
    pub stdout: LogRef,
    /// Its stderr.
    pub stderr: LogRef,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// When it ended (ms since the epoch).
    pub finished_at: i64,
    /// Peak linear memory in bytes.
    pub peak_memory: u64,
}

/// A running attempt's progress, reported with a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunningAttempt {
    /// Which attempt.
    pub key: AttemptKey,
    /// Progress reported by the guest, 0 to 1.
    pub progress: f32,
}

/// A node saying it is alive and what it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The node.
    pub node_id: String,
    /// Every attempt it has leased and not yet committed.
    pub held: Vec<RunningAttempt>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Attempts the node must stop: cancelled, or no longer its to run.
    pub revoked: Vec<AttemptKey>,
}

/// The service as a node sees it. Every method is safe to retry.
pub trait Coordinator: Send + Sync + 'static {
    /// Registers (or re-registers) a node. A node that registers again has
    /// restarted, so any attempt it held is released to run elsewhere.
    fn register(&self, node: NodeRegistration) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records that the node is alive, stores progress, and returns at once
    /// with the node's revoked attempts, or waits up to `wait` for one.
    fn heartbeat(
        &self,
        heartbeat: Heartbeat,
        wait: Duration,
    ) -> impl Future<Output = Result<HeartbeatReply, Error>> + Send;

    /// Leases up to `max` tasks to the node, waiting up to `wait` for work
    /// when there is none.
    fn lease(
        &self,
        node_id: &str,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Assignment>, Error>> + Send;

    /// Commits finished attempts. Results of attempts that no longer hold
    /// their lease are ignored (fencing); committing twice is harmless.
    fn commit(
        &self,
        node_id: &str,
        reports: &[AttemptReport],
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The node is stopping; its unfinished attempts are released.
    fn deregister(&self, node_id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Copies a stored file to a local path.
    fn fetch_file(
        &self,
        digest: &Digest,
        dest: &Path,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stores a local file, returning its content address and size.
    fn store_file(&self, path: &Path) -> impl Future<Output = Result<(Digest, u64), Error>> + Send;

    /// Stores bytes, returning their content address.
    fn store_bytes(&self, bytes: Bytes) -> impl Future<Output = Result<Digest, Error>> + Send;

    /// A precompiled component artifact, if one was stored under `key`.
    fn fetch_artifact(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Bytes>, Error>> + Send;

    /// Stores a precompiled component artifact under `key`.
    fn store_artifact(
        &self,
        key: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}
