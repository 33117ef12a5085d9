//! One attempt's store: its WASI context (the task sandbox), its limits, and
//! how a failed call is turned into a [`Failure`].
//!
//! The store enforces the memory limit itself. Wall-clock limits,
//! cancellation and the output size are not checked inside the guest (that
//! check, at every loop back-edge, cost up to 80% on tight loops): the
//! process running the guest is stopped from outside instead, and
//! [`interrupted`] says why in the attempt's failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use bytes::Bytes;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::program::Programs;
use crate::model::{Failure, FailureKind};
use crate::protocol::TaskLimits;

/// Longest guest-supplied message kept in a failure.
const MAX_MESSAGE: usize = 4096;

/// The folders and environment of one attempt's sandbox.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// Host folder mounted read-only at `/app`.
    pub app: PathBuf,
    /// Host folder mounted read-only at `/inputs`.
    pub inputs: PathBuf,
    /// Host folder mounted read-write at `/output` (the splitter has none).
    pub output: Option<PathBuf>,
    /// The node's shared folder, mounted at `/shared`: written by the
    /// pool's start task, read by tasks.
    pub shared: Option<Shared>,
    /// Environment variables (`TESSERA_*` and the task's own).
    pub env: Vec<(String, String)>,
    /// Limits.
    pub limits: TaskLimits,
    /// Where the guest's stdout and stderr go.
    pub logs: Logs,
    /// The guest's last reported progress (an `f32`'s bits).
    pub progress: Arc<AtomicU32>,
}

impl Sandbox {
    /// Builds a WASI context for this sandbox with the given stdio and args.
    pub(super) fn wasi(
        &self,
        args: &[String],
        stdout: &MemoryOutputPipe,
        stderr: &MemoryOutputPipe,
    ) -> wasmtime::Result<WasiCtxBuilder> {
        let mut builder = WasiCtx::builder();
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(args)
            .envs(&self.env)
            // Guests run on dedicated worker threads, never on the async
            // reactor, so blocking file I/O in place is the fast path.
            .allow_blocking_current_thread(true)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .preopened_dir(&self.app, "/app", FsPerms::ReadOnly)?
            .preopened_dir(&self.inputs, "/inputs", FsPerms::ReadOnly)?;
        if let Some(output) = &self.output {
            builder.preopened_dir(output, "/output", FsPerms::ReadWrite)?;
        }
        if let Some(shared) = &self.shared {
            let perms = if shared.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            builder.preopened_dir(&shared.path, "/shared", perms)?;
        }
        Ok(builder)
    }
}

/// A node's shared folder as a sandbox sees it.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The host folder.
    pub path: PathBuf,
    /// Whether the guest may write to it (only the start task may).
    pub writable: bool,
}

/// An attempt's captured stdout and stderr, each bounded by the log limit.
/// Clones share the buffers, so whoever stops an attempt from outside can
/// still read what it wrote.
#[derive(Clone, Debug)]
pub struct Logs {
    pub(super) stdout: MemoryOutputPipe,
    pub(super) stderr: MemoryOutputPipe,
}

impl Logs {
    /// Empty buffers holding at most `limit` bytes each.
    pub fn new(limit: u64) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Self {
            stdout: MemoryOutputPipe::new(limit),
            stderr: MemoryOutputPipe::new(limit),
        }
    }

    /// What the guest wrote to stdout so far (a copy).
    pub fn stdout(&self) -> Bytes {
        self.stdout.contents()
    }

    /// What the guest wrote to stderr so far, with its log lines (a copy).
    pub fn stderr(&self) -> Bytes {
        self.stderr.contents()
    }
}

/// Why an attempt was stopped from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// Someone cancelled it.
    Cancelled,
    /// It ran past its wall-clock limit.
    Timeout,
    /// Its `/output` grew past its limit.
    OutputLimit,
}

/// The failure of an attempt stopped from outside for `why`.
pub fn interrupted(why: Interrupt, limits: &TaskLimits) -> Failure {
    match why {
        Interrupt::Cancelled => Failure::new(FailureKind::Cancelled, "the attempt was cancelled"),
        Interrupt::Timeout => Failure::new(
            FailureKind::Timeout,
            format!(
                "the attempt ran past its wall-clock limit of {}",
                human_duration(limits.timeout_ms)
            ),
        ),
        Interrupt::OutputLimit => Failure::new(
            FailureKind::OutputLimit,
            format!(
                "/output grew past its limit of {}",
                human_bytes(limits.output_bytes)
            ),
        ),
    }
}

/// Enforces an attempt's memory limit from inside its store, and remembers
/// what it saw.
pub(super) struct Guard {
    limits: TaskLimits,
    pub(super) memory_exceeded: bool,
    pub(super) peak_memory: u64,
}

