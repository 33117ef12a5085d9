//! Split plans: what a splitter returned, checked against the job and the
//! limits, and turned into task rows. Pure: no I/O.

use std::collections::{HashMap, HashSet};

use super::SchedulerConfig;
use crate::model::{Failure, FailureKind, JobInput, TaskKind, TaskState};
use crate::protocol::SplitPlan;
use crate::store::NewTask;

/// A plan turned into rows.
pub(super) struct CheckedPlan {
    pub(super) tasks: Vec<NewTask>,
    /// (dependency seq, dependent seq) pairs.
    pub(super) deps: Vec<(i64, i64)>,
}

/// Checks a split plan against the job and the limits, and turns it into
/// rows (taking its strings rather than copying them: a plan may hold a
/// million tasks).
pub(super) fn check_plan(
    plan: SplitPlan,
    inputs: &[JobInput],
    config: &SchedulerConfig,
) -> Result<CheckedPlan, Failure> {
    check(plan, inputs, config).map_err(|message| {
        Failure::new(
            FailureKind::InvalidPlan,
            format!("the splitter returned an invalid plan: {message}"),
        )
    })
}

/// [`check_plan`], saying in words what is wrong.
fn check(
    plan: SplitPlan,
    inputs: &[JobInput],
    config: &SchedulerConfig,
) -> Result<CheckedPlan, String> {
    if plan.tasks.len() > config.max_tasks_per_job {
        return Err(format!(
            "it has {} tasks; a job may have at most {}",
            plan.tasks.len(),
            config.max_tasks_per_job
        ));
    }
    let input_names: HashSet<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
    let mut seq_of: HashMap<&str, i64> = HashMap::with_capacity(plan.tasks.len());
    for (i, task) in plan.tasks.iter().enumerate() {
        check_task_name(&task.name).map_err(|e| format!("task {}: {e}", i + 1))?;
        if seq_of.insert(task.name.as_str(), i as i64 + 1).is_some() {
            return Err(format!("task name `{}` is used twice", task.name));
        }
    }
    let mut deps = Vec::new();
    let mut deps_remaining = Vec::with_capacity(plan.tasks.len());
    for (i, task) in plan.tasks.iter().enumerate() {
        let seq = i as i64 + 1;
        let name = &task.name;
        if task.parameters.len() > config.max_task_parameters {
            return Err(format!(
                "task `{name}` has {} bytes of parameters; at most {} are allowed",
                task.parameters.len(),
                config.max_task_parameters
            ));
        }
        match serde_json::from_str::<serde_json::Value>(&task.parameters) {
            Ok(serde_json::Value::Object(_)) => {}
            _ => return Err(format!("task `{name}`: parameters must be a JSON object")),
        }
        for input in &task.inputs {
            if !input_names.contains(input.as_str()) {
                return Err(format!(
                    "task `{name}` needs input `{input}`, which the job does not have"
                ));
            }
        }
        let mut seen = HashSet::new();
        for dep in &task.depends_on {
            let Some(&dep_seq) = seq_of.get(dep.as_str()) else {
                return Err(format!(
                    "task `{name}` depends on `{dep}`, which is not a task of the job"
                ));
            };
            if dep_seq == seq {
                return Err(format!("task `{name}` depends on itself"));
            }
            if !seen.insert(dep_seq) {
                continue;
            }
            if task
                .inputs
                .iter()
                .any(|i| i.split('/').next() == Some(dep.as_str()))
            {
                return Err(format!(
                    "task `{name}` reads input `{dep}` and depends on task `{dep}`: both would be /inputs/{dep}"
                ));
            }
            deps.push((dep_seq, seq));
        }
        for (key, value) in &task.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(format!(
                    "task `{name}` has an invalid environment variable `{key}`"
                ));
            }
            if key.starts_with("TESSERA_") {
                return Err(format!(
                    "task `{name}` may not set `{key}`: TESSERA_* variables are set by Tessera"
                ));
            }
        }
        deps_remaining.push(seen.len() as i64);
    }
    check_acyclic(plan.tasks.len(), &deps)?;
    drop(seq_of);
    let tasks = plan
        .tasks
        .into_iter()
        .zip(deps_remaining)
        .enumerate()
        .map(|(i, (task, deps_remaining))| NewTask {
            seq: i as i64 + 1,
            kind: TaskKind::Process,
            state: if deps_remaining > 0 {
                TaskState::Blocked
            } else {
                TaskState::Queued
            },
            inputs: serde_json::to_string(&task.inputs).expect("strings serialise"),
            depends_on: serde_json::to_string(&task.depends_on).expect("strings serialise"),
            env: serde_json::to_string(&task.env).expect("strings serialise"),
            name: task.name,
            parameters: task.parameters,
            deps_remaining,
        })
        .collect();
    Ok(CheckedPlan { tasks, deps })
}

