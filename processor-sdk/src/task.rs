use std::path::PathBuf;

use crate::{FileInfo, INPUTS_DIR, Params};

/// A task, as [`Processor::process`](crate::Processor::process) sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// The id of the job the task belongs to.
    pub job_id: String,
    /// The task's name, unique within its job.
    pub name: String,
    /// The attempt number, starting at 1.
    pub attempt: u32,
    /// Every file under `/inputs`: the task's job inputs, then the outputs of
    /// the tasks it depends on as `<task>/<path>`.
    pub inputs: Vec<FileInfo>,
    pub(crate) parameters: Params,
    pub(crate) job_parameters: Params,
}

impl Task {
    /// Creates a task, e.g. to call a processor in a native unit test.
    pub fn new(
        job_id: impl Into<String>,
        name: impl Into<String>,
        attempt: u32,
        parameters: Params,
        job_parameters: Params,
        inputs: Vec<FileInfo>,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            name: name.into(),
            attempt,
            inputs,
            parameters,
            job_parameters,
        }
    }

    /// The task's own parameters, as the splitter set them.
    pub fn parameters(&self) -> &Params {
        &self.parameters
    }

    /// The parameters of the job the task belongs to.
    pub fn job_parameters(&self) -> &Params {
        &self.job_parameters
    }
}

/// A finished task, as [`Processor::merge`](crate::Processor::merge) sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskResult {
    /// The task's name; its outputs are mounted at `/inputs/<name>/`.
    pub name: String,
    /// The task's output files, relative to `/inputs/<name>/`.
    pub outputs: Vec<FileInfo>,
    pub(crate) parameters: Params,
}

impl TaskResult {
    /// Creates a task result, e.g. to call a merge in a native unit test.
    pub fn new(name: impl Into<String>, parameters: Params, outputs: Vec<FileInfo>) -> Self {
        Self {
            name: name.into(),
            outputs,
            parameters,
        }
    }

    /// The task's own parameters, as the splitter set them.
    pub fn parameters(&self) -> &Params {
        &self.parameters
    }

    /// Where the merge step reads the task's output `file`:
    /// `/inputs/<task>/<file>`.
    pub fn output_path(&self, file: &str) -> PathBuf {
        [INPUTS_DIR, &self.name, file].iter().collect()
    }
}
