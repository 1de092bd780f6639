//! PostgreSQL (Debian's postgresql package) as an engine.
//!
//! Each instance is a volume directory `<root>/volumes/<id>` holding `data/`.
//! PostgreSQL refuses to run as root, so every engine command runs as the
//! `postgres` OS user when the host manager is root. A data directory is made
//! once per engine version as a template (`initdb` is the slow part) and
//! copied for each new instance. Instances are started with `pg_ctl`, so they
//! keep running while the host manager restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio::sync::Mutex;

use super::{EngineError, Health, InstanceSpec};

/// How long a health probe's kept connection is used before a new one is opened.
const PROBE_REOPEN: Duration = Duration::from_secs(5);

/// The PostgreSQL engine of one host.
pub struct Postgres {
    bin_dir: PathBuf,
    root: PathBuf,
    /// This engine's directory in shared memory for snapshots' passing files, if it could
    /// be made (see [`super::snapshot::prepare_scratch`]).
    pub(super) scratch: Option<PathBuf>,
    run_as: Option<(u32, u32)>,
    template_lock: Mutex<()>,
    /// The host's TLS material, for Multi-AZ databases' replication links.
    pub(super) replication_tls: Option<super::replication::ReplicationTls>,
    /// The most a snapshot copies, in MiB/s; 0 for no limit.
    pub(super) snapshot_max_rate_mib: u32,
    /// One open connection per instance for health probes (and when it was opened): a probe
    /// is then a round trip, not a new backend process, so the monitor may probe several
    /// times a second.
    probe_clients: std::sync::Mutex<std::collections::HashMap<String, (tokio_postgres::Client, std::time::Instant)>>,
}

pub(super) fn io(what: &str) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        what: what.to_string(),
        source,
    }
}

/// The major version's binaries: `KEEL_PG_BIN_DIR`, else the newest `/usr/lib/postgresql/*/bin`.
fn find_bin_dir() -> Result<PathBuf, EngineError> {
    if let Some(dir) = std::env::var_os("KEEL_PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| {
            EngineError::Unavailable(
                "PostgreSQL is not installed (no /usr/lib/postgresql); install Debian's postgresql package".into(),
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| EngineError::Unavailable("no PostgreSQL server binaries under /usr/lib/postgresql".into()))
}

/// uid/gid of the `postgres` OS user, when we are root and must switch to it.
fn postgres_user() -> Result<Option<(u32, u32)>, EngineError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns a pointer into static storage or NULL; we copy the ids out at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(EngineError::Unavailable(
            "running as root but there is no `postgres` OS user to run PostgreSQL as".into(),
        ));
    }
    // SAFETY: pw is non-null and points to a valid passwd record.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

impl Postgres {
    /// The engine for a host whose volumes live under `root`.
    pub fn new(root: &Path) -> Result<Self, EngineError> {
        let run_as = postgres_user()?;
        if let (Some(group), Some((uid, gid))) = (crate::background::group(), run_as) {
            if let Err(e) = group.allow(uid, gid) {
                tracing::info!(error = %e, "The engine's commands cannot enter the idle CPU group: they run niced only.");
            }
        }
        Ok(Self {
            bin_dir: find_bin_dir()?,
            root: root.to_path_buf(),
            scratch: super::snapshot::prepare_scratch(root),
            run_as,
            template_lock: Mutex::new(()),
            replication_tls: None,
            snapshot_max_rate_mib: 0,
            probe_clients: Default::default(),
        })
    }

    /// The engine, its snapshots copying at most `mib` MiB/s (0: no limit).
    pub fn with_snapshot_max_rate(mut self, mib: u32) -> Self {
        self.snapshot_max_rate_mib = mib;
        self
    }

    /// The engine, with `tls` for replication links between hosts.
    pub fn with_replication_tls(mut self, tls: super::replication::ReplicationTls) -> Self {
        self.replication_tls = Some(tls);
        self
    }

    /// The major version these binaries are.
    pub fn version(&self) -> String {
        self.bin_dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|v| v.to_string_lossy().to_string())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Volume directory of an instance.
    pub fn volume(&self, id: &str) -> PathBuf {
        self.root.join("volumes").join(id)
    }

    pub(super) fn data(&self, id: &str) -> PathBuf {
        self.volume(id).join("data")
    }

