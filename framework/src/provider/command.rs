//! The `command` provider: shell commands of the admin's choosing start,
//! list and stop agents (a Kubernetes Job, a cloud machine, a container).
//!
//! Each command runs with `sh -c` and these variables:
//!
//! | variable | value |
//! | --- | --- |
//! | `TESSERA_AGENT` | the agent's handle (start, stop) |
//! | `TESSERA_NODE_AGENT` | the same, for `tessera node` to report |
//! | `TESSERA_URL` | the service's URL |
//! | `TESSERA_POOL_ID` | the pool's id |
//! | `TESSERA_NODE_TOKEN` | the pool's join token (start) |
//! | `TESSERA_NODE_SLOTS` | slots per node (start) |
//! | `TESSERA_PROGRAM` | the service's `tessera` executable |
//! | `TESSERA_PROVIDER_DIR` | a folder the commands may keep files in |
//!
//! so that `start` can be as short as `tessera node --url $TESSERA_URL
//! --pool $TESSERA_POOL_ID --slots $TESSERA_NODE_SLOTS &`. `list` prints one
//! line per agent it started that has not ended: its handle, optionally
//! followed by `queued`.

use std::path::PathBuf;

use super::{
    Agent, AgentState, BoxFuture, Launch, NodeProvider, ProviderError, handle, pool_dir_name, run,
};

/// Runs the admin's commands.
pub(crate) struct CommandProvider {
    dir: PathBuf,
    start: String,
    stop: String,
    list: String,
}

impl CommandProvider {
    pub(crate) fn new(dir: PathBuf, start: String, stop: String, list: String) -> Self {
        Self {
            dir,
            start,
            stop,
            list,
        }
    }

    /// `sh -c script` with the pool's variables.
    fn command(&self, script: &str, pool: &str) -> Result<tokio::process::Command, ProviderError> {
        let dir = self.dir.join(pool_dir_name(pool));
        std::fs::create_dir_all(&dir).map_err(|source| ProviderError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        let mut command = tokio::process::Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .env("TESSERA_POOL_ID", pool)
            .env("TESSERA_PROVIDER_DIR", &dir)
            .current_dir(&dir);
        Ok(command)
    }
}

impl NodeProvider for CommandProvider {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let agent = handle("cmd");
            let mut command = self.command(&self.start, &launch.pool)?;
            command
                .env("TESSERA_AGENT", &agent)
                .env("TESSERA_NODE_AGENT", &agent)
                .env("TESSERA_URL", &launch.url)
                .env("TESSERA_NODE_TOKEN", &launch.token)
                .env("TESSERA_NODE_SLOTS", launch.slots.to_string())
                .env("TESSERA_PROGRAM", &launch.program);
            run(command, "the start command").await?;
            tracing::info!(pool = %launch.pool, %agent, "started a node agent with the start command");
            Ok(agent)
        })
    }

    fn list<'a>(&'a self, pool: &'a str) -> BoxFuture<'a, Result<Vec<Agent>, ProviderError>> {
        Box::pin(async move {
            let out = run(self.command(&self.list, pool)?, "the list command").await?;
            Ok(parse_list(&out))
        })
    }

    fn stop<'a>(
        &'a self,
        pool: &'a str,
        agent: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let mut command = self.command(&self.stop, pool)?;
            command.env("TESSERA_AGENT", agent);
            run(command, "the stop command").await.map(drop)
        })
    }
}

/// The agents in the list command's output.
fn parse_list(out: &str) -> Vec<Agent> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let handle = words.next()?.to_owned();
            let state = match words.next() {
                Some("queued") => AgentState::Queued,
                _ => AgentState::Running,
            };
            Some(Agent { handle, state })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_output_becomes_agents() {
        assert_eq!(
            parse_list("cmd-1\n\ncmd-2 queued\n  cmd-3 running  \n"),
            vec![
                Agent {
                    handle: "cmd-1".into(),
                    state: AgentState::Running
                },
                Agent {
                    handle: "cmd-2".into(),
                    state: AgentState::Queued
                },
                Agent {
                    handle: "cmd-3".into(),
                    state: AgentState::Running
                },
            ]
        );
    }

    #[tokio::test]
    async fn commands_see_the_pool_and_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let provider = CommandProvider::new(
            dir.path().to_path_buf(),
            "echo \"$TESSERA_AGENT $TESSERA_NODE_SLOTS $TESSERA_NODE_TOKEN\" >> agents".into(),
            "grep -v \"^$TESSERA_AGENT \" agents > left; mv left agents".into(),
            "cut -d' ' -f1 agents".into(),
        );
        let launch = Launch {
            program: "tessera".into(),
            url: "http://x".into(),
            pool: "p".into(),
            token: "secret".into(),
            slots: 3,
        };
        let a = provider.start(&launch).await.unwrap();
        let b = provider.start(&launch).await.unwrap();
        let handles = |agents: Vec<Agent>| agents.into_iter().map(|a| a.handle).collect::<Vec<_>>();
        assert_eq!(
            handles(provider.list("p").await.unwrap()),
            [a.clone(), b.clone()]
        );
        let kept = std::fs::read_to_string(dir.path().join("p/agents")).unwrap();
        assert!(kept.contains(&format!("{a} 3 secret")), "{kept}");
        provider.stop("p", &a).await.unwrap();
        assert_eq!(handles(provider.list("p").await.unwrap()), [b]);
        let failing = CommandProvider::new(
            dir.path().to_path_buf(),
            "echo nope >&2; exit 3".into(),
            "true".into(),
            "true".into(),
        );
        let err = failing.start(&launch).await.unwrap_err();
        assert!(
            err.to_string().contains("nope") && err.to_string().contains("exit status: 3"),
            "{err}"
        );
    }
}
