//! Authentication and role checks: one layer in front of every HTTP route and
//! gRPC method, before any handler runs.
//!
//! A token is `keel_<id>_<secret>`: the id finds the token in the replicated
//! state, the secret's SHA-256 must match the stored hash. Tokens are checked
//! against this node's applied state, so a revocation takes effect on a node as
//! soon as that node applies it (milliseconds behind the leader at most).
//! The role check here is coarse (admin-only calls); which account's resources
//! a member may see is decided in the service layer, which answers 404 for
//! another account's names. Authentication is one step producing a
//! [`Principal`], so another scheme (e.g. SigV4 for an RDS-compatible facade)
//! can be added beside bearer tokens.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use keel_raft_store::{AdminState, Command, Millis, Proposal, Role};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::service::Api;
use crate::clock::now_ms;

/// Who is calling: the token's account and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id.
    pub token_id: String,
    /// The account it acts for.
    pub account: String,
    /// What it may do.
    pub role: Role,
    /// The client's address, as this node saw it.
    pub source: Option<String>,
}

impl Principal {
    /// This principal as the audit log records it.
    pub fn actor(&self) -> keel_raft_store::Actor {
        keel_raft_store::Actor {
            token_id: self.token_id.clone(),
            account: self.account.clone(),
            role: self.role,
            source: self.source.clone(),
        }
    }

    /// Whether this principal may see and change resources of `account`.
    pub fn sees(&self, account: &str) -> bool {
        self.role == Role::Admin || self.account == account
    }

    /// The account a listing is limited to (`None`: an admin sees every account's).
    pub fn scope(&self) -> Option<String> {
        (self.role != Role::Admin).then(|| self.account.clone())
    }
}

/// The only path answered without credentials.
pub const HEALTH_PATH: &str = "/v1/health";

const PREFIX: &str = "keel_";

/// A newly made token: the string shown once, and what the store keeps.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// The whole token, `keel_<id>_<secret>`.
    pub token: String,
    /// Its public id.
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
}

/// Hex SHA-256 of a token's secret.
pub fn secret_hash(secret: &str) -> String {
    crate::hex::encode(&Sha256::digest(secret.as_bytes()))
}

/// Make a token from the operating system's randomness (8 bytes of id, 32 of secret).
pub fn new_token() -> NewToken {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut id);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let (id, secret) = (crate::hex::encode(&id), crate::hex::encode(&secret));
    NewToken {
        token: format!("{PREFIX}{id}_{secret}"),
        secret_sha256: secret_hash(&secret),
        id,
    }
}

/// The id and secret of a token string, if it has the shape of one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 16) && hex_of(secret, 64)).then_some((id, secret))
}

/// The [`NewToken`] a token string stands for (a bootstrap token read from a file).
pub fn from_string(token: &str) -> Option<NewToken> {
    let (id, secret) = parse(token.trim())?;
    Some(NewToken {
        token: token.trim().to_string(),
        id: id.to_string(),
        secret_sha256: secret_hash(secret),
    })
}

/// Equal without an early exit, so the time taken says nothing about where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The principal a bearer `token` stands for at `now`, or why it does not stand for one.
pub fn authenticate(state: &AdminState, token: &str, now: Millis) -> Result<Principal, ApiError> {
    let bad = || {
        ApiError::Unauthenticated("the token is not valid (revoked, expired or mistyped); ask an administrator for a new one with `keel tokens create`".into())
    };
    let (id, secret) = parse(token).ok_or_else(bad)?;
    let stored = state.tokens.get(id).ok_or_else(bad)?;
    if !same(&stored.secret_sha256, &secret_hash(secret)) {
        return Err(bad());
    }
    if stored.expired(now) {
        return Err(bad());
    }
    Ok(Principal {
        token_id: stored.id.clone(),
        account: stored.account.clone(),
        role: stored.role,
        source: None,
    })
}

