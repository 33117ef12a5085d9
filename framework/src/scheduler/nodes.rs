//! Nodes and their leases: registration, heartbeats (which keep a node
//! alive, confirm its leases and carry revocations), leasing, leaving, and
//! declaring silent nodes lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::Scheduler;
use crate::error::Error;
use crate::model::{NodeState, TaskState, now_ms};
use crate::protocol::{
    Assignment, AttemptKey, Heartbeat, HeartbeatReply, NodeError, NodeRegistration, Registered,
    RunningAttempt, StartTaskReport, StartTaskRun,
};
use crate::store::{Lease, Release, Tx};

/// How long a node waiting for work waits at most between two looks at
/// the queue, wake-ups aside.
const RECHECK: Duration = Duration::from_secs(10);

/// Longest node id prefix taken from a host name.
const MAX_HOST_PREFIX: usize = 40;

impl Scheduler {
    /// Registers a node under a fresh id. If it names the id it had before
    /// it restarted, that node's attempts are released at once.
    pub(super) async fn register_node(
        &self,
        node: NodeRegistration,
    ) -> Result<Registered, NodeError> {
        let start_task = self.start_task(&node.pool).await?;
        let state = if start_task.is_some() {
            NodeState::Starting
        } else {
            NodeState::Idle
        };
        let now = now_ms();
        let mut tx = self.inner.store.begin().await?;
        if !tx.pool_exists(&node.pool).await? {
            return Err(NodeError::PoolGone(node.pool));
        }
        let id = loop {
            let id = node_id(&node.hostname);
            if tx.insert_node(&id, &node, state, now).await? {
                break id;
            }
        };
        let mut queued = false;
        if let Some(previous) = &node.previous {
            let before = tx.node(previous).await?;
            if before.is_some_and(|n| n.pool == node.pool && n.state.is_live()) {
                queued |= self
                    .take_leases(
                        &mut tx,
                        previous,
                        None,
                        "its agent restarted",
                        NodeState::Offline,
                        now,
                    )
                    .await?;
            }
        }
        tx.commit().await?;
        tracing::info!(node = %id, pool = %node.pool, host = %node.hostname, slots = node.slots, "node registered");
        if queued {
            self.work_available();
        }
        Ok(Registered {
            node_key: self.node_key(&id),
            node_id: id,
            start_task,
        })
    }

    /// The start task of a pool, as its nodes run it (the image named by
    /// application now resolved to its digest).
    async fn start_task(&self, pool: &str) -> Result<Option<StartTaskRun>, NodeError> {
        let Some((account, spec)) = self.inner.store.pool_spec(pool).await? else {
            return Err(NodeError::PoolGone(pool.to_owned()));
        };
        let Some(task) = spec.start_task else {
            return Ok(None);
        };
        let image = match &task.app {
            Some(app) => {
                let version = self
                    .inner
                    .store
                    .app_version(&account, app, task.version)
                    .await?
                    .ok_or_else(|| {
                        NodeError::Unavailable(format!(
                            "the start task's application `{app}` is gone; change the pool's start task"
                        ))
                    })?;
                version.image.map(|f| f.sha256)
            }
            None => task.image,
        };
        Ok(Some(StartTaskRun {
            image,
            program: task.program,
            args: task.args,
            timeout_ms: task.timeout_secs * 1000,
        }))
    }

    /// A node ran its start task: it takes tasks now, or is
    /// `start_task_failed` with the reason.
    pub(super) async fn finish_start_task(
        &self,
        node_id: &str,
        report: &StartTaskReport,
    ) -> Result<(), NodeError> {
        let mut tx = self.inner.store.begin().await?;
        let node = self.live_node(&mut tx, node_id).await?;
        tx.set_start_task_output(node_id, &tail(&report.stdout), &tail(&report.stderr))
            .await?;
        if node.state == NodeState::Starting {
            if report.succeeded() {
                tx.set_node_state(node_id, NodeState::Idle, None).await?;
            } else {
                let why = match (&report.error, report.status) {
                    (Some(error), _) => format!("the start task failed: {error}"),
                    (None, status) => format!(
                        "the start task exited with status {}{}",
                        status.unwrap_or(-1),
                        last_line(&report.stderr)
                    ),
                };
                tracing::warn!(node = %node_id, %why, "a node's start task failed");
                tx.set_node_state(node_id, NodeState::StartTaskFailed, Some(&why))
                    .await?;
            }
        }
        tx.commit().await?;
        if report.succeeded() {
            self.work_available();
        }
        Ok(())
    }

