//! Unpacking a restore's base tar into the new data directory, writing each file with
//! direct I/O: a restore writes gigabytes once and reads them back only through the
//! engine, so passing them through the page cache only costs memory the kernel must
//! first touch (about 2.5 s of kernel time per GB on these machines) and a writeback
//! burst later. `tar -x` did that, and a restore ran at a quarter of the disk's rate.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Direct I/O's alignment, of buffers, offsets and lengths: a page, which every block
/// size in use divides.
const ALIGN: usize = 4096;

/// Bytes written per call.
const CHUNK: usize = 1 << 20;

/// What an unpacking made.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Unpack the tar read from `input` into the directory `into` (which exists): directories
/// and files with the tar's permissions (at most the owner's and the group's, as the
/// engine wants them), owned by `owner` when given, symbolic links as they are. An entry
/// that would land outside `into`, or of a kind a base backup never holds, fails it;
/// `stop` ends it early, as failed.
pub fn unpack(input: impl Read, into: &Path, owner: Option<(u32, u32)>, stop: &AtomicBool) -> Result<Unpacked, String> {
    let mut archive = tar::Archive::new(input);
    let entries = archive.entries().map_err(|e| format!("the tar is not readable: {e}"))?;
    let mut raw = vec![0u8; CHUNK + ALIGN];
    let at = raw.as_ptr().align_offset(ALIGN);
    let buf = &mut raw[at..at + CHUNK];
    let mut made = Unpacked::default();
    for entry in entries {
        if stop.load(Ordering::Relaxed) {
            return Err("the unpacking was stopped".into());
        }
        let mut entry = entry.map_err(|e| format!("the tar is not readable: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("a tar entry's name is not readable: {e}"))?;
        let path =
            inside(into, &name).ok_or_else(|| format!("{} would land outside the data directory", name.display()))?;
        let shown = name.display().to_string();
        let mode = entry.header().mode().unwrap_or(0o600) & 0o750;
        let failed = |what: &str, e: std::io::Error| format!("{shown}: cannot {what}: {e}");
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&path).map_err(|e| failed("make the directory", e))?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o700))
                    .map_err(|e| failed("set its permissions", e))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(|e| failed("set its owner", e))?;
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .ok()
                    .flatten()
                    .ok_or_else(|| format!("{shown}: a link without a target"))?;
                std::os::unix::fs::symlink(&target, &path).map_err(|e| failed("make the link", e))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(|e| failed("set its owner", e))?;
                }
            }
            t if t.is_file() => {
                let size = entry.size();
                let file = create(&path, mode | 0o600, size).map_err(|e| failed("create it", e))?;
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| failed("set its owner", e))?;
                }
                let written = write(&mut entry, file, buf, stop).map_err(|e| failed("write it", e))?;
                if written != size {
                    return Err(format!("{shown}: the tar holds {written} of its {size} bytes"));
                }
                made.files += 1;
                made.bytes += written;
            }
            other => return Err(format!("{shown}: a {other:?} entry, which a base backup never holds")),
        }
    }
    Ok(made)
}

/// `name` joined to `root`, if it stays inside it (no `..`, not absolute).
fn inside(root: &Path, name: &Path) -> Option<PathBuf> {
    let mut path = root.to_path_buf();
    for c in name.components() {
        match c {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

/// A new file, opened for direct I/O when it has a whole aligned block to write and the
/// file system takes it (tmpfs does not).
fn create(path: &Path, mode: u32, size: u64) -> std::io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true).mode(mode);
    if size >= ALIGN as u64 {
        let mut direct = opts.clone();
        match direct.custom_flags(libc::O_DIRECT).open(path) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(path);
            }
            done => return done,
        }
    }
    opts.open(path)
}

/// Copy `from` to `file` through `buf` (aligned, a multiple of [`ALIGN`]); the last,
/// unaligned stretch is written after direct I/O is turned off. The bytes written.
fn write(from: &mut impl Read, mut file: File, buf: &mut [u8], stop: &AtomicBool) -> std::io::Result<u64> {
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped"));
        }
        let mut n = 0;
        while n < buf.len() {
            match from.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(total);
        }
        let whole = n - n % ALIGN;
        file.write_all(&buf[..whole])?;
        if whole < n {
            direct_off(&file)?;
            file.write_all(&buf[whole..n])?;
        }
        total += n as u64;
        if n < buf.len() {
            return Ok(total);
        }
    }
}

/// Turn direct I/O off for `file`, for a write of any length.
fn direct_off(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, contents) in entries {
            let mut h = tar::Header::new_gnu();
            match contents {
                Some(c) => {
                    h.set_size(c.len() as u64);
                    h.set_mode(0o600);
                    b.append_data(&mut h, name, *c).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o700);
                    b.append_data(&mut h, name, std::io::empty()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// Files of every shape: empty, smaller than a block, whole blocks, a whole chunk and
    /// more, and not a multiple of anything, on the disk (direct I/O) and where it is
    /// refused alike.
    #[test]
    fn files_of_every_size_come_out_as_they_went_in() {
        let sizes = [
            0,
            3,
            ALIGN - 1,
            ALIGN,
            3 * ALIGN + 17,
            CHUNK,
            CHUNK + ALIGN,
            2 * CHUNK + 5,
        ];
        let contents: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let mut entries: Vec<(String, Option<&[u8]>)> = vec![("base/".into(), None), ("base/5/".into(), None)];
        for (i, c) in contents.iter().enumerate() {
            entries.push((format!("base/5/{i}"), Some(c.as_slice())));
        }
        let entries: Vec<(&str, Option<&[u8]>)> = entries.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        let archive = tar(&entries);
        for parent in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
            let dir = tempfile::tempdir_in(&parent).unwrap();
            let made = unpack(archive.as_slice(), dir.path(), None, &AtomicBool::new(false)).unwrap();
            assert_eq!(made.files, sizes.len() as u64);
            assert_eq!(made.bytes, sizes.iter().sum::<usize>() as u64);
            for (i, c) in contents.iter().enumerate() {
                let path = dir.path().join(format!("base/5/{i}"));
                assert_eq!(&std::fs::read(&path).unwrap(), c, "file {i} under {}", parent.display());
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
            }
        }
    }

    #[test]
    fn entries_that_leave_the_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw = tar(&[("base/x", Some(b"x"))]);
        // The builder refuses such names; a damaged or forged archive need not.
        raw[..6].copy_from_slice(b"../x\0\0");
        let mut h = tar::Header::from_byte_slice(&raw[..512]).clone();
        h.set_cksum();
        raw[..512].copy_from_slice(h.as_bytes());
        let err = unpack(raw.as_slice(), dir.path(), None, &AtomicBool::new(false)).unwrap_err();
        assert!(err.contains("outside the data directory"), "{err}");
        assert!(!dir.path().parent().unwrap().join("x").exists());
    }

    #[test]
    fn a_stopped_unpacking_fails() {
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(
            tar(&[("a", Some(b"a"))]).as_slice(),
            dir.path(),
            None,
            &AtomicBool::new(true),
        )
        .unwrap_err();
        assert!(err.contains("stopped"), "{err}");
    }
}