/// The least role a call needs. Only the calls listed here are open to members; every
/// other path and method (including any added later) needs an admin: the list fails closed.
pub fn required_role(method: &axum::http::Method, path: &str) -> Role {
    use axum::http::Method;
    let member = match path.strip_prefix("/keel.v1.Keel/") {
        Some(grpc) => matches!(
            grpc,
            "CreateDatabase"
                | "ModifyDatabase"
                | "DeleteDatabase"
                | "DescribeDatabase"
                | "ListDatabases"
                | "ListEvents"
                | "ListOperations"
                | "DescribeOperation"
                | "WhoAmI"
                | "CreateSecurityGroup"
                | "ListSecurityGroups"
                | "AuthorizeSecurityGroup"
                | "RevokeSecurityGroup"
                | "DeleteSecurityGroup"
                | "SnapshotDatabase"
                | "RestoreDatabase"
                | "CloneDatabase"
                | "RecoverDatabase"
                | "ListSnapshots"
                | "DescribeSnapshot"
                | "DeleteSnapshot"
                | "Switchover"
                | "CancelSwitchover"
                | "ListFailovers"
                | "StandbyPlan"
                | "AddReplica"
                | "ListReplicas"
                | "RemoveReplica"
                | "PromoteReplica"
        ),
        None => {
            let read = method == Method::GET;
            path == "/v1/databases"
                || path.starts_with("/v1/databases/")
                || path == "/v1/snapshots"
                || path.starts_with("/v1/snapshots/")
                || path == "/v1/security-groups"
                || path.starts_with("/v1/security-groups/")
                || (read && (path == "/v1/ops" || path == "/v1/events" || path == "/v1/whoami"))
                || (read && path.starts_with("/v1/ops/") && path != "/v1/ops/noop")
                || (read && path == "/v1/openapi.json")
        }
    };
    if member {
        Role::Member
    } else {
        Role::Admin
    }
}

fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The bearer token of a request: HTTP `Authorization: Bearer …`, which is also where
/// gRPC clients put it (metadata `authorization`).
fn bearer(req: &Request) -> Result<&str, ApiError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthenticated(
                "this call needs credentials: send `Authorization: Bearer <token>` (the CLI reads KEEL_TOKEN or its profile)".into(),
            )
        })?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::Unauthenticated("the Authorization header must be `Bearer <token>`".into()))
}

/// Check a request's credentials and role; hand the handler its [`Principal`].
pub async fn layer(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    if req.uri().path() == HEALTH_PATH {
        return next.run(req).await;
    }
    let grpc = is_grpc(&req);
    if api.node.config.insecure_no_auth {
        // Benchmarks' baseline only (refused off loopback): every call is the admin's.
        req.extensions_mut().insert(Principal {
            token_id: "no-auth".into(),
            account: keel_raft_store::ADMIN_ACCOUNT.into(),
            role: Role::Admin,
            source: None,
        });
        return next.run(req).await;
    }
    // What the check needs from the request, owned: the request is not held across the
    // lookup's await.
    let token = bearer(&req).map(str::to_string);
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string());
    let checked = async {
        let token = token?;
        let now = now_ms();
        let check = |a: &AdminState| {
            let principal = authenticate(a, &token, now)?;
            let limits = a.accounts.get(&principal.account).map(|acc| acc.limits);
            Ok::<_, ApiError>((principal, limits.unwrap_or_default()))
        };
        // One read of the applied state per call: the token, and its account's limits.
        let mut found = api.node.state.read(|a| check(&a.state));
        // A token of the right shape that this node has not applied yet (made a moment ago
        // through another node) is looked up again after a linearizable read, so a new
        // token works at once on every node. Only a refusal pays for the second look.
        if found.is_err()
            && parse(&token).is_some_and(|(id, _)| !api.node.state.read(|a| a.state.tokens.contains_key(id)))
        {
            found = api.node.read(check).await?;
        }
        let (principal, limits) = found?;
        if required_role(&method, &path) > principal.role {
            return Err(ApiError::PermissionDenied(format!(
                "{method} {path} needs an admin token; this token is a member of account {}",
                principal.account
            )));
        }
        api.usage.note(&principal.token_id, now);
        throttle(&api, &principal, limits)?;
        Ok(Principal { source, ..principal })
    };
    match checked.await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) if grpc => tonic::Status::from(e).into_http().map(axum::body::Body::new),
        Err(e) => e.into_response(),
    }
}

/// Take one call from a member's account bucket (admins are not throttled: they are
/// the operators, not a tenant).
fn throttle(api: &Api, who: &Principal, limits: keel_raft_store::Limits) -> Result<(), ApiError> {
    if who.role == Role::Admin {
        return Ok(());
    }
    let config = &api.node.config;
    let per_second = limits.requests_per_second.unwrap_or(config.api_requests_per_second);
    let burst = limits.burst.unwrap_or(config.api_burst);
    api.throttle.check(&who.account, per_second, burst).map_err(|wait| {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        ApiError::TooManyRequests(
            format!(
                "account {} is over its limit of {per_second} calls a second (bursts of {burst}) on this node; retry in {seconds} s, or ask an administrator to raise it (`keel accounts set-limits`)",
                who.account
            ),
            seconds,
        )
    })
}

