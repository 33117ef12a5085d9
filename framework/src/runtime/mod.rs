//! The WebAssembly runtime: the only module that names wasmtime types.
//!
//! One [`Runtime`] per process owns one wasmtime `Engine` (pooling
//! allocator, no epoch checks; every setting in `engine.rs`), the linker
//! that offers WASI preview 2 and the `tessera:app/host` imports, and a
//! bounded cache of instantiation-ready components keyed by digest.
//! Components are compiled once, at publish time ([`Runtime::compile`] also
//! checks they implement the right world), and slot workers load the
//! serialised artifact ([`Runtime::load_file`]).
//!
//! Each attempt gets a fresh store built for its [`Sandbox`]: `/app` and
//! `/inputs` read-only, `/output` writable, its environment, no network, a
//! memory limit, and bounded stdout/stderr. Calls are synchronous: the
//! caller (a slot worker's thread) blocks until the guest returns or traps,
//! and gets an [`AttemptRun`] with a typed [`Failure`] if it failed. Nothing
//! here stops a running guest: a slot's worker process is stopped from
//! outside at its deadline or on cancellation ([`interrupted`] names the
//! failure).

mod bindings;
mod engine;
mod program;
mod sandbox;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::OutputStream;

pub use program::ProgramRun;
pub(crate) use sandbox::human_bytes;
pub use sandbox::{Interrupt, Logs, Sandbox, Shared, folder_size, interrupted};

use bindings::processor_world::ProcessorPre;
use bindings::splitter_world::SplitterPre;
use bindings::{host, types};
use program::Programs;
use sandbox::{Guard, TaskState, truncate};

use crate::digest::Digest;
use crate::model::{Failure, FailureKind};
use crate::protocol::{SplitPlan, TaskSpec};

/// Which of an assembly's two components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The job splitter (world `tessera:app/splitter`).
    Splitter,
    /// The task processor (world `tessera:app/processor`).
    Processor,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Splitter => "splitter",
            Self::Processor => "processor",
        })
    }
}

/// Why a component cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Not WebAssembly at all.
    #[error("the {role} is not WebAssembly (it does not start with the `\\0asm` magic number)")]
    NotWasm {
        /// Which component.
        role: Role,
    },
    /// A core module where a component is expected.
    #[error(
        "the {role} is a core WebAssembly module, not a component: build it for the \
         `wasm32-wasip2` target with tessera-{role}-sdk"
    )]
    CoreModule {
        /// Which component.
        role: Role,
    },
    /// The component does not compile.
    #[error("the {role} does not compile: {message}")]
    Compile {
        /// Which component.
        role: Role,
        /// The compiler's reason.
        message: String,
    },
    /// The component does not implement its world.
    #[error("the {role} does not implement the `tessera:app/{role}` world: {message}")]
    WrongWorld {
        /// Which component.
        role: Role,
        /// What is missing or mismatched.
        message: String,
    },
    /// A stored precompiled artifact cannot be loaded.
    #[error("the precompiled {role} cannot be loaded: {message}")]
    Load {
        /// Which component.
        role: Role,
        /// Why.
        message: String,
    },
    /// The engine could not be set up.
    #[error("the WebAssembly engine cannot start: {0}")]
    Engine(String),
}

impl RuntimeError {
    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotWasm { .. } => "not_wasm",
            Self::CoreModule { .. } => "not_a_component",
            Self::Compile { .. } => "invalid_component",
            Self::WrongWorld { .. } => "wrong_world",
            Self::Load { .. } => "artifact_unloadable",
            Self::Engine(_) => "engine_error",
        }
    }

    /// Whether the error is about a component the user supplied.
    pub fn is_invalid_component(&self) -> bool {
        matches!(
            self,
            Self::NotWasm { .. }
                | Self::CoreModule { .. }
                | Self::Compile { .. }
                | Self::WrongWorld { .. }
        )
    }
}

/// Settings of the runtime.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The largest linear memory any attempt may be given, in bytes.
    pub max_memory_bytes: u64,
    /// How many component instances may exist at once: at least twice the
    /// task slots (a task and a program it runs).
    pub max_instances: u32,
    /// Where compiled `run-program` programs are cached; memory only if `None`.
    pub program_cache: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 4 << 30,
            max_instances: 256,
            program_cache: None,
        }
    }
}