    /// Records a heartbeat, then answers at once with revoked attempts (or
    /// a request to drain), or waits up to `wait` for one.
    pub(super) async fn node_heartbeat(
        &self,
        heartbeat: Heartbeat,
        wait: Duration,
    ) -> Result<HeartbeatReply, NodeError> {
        let deadline = Instant::now() + wait;
        let now = now_ms();
        let node = heartbeat.node_id.as_str();
        let (state, queued) = {
            let mut tx = self.inner.store.begin().await?;
            let Some(state) = tx
                .touch_node(
                    node,
                    !heartbeat.held.is_empty(),
                    heartbeat.unusable.as_deref(),
                    now,
                )
                .await?
            else {
                return Err(NodeError::UnknownNode(heartbeat.node_id));
            };
            let progress: Vec<_> = heartbeat
                .held
                .iter()
                .filter(|h| h.progress > 0.0)
                .map(|h| (&h.key, h.progress))
                .collect();
            tx.set_progress(&progress).await?;
            let queued = self
                .confirm_leases(&mut tx, node, &heartbeat.held, now)
                .await?;
            tx.commit().await?;
            (state, queued)
        };
        if queued {
            self.work_available();
        }
        let drain = state == NodeState::Leaving;
        loop {
            let notified = self.inner.revoked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let revoked = self.revoked(node, &heartbeat.held).await?;
            if drain || !revoked.is_empty() || Instant::now() >= deadline {
                return Ok(HeartbeatReply { revoked, drain });
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Releases the leases of `node` that it has not confirmed (they are
    /// not among the attempts it says it holds) for longer than the lease
    /// timeout: their lease reply never reached it. Returns whether tasks
    /// were queued.
    async fn confirm_leases(
        &self,
        tx: &mut Tx,
        node: &str,
        held: &[RunningAttempt],
        now: i64,
    ) -> Result<bool, Error> {
        // Usually the node holds exactly what it was leased: one count on
        // the running-task index says so without reading the leases.
        if tx.count_leases(node).await? == held.len() as u64 {
            return Ok(false);
        }
        let held: HashSet<&AttemptKey> = held.iter().map(|h| &h.key).collect();
        let cutoff = now - self.inner.config.lease_timeout.as_millis() as i64;
        let unconfirmed: Vec<Lease> = tx
            .leases(node)
            .await?
            .into_iter()
            .filter(|l| {
                l.leased_at < cutoff
                    && !held.contains(&AttemptKey {
                        job_id: l.job_id.clone(),
                        seq: l.seq,
                        attempt: l.attempt,
                    })
            })
            .collect();
        if unconfirmed.is_empty() {
            return Ok(false);
        }
        let why = format!(
            "node `{node}` did not confirm its lease within {} s",
            self.inner.config.lease_timeout.as_secs()
        );
        tracing::warn!(%node, leases = unconfirmed.len(), "releasing unconfirmed leases");
        let released = tx
            .release(
                node,
                Some(&unconfirmed),
                Release::Lost {
                    max_losses: self.inner.config.max_node_losses,
                    now,
                    why: &why,
                },
            )
            .await?;
        let queued = self.settle_lost(tx, &released.failed, now).await?;
        Ok(queued || released.requeued > 0)
    }

    /// Which of `held` are no longer `node`'s to run.
    async fn revoked(&self, node: &str, held: &[RunningAttempt]) -> Result<Vec<AttemptKey>, Error> {
        let mut by_job: BTreeMap<&str, Vec<&AttemptKey>> = BTreeMap::new();
        for h in held {
            by_job
                .entry(h.key.job_id.as_str())
                .or_default()
                .push(&h.key);
        }
        let mut revoked = Vec::new();
        for (job_id, keys) in by_job {
            let seqs: Vec<i64> = keys.iter().map(|k| k.seq).collect();
            let current: HashMap<i64, _> = self
                .inner
                .store
                .current_tasks(job_id, &seqs)
                .await?
                .into_iter()
                .map(|c| (c.seq, c))
                .collect();
            for key in keys {
                let live = current.get(&key.seq).is_some_and(|c| {
                    c.state == TaskState::Running && c.is_leased_to(node, key.attempt)
                });
                if !live {
                    revoked.push(key.clone());
                }
            }
        }
        Ok(revoked)
    }

    /// Leases up to `max` queued tasks of the node's pool, waiting up to
    /// `wait` for some. A node that is not taking work (starting, leaving,
    /// unusable) is leased nothing.
    pub(super) async fn lease_tasks(
        &self,
        node_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Assignment>, NodeError> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.inner.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (leased, quotas) = {
                let mut tx = self.inner.store.begin().await?;
                let node = self.live_node(&mut tx, node_id).await?;
                let leased = if node.state.takes_work() {
                    tx.lease(&node.pool, node_id, max, now_ms()).await?
                } else {
                    Vec::new()
                };
                let quotas = leased.is_empty() && tx.has_running_task_quotas().await?;
                tx.commit().await?;
                (leased, quotas)
            };
            if !leased.is_empty() {
                return self.assignments(node_id, leased).await;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Other replicas' work arrives as wake-ups too (PostgreSQL's
            // NOTIFY); look again now and then all the same, in case one
            // was lost with the listening connection.
            // A task finishing makes room under a running-task quota
            // without a wake-up: while there are such quotas, look every
            // second.
            let every = if quotas {
                Duration::from_secs(1)
            } else {
                RECHECK
            };
            let recheck = (now + every).min(deadline);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    /// Builds the assignments of leased tasks; if that fails, the tasks go
    /// back to the queue at once rather than waiting for their lease to
    /// expire.
    async fn assignments(
        &self,
        node_id: &str,
        leased: Vec<crate::store::LeasedTask>,
    ) -> Result<Vec<Assignment>, NodeError> {
        let leases: Vec<Lease> = leased
            .iter()
            .map(|t| Lease {
                job_id: t.job_id.clone(),
                seq: t.seq,
                attempt: t.attempts,
                leased_at: 0,
            })
            .collect();
        let mut out = Vec::with_capacity(leased.len());
        for task in leased {
            match self.assignment(task).await {
                Ok(a) => out.push(a),
                Err(e) => {
                    tracing::error!(node = %node_id, error = %e, "cannot build assignments; returning the leases");
                    let mut tx = self.inner.store.begin().await?;
                    tx.release(node_id, Some(&leases), Release::Returned)
                        .await?;
                    tx.commit().await?;
                    self.work_available();
                    return Err(e.into());
                }
            }
        }
        Ok(out)
    }

    /// The node, if it is registered and live: otherwise the error that
    /// tells it what to do (register again, or stop: its pool is gone).
    async fn live_node(
        &self,
        tx: &mut Tx,
        node_id: &str,
    ) -> Result<crate::store::NodeRow, NodeError> {
        match tx.node(node_id).await? {
            Some(node) if node.state.is_live() => Ok(node),
            Some(node) if !tx.pool_exists(&node.pool).await? => Err(NodeError::PoolGone(node.pool)),
            _ => Err(NodeError::UnknownNode(node_id.to_owned())),
        }
    }

    /// A node leaves: it is offline, and what it still held runs elsewhere
    /// (without counting as a node loss: it gave it back).
    pub(super) async fn deregister_node(&self, node_id: &str) -> Result<(), Error> {
        let mut tx = self.inner.store.begin().await?;
        let requeued = match tx.node(node_id).await? {
            Some(node) if node.state.is_live() => {
                tx.set_node_state(node_id, NodeState::Offline, None).await?;
                tx.release(node_id, None, Release::Returned).await?.requeued
            }
            _ => 0,
        };
        tx.commit().await?;
        tracing::info!(node = %node_id, requeued, "node left");
        if requeued > 0 {
            self.work_available();
        }
        Ok(())
    }

    /// Asks a node to leave its pool: it is leased nothing more, and its
    /// next heartbeat tells it to finish what it holds and deregister.
    pub(crate) async fn ask_to_leave(&self, node_id: &str) -> Result<(), Error> {
        let mut tx = self.inner.store.begin().await?;
        if tx.node(node_id).await?.is_some_and(|n| n.state.is_live()) {
            tx.set_node_state(node_id, NodeState::Leaving, None).await?;
        }
        tx.commit().await?;
        self.attempts_revoked();
        Ok(())
    }

    /// Fails the tasks running on a node that the pool's scale-down removes
    /// with `$NodeDeallocationOption = terminate`: they do not run again.
    pub(crate) async fn terminate_tasks(&self, node_id: &str) -> Result<(), Error> {
        let now = now_ms();
        let mut tx = self.inner.store.begin().await?;
        let released = tx
            .release(
                node_id,
                None,
                Release::Lost {
                    max_losses: 1,
                    now,
                    why: "the pool's scale-down removed its node ($NodeDeallocationOption = terminate)",
                },
            )
            .await?;
        let queued = self.settle_lost(&mut tx, &released.failed, now).await?;
        tx.set_node_state(node_id, NodeState::Leaving, None).await?;
        tx.commit().await?;
        self.attempts_revoked();
        if queued {
            self.work_available();
        }
        Ok(())
    }

    /// Marks nodes that stopped heartbeating as offline and requeues their
    /// tasks (a node loss, not a failed attempt); returns how many tasks.
    pub async fn expire_silent_nodes(&self) -> Result<u64, Error> {
        let timeout = self.inner.config.node_timeout;
        // Silence that began before this scheduler started may be its own
        // downtime: give every node a full timeout to be heard again.
        if self.inner.started.elapsed() < timeout {
            return Ok(0);
        }
        let now = now_ms();
        let cutoff = now - timeout.as_millis() as i64;
        let mut tx = self.inner.store.begin().await?;
        let mut requeued = 0;
        let mut queued = false;
        for node in tx.silent_nodes(cutoff).await? {
            tracing::warn!(%node, "node stopped heartbeating; requeueing its tasks");
            let why = format!(
                "node `{node}` stopped answering for {} s",
                timeout.as_secs()
            );
            let before = tx.count_leases(&node).await?;
            queued |= self
                .take_leases(&mut tx, &node, None, &why, NodeState::Offline, now)
                .await?;
            requeued += before;
        }
        tx.commit().await?;
        if queued {
            self.work_available();
        }
        Ok(requeued)
    }

    /// Moves a lost node to `state` and takes its leases (all, or `only`)
    /// away as node losses. Returns whether tasks were queued.
    async fn take_leases(
        &self,
        tx: &mut Tx,
        node: &str,
        only: Option<&[Lease]>,
        why: &str,
        state: NodeState,
        now: i64,
    ) -> Result<bool, Error> {
        tx.set_node_state(node, state, None).await?;
        let released = tx
            .release(
                node,
                only,
                Release::Lost {
                    max_losses: self.inner.config.max_node_losses,
                    now,
                    why,
                },
            )
            .await?;
        let queued = self.settle_lost(tx, &released.failed, now).await?;
        Ok(queued || released.requeued > 0)
    }
}

/// The end of a start task's output that is kept (64 KiB).
fn tail(text: &str) -> String {
    const KEEP: usize = 64 << 10;
    if text.len() <= KEEP {
        return text.to_owned();
    }
    let mut start = text.len() - KEEP;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

/// `: ` and the last line of a start task's stderr, if it wrote one.
fn last_line(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| {
            format!(
                " (its stderr ends: {})",
                l.chars().take(500).collect::<String>()
            )
        })
        .unwrap_or_default()
}

/// A fresh node id: the host name (made safe) and random digits.
fn node_id(hostname: &str) -> String {
    let host: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(MAX_HOST_PREFIX)
        .collect();
    let host = host.trim_matches('-');
    let host = if host.is_empty() { "node" } else { host };
    let mut random = [0u8; 4];
    getrandom::getrandom(&mut random).expect("the system has a random source");
    format!("{host}-{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_safe_and_fresh() {
        let a = node_id("Build Host.example.com");
        assert!(a.starts_with("build-host-example-com-"), "{a}");
        assert_eq!(a.len(), "build-host-example-com-".len() + 8);
        assert_ne!(node_id("x"), node_id("x"));
        assert!(node_id("...").starts_with("node-"));
    }
}
