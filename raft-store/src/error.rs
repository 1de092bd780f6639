//! Faults of the store (rejections of commands are values, see [`crate::Rejection`]).

/// What can go wrong opening or using the on-disk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB refused to open or operate on the data directory.
    #[error("the data directory {path} cannot be opened by RocksDB ({source}); if it is corrupt, restore it from another node by removing it and re-adding this node")]
    Open {
        /// The data directory.
        path: String,
        /// RocksDB's own error.
        source: rocksdb::Error,
    },
    /// A RocksDB read or write failed.
    #[error("RocksDB I/O failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A thread the store needs could not be started.
    #[error("could not start the Raft log flusher thread: {0}")]
    Thread(#[from] std::io::Error),
    /// A stored value could not be decoded.
    #[error("stored value under {key} is unreadable ({reason}); the data directory is corrupt or from a newer Keel")]
    Decode {
        /// Where the value was.
        key: String,
        /// Why it could not be decoded.
        reason: String,
    },
    /// The data directory belongs to another cluster or node.
    #[error("the data directory belongs to cluster {found_cluster:?} node {found_node}, but this node is configured as cluster {want_cluster:?} node {want_node}; point --data-dir at an empty directory or fix the configuration")]
    ForeignIdentity {
        /// Cluster name recorded in the directory.
        found_cluster: String,
        /// Node id recorded in the directory.
        found_node: u64,
        /// Cluster name in the configuration.
        want_cluster: String,
        /// Node id in the configuration.
        want_node: u64,
    },
}

impl StoreError {
    /// The value stored under `key` could not be decoded.
    pub(crate) fn undecodable(key: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Self::Decode {
            key: key.into(),
            reason: e.to_string(),
        }
    }
}
