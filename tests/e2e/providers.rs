//! Node providers other than `local`: the `command` provider's hooks, and
//! the `slurm` provider against a real Slurm (when the test script started
//! one).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, NodeState};
use tessera_framework::pools::{NewPool, PoolSpec, ProviderSpec};

use crate::harness::{TestService, assert_api_error, eventually, plan_job, until_empty};

async fn service() -> TestService {
    TestService::start_with(0, |c| {
        c.manager_tick = Duration::from_millis(200);
        c.autoscale_sample_period = Duration::from_millis(200);
    })
    .await
}

fn pool(name: &str, target_nodes: u32, provider: ProviderSpec) -> NewPool {
    NewPool {
        name: name.into(),
        shared: false,
        spec: PoolSpec {
            target_nodes,
            max_nodes: 4,
            provider: Some(provider),
            ..PoolSpec::default()
        },
    }
}

/// A job of `count` tasks of `millis` of work each.
fn busy_tasks(pool: &str, count: usize, millis: u64) -> SubmitJob {
    let tasks: Vec<_> = (0..count)
        .map(
            |i| json!({"name": format!("t{i}"), "params": {"behaviour": "busy", "millis": millis}}),
        )
        .collect();
    SubmitJob {
        pool: Some(pool.into()),
        ..plan_job(json!(tasks), false)
    }
}

/// Runs `job` on `pool` and checks that its tasks ran on nodes whose agents
/// the provider started (handles beginning with `prefix`), returning those
/// nodes.
async fn run_on_provider_nodes(
    svc: &TestService,
    job: SubmitJob,
    prefix: &str,
) -> BTreeSet<String> {
    let c = &svc.client;
    let pool = job.pool.clone().unwrap();
    let done = svc.run(job).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let tasks = c.tasks(&done.id, None, None, None).await.unwrap().tasks;
    let nodes: BTreeSet<String> = tasks.iter().filter_map(|t| t.node.clone()).collect();
    let shown = c.pool(&pool).await.unwrap();
    for node in &nodes {
        let n = shown.nodes.iter().find(|n| &n.id == node).unwrap();
        assert!(
            n.agent.as_deref().is_some_and(|a| a.starts_with(prefix)),
            "{n:#?}"
        );
    }
    nodes
}

/// Waits until `pool` has `live` live nodes, returning their agents.
async fn live_agents(svc: &TestService, pool: &str, live: usize) -> BTreeSet<String> {
    eventually(
        Duration::from_secs(90),
        &format!("{live} live nodes in {pool}"),
        || async {
            let shown = svc.client.pool(pool).await.unwrap();
            let agents: BTreeSet<String> = shown
                .nodes
                .iter()
                .filter(|n| n.state == NodeState::Idle || n.state == NodeState::Running)
                .filter_map(|n| n.agent.clone())
                .collect();
            (agents.len() == live).then_some(agents)
        },
    )
    .await
}

