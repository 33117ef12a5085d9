//! End-to-end tests: the real HTTP API on an ephemeral port (and, where a
//! process must die, the real `tessera` binary), driven by the typed client.
//!
//! One test binary with a module per area, so the suite links once.

mod harness;

mod accounts;
mod apps;
mod autoscale;
mod chaos;
mod cli;
mod demo;
mod exec;
mod imageproc;
mod jobs;
mod kmer;
mod montecarlo;
mod nodes;
mod pools;
mod providers;
mod render;
mod replicas;
mod restart;
mod sandbox;
mod testshard;
