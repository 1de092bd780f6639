//! Accounts and API tokens in the service layer (admin calls), and `whoami`.

use keel_raft_store::{Command, Response, Role, Token};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{self, Principal};
use super::error::ApiError;
use super::service::Api;
use super::validate;
use crate::clock::now_ms;

/// What a token's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RoleView {
    /// Its own account's databases, operations and events.
    Member,
    /// The cluster, hosts, accounts and tokens, and every account's resources.
    Admin,
}

impl From<Role> for RoleView {
    fn from(r: Role) -> Self {
        match r {
            Role::Member => RoleView::Member,
            Role::Admin => RoleView::Admin,
        }
    }
}

impl From<RoleView> for Role {
    fn from(r: RoleView) -> Self {
        match r {
            RoleView::Member => Role::Member,
            RoleView::Admin => Role::Admin,
        }
    }
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    /// Name.
    pub name: String,
    /// When it was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// Its own throttling limits (absent: the cluster's defaults).
    pub limits: LimitsView,
}

/// An account's throttling limits; absent ones are the cluster's defaults.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsView {
    /// API calls per second, per control node.
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub requests_per_second: Option<u32>,
    /// API calls allowed in a burst above that rate.
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub burst: Option<u32>,
    /// Heavy workflows (creates) running at once; more wait their turn.
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub heavy_workflows: Option<u32>,
}

impl From<keel_raft_store::Limits> for LimitsView {
    fn from(l: keel_raft_store::Limits) -> Self {
        Self {
            requests_per_second: l.requests_per_second,
            burst: l.burst,
            heavy_workflows: l.heavy_workflows,
        }
    }
}

/// The most any limit may be set to.
pub const LIMIT_MAX: u32 = 1_000_000;

impl From<&keel_raft_store::Account> for AccountView {
    fn from(a: &keel_raft_store::Account) -> Self {
        Self {
            name: a.name.clone(),
            created_at_ms: a.created_at_ms,
            limits: a.limits.into(),
        }
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    /// Public id (the part after `keel_`).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// The account it acts for.
    pub account: String,
    /// What it may do.
    pub role: RoleView,
    /// When it was created.
    pub created_at_ms: u64,
    /// When it stops working, if ever.
    pub expires_at_ms: Option<u64>,
    /// When it was last used (recorded about once a minute).
    pub last_used_ms: Option<u64>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            account: t.account.clone(),
            role: t.role.into(),
            created_at_ms: t.created_at_ms,
            expires_at_ms: t.expires_at_ms,
            last_used_ms: t.last_used_ms,
        }
    }
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    /// The token to send as `Authorization: Bearer …`; keep it, it is not shown again.
    pub token: String,
    /// The token as it will be listed.
    pub details: TokenView,
}

/// Who the caller is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// The token's id.
    pub token_id: String,
    /// The account it acts for.
    pub account: String,
    /// What it may do.
    pub role: RoleView,
}

/// `accounts create` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccountRequest {
    /// Account name (a DNS label).
    pub name: String,
}

/// `tokens create` input.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// What it is for, for people.
    pub name: String,
    /// The account it acts for.
    pub account: String,
    /// What it may do (default: member).
    #[serde(default)]
    pub role: Option<RoleView>,
    /// Days until it stops working (default: never).
    #[serde(default, deserialize_with = "super::whole::optional")]
    pub expires_in_days: Option<u32>,
}

/// The longest a token name may be.
pub const TOKEN_NAME_MAX: usize = 128;
/// The longest lifetime a token may be given, in days (ten years).
pub const TOKEN_DAYS_MAX: u32 = 3_650;

impl Api {
    /// Create an account (a repeat answers the existing one).
    pub async fn create_account(&self, who: &Principal, req: CreateAccountRequest) -> Result<AccountView, ApiError> {
        validate::dns_label("account name", &req.name)?;
        if keel_raft_store::RESERVED_ACCOUNTS.contains(&req.name.as_str()) {
            return Err(ApiError::InvalidArgument(format!(
                "account name {:?} is reserved (the DNS zone uses it); choose another",
                req.name
            )));
        }
        match self.commit(who, Command::CreateAccount { name: req.name }).await? {
            Response::Account { account, .. } => Ok(AccountView::from(&account)),
            other => Err(super::service::unexpected(other)),
        }
    }

    /// Set an account's throttling limits (absent ones fall back to the defaults).
    pub async fn set_account_limits(
        &self,
        who: &Principal,
        name: &str,
        limits: LimitsView,
    ) -> Result<AccountView, ApiError> {
        validate::dns_label("account name", name)?;
        for (what, v) in [
            ("requests_per_second", limits.requests_per_second),
            ("burst", limits.burst),
            ("heavy_workflows", limits.heavy_workflows),
        ] {
            if v.is_some_and(|v| v == 0 || v > LIMIT_MAX) {
                return Err(ApiError::InvalidArgument(format!(
                    "{what} must be 1 to {LIMIT_MAX}, or absent for the cluster's default"
                )));
            }
        }
        let limits = keel_raft_store::Limits {
            requests_per_second: limits.requests_per_second,
            burst: limits.burst,
            heavy_workflows: limits.heavy_workflows,
        };
        match self
            .commit(
                who,
                Command::SetAccountLimits {
                    name: name.to_string(),
                    limits,
                },
            )
            .await?
        {
            Response::Account { account, .. } => Ok(AccountView::from(&account)),
            other => Err(super::service::unexpected(other)),
        }
    }

