//! `run-program`: existing WASI command programs from the application image,
//! run inside the calling task's sandbox.
//!
//! Programs may be WASI preview 1 command modules (what most toolchains still
//! produce) or preview 2 command components. Each is compiled once per node:
//! kept in memory by its path (application images are content-addressed, so
//! a path always names the same bytes) and, when a cache folder is given, on
//! disk by content digest so a restarted node does not compile again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wasmtime::component::{Component, Linker as ComponentLinker, ResourceTable};
use wasmtime::{Engine, InstancePre, Linker, Module, Store};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use super::sandbox::{Guard, Sandbox};
use super::{ComponentKind, component_kind};
use crate::digest::Digest;

/// What a WASI command program did.
#[derive(Clone, Debug)]
pub struct ProgramRun {
    /// Its exit status.
    pub status: i32,
    /// What it wrote to stdout.
    pub stdout: Vec<u8>,
    /// What it wrote to stderr.
    pub stderr: Vec<u8>,
}

enum Loaded {
    Command(CommandPre<CommandState>),
    PreviewOne(InstancePre<PreviewOneState>),
}

/// Store data for a preview 2 command.
pub(super) struct CommandState {
    wasi: WasiCtx,
    table: ResourceTable,
    guard: Guard,
}

impl WasiView for CommandState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Store data for a preview 1 command module.
pub(super) struct PreviewOneState {
    wasi: WasiP1Ctx,
    guard: Guard,
}

/// Compiles, caches and runs programs.
pub(super) struct Programs {
    engine: Engine,
    commands: ComponentLinker<CommandState>,
    modules: Linker<PreviewOneState>,
    loaded: Mutex<HashMap<PathBuf, std::sync::Arc<Loaded>>>,
    disk_cache: Option<PathBuf>,
    compat: String,
}

