//! Every wasmtime setting Tessera uses, in one place, each with its reason.

use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
    ProfilingStrategy,
};

/// Set (to anything) to have every engine write `/tmp/perf-<pid>.map`, so
/// that `perf report` names the guest functions of a profile.
const PERFMAP_ENV: &str = "TESSERA_WASM_PERFMAP";

use super::{RuntimeConfig, RuntimeError};

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
        // No epoch (or fuel) checks in guest code: a check at every loop
        // back-edge and function entry cost up to 80% on tight loops
        // (testshard 1.80 -> 1.11 of native without it). Deadlines and
        // cancellation stop the slot's worker process instead (see
        // `node::worker`).
        .epoch_interruption(false)
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
    if std::env::var_os(PERFMAP_ENV).is_some() {
        wasm.profiler(ProfilingStrategy::PerfMap);
    }
    Engine::new(&wasm).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// A key that changes whenever compiled artifacts stop being loadable:
/// another wasmtime version, other engine settings, another CPU feature set.
pub(super) fn compatibility_key(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
