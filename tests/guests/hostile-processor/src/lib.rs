//! A processor for the host's tests, which does whatever the task parameter
//! `behaviour` asks:
//!
//! | behaviour | what `process` does |
//! | --- | --- |
//! | `ok` | writes `/output/ok.txt` holding the task name |
//! | `guest-error` | fails with "requested failure" |
//! | `trap` | panics with "requested trap" |
//! | `loop` | spins forever without calling the host |
//! | `busy` | busy-waits for task parameter `millis` milliseconds, then like `ok` |
//! | `oom` | allocates and touches 16 MiB chunks until memory runs out |
//! | `stack-overflow` | recurses until the wasm call stack is exhausted |
//! | `flood` | prints to stdout forever (fails if a write is refused) |
//! | `huge-file` | writes zeros to `/output/big.bin` in 1 MiB writes forever (fails if a write is refused) |
//! | `write-outside` | tries to create `/app/x`, `/inputs/x`, `/tmp/x`, `/output/../x`, `/etc/tessera-escape` |
//! | `read-outside` | tries to read `/etc/passwd`, `/output/../../etc/passwd`, `/inputs/../../../etc/hostname`, `/proc/self/environ` |
//! | `fail-once` | fails with "first attempt fails" on attempt 1, else like `ok` |
//! | `env` | writes `/output/env.txt`: every environment variable as `KEY=VALUE`, sorted |
//! | `copy-inputs` | copies each input `/inputs/<name>` to `/output/<name with / as __>` and lists `name size` lines in `/output/listing.txt`; fails if a size differs from the announced one |
//! | `run-program` | runs task parameter `program` with `args` (array of strings) and writes `/output/stdout.bin`, `/output/stderr.bin`, `/output/status.txt` |
//! | `log` | logs at each level, reports progress 0.5, prints "hello stdout" and "hello stderr", then like `ok` |
//! | `kinds` | writes `/output/previews/thumb.txt`, `/output/intermediate/part.txt` and `/output/result.txt`, each holding its kind |
//!
//! Attempts to escape follow one convention: if any attempt succeeds the task
//! fails with an error containing `ESCAPED` and the path; if all are refused
//! it writes `/output/refused.txt` (one `path: error` line each) and succeeds.
//!
//! `merge` panics when the job parameter `merge` is `"trap"`, fails with
//! "merge failed on request" when it is `"error"`, and otherwise writes
//! `/output/merged.txt` (one `<task> <comma-separated sorted output names>`
//! line per task, in the order received) and copies every task output to
//! `/output/all/<task>/<file>`.

use std::fs::{self, File};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tessera_processor_sdk::{
    Error, Job, Level, Processor, Task, TaskResult, input_path, intermediate_path, log,
    output_path, preview_path, progress, run_program,
};

struct Hostile;

impl Processor for Hostile {
    fn process(task: Task) -> Result<(), Error> {
        let behaviour: String = task.parameters().get("behaviour")?;
        match behaviour.as_str() {
            "ok" => write_ok(&task),
            "guest-error" => Err(Error::new("requested failure")),
            "trap" => panic!("requested trap"),
            "loop" => spin_forever(),
            "busy" => {
                let millis: u64 = task.parameters().get("millis")?;
                let deadline = Instant::now() + Duration::from_millis(millis);
                while Instant::now() < deadline {
                    black_box(());
                }
                write_ok(&task)
            }
            "oom" => exhaust_memory(),
            "stack-overflow" => {
                black_box(recurse(black_box(0)));
                Err(Error::new("the recursion returned"))
            }
            "flood" => flood_stdout(),
            "huge-file" => huge_file(),
            "write-outside" => write_outside(),
            "read-outside" => read_outside(),
            "fail-once" if task.attempt == 1 => Err(Error::new("first attempt fails")),
            "fail-once" => write_ok(&task),
            "env" => {
                let mut vars: Vec<String> = std::env::vars()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect();
                vars.sort();
                fs::write(output_path("env.txt"), vars.concat())?;
                Ok(())
            }
            "copy-inputs" => copy_inputs(&task),
            "run-program" => {
                let program: String = task.parameters().get("program")?;
                let args: Vec<String> = task.parameters().get_or("args", Vec::new())?;
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let output = run_program(&program, &args)?;
                fs::write(output_path("stdout.bin"), &output.stdout)?;
                fs::write(output_path("stderr.bin"), &output.stderr)?;
                fs::write(output_path("status.txt"), output.status.to_string())?;
                Ok(())
            }
            "kinds" => {
                fs::write(preview_path("thumb.txt")?, "preview")?;
                fs::write(intermediate_path("part.txt")?, "intermediate")?;
                fs::write(output_path("result.txt"), "output")?;
                Ok(())
            }
            "log" => {
                log(Level::Debug, "debug line");
                log(Level::Info, "info line");
                log(Level::Warn, "warn line");
                log(Level::Error, "error line");
                progress(0.5);
                println!("hello stdout");
                eprintln!("hello stderr");
                write_ok(&task)
            }
            other => Err(Error::new(format!("unknown behaviour `{other}`"))),
        }
    }

    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let mode: String = job.parameters().get_or("merge", String::from("ok"))?;
        match mode.as_str() {
            "trap" => panic!("merge trap requested"),
            "error" => return Err(Error::new("merge failed on request")),
            _ => {}
        }
        let mut merged = String::new();
        for task in &tasks {
            let mut names: Vec<&str> = task.outputs.iter().map(|f| f.name.as_str()).collect();
            names.sort_unstable();
            merged.push_str(&format!("{} {}\n", task.name, names.join(",")));
            for file in &task.outputs {
                let copy = output_path("all").join(&task.name).join(&file.name);
                if let Some(parent) = copy.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::copy(task.output_path(&file.name), &copy)?;
            }
        }
        fs::write(output_path("merged.txt"), merged)?;
        Ok(())
    }
}

