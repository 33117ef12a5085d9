//! The job life cycle through the HTTP API: files and inputs, submission
//! checks, dependencies and merge, environment, logs, retries, reprocess,
//! cancel, listing, and running WASI programs from the application image.

use std::time::Duration;

use serde_json::json;
use tessera_framework::digest::Digest;
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{FailureKind, JobInput, JobState, LogStream, OutputKind, TaskState};
use tessera_samples::fixtures::ECHO_COMMAND;

use crate::harness::{
    TestService, assert_api_error, eventually, hostile_job, output, output_text, params, plan_job,
};

/// Deterministic bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_stored_by_content_and_checked_against_their_digest() {
    let mut svc = TestService::start(0).await;
    let put = |digest: String, body: Vec<u8>| {
        let c = &svc.client;
        c.execute(
            c.raw(reqwest::Method::PUT, &format!("/v1/files/{digest}"))
                .body(body),
        )
    };
    let alpha = b"alpha\n".to_vec();
    let beta = noise(300_000);
    let (alpha_digest, beta_digest) = (Digest::of(&alpha), Digest::of(&beta));
    assert_eq!(
        svc.client
            .missing_files(&[alpha_digest, beta_digest])
            .await
            .unwrap(),
        [alpha_digest, beta_digest]
    );

    let first = put(alpha_digest.to_hex(), alpha.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let stored: serde_json::Value = first.json().await.unwrap();
    assert_eq!(stored, json!({"sha256": alpha_digest.to_hex(), "size": 6}));
    let again = put(alpha_digest.to_hex(), alpha.clone()).await.unwrap();
    assert_eq!(again.status().as_u16(), 200, "the second upload is a no-op");
    assert_eq!(
        svc.client
            .missing_files(&[alpha_digest, beta_digest])
            .await
            .unwrap(),
        [beta_digest]
    );

    let local = svc.dir.path().join("beta.bin");
    std::fs::write(&local, &beta).unwrap();
    let uploaded = svc.client.upload_file(&local).await.unwrap();
    assert_eq!((uploaded.sha256, uploaded.size), (beta_digest, 300_000));
    assert!(
        svc.client
            .missing_files(&[alpha_digest, beta_digest])
            .await
            .unwrap()
            .is_empty()
    );

    // A body that does not match its URL is refused and not kept.
    let before = svc.stored_files().await;
    let gamma = b"gamma\n".to_vec();
    let gamma_digest = Digest::of(&gamma);
    let response = put(alpha_digest.to_hex(), gamma.clone()).await.unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request");
    assert_eq!(
        body["message"],
        format!(
            "the uploaded content has sha256 {gamma_digest}, not {alpha_digest}: the upload was damaged or the wrong file was sent"
        )
    );
    assert_eq!(svc.stored_files().await, before);
    assert_eq!(
        svc.client.missing_files(&[gamma_digest]).await.unwrap(),
        [gamma_digest]
    );

    for bad in ["xyz", &"g".repeat(64), &alpha_digest.to_hex()[..63]] {
        let response = put(bad.to_owned(), gamma.clone()).await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{bad}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["code"], "invalid_digest");
        assert_eq!(
            body["message"],
            format!("`{bad}` is not a sha256 digest (expected 64 hex digits)")
        );
    }
    assert_eq!(svc.stored_files().await, before);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_download_whole_or_by_byte_range() {
    let mut svc = TestService::start(1).await;
    svc.publish_hostile(&[]).await;
    let content = noise(300_000);
    let uploaded = svc
        .client
        .upload_bytes(content.clone().into())
        .await
        .unwrap();
    let job = svc
        .run(SubmitJob {
            inputs: vec![InputRef {
                name: "big.bin".into(),
                sha256: uploaded.sha256,
            }],
            ..hostile_job(json!({"mode": "list-inputs"}))
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let path = format!("/v1/jobs/{}/tasks/in-0/outputs/big.bin", job.id);
    let get = |range: Option<&str>, if_range: Option<&str>| {
        let mut request = svc.client.raw(reqwest::Method::GET, &path);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        if let Some(tag) = if_range {
            request = request.header("if-range", tag);
        }
        svc.client.execute(request)
    };
    let header = |r: &reqwest::Response, name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };

    let whole = get(None, None).await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(header(&whole, "accept-ranges").as_deref(), Some("bytes"));
    let etag = header(&whole, "etag").unwrap();
    assert_eq!(etag, format!("\"{}\"", uploaded.sha256));
    assert!(whole.bytes().await.unwrap() == content);

    for (range, first, last) in [
        ("bytes=0-0", 0usize, 0usize),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=299000-", 299_000, 299_999),
        ("bytes=-500", 299_500, 299_999),
        ("bytes=299990-400000", 299_990, 299_999),
    ] {
        let part = get(Some(range), None).await.unwrap();
        assert_eq!(part.status().as_u16(), 206, "{range}");
        assert_eq!(
            header(&part, "content-range").unwrap(),
            format!("bytes {first}-{last}/300000"),
            "{range}"
        );
        assert_eq!(
            header(&part, "content-length").unwrap(),
            (last + 1 - first).to_string()
        );
        assert!(
            part.bytes().await.unwrap() == content[first..=last],
            "{range}: wrong bytes"
        );
    }
    // A range of an older version of the file (If-Range names another
    // etag) and several ranges at once get the whole file.
    for (range, if_range) in [("bytes=0-9", Some("\"0000\"")), ("bytes=0-9,20-29", None)] {
        let full = get(Some(range), if_range).await.unwrap();
        assert_eq!(full.status().as_u16(), 200, "{range}");
        assert!(full.bytes().await.unwrap() == content, "{range}");
    }
    let resumed = get(Some("bytes=10-19"), Some(&etag)).await.unwrap();
    assert_eq!(resumed.status().as_u16(), 206);
    assert!(resumed.bytes().await.unwrap() == content[10..20]);

    for bad in ["bytes=300000-", "bytes=5-2", "pages=1-2"] {
        let refused = get(Some(bad), None).await.unwrap();
        assert_eq!(refused.status().as_u16(), 416, "{bad}");
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "range_not_satisfiable", "{bad}");
        assert_eq!(
            body["message"],
            format!(
                "the Range header {bad:?} asks for bytes this 300000-byte file does not have; give bytes=FIRST-LAST within 0-299999"
            )
        );
    }

    // Outputs are found by task and path: the merge's as job outputs, a
    // task's only under its task.
    assert_eq!(
        output_text(&svc.client, &job.id, None, "merged.txt").await,
        "in-0 big.bin,listing.txt\n"
    );
    for (path, what) in [
        (
            format!("/v1/jobs/{}/tasks/in-0/outputs/nope.bin", job.id),
            "in-0/nope.bin",
        ),
        (format!("/v1/jobs/{}/outputs/big.bin", job.id), "big.bin"),
        (
            format!("/v1/jobs/{}/tasks/_merge/outputs/merged.txt", job.id),
            "_merge/merged.txt",
        ),
    ] {
        let missing = svc
            .client
            .execute(svc.client.raw(reqwest::Method::GET, &path))
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404, "{path}");
        let body: serde_json::Value = missing.json().await.unwrap();
        assert_eq!(body["code"], "not_found", "{path}");
        assert_eq!(body["message"], format!("output `{what}` was not found"));
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_inputs_reach_the_splitter_and_each_task() {
    let mut svc = TestService::start(2).await;
    svc.publish_hostile(&[]).await;
    let one = b"first\n".to_vec();
    let two = noise(200_000);
    let one_ref = svc.client.upload_bytes(one.clone().into()).await.unwrap();
    let two_ref = svc.client.upload_bytes(two.clone().into()).await.unwrap();
    let inputs = vec![
        InputRef {
            name: "data/one.txt".into(),
            sha256: one_ref.sha256,
        },
        InputRef {
            name: "two.bin".into(),
            sha256: two_ref.sha256,
        },
    ];

    let job = svc
        .run(SubmitJob {
            inputs: inputs.clone(),
            ..hostile_job(json!({"mode": "list-inputs"}))
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    assert_eq!(
        job.inputs,
        [
            JobInput {
                name: "data/one.txt".into(),
                sha256: one_ref.sha256,
                size: 6
            },
            JobInput {
                name: "two.bin".into(),
                sha256: two_ref.sha256,
                size: 200_000
            }
        ]
    );
    let c = &svc.client;
    let first = c.task(&job.id, "in-0").await.unwrap().task;
    assert_eq!(first.inputs, ["data/one.txt"]);
    assert_eq!(output(c, &job.id, Some("in-0"), "data__one.txt").await, one);
    assert_eq!(
        output_text(c, &job.id, Some("in-0"), "listing.txt").await,
        "data/one.txt 6\n"
    );
    assert_eq!(output(c, &job.id, Some("in-1"), "two.bin").await, two);
    assert_eq!(
        output_text(c, &job.id, Some("in-1"), "listing.txt").await,
        "two.bin 200000\n"
    );
    assert_eq!(
        output_text(c, &job.id, None, "merged.txt").await,
        "in-0 data__one.txt,listing.txt\nin-1 listing.txt,two.bin\n"
    );

    let job = svc
        .run(SubmitJob {
            inputs,
            ..hostile_job(json!({"mode": "read-inputs"}))
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let check = c.task(&job.id, "check").await.unwrap().task;
    assert_eq!(
        check.parameters,
        json!({"behaviour": "ok", "total": 200_006})
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_checked_before_anything_is_stored() {
    let mut svc = TestService::start(1).await;
    svc.publish_hostile(&[]).await;
    svc.publish_sample("montecarlo").await;
    let known = svc
        .client
        .upload_bytes(b"known".to_vec().into())
        .await
        .unwrap()
        .sha256;
    let unknown = Digest::of(b"never uploaded");
    let input = |name: &str, sha256| InputRef {
        name: name.into(),
        sha256,
    };
    let c = &svc.client;
    let cases: Vec<(SubmitJob, u16, &str, String)> = vec![
        (
            SubmitJob {
                app: "nope".into(),
                ..SubmitJob::default()
            },
            404,
            "not_found",
            "application `nope` was not found".into(),
        ),
        (
            SubmitJob {
                version: Some(9),
                ..hostile_job(json!({}))
            },
            404,
            "not_found",
            "application version `hostile@9` was not found".into(),
        ),
        (
            hostile_job(json!({"colour": "blue"})),
            400,
            "unknown_parameter",
            "unknown parameter `colour`; this application declares: count, merge, mode, plan"
                .into(),
        ),
        (
            SubmitJob {
                app: "montecarlo".into(),
                parameters: params(json!({"paths": "abc"})),
                ..SubmitJob::default()
            },
            400,
            "invalid_parameter",
            "parameter `paths` must be an int, got \"abc\"".into(),
        ),
        (
            SubmitJob {
                app: "montecarlo".into(),
                parameters: params(json!({"horizon_days": 253})),
                ..SubmitJob::default()
            },
            400,
            "invalid_parameter",
            "parameter `horizon_days` must be at most 252, got 253".into(),
        ),
        (
            SubmitJob {
                inputs: vec![input("a.txt", unknown)],
                ..hostile_job(json!({}))
            },
            400,
            "invalid_request",
            format!(
                "input `a.txt`: no uploaded file has sha256 {unknown}; upload it first (PUT /v1/files/{unknown})"
            ),
        ),
        (
            SubmitJob {
                inputs: vec![input("a.txt", known), input("./a.txt", known)],
                ..hostile_job(json!({}))
            },
            400,
            "invalid_request",
            "input name `a.txt` is used twice".into(),
        ),
        (
            SubmitJob {
                inputs: vec![input("../x", known)],
                ..hostile_job(json!({}))
            },
            400,
            "invalid_request",
            "input name `../x`: unsafe path \"../x\": it contains a `..` component".into(),
        ),
        (
            SubmitJob {
                max_task_retries: Some(101),
                ..hostile_job(json!({}))
            },
            400,
            "invalid_request",
            "max_task_retries is 101; at most 100 is allowed".into(),
        ),
        (
            SubmitJob {
                task_timeout_secs: Some(0),
                ..hostile_job(json!({}))
            },
            400,
            "invalid_request",
            "task_timeout_secs is 0; it must be between 1 and 604800".into(),
        ),
        (
            SubmitJob {
                pool: Some("gpu".into()),
                ..hostile_job(json!({}))
            },
            404,
            "not_found",
            "pool `gpu` was not found".into(),
        ),
    ];
    for (request, status, code, message) in cases {
        assert_api_error(c.submit(&request).await, status, code, &message);
    }

    let raw = |body: &str, content_type: &'static str| {
        c.execute(
            c.raw(reqwest::Method::POST, "/v1/jobs")
                .header("content-type", content_type)
                .body(body.to_owned()),
        )
    };
    // Past the 4 MiB limit of JSON bodies.
    let oversize = format!(
        "{{\"app\": \"hostile\", \"parameters\": {{\"plan\": \"{}\"}}}}",
        "x".repeat(5 << 20)
    );
    for (body, content_type, status, code, message) in [
        (
            "{\"app\": \"hostile\"",
            "application/json",
            400,
            "invalid_json",
            "Failed to parse the request body as JSON",
        ),
        (
            "{\"app\": 7}",
            "application/json",
            400,
            "invalid_body",
            "app: invalid type: integer `7`, expected a string",
        ),
        (
            "{\"app\": \"hostile\", \"colour\": 1}",
            "application/json",
            400,
            "invalid_body",
            "unknown field `colour`",
        ),
        (
            "{\"app\": \"hostile\", \"max_task_retries\": -1}",
            "application/json",
            400,
            "invalid_body",
            "max_task_retries",
        ),
        (
            "{\"app\": \"hostile\"}",
            "text/plain",
            415,
            "unsupported_media_type",
            "Expected request with `Content-Type: application/json`",
        ),
        (
            oversize.as_str(),
            "application/json",
            413,
            "too_large",
            "length limit exceeded",
        ),
    ] {
        let response = raw(body, content_type).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        // The body may not have been read to its end: the connection ends.
        assert_eq!(response.headers()["connection"], "close", "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }

    let page = c.jobs(None, None, None).await.unwrap();
    assert!(page.jobs.is_empty(), "no job was created: {page:#?}");

    // The service still runs a normal job, and names that climb out of a
    // job's outputs or the file store find nothing.
    let job = svc.assert_serves_a_normal_job().await;
    assert_eq!(output_text(c, &job.id, Some("a"), "ok.txt").await, "a");
    let id = &job.id;
    for (method, path, status, code) in [
        (
            "GET",
            format!("/v1/jobs/{id}/outputs/..%2F..%2Fstate.db"),
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/v1/jobs/{id}/tasks/a/outputs/..%2Fok.txt"),
            404,
            "not_found",
        ),
        (
            "GET",
            format!("/v1/jobs/{id}/tasks/..%2F..%2Fa/outputs/ok.txt"),
            404,
            "not_found",
        ),
        (
            "PUT",
            "/v1/files/..%2F..%2Fstate.db".to_owned(),
            400,
            "invalid_digest",
        ),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = c.execute(c.raw(method, &path).body("x")).await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["code"], code, "{path}: {error}");
    }
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependent_tasks_read_their_dependencies_outputs_and_merge_sees_every_task() {
    let mut svc = TestService::start(2).await;
    svc.publish_hostile(&[]).await;
    let job = svc
        .run(plan_job(
            json!([
                {"name": "a", "params": {"behaviour": "ok"}},
                {"name": "b", "params": {"behaviour": "ok"}},
                {"name": "c", "params": {"behaviour": "copy-inputs"}, "depends_on": ["a", "b"]},
            ]),
            true,
        ))
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    assert!(job.merge);
    let c = &svc.client;

    let a = c.task(&job.id, "a").await.unwrap().task;
    let b = c.task(&job.id, "b").await.unwrap().task;
    let last = c.task(&job.id, "c").await.unwrap().task;
    assert_eq!(last.depends_on, ["a", "b"]);
    let started = last.started_at.unwrap();
    assert!(
        started >= a.finished_at.unwrap() && started >= b.finished_at.unwrap(),
        "c started before its dependencies finished: {a:?} {b:?} {last:?}"
    );
    assert_eq!(output_text(c, &job.id, Some("c"), "a__ok.txt").await, "a");
    assert_eq!(output_text(c, &job.id, Some("c"), "b__ok.txt").await, "b");
    assert_eq!(
        output_text(c, &job.id, Some("c"), "listing.txt").await,
        "a/ok.txt 1\nb/ok.txt 1\n"
    );

    assert_eq!(
        output_text(c, &job.id, None, "merged.txt").await,
        "a ok.txt\nb ok.txt\nc a__ok.txt,b__ok.txt,listing.txt\n"
    );
    let outputs = c.outputs(&job.id).await.unwrap();
    let listed: Vec<(Option<&str>, &str)> = outputs
        .iter()
        .map(|o| (o.task.as_deref(), o.path.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (None, "all/a/ok.txt"),
            (None, "all/b/ok.txt"),
            (None, "all/c/a__ok.txt"),
            (None, "all/c/b__ok.txt"),
            (None, "all/c/listing.txt"),
            (None, "merged.txt"),
            (Some("a"), "ok.txt"),
            (Some("b"), "ok.txt"),
            (Some("c"), "a__ok.txt"),
            (Some("c"), "b__ok.txt"),
            (Some("c"), "listing.txt"),
        ]
    );
    assert_eq!(output_text(c, &job.id, None, "all/c/b__ok.txt").await, "b");
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_see_the_tessera_variables_and_their_own_and_nothing_else() {
    let mut svc = TestService::start(1).await;
    svc.publish_hostile(&[]).await;
    let job = svc
        .run(plan_job(
            json!([{"name": "show-env", "params": {"behaviour": "env"}, "env": [["MY_VAR", "42"]]}]),
            false,
        ))
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let env = output_text(&svc.client, &job.id, Some("show-env"), "env.txt").await;
    let lines: Vec<&str> = env.lines().collect();
    let node = lines
        .iter()
        .find_map(|l| l.strip_prefix("TESSERA_NODE_ID="))
        .unwrap_or_else(|| panic!("no TESSERA_NODE_ID in {env}"));
    let local = svc.client.pool("local").await.unwrap();
    assert!(
        local.nodes.iter().any(|n| n.id == node && n.is_live()),
        "{node} is not a live node of `local`: {local:#?}"
    );
    let task = svc.client.task(&job.id, "show-env").await.unwrap().task;
    assert_eq!(task.node.as_deref(), Some(node));
    assert_eq!(
        lines,
        [
            "MY_VAR=42".to_owned(),
            "TESSERA_ACCOUNT=admin".to_owned(),
            "TESSERA_APP=hostile".to_owned(),
            "TESSERA_APP_VERSION=1".to_owned(),
            format!("TESSERA_JOB_ID={}", job.id),
            format!("TESSERA_NODE_ID={node}"),
            "TESSERA_POOL_ID=local".to_owned(),
            "TESSERA_TASK_ATTEMPT=1".to_owned(),
            "TESSERA_TASK_NAME=show-env".to_owned(),
        ],
        "the host's environment must not leak in"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_keeps_its_stdout_and_stderr() {
    let mut svc = TestService::start(1).await;
    svc.publish_hostile(&[]).await;
    let job = svc
        .run(plan_job(
            json!([{"name": "talk", "params": {"behaviour": "log"}}]),
            false,
        ))
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let c = &svc.client;
    let stdout = c
        .log(&job.id, "talk", LogStream::Stdout, None)
        .await
        .unwrap();
    assert_eq!(&stdout[..], b"hello stdout\n");
    let stderr = c
        .log(&job.id, "talk", LogStream::Stderr, Some(1))
        .await
        .unwrap();
    let stderr = String::from_utf8(stderr.to_vec()).unwrap();
    assert!(
        stderr.contains(
            "[DEBUG] debug line\n[INFO] info line\n[WARN] warn line\n[ERROR] error line\n"
        ),
        "{stderr}"
    );
    assert!(stderr.ends_with("hello stderr\n"), "{stderr}");
    assert_eq!(
        output_text(c, &job.id, Some("talk"), "ok.txt").await,
        "talk"
    );

    let detail = c.task(&job.id, "talk").await.unwrap();
    assert_eq!(detail.attempt_history.len(), 1);
    let attempt = &detail.attempt_history[0];
    assert_eq!((attempt.attempt, attempt.state), (1, TaskState::Succeeded));
    assert_eq!(attempt.stdout_size, 13);
    assert_eq!(attempt.stderr_size, stderr.len() as u64);
    assert!(attempt.peak_memory > 0);
    assert_eq!(detail.task.progress, 1.0);

    assert_api_error(
        c.log(&job.id, "talk", LogStream::Stdout, Some(2)).await,
        404,
        "not_found",
        "attempt `talk#2` was not found",
    );
    assert_api_error(
        c.log(&job.id, "nobody", LogStream::Stdout, None).await,
        404,
        "not_found",
        "task `nobody` was not found",
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_up_to_the_jobs_limit() {
    let mut svc = TestService::start(2).await;
    svc.publish_hostile(&[]).await;
    let flaky = json!([{"name": "flaky", "params": {"behaviour": "fail-once"}}]);
    let c = &svc.client;

    let job = svc
        .run(SubmitJob {
            max_task_retries: Some(2),
            ..plan_job(flaky.clone(), false)
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let detail = c.task(&job.id, "flaky").await.unwrap();
    assert_eq!(detail.task.state, TaskState::Succeeded);
    assert_eq!(detail.task.attempts, 2);
    assert_eq!(detail.task.failure, None);
    let history = &detail.attempt_history;
    assert_eq!(history.len(), 2, "{history:#?}");
    assert_eq!(
        (history[0].attempt, history[0].state),
        (1, TaskState::Failed)
    );
    let failure = history[0].failure.as_ref().unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError);
    assert_eq!(failure.message, "first attempt fails");
    assert_eq!(
        (history[1].attempt, history[1].state, &history[1].failure),
        (2, TaskState::Succeeded, &None)
    );
    c.log(&job.id, "flaky", LogStream::Stderr, Some(1))
        .await
        .unwrap();
    c.log(&job.id, "flaky", LogStream::Stdout, Some(2))
        .await
        .unwrap();
    assert_eq!(
        output_text(c, &job.id, Some("flaky"), "ok.txt").await,
        "flaky"
    );

    let job = svc.run(plan_job(flaky, false)).await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!(job.progress.failed, 1);
    let failure = job.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError);
    assert!(
        failure
            .message
            .contains("first failure: task `flaky`: guest_error: first attempt fails"),
        "{failure:?}"
    );
    let detail = c.task(&job.id, "flaky").await.unwrap();
    assert_eq!(
        (detail.task.state, detail.task.attempts),
        (TaskState::Failed, 1)
    );
    assert!(c.outputs(&job.id).await.unwrap().is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reprocess_runs_the_failed_tasks_of_a_finished_job_again() {
    let mut svc = TestService::start(2).await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    let job = svc
        .run(plan_job(
            json!([
                {"name": "steady", "params": {"behaviour": "ok"}},
                {"name": "flaky", "params": {"behaviour": "fail-once"}},
            ]),
            true,
        ))
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    assert_eq!((job.progress.succeeded, job.progress.failed), (1, 1));

    let again = c.reprocess(&job.id).await.unwrap();
    assert_eq!(again.state, JobState::Running);
    assert_eq!(again.failure, None);
    let done = crate::harness::wait(c, &job.id).await;
    assert_eq!(done.state, JobState::Completed, "{done:#?}");
    assert_eq!(done.failure, None);
    assert_eq!((done.progress.succeeded, done.progress.failed), (2, 0));
    let flaky = c.task(&job.id, "flaky").await.unwrap();
    assert_eq!(
        (flaky.task.state, flaky.task.attempts),
        (TaskState::Succeeded, 2)
    );
    let steady = c.task(&job.id, "steady").await.unwrap();
    assert_eq!(steady.task.attempts, 1, "succeeded tasks do not run again");
    assert_eq!(
        output_text(c, &job.id, None, "merged.txt").await,
        "steady ok.txt\nflaky ok.txt\n"
    );

    assert_api_error(
        c.reprocess(&job.id).await,
        409,
        "conflict",
        "is completed; only failed or cancelled jobs can be reprocessed",
    );
    assert_api_error(
        c.reprocess("no-such-job").await,
        404,
        "not_found",
        "job `no-such-job` was not found",
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_running_tasks_and_frees_their_slots() {
    let mut svc = TestService::start(2).await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    let busy: Vec<_> = (0..4)
        .map(|i| json!({"name": format!("busy{i}"), "params": {"behaviour": "busy", "millis": 30_000}}))
        .collect();
    let job = c.submit(&plan_job(json!(busy), false)).await.unwrap();
    let id = job.id.as_str();
    let running = eventually(
        Duration::from_secs(60),
        "two running tasks",
        || async move {
            let page = c
                .tasks(id, Some(TaskState::Running), None, None)
                .await
                .unwrap();
            (page.tasks.len() >= 2).then_some(page.tasks)
        },
    )
    .await;
    // A node leases ahead of its free slots, so "running" may include tasks
    // waiting for a slot: give the first two time to start.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cancelled = c.cancel(id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert!(cancelled.finished_at.is_some());
    let page = c.tasks(id, None, None, None).await.unwrap();
    let states: Vec<_> = page
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.state))
        .collect();
    assert_eq!(
        states,
        [
            ("_split", TaskState::Succeeded),
            ("busy0", TaskState::Cancelled),
            ("busy1", TaskState::Cancelled),
            ("busy2", TaskState::Cancelled),
            ("busy3", TaskState::Cancelled),
        ]
    );

    // The leased attempts are stopped: they end as cancelled long before
    // their 30 s of work.
    for task in &running {
        let name = task.name.as_str();
        let attempt = eventually(
            Duration::from_secs(10),
            "the cancelled attempt to end",
            || async move {
                let detail = c.task(id, name).await.unwrap();
                detail.attempt_history.into_iter().next()
            },
        )
        .await;
        assert_eq!(attempt.state, TaskState::Failed);
        let failure = attempt.failure.unwrap();
        assert_eq!(failure.kind, FailureKind::Cancelled, "{failure:?}");
        assert!(
            failure.message.starts_with("the attempt was cancelled"),
            "{failure:?}"
        );
    }
    let job = c.job(id).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!((job.progress.cancelled, job.progress.running), (4, 0));
    assert!(c.outputs(id).await.unwrap().is_empty());

    let quick = plan_job(
        json!([
            {"name": "x", "params": {"behaviour": "ok"}},
            {"name": "y", "params": {"behaviour": "ok"}},
        ]),
        false,
    );
    let done = tokio::time::timeout(Duration::from_secs(10), svc.run(quick))
        .await
        .expect("the slots were not freed");
    assert_eq!(done.state, JobState::Completed, "{done:#?}");

    assert_api_error(
        c.cancel(id).await,
        409,
        "conflict",
        "is already cancelled; only unfinished jobs can be cancelled",
    );
    assert_api_error(
        c.cancel(&done.id).await,
        409,
        "conflict",
        "is already completed",
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_tasks_are_listed_in_pages() {
    let mut svc = TestService::start(2).await;
    svc.publish_hostile(&[]).await;
    let c = &svc.client;
    let mut ids = Vec::new();
    for i in 0..5 {
        let behaviour = if i == 2 { "guest-error" } else { "ok" };
        let tasks: Vec<_> = (0..5)
            .map(|t| json!({"name": format!("t{t}"), "params": {"behaviour": behaviour}}))
            .collect();
        let job = svc.run(plan_job(json!(tasks), i == 4)).await;
        ids.push(job.id);
    }
    let newest_first: Vec<String> = ids.iter().rev().cloned().collect();

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = c.jobs(None, before.as_deref(), Some(2)).await.unwrap();
        pages += 1;
        assert!(page.jobs.len() <= 2);
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(next) => {
                assert_eq!(Some(&next), seen.last());
                before = Some(next);
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);

    let failed = c.jobs(Some(JobState::Failed), None, None).await.unwrap();
    let failed: Vec<&str> = failed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(failed, [ids[2].as_str()]);
    let completed = c
        .jobs(Some(JobState::Completed), None, Some(3))
        .await
        .unwrap();
    let completed: Vec<&str> = completed.jobs.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(completed, [&ids[4], &ids[3], &ids[1]]);
    assert!(
        c.jobs(Some(JobState::Running), None, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );

    // The last job: split, t0..t4, merge.
    let id = ids[4].as_str();
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = c.tasks(id, None, after.as_deref(), Some(3)).await.unwrap();
        assert!(page.tasks.len() <= 3);
        names.extend(page.tasks.iter().map(|t| t.name.clone()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(names, ["_split", "t0", "t1", "t2", "t3", "t4", "_merge"]);
    let succeeded = c
        .tasks(id, Some(TaskState::Succeeded), None, None)
        .await
        .unwrap();
    assert_eq!(succeeded.tasks.len(), 7);
    assert_eq!(succeeded.next, None);
    let failed = c
        .tasks(&ids[2], Some(TaskState::Failed), Some("2"), None)
        .await
        .unwrap();
    let failed: Vec<&str> = failed.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(failed, ["t2", "t3", "t4"]);

    assert_api_error(
        c.tasks(id, None, Some("t3"), None).await,
        400,
        "invalid_request",
        "`after` must be a value from `next`, not `t3`",
    );
    let response = c
        .execute(c.raw(reqwest::Method::GET, "/v1/jobs?state=sleeping"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "invalid_query");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("`sleeping` is not a JobState"),
        "{error}"
    );
    svc.stop().await;
}

/// A WASI preview 1 command module that prints "p1 says hi" and exits
/// with status 7.
fn preview_one_program() -> Vec<u8> {
    wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "p1 says hi\n")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 11))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (call $proc_exit (i32.const 7))))"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_program_runs_wasi_commands_from_the_application_image() {
    let mut svc = TestService::start(2).await;
    let p1 = preview_one_program();
    let version = svc
        .publish_hostile(&[
            ("bin/echo.wasm", ECHO_COMMAND),
            ("bin/p1.wasm", &p1),
            ("data/hello.txt", b"hello from the image\n"),
        ])
        .await;
    assert!(version.image.is_some());
    let run = |name: &str, program: &str, args: serde_json::Value| json!({"name": name, "params": {"behaviour": "run-program", "program": program, "args": args}});
    let job = svc
        .run(plan_job(
            json!([
                run("echo", "/app/bin/echo.wasm", json!(["hello", "world"])),
                run("exit", "/app/bin/echo.wasm", json!(["--exit", "3"])),
                run(
                    "copy",
                    "bin/echo.wasm",
                    json!(["--copy", "/app/data/hello.txt", "/output/copied.txt"])
                ),
                run("p1", "/app/bin/p1.wasm", json!([])),
                run("missing", "/app/bin/nope.wasm", json!([])),
                run("outside", "/etc/passwd", json!([])),
            ]),
            false,
        ))
        .await;
    assert_eq!(job.state, JobState::Failed, "two tasks fail: {job:#?}");
    let c = &svc.client;
    let text = |task: &'static str, path: &'static str| output_text(c, &job.id, Some(task), path);

    assert_eq!(text("echo", "stdout.bin").await, "hello world\n");
    assert_eq!(text("echo", "stderr.bin").await, "echo-stderr\n");
    assert_eq!(text("echo", "status.txt").await, "0");

    assert_eq!(text("exit", "stdout.bin").await, "--exit 3\n");
    assert_ne!(text("exit", "status.txt").await, "0");

    assert_eq!(text("copy", "status.txt").await, "0");
    assert_eq!(
        text("copy", "copied.txt").await,
        "hello from the image\n",
        "the program shares the task's sandbox"
    );

    assert_eq!(text("p1", "stdout.bin").await, "p1 says hi\n");
    assert_eq!(text("p1", "stderr.bin").await, "");
    assert_eq!(text("p1", "status.txt").await, "7");

    let missing = c.task(&job.id, "missing").await.unwrap().task;
    assert_eq!(missing.state, TaskState::Failed);
    let failure = missing.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError);
    assert!(
        failure.message.contains("cannot load `/app/bin/nope.wasm`"),
        "{failure:?}"
    );

    let outside = c.task(&job.id, "outside").await.unwrap().task;
    let failure = outside.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError);
    assert!(
        failure
            .message
            .contains("`/etc/passwd` is not a path inside /app"),
        "{failure:?}"
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_carry_the_kind_of_their_folder_and_can_be_listed_by_kind() {
    let mut svc = TestService::start(1).await;
    svc.publish_hostile(&[]).await;
    let job = svc
        .run(plan_job(
            json!([{"name": "k", "params": {"behaviour": "kinds"}}]),
            true,
        ))
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let c = &svc.client;
    let listed = |outputs: Vec<tessera_framework::model::Output>| {
        let mut seen: Vec<(Option<String>, String, OutputKind)> = outputs
            .into_iter()
            .map(|o| (o.task, o.path, o.kind))
            .collect();
        seen.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        seen
    };
    let task = |path: &str, kind| (Some("k".to_string()), path.to_string(), kind);
    let all = listed(c.outputs(&job.id).await.unwrap());
    for expected in [
        task("previews/thumb.txt", OutputKind::Preview),
        task("intermediate/part.txt", OutputKind::Intermediate),
        task("result.txt", OutputKind::Output),
        // The merge copies task outputs under `all/`: outputs again.
        (None, "all/k/previews/thumb.txt".into(), OutputKind::Output),
    ] {
        assert!(all.contains(&expected), "{expected:?} in {all:?}");
    }
    for (kind, text) in [
        (OutputKind::Preview, "preview"),
        (OutputKind::Intermediate, "intermediate"),
    ] {
        let only = c.outputs_of_kind(&job.id, kind).await.unwrap();
        assert_eq!(only.len(), 1, "{kind}: {only:?}");
        assert_eq!(only[0].kind, kind);
        assert_eq!(
            c.output_bytes(&job.id, &only[0]).await.unwrap(),
            text.as_bytes()
        );
    }
    let outputs = listed(
        c.outputs_of_kind(&job.id, OutputKind::Output)
            .await
            .unwrap(),
    );
    assert_eq!(outputs.len(), all.len() - 2);
    assert!(
        outputs
            .iter()
            .all(|(_, _, kind)| *kind == OutputKind::Output)
    );

    let response = c
        .execute(c.raw(
            reqwest::Method::GET,
            &format!("/v1/jobs/{}/outputs?kind=thumbnail", job.id),
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = response.text().await.unwrap();
    assert!(
        body.contains("\"invalid_query\"")
            && body.contains(
                "kind: unknown variant `thumbnail`, expected one of `output`, `preview`, `intermediate`"
            ),
        "{body}"
    );
    svc.stop().await;
}