/// A file a guest can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFile {
    /// Path relative to `/inputs` (or to the task's folder in `/inputs`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// The job record given to the splitter and the merge step.
#[derive(Clone, Debug)]
pub struct GuestJob {
    /// Job id.
    pub id: String,
    /// Application name.
    pub app: String,
    /// Application version.
    pub app_version: u32,
    /// Parameters (JSON object).
    pub parameters: String,
    /// Every job input.
    pub inputs: Vec<GuestFile>,
}

/// The task record given to `process`.
#[derive(Clone, Debug)]
pub struct GuestTask {
    /// Job id.
    pub job_id: String,
    /// Task name.
    pub name: String,
    /// Attempt number.
    pub attempt: u32,
    /// The job's parameters (JSON object).
    pub job_parameters: String,
    /// The task's parameters (JSON object).
    pub parameters: String,
    /// Files under `/inputs`.
    pub inputs: Vec<GuestFile>,
}

/// A finished task given to `merge`.
#[derive(Clone, Debug)]
pub struct GuestTaskResult {
    /// Task name.
    pub name: String,
    /// Its parameters (JSON object).
    pub parameters: String,
    /// Its outputs, relative to `/inputs/<name>/`.
    pub outputs: Vec<GuestFile>,
}

/// What one attempt produced.
#[derive(Debug)]
pub struct AttemptRun<T> {
    /// The guest's result, or why the attempt failed.
    pub result: Result<T, Failure>,
    /// Captured stdout.
    pub stdout: Bytes,
    /// Captured stderr (with the guest's log lines).
    pub stderr: Bytes,
    /// The largest linear memory the guest grew to.
    pub peak_memory: u64,
}

impl<T> AttemptRun<T> {
    /// An attempt that failed before the guest could run or say anything.
    pub fn failed(failure: Failure) -> Self {
        Self {
            result: Err(failure),
            stdout: Bytes::new(),
            stderr: Bytes::new(),
            peak_memory: 0,
        }
    }

    /// The same run with its result's value changed by `f`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> AttemptRun<U> {
        AttemptRun {
            result: self.result.map(f),
            stdout: self.stdout,
            stderr: self.stderr,
            peak_memory: self.peak_memory,
        }
    }
}

/// The wasm runtime of a process; cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    config: RuntimeConfig,
    engine: Engine,
    linker: Linker<TaskState>,
    splitters: RwLock<HashMap<Digest, SplitterPre<TaskState>>>,
    processors: RwLock<HashMap<Digest, ProcessorPre<TaskState>>>,
    programs: Arc<Programs>,
    compat: String,
}

/// Components kept loaded at most, per role; past it the cache starts over
/// (loading again from the artifact file is a memory map, milliseconds).
const LOADED_COMPONENTS: usize = 64;

/// Whether bytes are a core module or a component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ComponentKind {
    Module,
    Component,
}

/// Reads the WebAssembly header: magic number, then version and layer.
fn component_kind(bytes: &[u8]) -> Option<ComponentKind> {
    match bytes.get(..8)? {
        [0, b'a', b's', b'm', 1, 0, 0, 0] => Some(ComponentKind::Module),
        [0, b'a', b's', b'm', _, _, 1, 0] => Some(ComponentKind::Component),
        _ => None,
    }
}

