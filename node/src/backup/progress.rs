//! How far a long backup task has got: bytes moved of those expected, and what it is
//! doing now. The host answers it while the task runs; the leader records it on the task,
//! so `keel ops describe` and `--wait` show throughput and the time left.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The progress of one running task.
#[derive(Debug)]
pub struct Progress {
    bytes: AtomicU64,
    total: AtomicU64,
    phase: Mutex<String>,
    started: Instant,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            total: AtomicU64::new(0),
            phase: Mutex::new(String::new()),
            started: Instant::now(),
        }
    }
}

impl Progress {
    /// `n` more bytes moved.
    pub fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` more bytes expected in all.
    pub fn expect(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// What the task does now, e.g. `fetching the backup`.
    pub fn phase(&self, what: &str) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
    }

    /// A sentence for people: phase, bytes, throughput and time left.
    pub fn describe(&self) -> String {
        let phase = self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone();
        describe(
            &phase,
            self.bytes.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.started.elapsed(),
        )
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// `phase: X of Y MiB (R MiB/s, about S s left)`, saying only what is known.
pub fn describe(phase: &str, bytes: u64, total: u64, elapsed: Duration) -> String {
    if bytes == 0 && total == 0 {
        return phase.to_string();
    }
    let rate = bytes as f64 / elapsed.as_secs_f64().max(0.001);
    let mut text = if total >= bytes && total > 0 {
        format!("{phase}: {:.1} of {:.1} MiB", mib(bytes), mib(total))
    } else {
        format!("{phase}: {:.1} MiB", mib(bytes))
    };
    text.push_str(&format!(" ({:.1} MiB/s", rate / (1 << 20) as f64));
    if total > bytes && rate > 0.0 {
        text.push_str(&format!(", about {:.0} s left", (total - bytes) as f64 / rate));
    }
    text.push(')');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_what_is_known() {
        assert_eq!(describe("replaying WAL", 0, 0, Duration::from_secs(1)), "replaying WAL");
        assert_eq!(
            describe("fetching the backup", 50 << 20, 150 << 20, Duration::from_secs(2)),
            "fetching the backup: 50.0 of 150.0 MiB (25.0 MiB/s, about 4 s left)"
        );
        assert_eq!(
            describe("fetching WAL", 10 << 20, 0, Duration::from_secs(1)),
            "fetching WAL: 10.0 MiB (10.0 MiB/s)"
        );
    }
}
