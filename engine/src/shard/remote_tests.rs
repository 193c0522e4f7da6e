//! Documents across nodes, in process: one shard per node, each with its
//! own view of who serves which partition, and the node messages carried
//! between them by a world that can delay, reorder and lose them.

use super::remote::{READER_TTL, REFRESH, SWEEP};
use super::*;
use crate::cluster::NodeId;
use crate::cluster::mail::NodeMsg;
use crate::cluster::partition::partition_of;
use crate::cluster::view::ClusterView;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PARTITIONS: u16 = 16;
const AORS: [&str; 3] = ["sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com"];

fn node_addr(n: NodeId) -> SocketAddr {
    format!("10.77.0.{}:5060", 10 + n).parse().unwrap()
}

fn watcher_peer(n: NodeId) -> Peer {
    Peer::udp(format!("192.0.2.{n}:5070").parse().unwrap())
}

fn user(aor: &str) -> &str {
    aor.trim_start_matches("sip:").split('@').next().unwrap()
}

fn subscribe(n: NodeId, aor: &str, expires: u32, cseq: u32, to_tag: Option<&str>) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let u = user(aor);
    format!(
        "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.{n}:5070;branch=z9hG4bKs{n}{u}{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:w{n}@example.net>;tag=w{n}\r\n\
To: <{aor}>{to_tag}\r\nCall-ID: w{n}-{u}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:w{n}@192.0.2.{n}:5070>\r\nEvent: presence\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    )
}

fn publish(aor: &str, note: &str, seq: u64) -> String {
    publish_for(aor, note, seq, 3600)
}

fn publish_for(aor: &str, note: &str, seq: u64, expires: u32) -> String {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKp{seq}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\n\
To: <{aor}>\r\nCall-ID: p{seq}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        doc.len()
    )
}

/// A message in flight between nodes.
struct InFlight {
    at: Instant,
    from: NodeId,
    to: NodeId,
    msg: NodeMsg,
}

/// Nodes 1..=n, each one shard, and the network between them.
struct World {
    now: Instant,
    nodes: Vec<(Arc<ClusterView>, Shard)>,
    flight: Vec<InFlight>,
    /// The document each watcher (node, Call-ID) was last sent.
    shown: HashMap<(NodeId, String), Vec<u8>>,
    rng: u64,
    /// Chance of losing a node message, in percent, and the most it is delayed.
    loss: u64,
    delay: Duration,
    /// The To-tag of each watcher's dialog, for in-dialog requests.
    tags: HashMap<(NodeId, String), String>,
    /// NOTIFYs sent, by every node.
    notifies: usize,
}

impl World {
    fn new(n: NodeId, seed: u64) -> World {
        let now = Instant::now();
        let nodes = (1..=n)
            .map(|me| {
                let view = Arc::new(ClusterView::new(me, PARTITIONS));
                for other in 1..=n {
                    view.set_address(
                        other,
                        match node_addr(other) {
                            SocketAddr::V4(a) => Some(a),
                            _ => None,
                        },
                    );
                }
                let mut cfg = ShardConfig::with_defaults(0, 1, node_addr(me));
                cfg.cluster = Some(view.clone());
                cfg.watch.min_notify_interval = Duration::ZERO;
                // Publications that expire within a simulated run.
                cfg.publish.min_expires = 1;
                cfg.seed = seed ^ me as u64;
                (view, Shard::new(cfg, now))
            })
            .collect();
        World { now, nodes, flight: Vec::new(), shown: HashMap::new(), rng: seed | 1, loss: 0, delay: Duration::ZERO, tags: HashMap::new(), notifies: 0 }
    }

