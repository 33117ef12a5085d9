//! The splitter of the `noop` sample: `tasks` tasks named `t0`, `t1`, …,
//! without parameters, and no merge step.

use tessera_splitter_sdk::{Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter};

struct Noop;

impl Splitter for Noop {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let tasks: u64 = job.parameters().get("tasks")?;
        let mut plan = SplitPlan::new().without_merge();
        plan.extend((0..tasks).map(|i| TaskSpec::new(format!("t{i}"))));
        Ok(plan)
    }
}

export_splitter!(Noop);
