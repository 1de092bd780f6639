//! The continuous WAL archive of one instance: `pg_receivewal` streams the engine's WAL
//! over its private socket into a spool directory as it is written (`--synchronous`:
//! flushed and reported at once, through a replication slot so nothing is recycled
//! before it is received), and an uploader moves it to the zone's store every tick:
//! whole segments once, the segment being written as each new stretch.
//!
//! For a database with `--backup-rpo zero` the engine waits for the archive as its
//! synchronous standby, `pg_receivewal` reaches it through a [`Relay`] that reports WAL
//! flushed only once it is stored, and the uploader runs as soon as new WAL arrives.
//!
//! Each tick also commits a heartbeat transaction (`txid_current()`), stamped after the
//! tick's start time. Recovery to a time T stops at the first commit after T, so T is
//! restorable only once such a commit is in the store: the heartbeat's is, as soon as its
//! position is uploaded. `restorable_until_ms` is the start of the newest tick whose
//! heartbeat is stored, so it trails now by a tick plus an upload.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::relay::{Relay, STANDBY_NAME};
use super::store::BackupStore;
use super::wal::{self, WalObject};
use super::work::wal_prefix;
use crate::clock::now_ms;
use crate::host::engine::postgres::{explain, Postgres};
use crate::host::engine::InstanceSpec;

/// The replication slot the archive streams through.
pub const SLOT: &str = "keel_archive";
/// How often the spool is uploaded and a heartbeat committed.
const TICK: Duration = Duration::from_millis(200);
/// Pause before restarting a failed `pg_receivewal`.
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// The longest the archive's slot may take to be made before it is tried again.
const SLOT_WITHIN: Duration = Duration::from_secs(30);

/// How far an instance's archive reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// The lineage it archives for.
    pub lineage: String,
    /// Timeline of the newest archived WAL.
    pub timeline: u32,
    /// Everything before this position is stored.
    pub archived_lsn: u64,
    /// Every commit up to this time is stored.
    pub restorable_until_ms: u64,
    /// Why it is not moving, if it is not.
    pub problem: Option<String>,
}

struct Running {
    lineage: String,
    stop: CancellationToken,
    coverage: Arc<Mutex<Coverage>>,
    /// The archive's task: one that ended (a panic) is not running, and is started again.
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn live(&self) -> bool {
        !self.stop.is_cancelled() && !self.task.is_finished()
    }
}

/// Every archive this host runs, by instance.
#[derive(Default, Clone)]
pub struct Archives {
    running: Arc<Mutex<HashMap<String, Running>>>,
}

