//! Keel's cluster lab: starts real `keel server` clusters as processes,
//! injects faults (kill -9, restart, stop), and runs whole-cluster
//! benchmarks. The node crate's integration tests use [`cluster::Cluster`]
//! as their one fixture.

pub mod bench;
pub mod cluster;
pub mod history;
pub mod host;
pub mod netns;
pub mod ports;
