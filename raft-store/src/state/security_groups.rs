//! Security groups: which client networks may connect to an account's databases. A
//! change here only records the rules; the leader's scheduler notices every database
//! whose instances run other rules than its groups now give and modifies it (a
//! workflow, with its events), so a change reaches databases busy with other work too,
//! once they are at rest.

use std::collections::BTreeSet;

use super::{conflict, not_found, AdminState};
use crate::command::Response;
use crate::records::{database_key, Database, Millis, SecurityGroup, DEFAULT_SECURITY_GROUP};

impl AdminState {
    /// `account`'s group `name`, as it is (an unchanged `default` group is implicit).
    pub fn security_group(&self, account: &str, name: &str) -> Option<SecurityGroup> {
        match self.security_groups.get(&database_key(name, account)) {
            Some(g) => Some(g.clone()),
            None if name == DEFAULT_SECURITY_GROUP => Some(SecurityGroup::initial_default(account)),
            None => None,
        }
    }

    /// Every group of `account`, its `default` group included.
    pub fn security_groups_of(&self, account: &str) -> Vec<SecurityGroup> {
        let mut out: Vec<SecurityGroup> = self
            .security_groups
            .values()
            .filter(|g| g.account == account)
            .cloned()
            .collect();
        if !out.iter().any(|g| g.name == DEFAULT_SECURITY_GROUP) {
            out.insert(0, SecurityGroup::initial_default(account));
        }
        out
    }

    /// The client CIDRs `groups` of `account` allow together (`default` when none is named).
    pub fn access_of(&self, account: &str, groups: &[String]) -> Vec<String> {
        let default = [DEFAULT_SECURITY_GROUP.to_string()];
        let names = if groups.is_empty() { &default[..] } else { groups };
        let cidrs: BTreeSet<String> = names
            .iter()
            .filter_map(|n| self.security_group(account, n))
            .flat_map(|g| g.cidrs)
            .collect();
        cidrs.into_iter().collect()
    }

    /// What `db`'s instances should allow now.
    pub fn desired_access(&self, db: &Database) -> Vec<String> {
        self.access_of(&db.account, &db.spec.security_groups)
    }

    /// The first of `groups` that `account` does not have, if any.
    pub fn missing_security_group<'a>(&self, account: &str, groups: &'a [String]) -> Option<&'a str> {
        groups
            .iter()
            .find(|g| self.security_group(account, g).is_none())
            .map(String::as_str)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn put_security_group(
        &mut self,
        index: u64,
        at: Millis,
        name: &str,
        account: &str,
        create: bool,
        authorize: &[String],
        revoke: &[String],
    ) -> Response {
        if !self.accounts.contains_key(account) {
            return not_found("account", account);
        }
        let key = database_key(name, account);
        let existing = self.security_group(account, name);
        let mut group = match (create, existing) {
            (true, Some(_)) => {
                return conflict(format!(
                    "security group {name:?} already exists in account {account}; change it with authorize and revoke"
                ))
            }
            (true, None) => SecurityGroup {
                name: name.into(),
                account: account.into(),
                cidrs: BTreeSet::new(),
                created_at_ms: at,
            },
            (false, Some(g)) => g,
            (false, None) => return not_found("security group", name),
        };
        group.cidrs.extend(authorize.iter().cloned());
        for c in revoke {
            group.cidrs.remove(c);
        }
        let allowed = group.cidrs.iter().cloned().collect::<Vec<_>>().join(", ");
        let message = format!(
            "Security group {name} allows {}.",
            if allowed.is_empty() {
                "no client address".to_string()
            } else {
                allowed
            }
        );
        let kind = if create {
            "security-group-created"
        } else {
            "security-group-changed"
        };
        self.security_groups.insert(key.clone(), group.clone());
        self.account_event(index, at, kind, &key, account.to_string(), message);
        Response::SecurityGroup { group }
    }

    pub(super) fn delete_security_group(&mut self, index: u64, at: Millis, name: &str, account: &str) -> Response {
        if name == DEFAULT_SECURITY_GROUP {
            return conflict("the default security group cannot be deleted; revoke its CIDRs to allow nothing".into());
        }
        let key = database_key(name, account);
        let Some(group) = self.security_groups.get(&key).cloned() else {
            return not_found("security group", name);
        };
        let users: Vec<&str> = self
            .databases
            .values()
            .filter(|d| d.account == account && d.spec.security_groups.iter().any(|g| g == name))
            .map(|d| d.name.as_str())
            .collect();
        if !users.is_empty() {
            return conflict(format!(
                "security group {name} is in use by {}; move them to other groups first (keel db modify --security-groups)",
                users.join(", ")
            ));
        }
        self.security_groups.remove(&key);
        let message = format!("Security group {name} was deleted.");
        self.account_event(index, at, "security-group-deleted", &key, account.to_string(), message);
        Response::SecurityGroup { group }
    }
}
