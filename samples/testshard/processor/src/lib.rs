//! The processor of the `testshard` sample.
//!
//! `process` runs its shard's cases, one after the other, with
//! `run_program` (WASI command programs of the application image), and
//! writes their results to `intermediate/results.json`. `merge` gathers every
//! shard's results in suite order and writes `junit.xml` and `summary.json`.

use std::fs;
use std::time::Instant;

use tessera_processor_sdk::{
    Error, Job, Level, Processor, Task, TaskResult, export_processor, log, output_path, progress,
    run_program,
};
use tessera_sample_testshard_model::{
    CaseResult, Suite, Summary, evaluate, junit_xml, parse_suite,
};

/// A shard's results, under `/output`.
const RESULTS_FILE: &str = "intermediate/results.json";

struct SuiteRunner;

impl Processor for SuiteRunner {
    fn process(task: Task) -> Result<(), Error> {
        let suite = read_suite(&task.parameters().get::<String>("suite_path")?)?;
        let cases: Vec<usize> = task.parameters().get("cases")?;
        let mut results = Vec::with_capacity(cases.len());
        for (done, &index) in cases.iter().enumerate() {
            let case = suite.cases.get(index).ok_or_else(|| {
                Error::new(format!(
                    "case {index} is not in the suite ({} cases)",
                    suite.cases.len()
                ))
            })?;
            let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
            let start = Instant::now();
            let run = run_program(&case.program, &args)
                .map(|o| (o.status, o.stdout, o.stderr))
                .map_err(|e| e.message().to_string());
            let micros = start.elapsed().as_micros() as u64;
            let result = evaluate(case, index, run, micros);
            log(
                if result.passed {
                    Level::Info
                } else {
                    Level::Warn
                },
                &format!(
                    "{} {}{}",
                    if result.passed { "PASS" } else { "FAIL" },
                    case.name,
                    result
                        .message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ),
            );
            results.push(result);
            progress((done + 1) as f32 / cases.len() as f32);
        }
        fs::create_dir_all(output_path("intermediate"))?;
        fs::write(output_path(RESULTS_FILE), serde_json::to_vec(&results)?)?;
        Ok(())
    }

    fn merge(_job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let first = tasks
            .first()
            .ok_or_else(|| Error::new("the job has no shard"))?;
        let suite = read_suite(&first.parameters().get::<String>("suite_path")?)?;
        let mut slots: Vec<Option<CaseResult>> = vec![None; suite.cases.len()];
        for task in &tasks {
            let path = task.output_path(RESULTS_FILE);
            let bytes =
                fs::read(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            let results: Vec<CaseResult> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            for result in results {
                let index = result.index;
                match slots.get_mut(index) {
                    Some(slot @ None) => *slot = Some(result),
                    _ => {
                        return Err(Error::new(format!(
                            "{}: case {index} is not in the suite or was run twice",
                            path.display()
                        )));
                    }
                }
            }
        }
        let results: Vec<CaseResult> = slots
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.ok_or_else(|| Error::new(format!("case `{}` was not run", suite.cases[i].name)))
            })
            .collect::<Result<_, _>>()?;
        let summary = Summary::new(&suite, &results, tasks.len() as u64);
        fs::write(output_path("junit.xml"), junit_xml(&suite.name, &results))?;
        let mut json = serde_json::to_string_pretty(&summary)?;
        json.push('\n');
        fs::write(output_path("summary.json"), json)?;
        log(
            Level::Info,
            &format!(
                "{} tests: {} passed, {} failed",
                summary.tests, summary.passed, summary.failed
            ),
        );
        Ok(())
    }
}

export_processor!(SuiteRunner);

fn read_suite(path: &str) -> Result<Suite, Error> {
    let text = fs::read_to_string(path).map_err(|e| Error::new(format!("{path}: {e}")))?;
    let name = path.rsplit('/').next().unwrap_or(path);
    Ok(parse_suite(name, &text)?)
}
