//! A real `keel host` process running real PostgreSQL: provision, connect, reconfigure,
//! journal, fencing across a restart, destroy.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::Duration;

use keel_jepsen::ports::free_port;
use keel_node::classes;
use keel_node::host::engine::InstanceSpec;
use keel_proto::host::host_manager_client::HostManagerClient;
use keel_proto::host::{HealthRequest, TaskAction, TaskReply, TaskRequest, TaskState};
use tonic::transport::Channel;

use super::bin;

struct HostProc {
    child: Child,
    addr: String,
    root: std::path::PathBuf,
}

/// The CA of these tests' host managers (cluster `lab`), beside their roots.
fn ca_dir(root: &std::path::Path) -> std::path::PathBuf {
    root.with_extension("ca")
}

impl HostProc {
    fn start(root: &std::path::Path, addr: &str) -> Self {
        let ca = keel_node::tls::ca::CaDir::at(&ca_dir(root));
        if !ca.exists() {
            ca.init("lab").unwrap();
            ca.issue(
                &keel_node::tls::ca::Subject::Member(keel_node::tls::identity::Identity::host("lab", "h1")),
                1,
                &root.join("tls"),
            )
            .unwrap();
        }
        // Appended to, so a restarted host manager's log follows the first one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.with_extension("log"))
            .unwrap();
        let child = Command::new(bin())
            .args(["host", "--name", "h1", "--zone", "a", "--addr", addr, "--root"])
            .arg(root)
            .arg("--backup-dir")
            .arg(root.with_extension("backups"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child,
            addr: addr.to_string(),
            root: root.to_path_buf(),
        }
    }

    async fn client(&self) -> HostManagerClient<Channel> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut c = HostManagerClient::new(super::host_channel(&ca_dir(&self.root), &self.addr));
            if c.health(HealthRequest::default()).await.is_ok() {
                return c;
            }
            assert!(tokio::time::Instant::now() < deadline, "host manager did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HostProc {
    fn drop(&mut self) {
        self.kill();
        // Stop any PostgreSQL the test left running.
        if let Ok(entries) = std::fs::read_dir(self.root.join("volumes")) {
            for e in entries.flatten() {
                let _ = Command::new("/usr/lib/postgresql/15/bin/pg_ctl")
                    .arg("-D")
                    .arg(e.path().join("data"))
                    .args(["-m", "immediate", "stop"])
                    .output();
            }
        }
    }
}

/// A new host root under a temporary directory (kept alive by the returned guard) and a free address.
fn fresh_root() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    // The postgres OS user must be able to traverse to the volumes.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let root = dir.path().join("host");
    (dir, root, format!("127.0.0.1:{}", free_port()))
}

fn spec(id: &str, port: u16, class: &str) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        listen_addr: "127.0.0.1".into(),
        port,
        settings: classes::lookup(class).unwrap().settings(),
        storage_gib: 1,
        master_user: "app".into(),
        master_verifier: postgres_protocol::password::scram_sha_256(b"s3cret pass"),
        allowed_cidrs: Some(vec!["127.0.0.0/8".into()]),
        backup_lineage: None,
        archive_sync: false,
        replication: None,
    }
}

fn request(id: &str, fence: u64, action: TaskAction, spec: Option<&InstanceSpec>) -> TaskRequest {
    TaskRequest {
        task_id: id.into(),
        instance_id: spec.map_or("inst-1".into(), |s| s.id.clone()),
        fence,
        action: action as i32,
        spec_json: spec.map(|s| serde_json::to_string(s).unwrap()).unwrap_or_default(),
        join_only: false,
        work_json: String::new(),
        generation: 0,
    }
}

async fn task(
    c: &mut HostManagerClient<Channel>,
    id: &str,
    fence: u64,
    action: TaskAction,
    spec: Option<&InstanceSpec>,
) -> Result<TaskReply, tonic::Status> {
    c.run_task(request(id, fence, action, spec))
        .await
        .map(|r| r.into_inner())
}

fn state(r: &TaskReply) -> TaskState {
    TaskState::try_from(r.state).unwrap()
}

