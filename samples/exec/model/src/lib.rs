//! The model behind the `exec` sample: wrapping an existing WASI command
//! program that is shipped in the application image.
//!
//! For every input file `<name>` the program runs once with arguments made
//! from a template ([`ExecParams::args`]): the template is split on
//! whitespace first, then each word has its placeholders replaced, so a file
//! name with spaces stays one argument:
//!
//! | placeholder | becomes |
//! | --- | --- |
//! | `{input}` | `/inputs/<name>` |
//! | `{output}` | `/output/<output name>`: `<name>`, with its extension replaced by `output_extension` when that is set |
//! | `{name}` | `<name>` |
//! | `{stem}` | `<name>` without its folder and extension |
//! | `{{`, `}}` | `{`, `}` |
//!
//! The program's stdout is kept as `/output/<stdout_to>` when that template
//! (`{name}` and `{stem}` only) is set. Each run gives a [`RunRecord`]; the
//! job's records make `manifest.csv` ([`manifest_csv`]) and `summary.json`
//! ([`Summary`]). [`run_job`] computes a whole job natively with any way of
//! running the program (the tests run it with wasmtime), on several threads.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where the application image is mounted.
pub const APP_DIR: &str = "/app";
/// Where the inputs are mounted.
pub const INPUTS_DIR: &str = "/inputs";
/// The writable output folder.
pub const OUTPUT_DIR: &str = "/output";
/// The file, under `/output`, where a task keeps its run records.
pub const RECORDS_FILE: &str = "intermediate/runs.json";
/// How much of a program's stderr a run record keeps, in bytes.
pub const STDERR_KEPT: usize = 2048;

/// The application's parameters other than `per_task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecParams {
    /// The program: a path inside the application image, absolute
    /// (`/app/bin/tool.wasm`) or relative to `/app`.
    pub program: String,
    /// The argument template (see the crate documentation).
    pub args: String,
    /// The extension, without the dot, that replaces the input's in
    /// `{output}`; empty keeps the input's name.
    #[serde(default)]
    pub output_extension: String,
    /// The file name template under `/output` for the program's stdout;
    /// empty discards stdout.
    #[serde(default)]
    pub stdout_to: String,
    /// Whether a run that exits with a non-zero status is recorded instead
    /// of failing its task.
    #[serde(default)]
    pub allow_failure: bool,
}

impl ExecParams {
    /// Checks the parameters, with a message naming the faulty one.
    pub fn validate(&self) -> Result<(), String> {
        program_path(&self.program)?;
        if self.args.split_whitespace().count() > 1024 {
            return Err("`args` has more than 1024 words".into());
        }
        let sample = Vars::new("x.txt", "x.txt");
        for word in self.args.split_whitespace() {
            expand(word, &sample, true).map_err(|e| format!("`args`: {e}"))?;
        }
        if !self.output_extension.is_empty()
            && !self
                .output_extension
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(format!(
                "`output_extension` is `{}`; use letters, digits, `.`, `_` and `-` only",
                self.output_extension
            ));
        }
        if !self.stdout_to.is_empty() {
            let name =
                expand(&self.stdout_to, &sample, false).map_err(|e| format!("`stdout_to`: {e}"))?;
            check_relative(&name).map_err(|e| format!("`stdout_to`: {e}"))?;
        }
        Ok(())
    }
}

/// The program's absolute path in the sandbox (`/app/...`), or why
/// `program` does not name a file inside `/app`.
pub fn program_path(program: &str) -> Result<String, String> {
    let relative = program.strip_prefix("/app/").unwrap_or(program);
    if relative.is_empty() {
        return Err("`program` is empty: give the program's path inside /app".into());
    }
    check_relative(relative).map_err(|e| format!("`program` `{program}`: {e}"))?;
    Ok(format!("{APP_DIR}/{relative}"))
}

/// Checks that `path` is a plain relative path: not empty, no leading `/`,
/// no `.` or `..` or empty component, no backslash.
fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() || path.starts_with('/') || path.contains('\\') {
        return Err(format!("`{path}` is not a relative path"));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!("`{path}` is not a plain relative path"));
    }
    Ok(())
}

/// The values of the placeholders for one input.
struct Vars<'a> {
    name: &'a str,
    output: &'a str,
}