/// Task names: 1 to 128 characters from `A-Z a-z 0-9 . _ -`, not starting
/// with `_` (reserved for the split and merge steps) or `.`.
fn check_task_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['_', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid task name (1 to 128 characters from A-Z a-z 0-9 . _ -, not starting with `_` or `.`)",
            name.chars().take(140).collect::<String>()
        ))
    }
}

/// Fails if the dependency graph has a cycle (Kahn's algorithm).
fn check_acyclic(count: usize, deps: &[(i64, i64)]) -> Result<(), String> {
    let mut indegree = vec![0usize; count + 1];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count + 1];
    for &(dep, seq) in deps {
        indegree[seq as usize] += 1;
        dependents[dep as usize].push(seq as usize);
    }
    let mut ready: Vec<usize> = (1..=count).filter(|&s| indegree[s] == 0).collect();
    let mut visited = 0;
    while let Some(s) = ready.pop() {
        visited += 1;
        for &d in &dependents[s] {
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(d);
            }
        }
    }
    if visited == count {
        Ok(())
    } else {
        Err(format!(
            "its task dependencies form a cycle ({} tasks can never start)",
            count - visited
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::TaskSpec;

    fn spec(name: &str, deps: &[&str]) -> TaskSpec {
        TaskSpec {
            name: name.into(),
            parameters: "{}".into(),
            inputs: vec![],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            env: vec![],
        }
    }

    fn check(tasks: Vec<TaskSpec>) -> Result<CheckedPlan, String> {
        check_plan(
            SplitPlan { tasks, merge: true },
            &[],
            &SchedulerConfig::default(),
        )
        .map_err(|f| {
            assert_eq!(f.kind, FailureKind::InvalidPlan);
            f.message
        })
    }

    #[test]
    fn plans_number_tasks_and_record_dependencies() {
        let plan = check(vec![
            spec("a", &[]),
            spec("b", &["a"]),
            spec("c", &["a", "b", "a"]),
        ])
        .unwrap();
        let states: Vec<_> = plan
            .tasks
            .iter()
            .map(|t| (t.seq, t.state, t.deps_remaining))
            .collect();
        assert_eq!(
            states,
            vec![
                (1, TaskState::Queued, 0),
                (2, TaskState::Blocked, 1),
                (3, TaskState::Blocked, 2)
            ]
        );
        assert_eq!(plan.deps, vec![(1, 2), (1, 3), (2, 3)]);
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let cases = [
            (vec![spec("a", &[]), spec("a", &[])], "used twice"),
            (vec![spec("a", &["zz"])], "not a task of the job"),
            (vec![spec("a", &["a"])], "depends on itself"),
            (vec![spec("a", &["b"]), spec("b", &["a"])], "cycle"),
            (vec![spec("_merge", &[])], "not a valid task name"),
            (vec![spec("a/b", &[])], "not a valid task name"),
            (vec![spec("", &[])], "not a valid task name"),
        ];
        for (tasks, expected) in cases {
            let err = check(tasks).err().unwrap();
            assert!(err.contains(expected), "{err} should contain {expected}");
        }
        let mut bad_params = spec("a", &[]);
        bad_params.parameters = "[1]".into();
        assert!(
            check(vec![bad_params])
                .err()
                .unwrap()
                .contains("JSON object")
        );
        let mut bad_input = spec("a", &[]);
        bad_input.inputs = vec!["missing.txt".into()];
        assert!(
            check(vec![bad_input])
                .err()
                .unwrap()
                .contains("does not have")
        );
        let mut bad_env = spec("a", &[]);
        bad_env.env = vec![("TESSERA_JOB_ID".into(), "x".into())];
        assert!(
            check(vec![bad_env])
                .err()
                .unwrap()
                .contains("set by Tessera")
        );
    }

    #[test]
    fn too_many_tasks_are_refused() {
        let config = SchedulerConfig {
            max_tasks_per_job: 2,
            ..SchedulerConfig::default()
        };
        let plan = SplitPlan {
            tasks: vec![spec("a", &[]), spec("b", &[]), spec("c", &[])],
            merge: false,
        };
        let err = check_plan(plan, &[], &config).err().unwrap();
        assert!(err.message.contains("at most 2"), "{err}");
    }
}
