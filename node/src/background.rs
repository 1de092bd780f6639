//! Work the database's clients must not feel (a snapshot's copy, its check, its upload)
//! runs in a CPU group the kernel schedules only when nothing else wants the CPU: the
//! cgroup `keel-background` with `cpu.idle` set. A task there is preempted the moment a
//! backend, a client or a walreceiver wakes. `nice` only lowers a share: with the CPUs
//! not even full, a niced copy still delayed every commit's wake-ups by the slice it was
//! running (two CPU burners beside `pgbench -c 4`: niced, it kept 74% and 81% of its TPS;
//! in this group 104% and 87%). Best effort: where the group cannot be made (no
//! cgroup file system, not root), work keeps its nice value and its own session.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The group's name under the CPU controller's hierarchy.
const GROUP: &str = "keel-background";

/// The idle CPU group, ready to take processes (and, on cgroup v1, threads).
#[derive(Debug)]
pub struct IdleGroup {
    /// Its `cgroup.procs`, for a child between fork and exec (no allocation there).
    procs: CString,
    /// Its `tasks` (cgroup v1 only, where a thread may sit apart from its process).
    tasks: Option<PathBuf>,
}

/// The machine's idle CPU group, made on first use; None where it cannot be.
pub fn group() -> Option<&'static IdleGroup> {
    static GROUP_ONCE: OnceLock<Option<IdleGroup>> = OnceLock::new();
    GROUP_ONCE.get_or_init(IdleGroup::prepare).as_ref()
}

impl IdleGroup {
    /// Make (or find) the group: under cgroup v1's `cpu` hierarchy, else under cgroup v2
    /// with the `cpu` controller enabled for the root's children.
    fn prepare() -> Option<Self> {
        let v1 = Path::new("/sys/fs/cgroup/cpu");
        let v2 = Path::new("/sys/fs/cgroup");
        let made = if v1.join("cpu.idle").exists() {
            Self::make(v1.join(GROUP), true)
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
        {
            let _ = std::fs::write(v2.join("cgroup.subtree_control"), "+cpu");
            Self::make(v2.join(GROUP), false)
        } else {
            Err(std::io::Error::other("no cgroup CPU controller with cpu.idle"))
        };
        match made {
            Ok(g) => Some(g),
            Err(e) => {
                tracing::info!(error = %e, "No idle CPU group: background work runs niced only.");
                None
            }
        }
    }

    fn make(dir: PathBuf, v1: bool) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("cpu.idle"), "1")?;
        let procs = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).map_err(std::io::Error::other)?;
        Ok(Self {
            tasks: v1.then(|| dir.join("tasks")),
            procs,
        })
    }

    /// Move process `pid` (all its threads) into the group.
    pub fn adopt(&self, pid: i32) -> std::io::Result<()> {
        std::fs::write(self.procs_path(), pid.to_string())
    }

    /// Its `cgroup.procs`, as [`Self::procs`] names it.
    fn procs_path(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(self.procs.as_bytes()))
    }

    /// Let user `uid` (group `gid`) move its own processes in: the engine's commands run
    /// as `postgres`, and a child changes user before it can move itself.
    pub fn allow(&self, uid: u32, gid: u32) -> std::io::Result<()> {
        for file in [Some(self.procs_path()), self.tasks.as_deref()].into_iter().flatten() {
            std::os::unix::fs::chown(file, Some(uid), Some(gid))?;
        }
        Ok(())
    }

    /// The path a child writes `0` to, between fork and exec, to move itself in (see
    /// [`adopt_self`]).
    pub fn procs(&self) -> &CString {
        &self.procs
    }
}

/// Move the calling process into the group whose `cgroup.procs` is `procs`. Only
/// async-signal-safe calls (open, write, close), so a child may call it before exec.
pub fn adopt_self(procs: &CString) {
    // SAFETY: `procs` is a valid C string; the buffer is static.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
}

/// Move the calling thread alone into the idle group, where the kernel allows a thread
/// apart from its process (cgroup v1), and into the idle I/O class; whether it moved
/// into the group. Call it only on a thread of its own that ends with the work: it never
/// comes back.
pub fn enter_current_thread() -> bool {
    // Its I/O yields too, group or not.
    set_io_priority(0, IO_IDLE);
    group()
        .and_then(|g| g.tasks.as_ref())
        .is_some_and(|tasks| std::fs::write(tasks, "0").is_ok())
}

/// The idle I/O class (`ionice -c 3`), as `ioprio_set` takes it: served only when no
/// other I/O waits, under mq-deadline and bfq; their `prio_aging_expire` (10 s by
/// default) keeps it from starving. A snapshot's writes and reads queue behind every
/// commit's WAL flush on the same disk. Never the engine's own checkpointer: a backend
/// that changes a page the checkpointer is writing waits for that write, so a checkpoint
/// in the idle class held a Multi-AZ primary's clients at a tenth of their throughput
/// for 9 s, where at the default it cost them one second at two thirds (bench backups).
pub const IO_IDLE: i32 = 3 << 13;

/// `ioprio_set`'s `which` for one thread (or a single-threaded process).
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

/// The I/O priority of thread `tid` (0: the calling thread); None if it has gone.
pub fn io_priority(tid: i32) -> Option<i32> {
    // SAFETY: ioprio_get takes plain integers and touches no memory of ours.
    let prio = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, libc::c_long::from(tid)) };
    (prio >= 0).then_some(prio as i32)
}

/// Set thread `tid`'s (0: the calling thread's) I/O priority; whether it took.
pub fn set_io_priority(tid: i32, prio: i32) -> bool {
    // SAFETY: ioprio_set takes plain integers and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(tid),
            libc::c_long::from(prio),
        ) == 0
    }
}

/// Whether process `pid`'s CPU group is the idle group (for tests and diagnostics); None
/// if there is no such process.
pub fn holds(pid: u32) -> Option<bool> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .map(|c| c.lines().any(|l| l.ends_with(&format!(":/{GROUP}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_enters_the_group_is_in_it_and_the_rest_of_the_process_is_not() {
        let Some(g) = group() else {
            eprintln!("no idle CPU group on this machine (not root, or no cgroup CPU controller)");
            return;
        };
        if g.tasks.is_none() {
            eprintln!("cgroup v2: a thread cannot sit apart from its process; nothing to check");
            return;
        }
        std::thread::spawn(|| {
            assert!(enter_current_thread());
            // SAFETY: gettid has no arguments and no failure.
            let tid = unsafe { libc::gettid() };
            let mine = std::fs::read_to_string(format!("/proc/self/task/{tid}/cgroup")).unwrap();
            assert!(mine.lines().any(|l| l.ends_with(&format!(":/{GROUP}"))), "{mine}");
        })
        .join()
        .unwrap();
        assert_eq!(holds(std::process::id()), Some(false), "the process stays where it was");
    }

    #[test]
    fn a_thread_that_enters_the_background_does_its_io_in_the_idle_class_and_no_other_does() {
        let class = |tid| io_priority(tid).expect("our own thread") >> 13;
        assert_eq!(class(0), 0, "a thread starts with no class");
        std::thread::spawn(move || {
            enter_current_thread();
            assert_eq!(io_priority(0), Some(IO_IDLE));
        })
        .join()
        .unwrap();
        assert_eq!(class(0), 0, "the caller's own class is unchanged");
    }
}
