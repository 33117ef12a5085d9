//! The splitter of the `imageproc` sample: checks the job's parameters and
//! input names, then gives each task `per_task` consecutive input images
//! (in name order) as `images-0000`, `images-0001`, …, with the merge step
//! on.

use tessera_sample_imageproc_model::{ImageParams, output_names};
use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, export_splitter};

struct ImageBatches;

impl Splitter for ImageBatches {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let params: ImageParams = job.parameters().deserialize()?;
        params.validate()?;
        let per_task: usize = job.parameters().get("per_task")?;
        if per_task == 0 {
            return Err(Error::new("`per_task` must be at least 1"));
        }
        let mut names: Vec<&str> = job.inputs.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if names.is_empty() {
            return Err(Error::new(
                "the job has no input images: upload PNG or JPEG files as inputs",
            ));
        }
        if let Some(empty) = job.inputs.iter().find(|f| f.size == 0) {
            return Err(Error::new(format!("input `{}` is empty", empty.name)));
        }
        output_names(&names, params.format)?;
        Ok(SplitPlan::input_batches("images", &names, per_task))
    }
}

export_splitter!(ImageBatches);

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
                size: 10,
            })
            .collect();
        Job::new("j", "imageproc", 1, Params::new(parameters), inputs)
    }

    const PARAMS: &str =
        r#"{"width":64,"filter":"blur","sigma":2.0,"format":"png","quality":85,"per_task":2}"#;

    #[test]
    fn batches_inputs_in_name_order() {
        let plan = ImageBatches::split(job(PARAMS, &["c.jpg", "a.png", "b.png"])).unwrap();
        assert!(plan.merges());
        let tasks: Vec<_> = plan
            .tasks()
            .iter()
            .map(|t| (t.name().to_string(), t.parameters_json()))
            .collect();
        assert_eq!(
            tasks,
            [
                ("images-0000".to_string(), "{}".to_string()),
                ("images-0001".to_string(), "{}".to_string())
            ]
        );
        assert_eq!(plan.tasks()[0].name(), "images-0000");
        let debug = format!("{:?}", plan.tasks()[0]);
        assert!(debug.contains("\"a.png\", \"b.png\""), "{debug}");
    }

    #[test]
    fn refuses_clashing_outputs_and_empty_jobs() {
        let err = ImageBatches::split(job(PARAMS, &["a.png", "a.jpg"])).unwrap_err();
        assert!(
            err.message().contains("would both be written as `a.png`"),
            "{err}"
        );
        let err = ImageBatches::split(job(PARAMS, &[])).unwrap_err();
        assert!(err.message().contains("no input images"), "{err}");
    }
}
