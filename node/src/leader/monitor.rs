//! The monitor: health-checks every registered host manager on an interval and
//! commits only changes — a host becoming unreachable or recovering, a new
//! capacity report, a database's storage crossing the full mark.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use keel_proto::host::HealthReply;
use keel_raft_store::{Command, DatabaseStatus, HostCapacity, HostHealth};

use super::Term;

/// A database counts as full from this share of its allocation…
const FULL_AT_PERCENT: u64 = 95;
/// …and has room again below this one (the gap stops flapping at the mark).
const ROOM_BELOW_PERCENT: u64 = 90;

/// Whether storage is full now, given whether it was.
pub fn storage_full(used: u64, allocated: u64, was_full: bool) -> bool {
    if allocated == 0 {
        return false;
    }
    let percent = used.saturating_mul(100) / allocated;
    if was_full {
        percent >= ROOM_BELOW_PERCENT
    } else {
        percent >= FULL_AT_PERCENT
    }
}

/// Health checks in flight at once (a round over many dead hosts is bounded by timeouts).
const PROBES_AT_ONCE: usize = 64;

struct Seen {
    name: String,
    addr: String,
    health: HostHealth,
    capacity: HostCapacity,
}

/// Run until the term ends.
pub async fn run(t: Term) {
    let interval = Duration::from_millis(t.node.config.monitor_interval_ms);
    // A probe may take most of an interval, never more.
    let probe_timeout = interval.max(Duration::from_millis(200));
    let mut failures: HashMap<String, u32> = HashMap::new();
    loop {
        tokio::select! {
            _ = t.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let hosts: Vec<Seen> = t.node.state.read(|a| {
            a.state
                .hosts
                .values()
                .map(|h| Seen {
                    name: h.name.clone(),
                    addr: h.addr.clone(),
                    health: h.health,
                    capacity: h.capacity.clone(),
                })
                .collect()
        });
        failures.retain(|name, _| hosts.iter().any(|h| &h.name == name));
        let addrs: Vec<String> = hosts.iter().map(|h| h.addr.clone()).collect();
        let clients = t.hosts.clone();
        let probes: Vec<Result<HealthReply, String>> = stream::iter(addrs)
            .map(move |addr| {
                let clients = clients.clone();
                async move { clients.health(&addr, probe_timeout).await }
            })
            .buffered(PROBES_AT_ONCE)
            .collect()
            .await;
        for (host, probe) in hosts.iter().zip(probes) {
            let outcome = match probe {
                Ok(report) => {
                    failures.remove(&host.name);
                    healthy(&t, host, &report).await
                }
                Err(problem) => {
                    let n = failures.entry(host.name.clone()).or_default();
                    *n += 1;
                    if *n >= t.node.config.unreachable_after && host.health != HostHealth::Unreachable {
                        t.commit(Command::ObserveHost {
                            name: host.name.clone(),
                            reachable: false,
                            capacity: None,
                            problem: Some(problem),
                        })
                        .await
                        .map(drop)
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(host = %host.name, error = %e, "Could not record what the monitor saw; will retry next round.");
                if t.cancel.is_cancelled() {
                    return;
                }
            }
        }
    }
}

/// Record a good health report: host health and capacity if changed, then storage marks.
async fn healthy(t: &Term, host: &Seen, report: &HealthReply) -> Result<(), String> {
    let capacity = HostCapacity {
        instance_slots: report.instance_slots,
        disk_gib: report.disk_gib,
    };
    if host.health != HostHealth::Healthy || host.capacity != capacity {
        t.commit(Command::ObserveHost {
            name: host.name.clone(),
            reachable: true,
            capacity: Some(capacity),
            problem: None,
        })
        .await?;
    }
    // One read of the state for the whole report: it may list thousands of instances.
    let marks: Vec<Command> = t.node.state.read(|a| {
        report
            .instances_health
            .iter()
            .filter_map(|instance| {
                let database = &a.state.instances.get(&instance.instance_id)?.database;
                let status = a.state.databases.get(database)?.status;
                if !matches!(status, DatabaseStatus::Available | DatabaseStatus::StorageFull) {
                    return None;
                }
                let was_full = status == DatabaseStatus::StorageFull;
                let full = storage_full(instance.used_bytes, instance.allocated_bytes, was_full);
                (full != was_full).then(|| Command::ObserveStorage {
                    database: database.clone(),
                    full,
                    used_bytes: instance.used_bytes,
                    allocated_bytes: instance.allocated_bytes,
                })
            })
            .collect()
    });
    for mark in marks {
        t.commit(mark).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::storage_full;

    #[test]
    fn storage_marks_full_at_95_percent_and_clears_below_90() {
        assert!(!storage_full(94, 100, false));
        assert!(storage_full(95, 100, false));
        assert!(storage_full(91, 100, true), "stays full inside the gap");
        assert!(!storage_full(89, 100, true));
        assert!(!storage_full(5, 0, false), "no allocation reported: never full");
    }
}
