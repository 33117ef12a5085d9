//! The generated WIT bindings and the glue between them and the SDK's types.
//! Only [`export_processor!`](crate::export_processor) uses this module.

wit_bindgen::generate!({
    world: "processor",
    path: "../framework/wit",
    runtime_path: "::tessera_processor_sdk::__bindings::wit_bindgen::rt",
    pub_export_macro: true,
    export_macro_name: "__export_processor_world",
    default_bindings_module: "::tessera_processor_sdk::__bindings",
});

/// Lets the generated code and the export macro reach wit-bindgen's runtime
/// through this crate, so guests need not depend on wit-bindgen.
pub use wit_bindgen;

use crate::{Error, FileInfo, Params, Processor};
use tessera::app::types as wit;

/// Runs `P::process` on a task received from the host.
pub fn process<P: Processor>(task: Task) -> Result<(), String> {
    let task = crate::Task {
        job_id: task.job_id,
        name: task.name,
        attempt: task.attempt,
        inputs: files(task.inputs),
        parameters: Params::parse(&task.parameters).map_err(Error::into_message)?,
        job_parameters: Params::parse(&task.job_parameters).map_err(Error::into_message)?,
    };
    P::process(task).map_err(Error::into_message)
}

/// Runs `P::merge` on a job and its task results received from the host.
pub fn merge<P: Processor>(job: Job, tasks: Vec<TaskResult>) -> Result<(), String> {
    let job = crate::Job {
        id: job.id,
        app: job.app,
        app_version: job.app_version,
        inputs: files(job.inputs),
        parameters: Params::parse(&job.parameters).map_err(Error::into_message)?,
    };
    let tasks = tasks
        .into_iter()
        .map(|t| {
            Ok(crate::TaskResult {
                name: t.name,
                outputs: files(t.outputs),
                parameters: Params::parse(&t.parameters)?,
            })
        })
        .collect::<Result<Vec<_>, Error>>()
        .map_err(Error::into_message)?;
    P::merge(job, tasks).map_err(Error::into_message)
}

fn files(files: Vec<wit::FileInfo>) -> Vec<FileInfo> {
    files
        .into_iter()
        .map(|f| FileInfo {
            name: f.name,
            size: f.size,
        })
        .collect()
}
