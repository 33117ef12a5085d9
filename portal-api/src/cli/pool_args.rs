//! The flags that describe a pool's properties, shared by `tessera pool
//! create` and `tessera pool update`.

use anyhow::{Context, bail};
use clap::Args;
use tessera_framework::digest::Digest;
use tessera_framework::pools::{AutoscaleSpec, PoolChange, PoolSpec, ProviderSpec, StartTask};

/// A pool's properties as flags; what is not given is left as it is.
#[derive(Args, Debug, Clone, Default)]
pub struct PoolSpecArgs {
    /// Task slots of each node its provider starts.
    #[arg(long)]
    slots_per_node: Option<u32>,
    /// Memory limit of one task on the pool, in MiB.
    #[arg(long)]
    memory_per_slot_mib: Option<u64>,
    /// Fewest nodes.
    #[arg(long)]
    min_nodes: Option<u32>,
    /// Most nodes.
    #[arg(long)]
    max_nodes: Option<u32>,
    /// An autoscale formula in Azure Batch's language (or @FILE to read one).
    #[arg(long)]
    formula: Option<String>,
    /// Seconds between autoscale evaluations (default 60).
    #[arg(long)]
    interval_secs: Option<u64>,
    /// The application whose image holds the start task's program.
    #[arg(long)]
    start_task_app: Option<String>,
    /// Or the sha256 of an uploaded zip holding it.
    #[arg(long)]
    start_task_image: Option<Digest>,
    /// The start task's program, a path under /app.
    #[arg(long)]
    start_task_program: Option<String>,
    /// An argument of the start task's program (repeat for more).
    #[arg(long = "start-task-arg")]
    start_task_args: Vec<String>,
    /// Who starts the pool's nodes: local, slurm or command.
    #[arg(long, value_parser = ["local", "slurm", "command"])]
    provider: Option<String>,
    /// An extra `sbatch` argument for the slurm provider (repeat for more).
    #[arg(long = "sbatch-arg")]
    sbatch_args: Vec<String>,
    /// The command provider's start command.
    #[arg(long)]
    start_command: Option<String>,
    /// The command provider's stop command.
    #[arg(long)]
    stop_command: Option<String>,
    /// The command provider's list command.
    #[arg(long)]
    list_command: Option<String>,
}

impl PoolSpecArgs {
    /// The properties of a new pool with `target` nodes.
    pub(super) fn spec(&self, target: u32) -> anyhow::Result<PoolSpec> {
        let mut spec = PoolSpec::default().changed(&self.change()?);
        spec.target_nodes = target;
        Ok(spec)
    }

    /// The change these flags describe.
    pub(super) fn change(&self) -> anyhow::Result<PoolChange> {
        let formula = match &self.formula {
            Some(f) => Some(match f.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading the formula from {path}"))?,
                None => f.clone(),
            }),
            None => None,
        };
        let autoscale = formula.map(|formula| {
            Some(AutoscaleSpec {
                formula,
                interval_secs: self.interval_secs.unwrap_or(60),
            })
        });
        let start_task = match &self.start_task_program {
            Some(program) => Some(Some(StartTask {
                app: self.start_task_app.clone(),
                version: None,
                image: self.start_task_image,
                program: program.clone(),
                args: self.start_task_args.clone(),
                timeout_secs: 600,
            })),
            None if self.start_task_app.is_some() || self.start_task_image.is_some() => {
                bail!("give the start task's program with --start-task-program")
            }
            None => None,
        };
        let provider = match self.provider.as_deref() {
            None => None,
            Some("local") => Some(Some(ProviderSpec::Local)),
            Some("slurm") => Some(Some(ProviderSpec::Slurm {
                sbatch_args: self.sbatch_args.clone(),
            })),
            Some(_) => {
                let need = |c: &Option<String>, flag: &str| {
                    c.clone()
                        .with_context(|| format!("the command provider needs {flag}"))
                };
                Some(Some(ProviderSpec::Command {
                    start: need(&self.start_command, "--start-command")?,
                    stop: need(&self.stop_command, "--stop-command")?,
                    list: need(&self.list_command, "--list-command")?,
                }))
            }
        };
        Ok(PoolChange {
            slots_per_node: self.slots_per_node,
            memory_per_slot_mib: self.memory_per_slot_mib.map(Some),
            min_nodes: self.min_nodes,
            max_nodes: self.max_nodes,
            autoscale,
            start_task,
            provider,
        })
    }
}

/// Flags of `tessera pool update` that remove a property.
#[derive(Args, Debug, Clone, Default)]
pub struct PoolRemovals {
    /// Remove the autoscale formula (the pool keeps its current target).
    #[arg(long)]
    no_autoscale: bool,
    /// Remove the start task.
    #[arg(long)]
    no_start_task: bool,
    /// Remove the provider (nodes join by themselves).
    #[arg(long)]
    no_provider: bool,
}

impl PoolRemovals {
    /// Applies the removals to a change.
    pub(super) fn apply(&self, mut change: PoolChange) -> PoolChange {
        if self.no_autoscale {
            change.autoscale = Some(None);
        }
        if self.no_start_task {
            change.start_task = Some(None);
        }
        if self.no_provider {
            change.provider = Some(None);
        }
        change
    }
}
