//! Every wasmtime setting Tessera uses, in one place, each with its reason.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::{RuntimeConfig, RuntimeError};

/// How often the engine's epoch advances. Deadlines, cancellation and the
/// output-size watch are checked at this granularity; 10 ms keeps a
/// cancelled guest from running on noticeably while costing nothing
/// measurable.
pub(super) const TICK: Duration = Duration::from_millis(10);

/// The output folder's size is measured every this many ticks (100 ms).
pub(super) const OUTPUT_CHECK_TICKS: u32 = 10;

/// Builds the one engine a process uses for every component and module.
pub(super) fn build(config: &RuntimeConfig) -> Result<Engine, RuntimeError> {
    let instances = config.max_instances.max(8);
    let mut pool = PoolingAllocationConfig::new();
    pool
        // A task is one component instance; `run-program` nests a second one.
        .total_component_instances(instances)
        // A Rust `wasm32-wasip2` component instantiates a handful of core
        // modules (the program and its adapter shims).
        .total_core_instances(instances * 8)
        .total_memories(instances * 2)
        .total_tables(instances * 4)
        // The slot size bounds every task's memory; the per-task limit is
        // enforced below it by the store's resource limiter.
        .max_memory_size(config.max_memory_bytes as usize)
        .decommit_batch_size(16);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        // Reset only the pages a task dirtied (found with the PAGEMAP_SCAN
        // ioctl, Linux 6.7+), in place, up to 4 MiB: the next task finds
        // them resident and takes no page faults, and no madvise (with its
        // TLB shoot-downs on the other cores) is needed. Measured on a Rust
        // wasm32-wasip2 processor, 2 cores: 50 µs → 18 µs of CPU per task.
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(4 << 20)
            .table_keep_resident(64 << 10);
    } else {
        // Without the scan, keep-resident memsets the lowest addresses,
        // which a Rust guest barely touches (its stack grows down from
        // 1 MiB): keep the memset small (measured: 50 µs → 27 µs per task).
        pool.linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10);
    }
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        // Deadlines and cancellation: a ticker thread advances the epoch and
        // each store decides at every tick whether its guest may go on.
        .epoch_interruption(true)
        // Copy-on-write memory images and lazily initialised tables (the
        // defaults) are kept: eager initialisation was measured slower for
        // Rust components, whose function tables are large and mostly unused.
        .memory_init_cow(true)
        .table_lazy_init(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true)
        // Room for deep but legitimate recursion; runaway recursion still
        // traps well inside the worker threads' 16 MiB stacks, even when a
        // task and a program it runs are both on the stack.
        .max_wasm_stack(1 << 20);
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Advances an engine's epoch every [`TICK`] until dropped.
pub(super) struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread.
    pub(super) fn start(engine: &Engine) -> Result<Self, RuntimeError> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("tessera-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A key that changes whenever compiled artifacts stop being loadable:
/// another wasmtime version, other engine settings, another CPU feature set.
pub(super) fn compatibility_key(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
