//! Tasks, their attempts and outputs: the rows a job's work is made of,
//! and every write to them (inside a [`Tx`]).

use std::collections::HashMap;

use sqlx::AnyConnection;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::tx::{CountDelta, InsertRow, Value, insert_rows, json};
use super::{Dialect, LogRef, Tx, parse_column};
use crate::error::Error;
use crate::model::{Failure, OutputKind, TaskKind, TaskState};
use crate::protocol::{OutputFile, Usage};

/// A task to insert.
#[derive(Clone, Debug)]
pub(crate) struct NewTask {
    pub seq: i64,
    pub name: String,
    pub kind: TaskKind,
    pub state: TaskState,
    pub parameters: String,
    pub inputs: String,
    pub depends_on: String,
    pub env: String,
    pub deps_remaining: i64,
}

impl NewTask {
    /// A job's split or merge step, queued.
    pub(crate) fn step(seq: i64, name: &str, kind: TaskKind) -> Self {
        Self {
            seq,
            name: name.into(),
            kind,
            state: TaskState::Queued,
            parameters: "{}".into(),
            inputs: "[]".into(),
            depends_on: "[]".into(),
            env: "[]".into(),
            deps_remaining: 0,
        }
    }
}

/// A task just leased to a node.
#[derive(Clone, Debug)]
pub(crate) struct LeasedTask {
    pub job_id: String,
    pub seq: i64,
    pub name: String,
    pub kind: TaskKind,
    pub attempts: u32,
    pub parameters: String,
    pub inputs: String,
    pub env: String,
}

/// What the commit path needs to know about a task.
#[derive(Clone, Debug)]
pub(crate) struct CurrentTask {
    pub seq: i64,
    pub kind: TaskKind,
    pub state: TaskState,
    pub attempts: u32,
    pub failures: u32,
    /// The node its current attempt was leased to.
    pub node: Option<String>,
}

impl CurrentTask {
    /// Whether `attempt` on `node` is the task's current lease.
    pub(crate) fn is_leased_to(&self, node: &str, attempt: u32) -> bool {
        self.attempts == attempt && self.node.as_deref() == Some(node)
    }
}

/// A finished attempt to record.
#[derive(Clone, Debug)]
pub(crate) struct AttemptRecord<'a> {
    pub job_id: &'a str,
    pub seq: i64,
    pub attempt: u32,
    pub node: &'a str,
    pub failure: Option<&'a Failure>,
    pub started_at: i64,
    pub finished_at: i64,
    pub stdout: LogRef,
    pub stderr: LogRef,
    pub usage: Usage,
}

/// Most rows sent in one JSON array parameter.
const JSON_CHUNK: usize = 10_000;

/// Reads the commit-relevant state of some tasks of one job.
pub(super) async fn select_current_tasks(
    conn: &mut AnyConnection,
    dialect: Dialect,
    job_id: &str,
    seqs: &[i64],
) -> Result<Vec<CurrentTask>, Error> {
    let sql = format!(
        "SELECT seq, kind, state, attempts, failures, node FROM tasks \
         WHERE job_id = $1 AND seq IN (SELECT CAST(value AS BIGINT) FROM {})",
        dialect.json_rows(2)
    );
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(JSON_CHUNK) {
        let rows = sqlx::query(&sql)
            .bind(job_id)
            .bind(json(chunk))
            .fetch_all(&mut *conn)
            .await?;
        for row in rows {
            out.push(CurrentTask {
                seq: row.try_get("seq")?,
                kind: parse_column(&row, "kind")?,
                state: parse_column(&row, "state")?,
                attempts: row.try_get::<i64, _>("attempts")? as u32,
                failures: row.try_get::<i64, _>("failures")? as u32,
                node: row.try_get("node")?,
            });
        }
    }
    Ok(out)
}

/// What leasing sets on a task: running on the node, one more attempt.
const LEASE_SET: &str = "state = 'running', node = $2, attempts = attempts + 1, \
     started_at = $3, finished_at = NULL, progress = 0";

/// What leasing returns of each leased task.
const LEASE_RETURNING: &str = "job_id, seq, name, kind, attempts, parameters, inputs, env";

