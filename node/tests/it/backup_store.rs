//! Backup stores against a real S3-compatible server (s3s-fs: SigV4, multipart, objects
//! on disk), installed by scripts/setup.sh: a file goes up in parts and comes back
//! whole; a damaged object and wrong credentials fail with errors that say so.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keel_jepsen::ports::free_port;
use keel_node::backup::store::{BackupStore, StoreConfig, StoreError};

/// Where scripts/setup.sh installs s3s-fs, unless `KEEL_S3S_FS` says.
fn s3s_fs() -> String {
    std::env::var("KEEL_S3S_FS").unwrap_or_else(|_| "/var/tmp/keel-tools/bin/s3s-fs".into())
}

struct S3Server(Child);

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_s3(data: &std::path::Path) -> (S3Server, String) {
    let port = free_port();
    let child = Command::new(s3s_fs())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", "keel-test", "--secret-key", "keel-test-secret"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs runs (scripts/setup.sh installs it)");
    let addr = format!("127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "s3s-fs did not listen on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (S3Server(child), format!("http://{addr}"))
}

fn config(endpoint: &str, creds: &std::path::Path) -> StoreConfig {
    StoreConfig::S3 {
        endpoint: endpoint.into(),
        bucket: "backups".into(),
        prefix: "zone-a".into(),
        region: "us-east-1".into(),
        credentials_file: creds.to_path_buf(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_round_trips_in_parts_and_catches_damage_and_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("s3");
    std::fs::create_dir_all(data.join("backups")).unwrap();
    let (_server, endpoint) = start_s3(&data).await;
    let creds = dir.path().join("creds.toml");
    std::fs::write(
        &creds,
        "access_key_id = \"keel-test\"\nsecret_access_key = \"keel-test-secret\"\n",
    )
    .unwrap();
    let store = BackupStore::open(&config(&endpoint, &creds)).unwrap();

    // 20 MiB: three parts of a multipart upload.
    let src = dir.path().join("src.bin");
    let bytes: Vec<u8> = (0..(20usize << 20)).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    let obj = store.put_file("orders/base.tar", &src).await.unwrap();
    assert_eq!(obj.size, bytes.len() as u64);
    assert_eq!(store.list("orders").await.unwrap(), ["orders/base.tar"]);
    let back = dir.path().join("back.bin");
    store.get_file(&obj, &back).await.unwrap();
    assert!(std::fs::read(&back).unwrap() == bytes, "the object came back different");

    // Damage the object where the server keeps it: the download fails and says why.
    let stored = data.join("backups/zone-a/orders/base.tar");
    let mut on_disk = std::fs::read(&stored).unwrap();
    on_disk[1 << 20] ^= 0xff;
    std::fs::write(&stored, on_disk).unwrap();
    let err = store.get_file(&obj, &back).await.unwrap_err();
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");

    // Wrong keys: refused by the server's SigV4 check, named as the store's refusal.
    let wrong = dir.path().join("wrong.toml");
    std::fs::write(
        &wrong,
        "access_key_id = \"keel-test\"\nsecret_access_key = \"not-it\"\n",
    )
    .unwrap();
    let stranger = BackupStore::open(&config(&endpoint, &wrong)).unwrap();
    let err = stranger.list("orders").await.unwrap_err();
    assert!(matches!(err, StoreError::Store { .. }), "{err}");
    assert!(err.to_string().contains(&endpoint), "{err}");

    store.delete("orders/base.tar").await.unwrap();
    assert!(store.list("orders").await.unwrap().is_empty());
}
