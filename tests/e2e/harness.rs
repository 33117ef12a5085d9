//! Shared helpers: a service on an ephemeral port, zips built in the test,
//! and waiting for jobs.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tessera_framework::accounts::{NewAccount, Quotas};
use tessera_framework::blobs::Storage;
use tessera_framework::jobs::SubmitJob;
use tessera_framework::model::{AppVersion, Job, JobState};
pub use tessera_framework::package::testzip::{RawEntry, build as raw_zip};
use tessera_framework::service::{Database, ServiceConfig};
use tessera_portal_api::client::{Client, ClientError};
use tessera_portal_api::embedded::Embedded;

/// A service in a temporary folder, serving on an ephemeral port.
pub struct TestService {
    pub client: Client,
    pub embedded: Option<Embedded>,
    pub dir: tempfile::TempDir,
}

impl TestService {
    /// A service with `slots` embedded slots and settings suited to tests.
    pub async fn start(slots: usize) -> Self {
        Self::start_with(slots, |_| {}).await
    }

    /// Like [`TestService::start`], with the config adjusted by `adjust`.
    pub async fn start_with(slots: usize, adjust: impl FnOnce(&mut ServiceConfig)) -> Self {
        init_logging();
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path(), slots, adjust);
        let embedded = Embedded::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .unwrap();
        let client = embedded.admin_client().unwrap();
        Self {
            client,
            embedded: Some(embedded),
            dir,
        }
    }

    /// The keys of every file the service's blob store holds.
    pub async fn stored_files(&self) -> Vec<String> {
        let embedded = self.embedded.as_ref().expect("the service runs");
        embedded.service.blobs().list().await.unwrap()
    }

    /// Stops the service (gracefully).
    pub async fn stop(&mut self) {
        if let Some(e) = self.embedded.take() {
            e.stop().await.unwrap();
        }
    }

    /// Publishes a bundled sample.
    pub async fn publish_sample(&self, name: &str) -> AppVersion {
        let sample = tessera_samples::get(name).unwrap();
        self.client
            .publish_bytes(
                name,
                sample.assembly.to_vec(),
                sample.image.map(<[u8]>::to_vec),
            )
            .await
            .unwrap()
    }

    /// Publishes the hostile fixtures as application `hostile`, with an
    /// application image holding `image_files`.
    pub async fn publish_hostile(&self, image_files: &[(&str, &[u8])]) -> AppVersion {
        let image = (!image_files.is_empty()).then(|| zip_of(image_files));
        self.client
            .publish_bytes("hostile", hostile_assembly(), image)
            .await
            .unwrap()
    }

    /// A client of this service signing as a new account `name`.
    pub async fn account(&self, name: &str, quotas: Quotas) -> Client {
        let keys = self
            .client
            .create_account(&NewAccount {
                name: name.into(),
                quotas,
            })
            .await
            .unwrap();
        assert_eq!(keys.account, name);
        assert_ne!(keys.primary, keys.secondary);
        Client::new(self.client.url())
            .unwrap()
            .with_credentials(name, &keys.primary)
            .unwrap()
    }

    /// Runs a one-task job of the hostile app (published by the caller)
    /// that must complete: the service still serves normal work.
    pub async fn assert_serves_a_normal_job(&self) -> Job {
        let job = self
            .run(plan_job(
                serde_json::json!([{"name": "a", "params": {"behaviour": "ok"}}]),
                false,
            ))
            .await;
        assert_eq!(job.state, JobState::Completed, "{job:#?}");
        job
    }

    /// Submits a job and waits for it to finish.
    pub async fn run(&self, request: SubmitJob) -> Job {
        let job = self.client.submit(&request).await.unwrap();
        wait(&self.client, &job.id).await
    }
}

/// Shows the service's log lines in a failing test's output, filtered by
/// `TESSERA_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TESSERA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Settings for tests: short heartbeats and limits that misbehaving guests
/// reach quickly.
pub fn test_config(
    dir: &std::path::Path,
    slots: usize,
    adjust: impl FnOnce(&mut ServiceConfig),
) -> ServiceConfig {
    let mut config = ServiceConfig::new(dir.to_path_buf());
    config.embedded_slots = slots;
    config.heartbeat_interval = Duration::from_millis(200);
    config.runtime.max_instances = 64;
    config.scheduler.task_memory_bytes = 256 << 20;
    config.scheduler.task_log_bytes = 1 << 20;
    config.scheduler.task_output_bytes = 64 << 20;
    config.worker = worker();
    config.storage = test_storage(dir).map(|location| Storage::parse(&location).unwrap());
    config.database = test_database(dir).map(|location| Database::parse(&location).unwrap());
    adjust(&mut config);
    config
}

