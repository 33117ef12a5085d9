//! Task slots as worker processes.
//!
//! Each slot of a node is a child process (the node's own executable,
//! started with [`WORKER_ARG`]) that runs one attempt at a time with no
//! checks inside the guest ([`child`]). The node side of a slot, its
//! supervisor, takes prepared attempts from the node's queue, sends them to
//! its worker (a few ahead when tasks are short, so the worker never waits
//! for the next one), forwards cancellations, and turns each finished
//! attempt into a report: the files the worker left in the outbox are
//! uploaded, then the report goes to the committer. When a worker stops
//! itself (a deadline, a cancellation, an output limit) or dies (a crash of
//! the runtime), the supervisor starts another and sends it the attempts
//! that had not started; a crash fails only the attempt that was running.

mod child;
mod wire;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore, mpsc};

use super::{Done, Shared, Work};
use crate::model::{Failure, FailureKind, TaskKind};
use crate::protocol::{
    AttemptKey, AttemptReport, Coordinator, NodeError, Outcome, OutputFile, PlanRef,
    StartTaskReport, UploadSource,
};
use wire::{Event, Finished, OutboxFile, PlanOut, Request, Run, write_frame};
pub(crate) use wire::{Setup, StartTask};

/// The first argument that makes an executable a slot worker (see
/// [`run_if_worker`]).
pub const WORKER_ARG: &str = "__tessera-slot-worker";

/// How long a worker may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A slot whose worker fails to start this many times in a row makes its
/// node unusable.
const START_FAILURES: u32 = 3;

/// How often cancellations of sent attempts are looked for.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

/// If this process was started as a slot worker, runs it and exits; returns
/// otherwise. Executables that run nodes call it first thing in `main`.
pub fn run_if_worker() {
    if std::env::args_os().nth(1).is_some_and(|a| a == WORKER_ARG) {
        std::process::exit(child::main());
    }
}

/// How a node starts its slot workers: an executable that calls
/// [`run_if_worker`] at the start of its `main` (the `tessera` binary does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerCommand {
    /// The executable.
    pub program: PathBuf,
}

impl WorkerCommand {
    /// This process's own executable.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
        })
    }
}

/// What a slot's supervisor works with.
pub(super) struct SlotContext<C> {
    pub(super) command: WorkerCommand,
    pub(super) setup: Setup,
    pub(super) queue: Arc<Mutex<mpsc::Receiver<Work>>>,
    pub(super) done: mpsc::UnboundedSender<Done>,
    pub(super) coordinator: Arc<C>,
    pub(super) shared: Arc<Shared>,
    /// Bounds the uploads in flight across the node's slots.
    pub(super) uploads: Arc<Semaphore>,
}

/// An attempt sent to the worker, not yet finished.
struct Sent {
    work: Work,
    cancel_sent: bool,
}

/// A running worker process.
struct Process {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    /// The worker's events, in batches (whatever one read brought).
    events: mpsc::UnboundedReceiver<Vec<Event>>,
    /// Events of the last batch not yet handled.
    pending: VecDeque<Event>,
}

impl Process {
    /// The worker's next event; `None` once its stdout closed.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            self.pending = self.events.recv().await?.into();
        }
    }
}

