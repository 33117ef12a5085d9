//! The task-count samples a formula reads through its sample metrics.

use std::collections::VecDeque;
use std::time::Duration;

/// One sample of the task counts, taken at `at_ms` (ms since the Unix epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// When the sample was taken, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Tasks queued and ready to run.
    pub active: u64,
    /// Tasks running on a node.
    pub running: u64,
    /// Tasks that have succeeded.
    pub succeeded: u64,
    /// Tasks that have failed.
    pub failed: u64,
}

/// Samples of one pool, oldest first, taken every `period`; older than `keep` are dropped.
#[derive(Clone, Debug)]
pub struct History {
    samples: VecDeque<Sample>,
    period: Duration,
    keep: Duration,
}

impl History {
    /// An empty history for samples taken every `period`, keeping those
    /// at most `keep` older than the newest.
    pub fn new(period: Duration, keep: Duration) -> Self {
        Self {
            samples: VecDeque::new(),
            period,
            keep,
        }
    }

    /// Appends a sample and drops those more than `keep` older than it.
    ///
    /// A sample older than the newest is ignored; one taken at the same
    /// time as the newest replaces it, so no instant is counted twice.
    pub fn push(&mut self, sample: Sample) {
        match self.samples.back_mut() {
            Some(newest) if sample.at_ms < newest.at_ms => return,
            Some(newest) if sample.at_ms == newest.at_ms => *newest = sample,
            _ => self.samples.push_back(sample),
        }
        let oldest_kept = sample.at_ms.saturating_sub(millis(self.keep));
        while self.samples.front().is_some_and(|s| s.at_ms < oldest_kept) {
            self.samples.pop_front();
        }
    }

    /// How many samples the history holds.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the history holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// How often samples are taken.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The sample period in milliseconds, at least 1 so that it can divide.
    pub(super) fn period_ms(&self) -> i64 {
        millis(self.period).max(1)
    }

    /// When the oldest sample was taken.
    pub(super) fn begin_ms(&self) -> Option<i64> {
        self.samples.front().map(|s| s.at_ms)
    }

    /// The newest `count` samples, oldest first.
    pub(super) fn latest(&self, count: usize) -> impl Iterator<Item = &Sample> {
        self.samples.iter().skip(self.len().saturating_sub(count))
    }

    /// The samples taken after `start_ms` and up to `end_ms` (a half-open
    /// range, so that consecutive ranges never share a sample), oldest first.
    pub(super) fn between(&self, start_ms: i64, end_ms: i64) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| start_ms < s.at_ms && s.at_ms <= end_ms)
    }

    /// The percentage (0 to 100) of the samples expected in a range that
    /// exist: one is expected per period of the range's length, at least one.
    pub(super) fn percent_between(&self, start_ms: i64, end_ms: i64) -> f64 {
        let expected = (end_ms.saturating_sub(start_ms) / self.period_ms()).max(1);
        let found = self.between(start_ms, end_ms).count();
        (found as f64 * 100.0 / expected as f64).min(100.0)
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
