//! `keel.v1` accounts, tokens, `WhoAmI` and the audit log: conversions from the same
//! views HTTP answers with, so both protocols give the same content.

use keel_proto::keel as pb;
use keel_raft_store::wire_name;

use super::accounts::{AccountView, AuditView, CreatedToken, LimitsView, RoleView, TokenView, WhoAmI};
use super::error::ApiError;

/// Limits for the wire.
pub fn limits(l: LimitsView) -> pb::Limits {
    pb::Limits {
        requests_per_second: l.requests_per_second,
        burst: l.burst,
        heavy_workflows: l.heavy_workflows,
    }
}

/// Limits from the wire.
pub fn limits_from(l: Option<pb::Limits>) -> LimitsView {
    let l = l.unwrap_or_default();
    LimitsView {
        requests_per_second: l.requests_per_second,
        burst: l.burst,
        heavy_workflows: l.heavy_workflows,
    }
}

/// An account for the wire.
pub fn account(a: AccountView) -> pb::Account {
    pb::Account {
        name: a.name,
        created_at_ms: a.created_at_ms,
        limits: Some(limits(a.limits)),
    }
}

/// A token for the wire (never its secret).
pub fn token(t: TokenView) -> pb::Token {
    pb::Token {
        id: t.id,
        name: t.name,
        account: t.account,
        role: wire_name(&t.role),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms.unwrap_or(0),
        last_used_ms: t.last_used_ms.unwrap_or(0),
    }
}

/// A new token for the wire: the only answer that carries it.
pub fn created(c: CreatedToken) -> pb::CreatedToken {
    pb::CreatedToken {
        token: c.token,
        details: Some(token(c.details)),
    }
}

/// A role named on the wire (empty: member).
pub fn role(name: &str) -> Result<Option<RoleView>, ApiError> {
    match name {
        "" => Ok(None),
        "member" => Ok(Some(RoleView::Member)),
        "admin" => Ok(Some(RoleView::Admin)),
        other => Err(ApiError::InvalidArgument(format!(
            "role {other:?} is not a role: use member or admin"
        ))),
    }
}

/// `WhoAmI` for the wire.
pub fn whoami(w: WhoAmI) -> pb::WhoAmIResponse {
    pb::WhoAmIResponse {
        token_id: w.token_id,
        account: w.account,
        role: wire_name(&w.role),
    }
}

/// An audit record for the wire.
pub fn audit(r: AuditView) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: r.seq,
        at_ms: r.at_ms,
        token_id: r.token_id,
        account: r.account,
        role: wire_name(&r.role),
        source: r.source.unwrap_or_default(),
        action: r.action,
        target: r.target,
        target_account: r.target_account,
        request_id: r.request_id.unwrap_or_default(),
        outcome: r.outcome,
    }
}