/// Where the service on `dir` keeps its files when the suite runs against
/// a blob service: `TESSERA_TEST_STORAGE` (say `az://tessera`, with the
/// `AZURE_*` variables set) and a folder named after `dir`, so that every
/// test has its own files and a restarted service finds its own again.
/// `None` (files under `dir`) when the variable is not set.
pub fn test_storage(dir: &Path) -> Option<String> {
    test_place("TESSERA_TEST_STORAGE", dir)
}

/// Where the service on `dir` keeps its state when the suite runs against
/// a PostgreSQL server: `TESSERA_TEST_DATABASE` (say
/// `postgres://tessera@127.0.0.1:55432`) and a database named after `dir`
/// (the service creates it). `None` (SQLite under `dir`) when the variable
/// is not set.
pub fn test_database(dir: &Path) -> Option<String> {
    test_place("TESSERA_TEST_DATABASE", dir)
}

/// The place of the test on `dir` on the shared server that the variable
/// `var` names: the server's URL, `/`, and `e2e_` with the folder's name
/// (in lower case, letters, digits and `_` only, as database names like).
fn test_place(var: &str, dir: &Path) -> Option<String> {
    let base = std::env::var(var).ok().filter(|v| !v.is_empty())?;
    let name: String = dir
        .file_name()
        .expect("a test folder has a name")
        .to_string_lossy()
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        })
        .collect();
    Some(format!("{}/e2e{name}", base.trim_end_matches('/')))
}

/// How nodes started by the tests run their slots: the `tessera` binary's
/// worker mode (the test binary cannot be a worker).
pub fn worker() -> tessera_framework::node::WorkerCommand {
    tessera_framework::node::WorkerCommand {
        program: env!("CARGO_BIN_EXE_tessera").into(),
    }
}

/// Waits (up to two minutes) for a job to finish; if it does not, fails
/// the test showing the job and its unfinished tasks.
pub async fn wait(client: &Client, id: &str) -> Job {
    let waited = tokio::time::timeout(
        Duration::from_secs(120),
        client.wait(id, Duration::from_millis(50), |_| {}),
    )
    .await;
    match waited {
        Ok(job) => job.unwrap(),
        Err(_) => {
            let job = client.job(id).await.unwrap();
            let tasks = client
                .tasks(id, None, None, Some(1000))
                .await
                .unwrap()
                .tasks;
            let unfinished: Vec<_> = tasks
                .iter()
                .filter(|t| !matches!(t.state, tessera_framework::model::TaskState::Succeeded))
                .collect();
            panic!(
                "job {id} did not finish within two minutes: {job:#?}\nunfinished tasks: {unfinished:#?}"
            );
        }
    }
}

/// A zip of the given files.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in files {
        zip.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The cloud assembly of the hostile fixtures.
pub fn hostile_assembly() -> Vec<u8> {
    use tessera_samples::fixtures::*;
    zip_of(&[
        ("assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        ("splitter.wasm", HOSTILE_SPLITTER),
        ("processor.wasm", HOSTILE_PROCESSOR),
    ])
}

/// The name of the `i`th task of `busy_tasks`.
pub fn busy_task_name(i: usize) -> String {
    format!("t{i:03}")
}

/// `count` tasks of the hostile app (`t000`, `t001`, ...) that each keep a
/// core busy for `millis`.
pub fn busy_tasks(count: usize, millis: u64) -> serde_json::Value {
    serde_json::Value::Array(
        (0..count)
            .map(|i| {
                serde_json::json!({
                    "name": busy_task_name(i),
                    "params": {"behaviour": "busy", "millis": millis},
                })
            })
            .collect(),
    )
}

/// A job of `busy_tasks(count, millis)` on `pool`, with or without a merge.
pub fn busy_job(pool: &str, count: usize, millis: u64, merge: bool) -> SubmitJob {
    SubmitJob {
        pool: Some(pool.into()),
        ..plan_job(busy_tasks(count, millis), merge)
    }
}

/// Every output of a job as (task, path, digest, size), sorted.
pub async fn job_outputs(client: &Client, job: &str) -> Vec<(Option<String>, String, String, u64)> {
    let mut all: Vec<_> = client
        .outputs(job)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.task, o.path, o.sha256.to_string(), o.size))
        .collect();
    all.sort();
    all
}

