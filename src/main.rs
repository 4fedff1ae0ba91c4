//! The `quarters` binary. All the work is in the crates; see ARCHITECTURE.md.

fn main() -> std::process::ExitCode {
    quarters_cli::main()
}