impl Archives {
    /// Make sure `spec`'s instance is being archived for `lineage` into `store` (spooling
    /// under `spool`); a change of lineage restarts it.
    pub fn ensure(
        &self,
        engine: Arc<Postgres>,
        spec: &InstanceSpec,
        lineage: &str,
        store: BackupStore,
        spool: PathBuf,
    ) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = running.get(&spec.id) {
            // Already archiving this lineage: nothing to do; another one: replaced.
            if r.lineage == lineage && r.live() {
                return;
            }
            r.stop.cancel();
        }
        let stop = CancellationToken::new();
        let coverage = Arc::new(Mutex::new(Coverage {
            lineage: lineage.to_string(),
            ..Coverage::default()
        }));
        let archive = Archive {
            engine,
            spec: spec.clone(),
            lineage: lineage.to_string(),
            store,
            spool,
            coverage: coverage.clone(),
        };
        let task = tokio::spawn(archive.run(stop.clone()));
        running.insert(
            spec.id.clone(),
            Running {
                lineage: lineage.to_string(),
                stop,
                coverage,
                task,
            },
        );
    }

    /// Stop archiving an instance (it is being stopped or destroyed).
    pub fn stop(&self, instance: &str) {
        if let Some(r) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(instance) {
            r.stop.cancel();
        }
    }

    /// Whether an instance is being archived for `lineage`.
    pub fn archiving(&self, instance: &str, lineage: &str) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.get(instance).is_some_and(|r| r.lineage == lineage && r.live())
    }

    /// How far an instance's archive reaches.
    pub fn coverage(&self, instance: &str) -> Option<Coverage> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .get(instance)
            .map(|r| r.coverage.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

struct Archive {
    engine: Arc<Postgres>,
    spec: InstanceSpec,
    lineage: String,
    store: BackupStore,
    spool: PathBuf,
    coverage: Arc<Mutex<Coverage>>,
}

/// How long the stored position may stand still while the engine has WAL beyond it.
const STALL_AFTER: Duration = Duration::from_secs(20);

/// Notices an archive that stores nothing new though the engine writes WAL (every tick's
/// heartbeat is some): the archive must trail by about a second, so 20 s behind and not
/// moving is a stuck receiver or slot, not load.
struct Watchdog {
    stored: u64,
    moved_at: std::time::Instant,
}

impl Watchdog {
    fn new(now: std::time::Instant) -> Self {
        Self {
            stored: 0,
            moved_at: now,
        }
    }

    /// Why the archive is stuck, if it is: `stored` is what it has stored, `head` where
    /// the engine's WAL is (known on heartbeat ticks only).
    fn stalled(&mut self, stored: u64, head: Option<u64>, now: std::time::Instant) -> Option<String> {
        if stored > self.stored || head.is_some_and(|h| h <= stored) {
            self.stored = self.stored.max(stored);
            self.moved_at = now;
            return None;
        }
        let head = head?;
        let still = now.duration_since(self.moved_at);
        (still >= STALL_AFTER).then(|| {
            format!(
                "nothing stored for {} s: the archive reaches {} but the engine's WAL is at {}",
                still.as_secs(),
                wal::format_lsn(self.stored),
                wal::format_lsn(head)
            )
        })
    }
}

/// What the uploader has stored of the spool.
#[derive(Default)]
struct Uploaded {
    /// Per segment being written: bytes stored so far, and the stretch objects' keys.
    parts: HashMap<String, (u64, Vec<String>)>,
    /// History files stored.
    histories: BTreeSet<String>,
    /// (tick start, heartbeat position) not yet known stored.
    beats: Vec<(u64, u64)>,
}

impl Archive {
    async fn run(self, stop: CancellationToken) {
        // Retried, not given up: the host sees this archive as running, and would never
        // start another for the instance.
        while let Err(e) = std::fs::create_dir_all(&self.spool)
            .map_err(|e| e.to_string())
            .and_then(|()| self.engine.chown(&self.spool).map_err(|e| e.to_string()))
        {
            self.problem(format!("cannot make the WAL spool {}: {e}", self.spool.display()));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RESTART_PAUSE) => {}
            }
        }
        // Commits wait for the store: pg_receivewal reaches the engine through the relay.
        let (stored_tx, stored_rx) = watch::channel(0u64);
        let relay = if self.spec.archive_sync {
            match self.start_relay(stored_rx, stop.clone()) {
                Ok(relay) => Some(relay),
                Err(e) => {
                    self.problem(format!("cannot start the archive relay: {e}"));
                    return;
                }
            }
        } else {
            None
        };
        let mut receiver = {
            let (engine, spec, spool, stop) =
                (self.engine.clone(), self.spec.clone(), self.spool.clone(), stop.clone());
            let coverage = self.coverage.clone();
            let via = relay.as_ref().map(|_| self.relay_dir());
            tokio::spawn(async move { receive(engine, spec, spool, via, stop, coverage).await })
        };
        let mut received = relay.map(|r| r.received);
        let mut watchdog = Watchdog::new(std::time::Instant::now());
        let mut uploaded = Uploaded::default();
        let mut client: Option<tokio_postgres::Client> = None;
        // One clock for the ticks, however often new WAL wakes the loop between them.
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Every tick commits a heartbeat; WAL arriving for a synchronous archive is
            // stored at once (without a heartbeat, which would itself be new WAL).
            let beat = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                // It returns only when stopped: anything else (a panic) ends this archive,
                // which the host then starts again.
                ended = &mut receiver => {
                    self.problem(format!("the WAL receiver ended unexpectedly ({ended:?}); restarting the archive"));
                    return;
                }
                _ = ticks.tick() => true,
                Ok(()) = async { match received.as_mut() { Some(r) => r.changed().await, None => std::future::pending().await } } => false,
            };
            let reach = received.as_ref().map(|r| *r.borrow());
            match self.tick(&mut client, &mut uploaded, beat, reach).await {
                Ok((stored, head)) => {
                    stored_tx.send_if_modified(|s| {
                        let moved = stored > *s;
                        *s = (*s).max(stored);
                        moved
                    });
                    if let Some(why) = watchdog.stalled(stored, head, std::time::Instant::now()) {
                        // Whatever holds it (a receiver that streams nothing, a slot that
                        // does not move), a fresh start of the archive is the cure; the
                        // host starts it again within a second.
                        let state = self.stream_state(client.as_ref()).await;
                        self.problem(format!("{why}; restarting the archive ({state})"));
                        stop.cancel();
                        let _ = receiver.await;
                        return;
                    }
                }
                Err(e) => {
                    client = None;
                    self.problem(e);
                }
            }
        }
        let _ = receiver.await;
    }

    fn relay_dir(&self) -> PathBuf {
        self.spool.with_extension("relay")
    }

    fn start_relay(&self, stored: watch::Receiver<u64>, stop: CancellationToken) -> Result<Relay, String> {
        let dir = self.relay_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        self.engine.chown(&dir).map_err(|e| e.to_string())?;
        Relay::start(&dir, &self.engine.volume(&self.spec.id), self.spec.port, stored, stop).map_err(|e| e.to_string())
    }

    /// What the engine says of the archive's slot and stream, for a warning.
    async fn stream_state(&self, client: Option<&tokio_postgres::Client>) -> String {
        let Some(c) = client else {
            return "engine not reached".into();
        };
        let row = c
            .query_opt(
                "SELECT s.active, s.restart_lsn::text, r.state, r.flush_lsn::text \
                 FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid \
                 WHERE s.slot_name = $1",
                &[&SLOT],
            )
            .await;
        match row {
            Ok(None) => "the slot does not exist".into(),
            Ok(Some(r)) => format!(
                "slot active: {}, restart position {}, stream state {}, flushed {}",
                r.get::<_, bool>(0),
                r.get::<_, Option<String>>(1).unwrap_or_else(|| "none".into()),
                r.get::<_, Option<String>>(2).unwrap_or_else(|| "none".into()),
                r.get::<_, Option<String>>(3).unwrap_or_else(|| "none".into()),
            ),
            Err(e) => format!("cannot read the slot: {}", explain(&e)),
        }
    }

    fn problem(&self, why: String) {
        let mut c = self.coverage.lock().unwrap_or_else(|p| p.into_inner());
        // Once per new reason: a post-mortem shows why an archive did not advance.
        if c.problem.as_deref() != Some(why.as_str()) {
            tracing::warn!(instance = %self.spec.id, problem = %why, "WAL archive is not keeping up.");
        }
        c.problem = Some(why);
    }

    /// Commit a heartbeat (if `beat`), store the spool up to what pg_receivewal has
    /// flushed (`received` for a synchronous archive, else the stream's report), and
    /// return the position now stored and, with a heartbeat, the engine's own position.
    async fn tick(
        &self,
        client: &mut Option<tokio_postgres::Client>,
        up: &mut Uploaded,
        beat: bool,
        received: Option<u64>,
    ) -> Result<(u64, Option<u64>), String> {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            let (c, conn) = self
                .engine
                .superuser(&self.spec, Duration::from_secs(5))
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| format!("cannot reach the engine: {}", explain(&e)))?;
            tokio::spawn(conn);
            *client = Some(c);
        }
        let c = client.as_ref().expect("connected above");
        let (flushed, head) = if beat {
            // The heartbeat: a commit stamped after `started`. Its position is read once it
            // has committed (a second statement: the first's commit record is written only
            // after its result), so storing up to there stores the commit itself.
            let started = now_ms();
            c.query_one("SELECT txid_current()", &[])
                .await
                .map_err(|e| format!("heartbeat failed: {}", explain(&e)))?;
            // The receiver's own report of what it flushed: the slot's restart position
            // is reserved ahead of the receiver, so it is not what the spool holds.
            let row = c
                .query_one(
                    "SELECT pg_current_wal_insert_lsn()::text, \
                     (SELECT r.flush_lsn::text FROM pg_replication_slots s \
                      JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1)",
                    &[&SLOT],
                )
                .await
                .map_err(|e| format!("heartbeat failed: {}", explain(&e)))?;
            let beat: String = row.get(0);
            let flushed: Option<String> = row.get(1);
            let beat = wal::parse_lsn(&beat).ok_or("unreadable WAL position")?;
            up.beats.push((started, beat));
            (flushed.as_deref().and_then(wal::parse_lsn).unwrap_or(0), Some(beat))
        } else {
            (0, None)
        };
        // What pg_receivewal has flushed (and so written to the spool) by now: the relay
        // knows it first hand; otherwise the engine's view of the stream does.
        let flushed = received.unwrap_or(flushed);
        let timeline = self.upload(flushed, up).await?;
        // Every heartbeat at or below the stored position is stored.
        let stored: Vec<u64> = up
            .beats
            .iter()
            .filter(|(_, l)| *l <= flushed)
            .map(|(t, _)| *t)
            .collect();
        up.beats.retain(|(_, l)| *l > flushed);
        let mut cov = self.coverage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = stored.into_iter().max() {
            cov.restorable_until_ms = cov.restorable_until_ms.max(t);
        }
        if flushed > cov.archived_lsn {
            cov.archived_lsn = flushed;
        }
        if timeline > 0 {
            cov.timeline = timeline;
        }
        cov.problem = None;
        Ok((flushed, head))
    }

    /// Upload what the spool holds below `flushed`; returns the newest timeline seen.
    async fn upload(&self, flushed: u64, up: &mut Uploaded) -> Result<u32, String> {
        let prefix = wal_prefix(&self.lineage);
        let mut names: Vec<String> = std::fs::read_dir(&self.spool)
            .map_err(|e| format!("cannot read the WAL spool: {e}"))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut timeline = 0;
        for file in names {
            let path = self.spool.join(&file);
            if file.ends_with(".history") {
                if up.histories.contains(&file) {
                    continue;
                }
                let bytes = read(&path)?;
                let sha = super::store::sha256_hex(&bytes);
                let obj = WalObject::History {
                    name: file.clone(),
                    sha256: sha,
                };
                self.put(&format!("{prefix}{}", obj.file_name()), bytes).await?;
                up.histories.insert(file);
            } else if let Some(name) = file.strip_suffix(".partial") {
                let Some(start) = wal::segment_start(name) else {
                    continue;
                };
                // Completed since the listing: pg_receivewal renamed it to the whole
                // segment, which the next pass stores (not a failure of this one).
                if !path.exists() {
                    continue;
                }
                timeline = timeline.max(wal::timeline_of(name).unwrap_or(0));
                let upto = flushed.saturating_sub(start).min(wal::SEGMENT_BYTES);
                let entry = up.parts.entry(name.to_string()).or_default();
                if upto <= entry.0 {
                    continue;
                }
                let bytes = read_range(&path, entry.0, upto)?;
                let obj = WalObject::Part {
                    name: name.to_string(),
                    start: entry.0,
                    end: upto,
                    sha256: super::store::sha256_hex(&bytes),
                };
                let key = format!("{prefix}{}", obj.file_name());
                self.put(&key, bytes).await?;
                entry.0 = upto;
                entry.1.push(key);
            } else if wal::segment_start(&file).is_some() {
                timeline = timeline.max(wal::timeline_of(&file).unwrap_or(0));
                let bytes = read(&path)?;
                let obj = WalObject::Segment {
                    name: file.clone(),
                    sha256: super::store::sha256_hex(&bytes),
                };
                self.put(&format!("{prefix}{}", obj.file_name()), bytes).await?;
                // The whole segment is stored: its stretches and the local copy can go.
                if let Some((_, keys)) = up.parts.remove(&file) {
                    for key in keys {
                        let _ = self.store.delete(&key).await;
                    }
                }
                std::fs::remove_file(&path).map_err(|e| format!("cannot remove archived {file}: {e}"))?;
            }
        }
        Ok(timeline)
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.store
            .put_bytes(key, bytes)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn read_range(path: &Path, from: u64, to: u64) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    f.seek(SeekFrom::Start(from)).map_err(|e| e.to_string())?;
    let mut buf = vec![0; (to - from) as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(buf)
}

/// Make sure the archive's slot exists, reserving WAL from the moment it is made. A slot
/// made without (as `pg_receivewal --create-slot` makes it) holds nothing until the
/// receiver's first report: a checkpoint in between (a promotion's come quickly) removes
/// the segment the receiver is about to ask for and invalidates the slot for good.
pub async fn ensure_slot(engine: &Postgres, spec: &InstanceSpec) -> Result<(), String> {
    let (client, conn) = engine
        .superuser(spec, SLOT_WITHIN)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot reach the engine to make the archive's slot: {}", explain(&e)))?;
    tokio::spawn(conn);
    let failed = |e: tokio_postgres::Error| format!("making the archive's slot failed: {}", explain(&e));
    let status = client
        .query_opt(
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&SLOT],
        )
        .await
        .map_err(failed)?;
    match status.map(|r| r.get::<_, Option<String>>(0)) {
        None => {
            client
                .execute("SELECT pg_create_physical_replication_slot($1, true)", &[&SLOT])
                .await
                .map_err(failed)?;
            // Reserved from the last checkpoint, which after a promotion lies on the old
            // timeline: the receiver would then write the new timeline's first segment
            // from the switch on only, zeros before it, and recovery reads that segment
            // whole. From the current position it streams the new timeline's segment
            // as the engine holds it.
            // (A checkpoint under way may have put the reservation past the flushed
            // WAL already: then it stays.)
            client
                .execute(
                    "SELECT pg_replication_slot_advance(slot_name, pg_current_wal_flush_lsn()) \
                     FROM pg_replication_slots WHERE slot_name = $1 AND restart_lsn < pg_current_wal_flush_lsn()",
                    &[&SLOT],
                )
                .await
                .map(drop)
                .map_err(failed)
        }
        // Never dropped and made again here: the WAL the archive lacks is gone, and an
        // archive that went on past the gap would offer restores that cannot be made.
        Some(Some(s)) if s == "lost" => Err(format!(
            "the archive's replication slot {SLOT} was invalidated: the engine removed WAL before the archive stored it (is max_slot_wal_keep_size set on this instance?), so the archive stops where it is rather than store a gap"
        )),
        Some(_) => Ok(()),
    }
}

