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
use crate::error::{Error, ErrorClass};
use crate::model::{Failure, TaskKind};

/// A node announcing itself. The coordinator answers with the node's id,
/// unique to this registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeRegistration {
    /// The pool it serves.
    pub pool: String,
    /// Its host name.
    pub hostname: String,
    /// Where it can be reached, for operators.
    pub address: String,
    /// How many tasks it runs at once.
    pub slots: u32,
    /// The memory it offers its tasks, in bytes.
    pub memory_bytes: u64,
    /// The Tessera version it runs.
    pub version: String,
    /// The id this agent had before it restarted: that node's attempts are
    /// released at once instead of when its silence is noticed.
    #[serde(default)]
    pub previous: Option<String>,
    /// The handle of the node provider's allocation that started it (a
    /// process, a Slurm job), so that the provider can match nodes to what
    /// it started.
    #[serde(default)]
    pub agent: Option<String>,
}

/// The coordinator's answer to a registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Registered {
    /// The node's id until it stops: every later call names it.
    pub node_id: String,
    /// The node's own key: remote calls of the node carry it, so that no
    /// other node of the pool can act as this one.
    pub node_key: String,
    /// What the node runs once before it takes tasks, if its pool has a
    /// start task: the node reports how it ended with
    /// [`Coordinator::start_task_finished`].
    #[serde(default)]
    pub start_task: Option<StartTaskRun>,
}

/// A pool's start task, as a node runs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTaskRun {
    /// The image mounted at `/app` (none: an empty folder).
    pub image: Option<Digest>,
    /// The program, a path under `/app`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its wall-clock limit, in milliseconds.
    pub timeout_ms: u64,
}

/// How a node's start task ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTaskReport {
    /// Its exit status, if it ran to its end.
    pub status: Option<i32>,
    /// Why it could not run or was stopped, if so.
    pub error: Option<String>,
    /// The end of its stdout.
    pub stdout: String,
    /// The end of its stderr.
    pub stderr: String,
}

impl StartTaskReport {
    /// Whether the start task succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == Some(0) && self.error.is_none()
    }
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

/// A file a node uploaded for one attempt: its content address and size as
/// the coordinator computed them, and the coordinator's receipt, which
/// binds the file to that node and attempt. A report may only name files
/// with a valid receipt for its own attempt, so a node can never point a
/// result at a file it did not produce (another account's, say).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// Content address.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// The coordinator's proof that this node uploaded it for this attempt.
    pub receipt: String,
}

/// A file an attempt wrote to `/output`, uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Path under `/output`.
    pub path: String,
    /// The uploaded file.
    pub file: Uploaded,
}

/// A split plan as a report carries it: in the report itself, or (when it
/// is large) as an uploaded file holding its JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanRef {
    /// The plan itself.
    Inline(SplitPlan),
    /// An uploaded file holding the plan as JSON.
    Uploaded(Uploaded),
}

/// How an attempt ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// It succeeded with these outputs (and, for a split, this plan).
    Succeeded {
        /// Files it wrote.
        outputs: Vec<OutputFile>,
        /// The split plan, for a split step.
        plan: Option<PlanRef>,
    },
    /// It failed.
    Failed(Failure),
}

/// What an attempt used: the figures usage accounting and a job's timeline
/// read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Wall-clock time of the guest call, in microseconds.
    pub wall_us: u64,
    /// CPU time the attempt used, in microseconds.
    pub cpu_us: u64,
    /// Largest linear memory the guest grew to, in bytes.
    pub peak_memory: u64,
    /// Bytes the attempt read (files and pipes of the thread that ran it).
    pub bytes_read: u64,
    /// Bytes the attempt wrote.
    pub bytes_written: u64,
}

/// The result of one attempt, sent by the node that ran it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttemptReport {
    /// Which attempt.
    pub key: AttemptKey,
    /// How it ended.
    pub outcome: Outcome,
    /// Its stdout, if it wrote any.
    pub stdout: Option<Uploaded>,
    /// Its stderr, if it wrote any.
    pub stderr: Option<Uploaded>,
    /// When it started (ms since the epoch).
    pub started_at: i64,
    /// When it ended (ms since the epoch).
    pub finished_at: i64,
    /// What it used.
    pub usage: Usage,
}

impl AttemptReport {
    /// Every uploaded file the report names.
    pub fn files(&self) -> impl Iterator<Item = &Uploaded> {
        let (outputs, plan) = match &self.outcome {
            Outcome::Succeeded { outputs, plan } => (outputs.as_slice(), plan.as_ref()),
            Outcome::Failed(_) => (&[][..], None),
        };
        let plan = match plan {
            Some(PlanRef::Uploaded(file)) => Some(file),
            _ => None,
        };
        outputs
            .iter()
            .map(|o| &o.file)
            .chain(self.stdout.iter())
            .chain(self.stderr.iter())
            .chain(plan)
    }
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
    /// Why the node cannot run tasks, if it cannot (its slots keep failing
    /// to start, say): it is then `unusable` and leased nothing.
    #[serde(default)]
    pub unusable: Option<String>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Attempts the node must stop: cancelled, or no longer its to run.
    pub revoked: Vec<AttemptKey>,
    /// The node should leave the pool: finish or release what it holds,
    /// lease nothing more, and deregister.
    #[serde(default)]
    pub drain: bool,
}