    fn rand(&mut self, below: u64) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % below.max(1)
    }

    fn shard(&mut self, n: NodeId) -> &mut Shard {
        &mut self.nodes[n as usize - 1].1
    }

    /// Node `n` now sees `aor`'s partition served by `owner`.
    fn set_owner(&self, n: NodeId, aor: &str, owner: Option<NodeId>) {
        self.nodes[n as usize - 1].0.set_owner(partition_of(aor.as_bytes(), PARTITIONS), owner, None);
    }

    fn set_owner_everywhere(&self, aor: &str, owner: Option<NodeId>) {
        for n in 1..=self.nodes.len() as NodeId {
            self.set_owner(n, aor, owner);
        }
    }

    /// Takes what node `n` produced: node messages into the network,
    /// NOTIFYs recorded and answered 200, responses to the watchers'
    /// requests read for their To-tag.
    fn take(&mut self, n: NodeId, mut out: Outbox) -> Vec<String> {
        let mut responses = Vec::new();
        for (to, msg) in out.to_nodes.drain(..) {
            if self.rand(100) < self.loss {
                continue;
            }
            let at = self.now + Duration::from_millis(self.rand(self.delay.as_millis() as u64 + 1));
            self.flight.push(InFlight { at, from: n, to, msg });
        }
        for t in std::mem::take(&mut out.transmits) {
            let wire = t.wire().into_owned();
            let m = Message::parse(&wire, &Limits::default()).expect("the server sends what it can parse");
            let call_id = String::from_utf8_lossy(m.call_id()).into_owned();
            if m.is_request() {
                assert_eq!(m.method(), Some(Method::Notify), "{}", String::from_utf8_lossy(&wire));
                self.shown.insert((n, call_id), m.body().to_vec());
                self.notifies += 1;
                let mut ok = Vec::new();
                sip::response_to(&mut ok, m.raw(), 200, "OK", None, None).finish(None, b"");
                let mut more = Outbox::default();
                let now = self.now;
                self.shard(n).on_message(now, t.to, &ok, &mut more);
                responses.extend(self.take(n, more));
            } else {
                if let Some(tag) = m.to().tag() {
                    self.tags.insert((n, call_id), String::from_utf8_lossy(tag).into_owned());
                }
                responses.push(String::from_utf8_lossy(&wire).into_owned());
            }
        }
        responses
    }

    /// Node `n` receives `req` from `peer`; returns the responses it sent.
    fn request(&mut self, n: NodeId, peer: Peer, req: &str) -> Vec<String> {
        let mut out = Outbox::default();
        let now = self.now;
        self.shard(n).on_message(now, peer, req.as_bytes(), &mut out);
        self.take(n, out)
    }

    /// Delivers every message due, and runs each node's timers.
    fn step(&mut self, by: Duration) {
        self.now += by;
        let now = self.now;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flight).into_iter().partition(|f| f.at <= now);
        self.flight = later;
        for f in due {
            let mut out = Outbox::default();
            self.shard(f.to).on_node_msg(now, f.from, f.msg, &mut out);
            self.take(f.to, out);
        }
        for n in 1..=self.nodes.len() as NodeId {
            let mut out = Outbox::default();
            self.shard(n).on_time(now, &mut out);
            self.take(n, out);
        }
    }

    fn run(&mut self, for_: Duration, by: Duration) {
        let end = self.now + for_;
        while self.now < end {
            self.step(by);
        }
    }

    fn last_shown(&self, n: NodeId, aor: &str) -> String {
        String::from_utf8_lossy(self.shown.get(&(n, format!("w{n}-{}", user(aor)))).map_or(&[][..], |d| &d[..])).into_owned()
    }

    fn census(&self, n: NodeId) -> Census {
        self.nodes[n as usize - 1].1.census()
    }
}

/// `nodes` nodes that all see `aor` served by `owner`, and a watcher of
/// it subscribed on node 1.
fn watched_from_node_1(nodes: NodeId, seed: u64, aor: &str, owner: NodeId) -> World {
    let mut w = World::new(nodes, seed);
    w.set_owner_everywhere(aor, Some(owner));
    let r = w.request(1, watcher_peer(1), &subscribe(1, aor, 3600, 1, None));
    assert!(r[0].starts_with("SIP/2.0 200"), "{r:?}");
    w
}

