//! Wire conversions for the database part of `keel.v1` over gRPC.

use super::backups::RestoreRequest;
use super::databases::{backup_rpo, recovery_mode, CreateDatabaseRequest, ModifyDatabaseRequest};
use super::error::ApiError;
use super::replicas::ReplicaView;
use super::views::{DatabaseOperation, DatabaseView, EventView, FailoverView, ModificationView, SnapshotView};
use keel_proto::keel as pb;
use keel_raft_store::wire_name;

fn opt(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// A modification for the wire.
pub fn modification(m: ModificationView) -> pb::Modification {
    pb::Modification {
        class: m.class,
        storage_gib: m.storage_gib,
        backup_window: m.backup_window,
        maintenance_window: m.maintenance_window,
        master_password: m.master_password,
        recovery: m.recovery.map(|r| wire_name(&keel_raft_store::RecoveryMode::from(r))),
        multi_az: m.multi_az,
    }
}

/// A create request from the wire.
pub fn create_request(r: pb::CreateDatabaseRequest) -> Result<CreateDatabaseRequest, ApiError> {
    Ok(CreateDatabaseRequest {
        name: r.name,
        engine: r.engine,
        engine_version: opt(r.engine_version),
        class: r.class,
        storage_gib: r.storage_gib,
        zone: opt(r.zone),
        master_user: r.master_user,
        master_password: opt(r.master_password),
        backup_retention_days: r.backup_retention_days,
        backup_window: opt(r.backup_window),
        maintenance_window: opt(r.maintenance_window),
        tags: r.tags.into_iter().collect(),
        request_id: opt(r.request_id),
        account: opt(r.account),
        security_groups: r.security_groups,
        snapshot_interval_min: r.snapshot_interval_min,
        recovery: recovery_mode(&r.recovery)?,
        backup_rpo: backup_rpo(&r.backup_rpo)?,
        multi_az: r.multi_az,
    })
}

/// A modify request from the wire.
pub fn modify_request(r: pb::ModifyDatabaseRequest) -> Result<ModifyDatabaseRequest, ApiError> {
    let m = r.modification.unwrap_or_default();
    Ok(ModifyDatabaseRequest {
        class: m.class,
        storage_gib: m.storage_gib,
        backup_window: m.backup_window,
        maintenance_window: m.maintenance_window,
        apply_immediately: r.apply_immediately,
        request_id: opt(r.request_id),
        master_password: r.master_password,
        rotate_master_password: r.rotate_master_password,
        security_groups: r.set_security_groups.then_some(r.security_groups),
        recovery: recovery_mode(m.recovery.as_deref().unwrap_or_default())?,
        multi_az: m.multi_az,
    })
}

/// A database for the wire.
pub fn database(d: DatabaseView) -> pb::Database {
    pb::Database {
        name: d.name,
        account: d.account,
        status: wire_name(&d.status),
        status_reason: d.status_reason.unwrap_or_default(),
        engine: d.spec.engine,
        engine_version: d.spec.engine_version,
        class: d.spec.class,
        storage_gib: d.spec.storage_gib,
        zone: d.spec.zone.unwrap_or_default(),
        master_user: d.spec.master_user,
        tags: d.spec.tags.into_iter().collect(),
        backup_retention_days: d.spec.backup_retention_days,
        snapshot_interval_min: d.spec.snapshot_interval_min,
        backup_window: d.spec.backup_window,
        maintenance_window: d.spec.maintenance_window,
        security_groups: d.spec.security_groups,
        open_to_any: d.access.is_none(),
        access: d.access.unwrap_or_default(),
        restorable_earliest_ms: d.restorable.map_or(0, |r| r.earliest_ms),
        restorable_latest_ms: d.restorable.map_or(0, |r| r.latest_ms),
        restored_from: d.restored_from.unwrap_or_default(),
        recovery: wire_name(&keel_raft_store::RecoveryMode::from(d.spec.recovery)),
        backup_rpo: wire_name(&keel_raft_store::BackupRpo::from(d.spec.backup_rpo)),
        multi_az: d.spec.multi_az,
        sync_standby: d.sync_standby.unwrap_or_default(),
        last_recovery: d.last_recovery.map(|r| pb::RecoveryRecord {
            operation_id: r.operation_id,
            last_seen_ms: r.last_seen_ms,
            failed_at_ms: r.failed_at_ms,
            restored_to_ms: r.restored_to_ms.unwrap_or(0),
            recovered_at_ms: r.recovered_at_ms.unwrap_or(0),
        }),
        endpoint: d.endpoint.map(|e| pb::Endpoint {
            host: e.host,
            addr: e.addr,
            port: u32::from(e.port),
        }),
        instances: d
            .instances
            .into_iter()
            .map(|i| pb::Instance {
                id: i.id,
                role: wire_name(&i.role),
                host: i.host,
                port: u32::from(i.port),
                health: i.health,
                replication_state: i.replication.as_ref().map(|r| r.state.clone()).unwrap_or_default(),
                replication_sync: i.replication.as_ref().is_some_and(|r| r.sync),
                replication_lag_bytes: i.replication.as_ref().map_or(0, |r| r.lag_bytes),
                replication_lag_ms: i.replication.as_ref().and_then(|r| r.replay_lag_ms),
            })
            .collect(),
        created_at_ms: d.created_at_ms,
        operation_id: d.operation.unwrap_or_default(),
        pending: d.pending.map(modification),
    }
}

/// A mutation's answer for the wire.
pub fn operation(o: DatabaseOperation) -> pb::DatabaseOperation {
    pb::DatabaseOperation {
        database: Some(database(o.database)),
        operation_id: o.operation_id.unwrap_or_default(),
        master_password: o.master_password.unwrap_or_default(),
    }
}

/// An event for the wire.
pub fn event(e: EventView) -> pb::Event {
    pb::Event {
        seq: e.seq,
        at_ms: e.at_ms,
        kind: e.kind,
        subject: e.subject,
        message: e.message,
    }
}

/// A snapshot for the wire.
pub fn snapshot(s: SnapshotView) -> pb::Snapshot {
    pb::Snapshot {
        name: s.name,
        account: s.account,
        database: s.database,
        kind: wire_name(&s.kind),
        state: s.state,
        requested_at_ms: s.requested_at_ms,
        taken_at_ms: s.taken_at_ms,
        timeline: s.timeline,
        start_lsn: s.start_lsn,
        end_lsn: s.end_lsn,
        size_bytes: s.size_bytes,
        zone: s.zone,
        tier: s.tier,
        objects: s
            .objects
            .into_iter()
            .map(|o| pb::BackupObject {
                key: o.key,
                size: o.size,
                sha256: o.sha256,
            })
            .collect(),
        control_copied_at_ms: s.control_copied_at_ms.unwrap_or(0),
        control_wal_until_ms: s.control_wal_until_ms.unwrap_or(0),
    }
}

/// A restore request from the wire.
pub fn restore_request(r: pb::RestoreDatabaseRequest) -> RestoreRequest {
    RestoreRequest {
        to: r.to,
        time: opt(r.time),
        latest: r.latest,
        snapshot: opt(r.snapshot),
        class: opt(r.class),
        storage_gib: (r.storage_gib > 0).then_some(r.storage_gib),
        zone: opt(r.zone),
        prefer_near_within_min: r.prefer_near_within_min,
        request_id: opt(r.request_id),
    }
}

/// A failover's timeline for the wire.
pub fn failover(f: FailoverView) -> pb::Failover {
    pb::Failover {
        id: f.id,
        reason: f.reason,
        planned: f.planned,
        from_instance: f.from_instance,
        from_host: f.from_host,
        from_zone: f.from_zone,
        to_instance: f.to_instance,
        to_host: f.to_host,
        to_zone: f.to_zone,
        generation: f.generation,
        last_seen_ms: f.last_seen_ms,
        detected_ms: f.detected_ms,
        fenced_ms: f.fenced_ms,
        dns_moved_ms: f.dns_moved_ms,
        promoted_ms: f.promoted_ms,
        promotion_committed_ms: f.promotion_committed_ms,
        first_write_ms: f.first_write_ms,
        finished_ms: f.finished_ms,
        error: f.error.unwrap_or_default(),
    }
}

/// A read replica for the wire.
pub fn replica(r: ReplicaView) -> pb::Replica {
    pb::Replica {
        id: r.id,
        host: r.host,
        zone: r.zone,
        port: u32::from(r.port),
        state: r.state,
        health: r.health,
        replication_state: r.replication.as_ref().map(|x| x.state.clone()).unwrap_or_default(),
        replication_lag_bytes: r.replication.as_ref().map_or(0, |x| x.lag_bytes),
        replication_lag_ms: r.replication.as_ref().and_then(|x| x.replay_lag_ms),
    }
}
