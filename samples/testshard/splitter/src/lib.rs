//! The splitter of the `testshard` sample: reads the suite (a job input
//! named by the `suite` parameter, else that file of the application image),
//! checks it and shards its cases by estimated duration, longest first onto
//! the least-loaded shard (`shard-000`, `shard-001`, …), with the merge step
//! on.

use tessera_sample_testshard_model::{TestshardParams, parse_suite, shard};
use tessera_splitter_sdk::{
    APP_DIR, Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter, input_path,
};

struct SuiteShards;

impl Splitter for SuiteShards {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let params: TestshardParams = job.parameters().deserialize()?;
        params.validate()?;
        let as_input = job.inputs.iter().any(|input| input.name == params.suite);
        let path = if as_input {
            input_path(&params.suite)
        } else {
            let relative = params.suite.strip_prefix("/app/").unwrap_or(&params.suite);
            if relative.starts_with('/') || relative.split('/').any(|part| part == "..") {
                return Err(Error::new(format!(
                    "`suite` must name a job input or a file inside /app, not `{}`",
                    params.suite
                )));
            }
            [APP_DIR, relative].iter().collect()
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::new(format!(
                "cannot read the suite `{}` ({}): {e}",
                params.suite,
                if as_input {
                    "a job input"
                } else {
                    "no job input has that name, so it was looked for in the application image"
                }
            ))
        })?;
        let suite = parse_suite(&params.suite, &text)?;
        let estimates: Vec<u64> = suite.cases.iter().map(|c| c.estimated_ms).collect();
        let path = path.to_string_lossy().into_owned();
        let mut plan = SplitPlan::new();
        for (i, cases) in shard(&estimates, params.shards as usize)
            .into_iter()
            .enumerate()
        {
            let mut task = TaskSpec::new(format!("shard-{i:03}"))
                .param("suite_path", &path)
                .param("cases", cases);
            if as_input {
                task = task.input(&params.suite);
            }
            plan.push(task);
        }
        Ok(plan)
    }
}

export_splitter!(SuiteShards);