fn basic(doc: &str) -> &str {
    doc.split("<basic>").nth(1).and_then(|r| r.split("</basic>").next()).unwrap_or("none")
}

#[test]
fn a_document_reaches_watchers_on_another_node_and_follows_a_failover() {
    let aor = AORS[0];
    // A watcher on node 1: answered at once with the closed document, and
    // node 2 is asked once.
    let mut w = watched_from_node_1(3, 7, aor, 2);
    assert_eq!(basic(&w.last_shown(1, aor)), "closed");
    assert_eq!(w.flight.len(), 1);
    assert!(matches!(&w.flight[0], InFlight { from: 1, to: 2, msg: NodeMsg::Interest { .. }, .. }));
    w.step(Duration::from_millis(10));
    assert_eq!(w.census(2).read_elsewhere, 1);
    w.step(Duration::from_millis(10));
    assert_eq!(w.census(1).mirrors, 1);
    assert_eq!(w.notifies, 1, "the owner's answer (nothing published) is what the watcher was shown: no second NOTIFY");

    // A publication on the owner crosses once and is notified on node 1.
    let r = w.request(2, Peer::udp("192.0.2.200:5060".parse().unwrap()), &publish(aor, "first", 1));
    assert!(r[0].starts_with("SIP/2.0 200"), "{r:?}");
    w.step(Duration::from_millis(10));
    let shown = w.last_shown(1, aor);
    assert!(shown.contains("<note>first</note>") && basic(&shown) == "open", "{shown}");

    // Node 2 dies; node 3 takes the partition. Within a sweep node 1 asks
    // node 3, which has nothing (no replicated log): the watcher is shown
    // the closed document, then node 3's own publication.
    w.set_owner_everywhere(aor, Some(3));
    w.run(SWEEP + Duration::from_millis(20), Duration::from_millis(10));
    assert_eq!(basic(&w.last_shown(1, aor)), "closed");
    w.request(3, Peer::udp("192.0.2.200:5060".parse().unwrap()), &publish(aor, "after", 2));
    w.step(Duration::from_millis(10));
    assert!(w.last_shown(1, aor).contains("<note>after</note>"));
    // The old owner's documents are no longer taken.
    let stale = NodeMsg::Document { aor: aor.as_bytes().into(), version: u64::MAX, doc: Some((*b"<stale/>").into()) };
    let mut out = Outbox::default();
    let now = w.now;
    w.shard(1).on_node_msg(now, 2, stale, &mut out);
    assert!(out.transmits.is_empty(), "a document from a node not asked is dropped");

    // The watcher leaves: the mirror goes and node 3 is told.
    let tag = w.tags[&(1, format!("w1-{}", user(aor)))].clone();
    w.request(1, watcher_peer(1), &subscribe(1, aor, 0, 2, Some(&tag)));
    assert_eq!(w.census(1).mirrors, 0);
    w.step(Duration::from_millis(10));
    assert_eq!(w.census(3).read_elsewhere, 0);
}

#[test]
fn interest_is_refreshed_while_watchers_last_and_forgotten_after() {
    let aor = AORS[1];
    let mut w = watched_from_node_1(2, 3, aor, 2);
    // Well past the readers' time to live: refreshes keep node 1 a reader.
    w.run(READER_TTL * 2, Duration::from_millis(100));
    assert_eq!(w.census(2).read_elsewhere, 1);
    // A node that stops refreshing (it crashed: here, an interest that
    // no node 1 follows up) is forgotten.
    let mut owner = World::new(2, 3);
    owner.set_owner_everywhere(aor, Some(2));
    let mut out = Outbox::default();
    let t = owner.now;
    owner.shard(2).on_node_msg(t, 1, NodeMsg::Interest { aor: aor.as_bytes().into() }, &mut out);
    assert_eq!(owner.census(2).read_elsewhere, 1);
    owner.run(READER_TTL - REFRESH, Duration::from_millis(500));
    assert_eq!(owner.census(2).read_elsewhere, 1, "not before its time");
    owner.run(REFRESH + SWEEP, Duration::from_millis(500));
    assert_eq!(owner.census(2).read_elsewhere, 0);
}

