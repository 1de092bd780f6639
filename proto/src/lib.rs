//! Keel's wire protocols, generated from `proto/*.proto`. No logic lives here.

/// The public API (`keel.v1`).
pub mod keel {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("keel.v1");
}

/// The control-node transport (`keel.raft.v1`).
pub mod raft {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("keel.raft.v1");
}

/// The host manager protocol (`keel.host.v1`).
pub mod host {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("keel.host.v1");
}
