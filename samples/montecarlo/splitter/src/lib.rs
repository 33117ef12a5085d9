//! The splitter of the `montecarlo` sample: checks the job's parameters and
//! gives each task a contiguous range of paths (`batch-0000`, `batch-0001`,
//! …), with the merge step on.

use tessera_sample_montecarlo_model::{RiskParameters, partition};
use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter};

struct PathBatches;

impl Splitter for PathBatches {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let params: RiskParameters = job.parameters().deserialize()?;
        params.validate()?;
        let mut plan = SplitPlan::new();
        for (i, range) in partition(params.paths, params.tasks.into())
            .into_iter()
            .enumerate()
        {
            plan.push(
                TaskSpec::new(format!("batch-{i:04}"))
                    .param("start", range.start)
                    .param("count", range.end - range.start),
            );
        }
        Ok(plan)
    }
}

export_splitter!(PathBatches);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera_splitter_sdk::Params;

    fn job(parameters: &str) -> Job {
        let parameters = serde_json::from_str(parameters).unwrap();
        Job::new("j", "montecarlo", 1, Params::new(parameters), Vec::new())
    }

    #[test]
    fn splits_paths_into_contiguous_batches() {
        let plan = PathBatches::split(job(
            r#"{"paths":10,"seed":1,"confidence":0.99,"horizon_days":10,"tasks":3}"#,
        ))
        .unwrap();
        assert!(plan.merges());
        let tasks: Vec<_> = plan
            .tasks()
            .iter()
            .map(|t| {
                let params: serde_json::Value = serde_json::from_str(&t.parameters_json()).unwrap();
                (t.name(), params)
            })
            .collect();
        assert_eq!(
            tasks,
            [
                ("batch-0000", json!({"start": 0, "count": 4})),
                ("batch-0001", json!({"start": 4, "count": 3})),
                ("batch-0002", json!({"start": 7, "count": 3})),
            ]
        );
    }

    #[test]
    fn rejects_a_confidence_of_one() {
        let err = PathBatches::split(job(
            r#"{"paths":10,"seed":1,"confidence":1.0,"horizon_days":10,"tasks":3}"#,
        ))
        .unwrap_err();
        assert!(err.message().contains("`confidence`"), "{err}");
    }
}
