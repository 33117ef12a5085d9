//! The splitter of the `exec` sample: checks the parameters and the files
//! the runs would write, then gives each task `per_task` consecutive input
//! files (in name order) as `run-0000`, `run-0001`, …, with the merge step
//! on.

use tessera_sample_exec_model::{ExecParams, plan};
use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, export_splitter};

struct FileBatches;

impl Splitter for FileBatches {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let params: ExecParams = job.parameters().deserialize()?;
        let per_task: usize = job.parameters().get("per_task")?;
        if per_task == 0 {
            return Err(Error::new("`per_task` must be at least 1"));
        }
        let names: Vec<&str> = job.inputs.iter().map(|f| f.name.as_str()).collect();
        let runs = plan(&params, &names)?;
        if runs.is_empty() {
            return Err(Error::new(
                "the job has no input files: the program runs once per input file",
            ));
        }
        let names: Vec<&str> = runs.iter().map(|run| run.name.as_str()).collect();
        Ok(SplitPlan::input_batches("run", &names, per_task))
    }
}

export_splitter!(FileBatches);

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_splitter_sdk::{FileInfo, Params};

    fn job(parameters: &str, inputs: &[&str]) -> Job {
        let parameters = serde_json::from_str(parameters).unwrap();
        let inputs = inputs
            .iter()
            .map(|name| FileInfo {
                name: name.to_string(),
                size: 1,
            })
            .collect();
        Job::new("j", "exec", 1, Params::new(parameters), inputs)
    }

    #[test]
    fn batches_files_in_name_order() {
        let plan = FileBatches::split(job(
            r#"{"program":"bin/t.wasm","args":"{input} {output}","per_task":2}"#,
            &["c", "a", "b"],
        ))
        .unwrap();
        let names: Vec<&str> = plan.tasks().iter().map(|t| t.name()).collect();
        assert_eq!(names, ["run-0000", "run-0001"]);
        let debug = format!("{:?}", plan.tasks()[0]);
        assert!(debug.contains(r#"inputs: ["a", "b"]"#), "{debug}");
        assert!(plan.merges());
    }

    #[test]
    fn refuses_bad_templates_and_empty_jobs() {
        let err = FileBatches::split(job(
            r#"{"program":"bin/t.wasm","args":"{input} {out}","per_task":1}"#,
            &["a"],
        ))
        .unwrap_err();
        assert!(
            err.message().contains("unknown placeholder `{out}`"),
            "{err}"
        );
        let err = FileBatches::split(job(
            r#"{"program":"bin/t.wasm","args":"{input}","per_task":1}"#,
            &[],
        ))
        .unwrap_err();
        assert!(err.message().contains("no input files"), "{err}");
    }
}
