//! Tessera's engine: publishing applications, splitting jobs into tasks,
//! scheduling them on nodes, running them in WebAssembly sandboxes, and
//! keeping every result.
//! (overview written below once the modules settle)

pub mod blobs;
pub mod digest;
pub mod error;
pub mod jobs;
pub mod model;
pub mod node;
pub mod package;
pub mod protocol;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod service;
mod store;
