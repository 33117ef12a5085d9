//! The `tessera` command.

fn main() -> std::process::ExitCode {
    // The node's task slots are this same executable, started as workers
    // (they log to the node's stderr, with its TESSERA_LOG filter).
    tessera_portal_api::cli::init_tracing();
    tessera_framework::node::run_if_worker();
    tessera_portal_api::cli::main()
}
