//! A WASI command for the host's `run_program` tests.
//!
//! Prints its arguments joined by spaces to stdout and `echo-stderr` to
//! stderr, then acts on the options among them: `--copy SRC DST` copies the
//! file SRC to DST, `--exit N` exits with status N once everything else is
//! done. A failed copy exits with status 1.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("{}", args.join(" "));
    eprintln!("echo-stderr");

    let mut status = 0;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--copy" => {
                let (Some(from), Some(to)) = (rest.next(), rest.next()) else {
                    eprintln!("--copy needs SRC and DST");
                    return ExitCode::FAILURE;
                };
                if let Err(e) = std::fs::copy(from, to) {
                    eprintln!("cannot copy {from} to {to}: {e}");
                    return ExitCode::FAILURE;
                }
            }
            "--exit" => match rest.next().map(|n| n.parse::<u8>()) {
                Some(Ok(n)) => status = n,
                _ => {
                    eprintln!("--exit needs a status from 0 to 255");
                    return ExitCode::FAILURE;
                }
            },
            _ => {}
        }
    }
    ExitCode::from(status)
}