impl<'a> Vars<'a> {
    fn new(name: &'a str, output: &'a str) -> Self {
        Self { name, output }
    }

    fn stem(&self) -> &'a str {
        let file = self.name.rsplit('/').next().unwrap_or(self.name);
        match file.rfind('.') {
            Some(dot) if dot > 0 => &file[..dot],
            _ => file,
        }
    }
}

/// Replaces the placeholders of `template`; `paths` allows `{input}` and
/// `{output}`.
fn expand(template: &str, vars: &Vars, paths: bool) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            out.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            out.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!("unmatched `}}` in `{template}` (write `}}}}`)"));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{template}` (write `{{{{`)"))?;
            match (&tail[1..end], paths) {
                ("name", _) => out.push_str(vars.name),
                ("stem", _) => out.push_str(vars.stem()),
                ("input", true) => write!(out, "{INPUTS_DIR}/{}", vars.name).expect("String"),
                ("output", true) => write!(out, "{OUTPUT_DIR}/{}", vars.output).expect("String"),
                (other, true) => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}`: use {{input}}, {{output}}, {{name}} or {{stem}}"
                    ));
                }
                (other, false) => {
                    return Err(format!(
                        "unknown placeholder `{{{other}}}`: use {{name}} or {{stem}}"
                    ));
                }
            }
            rest = &tail[end + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The output name of input `name`: `name` with its extension replaced by
/// `extension` (added when it has none), or `name` itself when `extension`
/// is empty.
pub fn output_name(name: &str, extension: &str) -> String {
    if extension.is_empty() {
        return name.to_string();
    }
    let file_start = name.rfind('/').map_or(0, |i| i + 1);
    let stem_end = match name[file_start..].rfind('.') {
        Some(dot) if dot > 0 => file_start + dot,
        _ => name.len(),
    };
    format!("{}.{extension}", &name[..stem_end])
}

/// One run of the program, before it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The input's name under `/inputs`.
    pub name: String,
    /// The program's absolute path (`/app/...`).
    pub program: String,
    /// The arguments (without the program name).
    pub args: Vec<String>,
    /// The `{output}` file, relative to `/output`.
    pub output: String,
    /// Where stdout is kept, relative to `/output`, if it is.
    pub stdout_file: Option<String>,
}

/// The invocation of the program for input `name`.
pub fn invocation(params: &ExecParams, name: &str) -> Result<Invocation, String> {
    let output = output_name(name, &params.output_extension);
    let vars = Vars::new(name, &output);
    let args = params
        .args
        .split_whitespace()
        .map(|word| expand(word, &vars, true))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`args`: {e}"))?;
    let stdout_file = if params.stdout_to.is_empty() {
        None
    } else {
        let file = expand(&params.stdout_to, &vars, false)?;
        check_relative(&file).map_err(|e| format!("`stdout_to` for `{name}`: {e}"))?;
        Some(file)
    };
    Ok(Invocation {
        name: name.to_string(),
        program: program_path(&params.program)?,
        args,
        output,
        stdout_file,
    })
}

/// The invocations for every input, in name order, or an error when two
/// runs would write the same file (or the task's own records).
pub fn plan<S: AsRef<str>>(params: &ExecParams, names: &[S]) -> Result<Vec<Invocation>, String> {
    params.validate()?;
    let mut names: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
    names.sort_unstable();
    let runs = names
        .iter()
        .map(|name| invocation(params, name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut files: Vec<(&str, &str, &str)> = Vec::new();
    for run in &runs {
        files.push((run.output.as_str(), run.name.as_str(), "{output}"));
        if let Some(stdout) = &run.stdout_file {
            files.push((stdout.as_str(), run.name.as_str(), "stdout_to"));
        }
    }
    files.sort_unstable();
    for (file, name, what) in &files {
        if *file == RECORDS_FILE {
            return Err(format!(
                "{what} of `{name}` is `{file}`, which the sample keeps for itself"
            ));
        }
    }
    for pair in files.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(format!(
                "{} of `{}` and {} of `{}` are both `{}`",
                pair[0].2, pair[0].1, pair[1].2, pair[1].1, pair[0].0
            ));
        }
    }
    Ok(runs)
}

/// What a run of the program did, as a runner reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The exit status.
    pub status: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
    /// The content of its `{output}` file, if it wrote one.
    pub output: Option<Vec<u8>>,
}