    pub(crate) fn command(&self, program: &str) -> Command {
        let mut cmd = Command::from(self.std_command(program));
        cmd.kill_on_drop(true);
        cmd
    }

    /// The engine's OS user and group, when commands run as it.
    pub(super) fn owner(&self) -> Option<(u32, u32)> {
        self.run_as
    }

    /// [`Self::command`] for a caller that drives the process from a thread of its own.
    pub(super) fn std_command(&self, program: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(if program.contains('/') {
            PathBuf::from(program)
        } else {
            self.bin_dir.join(program)
        });
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        // Engine commands must not inherit our working directory (it may be unreadable to postgres).
        cmd.current_dir("/").stdin(Stdio::null());
        cmd
    }

    /// An engine command at background priority (the idle CPU group, else `nice`; the idle
    /// I/O class): a snapshot's copy, compression and verification yield to the database's
    /// own work, so clients keep their throughput while it runs.
    pub(crate) fn background(&self, program: &str) -> Command {
        let mut cmd = Command::from(self.background_std(program));
        cmd.kill_on_drop(true);
        cmd
    }

    /// [`Self::background`] for a caller that drives the process from a thread of its own.
    pub(super) fn background_std(&self, program: &str) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let bin = if program.contains('/') {
            PathBuf::from(program)
        } else {
            self.bin_dir.join(program)
        };
        let mut cmd = self.std_command("/usr/bin/nice");
        // The idle I/O class: see crate::background::IO_IDLE.
        cmd.args(["-n", "15", "/usr/bin/ionice", "-c", "3"]).arg(bin);
        // In the idle CPU group where there is one (see crate::background). Else: with the
        // kernel's autogroups, nice only ranks processes within one session: in the host
        // manager's session the copy would still get a whole share of the CPU beside the
        // engine's. A session of its own, whose group is niced, yields somewhat.
        let idle = crate::background::group().map(|g| g.procs().clone());
        // SAFETY: only async-signal-safe calls (setsid, open, write, close) between fork
        // and exec, on paths and buffers made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                let fd = libc::open(c"/proc/self/autogroup".as_ptr(), libc::O_WRONLY);
                if fd >= 0 {
                    libc::write(fd, b"19".as_ptr().cast(), 2);
                    libc::close(fd);
                }
                if let Some(procs) = &idle {
                    crate::background::adopt_self(procs);
                }
                Ok(())
            });
        }
        cmd
    }

    pub(crate) async fn run(&self, what: &str, cmd: &mut Command, stdin: Option<&str>) -> Result<String, EngineError> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(io(what))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).await.map_err(io(what))?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(io(what))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(EngineError::Command {
                what: what.to_string(),
                detail: text.trim().chars().take(2000).collect(),
            });
        }
        Ok(text)
    }

    pub(crate) fn chown(&self, path: &Path) -> Result<(), EngineError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io("chown"))?;
        }
        Ok(())
    }

    /// The template data directory for this version, made on first use.
    async fn template(&self) -> Result<PathBuf, EngineError> {
        let _guard = self.template_lock.lock().await;
        let templates = self.root.join("templates");
        let done = templates.join(format!("pg{}", self.version()));
        if done.join("PG_VERSION").exists() {
            return Ok(done);
        }
        std::fs::create_dir_all(&templates).map_err(io("create templates directory"))?;
        self.chown(&templates)?;
        let partial = templates.join(format!("pg{}.partial", self.version()));
        let _ = std::fs::remove_dir_all(&partial);
        // Trust is only the template's; every instance gets its own pg_hba.conf before it starts.
        self.run(
            "initdb",
            self.command("initdb").arg("-D").arg(&partial).args([
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "-A",
                "trust",
            ]),
            None,
        )
        .await?;
        let conf = partial.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io("read postgresql.conf"))?;
        text.push_str("\n# Keel's per-instance settings.\ninclude_if_exists = 'keel.conf'\n");
        std::fs::write(&conf, text).map_err(io("write postgresql.conf"))?;
        std::fs::rename(&partial, &done).map_err(io("finish template"))?;
        Ok(done)
    }

    /// Create the instance's volume, data directory and master user; idempotent.
    pub async fn provision(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        let volume = self.volume(&spec.id);
        let marker = volume.join(".provisioned");
        if marker.exists() {
            return self.configure(spec);
        }
        let template = self.template().await?;
        // A partial earlier attempt is discarded and redone.
        let _ = std::fs::remove_dir_all(&volume);
        std::fs::create_dir_all(&volume).map_err(io("create volume"))?;
        // The volume is also the socket directory: only the engine's OS user may enter it.
        std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o700)).map_err(io("protect volume"))?;
        self.chown(&volume)?;
        let data = self.data(&spec.id);
        self.run(
            "copy template",
            self.command("/bin/cp").arg("-a").arg(&template).arg(&data),
            None,
        )
        .await?;
        self.configure(spec)?;
        spec.validate_new()
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let sql = master_user_sql(spec);
        // Single-user mode: the role exists before the server ever listens on TCP.
        self.run(
            "create master user",
            self.command("postgres")
                .arg("--single")
                // Even here a commit would wait for a synchronous archive (none runs yet).
                .args(["-c", "synchronous_commit=local"])
                .arg("-D")
                .arg(&data)
                .arg("postgres"),
            Some(&sql),
        )
        .await?;
        std::fs::write(&marker, b"").map_err(io("mark provisioned"))?;
        Ok(())
    }

    /// Write the instance's settings (`keel.conf`, `pg_hba.conf`, `pg_ident.conf`); they
    /// apply at the next start. Every value goes through [`conf_value`], after the spec was
    /// validated, so no field can add a line of its own.
    pub fn configure(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        spec.validate().map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let data = self.data(&spec.id);
        let s = &spec.settings;
        let settings = [
            ("listen_addresses", conf_value(&spec.listen_addr)),
            ("port", spec.port.to_string()),
            (
                "unix_socket_directories",
                conf_value(&self.volume(&spec.id).to_string_lossy()),
            ),
            ("unix_socket_permissions", "0700".to_string()),
            ("shared_buffers", conf_value(&format!("{}MB", s.shared_buffers_mb))),
            ("max_connections", s.max_connections.to_string()),
            ("work_mem", conf_value(&format!("{}MB", s.work_mem_mb))),
            (
                "effective_cache_size",
                conf_value(&format!("{}MB", s.effective_cache_size_mb)),
            ),
            ("password_encryption", conf_value("scram-sha-256")),
            // Full-page images, most of the WAL after each checkpoint, at a fraction of
            // their size: less for a synchronous standby to write before a commit returns,
            // for the archive to store and for a snapshot to carry.
            ("wal_compression", conf_value("lz4")),
        ];
        let mut conf = String::from("# Written by Keel's host manager; changes are overwritten.\n");
        for (name, value) in settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        // A commit waits for the synchronous standby, and (RPO zero) until the archive
        // (the relay) reports its WAL stored: for each named here.
        // The names are plain lowercase identifiers (`standby_name`, the relay's).
        let sync = Self::sync_names(spec);
        match sync.len() {
            0 => {}
            1 => conf.push_str(&format!("synchronous_standby_names = {}\n", conf_value(&sync[0]))),
            n => conf.push_str(&format!(
                "synchronous_standby_names = {}\n",
                conf_value(&format!("FIRST {n} ({})", sync.join(", ")))
            )),
        }
        if spec.replication.is_some() {
            self.install_tls(spec)?;
            conf.push_str(&self.replication_conf(spec));
        }
        // No trust anywhere. Over the (private) socket only the engine's superuser, and only
        // for the OS users mapped in pg_ident (the engine's and the host manager's own);
        // everyone else, customers included, authenticates with SCRAM.
        // Over TCP, only the security groups' networks (validated canonical CIDRs), and
        // still with SCRAM; any other address is refused before authentication.
        // Replication over the socket, for the engine's superuser only: snapshots
        // (pg_basebackup) and, later, the WAL archive.
        let mut hba = String::from(
            "local all postgres peer map=keel\nlocal replication postgres peer map=keel\nlocal all all scram-sha-256\n",
        );
        hba.push_str(&Self::replication_hba(spec));
        // A standby is not readable: no client reaches it over the network (a read
        // replica is, read-only as every follower is).
        let standby = spec
            .replication
            .as_ref()
            .is_some_and(|r| r.upstream.is_some() && !r.readable);
        let open = ["0.0.0.0/0".to_string(), "::/0".to_string()];
        for cidr in spec
            .allowed_cidrs
            .as_deref()
            .unwrap_or(&open)
            .iter()
            .filter(|_| !standby)
        {
            hba.push_str(&format!("host all all {cidr} scram-sha-256\n"));
        }
        let mut ident = self.replication_ident(spec);
        for os_user in self.local_os_users() {
            ident.push_str(&format!("keel {os_user} postgres\n"));
        }
        for (name, text) in [
            ("keel.conf", conf.as_str()),
            ("pg_hba.conf", hba.as_str()),
            ("pg_ident.conf", &ident),
        ] {
            let path = data.join(name);
            std::fs::write(&path, text).map_err(io("write configuration"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(io("protect configuration"))?;
            self.chown(&path)?;
        }
        Ok(())
    }

    /// OS users that may connect over the socket as the engine's superuser: the engine's
    /// own and the host manager's (which probes health that way).
    fn local_os_users(&self) -> Vec<String> {
        let mut users = vec![os_user_name(current_uid())];
        if let Some((uid, _)) = self.run_as {
            users.push(os_user_name(uid));
        }
        users.dedup();
        users.into_iter().flatten().collect()
    }

    /// Whether provisioning this instance completed (its marker is written last).
    pub fn provisioned(&self, id: &str) -> bool {
        self.volume(id).join(".provisioned").exists()
    }

    /// Kill (SIGKILL) every process whose command line names `path`: engine commands a
    /// crashed host manager left running there (initdb, cp, a single-user postgres, a
    /// postmaster of a half-made instance). Returns how many were killed.
    pub fn kill_orphans(&self, path: &Path) -> usize {
        let needle = path.to_string_lossy().into_owned();
        let me = std::process::id();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        let mut killed = 0;
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args = String::from_utf8_lossy(&cmdline);
            if args.split('\0').any(|a| a.starts_with(&needle)) {
                // SAFETY: kill has no memory-safety preconditions.
                if unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
        }
        killed
    }

    /// Whether the postmaster of this instance is running.
    pub fn running(&self, id: &str) -> bool {
        let pid_file = self.data(id).join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(pid_file) else {
            return false;
        };
        let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    /// Start the instance and wait until it accepts connections; idempotent.
    pub async fn start(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        if let Some(generation) = self.fenced_at(&spec.id) {
            return Err(EngineError::Fenced {
                id: spec.id.clone(),
                generation,
            });
        }
        let _ = std::fs::remove_file(self.stopped_marker(&spec.id));
        self.pg_ctl_start(&spec.id, "pg_ctl start", &[], 60).await
    }

    /// `pg_ctl start` with `server_options` (`-o`), unless it runs, waiting at most
    /// `wait_s` seconds; a failure carries the end of the engine's log.
    pub(super) async fn pg_ctl_start(
        &self,
        id: &str,
        what: &str,
        server_options: &[&str],
        wait_s: u32,
    ) -> Result<(), EngineError> {
        if self.running(id) {
            return Ok(());
        }
        let log = self.volume(id).join("postgres.log");
        let mut cmd = self.command("pg_ctl");
        cmd.arg("-D").arg(self.data(id)).arg("-l").arg(&log);
        for o in server_options {
            cmd.args(["-o", o]);
        }
        cmd.args(["-w", "-t", &wait_s.to_string(), "start"]);
        self.run(what, &mut cmd, None).await.map(drop).map_err(|e| match e {
            EngineError::Command { what, detail } => EngineError::Command {
                what,
                detail: format!("{detail}\n{}", tail(&log, 20)),
            },
            other => other,
        })
    }

    /// `pg_ctl stop -m <mode>`, if it runs.
    pub(super) async fn pg_ctl_stop(&self, id: &str, what: &str, mode: &str) -> Result<(), EngineError> {
        if self.running(id) {
            self.run(
                what,
                self.command("pg_ctl")
                    .arg("-D")
                    .arg(self.data(id))
                    .args(["-m", mode, "-w", "-t", "60", "stop"]),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Stop the instance (fast shutdown); idempotent.
    pub async fn stop(&self, id: &str) -> Result<(), EngineError> {
        if self.volume(id).exists() {
            std::fs::write(self.stopped_marker(id), b"").map_err(io("mark stopped"))?;
        }
        self.shut_down(id).await
    }

    /// Whether the control plane asked for this instance to be stopped (else it should run).
    pub fn stopped_on_purpose(&self, id: &str) -> bool {
        self.stopped_marker(id).exists()
    }

    fn stopped_marker(&self, id: &str) -> PathBuf {
        self.volume(id).join(".stopped")
    }

    /// Stop the postmaster without changing what the control plane wants (host shutdown).
    pub async fn shut_down(&self, id: &str) -> Result<(), EngineError> {
        self.pg_ctl_stop(id, "pg_ctl stop", "fast").await
    }

    /// Restart so new settings apply.
    pub async fn restart(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        self.shut_down(&spec.id).await?;
        self.start(spec).await
    }

    /// Stop the instance and delete its volume; idempotent. A fenced one stops at once:
    /// nothing of it is kept, and its sessions may be waiting on a standby that is gone.
    pub async fn destroy(&self, id: &str) -> Result<(), EngineError> {
        if self.fenced_at(id).is_some() {
            self.shut_down_now(id).await?;
        } else {
            self.shut_down(id).await?;
        }
        match std::fs::remove_dir_all(self.volume(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("remove volume")(e)),
            _ => Ok(()),
        }
    }

    /// Make the running engine re-read its configuration files (pg_hba takes effect for
    /// new connections; nothing restarts).
    pub async fn reload(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        let (client, conn) = self
            .superuser(spec, Duration::from_secs(10))
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach the engine to reload it: {e}")))?;
        tokio::spawn(conn);
        let ok: bool = client
            .query_one("SELECT pg_reload_conf()", &[])
            .await
            .map_err(|e| EngineError::Unavailable(format!("reloading the configuration failed: {}", explain(&e))))?
            .get(0);
        if !ok {
            return Err(EngineError::Unavailable(
                "the engine refused to reload its configuration".into(),
            ));
        }
        Ok(())
    }

    /// Set the master user's password to the spec's SCRAM verifier, on the running
    /// engine, over its private socket. Only the verifier travels; idempotent.
    pub async fn set_password(&self, spec: &InstanceSpec) -> Result<(), EngineError> {
        spec.validate().map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let (client, conn) = self
            .superuser(spec, Duration::from_secs(10))
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach the engine to set the password: {e}")))?;
        tokio::spawn(conn);
        let sql = format!(
            "ALTER ROLE {} PASSWORD {}",
            quote_ident(&spec.master_user),
            quote_literal(&spec.master_verifier)
        );
        client
            .simple_query(&sql)
            .await
            .map_err(|e| EngineError::Unavailable(format!("setting the master password failed: {}", explain(&e))))?;
        Ok(())
    }

    /// A superuser session on the running instance, for the step `what` (named in the
    /// error if the engine cannot be reached).
    pub(super) async fn superuser_client(
        &self,
        spec: &InstanceSpec,
        what: &str,
    ) -> Result<tokio_postgres::Client, EngineError> {
        let (client, conn) = self
            .superuser(spec, Duration::from_secs(10))
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| EngineError::Unavailable(format!("cannot reach the engine to {what}: {}", explain(&e))))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// The engine's superuser over the instance's private socket.
    pub(crate) fn superuser(&self, spec: &InstanceSpec, within: Duration) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(self.volume(&spec.id))
            .port(spec.port)
            .user("postgres")
            .dbname("postgres")
            // The host manager's own commits (heartbeats, roles) never wait for the archive.
            .options("-c synchronous_commit=local")
            .connect_timeout(within);
        config
    }

    /// Close the probe connections of instances `keep` refuses (destroyed, or no longer
    /// this host's).
    pub fn retain_probes(&self, keep: impl Fn(&str) -> bool) {
        self.probe_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id, _| keep(id));
    }

    /// Bytes the instance's volume holds (a directory walk: callers cache it).
    pub fn used_bytes(&self, id: &str) -> u64 {
        dir_size(&self.volume(id))
    }

    /// Observe the instance: process and a real SQL round trip, within `within`
    /// (`used_bytes` is left to the caller's cache).
    pub async fn health(&self, spec: &InstanceSpec, within: Duration) -> Health {
        let used_bytes = 0;
        if !self.running(&spec.id) {
            return Health {
                used_bytes,
                problem: Some("PostgreSQL is not running".into()),
                ..Health::default()
            };
        }
        let config = self.superuser(spec, within);
        // The connection the last good probe left, if it is open and young; else a new one.
        // A kept connection that fails gets one retry on a new one (a restart closed it), and
        // none is kept past PROBE_REOPEN, so a postmaster that no longer takes connections
        // is seen even while an old backend still answers.
        let cached = self
            .probe_clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&spec.id)
            .filter(|(c, opened)| !c.is_closed() && opened.elapsed() < PROBE_REOPEN);
        let ask = |client: tokio_postgres::Client| async move {
            client.simple_query("SELECT 1").await?;
            // Best effort: an answer without the replication views is still an answer.
            let standbys = Self::standbys_status(&client, spec).await.unwrap_or_default();
            let upstream = Self::upstream_status(&client, spec).await.unwrap_or_default();
            Ok::<_, tokio_postgres::Error>((client, standbys, upstream))
        };
        let probe = async {
            if let Some((client, opened)) = cached {
                if let Ok((client, standbys, upstream)) = ask(client).await {
                    return Ok(((client, opened), standbys, upstream));
                }
            }
            let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let (client, standbys, upstream) = ask(client).await?;
            Ok::<_, tokio_postgres::Error>(((client, std::time::Instant::now()), standbys, upstream))
        };
        match tokio::time::timeout(within, probe).await {
            Ok(Ok((client, standbys, upstream))) => {
                self.probe_clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spec.id.clone(), client);
                Health {
                    running: true,
                    accepting: true,
                    used_bytes,
                    problem: None,
                    standbys,
                    upstream,
                }
            }
            Ok(Err(e)) => Health {
                running: true,
                accepting: false,
                used_bytes,
                problem: Some(format!("SQL probe failed: {}", explain(&e))),
                ..Health::default()
            },
            Err(_) => Health {
                running: true,
                accepting: false,
                used_bytes,
                problem: Some("SQL probe timed out".into()),
                ..Health::default()
            },
        }
    }
}

/// A SQL identifier, double-quoted.
/// A driver error with its causes: tokio-postgres says only "db error" or "error
/// connecting to server" and keeps the engine's own message (or the socket's) as its
/// source, which is what an operator needs to read.
pub fn explain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal (standard_conforming_strings is on: only quotes need doubling).
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A postgresql.conf string value: quoted, with quotes and backslashes escaped, and no line breaks.
pub(super) fn conf_value(text: &str) -> String {
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    format!("'{}'", clean.replace('\\', "\\\\").replace('\'', "''"))
}

/// The statements that make the master user, one per line (single-user mode runs each line):
/// not a superuser, but most of what RDS's `rds_superuser` gives — create databases, read and
/// write all data, monitor, signal other sessions — and the owner of the `postgres` database
/// (so of its `public` schema, and able to create trusted extensions). Not CREATEROLE: up to
/// PostgreSQL 15 a CREATEROLE role may grant itself any non-superuser role, including
/// `pg_execute_server_program` (a shell as the engine's OS user, which owns every volume on
/// the host). Server file access and `COPY ... PROGRAM` stay with superusers.
fn master_user_sql(spec: &InstanceSpec) -> String {
    let role = quote_ident(&spec.master_user);
    let verifier = quote_literal(&spec.master_verifier);
    format!(
        "CREATE ROLE {role} LOGIN CREATEDB PASSWORD {verifier} IN ROLE pg_read_all_data, pg_write_all_data, pg_monitor, pg_signal_backend;\n\
         ALTER DATABASE postgres OWNER TO {role};\n"
    )
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The name of OS user `uid`, if it has one.
fn os_user_name(uid: u32) -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or NULL; we copy the name out at once.
    let pw = unsafe { libc::getpwuid(uid) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: pw is non-null and pw_name points to a NUL-terminated string.
    let name = unsafe { std::ffi::CStr::from_ptr((*pw).pw_name) };
    name.to_str().ok().map(str::to_string)
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Bytes of the files under `path` (0 where unreadable).
pub(super) fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_values_and_literals_cannot_break_out() {
        assert_eq!(conf_value("127.0.0.1"), "'127.0.0.1'");
        assert_eq!(conf_value("a'\nssl = off"), "'a''ssl = off'");
        assert_eq!(conf_value(r"x\'"), r"'x\\'''");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
