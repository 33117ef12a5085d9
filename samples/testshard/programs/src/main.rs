//! `checks`: a WASI command test program for the `testshard` sample.
//!
//! `checks CHECK [ARGS...]` runs one named check (see
//! `tessera_sample_testshard_model::run_check`): it prints what the check
//! prints and exits with its status; `panic` panics. Files are read from the
//! application image at `/app`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use tessera_sample_testshard_model::run_check;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = run_check(&args, Path::new("/app"));
    if let Some(message) = run.panic {
        panic!("{message}");
    }
    // Nothing useful is left to do if the streams are closed.
    let _ = std::io::stdout().write_all(run.stdout.as_bytes());
    let _ = std::io::stderr().write_all(run.stderr.as_bytes());
    let _ = std::io::stdout().flush();
    ExitCode::from(u8::try_from(run.status).unwrap_or(u8::MAX))
}
