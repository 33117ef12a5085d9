//! The services the host offers to guests.
//!
//! Compiled for another target than wasm (a native unit test), `log` writes to
//! stderr, `progress` does nothing and `run_program` fails, so guest logic
//! stays testable outside Tessera.

use crate::Error;

#[cfg(target_arch = "wasm32")]
use crate::__bindings::tessera::app::host as wit;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Detail for whoever debugs the application.
    Debug,
    /// Normal progress.
    Info,
    /// Something unexpected that the guest worked around.
    Warn,
    /// Something failed.
    Error,
}

/// What a program started with [`run_program`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOutput {
    /// The program's exit status (0 when it returned normally).
    pub status: i32,
    /// Everything it wrote to stdout (bounded by the host).
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr (bounded by the host).
    pub stderr: Vec<u8>,
}

/// Writes a structured log line to the attempt's `stderr.txt`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wit::log(
        match level {
            Level::Debug => wit::LogLevel::Debug,
            Level::Info => wit::LogLevel::Info,
            Level::Warn => wit::LogLevel::Warn,
            Level::Error => wit::LogLevel::Error,
        },
        message,
    );
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Reports how far the current task has got, from 0.0 to 1.0.
pub fn progress(fraction: f32) {
    #[cfg(target_arch = "wasm32")]
    wit::progress(fraction);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = fraction;
}

/// Runs a WASI command program from the application image inside this
/// task's sandbox and captures its output.
///
/// `path` is absolute (`/app/bin/tool.wasm`) or relative to `/app`; `args`
/// do not include the program name. A program that exits with a non-zero
/// status is not an error: look at [`ProgramOutput::status`]. It is an error
/// when the program cannot be found, loaded or run to an exit.
pub fn run_program(path: &str, args: &[&str]) -> Result<ProgramOutput, Error> {
    #[cfg(target_arch = "wasm32")]
    {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        wit::run_program(path, &args)
            .map(|o| ProgramOutput {
                status: o.status,
                stdout: o.stdout,
                stderr: o.stderr,
            })
            .map_err(Error::new)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = args;
        Err(Error::new(format!(
            "cannot run `{path}`: programs only run inside a Tessera sandbox"
        )))
    }
}
