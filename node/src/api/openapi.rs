//! The OpenAPI document: generated from the handlers' `#[utoipa::path]` and the view
//! types, then given what the derive cannot state — the validators' patterns and
//! ranges (so a schema-valid request is a valid one, and the fuzzer holds both to
//! it), and the problem document every error answers with.

use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use utoipa::OpenApi;

use super::accounts::{LIMIT_MAX, TOKEN_DAYS_MAX, TOKEN_NAME_MAX};
use super::databases::{ENGINES, STORAGE_GIB};
use super::error::{ApiError, Problem};
use super::service::{NOOP_WORK_MAX_MS, OPS_PAGE_MAX};
use super::validate::{DATABASE_REF, DNS_LABEL, HOST_PORT, IPV4_CIDR, LABEL_VALUE_MAX, REQUEST_ID_MAX};
use crate::classes::CLASSES;
use crate::host::engine::RESERVED_USERS;
use crate::window::{DAILY_PATTERN, WEEKLY_PATTERN};
use keel_raft_store::RESERVED_ACCOUNTS;

/// The served document, rendered once.
#[derive(Clone)]
pub struct Document(pub Arc<String>);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keel",
        description = "Keel's public API: databases, their operations and events, data hosts and the control cluster. Every error is an RFC 9457 problem document.",
        version = "1"
    ),
    components(schemas(Problem))
)]
struct Base;

/// The document before any route is added.
pub fn base() -> utoipa::openapi::OpenApi {
    Base::openapi()
}

/// A master user pattern: the engine's rules, less the names it keeps for itself.
fn master_user_pattern() -> String {
    format!("^(?!pg_)(?!({})$)[a-z_][a-z0-9_]{{0,62}}$", RESERVED_USERS.join("|"))
}

