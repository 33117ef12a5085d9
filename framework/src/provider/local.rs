//! The `local` provider: `tessera node` processes on the service's own
//! machine.
//!
//! Each agent has a folder of the provider's, `<dir>/<pool>/`, holding its
//! state file (`<handle>.json`: process id and start time, so that a reused
//! process id is never taken for the agent), its log and its work folder.
//! The state files let a restarted service find the agents it started:
//! agents outlive a killed service and carry on when it is back.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Agent, AgentState, BoxFuture, Launch, NodeProvider, ProviderError, handle, pool_dir_name,
};

/// How long an agent asked to stop may take before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What the provider remembers of an agent.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct State {
    pid: u32,
    /// The process's start time (clock ticks after boot, from
    /// `/proc/<pid>/stat`).
    started: u64,
}

/// Starts agents as local processes.
pub(crate) struct LocalProvider {
    dir: PathBuf,
}

impl LocalProvider {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn pool_dir(&self, pool: &str) -> PathBuf {
        self.dir.join(pool_dir_name(pool))
    }

    fn spawn(&self, launch: &Launch) -> Result<String, ProviderError> {
        let dir = self.pool_dir(&launch.pool);
        let io = |what: String| move |source| ProviderError::Io { what, source };
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
        let agent = handle("local");
        let log_path = dir.join(format!("{agent}.log"));
        let log = std::fs::File::create(&log_path)
            .map_err(io(format!("creating {}", log_path.display())))?;
        let err = log
            .try_clone()
            .map_err(io(format!("opening {}", log_path.display())))?;
        let mut command = std::process::Command::new(&launch.program);
        command
            .args(launch.node_args(&agent, &dir.join(&agent)))
            .env("TESSERA_NODE_TOKEN", &launch.token)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err);
        // SAFETY: between fork and exec only `setsid` runs, which is
        // async-signal-safe: the agent gets a session of its own, so that
        // signals meant for the service's terminal or process group do not
        // reach it (it outlives a killed service and reconnects).
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(io(format!("starting {}", launch.program.display())))?;
        let pid = child.id();
        let state = State {
            pid,
            started: start_time(pid).unwrap_or(0),
        };
        let path = dir.join(format!("{agent}.json"));
        std::fs::write(
            &path,
            serde_json::to_vec(&state).expect("plain data serialises"),
        )
        .map_err(io(format!("writing {}", path.display())))?;
        // Reap it when it ends, so that it leaves no zombie behind.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        tracing::info!(pool = %launch.pool, %agent, pid, "started a local node agent");
        Ok(agent)
    }

    fn agents(&self, pool: &str) -> Vec<Agent> {
        let dir = self.pool_dir(pool);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut agents = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(agent) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .map(str::to_owned)
            else {
                continue;
            };
            match read_state(&path) {
                Some(state) if alive(&state) => agents.push(Agent {
                    handle: agent,
                    state: AgentState::Running,
                }),
                _ => forget(&dir, &agent),
            }
        }
        agents.sort_by(|a, b| a.handle.cmp(&b.handle));
        agents
    }

    fn terminate(&self, pool: &str, agent: &str) {
        let dir = self.pool_dir(pool);
        let Some(state) = read_state(&dir.join(format!("{agent}.json"))) else {
            return;
        };
        if !alive(&state) {
            forget(&dir, agent);
            return;
        }
        signal(state.pid, libc::SIGTERM);
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + STOP_GRACE;
            while std::time::Instant::now() < deadline {
                if !alive(&state) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            signal(state.pid, libc::SIGKILL);
        });
    }
}

impl NodeProvider for LocalProvider {
    fn start<'a>(&'a self, launch: &'a Launch) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move { self.spawn(launch) })
    }

    fn list<'a>(&'a self, pool: &'a str) -> BoxFuture<'a, Result<Vec<Agent>, ProviderError>> {
        Box::pin(async move { Ok(self.agents(pool)) })
    }

    fn stop<'a>(
        &'a self,
        pool: &'a str,
        handle: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.terminate(pool, handle);
            Ok(())
        })
    }
}

fn read_state(path: &Path) -> Option<State> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Removes an ended agent's files.
fn forget(dir: &Path, agent: &str) {
    let _ = std::fs::remove_file(dir.join(format!("{agent}.json")));
    let _ = std::fs::remove_file(dir.join(format!("{agent}.log")));
    let _ = std::fs::remove_dir_all(dir.join(agent));
}

/// Whether the agent's process still runs (not a zombie, not another
/// process that got its id).
fn alive(state: &State) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", state.pid)) else {
        return false;
    };
    let Some(rest) = stat.rsplit_once(") ").map(|(_, rest)| rest) else {
        return false;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let running = !matches!(fields.first(), Some(&"Z" | &"X"));
    // Field 22 of the whole line is the 20th after the command name.
    let started = fields.get(19).and_then(|s| s.parse::<u64>().ok());
    running && (state.started == 0 || started == Some(state.started))
}

/// A process's start time, in clock ticks after boot.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    rest.split(' ').nth(19)?.parse().ok()
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill only sends a signal; the pid is one this provider
    // started and checked is still that process.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_alive_only_with_its_own_start_time() {
        let me = std::process::id();
        let started = start_time(me).unwrap();
        assert!(alive(&State { pid: me, started }));
        assert!(
            !alive(&State {
                pid: me,
                started: started + 1
            }),
            "a reused process id"
        );
        assert!(
            !alive(&State {
                pid: u32::MAX - 1,
                started
            }),
            "no such process"
        );
    }

    #[tokio::test]
    async fn agents_are_started_listed_and_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let provider = LocalProvider::new(dir.path().to_path_buf());
        // A stand-in for `tessera node`: a shell that waits to be stopped.
        let script = dir.path().join("agent.sh");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let launch = Launch {
            program: script,
            url: "http://127.0.0.1:1".into(),
            pool: "alice/gpu".into(),
            token: "t".into(),
            slots: 1,
        };
        let a = provider.start(&launch).await.unwrap();
        let b = provider.start(&launch).await.unwrap();
        let mut expected = vec![a.clone(), b.clone()];
        expected.sort();
        let listed: Vec<String> = provider
            .list("alice/gpu")
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.handle)
            .collect();
        assert_eq!(listed, expected);
        assert!(provider.list("other").await.unwrap().is_empty());
        provider.stop("alice/gpu", &a).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let listed: Vec<String> = provider
                .list("alice/gpu")
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.handle)
                .collect();
            if listed == vec![b.clone()] {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{listed:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !dir.path()
                .join("alice_gpu")
                .join(format!("{a}.json"))
                .exists()
        );
        provider.stop("alice/gpu", &b).await.unwrap();
    }
}
