//! A backup store: a local directory or an S3-compatible bucket (`object_store`), with
//! files streamed in and out in parts and every object's SHA-256 computed on the way in
//! and checked on the way out, so a damaged copy fails a restore instead of making a
//! silently wrong database.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::hex::encode as hex;

/// Where a store is. Credentials are read from a file on the machine that uses the
/// store, never carried in the replicated state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum StoreConfig {
    /// A directory on this machine.
    Local {
        /// Its root.
        dir: PathBuf,
    },
    /// A bucket of an S3-compatible service.
    S3 {
        /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
        endpoint: String,
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket.
        #[serde(default)]
        prefix: String,
        /// Region (`us-east-1` for most S3-compatible services).
        #[serde(default = "default_region")]
        region: String,
        /// File with `access_key_id = …` and `secret_access_key = …` lines (TOML).
        credentials_file: PathBuf,
    },
}

fn default_region() -> String {
    "us-east-1".into()
}

/// The keys in a credentials file.
#[derive(Deserialize)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store's configuration or credentials cannot be used.
    #[error("backup store configuration: {0}")]
    Config(String),
    /// The store refused or failed the operation (unreachable, bad credentials…).
    #[error("backup store {store}: {source}")]
    Store {
        /// Which store.
        store: String,
        /// The failure.
        #[source]
        source: object_store::Error,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The object's content is not what the catalog says it is.
    #[error("object {key} in {store} is damaged: its SHA-256 is {found}, the catalog says {expected}; restore from another copy")]
    ChecksumMismatch {
        /// Which store.
        store: String,
        /// The object.
        key: String,
        /// What the catalog recorded.
        expected: String,
        /// What was read.
        found: String,
    },
}

/// What a stored object is: the catalog records it (key, size, SHA-256).
pub use keel_raft_store::BackupObject as StoredObject;

/// Parts are uploaded this big, this many at once.
const PART_BYTES: usize = 8 << 20;
const PARTS_IN_FLIGHT: usize = 4;

/// A local store writes back this many bytes at a time as it writes (see [`write_local`]).
const FLUSH_BEHIND_BYTES: u64 = 8 << 20;

