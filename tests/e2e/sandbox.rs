//! Misbehaving guests: every kind of bad processor, splitter and merge
//! fails only its own attempt, with the right failure kind and a clear
//! message, and the node goes on running good work.

use serde_json::json;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{Failure, FailureKind, JobState, TaskState};

use crate::harness::{TestService, files_under, hostile_job, output_text, params, plan_job};

/// A service with 2 slots, at most 1000 tasks per job, and the test limits
/// (256 MiB of memory, 1 MiB of logs, 64 MiB of output per attempt).
async fn service() -> TestService {
    let svc = TestService::start_with(2, |c| c.scheduler.max_tasks_per_job = 1000).await;
    svc.publish_hostile(&[]).await;
    svc
}

fn assert_failure(failure: Option<&Failure>, kind: FailureKind, message: &str, what: &str) {
    let failure = failure.unwrap_or_else(|| panic!("{what}: no failure"));
    assert_eq!(failure.kind, kind, "{what}: {failure:?}");
    assert!(
        failure.message.contains(message),
        "{what}: {:?} should contain {message:?}",
        failure.message
    );
}

/// Checks that the node still runs good work: a montecarlo job submitted
/// while another job's guest spins in the other slot completes.
async fn assert_still_healthy(svc: &TestService) {
    let spinning = svc
        .client
        .submit(&SubmitJob {
            task_timeout_secs: Some(600),
            ..plan_job(
                json!([{"name": "spin", "params": {"behaviour": "loop"}}]),
                false,
            )
        })
        .await
        .unwrap();
    let good = svc
        .run(SubmitJob {
            app: "montecarlo".into(),
            parameters: params(json!({"paths": 4000, "tasks": 4})),
            ..SubmitJob::default()
        })
        .await;
    assert_eq!(good.state, JobState::Completed, "{good:#?}");
    assert_eq!(good.progress.succeeded, 4);
    let spinning = svc.client.job(&spinning.id).await.unwrap();
    assert_eq!(spinning.state, JobState::Running, "{spinning:#?}");
    assert_eq!(spinning.progress.running, 1);
    svc.client.cancel(&spinning.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_processors_fail_only_their_own_task() {
    let mut svc = service().await;
    svc.publish_sample("montecarlo").await;
    let behaviours = [
        "trap",
        "guest-error",
        "oom",
        "stack-overflow",
        "flood",
        "huge-file",
        "write-outside",
        "read-outside",
    ];
    let tasks: Vec<_> = behaviours
        .iter()
        .map(|b| json!({"name": b, "params": {"behaviour": b}}))
        .collect();
    let looping = svc
        .client
        .submit(&SubmitJob {
            task_timeout_secs: Some(2),
            ..plan_job(
                json!([{"name": "loop", "params": {"behaviour": "loop"}}]),
                false,
            )
        })
        .await
        .unwrap();
    let job = svc.run(plan_job(json!(tasks), true)).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!((job.progress.succeeded, job.progress.failed), (2, 6));
    assert_eq!(
        svc.client.task(&job.id, "_merge").await.map(|_| ()).ok(),
        None,
        "a job with failed tasks does not merge"
    );

    let c = &svc.client;
    for (name, kind, message) in [
        (
            "trap",
            FailureKind::Trap,
            "the guest panicked: requested trap",
        ),
        ("guest-error", FailureKind::GuestError, "requested failure"),
        (
            "oom",
            FailureKind::MemoryLimit,
            "the guest needed more than its memory limit of 256 MiB",
        ),
        ("stack-overflow", FailureKind::Trap, "stack"),
        (
            "flood",
            FailureKind::OutputLimit,
            "stdout passed its limit of 1 MiB",
        ),
        ("huge-file", FailureKind::OutputLimit, "/output"),
    ] {
        let detail = c.task(&job.id, name).await.unwrap();
        assert_eq!(detail.task.state, TaskState::Failed, "{name}");
        assert_eq!(detail.task.attempts, 1, "{name}: no retries");
        assert_failure(detail.task.failure.as_ref(), kind, message, name);
        assert_eq!(detail.attempt_history.len(), 1, "{name}");
    }
    let huge = c.task(&job.id, "huge-file").await.unwrap().task;
    assert!(
        huge.failure.unwrap().message.contains("64 MiB"),
        "the limit is named"
    );
    let flood = c.task(&job.id, "flood").await.unwrap();
    assert_eq!(flood.attempt_history[0].stdout_size, 1 << 20);
    // Failed attempts leave no outputs behind.
    let mut with_outputs: Vec<String> = c
        .outputs(&job.id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| o.task)
        .collect();
    with_outputs.dedup();
    assert_eq!(with_outputs, ["write-outside", "read-outside"]);
    let oom = c.task(&job.id, "oom").await.unwrap();
    assert!(oom.attempt_history[0].peak_memory <= 256 << 20);

    let refused = output_text(c, &job.id, Some("write-outside"), "refused.txt").await;
    let refused_paths: Vec<&str> = refused
        .lines()
        .map(|l| l.split_once(": ").unwrap().0)
        .collect();
    assert_eq!(
        refused_paths,
        [
            "/app/x",
            "/inputs/x",
            "/tmp/x",
            "/output/../x",
            "/etc/tessera-escape"
        ]
    );
    assert!(!std::path::Path::new("/tmp/x").exists());
    assert!(!std::path::Path::new("/etc/tessera-escape").exists());
    let escaped: Vec<_> = files_under(svc.dir.path())
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "x"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");

    let refused = output_text(c, &job.id, Some("read-outside"), "refused.txt").await;
    let refused_paths: Vec<&str> = refused
        .lines()
        .map(|l| l.split_once(": ").unwrap().0)
        .collect();
    assert_eq!(
        refused_paths,
        [
            "/etc/passwd",
            "/output/../../etc/passwd",
            "/inputs/../../../etc/hostname",
            "/proc/self/environ"
        ]
    );
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let secret = passwd.lines().next().unwrap_or("root:x:0:0");
    for o in c.outputs(&job.id).await.unwrap() {
        let bytes = c.output_bytes(&job.id, &o).await.unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(secret),
            "{o:?} holds /etc/passwd"
        );
    }

    let looping = crate::harness::wait(c, &looping.id).await;
    assert_eq!(looping.state, JobState::Failed);
    let spin = c.task(&looping.id, "loop").await.unwrap().task;
    assert_failure(
        spin.failure.as_ref(),
        FailureKind::Timeout,
        "the attempt ran past its wall-clock limit of 2 s",
        "loop",
    );
    assert_failure(
        looping.failure.as_ref(),
        FailureKind::Timeout,
        "first failure: task `loop`: timeout",
        "loop job",
    );

    assert_still_healthy(&svc).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_splitters_and_merges_fail_their_job_with_the_reason() {
    let mut svc = service().await;
    svc.publish_sample("montecarlo").await;
    let c = &svc.client;
    let plan = |tasks: serde_json::Value| {
        let plan = json!({"tasks": tasks, "merge": false}).to_string();
        hostile_job(json!({ "plan": plan }))
    };
    let cases: Vec<(&str, SubmitJob, FailureKind, &str)> = vec![
        (
            "trap",
            hostile_job(json!({"mode": "trap"})),
            FailureKind::Trap,
            "the split step failed: the guest panicked: split trap requested",
        ),
        (
            "loop",
            SubmitJob {
                task_timeout_secs: Some(2),
                ..hostile_job(json!({"mode": "loop"}))
            },
            FailureKind::Timeout,
            "the split step failed: the attempt ran past its wall-clock limit of 2 s",
        ),
        (
            "oom",
            hostile_job(json!({"mode": "oom"})),
            FailureKind::MemoryLimit,
            "the split step failed: the guest needed more than its memory limit of 256 MiB",
        ),
        (
            "error",
            hostile_job(json!({"mode": "error"})),
            FailureKind::GuestError,
            "the split step failed: split refused on request",
        ),
        (
            "many",
            hostile_job(json!({"mode": "many", "count": 5000})),
            FailureKind::InvalidPlan,
            "the splitter returned an invalid plan: it has 5000 tasks; a job may have at most 1000",
        ),
        (
            "cycle",
            plan(json!([
                {"name": "a", "depends_on": ["c"]},
                {"name": "b", "depends_on": ["a"]},
                {"name": "c", "depends_on": ["b"]},
                {"name": "d"},
            ])),
            FailureKind::InvalidPlan,
            "its task dependencies form a cycle (3 tasks can never start)",
        ),
        (
            "unknown dependency",
            plan(json!([{"name": "a", "depends_on": ["ghost"]}])),
            FailureKind::InvalidPlan,
            "task `a` depends on `ghost`, which is not a task of the job",
        ),
        (
            "bad task name",
            plan(json!([{"name": "../a"}])),
            FailureKind::InvalidPlan,
            "`../a` is not a valid task name",
        ),
        (
            "reserved variable",
            plan(json!([{"name": "a", "env": [["TESSERA_JOB_ID", "forged"]]}])),
            FailureKind::InvalidPlan,
            "may not set `TESSERA_JOB_ID`",
        ),
        (
            "merge trap",
            hostile_job(json!({
                "merge": "trap",
                "plan": json!({"tasks": [{"name": "a", "params": {"behaviour": "ok"}}], "merge": true}).to_string(),
            })),
            FailureKind::Trap,
            "the merge step failed: the guest panicked: merge trap requested",
        ),
        (
            "merge error",
            hostile_job(json!({
                "merge": "error",
                "plan": json!({"tasks": [{"name": "a", "params": {"behaviour": "ok"}}], "merge": true}).to_string(),
            })),
            FailureKind::GuestError,
            "the merge step failed: merge failed on request",
        ),
    ];
    let mut submitted = Vec::new();
    for (what, request, kind, message) in cases {
        let job = c.submit(&request).await.unwrap();
        submitted.push((what, job.id, kind, message));
    }
    for (what, id, kind, message) in submitted {
        let job = crate::harness::wait(c, &id).await;
        assert_eq!(job.state, JobState::Failed, "{what}: {job:#?}");
        assert_failure(job.failure.as_ref(), kind, message, what);
        assert!(job.finished_at.is_some(), "{what}");
        let step = if what.starts_with("merge") {
            "_merge"
        } else {
            "_split"
        };
        let detail = c.task(&id, step).await.unwrap();
        assert_eq!(detail.task.state, TaskState::Failed, "{what}");
        assert_eq!(detail.task.failure.as_ref().unwrap().kind, kind, "{what}");
        if step == "_split" {
            assert_eq!(job.progress.total, 0, "{what}: no task was created");
        } else {
            assert!(
                !c.outputs(&id)
                    .await
                    .unwrap()
                    .iter()
                    .any(|o| o.task.is_none()),
                "{what}: a failed merge leaves no job outputs"
            );
        }
    }

    assert_still_healthy(&svc).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_with_millions_of_tasks_or_huge_parameters_are_refused() {
    // Building a million tasks or 64 MiB of parameters takes more than the
    // usual 256 MiB; the job limit is the default million tasks.
    let mut svc = TestService::start_with(2, |c| c.scheduler.task_memory_bytes = 1 << 30).await;
    svc.publish_hostile(&[]).await;
    svc.publish_sample("montecarlo").await;
    for (what, parameters, message) in [
        (
            "huge-params",
            json!({"mode": "huge-params"}),
            "the splitter returned an invalid plan: task `huge` has 67108892 bytes of parameters; at most 65536 are allowed",
        ),
        (
            "over a million",
            json!({"mode": "many", "count": 1_000_001}),
            "the splitter returned an invalid plan: it has 1000001 tasks; a job may have at most 1000000",
        ),
    ] {
        let job = svc.run(hostile_job(parameters)).await;
        assert_eq!(job.state, JobState::Failed, "{what}: {job:#?}");
        assert_failure(
            job.failure.as_ref(),
            FailureKind::InvalidPlan,
            message,
            what,
        );
        assert_eq!(job.progress.total, 0, "{what}: no task was created");
        let split = svc.client.task(&job.id, "_split").await.unwrap();
        assert_eq!(
            split.task.attempts, 1,
            "{what}: an invalid plan is not retried"
        );
    }
    assert_still_healthy(&svc).await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_declaring_more_memory_than_its_limit_fails_before_it_runs() {
    use tessera_samples::fixtures::{GREEDY_PROCESSOR, HOSTILE_ASSEMBLY_TOML, HOSTILE_SPLITTER};
    let mut svc = service().await;
    svc.publish_sample("montecarlo").await;
    let assembly = crate::harness::zip_of(&[
        ("assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        ("splitter.wasm", HOSTILE_SPLITTER),
        ("processor.wasm", GREEDY_PROCESSOR),
    ]);
    svc.client
        .publish_bytes("greedy", assembly, None)
        .await
        .unwrap();
    let job = svc
        .run(SubmitJob {
            app: "greedy".into(),
            ..plan_job(json!([{"name": "a", "params": {"behaviour": "ok"}}]), false)
        })
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let task = svc.client.task(&job.id, "a").await.unwrap().task;
    assert_failure(
        task.failure.as_ref(),
        FailureKind::MemoryLimit,
        "memory limit of 256 MiB",
        "greedy",
    );
    assert!(svc.client.outputs(&job.id).await.unwrap().is_empty());
    assert_still_healthy(&svc).await;
    svc.stop().await;
}

/// The slot worker processes of the node whose work folder is under `dir`.
fn slot_workers(dir: &std::path::Path) -> Vec<i32> {
    let dir = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_worker =
            args.get(1).map(String::as_str) == Some(tessera_framework::node::WORKER_ARG);
        if is_worker && args.get(2).is_some_and(|slot| slot.starts_with(&dir)) {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_worker_that_dies_fails_only_the_attempt_it_ran_and_is_replaced() {
    let svc = TestService::start(1).await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    let job = c
        .submit(&SubmitJob {
            max_task_retries: Some(1),
            ..plan_job(
                json!([{"name": "a", "params": {"behaviour": "busy", "millis": 3000}},
                       {"name": "b", "params": {"behaviour": "ok"}}]),
                false,
            )
        })
        .await
        .unwrap();
    crate::harness::eventually(
        std::time::Duration::from_secs(30),
        "task a to run",
        || async {
            let task = c.task(&job.id, "a").await.ok()?.task;
            (task.state == TaskState::Running).then_some(())
        },
    )
    .await;
    let workers = slot_workers(svc.dir.path());
    assert_eq!(workers.len(), 1, "one slot, one worker: {workers:?}");
    // Let the attempt start in the worker, then kill the worker under it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // SAFETY: kill only sends a signal to a process this test started.
    assert_eq!(unsafe { libc::kill(workers[0], libc::SIGKILL) }, 0);
    let done = crate::harness::wait(c, &job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    let a = c.task(&job.id, "a").await.unwrap();
    assert_eq!(a.attempt_history.len(), 2, "{a:#?}");
    let first = a.attempt_history[0].failure.as_ref().unwrap();
    assert_eq!(first.kind, FailureKind::Internal);
    assert!(first.message.contains("worker process died"), "{first}");
    assert!(a.attempt_history[1].failure.is_none());
    let b = c.task(&job.id, "b").await.unwrap();
    assert_eq!(
        b.attempt_history.len(),
        1,
        "b never started before the crash: {b:#?}"
    );
    let now = slot_workers(svc.dir.path());
    assert_eq!(now.len(), 1, "the slot has a new worker");
    assert_ne!(now[0], workers[0]);
}
