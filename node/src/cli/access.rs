//! `keel accounts`, `keel tokens` and `keel whoami`.

use clap::Subcommand;

use super::client::{typed, Client};
use super::output::{table, time, Format};
use super::print;
use crate::api::accounts::{
    AccountView, CreateAccountRequest, CreateTokenRequest, CreatedToken, LimitsView, RoleView, TokenView, WhoAmI,
};
use crate::api::auth;

/// Accounts (tenants).
#[derive(Debug, Subcommand)]
pub enum AccountsCmd {
    /// Create an account (admins only).
    Create {
        /// Account name (a DNS label).
        name: String,
    },
    /// List accounts (admins only).
    List,
    /// Set an account's throttling limits (admins only); the ones not given return to
    /// the cluster's defaults.
    SetLimits {
        /// Account name.
        name: String,
        /// API calls per second, per control node.
        #[arg(long)]
        requests_per_second: Option<u32>,
        /// API calls in a burst above that rate.
        #[arg(long)]
        burst: Option<u32>,
        /// Heavy workflows (creates) running at once.
        #[arg(long)]
        heavy_workflows: Option<u32>,
    },
}

/// API tokens.
#[derive(Debug, Subcommand)]
pub enum TokensCmd {
    /// Make a token for an account (admins only); it is shown once.
    Create {
        /// The account it acts for.
        #[arg(long)]
        account: String,
        /// What it is for.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, value_enum, default_value_t = CliRole::Member)]
        role: CliRole,
        /// Days until it stops working (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List tokens, never their secrets (admins only).
    List {
        /// Only this account's tokens.
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Token id.
        id: String,
    },
    /// Print a fresh token for `keel server --bootstrap-token-file` (talks to no server).
    Generate,
}

/// A token's role on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CliRole {
    /// Its own account's databases, operations and events.
    Member,
    /// The cluster, hosts, accounts, tokens and every account's resources.
    Admin,
}

/// Run an `accounts` command.
pub async fn accounts(client: &Client, out: Format, cmd: AccountsCmd) -> anyhow::Result<()> {
    match cmd {
        AccountsCmd::Create { name } => {
            let v = client.post("/v1/accounts", &CreateAccountRequest { name }).await?;
            let a: AccountView = typed(v.clone())?;
            print(out, &v, || Ok(format!("Account {} exists.", a.name)))
        }
        AccountsCmd::List => {
            let v = client.get("/v1/accounts").await?;
            let all: Vec<AccountView> = typed(v.clone())?;
            let or_default = |v: Option<u32>| v.map_or_else(|| "default".to_string(), |v| v.to_string());
            print(out, &v, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|a| {
                        vec![
                            a.name.clone(),
                            time(Some(a.created_at_ms)),
                            or_default(a.limits.requests_per_second),
                            or_default(a.limits.burst),
                            or_default(a.limits.heavy_workflows),
                        ]
                    })
                    .collect();
                Ok(table(&["NAME", "CREATED", "CALLS/S", "BURST", "HEAVY"], &rows))
            })
        }
        AccountsCmd::SetLimits {
            name,
            requests_per_second,
            burst,
            heavy_workflows,
        } => {
            let limits = LimitsView {
                requests_per_second,
                burst,
                heavy_workflows,
            };
            let v = client.patch(&format!("/v1/accounts/{name}"), &limits).await?;
            let a: AccountView = typed(v.clone())?;
            print(out, &v, || Ok(format!("Account {}'s limits: {:?}.", a.name, a.limits)))
        }
    }
}

