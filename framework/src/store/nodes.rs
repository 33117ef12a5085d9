//! Nodes: their registrations and liveness, and the leases they hold.

use std::collections::BTreeMap;

use sqlx::Row;
use sqlx::any::AnyRow;

use super::tasks::AttemptRecord;
use super::tx::{CountDelta, json};
use super::{LogRef, Tx, parse_column};
use crate::error::Error;
use crate::model::{Failure, FailureKind, NodeState, TaskKind, TaskState};
use crate::protocol::{NodeRegistration, Usage};

/// A node as the scheduler needs to know it.
#[derive(Clone, Debug)]
pub(crate) struct NodeRow {
    pub pool: String,
    pub state: NodeState,
}

/// A task running on a node: which attempt, and since when it is leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    pub job_id: String,
    pub seq: i64,
    pub attempt: u32,
    pub leased_at: i64,
}

/// What taking a node's leases away did.
#[derive(Clone, Debug, Default)]
pub(crate) struct Released {
    /// Tasks back in the queue.
    pub requeued: u64,
    /// Tasks that lost their node too often and failed, with their job and
    /// kind (the job may have to fail with them).
    pub failed: Vec<(String, TaskKind)>,
}

/// How a node's leases are taken away.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Release<'a> {
    /// The node gave them back (it is stopping): they queue again, and it
    /// counts for nothing.
    Returned,
    /// The node was lost (silent, restarted, or it never confirmed them):
    /// each counts as a node loss of its task, and a task that has lost its
    /// node `max_losses` times fails with reason `node_lost`.
    Lost {
        max_losses: u32,
        now: i64,
        why: &'a str,
    },
}

const NODE_STATE_LIVE: &str =
    "('starting', 'idle', 'running', 'leaving', 'start_task_failed', 'unusable')";

impl Tx {
    /// Registers a node under a new id; `false` if the id is taken.
    pub(crate) async fn insert_node(
        &mut self,
        id: &str,
        node: &NodeRegistration,
        state: NodeState,
        now: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO nodes (id, pool, hostname, address, slots, state, registered_at, \
             last_seen, memory_bytes, version, agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(&node.pool)
        .bind(&node.hostname)
        .bind(&node.address)
        .bind(i64::from(node.slots))
        .bind(state.as_str())
        .bind(now)
        .bind(node.memory_bytes as i64)
        .bind(&node.version)
        .bind(node.agent.as_deref())
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A registered node's pool and state.
    pub(crate) async fn node(&mut self, id: &str) -> Result<Option<NodeRow>, Error> {
        let row = sqlx::query("SELECT pool, state FROM nodes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| {
            Ok(NodeRow {
                pool: r.try_get("pool")?,
                state: parse_column(&r, "state")?,
            })
        })
        .transpose()
    }

    /// Records that a live node was heard from: it is `running` while it
    /// holds attempts and `idle` otherwise, or `unusable` (with the reason)
    /// if it says so. Returns its state afterwards, `None` if it is not
    /// registered or no longer live.
    pub(crate) async fn touch_node(
        &mut self,
        id: &str,
        busy: bool,
        unusable: Option<&str>,
        now: i64,
    ) -> Result<Option<NodeState>, Error> {
        let working = if busy {
            NodeState::Running
        } else {
            NodeState::Idle
        };
        // A node that can work again after being unusable is back in
        // service; starting, leaving and failed start tasks keep their
        // state until the scheduler moves them on.
        let row = sqlx::query(
            "UPDATE nodes SET last_seen = $2, \
             state = CASE WHEN $4 IS NOT NULL AND state IN ('idle', 'running') THEN 'unusable' \
                 WHEN $4 IS NULL AND state IN ('idle', 'running', 'unusable') THEN $3 \
                 ELSE state END, \
             reason = CASE WHEN $4 IS NOT NULL AND state IN ('idle', 'running', 'unusable') THEN $4 \
                 WHEN state = 'unusable' THEN NULL ELSE reason END \
             WHERE id = $1 AND state <> 'offline' RETURNING state",
        )
        .bind(id)
        .bind(now)
        .bind(working.as_str())
        .bind(unusable)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| parse_column(&r, "state")).transpose()
    }

