//! What a pool is made of: how large its nodes are, how many it should
//! have (a fixed target, or an autoscale formula), what each node runs
//! first, and who starts its nodes.

use serde::{Deserialize, Deserializer, Serialize};

use crate::autoscale::Formula;
use crate::digest::Digest;
use crate::error::Error;

/// Most nodes a pool may have.
pub const MAX_NODES: u32 = 1000;
/// Most task slots of one node.
pub const MAX_SLOTS_PER_NODE: u32 = 1024;
/// Longest interval between autoscale evaluations, in seconds (a day).
pub const MAX_AUTOSCALE_INTERVAL_SECS: u64 = 86_400;

/// A pool's properties.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    /// Task slots of each node its provider starts (agents that join by
    /// themselves choose their own).
    #[serde(default = "one")]
    pub slots_per_node: u32,
    /// Memory limit of one task on the pool, in MiB (default: the
    /// service's).
    #[serde(default)]
    pub memory_per_slot_mib: Option<u64>,
    /// How many nodes it should have (set by the autoscale formula when it
    /// has one).
    #[serde(default)]
    pub target_nodes: u32,
    /// Fewest nodes, whatever the formula says.
    #[serde(default)]
    pub min_nodes: u32,
    /// Most nodes, whatever the formula says.
    #[serde(default = "ten")]
    pub max_nodes: u32,
    /// Sizes the pool from its task counts.
    #[serde(default)]
    pub autoscale: Option<AutoscaleSpec>,
    /// Runs once on every node before it takes tasks.
    #[serde(default)]
    pub start_task: Option<StartTask>,
    /// Starts and stops the pool's nodes to meet the target; without one,
    /// nodes join by themselves (`tessera node`).
    #[serde(default)]
    pub provider: Option<ProviderSpec>,
}

fn one() -> u32 {
    1
}

fn ten() -> u32 {
    10
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            slots_per_node: 1,
            memory_per_slot_mib: None,
            target_nodes: 0,
            min_nodes: 0,
            max_nodes: 10,
            autoscale: None,
            start_task: None,
            provider: None,
        }
    }
}

/// An autoscale formula and how often it is evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscaleSpec {
    /// The formula, in Azure Batch's autoscale language.
    pub formula: String,
    /// Seconds between evaluations (default 60).
    #[serde(default = "sixty")]
    pub interval_secs: u64,
}

fn sixty() -> u64 {
    60
}

/// A WASI command program every node of the pool runs once before it takes
/// tasks (to unpack data or warm a cache into `/shared`, which the node's
/// tasks then see read-only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartTask {
    /// The application whose image holds the program (mounted at `/app`).
    #[serde(default)]
    pub app: Option<String>,
    /// Its version (default: the newest).
    #[serde(default)]
    pub version: Option<u32>,
    /// Or: an uploaded image zip of the pool's own.
    #[serde(default)]
    pub image: Option<Digest>,
    /// The program, a path under `/app`.
    pub program: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Its wall-clock limit in seconds (default 600).
    #[serde(default = "six_hundred")]
    pub timeout_secs: u64,
}

fn six_hundred() -> u64 {
    600
}

/// Who starts and stops a pool's nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderSpec {
    /// `tessera node` processes on the service's machine.
    Local,
    /// `tessera node` as Slurm batch jobs (`sbatch`, `scancel`, `squeue`).
    Slurm {
        /// Extra `sbatch` arguments (partition, account, time limit...).
        #[serde(default)]
        sbatch_args: Vec<String>,
    },
    /// Commands of the admin's choosing, run with `sh -c`: `start` starts
    /// the agent named `$TESSERA_AGENT`, `stop` stops it, and `list` prints
    /// the agents still there, one handle per line (`docs/providers.md`).
    Command {
        /// Starts one node agent; its environment says how.
        start: String,
        /// Stops the agent named by `$TESSERA_AGENT`.
        stop: String,
        /// Lists the agents it started, one handle per line.
        list: String,
    },
}

impl ProviderSpec {
    /// Its name, as shown.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Slurm { .. } => "slurm",
            Self::Command { .. } => "command",
        }
    }
}

