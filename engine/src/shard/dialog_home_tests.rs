//! Dialogs that live in partitions, simulated: three nodes of one shard,
//! each with its own view of the partitions, its records going to model
//! partition logs, and a seeded world that moves partitions, kills nodes
//! and brings them back, delays and loses what the nodes send each other
//! (hopped requests and their responses, documents), while watchers
//! refresh their dialogs at whichever node they reach (as the front's
//! failure route sends them) and presentities publish.
//!
//! A move follows the lease protocol's guarantee (`tests/sim_cluster.rs`
//! checks that protocol): the old owner stops before the new one has read
//! the partition's log back, and only then serves; the other nodes learn
//! of it each at its own time. A log takes a record only from the
//! partition's owner (the fence).
//!
//! Checked at every step: a dialog's NOTIFYs never go back in CSeq, and a
//! refresh of a live dialog is never answered 481 (nor 500, unless a later
//! refresh of the same dialog overtook it). After a calm: each dialog's
//! latest NOTIFY came from the node serving its partition (a take-over
//! tells the watcher), each dialog is held by exactly that node, no
//! acknowledged publication is missing, and every watcher is shown its
//! presentity's latest publication.

use super::*;
use crate::cluster::NodeId;
use crate::cluster::mail::NodeMsg;
use crate::cluster::partition::Partition;
use crate::cluster::view::ClusterView;
use crate::core::entropy::Entropy;
use crate::core::ids::tag_partition;
use crate::shard::durable::UnixClock;
use crate::shard::replica::forget_item;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NODES: NodeId = 3;
const PARTITIONS: u16 = 8;
const AORS: [&str; 3] = ["sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"];
const WATCHERS: usize = 9;

fn node_addr(n: NodeId) -> SocketAddr {
    format!("10.77.0.{}:5060", 10 + n).parse().unwrap()
}

fn node_at(addr: SocketAddr) -> Option<NodeId> {
    (1..=NODES).find(|&n| node_addr(n) == addr)
}

fn watcher_addr(i: usize) -> SocketAddr {
    format!("192.0.2.{}:5070", 10 + i).parse().unwrap()
}

fn publisher() -> SocketAddr {
    "192.0.2.200:5060".parse().unwrap()
}

fn subscribe(i: usize, aor: &str, cseq: u32, to_tag: Option<&str>) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let me = watcher_addr(i);
    format!(
        "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKd{i}x{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:w{i}@example.net>;tag=w{i}\r\n\
To: <{aor}>{to_tag}\r\nCall-ID: dw{i}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:w{i}@{me}>\r\nEvent: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
}

fn publish(aor: &str, note: &str, seq: u64) -> String {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"{note}\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKdp{seq}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\n\
To: <{aor}>\r\nCall-ID: dp{seq}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        doc.len()
    )
}

enum Packet {
    Sip { from: SocketAddr, bytes: Vec<u8> },
    Node { from: NodeId, msg: NodeMsg },
}

struct InFlight {
    at: Instant,
    to: NodeId,
    packet: Packet,
}

/// A watcher, as its UA sees its dialog.
#[derive(Default)]
struct Watcher {
    aor: usize,
    tag: Option<String>,
    cseq: u32,
    /// Each NOTIFY CSeq seen, with its body.
    notifies: HashMap<u32, Vec<u8>>,
    last_body: Vec<u8>,
    /// The node that sent the latest NOTIFY: the one the watcher's
    /// refreshes go to (its Contact).
    last_from: NodeId,
}

struct World {
    seed: u64,
    now: Instant,
    rng: Entropy,
    nodes: Vec<(Arc<ClusterView>, Shard)>,
    alive: Vec<bool>,
    /// Who holds each partition's lease, and its log.
    owner: Vec<NodeId>,
    logs: Vec<Vec<Box<[u8]>>>,
    /// View changes not yet seen: (node, partition, owner, when).
    pending: Vec<(NodeId, u16, Option<NodeId>, Instant)>,
    flight: Vec<InFlight>,
    watchers: Vec<Watcher>,
    loss: u64,
    published: u64,
    /// The PUBLISHes answered 200: (presentity, note).
    acked: Vec<(usize, String)>,
}

