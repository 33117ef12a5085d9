use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::TestCase;

/// How much of a program's stdout and stderr a result keeps: the end.
pub const TAIL_BYTES: usize = 4096;

/// The outcome of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseResult {
    /// The case's name.
    pub name: String,
    /// Its position in the suite, from 0.
    pub index: usize,
    /// Whether it passed.
    pub passed: bool,
    /// The program's exit status; `None` when it did not run to an exit.
    pub status: Option<i32>,
    /// The status that means success.
    pub expected_exit: i32,
    /// Why it failed; `None` when it passed.
    pub message: Option<String>,
    /// The wall-clock time of the run, in microseconds.
    pub duration_us: u64,
    /// The end of what the program wrote to stdout ([`TAIL_BYTES`] at most).
    pub stdout_tail: String,
    /// The end of what it wrote to stderr.
    pub stderr_tail: String,
}

/// The result of `case` (number `index` of the suite) from what its
/// program did: `Ok((status, stdout, stderr))`, or `Err` with the reason it
/// did not run to an exit (not found, trapped, timed out). It passes when
/// the status is the expected one.
pub fn evaluate(
    case: &TestCase,
    index: usize,
    run: Result<(i32, Vec<u8>, Vec<u8>), String>,
    duration_us: u64,
) -> CaseResult {
    let (status, stdout, stderr, message) = match run {
        Ok((status, stdout, stderr)) => {
            let message = (status != case.expected_exit).then(|| {
                let mut message =
                    format!("expected exit status {}, got {status}", case.expected_exit);
                let last = String::from_utf8_lossy(&stderr);
                if let Some(line) = last.lines().rev().find(|l| !l.trim().is_empty()) {
                    write!(message, ": {}", line.trim()).expect("writing to a String");
                }
                message
            });
            (Some(status), stdout, stderr, message)
        }
        Err(e) => (
            None,
            Vec::new(),
            Vec::new(),
            Some(format!("the program did not run to an exit: {e}")),
        ),
    };
    CaseResult {
        name: case.name.clone(),
        index,
        passed: message.is_none(),
        status,
        expected_exit: case.expected_exit,
        message,
        duration_us,
        stdout_tail: tail(&stdout),
        stderr_tail: tail(&stderr),
    }
}

/// The last [`TAIL_BYTES`] of `bytes` as text (invalid UTF-8 replaced),
/// starting with `…` when cut.
pub fn tail(bytes: &[u8]) -> String {
    if bytes.len() <= TAIL_BYTES {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut start = bytes.len() - TAIL_BYTES;
    // Do not start inside a UTF-8 sequence.
    while start < bytes.len() && (bytes[start] & 0xC0) == 0x80 {
        start += 1;
    }
    format!("…{}", String::from_utf8_lossy(&bytes[start..]))
}

/// The summary of a `testshard` job, written to its `summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The suite's name.
    pub suite: String,
    /// The number of cases.
    pub tests: u64,
    /// Cases that passed.
    pub passed: u64,
    /// Cases that failed.
    pub failed: u64,
    /// The shards (tasks) that ran them.
    pub shards: u64,
    /// The names of the failed cases, in suite order.
    pub failures: Vec<String>,
    /// The sum of the cases' estimates, in milliseconds.
    pub estimated_ms: u64,
    /// The sum of the cases' run times, in milliseconds.
    pub duration_ms: u64,
}

impl Summary {
    /// The summary of `results` (in suite order) run on `shards` shards.
    pub fn new(suite: &crate::Suite, results: &[CaseResult], shards: u64) -> Self {
        let failures: Vec<String> = results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| r.name.clone())
            .collect();
        Self {
            suite: suite.name.clone(),
            tests: results.len() as u64,
            passed: (results.len() - failures.len()) as u64,
            failed: failures.len() as u64,
            shards,
            failures,
            estimated_ms: suite.cases.iter().map(|c| c.estimated_ms).sum(),
            duration_ms: results.iter().map(|r| r.duration_us).sum::<u64>() / 1000,
        }
    }
}

