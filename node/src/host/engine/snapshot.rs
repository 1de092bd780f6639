//! Online snapshots of a running instance: `pg_basebackup` over the instance's private
//! socket (tar, gzip, WAL streamed alongside, a SHA-256 manifest), verified with
//! `pg_verifybackup` before it counts. Writes are never blocked; the checkpoint it starts
//! with is a fast one.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::postgres::{io, Postgres};
use super::{EngineError, InstanceSpec};

/// A verified snapshot in a work directory, ready to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Timeline the backup was taken on.
    pub timeline: u32,
    /// WAL position the backup starts at (replay from here).
    pub start_lsn: String,
    /// WAL position it is consistent at (restorable from here on).
    pub end_lsn: String,
    /// Its files: `base.tar.gz`, `pg_wal.tar.gz`, `backup_manifest`.
    pub files: Vec<PathBuf>,
}

/// The part of `backup_manifest` that says which WAL the backup needs.
#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "WAL-Ranges")]
    wal_ranges: Vec<WalRange>,
}

#[derive(Deserialize)]
struct WalRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

impl Postgres {
    /// Snapshot the running instance `spec` into `work` (made empty first), and verify it.
    pub async fn snapshot(&self, spec: &InstanceSpec, work: &Path) -> Result<Snapshot, EngineError> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work).map_err(io("create snapshot directory"))?;
        self.chown(work)?;
        let out = work.join("backup");
        self.run(
            "pg_basebackup",
            self.background("pg_basebackup")
                .arg("--host")
                .arg(self.volume(&spec.id))
                .args([
                    "--port",
                    &spec.port.to_string(),
                    "--username",
                    "postgres",
                    "--no-password",
                ])
                .arg("--pgdata")
                .arg(&out)
                // gzip level 1: most of level 6's saving at a fraction of its CPU, which
                // the database's clients share (bench backups).
                .args([
                    "--format=tar",
                    "--compress=gzip:1",
                    "--wal-method=stream",
                    "--checkpoint=fast",
                ])
                .args(["--manifest-checksums=SHA256", "--no-sync"]),
            None,
        )
        .await?;
        // PostgreSQL 15's pg_verifybackup reads the plain format only: unpack beside it.
        let plain = work.join("verify");
        std::fs::create_dir_all(plain.join("pg_wal")).map_err(io("create verify directory"))?;
        self.chown(&plain)?;
        self.chown(&plain.join("pg_wal"))?;
        for (tar, into) in [("base.tar.gz", plain.clone()), ("pg_wal.tar.gz", plain.join("pg_wal"))] {
            self.run(
                "unpack snapshot",
                self.background("/bin/tar")
                    .arg("-xzf")
                    .arg(out.join(tar))
                    .arg("-C")
                    .arg(&into),
                None,
            )
            .await?;
        }
        self.run(
            "pg_verifybackup",
            self.background("pg_verifybackup")
                .arg("--manifest-path")
                .arg(out.join("backup_manifest"))
                .arg(&plain),
            None,
        )
        .await?;
        let _ = std::fs::remove_dir_all(&plain);
        let text = std::fs::read_to_string(out.join("backup_manifest")).map_err(io("read backup manifest"))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| EngineError::Unavailable(format!("the backup manifest is not readable: {e}")))?;
        let range = manifest
            .wal_ranges
            .first()
            .ok_or_else(|| EngineError::Unavailable("the backup manifest names no WAL range".into()))?;
        Ok(Snapshot {
            timeline: range.timeline,
            start_lsn: range.start.clone(),
            end_lsn: range.end.clone(),
            files: ["base.tar.gz", "pg_wal.tar.gz", "backup_manifest"]
                .iter()
                .map(|f| out.join(f))
                .collect(),
        })
    }
}
