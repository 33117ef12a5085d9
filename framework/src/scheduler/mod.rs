//! The scheduler: hands tasks to nodes and turns their results into task and
//! job transitions.
//!
//! It keeps no state of its own that matters: the task queue, leases and job
//! states all live in the database, and every method is one transaction, so
//! a restart loses nothing. What it keeps in memory is a bounded cache of
//! immutable job facts, two wake-up signals for long-polling nodes, and the
//! key it signs upload receipts with (itself kept in the database).
//!
//! Leasing: a node asks for up to N tasks; the oldest queued tasks of its
//! pool become `running` on that node, and each task's attempt counter goes
//! up. The attempt number and the node together are the lease: a result is
//! accepted only from the node that holds the current attempt, so a node
//! that was presumed lost and comes back late, or any other node, can never
//! overwrite a newer attempt's result ([`commit`]).
//!
//! Leases end (their tasks are requeued) when their node stops
//! heartbeating for [`SchedulerConfig::node_timeout`], when it does not
//! confirm a lease in its heartbeats within [`SchedulerConfig::lease_timeout`]
//! (the lease reply was lost), or when the node's agent restarts. Such a
//! node loss does not count as a failed attempt, but a task that loses its
//! node [`SchedulerConfig::max_node_losses`] times fails with `node_lost`
//! ([`nodes`]).
//!
//! Committing: a batch of attempt reports is applied in one transaction:
//! attempts recorded, outputs recorded, tasks succeeded / requeued / failed,
//! dependents released, and the job moved on (split → running → merging →
//! completed, or failed). Batching is what lets one SQLite file sustain tens
//! of thousands of task results per second with durable commits.
//!
//! Files: a node uploads what an attempt produced; the scheduler computes
//! each file's digest itself and returns a receipt (an HMAC over node,
//! attempt, digest and size). A report may name only files with a valid
//! receipt for its own attempt.

mod assign;
mod commit;
mod nodes;
mod plan;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::auth;
use crate::blobs::BlobStore;
use crate::digest::Digest;
use crate::error::Error;
use crate::protocol::{
    Assignment, AttemptKey, AttemptReport, CommitReply, Coordinator, Heartbeat, HeartbeatReply,
    NodeError, NodeRegistration, Registered, StartTaskReport, UploadSource, Uploaded,
};
use crate::store::{Store, Wakeup};

/// The name of a job's split step.
pub const SPLIT_TASK: &str = "_split";
/// The name of a job's merge step.
pub const MERGE_TASK: &str = "_merge";

/// Settings of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// A node silent for this long is offline and its tasks run elsewhere.
    pub node_timeout: Duration,
    /// A lease its node has not confirmed in a heartbeat for this long (the
    /// node never received it) is released and its task requeued.
    pub lease_timeout: Duration,
    /// A task that has lost its node this many times fails with reason
    /// `node_lost` (node losses do not count as failed attempts).
    pub max_node_losses: u32,
    /// The most tasks a splitter may create for one job.
    pub max_tasks_per_job: usize,
    /// The largest parameters object of one task, in bytes.
    pub max_task_parameters: usize,
    /// Memory limit of one attempt, in bytes.
    pub task_memory_bytes: u64,
    /// Largest `/output` of one attempt, in bytes.
    pub task_output_bytes: u64,
    /// Largest stdout and stderr of one attempt, each, in bytes.
    pub task_log_bytes: u64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            node_timeout: Duration::from_secs(30),
            lease_timeout: Duration::from_secs(30),
            max_node_losses: 3,
            max_tasks_per_job: 1_000_000,
            max_task_parameters: 64 << 10,
            task_memory_bytes: 1 << 30,
            task_output_bytes: 4 << 30,
            task_log_bytes: 4 << 20,
        }
    }
}

