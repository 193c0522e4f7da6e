//! `deploy/local-cluster.sh` end to end: three presenced nodes in network
//! namespaces, a three-server JetStream cluster, and the Kamailio front on
//! 127.0.0.1:5080. PUBLISHes through the front are answered 200 whichever
//! node the front picks (the nodes forward to the partition's owner); after
//! a node's kill -9 they are answered 200 again once its leases expired
//! and the front stopped choosing it; the node restarts and rejoins. A node
//! cut off from the network (its veth down) stops serving each partition
//! before any other node starts: never two owners. Watchers through the
//! front hear publications of presentities on other nodes, and, after the
//! owner's kill -9, a new PUBLISH over their existing dialogs, the dialogs
//! the dead node held included; a refresh of such a dialog sent to the
//! dead node is answered through the front's failure route. A fourth
//! node takes the partitions placement gives it.
//!
//! Needs root (namespaces), nats-server and kamailio, as `.ci/run`
//! provides; it is the only test that uses the script's fixed bridge and
//! addresses.

mod common;

use presence_engine::cluster::partition::partition_of;
use presence_engine::cluster::placement;
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
    publish_note(s, &format!("sip:lc{i}@example.com"), "")
}

/// PUBLISHes `note` for `aor` through the front; the status, if any came.
fn publish_note(s: &UdpSocket, aor: &str, note: &str) -> Option<u16> {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    let branch = format!("z9hG4bKlc{}", common::unique());
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

/// Publishes `note` for `aor` until it gets a 200, within `limit`.
fn publish_until_200(s: &UdpSocket, aor: &str, note: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        match publish_note(s, aor, note) {
            Some(200) => return,
            other => assert!(start.elapsed() < limit, "PUBLISH for {aor} through the front: {other:?} after {:?}", start.elapsed()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A watcher subscribed through the front, and the node its subscription
/// lives on (the bottom Via of its NOTIFYs).
struct Watcher {
    s: UdpSocket,
    aor: String,
    node: u32,
    /// The SUBSCRIBE, and the 200 that made the dialog.
    req: String,
    ok: String,
}

impl Watcher {
    fn subscribe(aor: &str) -> Watcher {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = s.local_addr().unwrap();
        let n = common::unique();
        let req = format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bKlw{n}\r\nMax-Forwards: 70\r\nFrom: <sip:watcher{n}@example.net>;tag=w{n}\r\n\
To: <{aor}>\r\nCall-ID: lw-{n}-{}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@{me}>\r\nEvent: presence\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            std::process::id()
        );
        let mut w = Watcher { s, aor: aor.into(), node: 0, req: req.clone(), ok: String::new() };
        let start = Instant::now();
        let (mut ok, mut notified) = (false, false);
        while !(ok && notified) {
            assert!(start.elapsed() < Duration::from_secs(15), "SUBSCRIBE for {aor} through the front: 200 {ok}, NOTIFY {notified}");
            if !ok {
                w.s.send_to(req.as_bytes(), "127.0.0.1:5080").unwrap();
            }
            let until = Instant::now() + Duration::from_secs(1);
            while Instant::now() < until && !(ok && notified) {
                match w.receive(Duration::from_millis(200)) {
                    Some(Received::Status(200)) => ok = true,
                    Some(Received::Notify(_)) => notified = true,
                    _ => {}
                }
            }
        }
        w
    }

    /// The next message: a response's status, or a NOTIFY's body (answered 200).
    fn receive(&mut self, wait: Duration) -> Option<Received> {
        self.s.set_read_timeout(Some(wait)).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, from) = self.s.recv_from(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(rest) = text.strip_prefix("SIP/2.0 ") {
            let status = rest.split(' ').next()?.parse().ok()?;
            if status == 200 && self.ok.is_empty() {
                self.ok = text.clone();
            }
            return Some(Received::Status(status));
        }
        if !text.starts_with("NOTIFY ") {
            return None;
        }
        let (head, body) = text.split_once("\r\n\r\n")?;
        let keep = |l: &&str| ["Via:", "From:", "To:", "Call-ID:", "CSeq:"].iter().any(|h| l.starts_with(h));
        let kept: Vec<&str> = head.lines().filter(keep).collect();
        let ok = format!("SIP/2.0 200 OK\r\n{}\r\nContent-Length: 0\r\n\r\n", kept.join("\r\n"));
        self.s.send_to(ok.as_bytes(), from).unwrap();
        // The node's own Via is the last: 10.77.0.(10 + node).
        let node_via = head.lines().rfind(|l| l.starts_with("Via:"))?;
        let ip = node_via.split_whitespace().nth(2)?.split([':', ';']).next()?;
        self.node = ip.rsplit('.').next()?.parse::<u32>().ok()?.checked_sub(10)?;
        Some(Received::Notify(body.to_string()))
    }
}

impl Watcher {
    /// An in-dialog SUBSCRIBE (RFC 3261 12.2.1.1): to the remote target
    /// the 200's Contact gave, through its Record-Route reversed, sent to
    /// the front.
    fn refresh(&self, cseq: u32) -> String {
        let header = |m: &str, name: &str| m.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default();
        let target = header(&self.ok, "Contact:");
        let target = target.trim_start_matches('<').split('>').next().unwrap_or_default().to_string();
        let routes: Vec<String> = self.ok.lines().filter_map(|l| l.strip_prefix("Record-Route:")).map(|v| format!("Route: {}\r\n", v.trim())).rev().collect();
        let me = self.s.local_addr().unwrap();
        format!(
            "SUBSCRIBE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bKlr{}\r\nMax-Forwards: 70\r\n{}From: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
CSeq: {cseq} SUBSCRIBE\r\nContact: <sip:w@{me}>\r\nEvent: presence\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            common::unique(),
            routes.concat(),
            header(&self.req, "From:"),
            header(&self.ok, "To:"),
            header(&self.req, "Call-ID:"),
        )
    }
}

enum Received {
    Status(u16),
    Notify(String),
}

/// A NOTIFY's document, and when it came.
type Notified = (Instant, String);

/// Watchers answering every NOTIFY at once, on a thread of their own, as a
/// UA does: the front gives up on a NOTIFY unanswered within its 1 s
/// timer, and the node then ends the subscription (RFC 6665).
struct Answering {
    /// Each watcher's presentity and node.
    of: Vec<(String, u32)>,
    /// The documents each watcher was sent.
    seen: std::sync::Arc<std::sync::Mutex<Vec<Vec<Notified>>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Answering {
    fn start(mut watchers: Vec<Watcher>) -> Answering {
        let of = watchers.iter().map(|w| (w.aor.clone(), w.node)).collect();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![Vec::new(); watchers.len()]));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                for (i, w) in watchers.iter_mut().enumerate() {
                    while let Some(r) = w.receive(Duration::from_millis(1)) {
                        if let Received::Notify(body) = r {
                            seen2.lock().unwrap()[i].push((Instant::now(), body));
                        }
                    }
                }
            }
        });
        Answering { of, seen, stop, thread: Some(thread) }
    }

    /// Waits for a NOTIFY to watcher `i` whose document holds `note`.
    fn notified_of(&self, i: usize, note: &str, wait: Duration) -> bool {
        self.notified_at(i, note, wait).is_some()
    }

    /// When the first NOTIFY to watcher `i` whose document holds `note`
    /// came, waiting for it up to `wait`.
    fn notified_at(&self, i: usize, note: &str, wait: Duration) -> Option<Instant> {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            if let Some((at, _)) = self.seen.lock().unwrap()[i].iter().find(|(_, b)| b.contains(&format!("<note>{note}</note>"))) {
                return Some(*at);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The node placement gives `aor`'s partition among `live` (1024 partitions).
fn owner_of(aor: &str, live: &[u32]) -> u32 {
    placement::owner(partition_of(aor.as_bytes(), 1024), live).unwrap()
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

    // Watchers through the front: their subscriptions live on the node the
    // front picked, their presentities on the node placement picked; each
    // publication reaches them across nodes, their NOTIFYs through the front.
    let watchers = Answering::start((0..24).map(|i| Watcher::subscribe(&format!("sip:lw{i}@example.com"))).collect());
    for (i, (aor, node)) in watchers.of.iter().enumerate() {
        publish_until_200(&s, aor, "before", Duration::from_secs(10));
        assert!(watchers.notified_of(i, "before", Duration::from_secs(5)), "{aor}'s watcher on node {node} heard nothing");
    }
    let crossing = watchers.of.iter().filter(|(aor, node)| *node != owner_of(aor, &[1, 2, 3])).count();
    eprintln!("24 watchers through the front, {crossing} of them on another node than their presentity: each heard its PUBLISH");
    assert!(crossing > 0, "no watcher crossed nodes: the test shows nothing");

    // A watcher of its own whose dialog lives on node 2, to refresh it
    // after node 2's death.
    let mut refresher = (0..).map(|i| Watcher::subscribe(&format!("sip:rf{i}@example.com"))).find(|w| w.node == 2).expect("a watcher on node 2");

    // Kill -9 node 2 while PUBLISHes of others keep coming: it owned
    // watched presentities, and it held dialogs (replicated, in partitions
    // it served). A new PUBLISH reaches every watcher of its presentities
    // and every watcher whose dialog it held, over their existing dialogs.
    let affected: Vec<usize> = (0..watchers.of.len()).filter(|&i| owner_of(&watchers.of[i].0, &[1, 2, 3]) == 2 || watchers.of[i].1 == 2).collect();
    let held_by_node_2 = affected.iter().filter(|&&i| watchers.of[i].1 == 2).count();
    assert!(affected.len() > held_by_node_2, "no watcher of node 2's presentities lives elsewhere");
    assert!(held_by_node_2 > 0, "node 2 held no dialog: the test shows nothing of dialogs outliving their node");
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop_load.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let mut sent = 0u32;
            // A steady load of at most 200 PUBLISH/s: what the failover
            // must hold under, not a saturation of these 2 cores (whose
            // CPU the JetStream cluster's take-over writes need too).
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publish(&s, 100 + sent % 200);
                sent += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            sent
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    c.script(&["kill", "2"]);
    let killed = Instant::now();
    let killed_unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    // The refresher's in-dialog SUBSCRIBEs name node 2: the front times out
    // on the dead node and sends each to a live one, which gets it to the
    // dialog's holder (503 until a node serves the dialog's partition).
    // It answers the new holder's NOTIFYs meanwhile.
    let refreshing = std::thread::spawn(move || {
        let mut cseq = 1;
        loop {
            assert!(killed.elapsed() < Duration::from_secs(12), "no refresh of a dialog node 2 held got a 200 through the front");
            cseq += 1;
            refresher.s.send_to(refresher.refresh(cseq).as_bytes(), "127.0.0.1:5080").unwrap();
            let sent = Instant::now();
            while sent.elapsed() < Duration::from_millis(2500) {
                match refresher.receive(Duration::from_millis(100)) {
                    Some(Received::Status(200)) => return killed.elapsed(),
                    Some(Received::Status(code)) if code >= 300 => break,
                    _ => {}
                }
            }
        }
    });
    let mut slowest = Duration::ZERO;
    // Each presentity is PUBLISHed by a client of its own, as their UAs
    // would, until it gets a 200.
    let publishers: Vec<_> = affected
        .iter()
        .map(|&i| {
            let aor = watchers.of[i].0.clone();
            std::thread::spawn(move || {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                publish_until_200(&s, &aor, "after", Duration::from_secs(15));
                killed.elapsed()
            })
        })
        .collect();
    let mut timeline = Vec::new();
    for (&i, publisher) in affected.iter().zip(publishers) {
        let (aor, node) = &watchers.of[i];
        let published = publisher.join().unwrap();
        let heard = watchers.notified_at(i, "after", Duration::from_secs(5));
        let heard = heard.unwrap_or_else(|| panic!("{aor}'s watcher, its dialog on node {node}, missed the PUBLISH after the kill")).duration_since(killed);
        slowest = slowest.max(heard);
        timeline
            .push(format!("{aor} (presentity on node {}, dialog on node {node}): 200 at {published:.2?}, NOTIFY at {heard:.2?}", owner_of(aor, &[1, 2, 3])));
    }
    eprintln!("after the kill -9 of node 2:\n  {}", timeline.join("\n  "));
    drop(watchers);
    stop_load.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.join().unwrap();
    eprintln!(
        "node 2 killed under load ({sent} other PUBLISHes): the {} watchers of its presentities or with their dialog on it ({held_by_node_2} of those) heard a new PUBLISH over their dialogs within {slowest:?}",
        affected.len()
    );
    let refreshed = refreshing.join().unwrap();
    eprintln!("a refresh of a dialog node 2 held, sent to node 2 through the front, was answered 200 {refreshed:?} after the kill");
    // The bound is 5 s, for the product's (release) build; a debug
    // build of presenced takes the partitions over about 0.3 s slower on
    // these 2 cores (its cluster thread passes over every partition per
    // input), so CI's debug run is allowed 7 s.
    let bound = Duration::from_secs(if cfg!(debug_assertions) { 7 } else { 5 });
    assert!(slowest < bound, "a watcher heard of a new PUBLISH {slowest:?} after its presentity's owner was killed");
    while c.served(1) + c.served(3) != 1024 {
        assert!(killed.elapsed() < Duration::from_secs(15), "node 2's partitions not taken over: {} + {}", c.served(1), c.served(3));
        std::thread::sleep(Duration::from_millis(50));
    }
    let served_after: Vec<f64> = [1, 3].iter().flat_map(|&i| c.events(i)).filter(|e| e.1 && e.0 >= killed_unix).map(|e| e.0 - killed_unix).collect();
    let (first, last) = served_after.iter().fold((f64::MAX, 0f64), |(a, b), &t| (a.min(t), b.max(t)));
    eprintln!(
        "nodes 1 and 3 serve all partitions {:?} after node 2's kill -9 (its {} partitions served again from {first:.2} s to {last:.2} s after it, by the nodes' logs)",
        killed.elapsed(),
        served_after.len()
    );
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

    // A fourth node: the partitions placement gives it move to it (one at
    // a time), and the front goes on answering.
    while (1..=3).map(|i| c.served(i)).sum::<usize>() != 1024 {
        assert!(healed.elapsed() < Duration::from_secs(60), "the three nodes did not settle: {:?}", (1..=3).map(|i| c.served(i)).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(100));
    }
    c.script(&["restart", "4"]);
    let added = Instant::now();
    let its: std::collections::BTreeSet<u64> =
        (0..1024u16).filter(|&p| placement::owner(presence_engine::cluster::partition::Partition(p), &[1, 2, 3, 4]) == Some(4)).map(u64::from).collect();
    let mut refused = 0;
    while c.served_set(4) != its || (1..=4).map(|i| c.served(i)).sum::<usize>() != 1024 {
        assert!(added.elapsed() < Duration::from_secs(120), "node 4 serves {} of its {} partitions", c.served(4), its.len());
        if publish(&s, added.elapsed().as_millis() as u32 % 30) != Some(200) {
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("node 4 took its {} partitions in {:?}; {refused} PUBLISHes through the front meanwhile were not answered 200", its.len(), added.elapsed());
    publish_all(&s, 30, Duration::from_secs(20));
}
