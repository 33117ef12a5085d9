//! Durability with the real `tessera` binary: a service killed with SIGKILL
//! resumes its jobs on restart without losing or duplicating results, and
//! SIGTERM stops it cleanly, giving running tasks back.

use std::time::Duration;

use serde_json::json;
use tessera_framework::model::{JobState, LogStream, TaskState};
use tessera_portal_api::client::Client;

use crate::harness::{
    Server, busy_task_name, busy_tasks, eventually, hostile_assembly, output_text, plan_job,
};

async fn publish_hostile(client: &Client) {
    client
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_service_finishes_its_jobs_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2).await;
    let c = &server.client;
    publish_hostile(c).await;
    let early = c
        .submit(&plan_job(
            json!([{"name": "talk", "params": {"behaviour": "log"}}]),
            true,
        ))
        .await
        .unwrap();
    let early = crate::harness::wait(c, &early.id).await;
    assert_eq!(early.state, JobState::Completed, "{early:#?}");

    let job = c
        .submit(&plan_job(busy_tasks(12, 400), true))
        .await
        .unwrap();
    let id = job.id.as_str();
    eventually(
        Duration::from_secs(60),
        "two tasks to succeed",
        || async move {
            let job = c.job(id).await.unwrap();
            (job.progress.succeeded >= 2).then_some(())
        },
    )
    .await;
    let before = c.job(id).await.unwrap();
    assert_eq!(
        before.state,
        JobState::Running,
        "killed too late: {before:#?}"
    );
    server.kill();

    let server = Server::start(dir.path(), 2).await;
    let c = &server.client;
    let apps = c.apps().await.unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(
        (apps[0].name.as_str(), apps[0].latest_version),
        ("hostile", 1)
    );

    let job = crate::harness::wait(c, id).await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    assert_eq!((job.progress.total, job.progress.succeeded), (12, 12));
    let page = c.tasks(id, None, None, None).await.unwrap();
    assert_eq!(page.tasks.len(), 14, "split, 12 tasks, merge");
    for task in &page.tasks {
        assert_eq!(task.state, TaskState::Succeeded, "{task:?}");
        assert_eq!(task.failure, None, "{task:?}");
    }
    let outputs = c.outputs(id).await.unwrap();
    for i in 0..12 {
        let name = busy_task_name(i);
        let mine: Vec<&str> = outputs
            .iter()
            .filter(|o| o.task.as_deref() == Some(name.as_str()))
            .map(|o| o.path.as_str())
            .collect();
        assert_eq!(mine, ["ok.txt"], "{name}");
        assert_eq!(output_text(c, id, Some(&name), "ok.txt").await, name);
    }
    let merged = output_text(c, id, None, "merged.txt").await;
    let expected: String = (0..12)
        .map(|i| format!("{} ok.txt\n", busy_task_name(i)))
        .collect();
    assert_eq!(merged, expected);

    // The job finished before the kill is intact.
    let again = c.job(&early.id).await.unwrap();
    assert_eq!(again.state, JobState::Completed);
    assert_eq!(again.finished_at, early.finished_at);
    let stdout = c
        .log(&early.id, "talk", LogStream::Stdout, None)
        .await
        .unwrap();
    assert_eq!(&stdout[..], b"hello stdout\n");
    assert_eq!(
        output_text(c, &early.id, None, "merged.txt").await,
        "talk ok.txt\n"
    );
    assert_eq!(
        output_text(c, &early.id, Some("talk"), "ok.txt").await,
        "talk"
    );

    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_service_and_gives_running_tasks_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), 2).await;
    let c = &server.client;
    publish_hostile(c).await;
    let job = c
        .submit(&plan_job(busy_tasks(3, 60_000), false))
        .await
        .unwrap();
    let id = job.id.as_str();
    eventually(
        Duration::from_secs(60),
        "two running tasks",
        || async move {
            let page = c
                .tasks(id, Some(TaskState::Running), None, None)
                .await
                .unwrap();
            (page.tasks.len() >= 2).then_some(())
        },
    )
    .await;

    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");

    // Restarted without slots, so that nothing runs: the interrupted tasks
    // are queued again, and the interruption is not counted as a failure.
    let server = Server::start(dir.path(), 0).await;
    let c = &server.client;
    let job = c.job(id).await.unwrap();
    assert_eq!(job.state, JobState::Running, "{job:#?}");
    assert_eq!((job.progress.queued, job.progress.failed), (3, 0));
    for i in 0..3 {
        let detail = c.task(id, &busy_task_name(i)).await.unwrap();
        assert_eq!(detail.task.state, TaskState::Queued);
        assert!(detail.attempt_history.is_empty(), "{detail:#?}");
    }
    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}
