//! Streaming replication of a Multi-AZ database. A standby streams from its primary over
//! mutual TLS: each side presents its host's Keel certificate (`keel://C/host/H`), the
//! primary admits the `keel_replication` role only with a certificate of a host of its
//! own cluster (`cert` authentication, mapped in `pg_ident`), and the standby checks the
//! primary's chain against Keel's CA. The certificates are copied into the volume
//! (PostgreSQL reads them as its own OS user) whenever the settings are written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::postgres::{conf_value, io, Postgres};
use super::{standby_name, EngineError, InstanceSpec};
use crate::tls::credentials::TlsFiles;

/// The role standbys stream as.
pub const REPLICATION_ROLE: &str = "keel_replication";

/// This host's TLS material and cluster, for replication links.
#[derive(Debug, Clone)]
pub struct ReplicationTls {
    /// The host's certificate, key and trust bundle.
    pub files: TlsFiles,
    /// The cluster whose hosts may stream from this host's primaries.
    pub cluster: String,
}

/// What a standby sees of the primary it streams from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamStatus {
    /// Its WAL receiver streams.
    pub streaming: bool,
    /// Since it last heard from the primary (`u64::MAX`: never, or no receiver).
    pub silent_ms: u64,
}

/// What a primary reports of one standby.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StandbyStatus {
    /// The walsender's state (`streaming`, `catchup`, …).
    pub state: String,
    /// Whether commits wait for it.
    pub sync: bool,
    /// Bytes written on the primary it has not replayed.
    pub lag_bytes: u64,
    /// How long its replay trails, when measured.
    pub replay_lag_ms: Option<u64>,
    /// Since its last reply (it replies to every write it flushes, and the archive's
    /// heartbeat writes every 200 ms), when connected.
    #[serde(default)]
    pub silent_ms: Option<u64>,
}

impl Postgres {
    fn tls_dir(&self, id: &str) -> PathBuf {
        self.volume(id).join("tls")
    }

