//! Applying attempt reports: fenced task transitions, retries, dependents,
//! and the job's next state, in one transaction per batch.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Scheduler;
use super::plan::{CheckedPlan, check_plan};
use super::{MERGE_TASK, SPLIT_TASK};
use crate::error::Error;
use crate::model::{Failure, FailureKind, JobInput, JobState, TaskKind, TaskState, now_ms};
use crate::protocol::{
    AttemptReport, CommitReply, NodeError, Outcome, PlanRef, Refusal, RefusalReason, SplitPlan,
};
use crate::store::{AttemptRecord, CurrentTask, JobRecord, LogRef, NewTask, Tx};

/// Reports of one job that passed the receipt check, with the split plans
/// they carry already read and checked.
struct JobReports<'a> {
    reports: Vec<&'a AttemptReport>,
    plans: HashMap<i64, Result<SplitPlan, Failure>>,
}

impl Scheduler {
    /// Applies a batch of reports from `node_id` in one transaction and
    /// says which it refused. A node the scheduler declared lost must
    /// register again first.
    pub(super) async fn commit_reports(
        &self,
        node_id: &str,
        reports: &[AttemptReport],
    ) -> Result<CommitReply, NodeError> {
        let mut refused = Vec::new();
        let mut by_job = self.check_reports(node_id, reports, &mut refused).await?;
        let now = now_ms();
        let mut tx = self.inner.store.begin().await?;
        if !tx.node(node_id).await?.is_some_and(|n| n.state.is_live()) {
            return Err(NodeError::UnknownNode(node_id.to_owned()));
        }
        let mut queued = false;
        for (job_id, job_reports) in &mut by_job {
            queued |= self
                .apply(&mut tx, node_id, job_id, job_reports, now, &mut refused)
                .await?;
        }
        tx.commit().await?;
        if queued {
            self.work_available();
        }
        for r in &refused {
            tracing::warn!(node = %node_id, job = %r.key.job_id, seq = r.key.seq,
                attempt = r.key.attempt, reason = ?r.reason, "refused a report: {}", r.message);
        }
        Ok(CommitReply { refused })
    }

