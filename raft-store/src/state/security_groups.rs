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

#[cfg(test)]
mod tests {
    use crate::command::{Command, Proposal, Response};
    use crate::records::{DatabaseSpec, Host, HostHealth};
    use crate::state::AdminState;

    fn put(s: &mut AdminState, i: u64, name: &str, create: bool, allow: &[&str], revoke: &[&str]) -> Response {
        let command = Command::PutSecurityGroup {
            name: name.into(),
            account: "acme".into(),
            create,
            authorize: allow.iter().map(|c| c.to_string()).collect(),
            revoke: revoke.iter().map(|c| c.to_string()).collect(),
        };
        s.apply(i, &Proposal::new(i, command))
    }

    #[test]
    fn groups_give_databases_their_networks_and_in_use_groups_stay() {
        let mut s = AdminState::default();
        s.apply(1, &Proposal::new(1, Command::CreateAccount { name: "acme".into() }));
        s.hosts.insert(
            "h1".into(),
            Host {
                name: "h1".into(),
                addr: "127.0.1.1:7300".into(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
        // The default group is there untouched, and changing it makes it a record.
        assert_eq!(s.access_of("acme", &[]), ["127.0.0.0/8", "::1/128"]);
        assert!(matches!(
            put(&mut s, 2, "default", false, &["10.0.0.0/8"], &["::1/128"]),
            Response::SecurityGroup { .. }
        ));
        assert_eq!(s.access_of("acme", &[]), ["10.0.0.0/8", "127.0.0.0/8"]);
        assert!(
            matches!(
                put(&mut s, 3, "office", false, &["192.0.2.0/24"], &[]),
                Response::Rejected { .. }
            ),
            "change of a missing group"
        );
        assert!(matches!(
            put(&mut s, 4, "office", true, &["192.0.2.0/24"], &[]),
            Response::SecurityGroup { .. }
        ));
        assert!(
            matches!(put(&mut s, 5, "office", true, &[], &[]), Response::Rejected { .. }),
            "made twice"
        );
        let groups = vec!["office".to_string(), "default".to_string()];
        assert_eq!(
            s.access_of("acme", &groups),
            ["10.0.0.0/8", "127.0.0.0/8", "192.0.2.0/24"]
        );
        assert_eq!(
            s.access_of("other", &groups),
            ["127.0.0.0/8", "::1/128"],
            "another account's office is not ours"
        );

        // A database records the networks in force at create; an in-use group stays.
        let create = |name: &str, groups: Vec<String>| Command::CreateDatabase {
            job_id: format!("j-{name}"),
            request: None,
            name: name.into(),
            account: "acme".into(),
            spec: DatabaseSpec {
                class: "small".into(),
                storage_gib: 1,
                security_groups: groups,
                ..DatabaseSpec::default()
            },
            master_verifier: "v".into(),
            instance_id: format!("i-{name}"),
        };
        assert!(matches!(
            s.apply(6, &Proposal::new(6, create("nope", vec!["lab".into()]))),
            Response::Rejected { .. }
        ));
        s.apply(7, &Proposal::new(7, create("orders", vec!["office".into()])));
        let db = s.databases.values().find(|d| d.name == "orders").unwrap().clone();
        assert_eq!(db.access, Some(vec!["192.0.2.0/24".to_string()]));
        let delete = |name: &str| Command::DeleteSecurityGroup {
            name: name.into(),
            account: "acme".into(),
        };
        assert!(
            matches!(
                s.apply(8, &Proposal::new(8, delete("office"))),
                Response::Rejected { .. }
            ),
            "in use"
        );
        assert!(
            matches!(
                s.apply(9, &Proposal::new(9, delete("default"))),
                Response::Rejected { .. }
            ),
            "never"
        );
        // A change is recorded only; the database's own list waits for its modify.
        put(&mut s, 10, "office", false, &[], &["192.0.2.0/24"]);
        let db = s.databases.values().find(|d| d.name == "orders").unwrap();
        assert_eq!(s.desired_access(db), Vec::<String>::new());
        assert_eq!(db.access, Some(vec!["192.0.2.0/24".to_string()]));
    }
}
