//! The `tessera` command.

mod bench;
mod commands;
mod demo;
mod display;
mod node;
mod pool_args;
mod scaling;
mod workloads;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tessera_framework::blobs::Storage;
use tessera_framework::service::Database;

/// The default address of `tessera serve` and of the client commands.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7878";

/// Tessera: publish batch applications as WebAssembly, split jobs into
/// tasks, run them on a pool, and collect the results.
#[derive(Parser, Debug)]
#[command(name = "tessera", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the client commands find the service.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The service's URL.
    #[arg(
        long,
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:7878",
        global = true
    )]
    url: String,
    /// The account requests are signed for.
    #[arg(long, env = "TESSERA_ACCOUNT", global = true)]
    account: Option<String>,
    /// One of the account's keys (base64).
    #[arg(long, env = "TESSERA_KEY", global = true, hide_env_values = true)]
    key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: portal API, scheduler and an embedded local pool.
    Serve(ServeArgs),
    /// Start a throw-away service, run a sample job end to end, and show the result.
    Demo(DemoArgs),
    /// Run a node agent: join a pool of a service and run its tasks here.
    Node(node::NodeArgs),
    /// Manage accounts and their keys.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Create, inspect and delete pools.
    #[command(subcommand)]
    Pool(Box<PoolCommand>),
    /// Publish and inspect applications.
    #[command(subcommand)]
    App(AppCommand),
    /// Submit, watch and manage jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Measure Tessera on this machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// Settings of a service run by this process.
#[derive(Args, Debug, Clone)]
pub struct ServiceArgs {
    /// Task slots of the embedded local pool (default: one per CPU core; 0: none).
    #[arg(long, env = "TESSERA_SLOTS")]
    slots: Option<usize>,
    /// Memory limit of one task attempt, in MiB.
    #[arg(long, env = "TESSERA_TASK_MEMORY_MIB", default_value_t = 1024)]
    task_memory_mib: u64,
    /// Seconds of silence after which a node is presumed lost and its tasks requeued.
    #[arg(long, env = "TESSERA_NODE_TIMEOUT_SECS", default_value_t = 30)]
    node_timeout_secs: u64,
    /// Where files are kept (default: the data folder's `files`): a local
    /// folder, `az://container[/prefix]` (Azure Blob Storage; credentials
    /// from AZURE_STORAGE_*), or `s3://bucket[/prefix]` (S3 or an
    /// S3-compatible endpoint; credentials from AWS_*).
    #[arg(long, env = "TESSERA_STORAGE", value_parser = parse_storage)]
    storage: Option<Storage>,
    /// Where state is kept (default: the data folder's `state.db`):
    /// `postgres://user:password@host:port/database` (PostgreSQL, which
    /// several `tessera serve` replicas may share; the database is created
    /// if missing) or a SQLite file's path.
    #[arg(long, env = "TESSERA_DATABASE_URL", value_parser = parse_database)]
    database: Option<Database>,
}

fn parse_storage(location: &str) -> Result<Storage, String> {
    Storage::parse(location).map_err(|e| e.to_string())
}

fn parse_database(location: &str) -> Result<Database, String> {
    Database::parse(location).map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Folder holding all state and files (created if missing).
    #[arg(long, env = "TESSERA_DATA_DIR", default_value = "tessera-data")]
    data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "TESSERA_LISTEN", default_value = DEFAULT_ADDR)]
    listen: SocketAddr,
    /// The URL node agents that pools' providers start reach this service
    /// at (default: http:// and the listen address).
    #[arg(long, env = "TESSERA_ADVERTISE_URL")]
    advertise_url: Option<String>,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(Args, Debug)]
struct DemoArgs {
    /// Folder for the demo's state and outputs (default: a new temporary folder, kept).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Which sample to run.
    #[arg(long, default_value = "montecarlo")]
    sample: String,
    #[command(flatten)]
    service: ServiceArgs,
}

