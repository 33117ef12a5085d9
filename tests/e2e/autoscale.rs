//! Pools sized by autoscale formulas, their agents started and stopped by
//! the `local` provider; formulas refused with their position and
//! evaluated without being applied.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, NodeState};
use tessera_framework::pools::{AutoscaleSpec, NewPool, PoolSpec, ProviderSpec};

use crate::harness::{TestService, assert_api_error, eventually, plan_job, until_empty};

async fn service() -> TestService {
    TestService::start_with(0, |c| {
        c.manager_tick = Duration::from_millis(200);
        c.autoscale_sample_period = Duration::from_millis(200);
    })
    .await
}

fn pool(name: &str, formula: &str) -> NewPool {
    NewPool {
        name: name.into(),
        shared: false,
        spec: PoolSpec {
            max_nodes: 2,
            autoscale: Some(AutoscaleSpec {
                formula: formula.into(),
                interval_secs: 1,
            }),
            provider: Some(ProviderSpec::Local),
            ..PoolSpec::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formula_on_pending_tasks_scales_a_local_pool_up_for_a_job_and_back_to_zero() {
    let mut svc = service().await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    c.create_pool(&pool(
        "elastic",
        "pending = $PendingTasks.GetSample(1);\n$TargetDedicatedNodes = min(2, pending);\n$NodeDeallocationOption = taskcompletion;",
    ))
    .await
    .unwrap();
    // Nothing to do: no nodes.
    let idle = eventually(Duration::from_secs(20), "a first evaluation", || async {
        c.pool("elastic").await.unwrap().autoscale_run
    })
    .await;
    assert_eq!(idle.target_nodes, Some(0), "{idle:#?}");
    assert!(c.pool("elastic").await.unwrap().nodes.is_empty());

    let tasks: Vec<_> = (0..8)
        .map(|i| json!({"name": format!("t{i}"), "params": {"behaviour": "busy", "millis": 400}}))
        .collect();
    let job = c
        .submit(&SubmitJob {
            pool: Some("elastic".into()),
            ..plan_job(json!(tasks), false)
        })
        .await
        .unwrap();
    // Watch the pool until the job ends.
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let done = loop {
        let live = c
            .pool("elastic")
            .await
            .unwrap()
            .nodes
            .iter()
            .filter(|n| n.is_live())
            .count();
        most = most.max(live);
        let current = c.job(&job.id).await.unwrap();
        if current.state.is_finished() {
            break current;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job did not finish: {current:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert!(most >= 2, "the pool grew to two nodes (saw {most})");
    let tasks = c.tasks(&done.id, None, None, None).await.unwrap().tasks;
    let nodes: BTreeSet<String> = tasks.iter().filter_map(|t| t.node.clone()).collect();
    let shown = c.pool("elastic").await.unwrap();
    for node in &nodes {
        let n = shown.nodes.iter().find(|n| &n.id == node).unwrap();
        assert!(
            n.agent.as_deref().is_some_and(|a| a.starts_with("local-")),
            "{n:#?}"
        );
    }
    assert!(shown.nodes.len() <= 4, "{:#?}", shown.nodes);

    // Back to zero once the work is done.
    eventually(
        Duration::from_secs(60),
        "the pool back to zero nodes",
        || async {
            let pool = c.pool("elastic").await.unwrap();
            let gone = pool.nodes.iter().all(|n| n.state == NodeState::Offline);
            (gone && pool.spec.target_nodes == 0).then_some(())
        },
    )
    .await;
    let run = c.pool("elastic").await.unwrap().autoscale_run.unwrap();
    assert_eq!(run.variables["pending"], json!([0.0]));
    assert_eq!(
        run.variables["$NodeDeallocationOption"],
        json!("taskcompletion")
    );
    // The provider forgets the agents that ended (their logs, state and
    // work folders).
    until_empty(&svc.dir.path().join("providers/local/admin_elastic")).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_formulas_are_refused_with_their_position_and_evaluate_applies_nothing() {
    let mut svc = service().await;
    let c = &svc.client;
    let cases = [
        ("$TargetDedicatedNodes = ;", "line 1, column 25"),
        ("$TargetDedicatedNodes = 1\n$x = 2;", "line 2, column 1"),
        (
            "$TargetDedicatedNodes = maxx(1, 2);",
            "unknown function `maxx`",
        ),
        ("$PendingTasks = 3;", "$PendingTasks is read-only"),
        (
            "$TargetDedicatedNodes = y;",
            "`y` is used before it is assigned",
        ),
        ("$TargetDedicatedNodes = $PendingTasks + 1;", "GetSample"),
        ("$TargetDedicatedNodes = (1 + 2;", "line 1, column"),
        ("$NodeDeallocationOption = sometimes;", "line 1, column 27"),
        ("", "no statements"),
    ];
    for (formula, expected) in cases {
        assert_api_error(
            c.create_pool(&pool("bad", formula)).await,
            400,
            "invalid_formula",
            expected,
        );
    }
    let too_long = "$x = 1;\n".repeat(101);
    assert_api_error(
        c.create_pool(&pool("bad", &too_long)).await,
        400,
        "invalid_formula",
        "100 statements",
    );
    assert_api_error(c.pool("bad").await, 404, "not_found", "bad");

    // A pool whose formula keeps it at zero, evaluated with other formulas.
    let created = c
        .create_pool(&pool("dry", "$TargetDedicatedNodes = 0;"))
        .await
        .unwrap();
    assert_eq!(created.spec.target_nodes, 0);
    let run = c
        .evaluate_autoscale(
            "dry",
            Some("half = 7 / 2;\nup = ceil(half);\nnow = $PendingTasks.GetSample(1);\n$TargetDedicatedNodes = max(up, round(2.5)) + now;\n$NodeDeallocationOption = terminate;"),
        )
        .await
        .unwrap();
    assert_eq!(run.error, None, "{run:#?}");
    assert_eq!(run.variables["half"], json!(3.5));
    assert_eq!(run.variables["up"], json!(4.0));
    assert_eq!(run.variables["now"], json!([0.0]));
    assert_eq!(run.target_nodes, Some(4));
    assert_eq!(run.deallocation.map(|d| d.as_str()), Some("terminate"));
    let failing = c
        .evaluate_autoscale(
            "dry",
            Some("$TargetDedicatedNodes = $PendingTasks.GetSample(TimeInterval_Hour, 90);"),
        )
        .await
        .unwrap();
    assert!(
        failing
            .error
            .as_deref()
            .is_some_and(|e| e.contains("statement 1")),
        "{failing:#?}"
    );
    assert_api_error(
        c.evaluate_autoscale("dry", Some("$x = ")).await,
        400,
        "invalid_formula",
        "line 1, column 6",
    );
    // Nothing was applied.
    let shown = c.pool("dry").await.unwrap();
    assert_eq!(shown.spec.target_nodes, 0);
    assert_eq!(
        shown.spec.autoscale.unwrap().formula,
        "$TargetDedicatedNodes = 0;"
    );
    svc.stop().await;
}
