//! The service: state, files, runtime, scheduler and the embedded pool,
//! opened together on one data folder.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::blobs::{BlobStore, Storage};
use crate::error::Error;
use crate::model::LOCAL_POOL;
use crate::node::{self, NodeConfig, NodeHandle, WorkerCommand};
use crate::package::ArchiveLimits;
use crate::pools::manager::{ManagerConfig, PoolManager};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::Store;

pub use crate::store::Database;

/// Settings of a service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Where state, files and the embedded node's cache live.
    pub data_dir: PathBuf,
    /// Where state is kept instead of `<data_dir>/state.db` (a SQLite file
    /// or a PostgreSQL database, which several replicas may share).
    pub database: Option<Database>,
    /// Where files are kept instead of `<data_dir>/files` (a local folder,
    /// an Azure Blob container or an S3 bucket).
    pub storage: Option<Storage>,
    /// Task slots of the embedded local pool's node (0: no embedded node).
    pub embedded_slots: usize,
    /// How often the embedded node heartbeats.
    pub heartbeat_interval: Duration,
    /// Largest file upload, in bytes.
    pub max_upload_bytes: u64,
    /// How long a request body may stall (no bytes arriving) before the
    /// request is refused, so that slow or stuck clients cannot hold
    /// uploads open.
    pub body_idle_timeout: Duration,
    /// Limits on published zips.
    pub archive_limits: ArchiveLimits,
    /// Scheduler settings.
    pub scheduler: SchedulerConfig,
    /// Runtime settings.
    pub runtime: RuntimeConfig,
    /// How the embedded node starts its slots' worker processes (default:
    /// this executable, which must call `node::run_if_worker` first thing);
    /// node providers start agents with the same executable.
    pub worker: WorkerCommand,
    /// The URL node agents started by providers reach the service at.
    pub public_url: Option<String>,
    /// How often the pool manager looks at pools with a formula or a
    /// provider.
    pub manager_tick: Duration,
    /// How often a pool's task counts are sampled for its formula.
    pub autoscale_sample_period: Duration,
}

impl ServiceConfig {
    /// Defaults for a data folder: an embedded node with one slot per core.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            data_dir: data_dir.into(),
            database: None,
            storage: None,
            embedded_slots: slots,
            heartbeat_interval: Duration::from_secs(1),
            max_upload_bytes: 16 << 30,
            body_idle_timeout: Duration::from_secs(60),
            archive_limits: ArchiveLimits::default(),
            scheduler: SchedulerConfig::default(),
            runtime: RuntimeConfig {
                max_instances: (slots as u32 * 4).max(64),
                ..RuntimeConfig::default()
            },
            worker: WorkerCommand::current_exe().unwrap_or_else(|_| WorkerCommand {
                program: "tessera".into(),
            }),
            public_url: None,
            manager_tick: Duration::from_secs(1),
            autoscale_sample_period: Duration::from_secs(10),
        }
    }
}

/// A running Tessera service; cheap to clone. Its methods are the
/// operations of the portal API (see the `registry` and `jobs` modules).
#[derive(Clone)]
pub struct Service {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) blobs: BlobStore,
    pub(crate) runtime: Runtime,
    pub(crate) scheduler: Scheduler,
    pub(crate) manager: PoolManager,
    pub(crate) config: ServiceConfig,
    background: Mutex<Background>,
}

