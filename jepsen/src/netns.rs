//! Network namespaces for fault tests: each data host gets its own namespace, linked by a
//! veth pair to one bridge in the root namespace (where the control nodes and the test's
//! clients run), so a test can cut exactly one path with nftables inside a host's
//! namespace: a port (the host manager's: host ↔ control plane; a database's: clients ↔
//! host) or a peer host (host ↔ standby). Needs root, `ip` (iproute2) and `nft`.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

/// The nftables table a cut lives in, inside a host's namespace.
const TABLE: &str = "keel_nemesis";

/// A bridge and one namespace per host; all of it is deleted when dropped.
pub struct Net {
    bridge: String,
    prefix: String,
    namespaces: Vec<String>,
}

/// Run `ip`/`nft` arguments, failing with their stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (install iproute2 and nftables)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// A bridge `kb<tag>` at `10.99.<k>.1/24` and `hosts` namespaces, host `i` (0-based) at
    /// `10.99.<k>.<11 + i>`, each with its loopback up.
    pub fn create(hosts: usize) -> anyhow::Result<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = std::process::id()
            .wrapping_mul(7)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        // A /24 no interface of this machine is on (another run's bridge may be).
        let taken = Command::new("ip").args(["-o", "-4", "addr", "show"]).output()?;
        let taken = String::from_utf8_lossy(&taken.stdout).into_owned();
        let k = (0..200)
            .map(|step| 20 + (n + step) % 200)
            .find(|k| !taken.contains(&format!(" 10.99.{k}.")))
            .context("every 10.99.x.0/24 subnet for test hosts is taken")?;
        let tag = format!("{:x}", n % 0xfffff);
        let mut net = Net {
            bridge: format!("kb{tag}"),
            prefix: format!("10.99.{k}"),
            namespaces: Vec::new(),
        };
        // A bridge of the same name a killed run left behind goes first.
        let _ = run("ip", &["link", "del", &net.bridge]);
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/24", net.gateway()), "dev", &net.bridge],
        )?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for i in 0..hosts {
            let ns = format!("keel-{tag}-h{}", i + 1);
            let _ = run("ip", &["netns", "del", &ns]);
            run("ip", &["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let outside = format!("kv{tag}h{}", i + 1);
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &outside, "master", &net.bridge])?;
            run("ip", &["link", "set", &outside, "up"])?;
            run(
                "ip",
                &["-n", &ns, "addr", "add", &format!("{}/24", net.ip(i)), "dev", "eth0"],
            )?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// The root namespace's address on the bridge: what control nodes and clients reach
    /// the hosts from.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Host `i`'s (0-based) address.
    pub fn ip(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, 11 + i)
    }

    /// Host `i`'s namespace.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// `nft` inside host `i`'s namespace.
    fn nft(&self, i: usize, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["netns", "exec", self.namespace(i), "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The table and an input and output chain in host `i`'s namespace (made once).
    fn chains(&self, i: usize) -> anyhow::Result<()> {
        self.nft(i, &["add", "table", "inet", TABLE])?;
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            self.nft(
                i,
                &[
                    "add",
                    "chain",
                    "inet",
                    TABLE,
                    chain,
                    &format!("{{ type filter hook {hook} priority 0; policy accept; }}"),
                ],
            )?;
        }
        Ok(())
    }

    /// Drop every TCP packet to `port` on host `i` and from it: the host manager's port
    /// cuts the host off the control plane (clients and peers still reach its databases);
    /// a database's port cuts its clients off.
    pub fn cut_port(&self, i: usize, port: u16) -> anyhow::Result<()> {
        self.chains(i)?;
        let port = port.to_string();
        self.nft(i, &["add", "rule", "inet", TABLE, "in", "tcp", "dport", &port, "drop"])?;
        self.nft(i, &["add", "rule", "inet", TABLE, "out", "tcp", "sport", &port, "drop"])
    }

    /// Drop everything between host `i` and the address `peer` (another host's), both ways.
    pub fn cut_peer(&self, i: usize, peer: &str) -> anyhow::Result<()> {
        self.chains(i)?;
        self.nft(i, &["add", "rule", "inet", TABLE, "in", "ip", "saddr", peer, "drop"])?;
        self.nft(i, &["add", "rule", "inet", TABLE, "out", "ip", "daddr", peer, "drop"])
    }

    /// Remove every cut on host `i`.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        self.nft(i, &["delete", "table", "inet", TABLE])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for ns in &self.namespaces {
            let _ = run("ip", &["netns", "del", ns]);
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
    }
}