impl Runtime {
    /// Starts the engine.
    pub fn new(config: &RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = engine::build(config)?;
        let compat = engine::compatibility_key(&engine);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .and_then(|()| host::add_to_linker::<TaskState, HasSelf<TaskState>>(&mut linker, |s| s))
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let programs = Programs::new(&engine, config.program_cache.clone(), compat.clone())
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                engine,
                linker,
                splitters: RwLock::new(HashMap::new()),
                processors: RwLock::new(HashMap::new()),
                programs: Arc::new(programs),
                compat,
            }),
        })
    }

    /// The settings the runtime was made with.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The key a component's precompiled artifact is stored under; it names
    /// this engine so that an incompatible node compiles for itself.
    pub fn artifact_key(&self, role: Role, digest: &Digest) -> String {
        format!("{}/{role}/{digest}.cwasm", self.inner.compat)
    }

    /// Compiles a component, checks it implements `role`'s world, and
    /// returns its serialised artifact.
    pub fn compile(&self, role: Role, wasm: &[u8]) -> Result<Vec<u8>, RuntimeError> {
        match component_kind(wasm) {
            None => return Err(RuntimeError::NotWasm { role }),
            Some(ComponentKind::Module) => return Err(RuntimeError::CoreModule { role }),
            Some(ComponentKind::Component) => {}
        }
        let component =
            Component::new(&self.inner.engine, wasm).map_err(|e| RuntimeError::Compile {
                role,
                message: format!("{e:#}"),
            })?;
        self.check_world(role, &component)
            .map_err(|message| RuntimeError::WrongWorld { role, message })?;
        component.serialize().map_err(|e| RuntimeError::Compile {
            role,
            message: format!("{e:#}"),
        })
    }

    /// Loads an artifact file made by [`Runtime::compile`] (by this process
    /// or another with the same [`Runtime::artifact_key`]) and keeps it
    /// ready to instantiate.
    pub fn load_file(
        &self,
        role: Role,
        digest: &Digest,
        artifact: &Path,
    ) -> Result<(), RuntimeError> {
        // SAFETY: artifact files come only from Tessera's own compile: the
        // service's (at publish) or this node's, kept in the node's private
        // cache under a key that includes the engine's compatibility hash;
        // nodes never accept compiled code from another node, and wasmtime
        // checks the header before loading.
        let component = unsafe { Component::deserialize_file(&self.inner.engine, artifact) }
            .map_err(|e| RuntimeError::Load {
                role,
                message: format!("{e:#}"),
            })?;
        self.keep(role, digest, &component)
            .map_err(|message| RuntimeError::Load { role, message })
    }

    /// Whether a component is loaded.
    pub fn is_loaded(&self, role: Role, digest: &Digest) -> bool {
        match role {
            Role::Splitter => read(&self.inner.splitters).contains_key(digest),
            Role::Processor => read(&self.inner.processors).contains_key(digest),
        }
    }

    fn instance_pre(
        &self,
        component: &Component,
    ) -> Result<wasmtime::component::InstancePre<TaskState>, String> {
        self.inner
            .linker
            .instantiate_pre(component)
            .map_err(|e| format!("{e:#}"))
    }

    /// Checks that a component implements `role`'s world.
    fn check_world(&self, role: Role, component: &Component) -> Result<(), String> {
        let pre = self.instance_pre(component)?;
        match role {
            Role::Splitter => SplitterPre::new(pre).map(drop),
            Role::Processor => ProcessorPre::new(pre).map(drop),
        }
        .map_err(|e| format!("{e:#}"))
    }

    /// Keeps a component ready to instantiate.
    fn keep(&self, role: Role, digest: &Digest, component: &Component) -> Result<(), String> {
        let pre = self.instance_pre(component)?;
        match role {
            Role::Splitter => {
                let pre = SplitterPre::new(pre).map_err(|e| format!("{e:#}"))?;
                insert_bounded(&self.inner.splitters, *digest, pre);
            }
            Role::Processor => {
                let pre = ProcessorPre::new(pre).map_err(|e| format!("{e:#}"))?;
                insert_bounded(&self.inner.processors, *digest, pre);
            }
        }
        Ok(())
    }

    /// Runs a splitter.
    pub fn split(
        &self,
        splitter: &Digest,
        sandbox: &Sandbox,
        job: &GuestJob,
    ) -> AttemptRun<SplitPlan> {
        let Some(pre) = read(&self.inner.splitters).get(splitter).cloned() else {
            return not_loaded(Role::Splitter, splitter);
        };
        let job = job.to_wit();
        self.run(sandbox, &["tessera-splitter".into()], move |store| {
            let guest = pre.instantiate(&mut *store)?;
            Ok(guest.call_split(&mut *store, &job)?.map(|plan| SplitPlan {
                merge: plan.merge,
                tasks: plan
                    .tasks
                    .into_iter()
                    .map(|t| TaskSpec {
                        name: t.name,
                        parameters: t.parameters,
                        inputs: t.inputs,
                        depends_on: t.depends_on,
                        env: t.env,
                    })
                    .collect(),
            }))
        })
    }

    /// Runs a processor's `process`.
    pub fn process(
        &self,
        processor: &Digest,
        sandbox: &Sandbox,
        task: &GuestTask,
    ) -> AttemptRun<()> {
        let Some(pre) = read(&self.inner.processors).get(processor).cloned() else {
            return not_loaded(Role::Processor, processor);
        };
        let task = types::Task {
            job_id: task.job_id.clone(),
            name: task.name.clone(),
            attempt: task.attempt,
            job_parameters: task.job_parameters.clone(),
            parameters: task.parameters.clone(),
            inputs: task.inputs.iter().map(GuestFile::to_wit).collect(),
        };
        self.run(sandbox, &["tessera-processor".into()], move |store| {
            let guest = pre.instantiate(&mut *store)?;
            guest.call_process(&mut *store, &task)
        })
    }

    /// Runs a processor's `merge`.
    pub fn merge(
        &self,
        processor: &Digest,
        sandbox: &Sandbox,
        job: &GuestJob,
        results: &[GuestTaskResult],
    ) -> AttemptRun<()> {
        let Some(pre) = read(&self.inner.processors).get(processor).cloned() else {
            return not_loaded(Role::Processor, processor);
        };
        let job = job.to_wit();
        let results: Vec<types::TaskResult> = results
            .iter()
            .map(|r| types::TaskResult {
                name: r.name.clone(),
                parameters: r.parameters.clone(),
                outputs: r.outputs.iter().map(GuestFile::to_wit).collect(),
            })
            .collect();
        self.run(sandbox, &["tessera-merge".into()], move |store| {
            let guest = pre.instantiate(&mut *store)?;
            guest.call_merge(&mut *store, &job, &results)
        })
    }

    /// Runs one guest call in a fresh store for `sandbox`.
    fn run<T>(
        &self,
        sandbox: &Sandbox,
        args: &[String],
        call: impl FnOnce(&mut Store<TaskState>) -> wasmtime::Result<Result<T, String>>,
    ) -> AttemptRun<T> {
        let capacity = sandbox.limits.log_bytes as usize;
        let logs = &sandbox.logs;
        let wasi = match sandbox.wasi(args, &logs.stdout, &logs.stderr) {
            Ok(mut builder) => builder.build(),
            Err(e) => {
                return AttemptRun::failed(Failure::new(
                    FailureKind::Internal,
                    format!("cannot prepare the sandbox: {e:#}"),
                ));
            }
        };
        let state = TaskState {
            wasi,
            table: ResourceTable::new(),
            guard: Guard::new(sandbox.limits),
            sandbox: sandbox.clone(),
            programs: self.inner.programs.clone(),
        };
        let mut store = Store::new(&self.inner.engine, state);
        Guard::install(&mut store, |s| &mut s.guard);
        let outcome = call(&mut store);
        let guard = store.into_data().guard;
        let stdout = logs.stdout();
        let stderr = logs.stderr();
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(message)) => Err(guard
                .log_limit(stdout.len() >= capacity, &stderr)
                .unwrap_or_else(|| Failure::new(FailureKind::GuestError, truncate(&message)))),
            Err(error) => Err(guard.classify(&error, stdout.len() >= capacity, &stderr)),
        };
        AttemptRun {
            result,
            stdout,
            stderr,
            peak_memory: guard.peak_memory,
        }
    }

    /// Runs a WASI command program from the sandbox's `/app` (a pool's
    /// start task) and says how it ended; an error says why it could not
    /// run or failed before its end.
    pub fn run_command(
        &self,
        sandbox: &Sandbox,
        path: &str,
        args: Vec<String>,
    ) -> Result<ProgramRun, String> {
        self.inner.programs.run(sandbox, path, args)
    }

    /// Measures how many trivial `process` calls per second this runtime
    /// sustains on `threads` threads (fresh store and sandbox for each, as for
    /// a real task), running `calls` in all.
    pub fn measure_process_rate(
        &self,
        processor: &Digest,
        sandbox: &Sandbox,
        threads: usize,
        calls: usize,
    ) -> Result<f64, Failure> {
        let per_thread = calls.div_ceil(threads.max(1));
        let task = GuestTask {
            job_id: "bench".into(),
            name: "t".into(),
            attempt: 1,
            job_parameters: "{}".into(),
            parameters: "{}".into(),
            inputs: Vec::new(),
        };
        let start = Instant::now();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|i| {
                    std::thread::Builder::new()
                        .name(format!("tessera-raw-{i}"))
                        .spawn_scoped(scope, || {
                            for _ in 0..per_thread {
                                self.process(processor, sandbox, &task).result?;
                            }
                            Ok::<(), Failure>(())
                        })
                        .map_err(|e| {
                            Failure::new(
                                FailureKind::Internal,
                                format!("cannot start a thread: {e}"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?;
            workers.into_iter().try_for_each(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(Failure::new(FailureKind::Internal, "a thread panicked"))
                })
            })
        })?;
        Ok((per_thread * threads.max(1)) as f64 / start.elapsed().as_secs_f64())
    }
}

