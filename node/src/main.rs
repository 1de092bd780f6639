//! `keel`: the control node, host manager, dev cluster and CLI in one binary.

fn main() -> std::process::ExitCode {
    keel_node::cli::main()
}
