//! What snapshot and restore tasks carry to the host beyond the instance spec
//! (`keel.host.v1.TaskRequest.work_json`): the planner writes it, the host reads it.

use keel_raft_store::{BackupObject, BackupTier, RestoreTarget};
use serde::{Deserialize, Serialize};

/// The work of a snapshot or restore task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "work", rename_all = "kebab-case")]
pub enum TaskWork {
    /// Take a snapshot into a zone's store under `snapshots/<lineage>/<id>/`.
    Snapshot {
        /// The database's lineage.
        lineage: String,
        /// A name unique to this snapshot (its job id).
        id: String,
        /// The zone whose store takes it (the primary's, where the archive is; a standby
        /// in another zone takes it too): the host's own when not given.
        #[serde(default)]
        zone: Option<String>,
    },
    /// Make the instance from a snapshot and the archive of its lineage, read from the
    /// first of `sources` that serves whole.
    Restore {
        /// The source's lineage (where its WAL is in every store).
        lineage: String,
        /// The copies to read from, in order: the chosen one first.
        sources: Vec<RestoreFrom>,
        /// Why the first was chosen (for the operation's record).
        choice: String,
        /// How far to replay.
        target: RestoreTarget,
    },
    /// Make a standby from a snapshot and its lineage's archive, read from the first of
    /// `sources` that serves whole, once the archive reaches `need_lsn` (from there on its
    /// primary keeps the WAL, in the standby's slot).
    BuildStandby {
        /// The database's lineage.
        lineage: String,
        /// The copies to read from, in order: the chosen one first.
        sources: Vec<RestoreFrom>,
        /// Why the first was chosen.
        choice: String,
        /// Where the primary's slot for the standby starts.
        need_lsn: String,
    },
    /// Copy a snapshot and its lineage's WAL from a zone's store to the control store.
    CopyBackup {
        /// The zone whose store holds them.
        zone: String,
        /// The lineage.
        lineage: String,
        /// The snapshot's objects in the zone store.
        objects: Vec<BackupObject>,
        /// Where the snapshot's WAL starts (older WAL is not copied).
        start_lsn: String,
        /// What the catalog knew archived when the copy was planned (the copy reaches it).
        wal_until_ms: u64,
    },
    /// Fence a replaced instance, first moving the WAL its volume still holds to the
    /// archive of `lineage` in the host's zone store.
    Fence {
        /// The database's lineage.
        lineage: String,
    },
    /// Remove objects from a zone's store.
    DeleteBackup {
        /// The zone whose store holds them.
        zone: String,
        /// The objects' keys in the zone's store.
        keys: Vec<String>,
        /// The objects' keys in the control store (its copy, if it has one).
        control_keys: Vec<String>,
        /// WAL no remaining snapshot needs: the lineage's segments that end at or before
        /// this position (`None`: keep the WAL).
        wal_before: Option<(String, u64)>,
    },
}

/// One copy a restore can read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// For people: `zone-store:a`, `control-store`.
    pub copy: String,
    /// Which store: the zone's, or the control environment's.
    pub tier: BackupTier,
    /// The zone of a zone store.
    pub zone: String,
    /// The base snapshot's objects in that store.
    pub objects: Vec<BackupObject>,
    /// Where the base snapshot's replay starts.
    pub start_lsn: String,
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