impl Programs {
    pub(super) fn new(
        engine: &Engine,
        disk_cache: Option<PathBuf>,
        compat: String,
    ) -> wasmtime::Result<Self> {
        let mut commands = ComponentLinker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut commands)?;
        let mut modules = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut modules, |s: &mut PreviewOneState| &mut s.wasi)?;
        Ok(Self {
            engine: engine.clone(),
            commands,
            modules,
            loaded: Mutex::new(HashMap::new()),
            disk_cache,
            compat,
        })
    }

    /// Runs the program at `path` (absolute under `/app`, or relative to it)
    /// in `sandbox` (whose deadline stops the whole attempt, this program
    /// with it).
    pub(super) fn run(
        &self,
        sandbox: &Sandbox,
        path: &str,
        args: Vec<String>,
    ) -> Result<ProgramRun, String> {
        let relative = path.strip_prefix("/app/").unwrap_or(path);
        let relative = crate::package::check_relative_path(relative)
            .map_err(|e| format!("`{path}` is not a path inside /app: {e}"))?;
        let host = sandbox.app.join(&relative);
        let program = self
            .load(&host)
            .map_err(|e| format!("cannot load `{path}`: {e}"))?;

        let capacity = sandbox.limits.log_bytes as usize;
        let stdout = MemoryOutputPipe::new(capacity);
        let stderr = MemoryOutputPipe::new(capacity);
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(format!("/app/{relative}"));
        argv.extend(args);
        let builder = sandbox
            .wasi(&argv, &stdout, &stderr)
            .map_err(|e| format!("cannot prepare the sandbox: {e:#}"))?;
        let guard = Guard::new(sandbox.limits);

        let (result, guard) = match &*program {
            Loaded::Command(pre) => run_command(pre, builder, guard),
            Loaded::PreviewOne(pre) => run_preview_one(pre, builder, guard),
        };
        let stdout = stdout.contents().to_vec();
        let stderr = stderr.contents().to_vec();
        match result {
            Ok(status) => Ok(ProgramRun {
                status,
                stdout,
                stderr,
            }),
            Err(e) => {
                let failure = guard.classify(&e, stdout.len() >= capacity, &stderr);
                Err(format!("`{path}` failed: {}", failure.message))
            }
        }
    }

    fn load(&self, host: &Path) -> Result<std::sync::Arc<Loaded>, String> {
        if let Some(p) = self
            .loaded
            .lock()
            .expect("program cache poisoned")
            .get(host)
        {
            return Ok(p.clone());
        }
        let bytes = std::fs::read(host).map_err(|e| format!("{e}"))?;
        let kind = component_kind(&bytes).ok_or("it is not a WebAssembly program")?;
        let cached = self.disk_cache.as_ref().map(|dir| {
            dir.join(&self.compat)
                .join(format!("{}.cwasm", Digest::of(&bytes)))
        });
        let loaded = match kind {
            ComponentKind::Component => {
                let component = self.compile_component(&bytes, cached.as_deref())?;
                let pre = self
                    .commands
                    .instantiate_pre(&component)
                    .and_then(CommandPre::new)
                    .map_err(|e| format!("it is not a WASI command: {e:#}"))?;
                Loaded::Command(pre)
            }
            ComponentKind::Module => {
                let module = self.compile_module(&bytes, cached.as_deref())?;
                let pre = self
                    .modules
                    .instantiate_pre(&module)
                    .map_err(|e| format!("it is not a WASI preview 1 command: {e:#}"))?;
                Loaded::PreviewOne(pre)
            }
        };
        let loaded = std::sync::Arc::new(loaded);
        self.loaded
            .lock()
            .expect("program cache poisoned")
            .insert(host.to_path_buf(), loaded.clone());
        Ok(loaded)
    }

    fn compile_component(&self, bytes: &[u8], cached: Option<&Path>) -> Result<Component, String> {
        if let Some(path) = cached.filter(|p| p.exists()) {
            // SAFETY: the cache folder is private to this node and holds only
            // artifacts this engine serialised; the key includes the engine's
            // compatibility hash.
            if let Ok(c) = unsafe { Component::deserialize_file(&self.engine, path) } {
                return Ok(c);
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let (Some(path), Ok(serialized)) = (cached, component.serialize()) {
            write_cache(path, &serialized);
        }
        Ok(component)
    }

    fn compile_module(&self, bytes: &[u8], cached: Option<&Path>) -> Result<Module, String> {
        if let Some(path) = cached.filter(|p| p.exists()) {
            // SAFETY: as in `compile_component`.
            if let Ok(m) = unsafe { Module::deserialize_file(&self.engine, path) } {
                return Ok(m);
            }
        }
        let module = Module::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        if let (Some(path), Ok(serialized)) = (cached, module.serialize()) {
            write_cache(path, &serialized);
        }
        Ok(module)
    }
}

/// Writes a cache file atomically; a failure only costs a later recompile.
fn write_cache(path: &Path, bytes: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| tempfile::NamedTempFile::new_in(dir))
        .and_then(|mut tmp| {
            std::io::Write::write_all(&mut tmp, bytes)?;
            tmp.persist(path).map_err(|e| e.error)
        });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache a compiled program");
    }
}

fn run_command(
    pre: &CommandPre<CommandState>,
    mut builder: wasmtime_wasi::WasiCtxBuilder,
    guard: Guard,
) -> (wasmtime::Result<i32>, Guard) {
    let state = CommandState {
        wasi: builder.build(),
        table: ResourceTable::new(),
        guard,
    };
    let mut store = Store::new(pre.engine(), state);
    Guard::install(&mut store, |s| &mut s.guard);
    let result = pre
        .instantiate(&mut store)
        .and_then(|cmd| cmd.wasi_cli_run().call_run(&mut store))
        .map(|r| if r.is_ok() { 0 } else { 1 });
    let result = exit_status(result);
    (result, store.into_data().guard)
}

fn run_preview_one(
    pre: &InstancePre<PreviewOneState>,
    mut builder: wasmtime_wasi::WasiCtxBuilder,
    guard: Guard,
) -> (wasmtime::Result<i32>, Guard) {
    let state = PreviewOneState {
        wasi: builder.build_p1(),
        guard,
    };
    let mut store = Store::new(pre.module().engine(), state);
    Guard::install(&mut store, |s| &mut s.guard);
    let result = pre
        .instantiate(&mut store)
        .and_then(|instance| instance.get_typed_func::<(), ()>(&mut store, "_start"))
        .and_then(|start| start.call(&mut store, ()))
        .map(|()| 0);
    let result = exit_status(result);
    (result, store.into_data().guard)
}

/// A program that called `exit(n)` ended normally with status `n`.
fn exit_status(result: wasmtime::Result<i32>) -> wasmtime::Result<i32> {
    match result {
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(e),
        },
        ok => ok,
    }
}
