//! A task slot: one OS thread that runs attempts one after another.
//!
//! Guests run synchronously on these threads, never on the async reactor:
//! wasmtime's synchronous calls are the fastest way to run short tasks, and a
//! guest that computes for an hour blocks only its own slot. Each slot owns
//! its `inputs` and `output` folders and empties them after every attempt.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};

use bytes::Bytes;

use super::Session;
use super::cache::Cache;
use crate::error::Error;
use crate::model::{Failure, FailureKind, TaskKind, now_ms};
use crate::protocol::{
    Assignment, AttemptReport, Coordinator, InputFile, Outcome, OutputFile, PlanRef, SplitPlan,
    UploadSource, Uploaded, Usage,
};
use crate::runtime::{
    AttemptRun, GuestFile, GuestJob, GuestTask, GuestTaskResult, Runtime, Sandbox, human_bytes,
};

/// A split plan larger than this (as JSON) is uploaded as a file instead
/// of travelling in the report.
const INLINE_PLAN_BYTES: usize = 1 << 20;

/// Most files one attempt may leave in `/output`.
const MAX_OUTPUT_FILES: usize = 100_000;

/// An attempt ready to run: its assignment and everything fetched for it.
pub(super) struct Work {
    pub(super) session: Arc<Session>,
    pub(super) assignment: Assignment,
    pub(super) app_dir: PathBuf,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) progress: Arc<AtomicU32>,
}

/// What a slot needs to run attempts.
pub(super) struct Slot<C> {
    runtime: Runtime,
    coordinator: Arc<C>,
    cache: Arc<Cache>,
    handle: tokio::runtime::Handle,
    inputs: PathBuf,
    output: PathBuf,
}