/// Keep `pg_receivewal` running into `spool` until `stop` (restarted after a pause when it
/// exits: the engine restarting, a dropped connection).
async fn receive(
    engine: Arc<Postgres>,
    spec: InstanceSpec,
    spool: PathBuf,
    via: Option<PathBuf>,
    stop: CancellationToken,
    coverage: Arc<Mutex<Coverage>>,
) {
    let conninfo = format!(
        "host={} port={} user=postgres",
        engine.volume(&spec.id).display(),
        spec.port
    );
    // The stream goes through the relay when there is one, under the standby name the
    // engine waits for.
    let stream_conninfo = match &via {
        Some(dir) => format!(
            "host={} port={} user=postgres application_name={STANDBY_NAME}",
            dir.display(),
            spec.port
        ),
        None => conninfo.clone(),
    };
    loop {
        // Bounded: a statement that hangs must not stop the archive for good.
        let created = tokio::time::timeout(SLOT_WITHIN, ensure_slot(&engine, &spec)).await;
        let outcome: Result<(), String> = match created {
            Err(_) => Err(format!(
                "making the archive's slot took over {} s",
                SLOT_WITHIN.as_secs()
            )),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => {
                let mut cmd = engine.command("pg_receivewal");
                cmd.args([
                    "--dbname",
                    &stream_conninfo,
                    "--slot",
                    SLOT,
                    "--synchronous",
                    "--status-interval",
                    "1",
                    "--no-loop",
                ])
                .arg("--directory")
                .arg(&spool)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped());
                match cmd.spawn() {
                    Err(e) => Err(format!("cannot start pg_receivewal: {e}")),
                    Ok(mut child) => {
                        // What it says on the way out is the reason: kept for the warning.
                        let said = child.stderr.take().map(|mut e| {
                            tokio::spawn(async move {
                                let mut text = String::new();
                                let _ = tokio::io::AsyncReadExt::read_to_string(&mut e, &mut text).await;
                                text
                            })
                        });
                        tokio::select! {
                            _ = stop.cancelled() => {
                                let _ = child.kill().await;
                                return;
                            }
                            out = child.wait() => {
                                let said = match said {
                                    Some(t) => t.await.unwrap_or_default(),
                                    None => String::new(),
                                };
                                Err(format!(
                                    "pg_receivewal exited ({}): {}",
                                    out.map_or_else(|e| e.to_string(), |s| s.to_string()),
                                    said.lines().last().unwrap_or("it said nothing")
                                ))
                            }
                        }
                    }
                }
            }
        };
        if let Err(why) = outcome {
            // Said once per new reason (a receiver that keeps failing the same way would
            // fill the log), so a post-mortem shows why an archive did not advance.
            let mut c = coverage.lock().unwrap_or_else(|p| p.into_inner());
            if c.problem.as_deref() != Some(why.as_str()) {
                tracing::warn!(instance = %spec.id, %why, "WAL receiver stopped; restarting it.");
            }
            c.problem = Some(why);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RESTART_PAUSE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_watchdog_names_an_archive_that_stores_nothing_while_the_engine_writes() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = Watchdog::new(t0);
        // Moving: never stalled, however far behind.
        assert_eq!(w.stalled(100, Some(10_000), at(1)), None);
        assert_eq!(w.stalled(200, Some(20_000), at(30)), None);
        // Still, with WAL beyond it: stalled only once STALL_AFTER has passed.
        assert_eq!(w.stalled(200, Some(30_000), at(49)), None);
        let why = w.stalled(200, Some(30_000), at(50)).expect("20 s without progress");
        assert!(
            why.contains("nothing stored for 20 s") && why.contains("0/7530"),
            "{why}"
        );
        // Ticks without a heartbeat do not know the engine's position: no verdict, no reset.
        let mut w = Watchdog::new(t0);
        assert_eq!(w.stalled(0, None, at(25)), None);
        assert!(w.stalled(0, Some(5), at(25)).is_some());
        // Nothing to store (the engine is where the archive is): idle, not stuck.
        let mut w = Watchdog::new(t0);
        assert_eq!(w.stalled(500, Some(500), at(25)), None);
        assert_eq!(w.stalled(500, Some(600), at(44)), None);
        assert!(w.stalled(500, Some(600), at(45)).is_some());
    }
}
