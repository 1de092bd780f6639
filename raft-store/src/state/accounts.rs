//! Accounts (tenants) and API tokens: creation, revocation, last use.
//!
//! Tokens are looked up by id on every API call; the secret itself never reaches
//! the store (the proposer hashes it), so a snapshot or a log holds nothing that
//! authenticates.

use std::collections::BTreeMap;

use super::{conflict, not_found, AdminState};
use crate::command::Response;
use crate::records::*;

impl AdminState {
    pub(super) fn create_account(&mut self, index: u64, at: Millis, name: &str) -> Response {
        if RESERVED_ACCOUNTS.contains(&name) {
            return conflict(format!(
                "account name {name:?} is reserved (the DNS zone uses it); choose another"
            ));
        }
        if let Some(existing) = self.accounts.get(name) {
            return Response::Account {
                account: existing.clone(),
                created: false,
            };
        }
        let account = Account {
            name: name.to_string(),
            created_at_ms: at,
            limits: Limits::default(),
        };
        self.accounts.insert(name.to_string(), account.clone());
        self.event(
            index,
            at,
            "account-created",
            name,
            format!("Account {name} was created."),
        );
        Response::Account { account, created: true }
    }

    pub(super) fn set_account_limits(&mut self, index: u64, at: Millis, name: &str, limits: &Limits) -> Response {
        let Some(account) = self.accounts.get_mut(name) else {
            return not_found("account", name);
        };
        account.limits = *limits;
        let account = account.clone();
        let message = format!("Account {name}'s limits are now {limits:?}.");
        self.event(index, at, "account-limits-set", name, message);
        Response::Account {
            account,
            created: false,
        }
    }

    pub(super) fn create_token(&mut self, index: u64, at: Millis, token: &Token) -> Response {
        if !self.accounts.contains_key(&token.account) {
            return not_found("account", &token.account);
        }
        if self.tokens.contains_key(&token.id) {
            return conflict(format!(
                "token id {} is already taken; retry with a fresh token",
                token.id
            ));
        }
        if token.secret_sha256.len() != 64 {
            return conflict("a token is stored as the hex SHA-256 of its secret".into());
        }
        let token = Token {
            created_at_ms: at,
            last_used_ms: None,
            ..token.clone()
        };
        self.tokens.insert(token.id.clone(), token.clone());
        let message = format!(
            "Token {} ({:?}, role {}) was created for account {}.",
            token.id,
            token.name,
            wire_name(&token.role),
            token.account
        );
        self.event(index, at, "token-created", &token.account.clone(), message);
        Response::Token { token }
    }

    pub(super) fn revoke_token(&mut self, index: u64, at: Millis, id: &str) -> Response {
        let Some(token) = self.tokens.remove(id) else {
            return not_found("token", id);
        };
        let message = format!("Token {id} ({:?}) was revoked.", token.name);
        self.event(index, at, "token-revoked", &token.account.clone(), message);
        Response::Token { token }
    }

    pub(super) fn touch_tokens(&mut self, used: &BTreeMap<String, Millis>) -> Response {
        for (id, at) in used {
            if let Some(token) = self.tokens.get_mut(id) {
                token.last_used_ms = Some(token.last_used_ms.map_or(*at, |last| last.max(*at)));
            }
        }
        Response::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal, Rejection};
    use crate::records::{Actor, AuditRecord};

    fn apply(s: &mut AdminState, i: u64, command: Command) -> Response {
        s.apply(i, &Proposal::new(i * 10, command))
    }

    fn token(id: &str, account: &str) -> Token {
        Token {
            id: id.into(),
            name: "ci".into(),
            account: account.into(),
            role: Role::Member,
            secret_sha256: "ab".repeat(32),
            ..Token::default()
        }
    }

    #[test]
    fn the_cluster_starts_with_the_admin_account_and_its_bootstrap_token() {
        let mut s = AdminState::default();
        let admin = Token {
            role: Role::Admin,
            ..token("boot", ADMIN_ACCOUNT)
        };
        apply(
            &mut s,
            1,
            Command::InitCluster {
                name: "c".into(),
                admin_token: Some(admin),
            },
        );
        assert!(s.accounts.contains_key(ADMIN_ACCOUNT));
        assert_eq!(s.tokens["boot"].role, Role::Admin);
        assert_eq!(s.tokens["boot"].created_at_ms, 10, "stamped by apply, not the proposer");
    }