/// Why the coordinator refused one report of a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalReason {
    /// The attempt no longer holds its task's lease: the task was leased
    /// again, to this node or another, or was never this node's.
    LeaseLost,
    /// The report names a file without a valid receipt for its attempt.
    BadReceipt,
    /// The report is malformed (a split result without a plan, say).
    Invalid,
}

/// One report the coordinator did not apply, and why. The node drops it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The report's attempt.
    pub key: AttemptKey,
    /// Why.
    pub reason: RefusalReason,
    /// In words.
    pub message: String,
}

/// The coordinator's answer to a commit: every report it did not refuse is
/// applied (or was already).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CommitReply {
    /// The reports it refused.
    pub refused: Vec<Refusal>,
}

/// What can go wrong between a node and its coordinator, by what the node
/// should do about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The coordinator does not know this node (it was declared lost or
    /// removed): register again.
    #[error(
        "the service does not know node `{0}` (it was declared lost or removed); it must register again"
    )]
    UnknownNode(String),
    /// The node's pool no longer exists: stop.
    #[error("the pool `{0}` no longer exists")]
    PoolGone(String),
    /// The pool's join token was refused (wrong, or regenerated): stop.
    #[error("the service refused the pool's join token: {0}")]
    TokenRefused(String),
    /// The coordinator refused the request itself (malformed, too large):
    /// sending it again will not help.
    #[error("the service refused the request: {0}")]
    Refused(String),
    /// The coordinator could not be reached or failed: try again later.
    #[error("the service is unavailable: {0}")]
    Unavailable(String),
}

impl NodeError {
    /// A stable snake_case code (the HTTP API's error code).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownNode(_) => "node_unknown",
            Self::PoolGone(_) => "pool_gone",
            Self::TokenRefused(_) => "token_refused",
            Self::Refused(_) => "request_refused",
            Self::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the same call may succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<Error> for NodeError {
    fn from(e: Error) -> Self {
        match e.class() {
            ErrorClass::Internal => Self::Unavailable(e.to_string()),
            _ => Self::Refused(e.to_string()),
        }
    }
}

/// Where an upload's bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum UploadSource<'a> {
    /// A local file.
    File(&'a Path),
    /// Bytes in memory.
    Bytes(&'a Bytes),
}

/// The service as a node sees it. Every method is safe to retry.
pub trait Coordinator: Send + Sync + 'static {
    /// Registers a node; its answer names the node from now on.
    fn register(
        &self,
        node: NodeRegistration,
    ) -> impl Future<Output = Result<Registered, NodeError>> + Send;

    /// Records that the node is alive, stores progress, confirms the leases
    /// it holds, and returns at once with the node's revoked attempts (or a
    /// request to drain), or waits up to `wait` for one.
    fn heartbeat(
        &self,
        heartbeat: Heartbeat,
        wait: Duration,
    ) -> impl Future<Output = Result<HeartbeatReply, NodeError>> + Send;

    /// Leases up to `max` tasks to the node, waiting up to `wait` for work
    /// when there is none.
    fn lease(
        &self,
        node_id: &str,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Assignment>, NodeError>> + Send;

    /// Commits finished attempts. A report whose attempt no longer holds
    /// its lease on this node, or that names a file without a receipt for
    /// it, is refused (and named in the reply); committing twice is
    /// harmless.
    fn commit(
        &self,
        node_id: &str,
        reports: &[AttemptReport],
    ) -> impl Future<Output = Result<CommitReply, NodeError>> + Send;

    /// The node ran its pool's start task: it takes tasks if the task
    /// succeeded, and is `start_task_failed` otherwise.
    fn start_task_finished(
        &self,
        node_id: &str,
        report: &StartTaskReport,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// The node is stopping; its unfinished attempts are released.
    fn deregister(&self, node_id: &str) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// Copies a stored file to a local path, checking its digest.
    fn fetch_file(
        &self,
        node_id: &str,
        digest: &Digest,
        dest: &Path,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;

    /// Uploads a file an attempt produced; the coordinator computes its
    /// digest and returns it with a receipt for this node and attempt.
    fn upload(
        &self,
        node_id: &str,
        key: &AttemptKey,
        source: UploadSource<'_>,
    ) -> impl Future<Output = Result<Uploaded, NodeError>> + Send;

    /// The service's own precompiled artifact of a component, if it has one
    /// under `key` (see `Runtime::artifact_key`). Nodes never send compiled
    /// code: without an artifact, a node compiles for itself.
    fn fetch_artifact(
        &self,
        node_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<Bytes>, NodeError>> + Send;
}