impl Process {
    /// Starts a worker and waits until it is ready.
    async fn start(command: &WorkerCommand, setup: &Setup) -> Result<Self, String> {
        let mut cmd = tokio::process::Command::new(&command.program);
        // The slot's folder follows, for operators reading `ps` (the
        // worker takes its settings from the setup frame).
        cmd.arg(WORKER_ARG)
            .arg(&setup.slot_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // SAFETY: between fork and exec only async-signal-safe calls are
        // made: prctl, which asks the kernel to kill the worker when the
        // node dies, so that no worker outlives its node.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", command.program.display()))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(read_events(stdout, tx));
        send(&mut stdin, setup)
            .await
            .map_err(|e| format!("cannot set up the worker: {e}"))?;
        let mut first = tokio::time::timeout(START_TIMEOUT, events.recv())
            .await
            .map(|batch| batch.map(VecDeque::from));
        match first
            .as_mut()
            .map(|b| b.as_mut().and_then(VecDeque::pop_front))
        {
            Ok(Some(Event::Ready)) => Ok(Self {
                child,
                stdin,
                events,
                pending: first.ok().flatten().unwrap_or_default(),
            }),
            Ok(Some(Event::Broken(why))) => Err(format!("the worker cannot start: {why}")),
            Ok(other) => {
                let status = child.wait().await.ok();
                Err(format!(
                    "the worker ended before it was ready ({other:?}, exit {status:?})"
                ))
            }
            Err(_) => Err(format!(
                "the worker did not start within {} s",
                START_TIMEOUT.as_secs()
            )),
        }
    }
}

/// Reads a worker's events until its stdout closes, passing on what each
/// read brought in one batch (one wake-up of the supervisor, however many
/// attempts finished).
async fn read_events(
    mut stdout: tokio::process::ChildStdout,
    tx: mpsc::UnboundedSender<Vec<Event>>,
) {
    let mut frames = wire::FrameBuffer::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        frames.extend(&buf[..n]);
        let mut batch = Vec::new();
        loop {
            match frames.next::<Event>() {
                Ok(Some(event)) => batch.push(event),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "a slot worker sent a broken frame");
                    let _ = tx.send(batch);
                    return;
                }
            }
        }
        if !batch.is_empty() && tx.send(batch).is_err() {
            return;
        }
    }
}

/// Writes one frame to a worker.
async fn send<T: serde::Serialize>(
    stdin: &mut tokio::process::ChildStdin,
    value: &T,
) -> std::io::Result<()> {
    let mut frame = Vec::new();
    write_frame(&mut frame, value)?;
    stdin.write_all(&frame).await
}