    #[test]
    fn tokens_need_an_account_a_fresh_id_and_a_hash_and_revocation_removes_them() {
        let mut s = AdminState::default();
        let r = apply(
            &mut s,
            1,
            Command::CreateToken {
                token: token("t1", "acme"),
            },
        );
        assert!(
            matches!(
                r,
                Response::Rejected {
                    rejection: Rejection::NotFound { .. }
                }
            ),
            "{r:?}"
        );
        let r = apply(&mut s, 2, Command::CreateAccount { name: "acme".into() });
        assert!(matches!(r, Response::Account { created: true, .. }), "{r:?}");
        let r = apply(&mut s, 3, Command::CreateAccount { name: "acme".into() });
        assert!(matches!(r, Response::Account { created: false, .. }), "a repeat: {r:?}");
        let r = apply(
            &mut s,
            4,
            Command::CreateToken {
                token: token("t1", "acme"),
            },
        );
        assert!(matches!(r, Response::Token { .. }), "{r:?}");
        let r = apply(
            &mut s,
            5,
            Command::CreateToken {
                token: token("t1", "acme"),
            },
        );
        assert!(matches!(r, Response::Rejected { .. }), "same id: {r:?}");
        let unhashed = Token {
            secret_sha256: "secret".into(),
            ..token("t2", "acme")
        };
        let r = apply(&mut s, 6, Command::CreateToken { token: unhashed });
        assert!(matches!(r, Response::Rejected { .. }), "not a hash: {r:?}");
        let used = BTreeMap::from([("t1".to_string(), 500), ("gone".to_string(), 1)]);
        apply(&mut s, 7, Command::TouchTokens { used });
        let older = BTreeMap::from([("t1".to_string(), 400)]);
        apply(&mut s, 8, Command::TouchTokens { used: older });
        assert_eq!(s.tokens["t1"].last_used_ms, Some(500), "last use only moves forward");
        let r = apply(&mut s, 9, Command::RevokeToken { id: "t1".into() });
        assert!(matches!(r, Response::Token { .. }), "{r:?}");
        assert!(s.tokens.is_empty());
        let r = apply(&mut s, 10, Command::RevokeToken { id: "t1".into() });
        assert!(
            matches!(
                r,
                Response::Rejected {
                    rejection: Rejection::NotFound { .. }
                }
            ),
            "{r:?}"
        );
    }

    #[test]
    fn an_api_call_is_audited_in_the_entry_that_applies_it_and_pruned_with_the_history() {
        let mut s = AdminState::default();
        let actor = Actor {
            token_id: "t1".into(),
            account: "acme".into(),
            role: Role::Member,
            source: Some("127.0.0.1:5000".into()),
        };
        let by = |at_ms, command| Proposal {
            actor: Some(actor.clone()),
            ..Proposal::new(at_ms, command)
        };
        s.apply(1, &Proposal::new(1, Command::CreateAccount { name: "acme".into() }));
        assert!(s.audit.is_empty(), "Keel's own commands are not API calls");
        s.apply(2, &by(100, Command::CreateAccount { name: "other".into() }));
        s.apply(3, &by(200, Command::RevokeToken { id: "nope".into() }));
        let records: Vec<&AuditRecord> = s.audit.values().collect();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (
                records[0].seq,
                records[0].action.as_str(),
                records[0].target.as_str(),
                records[0].outcome.as_str()
            ),
            (1, "create-account", "other", "ok")
        );
        assert_eq!(records[0].target_account, "other");
        assert_eq!(records[0].actor, actor);
        assert!(records[1].outcome.starts_with("refused: token"), "{:?}", records[1]);
        assert_eq!(s.audit_page(Some("other"), 0, 0, 10).len(), 1, "by target account");
        assert_eq!(s.audit_page(Some("acme"), 0, 0, 10).len(), 2, "by the caller's account");
        assert_eq!(s.audit_page(None, 150, 0, 10).len(), 1, "since");
        assert_eq!(s.audit_page(None, 0, 1, 10)[0].seq, 2, "after");
        s.apply(
            4,
            &Proposal::new(
                1_000,
                Command::PruneHistory {
                    before_ms: 150,
                    keep: 100,
                },
            ),
        );
        let left: Vec<u64> = s.audit.values().map(|r| r.seq).collect();
        assert_eq!(left, [2], "records older than the cut-off are forgotten");
    }
}
