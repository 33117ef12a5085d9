//! Reads.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::LogRef;
use super::tasks::{CurrentTask, select_current_tasks};
use super::tx::json;
use super::tx::{JOB_COLUMNS, JobRecord};
use super::{Store, parse_column, parse_digest, parse_failure, parse_json};
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{
    AppSummary, AppVersion, Attempt, FileRef, JobState, LogStream, Output, Progress, Task,
    TaskKind, TaskState, time_from_ms,
};
use crate::protocol::{InputFile, TaskResultRef};

/// Which jobs to list.
#[derive(Clone, Debug)]
pub(crate) struct JobListQuery<'a> {
    pub account: &'a str,
    pub state: Option<JobState>,
    /// Only jobs older than this id (ids sort by submission time).
    pub before: Option<&'a str>,
    pub limit: u32,
}

/// Which tasks of a job to list.
#[derive(Clone, Debug)]
pub(crate) struct TaskListQuery<'a> {
    pub job_id: &'a str,
    pub state: Option<TaskState>,
    /// Only tasks after this position.
    pub after_seq: i64,
    pub limit: u32,
}

const TASK_COLUMNS: &str = "seq, name, kind, state, attempts, node, progress, parameters, \
     inputs, depends_on, started_at, finished_at, failure_kind, failure";

fn task_from_row(row: &AnyRow) -> Result<(i64, Task), Error> {
    let parameters: String = row.try_get("parameters")?;
    Ok((
        row.try_get("seq")?,
        Task {
            name: row.try_get("name")?,
            kind: parse_column(row, "kind")?,
            state: parse_column(row, "state")?,
            attempts: row.try_get::<i64, _>("attempts")? as u32,
            node: row.try_get("node")?,
            progress: row.try_get("progress")?,
            parameters: serde_json::from_str(&parameters)
                .map_err(|e| Error::Internal(format!("task parameters: {e}")))?,
            inputs: parse_json(row, "inputs")?,
            depends_on: parse_json(row, "depends_on")?,
            started_at: row
                .try_get::<Option<i64>, _>("started_at")?
                .map(time_from_ms),
            finished_at: row
                .try_get::<Option<i64>, _>("finished_at")?
                .map(time_from_ms),
            failure: parse_failure(row)?,
        },
    ))
}

fn app_version_from_row(row: &AnyRow) -> Result<AppVersion, Error> {
    let image = parse_digest(row, "image_digest")?.map(|sha256| {
        Ok::<_, Error>(FileRef {
            sha256,
            size: row.try_get::<i64, _>("image_size")? as u64,
        })
    });
    Ok(AppVersion {
        app: row.try_get("app")?,
        version: row.try_get::<i64, _>("version")? as u32,
        created_at: time_from_ms(row.try_get("created_at")?),
        image: image.transpose()?,
        assembly: FileRef {
            sha256: required_digest(row, "assembly_digest")?,
            size: row.try_get::<i64, _>("assembly_size")? as u64,
        },
        splitter: required_digest(row, "splitter_digest")?,
        processor: required_digest(row, "processor_digest")?,
        parameters: parse_json(row, "parameters")?,
    })
}

fn required_digest(row: &AnyRow, column: &str) -> Result<Digest, Error> {
    parse_digest(row, column)?.ok_or_else(|| Error::Internal(format!("column {column} is null")))
}

