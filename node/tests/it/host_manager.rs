//! A real `keel host` process running real PostgreSQL: provision, connect, reconfigure,
//! journal, fencing across a restart, destroy.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::Duration;

use keel_jepsen::ports::free_port;
use keel_node::classes;
use keel_node::host::engine::InstanceSpec;
use keel_proto::host::host_manager_client::HostManagerClient;
use keel_proto::host::{HealthRequest, TaskReply, TaskRequest};
use tonic::transport::Channel;

use super::bin;

struct HostProc {
    child: Child,
    addr: String,
    root: std::path::PathBuf,
}

impl HostProc {
    fn start(root: &std::path::Path, addr: &str) -> Self {
        let log = std::fs::File::create(root.with_extension("log")).unwrap();
        let child = Command::new(bin())
            .args(["host", "--name", "h1", "--zone", "a", "--addr", addr, "--root"])
            .arg(root)
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
            if let Ok(c) = HostManagerClient::connect(format!("http://{}", self.addr)).await {
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

fn spec(id: &str, port: u16, class: &str) -> InstanceSpec {
    InstanceSpec {
        id: id.into(),
        listen_addr: "127.0.0.1".into(),
        port,
        settings: classes::lookup(class).unwrap().settings(),
        storage_gib: 1,
        master_user: "app".into(),
        master_verifier: postgres_protocol::password::scram_sha_256(b"s3cret pass"),
    }
}

async fn task(
    c: &mut HostManagerClient<Channel>,
    id: &str,
    term: u64,
    action: &str,
    spec: Option<&InstanceSpec>,
) -> Result<TaskReply, tonic::Status> {
    c.run_task(TaskRequest {
        task_id: id.into(),
        instance_id: "inst-1".into(),
        term,
        action: action.into(),
        spec_json: spec.map(|s| serde_json::to_string(s).unwrap()).unwrap_or_default(),
    })
    .await
    .map(|r| r.into_inner())
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_manager_runs_real_postgres() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let root = dir.path().join("host");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let port = free_port();
    let small = spec("inst-1", port, "small");

    let r = task(&mut c, "t-provision", 3, "provision", Some(&small)).await.unwrap();
    assert_eq!(r.state, "succeeded", "{r:?}");
    let r = task(&mut c, "t-start", 3, "start", Some(&small)).await.unwrap();
    assert_eq!(r.state, "succeeded", "{r:?}");

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
    let again = task(&mut c, "t-provision", 3, "provision", Some(&small)).await.unwrap();
    assert_eq!(again.state, "succeeded");
    let health = c.health(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(health.instances, 1);
    assert!(health.instances_health[0].accepting, "{health:?}");

    // Fencing: a newer term is admitted, an older one refused, also after kill -9 of the host manager.
    let medium = spec("inst-1", port, "medium");
    let r = task(&mut c, "t-restart", 4, "restart", Some(&medium)).await.unwrap();
    assert_eq!(r.state, "succeeded", "{r:?}");
    host.kill();
    host = HostProc::start(&root, &addr);
    let mut c = host.client().await;
    let stale = task(&mut c, "t-stale", 3, "stop", None).await.unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale:?}");
    assert!(stale.message().contains("older than term 4"), "{}", stale.message());

    // PostgreSQL kept running across the host manager's restart, with the new settings and the data.
    let db = connect(port).await.unwrap();
    let sb: String = db.query_one("SHOW shared_buffers", &[]).await.unwrap().get(0);
    assert_eq!(sb, "512MB");
    let v: String = db.query_one("SELECT v FROM t WHERE id = 1", &[]).await.unwrap().get(0);
    assert_eq!(v, "kept");
    drop(db);

    let r = task(&mut c, "t-destroy", 4, "destroy", None).await.unwrap();
    assert_eq!(r.state, "succeeded", "{r:?}");
    assert!(connect(port).await.is_err(), "port closed after destroy");
    assert!(!root.join("volumes/inst-1").exists(), "volume gone");
    let health = c.health(HealthRequest {}).await.unwrap().into_inner();
    assert_eq!(health.instances, 0);
}
