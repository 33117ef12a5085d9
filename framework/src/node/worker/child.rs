//! The slot worker process: runs one attempt at a time for its node, with
//! no checks inside the guest, and stops itself when an attempt must stop.
//!
//! Three threads. The **reader** (the main thread) takes requests from
//! stdin: attempts to run go to the runner's queue, cancellations stop the
//! running attempt or mark a queued one. The **runner** mounts an attempt's
//! inputs, runs the guest, moves what it left in `/output` (and its logs)
//! to the node's outbox, and reports. The **watchdog** looks at the running
//! attempt every 10 ms: past its deadline, or with `/output` over its
//! limit, the attempt is stopped. Stopping an attempt means reporting it as
//! failed (with what it had logged) and ending the process at once: the
//! node starts a fresh worker, so no guest state survives, and no check
//! ever runs in guest code.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wire::{
    Event, Finished, OutboxFile, PlanOut, Produced, Request, Run, Setup, StartTask, read_frame,
    write_frame,
};
use crate::model::{Failure, FailureKind, TaskKind, now_ms};
use crate::protocol::{Assignment, AttemptKey, InputFile, SplitPlan, StartTaskReport, Usage};
use crate::runtime::{
    AttemptRun, GuestFile, GuestJob, GuestTask, GuestTaskResult, Interrupt, Logs, Role, Runtime,
    RuntimeConfig, Sandbox, Shared, folder_size, human_bytes, interrupted,
};

/// Most files one attempt may leave in `/output`.
const MAX_OUTPUT_FILES: usize = 100_000;

/// A split plan larger than this (as JSON) is handed over as a file.
const INLINE_PLAN_BYTES: usize = 1 << 20;

/// How often the watchdog looks at the running attempt.
const WATCH: Duration = Duration::from_millis(10);

/// The output folder's size is measured every this many looks (100 ms).
const OUTPUT_CHECK_EVERY: u32 = 10;

/// Progress is reported at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// While more attempts wait, finished ones are told to the node in batches
/// (one write, one wake-up of the node) of at most this many...
const EVENT_BATCH: usize = 32;

/// ...held back at most this long (or until the watchdog's next look, if
/// the next attempt runs longer).
const EVENT_DELAY: Duration = Duration::from_millis(2);

/// Runs a slot worker on this process's stdin and stdout; returns its exit
/// status.
pub(crate) fn main() -> i32 {
    // SAFETY: fd 1 is this process's stdout, open for its whole life; the
    // worker writes to it only through this file (logging goes to stderr).
    let stdout = unsafe { File::from_raw_fd(1) };
    let events = Arc::new(Events(Mutex::new(BufWriter::new(stdout))));
    let mut stdin = std::io::stdin().lock();
    let setup: Setup = match read_frame(&mut stdin) {
        Ok(Some(setup)) => setup,
        Ok(None) => return 0,
        Err(e) => {
            events.send(&Event::Broken(format!("cannot read the setup: {e}")));
            return 1;
        }
    };
    let worker = match Worker::new(setup, events.clone()) {
        Ok(w) => Arc::new(w),
        Err(message) => {
            events.send(&Event::Broken(message));
            return 1;
        }
    };
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let runner = worker.clone();
    let spawned = std::thread::Builder::new()
        .name("tessera-runner".into())
        // Room for a guest's wasm stack, a program it runs, and the host.
        .stack_size(16 << 20)
        .spawn(move || runner.run_all(&rx))
        .and_then(|_| {
            let watchdog = worker.clone();
            std::thread::Builder::new()
                .name("tessera-watchdog".into())
                .spawn(move || watchdog.watch())
        });
    if let Err(e) = spawned {
        events.send(&Event::Broken(format!("cannot start a thread: {e}")));
        return 1;
    }
    events.send(&Event::Ready);
    loop {
        match read_frame::<Request>(&mut stdin) {
            Ok(Some(Request::Run(run))) => {
                if tx.send(Job::Attempt(run)).is_err() {
                    return 1;
                }
            }
            Ok(Some(Request::StartTask(task))) => {
                if tx.send(Job::StartTask(task)).is_err() {
                    return 1;
                }
            }
            Ok(Some(Request::Cancel(key))) => worker.cancel(&key),
            // The node closed the pipe (it stops, or died): nothing more to
            // do for it.
            Ok(None) => exit_now(0),
            Err(e) => {
                tracing::error!(error = %e, "a slot worker cannot read its requests");
                exit_now(1);
            }
        }
    }
}