/// Run a `tokens` command.
pub async fn tokens(client: &Client, out: Format, cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::Create {
            account,
            name,
            role,
            expires_in_days,
        } => {
            let role = match role {
                CliRole::Member => RoleView::Member,
                CliRole::Admin => RoleView::Admin,
            };
            let req = CreateTokenRequest {
                name,
                account,
                role: Some(role),
                expires_in_days,
            };
            let v = client.post("/v1/tokens", &req).await?;
            let made: CreatedToken = typed(v.clone())?;
            print(out, &v, || {
                Ok(format!(
                    "Token {} for account {} ({}); shown once, keep it:\n{}",
                    made.details.id,
                    made.details.account,
                    keel_raft_store::wire_name(&made.details.role),
                    made.token
                ))
            })
        }
        TokensCmd::List { account } => {
            let path = match &account {
                Some(a) => format!("/v1/tokens?account={a}"),
                None => "/v1/tokens".into(),
            };
            let v = client.get(&path).await?;
            let all: Vec<TokenView> = typed(v.clone())?;
            print(out, &v, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.account.clone(),
                            keel_raft_store::wire_name(&t.role),
                            t.name.clone(),
                            time(Some(t.created_at_ms)),
                            time(t.expires_at_ms),
                            time(t.last_used_ms),
                        ]
                    })
                    .collect();
                Ok(table(
                    &["ID", "ACCOUNT", "ROLE", "NAME", "CREATED", "EXPIRES", "LAST USED"],
                    &rows,
                ))
            })
        }
        TokensCmd::Revoke { id } => {
            let v = client.delete(&format!("/v1/tokens/{id}")).await?;
            let t: TokenView = typed(v.clone())?;
            print(out, &v, || Ok(format!("Token {} ({}) is revoked.", t.id, t.name)))
        }
        TokensCmd::Generate => {
            println!("{}", auth::new_token().token);
            Ok(())
        }
    }
}

/// `keel whoami`.
pub async fn whoami(client: &Client, out: Format) -> anyhow::Result<()> {
    let v = client.get("/v1/whoami").await?;
    let me: WhoAmI = typed(v.clone())?;
    print(out, &v, || {
        Ok(format!(
            "Token {} of account {} (role {}) at {}.",
            me.token_id,
            me.account,
            keel_raft_store::wire_name(&me.role),
            client.base()
        ))
    })
}

/// Which audit records `keel audit` shows.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only calls by or about this account.
    #[arg(long)]
    account: Option<String>,
    /// Only calls in this last stretch of time, e.g. 90s, 15m, 2h, 7d.
    #[arg(long, value_parser = parse_age)]
    since: Option<u64>,
    /// Start after this sequence number (the last of the previous page).
    #[arg(long)]
    after: Option<u64>,
    /// At most this many (default 100, at most 1000).
    #[arg(long)]
    limit: Option<usize>,
}

/// `90s`, `15m`, `2h` or `7d` as milliseconds.
fn parse_age(s: &str) -> Result<u64, String> {
    let (n, unit) = s.split_at(s.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 2h or 7d"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: use s, m, h or d (e.g. 15m)")),
    };
    n.checked_mul(ms).ok_or_else(|| format!("{s:?} is too long"))
}

/// `keel audit`.
pub async fn audit(client: &Client, out: Format, args: AuditArgs) -> anyhow::Result<()> {
    let mut query = vec![];
    if let Some(a) = &args.account {
        query.push(format!("account={a}"));
    }
    if let Some(age) = args.since {
        query.push(format!("since_ms={}", crate::clock::now_ms().saturating_sub(age)));
    }
    if let Some(a) = args.after {
        query.push(format!("after={a}"));
    }
    if let Some(l) = args.limit {
        query.push(format!("limit={l}"));
    }
    let v = client.get(&format!("/v1/audit?{}", query.join("&"))).await?;
    let all: Vec<crate::api::accounts::AuditView> = typed(v.clone())?;
    print(out, &v, || {
        let rows: Vec<Vec<String>> = all
            .iter()
            .map(|r| {
                vec![
                    r.seq.to_string(),
                    time(Some(r.at_ms)),
                    format!("{} ({})", r.account, r.token_id),
                    r.source.clone().unwrap_or_default(),
                    r.action.clone(),
                    r.target.clone(),
                    r.outcome.clone(),
                ]
            })
            .collect();
        Ok(table(
            &["SEQ", "AT", "WHO", "FROM", "ACTION", "TARGET", "OUTCOME"],
            &rows,
        ))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_as_milliseconds() {
        assert_eq!(super::parse_age("90s"), Ok(90_000));
        assert_eq!(super::parse_age("2h"), Ok(7_200_000));
        assert!(super::parse_age("2 weeks").is_err());
        assert!(super::parse_age("h").is_err());
    }
}
