//! The monitor: health-checks every registered host manager on an interval and
//! commits only changes — a host becoming unreachable or recovering, a new
//! capacity report, a database's storage crossing the full mark, a WAL archive
//! reaching further (into the backup catalog) — and asks for the recovery of a
//! database whose instance or host failed. Every probe tells the host which of its
//! instances recoveries fenced, so one that comes back never runs them again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use keel_proto::host::{FencedInstance, HealthReply, HealthRequest, UpstreamHealth};
use keel_raft_store::{
    AdminState, Command, DatabaseStatus, HostCapacity, HostHealth, InstanceHealth, InstanceRole, Millis, WalArchive,
};

use crate::clock::now_ms;

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

/// A failed database's recovery is asked for again (a refusal: blocked, or manual) at most this often.
const RECOVERY_RETRY: Duration = Duration::from_secs(10);

struct Seen {
    name: String,
    addr: String,
    health: HostHealth,
    capacity: HostCapacity,
    /// Its instances that recoveries fenced, for the probe.
    fenced: Vec<FencedInstance>,
}

/// The shortest time a failure must last before the monitor declares it, whatever the
/// interval: a stall shorter than this (a loaded machine, an fsync storm) is never a failure.
pub const DECLARE_AFTER_AT_LEAST: Duration = Duration::from_secs(1);

/// How many failed probes in a row declare a host or instance failed: the configured
/// number, and never fewer than cover [`DECLARE_AFTER_AT_LEAST`] at this interval.
pub fn failures_to_declare(configured: u32, interval: Duration) -> u32 {
    let floor = DECLARE_AFTER_AT_LEAST.as_millis().div_ceil(interval.as_millis().max(1));
    configured.max(floor.min(u128::from(u32::MAX)) as u32)
}

