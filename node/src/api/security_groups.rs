//! Security groups in the API: an account's allowed client networks. The same
//! `<name>` / admin's `<name>.<account>` references as databases; another account's
//! groups are "not found".

use keel_raft_store::{Command, Response, SecurityGroup};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::Principal;
use super::error::ApiError;
use super::service::Api;
use super::validate;
use crate::host::engine::canonical_cidr;

/// A security group as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupView {
    /// Name, unique in its account.
    pub name: String,
    /// Owning account.
    pub account: String,
    /// Allowed client networks (CIDRs).
    pub cidrs: Vec<String>,
}

impl From<&SecurityGroup> for SecurityGroupView {
    fn from(g: &SecurityGroup) -> Self {
        Self {
            name: g.name.clone(),
            account: g.account.clone(),
            cidrs: g.cidrs.iter().cloned().collect(),
        }
    }
}

/// `security-groups create` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityGroupRequest {
    /// Group name (a DNS label).
    pub name: String,
    /// Client networks to allow from the start (CIDRs or addresses).
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// The account to create it in (admins only; default: the caller's).
    #[serde(default)]
    pub account: Option<String>,
}

/// `security-groups authorize|revoke` input.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRulesRequest {
    /// Client networks (CIDRs such as 10.0.0.0/8, or addresses).
    pub cidrs: Vec<String>,
}

/// Canonical forms of `cidrs`, refusing an empty list or anything that is not a CIDR.
pub fn cidrs(list: &[String]) -> Result<Vec<String>, ApiError> {
    if list.len() > 100 {
        return Err(ApiError::InvalidArgument("at most 100 CIDRs per call".into()));
    }
    list.iter()
        .map(|c| {
            validate::ipv4_cidr(c)?;
            canonical_cidr(c).map_err(ApiError::InvalidArgument)
        })
        .collect()
}

/// `(name, account)` of a reference to a group the caller may see.
fn group_ref(who: &Principal, reference: &str) -> Result<(String, String), ApiError> {
    match super::databases::account_ref(who, "security group name", reference) {
        Ok((name, account)) => Ok((name.to_string(), account.to_string())),
        Err(ApiError::NotFound(_)) => Err(ApiError::NotFound(format!("security group {reference} does not exist"))),
        Err(e) => Err(e),
    }
}

impl Api {
    /// The caller's security groups (an admin's: every account's).
    pub async fn list_security_groups(&self, who: &Principal) -> Result<Vec<SecurityGroupView>, ApiError> {
        let who = who.clone();
        self.node
            .read(move |s| {
                let mut accounts: Vec<&String> = s.accounts.keys().filter(|a| who.sees(a)).collect();
                accounts.sort();
                accounts
                    .into_iter()
                    .flat_map(|a| s.security_groups_of(a))
                    .map(|g| SecurityGroupView::from(&g))
                    .collect()
            })
            .await
    }

    /// Create a security group.
    pub async fn create_security_group(
        &self,
        who: &Principal,
        req: CreateSecurityGroupRequest,
    ) -> Result<SecurityGroupView, ApiError> {
        validate::dns_label("security group name", &req.name)?;
        let account = match req.account {
            Some(a) if who.sees(&a) => a,
            Some(a) => return Err(ApiError::NotFound(format!("account {a} does not exist"))),
            None => who.account.clone(),
        };
        let command = Command::PutSecurityGroup {
            name: req.name,
            account,
            create: true,
            authorize: cidrs(&req.cidrs)?,
            revoke: Vec::new(),
        };
        self.group_reply(self.commit(who, command).await?)
    }

    /// Allow (`allow`) or stop allowing CIDRs in a group; the databases in it follow
    /// through a modify workflow each, started by the leader's scheduler.
    pub async fn change_security_group(
        &self,
        who: &Principal,
        reference: &str,
        req: SecurityGroupRulesRequest,
        allow: bool,
    ) -> Result<SecurityGroupView, ApiError> {
        let (name, account) = group_ref(who, reference)?;
        let list = cidrs(&req.cidrs)?;
        if list.is_empty() {
            return Err(ApiError::InvalidArgument("give at least one CIDR".into()));
        }
        let (authorize, revoke) = if allow { (list, Vec::new()) } else { (Vec::new(), list) };
        let command = Command::PutSecurityGroup {
            name,
            account,
            create: false,
            authorize,
            revoke,
        };
        self.group_reply(self.commit(who, command).await?)
    }

    /// Delete a group no database uses.
    pub async fn delete_security_group(&self, who: &Principal, reference: &str) -> Result<SecurityGroupView, ApiError> {
        let (name, account) = group_ref(who, reference)?;
        self.group_reply(self.commit(who, Command::DeleteSecurityGroup { name, account }).await?)
    }

    fn group_reply(&self, r: Response) -> Result<SecurityGroupView, ApiError> {
        match r {
            Response::SecurityGroup { group } => Ok(SecurityGroupView::from(&group)),
            other => Err(super::service::unexpected(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_canonical_and_garbage_is_refused() {
        let ok = cidrs(&["10.1.2.3/8".into(), "127.0.0.5".into(), "0.0.0.0/0".into()]).unwrap();
        assert_eq!(ok, ["10.0.0.0/8", "127.0.0.5/32", "0.0.0.0/0"]);
        for bad in [
            "10.0.0.0/33",
            "all",
            "10.0.0.0/8\nhost all all 0.0.0.0/0 trust",
            "",
            "010.0.0.0/8",
            "10.0.0.0/08",
            "::1",
            "256.0.0.0",
        ] {
            assert!(cidrs(&[bad.into()]).is_err(), "{bad:?}");
        }
    }
}