/// An open backup store.
#[derive(Debug, Clone)]
pub struct BackupStore {
    inner: Arc<dyn ObjectStore>,
    /// The same store when it is a local directory: objects are written by
    /// [`write_local`], which `object_store`'s local store does not do (it never syncs).
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    name: String,
    prefix: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write what `from` reads to `dest` (a local store's file) durably: into a staging file
/// beside it (`dest#<digits>`, which the store's listings skip), synced, then renamed and
/// the directory synced, so a stored object survives a crash whole or not at all. As it
/// writes it has the kernel write back each [`FLUSH_BEHIND_BYTES`] at once and waits for
/// the stretch before, as PostgreSQL's `*_flush_after` settings do: left to the kernel, a
/// snapshot's hundreds of MiB went to the disk in one burst 30 s later and every commit's
/// WAL flush on that disk stalled behind it for seconds (bench backups). Returns the size
/// and SHA-256.
fn write_local(mut from: impl std::io::Read, dest: &Path) -> Result<(u64, String), StoreError> {
    use std::io::Write;
    let parent = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let staging = PathBuf::from(format!("{}#{nanos}", dest.display()));
    let written = (|| {
        let mut out = std::fs::File::create(&staging)?;
        let (mut hasher, mut size, mut told) = (Sha256::new(), 0u64, 0u64);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = from.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            size += n as u64;
            if size - told >= FLUSH_BEHIND_BYTES {
                flush_behind(&out, told, size);
                told = size;
            }
        }
        out.sync_all()?;
        std::fs::rename(&staging, dest)?;
        std::fs::File::open(parent)?.sync_all()?;
        Ok((size, hex(&hasher.finalize())))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    written.map_err(io(dest))
}

/// Have the kernel start writing `[from, to)` of `file` back, and wait until everything
/// before `from` is written. Advice only: the final sync is what makes it durable.
fn flush_behind(file: &std::fs::File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: sync_file_range takes an open descriptor and plain integers.
    unsafe {
        if from > 0 {
            libc::sync_file_range(
                fd,
                0,
                from as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE | libc::SYNC_FILE_RANGE_WRITE | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
        libc::sync_file_range(
            fd,
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl BackupStore {
    /// Open the store `config` describes (nothing is contacted yet).
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| StoreError::Config(format!("{}: {e}", dir.display())))?
                    .with_automatic_cleanup(true);
                let fs = Arc::new(fs);
                Ok(Self {
                    inner: fs.clone(),
                    local: Some(fs),
                    name: format!("local:{}", dir.display()),
                    prefix: String::new(),
                })
            }
            StoreConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                credentials_file,
            } => {
                let text = std::fs::read_to_string(credentials_file).map_err(io(credentials_file))?;
                let keys: Credentials = toml::from_str(&text).map_err(|e| {
                    StoreError::Config(format!(
                        "{} must hold access_key_id = \"…\" and secret_access_key = \"…\": {e}",
                        credentials_file.display()
                    ))
                })?;
                let s3 = object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(endpoint)
                    .with_allow_http(endpoint.starts_with("http://"))
                    .with_region(region)
                    .with_bucket_name(bucket)
                    .with_access_key_id(keys.access_key_id)
                    .with_secret_access_key(keys.secret_access_key)
                    .build()
                    .map_err(|e| StoreError::Config(format!("S3 store {endpoint}/{bucket}: {e}")))?;
                Ok(Self {
                    inner: Arc::new(s3),
                    local: None,
                    name: format!("s3:{endpoint}/{bucket}"),
                    prefix: prefix.trim_matches('/').to_string(),
                })
            }
        }
    }

    /// The store's name for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn failed(&self, source: object_store::Error) -> StoreError {
        StoreError::Store {
            store: self.name.clone(),
            source,
        }
    }

    /// Where object `key` lives on this machine, for a local store.
    fn local_path(&self, key: &str) -> Result<Option<PathBuf>, StoreError> {
        self.local
            .as_ref()
            .map(|fs| fs.path_to_filesystem(&self.path(key)))
            .transpose()
            .map_err(|e| self.failed(e))
    }

    /// Store what `from` reads as object `key` at `dest` of a local store; `background`:
    /// on a thread of its own in the idle CPU group (see [`crate::background`]), for a
    /// backup's files, whose hashing and copying cost a host manager a fifth of a core
    /// at 130 MB/s and its database's clients their commits' wake-ups.
    async fn put_local(
        &self,
        key: &str,
        dest: PathBuf,
        from: impl std::io::Read + Send + 'static,
        background: bool,
    ) -> Result<StoredObject, StoreError> {
        let path = dest.clone();
        let stopped = |e: String| io(&path)(std::io::Error::other(format!("the writer stopped: {e}")));
        let (size, sha256) = if background {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                crate::background::enter_current_thread();
                let _ = tx.send(write_local(from, &dest));
            });
            rx.await.map_err(|e| stopped(e.to_string()))??
        } else {
            tokio::task::spawn_blocking(move || write_local(from, &dest))
                .await
                .map_err(|e| stopped(e.to_string()))??
        };
        Ok(StoredObject {
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// Upload the file at `local` as `key`, in parts, and say what was stored. A local
    /// store writes it in the background (see [`Self::put_local`]).
    pub async fn put_file(&self, key: &str, local: &Path) -> Result<StoredObject, StoreError> {
        if let Some(dest) = self.local_path(key)? {
            let src = local.to_path_buf();
            let file = std::fs::File::open(&src).map_err(io(&src))?;
            return self.put_local(key, dest, file, true).await;
        }
        let mut file = tokio::fs::File::open(local).await.map_err(io(local))?;
        let upload = self
            .inner
            .put_multipart(&self.path(key))
            .await
            .map_err(|e| self.failed(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let (mut hasher, mut size) = (Sha256::new(), 0u64);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(local)(e));
                }
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(self.failed(e));
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await.map_err(|e| self.failed(e))?;
        Ok(StoredObject {
            key: key.to_string(),
            size,
            sha256: hex(&hasher.finalize()),
        })
    }

    /// Store `bytes` as `key` in one request (small objects: WAL stretches, history files).
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<StoredObject, StoreError> {
        if let Some(dest) = self.local_path(key)? {
            return self.put_local(key, dest, std::io::Cursor::new(bytes), false).await;
        }
        let size = bytes.len() as u64;
        let sha256 = sha256_hex(&bytes);
        self.inner
            .put(&self.path(key), bytes.into())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(StoredObject {
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// Download `object` to `local`, checking its SHA-256 against the catalog's; a
    /// mismatch removes the partial file and fails.
    pub async fn get_file(&self, object: &StoredObject, local: &Path) -> Result<(), StoreError> {
        self.get_file_counted(object, local, None).await
    }

    /// [`BackupStore::get_file`], counting the bytes into `progress` as they arrive.
    pub async fn get_file_counted(
        &self,
        object: &StoredObject,
        local: &Path,
        progress: Option<&super::progress::Progress>,
    ) -> Result<(), StoreError> {
        let mut out = tokio::fs::File::create(local).await.map_err(io(local))?;
        let copied = self.copy_to(object, &mut out, local, progress).await;
        let synced = match copied {
            Ok(()) => out.sync_all().await.map_err(io(local)),
            Err(e) => Err(e),
        };
        if synced.is_err() {
            let _ = tokio::fs::remove_file(local).await;
        }
        synced
    }

    /// Stream `object` into `out` (`to` names it in errors), checking its SHA-256. The
    /// whole object is read even if `out` stops taking it (a process that exited), so a
    /// damaged object is reported as such rather than as what it made the reader do.
    pub async fn copy_to(
        &self,
        object: &StoredObject,
        mut out: impl tokio::io::AsyncWrite + Unpin,
        to: &Path,
        progress: Option<&super::progress::Progress>,
    ) -> Result<(), StoreError> {
        let got = self
            .inner
            .get(&self.path(&object.key))
            .await
            .map_err(|e| self.failed(e))?;
        let mut stream = got.into_stream();
        let mut hasher = Sha256::new();
        let mut written: Result<(), std::io::Error> = Ok(());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.failed(e))?;
            hasher.update(&chunk);
            if written.is_ok() {
                written = out.write_all(&chunk).await;
            }
            if let Some(p) = progress {
                p.add(chunk.len() as u64);
            }
        }
        if written.is_ok() {
            written = out.flush().await;
        }
        let found = hex(&hasher.finalize());
        if found != object.sha256 {
            return Err(StoreError::ChecksumMismatch {
                store: self.name.clone(),
                key: object.key.clone(),
                expected: object.sha256.clone(),
                found,
            });
        }
        written.map_err(io(to))
    }

    /// Keys under `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_sized(prefix).await?.into_iter().map(|(k, _)| k).collect())
    }

    /// Keys under `prefix` with their sizes, sorted by key.
    pub async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let base = self.path(prefix);
        let mut keys = Vec::new();
        let mut listing = self.inner.list(Some(&base));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| self.failed(e))?;
            let full = meta.location.to_string();
            let key = match self.prefix.as_str() {
                "" => full,
                p => full.strip_prefix(&format!("{p}/")).unwrap_or(&full).to_string(),
            };
            keys.push((key, meta.size));
        }
        keys.sort();
        Ok(keys)
    }