/// Run until the term ends.
pub async fn run(t: Term) {
    let interval = Duration::from_millis(t.config.monitor_interval_ms);
    let after = failures_to_declare(t.config.unreachable_after, interval);
    // A host answers within its own instance-probe budget plus a margin for a loaded
    // machine, so an instance slow to answer SQL shows as that instance's problem and
    // never as its host's unreachability (a short interval must not shorten it).
    let probe_timeout = interval.max(crate::host::service::PROBE_WITHIN + Duration::from_millis(400));
    let mut failures: HashMap<String, u32> = HashMap::new();
    let mut instance_failures: HashMap<String, u32> = HashMap::new();
    // When each host, and each instance, last answered (this leader's own observations).
    let mut last_seen: HashMap<String, Millis> = HashMap::new();
    let mut recoveries_asked: HashMap<String, Instant> = HashMap::new();
    // What each standby said of its primary in this round's reports.
    let mut upstreams: HashMap<String, UpstreamHealth> = HashMap::new();
    let mut held: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            _ = t.cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let hosts: Vec<Seen> = t.read(|a| {
            // One pass over the instances for every host's fences.
            let mut fenced: HashMap<&str, Vec<FencedInstance>> = HashMap::new();
            for i in a.instances.values() {
                if let Some(generation) = i.fenced_at {
                    fenced.entry(i.host.as_str()).or_default().push(FencedInstance {
                        instance_id: i.id.clone(),
                        generation,
                    });
                }
            }
            a.hosts
                .values()
                .map(|h| Seen {
                    name: h.name.clone(),
                    addr: h.addr.clone(),
                    health: h.health,
                    capacity: h.capacity.clone(),
                    fenced: fenced.remove(h.name.as_str()).unwrap_or_default(),
                })
                .collect()
        });
        failures.retain(|name, _| hosts.iter().any(|h| &h.name == name));
        let calls: Vec<(String, HealthRequest)> = hosts
            .iter()
            .map(|h| {
                let req = HealthRequest {
                    fenced: h.fenced.clone(),
                    from_monitor: true,
                };
                (h.addr.clone(), req)
            })
            .collect();
        let clients = t.hosts.clone();
        let probes: Vec<Result<HealthReply, String>> = stream::iter(calls)
            .map(move |(addr, req): (String, HealthRequest)| {
                let clients = clients.clone();
                async move { clients.health(&addr, req, probe_timeout).await }
            })
            .buffered(PROBES_AT_ONCE)
            .collect()
            .await;
        upstreams.clear();
        for (host, probe) in hosts.iter().zip(probes) {
            let outcome = match probe {
                Ok(report) => {
                    for i in &report.instances_health {
                        if let Some(u) = &i.upstream {
                            upstreams.insert(i.instance_id.clone(), *u);
                        }
                    }
                    failures.remove(&host.name);
                    let now = now_ms();
                    last_seen.insert(host.name.clone(), now);
                    for i in report.instances_health.iter().filter(|i| i.accepting) {
                        last_seen.insert(i.instance_id.clone(), now);
                    }
                    healthy(&t, host, &report, &mut instance_failures, after).await
                }
                Err(problem) => {
                    let n = failures.entry(host.name.clone()).or_default();
                    *n += 1;
                    if *n >= after && host.health != HostHealth::Unreachable {
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
        let down_after = interval.as_millis() as u64 * u64::from(after);
        let lost = t.read(|a| lost_standbys(a, now_ms(), down_after.max(1_000)));
        for l in lost {
            let key = format!("standby:{}", l.database);
            if recoveries_asked
                .get(&key)
                .is_some_and(|at| at.elapsed() < RECOVERY_RETRY)
            {
                continue;
            }
            recoveries_asked.insert(key, Instant::now());
            let command = Command::ReleaseStandby {
                job_id: uuid::Uuid::now_v7().simple().to_string(),
                name: l.database.clone(),
                standby: l.instance,
                reason: l.reason,
            };
            if let Err(e) = t.commit(command).await {
                tracing::info!(database = %l.database, why = %e, "Standby not released.");
            }
        }
        let failed = t.read(failed_databases);
        recoveries_asked.retain(|db, at| {
            (db.starts_with("standby:") || failed.iter().any(|f| &f.database == db)) && at.elapsed() < RECOVERY_RETRY
        });
        held.retain(|db, _| failed.iter().any(|f| &f.database == db));
        for f in failed {
            if recoveries_asked.contains_key(&f.database) {
                continue;
            }
            let last = last_seen.get(&f.instance).or(last_seen.get(&f.host)).copied();
            let remedy = t.read(|a| remedy(a, &f, &upstreams, down_after.max(1_000)));
            let command = match remedy {
                Remedy::Hold(why) => {
                    // Said once in a while, not every round.
                    if held.get(&f.database).is_none_or(|at| at.elapsed() >= RECOVERY_RETRY) {
                        held.insert(f.database.clone(), Instant::now());
                        tracing::info!(database = %f.database, failed = %f.reason, %why, "Not failing over.");
                    }
                    continue;
                }
                Remedy::Failover { standby, reason } => Command::FailoverDatabase {
                    job_id: uuid::Uuid::now_v7().simple().to_string(),
                    name: f.database.clone(),
                    standby,
                    reason,
                    detected_ms: f.since_ms.unwrap_or_else(now_ms),
                    last_seen_ms: last.unwrap_or(0),
                },
                Remedy::Recover => Command::RecoverDatabase {
                    job_id: uuid::Uuid::now_v7().simple().to_string(),
                    request: None,
                    name: f.database.clone(),
                    instance_id: uuid::Uuid::now_v7().simple().to_string(),
                    reason: f.reason.clone(),
                    last_seen_ms: last.unwrap_or(0),
                    automatic: true,
                },
            };
            recoveries_asked.insert(f.database.clone(), Instant::now());
            // A refusal (blocked, or manual recovery) is an event the state records once.
            if let Err(e) = t.commit(command).await {
                tracing::info!(database = %f.database, why = %e, "Recovery not started.");
            }
        }
    }
}

/// Multi-AZ databases at rest whose recorded synchronous standby is lost: the monitor
/// found it unhealthy or its host unreachable, or its primary has reported no connection
/// from it for `down_after_ms`. Its primary's commits wait until it is released.
pub fn lost_standbys(state: &AdminState, now: u64, down_after_ms: u64) -> Vec<Failed> {
    state
        .databases
        .iter()
        .filter(|(_, d)| d.at_rest() || state.only_snapshotting(d))
        .filter_map(|(key, d)| {
            let standby = state.instances.get(d.sync_standby.as_deref()?)?;
            let host_down = state
                .hosts
                .get(&standby.host)
                .is_some_and(|h| h.health == HostHealth::Unreachable);
            let reason = match (&standby.health, &standby.replication) {
                _ if host_down => format!("its host {} stopped answering", standby.host),
                (InstanceHealth::Unhealthy { problem, .. }, _) => format!("it is unhealthy: {problem}"),
                (_, Some(r)) if r.state == "down" && now.saturating_sub(r.as_of_ms) >= down_after_ms => format!(
                    "its primary has had no replication connection from it for {:.1} s",
                    now.saturating_sub(r.as_of_ms) as f64 / 1000.0
                ),
                (_, Some(r)) if r.state == "silent" && now.saturating_sub(r.as_of_ms) >= down_after_ms => format!(
                    "its primary has heard nothing from it for {:.1} s though it is connected",
                    (now.saturating_sub(r.as_of_ms) + SILENT_AFTER_MS) as f64 / 1000.0
                ),
                _ => return None,
            };
            Some(Failed {
                database: key.clone(),
                instance: standby.id.clone(),
                host: standby.host.clone(),
                reason,
                since_ms: None,
            })
        })
        .collect()
}

/// A database whose primary failed, as the monitor recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The database's key.
    pub database: String,
    /// Its failed primary instance.
    pub instance: String,
    /// The instance's host.
    pub host: String,
    /// What failed, for the event.
    pub reason: String,
    /// Since when the monitor has held the instance unhealthy, if it has.
    pub since_ms: Option<Millis>,
}

/// What the monitor does about a database whose primary failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Promote its synchronous standby, which no longer hears from the primary either.
    Failover {
        /// The standby.
        standby: String,
        /// What the monitor and the standby saw, for the record.
        reason: String,
    },
    /// Nothing yet, and why: its standby still hears from the primary (the control plane
    /// is cut off from a primary that serves), or has not said yet.
    Hold(String),
    /// Restore it from its backups on another host (no standby can take over).
    Recover,
}

/// The remedy for `failed`, given what each standby said of its primary this round
/// (`upstreams`): a Multi-AZ database whose recorded synchronous standby is healthy on a
/// reachable host fails over only when that standby has not heard from its primary for
/// `silent_after_ms` either (both views agree the primary is gone); one without a
/// standby able to take over is recovered from its backups.
pub fn remedy(
    state: &AdminState,
    failed: &Failed,
    upstreams: &HashMap<String, UpstreamHealth>,
    silent_after_ms: u64,
) -> Remedy {
    let standby = state
        .databases
        .get(&failed.database)
        .and_then(|d| d.sync_standby.as_deref())
        .and_then(|id| state.instances.get(id))
        .filter(|s| s.fenced_at.is_none() && s.health == InstanceHealth::Healthy)
        .filter(|s| {
            state
                .hosts
                .get(&s.host)
                .is_some_and(|h| h.health == HostHealth::Healthy)
        });
    let Some(standby) = standby else {
        return Remedy::Recover;
    };
    match upstreams.get(&standby.id) {
        None => Remedy::Hold(format!("standby {} has not said yet what it sees of its primary", standby.id)),
        Some(u) if u.streaming && u.silent_ms < silent_after_ms => Remedy::Hold(format!(
            "standby {} still streams from its primary (last heard {} ms ago): the primary serves, only the control plane cannot see it",
            standby.id, u.silent_ms
        )),
        Some(u) => Remedy::Failover {
            standby: standby.id.clone(),
            reason: format!(
                "{}, and standby {} {}",
                failed.reason,
                standby.id,
                match (u.streaming, u.silent_ms) {
                    (_, u64::MAX) => "has no connection to it".to_string(),
                    (false, ms) => format!("lost its connection to it (last heard {ms} ms ago)"),
                    (true, ms) => format!("has not heard from it for {ms} ms"),
                }
            ),
        },
    }
}

/// The databases at rest whose primary instance the monitor found unhealthy, or whose
/// host it found unreachable (each after the configured number of failed probes).
pub fn failed_databases(state: &AdminState) -> Vec<Failed> {
    state
        .databases
        .iter()
        .filter(|(_, d)| state.watched(d))
        .filter_map(|(key, _)| {
            let primary = state.primary_of(key)?;
            let host_down = state
                .hosts
                .get(&primary.host)
                .is_some_and(|h| h.health == HostHealth::Unreachable);
            let since_ms = match &primary.health {
                InstanceHealth::Unhealthy { since_ms, .. } => Some(*since_ms),
                InstanceHealth::Healthy => None,
            };
            let reason = match &primary.health {
                _ if host_down => format!("host {} of instance {} stopped answering", primary.host, primary.id),
                InstanceHealth::Unhealthy { problem, .. } => {
                    format!(
                        "instance {} on host {} is unhealthy: {problem}",
                        primary.id, primary.host
                    )
                }
                InstanceHealth::Healthy => return None,
            };
            Some(Failed {
                database: key.clone(),
                instance: primary.id.clone(),
                host: primary.host.clone(),
                reason,
                since_ms,
            })
        })
        .collect()
}

/// The instance transitions a good report from `host` implies, for instances of databases
/// at rest (an operation owns an instance while it runs; one a failover may pre-empt leaves
/// the others watched, never the replica it is building). An instance turns
/// unhealthy after `after` failed probes in a row and recovers at its first good one;
/// `failures` counts.
fn instance_changes(
    state: &AdminState,
    host: &str,
    report: &HealthReply,
    failures: &mut HashMap<String, u32>,
    after: u32,
) -> Vec<Command> {
    let mut changes = Vec::new();
    for i in state
        .instances
        .values()
        .filter(|i| i.host == host && i.fenced_at.is_none())
    {
        let watched = state.databases.get(&i.database).is_some_and(|d| {
            let building = state
                .operation_kind(d)
                .is_some_and(|k| matches!(k, keel_raft_store::JobKind::AddReplica { replica, .. } if *replica == i.id));
            d.at_rest() || (state.watched(d) && !building)
        });
        if !watched {
            failures.remove(&i.id);
            continue;
        }
        let probe = report.instances_health.iter().find(|h| h.instance_id == i.id);
        let was_healthy = i.health == InstanceHealth::Healthy;
        match probe {
            Some(h) if h.accepting => {
                failures.remove(&i.id);
                if !was_healthy {
                    changes.push(Command::ObserveInstance {
                        instance: i.id.clone(),
                        healthy: true,
                        problem: None,
                    });
                }
            }
            _ => {
                let n = failures.entry(i.id.clone()).or_default();
                *n += 1;
                if *n >= after && was_healthy {
                    let problem = probe
                        .map(|h| h.problem.clone())
                        .filter(|p| !p.is_empty())
                        .unwrap_or_else(|| format!("host {host} does not report the instance"));
                    changes.push(Command::ObserveInstance {
                        instance: i.id.clone(),
                        healthy: false,
                        problem: Some(problem),
                    });
                }
            }
        }
    }
    changes
}

/// Record a good health report: host health and capacity if changed, instance health
/// transitions, then storage marks.
async fn healthy(
    t: &Term,
    host: &Seen,
    report: &HealthReply,
    instance_failures: &mut HashMap<String, u32>,
    after: u32,
) -> Result<(), String> {
    let capacity = HostCapacity {
        instance_slots: report.instance_slots,
        disk_gib: report.disk_gib,
        engine_version: report.engine_version.clone(),
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
    let changes = t.read(|a| instance_changes(a, &host.name, report, instance_failures, after));
    for change in changes {
        t.commit(change).await?;
    }
    // One read of the state for the whole report: it may list thousands of instances.
    let marks: Vec<Command> = t.read(|a| {
        report
            .instances_health
            .iter()
            .filter_map(|instance| {
                // The primary's use is the database's (a standby's WAL may differ).
                let member = a.instances.get(&instance.instance_id)?;
                if member.role != InstanceRole::Primary {
                    return None;
                }
                let database = &member.database;
                let status = a.databases.get(database)?.status;
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
    let archives = t.read(|a| archive_progress(a, &host.name, report));
    if !archives.is_empty() {
        t.commit(Command::RecordArchive { archives }).await?;
    }
    let now = crate::clock::now_ms();
    let standbys = t.read(|a| replication_changes(a, &host.name, report, now));
    if !standbys.is_empty() {
        t.commit(Command::ObserveReplication { standbys }).await?;
    }
    Ok(())
}

/// How often a standby's lag alone is relayed (a state change is relayed at once).
pub const REPLICATION_RELAY_MS: u64 = 5_000;

/// A connected standby its primary has heard nothing from for this long is `silent`: a
/// live one replies to every flush, and the archive's heartbeat writes every 200 ms.
pub const SILENT_AFTER_MS: u64 = 1_000;

/// Standbys whose replication, as their primary on `host` reports it, changed state
/// (or whether commits wait for it), or whose lag changed and was last relayed
/// [`REPLICATION_RELAY_MS`] ago.
pub fn replication_changes(
    state: &AdminState,
    host: &str,
    report: &HealthReply,
    now: u64,
) -> Vec<(String, keel_raft_store::Replication)> {
    let mut out = Vec::new();
    for h in &report.instances_health {
        let primary_here = state
            .instances
            .get(&h.instance_id)
            .is_some_and(|i| i.host == host && i.fenced_at.is_none() && i.role == InstanceRole::Primary);
        if !primary_here {
            continue;
        }
        for s in &h.standbys {
            let Some(standby) = state.instances.get(&s.instance_id) else {
                continue;
            };
            // Connected but unheard (a one-way partition, a stalled standby): commits wait
            // for it, so it counts as lost like a disconnected one.
            let silent = s.silent_ms.is_some_and(|ms| ms >= SILENT_AFTER_MS);
            let seen = keel_raft_store::Replication {
                state: if silent { "silent".into() } else { s.state.clone() },
                sync: s.sync,
                lag_bytes: s.lag_bytes,
                replay_lag_ms: s.replay_lag_ms,
                as_of_ms: now,
            };
            let relay = match &standby.replication {
                None => true,
                Some(r) if r.state != seen.state || r.sync != seen.sync => true,
                Some(r) => {
                    (r.lag_bytes != seen.lag_bytes || r.replay_lag_ms != seen.replay_lag_ms)
                        && now.saturating_sub(r.as_of_ms) >= REPLICATION_RELAY_MS
                }
            };
            if relay {
                out.push((s.instance_id.clone(), seen));
            }
        }
    }
    out
}

/// The WAL archives in `report` that reach further than the catalog says, for instances
/// the catalog places on `host` (a report about an instance elsewhere is ignored).
pub fn archive_progress(state: &AdminState, host: &str, report: &HealthReply) -> Vec<WalArchive> {
    report
        .instances_health
        .iter()
        .filter(|h| !h.archive_lineage.is_empty() && h.restorable_until_ms > 0)
        .filter_map(|h| {
            let instance = state
                .instances
                .get(&h.instance_id)
                .filter(|i| i.host == host && i.fenced_at.is_none())?;
            let db = state.databases.get(&instance.database)?;
            if db.lineage() != h.archive_lineage {
                return None;
            }
            let known = state
                .archives
                .get(&h.archive_lineage)
                .map_or(0, |a| a.restorable_until_ms);
            (h.restorable_until_ms > known).then(|| WalArchive {
                lineage: h.archive_lineage.clone(),
                database: instance.database.clone(),
                zone: state.hosts.get(host).map(|x| x.zone.clone()).unwrap_or_default(),
                timeline: h.archive_timeline,
                archived_lsn: h.archived_lsn.clone(),
                restorable_until_ms: h.restorable_until_ms,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::host::InstanceHealth as Probe;
    use keel_raft_store::{Database, Instance};

    fn state(status: DatabaseStatus, health: InstanceHealth) -> AdminState {
        let mut s = AdminState::default();
        s.databases.insert(
            "db".into(),
            Database {
                name: "db".into(),
                status,
                ..Database::default()
            },
        );
        s.instances.insert(
            "i1".into(),
            Instance {
                id: "i1".into(),
                database: "db".into(),
                host: "h1".into(),
                health,
                ..Instance::default()
            },
        );
        s
    }

    /// `state`'s database at rest with standby `s1` on host h2.
    fn with_standby() -> AdminState {
        let mut s = state(DatabaseStatus::Available, InstanceHealth::Healthy);
        s.instances.insert(
            "s1".into(),
            Instance {
                id: "s1".into(),
                database: "db".into(),
                host: "h2".into(),
                role: InstanceRole::Standby,
                ..Instance::default()
            },
        );
        s
    }

    fn report(accepting: Option<bool>) -> HealthReply {
        HealthReply {
            instances_health: accepting
                .map(|accepting| Probe {
                    instance_id: "i1".into(),
                    running: accepting,
                    accepting,
                    problem: if accepting {
                        String::new()
                    } else {
                        "PostgreSQL is not running".into()
                    },
                    ..Probe::default()
                })
                .into_iter()
                .collect(),
            ..HealthReply::default()
        }
    }

    #[test]
    fn a_synchronous_standby_is_lost_when_unhealthy_unreachable_or_disconnected_long_enough() {
        let mut s = with_standby();
        s.hosts.insert(
            "h2".into(),
            keel_raft_store::Host {
                name: "h2".into(),
                health: HostHealth::Healthy,
                ..keel_raft_store::Host::default()
            },
        );
        assert!(
            lost_standbys(&s, 10_000, 1_000).is_empty(),
            "no synchronous standby recorded"
        );
        s.databases.get_mut("db").unwrap().sync_standby = Some("s1".into());
        assert!(lost_standbys(&s, 10_000, 1_000).is_empty(), "healthy");
        s.instances.get_mut("s1").unwrap().replication = Some(keel_raft_store::Replication {
            state: "down".into(),
            as_of_ms: 9_500,
            ..Default::default()
        });
        assert!(lost_standbys(&s, 10_000, 1_000).is_empty(), "not down long enough");
        let lost = lost_standbys(&s, 10_500, 1_000);
        assert!(lost[0].reason.contains("no replication connection"), "{lost:?}");
        s.instances.get_mut("s1").unwrap().replication = Some(keel_raft_store::Replication {
            state: "silent".into(),
            as_of_ms: 9_500,
            ..Default::default()
        });
        assert!(lost_standbys(&s, 10_000, 1_000).is_empty(), "not silent long enough");
        let lost = lost_standbys(&s, 10_500, 1_000);
        assert!(lost[0].reason.contains("heard nothing from it"), "{lost:?}");
        s.hosts.get_mut("h2").unwrap().health = HostHealth::Unreachable;
        assert!(lost_standbys(&s, 9_600, 1_000)[0]
            .reason
            .contains("h2 stopped answering"));
        s.databases.get_mut("db").unwrap().operation = Some("j".into());
        assert!(lost_standbys(&s, 10_500, 1_000).is_empty(), "only at rest");
    }

    #[test]
    fn a_failed_primary_fails_over_only_when_its_in_sync_standby_no_longer_hears_from_it() {
        let failed = Failed {
            database: "db".into(),
            instance: "i1".into(),
            host: "h1".into(),
            reason: "host h1 stopped answering".into(),
            since_ms: None,
        };
        let healthy_h2 = |s: &mut AdminState, health: HostHealth| {
            s.hosts.insert(
                "h2".into(),
                keel_raft_store::Host {
                    name: "h2".into(),
                    health,
                    ..keel_raft_store::Host::default()
                },
            );
        };
        let view = |streaming: bool, silent_ms: u64| {
            HashMap::from([("s1".to_string(), UpstreamHealth { streaming, silent_ms })])
        };
        let in_sync = || {
            let mut s = with_standby();
            healthy_h2(&mut s, HostHealth::Healthy);
            s.databases.get_mut("db").unwrap().sync_standby = Some("s1".into());
            s
        };
        let failover = |r: Remedy| matches!(r, Remedy::Failover { standby, .. } if standby == "s1");
        let hold = |r: Remedy| matches!(r, Remedy::Hold(_));
        // (state, what the standby says, expected)
        let s = in_sync();
        assert!(
            hold(remedy(&s, &failed, &view(true, 150), 1_000)),
            "it still streams: the primary serves"
        );
        assert!(hold(remedy(&s, &failed, &HashMap::new(), 1_000)), "it has not said yet");
        assert!(
            failover(remedy(&s, &failed, &view(true, 1_000), 1_000)),
            "silent long enough"
        );
        assert!(
            failover(remedy(&s, &failed, &view(false, 40), 1_000)),
            "its connection ended"
        );
        assert!(
            failover(remedy(&s, &failed, &view(false, u64::MAX), 1_000)),
            "no receiver at all"
        );
        let reason = match remedy(&s, &failed, &view(false, 40), 1_000) {
            Remedy::Failover { reason, .. } => reason,
            other => panic!("{other:?}"),
        };
        assert!(
            reason.contains("h1 stopped answering") && reason.contains("lost its connection"),
            "{reason}"
        );
        // No standby that may take over: recovered from the backups.
        let mut not_in_sync = in_sync();
        not_in_sync.databases.get_mut("db").unwrap().sync_standby = None;
        assert_eq!(remedy(&not_in_sync, &failed, &view(false, 40), 1_000), Remedy::Recover);
        let mut unhealthy = in_sync();
        unhealthy.instances.get_mut("s1").unwrap().health = InstanceHealth::Unhealthy {
            problem: "down".into(),
            since_ms: 1,
        };
        assert_eq!(remedy(&unhealthy, &failed, &view(false, 40), 1_000), Remedy::Recover);
        let mut unreachable = in_sync();
        healthy_h2(&mut unreachable, HostHealth::Unreachable);
        assert_eq!(remedy(&unreachable, &failed, &view(false, 40), 1_000), Remedy::Recover);
        let mut fenced = in_sync();
        fenced.instances.get_mut("s1").unwrap().fenced_at = Some(3);
        assert_eq!(remedy(&fenced, &failed, &view(false, 40), 1_000), Remedy::Recover);
    }

    #[test]
    fn a_standbys_state_is_relayed_at_once_and_its_lag_at_most_every_few_seconds() {
        let mut s = with_standby();
        let mut r = report(Some(true));
        let standby = |state: &str, sync: bool, lag_bytes: u64| keel_proto::host::StandbyHealth {
            instance_id: "s1".into(),
            state: state.into(),
            sync,
            lag_bytes,
            replay_lag_ms: None,
            silent_ms: Some(150),
        };
        r.instances_health[0].standbys = vec![standby("streaming", true, 100)];
        let got = replication_changes(&s, "h1", &r, 1_000);
        assert_eq!(got.len(), 1, "first sight");
        assert!(
            replication_changes(&s, "h2", &r, 1_000).is_empty(),
            "only from the primary's own host"
        );
        s.instances.get_mut("s1").unwrap().replication = Some(got[0].1.clone());
        assert!(replication_changes(&s, "h1", &r, 2_000).is_empty(), "nothing changed");
        r.instances_health[0].standbys = vec![standby("streaming", true, 200)];
        assert!(replication_changes(&s, "h1", &r, 2_000).is_empty(), "lag alone waits");
        assert_eq!(replication_changes(&s, "h1", &r, 1_000 + REPLICATION_RELAY_MS).len(), 1);
        r.instances_health[0].standbys = vec![standby("down", false, 200)];
        let got = replication_changes(&s, "h1", &r, 2_000);
        assert_eq!(
            (got[0].1.state.as_str(), got[0].1.sync),
            ("down", false),
            "a state change at once"
        );
        // Connected, but its primary has heard nothing from it for a second: silent.
        let mut unheard = standby("streaming", true, 200);
        unheard.silent_ms = Some(SILENT_AFTER_MS);
        r.instances_health[0].standbys = vec![unheard];
        let got = replication_changes(&s, "h1", &r, 2_000);
        assert_eq!(got[0].1.state, "silent");
    }

    #[test]
    fn a_failure_is_declared_after_the_probes_configured_and_never_in_under_a_second() {
        let ms = Duration::from_millis;
        for (configured, interval, want) in [
            (3, 1000, 3),
            (3, 300, 4),
            (3, 200, 5),
            (3, 250, 4),
            (5, 300, 5),
            (1, 2000, 1),
        ] {
            assert_eq!(
                failures_to_declare(configured, ms(interval)),
                want,
                "{configured} probes every {interval} ms"
            );
        }
    }

    #[test]
    fn instances_turn_unhealthy_after_repeated_failures_and_recover_at_once() {
        let unhealthy = InstanceHealth::Unhealthy {
            problem: "x".into(),
            since_ms: 1,
        };
        // (database status, recorded health, probes in order (None: not reported), what the
        // last probe proposes (Some(healthy) per ObserveInstance))
        type Row = (DatabaseStatus, InstanceHealth, Vec<Option<bool>>, Vec<Option<bool>>);
        let table: Vec<Row> = vec![
            (
                DatabaseStatus::Available,
                InstanceHealth::Healthy,
                vec![Some(true)],
                vec![],
            ),
            (
                DatabaseStatus::Available,
                InstanceHealth::Healthy,
                vec![Some(false), Some(false)],
                vec![],
            ),
            (
                DatabaseStatus::Available,
                InstanceHealth::Healthy,
                vec![Some(false), Some(false), Some(false)],
                vec![Some(false)],
            ),
            (
                DatabaseStatus::Available,
                InstanceHealth::Healthy,
                vec![Some(false), Some(true), Some(false), Some(false)],
                vec![],
            ),
            (
                DatabaseStatus::StorageFull,
                InstanceHealth::Healthy,
                vec![None, None, None],
                vec![Some(false)],
            ),
            (
                DatabaseStatus::Available,
                unhealthy.clone(),
                vec![Some(true)],
                vec![Some(true)],
            ),
            (DatabaseStatus::Available, unhealthy.clone(), vec![Some(false)], vec![]),
            (
                DatabaseStatus::Modifying,
                InstanceHealth::Healthy,
                vec![Some(false); 5],
                vec![],
            ),
            (DatabaseStatus::Creating, unhealthy, vec![Some(true)], vec![]),
        ];
        for (status, health, probes, want) in table {
            let s = state(status, health.clone());
            let mut failures = HashMap::new();
            let mut last = Vec::new();
            for p in &probes {
                last = instance_changes(&s, "h1", &report(*p), &mut failures, 3);
            }
            let got: Vec<Option<bool>> = last
                .iter()
                .map(|c| match c {
                    Command::ObserveInstance { healthy, .. } => Some(*healthy),
                    _ => None,
                })
                .collect();
            assert_eq!(got, want, "{status:?} {health:?} after {probes:?}");
        }
    }

    #[test]
    fn while_a_replica_is_built_the_others_are_watched_and_it_is_not() {
        for (id, judged) in [("i1", true), ("being-built", false)] {
            let mut s = state(DatabaseStatus::Modifying, InstanceHealth::Healthy);
            let mut i = s.instances.remove("i1").unwrap();
            i.id = id.into();
            s.instances.insert(id.into(), i);
            s.jobs.insert(
                "j".into(),
                keel_raft_store::Job {
                    id: "j".into(),
                    kind: keel_raft_store::JobKind::AddReplica {
                        database: "db".into(),
                        replica: "being-built".into(),
                        replaces: None,
                        lineage: String::new(),
                    },
                    request_id: None,
                    account: String::new(),
                    state: keel_raft_store::JobState::Running,
                    submitted_at_ms: 0,
                    claims: Vec::new(),
                    completed_fence: None,
                    finished_at_ms: None,
                    error: None,
                },
            );
            s.databases.get_mut("db").unwrap().operation = Some("j".into());
            let mut failures = HashMap::new();
            let mut last = Vec::new();
            for _ in 0..3 {
                last = instance_changes(&s, "h1", &report(Some(false)), &mut failures, 3);
            }
            assert_eq!(!last.is_empty(), judged, "{id}: {last:?}");
        }
    }

    #[test]
    fn storage_marks_full_at_95_percent_and_clears_below_90() {
        assert!(!storage_full(94, 100, false));
        assert!(storage_full(95, 100, false));
        assert!(storage_full(91, 100, true), "stays full inside the gap");
        assert!(!storage_full(89, 100, true));
        assert!(!storage_full(5, 0, false), "no allocation reported: never full");
    }

    #[test]
    fn archive_reports_move_the_catalog_only_forward_and_only_from_the_instances_host() {
        let mut s = state(DatabaseStatus::Available, InstanceHealth::Healthy);
        s.databases.get_mut("db").unwrap().lineage = "L1".into();
        let mut r = report(Some(true));
        r.instances_health[0].archive_lineage = "L1".into();
        r.instances_health[0].restorable_until_ms = 5_000;
        r.instances_health[0].archived_lsn = "0/3000060".into();
        let got = archive_progress(&s, "h1", &r);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].database.as_str(), got[0].restorable_until_ms), ("db", 5_000));
        assert!(
            archive_progress(&s, "h2", &r).is_empty(),
            "another host's word about i1 is ignored"
        );
        s.archives.insert("L1".into(), got[0].clone());
        assert!(archive_progress(&s, "h1", &r).is_empty(), "nothing new");
        r.instances_health[0].archive_lineage = "other".into();
        r.instances_health[0].restorable_until_ms = 9_000;
        assert!(
            archive_progress(&s, "h1", &r).is_empty(),
            "a lineage that is not the database's"
        );
    }

    #[test]
    fn a_failed_primary_or_its_lost_host_asks_for_recovery_only_at_rest() {
        let unhealthy = InstanceHealth::Unhealthy {
            problem: "PostgreSQL is not running".into(),
            since_ms: 1,
        };
        // (database status, instance health, host health, fenced, asks)
        let table = [
            (
                DatabaseStatus::Available,
                InstanceHealth::Healthy,
                HostHealth::Healthy,
                false,
                false,
            ),
            (
                DatabaseStatus::Available,
                unhealthy.clone(),
                HostHealth::Healthy,
                false,
                true,
            ),
            (
                DatabaseStatus::StorageFull,
                InstanceHealth::Healthy,
                HostHealth::Unreachable,
                false,
                true,
            ),
            (
                DatabaseStatus::Modifying,
                unhealthy.clone(),
                HostHealth::Healthy,
                false,
                false,
            ),
            (
                DatabaseStatus::Failed,
                unhealthy.clone(),
                HostHealth::Unreachable,
                false,
                false,
            ),
            (
                DatabaseStatus::Available,
                unhealthy,
                HostHealth::Unreachable,
                true,
                false,
            ),
        ];
        for (status, health, host, fenced, asks) in table {
            let mut s = state(status, health.clone());
            s.databases.get_mut("db").unwrap().instances = vec!["i1".into()];
            s.instances.get_mut("i1").unwrap().fenced_at = fenced.then_some(2);
            s.hosts.insert(
                "h1".into(),
                keel_raft_store::Host {
                    name: "h1".into(),
                    health: host,
                    ..keel_raft_store::Host::default()
                },
            );
            let failed = failed_databases(&s);
            assert_eq!(
                !failed.is_empty(),
                asks,
                "{status:?} {health:?} {host:?} fenced={fenced}"
            );
            if let Some(f) = failed.first() {
                let why = if host == HostHealth::Unreachable {
                    "stopped answering"
                } else {
                    "is unhealthy"
                };
                assert!(f.reason.contains(why), "{}", f.reason);
                assert_eq!((f.instance.as_str(), f.host.as_str()), ("i1", "h1"));
            }
        }
    }
}