#[test]
fn a_refresh_repairs_a_lost_document_even_when_nothing_is_left_published() {
    let aor = AORS[0];
    let mut w = watched_from_node_1(2, 11, aor, 2);
    w.request(2, Peer::udp("192.0.2.200:5060".parse().unwrap()), &publish_for(aor, "short", 1, 5));
    w.run(Duration::from_millis(50), Duration::from_millis(10));
    assert_eq!(basic(&w.last_shown(1, aor)), "open");
    // The publication expires while every message between nodes is lost.
    w.loss = 100;
    w.run(Duration::from_secs(6), Duration::from_millis(100));
    assert_eq!(basic(&w.last_shown(1, aor)), "open", "not heard yet");
    // The next refresh is answered with "nothing published", which must
    // not be taken for older than the document it follows.
    w.loss = 0;
    w.run(REFRESH, Duration::from_millis(100));
    assert_eq!(basic(&w.last_shown(1, aor)), "closed");
}

#[test]
fn a_node_that_takes_the_partition_shows_its_own_document_and_one_that_loses_it_mirrors() {
    let aor = AORS[2];
    let mut w = watched_from_node_1(2, 5, aor, 2);
    w.request(2, watcher_peer(2), &subscribe(2, aor, 3600, 1, None));
    w.request(2, Peer::udp("192.0.2.200:5060".parse().unwrap()), &publish(aor, "on-2", 1));
    w.run(Duration::from_millis(50), Duration::from_millis(10));
    assert!(w.last_shown(1, aor).contains("on-2") && w.last_shown(2, aor).contains("on-2"));
    // The partition moves to node 1: node 1 drops its mirror and serves
    // (nothing, until published there); node 2 now mirrors node 1.
    w.set_owner_everywhere(aor, Some(1));
    w.run(SWEEP * 2, Duration::from_millis(10));
    assert_eq!((w.census(1).mirrors, w.census(2).mirrors), (0, 1));
    assert_eq!(basic(&w.last_shown(1, aor)), "closed", "{}", w.last_shown(1, aor));
    assert_eq!(basic(&w.last_shown(2, aor)), "closed");
    w.request(1, Peer::udp("192.0.2.200:5060".parse().unwrap()), &publish(aor, "on-1", 2));
    w.run(Duration::from_millis(50), Duration::from_millis(10));
    assert!(w.last_shown(1, aor).contains("on-1") && w.last_shown(2, aor).contains("on-1"), "{}", w.last_shown(2, aor));
}