impl World {
    fn new(seed: u64) -> World {
        let now = Instant::now();
        let mut w = World {
            seed,
            now,
            rng: Entropy::for_shard(seed, u16::MAX),
            nodes: Vec::new(),
            alive: vec![true; NODES as usize],
            owner: (0..PARTITIONS).map(|p| 1 + (p as NodeId % NODES)).collect(),
            logs: vec![Vec::new(); PARTITIONS as usize],
            pending: Vec::new(),
            flight: Vec::new(),
            watchers: (0..WATCHERS).map(|i| Watcher { aor: i % AORS.len(), ..Default::default() }).collect(),
            loss: 15,
            published: 0,
            acked: Vec::new(),
        };
        for n in 1..=NODES {
            let node = w.fresh_node(n);
            w.nodes.push(node);
        }
        for n in 1..=NODES {
            for p in 0..PARTITIONS {
                w.view(n).set_owner(Partition(p), Some(w.owner[p as usize]), None);
            }
        }
        w
    }

    /// Node `n` as it starts: no partitions known.
    fn fresh_node(&mut self, n: NodeId) -> (Arc<ClusterView>, Shard) {
        let view = Arc::new(ClusterView::new(n, PARTITIONS));
        for other in 1..=NODES {
            view.set_address(other, if let SocketAddr::V4(a) = node_addr(other) { Some(a) } else { None });
        }
        view.open_logs(1);
        let mut cfg = ShardConfig::with_defaults(0, 1, node_addr(n));
        cfg.cluster = Some(view.clone());
        cfg.watch.min_notify_interval = Duration::ZERO;
        // Every PUBLISH of the run is a new publication of an hour.
        cfg.publish.max_publications = 1000;
        cfg.seed = self.seed ^ (n as u64) << 8 ^ self.rand(1 << 20);
        let mut shard = Shard::new(cfg, self.now);
        shard.attach_replica(UnixClock::system(self.now));
        (view, shard)
    }

    fn rand(&mut self, below: u64) -> u64 {
        self.rng.below(below.max(1))
    }

    fn view(&self, n: NodeId) -> &Arc<ClusterView> {
        &self.nodes[n as usize - 1].0
    }

    fn shard(&mut self, n: NodeId) -> &mut Shard {
        &mut self.nodes[n as usize - 1].1
    }

    fn live_nodes(&self) -> Vec<NodeId> {
        (1..=NODES).filter(|&n| self.alive[n as usize - 1]).collect()
    }

    /// Handles what node `n` produced: records to the logs (only the
    /// owner's land), node messages and SIP to nodes into the network,
    /// NOTIFYs and responses to the watchers.
    fn take(&mut self, n: NodeId, mut out: Outbox) {
        for (to, msg) in out.to_nodes.drain(..) {
            self.send(to, Packet::Node { from: n, msg });
        }
        for t in std::mem::take(&mut out.transmits) {
            let wire = t.wire().into_owned();
            if let Some(to) = node_at(t.to.addr) {
                self.send(to, Packet::Sip { from: node_addr(n), bytes: wire });
                continue;
            }
            let m = Message::parse(&wire, &Limits::default()).expect("the server sends what it can parse");
            if t.to.addr == publisher() {
                if std::env::var("SIM_DEBUG").is_ok() {
                    eprintln!("publisher got {:?} for {} from node {n}", String::from_utf8_lossy(&wire[..60]), String::from_utf8_lossy(m.call_id()));
                }
                if m.status() == Some(200) {
                    let seq: u64 = String::from_utf8_lossy(m.call_id()).trim_start_matches("dp").parse().unwrap();
                    let a = (0..AORS.len()).find(|&a| m.to().uri().as_bytes() == AORS[a].as_bytes()).unwrap();
                    self.acked.push((a, format!("n{seq}")));
                }
                continue;
            }
            let Some(i) = (0..WATCHERS).find(|&i| watcher_addr(i) == t.to.addr) else { continue };
            if m.is_request() {
                self.on_notify(n, i, &m, t.to);
            } else {
                self.on_response(i, &m);
            }
        }
        self.ship_records(n);
    }

