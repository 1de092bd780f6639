//! The zone served over real sockets and queried with dig: truncation over UDP with the
//! whole answer over TCP, and cached UDP answers that follow every change.

use std::net::SocketAddr;
use std::process::Command;

use keel_dns::server::ZoneServer;
use keel_dns::{DatabaseEntry, EndpointTable, Nameserver, Primary, ZoneConfig};

fn config() -> ZoneConfig {
    ZoneConfig {
        origin: "db.keel.internal.".into(),
        ttl: 5,
    }
}

/// A database with `replicas` readable replicas: 40 of them make `<db>.ro` larger than 512 bytes.
fn db(name: &str, replicas: u8) -> DatabaseEntry {
    DatabaseEntry {
        name: name.into(),
        status: "available".into(),
        primary: Some(Primary {
            host: "h1".into(),
            addr: "10.0.0.1".parse().unwrap(),
            port: 5433,
            zone: "a".into(),
        }),
        readers: (1..=replicas)
            .map(|i| keel_dns::Reader {
                host: format!("r{i}"),
                addr: format!("10.0.1.{i}").parse().unwrap(),
                port: 5433,
                zone: "a".into(),
            })
            .collect(),
    }
}

fn table(serial: u32, databases: Vec<DatabaseEntry>) -> EndpointTable {
    EndpointTable {
        serial,
        nameservers: vec![Nameserver {
            id: 1,
            addr: "127.0.0.1".parse().unwrap(),
        }],
        databases,
    }
}

async fn serve(table: EndpointTable) -> (ZoneServer, SocketAddr) {
    let server = ZoneServer::new(vec![]);
    server.publish(&config(), table).await.unwrap();
    let sockets = ZoneServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = sockets.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(sockets, std::future::pending()).await });
    (server, addr)
}

/// dig's full output for `args` against `addr`.
fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([format!("@{}", addr.ip()), "-p".into(), addr.port().to_string()])
        .args(["+tries=1", "+time=2"])
        .args(args)
        .output()
        .expect("dig runs (Debian package dnsutils; scripts/setup.sh installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn answers(out: &str) -> usize {
    out.lines()
        .skip_while(|l| !l.starts_with(";; ANSWER SECTION"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let (_server, addr) = serve(table(2, vec![db("big", 40)])).await;
    // Twice: the second answer comes from the cache and must be the same.
    for round in 0..2 {
        let udp = dig(addr, &["+noedns", "+ignore", "big.ro.db.keel.internal", "A"]);
        assert!(udp.contains(" tc"), "round {round}: truncation flag over UDP:\n{udp}");
        assert!(udp.contains("status: NOERROR"), "{udp}");
    }
    let tcp = dig(addr, &["+tcp", "big.ro.db.keel.internal", "A"]);
    assert!(!tcp.contains(" tc"), "{tcp}");
    assert_eq!(answers(&tcp), 40, "{tcp}");
    // dig's default (retry over TCP on TC) gets the whole answer too.
    assert_eq!(answers(&dig(addr, &["+noedns", "big.ro.db.keel.internal", "A"])), 40);
    // With a large EDNS buffer it fits in one datagram.
    let edns = dig(addr, &["+bufsize=4096", "+ignore", "big.ro.db.keel.internal", "A"]);
    assert!(!edns.contains(" tc"), "{edns}");
    assert_eq!(answers(&edns), 40, "{edns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_follow_every_change() {
    let (server, addr) = serve(table(2, vec![db("orders", 0)])).await;
    let ask = |name: &str| {
        dig(
            addr,
            &[
                "+noall",
                "+answer",
                "+comments",
                "+question",
                &format!("{name}.db.keel.internal"),
                "A",
            ],
        )
    };
    for _ in 0..3 {
        let out = ask("orders");
        assert!(out.contains("10.0.0.1"), "{out}");
        assert!(out.contains(" aa"), "authoritative: {out}");
    }
    // Case is part of the query's bytes: a differently cased name is its own cache entry,
    // and its question comes back as asked.
    for _ in 0..2 {
        let upper = ask("ORDERS");
        assert!(
            upper.contains(";ORDERS.db.keel.internal") && upper.contains("10.0.0.1"),
            "{upper}"
        );
    }

    let mut moved = db("orders", 0);
    moved.primary.as_mut().unwrap().addr = "10.0.0.9".parse().unwrap();
    assert!(server
        .publish_changes(&config(), 3, vec![("orders".into(), Some(moved))])
        .await
        .unwrap());
    let out = ask("orders");
    assert!(
        out.contains("10.0.0.9") && !out.contains("10.0.0.1"),
        "the new address at once: {out}"
    );

    assert!(server
        .publish_changes(&config(), 4, vec![("orders".into(), None)])
        .await
        .unwrap());
    let out = ask("orders");
    assert!(out.contains("NXDOMAIN"), "{out}");

    // Many distinct queries, each answered, including while changes are published.
    for i in 0..50u32 {
        let name = format!("n{i}");
        let entry = db(&name, 0);
        server
            .publish_changes(&config(), 5 + i, vec![(name.clone(), Some(entry))])
            .await
            .unwrap();
        let out = ask(&name);
        assert!(out.contains("10.0.0.1"), "{name}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_larger_than_one_message_transfers_whole() {
    // 3,000 databases: about 15,000 records, several times what one 64 KiB message holds.
    let databases: Vec<DatabaseEntry> = (0..3000).map(|i| db(&format!("db{i:04}"), 0)).collect();
    let server = ZoneServer::new(vec!["127.0.0.1".parse().unwrap()]);
    server.publish(&config(), table(9, databases)).await.unwrap();
    let expected = server.current().await.unwrap().zone_file();
    let expected_records = expected
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(['$', ';']))
        .count();
    let sockets = ZoneServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = sockets.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(sockets, std::future::pending()).await });

    let out = dig(addr, &["+noall", "+answer", "db.keel.internal", "AXFR"]);
    let records: Vec<&str> = out.lines().filter(|l| !l.is_empty() && !l.starts_with(';')).collect();
    assert!(records.first().is_some_and(|r| r.contains("\tSOA\t")), "SOA first");
    assert!(
        records.last().is_some_and(|r| r.contains("\tSOA\t")),
        "SOA last: {:?} of {}",
        records.last(),
        records.len()
    );
    // The zone file lists the SOA once; a transfer ends with it again.
    assert_eq!(records.len(), expected_records + 1, "every record transferred");
    assert!(out.contains("db2999.db.keel.internal."), "the last database is there");
}
