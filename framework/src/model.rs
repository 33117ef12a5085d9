//! The nouns users see: applications, jobs, tasks, attempts and outputs, as
//! the portal API returns them, and the states they move through.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::package::ParamDecl;

/// The pool of the embedded service's in-process nodes.
pub const LOCAL_POOL: &str = "local";

/// Declares a string-backed state enum with its textual forms, used in the
/// database and in the API alike.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// Every value, in life-cycle order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The textual form (as stored and as shown in the API).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "`{other}` is not a {}; expected one of: {}",
                        stringify!($name),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum! {
    /// Where a job is in its life: `splitting → running → merging → completed | failed | cancelled`.
    JobState {
        /// The splitter is turning the job into tasks.
        Splitting = "splitting",
        /// Tasks are running.
        Running = "running",
        /// Every task succeeded; the merge step is running.
        Merging = "merging",
        /// Done: outputs are ready.
        Completed = "completed",
        /// A step failed after its retries; see the job's failure.
        Failed = "failed",
        /// Cancelled by a user.
        Cancelled = "cancelled",
    }
}

impl JobState {
    /// The states of a job that has not finished.
    pub const UNFINISHED: [JobState; 3] = [Self::Splitting, Self::Running, Self::Merging];

    /// Whether the job has finished (no more work will happen unless it is reprocessed).
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// Where a task is: `blocked → queued → running → succeeded | failed | cancelled`.
    TaskState {
        /// Waiting for the tasks it depends on.
        Blocked = "blocked",
        /// Ready to run; waiting for a free slot.
        Queued = "queued",
        /// An attempt is running on a node.
        Running = "running",
        /// Finished well; its outputs are stored.
        Succeeded = "succeeded",
        /// Its last attempt failed and no retries are left.
        Failed = "failed",
        /// Cancelled with its job.
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// Where a node is: `starting → idle ⇄ running → leaving → offline`, or
    /// out of service with `start_task_failed` or `unusable` (still shown,
    /// leased nothing).
    NodeState {
        /// Registered; its pool's start task is running.
        Starting = "starting",
        /// Ready, running nothing.
        Idle = "idle",
        /// Running attempts.
        Running = "running",
        /// Asked to leave: it finishes or releases what it holds, then
        /// deregisters.
        Leaving = "leaving",
        /// Gone: it deregistered, or stopped answering.
        Offline = "offline",
        /// Its pool's start task failed; see the node's reason.
        StartTaskFailed = "start_task_failed",
        /// It cannot run tasks; see the node's reason.
        Unusable = "unusable",
    }
}

impl NodeState {
    /// Whether the node is still part of its pool (anything but offline).
    pub fn is_live(self) -> bool {
        self != Self::Offline
    }

    /// Whether tasks may be leased to it.
    pub fn takes_work(self) -> bool {
        matches!(self, Self::Idle | Self::Running)
    }
}

text_enum! {
    /// What a unit of work does.
    TaskKind {
        /// Runs the splitter (one per job).
        Split = "split",
        /// Runs the processor on one task.
        Process = "process",
        /// Runs the processor's merge (at most one per job).
        Merge = "merge",
    }
}

text_enum! {
    /// Why an attempt failed; the retry rule and the user read this.
    FailureKind {
        /// The guest returned an error.
        GuestError = "guest_error",
        /// The guest trapped (a panic, an `unreachable`, a stack overflow, ...).
        Trap = "trap",
        /// The attempt ran past its wall-clock limit.
        Timeout = "timeout",
        /// The guest asked for more memory than its limit.
        MemoryLimit = "memory_limit",
        /// The guest wrote more than its output or log limit.
        OutputLimit = "output_limit",
        /// The splitter returned a plan Tessera cannot run.
        InvalidPlan = "invalid_plan",
        /// The node that ran it stopped answering.
        NodeLost = "node_lost",
        /// The attempt was cancelled.
        Cancelled = "cancelled",
        /// The host failed (I/O, storage); not the guest's fault.
        Internal = "internal",
    }
}

impl FailureKind {
    /// Whether another attempt can be expected to help. An invalid plan is
    /// deterministic, so retrying it only wastes time; every other failure is
    /// retried up to the job's `max_task_retries`.
    pub fn is_retryable(self) -> bool {
        !matches!(self, Self::InvalidPlan | Self::Cancelled)
    }
}

/// Why an attempt (and possibly its task or job) failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind of failure.
    pub kind: FailureKind,
    /// A human-readable reason.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// A stored file: its content address and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// The sha256 of the content.
    pub sha256: Digest,
    /// The size in bytes.
    pub size: u64,
}

/// An application and its newest version.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppSummary {
    /// The application's name.
    pub name: String,
    /// Its newest version.
    pub latest_version: u32,
    /// When it was first published.
    pub created_at: DateTime<Utc>,
}

/// One immutable version of an application.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AppVersion {
    /// The application's name.
    pub app: String,
    /// The version number, from 1.
    pub version: u32,
    /// When it was published.
    pub created_at: DateTime<Utc>,
    /// The application image zip, if the application has one.
    pub image: Option<FileRef>,
    /// The cloud assembly zip.
    pub assembly: FileRef,
    /// The splitter component's sha256.
    pub splitter: Digest,
    /// The processor component's sha256.
    pub processor: Digest,
    /// The declared parameters.
    pub parameters: BTreeMap<String, ParamDecl>,
}