    /// Remove `key` (removing a missing key succeeds).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes that are not all alike (so a swapped part would show).
    pub(crate) fn sample(path: &Path, len: usize) {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(path, bytes).unwrap();
    }

    #[tokio::test]
    async fn a_local_store_round_trips_in_parts_and_catches_damage() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::open(&StoreConfig::Local {
            dir: dir.path().join("store"),
        })
        .unwrap();
        let src = dir.path().join("src.bin");
        sample(&src, 20 << 20);
        let obj = store.put_file("db1/base.tar", &src).await.unwrap();
        assert_eq!(obj.size, 20 << 20);
        assert_eq!(store.list("db1").await.unwrap(), ["db1/base.tar"]);
        let small = store
            .put_bytes("db1/wal/0001", b"a stretch of WAL".to_vec())
            .await
            .unwrap();
        assert_eq!(small.sha256, sha256_hex(b"a stretch of WAL"));
        assert_eq!(
            std::fs::read(dir.path().join("store/db1/wal/0001")).unwrap(),
            b"a stretch of WAL"
        );
        // Written through a staging file that the rename consumed: nothing else is on disk.
        let mut on_disk: Vec<_> = std::fs::read_dir(dir.path().join("store/db1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, ["base.tar", "wal"]);
        store.delete("db1/wal/0001").await.unwrap();
        let back = dir.path().join("back.bin");
        store.get_file(&obj, &back).await.unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());

        // One flipped byte in the stored object: the restore fails, and says why.
        let stored = dir.path().join("store/db1/base.tar");
        let mut bytes = std::fs::read(&stored).unwrap();
        bytes[12345] ^= 1;
        std::fs::write(&stored, bytes).unwrap();
        let err = store.get_file(&obj, &back).await.unwrap_err();
        assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
        assert!(err.to_string().contains("another copy"), "{err}");
        assert!(!back.exists(), "no damaged file is left behind");

        store.delete("db1/base.tar").await.unwrap();
        store.delete("db1/base.tar").await.unwrap();
        assert!(store.list("db1").await.unwrap().is_empty());
    }

    #[test]
    fn s3_credentials_come_from_a_file_and_say_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds.toml");
        std::fs::write(&creds, "access_key_id = \"AK\"\n").unwrap();
        let config = StoreConfig::S3 {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: "b".into(),
            prefix: String::new(),
            region: default_region(),
            credentials_file: creds.clone(),
        };
        let err = BackupStore::open(&config).unwrap_err().to_string();
        assert!(err.contains("secret_access_key"), "{err}");
        std::fs::write(&creds, "access_key_id = \"AK\"\nsecret_access_key = \"SK\"\n").unwrap();
        assert!(BackupStore::open(&config).is_ok());
    }
}
