//! A splitter for the host's tests, which does whatever the job parameter
//! `mode` asks:
//!
//! | mode | plan |
//! | --- | --- |
//! | `plan` (default) | the job parameter `plan`, verbatim: `{"tasks":[{"name":…,"params":{…},"inputs":[…],"depends_on":[…],"env":[["K","V"]]}],"merge":true}`, where only `name` is required in a task and `params` must be an object |
//! | `error` | fails with "split refused on request" |
//! | `trap`, `loop`, `oom` | panics, spins forever, allocates until memory runs out |
//! | `many` | job parameter `count` tasks `t<i>` with `{"behaviour":"ok"}`, no merge |
//! | `huge-params` | one task `huge` whose parameters hold a 64 MiB string, no merge |
//! | `list-inputs` | one task `in-<index>` per job input, with that input and `{"behaviour":"copy-inputs"}`, merged |
//! | `read-inputs` | reads every job input and returns one task `check` with `{"behaviour":"ok","total":<bytes read>}`, merged |

use std::fs;
use std::hint::black_box;

use serde::Deserialize;
use serde_json::{Map, Value};
use tessera_splitter_sdk::{
    Error, Job, SplitPlan, Splitter, TaskSpec, export_splitter, input_path,
};

/// The `plan` job parameter: `{"tasks":[…],"merge":true|false}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanJson {
    tasks: Vec<TaskJson>,
    merge: bool,
}

/// One task of [`PlanJson`]; only `name` is required.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskJson {
    name: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    inputs: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    env: Vec<(String, String)>,
}

struct Hostile;

impl Splitter for Hostile {
    fn split(job: Job) -> Result<SplitPlan, Error> {
        let mode: String = job.parameters().get_or("mode", String::from("plan"))?;
        match mode.as_str() {
            "plan" => {
                let plan: String = job.parameters().get("plan")?;
                let plan = serde_json::from_str(&plan)
                    .map_err(|e| Error::new(format!("parameter `plan`: {e}")))?;
                verbatim(plan)
            }
            "error" => Err(Error::new("split refused on request")),
            "trap" => panic!("split trap requested"),
            "loop" => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "oom" => {
                let mut chunks = Vec::new();
                loop {
                    let mut chunk = vec![0u8; 16 << 20];
                    for page in chunk.iter_mut().step_by(4096) {
                        *page = 1;
                    }
                    chunks.push(black_box(chunk));
                }
            }
            "many" => {
                let count: u64 = job.parameters().get("count")?;
                let mut plan = SplitPlan::new().without_merge();
                plan.extend(
                    (0..count).map(|i| TaskSpec::new(format!("t{i}")).param("behaviour", "ok")),
                );
                Ok(plan)
            }
            "huge-params" => Ok(SplitPlan::new().without_merge().task(
                TaskSpec::new("huge")
                    .param("behaviour", "ok")
                    .param("blob", "x".repeat(64 << 20)),
            )),
            "list-inputs" => {
                let mut plan = SplitPlan::new();
                for (i, input) in job.inputs.iter().enumerate() {
                    plan.push(
                        TaskSpec::new(format!("in-{i}"))
                            .param("behaviour", "copy-inputs")
                            .input(&input.name),
                    );
                }
                Ok(plan)
            }
            "read-inputs" => {
                let mut total = 0u64;
                for input in &job.inputs {
                    let bytes = fs::read(input_path(&input.name))
                        .map_err(|e| Error::new(format!("reading input `{}`: {e}", input.name)))?;
                    total += bytes.len() as u64;
                }
                Ok(SplitPlan::new().task(
                    TaskSpec::new("check")
                        .param("behaviour", "ok")
                        .param("total", total),
                ))
            }
            other => Err(Error::new(format!("unknown mode `{other}`"))),
        }
    }
}

export_splitter!(Hostile);

fn verbatim(plan: PlanJson) -> Result<SplitPlan, Error> {
    let mut split = SplitPlan::new();
    for task in plan.tasks {
        let mut spec = TaskSpec::new(task.name).params(task.params)?;
        for input in task.inputs {
            spec = spec.input(input);
        }
        for dependency in task.depends_on {
            spec = spec.depends_on(dependency);
        }
        for (key, value) in task.env {
            spec = spec.env(key, value);
        }
        split.push(spec);
    }
    Ok(if plan.merge {
        split
    } else {
        split.without_merge()
    })
}
