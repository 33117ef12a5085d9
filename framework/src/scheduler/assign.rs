//! Turning leased task rows into [`Assignment`]s: everything a node needs
//! to run an attempt, from the task row and the job's immutable facts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Scheduler;
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{JobInput, JobState, TaskKind};
use crate::protocol::{Assignment, AttemptKey, InputFile, TaskLimits};
use crate::store::LeasedTask;

/// Jobs whose facts are kept in memory at most; past it the cache starts
/// over (it is only a cache: every fact is in the database).
const CACHED_JOBS: usize = 4096;

/// Immutable facts about a job that every assignment repeats.
pub(super) struct JobContext {
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

/// The facts of jobs past their split, by job id.
#[derive(Default)]
pub(super) struct JobCache(Mutex<HashMap<String, Arc<JobContext>>>);

impl JobCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<JobContext>>> {
        // A panic elsewhere cannot leave a plain map half-changed.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, job_id: &str) -> Option<Arc<JobContext>> {
        self.map().get(job_id).cloned()
    }

    fn insert(&self, job_id: &str, ctx: Arc<JobContext>) {
        let mut map = self.map();
        if map.len() >= CACHED_JOBS {
            map.clear();
        }
        map.insert(job_id.to_owned(), ctx);
    }

    /// Forgets a finished job.
    pub(super) fn forget(&self, job_id: &str) {
        self.map().remove(job_id);
    }
}

impl Scheduler {
    async fn job_context(&self, job_id: &str) -> Result<Arc<JobContext>, Error> {
        if let Some(ctx) = self.inner.jobs.get(job_id) {
            return Ok(ctx);
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
            self.inner.jobs.insert(job_id, ctx.clone());
        }
        Ok(ctx)
    }

    /// Everything a node needs to run a leased task.
    pub(super) async fn assignment(&self, task: LeasedTask) -> Result<Assignment, Error> {
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
}