    /// Copy this host's certificate, key and CA bundle into the instance's volume, owned
    /// by the engine's OS user (the key readable by it alone).
    pub(super) fn install_tls(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        let tls = self
            .replication_tls
            .as_ref()
            .ok_or_else(|| EngineError::Unavailable("this host has no TLS material for replication".into()))?;
        let dir = self.tls_dir(&spec.id);
        std::fs::create_dir_all(&dir).map_err(io("make the TLS directory"))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io("protect the TLS directory"))?;
        self.chown(&dir)?;
        for (from, name) in [
            (&tls.files.cert, "cert.pem"),
            (&tls.files.key, "key.pem"),
            (&tls.files.ca, "ca.pem"),
        ] {
            let to = dir.join(name);
            let tmp = to.with_extension("tmp");
            std::fs::copy(from, &tmp).map_err(io("copy TLS material"))?;
            std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(io("protect TLS material"))?;
            self.chown(&tmp)?;
            std::fs::rename(&tmp, &to).map_err(io("install TLS material"))?;
        }
        Ok(())
    }

    /// The settings `spec`'s replication adds to `keel.conf` (TLS on every member; on a
    /// standby, where it streams from).
    pub(super) fn replication_conf(&self, spec: &InstanceSpec) -> String {
        let Some(r) = &spec.replication else {
            return String::new();
        };
        let dir = self.tls_dir(&spec.id);
        let file = |name: &str| conf_value(&dir.join(name).to_string_lossy());
        let mut conf = format!(
            "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\nssl_ca_file = {}\n",
            file("cert.pem"),
            file("key.pem"),
            file("ca.pem")
        );
        if let Some(up) = &r.upstream {
            let conninfo = format!(
                "host={} port={} user={REPLICATION_ROLE} application_name={} sslmode=verify-ca sslcert={} sslkey={} sslrootcert={} connect_timeout=5",
                up.addr,
                up.port,
                standby_name(&spec.id),
                dir.join("cert.pem").display(),
                dir.join("key.pem").display(),
                dir.join("ca.pem").display()
            );
            conf.push_str(&format!(
                "hot_standby = on\nprimary_conninfo = {}\nprimary_slot_name = {}\n",
                conf_value(&conninfo),
                conf_value(&standby_name(&spec.id))
            ));
        }
        conf
    }

    /// The standbys a primary's commits wait for, as `synchronous_standby_names` names them.
    pub(super) fn sync_names(spec: &InstanceSpec) -> Vec<String> {
        let mut names: Vec<String> = spec
            .replication
            .as_ref()
            .and_then(|r| r.sync_standby.as_deref())
            .map(standby_name)
            .into_iter()
            .collect();
        if spec.archive_sync && spec.backup_lineage.is_some() {
            names.push(crate::backup::relay::STANDBY_NAME.to_string());
        }
        names
    }

    /// `pg_hba` lines admitting standbys (hosts of this cluster, by certificate).
    pub(super) fn replication_hba(spec: &InstanceSpec) -> String {
        if spec.replication.is_none() {
            return String::new();
        }
        ["0.0.0.0/0", "::/0"]
            .iter()
            .map(|net| format!("hostssl replication {REPLICATION_ROLE} {net} cert map=keel_hosts\n"))
            .collect()
    }

    /// `pg_ident` lines mapping this cluster's host certificates to the replication role.
    pub(super) fn replication_ident(&self, spec: &InstanceSpec) -> String {
        match (&spec.replication, &self.replication_tls) {
            (Some(_), Some(tls)) => {
                let cluster: String = tls
                    .cluster
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_string()
                        } else {
                            format!("\\{c}")
                        }
                    })
                    .collect();
                format!("keel_hosts /^keel://{cluster}/host/[^/]+$ {REPLICATION_ROLE}\n")
            }
            _ => String::new(),
        }
    }

    /// On a running primary: the replication role, a slot for each of `spec`'s standbys
    /// (made reserving WAL at once) and none for others that are not streaming. Returns
    /// the newest slot's restart position: a standby built now needs WAL from there on
    /// from the archive, the primary keeps the rest.
    pub async fn prepare_standbys(&self, spec: &InstanceSpec) -> Result<Option<String>, EngineError> {
        let client = self.superuser_client(spec, "prepare replication").await?;
        let failed = |what: &'static str| {
            move |e: tokio_postgres::Error| {
                EngineError::Unavailable(format!("{what} failed: {}", super::postgres::explain(&e)))
            }
        };
        client
            .simple_query(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{REPLICATION_ROLE}') THEN CREATE ROLE {REPLICATION_ROLE} WITH REPLICATION LOGIN; END IF; END $$"
            ))
            .await
            .map_err(failed("making the replication role"))?;
        let wanted: Vec<String> = spec
            .replication
            .iter()
            .flat_map(|r| r.standbys.iter().map(|s| standby_name(s)))
            .collect();
        let rows = client
            .query(
                // The archive's slot is the archive's own: never a standby's to drop.
                "SELECT slot_name::text, active FROM pg_replication_slots WHERE slot_name LIKE 'keel\\_%' AND slot_name <> $1",
                &[&crate::backup::archive::SLOT],
            )
            .await
            .map_err(failed("listing replication slots"))?;
        for row in &rows {
            let name: String = row.get(0);
            if wanted.contains(&name) {
                continue;
            }
            // A standby no longer wanted is cut off first: its slot would keep WAL forever.
            if row.get::<_, bool>(1) {
                client
                    .execute(
                        "SELECT pg_terminate_backend(active_pid, 10000) FROM pg_replication_slots WHERE slot_name = $1 AND active",
                        &[&name],
                    )
                    .await
                    .map_err(failed("cutting off a standby no longer wanted"))?;
            }
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&name])
                .await
                .map_err(failed("dropping an unused replication slot"))?;
        }
        for name in wanted
            .iter()
            .filter(|w| !rows.iter().any(|r| r.get::<_, String>(0) == **w))
        {
            client
                .execute("SELECT pg_create_physical_replication_slot($1, true)", &[name])
                .await
                .map_err(failed("making a replication slot"))?;
        }
        let newest: Option<String> = client
            .query_one(
                "SELECT max(restart_lsn)::text FROM pg_replication_slots WHERE slot_name = ANY($1)",
                &[&wanted],
            )
            .await
            .map_err(failed("reading the slots' positions"))?
            .get(0);
        Ok(newest)
    }

    /// On a primary that now names its synchronous standby: wait (at most `within`) until
    /// that standby is synchronous and has flushed everything written before, so every
    /// commit acknowledged so far is on it.
    pub async fn wait_in_sync(&self, spec: &InstanceSpec, within: Duration) -> Result<(), EngineError> {
        let Some(standby) = spec.replication.as_ref().and_then(|r| r.sync_standby.clone()) else {
            return Ok(());
        };
        let name = standby_name(&standby);
        let client = self.superuser_client(spec, "wait for the standby").await?;
        let target: String = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| {
                EngineError::Unavailable(format!(
                    "reading the WAL position failed: {}",
                    super::postgres::explain(&e)
                ))
            })?
            .get(0);
        let until = tokio::time::Instant::now() + within;
        let mut seen = String::from("not connected");
        loop {
            let row = client
                .query_opt(
                    "SELECT sync_state, state, flush_lsn >= $2::text::pg_lsn FROM pg_stat_replication WHERE application_name = $1",
                    &[&name, &target],
                )
                .await
                .map_err(|e| EngineError::Unavailable(format!("reading replication state failed: {}", super::postgres::explain(&e))))?;
            if let Some(row) = row {
                let (sync, state, caught_up): (String, String, Option<bool>) = (row.get(0), row.get(1), row.get(2));
                if sync == "sync" && caught_up == Some(true) {
                    return Ok(());
                }
                seen = format!("{state}, {sync}");
            }
            if tokio::time::Instant::now() > until {
                return Err(EngineError::Unavailable(format!(
                    "standby {standby} did not become synchronous within {} s (last seen: {seen})",
                    within.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Finish a standby whose base tar is unpacked in the volume: the snapshot's WAL and
    /// the archive's (`wal`) go into `pg_wal`, the standby settings are written, and it
    /// starts; waits at most `within` until it streams from its primary.
    pub async fn finish_standby(
        &self,
        spec: &InstanceSpec,
        snapshot: &Path,
        wal: &Path,
        within: Duration,
    ) -> Result<(), EngineError> {
        let data = self.data(&spec.id);
        let pg_wal = data.join("pg_wal");
        let tar = super::snapshot::tar_named(snapshot, "pg_wal.tar")?;
        self.untar(&tar, &pg_wal, false).await?;
        // Replay reads pg_wal before it streams; the archive's newest segment is padded
        // past its data, where replay stops and streaming from the primary takes over.
        for f in std::fs::read_dir(wal).map_err(io("read fetched WAL"))?.flatten() {
            let to = pg_wal.join(f.file_name());
            std::fs::copy(f.path(), &to).map_err(io("place fetched WAL"))?;
            self.chown(&to)?;
        }
        for stale in ["postmaster.pid", "postmaster.opts", "recovery.signal"] {
            let _ = std::fs::remove_file(data.join(stale));
        }
        let signal = data.join("standby.signal");
        std::fs::write(&signal, b"").map_err(io("write standby.signal"))?;
        self.chown(&signal)?;
        self.configure(spec)?;
        self.start(spec).await?;
        std::fs::write(self.volume(&spec.id).join(".provisioned"), b"").map_err(io("mark provisioned"))?;
        self.wait_streaming(spec, within).await
    }

    /// Wait until a standby's WAL receiver streams from its primary; the end of its log
    /// says why not.
    async fn wait_streaming(&self, spec: &InstanceSpec, within: Duration) -> Result<(), EngineError> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if let Ok(client) = self.superuser_client(spec, "check streaming").await {
                let status: Option<String> = client
                    .query_opt("SELECT status FROM pg_stat_wal_receiver", &[])
                    .await
                    .ok()
                    .flatten()
                    .map(|r| r.get(0));
                if status.as_deref() == Some("streaming") {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > until {
                return Err(EngineError::Command {
                    what: "start streaming from the primary".into(),
                    detail: format!(
                        "the standby did not stream within {} s; its log ends:\n{}",
                        within.as_secs(),
                        super::postgres::tail(&self.volume(&spec.id).join("postgres.log"), 15)
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What a running primary (on `client`) reports of each standby `spec` keeps a slot
    /// for (a standby without a connection is `down`).
    pub(super) async fn standbys_status(
        client: &tokio_postgres::Client,
        spec: &InstanceSpec,
    ) -> Result<Vec<(String, StandbyStatus)>, EngineError> {
        let Some(r) = &spec.replication else {
            return Ok(Vec::new());
        };
        if r.standbys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                "SELECT application_name, state, sync_state, \
                 COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, \
                 (EXTRACT(EPOCH FROM replay_lag) * 1000)::bigint, \
                 (EXTRACT(EPOCH FROM now() - reply_time) * 1000)::bigint \
                 FROM pg_stat_replication",
                &[],
            )
            .await
            .map_err(|e| {
                EngineError::Unavailable(format!(
                    "reading replication state failed: {}",
                    super::postgres::explain(&e)
                ))
            })?;
        Ok(r.standbys
            .iter()
            .map(|id| {
                let name = standby_name(id);
                let status = rows
                    .iter()
                    .find(|row| row.get::<_, Option<String>>(0).as_deref() == Some(name.as_str()))
                    .map_or(
                        StandbyStatus {
                            state: "down".into(),
                            ..StandbyStatus::default()
                        },
                        |row| StandbyStatus {
                            state: row.get::<_, Option<String>>(1).unwrap_or_default(),
                            sync: row.get::<_, Option<String>>(2).as_deref() == Some("sync"),
                            lag_bytes: row.get::<_, Option<i64>>(3).unwrap_or(0).max(0) as u64,
                            replay_lag_ms: row.get::<_, Option<i64>>(4).map(|v| v.max(0) as u64),
                            silent_ms: row.get::<_, Option<i64>>(5).map(|v| v.max(0) as u64),
                        },
                    );
                (id.clone(), status)
            })
            .collect())
    }

    /// What a running standby (on `client`) sees of its primary: `None` on a primary.
    pub(super) async fn upstream_status(
        client: &tokio_postgres::Client,
        spec: &InstanceSpec,
    ) -> Result<Option<UpstreamStatus>, EngineError> {
        if spec.replication.as_ref().is_none_or(|r| r.upstream.is_none()) {
            return Ok(None);
        }
        let row = client
            .query_opt(
                "SELECT status, (EXTRACT(EPOCH FROM now() - last_msg_receipt_time) * 1000)::bigint \
                 FROM pg_stat_wal_receiver",
                &[],
            )
            .await
            .map_err(|e| {
                EngineError::Unavailable(format!(
                    "reading the WAL receiver failed: {}",
                    super::postgres::explain(&e)
                ))
            })?;
        // No receiver at all: it is between connection attempts, hearing nothing.
        Ok(Some(row.map_or(UpstreamStatus::default(), |r| UpstreamStatus {
            streaming: r.get::<_, Option<String>>(0).as_deref() == Some("streaming"),
            silent_ms: r.get::<_, Option<i64>>(1).map_or(u64::MAX, |v| v.max(0) as u64),
        })))
    }

    /// Promote a standby and make it a primary as `spec` says (client access, the
    /// standbys it will have, the archive it commits for), at once: `pg_promote` waits
    /// until replay has ended and the engine takes writes. Returns when it left recovery
    /// (now, if it had already: a retried promotion).
    pub async fn promote(&self, spec: &InstanceSpec, within: Duration) -> Result<u64, EngineError> {
        let client = self.superuser_client(spec, "promote it").await?;
        let failed = |what: &'static str| {
            move |e: tokio_postgres::Error| {
                EngineError::Unavailable(format!("{what} failed: {}", super::postgres::explain(&e)))
            }
        };
        let standby: bool = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .map_err(failed("asking whether it is a standby"))?
            .get(0);
        if standby {
            let secs = within.as_secs().clamp(1, i32::MAX as u64) as i32;
            let promoted: bool = client
                .query_one("SELECT pg_promote(true, $1)", &[&secs])
                .await
                .map_err(failed("promoting"))?
                .get(0);
            if !promoted {
                return Err(EngineError::Command {
                    what: "promote the standby".into(),
                    detail: format!(
                        "it did not leave recovery within {secs} s; its log ends:\n{}",
                        super::postgres::tail(&self.volume(&spec.id).join("postgres.log"), 15)
                    ),
                });
            }
        }
        let promoted_at = crate::clock::now_ms();
        // The standby's settings go; a primary's (client access, synchronous names) come.
        self.configure(spec)?;
        self.reload(spec).await?;
        Ok(promoted_at)
    }
}
