//! The generated WIT bindings and the glue between them and the SDK's types.
//! Only [`export_splitter!`](crate::export_splitter) uses this module.

wit_bindgen::generate!({
    world: "splitter",
    path: "../framework/wit",
    runtime_path: "::tessera_splitter_sdk::__bindings::wit_bindgen::rt",
    pub_export_macro: true,
    export_macro_name: "__export_splitter_world",
    default_bindings_module: "::tessera_splitter_sdk::__bindings",
});

/// Lets the generated code and the export macro reach wit-bindgen's runtime
/// through this crate, so guests need not depend on wit-bindgen.
pub use wit_bindgen;

use crate::{Error, FileInfo, Params, Splitter};
use tessera::app::types as wit;

/// Runs `S::split` on a job received from the host.
pub fn split<S: Splitter>(job: Job) -> Result<SplitPlan, String> {
    let job = crate::Job {
        id: job.id,
        app: job.app,
        app_version: job.app_version,
        inputs: job
            .inputs
            .into_iter()
            .map(|f| FileInfo {
                name: f.name,
                size: f.size,
            })
            .collect(),
        parameters: Params::parse(&job.parameters).map_err(Error::into_message)?,
    };
    let plan = S::split(job).map_err(Error::into_message)?;
    Ok(SplitPlan {
        tasks: plan
            .tasks
            .into_iter()
            .map(|t| wit::TaskSpec {
                parameters: t.parameters_json(),
                name: t.name,
                inputs: t.inputs,
                depends_on: t.depends_on,
                env: t.env,
            })
            .collect(),
        merge: plan.merge,
    })
}
