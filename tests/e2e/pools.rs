//! Pools: each belongs to an account, other accounts cannot see or use it,
//! and a pool's jobs run only on the nodes registered with its id.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tessera_framework::accounts::Quotas;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, LOCAL_POOL};
use tessera_framework::node::{self, NodeConfig};
use tessera_framework::pools::NewPool;
use tessera_framework::protocol::{Coordinator, NodeError, NodeRegistration};

use crate::harness::{TestService, assert_api_error, eventually, hostile_assembly, plan_job};

fn pool(name: &str) -> NewPool {
    NewPool {
        name: name.into(),
        shared: false,
        ..NewPool::default()
    }
}

fn on_pool(pool: &str) -> SubmitJob {
    SubmitJob {
        pool: Some(pool.into()),
        ..plan_job(
            json!([{"name": "a", "params": {"behaviour": "ok"}},
                   {"name": "b", "params": {"behaviour": "ok"}}]),
            false,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_belong_to_their_account_and_run_jobs_only_on_their_nodes() {
    let mut svc = TestService::start(1).await;
    let alice = svc.account("alice", Quotas::default()).await;
    let bob = svc.account("bob", Quotas::default()).await;
    alice
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();

    let mine = alice.create_pool(&pool("mine")).await.unwrap();
    assert_eq!(
        (mine.id.as_str(), mine.account.as_str()),
        ("alice/mine", "alice")
    );
    assert!(!mine.shared && mine.nodes.is_empty());
    let names = |pools: Vec<tessera_framework::pools::Pool>| {
        pools.into_iter().map(|p| p.name).collect::<Vec<_>>()
    };
    assert_eq!(names(alice.pools().await.unwrap()), [LOCAL_POOL, "mine"]);

    // Bob sees only the shared pool; Alice's is not found, whatever he tries.
    assert_eq!(names(bob.pools().await.unwrap()), [LOCAL_POOL]);
    assert_api_error(
        bob.pool("mine").await,
        404,
        "not_found",
        "pool `mine` was not found",
    );
    assert_api_error(
        bob.delete_pool("mine").await,
        404,
        "not_found",
        "pool `mine` was not found",
    );
    bob.publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    assert_api_error(
        bob.submit(&on_pool("mine")).await,
        404,
        "not_found",
        "pool `mine` was not found",
    );
    // He may have a pool of the same name; it is a different pool.
    let his = bob.create_pool(&pool("mine")).await.unwrap();
    assert_eq!(his.id, "bob/mine");
    // Only admins share pools; only owners delete them.
    assert_api_error(
        bob.create_pool(&NewPool {
            name: "everyone".into(),
            shared: true,
            ..NewPool::default()
        })
        .await,
        403,
        "forbidden",
        "only an admin account may create shared pools",
    );
    assert_api_error(
        bob.delete_pool(LOCAL_POOL).await,
        403,
        "forbidden",
        "belongs to `admin`",
    );
    assert_api_error(
        svc.client.delete_pool(LOCAL_POOL).await,
        409,
        "conflict",
        "service's own pool",
    );
    assert_api_error(
        alice.create_pool(&pool("mine")).await,
        409,
        "conflict",
        "already exists",
    );
    assert_api_error(
        alice.create_pool(&pool("Not ok")).await,
        400,
        "invalid_request",
        "not a valid pool name",
    );
    assert_eq!(names(alice.pools().await.unwrap()), [LOCAL_POOL, "mine"]);

    // A job on Alice's pool waits: the embedded node serves only `local`,
    // where her other job runs to the end meanwhile.
    let waiting = alice.submit(&on_pool("mine")).await.unwrap();
    assert_eq!(waiting.pool, "mine");
    let local = crate::harness::wait(
        &alice,
        &alice.submit(&on_pool(LOCAL_POOL)).await.unwrap().id,
    )
    .await;
    assert_eq!(local.state, JobState::Completed, "{local:#?}");
    let waiting = alice.job(&waiting.id).await.unwrap();
    assert_eq!(waiting.state, JobState::Splitting, "{waiting:#?}");
    assert_eq!(alice.pool("mine").await.unwrap().queued_tasks, 1);
    assert_api_error(
        alice.delete_pool("mine").await,
        409,
        "conflict",
        "has 1 unfinished jobs",
    );

    // A node registering with the pool's id runs it.
    let service = svc.embedded.as_ref().unwrap().service.clone();
    let node = node::start(
        Arc::new(service.scheduler().clone()),
        service.runtime().clone(),
        NodeConfig {
            pool: mine.id.clone(),
            slots: 1,
            memory_bytes: 1 << 30,
            work_dir: svc.dir.path().join("alice-node"),
            remove_work_dir: true,
            heartbeat_interval: Duration::from_millis(200),
            hostname: "elsewhere".into(),
            address: "test".into(),
            agent: None,
            archive_limits: service.config().archive_limits.clone(),
            cache_bytes: tessera_framework::node::DEFAULT_CACHE_BYTES,
            worker: crate::harness::worker(),
            give_up_after: None,
        },
    )
    .unwrap();
    let node_id = node.id().await.unwrap();
    assert!(node_id.starts_with("elsewhere-"), "{node_id}");
    let done = crate::harness::wait(&alice, &waiting.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let tasks = alice.tasks(&done.id, None, None, None).await.unwrap().tasks;
    assert_eq!(tasks.iter().filter(|t| !t.name.starts_with('_')).count(), 2);
    assert!(
        tasks
            .iter()
            .all(|t| t.node.as_deref() == Some(node_id.as_str())),
        "{tasks:#?}"
    );
    let failing = alice
        .submit(&SubmitJob {
            pool: Some("mine".into()),
            ..plan_job(
                json!([{"name": "x", "params": {"behaviour": "guest-error"}}]),
                false,
            )
        })
        .await
        .unwrap();
    let failing = crate::harness::wait(&alice, &failing.id).await;
    assert_eq!(failing.state, JobState::Failed, "{failing:#?}");
    let shown = alice.pool("mine").await.unwrap();
    assert_eq!(shown.nodes.len(), 1);
    assert_eq!(
        (shown.nodes[0].id.as_str(), shown.nodes[0].slots),
        (node_id.as_str(), 1)
    );
    assert!(shown.nodes[0].is_live());
    assert_api_error(
        alice.delete_pool("mine").await,
        409,
        "conflict",
        "has 1 live nodes",
    );

    // Once its node has stopped, the pool can go; its jobs stay.
    node.stop().await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the node to be offline",
        || async { (!alice.pool("mine").await.unwrap().nodes[0].is_live()).then_some(()) },
    )
    .await;
    alice.delete_pool("mine").await.unwrap();
    assert_api_error(
        alice.pool("mine").await,
        404,
        "not_found",
        "pool `mine` was not found",
    );
    assert_eq!(alice.job(&done.id).await.unwrap().pool, "mine");
    // A failed job of a deleted pool cannot be run again there.
    assert_api_error(
        alice.reprocess(&failing.id).await,
        409,
        "conflict",
        "ran on the pool `mine`, which has been deleted",
    );
    assert_eq!(bob.pool("mine").await.unwrap().id, "bob/mine");
    // A node cannot join a pool that does not exist (any more).
    let refused = service
        .scheduler()
        .register(NodeRegistration {
            pool: mine.id.clone(),
            hostname: "elsewhere".into(),
            address: "test".into(),
            slots: 1,
            memory_bytes: 1 << 30,
            version: "test".into(),
            previous: None,
            agent: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused, NodeError::PoolGone("alice/mine".into()));
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_have_sizes_bounds_formulas_start_tasks_and_providers() {
    use tessera_framework::pools::{AutoscaleSpec, PoolChange, PoolSpec, ProviderSpec, StartTask};
    let mut svc = TestService::start(0).await;
    let carol = svc.account("carol", Quotas::default()).await;
    carol
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    let spec = PoolSpec {
        slots_per_node: 4,
        memory_per_slot_mib: Some(512),
        target_nodes: 2,
        min_nodes: 1,
        max_nodes: 5,
        start_task: Some(StartTask {
            app: Some("hostile".into()),
            version: None,
            image: None,
            program: "/app/setup.wasm".into(),
            args: vec!["--fast".into()],
            timeout_secs: 60,
        }),
        provider: Some(ProviderSpec::Local),
        ..PoolSpec::default()
    };
    let created = carol
        .create_pool(&NewPool {
            name: "sized".into(),
            shared: false,
            spec: spec.clone(),
        })
        .await
        .unwrap();
    assert_eq!(created.spec, spec);
    assert_eq!(carol.pool("sized").await.unwrap().spec, spec);

    // Resizing stays within the bounds; a formula takes over the target.
    let resized = carol.resize_pool("sized", 4).await.unwrap();
    assert_eq!(resized.spec.target_nodes, 4);
    assert_api_error(
        carol.resize_pool("sized", 9).await,
        400,
        "invalid_request",
        "target_nodes (9) must be from min_nodes (1) to max_nodes (5)",
    );
    let formula = "$TargetDedicatedNodes = min(3, $PendingTasks.GetSample(1));";
    let change = PoolChange {
        autoscale: Some(Some(AutoscaleSpec {
            formula: formula.into(),
            interval_secs: 5,
        })),
        max_nodes: Some(3),
        ..PoolChange::default()
    };
    let updated = carol.update_pool("sized", &change).await.unwrap();
    assert_eq!(updated.spec.autoscale.as_ref().unwrap().formula, formula);
    assert_eq!(
        updated.spec.target_nodes, 3,
        "the target follows the new maximum"
    );
    assert_eq!(
        updated.spec.slots_per_node, 4,
        "what the change does not name stays"
    );
    assert_api_error(
        carol.resize_pool("sized", 2).await,
        409,
        "conflict",
        "sized by its autoscale formula",
    );
    let removed = carol
        .update_pool(
            "sized",
            &PoolChange {
                autoscale: Some(None),
                start_task: Some(None),
                ..PoolChange::default()
            },
        )
        .await
        .unwrap();
    assert!(removed.spec.autoscale.is_none() && removed.spec.start_task.is_none());
    assert_eq!(
        carol
            .resize_pool("sized", 1)
            .await
            .unwrap()
            .spec
            .target_nodes,
        1
    );

    // Refusals, each naming what is wrong; nothing changes.
    let bad_formula = PoolChange {
        autoscale: Some(Some(AutoscaleSpec {
            formula: "$TargetDedicatedNodes = max(1,\n  $PendingTasks.GetSample(1) +);".into(),
            interval_secs: 5,
        })),
        ..PoolChange::default()
    };
    assert_api_error(
        carol.update_pool("sized", &bad_formula).await,
        400,
        "invalid_formula",
        "line 2, column",
    );
    let slurm = PoolChange {
        provider: Some(Some(ProviderSpec::Slurm {
            sbatch_args: vec![],
        })),
        ..PoolChange::default()
    };
    assert_api_error(
        carol.update_pool("sized", &slurm).await,
        403,
        "forbidden",
        "only an admin account may give a pool the `slurm` provider",
    );
    let missing_app = PoolChange {
        start_task: Some(Some(StartTask {
            app: Some("nope".into()),
            version: None,
            image: None,
            program: "setup.wasm".into(),
            args: vec![],
            timeout_secs: 60,
        })),
        ..PoolChange::default()
    };
    assert_api_error(
        carol.update_pool("sized", &missing_app).await,
        404,
        "not_found",
        "nope",
    );
    assert_api_error(
        carol
            .update_pool(
                "sized",
                &PoolChange {
                    min_nodes: Some(7),
                    ..PoolChange::default()
                },
            )
            .await,
        400,
        "invalid_request",
        "min_nodes (7) is more than max_nodes (3)",
    );
    assert_api_error(
        svc.client
            .update_pool(
                "local",
                &PoolChange {
                    provider: Some(Some(ProviderSpec::Local)),
                    ..PoolChange::default()
                },
            )
            .await,
        409,
        "conflict",
        "embedded node",
    );
    let now = carol.pool("sized").await.unwrap();
    assert_eq!(
        (
            now.spec.min_nodes,
            now.spec.max_nodes,
            now.spec.target_nodes
        ),
        (1, 3, 1)
    );
    assert_eq!(now.spec.provider, Some(ProviderSpec::Local));
    // An admin may give a pool any provider.
    let admins = svc
        .client
        .create_pool(&NewPool {
            name: "hpc".into(),
            shared: false,
            spec: PoolSpec {
                provider: Some(ProviderSpec::Slurm {
                    sbatch_args: vec!["--partition=ci".into()],
                }),
                ..PoolSpec::default()
            },
        })
        .await
        .unwrap();
    assert_eq!(admins.spec.provider.unwrap().kind(), "slurm");
    svc.stop().await;
}
