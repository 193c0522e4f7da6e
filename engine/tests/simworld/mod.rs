//! Deterministic simulation of a multi-shard server, in the manner of
//! quinn-proto's in-process endpoint pairs and of deterministic simulation
//! testing (FoundationDB, TigerBeetle's VOPR).
//!
//! N `Shard` cores run in one thread on a virtual clock. Between them are
//! bounded queues (capacity down to 1) with `core::outbound` holding what
//! does not fit, exactly as the reactor does; a shard that holds anything
//! does not read its socket. Between UEs and shards is a network that
//! loses, duplicates, delays and reorders datagrams (TCP flows are in
//! order). Every choice — traffic, faults, which shard runs next — comes
//! from one seed, so a failing seed replays exactly.
//!
//! Invariants, checked for every seed:
//! - in sending order, each dialog's new NOTIFYs have increasing CSeqs
//!   (checked on every NOTIFY a shard emits);
//! - after traffic stops and the network settles, every live presence
//!   subscription's subscriber last saw its presentity's current
//!   document, every winfo subscriber's view matches the presentity's
//!   watchers, and each presentity's shard counts exactly the
//!   subscriptions the other shards hold;
//! - no presence agent's publication outlives the server's subscription
//!   to that agent;
//! - once every expiry has passed, no table, timer, queue or backlog
//!   holds anything (agents included);
//! - the same seed gives the same run, byte for byte (the trace hash).

pub mod net;
pub mod seeds;
pub mod ue;

use net::{Dest, Faults, Network};
use presence_engine::core::entropy::Entropy;
use presence_engine::core::ids::owner_of;
use presence_engine::core::outbound::Outbound;
use presence_engine::core::{ConnId, Peer, Transmit, Transport};
use presence_engine::presence::peu::{Mode, PeuConfig};
use presence_engine::presence::watchers::Package;
use presence_engine::shard::{CoreMsg, Outbox, Shard, ShardConfig};
use presence_engine::sip::{Limits, Message, Uri};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use ue::Ue;

/// The subscriptions the shards hold to one presentity, as (shard, ask):
/// presence watchers, then winfo subscribers.
type Held = (Vec<(u16, u64)>, Vec<(u16, u64)>);

/// What crosses between simulated shards (as `reactor::ShardMsg`).
enum SimMsg {
    Core(CoreMsg),
    Transmit(Transmit),
}

/// Settings a test may pin; `None` lets the seed choose.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pinned {
    pub shards: Option<u16>,
    pub queue_capacity: Option<usize>,
    /// Drop any message a full queue refuses, as the reactor did before
    /// `core::outbound`: for showing that the invariants catch it.
    pub drop_when_full: bool,
}

/// What a run did, for reports and the determinism check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// FNV-1a over every message delivered, in order, with its destination.
    pub trace: u64,
    pub shards: u16,
    pub queue_capacity: usize,
    pub delivered: u64,
    pub notifies_seen: u64,
    pub shed: u64,
    pub peak_held: usize,
    pub subscriptions_checked: usize,
    /// SUBSCRIBEs from the server that presence agents accepted, and
    /// agent NOTIFYs the server took with 200.
    pub agent_subscriptions: u64,
    pub agent_notifies: u64,
}

const TRAFFIC: Duration = Duration::from_secs(20);
/// The longest the system may take to settle once traffic stops: a window
/// of NOTIFYs can wait Timer F (32 s) on each silent watcher in turn.
const SETTLE_LIMIT: Duration = Duration::from_secs(400);
/// Past every expiry (<= 300 s granted) plus Timer F and Timer J.
const DRAIN: Duration = Duration::from_secs(420);
const SOCKET_BUFFER: usize = 256;

struct World {
    rng: Entropy,
    epoch: Instant,
    now: Duration,
    shards: Vec<Shard>,
    outbound: Vec<Outbound<SimMsg>>,
    /// queues[src][dst]
    queues: Vec<Vec<VecDeque<SimMsg>>>,
    capacity: usize,
    drop_when_full: bool,
    sockets: Vec<VecDeque<(Peer, Vec<u8>)>>,
    net: Network,
    ues: Vec<Ue>,
    by_addr: HashMap<SocketAddr, usize>,
    aors: Vec<String>,
    server: SocketAddr,
    trace: u64,
    delivered: u64,
    /// Per NOTIFY dialog (Call-ID): highest CSeq sent and the hashes of
    /// the NOTIFYs sent (retransmissions repeat one).
    notify_order: HashMap<Vec<u8>, (u32, Vec<u64>)>,
    failure: Option<String>,
}

