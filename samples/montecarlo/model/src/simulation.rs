use std::ops::Range;

use crate::portfolio::{ASSETS, CORRELATION};
use crate::random::{PathRng, Ziggurat};

const N: usize = ASSETS.len();

/// Trading days in a year: a daily step is Δt = 1/252 years.
pub const TRADING_DAYS_PER_YEAR: f64 = 252.0;

/// The simulation of the portfolio over a horizon, for one seed, with
/// everything that does not depend on the path computed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    seed: u64,
    horizon_days: u32,
    portfolio_value: f64,
    /// Lower-triangular Cholesky factor of [`CORRELATION`].
    cholesky: [[f64; N]; N],
    /// (μ − σ²/2)·Δt per asset.
    drift_per_day: [f64; N],
    /// σ·√Δt per asset.
    volatility_per_day: [f64; N],
    /// The tables of the normal random numbers.
    ziggurat: Ziggurat,
}

impl Model {
    /// The model of the portfolio over `horizon_days` trading days, with the
    /// random numbers of `seed`.
    pub fn new(seed: u64, horizon_days: u32) -> Self {
        let dt = 1.0 / TRADING_DAYS_PER_YEAR;
        let mut portfolio_value = 0.0;
        let mut drift_per_day = [0.0; N];
        let mut volatility_per_day = [0.0; N];
        for (i, asset) in ASSETS.iter().enumerate() {
            portfolio_value += asset.value;
            drift_per_day[i] = (asset.drift - 0.5 * asset.volatility * asset.volatility) * dt;
            volatility_per_day[i] = asset.volatility * libm::sqrt(dt);
        }
        Self {
            seed,
            horizon_days,
            portfolio_value,
            cholesky: cholesky(&CORRELATION),
            drift_per_day,
            volatility_per_day,
            ziggurat: Ziggurat::new(),
        }
    }

    /// The seed of the random numbers.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The horizon, in trading days.
    pub fn horizon_days(&self) -> u32 {
        self.horizon_days
    }

    /// The portfolio's value today, in USD.
    pub fn portfolio_value(&self) -> f64 {
        self.portfolio_value
    }
}

/// The Cholesky–Banachiewicz factorisation L·Lᵀ = `matrix`.
///
/// # Panics
///
/// When `matrix` is not positive definite.
fn cholesky(matrix: &[[f64; N]; N]) -> [[f64; N]; N] {
    let mut l = [[0.0; N]; N];
    for i in 0..N {
        for j in 0..=i {
            let mut sum = matrix[i][j];
            for (a, b) in l[i][..j].iter().zip(&l[j][..j]) {
                sum -= a * b;
            }
            l[i][j] = if i == j {
                assert!(sum > 0.0, "the correlation matrix is not positive definite");
                libm::sqrt(sum)
            } else {
                sum / l[j][j]
            };
        }
    }
    l
}

/// The loss of path `index`: today's portfolio value minus its value after
/// the horizon (negative when the portfolio gains).
///
/// Each day draws one standard normal per asset, correlates them with the
/// Cholesky factor and adds (μ − σ²/2)·Δt + σ·√Δt·z to the asset's
/// log-return; an asset ends at its value times the exponential of its
/// log-return.
pub fn path_loss(model: &Model, index: u64) -> f64 {
    let mut rng = PathRng::new(model.seed, index);
    let mut log_returns = [0.0; N];
    let mut shocks = [0.0; N];
    for _ in 0..model.horizon_days {
        for shock in &mut shocks {
            *shock = rng.normal(&model.ziggurat);
        }
        for (i, log_return) in log_returns.iter_mut().enumerate() {
            let mut z = 0.0;
            for (l, shock) in model.cholesky[i][..=i].iter().zip(&shocks) {
                z += l * shock;
            }
            *log_return += model.drift_per_day[i] + model.volatility_per_day[i] * z;
        }
    }
    let mut final_value = 0.0;
    for (asset, log_return) in ASSETS.iter().zip(log_returns) {
        final_value += asset.value * libm::exp(log_return);
    }
    model.portfolio_value - final_value
}

/// The losses of the paths in `range`, in path order.
pub fn losses(model: &Model, range: Range<u64>) -> Vec<f64> {
    range.map(|index| path_loss(model, index)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_factor_reproduces_the_correlation() {
        let l = Model::new(0, 1).cholesky;
        for i in 0..N {
            for j in 0..N {
                let product: f64 = (0..N).map(|k| l[i][k] * l[j][k]).sum();
                assert!((product - CORRELATION[i][j]).abs() < 1e-12, "({i}, {j})");
            }
        }
    }

    #[test]
    fn losses_have_the_expected_scale() {
        let model = Model::new(42, 10);
        let losses = losses(&model, 0..20_000);
        let mean = losses.iter().sum::<f64>() / losses.len() as f64;
        let variance =
            losses.iter().map(|l| (l - mean) * (l - mean)).sum::<f64>() / losses.len() as f64;
        let sd = libm::sqrt(variance);
        // Over 10 days the book drifts up by about 0.2% and its returns
        // spread by about 2.5% of its value.
        let value = model.portfolio_value();
        assert!((mean / value + 0.0021).abs() < 0.002, "mean {mean}");
        assert!((0.02..0.03).contains(&(sd / value)), "sd {sd}");
    }

    #[test]
    fn a_path_does_not_depend_on_its_neighbours() {
        let model = Model::new(42, 10);
        let all = losses(&model, 0..100);
        assert_eq!(losses(&model, 37..40), all[37..40]);
        assert_eq!(path_loss(&model, 99).to_bits(), all[99].to_bits());
    }

    #[test]
    fn the_algorithm_is_pinned() {
        // Any change to the generator, the portfolio or the stepping changes
        // every job's answer; this bit pattern makes such a change deliberate.
        assert_eq!(
            path_loss(&Model::new(42, 10), 0).to_bits(),
            0xc102_e59c_a442_b200
        );
    }

    #[test]
    fn zero_horizon_loses_nothing() {
        assert_eq!(path_loss(&Model::new(1, 0), 5), 0.0);
    }
}