/// When each token was last used on this node, until the next flush.
#[derive(Clone, Default)]
pub struct Usage(Arc<Mutex<BTreeMap<String, Millis>>>);

impl Usage {
    fn note(&self, token_id: &str, at: Millis) {
        let mut used = self.0.lock().unwrap_or_else(|p| p.into_inner());
        used.insert(token_id.to_string(), at);
    }

    fn take(&self) -> BTreeMap<String, Millis> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Record tokens' last use every `--token-use-flush-ms` (one small write, not one per
/// call) until `stop`.
pub async fn flush_usage(api: Api, stop: tokio_util::sync::CancellationToken) {
    let every = Duration::from_millis(api.node.config.token_use_flush_ms);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let used = api.usage.take();
        if used.is_empty() {
            continue;
        }
        let proposal = Proposal::new(now_ms(), Command::TouchTokens { used });
        // Last use is advisory: a write lost to a leader change is not worth a retry.
        if let Err(e) = api.node.write(proposal).await {
            tracing::debug!(error = %e, "Could not record tokens' last use.");
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use keel_raft_store::{Token, ADMIN_ACCOUNT};

    use super::*;

    fn state_with(token: &NewToken, role: Role, expires_at_ms: Option<Millis>) -> AdminState {
        let mut s = AdminState::default();
        s.tokens.insert(
            token.id.clone(),
            Token {
                id: token.id.clone(),
                account: ADMIN_ACCOUNT.into(),
                role,
                secret_sha256: token.secret_sha256.clone(),
                expires_at_ms,
                ..Token::default()
            },
        );
        s
    }

    #[test]
    fn a_token_authenticates_only_whole_unexpired_and_known() {
        let t = new_token();
        assert_eq!(parse(&t.token), Some((t.id.as_str(), &t.token[5 + 16 + 1..])));
        let s = state_with(&t, Role::Admin, Some(1_000));
        let p = authenticate(&s, &t.token, 999).expect("valid");
        assert_eq!((p.account.as_str(), p.role), (ADMIN_ACCOUNT, Role::Admin));
        assert!(authenticate(&s, &t.token, 1_000).is_err(), "expired");
        let mut wrong = t.token.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(authenticate(&s, &wrong, 0).is_err(), "wrong secret");
        assert!(authenticate(&s, &new_token().token, 0).is_err(), "unknown id");
        assert!(authenticate(&s, "keel_short_secret", 0).is_err(), "malformed");
        assert_eq!(
            from_string(&format!("{}\n", t.token)).map(|n| n.secret_sha256),
            Some(t.secret_sha256)
        );
    }

    #[test]
    fn members_reach_only_their_databases_operations_and_events_and_new_paths_need_an_admin() {
        let member = [
            (Method::GET, "/v1/databases"),
            (Method::POST, "/v1/databases"),
            (Method::PATCH, "/v1/databases/orders"),
            (Method::DELETE, "/v1/databases/orders"),
            (Method::GET, "/v1/ops"),
            (Method::GET, "/v1/ops/0191"),
            (Method::GET, "/v1/events"),
            (Method::GET, "/v1/whoami"),
            (Method::POST, "/keel.v1.Keel/CreateDatabase"),
            (Method::POST, "/keel.v1.Keel/ListOperations"),
        ];
        for (m, p) in member {
            assert_eq!(required_role(&m, p), Role::Member, "{m} {p}");
        }
        let admin = [
            (Method::POST, "/v1/ops/noop"),
            (Method::GET, "/v1/hosts"),
            (Method::POST, "/v1/cluster/nodes"),
            (Method::GET, "/v1/cluster/status"),
            (Method::GET, "/v1/dns/zone"),
            (Method::GET, "/v1/node"),
            (Method::POST, "/v1/accounts"),
            (Method::POST, "/v1/tokens"),
            (Method::POST, "/v1/events"),
            (Method::GET, "/v1/some-future-path"),
            (Method::POST, "/keel.v1.Keel/AddHost"),
            (Method::POST, "/keel.v1.Keel/SubmitNoop"),
            (Method::POST, "/keel.v1.Keel/SomeFutureMethod"),
        ];
        for (m, p) in admin {
            assert_eq!(required_role(&m, p), Role::Admin, "{m} {p}");
        }
    }
}
