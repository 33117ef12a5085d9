//! `tessera serve`, `tessera account …`, `tessera pool …`, `tessera app …`
//! and `tessera job …`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tessera_framework::accounts::{AccountKeys, KeyName, NewAccount, Quotas};
use tessera_framework::jobs::{InputRef, SubmitJob};
use tessera_framework::model::{Job, JobState, LogStream, TaskState};
use tessera_framework::pools::NewPool;
use tessera_framework::service::ServiceConfig;

use super::display;
use super::{AccountCommand, AppCommand, Connection, JobCommand, PoolCommand, ServiceArgs};
use crate::client::Client;
use crate::embedded::Embedded;

impl ServiceArgs {
    /// The service settings these flags describe.
    pub(super) fn config(&self, data_dir: PathBuf) -> ServiceConfig {
        let mut config = ServiceConfig::new(data_dir);
        if let Some(slots) = self.slots {
            config.embedded_slots = slots;
            config.runtime.max_instances = (slots as u32 * 4).max(64);
        }
        config.scheduler.task_memory_bytes = self.task_memory_mib << 20;
        config.scheduler.node_timeout = Duration::from_secs(self.node_timeout_secs.max(1));
        config.storage = self.storage.clone();
        config.database = self.database.clone();
        config
    }
}

impl Connection {
    fn client(&self) -> anyhow::Result<Client> {
        let client = Client::new(&self.url)?;
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        Ok(match (given(&self.account), given(&self.key)) {
            (Some(account), Some(key)) => client.with_credentials(&account, &key)?,
            (None, None) => client,
            _ => anyhow::bail!(
                "give both an account and its key (--account and --key, or TESSERA_ACCOUNT and TESSERA_KEY)"
            ),
        })
    }
}