/// A change to a pool's properties: only the fields given change (`null`
/// removes an autoscale formula, a start task or a provider).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolChange {
    /// New slots per node.
    #[serde(default)]
    pub slots_per_node: Option<u32>,
    /// New memory per slot, in MiB.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_per_slot_mib: Option<Option<u64>>,
    /// New fewest nodes.
    #[serde(default)]
    pub min_nodes: Option<u32>,
    /// New most nodes.
    #[serde(default)]
    pub max_nodes: Option<u32>,
    /// New autoscale formula, or `null` to size the pool by its target.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub autoscale: Option<Option<AutoscaleSpec>>,
    /// New start task, or `null` for none.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_task: Option<Option<StartTask>>,
    /// New provider, or `null` for none.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub provider: Option<Option<ProviderSpec>>,
}

/// A field that is present (possibly `null`) as `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

impl PoolSpec {
    /// The spec with `change` applied.
    pub fn changed(&self, change: &PoolChange) -> Self {
        let mut spec = self.clone();
        if let Some(v) = change.slots_per_node {
            spec.slots_per_node = v;
        }
        if let Some(v) = change.memory_per_slot_mib {
            spec.memory_per_slot_mib = v;
        }
        if let Some(v) = change.min_nodes {
            spec.min_nodes = v;
        }
        if let Some(v) = change.max_nodes {
            spec.max_nodes = v;
        }
        if let Some(v) = &change.autoscale {
            spec.autoscale = v.clone();
        }
        if let Some(v) = &change.start_task {
            spec.start_task = v.clone();
        }
        if let Some(v) = &change.provider {
            spec.provider = v.clone();
        }
        spec.target_nodes = spec
            .target_nodes
            .clamp(spec.min_nodes, spec.max_nodes.max(spec.min_nodes));
        spec
    }

