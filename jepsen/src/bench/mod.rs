//! Whole-cluster benchmarks: Keel side by side with a peer, in one run.

pub mod db;
pub mod dns;
pub mod etcd;
pub mod load;
pub mod raft;

/// Pin this process to `cpu` so the load generator and the servers do not share a core.
pub fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity(0, ...) affects only this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