/// What the service runs in the background, stopped by
/// [`Service::shutdown`].
#[derive(Default)]
struct Background {
    node: Option<NodeHandle>,
    expiry: Option<tokio::task::JoinHandle<()>>,
    wakeups: Vec<tokio::task::JoinHandle<()>>,
    manager: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Opens the service on its data folder (creating what is missing),
    /// then starts its background work (node expiry, the embedded node),
    /// which resumes unfinished jobs.
    pub async fn open(config: ServiceConfig) -> Result<Self, Error> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)?;
        let database = config
            .database
            .clone()
            .unwrap_or_else(|| Database::Sqlite(dir.join("state.db")));
        let store = Store::open(&database).await?;
        let storage = config
            .storage
            .clone()
            .unwrap_or_else(|| Storage::Local(dir.join("files")));
        let blobs = BlobStore::open(&storage, &dir.join("uploads")).await?;
        let runtime_config = RuntimeConfig {
            program_cache: Some(dir.join("node").join("programs")),
            ..config.runtime.clone()
        };
        let runtime = Runtime::new(&runtime_config)?;
        let scheduler =
            Scheduler::new(store.clone(), blobs.clone(), config.scheduler.clone()).await?;
        let manager = PoolManager::new(
            store.clone(),
            scheduler.clone(),
            ManagerConfig {
                tick: config.manager_tick,
                sample_period: config.autoscale_sample_period,
                history: Duration::from_secs(3600).max(config.autoscale_sample_period * 10),
                provider_dir: dir.join("providers"),
                program: config.worker.program.clone(),
                url: config.public_url.clone(),
            },
        );
        let service = Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                runtime,
                scheduler,
                manager,
                config,
                background: Mutex::new(Background::default()),
            }),
        };
        service.ensure_admin().await?;
        // Nothing below can fail half-way: background work starts last.
        let node = service.start_embedded_node()?;
        let mut background = service.background();
        background.expiry = Some(service.inner.scheduler.spawn_expiry());
        background.wakeups = service.inner.scheduler.spawn_wakeups();
        background.manager = Some(service.inner.manager.spawn());
        background.node = node;
        drop(background);
        Ok(service)
    }

    fn background(&self) -> std::sync::MutexGuard<'_, Background> {
        // Only handles live here; a panic cannot leave them inconsistent.
        self.inner
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the node of the local pool, if the service has one.
    fn start_embedded_node(&self) -> Result<Option<NodeHandle>, Error> {
        let config = &self.inner.config;
        if config.embedded_slots == 0 {
            return Ok(None);
        }
        let hostname = hostname();
        let node = node::start(
            Arc::new(self.inner.scheduler.clone()),
            self.inner.runtime.clone(),
            NodeConfig {
                pool: LOCAL_POOL.into(),
                slots: config.embedded_slots,
                memory_bytes: config.scheduler.task_memory_bytes * config.embedded_slots as u64,
                work_dir: config.data_dir.join("node"),
                remove_work_dir: false,
                heartbeat_interval: config.heartbeat_interval,
                hostname,
                address: "in-process".into(),
                agent: None,
                archive_limits: config.archive_limits.clone(),
                cache_bytes: node::DEFAULT_CACHE_BYTES,
                worker: config.worker.clone(),
                give_up_after: None,
            },
        )?;
        Ok(Some(node))
    }

    /// The file holding the admin account's credentials (written on the
    /// first start, mode 0600).
    pub fn admin_credentials_path(&self) -> PathBuf {
        crate::accounts::admin_credentials_path(&self.inner.config.data_dir)
    }

    /// The content-addressed file store (for streaming uploads and downloads).
    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    /// The scheduler, which is also the coordinator nodes talk to.
    pub fn scheduler(&self) -> &Scheduler {
        &self.inner.scheduler
    }

    /// The process's wasm runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The settings the service runs with.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// Stops the node agents the `local` provider started on this machine,
    /// waiting up to `limit` for them to give their tasks back and leave
    /// (call it while the API still serves them).
    pub async fn stop_local_agents(&self, limit: Duration) -> Result<(), Error> {
        if let Some(manager) = self.background().manager.take() {
            manager.abort();
        }
        self.inner.manager.stop_local_agents(limit).await
    }

    /// Stops the embedded node (committing finished work and releasing the
    /// rest) and closes the database.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let (node, expiry, manager, wakeups) = {
            let mut background = self.background();
            (
                background.node.take(),
                background.expiry.take(),
                background.manager.take(),
                std::mem::take(&mut background.wakeups),
            )
        };
        if let Some(manager) = manager {
            manager.abort();
        }
        if let Some(node) = node {
            node.stop().await?;
        }
        if let Some(expiry) = expiry {
            expiry.abort();
        }
        wakeups.iter().for_each(tokio::task::JoinHandle::abort);
        self.inner.manager.resign().await;
        self.inner.store.close().await;
        Ok(())
    }
}

/// This machine's host name, for node ids.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}