/// A job of the hostile app whose plan is `tasks` (JSON array of task
/// objects) with or without a merge.
pub fn plan_job(tasks: serde_json::Value, merge: bool) -> SubmitJob {
    let plan = serde_json::json!({ "tasks": tasks, "merge": merge });
    let mut parameters = serde_json::Map::new();
    parameters.insert("plan".into(), serde_json::Value::String(plan.to_string()));
    SubmitJob {
        app: "hostile".into(),
        parameters,
        max_task_retries: Some(0),
        ..SubmitJob::default()
    }
}

/// Asserts an API error's status, code and a part of its message.
pub fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    status: u16,
    code: &str,
    message_part: &str,
) {
    match result {
        Err(ClientError::Api {
            status: s,
            code: c,
            message,
        }) => {
            assert_eq!(s, status, "status of {c}: {message}");
            assert_eq!(c, code, "code; message: {message}");
            assert!(
                message.contains(message_part),
                "message {message:?} should contain {message_part:?}"
            );
        }
        other => panic!("expected an API error {status} {code}, got {other:?}"),
    }
}

/// Job parameters from a JSON object literal.
pub fn params(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("parameters must be a JSON object, not {other}"),
    }
}

/// A job of the hostile app with these job parameters (`mode`, `count`,
/// `merge`, ...), no retries.
pub fn hostile_job(parameters: serde_json::Value) -> SubmitJob {
    SubmitJob {
        app: "hostile".into(),
        parameters: params(parameters),
        max_task_retries: Some(0),
        ..SubmitJob::default()
    }
}

/// Polls `check` every 50 ms until it returns `Some`, failing the test
/// after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The content of one output of a job: a task's when `task` is given,
/// else the job's own.
pub async fn output(client: &Client, job: &str, task: Option<&str>, path: &str) -> Vec<u8> {
    let outputs = client.outputs(job).await.unwrap();
    let found = outputs
        .iter()
        .find(|o| o.task.as_deref() == task && o.path == path)
        .unwrap_or_else(|| panic!("no output {task:?}/{path} in {outputs:#?}"));
    client.output_bytes(job, found).await.unwrap().to_vec()
}

