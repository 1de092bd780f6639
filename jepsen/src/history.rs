//! Histories of client operations, kept as JSON lines (one [`Op`] per line, as Jepsen keeps
//! them: an `invoke`, then its `ok`, `fail` or `info`), a client that writes through a
//! database's DNS name and records one, and the checkers that read them: acknowledged
//! writes lost, and two primaries acknowledging writes at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::host::{dig_a, now_ms};

/// How an operation went, Jepsen's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Sent.
    Invoke,
    /// Acknowledged.
    Ok,
    /// Refused: it certainly did not happen.
    Fail,
    /// Unknown: the connection broke or the answer did not come in time.
    Info,
}

/// One line of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    /// The client process.
    pub process: u32,
    /// Invoke, or how it ended.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// What: `insert` (of `value`, a unique id) or `connect`.
    pub f: String,
    /// The id inserted (0 for a connect).
    pub value: i64,
    /// The server it went to: `addr:port/timeline` (a promotion starts a new timeline, so
    /// one instance's terms as primary are told apart).
    pub target: String,
    /// When (Unix ms).
    pub at_ms: u64,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A history being recorded, or read back.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The operations in the order they happened.
    pub ops: Vec<Op>,
}

impl History {
    /// Record `op` now.
    pub fn push(&mut self, process: u32, kind: Kind, f: &str, value: i64, target: &str, error: Option<String>) {
        self.ops.push(Op {
            process,
            kind,
            f: f.to_string(),
            value,
            target: target.to_string(),
            at_ms: now_ms(),
            error,
        });
    }

    /// Every acknowledged insert: (id, when).
    pub fn acknowledged(&self) -> Vec<(i64, u64)> {
        self.ops
            .iter()
            .filter(|o| o.kind == Kind::Ok && o.f == "insert")
            .map(|o| (o.value, o.at_ms))
            .collect()
    }

    /// Every connection made: (when, target).
    pub fn connections(&self) -> Vec<(u64, String)> {
        self.ops
            .iter()
            .filter(|o| o.kind == Kind::Ok && o.f == "connect")
            .map(|o| (o.at_ms, o.target.clone()))
            .collect()
    }

    /// Another history's operations added, in time order (a test's probes beside a client's).
    pub fn merge(&mut self, other: History) {
        self.ops.extend(other.ops);
        self.ops.sort_by_key(|o| o.at_ms);
    }

    /// Write it as JSON lines to `path`.
    pub fn write_jsonl(&self, path: &Path) -> anyhow::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for op in &self.ops {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(())
    }

    /// Read a history written by [`History::write_jsonl`].
    pub fn read_jsonl(path: &Path) -> anyhow::Result<Self> {
        let file = std::io::BufReader::new(std::fs::File::open(path)?);
        let mut ops = Vec::new();
        for line in file.lines() {
            let line = line?;
            if !line.trim().is_empty() {
                ops.push(serde_json::from_str(&line)?);
            }
        }
        Ok(History { ops })
    }
}

/// Checker: the acknowledged inserts missing from `held` (what the final primary holds).
pub fn lost(history: &History, held: &BTreeSet<i64>) -> Vec<i64> {
    history
        .acknowledged()
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| !held.contains(id))
        .collect()
}

/// Checker: two primaries acknowledging writes at once. Targets are ordered by their first
/// acknowledged write; a write acknowledged by an earlier target that was *invoked* after a
/// later target had acknowledged one means both took writes at the same time. Returns what
/// it found, or `None`.
pub fn two_writable(history: &History) -> Option<String> {
    // Invoke time of each (process, value), to pair with its completion.
    let mut invoked: BTreeMap<(u32, i64), u64> = BTreeMap::new();
    let mut acked: Vec<(&str, u64, u64, i64)> = Vec::new();
    for op in history.ops.iter().filter(|o| o.f == "insert") {
        match op.kind {
            Kind::Invoke => {
                invoked.insert((op.process, op.value), op.at_ms);
            }
            Kind::Ok => {
                let from = invoked.get(&(op.process, op.value)).copied().unwrap_or(op.at_ms);
                acked.push((op.target.as_str(), from, op.at_ms, op.value));
            }
            Kind::Fail | Kind::Info => {}
        }
    }
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    for (target, _, at, _) in &acked {
        let f = first.entry(target).or_insert(*at);
        *f = (*f).min(*at);
    }
    for (a, a_first) in &first {
        for (b, b_first) in first.iter().filter(|(b, f)| *b != a && *f > a_first) {
            if let Some((_, from, at, id)) = acked.iter().find(|(t, from, ..)| t == a && from > b_first) {
                return Some(format!(
                    "{a} acknowledged insert {id} (sent at {from}, acknowledged at {at}) after {b} had acknowledged its first write at {b_first}"
                ));
            }
        }
    }
    None
}

