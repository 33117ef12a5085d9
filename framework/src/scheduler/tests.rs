//! The scheduler driven as nodes drive it, through [`Coordinator`], on a
//! real (temporary) store: fencing, refusals, receipts, lease expiry, node
//! losses, and the task-counter invariant.

use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::model::{FailureKind, JobState, LOCAL_POOL, TaskKind, TaskState};
use crate::protocol::{Outcome, OutputFile, RefusalReason, RunningAttempt, Usage};
use crate::store::{JobRecord, NewTask};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    scheduler: Scheduler,
}

async fn fixture(config: SchedulerConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("state.db"))
        .await
        .unwrap();
    let blobs = BlobStore::local(&dir.path().join("files"), &dir.path().join("spool")).unwrap();
    let d = Digest::of(b"component");
    let mut tx = store.begin().await.unwrap();
    tx.insert_app_version("acct", "app", None, (d, 1), &d, &d, "{}")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let scheduler = Scheduler::new(store.clone(), blobs, config).await.unwrap();
    Fixture {
        _dir: dir,
        store,
        scheduler,
    }
}

impl Fixture {
    /// A running job of `app` with `tasks` queued process tasks.
    async fn job(&self, app: &str, tasks: i64) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.store.begin().await.unwrap();
        tx.insert_job(&JobRecord {
            app: app.into(),
            ..crate::store::tests::job_record(&id, JobState::Running)
        })
        .await
        .unwrap();
        let rows: Vec<NewTask> = (1..=tasks)
            .map(|seq| NewTask::step(seq, &format!("t{seq}"), TaskKind::Process))
            .collect();
        tx.insert_tasks(&id, LOCAL_POOL, &rows).await.unwrap();
        tx.set_job_split(&id, tasks as u64, false, false)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        id
    }

    async fn register(&self, host: &str, previous: Option<&str>) -> String {
        self.scheduler
            .register(NodeRegistration {
                pool: LOCAL_POOL.into(),
                hostname: host.into(),
                address: "test".into(),
                slots: 1,
                memory_bytes: 1 << 30,
                version: "test".into(),
                previous: previous.map(str::to_owned),
                agent: None,
            })
            .await
            .unwrap()
            .node_id
    }

    async fn lease(&self, node: &str, max: usize) -> Vec<AttemptKey> {
        self.scheduler
            .lease(node, max, Duration::ZERO)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.key)
            .collect()
    }

    async fn task(&self, job: &str, seq: i64) -> crate::store::CurrentTask {
        self.store
            .current_tasks(job, &[seq])
            .await
            .unwrap()
            .remove(0)
    }

    async fn heartbeat(&self, node: &str, held: &[AttemptKey]) -> HeartbeatReply {
        self.scheduler
            .heartbeat(
                Heartbeat {
                    node_id: node.into(),
                    held: held
                        .iter()
                        .map(|k| RunningAttempt {
                            key: k.clone(),
                            progress: 0.0,
                        })
                        .collect(),
                    unusable: None,
                },
                Duration::ZERO,
            )
            .await
            .unwrap()
    }

    /// The job's counters equal a recount of its task rows.
    async fn assert_counts(&self, job: &str) {
        let stored = self.store.job(None, job).await.unwrap().unwrap().counts;
        assert_eq!(stored, self.store.recount(job).await.unwrap());
    }
}

fn success(key: &AttemptKey, outputs: Vec<OutputFile>) -> AttemptReport {
    AttemptReport {
        key: key.clone(),
        outcome: Outcome::Succeeded {
            outputs,
            plan: None,
        },
        stdout: None,
        stderr: None,
        started_at: 1,
        finished_at: 2,
        usage: Usage::default(),
    }
}

fn failure(key: &AttemptKey) -> AttemptReport {
    AttemptReport {
        outcome: Outcome::Failed(crate::model::Failure::new(FailureKind::GuestError, "no")),
        ..success(key, Vec::new())
    }
}

fn reasons(reply: &CommitReply) -> Vec<(i64, RefusalReason)> {
    reply
        .refused
        .iter()
        .map(|r| (r.key.seq, r.reason))
        .collect()
}

/// Waits until the millisecond clock has moved on, so that a lease taken
/// before is strictly older than any cutoff computed after.
async fn next_millisecond() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}

