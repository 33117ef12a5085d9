use serde::Serialize;
use serde_json::{Map, Value};

use crate::Error;

/// What a splitter returns: the tasks of the job, and whether the processor's
/// `merge` runs once every task has succeeded.
///
/// The host checks the plan: task names must be unique within the job and
/// made of 1 to 128 characters from `A-Z a-z 0-9 . _ -`; inputs must name job
/// inputs; dependencies must name tasks of the plan, without cycles.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPlan {
    pub(crate) tasks: Vec<TaskSpec>,
    pub(crate) merge: bool,
}

impl SplitPlan {
    /// An empty plan whose job is merged.
    pub fn new() -> Self {
        Self {
            tasks: Vec::new(),
            merge: true,
        }
    }

    /// A plan that gives each task `per_task` consecutive `inputs` (the
    /// last may get fewer), named `<prefix>-0000`, `<prefix>-0001`, …: the
    /// usual split of "one run per file", in batches. `per_task` of 0 is
    /// taken as 1.
    pub fn input_batches<S: AsRef<str>>(prefix: &str, inputs: &[S], per_task: usize) -> Self {
        inputs
            .chunks(per_task.max(1))
            .enumerate()
            .fold(Self::new(), |plan, (i, batch)| {
                let task = batch
                    .iter()
                    .fold(TaskSpec::new(format!("{prefix}-{i:04}")), |task, name| {
                        task.input(name.as_ref())
                    });
                plan.task(task)
            })
    }

    /// Adds a task.
    pub fn task(mut self, task: TaskSpec) -> Self {
        self.push(task);
        self
    }

    /// Adds a task.
    pub fn push(&mut self, task: TaskSpec) {
        self.tasks.push(task);
    }

    /// Skips the merge step: the job's outputs are its tasks' outputs.
    pub fn without_merge(mut self) -> Self {
        self.merge = false;
        self
    }

    /// The number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the plan has no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The tasks, in the order they were added.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    /// Whether the processor's `merge` runs once every task has succeeded.
    pub fn merges(&self) -> bool {
        self.merge
    }
}

impl Default for SplitPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl Extend<TaskSpec> for SplitPlan {
    fn extend<I: IntoIterator<Item = TaskSpec>>(&mut self, tasks: I) {
        self.tasks.extend(tasks);
    }
}

/// One task of a [`SplitPlan`], built with chained calls:
///
/// ```
/// use tessera_splitter_sdk::TaskSpec;
///
/// let task = TaskSpec::new("frame-0001")
///     .param("frame", 1)
///     .input("scene.json")
///     .env("QUALITY", "high");
/// assert_eq!(task.parameters_json(), r#"{"frame":1}"#);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub(crate) name: String,
    pub(crate) parameters: Map<String, Value>,
    pub(crate) inputs: Vec<String>,
    pub(crate) depends_on: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
}

impl TaskSpec {
    /// A task named `name`, without parameters, inputs, dependencies or
    /// extra environment.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            parameters: Map::new(),
            inputs: Vec::new(),
            depends_on: Vec::new(),
            env: Vec::new(),
        }
    }

    /// Sets the task parameter `name` (replacing any earlier value).
    ///
    /// # Panics
    ///
    /// When `value` cannot be represented in JSON: a map whose keys are not
    /// strings, or a `Serialize` implementation that fails.
    pub fn param(mut self, name: impl Into<String>, value: impl Serialize) -> Self {
        let name = name.into();
        let value = serde_json::to_value(value)
            .unwrap_or_else(|e| panic!("task `{}`: parameter `{name}`: {e}", self.name));
        self.parameters.insert(name, value);
        self
    }

    /// Sets every task parameter at once from `value`, typically a struct
    /// deriving `serde::Serialize`, replacing earlier ones.
    ///
    /// Fails when `value` does not serialize to a JSON object.
    pub fn params(mut self, value: impl Serialize) -> Result<Self, Error> {
        match serde_json::to_value(value) {
            Ok(Value::Object(map)) => {
                self.parameters = map;
                Ok(self)
            }
            Ok(other) => Err(Error::new(format!(
                "task `{}`: parameters must be a JSON object, not `{other}`",
                self.name
            ))),
            Err(e) => Err(Error::new(format!("task `{}`: parameters: {e}", self.name))),
        }
    }

    /// Adds a job input the task needs; it appears at `/inputs/<name>`.
    pub fn input(mut self, name: impl Into<String>) -> Self {
        self.inputs.push(name.into());
        self
    }

    /// Makes the task wait for `task` to succeed; the outputs of `task`
    /// appear at `/inputs/<task>/`.
    pub fn depends_on(mut self, task: impl Into<String>) -> Self {
        self.depends_on.push(task.into());
        self
    }

    /// Adds an environment variable for the task.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The task's parameters as a JSON object string (`{}` when it has none).
    pub fn parameters_json(&self) -> String {
        serde_json::to_string(&self.parameters).expect("a JSON object always serializes")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn input_batches_cut_the_inputs_in_order() {
        let plan = super::SplitPlan::input_batches("run", &["a", "b", "c", "d", "e"], 2);
        let tasks: Vec<(&str, Vec<&str>)> = plan
            .tasks()
            .iter()
            .map(|t| (t.name(), t.inputs.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            tasks,
            [
                ("run-0000", vec!["a", "b"]),
                ("run-0001", vec!["c", "d"]),
                ("run-0002", vec!["e"])
            ]
        );
        assert!(plan.merges());
        let one_each = super::SplitPlan::input_batches("x", &["a", "b"], 0);
        assert_eq!(one_each.len(), 2);
        assert!(super::SplitPlan::input_batches::<&str>("x", &[], 3).is_empty());
    }

    use super::*;

    #[derive(Serialize)]
    struct Range {
        start: u64,
        count: u64,
    }

    #[test]
    fn parameters_serialize_to_an_object() {
        assert_eq!(TaskSpec::new("a").parameters_json(), "{}");
        let task = TaskSpec::new("a")
            .params(Range { start: 5, count: 2 })
            .unwrap()
            .param("label", "x");
        let json: Value = serde_json::from_str(&task.parameters_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"start": 5, "count": 2, "label": "x"})
        );
    }

    #[test]
    fn params_rejects_values_that_are_not_objects() {
        let err = TaskSpec::new("a").params(3).unwrap_err();
        assert_eq!(
            err.message(),
            "task `a`: parameters must be a JSON object, not `3`"
        );
    }

    #[test]
    fn plans_merge_unless_told_otherwise() {
        let plan = SplitPlan::new().task(TaskSpec::new("a"));
        assert!(plan.merges());
        assert_eq!(plan.len(), 1);
        assert!(!plan.without_merge().merges());
    }
}
