use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::{CaseResult, Suite, evaluate};

/// The checks the `checks` program knows, with their arguments.
pub const CHECKS: &[&str] = &[
    "pass",
    "fail MESSAGE...",
    "exit STATUS",
    "echo WORDS...",
    "lines COUNT",
    "cat PATH",
    "contains PATH TEXT",
    "add A B EXPECTED",
    "primes LIMIT EXPECTED",
    "panic MESSAGE...",
];

/// What a check did: the status it exits with, what it printed, and, for
/// `panic`, the panic message (the program then panics instead of exiting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRun {
    /// The exit status the program asks for.
    pub status: i32,
    /// What it writes to stdout.
    pub stdout: String,
    /// What it writes to stderr.
    pub stderr: String,
    /// `Some(message)` when the check panics.
    pub panic: Option<String>,
}

impl CheckRun {
    fn exit(status: i32, stdout: String, stderr: String) -> Self {
        Self {
            status,
            stdout,
            stderr,
            panic: None,
        }
    }
}

/// The status a Tessera task sees when a WASI preview 2 command asks for
/// `requested`: `wasi:cli/exit` only tells success (0) from failure (1).
pub fn observed_status(requested: i32) -> i32 {
    i32::from(requested != 0)
}

/// Where `path` (absolute under `/app`, or relative to it) is when the
/// application image is at `app_dir`; `None` for a path outside `/app`.
pub fn resolve_app_path(path: &str, app_dir: &Path) -> Option<PathBuf> {
    let relative = match path.strip_prefix("/app/") {
        Some(rest) => rest,
        None if path.starts_with('/') => return None,
        None => path,
    };
    if relative.split('/').any(|part| part == "..") {
        return None;
    }
    Some(app_dir.join(relative))
}

/// Runs the check named by `args[0]` with the rest as its arguments; files
/// are read from the application image at `app_dir` (`/app` in a sandbox).
///
/// | check | does |
/// | --- | --- |
/// | `pass` | prints `pass`, exits 0 |
/// | `fail MESSAGE...` | prints the message to stderr, exits 1 |
/// | `exit STATUS` | exits with STATUS (0 to 255) |
/// | `echo WORDS...` | prints the words, exits 0 |
/// | `lines COUNT` | prints `line 1` … `line COUNT`, exits 0 |
/// | `cat PATH` | prints the file, exits 0 (2 if it cannot be read) |
/// | `contains PATH TEXT` | exits 0 if the file holds TEXT, else 1 with a message |
/// | `add A B EXPECTED` | checks A + B = EXPECTED (integers), 1 with a message if not |
/// | `primes LIMIT EXPECTED` | counts the primes below LIMIT by a sieve; 1 with a message if the count is not EXPECTED |
/// | `panic MESSAGE...` | panics (the program traps) |
///
/// A missing or unknown check, or a bad argument, exits 2 with a usage message.
pub fn run_check(args: &[String], app_dir: &Path) -> CheckRun {
    let usage = |message: String| {
        CheckRun::exit(
            2,
            String::new(),
            format!("{message}\nusage: checks {}\n", CHECKS.join(" | ")),
        )
    };
    let Some((check, rest)) = args.split_first() else {
        return usage("no check given".into());
    };
    let joined = rest.join(" ");
    match (check.as_str(), rest) {
        ("pass", []) => CheckRun::exit(0, "pass\n".into(), String::new()),
        ("fail", _) => CheckRun::exit(1, String::new(), format!("{joined}\n")),
        ("exit", [status]) => match status.parse::<u8>() {
            Ok(status) => CheckRun::exit(
                i32::from(status),
                format!("exiting with status {status}\n"),
                String::new(),
            ),
            Err(_) => usage(format!("`{status}` is not a status from 0 to 255")),
        },
        ("echo", _) => CheckRun::exit(0, format!("{joined}\n"), String::new()),
        ("lines", [count]) => match count.parse::<u32>() {
            Ok(count) => {
                let mut out = String::new();
                for i in 1..=count {
                    writeln!(out, "line {i}").expect("writing to a String");
                }
                CheckRun::exit(0, out, String::new())
            }
            Err(_) => usage(format!("`{count}` is not a line count")),
        },
        ("cat", [path]) => match read(path, app_dir) {
            Ok(text) => CheckRun::exit(0, text, String::new()),
            Err(e) => CheckRun::exit(2, String::new(), format!("{e}\n")),
        },
        ("contains", [path, text]) => match read(path, app_dir) {
            Ok(content) if content.contains(text.as_str()) => {
                CheckRun::exit(0, format!("`{path}` contains {text:?}\n"), String::new())
            }
            Ok(_) => CheckRun::exit(
                1,
                String::new(),
                format!("`{path}` does not contain {text:?}\n"),
            ),
            Err(e) => CheckRun::exit(2, String::new(), format!("{e}\n")),
        },
        ("add", [a, b, expected]) => {
            match (a.parse::<i64>(), b.parse::<i64>(), expected.parse::<i64>()) {
                (Ok(a), Ok(b), Ok(expected)) => {
                    let sum = a.wrapping_add(b);
                    if sum == expected {
                        CheckRun::exit(0, format!("{a} + {b} = {sum}\n"), String::new())
                    } else {
                        CheckRun::exit(
                            1,
                            format!("{a} + {b} = {sum}\n"),
                            format!("assertion failed: {a} + {b} = {sum}, not {expected}\n"),
                        )
                    }
                }
                _ => usage("`add` takes three integers".into()),
            }
        }
        ("primes", [limit, expected]) => match (limit.parse::<u32>(), expected.parse::<u64>()) {
            (Ok(limit), Ok(expected)) => {
                let count = count_primes(limit);
                let line = format!("{count} primes below {limit}\n");
                if count == expected {
                    CheckRun::exit(0, line, String::new())
                } else {
                    let why =
                        format!("assertion failed: {count} primes below {limit}, not {expected}\n");
                    CheckRun::exit(1, line, why)
                }
            }
            _ => usage("`primes` takes a limit up to 4294967295 and a count".into()),
        },
        ("panic", _) => CheckRun {
            status: 101,
            stdout: String::new(),
            stderr: String::new(),
            panic: Some(joined),
        },
        _ => usage(format!(
            "unknown check `{check}` with {} argument(s)",
            rest.len()
        )),
    }
}

