//! Node providers: what starts and stops a pool's node agents so that the
//! pool has as many nodes as its target says.
//!
//! A provider does three things, in the shape HyperQueue's allocators have:
//! start one agent (returning its handle), list the agents it started for a
//! pool with their states in one call, and stop one. The pool manager
//! (`pools::manager`) decides how many to start and which to stop; it never
//! names `sbatch` or a process id. Agents are `tessera node` processes; the
//! handle a provider gives one is passed to it (`--agent`, or
//! `TESSERA_NODE_AGENT`), so that the node it registers is matched to it.
//!
//! - [`local`]: processes on the service's machine;
//! - [`slurm`]: Slurm batch jobs (`sbatch`, `squeue`, `scancel`);
//! - [`command`]: hook commands of the admin's choosing (a Kubernetes Job,
//!   a cloud VM, ...).

mod command;
mod local;
mod slurm;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::pools::ProviderSpec;

/// A boxed future, so that providers can be chosen at run time.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An agent a provider started stops after this long without reaching the
/// service (a restart of the service takes far less).
const GIVE_UP_AFTER_SECS: u64 = 600;

/// What an agent is started with.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    /// The `tessera` executable.
    pub program: PathBuf,
    /// The service URL agents reach.
    pub url: String,
    /// The pool's id.
    pub pool: String,
    /// The pool's join token.
    pub token: String,
    /// Task slots of the agent.
    pub slots: u32,
}

impl Launch {
    /// The `tessera node` arguments (the token goes in the environment, as
    /// `TESSERA_NODE_TOKEN`, never on a command line).
    pub(crate) fn node_args(&self, agent: &str, work_dir: &std::path::Path) -> Vec<String> {
        vec![
            "node".into(),
            "--url".into(),
            self.url.clone(),
            "--pool".into(),
            self.pool.clone(),
            "--slots".into(),
            self.slots.to_string(),
            "--work-dir".into(),
            work_dir.to_string_lossy().into_owned(),
            "--agent".into(),
            agent.into(),
            // An agent a provider started does not outlive its service.
            "--give-up-after-secs".into(),
            GIVE_UP_AFTER_SECS.to_string(),
        ]
    }
}

/// Where an agent a provider started is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AgentState {
    /// Waiting for resources (a Slurm job pending).
    Queued,
    /// Running.
    Running,
}

/// An agent a provider started and that has not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Agent {
    /// Its handle.
    pub handle: String,
    /// Its state.
    pub state: AgentState,
}

/// Why a provider could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProviderError {
    /// Starting or talking to a process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A command ended badly.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command.
        command: String,
        /// Its exit status.
        status: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A command's output made no sense.
    #[error("{0}")]
    Output(String),
}

/// Starts, lists and stops a pool's agents.
pub(crate) trait NodeProvider: Send + Sync {
    /// Starts one agent; returns its handle.
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<String, ProviderError>>;

    /// The agents started for `pool` that have not ended.
    fn list<'a>(&'a self, pool: &'a str) -> BoxFuture<'a, Result<Vec<Agent>, ProviderError>>;

    /// Stops one agent of `pool`: it is asked to leave (SIGTERM: it
    /// releases its tasks and deregisters), then made to.
    fn stop<'a>(
        &'a self,
        pool: &'a str,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// The provider a pool's properties name; `dir` holds providers' files
/// (logs, state, working folders).
pub(crate) fn for_spec(spec: &ProviderSpec, dir: &std::path::Path) -> Box<dyn NodeProvider> {
    match spec {
        ProviderSpec::Local => Box::new(local::LocalProvider::new(dir.join("local"))),
        ProviderSpec::Slurm { sbatch_args } => Box::new(slurm::SlurmProvider::new(
            dir.join("slurm"),
            sbatch_args.clone(),
        )),
        ProviderSpec::Command { start, stop, list } => Box::new(command::CommandProvider::new(
            dir.join("command"),
            start.clone(),
            stop.clone(),
            list.clone(),
        )),
    }
}

/// A fresh agent handle with `prefix`.
pub(crate) fn handle(prefix: &str) -> String {
    let mut random = [0u8; 4];
    getrandom::getrandom(&mut random).expect("the system has a random source");
    format!("{prefix}-{}", hex::encode(random))
}

/// A pool id as a file name (`alice/gpu` → `alice_gpu`).
pub(crate) fn pool_dir_name(pool: &str) -> String {
    pool.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Runs a command, failing with its stderr if it does not succeed; returns
/// its stdout.
pub(crate) async fn run(
    mut command: tokio::process::Command,
    shown: &str,
) -> Result<String, ProviderError> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| ProviderError::Io {
            what: format!("running `{shown}`"),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: String = stderr
            .chars()
            .rev()
            .take(2000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(ProviderError::Command {
            command: shown.to_owned(),
            status: output.status.to_string(),
            stderr: tail.trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_make_safe_folder_names_and_handles_are_fresh() {
        assert_eq!(pool_dir_name("alice/gpu"), "alice_gpu");
        assert_eq!(pool_dir_name("local"), "local");
        assert_ne!(handle("local"), handle("local"));
        assert!(handle("slurm").starts_with("slurm-"));
    }
}