fn fnv(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The shard the kernel's SO_REUSEPORT hash would pick for a flow.
fn flow_shard(addr: SocketAddr, shards: u16) -> u16 {
    (fnv(0xcbf2_9ce4_8422_2325, addr.to_string().as_bytes()) % shards as u64) as u16
}

fn ue_conn(ue: usize, shards: u16, addr: SocketAddr) -> ConnId {
    ConnId::new(flow_shard(addr, shards), ue as u64 + 1)
}

impl World {
    fn new(seed: u64, pinned: Pinned) -> World {
        let mut rng = Entropy::for_shard(seed, 0xffff);
        let n = pinned.shards.unwrap_or(1 + rng.below(8) as u16);
        let capacity = pinned.queue_capacity.unwrap_or([1, 1, 2, 4, 64][rng.below(5) as usize]);
        let faults = Faults {
            loss: [0.0, 0.02, 0.1, 0.2][rng.below(4) as usize],
            duplicate: [0.0, 0.02, 0.1][rng.below(3) as usize],
            min_delay: Duration::from_micros(200),
            max_delay: Duration::from_millis([1, 10, 60][rng.below(3) as usize]),
        };
        let server: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let epoch = Instant::now();
        let window = [1, 4, 4096][rng.below(3) as usize];
        let interval = Duration::from_millis([0, 200, 1000][rng.below(3) as usize]);
        // Presence agents: subscribed while watched (with a grace period)
        // or always; short intervals, so refreshes, retries and grace
        // periods all happen within a run.
        let peu = PeuConfig {
            mode: if rng.chance(0.7) { Mode::Watched } else { Mode::Always },
            grace: Duration::from_secs([0, 1, 5][rng.below(3) as usize]),
            expires: 200,
            retry_base: Duration::from_secs(1 + rng.below(4)),
            retry_max: Duration::from_secs(60),
            ..PeuConfig::default()
        };
        let shards = (0..n)
            .map(|i| {
                let mut cfg = ShardConfig::with_defaults(i, n, server);
                cfg.seed = seed;
                cfg.watch.window = window;
                cfg.watch.min_notify_interval = interval;
                cfg.watch.max_expires = 300;
                cfg.publish.max_expires = 300;
                cfg.registrar.max_expires = 300;
                cfg.peu = peu.clone();
                Shard::new(cfg, epoch)
            })
            .collect();
        let pool = ["sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.org", "sip:h1.example.com", "tel:+15550001"];
        let k = 2 + rng.below(4) as usize;
        let start = rng.below(pool.len() as u64) as usize;
        let aors: Vec<String> = (0..k).map(|i| pool[(start + i) % pool.len()].to_string()).collect();
        let ue_count = 3 + rng.below(8) as usize;
        let mut ues = Vec::new();
        let mut by_addr = HashMap::new();
        for i in 0..ue_count {
            let addr: SocketAddr = format!("198.51.100.{}:{}", 1 + i, 5060 + i).parse().unwrap();
            let tcp = rng.chance(0.3);
            let pua = rng.chance(0.4);
            let first = Duration::from_millis(rng.below(2000));
            by_addr.insert(addr, i);
            ues.push(Ue::new(addr, tcp, pua, first));
        }
        World {
            rng,
            epoch,
            now: Duration::ZERO,
            shards,
            outbound: (0..n).map(|_| Outbound::new(n)).collect(),
            queues: (0..n).map(|_| (0..n).map(|_| VecDeque::new()).collect()).collect(),
            capacity,
            drop_when_full: pinned.drop_when_full,
            sockets: (0..n).map(|_| VecDeque::new()).collect(),
            net: Network::new(faults),
            ues,
            by_addr,
            aors,
            server,
            trace: 0xcbf2_9ce4_8422_2325,
            delivered: 0,
            notify_order: HashMap::new(),
            failure: None,
        }
    }

    fn n(&self) -> u16 {
        self.shards.len() as u16
    }

    fn instant(&self) -> Instant {
        self.epoch + self.now
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(why);
        }
    }

    // ------------------------------------------------------------ UEs

    /// Sends what UE `i` produced to the server over its flow.
    fn ue_send(&mut self, i: usize, msgs: Vec<Vec<u8>>) {
        let n = self.n();
        for bytes in msgs {
            let ue = &self.ues[i];
            if ue.tcp {
                let conn = ue_conn(i, n, ue.addr);
                let dest = Dest::Shard(conn.shard(), Peer::tcp(ue.addr, conn));
                self.net.stream(&mut self.rng, self.now, conn.0, dest, bytes);
            } else {
                let dest = Dest::Shard(flow_shard(ue.addr, n), Peer::udp(ue.addr));
                self.net.datagram(&mut self.rng, self.now, dest, bytes);
            }
        }
    }

    fn ue_actions(&mut self, traffic: bool) {
        for i in 0..self.ues.len() {
            if traffic && self.ues[i].next_action <= self.now {
                // Now and then a burst: several requests at one instant,
                // which is what fills the shard queues.
                let burst = if self.rng.chance(0.2) { 2 + self.rng.below(8) } else { 1 };
                let mut out = Vec::new();
                for _ in 0..burst {
                    out.extend(self.ues[i].act(self.now, &mut self.rng, &self.aors));
                }
                let gap = Duration::from_millis(50 + self.rng.below(1500));
                self.ues[i].next_action = self.now + gap;
                self.ue_send(i, out);
            }
            let out = self.ues[i].on_time(self.now);
            self.ue_send(i, out);
        }
    }

    // ------------------------------------------------------------ shards

    fn offer(&mut self, src: u16, dst: u16, msg: SimMsg) {
        let sheddable = matches!(msg, SimMsg::Core(CoreMsg::Forward(_)));
        let cap = self.capacity;
        let q = &mut self.queues[src as usize][dst as usize];
        if self.drop_when_full {
            if q.len() < cap {
                q.push_back(msg);
            }
            return;
        }
        self.outbound[src as usize].offer(dst, msg, sheddable, |m| {
            if q.len() < cap {
                q.push_back(m);
                Ok(())
            } else {
                Err(m)
            }
        });
    }

    /// Carries out one step's outbox of shard `k`.
    fn route(&mut self, k: u16, out: Outbox) {
        for t in out.transmits {
            self.transmit(k, t);
        }
        for (dst, msg) in out.to_shards {
            if dst == k || dst >= self.n() {
                self.fail(format!("shard {k} addressed shard {dst} over the queues"));
                continue;
            }
            if std::env::var("SIM_TRACE").is_ok() && !matches!(msg, CoreMsg::Forward(_) | CoreMsg::Document { .. }) {
                eprintln!("{:?} shard {k} -> {dst}: {msg:?}", self.now);
            }
            self.offer(k, dst, SimMsg::Core(msg));
        }
    }

    fn transmit(&mut self, k: u16, t: Transmit) {
        if t.bytes.starts_with(b"NOTIFY ") {
            self.check_notify_order(&t.wire());
        }
        let Some(&ue) = self.by_addr.get(&t.to.addr) else {
            // Addressed to nobody we simulate: lost in the network.
            return;
        };
        match t.to.transport {
            Transport::Udp => self.net.datagram(&mut self.rng, self.now, Dest::Ue(ue), t.into_contiguous()),
            Transport::Tcp if t.to.conn.shard() == k => self.net.stream(&mut self.rng, self.now, t.to.conn.0 | 1 << 63, Dest::Ue(ue), t.into_contiguous()),
            Transport::Tcp => self.offer(k, t.to.conn.shard(), SimMsg::Transmit(t)),
        }
    }

    /// Invariant: a dialog's new NOTIFYs leave with increasing CSeqs.
    fn check_notify_order(&mut self, bytes: &[u8]) {
        let Ok(msg) = Message::parse(bytes, &Limits::default()) else {
            return self.fail(format!("a shard sent an unparsable NOTIFY: {}", String::from_utf8_lossy(bytes)));
        };
        // Branches differ per transaction; a retransmission repeats the
        // whole message.
        let h = fnv(0xcbf2_9ce4_8422_2325, bytes);
        let cseq = msg.cseq().seq;
        let e = self.notify_order.entry(msg.call_id().to_vec()).or_insert((0, Vec::new()));
        if e.1.contains(&h) {
            return;
        }
        if cseq <= e.0 {
            let why = format!("NOTIFY CSeq {cseq} after {} in dialog {}", e.0, String::from_utf8_lossy(msg.call_id()));
            return self.fail(why);
        }
        e.0 = cseq;
        e.1.push(h);
    }

    /// Runs shard work until every socket (of shards not holding) and every
    /// queue is empty, choosing the next piece of work at random.
    fn settle(&mut self) {
        let n = self.n() as usize;
        let mut work: Vec<(usize, Option<usize>)> = Vec::new();
        loop {
            work.clear();
            for k in 0..n {
                if !self.outbound[k].is_holding() && !self.sockets[k].is_empty() {
                    work.push((k, None));
                }
                for src in 0..n {
                    if !self.queues[src][k].is_empty() {
                        work.push((k, Some(src)));
                    }
                }
            }
            if work.is_empty() {
                return;
            }
            let (k, from) = work[self.rng.below(work.len() as u64) as usize];
            let now = self.instant();
            let mut out = Outbox { events_off: true, ..Outbox::default() };
            match from {
                None => {
                    let (peer, bytes) = self.sockets[k].pop_front().unwrap();
                    self.shards[k].on_message(now, peer, &bytes, &mut out);
                }
                Some(src) => {
                    let msg = self.queues[src][k].pop_front().unwrap();
                    // Room in src→k: src's held messages move up.
                    let cap = self.capacity;
                    let q = &mut self.queues[src][k];
                    self.outbound[src].pump(k as u16, |m| {
                        if q.len() < cap {
                            q.push_back(m);
                            Ok(())
                        } else {
                            Err(m)
                        }
                    });
                    match msg {
                        SimMsg::Core(m) => self.shards[k].on_shard_msg(now, m, &mut out),
                        SimMsg::Transmit(t) => {
                            if t.to.conn.shard() != k as u16 {
                                self.fail(format!("a TCP transmit for shard {}'s connection reached shard {k}", t.to.conn.shard()));
                            }
                            self.transmit(k as u16, t);
                        }
                    }
                }
            }
            self.route(k as u16, out);
        }
    }

    fn tick(&mut self) {
        let now = self.instant();
        for k in 0..self.shards.len() {
            let mut out = Outbox { events_off: true, ..Outbox::default() };
            self.shards[k].on_time(now, &mut out);
            self.route(k as u16, out);
        }
    }

    /// Delivers what the network has due now.
    fn deliver(&mut self) {
        while let Some(f) = self.net.pop_due(self.now) {
            self.delivered += 1;
            self.trace = fnv(self.trace, &f.bytes);
            match f.dest {
                Dest::Shard(k, peer) => {
                    self.trace = fnv(self.trace, &[k as u8, 0xfe]);
                    let sock = &mut self.sockets[k as usize];
                    if peer.transport == Transport::Udp && sock.len() >= SOCKET_BUFFER {
                        continue; // a full socket buffer drops datagrams
                    }
                    sock.push_back((peer, f.bytes));
                }
                Dest::Ue(i) => {
                    self.trace = fnv(self.trace, &(i as u64).to_le_bytes());
                    match self.ues[i].on_message(self.now, &mut self.rng, &f.bytes) {
                        Ok(out) => self.ue_send(i, out),
                        Err(e) => self.fail(e),
                    }
                }
            }
        }
    }

    /// Runs the world until `until`, stepping to each event, with shard
    /// ticks every `tick`.
    fn run_until(&mut self, until: Duration, tick: Duration, traffic: bool) {
        let mut next_tick = self.now + tick;
        while self.now < until && self.failure.is_none() {
            let mut next = next_tick.min(until);
            if let Some(at) = self.net.next_at() {
                next = next.min(at);
            }
            for ue in &self.ues {
                if traffic {
                    next = next.min(ue.next_action);
                }
                if let Some(at) = ue.next_timer() {
                    next = next.min(at);
                }
            }
            self.now = next.max(self.now);
            self.deliver();
            self.ue_actions(traffic);
            self.settle();
            if self.now >= next_tick {
                self.tick();
                self.settle();
                next_tick = self.now + tick;
            }
        }
    }

    /// Nothing in flight anywhere: no client transaction, pending ask,
    /// deferred NOTIFY, held or queued message, or datagram on the wire.
    fn is_settled(&self) -> bool {
        self.net.next_at().is_none()
            && self.queues.iter().flatten().all(VecDeque::is_empty)
            && self.outbound.iter().all(|o| !o.is_holding())
            && self.shards.iter().all(|s| {
                let c = s.census();
                c.pending_asks == 0 && c.notifies_in_flight == 0 && c.deferred_notifies == 0 && c.client_transactions == 0 && c.unsent_changes == 0
            })
    }

    /// Runs without new traffic until the system is settled, at most to
    /// `limit`; not settling by then is a failure (a livelock).
    fn run_until_settled(&mut self, limit: Duration) {
        while !self.is_settled() && self.failure.is_none() {
            if self.now >= limit {
                let census: Vec<_> = self.shards.iter().map(|s| s.census()).collect();
                return self.fail(format!("not settled {limit:?} after traffic stopped: {census:?}"));
            }
            let step = self.now + Duration::from_secs(1);
            self.run_until(step, Duration::from_millis(20), false);
        }
    }

    // ------------------------------------------------------------ checks

    /// After traffic has stopped and the network has settled: subscribers
    /// saw the current documents, winfo views match, owners count right.
    fn check_settled(&mut self) -> usize {
        let n = self.n();
        let mut checked = 0;
        let mut held: BTreeMap<Vec<u8>, Held> = BTreeMap::new();
        let mut problems = Vec::new();
        for (k, shard) in self.shards.iter().enumerate() {
            let c = shard.census();
            if c.pending_asks != 0 || c.notifies_in_flight != 0 || c.deferred_notifies != 0 || c.client_transactions != 0 || c.unsent_changes != 0 {
                problems.push(format!("shard {k} not settled: {c:?}"));
            }
            for s in shard.subscriptions().iter() {
                let entry = held.entry(s.aor().to_vec()).or_default();
                match s.package {
                    Package::Presence => entry.0.push((k as u16, s.ask)),
                    Package::Winfo => entry.1.push((k as u16, s.ask)),
                }
                let call_id = String::from_utf8_lossy(s.call_id()).into_owned();
                let Some(d) = self.ues.iter().find_map(|u| u.dialogs.get(&call_id)) else {
                    problems.push(format!("shard {k} holds subscription {call_id} that no UE made"));
                    continue;
                };
                checked += 1;
                let owner = &self.shards[owner_of(s.aor(), n) as usize];
                match s.package {
                    Package::Presence => {
                        let (_, doc) = owner.current_document(s.aor());
                        if d.last_body != *doc {
                            problems.push(format!(
                                "subscription {call_id} to {} on shard {k} last saw (CSeq {}):\n{}\nbut the document is:\n{}",
                                String::from_utf8_lossy(s.aor()),
                                d.last_cseq,
                                String::from_utf8_lossy(&d.last_body),
                                String::from_utf8_lossy(&doc)
                            ));
                        }
                    }
                    Package::Winfo => {
                        let want: Vec<String> =
                            owner.watched_view(s.aor()).map(|v| v.watchers.iter().map(|(sh, ask)| format!("{sh}-{ask}")).collect()).unwrap_or_default();
                        let mut want = want;
                        want.sort();
                        let seen: Vec<String> = d.winfo_view.keys().cloned().collect();
                        if seen != want {
                            problems.push(format!("winfo subscription {call_id} sees watchers {seen:?}, the presentity has {want:?}"));
                        }
                    }
                }
            }
        }
        // Every publication an agent made is one its agent still stands
        // behind: none outlives its source.
        for (k, shard) in self.shards.iter().enumerate() {
            let standing = shard.peu().published();
            for source in shard.publications().agent_sources() {
                if !standing.contains(&source) {
                    let (aor, agent) = (String::from_utf8_lossy(&source.0), source.1);
                    problems.push(format!("shard {k}: agent {agent}'s publication of {aor} outlived its subscription"));
                }
            }
        }
        // Every owner counts exactly what the shards hold.
        let mut aors: Vec<Vec<u8>> = held.keys().cloned().collect();
        for a in &self.aors {
            aors.push(Uri::parse(a.as_bytes()).unwrap().aor());
        }
        aors.sort();
        aors.dedup();
        for aor in aors {
            let owner = owner_of(&aor, n);
            let (mut presence, mut winfo) = held.get(&aor).cloned().unwrap_or_default();
            presence.sort_unstable();
            winfo.sort_unstable();
            let view = self.shards[owner as usize].watched_view(&aor);
            let name = String::from_utf8_lossy(&aor).into_owned();
            match view {
                None if presence.is_empty() && winfo.is_empty() => {}
                None => problems.push(format!("{name}: shards hold {presence:?} / winfo {winfo:?}, its owner knows none")),
                Some(v) => {
                    let mut counts = vec![0u32; n as usize];
                    for (sh, _) in &presence {
                        counts[*sh as usize] += 1;
                    }
                    if v.watchers != presence || v.winfo != winfo || v.counts != counts {
                        problems.push(format!("{name}: owner has {v:?}, shards hold {presence:?} / winfo {winfo:?}"));
                    }
                }
            }
        }
        if let Some(p) = problems.into_iter().next() {
            self.fail(p);
        }
        checked
    }

    /// After every expiry: nothing left anywhere.
    fn check_empty(&mut self) {
        let mut problems = String::new();
        for (k, shard) in self.shards.iter().enumerate() {
            let c = shard.census();
            if !c.is_empty() {
                let _ = write!(problems, "shard {k} still holds {c:?}; ");
            }
            if shard.stats().panics != 0 {
                let _ = write!(problems, "shard {k} contained {} panics; ", shard.stats().panics);
            }
            if self.outbound[k].is_holding() {
                let _ = write!(problems, "shard {k} still holds {} messages for full queues; ", self.outbound[k].held());
            }
            if !self.sockets[k].is_empty() {
                let _ = write!(problems, "shard {k} has {} unread messages; ", self.sockets[k].len());
            }
        }
        if self.queues.iter().flatten().any(|q| !q.is_empty()) {
            problems.push_str("a shard queue is not empty; ");
        }
        if !problems.is_empty() {
            self.fail(problems);
        }
    }
}

