//! End-to-end tests: the real HTTP API on an ephemeral port (and, where a
//! process must die, the real `tessera` binary), driven by the typed client.
//!
//! One test binary with a module per area, so the suite links once.

mod harness;

mod apps;
mod jobs;
mod montecarlo;
mod restart;
mod sandbox;