async fn connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=app password='s3cret pass' dbname=postgres connect_timeout=5"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A `keel host` on a fresh root with one small instance, `inst-1`, provisioned and started.
struct RunningInstance {
    /// Dropped first (fields drop in order): stops the host and its PostgreSQL before the
    /// directory goes.
    _host: HostProc,
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    c: HostManagerClient<Channel>,
    port: u16,
    spec: InstanceSpec,
}

impl RunningInstance {
    async fn start() -> Self {
        let (dir, root, addr) = fresh_root();
        let host = HostProc::start(&root, &addr);
        let mut c = host.client().await;
        let port = free_port();
        let spec = spec("inst-1", port, "small");
        for (id, action) in [("p-1", TaskAction::Provision), ("s-1", TaskAction::Start)] {
            let r = task(&mut c, id, 1, action, Some(&spec)).await.unwrap();
            assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
        }
        Self {
            _host: host,
            _dir: dir,
            root,
            c,
            port,
            spec,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_manager_runs_real_postgres() {
    let (_dir, root, addr) = fresh_root();
    let mut host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let port = free_port();
    let small = spec("inst-1", port, "small");

    let r = task(&mut c, "t-provision", 3, TaskAction::Provision, Some(&small))
        .await
        .unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    let r = task(&mut c, "t-start", 3, TaskAction::Start, Some(&small))
        .await
        .unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");

    let db = connect(port)
        .await
        .expect("master user connects over TCP with its password");
    db.batch_execute("CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'kept')")
        .await
        .unwrap();
    let sb: String = db.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "128MB");
    assert!(
        tokio_postgres::connect(
            &format!("host=127.0.0.1 port={port} user=app password=wrong dbname=postgres"),
            tokio_postgres::NoTls
        )
        .await
        .is_err(),
        "a wrong password is refused"
    );

    // A re-sent task id returns the journalled outcome without running again.
    let again = task(&mut c, "t-provision", 3, TaskAction::Provision, Some(&small))
        .await
        .unwrap();
    assert_eq!(state(&again), TaskState::Succeeded);
    let health = c.health(HealthRequest::default()).await.unwrap().into_inner();
    assert_eq!(health.instances, 1);
    assert!(health.instances_health[0].accepting, "{health:?}");

    // Fencing: a newer term is admitted, an older one refused, also after kill -9 of the host manager.
    let medium = spec("inst-1", port, "medium");
    let r = task(&mut c, "t-restart", 4, TaskAction::Restart, Some(&medium))
        .await
        .unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    host.kill();
    host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let stale = task(&mut c, "t-stale", 3, TaskAction::Stop, None).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("older than token 4"), "{}", stale.message());

    // PostgreSQL kept running across the host manager's restart, with the new settings and the data.
    let db = connect(port).await.unwrap();
    let sb: String = db.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "512MB");
    let v: String = db.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
    drop(db);

    let r = task(&mut c, "t-destroy", 4, TaskAction::Destroy, None).await.unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    assert!(connect(port).await.is_err(), "port closed after destroy");
    assert!(!root.join("volumes/inst-1").exists(), "volume gone");
    let health = c.health(HealthRequest::default()).await.unwrap().into_inner();
    assert_eq!(health.instances, 0);
}

/// Processes whose command line names something under `path`.
fn processes_under(path: &std::path::Path) -> Vec<String> {
    pids_under(path).into_iter().map(|(_, cmdline)| cmdline).collect()
}

/// [`processes_under`], with each process's pid.
fn pids_under(path: &std::path::Path) -> Vec<(u32, String)> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| Some((p.file_name().to_string_lossy().parse::<u32>().ok()?, p.path())))
        .filter_map(|(pid, p)| Some((pid, std::fs::read(p.join("cmdline")).ok()?)))
        .map(|(pid, c)| (pid, String::from_utf8_lossy(&c).replace('\0', " ")))
        .filter(|(_, c)| c.contains(&needle))
        .collect()
}