#[tokio::test]
async fn results_count_only_from_the_node_that_holds_the_lease() {
    let f = fixture(SchedulerConfig::default()).await;
    let job = f.job("app", 2).await;
    let a = f.register("a", None).await;
    let b = f.register("b", None).await;
    let first = f.lease(&a, 1).await;
    assert_eq!(first.len(), 1);

    // Another node cannot commit a's attempt, nor can a commit one it was
    // never given.
    let reply = f
        .scheduler
        .commit(&b, &[success(&first[0], vec![])])
        .await
        .unwrap();
    assert_eq!(reasons(&reply), [(first[0].seq, RefusalReason::LeaseLost)]);
    assert!(reply.refused[0].message.contains("not leased to node"));
    let never = AttemptKey {
        seq: 2,
        attempt: 1,
        ..first[0].clone()
    };
    let reply = f
        .scheduler
        .commit(&a, &[success(&never, vec![])])
        .await
        .unwrap();
    assert_eq!(reasons(&reply), [(2, RefusalReason::LeaseLost)]);
    assert_eq!(f.task(&job, first[0].seq).await.state, TaskState::Running);

    // The holder's result counts, and committing it again is harmless.
    for _ in 0..2 {
        let reply = f
            .scheduler
            .commit(&a, &[success(&first[0], vec![])])
            .await
            .unwrap();
        assert!(reply.refused.is_empty(), "{:?}", reply.refused);
    }
    assert_eq!(f.task(&job, first[0].seq).await.state, TaskState::Succeeded);
    f.assert_counts(&job).await;

    // a restarts: its other lease is released at once, and its late report
    // of the old attempt is refused once the task is leased again.
    let second = f.lease(&a, 1).await;
    let a2 = f.register("a", Some(&a)).await;
    assert_ne!(a, a2);
    assert_eq!(f.task(&job, second[0].seq).await.state, TaskState::Queued);
    let again = f.lease(&b, 1).await;
    assert_eq!(again[0].attempt, 2);
    let err = f
        .scheduler
        .commit(&a, &[failure(&second[0])])
        .await
        .unwrap_err();
    assert_eq!(err, NodeError::UnknownNode(a.clone()));
    let reply = f
        .scheduler
        .commit(&b, &[success(&again[0], vec![])])
        .await
        .unwrap();
    assert!(reply.refused.is_empty());
    let job_row = f.store.job(None, &job).await.unwrap().unwrap();
    assert_eq!(job_row.state, JobState::Completed);
    f.assert_counts(&job).await;
    // The restarted node's old id is no longer known.
    let err = f.scheduler.lease(&a, 1, Duration::ZERO).await.unwrap_err();
    assert_eq!(err, NodeError::UnknownNode(a.clone()));
}

#[tokio::test]
async fn reports_may_name_only_files_uploaded_for_their_own_attempt() {
    let f = fixture(SchedulerConfig::default()).await;
    let job = f.job("app", 2).await;
    let a = f.register("a", None).await;
    let b = f.register("b", None).await;
    let keys = f.lease(&a, 2).await;
    let upload = |node: String, key: AttemptKey, bytes: &'static [u8]| {
        let scheduler = f.scheduler.clone();
        async move {
            scheduler
                .upload(&node, &key, UploadSource::Bytes(&Bytes::from_static(bytes)))
                .await
        }
    };
    let mine = upload(a.clone(), keys[0].clone(), b"result").await.unwrap();
    assert_eq!(mine.digest, Digest::of(b"result"));
    assert_eq!(mine.size, 6);
    // Only the node holding an attempt may upload for it.
    let err = upload(b.clone(), keys[0].clone(), b"junk")
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Refused(ref m) if m.contains("not leased to node")),
        "{err}"
    );
    let other = upload(a.clone(), keys[1].clone(), b"other").await.unwrap();

    let output = |file: Uploaded| OutputFile {
        path: "out.txt".into(),
        file,
    };
    let forged = Uploaded {
        receipt: "AAAA".into(),
        ..mine.clone()
    };
    let reply = f
        .scheduler
        .commit(
            &a,
            &[
                success(&keys[0], vec![output(forged)]),
                success(&keys[1], vec![output(mine.clone())]),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        reasons(&reply),
        [
            (keys[0].seq, RefusalReason::BadReceipt),
            (keys[1].seq, RefusalReason::BadReceipt)
        ]
    );
    assert_eq!(f.task(&job, keys[0].seq).await.state, TaskState::Running);
    let reply = f
        .scheduler
        .commit(
            &a,
            &[
                success(&keys[0], vec![output(mine.clone())]),
                success(&keys[1], vec![output(other)]),
            ],
        )
        .await
        .unwrap();
    assert!(reply.refused.is_empty(), "{:?}", reply.refused);
    let job_row = f.store.job(None, &job).await.unwrap().unwrap();
    let outputs = f.store.outputs(&job_row).await.unwrap();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0].sha256, mine.digest);
}