impl Tx {
    /// Inserts tasks, and counts the job's process tasks among them.
    pub(crate) async fn insert_tasks(
        &mut self,
        job_id: &str,
        pool: &str,
        tasks: &[NewTask],
    ) -> Result<(), Error> {
        let mut counts = CountDelta::default();
        let rows: Vec<InsertRow<'_, 11>> = tasks
            .iter()
            .map(|t| {
                if t.kind == TaskKind::Process {
                    *counts.slot(t.state) += 1;
                }
                [
                    ("job_id", Value::Text(Some(job_id))),
                    ("pool", Value::Text(Some(pool))),
                    ("seq", Value::Int(t.seq)),
                    ("name", Value::Text(Some(&t.name))),
                    ("kind", Value::Text(Some(t.kind.as_str()))),
                    ("state", Value::Text(Some(t.state.as_str()))),
                    ("parameters", Value::Text(Some(&t.parameters))),
                    ("inputs", Value::Text(Some(&t.inputs))),
                    ("depends_on", Value::Text(Some(&t.depends_on))),
                    ("env", Value::Text(Some(&t.env))),
                    ("deps_remaining", Value::Int(t.deps_remaining)),
                ]
            })
            .collect();
        insert_rows(&mut self.tx, self.dialect, "tasks", "", &rows).await?;
        self.adjust_counts(job_id, &counts).await
    }

