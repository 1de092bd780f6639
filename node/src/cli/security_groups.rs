//! `keel security-groups`: which client networks may connect to an account's databases.

use super::client::{typed, Client};
use super::output::{table, Format};
use super::print;
use crate::api::security_groups::{CreateSecurityGroupRequest, SecurityGroupRulesRequest, SecurityGroupView};

/// `keel security-groups` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SecurityGroupsCmd {
    /// Create a group (databases name it with `db create|modify --security-groups`).
    Create {
        /// Group name.
        name: String,
        /// Client networks to allow (CIDRs or addresses, comma-separated).
        #[arg(long, value_delimiter = ',')]
        cidr: Vec<String>,
        /// Account to create it in (admins only).
        #[arg(long)]
        account: Option<String>,
    },
    /// List groups, `default` included.
    List,
    /// Allow client networks; the group's databases follow at once, without a restart.
    Authorize {
        /// Group name.
        name: String,
        /// CIDRs or addresses (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        cidr: Vec<String>,
    },
    /// Stop allowing client networks; new connections from them are refused.
    Revoke {
        /// Group name.
        name: String,
        /// CIDRs or addresses (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        cidr: Vec<String>,
    },
    /// Delete a group no database uses.
    Delete {
        /// Group name.
        name: String,
    },
}

/// Run a `keel security-groups` command.
pub async fn run(client: &Client, out: Format, cmd: SecurityGroupsCmd) -> anyhow::Result<()> {
    let one = |v: serde_json::Value, verb: &'static str| -> anyhow::Result<()> {
        let g: SecurityGroupView = typed(v.clone())?;
        print(out, &v, || {
            Ok(format!(
                "Security group {} {verb}; it allows: {}.",
                g.name,
                shown(&g.cidrs)
            ))
        })
    };
    match cmd {
        SecurityGroupsCmd::Create { name, cidr, account } => {
            let req = CreateSecurityGroupRequest {
                name,
                cidrs: cidr,
                account,
            };
            one(client.post("/v1/security-groups", &req).await?, "created")
        }
        SecurityGroupsCmd::List => {
            let v = client.get("/v1/security-groups").await?;
            let all: Vec<SecurityGroupView> = typed(v.clone())?;
            print(out, &v, || {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|g| vec![g.name.clone(), g.account.clone(), shown(&g.cidrs)])
                    .collect();
                Ok(table(&["NAME", "ACCOUNT", "ALLOWS"], &rows))
            })
        }
        SecurityGroupsCmd::Authorize { name, cidr } => {
            let path = format!("/v1/security-groups/{name}/authorize");
            one(
                client.post(&path, &SecurityGroupRulesRequest { cidrs: cidr }).await?,
                "changed",
            )
        }
        SecurityGroupsCmd::Revoke { name, cidr } => {
            let path = format!("/v1/security-groups/{name}/revoke");
            one(
                client.post(&path, &SecurityGroupRulesRequest { cidrs: cidr }).await?,
                "changed",
            )
        }
        SecurityGroupsCmd::Delete { name } => {
            one(client.delete(&format!("/v1/security-groups/{name}")).await?, "deleted")
        }
    }
}

fn shown(cidrs: &[String]) -> String {
    if cidrs.is_empty() {
        "nothing".into()
    } else {
        cidrs.join(", ")
    }
}