#[tokio::test]
async fn leases_a_node_does_not_confirm_are_released_after_the_lease_timeout() {
    let f = fixture(SchedulerConfig {
        lease_timeout: Duration::ZERO,
        ..SchedulerConfig::default()
    })
    .await;
    let job = f.job("app", 2).await;
    let a = f.register("a", None).await;
    let keys = f.lease(&a, 2).await;
    next_millisecond().await;
    // The node confirms the first lease only: the reply holding the second
    // never reached it.
    f.heartbeat(&a, &keys[..1]).await;
    assert_eq!(f.task(&job, keys[0].seq).await.state, TaskState::Running);
    let lost = f.task(&job, keys[1].seq).await;
    assert_eq!(lost.state, TaskState::Queued);
    let attempts = f.store.attempts(&job, keys[1].seq).await.unwrap();
    assert_eq!(attempts.len(), 1);
    let reason = attempts[0].failure.as_ref().unwrap();
    assert_eq!(reason.kind, FailureKind::NodeLost);
    assert!(
        reason.message.contains("did not confirm its lease"),
        "{reason}"
    );
    f.assert_counts(&job).await;
    // Confirming what it holds changes nothing.
    f.heartbeat(&a, &keys[..1]).await;
    assert_eq!(f.task(&job, keys[0].seq).await.state, TaskState::Running);
}

#[tokio::test]
async fn a_task_that_keeps_losing_its_node_fails_with_node_lost() {
    let f = fixture(SchedulerConfig {
        node_timeout: Duration::ZERO,
        max_node_losses: 2,
        ..SchedulerConfig::default()
    })
    .await;
    let job = f.job("app", 1).await;
    let a = f.register("a", None).await;
    assert_eq!(f.lease(&a, 1).await.len(), 1);
    next_millisecond().await;
    assert_eq!(f.scheduler.expire_silent_nodes().await.unwrap(), 1);
    // The first loss requeues it, without counting a failed attempt.
    let task = f.task(&job, 1).await;
    assert_eq!((task.state, task.failures), (TaskState::Queued, 0));
    let b = f.register("b", None).await;
    assert_eq!(f.lease(&b, 1).await[0].attempt, 2);
    next_millisecond().await;
    f.scheduler.expire_silent_nodes().await.unwrap();
    assert_eq!(f.task(&job, 1).await.state, TaskState::Failed);
    let job_row = f.store.job(None, &job).await.unwrap().unwrap();
    assert_eq!(job_row.state, JobState::Failed);
    let failure = job_row.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::NodeLost);
    assert!(
        failure.message.contains("lost its node 2 times"),
        "{failure}"
    );
    f.assert_counts(&job).await;
    let err = f.scheduler.heartbeat(
        Heartbeat {
            node_id: b.clone(),
            held: Vec::new(),
            unusable: None,
        },
        Duration::ZERO,
    );
    assert_eq!(err.await.unwrap_err(), NodeError::UnknownNode(b));
}

#[tokio::test]
async fn a_lease_that_cannot_be_assigned_goes_back_to_the_queue() {
    let f = fixture(SchedulerConfig::default()).await;
    let job = f.job("ghost", 1).await;
    let a = f.register("a", None).await;
    let err = f.scheduler.lease(&a, 1, Duration::ZERO).await.unwrap_err();
    assert!(
        matches!(err, NodeError::Unavailable(ref m) if m.contains("missing app version")),
        "{err}"
    );
    let task = f.task(&job, 1).await;
    assert_eq!((task.state, task.node), (TaskState::Queued, None));
    f.assert_counts(&job).await;
}

#[tokio::test]
async fn task_counters_equal_a_recount_whatever_happens() {
    let f = fixture(SchedulerConfig {
        lease_timeout: Duration::ZERO,
        max_node_losses: 100,
        ..SchedulerConfig::default()
    })
    .await;
    let job = f.job("app", 40).await;
    let mut nodes = [f.register("n0", None).await, f.register("n1", None).await];
    let mut held: Vec<(usize, AttemptKey)> = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for _ in 0..300 {
        let node = next(nodes.len() as u64) as usize;
        match next(6) {
            0 | 1 => {
                for key in f.lease(&nodes[node], 1 + next(3) as usize).await {
                    held.push((node, key));
                }
            }
            2 | 3 if !held.is_empty() => {
                let (owner, key) = held.swap_remove(next(held.len() as u64) as usize);
                let report = if next(2) == 0 {
                    success(&key, vec![])
                } else {
                    failure(&key)
                };
                // Sometimes the wrong node sends it.
                let sender = if next(4) == 0 { node } else { owner };
                f.scheduler.commit(&nodes[sender], &[report]).await.unwrap();
            }
            4 => {
                // A heartbeat that forgets one of the node's leases.
                let mine: Vec<AttemptKey> = held
                    .iter()
                    .filter(|(n, _)| *n == node)
                    .map(|(_, k)| k.clone())
                    .skip(1)
                    .collect();
                next_millisecond().await;
                f.heartbeat(&nodes[node], &mine).await;
            }
            _ => {
                // The node restarts.
                nodes[node] = f.register("n", Some(&nodes[node])).await;
                held.retain(|(n, _)| *n != node);
            }
        }
        f.assert_counts(&job).await;
    }
}