    /// Sets a node's state and the reason for it.
    pub(crate) async fn set_node_state(
        &mut self,
        id: &str,
        state: NodeState,
        reason: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query("UPDATE nodes SET state = $2, reason = $3 WHERE id = $1")
            .bind(id)
            .bind(state.as_str())
            .bind(reason)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Keeps what a node's start task wrote.
    pub(crate) async fn set_start_task_output(
        &mut self,
        id: &str,
        stdout: &str,
        stderr: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE nodes SET start_task_stdout = $2, start_task_stderr = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(stdout)
        .bind(stderr)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Live nodes that said nothing since `cutoff`.
    pub(crate) async fn silent_nodes(&mut self, cutoff: i64) -> Result<Vec<String>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT id FROM nodes WHERE state IN {NODE_STATE_LIVE} AND last_seen < $1"
        ))
        .bind(cutoff)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// How many tasks run on a node (reads only the running-task index).
    pub(crate) async fn count_leases(&mut self, node: &str) -> Result<u64, Error> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM tasks WHERE state = 'running' AND node = $1")
                .bind(node)
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// The tasks running on a node.
    pub(crate) async fn leases(&mut self, node: &str) -> Result<Vec<Lease>, Error> {
        let rows = sqlx::query(
            "SELECT job_id, seq, attempts, started_at FROM tasks \
             WHERE state = 'running' AND node = $1",
        )
        .bind(node)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Lease {
                    job_id: r.try_get("job_id")?,
                    seq: r.try_get("seq")?,
                    attempt: r.try_get::<i64, _>("attempts")? as u32,
                    leased_at: r.try_get::<Option<i64>, _>("started_at")?.unwrap_or(0),
                })
            })
            .collect()
    }

    /// Takes tasks away from a node: every task running on it, or only the
    /// given leases (each only while it is still that attempt on that
    /// node).
    pub(crate) async fn release(
        &mut self,
        node: &str,
        only: Option<&[Lease]>,
        how: Release<'_>,
    ) -> Result<Released, Error> {
        let (max_losses, now, message) = match how {
            // A loss count no task reaches: nothing fails.
            Release::Returned => (i64::MAX, 0, String::new()),
            Release::Lost {
                max_losses,
                now,
                why,
            } => (
                i64::from(max_losses),
                now,
                format!(
                    "the task lost its node {max_losses} times (the last time: {why}); \
                     losing a node does not count as a failed attempt, but is not retried forever"
                ),
            ),
        };
        let counted = matches!(how, Release::Lost { .. });
        let lost = "node_losses + $2 >= $3";
        let filter = if only.is_some() {
            format!(
                " AND (job_id, seq, attempts) IN (SELECT value ->> 'job_id', \
                 CAST(value ->> 'seq' AS BIGINT), CAST(value ->> 'attempt' AS BIGINT) FROM {})",
                self.dialect.json_rows(6)
            )
        } else {
            String::new()
        };
        let sql = format!(
            "UPDATE tasks SET node_losses = node_losses + $2, \
             state = CASE WHEN {lost} THEN 'failed' ELSE 'queued' END, \
             node = CASE WHEN {lost} THEN node ELSE NULL END, \
             failure_kind = CASE WHEN {lost} THEN 'node_lost' ELSE failure_kind END, \
             failure = CASE WHEN {lost} THEN $4 ELSE failure END, \
             finished_at = CASE WHEN {lost} THEN $5 ELSE finished_at END \
             WHERE state = 'running' AND node = $1{filter} \
             RETURNING job_id, seq, kind, state, attempts, started_at"
        );
        let leases: Vec<LeaseRow<'_>> = only
            .unwrap_or_default()
            .iter()
            .map(|l| LeaseRow {
                job_id: &l.job_id,
                seq: l.seq,
                attempt: l.attempt,
            })
            .collect();
        let mut query = sqlx::query(&sql)
            .bind(node)
            .bind(i64::from(counted))
            .bind(max_losses)
            .bind(message.as_str())
            .bind(now);
        if only.is_some() {
            query = query.bind(json(&leases));
        }
        let rows = query.fetch_all(&mut *self.tx).await?;
        self.account_released(node, &rows, how).await
    }

    /// Counts the tasks [`Tx::release`] moved, and records the attempts that
    /// lost their node.
    async fn account_released(
        &mut self,
        node: &str,
        rows: &[AnyRow],
        how: Release<'_>,
    ) -> Result<Released, Error> {
        let mut deltas: BTreeMap<String, CountDelta> = BTreeMap::new();
        let mut released = Released::default();
        let mut attempts = Vec::new();
        for row in rows {
            let job_id: String = row.try_get("job_id")?;
            let kind: TaskKind = parse_column(row, "kind")?;
            let state: TaskState = parse_column(row, "state")?;
            if kind == TaskKind::Process {
                let d = CountDelta::moved(TaskState::Running, state, 1);
                deltas.entry(job_id.clone()).or_default().add(&d);
            }
            if state == TaskState::Failed {
                released.failed.push((job_id.clone(), kind));
            } else {
                released.requeued += 1;
            }
            if let Release::Lost { now, why, .. } = how {
                attempts.push((
                    job_id,
                    row.try_get::<i64, _>("seq")?,
                    row.try_get::<i64, _>("attempts")? as u32,
                    row.try_get::<Option<i64>, _>("started_at")?.unwrap_or(now),
                    Failure::new(
                        FailureKind::NodeLost,
                        format!("the attempt lost its node: {why}"),
                    ),
                ));
            }
        }
        for (job, delta) in &deltas {
            self.adjust_counts(job, delta).await?;
        }
        if let Release::Lost { now, .. } = how {
            let records: Vec<AttemptRecord<'_>> = attempts
                .iter()
                .map(
                    |(job_id, seq, attempt, started_at, failure)| AttemptRecord {
                        job_id,
                        seq: *seq,
                        attempt: *attempt,
                        node,
                        failure: Some(failure),
                        started_at: *started_at,
                        finished_at: now,
                        stdout: LogRef::default(),
                        stderr: LogRef::default(),
                        usage: Usage::default(),
                    },
                )
                .collect();
            self.insert_attempts(&records).await?;
        }
        Ok(released)
    }
}

