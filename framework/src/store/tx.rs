//! Writes, always inside a transaction: the transaction itself, the bulk
//! statement helpers, files, application versions and jobs (tasks are in
//! `tasks`).

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::Dialect;
use super::parse_column;
use crate::digest::Digest;
use crate::error::Error;
use crate::model::{Failure, JobState, TaskState};

/// A job's tasks (split and merge steps excluded) by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskCounts {
    pub blocked: u64,
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// A change to a job's [`TaskCounts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CountDelta {
    pub blocked: i64,
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
}

impl CountDelta {
    /// `n` tasks moved from state `from` to state `to`.
    pub(crate) fn moved(from: TaskState, to: TaskState, n: i64) -> Self {
        let mut d = Self::default();
        *d.slot(from) -= n;
        *d.slot(to) += n;
        d
    }

    pub(super) fn slot(&mut self, state: TaskState) -> &mut i64 {
        match state {
            TaskState::Blocked => &mut self.blocked,
            TaskState::Queued => &mut self.queued,
            TaskState::Running => &mut self.running,
            TaskState::Succeeded => &mut self.succeeded,
            TaskState::Failed => &mut self.failed,
            TaskState::Cancelled => &mut self.cancelled,
        }
    }

    /// Adds another change to this one.
    pub(crate) fn add(&mut self, other: &Self) {
        self.blocked += other.blocked;
        self.queued += other.queued;
        self.running += other.running;
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.cancelled += other.cancelled;
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A job row, as stored.
#[derive(Clone, Debug)]
pub(crate) struct JobRecord {
    pub id: String,
    pub account: String,
    pub app: String,
    pub app_version: u32,
    pub pool: String,
    pub state: JobState,
    pub parameters: String,
    pub inputs: String,
    pub max_task_retries: u32,
    pub task_timeout_ms: u64,
    pub merge: bool,
    pub has_deps: bool,
    pub task_count: u64,
    pub counts: TaskCounts,
    pub failure: Option<Failure>,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

impl JobRecord {
    pub(super) fn from_row(row: &AnyRow) -> Result<Self, Error> {
        let count = |c: &str| row.try_get::<i64, _>(c).map(|n| n.max(0) as u64);
        Ok(Self {
            id: row.try_get("id")?,
            account: row.try_get("account")?,
            app: row.try_get("app")?,
            app_version: row.try_get::<i64, _>("app_version")? as u32,
            pool: row.try_get("pool")?,
            state: parse_column(row, "state")?,
            parameters: row.try_get("parameters")?,
            inputs: row.try_get("inputs")?,
            max_task_retries: row.try_get::<i64, _>("max_task_retries")? as u32,
            task_timeout_ms: row.try_get::<i64, _>("task_timeout_ms")? as u64,
            merge: row.try_get::<i64, _>("merge")? != 0,
            has_deps: row.try_get::<i64, _>("has_deps")? != 0,
            task_count: row.try_get::<i64, _>("task_count")? as u64,
            counts: TaskCounts {
                blocked: count("tasks_blocked")?,
                queued: count("tasks_queued")?,
                running: count("tasks_running")?,
                succeeded: count("tasks_succeeded")?,
                failed: count("tasks_failed")?,
                cancelled: count("tasks_cancelled")?,
            },
            failure: super::parse_failure(row)?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }

    /// Whether `seq` is this job's split step.
    pub(crate) fn is_split(&self, seq: i64) -> bool {
        seq == 0
    }
}

/// The columns of `jobs` that [`JobRecord::from_row`] reads.
pub(super) const JOB_COLUMNS: &str = "id, account, app, app_version, pool, state, parameters, \
     inputs, max_task_retries, task_timeout_ms, merge, has_deps, task_count, tasks_blocked, \
     tasks_queued, tasks_running, tasks_succeeded, tasks_failed, tasks_cancelled, failure_kind, \
     failure, created_at, finished_at";

/// The columns `insert_job` writes.
const JOB_INSERT_COLUMNS: &str = "id, account, app, app_version, pool, state, parameters, \
     inputs, max_task_retries, task_timeout_ms, created_at";

pub(super) fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

/// Most rows one multi-row `VALUES` statement inserts.
const VALUES_ROWS: usize = 256;

/// `rows` cut into pieces for multi-row `VALUES` statements, each a power of
/// two of at most [`VALUES_ROWS`] rows: a handful of distinct statements,
/// each prepared once, however many rows come. Rows inserted this way are
/// bound as parameters, which both SQLite and PostgreSQL read far faster
/// than fields picked out of a JSON parameter one by one.
fn values_pieces<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let n = VALUES_ROWS.min(1 << rows.len().ilog2());
        let (piece, rest) = rows.split_at(n);
        rows = rest;
        Some(piece)
    })
}

/// A value of a row to insert.
pub(super) enum Value<'a> {
    Text(Option<&'a str>),
    Owned(Option<String>),
    Int(i64),
}

/// A row to insert: each column's name with its value, so that names and
/// values cannot drift apart.
pub(super) type InsertRow<'a, const N: usize> = [(&'static str, Value<'a>); N];

/// Inserts `rows` (every one naming the same columns in the same order)
/// into `table` with multi-row `VALUES` statements; `tail` follows the
/// values (an `ON CONFLICT` clause, say).
pub(super) async fn insert_rows<const N: usize>(
    conn: &mut AnyConnection,
    dialect: Dialect,
    table: &str,
    tail: &str,
    rows: &[InsertRow<'_, N>],
) -> Result<(), Error> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let columns: Vec<&str> = first.iter().map(|(name, _)| *name).collect();
    let columns = columns.join(", ");
    for piece in values_pieces(rows) {
        let sql = format!(
            "INSERT INTO {table} ({columns}) VALUES {} {tail}",
            dialect.values_list(piece.len(), N)
        );
        let mut query = sqlx::query(&sql);
        for (_, value) in piece.iter().flatten() {
            query = match value {
                Value::Text(text) => query.bind(*text),
                Value::Owned(text) => query.bind(text.as_deref()),
                Value::Int(n) => query.bind(*n),
            };
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A write transaction. Dropping it without [`Tx::commit`] rolls back.
pub(crate) struct Tx {
    pub(super) tx: Transaction<'static, Any>,
    pub(super) dialect: Dialect,
}

impl Tx {
    pub(super) fn new(tx: Transaction<'static, Any>, dialect: Dialect) -> Self {
        Self { tx, dialect }
    }

    /// Makes every change durable.
    pub(crate) async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Records that `account` owns a stored file (idempotent).
    pub(crate) async fn record_file(
        &mut self,
        account: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO files (account, digest, size, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (account, digest) DO NOTHING",
        )
        .bind(account)
        .bind(digest.to_hex())
        .bind(size as i64)
        .bind(crate::model::now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Adds the next version of an application, creating the application if
    /// needed; returns the new version number.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn insert_app_version(
        &mut self,
        account: &str,
        app: &str,
        image: Option<(Digest, u64)>,
        assembly: (Digest, u64),
        splitter: &Digest,
        processor: &Digest,
        parameters_json: &str,
    ) -> Result<u32, Error> {
        let now = crate::model::now_ms();
        sqlx::query(
            "INSERT INTO apps (account, name, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (account, name) DO NOTHING",
        )
        .bind(account)
        .bind(app)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        let row = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) AS latest FROM app_versions \
             WHERE account = $1 AND app = $2",
        )
        .bind(account)
        .bind(app)
        .fetch_one(&mut *self.tx)
        .await?;
        let version = row.try_get::<i64, _>("latest")? + 1;
        sqlx::query(
            "INSERT INTO app_versions (account, app, version, created_at, image_digest, \
             image_size, assembly_digest, assembly_size, splitter_digest, processor_digest, \
             parameters) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(account)
        .bind(app)
        .bind(version)
        .bind(now)
        .bind(image.map(|(d, _)| d.to_hex()))
        .bind(image.map_or(0, |(_, s)| s as i64))
        .bind(assembly.0.to_hex())
        .bind(assembly.1 as i64)
        .bind(splitter.to_hex())
        .bind(processor.to_hex())
        .bind(parameters_json)
        .execute(&mut *self.tx)
        .await?;
        Ok(version as u32)
    }

    /// Inserts a new job (its task counts and split results start empty).
    pub(crate) async fn insert_job(&mut self, job: &JobRecord) -> Result<(), Error> {
        sqlx::query(&format!(
            "INSERT INTO jobs ({JOB_INSERT_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&job.id)
        .bind(&job.account)
        .bind(&job.app)
        .bind(job.app_version as i64)
        .bind(&job.pool)
        .bind(job.state.as_str())
        .bind(&job.parameters)
        .bind(&job.inputs)
        .bind(job.max_task_retries as i64)
        .bind(job.task_timeout_ms as i64)
        .bind(job.created_at)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Reads a job inside the transaction.
    pub(crate) async fn job(&mut self, id: &str) -> Result<Option<JobRecord>, Error> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(JobRecord::from_row).transpose()
    }

    /// Moves a job to `to` only if it is in one of the states `from` (so
    /// that two writers cannot both decide its next state); returns whether
    /// it did.
    pub(crate) async fn move_job_state(
        &mut self,
        job_id: &str,
        from: &[JobState],
        to: JobState,
        failure: Option<&Failure>,
        finished_at: Option<i64>,
    ) -> Result<bool, Error> {
        let states: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let sql = format!(
            "UPDATE jobs SET state = $2, failure_kind = $3, failure = $4, finished_at = $5 \
             WHERE id = $1 AND state IN (SELECT value FROM {})",
            self.dialect.json_texts(6)
        );
        let moved = sqlx::query(&sql)
            .bind(job_id)
            .bind(to.as_str())
            .bind(failure.map(|f| f.kind.as_str()))
            .bind(failure.map(|f| f.message.as_str()))
            .bind(finished_at)
            .bind(json(&states))
            .execute(&mut *self.tx)
            .await?
            .rows_affected();
        Ok(moved == 1)
    }

    /// Records the outcome of a job's split.
    pub(crate) async fn set_job_split(
        &mut self,
        job_id: &str,
        task_count: u64,
        merge: bool,
        has_deps: bool,
    ) -> Result<(), Error> {
        sqlx::query("UPDATE jobs SET task_count = $2, merge = $3, has_deps = $4 WHERE id = $1")
            .bind(job_id)
            .bind(task_count as i64)
            .bind(merge as i64)
            .bind(has_deps as i64)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Applies a change to a job's task counts.
    pub(crate) async fn adjust_counts(
        &mut self,
        job_id: &str,
        d: &CountDelta,
    ) -> Result<(), Error> {
        if d.is_zero() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE jobs SET tasks_blocked = tasks_blocked + $2, tasks_queued = tasks_queued + $3, \
             tasks_running = tasks_running + $4, tasks_succeeded = tasks_succeeded + $5, \
             tasks_failed = tasks_failed + $6, tasks_cancelled = tasks_cancelled + $7 WHERE id = $1",
        )
        .bind(job_id)
        .bind(d.blocked)
        .bind(d.queued)
        .bind(d.running)
        .bind(d.succeeded)
        .bind(d.failed)
        .bind(d.cancelled)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Counts a job's tasks afresh (after changes too varied to track).
    pub(crate) async fn recount(&mut self, job_id: &str) -> Result<(), Error> {
        let count = |state: &str| {
            format!(
                "(SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND kind = 'process' AND state = '{state}')"
            )
        };
        sqlx::query(&format!(
            "UPDATE jobs SET tasks_blocked = {}, tasks_queued = {}, tasks_running = {}, \
             tasks_succeeded = {}, tasks_failed = {}, tasks_cancelled = {} WHERE id = $1",
            count("blocked"),
            count("queued"),
            count("running"),
            count("succeeded"),
            count("failed"),
            count("cancelled"),
        ))
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_stores;

    #[tokio::test]
    async fn a_job_moves_state_only_from_the_states_given() {
        for (_dir, store) in temp_stores().await {
            let mut tx = store.begin().await.unwrap();
            let job = crate::store::tests::job_record("j", JobState::Running);
            tx.insert_job(&job).await.unwrap();
            let unfinished = JobState::UNFINISHED;
            assert!(
                tx.move_job_state("j", &unfinished, JobState::Completed, None, Some(5))
                    .await
                    .unwrap()
            );
            // A cancel that comes after the job completed changes nothing.
            assert!(
                !tx.move_job_state("j", &unfinished, JobState::Cancelled, None, Some(6))
                    .await
                    .unwrap()
            );
            assert!(
                !tx.move_job_state("nope", &unfinished, JobState::Cancelled, None, None)
                    .await
                    .unwrap()
            );
            tx.commit().await.unwrap();
            let now = store.job(None, "j").await.unwrap().unwrap();
            assert_eq!((now.state, now.finished_at), (JobState::Completed, Some(5)));
        }
    }
}
