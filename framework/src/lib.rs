//! Tessera's engine: publishing applications, splitting jobs into tasks,
//! scheduling them on nodes, running them in WebAssembly sandboxes, and
//! keeping every result.
//!
//! # Concepts
//!
//! An **application** is an application image (a zip mounted read-only at
//! `/app`) and a cloud assembly: a **splitter** and a **processor**, two
//! WebAssembly components implementing the worlds of `wit/tessera.wit`.
//! Publishing ([`registry`]) checks both and records an immutable version.
//!
//! A **job** runs an application with parameters and input files
//! ([`jobs`]). It starts as a `_split` step; the splitter's plan becomes the
//! job's **tasks**, which may depend on each other; once every task has
//! succeeded a `_merge` step runs the processor's merge. Each run of a task
//! on a node is an **attempt**; failed attempts are retried.
//!
//! A **node** runs attempts on its task slots ([`node`]). It leases work
//! from the [`scheduler`] through the [`protocol::Coordinator`] interface,
//! runs each attempt in a fresh sandbox ([`runtime`]), and commits the
//! results in batches. The embedded service's local pool is a node running in
//! process; `tessera node` agents on other machines run the same node over
//! the portal's HTTP form of the protocol.
//!
//! State lives in a SQL database ([`store`], private) and files in a
//! content-addressed blob store ([`blobs`]); a [`service::Service`] opens
//! them on a data folder and is the handle the portal API calls.
//!
//! # Modules
//!
//! - [`service`]: the service handle and its settings.
//! - [`registry`], [`jobs`], [`accounts`], [`pools`]: the operations of the
//!   portal API.
//! - [`scheduler`], [`protocol`], [`node`]: leasing, running and committing.
//! - [`autoscale`]: pool-sizing formulas in Azure Batch's language.
//! - [`runtime`]: wasmtime (the only module that names its types).
//! - [`package`]: untrusted zips, the assembly manifest, parameters.
//! - [`blobs`], [`digest`]: content-addressed files.
//! - [`model`], [`error`]: what the API returns, and what can go wrong.

pub mod accounts;
pub mod auth;
pub mod autoscale;
pub mod blobs;
pub mod digest;
pub mod error;
pub mod jobs;
pub mod model;
pub mod node;
pub mod package;
pub mod pools;
pub mod protocol;
mod provider;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod service;
mod store;