/// What the runner runs.
enum Job {
    Attempt(Box<Run>),
    StartTask(Box<StartTask>),
}

/// Ends the process now, without unwinding or running destructors: another
/// thread may be in the middle of a guest call.
fn exit_now(status: i32) -> ! {
    // SAFETY: `_exit` only ends the process; nothing is left half-written
    // that matters (events are flushed before, the node owns every file).
    unsafe { libc::_exit(status) }
}

/// The worker's stdout, one frame at a time.
struct Events(Mutex<BufWriter<File>>);

impl Events {
    /// Sends an event now (with any held back before it).
    fn send(&self, event: &Event) {
        self.write(event, true);
    }

    /// Writes an event, sending it now only if `now`.
    fn write(&self, event: &Event, now: bool) {
        let mut out = lock(&self.0);
        let mut sent = write_frame(&mut *out, event);
        if now {
            sent = sent.and_then(|()| out.flush());
        }
        if sent.is_err() {
            // The node is gone.
            exit_now(1);
        }
    }

    /// Sends the events held back.
    fn flush(&self) {
        if lock(&self.0).flush().is_err() {
            exit_now(1);
        }
    }
}

/// The attempt (or start task) the runner is running, as the watchdog and
/// the reader see it.
struct Current {
    /// The attempt; `None` for the start task.
    key: Option<AttemptKey>,
    deadline: Instant,
    limits: crate::protocol::TaskLimits,
    logs: Logs,
    output: Option<PathBuf>,
    progress: Arc<AtomicU32>,
    reported: u32,
    last_report: Instant,
    started: Instant,
    started_at: i64,
}

/// What the runner, the watchdog and the reader share.
#[derive(Default)]
struct Slot {
    current: Option<Current>,
    /// Attempts cancelled before their turn.
    cancelled: HashSet<AttemptKey>,
}

/// A slot worker: its folders, its runtime, and what its threads share.
struct Worker {
    runtime: Runtime,
    inputs: PathBuf,
    output: PathBuf,
    outbox: PathBuf,
    shared: PathBuf,
    /// Makes outbox names unique within this process.
    counter: AtomicU64,
    slot: Mutex<Slot>,
    events: Arc<Events>,
}

impl Worker {
    fn new(setup: Setup, events: Arc<Events>) -> Result<Self, String> {
        let runtime = Runtime::new(&RuntimeConfig {
            max_memory_bytes: setup.max_memory_bytes,
            // A task, a program it runs, and room to spare.
            max_instances: 8,
            program_cache: Some(setup.program_cache),
        })
        .map_err(|e| e.to_string())?;
        let inputs = setup.slot_dir.join("inputs");
        let output = setup.slot_dir.join("output");
        // An earlier worker may have been stopped half-way.
        for dir in [&inputs, &output] {
            empty_folder(dir).map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        }
        for dir in [&setup.outbox, &setup.shared_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        }
        Ok(Self {
            runtime,
            inputs,
            output,
            outbox: setup.outbox,
            shared: setup.shared_dir,
            counter: AtomicU64::new(0),
            slot: Mutex::new(Slot::default()),
            events,
        })
    }