/// How many times the host manager's log says it started task `id`.
fn starts(root: &std::path::Path, id: &str) -> usize {
    let log = std::fs::read_to_string(root.with_extension("log")).unwrap_or_default();
    log.lines()
        .map(super::strip_ansi)
        .filter(|l| l.contains("Running task.") && l.split_whitespace().any(|w| w == format!("task={id}")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_at_a_time_per_instance_and_a_crash_leaves_nothing_half_made() {
    let (_dir, root, addr) = fresh_root();
    let mut host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let port = free_port();
    let small = spec("inst-1", port, "small");

    // The first provision on a fresh host makes the version's template (initdb): slow.
    let first = {
        let mut c = c.clone();
        let req = request("p-a1", 1, TaskAction::Provision, Some(&small));
        tokio::spawn(async move { c.run_task(req).await })
    };
    // (TaskStatus is not the way to wait here: asked about before it arrives, a task is
    // recorded as absent and never runs.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while starts(&root, "p-a1") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "provision never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = c
        .task_status(keel_proto::host::TaskStatusRequest { task_id: "p-a1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&s), TaskState::Running, "{s:?}");
    // A re-send of the same attempt waits on the one running; a new attempt is turned away.
    let resend = {
        let mut c = c.clone();
        let req = request("p-a1", 1, TaskAction::Provision, Some(&small));
        tokio::spawn(async move { c.run_task(req).await })
    };
    let busy = task(&mut c, "p-a2", 1, TaskAction::Provision, Some(&small))
        .await
        .unwrap();
    assert_eq!(state(&busy), TaskState::Busy, "{busy:?}");
    assert!(busy.detail.contains("p-a1"), "{busy:?}");
    assert_eq!(starts(&root, "p-a1"), 1);

    // The host manager dies mid-provision; its engine commands would run on as orphans.
    host.kill();
    assert!(first.await.unwrap().is_err() && resend.await.unwrap().is_err());
    host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let lost = c
        .task_status(keel_proto::host::TaskStatusRequest { task_id: "p-a1".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state(&lost), TaskState::Unknown, "{lost:?}");
    // Asked about once, the lost attempt can never start: a late copy of it is refused.
    let late = task(&mut c, "p-a1", 1, TaskAction::Provision, Some(&small))
        .await
        .unwrap();
    assert_eq!(state(&late), TaskState::Failed, "{late:?}");
    let mut join = request("p-never", 1, TaskAction::Provision, Some(&small));
    join.join_only = true;
    let joined = c.run_task(join).await.unwrap().into_inner();
    assert_eq!(
        state(&joined),
        TaskState::Unknown,
        "join-only never starts a task: {joined:?}"
    );
    assert!(
        !root.join("volumes/inst-1").exists(),
        "the half-made volume was removed"
    );
    for place in ["volumes", "templates"] {
        let left = processes_under(&root.join(place));
        assert!(left.is_empty(), "orphaned engine processes were stopped: {left:?}");
    }

    // Only now does a new attempt run, once, to the end.
    let r = task(&mut c, "p-a2", 1, TaskAction::Provision, Some(&small))
        .await
        .unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    assert_eq!(
        (starts(&root, "p-a1"), starts(&root, "p-a2"), starts(&root, "p-never")),
        (1, 1, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_on_the_host_and_injections_are_refused() {
    let (_dir, root, addr) = fresh_root();
    let host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let port = free_port();

    // Every injection is refused before anything is written.
    type Inject = fn(&mut InstanceSpec);
    let injections: [(&str, Inject); 5] = [
        ("listen_addr", |s| s.listen_addr = "127.0.0.1'\nssl = off\n#".into()),
        ("master_user", |s| {
            s.master_user = "app\"; ALTER ROLE app SUPERUSER; --".into()
        }),
        ("master_user", |s| s.master_user = "postgres".into()),
        ("master_verifier", |s| {
            s.master_verifier = "x' SUPERUSER; --".into();
        }),
        ("master_verifier", |s| {
            s.master_verifier.push_str("\nALTER ROLE app SUPERUSER;")
        }),
    ];
    for (n, (field, inject)) in injections.iter().enumerate() {
        let mut bad = spec("inst-x", port, "small");
        inject(&mut bad);
        let refused = task(&mut c, &format!("bad-{n}"), 1, TaskAction::Provision, Some(&bad))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{field}: {refused:?}");
        assert!(refused.message().contains(field), "{field}: {}", refused.message());
    }
    assert!(!root.join("volumes/inst-x").exists(), "nothing was provisioned");

    let s = spec("inst-1", port, "small");
    for (id, action) in [("p", TaskAction::Provision), ("s", TaskAction::Start)] {
        let r = task(&mut c, id, 1, action, Some(&s)).await.unwrap();
        assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    }
    let volume = root.join("volumes/inst-1");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&volume), 0o700, "the volume (and socket directory) is private");
    assert_eq!(
        mode(&volume.join("instance.json")),
        0o600,
        "the spec with the verifier is private"
    );
    let hba = std::fs::read_to_string(volume.join("data/pg_hba.conf")).unwrap();
    assert!(!hba.contains("trust"), "{hba}");

    // Another OS user cannot reach the socket.
    if unsafe { libc::geteuid() } == 0 {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "/usr/bin/psql", "-h"])
            .arg(&volume)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "SELECT 1",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "another OS user connected: {err}");
        assert!(err.contains("Permission denied"), "{err}");
    }

    // The master user is powerful within its database, but not a superuser.
    let db = connect(port).await.unwrap();
    let sup: bool = db
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'app'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!sup, "the master user is not a superuser");
    for allowed in ["CREATE TABLE t (v int)", "CREATE DATABASE other"] {
        db.batch_execute(allowed).await.expect(allowed);
    }
    for forbidden in [
        "GRANT pg_execute_server_program TO app",
        "GRANT pg_read_server_files TO app",
        "CREATE ROLE other LOGIN",
        "COPY (SELECT 1) TO PROGRAM 'id'",
        "SELECT pg_read_file('/etc/passwd')",
        "COPY t FROM '/etc/hostname'",
        "ALTER ROLE app SUPERUSER",
    ] {
        let e = db.batch_execute(forbidden).await.expect_err(forbidden);
        assert!(
            e.as_db_error()
                .is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{forbidden}: {e:?}"
        );
    }
    let r = task(&mut c, "d", 1, TaskAction::Destroy, None).await.unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
}

/// An online snapshot of a running instance (pg_basebackup over the private socket) is
/// verified against its manifest and names its WAL range; writes go on while it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_snapshot_is_verified_while_writes_go_on() {
    use keel_node::host::engine::postgres::Postgres;
    let (_dir, root, _) = fresh_root();
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
    // What a host killed with its directory left in shared memory goes when an engine starts.
    let crashed = std::path::Path::new("/dev/shm/keel-a-crashed-host");
    std::fs::create_dir_all(crashed.join("snapshot-x")).unwrap();
    std::fs::write(crashed.join("root"), root.join("gone").display().to_string()).unwrap();
    let pg = Postgres::new(&root).unwrap();
    assert!(!crashed.exists(), "a gone host's spool is cleared");
    let port = free_port();
    let s = spec("snap-1", port, "small");
    pg.provision(&s).await.unwrap();
    pg.start(&s).await.unwrap();
    let db = connect(port).await.unwrap();
    db.batch_execute("CREATE TABLE t (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
        .await
        .unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                db.execute("INSERT INTO t DEFAULT VALUES", &[]).await.unwrap();
                n += 1;
            }
            n
        })
    };
    // Let some rows in first, then snapshot while the writer keeps going.
    let before = connect(port).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while before
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 100
    {
        assert!(tokio::time::Instant::now() < deadline, "no rows written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows_at_start: i64 = before.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    let snap = pg.snapshot(&s, &root.join("snapshots/snap-1")).await.unwrap();
    let rows_at_end: i64 = before.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.await.unwrap();
    assert!(
        rows_at_end > rows_at_start,
        "writes went on during the snapshot ({rows_at_start} → {rows_at_end})"
    );
    assert!(written as i64 >= rows_at_end);

    assert_eq!(snap.timeline, 1);
    assert!(snap.start_lsn.contains('/') && snap.end_lsn.contains('/'), "{snap:?}");
    for f in &snap.files {
        assert!(std::fs::metadata(f).unwrap().len() > 0, "{} is empty", f.display());
        assert!(f.starts_with(snap.spool.path()), "{} is in the spool", f.display());
    }
    // A small database's copy passes through shared memory, not the disk.
    assert!(
        snap.spool.path().starts_with("/dev/shm"),
        "{}",
        snap.spool.path().display()
    );
    // Damage caught by the check, in a copy of the real files: a byte of a data file
    // (the base is checked as it streams), and a byte of a WAL record the copy needs.
    let taken = snap.files[0].parent().unwrap().to_path_buf();
    let damaged = |what: &str| {
        let d = root.join(format!("damaged-{what}"));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // The engine's checks run as its own user.
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        for f in &snap.files {
            let to = d.join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        d
    };
    let base = damaged("base");
    let mut tar = lz4(&["-dc"], &std::fs::read(base.join("base.tar.lz4")).unwrap());
    flip(&mut tar, "PG_VERSION", 0);
    std::fs::write(base.join("base.tar.lz4"), lz4(&["-c"], &tar)).unwrap();
    std::fs::set_permissions(base.join("base.tar.lz4"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = pg.verify("snap-1", &base).await.unwrap_err().to_string();
    assert!(err.contains("PG_VERSION: its CRC-32C is"), "{err}");
    let wal = damaged("wal");
    let start = u64::from_str_radix(&snap.start_lsn.replace('/', ""), 16).unwrap();
    let seg = start >> 24;
    let name = format!("{:08X}{:08X}{:08X}", snap.timeline, seg >> 8, seg & 0xff);
    let mut tar = std::fs::read(wal.join("pg_wal.tar")).unwrap();
    flip(&mut tar, &name, (start & 0xff_ffff) as usize + 30);
    std::fs::write(wal.join("pg_wal.tar"), tar).unwrap();
    let err = pg.verify("snap-1", &wal).await.unwrap_err().to_string();
    assert!(err.contains("verify snapshot WAL failed"), "{err}");
    pg.verify("snap-1", &taken).await.unwrap();
    // The spool goes with the snapshot, and the verification's copy is gone already.
    let spool = snap.spool.path().to_path_buf();
    drop(snap);
    assert!(!spool.exists(), "{} is removed", spool.display());
    assert_eq!(snapshot_scratch("snap-1"), Vec::<String>::new());
    pg.shut_down("snap-1").await.unwrap();
}

/// `lz4 args` over `input`.
fn lz4(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("lz4")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeding = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    feeding.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// Flip the byte `at` into the contents of the top-level file `name` in the tar `tar`.
fn flip(tar: &mut [u8], name: &str, at: usize) {
    let mut field = name.as_bytes().to_vec();
    field.push(0);
    let header = (0..tar.len())
        .step_by(512)
        .find(|&h| tar[h..].starts_with(&field) || tar[h..].starts_with(&[b"./", field.as_slice()].concat()))
        .unwrap_or_else(|| panic!("{name} is not in the tar"));
    tar[header + 512 + at] ^= 0xff;
}

/// A snapshot yields to a task that must not wait for it: a stop (as a promotion, a
/// fence and a destroy do) stops the copy at once and runs; the snapshot fails, saying
/// why, and leaves no process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_yields_to_a_stop_instead_of_holding_it() {
    let inst = RunningInstance::start().await;
    let (root, port, s, mut c) = (inst.root.clone(), inst.port, inst.spec.clone(), inst.c.clone());
    // Enough data that the copy takes a while.
    connect(port)
        .await
        .unwrap()
        .batch_execute("CREATE TABLE big AS SELECT g, md5(g::text) || md5((g + 1)::text) AS pad FROM generate_series(1, 2000000) g")
        .await
        .unwrap();
    let mut snapshot = request("snap-1", 1, TaskAction::Snapshot, Some(&s));
    snapshot.work_json = serde_json::to_string(&keel_node::backup::work::TaskWork::Snapshot {
        lineage: "lineage-1".into(),
        id: "snap-1".into(),
        zone: None,
    })
    .unwrap();
    let taking = {
        let mut c = c.clone();
        tokio::spawn(async move { c.run_task(snapshot).await })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !processes_under(&root).iter().any(|p| p.contains("pg_basebackup")) {
        if taking.is_finished() {
            panic!("the snapshot ended before its copy was seen: {:?}", taking.await);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the snapshot's copy never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The copy is held to the host's rate (128 MiB/s by default), so clients keep theirs.
    let copying: Vec<String> = processes_under(&root)
        .into_iter()
        .filter(|p| p.contains("pg_basebackup"))
        .collect();
    assert!(copying.iter().all(|p| p.contains("--max-rate=128M")), "{copying:?}");
    // Its I/O is in the idle class (whatever level `ionice` gives it), behind every
    // commit's WAL flush.
    let classes: Vec<(Option<i32>, String)> = pids_under(&root)
        .into_iter()
        .filter(|(_, c)| c.contains("pg_basebackup"))
        .map(|(pid, c)| (keel_node::background::io_priority(pid as i32), c))
        .collect();
    assert!(
        !classes.is_empty()
            && classes
                .iter()
                .all(|(prio, _)| prio.is_none_or(|p| p >> 13 == keel_node::background::IO_IDLE >> 13)),
        "every running copy in the idle I/O class, and at least one seen: {classes:?}"
    );
    // And it runs in the idle CPU group, where the machine has one (root, a cgroup CPU
    // controller: these test machines do), so it never delays a client's wake-up.
    if keel_node::background::group().is_some() {
        let copies: Vec<(Option<bool>, String)> = pids_under(&root)
            .into_iter()
            .filter(|(_, c)| c.contains("pg_basebackup"))
            .map(|(pid, c)| (keel_node::background::holds(pid), c))
            .collect();
        assert!(
            copies.iter().any(|(inside, _)| *inside == Some(true))
                && copies.iter().all(|(inside, _)| *inside != Some(false)),
            "every running copy in the idle CPU group, and at least one seen: {copies:?}"
        );
    }
    let stopped = task(&mut c, "stop-1", 1, TaskAction::Stop, Some(&s)).await.unwrap();
    assert_eq!(state(&stopped), TaskState::Succeeded, "{stopped:?}");
    let snap = taking.await.unwrap().unwrap().into_inner();
    assert_eq!(state(&snap), TaskState::Failed, "{snap:?}");
    assert!(
        snap.detail.contains("stopped before it finished") && snap.retryable,
        "{snap:?}"
    );
    let left: Vec<String> = processes_under(&root)
        .into_iter()
        .filter(|p| p.contains("pg_basebackup") || p.contains("postgres -D"))
        .collect();
    assert!(
        left.is_empty(),
        "nothing of the snapshot or the instance runs on: {left:?}"
    );
    // Nor is any of its files left, in shared memory or on the disk.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut files = snapshot_scratch("inst-1");
        if root.join("snapshots/inst-1").exists() {
            files.push("snapshots/inst-1".into());
        }
        if files.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stopped snapshot left {files:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ahead of a standby's snapshot the primary checkpoints only when its last checkpoint is
/// far behind: a recent one is where the standby's copy starts (no immediate checkpoint,
/// and the full-page images after it, to cost the clients); past the bound, one is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_forced_only_when_the_last_is_far_behind() {
    let inst = RunningInstance::start().await;
    let (port, s, mut c) = (inst.port, inst.spec.clone(), inst.c.clone());
    let lsn = |text: &str| keel_node::backup::wal::parse_lsn(text.trim()).unwrap();
    let client = connect(port).await.unwrap();
    let now = || async {
        let row = client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .unwrap();
        lsn(row.get::<_, &str>(0))
    };
    // A new instance's last checkpoint is a few KiB of WAL behind: it serves.
    let fresh = now().await;
    let r = task(&mut c, "c-1", 1, TaskAction::Checkpoint, Some(&s)).await.unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    assert!(r.detail.starts_with("no checkpoint forced: the last, "), "{r:?}");
    let redo = lsn(r.detail.rsplit("redo at ").next().unwrap());
    assert!(redo <= fresh, "{r:?}");
    // More WAL than a snapshot may carry (rows of 1 KiB that do not compress): one is made,
    // starting after all of it.
    let rows = (keel_node::host::engine::snapshot::CHECKPOINT_CARRY_BYTES >> 10) + 20_000;
    client
        .batch_execute(&format!(
            "CREATE TABLE w AS SELECT g, repeat(md5(g::text), 32) AS pad FROM generate_series(1, {rows}) g"
        ))
        .await
        .unwrap();
    let written = now().await;
    assert!(
        written - redo > keel_node::host::engine::snapshot::CHECKPOINT_CARRY_BYTES,
        "{written} - {redo}"
    );
    let r = task(&mut c, "c-2", 1, TaskAction::Checkpoint, Some(&s)).await.unwrap();
    assert_eq!(state(&r), TaskState::Succeeded, "{r:?}");
    assert!(r.detail.starts_with("checkpoint made; redo at "), "{r:?}");
    assert!(lsn(r.detail.rsplit("redo at ").next().unwrap()) >= written, "{r:?}");
}

/// A snapshot's or its verification's directories for instance `id` in shared memory
/// (`/dev/shm/keel-<root>/<what>-<id>`).
fn snapshot_scratch(id: &str) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("keel-") && p.is_dir())
        .flat_map(|p| std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()))
        .map(|p| p.display().to_string())
        .filter(|p| p.ends_with(&format!("-{id}")))
        .collect()
}

/// The archive's replication slot holds WAL from the moment it is made, before any
/// receiver reports (a slot made without reserving, as `pg_receivewal --create-slot`
/// makes it, was invalidated by a promotion's checkpoints before its receiver's first
/// report, and the archive never moved again); it starts where the engine's WAL is now;
/// and a slot the engine invalidated is named as such, not silently replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archives_slot_holds_wal_from_when_it_is_made_and_a_lost_one_is_named() {
    use keel_node::backup::archive::{ensure_slot, SLOT};
    use keel_node::host::engine::postgres::Postgres;
    let (_dir, root, _) = fresh_root();
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).unwrap();
    let pg = Postgres::new(&root).unwrap();
    let s = spec("slot-1", free_port(), "small");
    pg.provision(&s).await.unwrap();
    pg.start(&s).await.unwrap();
    // The superuser over the private socket, as the host manager reaches it.
    let (su, conn) = tokio_postgres::Config::new()
        .host_path(pg.volume(&s.id))
        .port(s.port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let slot = || async {
        let r = su
            .query_one(
                "SELECT wal_status, restart_lsn::text, \
                 (SELECT count(*) FROM pg_ls_waldir() WHERE name = pg_walfile_name(restart_lsn)) \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .await
            .unwrap();
        (
            r.get::<_, Option<String>>(0),
            r.get::<_, Option<String>>(1),
            r.get::<_, i64>(2),
        )
    };
    let lsn = |t: &str| keel_node::backup::wal::parse_lsn(t).unwrap();

    su.batch_execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    let before: String = su
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    ensure_slot(&pg, &s).await.unwrap();
    let (status, restart, _) = slot().await;
    let restart = restart.expect("the slot reserves WAL as it is made");
    assert_eq!(status.as_deref(), Some("reserved"));
    assert!(
        lsn(&restart) >= lsn(&before),
        "it starts at the engine's WAL now: {restart} < {before}"
    );
    // Made again: nothing changes.
    ensure_slot(&pg, &s).await.unwrap();
    assert_eq!(slot().await.1.as_deref(), Some(restart.as_str()));

    // Checkpoints over several segments with no receiver yet: the segment the receiver
    // will ask for is kept.
    for _ in 0..3 {
        su.batch_execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal(); CHECKPOINT")
            .await
            .unwrap();
    }
    let (status, again, kept) = slot().await;
    assert_eq!(again.as_deref(), Some(restart.as_str()));
    assert_ne!(status.as_deref(), Some("lost"));
    assert_eq!(kept, 1, "the slot's first segment is still in pg_wal");

    // An engine that drops WAL the slot holds (max_slot_wal_keep_size) invalidates it: the
    // archive says so and makes no new slot over the gap.
    su.batch_execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        .await
        .unwrap();
    su.batch_execute("SELECT pg_reload_conf()").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while slot().await.0.as_deref() != Some("lost") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never invalidated: {:?}",
            slot().await
        );
        su.batch_execute("INSERT INTO t SELECT g FROM generate_series(1, 1000) g; SELECT pg_switch_wal(); CHECKPOINT")
            .await
            .unwrap();
    }
    let why = ensure_slot(&pg, &s).await.expect_err("a lost slot is an error");
    assert!(
        why.contains("invalidated") && why.contains("max_slot_wal_keep_size"),
        "{why}"
    );
    assert_eq!(slot().await.0.as_deref(), Some("lost"), "not replaced");
    pg.shut_down("slot-1").await.unwrap();
}