    /// Every account.
    pub async fn list_accounts(&self) -> Result<Vec<AccountView>, ApiError> {
        self.node
            .read(|s| s.accounts.values().map(AccountView::from).collect())
            .await
    }

    /// Make a token; its secret is in the answer and nowhere else.
    pub async fn create_token(&self, who: &Principal, req: CreateTokenRequest) -> Result<CreatedToken, ApiError> {
        validate::dns_label("account", &req.account)?;
        let chars = req.name.chars().count();
        if chars == 0 || chars > TOKEN_NAME_MAX || req.name.chars().any(char::is_control) {
            return Err(ApiError::InvalidArgument(format!(
                "token name must be 1 to {TOKEN_NAME_MAX} characters, none of them control characters: say what the token is for"
            )));
        }
        let expires_at_ms = match req.expires_in_days {
            Some(d) if d == 0 || d > TOKEN_DAYS_MAX => {
                return Err(ApiError::InvalidArgument(format!(
                    "expires_in_days {d} is out of range: use 1 to {TOKEN_DAYS_MAX}, or omit it for a token that does not expire"
                )))
            }
            Some(d) => Some(now_ms() + u64::from(d) * 86_400_000),
            None => None,
        };
        let made = auth::new_token();
        let token = Token {
            id: made.id,
            name: req.name,
            account: req.account,
            role: req.role.map_or(Role::Member, Role::from),
            secret_sha256: made.secret_sha256,
            expires_at_ms,
            ..Token::default()
        };
        match self.commit(who, Command::CreateToken { token }).await? {
            Response::Token { token } => Ok(CreatedToken {
                token: made.token,
                details: TokenView::from(&token),
            }),
            other => Err(super::service::unexpected(other)),
        }
    }

    /// Tokens, of one account when given.
    pub async fn list_tokens(&self, account: Option<String>) -> Result<Vec<TokenView>, ApiError> {
        if let Some(a) = &account {
            validate::dns_label("account", a)?;
        }
        self.node
            .read(move |s| {
                s.tokens
                    .values()
                    .filter(|t| account.as_ref().is_none_or(|a| &t.account == a))
                    .map(TokenView::from)
                    .collect()
            })
            .await
    }

    /// Revoke a token: it stops working on each node as soon as the node applies this.
    pub async fn revoke_token(&self, who: &Principal, id: &str) -> Result<TokenView, ApiError> {
        match self.commit(who, Command::RevokeToken { id: id.to_string() }).await? {
            Response::Token { token } => Ok(TokenView::from(&token)),
            other => Err(super::service::unexpected(other)),
        }
    }

    /// Who the caller is.
    pub fn whoami(&self, who: &Principal) -> WhoAmI {
        WhoAmI {
            token_id: who.token_id.clone(),
            account: who.account.clone(),
            role: who.role.into(),
        }
    }
}

/// One audited call.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    /// Position in the audit log.
    pub seq: u64,
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// The token used.
    pub token_id: String,
    /// The token's account.
    pub account: String,
    /// The token's role.
    pub role: RoleView,
    /// The client's address.
    pub source: Option<String>,
    /// What, e.g. `create-database`.
    pub action: String,
    /// On what.
    pub target: String,
    /// Whose resource it was.
    pub target_account: String,
    /// The client's request id, if any.
    pub request_id: Option<String>,
    /// `ok`, or the refusal.
    pub outcome: String,
}

impl From<&keel_raft_store::AuditRecord> for AuditView {
    fn from(r: &keel_raft_store::AuditRecord) -> Self {
        Self {
            seq: r.seq,
            at_ms: r.at_ms,
            token_id: r.actor.token_id.clone(),
            account: r.actor.account.clone(),
            role: r.actor.role.into(),
            source: r.actor.source.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            target_account: r.target_account.clone(),
            request_id: r.request_id.clone(),
            outcome: r.outcome.clone(),
        }
    }
}

/// Which page of the audit log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(default)]
#[into_params(parameter_in = Query)]
pub struct AuditPage {
    /// Only calls by or about this account.
    pub account: Option<String>,
    /// Only calls at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Start after this sequence number (the last of the previous page).
    pub after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<usize>,
}

impl Api {
    /// A page of the audit log, oldest first (admins only).
    pub async fn audit(&self, page: AuditPage) -> Result<Vec<AuditView>, ApiError> {
        let limit = page.limit.unwrap_or(super::service::OPS_PAGE);
        if !(1..=super::service::OPS_PAGE_MAX).contains(&limit) {
            return Err(ApiError::InvalidArgument(format!(
                "limit {limit} is out of range: ask for 1 to {} records a page",
                super::service::OPS_PAGE_MAX
            )));
        }
        if let Some(a) = &page.account {
            validate::dns_label("account", a)?;
        }
        let after = page.after.unwrap_or(0);
        if after > i64::MAX as u64 || page.since_ms.unwrap_or(0) > i64::MAX as u64 {
            return Err(ApiError::InvalidArgument(
                "after and since_ms must be at most 2^63-1: use a sequence number or time from an earlier page".into(),
            ));
        }
        self.node
            .read(move |s| {
                s.audit_page(page.account.as_deref(), page.since_ms.unwrap_or(0), after, limit)
                    .iter()
                    .map(AuditView::from)
                    .collect()
            })
            .await
    }
}
