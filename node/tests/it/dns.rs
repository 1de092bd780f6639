//! The authoritative zone, asked with a real client (dig) on every node.

use std::process::Command;
use std::time::{Duration, Instant};

use keel_jepsen::cluster::Cluster;

use super::{cluster, create_body, wait_op};

const ZONE: &str = "db.keel.internal";

/// dig against `node`'s DNS address; the whole text output.
pub fn dig(c: &Cluster, node: u64, args: &[&str]) -> String {
    let (ip, port) = c.node(node).dns_addr.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([&format!("@{ip}"), "-p", port, "+time=2", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The records of the answer section, as `name type data` (TTL and class dropped).
fn answers(output: &str) -> Vec<String> {
    section(output, "ANSWER")
}

fn section(output: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in output.lines() {
        if line.starts_with(";; ") && line.contains("SECTION:") {
            inside = line.contains(&format!("{name} SECTION"));
            continue;
        }
        if inside {
            if line.trim().is_empty() {
                inside = false;
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 5 {
                out.push(format!("{} {} {}", f[0], f[3], f[4..].join(" ")));
            }
        }
    }
    out
}

fn status(output: &str) -> &str {
    output
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
}

fn authoritative(output: &str) -> bool {
    output
        .lines()
        .find(|l| l.starts_with(";; flags:"))
        .is_some_and(|l| l.split(';').nth(2).unwrap_or("").contains(" aa"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_on_every_node_and_exact_negative_answers() {
    let mut c = cluster(&["--dns-allow-transfer", "127.0.0.1"]).await;
    c.start_hosts(1).await.unwrap();
    let (code, created) = c.post(1, "/v1/databases", &create_body("web")).await.unwrap();
    assert_eq!(code, 200, "{created}");
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let (_, db) = c.get(1, "/v1/databases/web").await.unwrap();
    let (addr, port) = (
        db["endpoint"]["addr"].as_str().unwrap().to_string(),
        db["endpoint"]["port"].as_u64().unwrap(),
    );
    let name = format!("web.admin.{ZONE}.");

    for node in c.ids() {
        // Every node converges on the applied state; wait for the database to be published.
        c.wait_for(Duration::from_secs(10), "the database in this node's zone", || async {
            Ok(answers(&dig(&c, node, &[&name, "TXT"]))
                .contains(&format!("{name} TXT \"status=available\""))
                .then_some(()))
        })
        .await
        .unwrap();
        let a = dig(&c, node, &[&name, "A"]);
        assert_eq!(status(&a), "NOERROR", "{a}");
        assert!(authoritative(&a), "AA bit: {a}");
        assert_eq!(answers(&a), [format!("{name} A {addr}")], "{a}");
        assert!(a.contains("EDNS: version: 0"), "EDNS answered: {a}");
        let srv = dig(&c, node, &[&format!("_postgresql._tcp.{name}"), "SRV"]);
        assert_eq!(
            answers(&srv),
            [format!("_postgresql._tcp.{name} SRV 0 0 {port} h1.hosts.{ZONE}.")],
            "{srv}"
        );
        let ro = dig(&c, node, &[&format!("web.ro.admin.{ZONE}."), "A"]);
        assert_eq!(
            answers(&ro),
            [format!("web.ro.admin.{ZONE}. A {addr}")],
            "no replicas: the primary: {ro}"
        );
        let host = dig(&c, node, &[&format!("h1.hosts.{ZONE}."), "A"]);
        assert_eq!(answers(&host), [format!("h1.hosts.{ZONE}. A {addr}")], "{host}");
        let soa = dig(&c, node, &[&format!("{ZONE}."), "SOA"]);
        assert!(answers(&soa)[0].starts_with(&format!("{ZONE}. SOA ns")), "{soa}");
        let ns = dig(&c, node, &[&format!("{ZONE}."), "NS"]);
        let mut ns_names: Vec<String> = answers(&ns)
            .into_iter()
            .map(|r| r.rsplit(' ').next().unwrap().to_string())
            .collect();
        ns_names.sort();
        assert_eq!(
            ns_names,
            (1..=3).map(|i| format!("ns{i}.ns.{ZONE}.")).collect::<Vec<_>>(),
            "an NS per control node: {ns}"
        );
        let glue = dig(&c, node, &[&format!("ns2.ns.{ZONE}."), "A"]);
        assert_eq!(answers(&glue), [format!("ns2.ns.{ZONE}. A 127.0.0.1")], "{glue}");

        // Case-insensitive, and the same over TCP.
        let mixed = dig(&c, node, &["WeB.AdMin.Db.KEEL.internal.", "A"]);
        assert_eq!(answers(&mixed).len(), 1, "{mixed}");
        let tcp = dig(&c, node, &["+tcp", &name, "A"]);
        assert_eq!(answers(&tcp), answers(&a), "{tcp}");

        // Negative answers.
        let nx = dig(&c, node, &[&format!("nope.{ZONE}."), "A"]);
        assert_eq!(status(&nx), "NXDOMAIN", "{nx}");
        assert!(authoritative(&nx), "{nx}");
        assert!(
            section(&nx, "AUTHORITY").iter().any(|r| r.contains(" SOA ")),
            "SOA in authority: {nx}"
        );
        let nodata = dig(&c, node, &[&name, "AAAA"]);
        assert_eq!(status(&nodata), "NOERROR", "{nodata}");
        assert!(answers(&nodata).is_empty(), "{nodata}");
        assert!(
            section(&nodata, "AUTHORITY").iter().any(|r| r.contains(" SOA ")),
            "{nodata}"
        );
        let outside = dig(&c, node, &["example.com.", "A"]);
        assert_eq!(status(&outside), "REFUSED", "{outside}");
        let outside_rd = dig(&c, node, &["+recurse", "www.example.org.", "A"]);
        assert_eq!(status(&outside_rd), "REFUSED", "no recursion: {outside_rd}");
    }

    // Zone transfer: allowed from 127.0.0.1 over TCP, refused from elsewhere.
    let axfr = dig(&c, 2, &[&format!("{ZONE}."), "AXFR"]);
    assert!(
        axfr.contains(&format!("{name}\t")) || axfr.contains(&name),
        "AXFR carries the zone: {axfr}"
    );
    assert_eq!(axfr.matches("\tSOA\t").count(), 2, "SOA first and last: {axfr}");
    let refused = dig(&c, 2, &["-b", "127.0.0.2", &format!("{ZONE}."), "AXFR"]);
    assert!(
        !refused.contains(&name) && refused.contains("Transfer failed"),
        "AXFR from a stranger is refused: {refused}"
    );

    // A deleted database is NXDOMAIN everywhere; measure how long the change takes to show.
    let (_, deleted) = c.delete(1, "/v1/databases/web").await.unwrap();
    let committed = Instant::now();
    wait_op(&c, deleted["operation_id"].as_str().unwrap()).await;
    for node in c.ids() {
        c.wait_for(Duration::from_secs(10), "the deleted name to be NXDOMAIN", || async {
            Ok((status(&dig(&c, node, &[&name, "A"])) == "NXDOMAIN").then_some(()))
        })
        .await
        .unwrap();
    }
    eprintln!(
        "delete → NXDOMAIN on all nodes within {:?} of the call",
        committed.elapsed()
    );

    // keel dns dump prints a zone file with the SOA first.
    let (ok, dump) = c
        .run_to_exit(&["dns".into(), "dump".into(), "--keel-addr".into(), c.url(3)])
        .unwrap();
    assert!(ok, "{dump}");
    assert!(dump.contains(&format!("$ORIGIN {ZONE}.")), "{dump}");
    assert!(
        dump.lines().any(|l| l.starts_with("@\t") && l.contains("\tSOA\t")),
        "{dump}"
    );
}

/// NSD as a secondary of `primary` (ip:port) on a port of its own, killed on drop.
struct Nsd {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nsd {
    fn start_on(primary: &str, port: u16) -> Self {
        let dir = tempfile::Builder::new().prefix("nsd-secondary-").tempdir().unwrap();
        let d = dir.path().display();
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1\n  port: {port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  \
             pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
             xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  xfrd-reload-timeout: 0\n  verbosity: 2\n\
             remote-control:\n  control-enable: no\n\
             zone:\n  name: {ZONE}\n  zonefile: \"{d}/{ZONE}.zone\"\n  allow-notify: 127.0.0.1 NOKEY\n  \
             request-xfr: AXFR {} NOKEY\n",
            primary.replace(':', "@")
        );
        let path = dir.path().join("nsd.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("nsd")
            .args(["-d", "-c"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("nsd runs (apt-get install nsd)");
        Self { child, port, dir }
    }

    fn log(&self) -> String {
        let d = self.dir.path();
        std::fs::read_to_string(d.join("nsd.log")).unwrap_or_default()
            + &std::fs::read_to_string(d.join("stderr.log")).unwrap_or_default()
    }

    fn dig(&self, args: &[&str]) -> String {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &self.port.to_string(), "+time=2", "+tries=1"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nsd_secondary_transfers_the_zone_and_answers_the_same() {
    let nsd_port = keel_jepsen::ports::free_port();
    let notify = format!("127.0.0.1:{nsd_port}");
    let mut c = cluster(&["--dns-allow-transfer", "127.0.0.1", "--dns-notify", &notify]).await;
    c.start_hosts(1).await.unwrap();
    let (_, created) = c.post(1, "/v1/databases", &create_body("first")).await.unwrap();
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");

    // The secondary listens where the cluster was told to NOTIFY.
    let nsd = Nsd::start_on(&c.node(1).dns_addr, nsd_port);

    let first = format!("first.admin.{ZONE}.");
    let transferred = c
        .wait_for(Duration::from_secs(30), "NSD to transfer the zone", || async {
            Ok((!answers(&nsd.dig(&[&first, "A"])).is_empty()).then_some(()))
        })
        .await;
    assert!(
        transferred.is_ok(),
        "{transferred:?}\nNSD log:\n{}\nKeel node 1:\n{}\nNSD:\n{}",
        nsd.log(),
        dig(&c, 1, &[&format!("{ZONE}."), "AXFR"]),
        nsd.dig(&[&first, "A"])
    );
    let queries: Vec<Vec<String>> = vec![
        vec![first.clone(), "A".into()],
        vec![first.clone(), "TXT".into()],
        vec![format!("first.ro.admin.{ZONE}."), "A".into()],
        vec![format!("_postgresql._tcp.{first}"), "SRV".into()],
        vec![format!("h1.hosts.{ZONE}."), "A".into()],
        vec![format!("{ZONE}."), "SOA".into()],
        vec![format!("{ZONE}."), "NS".into()],
        vec![format!("nope.{ZONE}."), "A".into()],
        vec![first.clone(), "AAAA".into()],
    ];
    for q in &queries {
        let q: Vec<&str> = q.iter().map(String::as_str).collect();
        let (ours, theirs) = (dig(&c, 1, &q), nsd.dig(&q));
        assert_eq!(status(&ours), status(&theirs), "{q:?}\nKeel:\n{ours}\nNSD:\n{theirs}");
        let (mut a, mut b) = (answers(&ours), answers(&theirs));
        a.sort();
        b.sort();
        assert_eq!(a, b, "{q:?}\nKeel:\n{ours}\nNSD:\n{theirs}");
    }

    // A change reaches the secondary by NOTIFY, without waiting for its refresh.
    let (_, created) = c.post(1, "/v1/databases", &create_body("second")).await.unwrap();
    let op = wait_op(&c, created["operation_id"].as_str().unwrap()).await;
    assert_eq!(op["state"], "succeeded", "{op}");
    let committed = Instant::now();
    let second = format!("second.admin.{ZONE}.");
    let picked_up = c
        .wait_for(Duration::from_secs(30), "NSD to pick up the new database", || async {
            Ok((!answers(&nsd.dig(&[&second, "A"])).is_empty()).then_some(()))
        })
        .await;
    assert!(picked_up.is_ok(), "{picked_up:?}\nNSD log:\n{}", nsd.log());
    eprintln!(
        "new database visible on the NSD secondary {:?} after it became available",
        committed.elapsed()
    );
}