/// Whether `e` certainly means the statement did not happen: the server answered it with
/// an ERROR on a connection that is still open.
fn refused(e: &tokio_postgres::Error) -> bool {
    !e.is_closed() && e.as_db_error().is_some_and(|d| d.severity() == "ERROR")
}

/// `user`/`password` on `addr:port`, database `postgres`.
pub async fn connect(
    addr: &str,
    port: u16,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(addr)
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A connection to the primary at `addr:port`, within 5 s, and its name in histories:
/// `addr:port/timeline` (a standby fails: it has no current WAL position to name).
async fn reach(addr: &str, port: u16, user: &str, password: &str) -> anyhow::Result<(tokio_postgres::Client, String)> {
    let reached = async {
        let client = connect(addr, port, user, password).await?;
        let row = client
            .query_one("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)", &[])
            .await?;
        let timeline: String = row.get(0);
        anyhow::Ok((client, format!("{addr}:{port}/{timeline}")))
    };
    tokio::time::timeout(Duration::from_secs(5), reached)
        .await
        .map_err(|_| anyhow::anyhow!("no answer in 5 s"))?
}

/// A client inserting ids into table `t` through a database's DNS name.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<History>,
}

/// Where and as whom a [`Writer`] writes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The DNS server to resolve through (`ip:port`).
    pub dns: String,
    /// The database's name (absolute).
    pub name: String,
    /// Its port.
    pub port: u16,
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

