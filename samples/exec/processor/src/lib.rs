//! The processor of the `exec` sample.
//!
//! `process` runs the program once per input file of its task, with the
//! arguments of the template, keeps stdout when `stdout_to` asks for it and
//! records each run in `intermediate/runs.json`; a run that exits with a
//! non-zero status fails the task unless `allow_failure` is set. `merge`
//! gathers every task's records into `manifest.csv` and `summary.json`.

use std::fs;
use std::path::Path;

use tessera_processor_sdk::{
    Error, Job, Level, Params, Processor, Task, TaskResult, export_processor, log, output_path,
    progress, run_program,
};
use tessera_sample_exec_model::{
    ExecParams, Outcome, RECORDS_FILE, RunRecord, Summary, invocation, manifest_csv,
};

struct Exec;

impl Processor for Exec {
    fn process(task: Task) -> Result<(), Error> {
        let params = exec_params(task.job_parameters())?;
        let mut records = Vec::with_capacity(task.inputs.len());
        for (i, input) in task.inputs.iter().enumerate() {
            let run = invocation(&params, &input.name)?;
            create_parent(&output_path(&run.output))?;
            let args: Vec<&str> = run.args.iter().map(String::as_str).collect();
            let result = run_program(&run.program, &args)
                .map_err(|e| Error::new(format!("{}: {e}", input.name)))?;
            if !result.stderr.is_empty() {
                eprintln!("--- stderr of the run on {} ---", input.name);
                eprint!("{}", String::from_utf8_lossy(&result.stderr));
            }
            if let Some(file) = &run.stdout_file {
                let path = output_path(file);
                create_parent(&path)?;
                fs::write(&path, &result.stdout)
                    .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            }
            let output = match fs::read(output_path(&run.output)) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(Error::new(format!("{}: {e}", run.output))),
            };
            let outcome = Outcome {
                status: result.status,
                stdout: result.stdout,
                stderr: result.stderr,
                output,
            };
            let record = RunRecord::new(&run, &outcome);
            if let Some(message) = record.failure(&run.program, params.allow_failure) {
                return Err(Error::new(message));
            }
            records.push(record);
            progress((i + 1) as f32 / task.inputs.len() as f32);
        }
        let path = output_path(RECORDS_FILE);
        create_parent(&path)?;
        fs::write(path, serde_json::to_vec(&records)?)?;
        Ok(())
    }

    fn merge(job: Job, tasks: Vec<TaskResult>) -> Result<(), Error> {
        let params = exec_params(job.parameters())?;
        let mut records: Vec<RunRecord> = Vec::new();
        for task in &tasks {
            let path = task.output_path(RECORDS_FILE);
            let bytes =
                fs::read(&path).map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            let task_records: Vec<RunRecord> = serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(format!("{}: {e}", path.display())))?;
            records.extend(task_records);
        }
        fs::write(output_path("manifest.csv"), manifest_csv(&records))?;
        let summary = Summary::new(&params, records)?;
        fs::write(output_path("summary.json"), summary.to_json())?;
        log(
            Level::Info,
            &format!(
                "{} runs of {}: {} exited with 0, {} with another status",
                summary.runs.len(),
                summary.program,
                summary.succeeded,
                summary.failed
            ),
        );
        Ok(())
    }
}

export_processor!(Exec);

fn exec_params(params: &Params) -> Result<ExecParams, Error> {
    let params: ExecParams = params.deserialize()?;
    params.validate()?;
    Ok(params)
}

fn create_parent(path: &Path) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::new(format!("{}: {e}", parent.display())))?;
    }
    Ok(())
}
