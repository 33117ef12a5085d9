use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::{Model, tail_len};

/// The parameters of a `montecarlo` job, as its `assembly.toml` declares them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RiskParameters {
    /// The number of simulated paths, N.
    pub paths: u64,
    /// The seed of the random numbers.
    pub seed: u64,
    /// The confidence level α of VaR and expected shortfall, in [0.5, 1).
    pub confidence: f64,
    /// The horizon in trading days, 1 to 252.
    pub horizon_days: u32,
    /// How many tasks simulate the paths (fewer when there are fewer paths).
    pub tasks: u32,
}

impl RiskParameters {
    /// Checks the ranges the model needs, with messages for the job's user.
    pub fn validate(&self) -> Result<(), String> {
        if self.paths == 0 {
            return Err("`paths` must be at least 1".into());
        }
        if !(0.5..1.0).contains(&self.confidence) {
            return Err(format!(
                "`confidence` must be at least 0.5 and below 1, not {}",
                self.confidence
            ));
        }
        if !(1..=252).contains(&self.horizon_days) {
            return Err(format!(
                "`horizon_days` must be between 1 and 252, not {}",
                self.horizon_days
            ));
        }
        if self.tasks == 0 {
            return Err("`tasks` must be at least 1".into());
        }
        Ok(())
    }

    /// The model these parameters simulate.
    pub fn model(&self) -> Model {
        Model::new(self.seed, self.horizon_days)
    }

    /// The number of largest losses VaR and expected shortfall need.
    pub fn tail_len(&self) -> usize {
        tail_len(self.paths, self.confidence)
    }
}

/// The answer of a `montecarlo` job, written to its `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskSummary {
    /// The number of simulated paths.
    pub paths: u64,
    /// The confidence level.
    pub confidence: f64,
    /// The horizon in trading days.
    pub horizon_days: u32,
    /// The seed of the random numbers.
    pub seed: u64,
    /// The portfolio's value today, in USD.
    pub portfolio_value: f64,
    /// Value-at-risk, in USD.
    pub var: f64,
    /// Expected shortfall, in USD.
    pub expected_shortfall: f64,
    /// The number of tasks that simulated the paths.
    pub tasks: u64,
}

/// Splits the paths `0..paths` into `min(tasks, paths)` contiguous ranges
/// whose sizes differ by at most one, the longer ones first.
pub fn partition(paths: u64, tasks: u64) -> Vec<Range<u64>> {
    let tasks = tasks.min(paths);
    if tasks == 0 {
        return Vec::new();
    }
    let (base, longer) = (paths / tasks, paths % tasks);
    let mut start = 0;
    (0..tasks)
        .map(|i| {
            let count = base + u64::from(i < longer);
            let range = start..start + count;
            start += count;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Histogram, Tail, path_loss, risk_from_tail};

    #[test]
    fn partition_covers_every_path_once() {
        assert!(partition(0, 4).is_empty());
        assert_eq!(partition(3, 8), vec![0..1, 1..2, 2..3]);
        assert_eq!(partition(10, 3), vec![0..4, 4..7, 7..10]);
        let ranges = partition(1_000_003, 16);
        assert_eq!(ranges.len(), 16);
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[15].end, 1_000_003);
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn validation_explains_what_is_wrong() {
        let ok = RiskParameters {
            paths: 10,
            seed: 1,
            confidence: 0.99,
            horizon_days: 10,
            tasks: 2,
        };
        assert_eq!(ok.validate(), Ok(()));
        let err = RiskParameters {
            confidence: 1.0,
            ..ok
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("`confidence`"), "{err}");
        assert!(
            RiskParameters {
                horizon_days: 253,
                ..ok
            }
            .validate()
            .is_err()
        );
    }

    /// What the processor does, per task then in the merge step.
    fn risk_with_tasks(params: &RiskParameters) -> (u64, u64, Histogram) {
        let model = params.model();
        let k = params.tail_len();
        let mut merged_tail = Tail::new(k);
        let mut merged_histogram = Histogram::new(&model);
        for range in partition(params.paths, params.tasks.into()) {
            let mut tail = Tail::new(k.min(range.end as usize - range.start as usize));
            let mut histogram = Histogram::new(&model);
            for index in range {
                let loss = path_loss(&model, index);
                tail.push(loss);
                histogram.add(loss);
            }
            merged_tail.extend(tail.into_sorted_desc());
            merged_histogram.merge(&histogram).unwrap();
        }
        let (var, es) = risk_from_tail(&merged_tail.into_sorted_desc(), k);
        (var.to_bits(), es.to_bits(), merged_histogram)
    }

    #[test]
    fn the_answer_does_not_depend_on_the_task_count() {
        let params = RiskParameters {
            paths: 5003,
            seed: 42,
            confidence: 0.95,
            horizon_days: 10,
            tasks: 1,
        };
        let one = risk_with_tasks(&params);
        assert_eq!(one.2.total(), 5003);
        for tasks in [2, 3, 7, 64, 5003, 10_000] {
            assert_eq!(
                risk_with_tasks(&RiskParameters { tasks, ..params }),
                one,
                "{tasks}"
            );
        }
    }
}