/// One lease in a JSON parameter.
#[derive(serde::Serialize)]
struct LeaseRow<'a> {
    job_id: &'a str,
    seq: i64,
    attempt: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewTask;
    use crate::store::tests::temp_stores;

    fn registration(pool: &str) -> NodeRegistration {
        NodeRegistration {
            pool: pool.into(),
            hostname: "h".into(),
            address: "a".into(),
            slots: 1,
            memory_bytes: 1 << 30,
            version: "test".into(),
            previous: None,
            agent: None,
        }
    }

    fn queued(seq: i64) -> NewTask {
        NewTask {
            state: TaskState::Queued,
            ..NewTask::step(seq, &format!("t{seq}"), TaskKind::Process)
        }
    }

    #[tokio::test]
    async fn lost_leases_requeue_until_the_bound_then_fail_with_node_lost() {
        for (_dir, store) in temp_stores().await {
            let mut tx = store.begin().await.unwrap();
            assert!(
                tx.insert_node("n1", &registration("p"), NodeState::Idle, 0)
                    .await
                    .unwrap()
            );
            assert!(
                !tx.insert_node("n1", &registration("p"), NodeState::Idle, 0)
                    .await
                    .unwrap(),
                "ids are unique"
            );
            tx.insert_tasks("j", "p", &[queued(1), queued(2)])
                .await
                .unwrap();
            let lost = |now| Release::Lost {
                max_losses: 2,
                now,
                why: "it stopped answering",
            };
            // First loss: both requeue, with an attempt row saying why.
            assert_eq!(tx.lease("p", "n1", 10, 100).await.unwrap().len(), 2);
            let released = tx.release("n1", None, lost(150)).await.unwrap();
            assert_eq!((released.requeued, released.failed.len()), (2, 0));
            // Only the given lease is taken the second time; the other stays.
            let leased = tx.lease("p", "n1", 10, 200).await.unwrap();
            assert!(leased.iter().all(|t| t.attempts == 2));
            let leases = tx.leases("n1").await.unwrap();
            assert_eq!(leases.len(), 2);
            let first: Vec<Lease> = leases.into_iter().filter(|l| l.seq == 1).collect();
            let released = tx.release("n1", Some(&first), lost(250)).await.unwrap();
            assert_eq!(released.requeued, 0);
            assert_eq!(released.failed, vec![("j".to_owned(), TaskKind::Process)]);
            assert_eq!(tx.count_leases("n1").await.unwrap(), 1);
            // A lease of an attempt that is no longer current is left alone.
            let stale = [Lease {
                attempt: 1,
                ..tx.leases("n1").await.unwrap().remove(0)
            }];
            let released = tx.release("n1", Some(&stale), lost(260)).await.unwrap();
            assert_eq!((released.requeued, released.failed.len()), (0, 0));
            // Returning leases never counts.
            let released = tx.release("n1", None, Release::Returned).await.unwrap();
            assert_eq!((released.requeued, released.failed.len()), (1, 0));
            let job = tx.current_tasks("j", &[1, 2]).await.unwrap();
            assert_eq!(job[0].state, TaskState::Failed);
            assert_eq!(job[1].state, TaskState::Queued);
            tx.commit().await.unwrap();
            let attempts = store.attempts("j", 1).await.unwrap();
            assert_eq!(attempts.len(), 2);
            assert!(
                attempts
                    .iter()
                    .all(|a| a.failure.as_ref().unwrap().kind == FailureKind::NodeLost),
                "{attempts:?}"
            );
            let failed = store.task("j", "t1").await.unwrap().unwrap().1;
            assert_eq!(failed.failure.unwrap().kind, FailureKind::NodeLost);
            assert_eq!(store.attempts("j", 2).await.unwrap().len(), 1);
        }
    }

    #[tokio::test]
    async fn heartbeats_keep_nodes_live_and_say_when_they_are_unusable() {
        for (_dir, store) in temp_stores().await {
            let mut tx = store.begin().await.unwrap();
            tx.insert_node("n", &registration("p"), NodeState::Idle, 0)
                .await
                .unwrap();
            assert_eq!(
                tx.touch_node("n", true, None, 10).await.unwrap(),
                Some(NodeState::Running)
            );
            assert_eq!(
                tx.touch_node("n", false, Some("no slots"), 20)
                    .await
                    .unwrap(),
                Some(NodeState::Unusable)
            );
            assert_eq!(
                tx.touch_node("n", false, None, 30).await.unwrap(),
                Some(NodeState::Idle)
            );
            tx.set_node_state("n", NodeState::Leaving, None)
                .await
                .unwrap();
            assert_eq!(
                tx.touch_node("n", true, None, 40).await.unwrap(),
                Some(NodeState::Leaving)
            );
            assert_eq!(tx.silent_nodes(41).await.unwrap(), vec!["n".to_owned()]);
            assert!(tx.silent_nodes(40).await.unwrap().is_empty());
            tx.set_node_state("n", NodeState::Offline, None)
                .await
                .unwrap();
            assert_eq!(tx.touch_node("n", true, None, 50).await.unwrap(), None);
            assert!(tx.silent_nodes(1000).await.unwrap().is_empty());
        }
    }
}