impl Guard {
    pub(super) fn new(limits: TaskLimits) -> Self {
        Self {
            limits,
            memory_exceeded: false,
            peak_memory: 0,
        }
    }

    /// Installs this guard's limiter on a store, and lets one call hand the
    /// host as much data as the guest's memory may hold (wasmtime's default
    /// of 128 MiB is less than a plan of a million tasks).
    pub(super) fn install<T: Send + 'static>(store: &mut Store<T>, get: fn(&mut T) -> &mut Guard) {
        let memory = get(store.data_mut()).limits.memory_bytes;
        store.set_hostcall_fuel(usize::try_from(memory.max(128 << 20)).unwrap_or(usize::MAX));
        store.limiter(move |t| get(t) as &mut dyn ResourceLimiter);
    }

    /// Turns an error from a guest call into a failure.
    pub(super) fn classify(
        &self,
        error: &wasmtime::Error,
        stdout_full: bool,
        stderr: &[u8],
    ) -> Failure {
        let limits = &self.limits;
        if self.memory_exceeded {
            return Failure::new(
                FailureKind::MemoryLimit,
                format!(
                    "the guest needed more than its memory limit of {}",
                    human_bytes(limits.memory_bytes)
                ),
            );
        }
        if let Some(failure) = self.log_limit(stdout_full, stderr) {
            return failure;
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::UnreachableCodeReached) => match panic_message(stderr) {
                Some(panic) => {
                    Failure::new(FailureKind::Trap, format!("the guest panicked: {panic}"))
                }
                None => Failure::new(
                    FailureKind::Trap,
                    "the guest trapped: wasm `unreachable` instruction executed (it aborted; see stderr.txt)",
                ),
            },
            Some(trap) => Failure::new(FailureKind::Trap, format!("the guest trapped: {trap}")),
            None => Failure::new(FailureKind::Trap, truncate(&format!("{error:#}"))),
        }
    }

    /// The failure of a guest whose stdout or stderr reached its limit: its
    /// writes were refused, so whatever it did next (trap, or return an
    /// error) is a consequence of the limit.
    pub(super) fn log_limit(&self, stdout_full: bool, stderr: &[u8]) -> Option<Failure> {
        let stream = if stdout_full {
            "stdout"
        } else if stderr.len() as u64 >= self.limits.log_bytes {
            "stderr"
        } else {
            return None;
        };
        Some(Failure::new(
            FailureKind::OutputLimit,
            format!(
                "{stream} passed its limit of {}",
                human_bytes(self.limits.log_bytes)
            ),
        ))
    }
}

impl ResourceLimiter for Guard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        self.peak_memory = self.peak_memory.max(desired as u64);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond
        // any real program and still a bounded amount of host memory.
        Ok(desired <= 1_000_000)
    }
}

/// The data of a store running a splitter or processor.
pub(super) struct TaskState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) guard: Guard,
    pub(super) sandbox: Sandbox,
    pub(super) programs: Arc<Programs>,
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The total size of the regular files under `dir`.
pub fn folder_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map_or(0, |m| m.len()),
                _ => {}
            }
        }
    }
    total
}

/// The message of the last Rust panic printed to `stderr`, if any.
fn panic_message(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let at = text.rfind("panicked at ")?;
    let rest = &text[at + "panicked at ".len()..];
    let (location, message) = rest.split_once(":\n").unwrap_or((rest, ""));
    let message = message.split("\nnote:").next().unwrap_or("").trim();
    Some(truncate(&format!("{message} (at {location})")))
}

/// Shortens a guest-supplied message to a bounded length.
pub(super) fn truncate(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// `1.5 MiB`-style sizes for messages.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `2.5 s`-style durations for messages.
pub(crate) fn human_duration(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_extracted_from_stderr() {
        let stderr = b"hello\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nrequested trap\nnote: run with `RUST_BACKTRACE=1`\n";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "requested trap (at src/lib.rs:10:5)"
        );
        assert!(panic_message(b"no panic here").is_none());
    }

    #[test]
    fn sizes_and_durations_read_well() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
        assert_eq!(human_duration(2000), "2 s");
        assert_eq!(human_duration(1500), "1.5 s");
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(MAX_MESSAGE);
        let short = truncate(&long);
        assert!(short.len() < long.len());
        assert!(short.ends_with(&format!("({} bytes in all)", long.len())));
    }

    #[test]
    fn folder_size_counts_nested_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("x"), [0u8; 10]).unwrap();
        std::fs::write(dir.path().join("a/b/y"), [0u8; 32]).unwrap();
        assert_eq!(folder_size(dir.path()), 42);
    }
}