/// One line of the job's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The input's name.
    pub name: String,
    /// The program's exit status.
    pub status: i32,
    /// The arguments it was given.
    pub args: Vec<String>,
    /// The `{output}` file, relative to `/output` (`null` in JSON if the
    /// program did not write it).
    pub output: Option<String>,
    /// Its size in bytes.
    pub output_bytes: Option<u64>,
    /// Its sha256 in lowercase hex.
    pub output_sha256: Option<String>,
    /// The file holding stdout, if kept.
    pub stdout_file: Option<String>,
    /// The size of stdout in bytes.
    pub stdout_bytes: u64,
    /// The sha256 of stdout.
    pub stdout_sha256: String,
    /// The end of stderr (its last [`STDERR_KEPT`] bytes), as text.
    pub stderr: String,
}

impl RunRecord {
    /// The record of `invocation` that ended with `outcome`.
    pub fn new(invocation: &Invocation, outcome: &Outcome) -> Self {
        let kept = outcome.stderr.len().saturating_sub(STDERR_KEPT);
        Self {
            name: invocation.name.clone(),
            status: outcome.status,
            args: invocation.args.clone(),
            output: outcome.output.as_ref().map(|_| invocation.output.clone()),
            output_bytes: outcome.output.as_ref().map(|o| o.len() as u64),
            output_sha256: outcome.output.as_deref().map(sha256_hex),
            stdout_file: invocation.stdout_file.clone(),
            stdout_bytes: outcome.stdout.len() as u64,
            stdout_sha256: sha256_hex(&outcome.stdout),
            stderr: String::from_utf8_lossy(&outcome.stderr[kept..]).into_owned(),
        }
    }

    /// The message that fails a task for this run, when its status is not 0
    /// and failures are not allowed.
    pub fn failure(&self, program: &str, allow_failure: bool) -> Option<String> {
        (self.status != 0 && !allow_failure).then(|| {
            let stderr = self.stderr.trim_end();
            let stderr = if stderr.is_empty() {
                String::new()
            } else {
                format!("; stderr: {stderr}")
            };
            format!(
                "{}: `{program}` exited with status {}{stderr} (set allow_failure=true to record it instead)",
                self.name, self.status
            )
        })
    }
}

/// The sha256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            write!(s, "{b:02x}").expect("writing to a String");
            s
        })
}

/// The header of `manifest.csv`.
pub const MANIFEST_HEADER: &str =
    "name,status,output,output_bytes,output_sha256,stdout_file,stdout_bytes,stdout_sha256";

/// `manifest.csv`: one line per run, in input name order; text fields are
/// quoted when they hold a comma, a quote or a line break; missing values
/// are empty.
pub fn manifest_csv(records: &[RunRecord]) -> String {
    let mut sorted: Vec<&RunRecord> = records.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut csv = format!("{MANIFEST_HEADER}\n");
    for r in sorted {
        writeln!(
            csv,
            "{},{},{},{},{},{},{},{}",
            field(&r.name),
            r.status,
            field(r.output.as_deref().unwrap_or("")),
            r.output_bytes.map(|b| b.to_string()).unwrap_or_default(),
            r.output_sha256.as_deref().unwrap_or(""),
            field(r.stdout_file.as_deref().unwrap_or("")),
            r.stdout_bytes,
            r.stdout_sha256
        )
        .expect("writing to a String");
    }
    csv
}

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The program's absolute path.
    pub program: String,
    /// The argument template.
    pub args: String,
    /// How many runs exited with status 0.
    pub succeeded: usize,
    /// How many runs exited with another status.
    pub failed: usize,
    /// Every run, in input name order.
    pub runs: Vec<RunRecord>,
}

impl Summary {
    /// The summary of `records` (sorted here by input name).
    pub fn new(params: &ExecParams, mut records: Vec<RunRecord>) -> Result<Self, String> {
        records.sort_by(|a, b| a.name.cmp(&b.name));
        let failed = records.iter().filter(|r| r.status != 0).count();
        Ok(Self {
            program: program_path(&params.program)?,
            args: params.args.clone(),
            succeeded: records.len() - failed,
            failed,
            runs: records,
        })
    }