impl<C: Coordinator> Slot<C> {
    /// A slot with fresh, empty folders under `dir`; call it from the
    /// node's tokio runtime.
    pub(super) fn new(
        dir: &Path,
        runtime: Runtime,
        coordinator: Arc<C>,
        cache: Arc<Cache>,
    ) -> Result<Self, Error> {
        let inputs = dir.join("inputs");
        let output = dir.join("output");
        for d in [&inputs, &output] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
            std::fs::create_dir_all(d)?;
        }
        Ok(Self {
            runtime,
            coordinator,
            cache,
            handle: tokio::runtime::Handle::current(),
            inputs,
            output,
        })
    }

    /// Runs one attempt and reports how it ended; never fails.
    pub(super) fn run(&self, work: &Work) -> AttemptReport {
        let started_at = now_ms();
        let a = &work.assignment;
        let node_id = work.session.node_id.as_str();
        let run = if work.cancel.load(std::sync::atomic::Ordering::Relaxed) {
            AttemptRun::failed(Failure::new(
                FailureKind::Cancelled,
                "the attempt was cancelled before it started",
            ))
        } else {
            self.execute(work)
        };
        // The splitter has no /output; otherwise only a successful collection
        // that found nothing proves the folder is still empty.
        let mut output_empty = a.kind == TaskKind::Split;
        let outcome = match run.result {
            Ok(plan) => match self.collect_outputs(node_id, a) {
                Ok((outputs, empty)) => {
                    output_empty |= empty;
                    match self.plan_ref(node_id, a, plan) {
                        Ok(plan) => Outcome::Succeeded { outputs, plan },
                        Err(failure) => Outcome::Failed(failure),
                    }
                }
                Err(failure) => Outcome::Failed(failure),
            },
            Err(failure) => Outcome::Failed(failure),
        };
        let logs = self
            .store_log(node_id, a, run.stdout)
            .and_then(|out| Ok((out, self.store_log(node_id, a, run.stderr)?)));
        let (stdout, stderr, outcome) = match logs {
            Ok((out, err)) => (out, err, outcome),
            Err(e) => (
                None,
                None,
                Outcome::Failed(Failure::new(
                    FailureKind::Internal,
                    format!("storing the logs failed: {e}"),
                )),
            ),
        };
        self.clean(a, output_empty);
        AttemptReport {
            key: a.key.clone(),
            outcome,
            stdout,
            stderr,
            started_at,
            finished_at: now_ms(),
            usage: Usage {
                peak_memory: run.peak_memory,
                ..Usage::default()
            },
        }
    }

    /// A split plan as the report carries it: inline, or uploaded when large.
    fn plan_ref(
        &self,
        node_id: &str,
        a: &Assignment,
        plan: Option<SplitPlan>,
    ) -> Result<Option<PlanRef>, Failure> {
        let Some(plan) = plan else { return Ok(None) };
        let json = serde_json::to_vec(&plan).map_err(internal("encoding the split plan"))?;
        if json.len() <= INLINE_PLAN_BYTES {
            return Ok(Some(PlanRef::Inline(plan)));
        }
        let uploaded = self
            .upload(node_id, a, UploadSource::Bytes(&Bytes::from(json)))
            .map_err(internal("uploading the split plan"))?;
        Ok(Some(PlanRef::Uploaded(uploaded)))
    }

    fn upload(
        &self,
        node_id: &str,
        a: &Assignment,
        source: UploadSource<'_>,
    ) -> Result<Uploaded, crate::protocol::NodeError> {
        self.handle
            .block_on(self.coordinator.upload(node_id, &a.key, source))
    }

    fn execute(&self, work: &Work) -> AttemptRun<Option<SplitPlan>> {
        let a = &work.assignment;
        if let Err(e) = self.mount_inputs(a) {
            return AttemptRun::failed(Failure::new(
                FailureKind::Internal,
                format!("preparing /inputs failed: {e}"),
            ));
        }
        let sandbox = Sandbox {
            app: work.app_dir.clone(),
            inputs: self.inputs.clone(),
            output: (a.kind != TaskKind::Split).then(|| self.output.clone()),
            env: environment(a, &work.session.node_id),
            limits: a.limits,
            cancel: work.cancel.clone(),
            progress: work.progress.clone(),
        };
        let files = |list: &[InputFile]| {
            list.iter()
                .map(|f| GuestFile {
                    name: f.path.clone(),
                    size: f.size,
                })
                .collect::<Vec<_>>()
        };
        let job = || GuestJob {
            id: a.key.job_id.clone(),
            app: a.app.clone(),
            app_version: a.app_version,
            parameters: a.job_parameters.clone(),
            inputs: files(&a.inputs),
        };
        match a.kind {
            TaskKind::Split => self.runtime.split(&a.component, &sandbox, &job()).map(Some),
            TaskKind::Process => {
                let task = GuestTask {
                    job_id: a.key.job_id.clone(),
                    name: a.task.clone(),
                    attempt: a.key.attempt,
                    job_parameters: a.job_parameters.clone(),
                    parameters: a.parameters.clone(),
                    inputs: files(&a.inputs),
                };
                without_plan(self.runtime.process(&a.component, &sandbox, &task))
            }
            TaskKind::Merge => {
                let results: Vec<GuestTaskResult> = a
                    .results
                    .iter()
                    .map(|r| GuestTaskResult {
                        name: r.name.clone(),
                        parameters: r.parameters.clone(),
                        outputs: files(&r.outputs),
                    })
                    .collect();
                without_plan(self.runtime.merge(&a.component, &sandbox, &job(), &results))
            }
        }
    }

    /// Links every input of the attempt into the slot's `inputs` folder.
    fn mount_inputs(&self, a: &Assignment) -> Result<(), Error> {
        let results = a.results.iter().flat_map(|r| {
            r.outputs
                .iter()
                .map(move |o| (format!("{}/{}", r.name, o.path), &o.digest))
        });
        let all = a
            .inputs
            .iter()
            .map(|i| (i.path.clone(), &i.digest))
            .chain(results);
        for (path, digest) in all {
            let relative = crate::package::check_relative_path(&path)?;
            let target = self.inputs.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let source = self.cache.file_path(digest);
            if std::fs::hard_link(&source, &target).is_err() {
                std::fs::copy(&source, &target)?;
            }
        }
        Ok(())
    }

    /// Stores every file the attempt left in `/output`; also says whether
    /// `/output` was empty (not even a folder in it).
    fn collect_outputs(
        &self,
        node_id: &str,
        a: &Assignment,
    ) -> Result<(Vec<OutputFile>, bool), Failure> {
        if a.kind == TaskKind::Split {
            return Ok((Vec::new(), true));
        }
        let mut entries_seen = 0usize;
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut stack = vec![self.output.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(internal("reading /output"))?;
            for entry in entries {
                let entry = entry.map_err(internal("reading /output"))?;
                entries_seen += 1;
                let kind = entry.file_type().map_err(internal("reading /output"))?;
                let path = entry.path();
                let relative = path
                    .strip_prefix(&self.output)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Failure::new(
                            FailureKind::GuestError,
                            format!("output {} has a name that is not UTF-8", path.display()),
                        )
                    })?;
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_file() {
                    total += entry.metadata().map_err(internal("reading /output"))?.len();
                    files.push((relative, path));
                } else {
                    return Err(Failure::new(
                        FailureKind::GuestError,
                        format!("/output/{relative} is not a regular file; outputs must be files"),
                    ));
                }
                if files.len() > MAX_OUTPUT_FILES {
                    return Err(Failure::new(
                        FailureKind::OutputLimit,
                        format!("the attempt left more than {MAX_OUTPUT_FILES} files in /output"),
                    ));
                }
            }
        }
        if total > a.limits.output_bytes {
            return Err(Failure::new(
                FailureKind::OutputLimit,
                format!(
                    "/output holds {}, more than its limit of {}",
                    human_bytes(total),
                    human_bytes(a.limits.output_bytes)
                ),
            ));
        }
        files.sort();
        let stored = files
            .into_iter()
            .map(|(relative, path)| {
                let relative = crate::package::check_relative_path(&relative).map_err(|e| {
                    Failure::new(FailureKind::GuestError, format!("output `{relative}`: {e}"))
                })?;
                let file = self
                    .upload(node_id, a, UploadSource::File(&path))
                    .map_err(internal("storing an output"))?;
                Ok(OutputFile {
                    path: relative,
                    file,
                })
            })
            .collect::<Result<_, Failure>>()?;
        Ok((stored, entries_seen == 0))
    }

    fn store_log(
        &self,
        node_id: &str,
        a: &Assignment,
        bytes: Bytes,
    ) -> Result<Option<Uploaded>, crate::protocol::NodeError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        self.upload(node_id, a, UploadSource::Bytes(&bytes))
            .map(Some)
    }

    /// Empties the slot's folders for the next attempt.
    fn clean(&self, a: &Assignment, output_empty: bool) {
        let mut dirs = Vec::with_capacity(2);
        if !output_empty && !folder_is_empty(&self.output) {
            dirs.push(&self.output);
        }
        if !a.inputs.is_empty() || !a.results.is_empty() {
            dirs.push(&self.inputs);
        }
        for dir in dirs {
            if let Err(e) = std::fs::remove_dir_all(dir).and_then(|()| std::fs::create_dir_all(dir))
            {
                tracing::error!(dir = %dir.display(), error = %e, "cannot empty a slot folder");
            }
        }
    }
}

/// Whether a folder has no entries (an unreadable one counts as not empty).
fn folder_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn without_plan(run: AttemptRun<()>) -> AttemptRun<Option<SplitPlan>> {
    run.map(|()| None)
}

fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Failure {
    move |e| Failure::new(FailureKind::Internal, format!("{what} failed: {e}"))
}

/// The `TESSERA_*` variables of an attempt, then the task's own.
fn environment(a: &Assignment, node_id: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("TESSERA_ACCOUNT".to_owned(), a.account.clone()),
        ("TESSERA_POOL_ID".to_owned(), a.pool.clone()),
        ("TESSERA_NODE_ID".to_owned(), node_id.to_owned()),
        ("TESSERA_JOB_ID".to_owned(), a.key.job_id.clone()),
        ("TESSERA_TASK_NAME".to_owned(), a.task.clone()),
        ("TESSERA_TASK_ATTEMPT".to_owned(), a.key.attempt.to_string()),
        ("TESSERA_APP".to_owned(), a.app.clone()),
        ("TESSERA_APP_VERSION".to_owned(), a.app_version.to_string()),
    ];
    env.extend(a.env.iter().cloned());
    env
}
