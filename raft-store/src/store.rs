//! Opening a node's data directory: RocksDB, identity check, log and state machine.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DBRecoveryMode, Options, DB};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::log_store::{LogStore, CF_LOG, CF_META};
use crate::state_machine::{StateHandle, StateMachine, CF_SM};
use crate::StoreError;

const KEY_IDENTITY: &[u8] = b"identity";

/// Which cluster and node a data directory belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Cluster name.
    pub cluster: String,
    /// Node id.
    pub node_id: u64,
}

/// A node's opened store.
pub struct OpenedStore {
    /// Raft log and vote.
    pub log_store: LogStore,
    /// The state machine.
    pub state_machine: StateMachine,
    /// Read handle on the applied state.
    pub state: StateHandle,
}

/// Open (or create) the store in `dir`, refusing a directory of another cluster or node.
pub fn open(dir: &Path, identity: &Identity) -> Result<OpenedStore, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // A torn record at the WAL's tail was never acknowledged; anything else corrupt must stop us.
    opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
    opts.set_paranoid_checks(true);
    let cfs = [CF_LOG, CF_META, CF_SM].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| StoreError::Open {
        path: dir.display().to_string(),
        source,
    })?;
    let meta = db.cf_handle(CF_META).expect("cf");
    match db.get_cf(meta, KEY_IDENTITY)? {
        None => {
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(true);
            db.put_cf_opt(meta, KEY_IDENTITY, codec::encode(identity), &wo)?;
        }
        Some(bytes) => {
            let found: Identity = codec::decode(&bytes).map_err(|e| StoreError::undecodable("meta/identity", e))?;
            if &found != identity {
                return Err(StoreError::ForeignIdentity {
                    found_cluster: found.cluster,
                    found_node: found.node_id,
                    want_cluster: identity.cluster.clone(),
                    want_node: identity.node_id,
                });
            }
        }
    }
    verify_log(&db)?;
    let db = Arc::new(db);
    let state_machine = StateMachine::open(db.clone())?;
    Ok(OpenedStore {
        log_store: LogStore::new(db)?,
        state: state_machine.handle(),
        state_machine,
    })
}

/// Decode every log entry once, so a damaged log stops the node at start instead of mid-run.
fn verify_log(db: &DB) -> Result<(), StoreError> {
    let cf = db.cf_handle(CF_LOG).expect("cf");
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, value) = item?;
        codec::decode::<crate::Entry>(&value).map_err(|e| {
            let index = u64::from_be_bytes(key.as_ref().try_into().unwrap_or([0; 8]));
            StoreError::undecodable(format!("log/{index}"), e)
        })?;
    }
    Ok(())
}