impl Store {
    /// The account's applications with their newest version.
    pub(crate) async fn list_apps(&self, account: &str) -> Result<Vec<AppSummary>, Error> {
        let rows = sqlx::query(
            "SELECT a.name, a.created_at, MAX(v.version) AS latest FROM apps a \
             JOIN app_versions v ON v.account = a.account AND v.app = a.name \
             WHERE a.account = $1 GROUP BY a.name, a.created_at ORDER BY a.name",
        )
        .bind(account)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AppSummary {
                    name: row.try_get("name")?,
                    latest_version: row.try_get::<i64, _>("latest")? as u32,
                    created_at: time_from_ms(row.try_get("created_at")?),
                })
            })
            .collect()
    }

    /// Every version of an application, newest first.
    pub(crate) async fn app_versions(
        &self,
        account: &str,
        app: &str,
    ) -> Result<Vec<AppVersion>, Error> {
        let rows = sqlx::query(
            "SELECT * FROM app_versions WHERE account = $1 AND app = $2 ORDER BY version DESC",
        )
        .bind(account)
        .bind(app)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(app_version_from_row).collect()
    }

    /// One version of an application (the newest when `version` is `None`).
    pub(crate) async fn app_version(
        &self,
        account: &str,
        app: &str,
        version: Option<u32>,
    ) -> Result<Option<AppVersion>, Error> {
        let row =
            match version {
                Some(v) => sqlx::query(
                    "SELECT * FROM app_versions WHERE account = $1 AND app = $2 AND version = $3",
                )
                .bind(account)
                .bind(app)
                .bind(v as i64)
                .fetch_optional(&self.read)
                .await?,
                None => {
                    sqlx::query(
                        "SELECT * FROM app_versions WHERE account = $1 AND app = $2 \
                     ORDER BY version DESC LIMIT 1",
                    )
                    .bind(account)
                    .bind(app)
                    .fetch_optional(&self.read)
                    .await?
                }
            };
        row.as_ref().map(app_version_from_row).transpose()
    }

    /// Which of `digests` the account has not uploaded.
    pub(crate) async fn missing_files(
        &self,
        account: &str,
        digests: &[Digest],
    ) -> Result<Vec<Digest>, Error> {
        let sql = format!(
            "SELECT digest FROM files WHERE account = $1 AND digest IN (SELECT value FROM {})",
            self.dialect.json_texts(2)
        );
        let hex: Vec<String> = digests.iter().map(Digest::to_hex).collect();
        let rows = sqlx::query(&sql)
            .bind(account)
            .bind(json(&hex))
            .fetch_all(&self.read)
            .await?;
        let present: std::collections::HashSet<String> = rows
            .iter()
            .map(|r| r.try_get("digest"))
            .collect::<Result<_, _>>()?;
        Ok(digests
            .iter()
            .filter(|d| !present.contains(&d.to_hex()))
            .copied()
            .collect())
    }

    /// The size of a file the account uploaded, if it did.
    pub(crate) async fn file_size(
        &self,
        account: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, Error> {
        let row = sqlx::query("SELECT size FROM files WHERE account = $1 AND digest = $2")
            .bind(account)
            .bind(digest.to_hex())
            .fetch_optional(&self.read)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>("size"))
            .transpose()?
            .map(|s| s as u64))
    }

    /// A job, if it exists and belongs to `account` (any account when `None`).
    pub(crate) async fn job(
        &self,
        account: Option<&str>,
        id: &str,
    ) -> Result<Option<JobRecord>, Error> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.read)
            .await?;
        let job = row.as_ref().map(JobRecord::from_row).transpose()?;
        Ok(job.filter(|j| account.is_none_or(|a| j.account == a)))
    }

    /// Jobs, newest first.
    pub(crate) async fn list_jobs(&self, q: &JobListQuery<'_>) -> Result<Vec<JobRecord>, Error> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE account = $1");
        let mut next = 2;
        if q.state.is_some() {
            sql.push_str(&format!(" AND state = ${next}"));
            next += 1;
        }
        if q.before.is_some() {
            sql.push_str(&format!(" AND id < ${next}"));
            next += 1;
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(q.account);
        if let Some(state) = q.state {
            query = query.bind(state.as_str());
        }
        if let Some(before) = q.before {
            query = query.bind(before);
        }
        let rows = query.bind(q.limit as i64).fetch_all(&self.read).await?;
        rows.iter().map(JobRecord::from_row).collect()
    }

    /// How far a job's tasks have got.
    pub(crate) fn progress(job: &JobRecord) -> Progress {
        let c = &job.counts;
        let total = job.task_count;
        let percent = if job.state == JobState::Completed {
            100.0
        } else if total == 0 {
            0.0
        } else {
            (c.succeeded as f64 * 10_000.0 / total as f64).round() / 100.0
        };
        Progress {
            total,
            blocked: c.blocked,
            queued: c.queued,
            running: c.running,
            succeeded: c.succeeded,
            failed: c.failed,
            cancelled: c.cancelled,
            percent,
        }
    }

    /// Tasks of a job in order.
    pub(crate) async fn list_tasks(
        &self,
        q: &TaskListQuery<'_>,
    ) -> Result<Vec<(i64, Task)>, Error> {
        let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND seq > $2");
        if q.state.is_some() {
            sql.push_str(" AND state = $4");
        }
        sql.push_str(" ORDER BY seq LIMIT $3");
        let mut query = sqlx::query(&sql)
            .bind(q.job_id)
            .bind(q.after_seq)
            .bind(q.limit as i64);
        if let Some(state) = q.state {
            query = query.bind(state.as_str());
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// One task of a job by name, with its position.
    pub(crate) async fn task(
        &self,
        job_id: &str,
        name: &str,
    ) -> Result<Option<(i64, Task)>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE job_id = $1 AND name = $2"
        ))
        .bind(job_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// The finished attempts of a task, oldest first.
    pub(crate) async fn attempts(&self, job_id: &str, seq: i64) -> Result<Vec<Attempt>, Error> {
        let rows =
            sqlx::query("SELECT * FROM attempts WHERE job_id = $1 AND seq = $2 ORDER BY attempt")
                .bind(job_id)
                .bind(seq)
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|row| {
                Ok(Attempt {
                    attempt: row.try_get::<i64, _>("attempt")? as u32,
                    node: row.try_get("node")?,
                    state: parse_column(row, "state")?,
                    failure: parse_failure(row)?,
                    started_at: time_from_ms(row.try_get("started_at")?),
                    finished_at: time_from_ms(row.try_get("finished_at")?),
                    stdout_size: row.try_get::<i64, _>("stdout_size")? as u64,
                    stderr_size: row.try_get::<i64, _>("stderr_size")? as u64,
                    peak_memory: row.try_get::<i64, _>("peak_memory")? as u64,
                    wall_us: row.try_get::<i64, _>("wall_us")? as u64,
                    cpu_us: row.try_get::<i64, _>("cpu_us")? as u64,
                    bytes_read: row.try_get::<i64, _>("bytes_read")? as u64,
                    bytes_written: row.try_get::<i64, _>("bytes_written")? as u64,
                })
            })
            .collect()
    }

    /// Where an attempt's log is stored (the latest attempt when `attempt` is `None`).
    pub(crate) async fn attempt_log(
        &self,
        job_id: &str,
        seq: i64,
        attempt: Option<u32>,
        stream: LogStream,
    ) -> Result<Option<(u32, LogRef)>, Error> {
        let (digest_col, size_col) = match stream {
            LogStream::Stdout => ("stdout_digest", "stdout_size"),
            LogStream::Stderr => ("stderr_digest", "stderr_size"),
        };
        let sql = format!(
            "SELECT attempt, {digest_col} AS digest, {size_col} AS size FROM attempts \
             WHERE job_id = $1 AND seq = $2 {} ORDER BY attempt DESC LIMIT 1",
            if attempt.is_some() {
                "AND attempt = $3"
            } else {
                ""
            }
        );
        let mut query = sqlx::query(&sql).bind(job_id).bind(seq);
        if let Some(a) = attempt {
            query = query.bind(a as i64);
        }
        let row = query.fetch_optional(&self.read).await?;
        row.map(|row| {
            Ok((
                row.try_get::<i64, _>("attempt")? as u32,
                LogRef {
                    digest: parse_digest(&row, "digest")?,
                    size: row.try_get::<i64, _>("size")? as u64,
                },
            ))
        })
        .transpose()
    }

    /// Every output of a job: the merge step's as the job's own, then each task's.
    pub(crate) async fn outputs(&self, job: &JobRecord) -> Result<Vec<Output>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTPUT_COLUMNS} \
             FROM outputs o JOIN tasks t ON t.job_id = o.job_id AND t.seq = o.seq \
             WHERE o.job_id = $1 ORDER BY CASE WHEN t.kind = 'merge' THEN 0 ELSE 1 END, o.seq, o.path"
        ))
        .bind(&job.id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(output_from_row).collect()
    }

    /// One output of a job: the merge's (a job output) when `task` is
    /// `None`, else the named task's; found by its keys, not by a scan.
    pub(crate) async fn output(
        &self,
        job: &JobRecord,
        task: Option<&str>,
        path: &str,
    ) -> Result<Option<Output>, Error> {
        let which = match task {
            None => "t.kind = 'merge'",
            Some(_) => "t.name = $3 AND t.kind <> 'merge'",
        };
        let sql = format!(
            "SELECT {OUTPUT_COLUMNS} \
             FROM tasks t JOIN outputs o ON o.job_id = t.job_id AND o.seq = t.seq \
             WHERE t.job_id = $1 AND o.path = $2 AND {which}"
        );
        let mut query = sqlx::query(&sql).bind(&job.id).bind(path);
        if let Some(name) = task {
            query = query.bind(name);
        }
        let row = query.fetch_optional(&self.read).await?;
        row.as_ref().map(output_from_row).transpose()
    }

    /// The current state of some tasks of one job (read-only view).
    pub(crate) async fn current_tasks(
        &self,
        job_id: &str,
        seqs: &[i64],
    ) -> Result<Vec<CurrentTask>, Error> {
        let mut conn = self.read.acquire().await?;
        select_current_tasks(&mut conn, self.dialect, job_id, seqs).await
    }

    /// The outputs of the tasks that task `seq` depends on, as files under
    /// `/inputs/<dependency>/`.
    pub(crate) async fn dependency_outputs(
        &self,
        job_id: &str,
        seq: i64,
    ) -> Result<Vec<InputFile>, Error> {
        let rows = sqlx::query(
            "SELECT t.name, o.path, o.digest, o.size FROM task_deps d \
             JOIN tasks t ON t.job_id = d.job_id AND t.seq = d.dep_seq \
             JOIN outputs o ON o.job_id = d.job_id AND o.seq = d.dep_seq \
             WHERE d.job_id = $1 AND d.seq = $2 ORDER BY t.name, o.path",
        )
        .bind(job_id)
        .bind(seq)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let path: String = row.try_get("path")?;
                Ok(InputFile {
                    path: format!("{name}/{path}"),
                    digest: required_digest(row, "digest")?,
                    size: row.try_get::<i64, _>("size")? as u64,
                })
            })
            .collect()
    }

    /// Every task of a job with its outputs, for the merge step.
    pub(crate) async fn task_results(&self, job_id: &str) -> Result<Vec<TaskResultRef>, Error> {
        let rows = sqlx::query(
            "SELECT t.seq, t.name, t.parameters, o.path, o.digest, o.size FROM tasks t \
             LEFT JOIN outputs o ON o.job_id = t.job_id AND o.seq = t.seq \
             WHERE t.job_id = $1 AND t.kind = 'process' ORDER BY t.seq, o.path",
        )
        .bind(job_id)
        .fetch_all(&self.read)
        .await?;
        let mut results: Vec<TaskResultRef> = Vec::new();
        let mut last_seq = None;
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            if last_seq != Some(seq) {
                last_seq = Some(seq);
                results.push(TaskResultRef {
                    name: row.try_get("name")?,
                    parameters: row.try_get("parameters")?,
                    outputs: Vec::new(),
                });
            }
            if let Some(path) = row.try_get::<Option<String>, _>("path")? {
                let current = results.last_mut().expect("pushed above");
                current.outputs.push(InputFile {
                    path,
                    digest: required_digest(row, "digest")?,
                    size: row.try_get::<i64, _>("size")? as u64,
                });
            }
        }
        Ok(results)
    }

    /// A job's process tasks by state, counted from the task rows (the
    /// counters on the job must always equal this).
    #[cfg(test)]
    pub(crate) async fn recount(&self, job_id: &str) -> Result<super::tx::TaskCounts, Error> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM tasks WHERE job_id = $1 AND kind = 'process' \
             GROUP BY state",
        )
        .bind(job_id)
        .fetch_all(&self.read)
        .await?;
        let mut counts = super::tx::TaskCounts::default();
        for row in rows {
            let n = row.try_get::<i64, _>("n")? as u64;
            match parse_column::<TaskState>(&row, "state")? {
                TaskState::Blocked => counts.blocked = n,
                TaskState::Queued => counts.queued = n,
                TaskState::Running => counts.running = n,
                TaskState::Succeeded => counts.succeeded = n,
                TaskState::Failed => counts.failed = n,
                TaskState::Cancelled => counts.cancelled = n,
            }
        }
        Ok(counts)
    }
}

/// What an output query selects, for [`output_from_row`].
const OUTPUT_COLUMNS: &str = "t.name, t.kind, o.path, o.digest, o.size, o.kind AS output_kind";

/// An output from a row of [`OUTPUT_COLUMNS`].
fn output_from_row(row: &AnyRow) -> Result<Output, Error> {
    let kind: TaskKind = parse_column(row, "kind")?;
    Ok(Output {
        task: (kind != TaskKind::Merge)
            .then(|| row.try_get("name"))
            .transpose()?,
        path: row.try_get("path")?,
        sha256: required_digest(row, "digest")?,
        size: row.try_get::<i64, _>("size")? as u64,
        kind: parse_column(row, "output_kind")?,
    })
}