    /// Groups reports by job, refusing those that name a file without a
    /// receipt for their attempt, and reads the split plans that were
    /// uploaded as files (before the transaction, which should not wait on
    /// the file store).
    async fn check_reports<'a>(
        &self,
        node_id: &str,
        reports: &'a [AttemptReport],
        refused: &mut Vec<Refusal>,
    ) -> Result<BTreeMap<&'a str, JobReports<'a>>, Error> {
        let mut by_job: BTreeMap<&str, JobReports<'_>> = BTreeMap::new();
        for report in reports {
            if let Some(bad) = report
                .files()
                .find(|f| !self.has_receipt(node_id, &report.key, f))
            {
                refused.push(Refusal {
                    key: report.key.clone(),
                    reason: RefusalReason::BadReceipt,
                    message: format!(
                        "the report names file {} without a receipt for this node and attempt",
                        bad.digest
                    ),
                });
                continue;
            }
            let job = by_job
                .entry(report.key.job_id.as_str())
                .or_insert_with(|| JobReports {
                    reports: Vec::new(),
                    plans: HashMap::new(),
                });
            job.reports.push(report);
            if let Outcome::Succeeded {
                plan: Some(plan), ..
            } = &report.outcome
            {
                let plan = match plan {
                    PlanRef::Inline(plan) => Ok(plan.clone()),
                    PlanRef::Uploaded(file) => self.read_plan(&file.digest).await?,
                };
                job.plans.insert(report.key.seq, plan);
            }
        }
        Ok(by_job)
    }

    /// A split plan uploaded as a JSON file.
    async fn read_plan(
        &self,
        digest: &crate::digest::Digest,
    ) -> Result<Result<SplitPlan, Failure>, Error> {
        let bytes = self.inner.blobs.get_bytes(digest).await?;
        Ok(serde_json::from_slice(&bytes).map_err(|e| {
            Failure::new(
                FailureKind::Internal,
                format!("the node uploaded a split plan that is not valid JSON: {e}"),
            )
        }))
    }

    /// Applies one job's reports inside `tx`; returns whether tasks were queued.
    async fn apply(
        &self,
        tx: &mut Tx,
        node_id: &str,
        job_id: &str,
        batch: &mut JobReports<'_>,
        now: i64,
        refused: &mut Vec<Refusal>,
    ) -> Result<bool, Error> {
        let Some(mut job) = tx.job(job_id).await? else {
            refused.extend(batch.reports.iter().map(|r| Refusal {
                key: r.key.clone(),
                reason: RefusalReason::LeaseLost,
                message: format!("job {job_id} does not exist"),
            }));
            return Ok(false);
        };
        // The common case first: successful tasks, fenced and marked in one
        // statement that only touches attempts still leased to this node.
        let (successes, mut rest): (Vec<&AttemptReport>, Vec<&AttemptReport>) =
            batch.reports.iter().copied().partition(|r| {
                matches!(r.outcome, Outcome::Succeeded { .. }) && !job.is_split(r.key.seq)
            });
        let pairs: Vec<(i64, u32)> = successes
            .iter()
            .map(|r| (r.key.seq, r.key.attempt))
            .collect();
        let accepted: HashMap<i64, TaskKind> = tx
            .succeed(job_id, node_id, &pairs, now)
            .await?
            .into_iter()
            .collect();
        let mut records = Vec::with_capacity(batch.reports.len());
        let mut outputs = Vec::new();
        let mut processed = Vec::new();
        let mut merged = false;
        for report in successes {
            let Some(kind) = accepted.get(&report.key.seq) else {
                rest.push(report);
                continue;
            };
            records.push(attempt_record(job_id, node_id, report));
            if let Outcome::Succeeded { outputs: files, .. } = &report.outcome {
                outputs.extend(files.iter().map(|f| (report.key.seq, f)));
            }
            match kind {
                TaskKind::Process => processed.push(report.key.seq),
                TaskKind::Merge => merged = true,
                TaskKind::Split => {}
            }
        }
        let mut queued = false;
        if !rest.is_empty() {
            queued |= self
                .apply_rest(
                    tx,
                    node_id,
                    &mut job,
                    &rest,
                    batch,
                    now,
                    &mut records,
                    refused,
                )
                .await?;
        }
        tx.insert_attempts(&records).await?;
        tx.insert_outputs(job_id, &outputs).await?;
        queued |= self.settle(tx, job, merged, &processed, now).await?;
        Ok(queued)
    }

    /// Everything but fresh successes: split results, failures, duplicates
    /// and reports that lost their lease.
    #[allow(clippy::too_many_arguments)]
    async fn apply_rest<'a>(
        &self,
        tx: &mut Tx,
        node_id: &'a str,
        job: &mut JobRecord,
        rest: &[&'a AttemptReport],
        batch: &mut JobReports<'_>,
        now: i64,
        records: &mut Vec<AttemptRecord<'a>>,
        refused: &mut Vec<Refusal>,
    ) -> Result<bool, Error> {
        let seqs: Vec<i64> = rest.iter().map(|r| r.key.seq).collect();
        let current: HashMap<i64, CurrentTask> = tx
            .current_tasks(&job.id, &seqs)
            .await?
            .into_iter()
            .map(|c| (c.seq, c))
            .collect();
        let (leased, lost): (Vec<&AttemptReport>, Vec<&AttemptReport>) =
            rest.iter().copied().partition(|r| {
                current
                    .get(&r.key.seq)
                    .is_some_and(|t| t.is_leased_to(node_id, r.key.attempt))
            });
        self.refuse_lost(tx, node_id, &job.id, &lost, refused)
            .await?;
        let mut queued = false;
        for report in leased {
            let task = &current[&report.key.seq];
            // The latest attempt is recorded even when its task was
            // cancelled meanwhile, for its logs.
            records.push(attempt_record(&report.key.job_id, node_id, report));
            if task.state != TaskState::Running {
                continue;
            }
            queued |= match &report.outcome {
                Outcome::Succeeded { .. } => {
                    // Taken, not copied: a plan may hold a million tasks.
                    let plan = batch.plans.remove(&task.seq).unwrap_or_else(|| {
                        Err(Failure::new(
                            FailureKind::Internal,
                            "the node reported a split without a plan",
                        ))
                    });
                    self.accept_split(tx, job, task, plan, now).await?
                }
                Outcome::Failed(failure) => self.fail_task(tx, job, task, failure, now).await?,
            };
        }
        Ok(queued)
    }

    /// Refuses reports whose attempt is not (or no longer) leased to the
    /// node, except duplicates of reports it committed before.
    async fn refuse_lost(
        &self,
        tx: &mut Tx,
        node_id: &str,
        job_id: &str,
        lost: &[&AttemptReport],
        refused: &mut Vec<Refusal>,
    ) -> Result<(), Error> {
        if lost.is_empty() {
            return Ok(());
        }
        let keys: Vec<(i64, u32)> = lost.iter().map(|r| (r.key.seq, r.key.attempt)).collect();
        let recorded: HashSet<(i64, u32)> = tx
            .recorded_attempts(job_id, node_id, &keys)
            .await?
            .into_iter()
            .collect();
        refused.extend(
            lost.iter()
                .filter(|r| !recorded.contains(&(r.key.seq, r.key.attempt)))
                .map(|r| Refusal {
                    key: r.key.clone(),
                    reason: RefusalReason::LeaseLost,
                    message: format!(
                        "attempt {} of task {} is not leased to node `{node_id}` (it was \
                         requeued, leased to another node, or never leased to this one)",
                        r.key.attempt, r.key.seq
                    ),
                }),
        );
        Ok(())
    }

    /// A split step succeeded: its plan becomes the job's tasks, or (if it
    /// is invalid) the job fails. Returns whether tasks were queued.
    async fn accept_split(
        &self,
        tx: &mut Tx,
        job: &mut JobRecord,
        task: &CurrentTask,
        plan: Result<SplitPlan, Failure>,
        now: i64,
    ) -> Result<bool, Error> {
        let inputs: Vec<JobInput> = serde_json::from_str(&job.inputs)
            .map_err(|e| Error::Internal(format!("job inputs: {e}")))?;
        match plan.and_then(|plan| {
            let merge = plan.merge;
            check_plan(plan, &inputs, &self.inner.config).map(|c| (c, merge))
        }) {
            Ok((checked, merge)) => {
                self.insert_plan(tx, job, checked, merge).await?;
                tx.succeed(&job.id, task_node(task), &[(task.seq, task.attempts)], now)
                    .await?;
                Ok(true)
            }
            // A plan that did not arrive intact is the node's fault: retry.
            Err(failure) if failure.kind.is_retryable() => {
                self.fail_task(tx, job, task, &failure, now).await
            }
            // An invalid plan is the splitter's, and would be again.
            Err(failure) => {
                if tx.fail_attempt(&job.id, task, &failure, false, now).await? {
                    self.fail_job(tx, job, &failure, now).await?;
                }
                Ok(false)
            }
        }
    }

    /// Inserts a checked plan's tasks and starts the job running.
    async fn insert_plan(
        &self,
        tx: &mut Tx,
        job: &mut JobRecord,
        checked: CheckedPlan,
        merge: bool,
    ) -> Result<(), Error> {
        if !transition(
            tx,
            job,
            &[JobState::Splitting],
            JobState::Running,
            None,
            None,
        )
        .await?
        {
            return Ok(());
        }
        tx.insert_tasks(&job.id, &job.pool, &checked.tasks).await?;
        tx.insert_deps(&job.id, &checked.deps).await?;
        let has_deps = !checked.deps.is_empty();
        tx.set_job_split(&job.id, checked.tasks.len() as u64, merge, has_deps)
            .await?;
        job.task_count = checked.tasks.len() as u64;
        job.merge = merge;
        job.has_deps = has_deps;
        job.state = JobState::Running;
        Ok(())
    }

    /// An attempt failed: the task is retried if the failure allows and
    /// retries are left, else it fails for good (and with it the job, for
    /// the split and merge steps). Returns whether it was requeued.
    async fn fail_task(
        &self,
        tx: &mut Tx,
        job: &mut JobRecord,
        task: &CurrentTask,
        failure: &Failure,
        now: i64,
    ) -> Result<bool, Error> {
        let retry = failure.kind.is_retryable()
            && task.failures < job.max_task_retries
            && !job.state.is_finished();
        if !tx.fail_attempt(&job.id, task, failure, retry, now).await? {
            return Ok(false);
        }
        if !retry && task.kind != TaskKind::Process {
            self.fail_job(tx, job, &step_failure(task.kind, failure), now)
                .await?;
        }
        Ok(retry)
    }

    /// After a batch of a job's results: completes a merged job, releases
    /// dependents of finished tasks, and moves a running job on. Returns
    /// whether tasks were queued.
    pub(super) async fn settle(
        &self,
        tx: &mut Tx,
        mut job: JobRecord,
        merged: bool,
        processed: &[i64],
        now: i64,
    ) -> Result<bool, Error> {
        let mut queued = false;
        if merged {
            transition(
                tx,
                &mut job,
                &[JobState::Merging],
                JobState::Completed,
                None,
                Some(now),
            )
            .await?;
        }
        if job.has_deps && !processed.is_empty() {
            queued |= tx.release_dependents(&job.id, processed).await? > 0;
        }
        if job.state == JobState::Running {
            let mut fresh = tx
                .job(&job.id)
                .await?
                .ok_or_else(|| Error::Internal(format!("job {} vanished", job.id)))?;
            queued |= self.advance(tx, &mut fresh, now).await?;
            job = fresh;
        }
        if job.state.is_finished() {
            self.inner.jobs.forget(&job.id);
        }
        Ok(queued)
    }

    /// Tasks failed because they lost their node too often: fails their
    /// jobs (a split or merge step) or moves them on. Returns whether tasks
    /// were queued.
    pub(super) async fn settle_lost(
        &self,
        tx: &mut Tx,
        failed: &[(String, TaskKind)],
        now: i64,
    ) -> Result<bool, Error> {
        let mut by_job: BTreeMap<&str, Option<TaskKind>> = BTreeMap::new();
        for (job, kind) in failed {
            let step = by_job.entry(job).or_default();
            if *kind != TaskKind::Process {
                *step = Some(*kind);
            }
        }
        let mut queued = false;
        for (job_id, step) in by_job {
            let Some(mut job) = tx.job(job_id).await? else {
                continue;
            };
            if job.state.is_finished() {
                continue;
            }
            match step {
                Some(kind) => {
                    let lost = Failure::new(FailureKind::NodeLost, "it lost its node too often");
                    self.fail_job(tx, &mut job, &step_failure(kind, &lost), now)
                        .await?;
                    self.inner.jobs.forget(job_id);
                }
                None => queued |= self.settle(tx, job, false, &[], now).await?,
            }
        }
        Ok(queued)
    }

    /// Moves a running job on once none of its tasks can run any more:
    /// to merging, completed, or failed. Returns whether it queued the merge.
    async fn advance(&self, tx: &mut Tx, job: &mut JobRecord, now: i64) -> Result<bool, Error> {
        let c = job.counts;
        if c.queued > 0 || c.running > 0 {
            return Ok(false);
        }
        let stuck = c.blocked + c.cancelled;
        if c.failed > 0 || stuck > 0 {
            let first = tx.first_failed_task(&job.id).await?;
            let mut message = format!("{} of {} tasks failed", c.failed, job.task_count);
            if stuck > 0 {
                message.push_str(&format!(
                    "; {stuck} could not run because a task they depend on failed"
                ));
            }
            if let Some((name, failure)) = &first {
                message.push_str(&format!("; first failure: task `{name}`: {failure}"));
            }
            let kind = first
                .as_ref()
                .map_or(FailureKind::GuestError, |(_, f)| f.kind);
            let failure = Failure::new(kind, message);
            self.fail_job(tx, job, &failure, now).await?;
            return Ok(false);
        }
        let running = [JobState::Running];
        if job.merge {
            // Whoever moves the job on queues the merge, once.
            if !transition(tx, job, &running, JobState::Merging, None, None).await? {
                return Ok(false);
            }
            let merge = NewTask::step(job.task_count as i64 + 1, MERGE_TASK, TaskKind::Merge);
            tx.insert_merge(&job.id, &job.pool, &merge).await?;
            Ok(true)
        } else {
            transition(tx, job, &running, JobState::Completed, None, Some(now)).await?;
            Ok(false)
        }
    }

    async fn fail_job(
        &self,
        tx: &mut Tx,
        job: &mut JobRecord,
        failure: &Failure,
        now: i64,
    ) -> Result<(), Error> {
        transition(
            tx,
            job,
            &JobState::UNFINISHED,
            JobState::Failed,
            Some(failure),
            Some(now),
        )
        .await?;
        Ok(())
    }
}

