//! The model behind the `montecarlo` sample: portfolio value-at-risk by Monte
//! Carlo simulation, computed so that every number is reproducible bit for bit.
//!
//! A fixed portfolio of [`ASSETS`] (position values in USD, annual drift and
//! volatility, [`CORRELATION`]) is simulated over `horizon_days` trading days
//! with daily correlated geometric Brownian motion steps (Δt = 1/252). The
//! *loss* of a path is the initial portfolio value minus its final value
//! ([`path_loss`]).
//!
//! Reproducibility is the point of the design:
//!
//! - each path draws its random numbers from its own generator, seeded by the
//!   pair (seed, path index), so a path's loss does not depend on which task
//!   simulates it or in which order;
//! - every transcendental function goes through `libm`, whose results are the
//!   same natively and in WebAssembly (std's `ln`, `exp` or `cos` may call the
//!   platform's math library);
//! - tails are ordered with [`f64::total_cmp`], and sums run in a fixed order.
//!
//! So the guests (in wasm) and the host's tests (natively) agree exactly, and a
//! job's answer does not depend on how many tasks it was split into.
//!
//! # Risk measures
//!
//! With the N losses sorted ascending, L(1) ≤ … ≤ L(N), and the confidence α:
//! m = ⌈N·α⌉ (computed in `f64`) clamped to [1, N]; VaR = L(m); the tail has
//! k = N − m + 1 values ([`tail_len`]); expected shortfall = the mean of the k
//! largest losses, summed from the largest down ([`risk_from_tail`]). A task
//! keeps only its k largest losses ([`Tail`]): the k largest of the union of
//! these partial tails are the k largest of all losses.

mod histogram;
mod parameters;
mod portfolio;
mod random;
mod risk;
mod simulation;

pub use histogram::{HISTOGRAM_BINS, Histogram};
pub use parameters::{RiskParameters, RiskSummary, partition};
pub use portfolio::{ASSETS, Asset, CORRELATION};
pub use risk::{Tail, decode_tail, encode_tail, largest, risk_from_tail, tail_len};
pub use simulation::{Model, TRADING_DAYS_PER_YEAR, losses, path_loss};
