//! Tessera's portal: the HTTP API, a typed client, and the `tessera`
//! command that runs a service, talks to one, and benchmarks both.
//!
//! - [`server`] serves the portal API (`/v1/...`) over a
//!   [`tessera_framework::service::Service`];
//! - [`client`] is the typed client of that API;
//! - [`node_client`] is the node protocol's client, the coordinator a
//!   remote node agent (`tessera node`) talks to;
//! - [`embedded`] runs a service and its HTTP server in this process
//!   (`tessera serve`, `tessera demo`, the benchmarks, the tests);
//! - [`cli`] is the `tessera` command line.

pub mod cli;
pub mod client;
pub mod embedded;
pub mod node_client;
pub mod server;
