//! Write the task processor of a Tessera application in Rust.
//!
//! A Tessera application's cloud assembly holds two WebAssembly components: a
//! splitter, which turns a job into tasks (see `tessera-splitter-sdk`), and a
//! processor, written with this crate, which runs one task at a time and,
//! once every task of a job has succeeded, merges their outputs.
//!
//! A processor is a `cdylib` crate built for `wasm32-wasip2`. It implements
//! [`Processor`] on a unit struct and exports it with [`export_processor!`];
//! the WIT interface between the component and the host stays out of sight.
//!
//! # The sandbox
//!
//! Every call runs in a fresh sandbox with standard Rust I/O (`std::fs`,
//! `std::env`, `println!`):
//!
//! | path | contents |
//! | --- | --- |
//! | [`APP_DIR`] (`/app`) | the application image, read-only |
//! | [`INPUTS_DIR`] (`/inputs`) | `process`: the task's job inputs and, under `/inputs/<task>/`, the outputs of the tasks it depends on; `merge`: every task's outputs under `/inputs/<task>/`. Read-only |
//! | [`OUTPUT_DIR`] (`/output`) | writable; what is here when the call returns `Ok` is its output |
//!
//! The environment holds `TESSERA_JOB_ID`, `TESSERA_TASK_NAME`,
//! `TESSERA_TASK_ATTEMPT`, `TESSERA_APP`, `TESSERA_APP_VERSION` and the other
//! `TESSERA_*` variables, plus the task's own environment from the splitter.
//! stdout and stderr are kept as the attempt's `stdout.txt` and `stderr.txt`;
//! [`log`] adds structured lines to `stderr.txt` and [`progress`] feeds the
//! job's progress bar. [`run_program`] runs a WASI program shipped in the
//! application image, which is how an existing application is wrapped.
//!
//! # Failures
//!
//! Returning `Err` fails the attempt as a *guest error* with the error's
//! message. A panic is a *trap*: the host reports it as such (the panic
//! message is in `stderr.txt`). Both make the task eligible for a retry, up to
//! the job's `max_task_retries`; [`Task::attempt`] says which attempt runs.
//! Running out of memory, time or output space also fails the attempt.
//!
//! # Example
//!
//! A processor that counts the lines of its inputs, then sums the counts of
//! every task in the merge step:
//!
//! ```no_run
//! use std::fs;
//!
//! use tessera_processor_sdk::{
//!     Error, Job, Level, Processor, Task, TaskResult, export_processor, input_path, log,
//!     output_path, progress,
//! };
//!
//! struct LineCounter;
//!
//! impl Processor for LineCounter {
//!     fn process(task: Task) -> Result<(), Error> {
//!         let verbose: bool = task.job_parameters().get_or("verbose", false)?;
//!         let mut lines = 0;
//!         for (i, input) in task.inputs.iter().enumerate() {
//!             let text = fs::read_to_string(input_path(&input.name))?;
//!             lines += text.lines().count();
//!             progress((i + 1) as f32 / task.inputs.len() as f32);
//!         }
//!         if verbose {
//!             log(Level::Info, &format!("{}: {lines} lines", task.name));
//!         }
//!         fs::write(output_path("lines.txt"), lines.to_string())?;
//!         Ok(())
//!     }
//!
//!     fn merge(_job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
//!         let mut total = 0u64;
//!         for task in &tasks {
//!             let text = fs::read_to_string(task.output_path("lines.txt"))?;
//!             total += text
//!                 .trim()
//!                 .parse::<u64>()
//!                 .map_err(|e| Error::new(format!("{}: {e}", task.name)))?;
//!         }
//!         fs::write(output_path("total.txt"), total.to_string())?;
//!         Ok(())
//!     }
//! }
//!
//! export_processor!(LineCounter);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and put the
//! resulting `.wasm` in the cloud assembly as `processor.wasm`.
//!
//! # Build options
//!
//! Tessera runs every component with wasm's fixed-width SIMD (`simd128`)
//! available, but Rust builds for `wasm32-wasip2` without it. Code that
//! works on many bytes or numbers at once (pixels, matrices) can be
//! noticeably faster with it: the `imageproc` sample is. Measure both ways,
//! since other code can also be slower with it: a compiler may vectorise a
//! loop badly. Turn it on for your processor alone with a
//! `.cargo/config.toml` next to its `Cargo.toml`:
//!
//! ```toml
//! [target.wasm32-wasip2]
//! rustflags = ["-C", "target-feature=+simd128"]
//! ```
//!
//! or for one build with `RUSTFLAGS="-C target-feature=+simd128"`. Results
//! stay bit-identical: wasm's SIMD instructions are deterministic (only the
//! `relaxed-simd` feature, which Tessera does not recommend, is not). Tessera's
//! own samples ask for features in their `Cargo.toml` instead
//! (`[package.metadata.tessera] target-features = ["simd128"]`), which the
//! samples' build script reads.

#![deny(missing_docs)]

// The generated bindings name this crate by its path from the outside, so
// that the export macro works in the guest crate; this makes that path valid
// here too.
extern crate self as tessera_processor_sdk;

// Errors, parameters, host services and the job record are the same in both
// SDKs: one set of files, compiled into each against its own bindings.
#[path = "../../splitter-sdk/src/error.rs"]
mod error;
#[path = "../../splitter-sdk/src/host.rs"]
mod host;
#[path = "../../splitter-sdk/src/job.rs"]
mod job;
#[path = "../../splitter-sdk/src/params.rs"]
mod params;
mod processor;
mod sandbox;
mod task;

// Not part of the API: the generated bindings, public only for the export
// macro. Their raw ABI functions take as many arguments as the records have
// fields.
#[doc(hidden)]
#[allow(missing_docs, clippy::too_many_arguments)]
pub mod __bindings;

pub use error::Error;
pub use host::{Level, ProgramOutput, log, progress, run_program};
pub use job::{FileInfo, Job};
pub use params::Params;
pub use processor::Processor;
pub use sandbox::{
    APP_DIR, INPUTS_DIR, OUTPUT_DIR, input_path, intermediate_path, output_path, preview_path,
};
pub use task::{Task, TaskResult};
