//! `keel accounts`, `keel tokens` and `keel whoami`.

use clap::Subcommand;

use super::client::{typed, Client};
use super::output::{table, time, Format};
use super::print;
use crate::api::accounts::{
    AccountView, CreateAccountRequest, CreateTokenRequest, CreatedToken, RoleView, TokenView, WhoAmI,
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
            print(out, &v, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|a| vec![a.name.clone(), time(Some(a.created_at_ms))])
                    .collect();
                Ok(table(&["NAME", "CREATED"], &rows))
            })
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
