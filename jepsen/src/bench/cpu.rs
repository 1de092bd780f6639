//! Busy time of one CPU, from /proc/stat: what a workload cost the core its servers are
//! pinned to. Latency and throughput on these shared machines swing with the disk and the
//! neighbours; CPU per operation moves much less, so it is the figure to compare changes by.

use std::time::Duration;

/// Busy time of `cpu` so far (user, nice, system, irq, softirq; not idle, iowait or steal).
pub fn busy(cpu: usize) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .ok_or_else(|| anyhow::anyhow!("/proc/stat has no line for {name}"))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    // Fields: user nice system idle iowait irq softirq steal ...
    let busy: u64 = [0, 1, 2, 5, 6]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(busy * 1_000_000 / hz))
}
