//! The splitter of the `render` sample: checks the job's parameters and
//! gives each (frame, tile) its own task (`frame-0000-tile-0000`, …), with
//! the merge step on.

use tessera_sample_render_model::{RenderParams, tile_task_name};
use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter};

struct Tiles;

/// The plan of a job with these parameters.
fn plan(params: &RenderParams) -> SplitPlan {
    let tiles = params.tiles();
    let mut plan = SplitPlan::new();
    for frame in 0..params.frames {
        for (i, rect) in tiles.iter().enumerate() {
            plan.push(
                TaskSpec::new(tile_task_name(frame, i))
                    .param("frame", frame)
                    .param("tile", i)
                    .param("x", rect.x)
                    .param("y", rect.y)
                    .param("w", rect.w)
                    .param("h", rect.h),
            );
        }
    }
    plan
}

impl Splitter for Tiles {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let params: RenderParams = job.parameters().deserialize()?;
        params.validate().map_err(|e| Error::new(e.to_string()))?;
        Ok(plan(&params))
    }
}

export_splitter!(Tiles);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera_splitter_sdk::Params;

    fn job(parameters: serde_json::Value) -> Job {
        let serde_json::Value::Object(map) = parameters else {
            panic!("an object")
        };
        Job::new("j", "render", 1, Params::new(map), Vec::new())
    }

    #[test]
    fn one_task_per_frame_and_tile() {
        let plan = Tiles::split(job(
            json!({"frames": 2, "width": 100, "height": 60, "tile_size": 64}),
        ))
        .unwrap();
        assert!(plan.merges());
        let names: Vec<&str> = plan.tasks().iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "frame-0000-tile-0000",
                "frame-0000-tile-0001",
                "frame-0001-tile-0000",
                "frame-0001-tile-0001"
            ]
        );
        let last: serde_json::Value =
            serde_json::from_str(&plan.tasks()[3].parameters_json()).unwrap();
        assert_eq!(
            last,
            json!({"frame": 1, "tile": 1, "x": 64, "y": 0, "w": 36, "h": 60})
        );
    }

    #[test]
    fn whole_frames_when_the_tile_is_larger() {
        let plan = Tiles::split(job(json!({"frames": 3, "tile_size": 4096}))).unwrap();
        assert_eq!(plan.len(), 3);
    }

    #[test]
    fn rejects_too_many_tasks() {
        let err = Tiles::split(job(
            json!({"frames": 100, "width": 1024, "height": 1024, "tile_size": 16}),
        ))
        .unwrap_err();
        assert!(err.message().contains("at most 10000"), "{err}");
    }
}