    /// Records that task `seq` depends on task `dep_seq`, for each pair.
    pub(crate) async fn insert_deps(
        &mut self,
        job_id: &str,
        deps: &[(i64, i64)],
    ) -> Result<(), Error> {
        let sql = format!(
            "INSERT INTO task_deps (job_id, dep_seq, seq) \
             SELECT $1, CAST(value ->> 0 AS BIGINT), CAST(value ->> 1 AS BIGINT) FROM {}",
            self.dialect.json_rows(2)
        );
        for chunk in deps.chunks(JSON_CHUNK) {
            sqlx::query(&sql)
                .bind(job_id)
                .bind(json(chunk))
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(())
    }

    /// Leases up to `max` queued tasks of `pool` to `node`, oldest job first:
    /// they become running, their attempt counter (the fencing token) goes up.
    pub(crate) async fn lease(
        &mut self,
        pool: &str,
        node: &str,
        max: usize,
        now: i64,
    ) -> Result<Vec<LeasedTask>, Error> {
        let rooms = self.running_task_rooms().await?;
        let rows = if rooms.is_empty() {
            // The rows are picked once (a materialized CTE): PostgreSQL
            // may run a subquery under `IN` more than once, and with `SKIP
            // LOCKED` each run may pick other rows.
            sqlx::query(&format!(
                "WITH picked AS MATERIALIZED (SELECT job_id, seq FROM tasks \
                     WHERE pool = $1 AND state = 'queued' ORDER BY pool, job_id, seq LIMIT $4{}) \
                 UPDATE tasks SET {LEASE_SET} \
                 WHERE state = 'queued' AND (job_id, seq) IN (SELECT job_id, seq FROM picked) \
                 RETURNING {LEASE_RETURNING}",
                self.dialect.skip_locked()
            ))
            .bind(pool)
            .bind(node)
            .bind(now)
            .bind(max as i64)
            .fetch_all(&mut *self.tx)
            .await?
        } else {
            self.lease_within_quotas(pool, node, max, now, rooms)
                .await?
        };
        let mut leased = rows
            .iter()
            .map(|row| {
                Ok(LeasedTask {
                    job_id: row.try_get("job_id")?,
                    seq: row.try_get("seq")?,
                    name: row.try_get("name")?,
                    kind: parse_column(row, "kind")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    parameters: row.try_get("parameters")?,
                    inputs: row.try_get("inputs")?,
                    env: row.try_get("env")?,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // RETURNING gives no order guarantee; keep the queue order.
        leased.sort_by(|a, b| (&a.job_id, a.seq).cmp(&(&b.job_id, b.seq)));
        let mut per_job: Vec<(&str, i64)> = Vec::new();
        for task in leased.iter().filter(|t| t.kind == TaskKind::Process) {
            match per_job.last_mut() {
                Some((job, n)) if *job == task.job_id => *n += 1,
                _ => per_job.push((&task.job_id, 1)),
            }
        }
        for (job, n) in per_job {
            let delta = CountDelta::moved(TaskState::Queued, TaskState::Running, n);
            sqlx::query(
                "UPDATE jobs SET tasks_queued = tasks_queued + $2, tasks_running = tasks_running + $3 \
                 WHERE id = $1",
            )
            .bind(job)
            .bind(delta.queued)
            .bind(delta.running)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(leased)
    }

    /// Whether some account has a `max_running_tasks` quota.
    pub(crate) async fn has_running_task_quotas(&mut self) -> Result<bool, Error> {
        let row =
            sqlx::query("SELECT name FROM accounts WHERE max_running_tasks IS NOT NULL LIMIT 1")
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.is_some())
    }

    /// For every account with a `max_running_tasks` quota, how many more
    /// of its tasks may run (zero or less: none).
    async fn running_task_rooms(&mut self) -> Result<HashMap<String, i64>, Error> {
        let rows = sqlx::query(
            "SELECT a.name AS account, \
             a.max_running_tasks - CAST(COALESCE(SUM(j.tasks_running), 0) AS BIGINT) AS room \
             FROM accounts a LEFT JOIN jobs j ON j.account = a.name AND j.finished_at IS NULL \
             WHERE a.max_running_tasks IS NOT NULL GROUP BY a.name, a.max_running_tasks",
        )
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("account")?, r.try_get("room")?)))
            .collect()
    }

    /// [`Tx::lease`] when some accounts have a running-task quota: their
    /// tasks are leased only while they have room (split and merge steps
    /// always run), so that at most `max_running_tasks` of an account's
    /// tasks run at once.
    async fn lease_within_quotas(
        &mut self,
        pool: &str,
        node: &str,
        max: usize,
        now: i64,
        mut rooms: HashMap<String, i64>,
    ) -> Result<Vec<AnyRow>, Error> {
        let full: Vec<&String> = rooms
            .iter()
            .filter(|(_, room)| **room <= 0)
            .map(|(account, _)| account)
            .collect();
        let sql = format!(
            "SELECT t.job_id, t.seq, t.kind, j.account FROM tasks t JOIN jobs j ON j.id = t.job_id \
             WHERE t.pool = $1 AND t.state = 'queued' \
             AND (t.kind <> 'process' OR j.account NOT IN (SELECT value FROM {})) \
             ORDER BY t.pool, t.job_id, t.seq LIMIT $3{}",
            self.dialect.json_texts(2),
            self.dialect.skip_locked_of("t")
        );
        let candidates = sqlx::query(&sql)
            .bind(pool)
            .bind(json(&full))
            .bind(max as i64)
            .fetch_all(&mut *self.tx)
            .await?;
        let mut chosen: Vec<(String, i64)> = Vec::with_capacity(candidates.len());
        for row in &candidates {
            let kind: TaskKind = parse_column(row, "kind")?;
            let account: String = row.try_get("account")?;
            if kind == TaskKind::Process
                && let Some(room) = rooms.get_mut(&account)
            {
                if *room <= 0 {
                    continue;
                }
                *room -= 1;
            }
            chosen.push((row.try_get("job_id")?, row.try_get("seq")?));
        }
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        // Still queued: another writer may have leased (or cancelled) a
        // candidate since it was read.
        let sql = format!(
            "UPDATE tasks SET {LEASE_SET} \
             WHERE state = 'queued' \
             AND (job_id, seq) IN (SELECT value ->> 0, CAST(value ->> 1 AS BIGINT) FROM {}) \
             RETURNING {LEASE_RETURNING}",
            self.dialect.json_rows(4)
        );
        Ok(sqlx::query(&sql)
            .bind(pool)
            .bind(node)
            .bind(now)
            .bind(json(&chosen))
            .fetch_all(&mut *self.tx)
            .await?)
    }

    /// The current state of some tasks of one job.
    pub(crate) async fn current_tasks(
        &mut self,
        job_id: &str,
        seqs: &[i64],
    ) -> Result<Vec<CurrentTask>, Error> {
        select_current_tasks(&mut self.tx, self.dialect, job_id, seqs).await
    }

    /// Marks running tasks as succeeded, but only those whose current
    /// attempt is the given one and is leased to `node` (fencing); returns
    /// the tasks it changed.
    pub(crate) async fn succeed(
        &mut self,
        job_id: &str,
        node: &str,
        attempts: &[(i64, u32)],
        now: i64,
    ) -> Result<Vec<(i64, TaskKind)>, Error> {
        let sql = format!(
            "UPDATE tasks SET state = 'succeeded', finished_at = $2, progress = 1, \
             failure_kind = NULL, failure = NULL \
             WHERE job_id = $1 AND state = 'running' AND node = $3 AND (seq, attempts) IN \
             (SELECT CAST(value ->> 0 AS BIGINT), CAST(value ->> 1 AS BIGINT) FROM {}) \
             RETURNING seq, kind",
            self.dialect.json_rows(4)
        );
        let mut done = Vec::with_capacity(attempts.len());
        for chunk in attempts.chunks(JSON_CHUNK) {
            let rows = sqlx::query(&sql)
                .bind(job_id)
                .bind(now)
                .bind(node)
                .bind(json(chunk))
                .fetch_all(&mut *self.tx)
                .await?;
            for row in rows {
                done.push((row.try_get("seq")?, parse_column(&row, "kind")?));
            }
        }
        let processed = done.iter().filter(|(_, k)| *k == TaskKind::Process).count() as i64;
        self.adjust_counts(
            job_id,
            &CountDelta::moved(TaskState::Running, TaskState::Succeeded, processed),
        )
        .await?;
        Ok(done)
    }

    /// Records finished attempts; an attempt recorded before is left as it is.
    pub(crate) async fn insert_attempts(
        &mut self,
        attempts: &[AttemptRecord<'_>],
    ) -> Result<(), Error> {
        let rows: Vec<InsertRow<'_, 18>> = attempts
            .iter()
            .map(|a| {
                let state = if a.failure.is_some() {
                    TaskState::Failed
                } else {
                    TaskState::Succeeded
                };
                [
                    ("job_id", Value::Text(Some(a.job_id))),
                    ("seq", Value::Int(a.seq)),
                    ("attempt", Value::Int(i64::from(a.attempt))),
                    ("node", Value::Text(Some(a.node))),
                    ("state", Value::Text(Some(state.as_str()))),
                    (
                        "failure_kind",
                        Value::Text(a.failure.map(|f| f.kind.as_str())),
                    ),
                    (
                        "failure",
                        Value::Text(a.failure.map(|f| f.message.as_str())),
                    ),
                    ("started_at", Value::Int(a.started_at)),
                    ("finished_at", Value::Int(a.finished_at)),
                    (
                        "stdout_digest",
                        Value::Owned(a.stdout.digest.map(|d| d.to_hex())),
                    ),
                    ("stdout_size", Value::Int(a.stdout.size as i64)),
                    (
                        "stderr_digest",
                        Value::Owned(a.stderr.digest.map(|d| d.to_hex())),
                    ),
                    ("stderr_size", Value::Int(a.stderr.size as i64)),
                    ("peak_memory", Value::Int(a.usage.peak_memory as i64)),
                    ("wall_us", Value::Int(a.usage.wall_us as i64)),
                    ("cpu_us", Value::Int(a.usage.cpu_us as i64)),
                    ("bytes_read", Value::Int(a.usage.bytes_read as i64)),
                    ("bytes_written", Value::Int(a.usage.bytes_written as i64)),
                ]
            })
            .collect();
        insert_rows(
            &mut self.tx,
            self.dialect,
            "attempts",
            "ON CONFLICT (job_id, seq, attempt) DO NOTHING",
            &rows,
        )
        .await
    }

    /// Which of the given attempts of a job `node` reported before (an
    /// attempt the scheduler recorded as having lost its node does not
    /// count).
    pub(crate) async fn recorded_attempts(
        &mut self,
        job_id: &str,
        node: &str,
        attempts: &[(i64, u32)],
    ) -> Result<Vec<(i64, u32)>, Error> {
        let sql = format!(
            "SELECT seq, attempt FROM attempts WHERE job_id = $1 AND node = $2 \
             AND (failure_kind IS NULL OR failure_kind <> 'node_lost') AND (seq, attempt) IN \
             (SELECT CAST(value ->> 0 AS BIGINT), CAST(value ->> 1 AS BIGINT) FROM {})",
            self.dialect.json_rows(3)
        );
        let mut found = Vec::new();
        for chunk in attempts.chunks(JSON_CHUNK) {
            let rows = sqlx::query(&sql)
                .bind(job_id)
                .bind(node)
                .bind(json(chunk))
                .fetch_all(&mut *self.tx)
                .await?;
            for row in rows {
                found.push((
                    row.try_get("seq")?,
                    row.try_get::<i64, _>("attempt")? as u32,
                ));
            }
        }
        Ok(found)
    }

    /// Records output files of tasks.
    pub(crate) async fn insert_outputs(
        &mut self,
        job_id: &str,
        outputs: &[(i64, &OutputFile)],
    ) -> Result<(), Error> {
        let rows: Vec<InsertRow<'_, 6>> = outputs
            .iter()
            .map(|(seq, f)| {
                [
                    ("job_id", Value::Text(Some(job_id))),
                    ("seq", Value::Int(*seq)),
                    ("path", Value::Text(Some(&f.path))),
                    ("digest", Value::Owned(Some(f.file.digest.to_hex()))),
                    ("size", Value::Int(f.file.size as i64)),
                    (
                        "kind",
                        Value::Text(Some(OutputKind::of_path(&f.path).as_str())),
                    ),
                ]
            })
            .collect();
        insert_rows(
            &mut self.tx,
            self.dialect,
            "outputs",
            "ON CONFLICT (job_id, seq, path) DO NOTHING",
            &rows,
        )
        .await
    }

    /// Ends a running task's attempt with a failure: back to the queue when
    /// `retry`, failed for good otherwise. Fenced like [`Tx::succeed`]: only
    /// if the task still runs the attempt `task` read, on the same node;
    /// returns whether it did (and so whether the failure counts).
    pub(crate) async fn fail_attempt(
        &mut self,
        job_id: &str,
        task: &CurrentTask,
        failure: &Failure,
        retry: bool,
        now: i64,
    ) -> Result<bool, Error> {
        let (state, finished) = if retry {
            (TaskState::Queued, None)
        } else {
            (TaskState::Failed, Some(now))
        };
        let changed = sqlx::query(
            "UPDATE tasks SET state = $3, failures = failures + 1, failure_kind = $4, \
             failure = $5, finished_at = $6, node = CASE WHEN $3 = 'queued' THEN NULL ELSE node END \
             WHERE job_id = $1 AND seq = $2 AND state = 'running' AND attempts = $7 AND node = $8",
        )
        .bind(job_id)
        .bind(task.seq)
        .bind(state.as_str())
        .bind(failure.kind.as_str())
        .bind(failure.message.as_str())
        .bind(finished)
        .bind(i64::from(task.attempts))
        .bind(task.node.as_deref())
        .execute(&mut *self.tx)
        .await?
        .rows_affected()
            == 1;
        if changed && task.kind == TaskKind::Process {
            self.adjust_counts(job_id, &CountDelta::moved(TaskState::Running, state, 1))
                .await?;
        }
        Ok(changed)
    }

    /// Counts down the dependencies of the tasks that wait on `succeeded`
    /// and queues those with none left; returns how many were queued.
    pub(crate) async fn release_dependents(
        &mut self,
        job_id: &str,
        succeeded: &[i64],
    ) -> Result<u64, Error> {
        // SET expressions see the row as it was, so the state test uses the
        // count before this decrement.
        let sql = format!(
            "UPDATE tasks SET \
                 deps_remaining = deps_remaining - (SELECT COUNT(*) FROM task_deps d \
                     WHERE d.job_id = tasks.job_id AND d.seq = tasks.seq \
                     AND d.dep_seq IN (SELECT CAST(value AS BIGINT) FROM {rows})), \
                 state = CASE WHEN state = 'blocked' AND deps_remaining - (SELECT COUNT(*) \
                     FROM task_deps d WHERE d.job_id = tasks.job_id AND d.seq = tasks.seq \
                     AND d.dep_seq IN (SELECT CAST(value AS BIGINT) FROM {rows})) <= 0 \
                     THEN 'queued' ELSE state END \
             WHERE job_id = $1 AND seq IN (SELECT seq FROM task_deps WHERE job_id = $1 \
                 AND dep_seq IN (SELECT CAST(value AS BIGINT) FROM {rows})) \
             RETURNING state",
            rows = self.dialect.json_rows(2)
        );
        let mut queued = 0;
        for chunk in succeeded.chunks(JSON_CHUNK) {
            let rows = sqlx::query(&sql)
                .bind(job_id)
                .bind(json(chunk))
                .fetch_all(&mut *self.tx)
                .await?;
            for row in rows {
                if parse_column::<TaskState>(&row, "state")? == TaskState::Queued {
                    queued += 1;
                }
            }
        }
        self.adjust_counts(
            job_id,
            &CountDelta::moved(TaskState::Blocked, TaskState::Queued, queued),
        )
        .await?;
        Ok(queued as u64)
    }

    /// Inserts a job's merge step as queued (or queues it again).
    pub(crate) async fn insert_merge(
        &mut self,
        job_id: &str,
        pool: &str,
        merge: &NewTask,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO tasks (job_id, seq, name, kind, pool, state, parameters, inputs, \
             depends_on, env, deps_remaining) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0) \
             ON CONFLICT (job_id, seq) DO UPDATE SET state = $6, failures = 0, finished_at = NULL",
        )
        .bind(job_id)
        .bind(merge.seq)
        .bind(&merge.name)
        .bind(merge.kind.as_str())
        .bind(pool)
        .bind(merge.state.as_str())
        .bind(&merge.parameters)
        .bind(&merge.inputs)
        .bind(&merge.depends_on)
        .bind(&merge.env)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The first failed task of a job (by position) and its failure.
    pub(crate) async fn first_failed_task(
        &mut self,
        job_id: &str,
    ) -> Result<Option<(String, Failure)>, Error> {
        let row = sqlx::query(
            "SELECT name, failure_kind, failure FROM tasks \
             WHERE job_id = $1 AND kind = 'process' AND state = 'failed' ORDER BY seq LIMIT 1",
        )
        .bind(job_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let failure = super::parse_failure(&row)?.unwrap_or_else(|| {
            Failure::new(crate::model::FailureKind::Internal, "no reason recorded")
        });
        Ok(Some((row.try_get("name")?, failure)))
    }

    /// Stores running attempts' progress (only for the attempt still current).
    pub(crate) async fn set_progress(
        &mut self,
        progress: &[(&crate::protocol::AttemptKey, f32)],
    ) -> Result<(), Error> {
        for (key, fraction) in progress {
            sqlx::query(
                "UPDATE tasks SET progress = $4 WHERE job_id = $1 AND seq = $2 \
                 AND attempts = $3 AND state = 'running'",
            )
            .bind(&key.job_id)
            .bind(key.seq)
            .bind(key.attempt as i64)
            .bind(*fraction as f64)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    /// Cancels every unfinished task of a job; returns how many.
    pub(crate) async fn cancel_tasks(&mut self, job_id: &str, now: i64) -> Result<u64, Error> {
        let done = sqlx::query(
            "UPDATE tasks SET state = 'cancelled', finished_at = $2 \
             WHERE job_id = $1 AND state IN ('blocked', 'queued', 'running')",
        )
        .bind(job_id)
        .bind(now)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET tasks_cancelled = tasks_cancelled + tasks_blocked + tasks_queued \
             + tasks_running, tasks_blocked = 0, tasks_queued = 0, tasks_running = 0 WHERE id = $1",
        )
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives failed and cancelled tasks of a job a fresh set of retries:
    /// those still waiting on dependencies block again, the rest queue.
    pub(crate) async fn reprocess_tasks(&mut self, job_id: &str) -> Result<u64, Error> {
        let done = sqlx::query(
            "UPDATE tasks SET state = CASE WHEN deps_remaining > 0 THEN 'blocked' ELSE 'queued' END, \
             failures = 0, finished_at = NULL, node = NULL \
             WHERE job_id = $1 AND state IN ('failed', 'cancelled')",
        )
        .bind(job_id)
        .execute(&mut *self.tx)
        .await?;
        self.recount(job_id).await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_stores;

    fn task(seq: i64, name: &str, state: TaskState, deps: i64) -> NewTask {
        NewTask {
            seq,
            name: name.into(),
            kind: TaskKind::Process,
            state,
            parameters: "{}".into(),
            inputs: "[]".into(),
            depends_on: "[]".into(),
            env: "[]".into(),
            deps_remaining: deps,
        }
    }

    #[tokio::test]
    async fn lease_takes_oldest_queued_and_bumps_the_fencing_token() {
        for (_dir, store) in temp_stores().await {
            let mut tx = store.begin().await.unwrap();
            let tasks: Vec<_> = (1..=5)
                .map(|i| task(i, &format!("t{i}"), TaskState::Queued, 0))
                .collect();
            tx.insert_tasks("job-b", "p", &tasks).await.unwrap();
            tx.insert_tasks("job-a", "p", &tasks[..2]).await.unwrap();
            tx.insert_tasks("job-c", "other", &tasks[..2])
                .await
                .unwrap();
            let leased = tx.lease("p", "n1", 3, 1000).await.unwrap();
            let got: Vec<_> = leased.iter().map(|t| (t.job_id.as_str(), t.seq)).collect();
            assert_eq!(got, vec![("job-a", 1), ("job-a", 2), ("job-b", 1)]);
            assert!(leased.iter().all(|t| t.attempts == 1));
            let rest = tx.lease("p", "n2", 100, 1001).await.unwrap();
            assert_eq!(rest.len(), 4, "the four left in pool p");
            assert!(tx.lease("p", "n2", 100, 1002).await.unwrap().is_empty());
            // Losing the node puts its tasks back, and the next lease is attempt 2.
            let released = tx
                .release("n1", None, crate::store::Release::Returned)
                .await
                .unwrap();
            assert_eq!(released.requeued, 3);
            let again = tx.lease("p", "n3", 100, 1003).await.unwrap();
            assert_eq!(again.len(), 3);
            assert!(again.iter().all(|t| t.attempts == 2));
            tx.commit().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_failure_counts_only_for_the_attempt_and_node_still_running_the_task() {
        for (_dir, store) in temp_stores().await {
            let mut tx = store.begin().await.unwrap();
            tx.insert_tasks("j", "p", &[task(1, "a", TaskState::Queued, 0)])
                .await
                .unwrap();
            tx.lease("p", "n1", 1, 1000).await.unwrap();
            let first = tx.current_tasks("j", &[1]).await.unwrap().remove(0);
            assert_eq!((first.attempts, first.node.as_deref()), (1, Some("n1")));
            // The node is lost and the task runs again elsewhere, as attempt 2.
            tx.release("n1", None, crate::store::Release::Returned)
                .await
                .unwrap();
            tx.lease("p", "n2", 1, 1001).await.unwrap();
            let failure = Failure::new(crate::model::FailureKind::GuestError, "late");
            for stale in [
                first.clone(),
                CurrentTask {
                    node: Some("n1".into()),
                    attempts: 2,
                    ..first.clone()
                },
            ] {
                assert!(
                    !tx.fail_attempt("j", &stale, &failure, false, 1002)
                        .await
                        .unwrap()
                );
            }
            let now = tx.current_tasks("j", &[1]).await.unwrap().remove(0);
            assert_eq!(
                (now.state, now.attempts, now.failures, now.node.as_deref()),
                (TaskState::Running, 2, 0, Some("n2")),
                "a stale failure changed the task"
            );
            assert!(
                tx.fail_attempt("j", &now, &failure, true, 1003)
                    .await
                    .unwrap()
            );
            let requeued = tx.current_tasks("j", &[1]).await.unwrap().remove(0);
            assert_eq!(
                (requeued.state, requeued.failures, requeued.node),
                (TaskState::Queued, 1, None)
            );
            tx.commit().await.unwrap();
        }
    }

    #[tokio::test]
    async fn dependents_are_queued_when_all_their_dependencies_succeed() {
        for (_dir, store) in temp_stores().await {
            let mut tx = store.begin().await.unwrap();
            // c depends on a and b; d depends on c.
            tx.insert_tasks(
                "j",
                "p",
                &[
                    task(1, "a", TaskState::Queued, 0),
                    task(2, "b", TaskState::Queued, 0),
                    task(3, "c", TaskState::Blocked, 2),
                    task(4, "d", TaskState::Blocked, 1),
                ],
            )
            .await
            .unwrap();
            tx.insert_deps("j", &[(1, 3), (2, 3), (3, 4)])
                .await
                .unwrap();
            assert_eq!(tx.release_dependents("j", &[1]).await.unwrap(), 0);
            assert_eq!(tx.release_dependents("j", &[2]).await.unwrap(), 1);
            let states = tx.current_tasks("j", &[3, 4]).await.unwrap();
            assert_eq!(states[0].state, TaskState::Queued);
            assert_eq!(states[1].state, TaskState::Blocked);
            tx.commit().await.unwrap();
        }
    }
}
