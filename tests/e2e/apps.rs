//! Publishing applications through the HTTP API: versions, reading them
//! back, and every kind of refused publish, which must leave nothing stored.

use serde_json::json;
use tessera_framework::digest::Digest;
use tessera_framework::model::JobState;
use tessera_framework::package::ArchiveLimits;
use tessera_samples::fixtures::{HOSTILE_ASSEMBLY_TOML, HOSTILE_PROCESSOR, HOSTILE_SPLITTER};

use crate::harness::{
    RawEntry, TestService, assert_api_error, files_under, hostile_assembly, hostile_entries,
    plan_job, raw_zip, zip_of,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_again_makes_a_new_version_and_both_can_be_read_back() {
    let mut svc = TestService::start(0).await;
    let sample = tessera_samples::get("montecarlo").unwrap();

    let v1 = svc.publish_sample("montecarlo").await;
    assert_eq!((v1.app.as_str(), v1.version), ("montecarlo", 1));
    assert_eq!(v1.assembly.sha256, Digest::of(sample.assembly));
    assert_eq!(v1.assembly.size, sample.assembly.len() as u64);
    assert_eq!(v1.image.map(|i| i.sha256), sample.image.map(Digest::of));
    assert_eq!(
        v1.parameters.keys().collect::<Vec<_>>(),
        ["confidence", "horizon_days", "paths", "seed", "tasks"]
    );
    assert_eq!(
        v1.parameters["paths"].default,
        Some(serde_json::json!(200000))
    );

    let v2 = svc.publish_sample("montecarlo").await;
    assert_eq!((v2.app.as_str(), v2.version), ("montecarlo", 2));
    assert_eq!(v2.assembly, v1.assembly, "the same zip is stored once");
    assert_eq!((v2.splitter, v2.processor), (v1.splitter, v1.processor));

    let apps = svc.client.apps().await.unwrap();
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(
        (apps[0].name.as_str(), apps[0].latest_version),
        ("montecarlo", 2)
    );

    let detail = svc.client.app("montecarlo").await.unwrap();
    assert_eq!(detail.name, "montecarlo");
    let versions: Vec<u32> = detail.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [2, 1], "newest first");

    let first = svc.client.app_version("montecarlo", 1).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.created_at, v1.created_at);
    assert_eq!(first.assembly, v1.assembly);

    assert_api_error(
        svc.client.app("nothing").await,
        404,
        "not_found",
        "application `nothing` was not found",
    );
    assert_api_error(
        svc.client.app_version("nothing", 1).await,
        404,
        "not_found",
        "application `nothing` was not found",
    );
    assert_api_error(
        svc.client.app_version("montecarlo", 3).await,
        404,
        "not_found",
        "application version `montecarlo@3` was not found",
    );
    svc.stop().await;
}

/// One refused publish: what is sent and the error expected.
struct Refusal {
    what: &'static str,
    assembly: Vec<u8>,
    image: Option<Vec<u8>>,
    status: u16,
    code: &'static str,
    message: &'static str,
}

fn refusal(
    what: &'static str,
    assembly: Vec<u8>,
    status: u16,
    code: &'static str,
    message: &'static str,
) -> Refusal {
    Refusal {
        what,
        assembly,
        image: None,
        status,
        code,
        message,
    }
}

/// The hostile assembly with its manifest replaced by `manifest`.
fn with_manifest(manifest: &str) -> Vec<u8> {
    raw_zip(&hostile_entries(
        &[("assembly.toml", manifest.as_bytes())],
        &[],
    ))
}

/// The hostile assembly with one more entry.
fn with_extra(entry: RawEntry) -> Vec<u8> {
    raw_zip(&hostile_entries(&[], &[entry]))
}

/// The hostile assembly with its splitter replaced by `bytes`.
fn with_splitter(bytes: &[u8]) -> Vec<u8> {
    raw_zip(&hostile_entries(&[("splitter.wasm", bytes)], &[]))
}

