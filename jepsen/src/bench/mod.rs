//! Whole-cluster benchmarks: Keel side by side with a peer, in one run.

pub mod backups;
pub mod cpu;
pub mod db;
pub mod dns;
pub mod etcd;
pub mod failover;
pub mod history;
pub mod load;
pub mod patroni;
pub mod raft;
pub mod security;

/// The keel binary to benchmark: `given`, else the one beside this program.
pub fn keel_binary(given: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    let bin = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?.with_file_name("keel"),
    };
    anyhow::ensure!(
        bin.exists(),
        "no keel binary at {}; build it with `cargo build --release`",
        bin.display()
    );
    Ok(bin)
}

/// The `p` quantile (0..=1) of `xs`; NaN when empty.
pub fn quantile(xs: &[f64], p: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or(f64::NAN)
}

/// Pin this process to `cpu` so the load generator and the servers do not share a core.
pub fn pin_self(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity(0, ...) affects only this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