/// Runs one slot until the node's queue closes and every attempt sent to
/// it has finished.
pub(super) async fn supervise<C: Coordinator>(ctx: SlotContext<C>) {
    let mut sent: VecDeque<Sent> = VecDeque::new();
    let mut process: Option<Process> = None;
    let mut start_failures = 0u32;
    let mut closed = false;
    loop {
        if process.is_none() {
            if closed && sent.is_empty() {
                return;
            }
            match Process::start(&ctx.command, &ctx.setup).await {
                Ok(mut started) => {
                    start_failures = 0;
                    ctx.shared.set_unusable(None);
                    if resend(&mut started, &mut sent).await.is_ok() {
                        process = Some(started);
                    }
                }
                Err(why) => {
                    start_failures += 1;
                    tracing::error!(%why, tries = start_failures, "cannot start a slot worker");
                    if start_failures >= START_FAILURES {
                        ctx.shared
                            .set_unusable(Some(format!("its task slots cannot start: {why}")));
                        for s in sent.drain(..) {
                            let failure = Failure::new(
                                FailureKind::Internal,
                                format!("the node's task slot cannot start: {why}"),
                            );
                            let finished = failed(&s.work.assignment.key, failure);
                            report(&ctx, s.work, finished).await;
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1) * start_failures.min(10)).await;
                }
            }
            continue;
        }
        let running = process.as_mut().expect("started above");
        let depth = ctx
            .shared
            .pipeline_depth(sent.front().map(|s| s.work.assignment.key.job_id.as_str()));
        tokio::select! {
            biased;
            event = running.next_event() => match event {
                Some(Event::Finished(finished)) => {
                    match sent.iter().position(|s| s.work.assignment.key == finished.key) {
                        Some(i) => {
                            let s = sent.remove(i).expect("found above");
                            finish(&ctx, s.work, *finished).await;
                        }
                        None => tracing::error!(key = ?finished.key, "a slot worker finished an attempt it was not given"),
                    }
                }
                Some(Event::Progress(key, fraction)) => {
                    if let Some(s) = sent.iter().find(|s| s.work.assignment.key == key) {
                        s.work.progress.store(fraction.to_bits(), Ordering::Relaxed);
                    }
                }
                Some(Event::Ready | Event::Broken(_) | Event::StartTaskFinished(_)) => {}
                None => {
                    // The worker ended: it stopped itself after reporting
                    // the attempt it stopped, or it crashed while running
                    // the first one still sent.
                    let mut ended = process.take().expect("running");
                    let status = ended.child.wait().await;
                    let crashed = status.as_ref().map_or(true, |s| !s.success());
                    if crashed && let Some(s) = sent.pop_front() {
                        tracing::error!(status = ?status, key = ?s.work.assignment.key, "a slot worker died");
                        let failure = Failure::new(
                            FailureKind::Internal,
                            format!("the task slot's worker process died while running the attempt ({})",
                                status.map_or_else(|e| e.to_string(), |s| s.to_string())),
                        );
                        let finished = failed(&s.work.assignment.key, failure);
                        report(&ctx, s.work, finished).await;
                    }
                }
            },
            works = take(&ctx.queue, depth - sent.len()), if !closed && sent.len() < depth => {
                if works.is_empty() {
                    closed = true;
                    if sent.is_empty() {
                        return;
                    }
                    continue;
                }
                // One write for all of them: a worker of short tasks reads
                // its next attempts in one go.
                let mut frames = Vec::new();
                for work in works {
                    if work.cancel.load(Ordering::Relaxed) {
                        let failure = Failure::new(
                            FailureKind::Cancelled,
                            "the attempt was cancelled before it started",
                        );
                        let finished = failed(&work.assignment.key, failure);
                        report(&ctx, work, finished).await;
                        continue;
                    }
                    if let Err(e) = write_frame(&mut frames, &run_request(&work)) {
                        let failure = Failure::new(
                            FailureKind::Internal,
                            format!("the attempt cannot be sent to its slot: {e}"),
                        );
                        let finished = failed(&work.assignment.key, failure);
                        report(&ctx, work, finished).await;
                        continue;
                    }
                    sent.push_back(Sent { work, cancel_sent: false });
                }
                // If the worker died, the next turn of the loop notices.
                let _ = running.stdin.write_all(&frames).await;
            }
            () = tokio::time::sleep(CANCEL_CHECK), if !sent.is_empty() => {
                for s in sent.iter_mut().filter(|s| !s.cancel_sent) {
                    if s.work.cancel.load(Ordering::Relaxed) {
                        s.cancel_sent = true;
                        let key = s.work.assignment.key.clone();
                        if send(&mut running.stdin, &Request::Cancel(key)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Runs a pool's start task in a worker process of its own (so that its
/// deadline can stop it like an attempt's) and says how it ended.
pub(super) async fn run_start_task(
    command: &WorkerCommand,
    setup: &Setup,
    task: StartTask,
) -> StartTaskReport {
    let failed = |error: String| StartTaskReport {
        status: None,
        error: Some(error),
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut process = match Process::start(command, setup).await {
        Ok(p) => p,
        Err(why) => return failed(why),
    };
    if let Err(e) = send(&mut process.stdin, &Request::StartTask(Box::new(task))).await {
        return failed(format!("cannot send the start task to a worker: {e}"));
    }
    loop {
        match process.next_event().await {
            Some(Event::StartTaskFinished(report)) => return report,
            Some(_) => {}
            None => {
                let status = process.child.wait().await;
                return failed(format!(
                    "its worker process died ({})",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string())
                ));
            }
        }
    }
}

/// Sends a fresh worker the attempts an ended one had not finished.
async fn resend(process: &mut Process, sent: &mut VecDeque<Sent>) -> std::io::Result<()> {
    for s in sent.iter_mut() {
        send(&mut process.stdin, &run_request(&s.work)).await?;
        s.cancel_sent = false;
    }
    Ok(())
}

/// The request that runs `work`.
fn run_request(work: &Work) -> Request {
    Request::Run(Box::new(Run {
        assignment: work.assignment.clone(),
        node_id: work.session.node_id.clone(),
        artifact: work.prepared.artifact.clone(),
        app: work.prepared.app.clone(),
        mounts: work.prepared.mounts.clone(),
    }))
}

/// The next prepared attempts from the node's queue, at least one and at
/// most `room` (whatever is there after the first); none once it closed.
async fn take(queue: &Mutex<mpsc::Receiver<Work>>, room: usize) -> Vec<Work> {
    let mut queue = queue.lock().await;
    let Some(first) = queue.recv().await else {
        return Vec::new();
    };
    let mut works = vec![first];
    while works.len() < room {
        match queue.try_recv() {
            Ok(work) => works.push(work),
            Err(_) => break,
        }
    }
    works
}

/// How an attempt that never ran ended.
fn failed(key: &AttemptKey, failure: Failure) -> Finished {
    let now = crate::model::now_ms();
    Finished {
        key: key.clone(),
        outcome: Err(failure),
        stdout: None,
        stderr: None,
        started_at: now,
        finished_at: now,
        usage: Default::default(),
    }
}

/// Hands a finished attempt on: uploads (in the background when there are
/// files) and reports.
async fn finish<C: Coordinator>(ctx: &SlotContext<C>, work: Work, finished: Finished) {
    if work.assignment.kind == TaskKind::Process {
        ctx.shared
            .record_duration(&work.assignment.key.job_id, finished.usage.wall_us);
    }
    report(ctx, work, finished).await;
}

/// Uploads what an attempt left in the outbox and sends its report to the
/// committer.
async fn report<C: Coordinator>(ctx: &SlotContext<C>, work: Work, finished: Finished) {
    ctx.shared.ran();
    let has_files = finished.stdout.is_some()
        || finished.stderr.is_some()
        || finished
            .outcome
            .as_ref()
            .is_ok_and(|p| !p.outputs.is_empty() || matches!(p.plan, Some(PlanOut::File(_))));
    if !has_files {
        let report = build_report(&*ctx.coordinator, &work, finished).await;
        let _ = ctx.done.send(Done {
            session: work.session,
            report,
        });
        return;
    }
    let coordinator = ctx.coordinator.clone();
    let done = ctx.done.clone();
    let uploads = ctx.uploads.clone();
    tokio::spawn(async move {
        let _permit = uploads.acquire_owned().await;
        let report = build_report(&*coordinator, &work, finished).await;
        let _ = done.send(Done {
            session: work.session,
            report,
        });
    });
}

/// The report of a finished attempt, its files uploaded (and removed from
/// the outbox).
async fn build_report<C: Coordinator>(
    coordinator: &C,
    work: &Work,
    finished: Finished,
) -> AttemptReport {
    let upload = |file: OutboxFile| async move {
        // A service that is away (restarting, say) is waited for, as the
        // committer waits, for as long as the session may still commit.
        let mut delay = Duration::from_millis(100);
        let result = loop {
            let tried = coordinator
                .upload(
                    &work.session.node_id,
                    &work.assignment.key,
                    UploadSource::File(&file.path),
                )
                .await;
            match tried {
                Err(e) if e.is_transient() && work.session.can_commit() => {
                    tracing::warn!(error = %e, "uploading an attempt's file failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                result => break result,
            }
        };
        if let Err(e) = tokio::fs::remove_file(&file.path).await {
            tracing::warn!(path = %file.path.display(), error = %e, "cannot remove an uploaded file");
        }
        result
    };
    let log = |file: Option<OutboxFile>| async move {
        match file {
            Some(f) => upload(f).await.map(Some),
            None => Ok(None),
        }
    };
    let stdout = log(finished.stdout).await;
    let stderr = log(finished.stderr).await;
    let outcome = match finished.outcome {
        Ok(produced) => {
            let mut outputs = Vec::with_capacity(produced.outputs.len());
            let mut failure = None;
            for (path, file) in produced.outputs {
                match upload(file).await {
                    Ok(file) => outputs.push(OutputFile { path, file }),
                    Err(e) => failure = failure.or(Some(e)),
                }
            }
            let plan = match produced.plan {
                None => Ok(None),
                Some(PlanOut::Inline(plan)) => Ok(Some(PlanRef::Inline(plan))),
                Some(PlanOut::File(file)) => upload(file).await.map(|f| Some(PlanRef::Uploaded(f))),
            };
            match (failure, plan) {
                (None, Ok(plan)) => Outcome::Succeeded { outputs, plan },
                (Some(e), _) | (None, Err(e)) => Outcome::Failed(upload_failure(&e)),
            }
        }
        Err(failure) => Outcome::Failed(failure),
    };
    let (stdout, stderr, outcome) = match (stdout, stderr) {
        (Ok(out), Ok(err)) => (out, err, outcome),
        (Err(e), _) | (_, Err(e)) => (None, None, Outcome::Failed(upload_failure(&e))),
    };
    AttemptReport {
        key: work.assignment.key.clone(),
        outcome,
        stdout,
        stderr,
        started_at: finished.started_at,
        finished_at: finished.finished_at,
        usage: finished.usage,
    }
}

fn upload_failure(e: &NodeError) -> Failure {
    Failure::new(
        FailureKind::Internal,
        format!("uploading the attempt's files failed: {e}"),
    )
}
