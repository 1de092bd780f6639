//! Making an instance from a snapshot and archived WAL: unpack, write the recovery
//! settings, start, let the engine replay to the target and promote, then put the
//! instance's own settings back. Nothing counts until the engine has left recovery.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use keel_raft_store::RestoreTarget;

use super::postgres::{conf_value, io, tail, Postgres};
use super::{EngineError, InstanceSpec};

impl Postgres {
    /// Make `spec`'s volume empty for a restore (whatever an earlier attempt left goes);
    /// returns its data directory, for the base tar to be unpacked into.
    pub async fn begin_restore(&self, spec: &InstanceSpec) -> Result<std::path::PathBuf, EngineError> {
        let volume = self.volume(&spec.id);
        let _ = self.shut_down(&spec.id).await;
        let _ = std::fs::remove_dir_all(&volume);
        let data = volume.join("data");
        for dir in [&volume, &data] {
            std::fs::create_dir_all(dir).map_err(io("create volume"))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io("protect volume"))?;
            self.chown(dir)?;
        }
        Ok(data)
    }

    /// Finish a restore whose base tar is unpacked in the volume: unpack `pg_wal.tar[.gz]`
    /// from `snapshot`, replay the WAL files in `wal` to `target` and promote; waits at
    /// most `within` for the replay.
    pub async fn finish_restore(
        &self,
        spec: &InstanceSpec,
        snapshot: &Path,
        wal: &Path,
        target: &RestoreTarget,
        within: Duration,
    ) -> Result<(), EngineError> {
        let volume = self.volume(&spec.id);
        let data = volume.join("data");
        let pg_wal = super::snapshot::tar_named(snapshot, "pg_wal.tar")?;
        self.untar(&pg_wal, &data.join("pg_wal"), false).await?;
        for stale in ["postmaster.pid", "postmaster.opts", "standby.signal"] {
            let _ = std::fs::remove_file(data.join(stale));
        }
        // The engine's OS user reads the fetched WAL.
        self.chown(wal)?;
        for f in std::fs::read_dir(wal).map_err(io("read fetched WAL"))?.flatten() {
            self.chown(&f.path())?;
        }
        self.configure(spec)?;
        let mut recovery = format!(
            "\n# Restore: replay, then promote (removed once the instance is promoted).\nrestore_command = {}\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\nrecovery_init_sync_method = 'syncfs'\n",
            conf_value(&format!("cp \"{}/%f\" \"%p\"", wal.display()))
        );
        if let RestoreTarget::Time { at_ms } = target {
            recovery.push_str(&format!(
                "recovery_target_time = {}\nrecovery_target_inclusive = on\n",
                // PostgreSQL's own form: its parser refuses the `T…Z` spelling here.
                conf_value(
                    &keel_raft_store::timefmt::format_ms(*at_ms)
                        .replace('T', " ")
                        .replace('Z', "+00")
                )
            ));
        } else if matches!(target, RestoreTarget::Snapshot) {
            recovery.push_str("recovery_target = 'immediate'\n");
        }
        let conf = data.join("keel.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io("read keel.conf"))?;
        text.push_str(&recovery);
        std::fs::write(&conf, text).map_err(io("write recovery settings"))?;
        let signal = data.join("recovery.signal");
        std::fs::write(&signal, b"").map_err(io("write recovery.signal"))?;
        self.chown(&signal)?;
        let log = volume.join("postgres.log");
        self.run(
            "pg_ctl start (recovery)",
            self.command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-W", "start"]),
            None,
        )
        .await?;
        self.wait_promoted(spec, &log, within).await?;
        // The instance's own settings, without the recovery ones, for every later start.
        self.configure(spec)?;
        std::fs::write(volume.join(".provisioned"), b"").map_err(io("mark provisioned"))?;
        Ok(())
    }

    /// When the last transaction the instance's recovery replayed was committed, as the
    /// engine logs it at the end of replay (the newest such line in its log).
    pub fn last_replayed_commit(&self, id: &str) -> Option<keel_raft_store::Millis> {
        let log = std::fs::read_to_string(self.volume(id).join("postgres.log")).ok()?;
        log.lines()
            .rev()
            .find_map(|l| {
                l.split_once("last completed transaction was at log time ")
                    .map(|(_, t)| t)
            })
            .and_then(|t| parse_pg_time(t.trim()))
    }

    /// Wait until the engine has replayed and left recovery, or say why it will not.
    async fn wait_promoted(&self, spec: &InstanceSpec, log: &Path, within: Duration) -> Result<(), EngineError> {
        let started = tokio::time::Instant::now();
        let until = started + within;
        let mut last;
        loop {
            // Promotion is what the restore waits for: look often, a probe is cheap.
            tokio::time::sleep(Duration::from_millis(50)).await;
            // A moment for the postmaster to write its pid file before judging it gone.
            if !self.running(&spec.id) && started.elapsed() > Duration::from_secs(3) {
                return Err(EngineError::Command {
                    what: "recovery".into(),
                    detail: format!("the engine stopped during recovery:\n{}", tail(log, 20)),
                });
            }
            let probe = async {
                let (client, conn) = self
                    .superuser(spec, Duration::from_secs(2))
                    .connect(tokio_postgres::NoTls)
                    .await?;
                tokio::spawn(conn);
                let row = client.query_one("SELECT pg_is_in_recovery()", &[]).await?;
                Ok::<bool, tokio_postgres::Error>(row.get(0))
            };
            match probe.await {
                Ok(false) => return Ok(()),
                Ok(true) => last = "still replaying".into(),
                Err(e) => last = e.to_string(),
            }
            if tokio::time::Instant::now() >= until {
                return Err(EngineError::Command {
                    what: "recovery".into(),
                    detail: format!("not promoted within {within:?} ({last}):\n{}", tail(log, 20)),
                });
            }
        }
    }
}

/// A time as the engine writes it in its log (`2026-11-30 19:43:01.123456+00`).
fn parse_pg_time(text: &str) -> Option<keel_raft_store::Millis> {
    // Its zone offset may be `+HH` alone; the RFC 3339 parser wants `+HH:MM`.
    let tail = text.len().checked_sub(3)?;
    let text = match text.as_bytes()[tail] {
        b'+' | b'-' => format!("{text}:00"),
        _ => text.to_string(),
    };
    keel_raft_store::timefmt::parse(&text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_engines_log_times_parse_with_short_and_long_offsets() {
        let t = super::parse_pg_time("2026-11-30 19:43:01.123456+00").unwrap();
        assert_eq!(keel_raft_store::timefmt::format_ms(t), "2026-11-30T19:43:01.123Z");
        assert_eq!(super::parse_pg_time("2026-11-30 20:43:01.5+01"), Some(t - 123 + 500));
        assert_eq!(super::parse_pg_time("2026-11-30 19:43:01+00:00"), Some(t - 123));
        assert_eq!(super::parse_pg_time("garbage"), None);
    }
}