    fn on_notify(&mut self, n: NodeId, i: usize, m: &Message<'_>, peer: Peer) {
        let seed = self.seed;
        let w = &mut self.watchers[i];
        let cseq = m.cseq().seq;
        match w.notifies.get(&cseq) {
            // A retransmission.
            Some(body) => assert_eq!(body, m.body(), "seed {seed}: watcher {i} got two NOTIFYs with CSeq {cseq}"),
            None => {
                let last = w.notifies.keys().max().copied().unwrap_or(0);
                assert!(cseq > last, "seed {seed}: watcher {i}'s dialog went back from CSeq {last} to {cseq} (node {n})");
                w.notifies.insert(cseq, m.body().to_vec());
                w.last_body = m.body().to_vec();
                w.last_from = n;
            }
        }
        let mut ok = Vec::new();
        sip::response_to(&mut ok, m.raw(), 200, "OK", None, None).finish(None, b"");
        let mut more = Outbox::default();
        let now = self.now;
        self.shard(n).on_message(now, peer, &ok, &mut more);
        self.take(n, more);
    }

    fn on_response(&mut self, i: usize, m: &Message<'_>) {
        if m.cseq().method != b"SUBSCRIBE" {
            return;
        }
        let seed = self.seed;
        if std::env::var("SIM_DEBUG").is_ok() {
            eprintln!("watcher {i} got {} for CSeq {} to-tag {:?}", m.status().unwrap_or(0), m.cseq().seq, m.to().tag().map(String::from_utf8_lossy));
        }
        let w = &mut self.watchers[i];
        let status = m.status().unwrap_or(0);
        if w.tag.is_none() {
            if status == 200 {
                w.tag = m.to().tag().map(|t| String::from_utf8_lossy(t).into_owned());
            }
            return;
        }
        // 500 only for a refresh overtaken by a later one of the same
        // dialog on its way (RFC 3261 12.2.2: a lower CSeq).
        let overtaken = status == 500 && w.cseq > m.cseq().seq;
        assert!(status == 200 || status == 503 || overtaken, "seed {seed}: watcher {i}'s refresh (CSeq {}) answered {status}", m.cseq().seq);
    }

    fn send(&mut self, to: NodeId, packet: Packet) {
        if self.rand(100) < self.loss {
            return;
        }
        let at = self.now + Duration::from_millis(self.rand(200));
        self.flight.push(InFlight { at, to, packet });
    }

    /// Node `n`'s records go to their logs; a node that is not the
    /// partition's owner is fenced out.
    fn ship_records(&mut self, n: NodeId) {
        let now = self.now;
        let view = self.view(n).clone();
        let q = view.logs().unwrap();
        self.shard(n).ship_backlog(now, q);
        while let Some(s) = q.next_shipped(0) {
            if self.owner[s.partition.0 as usize] == n && self.alive[n as usize - 1] {
                self.logs[s.partition.0 as usize].push(s.bytes);
            }
        }
    }

    /// Partition `p` moves to node `to`: its old owner stops, the lease is
    /// `to`'s, `to` reads the log back and then serves; the other nodes
    /// learn of it within 400 ms each.
    fn move_partition(&mut self, p: u16, to: NodeId) {
        let from = self.owner[p as usize];
        // What a node learns of a partition's owner comes in order: a
        // newer move supersedes what an older one had not told yet.
        self.pending.retain(|e| e.1 != p);
        if self.alive[from as usize - 1] {
            self.view(from).set_owner(Partition(p), None, None);
        }
        self.owner[p as usize] = to;
        let view = self.view(to).clone();
        // Holding the lease, catching up: the host shows no owner.
        view.set_owner(Partition(p), None, None);
        let q = view.logs().unwrap();
        q.replay(0, forget_item(Partition(p))).unwrap();
        for r in &self.logs[p as usize] {
            q.replay(0, r.clone()).unwrap();
        }
        let now = self.now;
        loop {
            let mut out = Outbox::default();
            let n = self.shard(to).put_back_replayed(now, q, 1000, &mut out);
            self.take(to, out);
            if n == 0 {
                break;
            }
        }
        view.set_owner(Partition(p), Some(to), None);
        // Its dialogs ask now that it serves (the host's next tick).
        let mut out = Outbox::default();
        self.shard(to).put_back_replayed(now, q, 0, &mut out);
        self.take(to, out);
        for n in 1..=NODES {
            if n != to {
                let when = self.now + Duration::from_millis(self.rand(400));
                self.pending.push((n, p, Some(to), when));
            }
        }
    }