tessera_processor_sdk::export_processor!(Hostile);

fn write_ok(task: &Task) -> Result<(), Error> {
    fs::write(output_path("ok.txt"), &task.name)?;
    Ok(())
}

fn spin_forever() -> ! {
    let mut i = 0u64;
    loop {
        i = black_box(i.wrapping_add(1));
    }
}

fn exhaust_memory() -> ! {
    const CHUNK: usize = 16 << 20;
    let mut chunks = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        // Writing one byte per page makes the memory really used, whatever
        // the allocator does with fresh pages.
        for page in chunk.iter_mut().step_by(4096) {
            *page = 1;
        }
        chunks.push(black_box(chunk));
    }
}

/// Recurses until the stack runs out. The addition after the call keeps the
/// optimiser from turning it into a loop, and keeping the frame's values in
/// wasm locals (no address taken) makes it exhaust the wasm call stack that
/// the runtime guards, rather than Rust's shadow stack in linear memory.
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)).wrapping_add(black_box(depth))
}

fn flood_stdout() -> Result<(), Error> {
    let line = b"flood flood flood flood flood flood flood flood flood flood flood flood\n";
    let mut stdout = std::io::stdout().lock();
    let mut written = 0u64;
    loop {
        stdout
            .write_all(line)
            .map_err(|e| Error::new(format!("stdout refused more after {written} bytes: {e}")))?;
        written += line.len() as u64;
    }
}

fn huge_file() -> Result<(), Error> {
    let zeros = vec![0u8; 1 << 20];
    let mut file = File::create(output_path("big.bin"))?;
    let mut written = 0u64;
    loop {
        file.write_all(&zeros).map_err(|e| {
            Error::new(format!(
                "/output/big.bin refused more after {written} bytes: {e}"
            ))
        })?;
        written += zeros.len() as u64;
    }
}

/// Runs `attempt` on every path; see the crate docs for the convention.
fn refuse_all(paths: &[&str], attempt: impl Fn(&Path) -> std::io::Result<()>) -> Result<(), Error> {
    let mut refusals = String::new();
    for path in paths {
        match attempt(Path::new(path)) {
            Ok(()) => return Err(Error::new(format!("ESCAPED: {path}"))),
            Err(e) => refusals.push_str(&format!("{path}: {e}\n")),
        }
    }
    fs::write(output_path("refused.txt"), refusals)?;
    Ok(())
}

fn write_outside() -> Result<(), Error> {
    refuse_all(
        &[
            "/app/x",
            "/inputs/x",
            "/tmp/x",
            "/output/../x",
            "/etc/tessera-escape",
        ],
        |path| fs::write(path, b"escaped"),
    )
}

fn read_outside() -> Result<(), Error> {
    refuse_all(
        &[
            "/etc/passwd",
            "/output/../../etc/passwd",
            "/inputs/../../../etc/hostname",
            "/proc/self/environ",
        ],
        |path| fs::read(path).map(drop),
    )
}

fn copy_inputs(task: &Task) -> Result<(), Error> {
    let mut listing = String::new();
    for input in &task.inputs {
        let copy = output_path(&input.name.replace('/', "__"));
        let size = fs::copy(input_path(&input.name), &copy)
            .map_err(|e| Error::new(format!("copying input `{}`: {e}", input.name)))?;
        if size != input.size {
            return Err(Error::new(format!(
                "input `{}` is announced as {} bytes but holds {size}",
                input.name, input.size
            )));
        }
        listing.push_str(&format!("{} {size}\n", input.name));
    }
    fs::write(output_path("listing.txt"), listing)?;
    Ok(())
}
