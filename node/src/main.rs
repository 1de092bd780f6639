//! `keel`: the control node, the dev cluster and the CLI in one binary.

mod api;
mod cli;
mod clock;
mod dev;
mod leader;
mod server;

fn main() -> std::process::ExitCode {
    cli::main()
}
