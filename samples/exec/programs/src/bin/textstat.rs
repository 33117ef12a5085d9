//! `textstat [--upper] INPUT [OUTPUT]`: a small WASI command shipped in the
//! exec sample's application image, to wrap without any download.
//!
//! Prints `<lines> <words> <bytes> <INPUT>` to stdout, like `wc`. With
//! OUTPUT, writes the text there too, upper-cased with `--upper`. Exits
//! with status 2 on a usage or I/O error and 3 when INPUT is not UTF-8
//! text, with the reason on stderr.

use std::process::ExitCode;

use tessera_sample_exec_programs::{stat_line, transform};

fn main() -> ExitCode {
    let mut upper = false;
    let mut paths = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--upper" => upper = true,
            _ => paths.push(arg),
        }
    }
    let (input, output) = match paths.as_slice() {
        [input] => (input, None),
        [input, output] => (input, Some(output)),
        _ => {
            eprintln!("usage: textstat [--upper] INPUT [OUTPUT]");
            return ExitCode::from(2);
        }
    };
    let bytes = match std::fs::read(input) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("{input}: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        eprintln!("{input}: not UTF-8 text");
        return ExitCode::from(3);
    };
    print!("{}", stat_line(&text, input));
    if let Some(output) = output
        && let Err(e) = std::fs::write(output, transform(text, upper))
    {
        eprintln!("{output}: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}
