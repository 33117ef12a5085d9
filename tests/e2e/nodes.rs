//! Node agents: `tessera node` processes joining a pool over HTTP, and the
//! node protocol's refusals of nodes that are wrong, stale or hostile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, NodeState, TaskState};
use tessera_framework::pools::{NewPool, Pool};
use tessera_framework::protocol::{
    AttemptReport, Coordinator, Heartbeat, NodeError, NodeRegistration, Outcome, OutputFile,
    RefusalReason, UploadSource, Uploaded, Usage,
};
use tessera_portal_api::node_client::NodeClient;

use crate::harness::{
    Agent, TestService, busy_job, eventually, files_under, output_text, plan_job,
};

/// A service without an embedded node, the hostile app published, and a
/// pool of the admin's called `name`.
async fn service_with_pool(
    name: &str,
    adjust: impl FnOnce(&mut tessera_framework::service::ServiceConfig),
) -> (TestService, Pool) {
    let svc = TestService::start_with(0, adjust).await;
    svc.publish_hostile(&[]).await;
    let pool = svc
        .client
        .create_pool(&NewPool {
            name: name.into(),
            shared: false,
            ..NewPool::default()
        })
        .await
        .unwrap();
    (svc, pool)
}

fn registration(pool: &str) -> NodeRegistration {
    NodeRegistration {
        pool: pool.into(),
        hostname: "test-host".into(),
        address: "test".into(),
        slots: 1,
        memory_bytes: 1 << 30,
        version: "test".into(),
        previous: None,
        agent: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_node_agents_on_loopback_share_one_jobs_tasks() {
    let (mut svc, pool) = service_with_pool("farm", |_| {}).await;
    let token = pool
        .join_token
        .clone()
        .expect("create returns the join token");
    assert_eq!(token.len(), 64);
    let url = svc.client.url().to_owned();
    let dirs = svc.dir.path();
    let a = Agent::start(&url, &pool.id, &token, 1, &dirs.join("agent-a")).await;
    let b = Agent::start(&url, &pool.id, &token, 1, &dirs.join("agent-b")).await;
    assert_ne!(a.id, b.id);
    let shown = svc.client.pool("farm").await.unwrap();
    assert_eq!(shown.nodes.len(), 2);
    assert!(
        shown
            .nodes
            .iter()
            .all(|n| n.is_live() && n.slots == 1 && n.version == env!("CARGO_PKG_VERSION"))
    );
    assert!(
        shown.join_token.is_none(),
        "pool show never shows the token"
    );

    let job = svc.run(busy_job("farm", 12, 150, false)).await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let tasks = svc
        .client
        .tasks(&job.id, None, None, None)
        .await
        .unwrap()
        .tasks;
    let mut used = BTreeSet::new();
    for task in tasks.iter().filter(|t| !t.name.starts_with('_')) {
        let node = task.node.clone().unwrap();
        assert!(node == a.id || node == b.id, "{task:#?}");
        used.insert(node);
        assert_eq!(
            output_text(&svc.client, &job.id, Some(&task.name), "ok.txt").await,
            task.name
        );
        let detail = svc.client.task(&job.id, &task.name).await.unwrap();
        let attempt = &detail.attempt_history[0];
        assert!(attempt.wall_us >= 150_000, "{attempt:#?}");
        assert!(attempt.cpu_us > 0, "{attempt:#?}");
    }
    assert_eq!(used.len(), 2, "both agents ran tasks: {used:?}");

    // SIGTERM: each agent leaves its pool and loses its local files.
    for agent in [a, b] {
        assert!(agent.terminate(Duration::from_secs(30)).await.success());
    }
    let shown = svc.client.pool("farm").await.unwrap();
    assert!(
        shown.nodes.iter().all(|n| n.state == NodeState::Offline),
        "{shown:#?}"
    );
    for dir in ["agent-a", "agent-b"] {
        let left = files_under(&dirs.join(dir));
        assert!(left.is_empty(), "{dir} keeps {left:?}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_replaced_tokens_are_refused_and_the_agent_stops() {
    let (mut svc, pool) = service_with_pool("farm", |_| {}).await;
    let token = pool.join_token.clone().unwrap();
    let url = svc.client.url().to_owned();
    let wrong = NodeClient::new(&url, &pool.id, &"0".repeat(64)).unwrap();
    let err = wrong.register(registration(&pool.id)).await.unwrap_err();
    assert!(
        matches!(err, NodeError::TokenRefused(ref m) if m.contains("not the join token")),
        "{err}"
    );
    // A token is only good for its own pool.
    let other = svc
        .client
        .create_pool(&NewPool {
            name: "other".into(),
            shared: false,
            ..NewPool::default()
        })
        .await
        .unwrap();
    let crossed = NodeClient::new(&url, &pool.id, &token).unwrap();
    let err = crossed.register(registration(&other.id)).await.unwrap_err();
    assert!(
        matches!(err, NodeError::TokenRefused(ref m) if m.contains("is for pool")),
        "{err}"
    );
    // Raw HTTP without credentials.
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/nodes"))
        .json(&registration(&pool.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // A running agent is refused as soon as the token is replaced.
    let agent = Agent::start(&url, &pool.id, &token, 1, &svc.dir.path().join("agent")).await;
    let replaced = svc.client.pool_token("farm", true).await.unwrap();
    let new_token = replaced.join_token.unwrap();
    assert_ne!(new_token, token);
    assert_eq!(
        svc.client
            .pool_token("farm", false)
            .await
            .unwrap()
            .join_token
            .unwrap(),
        new_token
    );
    let status = agent.wait(Duration::from_secs(30)).await;
    assert!(!status.success(), "the agent ends with an error");
    let log = std::fs::read_to_string(svc.dir.path().join("agent.log")).unwrap();
    assert!(log.contains("join token"), "{log}");
    // The new token works.
    let fresh = Agent::start(&url, &pool.id, &new_token, 1, &svc.dir.path().join("fresh")).await;
    let job = svc.run(busy_job("farm", 2, 10, false)).await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    drop(fresh);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_nodes_cannot_act_for_other_nodes_or_pools_or_name_files_they_did_not_upload() {
    let (mut svc, a_pool) = service_with_pool("a", |_| {}).await;
    let b_pool = svc
        .client
        .create_pool(&NewPool {
            name: "b".into(),
            shared: false,
            ..NewPool::default()
        })
        .await
        .unwrap();
    let url = svc.client.url().to_owned();
    let a_client = NodeClient::new(&url, &a_pool.id, a_pool.join_token.as_ref().unwrap()).unwrap();
    let b_client =
        Arc::new(NodeClient::new(&url, &b_pool.id, b_pool.join_token.as_ref().unwrap()).unwrap());
    let honest = a_client.register(registration(&a_pool.id)).await.unwrap();
    let rogue = a_client.register(registration(&a_pool.id)).await.unwrap();
    let b_node = b_client.register(registration(&b_pool.id)).await.unwrap();

    // Pool b's work is not for pool a's nodes, whatever id they use.
    svc.client
        .submit(&busy_job("b", 1, 10, false))
        .await
        .unwrap();
    let err = a_client
        .lease(&b_node.node_id, 10, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "node_unknown", "{err}");
    assert!(
        a_client
            .lease(&honest.node_id, 10, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    // The honest node takes a's task.
    let job = svc
        .client
        .submit(&SubmitJob {
            max_task_retries: Some(1),
            ..busy_job("a", 1, 10, false)
        })
        .await
        .unwrap();
    let leased = eventually(Duration::from_secs(30), "a lease", || async {
        let got = a_client
            .lease(&honest.node_id, 10, Duration::from_millis(200))
            .await
            .unwrap();
        (!got.is_empty()).then_some(got)
    })
    .await;
    // The job's first work is its split step.
    let key = leased[0].key.clone();
    assert_eq!(key.seq, 0);

    // The rogue node cannot upload for it, commit it, or name the honest
    // node's file; a forged node key is an unknown node.
    let upload = |node: &str, bytes: &'static [u8]| {
        let (key, node) = (key.clone(), node.to_owned());
        let client = &a_client;
        async move {
            client
                .upload(&node, &key, UploadSource::Bytes(&Bytes::from_static(bytes)))
                .await
        }
    };
    let err = upload(&rogue.node_id, b"forged").await.unwrap_err();
    assert!(
        matches!(err, NodeError::Refused(ref m) if m.contains("not leased to node")),
        "{err}"
    );
    let real: Uploaded = upload(&honest.node_id, b"real").await.unwrap();
    let report = |outputs: Vec<OutputFile>| AttemptReport {
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
    };
    let output = |file: Uploaded| OutputFile {
        path: "ok.txt".into(),
        file,
    };
    let reply = a_client
        .commit(&rogue.node_id, &[report(vec![])])
        .await
        .unwrap();
    assert_eq!(reply.refused.len(), 1);
    assert_eq!(reply.refused[0].reason, RefusalReason::LeaseLost);
    let reply = a_client
        .commit(&rogue.node_id, &[report(vec![output(real.clone())])])
        .await
        .unwrap();
    assert_eq!(reply.refused[0].reason, RefusalReason::BadReceipt);
    // An upload of another attempt or account cannot be named either.
    let stranger = Uploaded {
        digest: tessera_framework::digest::Digest::of(b"someone else's"),
        size: 14,
        receipt: real.receipt.clone(),
    };
    let reply = a_client
        .commit(&honest.node_id, &[report(vec![output(stranger)])])
        .await
        .unwrap();
    assert_eq!(reply.refused[0].reason, RefusalReason::BadReceipt);
    let task = svc.client.task(&job.id, "_split").await.unwrap().task;
    assert_eq!(
        task.state,
        TaskState::Running,
        "refused reports change nothing"
    );

    // Nodes cannot store compiled code: there is no such route.
    let response = reqwest::Client::new()
        .put(format!(
            "{url}/v1/nodes/{}/artifacts/x/processor/{}.cwasm",
            honest.node_id, real.digest
        ))
        .header(
            "authorization",
            format!(
                "TesseraNode {}:{}",
                a_pool.id,
                a_pool.join_token.as_ref().unwrap()
            ),
        )
        .header("x-tessera-node-key", &honest.node_key)
        .body(vec![0u8; 16])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405, "{:?}", response.text().await);
    // A forged node key makes the node unknown.
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/nodes/{}/heartbeat", honest.node_id))
        .header(
            "authorization",
            format!(
                "TesseraNode {}:{}",
                a_pool.id,
                a_pool.join_token.as_ref().unwrap()
            ),
        )
        .header("x-tessera-node-key", &rogue.node_key)
        .json(&Heartbeat {
            node_id: honest.node_id.clone(),
            held: Vec::new(),
            unusable: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // A file of another account is not fetched.
    let err = a_client
        .fetch_file(
            &honest.node_id,
            &tessera_framework::digest::Digest::of(b"nobody"),
            &svc.dir.path().join("x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, NodeError::Refused(ref m) if m.contains("not found")),
        "{err}"
    );

    // The honest node's own report counts (a split without a plan fails
    // its attempt), and the service serves a normal job on a real agent.
    let reply = a_client
        .commit(&honest.node_id, &[report(vec![output(real)])])
        .await
        .unwrap();
    assert!(reply.refused.is_empty(), "{:?}", reply.refused);
    let attempts = svc
        .client
        .task(&job.id, "_split")
        .await
        .unwrap()
        .attempt_history;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].node, honest.node_id);
    for node in [&honest.node_id, &rogue.node_id] {
        a_client.deregister(node).await.unwrap();
    }
    let agent = Agent::start(
        &url,
        &a_pool.id,
        a_pool.join_token.as_ref().unwrap(),
        1,
        &svc.dir.path().join("agent"),
    )
    .await;
    let done = crate::harness::wait(&svc.client, &job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    drop(agent);
    drop(b_client);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_of_a_node_that_vanishes_runs_elsewhere_and_a_refused_node_serves_on() {
    let (mut svc, pool) = service_with_pool("farm", |c| {
        c.scheduler.node_timeout = Duration::from_secs(2);
        c.scheduler.lease_timeout = Duration::from_secs(2);
    })
    .await;
    let url = svc.client.url().to_owned();
    let token = pool.join_token.clone().unwrap();
    let ghost_client = NodeClient::new(&url, &pool.id, &token).unwrap();
    let ghost = ghost_client.register(registration(&pool.id)).await.unwrap();
    let job = svc
        .client
        .submit(&busy_job("farm", 4, 10, false))
        .await
        .unwrap();
    // The ghost leases the split and is never heard from again.
    let leased = eventually(Duration::from_secs(30), "a lease", || async {
        let got = ghost_client
            .lease(&ghost.node_id, 10, Duration::from_millis(200))
            .await
            .unwrap();
        (!got.is_empty()).then_some(got)
    })
    .await;
    let started = std::time::Instant::now();
    let agent = Agent::start(&url, &pool.id, &token, 1, &svc.dir.path().join("agent")).await;
    let done = crate::harness::wait(&svc.client, &job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let split = svc.client.task(&job.id, "_split").await.unwrap();
    assert_eq!(split.attempt_history.len(), 2, "{split:#?}");
    let lost = &split.attempt_history[0];
    assert_eq!(lost.node, ghost.node_id);
    assert_eq!(
        lost.failure.as_ref().unwrap().kind,
        tessera_framework::model::FailureKind::NodeLost
    );
    assert_eq!(split.attempt_history[1].node, agent.id);
    // Within the node timeout and a sweep or two, not minutes.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // The ghost's late report is refused; it is no longer known at all.
    let late = AttemptReport {
        key: leased[0].key.clone(),
        outcome: Outcome::Failed(tessera_framework::model::Failure::new(
            tessera_framework::model::FailureKind::GuestError,
            "late",
        )),
        stdout: None,
        stderr: None,
        started_at: 1,
        finished_at: 2,
        usage: Usage::default(),
    };
    let err = ghost_client
        .commit(&ghost.node_id, std::slice::from_ref(&late))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "node_unknown", "{err}");

    // A live node whose report is refused keeps serving other work.
    let stale = ghost_client.register(registration(&pool.id)).await.unwrap();
    drop(agent);
    let job = svc
        .client
        .submit(&busy_job("farm", 1, 10, false))
        .await
        .unwrap();
    let mut late = late;
    late.key.job_id = job.id.clone();
    let reply = ghost_client.commit(&stale.node_id, &[late]).await.unwrap();
    assert_eq!(reply.refused[0].reason, RefusalReason::LeaseLost);
    let served = eventually(
        Duration::from_secs(30),
        "a lease after the refusal",
        || async {
            let got = ghost_client
                .lease(&stale.node_id, 10, Duration::from_millis(200))
                .await
                .unwrap();
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    let reply = ghost_client
        .commit(
            &stale.node_id,
            &[AttemptReport {
                key: served[0].key.clone(),
                outcome: Outcome::Failed(tessera_framework::model::Failure::new(
                    tessera_framework::model::FailureKind::GuestError,
                    "fine",
                )),
                stdout: None,
                stderr: None,
                started_at: 1,
                finished_at: 2,
                usage: Usage::default(),
            }],
        )
        .await
        .unwrap();
    assert!(reply.refused.is_empty(), "{:?}", reply.refused);
    let attempts = svc
        .client
        .task(&job.id, "_split")
        .await
        .unwrap()
        .attempt_history;
    assert_eq!(attempts[0].node, stale.node_id);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_task_prepares_each_node_and_a_failing_one_keeps_the_node_out_of_work() {
    use tessera_framework::pools::{PoolSpec, StartTask};
    use tessera_samples::fixtures::ECHO_COMMAND;
    let mut svc = TestService::start_with(0, |_| {}).await;
    svc.publish_hostile(&[("echo.wasm", ECHO_COMMAND), ("data.txt", b"shared data")])
        .await;
    let c = &svc.client;
    let start_task = |args: &[&str]| StartTask {
        app: Some("hostile".into()),
        version: None,
        image: None,
        program: "/app/echo.wasm".into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        timeout_secs: 60,
    };
    let new_pool = |name: &str, task: StartTask| NewPool {
        name: name.into(),
        shared: false,
        spec: PoolSpec {
            start_task: Some(task),
            ..PoolSpec::default()
        },
    };
    let url = c.url().to_owned();
    // A pool with this start task, joined by one agent; the agent and its
    // node once the node is in `state`.
    let joined = |name: &'static str, task: StartTask, state: NodeState| {
        let (c, url, dir) = (c.clone(), url.clone(), svc.dir.path().join(name));
        async move {
            let pool = c.create_pool(&new_pool(name, task)).await.unwrap();
            let token = pool.join_token.as_ref().unwrap();
            let agent = Agent::start(&url, &pool.id, token, 1, &dir).await;
            let node = eventually(
                Duration::from_secs(30),
                &format!("a node of {name} to be {state}"),
                || async {
                    let shown = c.pool(name).await.unwrap();
                    shown
                        .nodes
                        .into_iter()
                        .find(|n| n.id == agent.id && n.state == state)
                },
            )
            .await;
            (agent, node)
        }
    };
    let (agent, node) = joined(
        "prepared",
        start_task(&["--copy", "/app/data.txt", "/shared/data.txt"]),
        NodeState::Idle,
    )
    .await;
    assert_eq!(
        node.start_task_stdout.as_deref(),
        Some("--copy /app/data.txt /shared/data.txt\n")
    );
    assert_eq!(node.start_task_stderr.as_deref(), Some("echo-stderr\n"));
    // Tasks read what it left in /shared, and cannot write there.
    let run_program = |name: &str, args: &[&str]| json!({"name": name, "params": {"behaviour": "run-program", "program": "/app/echo.wasm", "args": args}});
    let job = svc
        .run(SubmitJob {
            pool: Some("prepared".into()),
            ..plan_job(
                json!([
                    run_program(
                        "read",
                        &["--copy", "/shared/data.txt", "/output/copied.txt"]
                    ),
                    run_program("write", &["--copy", "/app/data.txt", "/shared/mine.txt"]),
                ]),
                false,
            )
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    assert_eq!(
        output_text(c, &job.id, Some("read"), "copied.txt").await,
        "shared data"
    );
    assert_eq!(
        output_text(c, &job.id, Some("read"), "status.txt").await,
        "0"
    );
    assert_eq!(
        output_text(c, &job.id, Some("write"), "status.txt").await,
        "1"
    );
    drop(agent);

    // A start task that fails: the node is shown with the reason and gets
    // no work.
    let (agent, node) = joined(
        "broken",
        start_task(&["--exit", "3"]),
        NodeState::StartTaskFailed,
    )
    .await;
    // WASI preview 2 programs exit with success or failure only: `--exit 3`
    // is status 1.
    let reason = node.reason.unwrap();
    assert!(
        reason.contains("exited with status 1") && reason.contains("echo-stderr"),
        "{reason}"
    );
    let waiting = c.submit(&busy_job("broken", 1, 10, false)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let split = c.task(&waiting.id, "_split").await.unwrap().task;
    assert_eq!(split.state, TaskState::Queued, "{split:#?}");
    drop(agent);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_cache_of_fetched_files_stays_within_its_bound() {
    use tessera_framework::jobs::InputRef;
    let (mut svc, pool) = service_with_pool("small", |_| {}).await;
    let c = &svc.client;
    // Six inputs of 600 KiB, each copied by its own task, then all of them
    // read again by the merge: 3.6 MB through a cache of 1 MiB.
    let mut inputs = Vec::new();
    let mut contents = Vec::new();
    for i in 0..6u8 {
        let bytes: Vec<u8> = (0..600 << 10)
            .map(|j: u32| (j as u8) ^ i.wrapping_mul(37))
            .collect();
        let file = c.upload_bytes(bytes.clone().into()).await.unwrap();
        inputs.push(InputRef {
            name: format!("in{i}.bin"),
            sha256: file.sha256,
        });
        contents.push(bytes);
    }
    let work_dir = svc.dir.path().join("agent");
    let token = pool.join_token.clone().unwrap();
    let _agent = Agent::start_with(
        c.url(),
        &pool.id,
        &token,
        1,
        &work_dir,
        &["--cache-mib", "1"],
    )
    .await;
    let job = svc
        .run(SubmitJob {
            pool: Some("small".into()),
            inputs,
            ..crate::harness::hostile_job(json!({"mode": "list-inputs"}))
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    for (i, bytes) in contents.iter().enumerate() {
        let name = format!("in{i}.bin");
        let task = format!("in-{i}");
        let got = crate::harness::output(c, &job.id, Some(&task), &name).await;
        assert!(got == *bytes, "task {task} copied {name} wrongly");
    }
    // What is left is within the bound: the merge's six files were held
    // together while it ran, then evicted once it let them go.
    let cached: u64 = files_under(&work_dir.join("cache/files"))
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    assert!(cached > 0 && cached <= 1 << 20, "{cached} bytes cached");
    svc.stop().await;
}