impl Writer {
    /// Insert ids 1, 2, … one per transaction through `to.name` as client `process`,
    /// recording every operation: on any error (or a statement hanging over 2 s) it drops
    /// the connection, resolves the name again and reconnects. An id whose insert did not
    /// succeed is never reused (its outcome may be unknown).
    pub fn start(to: Target, process: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let handle = tokio::spawn(async move {
            let mut h = History::default();
            let mut id = 0i64;
            while !running.load(Ordering::Relaxed) {
                let found = {
                    let (dns, name) = (to.dns.clone(), to.name.clone());
                    tokio::task::spawn_blocking(move || dig_a(&dns, &name))
                        .await
                        .unwrap_or(None)
                };
                let Some(addr) = found else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok((client, target)) = reach(&addr, to.port, &to.user, &to.password).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                h.push(process, Kind::Ok, "connect", 0, &target, None);
                while !running.load(Ordering::Relaxed) {
                    id += 1;
                    h.push(process, Kind::Invoke, "insert", id, &target, None);
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
                    let insert = client.execute("INSERT INTO t (id) VALUES ($1)", &params);
                    match tokio::time::timeout(Duration::from_secs(2), insert).await {
                        Ok(Ok(_)) => h.push(process, Kind::Ok, "insert", id, &target, None),
                        // The server refused it with an ERROR: it did not happen. A FATAL (a
                        // session terminated while its commit waited for the standby) or a
                        // broken connection leaves it unknown: it may be committed.
                        Ok(Err(e)) if refused(&e) => {
                            h.push(process, Kind::Fail, "insert", id, &target, Some(e.to_string()));
                            break;
                        }
                        Ok(Err(e)) => {
                            h.push(process, Kind::Info, "insert", id, &target, Some(e.to_string()));
                            break;
                        }
                        Err(_) => {
                            h.push(
                                process,
                                Kind::Info,
                                "insert",
                                id,
                                &target,
                                Some("no answer in 2 s".into()),
                            );
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            h
        });
        Writer { stop, handle }
    }

    /// Stop and return the history.
    pub async fn finish(self) -> History {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.unwrap_or_default()
    }
}

/// One probe write by `process` to `addr:port` (a server that must not take it, or must):
/// recorded like a client's insert of `id`.
pub async fn probe(h: &mut History, process: u32, addr: &str, port: u16, user: &str, password: &str, id: i64) -> bool {
    let (client, target) = match reach(addr, port, user, password).await {
        Ok(reached) => reached,
        Err(e) => {
            h.push(
                process,
                Kind::Fail,
                "connect",
                0,
                &format!("{addr}:{port}"),
                Some(e.to_string()),
            );
            return false;
        }
    };
    h.push(process, Kind::Invoke, "insert", id, &target, None);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    match tokio::time::timeout(
        Duration::from_secs(2),
        client.execute("INSERT INTO t (id) VALUES ($1)", &params),
    )
    .await
    {
        Ok(Ok(_)) => {
            h.push(process, Kind::Ok, "insert", id, &target, None);
            true
        }
        Ok(Err(e)) if refused(&e) => {
            h.push(process, Kind::Fail, "insert", id, &target, Some(e.to_string()));
            false
        }
        Ok(Err(e)) => {
            h.push(process, Kind::Info, "insert", id, &target, Some(e.to_string()));
            false
        }
        Err(_) => {
            h.push(
                process,
                Kind::Info,
                "insert",
                id,
                &target,
                Some("no answer in 2 s".into()),
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(process: u32, kind: Kind, value: i64, target: &str, at_ms: u64) -> Op {
        Op {
            process,
            kind,
            f: "insert".into(),
            value,
            target: target.into(),
            at_ms,
            error: None,
        }
    }

    /// (process, kind, value, target, at_ms)
    type Line<'a> = (u32, Kind, i64, &'a str, u64);

    fn history(ops: &[Line]) -> History {
        History {
            ops: ops.iter().map(|&(p, k, v, t, at)| op(p, k, v, t, at)).collect(),
        }
    }

    use Kind::*;

    #[test]
    fn lost_names_acknowledged_ids_the_final_primary_lacks_and_nothing_else() {
        let h = history(&[
            (1, Invoke, 1, "a", 1),
            (1, Ok, 1, "a", 2),
            (1, Invoke, 2, "a", 3),
            (1, Info, 2, "a", 4),
            (1, Invoke, 3, "b", 5),
            (1, Ok, 3, "b", 6),
            (1, Invoke, 4, "b", 7),
            (1, Fail, 4, "b", 8),
        ]);
        let cases: [(&[i64], &[i64]); 4] = [
            (&[1, 3], &[]),
            // An unknown (2) or failed (4) insert may be there or not.
            (&[1, 2, 3, 4], &[]),
            (&[3], &[1]),
            (&[], &[1, 3]),
        ];
        for (held, want) in cases {
            assert_eq!(lost(&h, &held.iter().copied().collect()), want, "held {held:?}");
        }
    }

    #[test]
    fn two_writable_finds_an_old_primary_acknowledging_after_the_new_one_did() {
        let cases: [(&str, &[Line], bool); 5] = [
            ("one primary", &[(1, Invoke, 1, "a", 1), (1, Ok, 1, "a", 2)], false),
            (
                "a clean failover",
                &[
                    (1, Invoke, 1, "a", 1),
                    (1, Ok, 1, "a", 2),
                    (1, Invoke, 2, "b", 10),
                    (1, Ok, 2, "b", 11),
                ],
                false,
            ),
            (
                "the old one acknowledges a write sent after the new one took one",
                &[
                    (1, Invoke, 1, "a", 1),
                    (1, Ok, 1, "a", 2),
                    (1, Invoke, 2, "b", 10),
                    (1, Ok, 2, "b", 11),
                    (2, Invoke, 3, "a", 12),
                    (2, Ok, 3, "a", 13),
                ],
                true,
            ),
            (
                "a write sent before the new one took any, acknowledged late, is no overlap",
                &[
                    (1, Invoke, 1, "a", 1),
                    (1, Ok, 1, "a", 2),
                    (2, Invoke, 3, "a", 9),
                    (1, Invoke, 2, "b", 10),
                    (1, Ok, 2, "b", 11),
                    (2, Ok, 3, "a", 12),
                ],
                false,
            ),
            (
                "a refused probe of the old one is fine",
                &[
                    (1, Invoke, 1, "a", 1),
                    (1, Ok, 1, "a", 2),
                    (1, Invoke, 2, "b", 10),
                    (1, Ok, 2, "b", 11),
                    (2, Invoke, 3, "a", 12),
                    (2, Fail, 3, "a", 13),
                ],
                false,
            ),
        ];
        for (what, ops, overlap) in cases {
            assert_eq!(two_writable(&history(ops)).is_some(), overlap, "{what}");
        }
    }

    #[test]
    fn a_history_round_trips_through_json_lines() {
        let h = history(&[
            (1, Invoke, 1, "127.0.1.1:5432/00000001", 1),
            (1, Ok, 1, "127.0.1.1:5432/00000001", 2),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        h.write_jsonl(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("{\"process\":1,\"type\":\"invoke\",\"f\":\"insert\""),
            "{text}"
        );
        assert_eq!(History::read_jsonl(&path).unwrap().ops, h.ops);
    }
}