    /// Checks the properties on their own: sizes in range, a formula that
    /// parses, a start task that names one image. Returns the parsed
    /// formula, if there is one.
    pub fn check(&self) -> Result<Option<Formula>, Error> {
        if !(1..=MAX_SLOTS_PER_NODE).contains(&self.slots_per_node) {
            return Err(Error::Invalid(format!(
                "slots_per_node is {}; it must be from 1 to {MAX_SLOTS_PER_NODE}",
                self.slots_per_node
            )));
        }
        if self.memory_per_slot_mib == Some(0) {
            return Err(Error::Invalid(
                "memory_per_slot_mib must be at least 1".into(),
            ));
        }
        if self.max_nodes > MAX_NODES {
            return Err(Error::Invalid(format!(
                "max_nodes is {}; a pool may have at most {MAX_NODES} nodes",
                self.max_nodes
            )));
        }
        if self.min_nodes > self.max_nodes {
            return Err(Error::Invalid(format!(
                "min_nodes ({}) is more than max_nodes ({})",
                self.min_nodes, self.max_nodes
            )));
        }
        if !(self.min_nodes..=self.max_nodes).contains(&self.target_nodes) {
            return Err(Error::Invalid(format!(
                "target_nodes ({}) must be from min_nodes ({}) to max_nodes ({})",
                self.target_nodes, self.min_nodes, self.max_nodes
            )));
        }
        if let Some(task) = &self.start_task {
            if task.app.is_some() == task.image.is_some() {
                return Err(Error::Invalid(
                    "a start task names either `app` (whose image holds the program) or `image` (an uploaded zip), not both or neither".into(),
                ));
            }
            let relative = task.program.strip_prefix("/app/").unwrap_or(&task.program);
            crate::package::check_relative_path(relative).map_err(|e| {
                Error::Invalid(format!(
                    "the start task's program `{}` is not a path under /app: {e}",
                    task.program
                ))
            })?;
            if !(1..=7 * 86_400).contains(&task.timeout_secs) {
                return Err(Error::Invalid(
                    "the start task's timeout_secs must be from 1 to 604800".into(),
                ));
            }
        }
        if let Some(ProviderSpec::Command { start, stop, list }) = &self.provider
            && [start, stop, list].iter().any(|c| c.trim().is_empty())
        {
            return Err(Error::Invalid(
                "a command provider needs `start`, `stop` and `list` commands".into(),
            ));
        }
        let Some(autoscale) = &self.autoscale else {
            return Ok(None);
        };
        if !(1..=MAX_AUTOSCALE_INTERVAL_SECS).contains(&autoscale.interval_secs) {
            return Err(Error::Invalid(format!(
                "the autoscale interval is {} s; it must be from 1 to {MAX_AUTOSCALE_INTERVAL_SECS} s",
                autoscale.interval_secs
            )));
        }
        Formula::parse(&autoscale.formula)
            .map(Some)
            .map_err(Error::Formula)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(spec: PoolSpec) -> String {
        spec.check().unwrap_err().to_string()
    }

    #[test]
    fn bad_properties_are_refused_with_the_reason() {
        let base = PoolSpec::default;
        let cases = [
            (
                PoolSpec {
                    slots_per_node: 0,
                    ..base()
                },
                "slots_per_node is 0",
            ),
            (
                PoolSpec {
                    max_nodes: 5000,
                    ..base()
                },
                "at most 1000 nodes",
            ),
            (
                PoolSpec {
                    min_nodes: 3,
                    max_nodes: 2,
                    target_nodes: 3,
                    ..base()
                },
                "min_nodes (3) is more than max_nodes (2)",
            ),
            (
                PoolSpec {
                    target_nodes: 20,
                    ..base()
                },
                "target_nodes (20) must be from",
            ),
            (
                PoolSpec {
                    autoscale: Some(AutoscaleSpec {
                        formula: "$TargetDedicatedNodes = ;".into(),
                        interval_secs: 5,
                    }),
                    ..base()
                },
                "line 1, column 25",
            ),
            (
                PoolSpec {
                    autoscale: Some(AutoscaleSpec {
                        formula: "$TargetDedicatedNodes = 1;".into(),
                        interval_secs: 0,
                    }),
                    ..base()
                },
                "interval is 0 s",
            ),
            (
                PoolSpec {
                    start_task: Some(StartTask {
                        app: None,
                        version: None,
                        image: None,
                        program: "setup.wasm".into(),
                        args: vec![],
                        timeout_secs: 60,
                    }),
                    ..base()
                },
                "either `app`",
            ),
            (
                PoolSpec {
                    start_task: Some(StartTask {
                        app: Some("x".into()),
                        version: None,
                        image: None,
                        program: "/app/../etc/passwd".into(),
                        args: vec![],
                        timeout_secs: 60,
                    }),
                    ..base()
                },
                "not a path under /app",
            ),
            (
                PoolSpec {
                    provider: Some(ProviderSpec::Command {
                        start: "x".into(),
                        stop: " ".into(),
                        list: "y".into(),
                    }),
                    ..base()
                },
                "needs `start`, `stop` and `list`",
            ),
        ];
        for (spec, expected) in cases {
            let message = refused(spec);
            assert!(
                message.contains(expected),
                "{message:?} should contain {expected:?}"
            );
        }
        assert!(PoolSpec::default().check().unwrap().is_none());
    }

    #[test]
    fn changes_replace_only_what_they_name_and_null_removes() {
        let spec = PoolSpec {
            autoscale: Some(AutoscaleSpec {
                formula: "$TargetDedicatedNodes = 1;".into(),
                interval_secs: 5,
            }),
            max_nodes: 4,
            target_nodes: 3,
            ..PoolSpec::default()
        };
        let change: PoolChange =
            serde_json::from_str(r#"{"max_nodes": 2, "autoscale": null}"#).unwrap();
        let changed = spec.changed(&change);
        assert_eq!(changed.max_nodes, 2);
        assert_eq!(changed.autoscale, None);
        assert_eq!(changed.target_nodes, 2, "the target follows the new bounds");
        // What a client sends names only what it changes.
        let removal = PoolChange {
            autoscale: Some(None),
            ..PoolChange::default()
        };
        let sent: PoolChange =
            serde_json::from_str(&serde_json::to_string(&removal).unwrap()).unwrap();
        assert_eq!(sent, removal);
        let untouched: PoolChange = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.changed(&untouched), spec);
        assert!(serde_json::from_str::<PoolChange>(r#"{"bogus": 1}"#).is_err());
        let provider: PoolSpec =
            serde_json::from_str(r#"{"provider": {"kind": "slurm", "sbatch_args": ["-p", "ci"]}}"#)
                .unwrap();
        assert_eq!(provider.provider.unwrap().kind(), "slurm");
    }
}