/// Moves `job` from one of the states `from` to `to` in the database, and
/// in `job` as well; when another writer has moved the job on meanwhile,
/// nothing changes there and `job` learns its state. Returns whether it
/// moved the job.
async fn transition(
    tx: &mut Tx,
    job: &mut JobRecord,
    from: &[JobState],
    to: JobState,
    failure: Option<&Failure>,
    finished_at: Option<i64>,
) -> Result<bool, Error> {
    if tx
        .move_job_state(&job.id, from, to, failure, finished_at)
        .await?
    {
        job.state = to;
        job.failure = failure.cloned();
        job.finished_at = finished_at;
        return Ok(true);
    }
    if let Some(now) = tx.job(&job.id).await? {
        job.state = now.state;
    }
    Ok(false)
}

/// The node a task is leased to (a task the commit path handles always has
/// one).
fn task_node(task: &CurrentTask) -> &str {
    task.node.as_deref().unwrap_or_default()
}

/// The job's failure when its split or merge step failed for good.
fn step_failure(kind: TaskKind, failure: &Failure) -> Failure {
    let step = if kind == TaskKind::Split {
        SPLIT_TASK
    } else {
        MERGE_TASK
    };
    let step = step.trim_start_matches('_');
    Failure::new(
        failure.kind,
        format!("the {step} step failed: {}", failure.message),
    )
}

/// The attempt row of a report.
fn attempt_record<'a>(
    job_id: &'a str,
    node_id: &'a str,
    r: &'a AttemptReport,
) -> AttemptRecord<'a> {
    AttemptRecord {
        job_id,
        seq: r.key.seq,
        attempt: r.key.attempt,
        node: node_id,
        failure: match &r.outcome {
            Outcome::Failed(f) => Some(f),
            Outcome::Succeeded { .. } => None,
        },
        started_at: r.started_at,
        finished_at: r.finished_at,
        stdout: LogRef::of(r.stdout.as_ref()),
        stderr: LogRef::of(r.stderr.as_ref()),
        usage: r.usage,
    }
}
