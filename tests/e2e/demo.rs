//! `tessera demo --sample NAME`, for every sample, through the real binary.

use std::process::Command;

use crate::harness::files_under;

#[test]
fn the_demo_of_every_sample_completes_and_downloads_its_outputs() {
    for sample in tessera_samples::all() {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "demo",
                "--sample",
                sample.name,
                "--slots",
                "2",
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "demo {} failed\nstdout:\n{stdout}\nstderr:\n{stderr}",
            sample.name
        );
        for (name, _) in sample.demo_inputs {
            assert!(
                stdout.contains(name),
                "{}: input {name} named\n{stdout}",
                sample.name
            );
        }
        let outputs = dir.path().join("outputs");
        let files = files_under(&outputs);
        // `noop` is the one sample whose tasks write nothing.
        assert_eq!(
            files.is_empty(),
            sample.name == "noop",
            "{}: {} outputs downloaded",
            sample.name,
            files.len()
        );
        assert!(
            stdout.contains(&format!("Downloaded {} output files", files.len())),
            "{}: {stdout}",
            sample.name
        );
    }
}

#[test]
fn an_unknown_sample_is_named_with_the_list_of_samples() {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["demo", "--sample", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let names: Vec<&str> = tessera_samples::all().iter().map(|s| s.name).collect();
    assert!(
        stderr.contains(&format!(
            "there is no sample `nope`; the samples are: {}",
            names.join(", ")
        )),
        "{stderr}"
    );
}