    /// The summary as pretty JSON with a final line break.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("a summary serializes");
        json.push('\n');
        json
    }
}

/// A whole job computed natively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    /// Every run's record, in input name order.
    pub records: Vec<RunRecord>,
    /// The files the runs left under `/output`, (path, contents), in input
    /// name order: `{output}` files and kept stdout.
    pub files: Vec<(String, Vec<u8>)>,
    /// `manifest.csv`.
    pub manifest_csv: String,
    /// `summary.json`.
    pub summary_json: String,
}

/// Runs a whole job natively: `run` executes one invocation (for example
/// with wasmtime, the input at `/inputs/<name>` and `/output` mapped to
/// folders) and reports what happened. Runs are spread over `threads` OS
/// threads; the first failure (in name order) fails the job, as a task
/// would.
pub fn run_job<S, F>(
    params: &ExecParams,
    names: &[S],
    threads: usize,
    run: F,
) -> Result<JobResult, String>
where
    S: AsRef<str>,
    F: Fn(&Invocation) -> Result<Outcome, String> + Sync,
{
    let runs = plan(params, names)?;
    if runs.is_empty() {
        return Err("the job has no input files".into());
    }
    let threads = threads.clamp(1, runs.len());
    let outcomes: Vec<Result<Outcome, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (runs, run) = (&runs, &run);
                scope.spawn(move || {
                    (t..runs.len())
                        .step_by(threads)
                        .map(|i| run(&runs[i]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut per_thread: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked").into_iter())
            .collect();
        (0..runs.len())
            .map(|i| per_thread[i % threads].next().expect("one outcome per run"))
            .collect()
    });
    let program = program_path(&params.program)?;
    let mut records = Vec::with_capacity(runs.len());
    let mut files = Vec::new();
    for (invocation, outcome) in runs.iter().zip(outcomes) {
        let outcome = outcome.map_err(|e| format!("{}: {e}", invocation.name))?;
        let record = RunRecord::new(invocation, &outcome);
        if let Some(message) = record.failure(&program, params.allow_failure) {
            return Err(message);
        }
        if let Some(output) = outcome.output {
            files.push((invocation.output.clone(), output));
        }
        if let Some(stdout_file) = &invocation.stdout_file {
            files.push((stdout_file.clone(), outcome.stdout));
        }
        records.push(record);
    }
    let summary = Summary::new(params, records.clone())?;
    Ok(JobResult {
        manifest_csv: manifest_csv(&records),
        summary_json: summary.to_json(),
        records,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(args: &str) -> ExecParams {
        ExecParams {
            program: "bin/tool.wasm".into(),
            args: args.into(),
            output_extension: String::new(),
            stdout_to: String::new(),
            allow_failure: false,
        }
    }

    #[test]
    fn templates_expand_word_by_word() {
        let mut p = params("--in={input}  -o {output} {name}:{stem} {{x}}");
        p.output_extension = "png".into();
        let run = invocation(&p, "dir/my file.svg").unwrap();
        assert_eq!(run.program, "/app/bin/tool.wasm");
        assert_eq!(
            run.args,
            [
                "--in=/inputs/dir/my file.svg",
                "-o",
                "/output/dir/my file.png",
                "dir/my file.svg:my file",
                "{x}"
            ]
        );
        assert_eq!(run.output, "dir/my file.png");
        assert_eq!(run.stdout_file, None);
        p.stdout_to = "logs/{stem}.txt".into();
        assert_eq!(
            invocation(&p, "a.b.c").unwrap().stdout_file.as_deref(),
            Some("logs/a.b.txt")
        );
    }

    #[test]
    fn bad_templates_name_the_parameter() {
        let err = params("{input} {nope}").validate().unwrap_err();
        assert!(
            err.starts_with("`args`: unknown placeholder `{nope}`"),
            "{err}"
        );
        assert!(
            params("{input")
                .validate()
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(params("a}").validate().unwrap_err().contains("unmatched"));
        let mut p = params("{input}");
        p.stdout_to = "{input}.txt".into();
        assert!(p.validate().unwrap_err().starts_with("`stdout_to`"));
        p.stdout_to = "../x".into();
        assert!(p.validate().unwrap_err().starts_with("`stdout_to`"));
        p.stdout_to = String::new();
        p.program = "/app/../etc/x".into();
        assert!(p.validate().unwrap_err().starts_with("`program`"));
        p.program = String::new();
        assert!(p.validate().unwrap_err().starts_with("`program` is empty"));
        p.program = "/app/bin/x.wasm".into();
        p.output_extension = "p/ng".into();
        assert!(p.validate().unwrap_err().starts_with("`output_extension`"));
    }

    #[test]
    fn plans_refuse_clashing_files() {
        let mut p = params("{input} {output}");
        p.output_extension = "out".into();
        let err = plan(&p, &["a.txt", "a.csv"]).unwrap_err();
        assert!(err.contains("are both `a.out`"), "{err}");
        p.stdout_to = "{stem}.png".into();
        p.output_extension = "png".into();
        let err = plan(&p, &["a.txt"]).unwrap_err();
        assert!(err.contains("are both `a.png`"), "{err}");
        p.stdout_to = "{name}.stdout".into();
        assert_eq!(plan(&p, &["b.txt", "a.txt"]).unwrap()[0].name, "a.txt");
        let err = plan(&params("x"), &["intermediate/runs.json"]).unwrap_err();
        assert!(err.contains("keeps for itself"), "{err}");
    }

    #[test]
    fn output_names_swap_extensions() {
        assert_eq!(output_name("a/b.svg", "png"), "a/b.png");
        assert_eq!(output_name("a.d/b", "png"), "a.d/b.png");
        assert_eq!(output_name("x.svg", ""), "x.svg");
    }

    #[test]
    fn whole_jobs_record_every_run_whatever_the_threads() {
        let mut p = params("{input} {output}");
        p.stdout_to = "{name}.stdout".into();
        p.allow_failure = true;
        // A fake program: copies the name reversed, fails on names with `bad`.
        let fake = |run: &Invocation| -> Result<Outcome, String> {
            let bad = run.name.contains("bad");
            Ok(Outcome {
                status: if bad { 3 } else { 0 },
                stdout: format!("ran {}", run.args.join(" ")).into_bytes(),
                stderr: if bad { b"oops\n".to_vec() } else { Vec::new() },
                output: (!bad).then(|| run.name.chars().rev().collect::<String>().into_bytes()),
            })
        };
        let names = ["c.txt", "bad.txt", "a,b.txt"];
        let one = run_job(&p, &names, 1, fake).unwrap();
        assert_eq!(one, run_job(&p, &names, 3, fake).unwrap());
        let order: Vec<&str> = one.records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(order, ["a,b.txt", "bad.txt", "c.txt"]);
        assert_eq!(one.records[1].status, 3);
        assert_eq!(one.records[1].output, None);
        assert_eq!(one.records[1].stderr, "oops\n");
        assert_eq!(
            one.records[2].output_sha256.as_deref(),
            Some(sha256_hex(b"txt.c").as_str())
        );
        assert_eq!(one.files[0], ("a,b.txt".to_string(), b"txt.b,a".to_vec()));
        assert_eq!(
            one.files[1],
            (
                "a,b.txt.stdout".to_string(),
                b"ran /inputs/a,b.txt /output/a,b.txt".to_vec()
            )
        );
        let lines: Vec<&str> = one.manifest_csv.lines().collect();
        assert_eq!(lines[0], MANIFEST_HEADER);
        assert!(
            lines[1].starts_with("\"a,b.txt\",0,\"a,b.txt\",7,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("bad.txt,3,,,,bad.txt.stdout,"),
            "{}",
            lines[2]
        );
        let summary: Summary = serde_json::from_str(&one.summary_json).unwrap();
        assert_eq!((summary.succeeded, summary.failed), (2, 1));

        p.allow_failure = false;
        let err = run_job(&p, &names, 2, fake).unwrap_err();
        assert_eq!(
            err,
            "bad.txt: `/app/bin/tool.wasm` exited with status 3; stderr: oops (set allow_failure=true to record it instead)"
        );
    }

    #[test]
    fn stderr_keeps_its_end() {
        let run = invocation(&params("x"), "a").unwrap();
        let outcome = Outcome {
            stderr: vec![b'e'; STDERR_KEPT + 10],
            ..Outcome::default()
        };
        assert_eq!(RunRecord::new(&run, &outcome).stderr.len(), STDERR_KEPT);
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