    /// Node `n` dies; its partitions go to the live ones.
    fn kill(&mut self, n: NodeId) {
        self.alive[n as usize - 1] = false;
        self.pending.retain(|e| e.0 != n);
        let live = self.live_nodes();
        for p in 0..PARTITIONS {
            if self.owner[p as usize] == n {
                let to = live[self.rand(live.len() as u64) as usize];
                self.move_partition(p, to);
            }
        }
    }

    /// Node `n` starts again, empty, serving nothing until moves give it
    /// partitions.
    fn revive(&mut self, n: NodeId) {
        let node = self.fresh_node(n);
        self.nodes[n as usize - 1] = node;
        self.alive[n as usize - 1] = true;
        for p in 0..PARTITIONS {
            let owner = self.owner[p as usize];
            self.view(n).set_owner(Partition(p), Some(owner), None);
        }
    }

    /// Watcher `i` sends its SUBSCRIBE (new or a refresh) to node `n`.
    fn watcher_sends(&mut self, i: usize, n: NodeId) {
        let w = &mut self.watchers[i];
        w.cseq += 1;
        let req = subscribe(i, AORS[w.aor], w.cseq, w.tag.as_deref());
        self.deliver(n, watcher_addr(i), req.as_bytes());
    }

    fn deliver(&mut self, n: NodeId, from: SocketAddr, bytes: &[u8]) {
        if !self.alive[n as usize - 1] {
            return;
        }
        let mut out = Outbox::default();
        let now = self.now;
        self.shard(n).on_message(now, Peer::udp(from), bytes, &mut out);
        self.take(n, out);
    }

    fn step(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let (seen, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending).into_iter().partition(|e| e.3 <= now);
        self.pending = later;
        for (n, p, owner, _) in seen {
            self.view(n).set_owner(Partition(p), owner, None);
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flight).into_iter().partition(|f| f.at <= now);
        self.flight = later;
        for f in due {
            match f.packet {
                Packet::Sip { from, bytes } => self.deliver(f.to, from, &bytes),
                Packet::Node { from, msg } if self.alive[f.to as usize - 1] => {
                    let mut out = Outbox::default();
                    self.shard(f.to).on_node_msg(now, from, msg, &mut out);
                    self.take(f.to, out);
                }
                Packet::Node { .. } => {}
            }
        }
        for n in self.live_nodes() {
            let mut out = Outbox::default();
            self.shard(n).on_time(now, &mut out);
            let view = self.view(n).clone();
            self.shard(n).put_back_replayed(now, view.logs().unwrap(), 0, &mut out);
            self.take(n, out);
        }
    }

    fn publish_at(&mut self, a: usize, n: NodeId) -> String {
        self.published += 1;
        let note = format!("n{}", self.published);
        let seq = self.published;
        self.deliver(n, publisher(), publish(AORS[a], &note, seq).as_bytes());
        note
    }
}

