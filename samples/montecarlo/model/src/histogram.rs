use serde::{Deserialize, Serialize};

use crate::Model;

/// The number of regular bins of a [`Histogram`].
pub const HISTOGRAM_BINS: usize = 200;

/// Counts of losses in fixed bins: [`HISTOGRAM_BINS`] equal bins from −V/2
/// to +V/2, V being the portfolio value (0.5% of V per bin), plus an
/// underflow and an overflow bin. Counts are integers, so histograms of
/// different tasks add up exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// The lower bound of the first bin.
    pub loss_min: f64,
    /// The upper bound of the last bin.
    pub loss_max: f64,
    /// Losses below `loss_min`.
    pub underflow: u64,
    /// Losses in each bin, from `loss_min` up.
    pub counts: Vec<u64>,
    /// Losses at or above `loss_max`.
    pub overflow: u64,
}

impl Histogram {
    /// An empty histogram over the loss range of `model`'s portfolio.
    pub fn new(model: &Model) -> Self {
        let half = model.portfolio_value() / 2.0;
        Self {
            loss_min: -half,
            loss_max: half,
            underflow: 0,
            counts: vec![0; HISTOGRAM_BINS],
            overflow: 0,
        }
    }

    /// The width of each regular bin.
    pub fn bin_width(&self) -> f64 {
        (self.loss_max - self.loss_min) / self.counts.len() as f64
    }

    /// Counts one loss.
    pub fn add(&mut self, loss: f64) {
        // No path produces NaN; counting it somewhere keeps totals right.
        if loss.is_nan() || loss < self.loss_min {
            self.underflow += 1;
        } else if loss >= self.loss_max {
            self.overflow += 1;
        } else {
            let bin = ((loss - self.loss_min) / self.bin_width()) as usize;
            let last = self.counts.len() - 1;
            self.counts[bin.min(last)] += 1;
        }
    }

    /// Adds the counts of `other`, which must have the same bins.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), String> {
        if other.loss_min.to_bits() != self.loss_min.to_bits()
            || other.loss_max.to_bits() != self.loss_max.to_bits()
            || other.counts.len() != self.counts.len()
        {
            return Err(format!(
                "histogram bins differ: {} bins over [{}, {}) and {} bins over [{}, {})",
                self.counts.len(),
                self.loss_min,
                self.loss_max,
                other.counts.len(),
                other.loss_min,
                other.loss_max
            ));
        }
        self.underflow += other.underflow;
        self.overflow += other.overflow;
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        Ok(())
    }

    /// The number of losses counted.
    pub fn total(&self) -> u64 {
        self.underflow + self.counts.iter().sum::<u64>() + self.overflow
    }

    /// Every bin as (lower bound, upper bound, count), from the underflow bin
    /// (−∞, `loss_min`) to the overflow bin [`loss_max`, +∞).
    pub fn bins(&self) -> Vec<(f64, f64, u64)> {
        let width = self.bin_width();
        let edge = |i: usize| {
            if i == self.counts.len() {
                self.loss_max
            } else {
                self.loss_min + i as f64 * width
            }
        };
        let mut bins = Vec::with_capacity(self.counts.len() + 2);
        bins.push((f64::NEG_INFINITY, self.loss_min, self.underflow));
        for (i, &count) in self.counts.iter().enumerate() {
            bins.push((edge(i), edge(i + 1), count));
        }
        bins.push((self.loss_max, f64::INFINITY, self.overflow));
        bins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_land_in_their_bins() {
        let model = Model::new(0, 1);
        let mut h = Histogram::new(&model);
        let v = model.portfolio_value();
        h.add(-v);
        h.add(-v / 2.0);
        h.add(0.0);
        h.add(v / 2.0 - 1.0);
        h.add(v / 2.0);
        assert_eq!(h.underflow, 1);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[HISTOGRAM_BINS / 2], 1);
        assert_eq!(h.counts[HISTOGRAM_BINS - 1], 1);
        assert_eq!(h.overflow, 1);
        assert_eq!(h.total(), 5);
        let bins = h.bins();
        assert_eq!(bins.len(), HISTOGRAM_BINS + 2);
        assert_eq!(bins[1].0, -v / 2.0);
        assert_eq!(bins[HISTOGRAM_BINS].1, v / 2.0);
    }

    #[test]
    fn merging_needs_the_same_bins() {
        let mut a = Histogram::new(&Model::new(0, 1));
        let mut b = a.clone();
        b.add(0.0);
        a.merge(&b).unwrap();
        assert_eq!(a.total(), 1);
        b.counts.pop();
        assert!(a.merge(&b).is_err());
    }
}
