//! The kmer sample end to end, checked byte for byte against the native
//! computation.

use serde_json::json;
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{FailureKind, JobState};
use tessera_sample_kmer_model::{KmerParams, KmerSummary, count_native, generate_fasta};

use crate::harness::{TestService, output, params};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmer_counts_match_the_native_ones_whatever_the_chunk_size() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("kmer").await;
    let files = [
        ("a.fa", generate_fasta(1, 150, 800)),
        ("reads/b.fasta", generate_fasta(2, 40, 4000)),
        ("c.fna", generate_fasta(3, 400, 150)),
    ];
    let mut inputs = Vec::new();
    for (name, text) in &files {
        let uploaded = svc
            .client
            .upload_bytes(text.clone().into_bytes().into())
            .await
            .unwrap();
        inputs.push(InputRef {
            name: (*name).into(),
            sha256: uploaded.sha256,
        });
    }
    let bytes: Vec<&[u8]> = files.iter().map(|(_, text)| text.as_bytes()).collect();

    for (chunk_bytes, k, canonical) in [
        (16_384u64, 21u32, true),
        (1 << 20, 21, true),
        (4096, 31, false),
    ] {
        let kmer_params = KmerParams {
            k,
            canonical,
            top: 25,
            chunk_bytes,
        };
        let native = count_native(&bytes, &kmer_params, 2).unwrap();
        let job = svc
            .run(SubmitJob {
                app: "kmer".into(),
                parameters: params(json!({
                    "k": k, "canonical": canonical, "top": 25, "chunk_bytes": chunk_bytes
                })),
                inputs: inputs.clone(),
                max_task_retries: Some(0),
                ..SubmitJob::default()
            })
            .await;
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        if chunk_bytes == 1 << 20 {
            assert_eq!(job.progress.total, 3, "one chunk per file");
        } else {
            assert!(job.progress.total > 10, "{} tasks", job.progress.total);
        }

        let outputs = svc.client.outputs(&job.id).await.unwrap();
        let mut job_outputs: Vec<&str> = outputs
            .iter()
            .filter(|o| o.task.is_none())
            .map(|o| o.path.as_str())
            .collect();
        job_outputs.sort_unstable();
        assert_eq!(job_outputs, ["counts.tsv", "summary.json", "top.tsv"]);
        assert!(
            outputs
                .iter()
                .filter(|o| o.task.is_some())
                .all(|o| o.path == "intermediate/counts.bin")
        );
        for (file, expected) in [
            ("top.tsv", &native.top_tsv),
            ("counts.tsv", &native.counts_tsv),
            ("summary.json", &native.summary_json),
        ] {
            let got = output(&svc.client, &job.id, None, file).await;
            assert!(
                got == expected.as_bytes(),
                "{file} (chunk_bytes {chunk_bytes}, k {k}) differs from the native one:\n{}",
                String::from_utf8_lossy(&got[..got.len().min(2000)])
            );
        }
        assert_eq!(native.summary.records, 590);
        assert_eq!(native.summary.files, 3);
    }

    // A job without inputs counts the demo file of the application image.
    let job = svc
        .run(SubmitJob {
            app: "kmer".into(),
            parameters: params(json!({"chunk_bytes": 65536})),
            ..SubmitJob::default()
        })
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let summary: KmerSummary =
        serde_json::from_slice(&output(&svc.client, &job.id, None, "summary.json").await).unwrap();
    let demo = generate_fasta(2024, 200, 1000);
    let native = count_native(&[demo.as_bytes()], &KmerParams::default(), 2).unwrap();
    assert_eq!(summary, native.summary);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmer_refuses_an_input_that_is_not_fasta() {
    let mut svc = TestService::start(2).await;
    svc.publish_sample("kmer").await;
    let mut inputs = Vec::new();
    for (name, text) in [
        ("good.fa", generate_fasta(4, 10, 100)),
        ("notes.txt", "Sample sheet\nlane 1: ACGT\n".to_string()),
    ] {
        let uploaded = svc
            .client
            .upload_bytes(text.into_bytes().into())
            .await
            .unwrap();
        inputs.push(InputRef {
            name: name.into(),
            sha256: uploaded.sha256,
        });
    }
    let job = svc
        .run(SubmitJob {
            app: "kmer".into(),
            inputs,
            max_task_retries: Some(0),
            ..SubmitJob::default()
        })
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let failure = job.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError, "{failure:?}");
    assert!(
        failure.message.contains(
            "input `notes.txt`: it is not FASTA: the first non-blank line must be a `>` header, \
             but line 1 starts with \"Sample sheet\""
        ),
        "{failure:?}"
    );
    assert_eq!(job.progress.total, 0, "no task ran");

    let submitted = svc
        .client
        .submit(&SubmitJob {
            app: "kmer".into(),
            parameters: params(json!({"k": 32})),
            ..SubmitJob::default()
        })
        .await;
    assert!(
        submitted.is_err(),
        "k = 32 is refused at submit: {submitted:?}"
    );
    svc.stop().await;
}
