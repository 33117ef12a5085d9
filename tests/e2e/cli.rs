//! The README's account workflow through the real `tessera` binary: the
//! admin creates an account, which makes a pool, publishes, submits and
//! downloads with its own keys; missing or wrong keys and other accounts'
//! pools are refused with the reason.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};
use tessera_framework::accounts::{admin_credentials_path, read_credentials};

use crate::harness::{TestService, hostile_assembly};

/// `tessera ARGS` against `url` signing as `account` with `key`.
fn command(url: &str, (account, key): (&str, &str), args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .args(args)
        .env("TESSERA_URL", url)
        .env("TESSERA_ACCOUNT", account)
        .env("TESSERA_KEY", key)
        .env_remove("TESSERA_LOG");
    command
}

/// Runs `tessera ARGS` against `url` signing as `account` with `key`.
fn tessera(url: &str, as_account: (&str, &str), args: &[&str]) -> Output {
    command(url, as_account, args).output().unwrap()
}

/// The JSON a successful command printed.
fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Asserts a command failed and its stderr says `message`.
fn assert_refused(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded: {stderr}");
    assert!(
        stderr.contains(message),
        "{stderr:?} should contain {message:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_works_with_its_own_keys_through_the_cli() {
    let mut svc = TestService::start(1).await;
    let url = svc.client.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (admin, admin_key) = read_credentials(&admin_credentials_path(svc.dir.path())).unwrap();
    let url = url.as_str();
    let as_admin = (admin.as_str(), admin_key.as_str());

    let keys = json_of(&tessera(
        url,
        as_admin,
        &[
            "account",
            "create",
            "alice",
            "--max-pending-jobs",
            "5",
            "--json",
        ],
    ));
    let key = keys["primary"].as_str().unwrap().to_owned();
    let alice = ("alice", key.as_str());
    assert_eq!(
        json_of(&tessera(
            url,
            alice,
            &["account", "keys", "alice", "--json"]
        )),
        keys
    );
    // Rotating the secondary key leaves the primary one working.
    let rotated = json_of(&tessera(
        url,
        alice,
        &["account", "regenerate", "alice", "secondary", "--json"],
    ));
    assert_eq!(rotated["primary"], keys["primary"]);
    assert_ne!(rotated["secondary"], keys["secondary"]);
    assert_eq!(
        json_of(&tessera(
            url,
            alice,
            &["account", "keys", "alice", "--json"]
        )),
        rotated
    );
    let accounts = json_of(&tessera(url, alice, &["account", "list", "--json"]));
    assert_eq!(accounts[0]["quotas"]["max_pending_jobs"], 5);
    assert_eq!(
        accounts.as_array().unwrap().len(),
        1,
        "alice sees only herself"
    );

    // Her own pool, beside the shared one.
    let pool = json_of(&tessera(url, alice, &["pool", "create", "gpu", "--json"]));
    assert_eq!(pool["id"], "alice/gpu");
    let pools = json_of(&tessera(url, alice, &["pool", "list", "--json"]));
    let names: Vec<&str> = pools
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu", "local"]);
    let shown = tessera(url, alice, &["pool", "show", "gpu"]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("alice/gpu"));

    // Publish from a file, submit, wait and download, all as alice.
    let assembly = dir.path().join("hostile.zip");
    std::fs::write(&assembly, hostile_assembly()).unwrap();
    let version = json_of(&tessera(
        url,
        alice,
        &[
            "app",
            "publish",
            "hostile",
            "--assembly",
            assembly.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(version["version"], 1);
    let plan = json!({"tasks": [{"name": "a", "params": {"behaviour": "ok"}}], "merge": false})
        .to_string();
    let job = json_of(&tessera(
        url,
        alice,
        &[
            "job",
            "submit",
            "hostile",
            "--param",
            &format!("plan={plan}"),
            "--wait",
            "--json",
        ],
    ));
    assert_eq!(job["state"], "completed", "{job}");
    let id = job["id"].as_str().unwrap();
    let out = dir.path().join("out");
    let downloaded = tessera(
        url,
        alice,
        &["job", "download", id, "--dir", out.to_str().unwrap()],
    );
    assert!(downloaded.status.success());
    assert_eq!(
        std::fs::read_to_string(out.join(Path::new("tasks/a/ok.txt"))).unwrap(),
        "a"
    );

    // A job on a pool of its own, made and removed with it.
    let on_auto = |extra: &[&str]| {
        let mut args = vec!["job", "submit", "hostile", "--param"];
        let plan = format!("plan={plan}");
        args.push(&plan);
        args.extend_from_slice(extra);
        tessera(url, alice, &args)
    };
    assert_refused(
        &on_auto(&["--provider", "local"]),
        "give --auto-pool-nodes N as well",
    );
    let job = json_of(&on_auto(&[
        "--auto-pool-nodes",
        "1",
        "--provider",
        "local",
        "--wait",
        "--json",
    ]));
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(job["pool"], format!("auto-{}", job["id"].as_str().unwrap()));

    // The admin sees none of it; a wrong key or none at all is refused.
    let jobs = json_of(&tessera(url, as_admin, &["job", "list", "--json"]));
    assert_eq!(jobs["jobs"], json!([]), "{jobs}");
    assert_refused(
        &tessera(url, as_admin, &["pool", "show", "gpu"]),
        "pool `gpu` was not found",
    );
    assert_refused(
        &tessera(url, ("alice", &admin_key), &["app", "list"]),
        "signature",
    );
    assert_refused(
        &tessera(url, ("", ""), &["app", "list"]),
        "the request is not signed",
    );
    assert_refused(
        &tessera(url, ("alice", ""), &["app", "list"]),
        "give both an account and its key",
    );

    let deleted = tessera(url, alice, &["pool", "delete", "gpu"]);
    assert!(String::from_utf8_lossy(&deleted.stdout).contains("Deleted the pool `gpu`."));
    assert_refused(
        &tessera(url, alice, &["pool", "show", "gpu"]),
        "pool `gpu` was not found",
    );
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_command_whose_output_is_closed_ends_without_a_panic() {
    let svc = TestService::start(0).await;
    let (admin, key) = read_credentials(&admin_credentials_path(svc.dir.path())).unwrap();
    // The reading end is closed before the command writes a byte.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command(svc.client.url(), (&admin, &key), &["pool", "list"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}