/// The scheduler; cheap to clone. It is the in-process [`Coordinator`].
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    blobs: BlobStore,
    config: SchedulerConfig,
    /// Signalled when tasks become queued.
    work: Notify,
    /// Signalled when attempts are revoked (cancellation) or nodes are
    /// asked to leave.
    revoked: Notify,
    /// Wake-ups for other replicas, sent by [`Scheduler::spawn_wakeups`]
    /// (several signals before one is sent make one wake-up).
    outbox: [Notify; 2],
    /// This replica's name in the wake-ups it sends.
    replica: String,
    jobs: assign::JobCache,
    /// The key upload receipts are signed with.
    receipt_key: Vec<u8>,
    /// When this scheduler started: nodes are not declared lost for
    /// silence that began before it could hear them.
    started: tokio::time::Instant,
}

impl Scheduler {
    pub(crate) async fn new(
        store: Store,
        blobs: BlobStore,
        config: SchedulerConfig,
    ) -> Result<Self, Error> {
        let receipt_key = store.secret("upload_receipts").await?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                config,
                work: Notify::new(),
                revoked: Notify::new(),
                outbox: [Notify::new(), Notify::new()],
                replica: uuid::Uuid::now_v7().to_string(),
                jobs: assign::JobCache::default(),
                receipt_key,
                started: tokio::time::Instant::now(),
            }),
        })
    }

    /// Wakes nodes waiting for work, on every replica.
    pub(crate) fn work_available(&self) {
        self.inner.work.notify_waiters();
        self.inner.outbox[0].notify_one();
    }

    /// Wakes nodes waiting to hear about revoked attempts, on every replica.
    pub(crate) fn attempts_revoked(&self) {
        self.inner.revoked.notify_waiters();
        self.inner.outbox[1].notify_one();
    }

    /// This replica's name, unique to this process.
    pub(crate) fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// Passes wake-ups between this replica and the others sharing its
    /// database until the returned tasks are aborted (none on SQLite,
    /// which has no other replicas).
    pub(crate) fn spawn_wakeups(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let inner = Arc::clone(&self.inner);
        let Some(listener) =
            self.inner
                .store
                .spawn_wakeup_listener(self.inner.replica.clone(), move |wakeup| match wakeup {
                    Wakeup::Work => inner.work.notify_waiters(),
                    Wakeup::Revoked => inner.revoked.notify_waiters(),
                })
        else {
            return Vec::new();
        };
        let inner = Arc::clone(&self.inner);
        let sender = tokio::spawn(async move {
            loop {
                let wakeup = tokio::select! {
                    () = inner.outbox[0].notified() => Wakeup::Work,
                    () = inner.outbox[1].notified() => Wakeup::Revoked,
                };
                if let Err(e) = inner.store.send_wakeup(wakeup, &inner.replica).await {
                    tracing::warn!(error = %e, "telling other replicas of {wakeup:?} failed");
                }
            }
        });
        vec![listener, sender]
    }

    /// Runs [`Scheduler::expire_silent_nodes`] periodically until the
    /// returned task is aborted.
    pub(crate) fn spawn_expiry(&self) -> tokio::task::JoinHandle<()> {
        let scheduler = self.clone();
        let config = &self.inner.config;
        let period =
            (config.node_timeout.min(config.lease_timeout) / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(period);
            loop {
                ticker.tick().await;
                if let Err(e) = scheduler.expire_silent_nodes().await {
                    tracing::error!(error = %e, "expiring silent nodes failed");
                }
            }
        })
    }

    /// The key of node `node_id` (see [`Registered::node_key`]).
    pub(crate) fn node_key(&self, node_id: &str) -> String {
        auth::sign(&self.inner.receipt_key, &format!("node\n{node_id}"))
    }

    /// Whether `key` is the key of node `node_id`.
    pub(crate) fn check_node_key(&self, node_id: &str, key: &str) -> bool {
        auth::verify(&self.inner.receipt_key, &format!("node\n{node_id}"), key)
    }

    /// The receipt for a file `node` uploaded for attempt `key`.
    fn receipt(&self, node: &str, key: &AttemptKey, digest: &Digest, size: u64) -> String {
        auth::sign(
            &self.inner.receipt_key,
            &receipt_text(node, key, digest, size),
        )
    }

    /// Whether `file` carries a receipt for `node` and attempt `key`.
    fn has_receipt(&self, node: &str, key: &AttemptKey, file: &Uploaded) -> bool {
        auth::verify(
            &self.inner.receipt_key,
            &receipt_text(node, key, &file.digest, file.size),
            &file.receipt,
        )
    }

    /// Stores a file a node uploaded for one of its attempts.
    async fn store_upload(
        &self,
        node_id: &str,
        key: &AttemptKey,
        source: UploadSource<'_>,
    ) -> Result<Uploaded, NodeError> {
        self.check_holds(node_id, key).await?;
        let (digest, size) = match source {
            UploadSource::File(path) => self.inner.blobs.put_file(path).await?,
            UploadSource::Bytes(bytes) => (
                self.inner.blobs.put_bytes(bytes.clone()).await?,
                bytes.len() as u64,
            ),
        };
        Ok(Uploaded {
            digest,
            size,
            receipt: self.receipt(node_id, key, &digest, size),
        })
    }

    /// Stores a stream a node uploads for one of its attempts (the HTTP
    /// API's form of [`Coordinator::upload`]): spooled, hashed by the
    /// service, then stored.
    pub async fn store_upload_stream<S, E>(
        &self,
        node_id: &str,
        key: &AttemptKey,
        stream: S,
        limit: u64,
    ) -> Result<Uploaded, NodeError>
    where
        S: futures::Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.check_holds(node_id, key).await?;
        let spooled = self.inner.blobs.spool(stream, limit).await?;
        self.inner.blobs.put_spooled(&spooled).await?;
        Ok(Uploaded {
            digest: spooled.digest,
            size: spooled.size,
            receipt: self.receipt(node_id, key, &spooled.digest, spooled.size),
        })
    }

    /// Fails unless attempt `key` is leased to `node_id`.
    async fn check_holds(&self, node_id: &str, key: &AttemptKey) -> Result<(), NodeError> {
        let current = self
            .inner
            .store
            .current_tasks(&key.job_id, &[key.seq])
            .await?;
        if current
            .first()
            .is_some_and(|t| t.is_leased_to(node_id, key.attempt))
        {
            Ok(())
        } else {
            Err(NodeError::Refused(format!(
                "attempt {} of task {} of job {} is not leased to node `{node_id}`",
                key.attempt, key.seq, key.job_id
            )))
        }
    }
}

