//! Jobs as users see them: submit, watch, cancel, reprocess, and read tasks,
//! logs and outputs.

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::accounts::Caller;
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{
    Job, JobInput, JobState, LogStream, Output, Task, TaskDetail, TaskKind, TaskState, now_ms,
    time_from_ms,
};
use crate::package;
use crate::pools::PoolSpec;
use crate::scheduler::SPLIT_TASK;
use crate::service::Service;
use crate::store::{JobListQuery, JobRecord, NewTask, PoolRow, TaskListQuery, Tx};

/// Default number of retries of a failed task attempt.
pub const DEFAULT_MAX_TASK_RETRIES: u32 = 3;
/// Most retries a job may ask for.
pub const MAX_TASK_RETRIES: u32 = 100;
/// Default wall-clock limit of one attempt, in seconds.
pub const DEFAULT_TASK_TIMEOUT_SECS: u64 = 3600;
/// Longest wall-clock limit a job may ask for, in seconds (7 days).
pub const MAX_TASK_TIMEOUT_SECS: u64 = 7 * 24 * 3600;
/// Most input files of one job.
pub const MAX_JOB_INPUTS: usize = 100_000;
/// Largest page of a list.
pub const MAX_PAGE: u32 = 1000;

/// A file given to a job at submission: an uploaded file and the name tasks
/// see it under.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRef {
    /// Name under `/inputs` (a relative path).
    pub name: String,
    /// The uploaded file's sha256.
    pub sha256: Digest,
}

/// A job submission.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The application.
    pub app: String,
    /// Its version; the newest when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// Parameter values; declared defaults fill the rest.
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Input files.
    #[serde(default)]
    pub inputs: Vec<InputRef>,
    /// Retries of a failed attempt (default 3).
    #[serde(default)]
    pub max_task_retries: Option<u32>,
    /// Wall-clock limit of one attempt in seconds (default 3600).
    #[serde(default)]
    pub task_timeout_secs: Option<u64>,
    /// The pool to run on: one of the account's pools or a shared one
    /// (default: the service's pool `local`).
    #[serde(default)]
    pub pool: Option<String>,
    /// Or the properties of a pool created for this job alone (an
    /// auto-pool, named `auto-<job id>` and owned by the job's account),
    /// removed with its nodes once the job has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_pool: Option<PoolSpec>,
}

/// A page of jobs, newest first.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<Job>,
    /// Pass as `before` for the next page; absent on the last page.
    pub next: Option<String>,
}

/// A page of a job's tasks, in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskPage {
    /// The tasks.
    pub tasks: Vec<Task>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

