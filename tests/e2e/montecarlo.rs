//! The montecarlo sample end to end, checked against a native computation.

use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{JobState, LogStream, TaskState};
use tessera_sample_montecarlo_model::{Model, RiskSummary, path_loss};

use crate::harness::TestService;

/// VaR and expected shortfall computed directly: every loss, sorted.
fn reference(paths: u64, seed: u64, horizon_days: u32, confidence: f64) -> (f64, f64) {
    let model = Model::new(seed, horizon_days);
    let mut losses: Vec<f64> = (0..paths).map(|i| path_loss(&model, i)).collect();
    losses.sort_by(f64::total_cmp);
    let n = losses.len();
    let m = ((n as f64 * confidence).ceil() as usize).clamp(1, n);
    let var = losses[m - 1];
    let tail = &losses[m - 1..];
    let es = tail.iter().rev().sum::<f64>() / tail.len() as f64;
    (var, es)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn montecarlo_matches_a_native_computation_whatever_the_task_count() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("montecarlo").await;
    let (paths, seed, horizon, confidence) = (30_000u64, 7u64, 5u32, 0.975f64);
    let (var, es) = reference(paths, seed, horizon, confidence);

    for tasks in [1u32, 7] {
        let mut parameters = serde_json::Map::new();
        for (k, v) in [
            ("paths", serde_json::json!(paths)),
            ("seed", serde_json::json!(seed)),
            ("horizon_days", serde_json::json!(horizon)),
            ("confidence", serde_json::json!(confidence)),
            ("tasks", serde_json::json!(tasks)),
        ] {
            parameters.insert(k.into(), v);
        }
        let job = svc
            .run(SubmitJob {
                app: "montecarlo".into(),
                parameters,
                ..SubmitJob::default()
            })
            .await;
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        assert_eq!(job.progress.total, u64::from(tasks));
        assert_eq!(job.progress.succeeded, u64::from(tasks));
        assert_eq!(job.progress.percent, 100.0);
        assert!(job.merge);

        let outputs = svc.client.outputs(&job.id).await.unwrap();
        let job_outputs: Vec<_> = outputs
            .iter()
            .filter(|o| o.task.is_none())
            .map(|o| o.path.as_str())
            .collect();
        assert_eq!(
            job_outputs,
            vec!["histogram.csv", "report.txt", "result.json"]
        );
        let task_outputs = outputs.iter().filter(|o| o.task.is_some()).count();
        assert_eq!(
            task_outputs,
            2 * tasks as usize,
            "tail.bin and histogram.json per task"
        );

        let result = outputs
            .iter()
            .find(|o| o.task.is_none() && o.path == "result.json")
            .unwrap();
        let summary: RiskSummary =
            serde_json::from_slice(&svc.client.output_bytes(&job.id, result).await.unwrap())
                .unwrap();
        assert_eq!(summary.paths, paths);
        assert_eq!(summary.tasks, u64::from(tasks));
        assert_eq!(
            summary.var.to_bits(),
            var.to_bits(),
            "VaR {} vs native {var}",
            summary.var
        );
        assert_eq!(
            summary.expected_shortfall.to_bits(),
            es.to_bits(),
            "ES {} vs native {es}",
            summary.expected_shortfall
        );

        // Every step ran once and kept its logs; the merge logged its result.
        let page = svc.client.tasks(&job.id, None, None, None).await.unwrap();
        assert_eq!(page.tasks.len(), tasks as usize + 2, "split, tasks, merge");
        assert!(
            page.tasks
                .iter()
                .all(|t| t.state == TaskState::Succeeded && t.attempts == 1)
        );
        let merge_log = svc
            .client
            .log(&job.id, "_merge", LogStream::Stderr, None)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&merge_log).contains("[INFO] VaR"),
            "merge stderr: {}",
            String::from_utf8_lossy(&merge_log)
        );

        // Download everything as a zip and as files.
        let dir = tempfile::tempdir().unwrap();
        let files = svc
            .client
            .download_outputs(&job.id, dir.path())
            .await
            .unwrap();
        assert_eq!(files.len(), outputs.len());
        let zip_path = dir.path().join("all.zip");
        svc.client.download_zip(&job.id, &zip_path).await.unwrap();
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
        assert_eq!(zip.len(), outputs.len());
        let mut from_zip = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("result.json").unwrap(), &mut from_zip)
            .unwrap();
        let again: RiskSummary = serde_json::from_str(&from_zip).unwrap();
        assert_eq!(again, summary);
    }
    svc.stop().await;
}
