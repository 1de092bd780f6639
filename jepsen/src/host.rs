//! What a fault run needs of the local machine: the processes to kill, the wall clock
//! histories are stamped with, and a name looked up in a DNS server as a client would.

use std::process::Command;

/// Milliseconds since the Unix epoch, the clock every history and event is stamped with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Processes whose command line contains any of `needles`.
pub fn pids_with(needles: &[&str]) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| p.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let line = String::from_utf8_lossy(&c).replace('\0', " ");
                needles.iter().any(|n| line.contains(n))
            })
        })
        .collect()
}

/// The first address `dig` gets for `name` from the DNS server at `server` (`ip:port`),
/// asking once with a one-second timeout, if any.
pub fn dig_a(server: &str, name: &str) -> Option<String> {
    let (ip, port) = server.rsplit_once(':')?;
    let out = Command::new("dig")
        .args([
            &format!("@{ip}"),
            "-p",
            port,
            "+time=1",
            "+tries=1",
            "+short",
            name,
            "A",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
}
