//! What snapshot and restore tasks carry to the host beyond the instance spec
//! (`keel.host.v1.TaskRequest.work_json`): the planner writes it, the host reads it.

use keel_raft_store::{BackupObject, RestoreTarget};
use serde::{Deserialize, Serialize};

/// The work of a snapshot or restore task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "kebab-case")]
pub enum TaskWork {
    /// Take a snapshot into the host's zone store under `snapshots/<lineage>/<id>/`.
    Snapshot {
        /// The database's lineage.
        lineage: String,
        /// A name unique to this snapshot (its job id).
        id: String,
    },
    /// Make the instance from a snapshot and the archive of its lineage.
    Restore {
        /// The source's lineage (where its WAL is).
        lineage: String,
        /// The zone whose store holds the snapshot and WAL.
        zone: String,
        /// The snapshot's objects, with their checksums.
        objects: Vec<BackupObject>,
        /// Its timeline.
        timeline: u32,
        /// Where replay starts.
        start_lsn: String,
        /// How far to replay.
        target: RestoreTarget,
    },
    /// Remove objects from a zone's store.
    DeleteBackup {
        /// The zone whose store holds them.
        zone: String,
        /// The objects' keys.
        keys: Vec<String>,
        /// WAL no remaining snapshot needs: the lineage's segments that end at or before
        /// this position (`None`: keep the WAL).
        wal_before: Option<(String, u64)>,
    },
}

/// The pseudo-instance backup-store tasks run under on a host (one at a time there).
pub const BACKUP_TASKS: &str = "backups";

/// The store key of a lineage's WAL archive.
pub fn wal_prefix(lineage: &str) -> String {
    format!("wal/{lineage}/")
}

/// The store key prefix of one snapshot.
pub fn snapshot_prefix(lineage: &str, id: &str) -> String {
    format!("snapshots/{lineage}/{id}/")
}
