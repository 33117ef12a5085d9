//! The `tessera` command.

fn main() -> std::process::ExitCode {
    tessera_portal_api::cli::main()
}