/// Runs one seed (`SIM_TRACE=1` prints every cross-shard message but
/// forwards and documents). `Err` says which invariant broke, with the seed.
pub fn run(seed: u64, pinned: Pinned) -> Result<Outcome, String> {
    let mut w = World::new(seed, pinned);
    let _ = w.server;
    w.run_until(TRAFFIC, Duration::from_millis(10), true);
    w.run_until_settled(TRAFFIC + SETTLE_LIMIT);
    let checked = if w.failure.is_none() { w.check_settled() } else { 0 };
    let end = w.now + DRAIN;
    w.run_until(end, Duration::from_millis(250), false);
    if w.failure.is_none() {
        w.check_empty();
    }
    let describe = |w: &World| {
        format!(
            "seed {seed}: {} shards, queue capacity {}, {} UEs ({} over TCP), AORs {:?}",
            w.n(),
            w.capacity,
            w.ues.len(),
            w.ues.iter().filter(|u| u.tcp).count(),
            w.aors
        )
    };
    if let Some(f) = w.failure.take() {
        return Err(format!("{}\n  at {:?}: {f}", describe(&w), w.now));
    }
    Ok(Outcome {
        trace: w.trace,
        shards: w.n(),
        queue_capacity: w.capacity,
        delivered: w.delivered,
        notifies_seen: w.ues.iter().map(|u| u.notifies).sum(),
        shed: w.outbound.iter().map(|o| o.shed()).sum(),
        peak_held: w.outbound.iter().map(|o| o.peak()).max().unwrap_or(0),
        subscriptions_checked: checked,
        agent_subscriptions: w.ues.iter().map(|u| u.agent_subscribes).sum(),
        agent_notifies: w.ues.iter().map(|u| u.agent_notifies).sum(),
    })
}