fn run_seed(seed: u64) {
    if std::env::var("SIM_DEBUG").is_ok() {
        eprintln!("seed {seed}");
    }
    let mut w = World::new(seed);
    for i in 0..WATCHERS {
        while w.watchers[i].tag.is_none() {
            let n = 1 + w.rand(NODES as u64) as NodeId;
            w.watchers[i].cseq = 0;
            w.watcher_sends(i, n);
            w.step(Duration::from_millis(50));
        }
    }
    let mut dead: Option<(NodeId, Instant)> = None;
    for _ in 0..400 {
        let roll = w.rand(100);
        let live = w.live_nodes();
        let anywhere = live[w.rand(live.len() as u64) as usize];
        if roll < 15 {
            let a = w.rand(AORS.len() as u64) as usize;
            w.publish_at(a, anywhere);
        } else if roll < 35 {
            let i = w.rand(WATCHERS as u64) as usize;
            w.watcher_sends(i, anywhere);
        } else if roll < 40 {
            let p = w.rand(PARTITIONS as u64) as u16;
            w.move_partition(p, anywhere);
        } else if roll < 42 && dead.is_none() && live.len() == NODES as usize {
            let victim = 1 + w.rand(NODES as u64) as NodeId;
            w.kill(victim);
            dead = Some((victim, w.now + Duration::from_secs(2)));
        }
        if let Some((n, back)) = dead
            && w.now >= back
        {
            w.revive(n);
            dead = None;
        }
        w.step(Duration::from_millis(50));
    }
    if let Some((n, _)) = dead {
        w.revive(n);
    }
    // Calm: every view agrees, nothing is lost; each presentity publishes
    // once more, and each watcher refreshes (the new holder's Contact).
    w.loss = 0;
    w.run_for(Duration::from_secs(1));
    // Each dialog's holder has spoken last: one that took it over told
    // the watcher (so its refreshes now go there).
    for i in 0..WATCHERS {
        let p = tag_partition(w.watchers[i].tag.as_deref().unwrap().as_bytes()).unwrap();
        let holder = w.owner[p as usize];
        assert_eq!(
            w.watchers[i].last_from, holder,
            "seed {seed}: watcher {i}'s last NOTIFY came from node {}, its dialog is on node {holder}",
            w.watchers[i].last_from
        );
    }
    let mut latest = Vec::new();
    for a in 0..AORS.len() {
        let n = 1 + w.rand(NODES as u64) as NodeId;
        let note = w.publish_at(a, n);
        w.run_for(Duration::from_millis(500));
        assert!(w.acked.iter().any(|(_, x)| *x == note), "seed {seed}: a PUBLISH in the calm was not answered 200");
        latest.push(note);
    }
    w.run_for(super::remote::REFRESH + super::remote::SWEEP * 2);
    for i in 0..WATCHERS {
        let tag = w.watchers[i].tag.clone().unwrap();
        let p = tag_partition(tag.as_bytes()).expect("a dialog's tag names its partition");
        let call_id = format!("dw{i}");
        let holders: Vec<NodeId> = (1..=NODES).filter(|&n| w.shard(n).subscriptions.by_dialog(call_id.as_bytes(), tag.as_bytes()).is_some()).collect();
        assert_eq!(holders, vec![w.owner[p as usize]], "seed {seed}: watcher {i}'s dialog (partition {p}) held by {holders:?}");
        let latest = latest[w.watchers[i].aor].clone();
        let shown = String::from_utf8_lossy(&w.watchers[i].last_body).into_owned();
        let aor = AORS[w.watchers[i].aor];
        let owner = w.owner[crate::cluster::partition::partition_of(aor.as_bytes(), PARTITIONS).0 as usize];
        let truth = String::from_utf8_lossy(&w.shard(owner).current_document(aor.as_bytes()).1).into_owned();
        for (_, note) in w.acked.iter().filter(|(a, _)| *a == w.watchers[i].aor) {
            assert!(truth.contains(&format!("<note>{note}</note>")), "seed {seed}: {aor}'s acknowledged publication {note} is lost: {truth}");
        }
        assert!(
            shown.contains(&format!("<note>{latest}</note>")),
            "seed {seed}: watcher {i} of {aor} (dialog on node {}, presentity on node {owner} whose document is {truth}) shown {shown}, not {latest}",
            holders[0]
        );
    }
}

impl World {
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step(Duration::from_millis(50));
        }
    }
}

#[test]
fn dialogs_follow_their_partitions_through_moves_kills_and_loss() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40);
    for seed in 0..seeds {
        run_seed(seed);
    }
}

#[test]
fn a_partition_log_keeps_every_dialog_it_was_given() {
    // The world's own check: with no moves, every dialog's records are in
    // its partition's log and nowhere else.
    let mut w = World::new(7);
    for i in 0..WATCHERS {
        while w.watchers[i].tag.is_none() {
            w.watcher_sends(i, 1 + (i as NodeId % NODES));
            w.step(Duration::from_millis(50));
        }
    }
    for i in 0..WATCHERS {
        let tag = w.watchers[i].tag.clone().unwrap();
        let p = tag_partition(tag.as_bytes()).unwrap() as usize;
        let has = |log: &Vec<Box<[u8]>>| {
            log.iter().any(
                |r| matches!(crate::storage::record::Record::decode(r), Ok(crate::storage::record::Record::Subscription(st)) if st.local_tag == tag.as_bytes()),
            )
        };
        assert!(has(&w.logs[p]), "watcher {i}'s dialog is not in partition {p}'s log");
        assert!((0..PARTITIONS as usize).filter(|&q| q != p).all(|q| !has(&w.logs[q])), "watcher {i}'s dialog is in another log");
    }
}
