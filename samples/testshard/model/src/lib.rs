//! The model behind the `testshard` sample: a test suite run in shards.
//!
//! - [`Suite`]: test cases `{name, program, args, expected_exit?,
//!   estimated_ms}` read from JSON or TOML ([`parse_suite`]).
//! - [`shard`]: longest-processing-time-first scheduling: cases by estimated
//!   duration, longest first (ties: suite order), each onto the least-loaded
//!   shard (ties: lowest shard number).
//! - [`evaluate`]: a case's outcome from what its program did, and
//!   [`junit_xml`] / [`Summary`]: the job's report.
//! - [`run_check`]: what the `checks` test program of the application image
//!   does, so that [`run_native`] can predict every outcome natively: the
//!   reference of the tests and of `tessera bench`.

mod checks;
mod report;
mod shard;
mod suite;

pub use checks::{
    CHECKS, CheckRun, count_primes, observed_status, resolve_app_path, run_check, run_native,
};
pub use report::{CaseResult, Summary, TAIL_BYTES, evaluate, junit_xml, tail};
pub use shard::shard;
pub use suite::{Suite, TestCase, TestshardParams, parse_suite};