    fn slot(&self) -> MutexGuard<'_, Slot> {
        lock(&self.slot)
    }

    /// Stops `key` now if it runs, or when its turn comes.
    fn cancel(&self, key: &AttemptKey) {
        let mut slot = self.slot();
        if slot
            .current
            .as_ref()
            .is_some_and(|c| c.key.as_ref() == Some(key))
        {
            self.stop(slot, Interrupt::Cancelled);
        } else {
            slot.cancelled.insert(key.clone());
        }
    }

    /// Reports the running attempt as stopped for `why` and ends the
    /// process. The slot stays locked until the process is gone, so the
    /// runner cannot report it too.
    fn stop(&self, slot: MutexGuard<'_, Slot>, why: Interrupt) -> ! {
        let current = slot
            .current
            .as_ref()
            .expect("only a running attempt is stopped");
        let failure = interrupted(why, &current.limits);
        let Some(key) = &current.key else {
            let report = StartTaskReport {
                status: None,
                error: Some(failure.message),
                stdout: String::new(),
                stderr: String::new(),
            };
            self.events.send(&Event::StartTaskFinished(report));
            exit_now(0)
        };
        let finished = Finished {
            key: key.clone(),
            outcome: Err(failure),
            stdout: self.keep(&current.logs.stdout()),
            stderr: self.keep(&current.logs.stderr()),
            started_at: current.started_at,
            finished_at: now_ms(),
            usage: Usage {
                wall_us: current.started.elapsed().as_micros() as u64,
                ..Usage::default()
            },
        };
        self.events.send(&Event::Finished(Box::new(finished)));
        exit_now(0)
    }

    /// Looks at the running attempt every [`WATCH`] until the process ends.
    fn watch(&self) {
        let mut looks = 0u32;
        loop {
            std::thread::sleep(WATCH);
            looks = looks.wrapping_add(1);
            // Ends of attempts held back while a longer one runs go now.
            self.events.flush();
            let mut slot = self.slot();
            let Some(current) = slot.current.as_mut() else {
                continue;
            };
            if Instant::now() >= current.deadline {
                self.stop(slot, Interrupt::Timeout);
            }
            if looks.is_multiple_of(OUTPUT_CHECK_EVERY)
                && current
                    .output
                    .as_deref()
                    .is_some_and(|dir| folder_size(dir) > current.limits.output_bytes)
            {
                self.stop(slot, Interrupt::OutputLimit);
            }
            let progress = current.progress.load(Ordering::Relaxed);
            if let Some(key) = current.key.clone()
                && progress != current.reported
                && current.last_report.elapsed() >= PROGRESS_EVERY
            {
                current.reported = progress;
                current.last_report = Instant::now();
                let event = Event::Progress(key, f32::from_bits(progress));
                drop(slot);
                self.events.send(&event);
            }
        }
    }

    /// Runs attempts (and the start task) in the order they arrive. While
    /// more attempts wait, their ends are told in batches: never held back
    /// once the queue is empty, nor longer than [`EVENT_DELAY`].
    fn run_all(&self, queue: &crossbeam_channel::Receiver<Job>) {
        let io = ThreadIo::open();
        let mut held = 0usize;
        let mut first_held = Instant::now();
        while let Ok(job) = queue.recv() {
            match job {
                Job::Attempt(run) => {
                    let (finished, output_left) = self.run(&run, io.as_ref());
                    self.clean(&run.assignment, output_left);
                    if held == 0 {
                        first_held = Instant::now();
                    }
                    held += 1;
                    let now = queue.is_empty()
                        || held >= EVENT_BATCH
                        || first_held.elapsed() >= EVENT_DELAY;
                    self.events.write(&Event::Finished(Box::new(finished)), now);
                    if now {
                        held = 0;
                    }
                }
                Job::StartTask(task) => {
                    let report = self.start_task(&task);
                    self.events.send(&Event::StartTaskFinished(report));
                }
            }
        }
    }

    /// Runs a pool's start task, with `/shared` writable.
    fn start_task(&self, task: &StartTask) -> StartTaskReport {
        let started = Instant::now();
        let limits = crate::protocol::TaskLimits {
            memory_bytes: 1 << 30,
            timeout_ms: task.timeout_ms,
            output_bytes: 0,
            log_bytes: 1 << 20,
        };
        self.slot().current = Some(Current {
            key: None,
            deadline: started + Duration::from_millis(task.timeout_ms),
            limits,
            logs: Logs::new(limits.log_bytes),
            output: None,
            progress: Arc::new(AtomicU32::new(0)),
            reported: 0,
            last_report: started,
            started,
            started_at: now_ms(),
        });
        let sandbox = Sandbox {
            app: task.app.clone(),
            inputs: self.inputs.clone(),
            output: None,
            shared: Some(Shared {
                path: self.shared.clone(),
                writable: true,
            }),
            env: task.env.clone(),
            limits,
            logs: Logs::new(limits.log_bytes),
            progress: Arc::new(AtomicU32::new(0)),
        };
        let result = self
            .runtime
            .run_command(&sandbox, &task.program, task.args.clone());
        self.slot().current = None;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match result {
            Ok(run) => StartTaskReport {
                status: Some(run.status),
                error: None,
                stdout: text(&run.stdout),
                stderr: text(&run.stderr),
            },
            Err(error) => StartTaskReport {
                status: None,
                error: Some(error),
                stdout: String::new(),
                stderr: String::new(),
            },
        }
    }

    /// Runs one attempt and says how it ended, and whether it may have left
    /// something in `/output`; never fails.
    fn run(&self, run: &Run, io: Option<&ThreadIo>) -> (Finished, bool) {
        let a = &run.assignment;
        let started_at = now_ms();
        let started = Instant::now();
        let logs = Logs::new(a.limits.log_bytes);
        let progress = Arc::new(AtomicU32::new(0));
        let output = (a.kind != TaskKind::Split).then(|| self.output.clone());
        {
            let mut slot = self.slot();
            if slot.cancelled.remove(&a.key) {
                let finished = self.finished(
                    a,
                    Err(Failure::new(
                        FailureKind::Cancelled,
                        "the attempt was cancelled before it started",
                    )),
                    (started_at, started),
                    Usage::default(),
                );
                return (finished, false);
            }
            slot.current = Some(Current {
                key: Some(a.key.clone()),
                deadline: started + Duration::from_millis(a.limits.timeout_ms),
                limits: a.limits,
                logs: logs.clone(),
                output: output.clone(),
                progress: progress.clone(),
                reported: 0,
                last_report: started,
                started,
                started_at,
            });
        }
        let before = Measure::now(io);
        let sandbox = Sandbox {
            app: run.app.clone(),
            inputs: self.inputs.clone(),
            output,
            shared: Some(Shared {
                path: self.shared.clone(),
                writable: false,
            }),
            env: environment(a, &run.node_id),
            limits: a.limits,
            logs,
            progress,
        };
        let attempt = match self.mount(&run.mounts) {
            Ok(()) => self.call(run, &sandbox),
            Err(e) => AttemptRun::failed(Failure::new(
                FailureKind::Internal,
                format!("preparing /inputs failed: {e}"),
            )),
        };
        let usage = before.usage(io, attempt.peak_memory);
        // The watchdog may have stopped the attempt meanwhile; then the
        // process is ending and this thread must not report it again.
        self.slot().current = None;
        // Unless collecting the outputs moved every file away and met no
        // folder, /output may hold something.
        let mut output_left = true;
        let outcome = attempt.result.and_then(|plan| {
            let (outputs, folders) = self.collect_outputs(a)?;
            output_left = folders;
            Ok(Produced {
                outputs,
                plan: self.plan(plan)?,
            })
        });
        let mut finished = self.finished(a, outcome, (started_at, started), usage);
        finished.stdout = self.keep(&attempt.stdout);
        finished.stderr = self.keep(&attempt.stderr);
        (finished, output_left)
    }

    fn finished(
        &self,
        a: &Assignment,
        outcome: Result<Produced, Failure>,
        (started_at, started): (i64, Instant),
        mut usage: Usage,
    ) -> Finished {
        usage.wall_us = started.elapsed().as_micros() as u64;
        Finished {
            key: a.key.clone(),
            outcome,
            stdout: None,
            stderr: None,
            started_at,
            finished_at: now_ms(),
            usage,
        }
    }

    /// Loads the attempt's component (once per worker) and calls it.
    fn call(&self, run: &Run, sandbox: &Sandbox) -> AttemptRun<Option<SplitPlan>> {
        let a = &run.assignment;
        let role = if a.kind == TaskKind::Split {
            Role::Splitter
        } else {
            Role::Processor
        };
        if !self.runtime.is_loaded(role, &a.component)
            && let Err(e) = self.runtime.load_file(role, &a.component, &run.artifact)
        {
            return AttemptRun::failed(Failure::new(FailureKind::Internal, e.to_string()));
        }
        let files = |list: &[InputFile]| {
            list.iter()
                .map(|f| GuestFile {
                    name: f.path.clone(),
                    size: f.size,
                })
                .collect::<Vec<_>>()
        };
        let job = || GuestJob {
            id: a.key.job_id.clone(),
            app: a.app.clone(),
            app_version: a.app_version,
            parameters: a.job_parameters.clone(),
            inputs: files(&a.inputs),
        };
        match a.kind {
            TaskKind::Split => self.runtime.split(&a.component, sandbox, &job()).map(Some),
            TaskKind::Process => {
                let task = GuestTask {
                    job_id: a.key.job_id.clone(),
                    name: a.task.clone(),
                    attempt: a.key.attempt,
                    job_parameters: a.job_parameters.clone(),
                    parameters: a.parameters.clone(),
                    inputs: files(&a.inputs),
                };
                self.runtime
                    .process(&a.component, sandbox, &task)
                    .map(|()| None)
            }
            TaskKind::Merge => {
                let results: Vec<GuestTaskResult> = a
                    .results
                    .iter()
                    .map(|r| GuestTaskResult {
                        name: r.name.clone(),
                        parameters: r.parameters.clone(),
                        outputs: files(&r.outputs),
                    })
                    .collect();
                self.runtime
                    .merge(&a.component, sandbox, &job(), &results)
                    .map(|()| None)
            }
        }
    }

    /// Links every input of the attempt into the slot's `inputs` folder.
    fn mount(&self, mounts: &[(String, PathBuf)]) -> Result<(), crate::error::Error> {
        for (path, source) in mounts {
            let relative = crate::package::check_relative_path(path)?;
            let target = self.inputs.join(relative);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if std::fs::hard_link(source, &target).is_err() {
                std::fs::copy(source, &target)?;
            }
        }
        Ok(())
    }

    /// Moves every file the attempt left in `/output` to the outbox; also
    /// says whether it met folders (which stay behind).
    fn collect_outputs(
        &self,
        a: &Assignment,
    ) -> Result<(Vec<(String, OutboxFile)>, bool), Failure> {
        if a.kind == TaskKind::Split {
            return Ok((Vec::new(), false));
        }
        let mut folders = false;
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut stack = vec![self.output.clone()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(internal("reading /output"))?;
            for entry in entries {
                let entry = entry.map_err(internal("reading /output"))?;
                let kind = entry.file_type().map_err(internal("reading /output"))?;
                let path = entry.path();
                let relative = path
                    .strip_prefix(&self.output)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        Failure::new(
                            FailureKind::GuestError,
                            format!("output {} has a name that is not UTF-8", path.display()),
                        )
                    })?;
                if kind.is_dir() {
                    folders = true;
                    stack.push(path);
                } else if kind.is_file() {
                    let size = entry.metadata().map_err(internal("reading /output"))?.len();
                    total += size;
                    files.push((relative, path, size));
                } else {
                    return Err(Failure::new(
                        FailureKind::GuestError,
                        format!("/output/{relative} is not a regular file; outputs must be files"),
                    ));
                }
                if files.len() > MAX_OUTPUT_FILES {
                    return Err(Failure::new(
                        FailureKind::OutputLimit,
                        format!("the attempt left more than {MAX_OUTPUT_FILES} files in /output"),
                    ));
                }
            }
        }
        if total > a.limits.output_bytes {
            return Err(Failure::new(
                FailureKind::OutputLimit,
                format!(
                    "/output holds {}, more than its limit of {}",
                    human_bytes(total),
                    human_bytes(a.limits.output_bytes)
                ),
            ));
        }
        files.sort();
        let kept = files
            .into_iter()
            .map(|(relative, path, size)| {
                let relative = crate::package::check_relative_path(&relative).map_err(|e| {
                    Failure::new(FailureKind::GuestError, format!("output `{relative}`: {e}"))
                })?;
                let kept = self.outbox_path();
                std::fs::rename(&path, &kept).map_err(internal("keeping an output"))?;
                Ok((relative, OutboxFile { path: kept, size }))
            })
            .collect::<Result<_, Failure>>()?;
        Ok((kept, folders))
    }

    /// A split plan as the node receives it: inline, or a file when large.
    fn plan(&self, plan: Option<SplitPlan>) -> Result<Option<PlanOut>, Failure> {
        let Some(plan) = plan else { return Ok(None) };
        let json = serde_json::to_vec(&plan).map_err(internal("encoding the split plan"))?;
        if json.len() <= INLINE_PLAN_BYTES {
            return Ok(Some(PlanOut::Inline(plan)));
        }
        let path = self.outbox_path();
        std::fs::write(&path, &json).map_err(internal("keeping the split plan"))?;
        Ok(Some(PlanOut::File(OutboxFile {
            path,
            size: json.len() as u64,
        })))
    }

    /// Keeps a log in the outbox; `None` when it is empty (or cannot be
    /// kept: losing a log must not lose the result).
    fn keep(&self, bytes: &[u8]) -> Option<OutboxFile> {
        if bytes.is_empty() {
            return None;
        }
        let path = self.outbox_path();
        match std::fs::write(&path, bytes) {
            Ok(()) => Some(OutboxFile {
                path,
                size: bytes.len() as u64,
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot keep an attempt's log");
                None
            }
        }
    }

    fn outbox_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.outbox.join(format!("{}-{n}", std::process::id()))
    }

    /// Empties the slot's folders for the next attempt.
    fn clean(&self, a: &Assignment, output_left: bool) {
        let mut dirs = Vec::with_capacity(2);
        if a.kind != TaskKind::Split && output_left && !folder_is_empty(&self.output) {
            dirs.push(&self.output);
        }
        if !a.inputs.is_empty() || !a.results.is_empty() {
            dirs.push(&self.inputs);
        }
        for dir in dirs {
            if let Err(e) = empty_folder(dir) {
                tracing::error!(dir = %dir.display(), error = %e, "cannot empty a slot folder");
            }
        }
    }
}