/// Like [`output`], as text.
pub async fn output_text(client: &Client, job: &str, task: Option<&str>, path: &str) -> String {
    String::from_utf8(output(client, job, task, path).await).unwrap()
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The hostile assembly's entries as raw entries, with `replace` swapping
/// the bytes of the named entries and `extra` appended.
pub fn hostile_entries(replace: &[(&str, &[u8])], extra: &[RawEntry]) -> Vec<RawEntry> {
    use tessera_samples::fixtures::*;
    let mut entries: Vec<RawEntry> = [
        ("assembly.toml", HOSTILE_ASSEMBLY_TOML.as_bytes()),
        ("splitter.wasm", HOSTILE_SPLITTER),
        ("processor.wasm", HOSTILE_PROCESSOR),
    ]
    .into_iter()
    .map(|(name, default)| {
        let bytes = replace
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(default, |(_, b)| *b);
        RawEntry::stored(name, bytes)
    })
    .collect();
    entries.extend_from_slice(extra);
    entries
}

/// A `tessera node` agent process, killed when dropped.
pub struct Agent {
    pub child: std::process::Child,
    /// The id it registered under.
    pub id: String,
}

impl Agent {
    /// Starts `tessera node` for `pool` with `slots` slots in `work_dir`,
    /// and waits until it has joined. Its stderr goes to `work_dir.log`.
    pub async fn start(
        url: &str,
        pool: &str,
        token: &str,
        slots: usize,
        work_dir: &std::path::Path,
    ) -> Self {
        Self::start_with(url, pool, token, slots, work_dir, &[]).await
    }

    /// Like [`Agent::start`], with `extra` arguments.
    pub async fn start_with(
        url: &str,
        pool: &str,
        token: &str,
        slots: usize,
        work_dir: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let log = std::fs::File::create(work_dir.with_extension("log")).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args([
                "node",
                "--url",
                url,
                "--pool",
                pool,
                "--slots",
                &slots.to_string(),
            ])
            .arg("--work-dir")
            .arg(work_dir)
            .args(["--heartbeat-ms", "200"])
            .args(extra)
            .env("TESSERA_NODE_TOKEN", token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let line = first_line(&mut child, "the node agent did not join").await;
        let id = line
            .strip_prefix("Tessera node ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; stderr:\n{}",
                    std::fs::read_to_string(work_dir.with_extension("log")).unwrap_or_default()
                )
            })
            .to_owned();
        Self { child, id }
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub async fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        signal(self.child.id(), "-TERM");
        wait_exit(&mut self.child, limit).await
    }

    /// Waits up to `limit` for the agent to end by itself.
    pub async fn wait(mut self, limit: Duration) -> std::process::ExitStatus {
        wait_exit(&mut self.child, limit).await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal (`-TERM`, `-KILL`, ...) to a process.
pub fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

/// Waits up to `limit` for a child to exit.
pub async fn wait_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> std::process::ExitStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the process did not exit within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `tessera serve` child process, killed when dropped.
pub struct Server {
    /// A client signing as the admin.
    pub client: Client,
    /// The URL it serves on.
    pub url: String,
    child: Child,
}

impl Server {
    /// Starts `tessera serve` on `dir/data` with `slots` task slots and an
    /// ephemeral port, and waits for its "serving on" line. Its stderr is
    /// appended to `dir/stderr.log`.
    pub async fn start(dir: &Path, slots: usize) -> Self {
        Self::start_with(dir, "127.0.0.1:0", &["--slots", &slots.to_string()]).await
    }

    /// Like [`Server::start`], listening on `listen`, with `args` added.
    pub async fn start_with(dir: &Path, listen: &str, args: &[&str]) -> Self {
        Self::launch(dir, listen, args, dir).await
    }

    /// Another replica of the service that `first` started in its folder:
    /// on `dir`, with `args` (which name the shared `--database` and
    /// `--storage`), and the admin's credentials from `first`'s data.
    pub async fn start_replica(dir: &Path, first: &Path, args: &[&str]) -> Self {
        Self::launch(dir, "127.0.0.1:0", args, first).await
    }

    async fn launch(dir: &Path, listen: &str, args: &[&str], credentials: &Path) -> Self {
        let named = |flag: &str| args.iter().any(|a| a.starts_with(flag));
        let log_path = dir.join("stderr.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let storage = test_storage(dir)
            .filter(|_| !named("--storage"))
            .map(|location| format!("--storage={location}"));
        let database = test_database(dir)
            .filter(|_| !named("--database"))
            .map(|location| format!("--database={location}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", listen])
            .args(storage)
            .args(database)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let line = first_line(&mut child, "the service did not start").await;
        let url = line
            .strip_prefix("Tessera is serving on ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| {
                panic!(
                    "unexpected first line {line:?}; stderr:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            });
        let (account, key) = tessera_framework::accounts::read_credentials(
            &tessera_framework::accounts::admin_credentials_path(&credentials.join("data")),
        )
        .unwrap();
        let client = Client::new(url)
            .unwrap()
            .with_credentials(&account, &key)
            .unwrap();
        client.health().await.unwrap();
        Self {
            child,
            client,
            url: url.to_owned(),
        }
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    pub async fn terminate(mut self, limit: Duration) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the service did not stop within {limit:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first line a child process writes to stdout (failing with `what`
/// after a minute); the rest is drained, so that the child never writes
/// into a closed pipe.
async fn first_line(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().unwrap();
    let (first, line) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = first.send(line);
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    tokio::time::timeout(Duration::from_secs(60), line)
        .await
        .unwrap_or_else(|_| panic!("{what} within a minute"))
        .unwrap()
}

/// Waits (up to 30 s) until the folder `dir` is empty or gone: a provider
/// has forgotten the agents that ended.
pub async fn until_empty(dir: &Path) {
    eventually(
        Duration::from_secs(30),
        &format!("{} to be empty", dir.display()),
        || async {
            let left = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
            (left == 0).then_some(())
        },
    )
    .await;
}
