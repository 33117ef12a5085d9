//! Accounts, signed requests and isolation: every request is signed, an
//! account sees only what it owns, and refused requests change nothing.

use chrono::Utc;
use reqwest::Method;
use serde_json::json;
use tessera_framework::accounts::{KeyName, NewAccount, Quotas};
use tessera_framework::auth;
use tessera_framework::digest::Digest;
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::JobState;
use tessera_portal_api::client::Client;

use crate::harness::{TestService, assert_api_error, hostile_assembly, plan_job};

/// A request signed by hand, following the README's description of the
/// scheme, so that tests can sign one thing and send another.
struct Signing<'a> {
    account: &'a str,
    key: &'a str,
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    content_type: &'a str,
    body: &'a [u8],
    date: String,
}

/// Header names and values.
type Headers = Vec<(&'static str, String)>;

impl Signing<'_> {
    fn headers(&self) -> Headers {
        let content_sha256 = Digest::of(self.body).to_hex();
        let canonical = auth::canonical_string(
            self.method,
            self.path,
            self.query,
            self.content_type,
            &content_sha256,
            &self.date,
        );
        let key = auth::decode_key(self.key).unwrap();
        let signature = auth::sign(&key, &canonical);
        vec![
            (
                "authorization",
                auth::authorization(self.account, &signature),
            ),
            (auth::DATE_HEADER, self.date.clone()),
            (auth::CONTENT_SHA256_HEADER, content_sha256),
        ]
    }
}

/// Sends `method url` with `headers` and `body`; returns the status and
/// the error code and message.
async fn send(
    method: Method,
    url: String,
    headers: Headers,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, String, String) {
    let mut request = reqwest::Client::new().request(method, url).body(body);
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["code"].as_str().unwrap_or_default().to_owned(),
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_forged_tampered_and_stale_requests_are_refused_and_change_nothing() {
    let mut svc = TestService::start(1).await;
    let keys = svc.client.account_keys("admin").await.unwrap();
    let url = svc.client.url().to_owned();
    let job = serde_json::to_vec(&json!({"app": "nope"})).unwrap();
    let now = auth::format_date(Utc::now());
    let good = Signing {
        account: "admin",
        key: &keys.primary,
        method: "POST",
        path: "/v1/jobs",
        query: None,
        content_type: "application/json",
        body: &job,
        date: now.clone(),
    };
    // The hand-signed request is accepted (and fails on its content).
    let (status, code, _) = send(
        Method::POST,
        format!("{url}/v1/jobs"),
        good.headers(),
        "application/json",
        job.clone(),
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));

    let other_key = auth::generate_key();
    let stale = auth::format_date(Utc::now() - chrono::TimeDelta::minutes(16));
    let early = auth::format_date(Utc::now() + chrono::TimeDelta::minutes(16));
    type Case<'a> = (&'a str, Headers, String, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "no headers",
            Vec::new(),
            format!("{url}/v1/jobs"),
            job.clone(),
            "the request is not signed",
        ),
        (
            "wrong key",
            Signing {
                key: &other_key,
                ..good.clone_with(&now)
            }
            .headers(),
            format!("{url}/v1/jobs"),
            job.clone(),
            "the signature does not match",
        ),
        (
            "unknown account",
            Signing {
                account: "mallory",
                ..good.clone_with(&now)
            }
            .headers(),
            format!("{url}/v1/jobs"),
            job.clone(),
            "the signature does not match",
        ),
        (
            "tampered path",
            good.headers(),
            format!("{url}/v1/jobs/x/cancel"),
            job.clone(),
            "the signature does not match",
        ),
        (
            "tampered query",
            Signing {
                query: Some("state=running"),
                ..good.clone_with(&now)
            }
            .headers(),
            format!("{url}/v1/jobs?state=failed"),
            job.clone(),
            "the signature does not match",
        ),
        (
            "tampered body",
            good.headers(),
            format!("{url}/v1/jobs"),
            serde_json::to_vec(&json!({"app": "nop"})).unwrap(),
            "the body does not match its x-tessera-content-sha256 header",
        ),
        (
            "replayed later",
            Signing {
                date: stale,
                ..good.clone_with(&now)
            }
            .headers(),
            format!("{url}/v1/jobs"),
            job.clone(),
            "is more than 15 minutes from the service's clock",
        ),
        (
            "dated in the future",
            Signing {
                date: early,
                ..good.clone_with(&now)
            }
            .headers(),
            format!("{url}/v1/jobs"),
            job.clone(),
            "is more than 15 minutes from the service's clock",
        ),
        (
            "another scheme",
            vec![("authorization", format!("Bearer {}", keys.primary))],
            format!("{url}/v1/jobs"),
            job.clone(),
            "the Authorization header must be `SharedKey <account>:<base64 signature>`",
        ),
    ];
    for (what, headers, url, body, message) in cases {
        let (status, code, got) = send(Method::POST, url, headers, "application/json", body).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthorized"),
            "{what}: {got}"
        );
        assert!(got.contains(message), "{what}: {got}");
    }
    // A tampered upload (signed for one content, sent with another) is
    // refused and stores nothing.
    let content = b"the real content".to_vec();
    let digest = Digest::of(&content);
    let path = format!("/v1/files/{digest}");
    let upload = Signing {
        method: "PUT",
        path: &path,
        content_type: "",
        body: &content,
        ..good.clone_with(&now)
    };
    let (status, _, message) = send(
        Method::PUT,
        format!("{url}{path}"),
        upload.headers(),
        "",
        b"other content...".to_vec(),
    )
    .await;
    assert_eq!(status, 401, "{message}");
    assert!(
        svc.client
            .jobs(None, None, None)
            .await
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(
        svc.client.missing_files(&[digest]).await.unwrap(),
        [digest],
        "nothing was stored"
    );
    assert!(svc.stored_files().await.is_empty());
    // Health checks need no signature; signed requests still work.
    svc.client.health().await.unwrap();
    svc.publish_hostile(&[]).await;
    svc.assert_serves_a_normal_job().await;
    svc.stop().await;
}