/// Makes `dir` an empty folder.
fn empty_folder(dir: &Path) -> std::io::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)
}

/// Whether a folder has no entries (an unreadable one counts as not empty).
fn folder_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn internal<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> Failure {
    move |e| Failure::new(FailureKind::Internal, format!("{what} failed: {e}"))
}

/// The `TESSERA_*` variables of an attempt, then the task's own.
fn environment(a: &Assignment, node_id: &str) -> Vec<(String, String)> {
    let mut env = vec![
        ("TESSERA_ACCOUNT".to_owned(), a.account.clone()),
        ("TESSERA_POOL_ID".to_owned(), a.pool.clone()),
        ("TESSERA_NODE_ID".to_owned(), node_id.to_owned()),
        ("TESSERA_JOB_ID".to_owned(), a.key.job_id.clone()),
        ("TESSERA_TASK_NAME".to_owned(), a.task.clone()),
        ("TESSERA_TASK_ATTEMPT".to_owned(), a.key.attempt.to_string()),
        ("TESSERA_APP".to_owned(), a.app.clone()),
        ("TESSERA_APP_VERSION".to_owned(), a.app_version.to_string()),
    ];
    env.extend(a.env.iter().cloned());
    env
}

/// This thread's read and written byte counters (`/proc/thread-self/io`),
/// read with one `pread` each time.
struct ThreadIo(File);