/// `tessera serve`.
pub(super) async fn serve(args: super::ServeArgs) -> anyhow::Result<ExitCode> {
    let (data_dir, listen) = (args.data_dir, args.listen);
    let mut config = args.service.config(data_dir.clone());
    config.public_url = args.advertise_url;
    let slots = config.embedded_slots;
    let mut elsewhere = String::new();
    if let Some(database) = &config.database {
        elsewhere.push_str(&format!(", state in {database}"));
    }
    if let Some(storage) = &config.storage {
        elsewhere.push_str(&format!(", files in {storage}"));
    }
    let embedded = Embedded::start(config, listen).await?;
    println!(
        "Tessera is serving on {} (data in {}{elsewhere}, {slots} task slots). Stop with Ctrl-C.",
        embedded.url(),
        data_dir.display()
    );
    let credentials = embedded.service.admin_credentials_path();
    if credentials.exists() {
        println!(
            "The admin account's credentials are in {} (TESSERA_ACCOUNT and TESSERA_KEY).",
            credentials.display()
        );
    } else {
        println!(
            "The admin account exists already and {} is not here: it was written where the \
             account was made (another replica's data folder, or this one's before it was \
             removed).",
            credentials.display()
        );
    }
    shutdown_signal().await;
    eprintln!("Stopping: finishing requests, committing finished tasks, releasing the rest...");
    embedded.stop().await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on Ctrl-C or SIGTERM.
pub(super) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// `tessera account …`.
pub(super) async fn account(command: AccountCommand) -> anyhow::Result<ExitCode> {
    let show_keys = |keys: &AccountKeys, json: bool| -> anyhow::Result<()> {
        if json {
            display::json(keys)?;
        } else {
            println!("account:   {}", keys.account);
            println!("primary:   {}", keys.primary);
            println!("secondary: {}", keys.secondary);
        }
        Ok(())
    };
    match command {
        AccountCommand::Create {
            name,
            max_running_tasks,
            max_stored_bytes,
            max_pending_jobs,
            connection,
        } => {
            let request = NewAccount {
                name,
                quotas: Quotas {
                    max_running_tasks,
                    max_stored_bytes,
                    max_pending_jobs,
                },
            };
            let keys = connection.client()?.create_account(&request).await?;
            show_keys(&keys, connection.json)?;
        }
        AccountCommand::List { connection } => {
            let accounts = connection.client()?.accounts().await?;
            if connection.json {
                display::json(&accounts)?;
            } else {
                display::accounts(&accounts);
            }
        }
        AccountCommand::Keys { name, connection } => {
            let keys = connection.client()?.account_keys(&name).await?;
            show_keys(&keys, connection.json)?;
        }
        AccountCommand::Regenerate {
            name,
            which,
            connection,
        } => {
            let which = if which == "primary" {
                KeyName::Primary
            } else {
                KeyName::Secondary
            };
            let keys = connection.client()?.regenerate_key(&name, which).await?;
            show_keys(&keys, connection.json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tessera pool …`.
pub(super) async fn pool(command: PoolCommand) -> anyhow::Result<ExitCode> {
    match command {
        PoolCommand::Create {
            name,
            shared,
            target_nodes,
            spec,
            connection,
        } => {
            let spec = spec.spec(target_nodes)?;
            let pool = connection
                .client()?
                .create_pool(&NewPool { name, shared, spec })
                .await?;
            if connection.json {
                display::json(&pool)?;
            } else {
                println!(
                    "Created the pool `{}` (id `{}`). Its nodes join it with:",
                    pool.name, pool.id
                );
                print_join_command(&connection, &pool);
            }
        }
        PoolCommand::Token {
            name,
            regenerate,
            connection,
        } => {
            let pool = connection.client()?.pool_token(&name, regenerate).await?;
            if connection.json {
                display::json(&pool)?;
            } else {
                if regenerate {
                    println!(
                        "Replaced the join token of `{}`: nodes using the old one are refused from now on. Nodes join it with:",
                        pool.name
                    );
                } else {
                    println!("Nodes join the pool `{}` with:", pool.name);
                }
                print_join_command(&connection, &pool);
            }
        }
        PoolCommand::Autoscale(super::AutoscaleCommand::Evaluate {
            name,
            formula,
            connection,
        }) => {
            let formula = match formula {
                Some(f) => Some(match f.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path)
                        .with_context(|| format!("reading the formula from {path}"))?,
                    None => f,
                }),
                None => None,
            };
            let run = connection
                .client()?
                .evaluate_autoscale(&name, formula.as_deref())
                .await?;
            if connection.json {
                display::json(&run)?;
            } else {
                display::autoscale_run(&run);
            }
        }
        PoolCommand::Resize {
            name,
            target_nodes,
            connection,
        } => {
            let pool = connection
                .client()?
                .resize_pool(&name, target_nodes)
                .await?;
            show_pool(&connection, &pool)?;
        }
        PoolCommand::Update {
            name,
            spec,
            removals,
            connection,
        } => {
            let change = removals.apply(spec.change()?);
            let pool = connection.client()?.update_pool(&name, &change).await?;
            show_pool(&connection, &pool)?;
        }
        PoolCommand::List { connection } => {
            let pools = connection.client()?.pools().await?;
            if connection.json {
                display::json(&pools)?;
            } else {
                display::pools(&pools);
            }
        }
        PoolCommand::Show { name, connection } => {
            let pool = connection.client()?.pool(&name).await?;
            show_pool(&connection, &pool)?;
        }
        PoolCommand::Delete { name, connection } => {
            connection.client()?.delete_pool(&name).await?;
            if !connection.json {
                println!("Deleted the pool `{name}`.");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows a pool as JSON or as text.
fn show_pool(connection: &Connection, pool: &tessera_framework::pools::Pool) -> anyhow::Result<()> {
    if connection.json {
        display::json(pool)?;
    } else {
        display::pool(pool);
    }
    Ok(())
}

/// Prints the `tessera node` command that joins `pool`.
fn print_join_command(connection: &Connection, pool: &tessera_framework::pools::Pool) {
    println!(
        "  tessera node --url {} --pool {} --token {}",
        connection.url,
        pool.id,
        pool.join_token.as_deref().unwrap_or("<token>")
    );
}

/// `tessera app …`.
pub(super) async fn app(command: AppCommand) -> anyhow::Result<ExitCode> {
    match command {
        AppCommand::Publish {
            name,
            assembly,
            image,
            connection,
        } => {
            let client = connection.client()?;
            let version = client.publish(&name, &assembly, image.as_deref()).await?;
            if connection.json {
                display::json(&version)?;
            } else {
                println!("Published {} version {}.", version.app, version.version);
                display::app_version(&version);
            }
        }
        AppCommand::List { connection } => {
            let apps = connection.client()?.apps().await?;
            if connection.json {
                display::json(&apps)?;
            } else {
                display::apps(&apps);
            }
        }
        AppCommand::Show {
            name,
            version,
            connection,
        } => {
            let client = connection.client()?;
            let versions = match version {
                Some(v) => vec![client.app_version(&name, v).await?],
                None => client.app(&name).await?.versions,
            };
            if connection.json {
                display::json(&versions)?;
            } else {
                for v in &versions {
                    display::app_version(v);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `tessera job submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The application.
    app: String,
    /// The application version (default: the newest).
    #[arg(long)]
    version: Option<u32>,
    /// A parameter value, NAME=VALUE (repeatable).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// An input file or folder, [NAME=]PATH (repeatable; a folder adds every file in it).
    #[arg(long = "input", short = 'i', value_name = "[NAME=]PATH")]
    inputs: Vec<String>,
    /// How many times a failed task attempt is retried.
    #[arg(long)]
    retries: Option<u32>,
    /// Wall-clock limit of one task attempt, in seconds.
    #[arg(long)]
    timeout: Option<u64>,
    /// The pool to run on: one of yours or a shared one (default: `local`).
    #[arg(long)]
    pool: Option<String>,
    /// Run on a pool made for this job alone, with this many nodes and the
    /// pool flags below; it is removed, its nodes stopped, when the job ends.
    #[arg(long, conflicts_with = "pool")]
    auto_pool_nodes: Option<u32>,
    /// Wait for the job to finish, showing its progress.
    #[arg(long)]
    wait: bool,
    /// Wait, then download the outputs into this folder.
    #[arg(long)]
    download: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
    #[command(
        flatten,
        next_help_heading = "Auto-pool properties (with --auto-pool-nodes)"
    )]
    auto_pool: super::pool_args::PoolSpecArgs,
}

/// `tessera job …`.
pub(super) async fn job(command: JobCommand) -> anyhow::Result<ExitCode> {
    match command {
        JobCommand::Submit(args) => return submit(*args).await,
        JobCommand::List {
            state,
            limit,
            before,
            connection,
        } => {
            let state = state
                .map(|s| s.parse::<JobState>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let page = connection
                .client()?
                .jobs(state, before.as_deref(), Some(limit))
                .await?;
            if connection.json {
                display::json(&page)?;
            } else {
                display::jobs(&page.jobs);
                if let Some(next) = page.next {
                    println!("(more: --before {next})");
                }
            }
        }
        JobCommand::Show { id, connection } => {
            let job = connection.client()?.job(&id).await?;
            if connection.json {
                display::json(&job)?;
            } else {
                display::job(&job);
            }
        }
        JobCommand::Tasks {
            id,
            state,
            limit,
            after,
            connection,
        } => {
            let state = state
                .map(|s| s.parse::<TaskState>())
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let page = connection
                .client()?
                .tasks(&id, state, after.as_deref(), Some(limit))
                .await?;
            if connection.json {
                display::json(&page)?;
            } else {
                display::tasks(&page.tasks);
                if let Some(next) = page.next {
                    println!("(more: --after {next})");
                }
            }
        }
        JobCommand::Logs {
            id,
            task,
            stderr,
            attempt,
            connection,
        } => {
            let stream = if stderr {
                LogStream::Stderr
            } else {
                LogStream::Stdout
            };
            let bytes = connection
                .client()?
                .log(&id, &task, stream, attempt)
                .await?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
        JobCommand::Download {
            id,
            dir,
            zip,
            connection,
        } => {
            let client = connection.client()?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&id));
            if zip {
                let dest = dir.join(format!("{id}-outputs.zip"));
                client.download_zip(&id, &dest).await?;
                println!("{}", dest.display());
            } else {
                let files = client.download_outputs(&id, &dir).await?;
                println!("Downloaded {} files into {}", files.len(), dir.display());
            }
        }
        JobCommand::Cancel { id, connection } => {
            let job = connection.client()?.cancel(&id).await?;
            if connection.json {
                display::json(&job)?;
            } else {
                println!("Job {} is {}.", job.id, job.state);
            }
        }
        JobCommand::Reprocess { id, connection } => {
            let job = connection.client()?.reprocess(&id).await?;
            if connection.json {
                display::json(&job)?;
            } else {
                println!("Job {} is {} again.", job.id, job.state);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = args.connection.client()?;
    let mut parameters = serde_json::Map::new();
    for param in &args.params {
        let (name, value) = param
            .split_once('=')
            .with_context(|| format!("`--param {param}` is not NAME=VALUE"))?;
        parameters.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    let mut inputs = Vec::new();
    for input in &args.inputs {
        for (name, path) in input_files(input)? {
            let file = client.upload_file(&path).await?;
            inputs.push(InputRef {
                name,
                sha256: file.sha256,
            });
        }
    }
    let auto_pool = match args.auto_pool_nodes {
        Some(nodes) => Some(args.auto_pool.spec(nodes)?),
        None if args.auto_pool.change()? != Default::default() => {
            bail!("the pool flags describe an auto-pool: give --auto-pool-nodes N as well")
        }
        None => None,
    };
    let job = client
        .submit(&SubmitJob {
            app: args.app.clone(),
            version: args.version,
            parameters,
            inputs,
            max_task_retries: args.retries,
            task_timeout_secs: args.timeout,
            pool: args.pool.clone(),
            auto_pool,
        })
        .await?;
    if !(args.wait || args.download.is_some()) {
        if args.connection.json {
            display::json(&job)?;
        } else {
            println!("{}", job.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "Submitted job {} ({} version {}).",
        job.id, job.app, job.app_version
    );
    let job = watch(&client, &job.id).await?;
    if args.connection.json {
        display::json(&job)?;
    } else {
        display::job(&job);
    }
    if job.state == JobState::Completed {
        if let Some(dir) = &args.download {
            let files = client.download_outputs(&job.id, dir).await?;
            println!("Downloaded {} files into {}", files.len(), dir.display());
        }
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Follows a job to its end with a progress bar on stderr.
pub(super) async fn watch(client: &Client, id: &str) -> anyhow::Result<Job> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} tasks  {msg}",
        )
        .expect("the template is valid"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let job = client
        .wait(id, Duration::from_millis(250), |job| {
            bar.set_length(job.progress.total);
            bar.set_position(job.progress.succeeded);
            bar.set_message(progress_message(job));
        })
        .await;
    bar.finish_and_clear();
    Ok(job?)
}

fn progress_message(job: &Job) -> String {
    let p = &job.progress;
    let mut parts = vec![job.state.to_string()];
    if p.running > 0 {
        parts.push(format!("{} running", p.running));
    }
    if p.failed > 0 {
        parts.push(format!("{} failed", p.failed));
    }
    parts.join(", ")
}

/// Expands `[NAME=]PATH` into (name, path) pairs; a folder gives every file
/// in it, named by its path inside the folder.
fn input_files(spec: &str) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let (name, path) = if Path::new(spec).exists() {
        (None, PathBuf::from(spec))
    } else {
        match spec.split_once('=') {
            Some((n, p)) => (Some(n.to_owned()), PathBuf::from(p)),
            None => bail!("input `{spec}` does not exist"),
        }
    };
    if !path.exists() {
        bail!("input `{}` does not exist", path.display());
    }
    if path.is_file() {
        let name = match name {
            Some(n) => n,
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .with_context(|| format!("`{}` has no file name", path.display()))?,
        };
        return Ok(vec![(name, path)]);
    }
    let mut files = Vec::new();
    let mut stack = vec![path.clone()];
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let entry = entry?;
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(p);
            } else {
                let relative = p
                    .strip_prefix(&path)
                    .expect("walked from path")
                    .to_string_lossy()
                    .replace('\\', "/");
                let name = match &name {
                    Some(prefix) => format!("{prefix}/{relative}"),
                    None => relative,
                };
                files.push((name, p));
            }
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_expand_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("d/sub")).unwrap();
        std::fs::write(dir.path().join("d/a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("d/sub/b.txt"), "b").unwrap();
        let file = dir.path().join("d/a.txt");
        let got = input_files(file.to_str().unwrap()).unwrap();
        assert_eq!(got, vec![("a.txt".to_owned(), file.clone())]);
        let renamed = input_files(&format!("x.txt={}", file.display())).unwrap();
        assert_eq!(renamed[0].0, "x.txt");
        let folder = input_files(dir.path().join("d").to_str().unwrap()).unwrap();
        let names: Vec<_> = folder.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["a.txt", "sub/b.txt"]);
        let err = input_files("/definitely/not/here").unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