/// What an upload receipt signs.
fn receipt_text(node: &str, key: &AttemptKey, digest: &Digest, size: u64) -> String {
    format!(
        "upload\n{node}\n{}\n{}\n{}\n{digest}\n{size}",
        key.job_id, key.seq, key.attempt
    )
}

impl Coordinator for Scheduler {
    async fn register(&self, node: NodeRegistration) -> Result<Registered, NodeError> {
        self.register_node(node).await
    }

    async fn heartbeat(
        &self,
        heartbeat: Heartbeat,
        wait: Duration,
    ) -> Result<HeartbeatReply, NodeError> {
        self.node_heartbeat(heartbeat, wait).await
    }

    async fn lease(
        &self,
        node_id: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Assignment>, NodeError> {
        self.lease_tasks(node_id, max, wait).await
    }

    async fn commit(
        &self,
        node_id: &str,
        reports: &[AttemptReport],
    ) -> Result<CommitReply, NodeError> {
        self.commit_reports(node_id, reports).await
    }

    async fn start_task_finished(
        &self,
        node_id: &str,
        report: &StartTaskReport,
    ) -> Result<(), NodeError> {
        self.finish_start_task(node_id, report).await
    }

    async fn deregister(&self, node_id: &str) -> Result<(), NodeError> {
        Ok(self.deregister_node(node_id).await?)
    }

    async fn fetch_file(
        &self,
        _node_id: &str,
        digest: &Digest,
        dest: &Path,
    ) -> Result<(), NodeError> {
        Ok(self.inner.blobs.download(digest, dest).await?)
    }

    async fn upload(
        &self,
        node_id: &str,
        key: &AttemptKey,
        source: UploadSource<'_>,
    ) -> Result<Uploaded, NodeError> {
        self.store_upload(node_id, key, source).await
    }

    async fn fetch_artifact(&self, _node_id: &str, key: &str) -> Result<Option<Bytes>, NodeError> {
        Ok(self.inner.blobs.get_artifact(key).await?)
    }
}