fn refusals() -> Vec<Refusal> {
    let good = hostile_assembly();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    // Expands 2000-fold: beyond the ratio limit, within the size limits.
    let ratio_bomb = RawEntry::deflated("zeros.bin", &vec![0u8; 4 << 20]);
    // Beyond the service's 16 MiB entry limit.
    let size_bomb = RawEntry::deflated("zeros.bin", &vec![0u8; 32 << 20]);
    // A splitter whose header claims 100 bytes and that expands to 4 MiB.
    let mut lying = RawEntry::deflated("splitter.wasm", &vec![0u8; 4 << 20]);
    lying.size = 100;
    let mut lying_entries = hostile_entries(&[], &[]);
    lying_entries[1] = lying;
    // 100,000 entries need a ZIP64 directory, which the zip crate writes.
    let tiny_names: Vec<String> = (0..100_000).map(|i| format!("tiny/{i}")).collect();
    let mut tiny: Vec<(&str, &[u8])> = vec![
        ("assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        ("splitter.wasm", HOSTILE_SPLITTER),
        ("processor.wasm", HOSTILE_PROCESSOR),
    ];
    tiny.extend(tiny_names.iter().map(|n| (n.as_str(), &b"x"[..])));
    // Each below the 16 MiB entry limit, together past the 40 MiB total.
    let block = vec![0u8; 14 << 20];
    let thick: Vec<RawEntry> = (0..3)
        .map(|i| RawEntry::stored(&format!("block{i}.bin"), &block))
        .collect();
    let manifest_dir_entries = vec![
        RawEntry::stored("app/assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        RawEntry::stored("app/splitter.wasm", HOSTILE_SPLITTER),
        RawEntry::stored("app/processor.wasm", HOSTILE_PROCESSOR),
    ];
    vec![
        refusal(
            "random bytes",
            noise,
            400,
            "not_a_zip",
            "not a readable zip archive",
        ),
        refusal(
            "a truncated zip",
            good[..good.len() / 2].to_vec(),
            400,
            "not_a_zip",
            "not a readable zip archive",
        ),
        refusal(
            "a zip-slip entry",
            with_extra(RawEntry::stored("../evil", b"x")),
            400,
            "unsafe_path",
            "unsafe path \"../evil\": it contains a `..` component",
        ),
        refusal(
            "an absolute path",
            with_extra(RawEntry::stored("/etc/evil", b"x")),
            400,
            "unsafe_path",
            "unsafe path \"/etc/evil\": it is an absolute path",
        ),
        refusal(
            "a symbolic link",
            with_extra(RawEntry::symlink("passwd", "/etc/passwd")),
            400,
            "symlink",
            "entry `passwd` is a symbolic link",
        ),
        refusal(
            "an entry larger than the limit",
            with_extra(size_bomb),
            413,
            "too_large",
            "entry `zeros.bin` (33554432 bytes) is larger than the limit of 16777216 bytes",
        ),
        refusal(
            "100,000 tiny entries",
            zip_of(&tiny),
            413,
            "too_many_entries",
            "the archive has 100003 entries; at most 10000 are allowed",
        ),
        refusal(
            "entries that together expand past the total limit",
            raw_zip(&hostile_entries(&[], &thick)),
            413,
            "too_large",
            "the archive's expanded contents",
        ),
        refusal(
            "an entry that compresses like a zip bomb",
            with_extra(ratio_bomb),
            400,
            "suspicious_ratio",
            "entry `zeros.bin` expands to more than 200 times its compressed size",
        ),
        refusal(
            "a component whose header lies about its size",
            raw_zip(&lying_entries),
            400,
            "corrupt_entry",
            "entry `splitter.wasm` is corrupt: it expands to more than the 100 bytes its header declares",
        ),
        refusal(
            "a duplicate entry",
            with_extra(RawEntry::stored("assembly.toml", b"")),
            400,
            "duplicate_entry",
            "the archive holds `assembly.toml` more than once",
        ),
        refusal(
            "no assembly.toml",
            zip_of(&[
                ("splitter.wasm", HOSTILE_SPLITTER),
                ("processor.wasm", HOSTILE_PROCESSOR),
            ]),
            400,
            "missing_entry",
            "the archive has no entry `assembly.toml`; a cloud assembly needs `assembly.toml` at the root of the zip",
        ),
        refusal(
            "a zipped folder",
            raw_zip(&manifest_dir_entries),
            400,
            "missing_entry",
            "found `app/assembly.toml` instead: zip the folder's contents",
        ),
        refusal(
            "a manifest that is not TOML",
            with_manifest("splitter = \n"),
            400,
            "invalid_manifest",
            "invalid assembly.toml: TOML parse error at line 1",
        ),
        refusal(
            "a manifest with an unknown key",
            with_manifest("colour = \"blue\"\n"),
            400,
            "invalid_manifest",
            "unknown field `colour`",
        ),
        refusal(
            "a default of the wrong type",
            with_manifest("[parameters.n]\ntype = \"int\"\ndefault = \"many\"\n"),
            400,
            "invalid_manifest",
            "invalid assembly.toml: parameter `n`: default \"many\" is not an int",
        ),
        refusal(
            "a splitter that is not WebAssembly",
            with_splitter(b"#!/bin/sh\necho not wasm\n"),
            400,
            "not_wasm",
            "the splitter is not WebAssembly",
        ),
        refusal(
            "a core module instead of a component",
            with_splitter(b"\0asm\x01\0\0\0"),
            400,
            "not_a_component",
            "the splitter is a core WebAssembly module, not a component",
        ),
        refusal(
            "a component of the wrong world",
            with_splitter(HOSTILE_PROCESSOR),
            400,
            "wrong_world",
            "the splitter does not implement the `tessera:app/splitter` world",
        ),
        Refusal {
            image: Some(raw_zip(&[
                RawEntry::stored("bin/tool.wasm", b"fine"),
                RawEntry::stored("../../evil.sh", b"rm -rf /"),
            ])),
            ..refusal(
                "an image with a zip-slip entry",
                hostile_assembly(),
                400,
                "unsafe_path",
                "the application image is not acceptable: unsafe path \"../../evil.sh\"",
            )
        },
        Refusal {
            image: Some(b"not a zip at all".to_vec()),
            ..refusal(
                "an image that is not a zip",
                hostile_assembly(),
                400,
                "not_a_zip",
                "the application image is not acceptable: the file is not a readable zip archive",
            )
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_publishes_explain_why_and_store_nothing() {
    let mut svc = TestService::start_with(1, |c| {
        c.archive_limits = ArchiveLimits {
            max_entry_size: 16 << 20,
            max_total_size: 40 << 20,
            ..ArchiveLimits::default()
        };
    })
    .await;
    svc.publish_hostile(&[]).await;
    let stored = svc.stored_files().await;
    assert!(!stored.is_empty());

    for case in refusals() {
        for name in ["refused", "hostile"] {
            let result = svc
                .client
                .publish_bytes(name, case.assembly.clone(), case.image.clone())
                .await;
            assert!(
                matches!(&result, Err(e) if e.code() == Some(case.code)),
                "{}: expected {}, got {result:?}",
                case.what,
                case.code
            );
            assert_api_error(result, case.status, case.code, case.message);
            assert_eq!(
                svc.stored_files().await,
                stored,
                "{}: files were stored",
                case.what
            );
            assert_eq!(
                files_under(&svc.dir.path().join("uploads")),
                Vec::<std::path::PathBuf>::new(),
                "{}: the upload was not cleaned up",
                case.what
            );
        }
        let apps = svc.client.apps().await.unwrap();
        let names: Vec<(&str, u32)> = apps
            .iter()
            .map(|a| (a.name.as_str(), a.latest_version))
            .collect();
        assert_eq!(names, [("hostile", 1)], "{}", case.what);
    }
    assert_api_error(
        svc.client.app("refused").await,
        404,
        "not_found",
        "application `refused` was not found",
    );
    // After all that, the service still runs a normal job.
    svc.assert_serves_a_normal_job().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_and_bad_forms_are_refused() {
    let mut svc = TestService::start(0).await;
    assert_api_error(
        svc.client
            .publish_bytes("Bad/Name", hostile_assembly(), None)
            .await,
        400,
        "invalid_request",
        "`Bad/Name` is not a valid application name",
    );
    assert_api_error(
        svc.client
            .publish_bytes(&"a".repeat(65), hostile_assembly(), None)
            .await,
        400,
        "invalid_request",
        "is not a valid application name: use 1 to 64 characters",
    );

    let c = &svc.client;
    let send = |form: reqwest::multipart::Form| {
        c.execute(
            c.raw(reqwest::Method::POST, "/v1/apps/hostile/versions")
                .multipart(form),
        )
    };
    let error = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap();
        (
            status,
            body["code"].as_str().unwrap().to_owned(),
            body["message"].as_str().unwrap().to_owned(),
        )
    };

    let image_only = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(zip_of(&[("a.txt", b"a")])).file_name("image.zip"),
    );
    let (status, code, message) = error(send(image_only).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "invalid_multipart"));
    assert!(
        message.contains("the form has no `assembly` field"),
        "{message}"
    );

    let unexpected = reqwest::multipart::Form::new()
        .part(
            "assembly",
            reqwest::multipart::Part::bytes(hostile_assembly()).file_name("a.zip"),
        )
        .text("colour", "blue");
    let (status, code, message) = error(send(unexpected).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (400, "invalid_multipart"));
    assert!(
        message.contains("unexpected form field \"colour\""),
        "{message}"
    );

    let not_a_form = c
        .execute(
            c.raw(reqwest::Method::POST, "/v1/apps/hostile/versions")
                .header("content-type", "application/zip")
                .body(hostile_assembly()),
        )
        .await
        .unwrap();
    let (status, code, _) = error(not_a_form).await;
    assert_eq!((status, code.as_str()), (400, "invalid_multipart"));

    assert!(svc.client.apps().await.unwrap().is_empty());
    assert!(svc.stored_files().await.is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_headers_lie_is_refused_at_publish() {
    let mut svc = TestService::start(0).await;
    let mut bomb = RawEntry::deflated("data/zeros.bin", &vec![0u8; 8 << 20]);
    bomb.size = 1000;
    let image = raw_zip(&[RawEntry::stored("readme.txt", b"hi"), bomb]);
    assert_api_error(
        svc.client
            .publish_bytes("hostile", hostile_assembly(), Some(image))
            .await,
        400,
        "corrupt_entry",
        "the application image is not acceptable: entry `data/zeros.bin` is corrupt",
    );
    assert!(svc.client.apps().await.unwrap().is_empty());
    assert!(svc.stored_files().await.is_empty());
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_uploaded_files_by_reference_needs_the_accounts_own_files() {
    use tessera_framework::accounts::Quotas;
    let mut svc = TestService::start(1).await;
    let alice = svc.account("alice", Quotas::default()).await;
    let bob = svc.account("bob", Quotas::default()).await;
    let assembly = hostile_assembly();
    let image = zip_of(&[("data/readme.txt", b"alice's image")]);
    let dir = tempfile::tempdir().unwrap();
    let (assembly_path, image_path) = (dir.path().join("a.zip"), dir.path().join("i.zip"));
    std::fs::write(&assembly_path, &assembly).unwrap();
    std::fs::write(&image_path, &image).unwrap();

    // The client uploads both files, then publishes them by their sha256.
    let version = alice
        .publish("byref", &assembly_path, Some(&image_path))
        .await
        .unwrap();
    assert_eq!(version.version, 1);
    assert_eq!(version.assembly.sha256, Digest::of(&assembly));
    assert_eq!(version.image.as_ref().unwrap().sha256, Digest::of(&image));
    let job = crate::harness::wait(
        &alice,
        &alice
            .submit(&tessera_framework::jobs::SubmitJob {
                app: "byref".into(),
                ..plan_job(json!([{"name": "a", "params": {"behaviour": "ok"}}]), false)
            })
            .await
            .unwrap()
            .id,
    )
    .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");

    // Bob cannot publish Alice's files by naming them, even holding the
    // same assembly himself; a file that is not a zip is refused; nothing
    // is published.
    let his = bob
        .upload_bytes(assembly.clone().into())
        .await
        .unwrap()
        .sha256;
    let image_digest = Digest::of(&image);
    assert_api_error(
        bob.publish_uploaded("byref", his, Some(image_digest)).await,
        400,
        "invalid_request",
        &format!(
            "the application image: no uploaded file has sha256 {image_digest}; upload it first"
        ),
    );
    let junk = bob
        .upload_bytes(b"not a zip".to_vec().into())
        .await
        .unwrap()
        .sha256;
    assert_api_error(
        bob.publish_uploaded("byref", junk, None).await,
        400,
        "not_a_zip",
        "not a readable zip archive",
    );
    let response = bob
        .execute(
            bob.raw(reqwest::Method::POST, "/v1/apps/byref/versions")
                .json(&json!({"assembly": "not-a-digest"})),
        )
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["code"], "invalid_body", "{error}");
    assert!(bob.apps().await.unwrap().is_empty());
    // With the file his own, he publishes.
    assert_eq!(
        bob.publish_uploaded("byref", his, None)
            .await
            .unwrap()
            .version,
        1
    );
    svc.stop().await;
}
