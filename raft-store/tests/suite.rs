//! openraft's storage conformance suite against the RocksDB log store and state machine.

use keel_raft_store::log_store::LogStore;
use keel_raft_store::state_machine::StateMachine;
use keel_raft_store::{open, Identity, StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = Identity {
            cluster: "suite".into(),
            node_id: 0,
        };
        let store = open(dir.path(), &identity).expect("open store");
        Ok((dir, store.log_store, store.state_machine))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError> {
    Suite::test_all(RocksBuilder)
}