impl Service {
    /// Submits a job (with its auto-pool, if it asks for one); it is
    /// durable when this returns.
    pub async fn submit(&self, caller: &Caller, request: SubmitJob) -> Result<Job, Error> {
        let account = caller.account.as_str();
        let version = self
            .app_version(account, &request.app, request.version)
            .await?;
        let parameters = package::resolve_parameters(&version.parameters, &request.parameters)?;
        let inputs = self.check_inputs(account, &request.inputs).await?;
        let max_task_retries = request.max_task_retries.unwrap_or(DEFAULT_MAX_TASK_RETRIES);
        if max_task_retries > MAX_TASK_RETRIES {
            return Err(Error::Invalid(format!(
                "max_task_retries is {max_task_retries}; at most {MAX_TASK_RETRIES} is allowed"
            )));
        }
        let timeout = request
            .task_timeout_secs
            .unwrap_or(DEFAULT_TASK_TIMEOUT_SECS);
        if !(1..=MAX_TASK_TIMEOUT_SECS).contains(&timeout) {
            return Err(Error::Invalid(format!(
                "task_timeout_secs is {timeout}; it must be between 1 and {MAX_TASK_TIMEOUT_SECS}"
            )));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let auto_pool = match (&request.pool, request.auto_pool) {
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "the job names both a `pool` and an `auto_pool`; give one of them".into(),
                ));
            }
            (_, Some(spec)) => Some(self.auto_pool(caller, &id, spec).await?),
            (_, None) => None,
        };
        let pool = match &auto_pool {
            Some(auto) => auto.id.clone(),
            None => self.job_pool(account, request.pool.as_deref()).await?,
        };
        let job = JobRecord {
            id,
            account: account.to_owned(),
            app: version.app.clone(),
            app_version: version.version,
            pool: pool.clone(),
            state: JobState::Splitting,
            parameters: serde_json::Value::Object(parameters).to_string(),
            inputs: serde_json::to_string(&inputs).expect("inputs serialise"),
            max_task_retries,
            task_timeout_ms: timeout * 1000,
            merge: false,
            has_deps: false,
            task_count: 0,
            counts: Default::default(),
            failure: None,
            created_at: now_ms(),
            finished_at: None,
        };
        let split = NewTask::step(0, SPLIT_TASK, TaskKind::Split);
        let mut tx = self.inner.store.begin().await?;
        Self::check_pending_jobs_quota(&mut tx, account).await?;
        if let Some(auto) = &auto_pool {
            let created = tx
                .insert_pool(&PoolRow {
                    id: &auto.id,
                    account,
                    name: &auto.name,
                    shared: false,
                    join_token: &auto.join_token,
                    spec: &auto.spec,
                    auto_job: Some(&job.id),
                })
                .await?;
            if !created {
                return Err(Error::Internal(format!(
                    "the auto-pool `{}` exists already",
                    auto.name
                )));
            }
        }
        // The pool may have been deleted since it was looked up.
        if !tx.pool_exists(&pool).await? {
            return Err(Error::not_found(
                "pool",
                crate::pools::pool_name(&pool).to_owned(),
            ));
        }
        tx.insert_job(&job).await?;
        tx.insert_tasks(&job.id, &pool, &[split]).await?;
        tx.commit().await?;
        self.inner.scheduler.work_available();
        tracing::info!(job = %job.id, app = %job.app, version = job.app_version, "job submitted");
        self.view(job).await
    }

    async fn check_inputs(
        &self,
        account: &str,
        inputs: &[InputRef],
    ) -> Result<Vec<JobInput>, Error> {
        if inputs.len() > MAX_JOB_INPUTS {
            return Err(Error::Invalid(format!(
                "the job has {} inputs; at most {MAX_JOB_INPUTS} are allowed",
                inputs.len()
            )));
        }
        let mut names = HashSet::new();
        let mut out = Vec::with_capacity(inputs.len());
        for input in inputs {
            let name = package::check_relative_path(&input.name)
                .map_err(|e| Error::Invalid(format!("input name `{}`: {e}", input.name)))?;
            if !names.insert(name.clone()) {
                return Err(Error::Invalid(format!("input name `{name}` is used twice")));
            }
            let size = self
                .uploaded_size(account, &input.sha256, format!("input `{name}`"))
                .await?;
            out.push(JobInput {
                name,
                sha256: input.sha256,
                size,
            });
        }
        Ok(out)
    }

    async fn job_record(&self, account: &str, id: &str) -> Result<JobRecord, Error> {
        self.inner
            .store
            .job(Some(account), id)
            .await?
            .ok_or_else(|| Error::not_found("job", id))
    }

    async fn view(&self, job: JobRecord) -> Result<Job, Error> {
        let progress = crate::store::Store::progress(&job);
        Ok(Job {
            parameters: serde_json::from_str(&job.parameters)
                .map_err(|e| Error::Internal(format!("job parameters: {e}")))?,
            inputs: serde_json::from_str(&job.inputs)
                .map_err(|e| Error::Internal(format!("job inputs: {e}")))?,
            id: job.id,
            app: job.app,
            app_version: job.app_version,
            pool: crate::pools::pool_name(&job.pool).to_owned(),
            state: job.state,
            max_task_retries: job.max_task_retries,
            task_timeout_secs: job.task_timeout_ms / 1000,
            merge: job.merge,
            progress,
            failure: job.failure,
            created_at: time_from_ms(job.created_at),
            finished_at: job.finished_at.map(time_from_ms),
        })
    }

    /// A job with its progress.
    pub async fn job(&self, account: &str, id: &str) -> Result<Job, Error> {
        let job = self.job_record(account, id).await?;
        self.view(job).await
    }

    /// The account's jobs, newest first, optionally in one state, from
    /// before the job `before`.
    pub async fn list_jobs(
        &self,
        account: &str,
        state: Option<JobState>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<JobPage, Error> {
        let limit = limit.clamp(1, MAX_PAGE);
        let records = self
            .inner
            .store
            .list_jobs(&JobListQuery {
                account,
                state,
                before,
                limit,
            })
            .await?;
        let next = (records.len() == limit as usize)
            .then(|| records.last().map(|j| j.id.clone()))
            .flatten();
        let mut jobs = Vec::with_capacity(records.len());
        for job in records {
            jobs.push(self.view(job).await?);
        }
        Ok(JobPage { jobs, next })
    }

    /// Cancels a job: its unfinished tasks are cancelled and running
    /// attempts stopped.
    pub async fn cancel(&self, account: &str, id: &str) -> Result<Job, Error> {
        self.job_record(account, id).await?;
        let now = now_ms();
        let mut tx = self.inner.store.begin().await?;
        // Decided by the update itself: a job that finishes meanwhile (on
        // any replica) stays finished.
        move_or_refuse(
            &mut tx,
            id,
            &JobState::UNFINISHED,
            JobState::Cancelled,
            Some(now),
            |state| format!("job {id} is already {state}; only unfinished jobs can be cancelled"),
        )
        .await?;
        tx.cancel_tasks(id, now).await?;
        tx.commit().await?;
        self.inner.scheduler.attempts_revoked();
        tracing::info!(job = %id, "job cancelled");
        self.job(account, id).await
    }

    /// Runs the failed (or cancelled) tasks of a finished job again, each
    /// with a fresh set of retries.
    pub async fn reprocess(&self, account: &str, id: &str) -> Result<Job, Error> {
        let job = self.job_record(account, id).await?;
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Err(Error::Conflict(format!(
                "job {id} is {}; only failed or cancelled jobs can be reprocessed",
                job.state
            )));
        }
        let mut tx = self.inner.store.begin().await?;
        Self::check_pending_jobs_quota(&mut tx, account).await?;
        if !tx.pool_exists(&job.pool).await? {
            return Err(Error::Conflict(format!(
                "job {id} ran on the pool `{}`, which has been deleted; submit it again on another pool",
                crate::pools::pool_name(&job.pool)
            )));
        }
        let steps = tx
            .current_tasks(id, &[0, job.task_count as i64 + 1])
            .await?;
        let unfinished = |s: TaskState| matches!(s, TaskState::Failed | TaskState::Cancelled);
        let state = if steps
            .iter()
            .any(|t| t.kind == TaskKind::Split && unfinished(t.state))
        {
            JobState::Splitting
        } else if steps
            .iter()
            .any(|t| t.kind == TaskKind::Merge && unfinished(t.state))
        {
            JobState::Merging
        } else {
            JobState::Running
        };
        // Decided by the update itself, as for cancel: two reprocess
        // requests at once requeue the tasks once.
        let reprocessable = [JobState::Failed, JobState::Cancelled];
        move_or_refuse(&mut tx, id, &reprocessable, state, None, |now| {
            format!(
                "job {id} is {now} now (another request reprocessed it); only failed or cancelled jobs can be reprocessed"
            )
        })
        .await?;
        let requeued = tx.reprocess_tasks(id).await?;
        tx.commit().await?;
        self.inner.scheduler.work_available();
        tracing::info!(job = %id, requeued, "job reprocessed");
        self.job(account, id).await
    }

    /// A page of a job's tasks (the split and merge steps included).
    pub async fn tasks(
        &self,
        account: &str,
        id: &str,
        state: Option<TaskState>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<TaskPage, Error> {
        self.job_record(account, id).await?;
        let after_seq = match after {
            None => -1,
            Some(a) => a.parse::<i64>().map_err(|_| {
                Error::Invalid(format!("`after` must be a value from `next`, not `{a}`"))
            })?,
        };
        let limit = limit.clamp(1, MAX_PAGE);
        let rows = self
            .inner
            .store
            .list_tasks(&TaskListQuery {
                job_id: id,
                state,
                after_seq,
                limit,
            })
            .await?;
        let next = (rows.len() == limit as usize)
            .then(|| rows.last().map(|(seq, _)| seq.to_string()))
            .flatten();
        Ok(TaskPage {
            tasks: rows.into_iter().map(|(_, t)| t).collect(),
            next,
        })
    }

    async fn task_seq(&self, account: &str, id: &str, name: &str) -> Result<(i64, Task), Error> {
        self.job_record(account, id).await?;
        self.inner
            .store
            .task(id, name)
            .await?
            .ok_or_else(|| Error::not_found("task", name))
    }

    /// A task with its attempts.
    pub async fn task(&self, account: &str, id: &str, name: &str) -> Result<TaskDetail, Error> {
        let (seq, task) = self.task_seq(account, id, name).await?;
        let attempt_history = self.inner.store.attempts(id, seq).await?;
        Ok(TaskDetail {
            task,
            attempt_history,
        })
    }

    /// An attempt's stdout or stderr (the latest attempt unless one is
    /// named): the attempt number and the content.
    pub async fn task_log(
        &self,
        account: &str,
        id: &str,
        name: &str,
        stream: LogStream,
        attempt: Option<u32>,
    ) -> Result<(u32, Bytes), Error> {
        let (seq, _) = self.task_seq(account, id, name).await?;
        let (number, log) = self
            .inner
            .store
            .attempt_log(id, seq, attempt, stream)
            .await?
            .ok_or_else(|| match attempt {
                Some(a) => Error::not_found("attempt", format!("{name}#{a}")),
                None => Error::not_found("finished attempt of task", name),
            })?;
        let bytes = match log.digest {
            Some(digest) => self.inner.blobs.get_bytes(&digest).await?,
            None => Bytes::new(),
        };
        Ok((number, bytes))
    }

    /// Every output of a job: its own (merged) outputs first, then each task's.
    pub async fn outputs(&self, account: &str, id: &str) -> Result<Vec<Output>, Error> {
        let job = self.job_record(account, id).await?;
        self.inner.store.outputs(&job).await
    }

    /// One output: a job output when `task` is `None`, else a task's.
    pub async fn output(
        &self,
        account: &str,
        id: &str,
        task: Option<&str>,
        path: &str,
    ) -> Result<Output, Error> {
        let job = self.job_record(account, id).await?;
        self.inner
            .store
            .output(&job, task, path)
            .await?
            .ok_or_else(|| match task {
                Some(t) => Error::not_found("output", format!("{t}/{path}")),
                None => Error::not_found("output", path),
            })
    }

    /// A stored file's content, or the part `range` names (within its
    /// size), as a stream.
    pub async fn read_file(
        &self,
        digest: &Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<impl Stream<Item = Result<Bytes, Error>> + Send + 'static, Error> {
        self.inner.blobs.get_stream(digest, range).await
    }

    /// Every output of a job in one zip (job outputs at the root, task
    /// outputs under `tasks/<task>/`), written to a temporary file.
    pub async fn outputs_zip(
        &self,
        account: &str,
        id: &str,
    ) -> Result<tempfile::NamedTempFile, Error> {
        let outputs = self.outputs(account, id).await?;
        let staging = tempfile::tempdir_in(self.inner.config.data_dir.join("uploads"))?;
        let mut entries = Vec::with_capacity(outputs.len());
        for (i, output) in outputs.iter().enumerate() {
            let local = staging.path().join(i.to_string());
            self.inner.blobs.download(&output.sha256, &local).await?;
            let name = match &output.task {
                Some(task) => format!("tasks/{task}/{}", output.path),
                None => output.path.clone(),
            };
            entries.push((name, local));
        }
        let zip_path = self.inner.config.data_dir.join("uploads");
        tokio::task::spawn_blocking(move || {
            let file = tempfile::NamedTempFile::new_in(zip_path)?;
            let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file.reopen()?));
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(true);
            for (name, local) in &entries {
                zip.start_file(name.as_str(), options).map_err(zip_error)?;
                std::io::copy(&mut std::fs::File::open(local)?, &mut zip)?;
            }
            zip.finish().map_err(zip_error)?.flush()?;
            drop(staging);
            Ok::<_, Error>(file)
        })
        .await
        .map_err(|e| Error::Internal(format!("zip task failed: {e}")))?
    }
}

fn zip_error(e: zip::result::ZipError) -> Error {
    Error::Internal(format!("writing the zip failed: {e}"))
}

/// Moves job `id` from one of the states `from` to `to` inside `tx`, or
/// refuses with a [`Error::Conflict`] whose message `refusal` makes from the
/// state the job is in.
async fn move_or_refuse(
    tx: &mut Tx,
    id: &str,
    from: &[JobState],
    to: JobState,
    finished_at: Option<i64>,
    refusal: impl FnOnce(JobState) -> String,
) -> Result<(), Error> {
    if tx.move_job_state(id, from, to, None, finished_at).await? {
        return Ok(());
    }
    let job = tx
        .job(id)
        .await?
        .ok_or_else(|| Error::not_found("job", id))?;
    Err(Error::Conflict(refusal(job.state)))
}
