//! The testshard sample end to end: every case's outcome, whatever the
//! shard count, matches the model's native evaluation.

use std::io::Read;

use serde_json::json;
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{FailureKind, JobState};
use tessera_sample_testshard_model::{CaseResult, Summary, parse_suite, run_native};

use crate::harness::{TestService, output, output_text, params};

/// The sample's application image, extracted to a temporary folder.
fn extract_image() -> tempfile::TempDir {
    let image = tessera_samples::get("testshard").unwrap().image.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(image)).unwrap();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let path = dir.path().join(entry.enclosed_name().unwrap());
        if entry.is_dir() {
            std::fs::create_dir_all(&path).unwrap();
        } else {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
    dir
}

/// (name, failure message) of every `<testcase>` of a JUnit report, the
/// message unescaped only for `&quot;`, `&lt;`, `&gt;` and `&amp;`.
fn junit_cases(xml: &str) -> Vec<(String, Option<String>)> {
    let attribute = |text: &str, name: &str| -> Option<String> {
        let start = text.find(&format!("{name}=\""))? + name.len() + 2;
        let end = start + text[start..].find('"')?;
        Some(
            text[start..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        )
    };
    xml.split("<testcase ")
        .skip(1)
        .map(|case| {
            let case = case.split("</testcase>").next().unwrap();
            let failure = case
                .find("<failure ")
                .and_then(|at| attribute(&case[at..], "message"));
            (attribute(case, "name").unwrap(), failure)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testshard_outcomes_match_the_native_ones_whatever_the_shard_count() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("testshard").await;
    let image = extract_image();
    let suite_text = std::fs::read_to_string(image.path().join("suite.json")).unwrap();
    let suite = parse_suite("suite.json", &suite_text).unwrap();
    let native: Vec<CaseResult> = run_native(&suite, "bin/checks.wasm", image.path(), 2);
    let native_failed: Vec<&str> = native
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name.as_str())
        .collect();
    assert!(!native_failed.is_empty() && native_failed.len() < native.len());

    for shards in [1u64, 3, 7] {
        let job = svc
            .run(SubmitJob {
                app: "testshard".into(),
                parameters: params(json!({ "shards": shards })),
                max_task_retries: Some(0),
                ..SubmitJob::default()
            })
            .await;
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        assert_eq!(job.progress.total, shards);

        let summary: Summary =
            serde_json::from_slice(&output(&svc.client, &job.id, None, "summary.json").await)
                .unwrap();
        assert_eq!(summary.tests, suite.cases.len() as u64);
        assert_eq!(summary.shards, shards);
        assert_eq!(summary.failures, native_failed, "{shards} shards");
        assert_eq!(summary.passed + summary.failed, summary.tests);

        let xml = output_text(&svc.client, &job.id, None, "junit.xml").await;
        assert!(
            xml.contains(&format!(
                "<testsuite name=\"testshard-demo\" tests=\"20\" failures=\"{}\"",
                native_failed.len()
            )),
            "{xml}"
        );
        let cases = junit_cases(&xml);
        assert_eq!(cases.len(), native.len(), "{xml}");
        for ((name, failure), expected) in cases.iter().zip(&native) {
            assert_eq!(name, &expected.name);
            assert_eq!(failure.is_some(), !expected.passed, "{name}: {failure:?}");
            // Programs that exit fail for the same reason natively; those
            // that do not (a trap, a missing program) say why in the host's
            // words.
            if expected.status.is_some() {
                assert_eq!(failure, &expected.message, "{name}");
            }
        }
        let failure_of = |name: &str| {
            cases
                .iter()
                .find(|(n, _)| n == name)
                .and_then(|(_, f)| f.clone())
                .unwrap()
        };
        assert_eq!(
            failure_of("add-wrong"),
            "expected exit status 0, got 1: assertion failed: 2 + 2 = 4, not 5"
        );
        assert!(
            failure_of("missing-program").contains("cannot load `bin/absent.wasm`"),
            "{}",
            failure_of("missing-program")
        );
        assert!(failure_of("panics").starts_with("the program did not run to an exit"));
        assert!(xml.contains("<system-out>Hello from the tessera application image."));

        // Each shard's results name only its own cases.
        let outputs = svc.client.outputs(&job.id).await.unwrap();
        let mut run = 0;
        for o in outputs.iter().filter(|o| o.task.is_some()) {
            assert_eq!(o.path, "intermediate/results.json");
            let results: Vec<CaseResult> =
                serde_json::from_slice(&svc.client.output_bytes(&job.id, o).await.unwrap())
                    .unwrap();
            run += results.len();
        }
        assert_eq!(run, suite.cases.len());
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testshard_runs_a_suite_given_as_input_and_refuses_a_bad_one() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("testshard").await;
    let toml = "name = \"mine\"\n\
                [[cases]]\nname = \"sum\"\nprogram = \"bin/checks.wasm\"\nargs = [\"add\", \"40\", \"2\", \"42\"]\nestimated_ms = 3\n\
                [[cases]]\nname = \"says-no\"\nprogram = \"bin/checks.wasm\"\nargs = [\"fail\", \"nope\"]\nestimated_ms = 1\n";
    let upload = |bytes: &'static str| {
        let client = &svc.client;
        async move {
            client
                .upload_bytes(bytes.as_bytes().to_vec().into())
                .await
                .unwrap()
                .sha256
        }
    };
    let job = svc
        .run(SubmitJob {
            app: "testshard".into(),
            parameters: params(json!({"suite": "mine.toml", "shards": 2})),
            inputs: vec![InputRef {
                name: "mine.toml".into(),
                sha256: upload(toml).await,
            }],
            max_task_retries: Some(0),
            ..SubmitJob::default()
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let summary: Summary =
        serde_json::from_slice(&output(&svc.client, &job.id, None, "summary.json").await).unwrap();
    assert_eq!(
        (summary.suite.as_str(), summary.tests, summary.failures),
        ("mine", 2, vec!["says-no".to_string()])
    );
    let xml = output_text(&svc.client, &job.id, None, "junit.xml").await;
    assert!(
        xml.contains("message=\"expected exit status 0, got 1: nope\""),
        "{xml}"
    );

    let job = svc
        .run(SubmitJob {
            app: "testshard".into(),
            parameters: params(json!({"suite": "broken.json"})),
            inputs: vec![InputRef {
                name: "broken.json".into(),
                sha256: upload("{\"cases\": [{\"name\": \"x\"}]}").await,
            }],
            max_task_retries: Some(0),
            ..SubmitJob::default()
        })
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let failure = job.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError);
    assert!(
        failure
            .message
            .contains("`broken.json` is not a valid suite: missing field `program`"),
        "{failure:?}"
    );
    svc.stop().await;
}
