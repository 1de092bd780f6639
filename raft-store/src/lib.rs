//! Keel's replicated admin store.
//!
//! Everything Keel knows is a table in [`AdminState`], and the only way it
//! changes is a committed [`Command`] applied by [`AdminState::apply`]. This
//! crate owns the openraft type configuration, the RocksDB log store and
//! state machine, and the versioned encodings; it does no I/O besides RocksDB,
//! reads no clock and knows nothing of HTTP or DNS.

pub mod catalog;
pub mod codec;
pub mod command;
pub mod error;
mod log_flush;
pub mod log_store;
mod recent_log;
pub mod records;
pub mod state;
pub mod state_machine;
pub mod store;
pub mod timefmt;
pub mod transitions;
pub mod zone_journal;

use std::io::Cursor;

pub use catalog::*;
pub use command::{Command, Proposal, ProposalBatch, Rejection, Response};
pub use error::StoreError;
pub use records::*;
pub use state::AdminState;
pub use store::{open, Identity, OpenedStore};

/// A control node's identity in Raft.
pub type NodeId = u64;

/// How other control nodes reach a member: its internal Raft address and its public API.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeelNode {
    /// host:port of the internal `keel.raft.v1` listener.
    pub raft_addr: String,
    /// host:port of the public API listener.
    pub api_addr: String,
}

impl std::fmt::Display for KeelNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "raft={} api={}", self.raft_addr, self.api_addr)
    }
}

openraft::declare_raft_types!(
    /// Keel's openraft type configuration.
    pub TypeConfig:
        D = ProposalBatch,
        R = Vec<Response>,
        NodeId = NodeId,
        Node = KeelNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle for Keel's type configuration.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// openraft's storage error for this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