/// A file given to a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInput {
    /// The name the job's tasks see it under, in `/inputs`.
    pub name: String,
    /// The uploaded file's sha256.
    pub sha256: Digest,
    /// The size in bytes.
    pub size: u64,
}

/// How far a job's tasks have got.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Tasks in the job (0 until the split is done).
    pub total: u64,
    /// Tasks waiting for others.
    pub blocked: u64,
    /// Tasks waiting for a slot.
    pub queued: u64,
    /// Tasks running.
    pub running: u64,
    /// Tasks done.
    pub succeeded: u64,
    /// Tasks failed for good.
    pub failed: u64,
    /// Tasks cancelled.
    pub cancelled: u64,
    /// Succeeded tasks as a percentage of all tasks (100 once completed).
    pub percent: f64,
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: String,
    /// The application it runs.
    pub app: String,
    /// The application version it runs.
    pub app_version: u32,
    /// The pool it runs on.
    pub pool: String,
    /// Its state.
    pub state: JobState,
    /// Its parameters, complete with defaults.
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Its input files.
    pub inputs: Vec<JobInput>,
    /// How many times a failed task attempt is retried.
    pub max_task_retries: u32,
    /// The wall-clock limit of one attempt, in seconds.
    pub task_timeout_secs: u64,
    /// Whether the processor's merge runs (known once split).
    pub merge: bool,
    /// Progress of its tasks.
    pub progress: Progress,
    /// Why it failed, if it did.
    pub failure: Option<Failure>,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it finished, if it has.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A task as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Task {
    /// Its name, unique in the job (`_split` and `_merge` for the two steps).
    pub name: String,
    /// What it does.
    pub kind: TaskKind,
    /// Its state.
    pub state: TaskState,
    /// Attempts started so far.
    pub attempts: u32,
    /// The node running (or that last ran) it.
    pub node: Option<String>,
    /// Its progress as last reported by the guest, 0 to 1.
    pub progress: f64,
    /// Its parameters.
    pub parameters: serde_json::Value,
    /// The job inputs it reads.
    pub inputs: Vec<String>,
    /// The tasks it depends on.
    pub depends_on: Vec<String>,
    /// When its current attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why its last attempt failed, if it did.
    pub failure: Option<Failure>,
}

/// One finished attempt at a task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    /// The attempt number, from 1.
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// `succeeded` or `failed`.
    pub state: TaskState,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Bytes written to stdout.
    pub stdout_size: u64,
    /// Bytes written to stderr.
    pub stderr_size: u64,
    /// Largest linear memory the guest grew to, in bytes.
    pub peak_memory: u64,
    /// Wall-clock time of the guest call, in microseconds.
    #[serde(default)]
    pub wall_us: u64,
    /// CPU time it used, in microseconds.
    #[serde(default)]
    pub cpu_us: u64,
    /// Bytes it read.
    #[serde(default)]
    pub bytes_read: u64,
    /// Bytes it wrote.
    #[serde(default)]
    pub bytes_written: u64,
}

/// A task with its attempts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskDetail {
    /// The task.
    #[serde(flatten)]
    pub task: Task,
    /// Its finished attempts, oldest first.
    pub attempt_history: Vec<Attempt>,
}

text_enum! {
    /// What an output file is for, from the first folder of its path under
    /// `/output`: `previews/…` are previews (a portal shows them),
    /// `intermediate/…` are intermediate results (kept, but not the job's
    /// answer), everything else is an output.
    OutputKind {
        /// A result.
        Output = "output",
        /// A small picture or summary to show while or after the job runs.
        Preview = "preview",
        /// Data one step hands to another (for example a task's partial
        /// result that the merge combines).
        Intermediate = "intermediate",
    }
}

impl OutputKind {
    /// The kind of the output at `path` (relative to `/output`).
    pub fn of_path(path: &str) -> Self {
        match path.split('/').next() {
            Some("previews") if path.len() > "previews/".len() => Self::Preview,
            Some("intermediate") if path.len() > "intermediate/".len() => Self::Intermediate,
            _ => Self::Output,
        }
    }
}

/// One stored output file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The task that wrote it; `None` for the job's own (merged) outputs.
    pub task: Option<String>,
    /// Its path under the task's `/output`.
    pub path: String,
    /// Its sha256.
    pub sha256: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// What it is, from its path (see [`OutputKind::of_path`]).
    pub kind: OutputKind,
}

/// Which attempt log to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// `stdout.txt`.
    Stdout,
    /// `stderr.txt` (also holds the guest's log lines).
    Stderr,
}

/// Converts stored milliseconds to a timestamp.
pub(crate) fn time_from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_kind_comes_from_the_first_folder_of_its_path() {
        for (path, kind) in [
            ("result.json", OutputKind::Output),
            ("previews/sheet.png", OutputKind::Preview),
            ("previews/a/b.png", OutputKind::Preview),
            ("intermediate/counts.bin", OutputKind::Intermediate),
            ("previews", OutputKind::Output),
            ("previews.png", OutputKind::Output),
            ("frames/previews/x.png", OutputKind::Output),
            ("Intermediate/x", OutputKind::Output),
        ] {
            assert_eq!(OutputKind::of_path(path), kind, "{path}");
        }
        assert_eq!("preview".parse::<OutputKind>(), Ok(OutputKind::Preview));
        assert!(
            "thumbnail"
                .parse::<OutputKind>()
                .unwrap_err()
                .contains("expected one of: output, preview, intermediate")
        );
    }
}
