//! Write the job splitter of a Tessera application in Rust.
//!
//! A Tessera application's cloud assembly holds two WebAssembly components: a
//! splitter, written with this crate, which turns a job into tasks, and a
//! processor (see `tessera-processor-sdk`), which runs one task at a time and,
//! once every task of a job has succeeded, merges their outputs.
//!
//! A splitter is a `cdylib` crate built for `wasm32-wasip2`. It implements
//! [`Splitter`] on a unit struct and exports it with [`export_splitter!`];
//! the WIT interface between the component and the host stays out of sight.
//!
//! # What a splitter sees
//!
//! [`Splitter::split`] receives the [`Job`]: its id, application, typed
//! [`Params`] (checked against the `assembly.toml` declarations, defaults
//! applied) and the list of its input files, which it may read under
//! [`INPUTS_DIR`] (`/inputs`); the application image is at [`APP_DIR`]
//! (`/app`). Both are read-only. It returns a [`SplitPlan`]: a list of
//! [`TaskSpec`]s, each with a name, JSON parameters, the job inputs it needs,
//! the tasks it depends on (their outputs become its inputs) and extra
//! environment variables, and whether the processor's merge step runs.
//!
//! Standard Rust I/O works (`std::fs` on those folders, `println!`); [`log`]
//! writes structured log lines, [`progress`] reports progress and
//! [`run_program`] runs a WASI program shipped in the application image.
//!
//! # Failures
//!
//! Returning `Err` fails the split attempt as a *guest error* with the
//! error's message. A panic is a *trap*: the host reports it as such (the
//! panic message goes to stderr). No task runs until a split succeeds.
//!
//! # Example
//!
//! A splitter that renders the frames `first..=last` in batches, then lets
//! the processor assemble them:
//!
//! ```no_run
//! use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter};
//!
//! struct Frames;
//!
//! impl Splitter for Frames {
//!     fn split(job: Job) -> Result<SplitPlan, Error> {
//!         let params = job.parameters();
//!         let first: u32 = params.get("first")?;
//!         let last: u32 = params.get("last")?;
//!         let batch: u32 = params.get_or("batch", 10)?;
//!         if last < first || batch == 0 {
//!             return Err(Error::new("expected first <= last and batch > 0"));
//!         }
//!         let mut plan = SplitPlan::new();
//!         for start in (first..=last).step_by(batch as usize) {
//!             let end = last.min(start + batch - 1);
//!             plan.push(
//!                 TaskSpec::new(format!("frames-{start:05}"))
//!                     .param("first", start)
//!                     .param("last", end)
//!                     .input("scene.json"),
//!             );
//!         }
//!         Ok(plan)
//!     }
//! }
//!
//! export_splitter!(Frames);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and put the
//! resulting `.wasm` in the cloud assembly as `splitter.wasm`.

#![deny(missing_docs)]

// The generated bindings name this crate by its path from the outside, so
// that the export macro works in the guest crate; this makes that path valid
// here too.
extern crate self as tessera_splitter_sdk;

// `error`, `host`, `job` and `params` are shared with tessera-processor-sdk,
// which compiles these same files.
mod error;
mod host;
mod job;
mod params;
mod plan;
mod sandbox;
mod splitter;

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
pub use plan::{SplitPlan, TaskSpec};
pub use sandbox::{APP_DIR, INPUTS_DIR, input_path};
pub use splitter::Splitter;
