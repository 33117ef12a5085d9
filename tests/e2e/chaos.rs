//! Chaos: node agents of a `local` provider pool killed with SIGKILL again
//! and again, and the service itself killed once, while a job of 500 tasks
//! runs; nothing is lost or done twice.

use std::path::Path;
use std::time::Duration;

use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{FailureKind, Job, JobState, TaskState};
use tessera_framework::pools::{NewPool, PoolSpec, ProviderSpec};
use tessera_portal_api::client::Client;

use crate::harness::{
    Server, busy_tasks, eventually, hostile_assembly, job_outputs, plan_job, signal, wait,
};

const TASKS: usize = 500;
const AGENT_KILLS: usize = 10;

fn job() -> SubmitJob {
    SubmitJob {
        pool: Some("chaos".into()),
        // Attempts lost with their node are requeued without counting as
        // retries; a failed attempt would show below.
        max_task_retries: Some(0),
        ..plan_job(busy_tasks(TASKS, 60), true)
    }
}

/// The process ids of the pool's live agents, from the provider's state
/// files.
fn agent_pids(data: &Path) -> Vec<u32> {
    let dir = data.join("providers/local/admin_chaos");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&path).unwrap_or_default())
                    .unwrap_or_default();
            if let Some(pid) = state["pid"].as_u64() {
                let pid = pid as u32;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let running = stat
                    .rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'));
                if running {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

async fn live_nodes(client: &Client, live: usize) {
    eventually(
        Duration::from_secs(60),
        &format!("{live} live nodes"),
        || async {
            let pool = client.pool("chaos").await.ok()?;
            (pool.nodes.iter().filter(|n| n.is_live()).count() >= live).then_some(())
        },
    )
    .await;
}

async fn running(client: &Client, id: &str) -> Job {
    let job = client.job(id).await.unwrap();
    assert!(
        !job.state.is_finished(),
        "the job ended before the faults were done: {job:#?}"
    );
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_killed_agents_and_a_killed_service_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = ["--slots", "0", "--node-timeout-secs", "3"];
    let server = Server::start_with(dir.path(), "127.0.0.1:0", &args).await;
    let listen = server.url.trim_start_matches("http://").to_owned();
    let c = server.client.clone();
    c.publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    c.create_pool(&NewPool {
        name: "chaos".into(),
        shared: false,
        spec: PoolSpec {
            target_nodes: 2,
            max_nodes: 2,
            slots_per_node: 1,
            provider: Some(ProviderSpec::Local),
            ..PoolSpec::default()
        },
    })
    .await
    .unwrap();
    live_nodes(&c, 2).await;

    // The fault-free run.
    let calm = wait(&c, &c.submit(&job()).await.unwrap().id).await;
    assert_eq!(calm.state, JobState::Completed, "{calm:#?}");
    let expected = job_outputs(&c, &calm.id).await;
    assert_eq!(
        expected.iter().filter(|o| o.0.is_some()).count(),
        TASKS,
        "one output per task"
    );

    // The same job, with faults.
    let id = c.submit(&job()).await.unwrap().id;
    eventually(Duration::from_secs(60), "the job to get going", || async {
        (c.job(&id).await.unwrap().progress.succeeded >= 20).then_some(())
    })
    .await;
    let mut server = Some(server);
    let mut kills = 0;
    while kills < AGENT_KILLS {
        if kills == AGENT_KILLS / 2 {
            // The service, once, while its agents work on.
            running(&c, &id).await;
            server.take().unwrap().kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            server = Some(Server::start_with(dir.path(), &listen, &args).await);
        }
        let pids = eventually(Duration::from_secs(60), "a live agent", || async {
            let pids = agent_pids(&data);
            (!pids.is_empty()).then_some(pids)
        })
        .await;
        running(&c, &id).await;
        signal(pids[kills % pids.len()], "-KILL");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let c = server.as_ref().unwrap().client.clone();
    let done = wait(&c, &id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");

    // The merged result and every task's output equal the fault-free run's.
    let got = job_outputs(&c, &id).await;
    assert_eq!(
        got, expected,
        "the outputs differ from the fault-free run's"
    );
    // Every task succeeded once: one succeeded attempt; any other attempt
    // lost its node (killed agents), none failed of itself.
    let tasks = c.tasks(&id, None, None, Some(1000)).await.unwrap().tasks;
    assert_eq!(tasks.len(), TASKS + 2, "the split, the tasks and the merge");
    let mut lost = 0;
    for task in &tasks {
        assert_eq!(task.state, TaskState::Succeeded, "{task:#?}");
        let detail = c.task(&id, &task.name).await.unwrap();
        let (succeeded, others): (Vec<_>, Vec<_>) = detail
            .attempt_history
            .iter()
            .partition(|a| a.state == TaskState::Succeeded);
        assert_eq!(succeeded.len(), 1, "{detail:#?}");
        for other in &others {
            let kind = other.failure.as_ref().map(|f| f.kind);
            assert_eq!(kind, Some(FailureKind::NodeLost), "{detail:#?}");
        }
        lost += others.len();
    }
    assert!(lost > 0, "the killed agents had attempts running");
    // Nothing is left running or leased.
    let pool = c.pool("chaos").await.unwrap();
    assert_eq!((pool.queued_tasks, pool.running_tasks), (0, 0), "{pool:#?}");
    assert!(pool.nodes.iter().all(|n| n.running_tasks == 0), "{pool:#?}");
    let status = server
        .take()
        .unwrap()
        .terminate(Duration::from_secs(60))
        .await;
    assert!(status.success(), "{status}");
    assert!(
        agent_pids(&data).is_empty(),
        "the service stopped its agents"
    );
}
