//! The `slurm` provider: each agent is a Slurm batch job running `tessera
//! node`, submitted with `sbatch`, listed with one `squeue` for the pool,
//! stopped with `scancel` (Slurm sends SIGTERM first, so the agent releases
//! its tasks and deregisters).
//!
//! The service must reach the cluster's commands (with `SLURM_CONF` in its
//! environment where Slurm needs it), and the agents must reach the
//! service's URL from the compute nodes.

use std::path::PathBuf;

use super::{
    Agent, AgentState, BoxFuture, Launch, NodeProvider, ProviderError, pool_dir_name, run,
};

/// Submits agents as Slurm batch jobs.
pub(crate) struct SlurmProvider {
    /// Job logs and work folders live here (it must be reachable from the
    /// compute nodes: a shared file system, or the machine itself).
    dir: PathBuf,
    sbatch_args: Vec<String>,
}

impl SlurmProvider {
    pub(crate) fn new(dir: PathBuf, sbatch_args: Vec<String>) -> Self {
        Self { dir, sbatch_args }
    }

    /// The job name of a pool's agents (Slurm lists jobs by name).
    fn job_name(pool: &str) -> String {
        format!("tessera-{}", pool_dir_name(pool))
    }

    async fn submit(&self, launch: &Launch) -> Result<String, ProviderError> {
        let dir = self.dir.join(pool_dir_name(&launch.pool));
        std::fs::create_dir_all(&dir).map_err(|source| ProviderError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        // The handle is the job id, known only once submitted: the job
        // names itself from SLURM_JOB_ID.
        let args: Vec<String> = launch
            .node_args("slurm-$SLURM_JOB_ID", &dir.join("work-$SLURM_JOB_ID"))
            .iter()
            .map(|a| shell_word(a))
            .collect();
        let wrap = format!(
            "exec {} {}",
            shell_word(&launch.program.to_string_lossy()),
            args.join(" ")
        );
        let mut command = tokio::process::Command::new("sbatch");
        command
            .arg("--parsable")
            .arg(format!("--job-name={}", Self::job_name(&launch.pool)))
            .arg(format!("--output={}/%j.out", dir.display()))
            .arg(format!("--chdir={}", dir.display()))
            .arg(format!("--cpus-per-task={}", launch.slots))
            .args(&self.sbatch_args)
            .arg("--wrap")
            .arg(&wrap)
            // sbatch hands its environment to the job (its default
            // --export=ALL): the token travels there, not on a command line.
            .env("TESSERA_NODE_TOKEN", &launch.token);
        let out = run(command, "sbatch").await?;
        let id = out
            .trim()
            .split(';')
            .next()
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ProviderError::Output(format!("sbatch printed {out:?}, not a job id"))
            })?;
        tracing::info!(pool = %launch.pool, job = id, "submitted a Slurm job for a node agent");
        Ok(format!("slurm-{id}"))
    }

    async fn jobs(&self, pool: &str) -> Result<Vec<Agent>, ProviderError> {
        let mut command = tokio::process::Command::new("squeue");
        command
            .arg("--noheader")
            .arg(format!("--name={}", Self::job_name(pool)))
            .arg("--format=%i %T");
        let out = run(command, "squeue").await?;
        Ok(parse_squeue(&out))
    }
}

/// The agents in `squeue --format='%i %T'` output: pending jobs are queued,
/// running (or configuring, completing) ones running; ended ones are left
/// out.
fn parse_squeue(out: &str) -> Vec<Agent> {
    out.lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once(' ')?;
            let state = match state.trim() {
                "PENDING" | "REQUEUED" | "RESIZING" | "SUSPENDED" => AgentState::Queued,
                "RUNNING" | "CONFIGURING" | "COMPLETING" | "STAGE_OUT" => AgentState::Running,
                _ => return None,
            };
            Some(Agent {
                handle: format!("slurm-{id}"),
                state,
            })
        })
        .collect()
}

/// Quotes a word for `sh`, leaving `$SLURM_JOB_ID` to expand.
fn shell_word(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_./:=$".contains(&b))
    {
        word.to_owned()
    } else {
        format!(
            "\"{}\"",
            word.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('`', "\\`")
        )
    }
}

impl NodeProvider for SlurmProvider {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(self.submit(launch))
    }

    fn list<'a>(&'a self, pool: &'a str) -> BoxFuture<'a, Result<Vec<Agent>, ProviderError>> {
        Box::pin(self.jobs(pool))
    }

    fn stop<'a>(
        &'a self,
        _pool: &'a str,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let id = handle.strip_prefix("slurm-").unwrap_or(handle);
            let mut command = tokio::process::Command::new("scancel");
            command.arg(id);
            run(command, "scancel").await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_output_becomes_agents() {
        let agents = parse_squeue("12 RUNNING\n13 PENDING\n14 COMPLETED\n\n15 COMPLETING\n");
        assert_eq!(
            agents,
            vec![
                Agent {
                    handle: "slurm-12".into(),
                    state: AgentState::Running
                },
                Agent {
                    handle: "slurm-13".into(),
                    state: AgentState::Queued
                },
                Agent {
                    handle: "slurm-15".into(),
                    state: AgentState::Running
                },
            ]
        );
    }

    #[test]
    fn words_are_quoted_for_the_shell_but_the_job_id_expands() {
        assert_eq!(shell_word("--agent"), "--agent");
        assert_eq!(shell_word("slurm-$SLURM_JOB_ID"), "slurm-$SLURM_JOB_ID");
        assert_eq!(shell_word("a b"), "\"a b\"");
        assert_eq!(shell_word("x\"`y"), "\"x\\\"\\`y\"");
    }
}