/// Waits until every node of `pool` is offline.
async fn all_offline(svc: &TestService, pool: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("every node of {pool} offline"),
        || async {
            let shown = svc.client.pool(pool).await.unwrap();
            shown
                .nodes
                .iter()
                .all(|n| n.state == NodeState::Offline)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_provider_starts_lists_and_stops_agents_through_its_hooks() {
    let mut svc = service().await;
    svc.publish_hostile(&[]).await;
    // Hooks as an admin would write them for processes on this machine:
    // each agent gets a folder holding its pid, log and work folder.
    let start = r#"mkdir -p "$TESSERA_AGENT"; "$TESSERA_PROGRAM" node --url "$TESSERA_URL" --pool "$TESSERA_POOL_ID" --slots "$TESSERA_NODE_SLOTS" --work-dir "$TESSERA_AGENT/work" --give-up-after-secs 60 > "$TESSERA_AGENT/log" 2>&1 < /dev/null & echo $! > "$TESSERA_AGENT/pid""#;
    let stop = r#"kill -TERM "$(cat "$TESSERA_AGENT/pid")" 2>/dev/null || true"#;
    let list = r#"for d in cmd-*; do [ -f "$d/pid" ] || continue; if kill -0 "$(cat "$d/pid")" 2>/dev/null; then echo "$d"; else rm -rf "$d"; fi; done"#;
    let provider = ProviderSpec::Command {
        start: start.into(),
        stop: stop.into(),
        list: list.into(),
    };
    let c = &svc.client;
    c.create_pool(&pool("hooks", 2, provider)).await.unwrap();
    let agents = live_agents(&svc, "hooks", 2).await;
    let hooks_dir = svc.dir.path().join("providers/command/admin_hooks");
    for agent in &agents {
        assert!(agent.starts_with("cmd-"), "{agent}");
        assert!(hooks_dir.join(agent).join("pid").is_file(), "{agent}");
    }
    let nodes = run_on_provider_nodes(&svc, busy_tasks("hooks", 8, 300), "cmd-").await;
    assert_eq!(nodes.len(), 2, "both agents ran tasks: {nodes:?}");

    // Scale down: the stop hook ends both agents, which deregister; the
    // list hook then forgets them.
    c.resize_pool("hooks", 0).await.unwrap();
    all_offline(&svc, "hooks").await;
    until_empty(&hooks_dir).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_an_auto_pool_runs_on_nodes_made_for_it_which_go_when_it_ends() {
    let mut svc = service().await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    let auto_pool = PoolSpec {
        target_nodes: 2,
        max_nodes: 2,
        provider: Some(ProviderSpec::Local),
        ..PoolSpec::default()
    };
    // Refused: a pool and an auto-pool at once, bad properties, and a
    // provider only admins may give.
    let on_both = SubmitJob {
        pool: Some("local".into()),
        auto_pool: Some(auto_pool.clone()),
        ..busy_tasks("local", 1, 1)
    };
    assert_api_error(
        c.submit(&on_both).await,
        400,
        "invalid_request",
        "both a `pool` and an `auto_pool`",
    );
    let inverted = SubmitJob {
        pool: None,
        auto_pool: Some(PoolSpec {
            min_nodes: 3,
            max_nodes: 1,
            ..auto_pool.clone()
        }),
        ..busy_tasks("local", 1, 1)
    };
    assert_api_error(
        c.submit(&inverted).await,
        400,
        "invalid_request",
        "auto_pool: ",
    );
    let bob = svc.account("bob", Default::default()).await;
    bob.publish_bytes("hostile", crate::harness::hostile_assembly(), None)
        .await
        .unwrap();
    let hooks = SubmitJob {
        pool: None,
        auto_pool: Some(PoolSpec {
            provider: Some(ProviderSpec::Command {
                start: "true".into(),
                stop: "true".into(),
                list: "true".into(),
            }),
            ..auto_pool.clone()
        }),
        ..busy_tasks("local", 1, 1)
    };
    assert_api_error(
        bob.submit(&hooks).await,
        403,
        "forbidden",
        "`command` provider",
    );
    assert_eq!(c.pools().await.unwrap().len(), 1, "nothing was created");

    let job = c
        .submit(&SubmitJob {
            pool: None,
            auto_pool: Some(auto_pool),
            ..busy_tasks("local", 8, 300)
        })
        .await
        .unwrap();
    let name = format!("auto-{}", job.id);
    assert_eq!(job.pool, name);
    let pool = c.pool(&name).await.unwrap();
    assert_eq!(pool.auto_job.as_deref(), Some(job.id.as_str()));
    assert_eq!(pool.account, "admin");
    let done = crate::harness::wait(c, &job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let tasks = c.tasks(&done.id, None, None, None).await.unwrap().tasks;
    assert!(tasks.iter().all(|t| t.node.is_some()), "{tasks:#?}");

    // Once the job has ended the pool goes, with its agents and their
    // folders.
    eventually(
        Duration::from_secs(60),
        "the auto-pool to be removed",
        || async {
            match c.pool(&name).await {
                Err(tessera_portal_api::client::ClientError::Api { status: 404, .. }) => Some(()),
                _ => None,
            }
        },
    )
    .await;
    let provider_dir = svc
        .dir
        .path()
        .join(format!("providers/local/admin_auto-{}", job.id));
    until_empty(&provider_dir).await;
    assert_eq!(
        c.job(&job.id).await.unwrap().pool,
        name,
        "the job still says where it ran"
    );
    svc.stop().await;
}

/// Whether the test script started a Slurm cluster for these tests
/// (`.ci/slurm.sh`); says so plainly when it did not.
fn slurm_available() -> bool {
    let wanted = std::env::var("TESSERA_TEST_SLURM").is_ok_and(|v| v == "1");
    let configured = std::env::var_os("SLURM_CONF").is_some();
    if !(wanted && configured) {
        eprintln!(
            "SKIPPED: the Slurm provider test needs a Slurm cluster: run `eval \"$(bash .ci/slurm.sh start DIR)\"` and set TESSERA_TEST_SLURM=1 (.ci/run does)"
        );
        return false;
    }
    true
}

/// The ids of the Slurm jobs named `name` that have not ended.
fn slurm_jobs(name: &str) -> Vec<String> {
    let out = std::process::Command::new("squeue")
        .args(["--noheader", "--format=%i", &format!("--name={name}")])
        .output()
        .expect("squeue runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slurm_provider_runs_a_job_on_agents_slurm_started_and_cancels_them_to_scale_down() {
    if !slurm_available() {
        return;
    }
    let mut svc = service().await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    let provider = ProviderSpec::Slurm {
        sbatch_args: vec!["--time=30".into()],
    };
    c.create_pool(&pool("hpc", 2, provider)).await.unwrap();
    let agents = live_agents(&svc, "hpc", 2).await;
    let job_name = "tessera-admin_hpc";
    let queued = slurm_jobs(job_name);
    for agent in &agents {
        let id = agent.strip_prefix("slurm-").expect("a Slurm agent handle");
        assert!(queued.iter().any(|q| q == id), "{agent} not in {queued:?}");
    }
    let nodes = run_on_provider_nodes(&svc, busy_tasks("hpc", 8, 300), "slurm-").await;
    assert!(!nodes.is_empty());

    // Scale down: scancel ends the agents, which deregister.
    c.resize_pool("hpc", 0).await.unwrap();
    all_offline(&svc, "hpc").await;
    eventually(
        Duration::from_secs(60),
        "the agents' Slurm jobs to end",
        || async { slurm_jobs(job_name).is_empty().then_some(()) },
    )
    .await;
    svc.stop().await;
}
