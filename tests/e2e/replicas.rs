//! Several replicas of `tessera serve` on one PostgreSQL database and one
//! blob store are one service: a job submitted on one is watched,
//! cancelled and downloaded on another, a replica killed mid-job loses
//! nothing, and decisions taken on several replicas at once stay right.
//!
//! These tests need a PostgreSQL server: `TESSERA_TEST_POSTGRES`
//! (`postgres://user@host:port`, as `.ci/postgres.sh start` prints); they
//! say SKIPPED without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tessera_framework::accounts::Quotas;
use tessera_framework::digest::Digest;
use tessera_framework::model::{FailureKind, Job, JobState, TaskKind, TaskState};
use tessera_framework::pools::NewPool;
use tessera_portal_api::client::{Client, ClientError};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    Agent, Server, busy_job, eventually, hostile_assembly, job_outputs, output, test_storage, wait,
};

/// The PostgreSQL server to test on, or `None` (and a note) without one.
fn postgres() -> Option<String> {
    let server = std::env::var("TESSERA_TEST_POSTGRES")
        .ok()
        .filter(|v| !v.is_empty());
    if server.is_none() {
        eprintln!("SKIPPED: TESSERA_TEST_POSTGRES is not set (see .ci/postgres.sh)");
    }
    server
}

/// A TCP load balancer in front of the replicas, as any HTTP load balancer
/// would be: each connection goes to the next replica that accepts it.
struct Balancer {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(replicas: &[&Server]) -> Self {
        let backends: Arc<Vec<String>> = Arc::new(
            replicas
                .iter()
                .map(|r| r.url.trim_start_matches("http://").to_owned())
                .collect(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let first = next.fetch_add(1, Ordering::Relaxed);
                let backends = Arc::clone(&backends);
                tokio::spawn(async move {
                    for i in 0..backends.len() {
                        let backend = &backends[(first + i) % backends.len()];
                        if let Ok(mut outbound) = TcpStream::connect(backend).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                            return;
                        }
                    }
                });
            }
        });
        Self { url, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Two replicas on one database (named after the test's folder) and one
/// blob store, with `args` added to both, and the hostile app published
/// by the admin.
struct Replicas {
    dir: tempfile::TempDir,
    first: Option<Server>,
    second: Server,
}

impl Replicas {
    async fn start(server: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let database = format!("--database={}/replicas{name}", server.trim_end_matches('/'));
        let files: PathBuf = dir.path().join("files");
        let storage = format!(
            "--storage={}",
            test_storage(dir.path()).unwrap_or_else(|| files.display().to_string())
        );
        let mut all: Vec<&str> = vec![&database, &storage];
        all.extend_from_slice(args);
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let first = Server::start_with(&a, "127.0.0.1:0", &all).await;
        let second = Server::start_replica(&b, &a, &all).await;
        first
            .client
            .publish_bytes("hostile", hostile_assembly(), None)
            .await
            .unwrap();
        Self {
            dir,
            first: Some(first),
            second,
        }
    }

    fn first(&self) -> &Server {
        self.first.as_ref().expect("the first replica runs")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A pool `name` of the admin, and its join token.
async fn pool(c: &Client, name: &str) -> (String, String) {
    let pool = c
        .create_pool(&NewPool {
            name: name.into(),
            shared: false,
            ..NewPool::default()
        })
        .await
        .unwrap();
    (pool.id.clone(), pool.join_token.clone().unwrap())
}

/// Every task of a job by state, counted from the task list.
async fn recount(client: &Client, job: &Job) -> BTreeMap<&'static str, u64> {
    let mut counts = BTreeMap::new();
    let tasks = client
        .tasks(&job.id, None, None, Some(1000))
        .await
        .unwrap()
        .tasks;
    for task in tasks.iter().filter(|t| t.kind == TaskKind::Process) {
        *counts.entry(task.state.as_str()).or_insert(0) += 1;
    }
    counts
}

/// The job's own counters, in the shape of [`recount`] (states with none
/// left out).
fn counters(job: &Job) -> BTreeMap<&'static str, u64> {
    let p = &job.progress;
    [
        (TaskState::Blocked, p.blocked),
        (TaskState::Queued, p.queued),
        (TaskState::Running, p.running),
        (TaskState::Succeeded, p.succeeded),
        (TaskState::Failed, p.failed),
        (TaskState::Cancelled, p.cancelled),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(state, n)| (state.as_str(), n))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_a_killed_replica_through_the_other_with_nothing_lost_or_doubled() {
    let Some(server) = postgres() else { return };
    let mut replicas =
        Replicas::start(&server, &["--slots", "0", "--node-timeout-secs", "3"]).await;
    let balancer = Balancer::start(&[replicas.first(), &replicas.second]).await;
    let on_first = replicas.first().client.clone();
    let on_second = replicas.second.client.clone();
    let (pool, token) = pool(&on_second, "shared").await;
    let _a = Agent::start(&balancer.url, &pool, &token, 1, &replicas.path("agent-a")).await;
    let _b = Agent::start(&balancer.url, &pool, &token, 1, &replicas.path("agent-b")).await;

    // The fault-free run, submitted on one replica and watched on the other.
    let calm = on_first
        .submit(&busy_job("shared", 200, 40, true))
        .await
        .unwrap();
    let calm = wait(&on_second, &calm.id).await;
    assert_eq!(calm.state, JobState::Completed, "{calm:#?}");
    let expected = job_outputs(&on_second, &calm.id).await;
    assert_eq!(job_outputs(&on_first, &calm.id).await, expected);
    assert_eq!(expected.iter().filter(|o| o.0.is_some()).count(), 200);

    // The same job, submitted on the first replica, which is killed mid-job.
    let id = on_first
        .submit(&busy_job("shared", 200, 40, true))
        .await
        .unwrap()
        .id;
    eventually(Duration::from_secs(60), "the job to get going", || async {
        (on_second.job(&id).await.unwrap().progress.succeeded >= 20).then_some(())
    })
    .await;
    replicas.first.take().unwrap().kill();
    let job = on_second.job(&id).await.unwrap();
    assert!(
        !job.state.is_finished(),
        "the job ended before the kill: {job:#?}"
    );
    let done = wait(&on_second, &id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(
        job_outputs(&on_second, &id).await,
        expected,
        "the outputs differ from the fault-free run's"
    );
    // Downloaded from the surviving replica, the merged result is what its
    // digest says.
    let merged = expected
        .iter()
        .find(|o| o.0.is_none())
        .expect("a merged output");
    let bytes = output(&on_second, &id, None, &merged.1).await;
    assert_eq!(Digest::of(&bytes).to_string(), merged.2);
    // Every task succeeded exactly once; another attempt can only be one
    // that lost its node's lease with the killed replica.
    let tasks = on_second
        .tasks(&id, None, None, Some(1000))
        .await
        .unwrap()
        .tasks;
    assert_eq!(tasks.len(), 202, "the split, the tasks and the merge");
    for task in &tasks {
        assert_eq!(task.state, TaskState::Succeeded, "{task:#?}");
        let detail = on_second.task(&id, &task.name).await.unwrap();
        let succeeded = detail
            .attempt_history
            .iter()
            .filter(|a| a.state == TaskState::Succeeded)
            .count();
        assert_eq!(succeeded, 1, "{detail:#?}");
        for other in detail
            .attempt_history
            .iter()
            .filter(|a| a.state != TaskState::Succeeded)
        {
            let kind = other.failure.as_ref().map(|f| f.kind);
            assert_eq!(kind, Some(FailureKind::NodeLost), "{detail:#?}");
        }
    }
    assert_eq!(recount(&on_second, &done).await, counters(&done));
    let pool = on_second.pool("shared").await.unwrap();
    assert_eq!((pool.queued_tasks, pool.running_tasks), (0, 0), "{pool:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_submitting_and_cancelling_on_two_replicas_leave_every_job_in_one_state() {
    let Some(server) = postgres() else { return };
    let replicas = Replicas::start(&server, &["--slots", "0"]).await;
    let balancer = Balancer::start(&[replicas.first(), &replicas.second]).await;
    let admin = replicas.first().client.clone();
    let (pool, token) = pool(&admin, "shared").await;
    let _a = Agent::start(&balancer.url, &pool, &token, 2, &replicas.path("agent-a")).await;
    let _b = Agent::start(&balancer.url, &pool, &token, 2, &replicas.path("agent-b")).await;
    let clients = [
        replicas.first().client.clone(),
        replicas.second.client.clone(),
    ];

    // Eight clients, each submitting six jobs on one replica and cancelling
    // every other one on the other replica, some at once and some later.
    let mut runs = Vec::new();
    for client in 0..8usize {
        let (submit_on, cancel_on) = (
            clients[client % 2].clone(),
            clients[(client + 1) % 2].clone(),
        );
        runs.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for n in 0..6usize {
                let job = submit_on
                    .submit(&busy_job("shared", 6, 20, true))
                    .await
                    .unwrap();
                let cancel = n % 2 == 1;
                if cancel {
                    if n % 4 == 3 {
                        tokio::time::sleep(Duration::from_millis(150)).await;
                    }
                    match cancel_on.cancel(&job.id).await {
                        Ok(job) => assert_eq!(job.state, JobState::Cancelled, "{job:#?}"),
                        // It finished first: then it stays as it finished.
                        Err(ClientError::Api {
                            status, ref code, ..
                        }) => {
                            assert_eq!((status, code.as_str()), (409, "conflict"));
                        }
                        Err(e) => panic!("cancelling failed: {e}"),
                    }
                }
                mine.push((job.id, cancel));
            }
            mine
        }));
    }
    let mut jobs = Vec::new();
    for run in runs {
        jobs.extend(run.await.unwrap());
    }
    assert_eq!(jobs.len(), 48);
    for (id, cancelled) in &jobs {
        let done = wait(&clients[1], id).await;
        let seen_elsewhere = clients[0].job(id).await.unwrap();
        assert_eq!(
            seen_elsewhere.state, done.state,
            "both replicas see one state"
        );
        if *cancelled {
            assert!(
                matches!(done.state, JobState::Cancelled | JobState::Completed),
                "{done:#?}"
            );
        } else {
            assert_eq!(done.state, JobState::Completed, "{done:#?}");
        }
        match done.state {
            JobState::Completed => assert_eq!(done.progress.succeeded, 6, "{done:#?}"),
            _ => assert_eq!(
                (
                    done.progress.queued,
                    done.progress.running,
                    done.progress.blocked
                ),
                (0, 0, 0),
                "{done:#?}"
            ),
        }
        assert_eq!(
            recount(&clients[0], &done).await,
            counters(&done),
            "{done:#?}"
        );
    }
    // Nothing is left running or leased.
    let pool = admin.pool("shared").await.unwrap();
    assert_eq!((pool.queued_tasks, pool.running_tasks), (0, 0), "{pool:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_jobs_quota_holds_across_replicas_submitting_at_once() {
    let Some(server) = postgres() else { return };
    let replicas = Replicas::start(&server, &["--slots", "0"]).await;
    let admin = replicas.first().client.clone();
    // A shared pool with no nodes: the jobs stay pending.
    admin
        .create_pool(&NewPool {
            name: "idle".into(),
            shared: true,
            ..NewPool::default()
        })
        .await
        .unwrap();
    let keys = admin
        .create_account(&tessera_framework::accounts::NewAccount {
            name: "carol".into(),
            quotas: Quotas {
                max_pending_jobs: Some(3),
                ..Quotas::default()
            },
        })
        .await
        .unwrap();
    let carol = |server: &Server| {
        Client::new(&server.url)
            .unwrap()
            .with_credentials("carol", &keys.primary)
            .unwrap()
    };
    let on = [carol(replicas.first()), carol(&replicas.second)];
    on[0]
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    let mut submits = Vec::new();
    for n in 0..12usize {
        let client = on[n % 2].clone();
        submits.push(tokio::spawn(async move {
            client.submit(&busy_job("idle", 1, 10, true)).await
        }));
    }
    let (mut accepted, mut refused) = (0, 0);
    for submit in submits {
        match submit.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(ClientError::Api {
                status,
                code,
                message,
                ..
            }) => {
                assert_eq!(
                    (status, code.as_str()),
                    (429, "quota_exceeded"),
                    "{message}"
                );
                assert!(message.contains("max_pending_jobs is 3"), "{message}");
                refused += 1;
            }
            Err(e) => panic!("submitting failed: {e}"),
        }
    }
    assert_eq!((accepted, refused), (3, 9));
    let listed = on[1].jobs(None, None, None).await.unwrap();
    assert_eq!(listed.jobs.len(), 3, "{listed:#?}");
}