/// The JUnit XML report of `results` (in suite order): a `<testsuites>`
/// holding one `<testsuite>` with `tests` and `failures` counts, and a
/// `<testcase>` per case with a `<failure message=…>` (its stderr tail as
/// text) when it failed and its stdout tail as `<system-out>`.
pub fn junit_xml(suite: &str, results: &[CaseResult]) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let total_us: u64 = results.iter().map(|r| r.duration_us).sum();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let suite = escape(suite);
    let counts = format!(
        "tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{}\"",
        results.len(),
        seconds(total_us)
    );
    writeln!(xml, "<testsuites name=\"{suite}\" {counts}>").expect("writing to a String");
    writeln!(xml, "  <testsuite name=\"{suite}\" {counts}>").expect("writing to a String");
    for r in results {
        write!(
            xml,
            "    <testcase name=\"{}\" classname=\"{suite}\" time=\"{}\"",
            escape(&r.name),
            seconds(r.duration_us)
        )
        .expect("writing to a String");
        let message = r.message.as_deref();
        if message.is_none() && r.stdout_tail.is_empty() && r.stderr_tail.is_empty() {
            xml.push_str("/>\n");
            continue;
        }
        xml.push_str(">\n");
        if let Some(message) = message {
            let kind = if r.status.is_some() {
                "exit-status"
            } else {
                "no-exit"
            };
            writeln!(
                xml,
                "      <failure message=\"{}\" type=\"{kind}\">{}</failure>",
                escape(message),
                escape(&r.stderr_tail)
            )
            .expect("writing to a String");
        }
        if !r.stdout_tail.is_empty() {
            writeln!(
                xml,
                "      <system-out>{}</system-out>",
                escape(&r.stdout_tail)
            )
            .expect("writing to a String");
        }
        if !r.stderr_tail.is_empty() {
            writeln!(
                xml,
                "      <system-err>{}</system-err>",
                escape(&r.stderr_tail)
            )
            .expect("writing to a String");
        }
        xml.push_str("    </testcase>\n");
    }
    xml.push_str("  </testsuite>\n</testsuites>\n");
    xml
}

/// Microseconds as seconds with three decimals.
fn seconds(us: u64) -> String {
    let ms = us.div_ceil(1000);
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Text safe in XML content and attributes; characters XML 1.0 cannot hold
/// become U+FFFD.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(expected_exit: i32) -> TestCase {
        TestCase {
            name: "a<b>".into(),
            program: "bin/checks.wasm".into(),
            args: vec![],
            expected_exit,
            estimated_ms: 1,
        }
    }

    #[test]
    fn outcomes_follow_the_status() {
        let ok = evaluate(&case(0), 0, Ok((0, b"hi\n".to_vec(), vec![])), 1500);
        assert!(ok.passed && ok.message.is_none());
        let bad = evaluate(&case(0), 1, Ok((1, vec![], b"first\nwhy\n\n".to_vec())), 10);
        assert_eq!(
            bad.message.as_deref(),
            Some("expected exit status 0, got 1: why")
        );
        let expected_failure = evaluate(&case(1), 2, Ok((1, vec![], vec![])), 10);
        assert!(expected_failure.passed);
        let trapped = evaluate(&case(0), 3, Err("`x` failed: trap".into()), 10);
        assert_eq!(trapped.status, None);
        assert_eq!(
            trapped.message.as_deref(),
            Some("the program did not run to an exit: `x` failed: trap")
        );
    }

    #[test]
    fn tails_keep_the_end() {
        assert_eq!(tail(b"short"), "short");
        let long: Vec<u8> = "é".repeat(TAIL_BYTES).into_bytes();
        let t = tail(&long);
        assert!(t.starts_with('…'));
        assert!(t.len() <= TAIL_BYTES + '…'.len_utf8());
        assert!(t[3..].chars().all(|c| c == 'é'));
    }

    #[test]
    fn junit_counts_and_escapes() {
        let results = vec![
            evaluate(
                &case(0),
                0,
                Ok((0, b"out & about\n".to_vec(), vec![])),
                1500,
            ),
            evaluate(&case(0), 1, Ok((1, vec![], b"x < y\x07\n".to_vec())), 2000),
        ];
        let xml = junit_xml("s\"1", &results);
        assert!(xml.contains("<testsuite name=\"s&quot;1\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"0.004\">"), "{xml}");
        assert!(
            xml.contains("<testcase name=\"a&lt;b&gt;\" classname=\"s&quot;1\" time=\"0.002\">")
        );
        assert!(xml.contains("<system-out>out &amp; about\n</system-out>"));
        assert!(xml.contains(
            "<failure message=\"expected exit status 0, got 1: x &lt; y\u{FFFD}\" type=\"exit-status\">x &lt; y\u{FFFD}\n</failure>"
        ), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 2);
        assert!(xml.ends_with("</testsuites>\n"));
    }
}
