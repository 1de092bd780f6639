//! The backup catalog's records: snapshots and the WAL archive's coverage. The objects
//! themselves live in backup stores the host managers write; the catalog says what each
//! store holds, with checksums, so a restore can be planned and checked before any work.

use serde::{Deserialize, Serialize};

use crate::records::Millis;

/// Which copy of a database's backups: the frequent one near the data, or the daily one
/// kept apart from it (seed 004's two environments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupTier {
    /// The data environment's store of the zone the instance runs in.
    #[default]
    Zone,
    /// The control environment's store.
    Control,
}

/// Why a snapshot exists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    /// Taken on the database's cadence; removed after its retention.
    #[default]
    Automatic,
    /// Asked for by a user; kept until deleted, even after its database.
    User,
    /// Taken when the database was deleted; kept until deleted.
    Final,
}

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotState {
    /// Being taken.
    #[default]
    Creating,
    /// Verified and stored: it can be restored.
    Available,
    /// Its objects are being removed; it can no longer be restored.
    Deleting,
}

/// One object in a backup store, as the host that wrote it measured it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackupObject {
    /// Its key in the store.
    pub key: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content, hex; a restore refuses content that differs.
    pub sha256: String,
}

/// A snapshot of a database: a verified base backup in a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// Name, unique in its account.
    pub name: String,
    /// The account that owns it.
    pub account: String,
    /// The database it is of (its key, `<name>.<account>`; the database may be gone).
    pub database: String,
    /// The database's lineage: its backups' prefix in the stores.
    pub lineage: String,
    /// Why it exists.
    pub kind: SnapshotKind,
    /// Where it is in its life.
    pub state: SnapshotState,
    /// When it was asked for.
    pub requested_at_ms: Millis,
    /// When the backup ended: the database can be restored to this time or later from it.
    pub taken_at_ms: Millis,
    /// The engine's timeline it was taken on.
    pub timeline: u32,
    /// WAL position replay starts from.
    pub start_lsn: String,
    /// WAL position it is consistent at.
    pub end_lsn: String,
    /// Bytes stored.
    pub size_bytes: u64,
    /// Its objects, with their checksums.
    pub objects: Vec<BackupObject>,
    /// The instance it was taken from.
    pub source_instance: String,
    /// The zone of the store holding it.
    pub zone: String,
    /// Which tier of copy it is.
    pub tier: BackupTier,
    /// The operation that took it.
    pub job_id: String,
    /// Days an automatic snapshot is kept (its database's retention when it was taken).
    pub retention_days: u32,
    /// The database's spec when it was taken: what a restore after the database is
    /// deleted starts from.
    pub spec: Option<crate::records::DatabaseSpec>,
    /// The master password's verifier then (the data holds the same role).
    pub master_verifier: String,
    /// Its copy in the control environment's store, once the daily copy made one.
    pub control: Option<ControlCopy>,
}

/// A snapshot's copy in the control environment's store, with the lineage's WAL up to
/// when it was made: what a restore falls back to when the zone's store is lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlCopy {
    /// Its objects there, with their checksums.
    pub objects: Vec<BackupObject>,
    /// Every commit up to this time is in the control store's WAL copy.
    pub wal_until_ms: Millis,
    /// When the copy was made.
    pub copied_at_ms: Millis,
}

impl Snapshot {
    /// Whether an automatic snapshot's retention has run out at `now`.
    pub fn expired(&self, now: Millis) -> bool {
        self.kind == SnapshotKind::Automatic
            && self.state == SnapshotState::Available
            && now
                >= self
                    .taken_at_ms
                    .saturating_add(u64::from(self.retention_days) * 86_400_000)
    }

    /// Its key in the catalog: `<name>.<account>`.
    pub fn key(&self) -> String {
        crate::records::database_key(&self.name, &self.account)
    }
}

/// How far a database lineage's WAL archive reaches, as its host last reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WalArchive {
    /// The lineage (prefix in the stores).
    pub lineage: String,
    /// The database (key) it belongs to.
    pub database: String,
    /// The zone whose store holds it.
    pub zone: String,
    /// The timeline being archived.
    pub timeline: u32,
    /// Everything written before this WAL position is in the store.
    pub archived_lsn: String,
    /// Every transaction committed at or before this time is in the store.
    pub restorable_until_ms: Millis,
}

/// What a task produced that the catalog records when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskOutput {
    /// An instance was restored and promoted; replay ended after the last transaction
    /// committed at this time (`None`: the engine reported none).
    Restored {
        /// The last replayed transaction's commit time.
        last_commit_ms: Option<Millis>,
    },
    /// A snapshot and its lineage's WAL were copied to the control environment's store.
    ControlCopy {
        /// The copied objects.
        objects: Vec<BackupObject>,
        /// The WAL copied reaches this time.
        wal_until_ms: Millis,
    },
    /// A primary made a replication slot for a new standby: it keeps WAL from `lsn` on.
    StandbySlot {
        /// The slot's restart position.
        lsn: String,
    },
    /// A primary now waits for `standby` on every commit, and the standby has everything
    /// the primary wrote before it began to.
    InSync {
        /// The standby instance.
        standby: String,
    },
    /// A standby was promoted: it accepts writes from this time (its host's clock).
    Promoted {
        /// When the engine left recovery.
        promoted_at_ms: Millis,
    },
    /// A snapshot was taken, verified and stored (by a snapshot job, or a delete's final one).
    Snapshot {
        /// When the backup ended.
        taken_at_ms: Millis,
        /// Timeline.
        timeline: u32,
        /// Replay start.
        start_lsn: String,
        /// Consistent at.
        end_lsn: String,
        /// Stored objects.
        objects: Vec<BackupObject>,
        /// Zone of the store.
        zone: String,
    },
}

/// What a restore starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "kebab-case")]
pub enum RestoreTarget {
    /// Every transaction committed at or before this time, and none after.
    Time {
        /// The target, ms since the epoch.
        at_ms: Millis,
    },
    /// As far as the archive reaches.
    Latest,
    /// The snapshot alone, as it was taken.
    Snapshot,
}

/// Where a restored database's data comes from, fixed when the restore is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSource {
    /// The source database's key (it may have been deleted since).
    pub database: String,
    /// Its lineage: where its snapshots and WAL are in the stores.
    pub lineage: String,
    /// The snapshot replay starts from (its catalog key).
    pub snapshot: String,
    /// How far to replay.
    pub target: RestoreTarget,
    /// Copies updated within this long of the newest count as equally fresh, and the
    /// nearest of them serves (seed 002; `None`: the default, 15 minutes).
    #[serde(default)]
    pub prefer_near_within_ms: Option<Millis>,
}

/// Copies updated within this long of the newest count as equally fresh (seed 002).
pub const PREFER_NEAR_WITHIN_MS: Millis = 15 * 60_000;
