//! `deploy/local-cluster.sh` end to end: three presenced nodes in network
//! namespaces, a three-server JetStream cluster, and the Kamailio front on
//! 127.0.0.1:5080. PUBLISHes through the front are answered 200 whichever
//! node the front picks (the nodes forward to the partition's owner); after
//! a node's kill -9 they are answered 200 again once its leases expired
//! and the front stopped choosing it; the node restarts and rejoins. A node
//! cut off from the network (its veth down) stops serving each partition
//! before any other node starts: never two owners.
//!
//! Needs root (namespaces), nats-server and kamailio, as `.ci/run`
//! provides; it is the only test that uses the script's fixed bridge and
//! addresses.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local-cluster.sh"))
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .env("PRESENCED", env!("CARGO_BIN_EXE_presenced"))
            .output()
            .expect("run deploy/local-cluster.sh");
        assert!(out.status.success(), "local-cluster.sh {args:?}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    /// Partitions node `i` serves now, from its JSON log.
    fn served_set(&self, i: u32) -> std::collections::BTreeSet<u64> {
        let log = std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default();
        common::nats::served_partitions(log.lines().filter_map(|l| serde_json::from_str(l).ok()))
    }

    fn served(&self, i: u32) -> usize {
        self.served_set(i).len()
    }
}

impl Cluster {
    /// Node `i`'s "serving" and "stopped serving" records: (Unix seconds,
    /// serving?, partition).
    fn events(&self, i: u32) -> Vec<(f64, bool, u64)> {
        let log = std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|r| {
                let serving = match r["message"].as_str()? {
                    "serving partition" => true,
                    "stopped serving partition" => false,
                    _ => return None,
                };
                Some((unix_seconds(r["timestamp"].as_str()?)?, serving, r["partition"].as_u64()?))
            })
            .collect()
    }
}

/// `2026-12-07T16:22:12.870062Z` as Unix seconds.
fn unix_seconds(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let mut t = time.split(':');
    let (h, min, sec) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/local-cluster.sh")).arg("down").env("CLUSTER_DIR", &self.dir).output();
    }
}

fn publish(s: &UdpSocket, i: u32) -> Option<u16> {
    let aor = format!("sip:lc{i}@example.com");
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>"
    );
    let branch = format!("z9hG4bKlc{i}x{}", Instant::now().elapsed().as_nanos() ^ (i as u128 * 7919) ^ std::process::id() as u128);
    let req = format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=lc\r\nTo: <{aor}>\r\n\
Call-ID: {branch}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        s.local_addr().unwrap(),
        doc.len()
    );
    s.send_to(req.as_bytes(), "127.0.0.1:5080").unwrap();
    let mut buf = [0u8; 65536];
    let n = s.recv(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split(' ').nth(1)?.parse().ok()
}

/// Publishes each of `n` presentities until it gets a 200, within `limit`.
fn publish_all(s: &UdpSocket, n: u32, limit: Duration) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        loop {
            match publish(s, i) {
                Some(200) => break,
                other => assert!(start.elapsed() < limit, "PUBLISH {i} through the front: {other:?} after {:?}", start.elapsed()),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    start.elapsed()
}

#[test]
fn a_local_cluster_serves_through_its_front_and_survives_a_node_kill() {
    let c = Cluster { dir: std::env::temp_dir().join(format!("presence-cluster-{}", std::process::id())) };
    c.script(&["down"]);
    c.script(&["up", "3"]);
    let start = Instant::now();
    while (1..=3).map(|i| c.served(i)).sum::<usize>() != 1024 || (1..=3).any(|i| c.served(i) == 0) {
        assert!(start.elapsed() < Duration::from_secs(90), "partitions not split within 90 s: {:?}", (1..=3).map(|i| c.served(i)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("3 nodes serve {:?} partitions {:?} after up", (1..=3).map(|i| c.served(i)).collect::<Vec<_>>(), start.elapsed());
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let took = publish_all(&s, 30, Duration::from_secs(20));
    eprintln!("30 PUBLISHes through the front answered 200 in {took:?}");

    c.script(&["kill", "2"]);
    let killed = Instant::now();
    while c.served(1) + c.served(3) != 1024 {
        assert!(killed.elapsed() < Duration::from_secs(15), "node 2's partitions not taken over: {} + {}", c.served(1), c.served(3));
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("nodes 1 and 3 serve all partitions {:?} after node 2's kill -9", killed.elapsed());
    let took = publish_all(&s, 30, Duration::from_secs(20));
    eprintln!("30 PUBLISHes through the front answered 200 in {took:?} after the take-over");

    c.script(&["restart", "2"]);
    let restarted = Instant::now();
    while c.served(2) == 0 || (1..=3).map(|i| c.served(i)).sum::<usize>() != 1024 {
        assert!(restarted.elapsed() < Duration::from_secs(60), "node 2 did not rejoin: {:?}", (1..=3).map(|i| c.served(i)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("node 2 rejoined and serves {} partitions {:?} after its restart", c.served(2), restarted.elapsed());
    publish_all(&s, 30, Duration::from_secs(20));

    // A network partition: node 2's link goes down. It stops serving when
    // its leases run out by its own clock; the others take them only after
    // the store expired them. Never two owners.
    let held = c.served_set(2);
    let cut = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let link = |state: &str| assert!(Command::new("ip").args(["link", "set", "vprs-n2", state]).status().unwrap().success());
    link("down");
    let since = Instant::now();
    while c.served(1) + c.served(3) != 1024 || c.served(2) != 0 {
        assert!(since.elapsed() < Duration::from_secs(15), "no take-over of the cut node's partitions: {:?}", (1..=3).map(|i| c.served(i)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stops: std::collections::BTreeMap<u64, f64> = c.events(2).into_iter().filter(|e| !e.1 && e.0 >= cut).map(|e| (e.2, e.0)).collect();
    // It may also have been taking some when cut: those stop too.
    let unstopped: Vec<&u64> = held.iter().filter(|p| !stops.contains_key(p)).collect();
    assert!(unstopped.is_empty(), "the cut node never stopped partitions {unstopped:?}");
    let mut margin = f64::MAX;
    for (t, _, p) in [1, 3].iter().flat_map(|&i| c.events(i)).filter(|e| e.1 && e.0 >= cut) {
        if let Some(stop) = stops.get(&p) {
            assert!(t > *stop, "partition {p} served by another node at {t} before node 2 stopped at {stop}");
            margin = margin.min(t - stop);
        }
    }
    eprintln!("cut node 2 stopped its {} partitions, each at least {:.0} ms before another node served it", held.len(), margin * 1000.0);
    link("up");
    let healed = Instant::now();
    while c.served(2) == 0 {
        assert!(healed.elapsed() < Duration::from_secs(60), "node 2 did not rejoin after the cut healed");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("node 2 serves {} partitions {:?} after its link came back", c.served(2), healed.elapsed());
}
