//! `freezer-agent`: upstream OpenStack Freezer's agent command line on freezer-rs (see
//! `freezer_cli::agent`).

fn main() -> std::process::ExitCode {
    freezer_cli::agent::main()
}