/// `keyword`s to add to `schema.property` (nullable properties keep `null` in an enum).
fn properties() -> Vec<(&'static str, &'static str, Value)> {
    let label = json!({ "pattern": DNS_LABEL });
    let classes: Vec<&str> = CLASSES.iter().map(|c| c.name).collect();
    let storage = json!({ "minimum": STORAGE_GIB.start(), "maximum": STORAGE_GIB.end() });
    let map = json!({
        "propertyNames": { "pattern": DNS_LABEL },
        "additionalProperties": { "type": "string", "maxLength": LABEL_VALUE_MAX },
    });
    let request_id = json!({ "maxLength": REQUEST_ID_MAX });
    let limit = json!({ "minimum": 1, "maximum": LIMIT_MAX });
    let daily = json!({ "pattern": DAILY_PATTERN });
    let weekly = json!({ "pattern": WEEKLY_PATTERN });
    let groups = json!({ "maxItems": 10, "items": { "type": "string", "pattern": DNS_LABEL } });
    let cidrs =
        |min: usize| json!({ "minItems": min, "maxItems": 100, "items": { "type": "string", "pattern": IPV4_CIDR } });
    vec![
        ("CreateDatabaseRequest", "name", label.clone()),
        ("SnapshotRequest", "snapshot", label.clone()),
        ("SnapshotRequest", "request_id", request_id.clone()),
        ("RestoreRequest", "to", label.clone()),
        ("RestoreRequest", "zone", label.clone()),
        ("SwitchoverRequest", "to_zone", label.clone()),
        ("SwitchoverRequest", "request_id", request_id.clone()),
        ("AddReplicaRequest", "zone", label.clone()),
        ("AddReplicaRequest", "request_id", request_id.clone()),
        ("PromoteReplicaRequest", "to", label.clone()),
        ("PromoteReplicaRequest", "request_id", request_id.clone()),
        ("RestoreRequest", "class", json!({ "enum": classes.clone() })),
        ("RestoreRequest", "storage_gib", storage.clone()),
        ("RestoreRequest", "request_id", request_id.clone()),
        ("RestoreRequest", "snapshot", json!({ "pattern": DATABASE_REF })),
        ("RestoreRequest", "time", json!({ "format": "date-time" })),
        (
            "RestoreRequest",
            "prefer_near_within_min",
            json!({ "minimum": 0, "maximum": super::backups::PREFER_NEAR_WITHIN_MAX_MIN }),
        ),
        ("CloneRequest", "to", label.clone()),
        ("CloneRequest", "zone", label.clone()),
        ("CloneRequest", "class", json!({ "enum": classes.clone() })),
        ("CloneRequest", "storage_gib", storage.clone()),
        ("CloneRequest", "request_id", request_id.clone()),
        ("CloneRequest", "time", json!({ "format": "date-time" })),
        (
            "CloneRequest",
            "prefer_near_within_min",
            json!({ "minimum": 0, "maximum": super::backups::PREFER_NEAR_WITHIN_MAX_MIN }),
        ),
        ("CreateDatabaseRequest", "account", label.clone()),
        (
            "CreateAccountRequest",
            "name",
            json!({ "pattern": DNS_LABEL, "not": { "enum": RESERVED_ACCOUNTS } }),
        ),
        ("LimitsView", "requests_per_second", limit.clone()),
        ("LimitsView", "burst", limit.clone()),
        ("LimitsView", "heavy_workflows", limit.clone()),
        ("CreateTokenRequest", "account", label.clone()),
        (
            "CreateTokenRequest",
            "name",
            json!({ "pattern": format!("^[^\\u0000-\\u001f\\u007f-\\u009f]{{1,{TOKEN_NAME_MAX}}}$") }),
        ),
        (
            "CreateTokenRequest",
            "expires_in_days",
            json!({ "minimum": 1, "maximum": TOKEN_DAYS_MAX }),
        ),
        (
            "CreateDatabaseRequest",
            "engine",
            json!({ "enum": ENGINES.iter().map(|e| e.0).collect::<Vec<_>>() }),
        ),
        (
            "CreateDatabaseRequest",
            "engine_version",
            json!({ "enum": ENGINES.iter().map(|e| e.1).collect::<Vec<_>>() }),
        ),
        ("CreateDatabaseRequest", "class", json!({ "enum": classes })),
        ("CreateDatabaseRequest", "storage_gib", storage.clone()),
        ("CreateDatabaseRequest", "zone", label.clone()),
        (
            "CreateDatabaseRequest",
            "master_user",
            json!({ "pattern": master_user_pattern() }),
        ),
        // Any characters but control characters (Unicode Cc), 8 to 128 of them.
        (
            "CreateDatabaseRequest",
            "master_password",
            json!({ "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]{8,128}$" }),
        ),
        (
            "ModifyDatabaseRequest",
            "master_password",
            json!({ "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]{8,128}$" }),
        ),
        (
            "CreateDatabaseRequest",
            "backup_retention_days",
            json!({ "minimum": 0, "maximum": 35 }),
        ),
        (
            "CreateDatabaseRequest",
            "snapshot_interval_min",
            json!({ "minimum": super::databases::SNAPSHOT_INTERVAL_MIN, "maximum": 1440 }),
        ),
        ("CreateDatabaseRequest", "backup_window", daily.clone()),
        ("CreateDatabaseRequest", "maintenance_window", weekly.clone()),
        ("CreateDatabaseRequest", "tags", map.clone()),
        ("CreateDatabaseRequest", "request_id", request_id.clone()),
        ("ModifyDatabaseRequest", "class", json!({ "enum": classes })),
        ("ModifyDatabaseRequest", "storage_gib", storage),
        ("ModifyDatabaseRequest", "backup_window", daily),
        ("ModifyDatabaseRequest", "maintenance_window", weekly),
        ("ModifyDatabaseRequest", "request_id", request_id.clone()),
        ("AddHostRequest", "name", label.clone()),
        ("AddHostRequest", "addr", json!({ "pattern": HOST_PORT })),
        ("AddHostRequest", "zone", label),
        ("AddHostRequest", "labels", map),
        ("AddHostRequest", "client_token", request_id.clone()),
        ("SubmitNoopRequest", "work_ms", json!({ "maximum": NOOP_WORK_MAX_MS })),
        ("SubmitNoopRequest", "request_id", request_id),
        ("AddNodeRequest", "id", json!({ "minimum": 1 })),
        ("CreateDatabaseRequest", "security_groups", groups.clone()),
        ("ModifyDatabaseRequest", "security_groups", groups),
        ("CreateSecurityGroupRequest", "name", json!({ "pattern": DNS_LABEL })),
        ("CreateSecurityGroupRequest", "account", json!({ "pattern": DNS_LABEL })),
        ("CreateSecurityGroupRequest", "cidrs", cidrs(0)),
        ("SecurityGroupRulesRequest", "cidrs", cidrs(1)),
        ("AddNodeRequest", "raft_addr", json!({ "pattern": HOST_PORT })),
        ("AddNodeRequest", "api_addr", json!({ "pattern": HOST_PORT })),
    ]
}

/// `keyword`s to add to every parameter named so, wherever it appears.
fn parameters() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("/v1/hosts/", "name", json!({ "pattern": DNS_LABEL })),
        ("/v1/accounts/", "name", json!({ "pattern": DNS_LABEL })),
        ("/v1/databases/", "name", json!({ "pattern": DATABASE_REF })),
        ("/v1/security-groups/", "name", json!({ "pattern": DATABASE_REF })),
        ("/v1/events", "db", json!({ "pattern": DATABASE_REF })),
        ("/v1/snapshots", "db", json!({ "pattern": DATABASE_REF })),
        ("/v1/snapshots/", "name", json!({ "pattern": DATABASE_REF })),
        ("/v1/snapshots/", "request_id", json!({ "maxLength": REQUEST_ID_MAX })),
        ("/v1/databases/", "final_snapshot", json!({ "pattern": DNS_LABEL })),
        ("/v1/databases/", "replica", json!({ "pattern": DNS_LABEL })),
        ("/v1/ops", "db", json!({ "pattern": DATABASE_REF })),
        ("/v1/databases/", "request_id", json!({ "maxLength": REQUEST_ID_MAX })),
        ("/v1/ops", "limit", json!({ "minimum": 1, "maximum": OPS_PAGE_MAX })),
        ("/v1/audit", "limit", json!({ "minimum": 1, "maximum": OPS_PAGE_MAX })),
        ("/v1/audit", "account", json!({ "pattern": DNS_LABEL })),
        ("/v1/tokens", "account", json!({ "pattern": DNS_LABEL })),
        (
            "/v1/events",
            "limit",
            json!({ "minimum": 1, "maximum": super::databases::EVENTS_PAGE_MAX }),
        ),
    ]
}