impl<'a> Signing<'a> {
    fn clone_with(&self, date: &str) -> Self {
        Signing {
            date: date.to_owned(),
            ..*self
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_see_only_what_they_own() {
    let mut svc = TestService::start(1).await;
    let alice = svc.account("alice", Quotas::default()).await;
    let bob = svc.account("bob", Quotas::default()).await;

    alice
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    let secret = b"alice's private data".to_vec();
    let file = alice.upload_bytes(secret.clone().into()).await.unwrap();
    let job = alice
        .submit(&SubmitJob {
            inputs: vec![InputRef {
                name: "data.txt".into(),
                sha256: file.sha256,
            }],
            ..plan_job(
                json!([{"name": "a", "params": {"behaviour": "copy-inputs"}}]),
                false,
            )
        })
        .await
        .unwrap();
    let job = crate::harness::wait(&alice, &job.id).await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let outputs = alice.outputs(&job.id).await.unwrap();
    assert!(!outputs.is_empty());

    // Bob sees none of it: not found, not forbidden.
    assert!(bob.apps().await.unwrap().is_empty());
    assert!(bob.jobs(None, None, None).await.unwrap().jobs.is_empty());
    assert_api_error(bob.job(&job.id).await, 404, "not_found", "was not found");
    assert_api_error(bob.app("hostile").await, 404, "not_found", "was not found");
    assert_api_error(
        bob.outputs(&job.id).await,
        404,
        "not_found",
        "was not found",
    );
    assert_api_error(
        bob.output_bytes(&job.id, &outputs[0]).await,
        404,
        "not_found",
        "was not found",
    );
    assert_api_error(bob.cancel(&job.id).await, 404, "not_found", "was not found");
    assert_api_error(
        bob.tasks(&job.id, None, None, None).await,
        404,
        "not_found",
        "was not found",
    );
    // Knowing the hash of Alice's file does not give Bob the file.
    assert_eq!(
        bob.missing_files(&[file.sha256]).await.unwrap(),
        [file.sha256]
    );
    bob.publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    assert_api_error(
        bob.submit(&SubmitJob {
            inputs: vec![InputRef {
                name: "stolen.txt".into(),
                sha256: file.sha256,
            }],
            ..plan_job(
                json!([{"name": "a", "params": {"behaviour": "copy-inputs"}}]),
                false,
            )
        })
        .await,
        400,
        "invalid_request",
        "input `stolen.txt`: no uploaded file has sha256",
    );
    // Uploading the same content makes it Bob's too (stored once).
    bob.upload_bytes(secret.into()).await.unwrap();
    assert!(bob.missing_files(&[file.sha256]).await.unwrap().is_empty());

    // Roles: only the admin manages accounts; an account manages its keys.
    assert_api_error(
        bob.create_account(&NewAccount {
            name: "carol".into(),
            quotas: Quotas::default(),
        })
        .await,
        403,
        "forbidden",
        "only an admin account may create accounts; `bob` is not one",
    );
    let names = |client: &Client| {
        let client = client.clone();
        async move {
            let accounts = client.accounts().await.unwrap();
            accounts.into_iter().map(|a| a.name).collect::<Vec<_>>()
        }
    };
    assert_eq!(names(&bob).await, ["bob"]);
    assert_eq!(names(&svc.client).await, ["admin", "alice", "bob"]);
    assert_api_error(bob.account_keys("alice").await, 404, "not_found", "`alice`");
    assert_api_error(
        svc.client
            .create_account(&NewAccount {
                name: "alice".into(),
                quotas: Quotas::default(),
            })
            .await,
        409,
        "conflict",
        "the account `alice` already exists",
    );
    assert_api_error(
        svc.client
            .create_account(&NewAccount {
                name: "Not Valid".into(),
                quotas: Quotas::default(),
            })
            .await,
        400,
        "invalid_request",
        "is not a valid account name",
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regenerated_key_stops_working_while_the_other_goes_on() {
    let mut svc = TestService::start(0).await;
    let keys = {
        svc.account("dana", Quotas::default()).await;
        svc.client.account_keys("dana").await.unwrap()
    };
    let with = |key: &str| {
        Client::new(svc.client.url())
            .unwrap()
            .with_credentials("dana", key)
            .unwrap()
    };
    let (primary, secondary) = (with(&keys.primary), with(&keys.secondary));
    primary.apps().await.unwrap();
    secondary.apps().await.unwrap();

    // Dana rotates her primary key, signing with the secondary one.
    let new = secondary
        .regenerate_key("dana", KeyName::Primary)
        .await
        .unwrap();
    assert_ne!(new.primary, keys.primary);
    assert_eq!(new.secondary, keys.secondary);
    assert_api_error(
        primary.apps().await,
        401,
        "unauthorized",
        "the signature does not match",
    );
    secondary.apps().await.unwrap();
    with(&new.primary).apps().await.unwrap();
    // The keys call returns the current keys to their owner.
    let current = with(&new.primary).account_keys("dana").await.unwrap();
    assert_eq!(
        (current.primary, current.secondary),
        (new.primary, new.secondary)
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_what_goes_over_and_say_which() {
    let mut svc = TestService::start(0).await;
    let erin = svc
        .account(
            "erin",
            Quotas {
                max_running_tasks: None,
                max_stored_bytes: Some(100_000),
                max_pending_jobs: Some(1),
            },
        )
        .await;
    erin.publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    // No slots: jobs stay pending.
    let job = plan_job(json!([{"name": "a", "params": {"behaviour": "ok"}}]), false);
    let first = erin.submit(&job).await.unwrap();
    assert_api_error(
        erin.submit(&job).await,
        429,
        "quota_exceeded",
        "account `erin` has 1 unfinished jobs, its quota max_pending_jobs is 1",
    );
    erin.cancel(&first.id).await.unwrap();
    erin.submit(&job).await.unwrap();
    // Running a finished job again makes it unfinished: the quota holds.
    assert_api_error(
        erin.reprocess(&first.id).await,
        429,
        "quota_exceeded",
        "its quota max_pending_jobs is 1",
    );
    assert_eq!(
        erin.job(&first.id).await.unwrap().state,
        JobState::Cancelled
    );

    erin.upload_bytes(vec![1u8; 60_000].into()).await.unwrap();
    let big = vec![2u8; 60_000];
    assert_api_error(
        erin.upload_bytes(big.clone().into()).await,
        429,
        "quota_exceeded",
        "account `erin` stores 60000 bytes; 60000 more would exceed its quota max_stored_bytes of 100000",
    );
    let digest = Digest::of(&big);
    assert_eq!(erin.missing_files(&[digest]).await.unwrap(), [digest]);
    // Other accounts are not limited by erin's quotas.
    svc.client.upload_bytes(big.into()).await.unwrap();

    // Only an admin changes quotas.
    assert_api_error(
        erin.set_quotas("erin", &Quotas::default()).await,
        403,
        "forbidden",
        "only an admin account may change quotas",
    );
    let info = svc
        .client
        .set_quotas(
            "erin",
            &Quotas {
                max_running_tasks: None,
                max_stored_bytes: Some(200_000),
                max_pending_jobs: Some(1),
            },
        )
        .await
        .unwrap();
    assert_eq!(info.quotas.max_stored_bytes, Some(200_000));
    erin.upload_bytes(vec![2u8; 60_000].into()).await.unwrap();
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_is_cut_off_and_nothing_is_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut svc = TestService::start_with(0, |c| {
        c.body_idle_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let keys = svc.client.account_keys("admin").await.unwrap();
    let content = vec![7u8; 1000];
    let digest = Digest::of(&content);
    let path = format!("/v1/files/{digest}");
    let headers = Signing {
        account: "admin",
        key: &keys.primary,
        method: "PUT",
        path: &path,
        query: None,
        content_type: "",
        body: &content,
        date: auth::format_date(Utc::now()),
    }
    .headers();
    let addr = svc.client.url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut head = format!("PUT {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 1000\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&content[..10]).await.unwrap();
    // The client goes quiet; the service answers on its own.
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the service did not give up on the stalled body")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("reading the request body failed"),
        "{answer}"
    );
    assert_eq!(svc.client.missing_files(&[digest]).await.unwrap(), [digest]);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_runs_at_most_its_quota_of_tasks_at_once() {
    let mut svc = TestService::start(3).await;
    let frank = svc
        .account(
            "frank",
            Quotas {
                max_running_tasks: Some(1),
                ..Quotas::default()
            },
        )
        .await;
    frank
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    svc.client
        .publish_bytes("hostile", hostile_assembly(), None)
        .await
        .unwrap();
    let busy: Vec<serde_json::Value> = (0..6)
        .map(|i| json!({"name": format!("b{i}"), "params": {"behaviour": "busy", "millis": 150}}))
        .collect();
    let capped = frank.submit(&plan_job(json!(busy), true)).await.unwrap();
    let free = svc
        .client
        .submit(&plan_job(json!(busy), false))
        .await
        .unwrap();
    // Frank never has more than one task running; the admin, without a
    // quota, uses the other slots meanwhile.
    let mut admin_parallel = 0;
    loop {
        let job = frank.job(&capped.id).await.unwrap();
        assert!(job.progress.running <= 1, "{:?}", job.progress);
        let other = svc.client.job(&free.id).await.unwrap();
        admin_parallel = admin_parallel.max(other.progress.running);
        if job.state.is_finished() {
            assert_eq!(job.state, JobState::Completed, "{job:#?}");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let other = crate::harness::wait(&svc.client, &free.id).await;
    assert_eq!(other.state, JobState::Completed);
    assert!(
        admin_parallel >= 2,
        "the admin's job ran {admin_parallel} at once"
    );
    svc.stop().await;
}
