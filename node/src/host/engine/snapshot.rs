//! Online snapshots of a running instance: `pg_basebackup` over the instance's private
//! socket (tar, lz4, WAL streamed alongside, a CRC-32C manifest), verified before it
//! counts as `pg_verifybackup` would (see [`super::verify`]). Writes are never blocked; the checkpoint it starts
//! with is a fast one.

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::postgres::{io, Postgres};
use super::verify::{Manifest, WalRange};
use super::{verify, EngineError, InstanceSpec};

/// A snapshot whose copy does not match its manifest.
fn damaged(detail: impl Into<String>) -> EngineError {
    EngineError::Command {
        what: "verify snapshot".into(),
        detail: detail.into(),
    }
}

/// Sets its flag when dropped: a thread checking a snapshot stops when its caller goes.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Postgres {
    /// Until dropped: put the walsenders serving `pg_basebackup` (the data and the WAL
    /// stream) at background priority, as the client side is, checking every 100 ms.
    async fn background_walsenders(&self, spec: &InstanceSpec) {
        let mut done = std::collections::BTreeSet::new();
        let mut client = None;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            if client.is_none() {
                if let Ok((c, conn)) = self
                    .superuser(spec, std::time::Duration::from_secs(2))
                    .connect(tokio_postgres::NoTls)
                    .await
                {
                    tokio::spawn(conn);
                    client = Some(c);
                }
            }
            let Some(c) = client.as_ref() else { continue };
            let Ok(rows) = c
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender' AND application_name = 'pg_basebackup'",
                    &[],
                )
                .await
            else {
                client = None;
                continue;
            };
            for pid in rows.iter().map(|r| r.get::<_, i32>(0)) {
                if done.insert(pid) {
                    background_priority(pid);
                    tracing::info!(instance = %spec.id, pid, "A snapshot's walsender runs at background priority.");
                }
            }
        }
    }
}

/// Give process `pid` the priority of [`Postgres::background`]: the idle CPU group and
/// the idle I/O class (see [`crate::background`]), and nice 15. Best effort: a process
/// that has gone is no matter.
fn background_priority(pid: i32) {
    if let Some(g) = crate::background::group() {
        let _ = g.adopt(pid);
    }
    crate::background::set_io_priority(pid, crate::background::IO_IDLE);
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 15);
    }
}

/// A directory of passing files, removed when this is dropped: when the work is done,
/// failed, or stopped midway (a promotion pre-empts a snapshot by dropping it), so no
/// copy is left in shared memory or on the disk.
#[derive(Debug)]
pub struct Spool(PathBuf);

impl Spool {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A verified snapshot in a spool directory, ready to upload.
#[derive(Debug)]
pub struct Snapshot {
    /// Timeline the backup was taken on.
    pub timeline: u32,
    /// WAL position the backup starts at (replay from here).
    pub start_lsn: String,
    /// WAL position it is consistent at (restorable from here on).
    pub end_lsn: String,
    /// When the copy ended (consistent by then): its time in the catalog. Not after the
    /// verification, which takes seconds: a commit in between is not in the snapshot, and
    /// the catalog would call it restorable while the archive has yet to store it.
    pub copied_at_ms: u64,
    /// Its files: `base.tar.lz4`, `pg_wal.tar`, `backup_manifest`.
    pub files: Vec<PathBuf>,
    /// How long the copy took (each phase costs the database differently: the task's
    /// result says both).
    pub copy_time: std::time::Duration,
    /// How long its verification took, after the copy.
    pub verify_time: std::time::Duration,
    /// The directory holding them, removed when the snapshot is dropped.
    pub spool: Spool,
}

/// A standby's snapshot starts from its primary's last checkpoint when that is at most this
/// much WAL behind; else the primary checkpoints first. An immediate checkpoint cost a
/// Multi-AZ primary's clients half their throughput for seconds (its writes, then a
/// full-page image in the WAL for every page's first change after it, which the
/// synchronous standby must write before each commit returns: bench backups), and
/// carrying the WAL costs a restore from the snapshot its replay: a quarter of the
/// default `max_wal_size`, less than PostgreSQL's own crash recovery may replay.
pub const CHECKPOINT_CARRY_BYTES: u64 = 256 << 20;

/// The checkpoint a standby's snapshot starts from (see [`Postgres::checkpoint`]).
#[derive(Debug)]
pub struct Checkpoint {
    /// Its redo position: where a backup that starts from it starts.
    pub redo_lsn: String,
    /// Whether it was made now (else it is the primary's last one).
    pub forced: bool,
    /// Bytes of WAL written since its redo position.
    pub wal_behind: u64,
    /// Seconds since it was made.
    pub age_s: f64,
}

impl std::fmt::Display for Checkpoint {
    /// The task's result, as `ops describe` shows it; ends with `redo at LSN`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = self.wal_behind as f64 / (1 << 20) as f64;
        if self.forced {
            write!(f, "checkpoint made; redo at {}", self.redo_lsn)
        } else {
            write!(
                f,
                "no checkpoint forced: the last, {:.0} s ago, is {mib:.1} MiB of WAL behind (at most {} MiB is carried); redo at {}",
                self.age_s,
                CHECKPOINT_CARRY_BYTES >> 20,
                self.redo_lsn
            )
        }
    }
}