/// The number of primes below `limit`, by the sieve of Eratosthenes: a
/// check with real work, for suites that take time.
pub fn count_primes(limit: u32) -> u64 {
    let n = limit as usize;
    if n < 3 {
        return 0;
    }
    let mut composite = vec![false; n];
    let mut i = 2;
    while i * i < n {
        if !composite[i] {
            for multiple in (i * i..n).step_by(i) {
                composite[multiple] = true;
            }
        }
        i += 1;
    }
    composite[2..].iter().filter(|&&c| !c).count() as u64
}

fn read(path: &str, app_dir: &Path) -> Result<String, String> {
    let resolved = resolve_app_path(path, app_dir)
        .ok_or_else(|| format!("cannot read `{path}`: not a path inside /app"))?;
    // The error's kind, not its OS error number, which differs under WASI.
    std::fs::read_to_string(&resolved).map_err(|e| format!("cannot read `{path}`: {}", e.kind()))
}

/// The whole suite evaluated natively on `threads` threads, every case in
/// suite order: the cases whose program is the `checks` program (`checks`
/// names the program's file, e.g. `bin/checks.wasm`) run [`run_check`] with
/// the image at `app_dir`; any other program cannot run natively and fails.
/// Statuses are those a task observes ([`observed_status`]), a panic is a
/// program that did not run to an exit. Durations are measured natively.
pub fn run_native(suite: &Suite, checks: &str, app_dir: &Path, threads: usize) -> Vec<CaseResult> {
    let checks = resolve_app_path(checks, Path::new("/app"));
    let threads = threads.clamp(1, suite.cases.len().max(1));
    let per_thread = suite.cases.len().div_ceil(threads);
    let mut results: Vec<CaseResult> = Vec::with_capacity(suite.cases.len());
    std::thread::scope(|scope| {
        let handles: Vec<_> = suite
            .cases
            .chunks(per_thread.max(1))
            .enumerate()
            .map(|(t, cases)| {
                let checks = checks.clone();
                scope.spawn(move || {
                    cases
                        .iter()
                        .enumerate()
                        .map(|(j, case)| {
                            let start = Instant::now();
                            let is_checks = checks.is_some()
                                && resolve_app_path(&case.program, Path::new("/app")) == checks;
                            let run = if is_checks {
                                let run = run_check(&case.args, app_dir);
                                match run.panic {
                                    Some(message) => Err(format!(
                                        "`{}` failed: the program panicked: {message}",
                                        case.program
                                    )),
                                    None => Ok((
                                        observed_status(run.status),
                                        run.stdout.into_bytes(),
                                        run.stderr.into_bytes(),
                                    )),
                                }
                            } else {
                                Err(format!("cannot run `{}` natively", case.program))
                            };
                            let micros = start.elapsed().as_micros() as u64;
                            evaluate(case, t * per_thread + j, run, micros)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            results.extend(handle.join().expect("a native check panicked"));
        }
    });
    results
}

#[cfg(test)]
mod tests {
    #[test]
    fn primes_are_counted_like_trial_division_does() {
        let is_prime = |n: u32| {
            n >= 2
                && (2..n)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        for limit in [0u32, 1, 2, 3, 4, 10, 11, 100, 1000, 7919, 7920] {
            let expected = (0..limit).filter(|&n| is_prime(n)).count() as u64;
            assert_eq!(super::count_primes(limit), expected, "{limit}");
        }
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let app = std::path::Path::new("/nonexistent");
        let ok = super::run_check(&args(&["primes", "100", "25"]), app);
        assert_eq!(
            (ok.status, ok.stdout.as_str()),
            (0, "25 primes below 100\n")
        );
        let wrong = super::run_check(&args(&["primes", "100", "24"]), app);
        assert_eq!(wrong.status, 1);
        assert_eq!(
            wrong.stderr,
            "assertion failed: 25 primes below 100, not 24\n"
        );
        let bad = super::run_check(&args(&["primes", "-1", "0"]), app);
        assert_eq!(bad.status, 2);
        assert!(
            bad.stderr.starts_with("`primes` takes a limit"),
            "{}",
            bad.stderr
        );
    }

    use super::*;

    fn run(args: &[&str], dir: &Path) -> CheckRun {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        run_check(&args, dir)
    }

    #[test]
    fn checks_do_what_they_say() {
        let dir = std::env::temp_dir().join(format!("testshard-checks-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/fixture.txt"), "hello fixture\n").unwrap();

        assert_eq!(run(&["pass"], &dir).status, 0);
        let fail = run(&["fail", "it", "broke"], &dir);
        assert_eq!((fail.status, fail.stderr.as_str()), (1, "it broke\n"));
        assert_eq!(run(&["exit", "3"], &dir).status, 3);
        assert_eq!(run(&["exit", "300"], &dir).status, 2);
        assert_eq!(
            run(&["lines", "3"], &dir).stdout,
            "line 1\nline 2\nline 3\n"
        );
        assert_eq!(
            run(&["cat", "/app/data/fixture.txt"], &dir).stdout,
            "hello fixture\n"
        );
        assert_eq!(
            run(&["cat", "data/fixture.txt"], &dir).stdout,
            "hello fixture\n"
        );
        assert_eq!(run(&["cat", "/etc/passwd"], &dir).status, 2);
        assert_eq!(
            run(&["cat", "data/absent.txt"], &dir).stderr,
            "cannot read `data/absent.txt`: entity not found\n"
        );
        assert_eq!(run(&["cat", "../x"], &dir).status, 2);
        assert_eq!(
            run(&["contains", "data/fixture.txt", "fixture"], &dir).status,
            0
        );
        let missing = run(&["contains", "data/fixture.txt", "absent"], &dir);
        assert_eq!(missing.status, 1);
        assert!(missing.stderr.contains("does not contain \"absent\""));
        assert_eq!(run(&["add", "2", "2", "4"], &dir).status, 0);
        let wrong = run(&["add", "2", "2", "5"], &dir);
        assert_eq!(wrong.stderr, "assertion failed: 2 + 2 = 4, not 5\n");
        assert_eq!(run(&["panic", "boom"], &dir).panic.as_deref(), Some("boom"));
        assert_eq!(run(&["nope"], &dir).status, 2);
        assert_eq!(run(&[], &dir).status, 2);
        assert_eq!((observed_status(0), observed_status(3)), (0, 1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_demo_suite_has_the_documented_outcomes() {
        let image = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../image"));
        let text = std::fs::read_to_string(image.join("suite.json")).unwrap();
        let suite = crate::parse_suite("suite.json", &text).unwrap();
        for threads in [1, 3] {
            let results = run_native(&suite, "bin/checks.wasm", image, threads);
            let indices: Vec<usize> = results.iter().map(|r| r.index).collect();
            assert_eq!(indices, (0..20).collect::<Vec<_>>());
            let failed: Vec<&str> = results
                .iter()
                .filter(|r| !r.passed)
                .map(|r| r.name.as_str())
                .collect();
            assert_eq!(
                failed,
                [
                    "add-wrong",
                    "fixture-lacks-word",
                    "missing-file",
                    "explicit-failure",
                    "panics",
                    "missing-program",
                    "unknown-check"
                ]
            );
            let add_wrong = &results[3];
            assert_eq!(
                add_wrong.message.as_deref(),
                Some("expected exit status 0, got 1: assertion failed: 2 + 2 = 4, not 5")
            );
            assert!(results[4].stdout_tail.starts_with("Hello from the tessera"));
            assert!(
                results[13].stdout_tail.starts_with('…'),
                "2000 lines are cut"
            );
        }
    }
}