impl GuestFile {
    fn to_wit(&self) -> types::FileInfo {
        types::FileInfo {
            name: self.name.clone(),
            size: self.size,
        }
    }
}

impl GuestJob {
    fn to_wit(&self) -> types::Job {
        types::Job {
            id: self.id.clone(),
            app: self.app.clone(),
            app_version: self.app_version,
            parameters: self.parameters.clone(),
            inputs: self.inputs.iter().map(GuestFile::to_wit).collect(),
        }
    }
}

fn not_loaded<T>(role: Role, digest: &Digest) -> AttemptRun<T> {
    AttemptRun::failed(Failure::new(
        FailureKind::Internal,
        format!("the {role} {digest} is not loaded on this node"),
    ))
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// Inserts into a cache map, starting it over when it is full.
fn insert_bounded<V>(lock: &RwLock<HashMap<Digest, V>>, digest: Digest, value: V) {
    let mut map = lock.write().unwrap_or_else(|e| e.into_inner());
    if map.len() >= LOADED_COMPONENTS && !map.contains_key(&digest) {
        map.clear();
    }
    map.insert(digest, value);
}

impl host::Host for TaskState {
    fn log(&mut self, level: host::LogLevel, message: String) {
        let level = match level {
            host::LogLevel::Debug => "DEBUG",
            host::LogLevel::Info => "INFO",
            host::LogLevel::Warn => "WARN",
            host::LogLevel::Error => "ERROR",
        };
        // A full stderr drops further lines; the size limit is enforced
        // when the guest itself writes.
        let line = format!("[{level}] {message}\n");
        let _ = self.sandbox.logs.stderr.write(Bytes::from(line));
    }

    fn progress(&mut self, fraction: f32) {
        let clamped = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.sandbox
            .progress
            .store(clamped.to_bits(), Ordering::Relaxed);
    }

    fn run_program(
        &mut self,
        path: String,
        args: Vec<String>,
    ) -> Result<host::ProgramOutput, String> {
        let run = self.programs.run(&self.sandbox, &path, args)?;
        Ok(host::ProgramOutput {
            status: run.status,
            stdout: run.stdout,
            stderr: run.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_modules_from_components() {
        assert_eq!(
            component_kind(b"\0asm\x01\0\0\0rest"),
            Some(ComponentKind::Module)
        );
        assert_eq!(
            component_kind(b"\0asm\x0d\0\x01\0rest"),
            Some(ComponentKind::Component)
        );
        assert_eq!(component_kind(b"PK\x03\x04zipzip"), None);
        assert_eq!(component_kind(b"\0asm"), None);
    }

    #[test]
    fn non_components_are_refused_with_a_clear_error() {
        let runtime = Runtime::new(&RuntimeConfig {
            max_instances: 8,
            ..RuntimeConfig::default()
        })
        .unwrap();
        let err = runtime
            .compile(Role::Splitter, b"not wasm at all")
            .unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::NotWasm {
                role: Role::Splitter
            }
        ));
        let module = wat_module();
        let err = runtime.compile(Role::Processor, &module).unwrap_err();
        assert!(matches!(err, RuntimeError::CoreModule { .. }), "{err}");
        assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
    }

    /// The smallest valid core module.
    fn wat_module() -> Vec<u8> {
        b"\0asm\x01\0\0\0".to_vec()
    }
}
