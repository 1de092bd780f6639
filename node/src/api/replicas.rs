//! Read replicas in the API: add, list, remove, promote. Tenant-scoped like every database
//! call (another account's database is "not found").

use keel_raft_store::{AdminState, Command, Instance};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::databases::{key_of, missing};
use super::error::ApiError;
use super::service::Api;
use super::validate;
use super::views::{DatabaseOperation, InstanceView, ReplicationView};

/// `db replica add` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AddReplicaRequest {
    /// The zone to place it in (any zone if not named; never beside another instance of the database).
    pub zone: Option<String>,
    /// Retry id.
    pub request_id: Option<String>,
}

/// `db promote-replica` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromoteReplicaRequest {
    /// The new database's name (in the source's account).
    pub to: String,
    /// Retry id.
    #[serde(default)]
    pub request_id: Option<String>,
}

/// One read replica as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// Instance id.
    pub id: String,
    /// Host it runs on.
    pub host: String,
    /// That host's zone.
    pub zone: String,
    /// Port.
    pub port: u16,
    /// `serving` (readers reach it by `<db>.ro…`), `building`, `rebuilding` (it followed an
    /// earlier primary; it is rebuilt from the new one's backups) or `unhealthy`.
    pub state: String,
    /// `healthy`, or `unhealthy: <what the monitor saw>`.
    pub health: String,
    /// Its replication, as the primary last reported it (lag in bytes and ms).
    pub replication: Option<ReplicationView>,
}

impl ReplicaView {
    /// The view of replica `i` in `state`.
    fn of(i: &Instance, state: &AdminState) -> Self {
        let serving = if state.replica_serves(i) {
            "serving"
        } else if i.health != keel_raft_store::InstanceHealth::Healthy {
            "unhealthy"
        } else if i.follows.is_some() {
            "rebuilding"
        } else {
            "building"
        };
        let base = InstanceView::from(i);
        Self {
            id: base.id,
            host: base.host,
            zone: state.hosts.get(&i.host).map(|h| h.zone.clone()).unwrap_or_default(),
            port: base.port,
            state: serving.to_string(),
            health: base.health,
            replication: base.replication,
        }
    }
}

impl Api {
    /// Add a read replica: built from the latest snapshot and archive, then streaming.
    pub async fn add_replica(
        &self,
        who: &Principal,
        name: &str,
        req: AddReplicaRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        validate::request_id(req.request_id.as_deref())?;
        if let Some(zone) = &req.zone {
            validate::dns_label("zone", zone)?;
        }
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "add-replica", "name": key, "zone": req.zone});
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let command = Command::AddReplica {
            job_id,
            request: Some(request),
            name: key,
            instance_id: uuid::Uuid::now_v7().simple().to_string(),
            zone: req.zone,
            replaces: None,
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }

    /// A database's read replicas.
    pub async fn list_replicas(&self, who: &Principal, name: &str) -> Result<Vec<ReplicaView>, ApiError> {
        let key = key_of(who, name)?;
        self.node
            .read(|s| {
                s.databases
                    .contains_key(&key)
                    .then(|| s.replicas_of(&key).map(|i| ReplicaView::of(i, s)).collect())
            })
            .await?
            .ok_or_else(|| missing(name))
    }

    /// Remove a read replica: out of the reader name at once, then destroyed.
    pub async fn remove_replica(
        &self,
        who: &Principal,
        name: &str,
        replica: &str,
        request_id: Option<String>,
    ) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        validate::dns_label("replica", replica)?;
        validate::request_id(request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "remove-replica", "name": key, "replica": replica});
        let request = self.request_key(request_id, &job_id, fingerprint);
        let command = Command::RemoveReplica {
            job_id,
            request: Some(request),
            name: key,
            replica: replica.to_string(),
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }

    /// Make a read replica a database of its own, named `to`; answers the new database.
    pub async fn promote_replica(
        &self,
        who: &Principal,
        name: &str,
        replica: &str,
        req: PromoteReplicaRequest,
    ) -> Result<DatabaseOperation, ApiError> {
        let key = key_of(who, name)?;
        validate::dns_label("replica", replica)?;
        validate::dns_label("database name", &req.to)?;
        validate::request_id(req.request_id.as_deref())?;
        let job_id = uuid::Uuid::now_v7().simple().to_string();
        let fingerprint = serde_json::json!({"kind": "promote-replica", "name": key, "replica": replica, "to": req.to});
        let request = self.request_key(req.request_id, &job_id, fingerprint);
        let command = Command::PromoteReplica {
            job_id,
            request: Some(request),
            name: key,
            replica: replica.to_string(),
            to: req.to,
        };
        let r = self.commit(who, command).await?;
        self.database_reply(r, None, None)
    }
}
