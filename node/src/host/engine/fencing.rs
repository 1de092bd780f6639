//! Fencing a replaced instance on its host: a marker in its volume that every start
//! refuses, an immediate stop, and a start that only the host manager can reach (no TCP
//! listener), for moving the WAL the volume still holds to the archive.

use std::time::Duration;

use super::postgres::{io, Postgres};
use super::{EngineError, InstanceSpec};

impl Postgres {
    fn fenced_marker(&self, id: &str) -> std::path::PathBuf {
        self.volume(id).join(".fenced")
    }

    /// The generation the instance was fenced at, if a recovery replaced it.
    pub fn fenced_at(&self, id: &str) -> Option<u64> {
        std::fs::read_to_string(self.fenced_marker(id))
            .ok()
            .map(|g| g.trim().parse().unwrap_or(u64::MAX))
    }

    /// Mark the instance fenced at `generation` (kept if already fenced): from now on no
    /// start succeeds. Written before anything else a fence does.
    pub fn mark_fenced(&self, id: &str, generation: u64) -> Result<(), EngineError> {
        if self.fenced_at(id).is_some() || !self.volume(id).exists() {
            return Ok(());
        }
        let marker = self.fenced_marker(id);
        let tmp = marker.with_extension("tmp");
        std::fs::write(&tmp, generation.to_string()).map_err(io("write the fence marker"))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("sync the fence marker"))?;
        std::fs::rename(&tmp, &marker).map_err(io("write the fence marker"))
    }

    /// Stop the postmaster at once (immediate shutdown: sessions end now, nothing is
    /// flushed that a commit has not already flushed).
    pub async fn shut_down_now(&self, id: &str) -> Result<(), EngineError> {
        self.pg_ctl_stop(id, "pg_ctl stop (immediate)", "immediate").await
    }

    /// Start a fenced instance with no TCP listener: only the host manager reaches it,
    /// through the socket in its volume. Crash recovery runs first, as on any start.
    pub async fn start_unlisted(&self, id: &str) -> Result<(), EngineError> {
        self.pg_ctl_start(id, "pg_ctl start (no listener)", &["-c listen_addresses=''"], 300)
            .await
    }

    /// Where the instance's WAL ends now.
    pub async fn current_wal_lsn(&self, spec: &InstanceSpec) -> Result<String, EngineError> {
        let failed = |e: tokio_postgres::Error| EngineError::Command {
            what: "read the WAL position".into(),
            detail: super::postgres::explain(&e),
        };
        let (client, conn) = self
            .superuser(spec, Duration::from_secs(10))
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(failed)?;
        tokio::spawn(conn);
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(failed)?;
        Ok(row.get(0))
    }
}