impl ThreadIo {
    fn open() -> Option<Self> {
        File::open("/proc/thread-self/io").ok().map(Self)
    }

    /// (bytes read, bytes written) so far.
    fn read(&self) -> Option<(u64, u64)> {
        let mut buf = [0u8; 512];
        let n = self.0.read_at(&mut buf, 0).ok()?;
        let text = std::str::from_utf8(&buf[..n]).ok()?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some((field("rchar:")?, field("wchar:")?))
    }
}

/// This thread's CPU time and I/O counters at one moment.
struct Measure {
    cpu_us: u64,
    io: Option<(u64, u64)>,
}

impl Measure {
    fn now(io: Option<&ThreadIo>) -> Self {
        Self {
            cpu_us: thread_cpu_us(),
            io: io.and_then(ThreadIo::read),
        }
    }

    /// What happened on this thread since `self`.
    fn usage(&self, io: Option<&ThreadIo>, peak_memory: u64) -> Usage {
        let after = Self::now(io);
        let (bytes_read, bytes_written) = match (self.io, after.io) {
            (Some((r0, w0)), Some((r1, w1))) => (r1.saturating_sub(r0), w1.saturating_sub(w0)),
            _ => (0, 0),
        };
        Usage {
            wall_us: 0,
            cpu_us: after.cpu_us.saturating_sub(self.cpu_us),
            peak_memory,
            bytes_read,
            bytes_written,
        }
    }
}

/// CPU time this thread has used, in microseconds.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if ok {
        ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
    } else {
        0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
