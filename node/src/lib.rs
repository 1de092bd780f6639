//! The `keel` binary's roles: control node (`server`), host manager (`host`),
//! local cluster (`dev`) and the CLI. A library so integration tests can
//! drive the engines directly; `main.rs` only calls [`cli::main`].

pub mod api;
pub mod background;
pub mod backup;
pub mod classes;
pub mod cli;
pub mod clock;
pub mod dev;
pub mod files;
pub mod hex;
pub mod host;
pub mod leader;
pub mod server;
pub mod tls;
pub mod window;