#[derive(Subcommand, Debug)]
enum AccountCommand {
    /// Create an account (admin only) and print its two keys.
    Create {
        /// The account's name.
        name: String,
        /// Most of its tasks that may run at once.
        #[arg(long)]
        max_running_tasks: Option<u64>,
        /// Most bytes of uploaded files it may keep.
        #[arg(long)]
        max_stored_bytes: Option<u64>,
        /// Most of its jobs that may be unfinished at once.
        #[arg(long)]
        max_pending_jobs: Option<u64>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the accounts you can see (all of them for an admin).
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Print an account's two keys.
    Keys {
        /// The account's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Replace one of an account's keys; clients using the other keep working.
    Regenerate {
        /// The account's name.
        name: String,
        /// Which key to replace.
        #[arg(value_parser = ["primary", "secondary"])]
        which: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand, Debug)]
enum PoolCommand {
    /// Create a pool and print the command that joins node agents to it.
    Create {
        /// The pool's name.
        name: String,
        /// Let every account run jobs on it (admin only).
        #[arg(long)]
        shared: bool,
        /// How many nodes it should have (without an autoscale formula).
        #[arg(long, default_value_t = 0)]
        target_nodes: u32,
        #[command(flatten)]
        spec: pool_args::PoolSpecArgs,
        #[command(flatten)]
        connection: Connection,
    },
    /// Autoscale formulas.
    #[command(subcommand)]
    Autoscale(AutoscaleCommand),
    /// Set how many nodes a pool should have.
    Resize {
        /// The pool's name.
        name: String,
        /// The new target.
        #[arg(long)]
        target_nodes: u32,
        #[command(flatten)]
        connection: Connection,
    },
    /// Change some of a pool's properties.
    Update {
        /// The pool's name.
        name: String,
        #[command(flatten)]
        spec: pool_args::PoolSpecArgs,
        #[command(flatten)]
        removals: pool_args::PoolRemovals,
        #[command(flatten)]
        connection: Connection,
    },
    /// List your pools and the shared ones.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a pool's nodes and the work waiting for it.
    Show {
        /// The pool's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the token node agents join a pool with, or replace it.
    Token {
        /// The pool's name.
        name: String,
        /// Replace the token; nodes using the old one are refused at once.
        #[arg(long)]
        regenerate: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Delete one of your pools (it must have no unfinished jobs and no live nodes).
    Delete {
        /// The pool's name.
        name: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand, Debug)]
enum AutoscaleCommand {
    /// Evaluate a formula for a pool now and show every variable's value,
    /// applying nothing.
    Evaluate {
        /// The pool's name.
        name: String,
        /// The formula (or @FILE; default: the pool's own).
        #[arg(long)]
        formula: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand, Debug)]
enum AppCommand {
    /// Publish a new version of an application.
    Publish {
        /// The application's name.
        name: String,
        /// The cloud assembly zip (assembly.toml, splitter.wasm, processor.wasm).
        #[arg(long)]
        assembly: PathBuf,
        /// The application image zip, mounted read-only at /app.
        #[arg(long)]
        image: Option<PathBuf>,
        #[command(flatten)]
        connection: Connection,
    },
    /// List applications.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show an application's versions and parameters.
    Show {
        /// The application's name.
        name: String,
        /// Only this version.
        #[arg(long)]
        version: Option<u32>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand, Debug)]
enum JobCommand {
    /// Submit a job.
    Submit(Box<commands::SubmitArgs>),
    /// List jobs, newest first.
    List {
        /// Only jobs in this state.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only jobs older than this job id (for paging).
        #[arg(long)]
        before: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a job and its progress.
    Show {
        /// The job's id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List a job's tasks.
    Tasks {
        /// The job's id.
        id: String,
        /// Only tasks in this state.
        #[arg(long)]
        state: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only tasks after this cursor (the `next` of a previous page).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a task attempt's stdout (or stderr).
    Logs {
        /// The job's id.
        id: String,
        /// The task's name (`_split` and `_merge` for the two steps).
        task: String,
        /// Print stderr instead of stdout.
        #[arg(long)]
        stderr: bool,
        /// Which attempt (default: the latest finished one).
        #[arg(long)]
        attempt: Option<u32>,
        #[command(flatten)]
        connection: Connection,
    },
    /// Download a job's outputs.
    Download {
        /// The job's id.
        id: String,
        /// Where to put them (default: ./<job id>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Download one zip of everything instead of separate files.
        #[arg(long)]
        zip: bool,
        #[command(flatten)]
        connection: Connection,
    },
    /// Cancel a job.
    Cancel {
        /// The job's id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Run a finished job's failed tasks again.
    Reprocess {
        /// The job's id.
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Trivial tasks through the whole service, against raw wasmtime on the same engine.
    Throughput(bench::ThroughputArgs),
    /// Each sample's job against the same computation natively and multi-threaded.
    Compute(bench::ComputeArgs),
    /// Node agents: a CPU-bound job on one and on two, trivial tasks
    /// through agents against the embedded pool, and dispatch latency.
    Scaling(scaling::ScalingArgs),
}

/// Runs the command line; the binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Account(_) | Command::Pool(_) | Command::App(_) | Command::Job(_)
    ) {
        end_quietly_on_closed_stdout();
    }
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets a client command end quietly when its standard output is closed
/// (`tessera job list | head`), as other Unix tools do, instead of
/// panicking in `println!`. Only client commands: a service keeps ignoring
/// SIGPIPE (Rust's default). Sockets are unaffected either way, as Rust
/// sends on them with `MSG_NOSIGNAL` and sees `EPIPE` as an error.
fn end_quietly_on_closed_stdout() {
    // SAFETY: sets a signal's disposition to the default before any other
    // thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sends log lines to stderr, filtered by `TESSERA_LOG` (default `warn`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("TESSERA_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => commands::serve(args).await,
        Command::Demo(args) => demo::run(args.data_dir, &args.sample, &args.service).await,
        Command::Node(args) => node::run(args).await,
        Command::Account(cmd) => commands::account(cmd).await,
        Command::Pool(cmd) => commands::pool(*cmd).await,
        Command::App(cmd) => commands::app(cmd).await,
        Command::Job(cmd) => commands::job(cmd).await,
        Command::Bench(BenchCommand::Throughput(args)) => bench::throughput(args).await,
        Command::Bench(BenchCommand::Compute(args)) => bench::compute(args).await,
        Command::Bench(BenchCommand::Scaling(args)) => scaling::scaling(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every flag of a command and its subcommands' (clap checks this only
    /// in debug builds, and the tests run in release).
    fn duplicate_flags(cmd: &clap::Command, path: &str, found: &mut Vec<String>) {
        let mut seen = std::collections::HashSet::new();
        for arg in cmd.get_arguments() {
            let flags = arg.get_long().map(|l| format!("--{l}")).into_iter();
            let flags = flags.chain(arg.get_short().map(|c| format!("-{c}")));
            for flag in flags {
                if !seen.insert(flag.clone()) {
                    found.push(format!("{path} {flag}"));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            duplicate_flags(sub, &format!("{path} {}", sub.get_name()), found);
        }
    }

    #[test]
    fn no_command_takes_one_flag_twice() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut found = Vec::new();
        duplicate_flags(&cmd, "tessera", &mut found);
        assert!(found.is_empty(), "flags given twice: {found:?}");
    }
}