/// Shared memory, where a snapshot's passing files go when they fit easily.
const SHM: &str = "/dev/shm";

/// The file in an engine's directory in [`SHM`] that names the engine's root.
const SCRATCH_OWNER: &str = "root";

/// This engine's directory in [`SHM`], made empty: named for its `root` (so two hosts on
/// one machine never share one) and holding a file that names the root. Clears what
/// crashed runs left first: its own (nothing of this engine runs yet), and any other
/// engine's whose root is gone (a host killed with its directory, as test clusters and
/// `keel dev --fresh` do). None if shared memory cannot be used.
pub(super) fn prepare_scratch(root: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let base = Path::new(SHM).join(format!(
        "keel-{}",
        &crate::backup::store::sha256_hex(root.as_os_str().as_bytes())[..12]
    ));
    let _ = std::fs::remove_dir_all(&base);
    for e in std::fs::read_dir(SHM).ok()?.flatten() {
        if !e.file_name().to_string_lossy().starts_with("keel-") {
            continue;
        }
        if let Ok(owner) = std::fs::read_to_string(e.path().join(SCRATCH_OWNER)) {
            if !Path::new(&owner).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    std::fs::create_dir_all(&base).ok()?;
    std::fs::write(base.join(SCRATCH_OWNER), root.as_os_str().as_bytes()).ok()?;
    Some(base)
}

impl Postgres {
    /// A directory for `bytes` of a snapshot's passing files: in shared memory
    /// (`/dev/shm/keel-{root}/{what}-{id}`) when that is at most a quarter of the memory
    /// available and of the room there, else `fallback`. Files written to the disk beside
    /// the database's own compete with every commit's WAL flush: the kernel writes them
    /// back in one burst 30 s later, and commits on the same disk stalled for seconds
    /// (bench backups).
    fn scratch_dir(&self, what: &str, id: &str, bytes: u64, fallback: PathBuf) -> PathBuf {
        let Some(base) = &self.scratch else { return fallback };
        let available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemAvailable:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        let room = free_bytes(base).unwrap_or(0);
        if bytes.saturating_mul(4) <= available.min(room) {
            base.join(format!("{what}-{id}"))
        } else {
            fallback
        }
    }
}

/// Free bytes on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-parameter for the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

impl Postgres {
    /// Snapshot the running instance `spec`, and verify it: its files go to shared memory
    /// when they fit easily (see [`Self::scratch_dir`]), else into `work`; either is made empty
    /// first.
    pub async fn snapshot(&self, spec: &InstanceSpec, work: &Path) -> Result<Snapshot, EngineError> {
        // The compressed copy is smaller than the data directory it comes from.
        let bound = super::postgres::dir_size(&self.data(&spec.id));
        let spool = Spool(self.scratch_dir("snapshot", &spec.id, bound, work.to_path_buf()));
        let _ = std::fs::remove_dir_all(work);
        let _ = std::fs::remove_dir_all(spool.path());
        self.snapshot_into(spec, spool).await
    }

    /// Ahead of its standby's snapshot, a checkpoint on the running primary `spec` unless
    /// its last one is at most [`CHECKPOINT_CARRY_BYTES`] of WAL behind: the standby's copy
    /// starts at the restartpoint that checkpoint allows, carrying the WAL since.
    pub async fn checkpoint(&self, spec: &InstanceSpec) -> Result<Checkpoint, EngineError> {
        let client = self.superuser_client(spec, "checkpoint").await?;
        let failed = |e: tokio_postgres::Error| EngineError::Command {
            what: "checkpoint".into(),
            detail: super::postgres::explain(&e),
        };
        let last = || async {
            let row = client
                .query_one(
                    "SELECT redo_lsn::text, pg_wal_lsn_diff(pg_current_wal_lsn(), redo_lsn)::bigint, \
                     extract(epoch FROM now() - checkpoint_time)::float8 FROM pg_control_checkpoint()",
                    &[],
                )
                .await
                .map_err(failed)?;
            Ok::<_, EngineError>(Checkpoint {
                redo_lsn: row.get(0),
                wal_behind: row.get::<_, i64>(1).max(0) as u64,
                age_s: row.get::<_, f64>(2).max(0.0),
                forced: false,
            })
        };
        let before = last().await?;
        if before.wal_behind <= CHECKPOINT_CARRY_BYTES {
            return Ok(before);
        }
        client.batch_execute("CHECKPOINT").await.map_err(failed)?;
        Ok(Checkpoint {
            forced: true,
            ..last().await?
        })
    }

    /// On a standby (the instance `client` is connected to): wait (at most 10 s) until it
    /// has replayed what it had received when asked, so the primary's latest checkpoint is
    /// one its restartpoint can use. Best effort: a standby that lags only makes a snapshot
    /// that carries more WAL. On a primary, nothing to wait for.
    async fn replay_received(client: &tokio_postgres::Client) {
        let Ok(Some(received)) = client
            .query_one("SELECT pg_last_wal_receive_lsn()::text", &[])
            .await
            .map(|r| r.get::<_, Option<String>>(0))
        else {
            return;
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            let caught_up = client
                .query_one("SELECT pg_last_wal_replay_lsn() >= $1::text::pg_lsn", &[&received])
                .await
                .is_ok_and(|r| r.get::<_, Option<bool>>(0).unwrap_or(true));
            if caught_up {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    async fn snapshot_into(&self, spec: &InstanceSpec, spool: Spool) -> Result<Snapshot, EngineError> {
        // Best effort: an engine this cannot reach fails the copy itself, clearly.
        if let Ok(client) = self.superuser_client(spec, "snapshot").await {
            Self::replay_received(&client).await;
        }
        let started = std::time::Instant::now();
        let out = spool.path().join("backup");
        std::fs::create_dir_all(spool.path()).map_err(io("create snapshot directory"))?;
        self.chown(spool.path())?;
        let mut basebackup = self.background("pg_basebackup");
        if self.snapshot_max_rate_mib > 0 {
            // The data files' rate; the WAL streamed beside them is not held back.
            basebackup.arg(format!("--max-rate={}M", self.snapshot_max_rate_mib));
        }
        let copy = self.run(
            "pg_basebackup",
            basebackup
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
                // lz4: compressing and, above all, restoring cost a fraction of gzip's
                // CPU (bench backups); pg_wal.tar is written uncompressed with it.
                .args([
                    "--format=tar",
                    "--compress=lz4",
                    "--wal-method=stream",
                    "--checkpoint=fast",
                ])
                // The stored objects carry our own SHA-256; the manifest's checksums only
                // let pg_verifybackup check the copy, and CRC-32C costs a fraction of the CPU.
                .args(["--manifest-checksums=CRC32C", "--no-sync"]),
            None,
        );
        // The engine's side of the copy (its walsenders) yields to the clients too.
        tokio::select! {
            copied = copy => { copied?; }
            () = self.background_walsenders(spec) => unreachable!("it never ends"),
        }
        let copied_at_ms = crate::clock::now_ms();
        let copied = started.elapsed();
        let manifest = self.verify(&spec.id, &out).await?;
        let (base, wal) = tars(&out)?;
        let range = &manifest.wal_ranges[0];
        Ok(Snapshot {
            timeline: range.timeline,
            start_lsn: range.start.clone(),
            end_lsn: range.end.clone(),
            copied_at_ms,
            files: vec![base, wal, out.join("backup_manifest")],
            copy_time: copied,
            verify_time: started.elapsed() - copied,
            spool,
        })
    }

    /// Verify the snapshot of instance `id` in `dir` (as `pg_basebackup` wrote it) against
    /// its manifest, as `pg_verifybackup` would: every file's size and checksum, and the
    /// WAL it needs; the manifest, if all holds.
    pub async fn verify(&self, id: &str, dir: &Path) -> Result<Arc<Manifest>, EngineError> {
        let text = std::fs::read(dir.join("backup_manifest")).map_err(io("read backup manifest"))?;
        let manifest = Arc::new(Manifest::parse(&text).map_err(damaged)?);
        let (base, wal) = tars(dir)?;
        self.check_base(&base, manifest.clone()).await?;
        self.check_wal(id, &wal, &manifest.wal_ranges, dir).await?;
        Ok(manifest)
    }

    /// Check the base tar against `manifest` as `lz4` decompresses it (at background
    /// priority), in a thread of its own; dropping the future stops it.
    async fn check_base(&self, base: &Path, manifest: Arc<Manifest>) -> Result<verify::Checked, EngineError> {
        use std::process::Stdio;
        if base.extension().and_then(|e| e.to_str()) != Some("lz4") {
            return Err(damaged(format!(
                "{} is not lz4, as snapshots are taken",
                base.display()
            )));
        }
        let mut lz4 = self.background_std("/usr/bin/lz4");
        lz4.arg("-dc").arg(base).stdout(Stdio::piped()).stderr(Stdio::piped());
        let lz4 = lz4.spawn().map_err(io("start lz4 to check the snapshot"))?;
        let (done, _stop) = read_lz4(lz4, move |tar, stop| {
            // Checking every file's CRC costs a core's worth while it runs (a thread of
            // its own: it may leave the host manager's group for the idle one).
            crate::background::enter_current_thread();
            manifest.check_base(tar, stop)
        });
        done.await
            .unwrap_or_else(|_| Err("the snapshot's check ended without an answer".into()))
            .map_err(damaged)
    }

    /// Check that the WAL in `wal` (a tar) covers `ranges` and parses, with `pg_waldump`
    /// as `pg_verifybackup` does: it reads a directory, so the WAL is unpacked first, in
    /// memory when it fits easily (the WAL, unlike the base, is the size of its range).
    async fn check_wal(&self, id: &str, wal: &Path, ranges: &[WalRange], dir: &Path) -> Result<(), EngineError> {
        let size = std::fs::metadata(wal).map_err(io("read the snapshot's WAL"))?.len();
        // Removed when done, or when the snapshot is stopped midway.
        let plain = Spool(self.scratch_dir("verify", id, size, dir.join("verify")));
        std::fs::create_dir_all(plain.path()).map_err(io("create verify directory"))?;
        self.chown(plain.path())?;
        self.untar(wal, plain.path(), true).await?;
        for r in ranges {
            self.run(
                "verify snapshot WAL",
                self.background("pg_waldump")
                    .arg("--quiet")
                    .arg(format!("--path={}", plain.path().display()))
                    .arg(format!("--timeline={}", r.timeline))
                    .arg(format!("--start={}", r.start))
                    .arg(format!("--end={}", r.end)),
                None,
            )
            .await?;
        }
        Ok(())
    }

    /// Unpack `tar` (plain, `.gz` or `.lz4`, by its name) into `into`; at background
    /// priority when `background`.
    pub(super) async fn untar(&self, tar: &Path, into: &Path, background: bool) -> Result<(), EngineError> {
        let mut cmd = if background {
            self.background("/bin/tar")
        } else {
            self.command("/bin/tar")
        };
        untar_args(&mut cmd, tar.extension().and_then(|e| e.to_str()));
        self.run("unpack snapshot", cmd.arg(tar).arg("-C").arg(into), None)
            .await
            .map(drop)
    }

    /// An unpacking into `into` of what is written to its stdin (`name` is the tar's file
    /// name, which says its compression): an lz4 tar goes through `lz4 -dc` into a thread
    /// writing its files with direct I/O (see [`super::unpack`]); the caller writes, closes
    /// and [`Unpacker::finish`]es. Dropping it stops the unpacking.
    pub fn untar_stdin(&self, name: &str, into: &Path) -> Result<Unpacker, EngineError> {
        use std::os::unix::io::AsRawFd;
        use std::process::Stdio;
        let ext = Path::new(name).extension().and_then(|e| e.to_str());
        if ext == Some("lz4") {
            let mut lz4 = self.std_command("/usr/bin/lz4");
            lz4.arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut lz4 = lz4.spawn().map_err(|e| EngineError::Command {
                what: "unpack snapshot".into(),
                detail: format!("cannot start lz4: {e}"),
            })?;
            // 1 MiB pipes, not 64 KiB: a sixteenth of the wake-ups, and lz4 runs ahead of
            // a direct write by a whole stretch.
            for fd in [
                lz4.stdin.as_ref().map(|p| p.as_raw_fd()),
                lz4.stdout.as_ref().map(|p| p.as_raw_fd()),
            ]
            .into_iter()
            .flatten()
            {
                // SAFETY: fcntl on a pipe the child owns with us, plain integer arguments;
                // a refusal (a lower pipe-max-size) leaves the default, which works.
                unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20) };
            }
            let stdin = lz4
                .stdin
                .take()
                .map(tokio::process::ChildStdin::from_std)
                .transpose()
                .map_err(io("feed lz4"))?;
            let (into, owner) = (into.to_path_buf(), self.owner());
            let direct = read_lz4(lz4, move |tar, stop| {
                super::unpack::unpack(tar, &into, owner, stop).map(drop)
            });
            return Ok(Unpacker {
                stdin,
                children: Vec::new(),
                direct: Some(direct),
            });
        }
        let mut tar = self.command("/bin/tar");
        tar.arg("-C").arg(into).stdout(Stdio::null()).stderr(Stdio::piped());
        untar_args(&mut tar, ext);
        tar.arg("-").stdin(Stdio::piped());
        let mut tar = tar.spawn().map_err(|e| EngineError::Command {
            what: "unpack snapshot".into(),
            detail: format!("cannot start tar: {e}"),
        })?;
        Ok(Unpacker {
            stdin: tar.stdin.take(),
            children: vec![("tar", tar)],
            direct: None,
        })
    }
}

/// A thread's reading, stopped when its [`StopOnDrop`] is dropped, and its answer.
type Reading<T> = (tokio::sync::oneshot::Receiver<Result<T, String>>, StopOnDrop);

/// Run `read` over what the running `lz4` (stdout and stderr piped) writes, in a thread of
/// its own: then drain lz4's output (a tar ends before its padding does), wait for it and
/// check it exited well; kill it if the reading failed. Dropping the returned guard stops
/// the reading, which `read` sees through the flag it is given.
fn read_lz4<T: Send + 'static>(
    mut lz4: std::process::Child,
    read: impl FnOnce(&mut dyn std::io::Read, &AtomicBool) -> Result<T, String> + Send + 'static,
) -> Reading<T> {
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let stopped = stop.0.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let read = match lz4.stdout.as_mut() {
            Some(out) => {
                let mut out = std::io::BufReader::with_capacity(1 << 20, out);
                read(&mut out, &stopped).and_then(|v| {
                    std::io::copy(&mut out, &mut std::io::sink())
                        .map(|_| v)
                        .map_err(|e| format!("reading lz4's output: {e}"))
                })
            }
            None => Err("lz4 has no output to read".into()),
        };
        if read.is_err() {
            let _ = lz4.kill();
        }
        let answer = lz4
            .wait_with_output()
            .map_err(|e| format!("waiting for lz4: {e}"))
            .and_then(|out| {
                let v = read?;
                if out.status.success() {
                    Ok(v)
                } else {
                    Err(format!(
                        "lz4 failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            });
        let _ = tx.send(answer);
    });
    (rx, stop)
}

/// The base and WAL tar files of a backup in `dir`, whatever their compression
/// (snapshots taken before lz4 are gzip).
pub(super) fn tars(dir: &Path) -> Result<(PathBuf, PathBuf), EngineError> {
    Ok((tar_named(dir, "base.tar")?, tar_named(dir, "pg_wal.tar")?))
}

/// The tar file `stem` (`base.tar`, `pg_wal.tar`) in `dir`, whatever its compression.
pub(super) fn tar_named(dir: &Path, stem: &str) -> Result<PathBuf, EngineError> {
    ["", ".gz", ".lz4"]
        .iter()
        .map(|ext| dir.join(format!("{stem}{ext}")))
        .find(|p| p.exists())
        .ok_or_else(|| EngineError::Unavailable(format!("the snapshot has no {stem} in {}", dir.display())))
}

/// `tar`'s flags for extracting a file with extension `ext` (`gz`, `lz4`, none).
fn untar_args(cmd: &mut tokio::process::Command, ext: Option<&str>) {
    match ext {
        Some("gz") => cmd.arg("-xzf"),
        Some("lz4") => cmd.arg("--use-compress-program=lz4").arg("-xf"),
        _ => cmd.arg("-xf"),
    };
}

/// A running unpacking fed through [`Unpacker::stdin`].
pub struct Unpacker {
    /// Where the tar's bytes go (take it, write, drop it to close).
    pub stdin: Option<tokio::process::ChildStdin>,
    children: Vec<(&'static str, tokio::process::Child)>,
    /// The thread unpacking with direct I/O, if it is one, and what stops it.
    direct: Option<Reading<()>>,
}

impl Unpacker {
    /// Wait for every process of the unpacking; the first that failed, with its output.
    pub async fn finish(self) -> Result<(), EngineError> {
        drop(self.stdin);
        let failed = |detail: String| EngineError::Command {
            what: "unpack snapshot".into(),
            detail,
        };
        if let Some((done, _stop)) = self.direct {
            return match done.await {
                Ok(unpacked) => unpacked.map_err(failed),
                Err(_) => Err(failed("the unpacking ended without an answer".into())),
            };
        }
        let mut first = None;
        for (what, child) in self.children {
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| failed(format!("{what}: {e}")))?;
            if !out.status.success() && first.is_none() {
                first = Some(format!(
                    "{what} failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
        first.map_or(Ok(()), |detail| Err(failed(detail)))
    }
}