fn merge(schema: &mut Value, extra: &Value) {
    let nullable = schema["type"].as_array().is_some_and(|t| t.iter().any(|t| t == "null"));
    for (k, v) in extra.as_object().expect("constraints are objects") {
        let mut v = v.clone();
        if k == "enum" && nullable {
            v.as_array_mut().expect("an enum is a list").push(Value::Null);
        }
        schema[k] = v;
    }
}

/// The finished document: constraints and error responses added, rendered once.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Document {
    let mut doc = serde_json::to_value(doc).expect("the document serialises");
    for (schema, property, extra) in properties() {
        let target = &mut doc["components"]["schemas"][schema]["properties"][property];
        assert!(target.is_object(), "{schema}.{property} is in the document");
        merge(target, &extra);
    }
    // A modify must change something: one of these given, and not null.
    let mut changes: Vec<Value> = [
        "class",
        "storage_gib",
        "backup_window",
        "maintenance_window",
        "master_password",
        "security_groups",
        "recovery",
        "multi_az",
    ]
    .iter()
    .map(|f| json!({ "required": [f], "properties": { *f: { "not": { "type": "null" } } } }))
    .collect();
    changes.push(json!({ "required": ["rotate_master_password"], "properties": { "rotate_master_password": { "const": true } } }));
    doc["components"]["schemas"]["ModifyDatabaseRequest"]["anyOf"] = json!(changes);
    // A Multi-AZ database and backup RPO zero both need backups: not a retention of 0.
    let needs_backups = |property: &str, value: Value| {
        json!({
            "if": { "required": [property], "properties": { property: { "const": value } } },
            "then": { "properties": { "backup_retention_days": { "not": { "const": 0 } } } }
        })
    };
    doc["components"]["schemas"]["CreateDatabaseRequest"]["allOf"] = json!([
        needs_backups("multi_az", json!(true)),
        needs_backups("backup_rpo", json!("zero"))
    ]);
    // A restore goes to exactly one of: a time, the latest restorable time, a snapshot.
    doc["components"]["schemas"]["RestoreRequest"]["oneOf"] = json!([
        { "required": ["time"], "properties": { "time": { "type": "string" } } },
        { "required": ["latest"], "properties": { "latest": { "const": true } } },
        { "required": ["snapshot"], "properties": { "snapshot": { "type": "string" } } },
    ]);
    // A password is given or generated, not both.
    doc["components"]["schemas"]["ModifyDatabaseRequest"]["not"] = json!({
        "required": ["master_password", "rotate_master_password"],
        "properties": { "master_password": { "type": "string" }, "rotate_master_password": { "const": true } }
    });
    let problem = json!({
        "description": "What was wrong and what to do (RFC 9457 problem document)",
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    });
    // Every call but the health check needs a token (the authentication layer, auth.rs).
    doc["components"]["securitySchemes"] = json!({
        "bearer": { "type": "http", "scheme": "bearer", "description": "An API token, keel_<id>_<secret> (`keel tokens create`)" }
    });
    doc["security"] = json!([{ "bearer": [] }]);
    let parameters = parameters();
    let paths = doc["paths"].as_object_mut().expect("the document has paths");
    for (path, item) in paths.iter_mut() {
        for (_, op) in item.as_object_mut().expect("a path item is an object").iter_mut() {
            let params = op.get_mut("parameters").and_then(Value::as_array_mut);
            for p in params.into_iter().flatten() {
                for (prefix, name, extra) in &parameters {
                    if path.starts_with(prefix) && p["name"] == *name {
                        merge(&mut p["schema"], extra);
                    }
                }
            }
            op["responses"]["default"] = problem.clone();
        }
    }
    Document(Arc::new(doc.to_string()))
}

/// Every error this router answers — the handlers', and axum's own (405, 415, a bad
/// path or query) — is a problem document.
pub async fn problem_for_every_error(resp: Response) -> Response {
    let status = resp.status();
    let is_problem = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    let error = match status.as_u16() {
        404 => ApiError::NotFound(detail),
        405 => ApiError::MethodNotAllowed(format!("{detail}: see /v1/openapi.json for the methods of each path")),
        415 => ApiError::UnsupportedMediaType(format!("{detail}: send the body as application/json")),
        s if s >= 500 => ApiError::Internal(detail),
        _ => ApiError::InvalidArgument(detail),
    };
    let mut out = error.into_response();
    // Keep what the original response said about itself (e.g. `Allow` on a 405).
    for (name, value) in parts.headers.iter() {
        if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    out
}
