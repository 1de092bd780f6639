//! Database engines a host manager runs. PostgreSQL is the first; a second
//! engine implements the same operations.

pub mod postgres;

use serde::{Deserialize, Serialize};

/// Engine settings derived from an instance class (see `crate::classes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// shared_buffers, MiB.
    pub shared_buffers_mb: u32,
    /// max_connections.
    pub max_connections: u32,
    /// work_mem, MiB.
    pub work_mem_mb: u32,
    /// effective_cache_size, MiB.
    pub effective_cache_size_mb: u32,
}

/// Everything an engine needs to know about one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Instance id (names the volume directory).
    pub id: String,
    /// Address it listens on (the host's address).
    pub listen_addr: String,
    /// Port, fixed for the database's life.
    pub port: u16,
    /// Engine settings.
    pub settings: Settings,
    /// Allocated storage.
    pub storage_gib: u32,
    /// Master user name.
    pub master_user: String,
    /// The master password as a SCRAM-SHA-256 verifier: the clear password never leaves the API node.
    pub master_verifier: String,
}

/// What an engine observed of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The engine process is running.
    pub running: bool,
    /// A SQL connection succeeded.
    pub accepting: bool,
    /// Bytes the volume uses.
    pub used_bytes: u64,
    /// What went wrong, if anything.
    pub problem: Option<String>,
}

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine's binaries or OS user are missing.
    #[error("engine not usable on this host: {0}")]
    Unavailable(String),
    /// A command ran and failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// Which step.
        what: String,
        /// Its output or error.
        detail: String,
    },
    /// File system trouble.
    #[error("{what}: {source}")]
    Io {
        /// Which step.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl EngineError {
    /// Whether retrying the same task may succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self, EngineError::Unavailable(_))
    }
}