/// Seeded simulation: three nodes, three presentities with a watcher on
/// every node, publications at whoever serves them (some expiring soon),
/// partitions moving
/// with each node learning of it at its own time, and node messages
/// delayed, reordered and lost. After a calm of one refresh, every
/// watcher is shown its presentity's owner's document; after the watchers
/// leave, no node holds a mirror or a reader.
#[test]
fn watchers_converge_on_the_owners_document_under_loss_and_moves() {
    for seed in 0..60 {
        let mut w = World::new(3, seed);
        w.loss = 25;
        w.delay = Duration::from_millis(300);
        for aor in AORS {
            let owner = 1 + w.rand(3) as NodeId;
            w.set_owner_everywhere(aor, Some(owner));
            for n in 1..=3 {
                w.request(n, watcher_peer(n), &subscribe(n, aor, 3600, 1, None));
            }
        }
        // (node, aor, new owner, when) view changes not yet seen, and
        // each presentity's last owner (moves may overlap, and views
        // disagree until the last one is seen everywhere).
        let mut pending: Vec<(NodeId, usize, NodeId, Instant)> = Vec::new();
        let mut last_owner: Vec<NodeId> = AORS.iter().map(|a| w.nodes[0].0.owner(partition_of(a.as_bytes(), PARTITIONS)).unwrap()).collect();
        let mut published = 0u64;
        for _ in 0..600 {
            let roll = w.rand(100);
            let a = w.rand(AORS.len() as u64) as usize;
            if roll < 10 {
                // Published at a node that serves it in its own view.
                let at = (1..=3).find(|&n| w.nodes[n as usize - 1].0.serves(partition_of(AORS[a].as_bytes(), PARTITIONS)));
                if let Some(n) = at {
                    published += 1;
                    // Some expire within the run, at an owner or at a
                    // node the partition has left.
                    let expires = [5, 12, 3600][w.rand(3) as usize];
                    w.request(n, Peer::udp("192.0.2.200:5060".parse().unwrap()), &publish_for(AORS[a], &format!("n{published}"), published, expires));
                }
            } else if roll < 12 {
                let owner = 1 + w.rand(3) as NodeId;
                last_owner[a] = owner;
                for n in 1..=3 {
                    let when = w.now + Duration::from_millis(w.rand(400));
                    pending.push((n, a, owner, when));
                }
            }
            let now = w.now;
            pending.retain(|&(n, a, owner, when)| {
                if when <= now {
                    w.set_owner(n, AORS[a], Some(owner));
                }
                when > now
            });
            w.step(Duration::from_millis(50));
        }
        // Calm: views agree on the last owner, nothing is lost.
        for (a, aor) in AORS.iter().enumerate() {
            w.set_owner_everywhere(aor, Some(last_owner[a]));
        }
        // Past the last expiry (12 s), then a refresh: nothing in flight.
        w.loss = 0;
        w.run(Duration::from_secs(12) + REFRESH + SWEEP * 2, Duration::from_millis(50));
        for aor in AORS {
            let owner = w.nodes[0].0.owner(partition_of(aor.as_bytes(), PARTITIONS)).unwrap();
            let (_, truth) = w.nodes[owner as usize - 1].1.current_document(aor.as_bytes());
            let truth = String::from_utf8_lossy(&truth).into_owned();
            for n in 1..=3 {
                assert_eq!(w.last_shown(n, aor), truth, "seed {seed}: node {n}'s watcher of {aor} (owner {owner})");
            }
        }
        for aor in AORS {
            for n in 1..=3 {
                let tag = w.tags[&(n, format!("w{n}-{}", user(aor)))].clone();
                w.request(n, watcher_peer(n), &subscribe(n, aor, 0, 2, Some(&tag)));
            }
        }
        w.run(READER_TTL + SWEEP, Duration::from_millis(500));
        for n in 1..=3 {
            let c = w.census(n);
            assert_eq!((c.mirrors, c.read_elsewhere), (0, 0), "seed {seed}: node {n} {c:?}");
        }
    }
}

#[test]
fn an_owner_reads_out_to_as_many_presentities_as_it_may_hold_subscriptions() {
    let mut w = World::new(2, 13);
    w.nodes[1].1.cfg.caps.subscriptions = 1;
    for aor in &AORS[..2] {
        w.set_owner_everywhere(aor, Some(2));
        let mut out = Outbox::default();
        let now = w.now;
        w.shard(2).on_node_msg(now, 1, NodeMsg::Interest { aor: aor.as_bytes().into() }, &mut out);
        let answered = out.to_nodes.iter().any(|(to, m)| *to == 1 && matches!(m, NodeMsg::Document { .. }));
        assert_eq!(answered, *aor == AORS[0], "{aor}");
    }
    assert_eq!((w.census(2).read_elsewhere, w.nodes[1].1.stats().readers_refused), (1, 1));
}
