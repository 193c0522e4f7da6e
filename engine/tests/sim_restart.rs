//! Deterministic simulation of crashes and restarts of a multi-shard
//! server with `fsync = "always"` (see `engine/tests/simworld` for the
//! multi-shard protocol under load without crashes).
//!
//! One thread, a virtual clock, and N sans-IO shards with their journals
//! on in-memory "files". As the reactor does under `always`, a step's
//! messages leave only once the step's records are on the file. UEs
//! publish, subscribe, refresh and unsubscribe over a network that loses
//! requests and responses; NOTIFYs are delivered (a NOTIFY in flight when
//! the process dies is not resent after a restart: a documented limit).
//! At a seeded moment the process dies, and a server with a seeded other
//! shard count starts from the files alone (with PUBLISHes arriving while
//! its restored watchers' asks to other shards are still on their way); later it dies again, and the
//! next start reads only the second run's files (its checkpoint must hold
//! everything). Invariants, for every seed:
//! - every PUBLISH that got its 200 is in the presentity's document after
//!   a restart (or a later PUBLISH of the same UE whose answer was lost);
//! - every subscription that got its 200 and was not ended answers an
//!   in-dialog refresh with 200 after a restart, not 481;
//! - each dialog's NOTIFYs carry increasing CSeqs, across restarts;
//! - a subscription whose time ran out, while the server ran or was down,
//!   was ended with a NOTIFY;
//! - once settled, every live subscription's watcher last saw its
//!   presentity's current document.
//!
//! `SIM_START=S SIM_SEEDS=N` runs other seeds.

#[path = "simworld/seeds.rs"]
mod seeds;

use presence_engine::core::Peer;
use presence_engine::core::entropy::Entropy;
use presence_engine::shard::durable::UnixClock;
use presence_engine::shard::{CoreMsg, Outbox, Shard, ShardConfig};
use presence_engine::storage::journal::{Fsync, Journal};
use presence_engine::storage::replay::{Replay, records};
use presence_engine::storage::segment::{SegmentHeader, SegmentWriter};
use seeds::seeds;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const UNIX_T0: u64 = 1_800_000_000_000;
const PUBLISHERS: usize = 6;
const WATCHERS: usize = 5;

/// One in-memory server: its shards, their journal files, the queues
/// between them.
struct Server {
    shards: Vec<Shard>,
    files: Vec<Vec<u8>>,
    /// From shard `a` to shard `b` at `a * n + b`: in order within one
    /// pair, as the reactor's queues are, and nothing more.
    queues: Vec<VecDeque<CoreMsg>>,
}

/// A publisher UE's view of its presentity.
#[derive(Default)]
struct Publisher {
    etag: Option<String>,
    /// The note of the last PUBLISH answered 200, and those sent after it
    /// (their answers lost: the server may hold any of them).
    acked: Option<u32>,
    sent_since: Vec<u32>,
    /// Until when the acknowledged note must be in the document: its
    /// publication's expiry, or earlier if a later modification (whose
    /// answer was lost) may have replaced it with a shorter one.
    acked_until: Duration,
    expires: Duration,
}

/// A watcher's dialog, as the watcher sees it.
struct Dialog {
    aor: String,
    from_tag: String,
    to_tag: Option<String>,
    cseq: u32,
    /// Answered 200; not ended (nor asked to end).
    live: bool,
    max_notify_cseq: u32,
    last_doc: Option<String>,
    /// Expires asked for in the next SUBSCRIBE, and when the last 200 said
    /// the subscription ends.
    expires: u32,
    expires_at: Duration,
}

struct Sim {
    rng: Entropy,
    epoch: Instant,
    now: Duration,
    unix_at_epoch: u64,
    server: Server,
    generation: u32,
    loss: f64,
    publishers: Vec<Publisher>,
    /// By Call-ID.
    dialogs: BTreeMap<String, Dialog>,
    next_id: u64,
    failure: Option<String>,
}

fn aor(p: usize) -> String {
    format!("sip:p{p}@example.com")
}

fn publisher_addr(p: usize) -> SocketAddr {
    format!("10.0.0.{}:5060", p + 1).parse().unwrap()
}

fn watcher_addr(w: usize) -> SocketAddr {
    format!("10.1.0.{}:5060", w + 1).parse().unwrap()
}

/// The shard a UDP flow reaches (the kernel's SO_REUSEPORT hash).
fn flow_shard(addr: SocketAddr, shards: u16) -> u16 {
    let h = addr.to_string().bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    (h % shards as u64) as u16
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn status(msg: &str) -> u16 {
    msg.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn tag_of(v: &str) -> Option<String> {
    v.split(";tag=").nth(1).map(|t| t.split(';').next().unwrap_or(t).to_string())
}

impl Server {
    /// A server of `n` shards whose journals start empty, holding what
    /// `older` (the files of the run before) recorded; returns it with the
    /// messages its start produced (asks of restored subscriptions).
    fn start(n: u16, older: &[Vec<u8>], now: Instant, unix_ms: u64) -> Result<(Server, Vec<(u16, Outbox)>), String> {
        let mut replay = Replay::new(n);
        for (i, file) in older.iter().enumerate() {
            if !file.is_empty() {
                replay.add_segment(&format!("shard-{i}"), file).map_err(|d| d.0)?;
            }
        }
        let clock = UnixClock::new(now, unix_ms);
        let mut server = Server { shards: Vec::new(), files: vec![Vec::new(); n as usize], queues: (0..n * n).map(|_| VecDeque::new()).collect() };
        let mut outs = Vec::new();
        for k in 0..n {
            let mut cfg = ShardConfig::with_defaults(k, n, "192.0.2.1:5060".parse().unwrap());
            cfg.watch.min_notify_interval = Duration::ZERO;
            // Restored watchers ask a few per tick: requests and the
            // presentities' changes meet subscriptions that have not
            // asked yet.
            cfg.restart_asks_per_tick = 2;
            let mut s = Shard::new(cfg, now);
            let seg = SegmentWriter::new(SegmentHeader { shard: k, shards: n, segment: 1, base_lsn: 0, created_unix_ms: unix_ms });
            s.attach_journal(Journal::new(seg, Fsync::Always, 1 << 24), clock);
            s.reserve_for_restore(replay.counts[k as usize]);
            let mut out = Outbox { events_off: true, ..Outbox::default() };
            let mut failed = None;
            records(&replay.per_shard[k as usize], |r| {
                if let Err(e) = s.restore(now, clock, &r, &mut out) {
                    failed.get_or_insert(e.0);
                }
            });
            if let Some(e) = failed {
                return Err(format!("a record was not restored: {e}"));
            }
            outs.push((k, out));
            server.shards.push(s);
        }
        for k in 0..n {
            let mut out = Outbox { events_off: true, ..Outbox::default() };
            server.shards[k as usize].restore_done(now, &mut out);
            outs.push((k, out));
        }
        Ok((server, outs))
    }

    fn n(&self) -> u16 {
        self.shards.len() as u16
    }

    /// Writes everything shard `k` appended onto its file, as a flush and
    /// its fdatasync would.
    fn flush(&mut self, k: u16, now: Instant) {
        let (s, file) = (&mut self.shards[k as usize], &mut self.files[k as usize]);
        let j = s.journal_mut().expect("a journal");
        j.flush_into(now, true, file);
        assert_eq!(j.durable(), j.appended(), "all written");
    }
}

enum Op {
    Publish(usize),
    Subscribe(usize, usize),
    Refresh,
    Unsubscribe,
    Wait,
}

impl Sim {
    fn new(seed: u64) -> Result<Sim, String> {
        let mut rng = Entropy::for_shard(seed, 0xfffe);
        let epoch = Instant::now();
        let n = 1 + rng.below(4) as u16;
        let loss = [0.0, 0.05, 0.2][rng.below(3) as usize];
        let (server, outs) = Server::start(n, &[], epoch, UNIX_T0)?;
        let mut sim = Sim {
            rng,
            epoch,
            now: Duration::ZERO,
            unix_at_epoch: UNIX_T0,
            server,
            generation: 1,
            loss,
            publishers: (0..PUBLISHERS).map(|_| Publisher::default()).collect(),
            dialogs: BTreeMap::new(),
            next_id: 0,
            failure: None,
        };
        sim.settle(outs);
        Ok(sim)
    }

    fn instant(&self) -> Instant {
        self.epoch + self.now
    }

    fn fail(&mut self, why: String) {
        if self.failure.is_none() {
            self.failure = Some(format!("generation {}, at {:?}: {why}", self.generation, self.now));
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Carries out outboxes until nothing is left: each shard's records
    /// reach its file before its messages leave (fsync = "always"); each
    /// pair of shards' queue is drained in order, the pairs interleaved as
    /// the seed says; UEs answer what they get.
    fn settle(&mut self, outs: Vec<(u16, Outbox)>) -> Vec<String> {
        let now = self.instant();
        let mut work: VecDeque<(u16, Outbox)> = outs.into();
        let mut probe = Vec::new();
        loop {
            while let Some((k, out)) = work.pop_front() {
                self.server.flush(k, now);
                for t in out.transmits {
                    let wire = String::from_utf8_lossy(&t.wire()).into_owned();
                    if let Some(answer) = self.at_ue(t.to.addr, &wire, &mut probe) {
                        let from = t.to.addr;
                        let k = flow_shard(from, self.server.n());
                        let mut o = Outbox { events_off: true, ..Outbox::default() };
                        self.server.shards[k as usize].on_message(now, Peer::udp(from), answer.as_bytes(), &mut o);
                        work.push_back((k, o));
                    }
                }
                let n = self.server.n() as usize;
                for (dst, msg) in out.to_shards {
                    self.server.queues[k as usize * n + dst as usize].push_back(msg);
                }
            }
            let waiting: Vec<usize> = (0..self.server.queues.len()).filter(|&q| !self.server.queues[q].is_empty()).collect();
            if waiting.is_empty() {
                break;
            }
            let q = waiting[self.rng.below(waiting.len() as u64) as usize];
            let dst = (q % self.server.n() as usize) as u16;
            let msg = self.server.queues[q].pop_front().expect("not empty");
            if std::env::var("SIM_TRACE").is_ok() && !matches!(msg, CoreMsg::Forward(_)) {
                let text = match &msg {
                    CoreMsg::WatchAnswer { ask, action, version, changed, .. } => format!("WatchAnswer ask {ask} {action:?} v{version} changed {changed}"),
                    other => format!("{other:?}").chars().take(100).collect(),
                };
                eprintln!("{:?} gen {} to shard {dst}: {text}", self.now, self.generation);
            }
            let mut o = Outbox { events_off: true, ..Outbox::default() };
            self.server.shards[dst as usize].on_shard_msg(now, msg, &mut o);
            work.push_back((dst, o));
        }
        probe
    }

    /// A request from a UE at `from`, over the lossy network unless
    /// `reliable`; returns the probe's NOTIFY bodies, if any.
    fn request(&mut self, from: SocketAddr, bytes: String, reliable: bool) -> Vec<String> {
        if !reliable && self.rng.chance(self.loss) {
            return Vec::new();
        }
        let k = flow_shard(from, self.server.n());
        let (now, mut o) = (self.instant(), Outbox { events_off: true, ..Outbox::default() });
        self.server.shards[k as usize].on_message(now, Peer::udp(from), bytes.as_bytes(), &mut o);
        self.settle(vec![(k, o)])
    }

    fn tick(&mut self) {
        let now = self.instant();
        let mut outs = Vec::new();
        for k in 0..self.server.n() {
            let mut o = Outbox { events_off: true, ..Outbox::default() };
            self.server.shards[k as usize].on_time(now, &mut o);
            outs.push((k, o));
        }
        self.settle(outs);
    }

    /// What a UE does with a message the server sent it; returns its
    /// answer to a request.
    fn at_ue(&mut self, to: SocketAddr, wire: &str, probe: &mut Vec<String>) -> Option<String> {
        let call_id = header(wire, "Call-ID").unwrap_or("").to_string();
        if wire.starts_with("SIP/2.0 ") {
            // Answers to UEs are lost like their requests.
            if self.rng.chance(self.loss) {
                return None;
            }
            self.on_response(&call_id, wire);
            return None;
        }
        if !wire.starts_with("NOTIFY ") {
            self.fail(format!("unexpected request to {to}: {}", wire.lines().next().unwrap_or("")));
            return None;
        }
        let answer = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            header(wire, "Via").unwrap_or(""),
            header(wire, "From").unwrap_or(""),
            header(wire, "To").unwrap_or(""),
            header(wire, "CSeq").unwrap_or("")
        );
        if call_id.starts_with("probe-") {
            probe.push(body(wire).to_string());
            return Some(answer);
        }
        let cseq: u32 = header(wire, "CSeq").and_then(|c| c.split_whitespace().next()).and_then(|c| c.parse().ok()).unwrap_or(0);
        if std::env::var("SIM_TRACE").is_ok() {
            let note = body(wire).split("<note>").nth(1).and_then(|n| n.split('<').next()).unwrap_or("-");
            eprintln!("{:?} gen {} NOTIFY {call_id} cseq {cseq} note {note} state {:?}", self.now, self.generation, header(wire, "Subscription-State"));
        }
        let terminated = header(wire, "Subscription-State").is_some_and(|s| s.starts_with("terminated"));
        let Some(d) = self.dialogs.get_mut(&call_id) else {
            self.fail(format!("a NOTIFY for an unknown dialog {call_id}"));
            return Some(answer);
        };
        if cseq <= d.max_notify_cseq {
            let why = format!("dialog {call_id}: NOTIFY CSeq {cseq} after {}", d.max_notify_cseq);
            self.fail(why);
            return Some(answer);
        }
        d.max_notify_cseq = cseq;
        if d.to_tag.is_none() {
            d.to_tag = header(wire, "From").and_then(tag_of);
        }
        let b = body(wire);
        if !b.is_empty() {
            d.last_doc = Some(b.to_string());
        }
        if terminated {
            d.live = false;
        } else if let Some(left) = header(wire, "Subscription-State").and_then(|st| st.split("expires=").nth(1)).and_then(|e| e.parse::<u64>().ok()) {
            // The server's word on when it ends (a refresh whose 200 was
            // lost still counts).
            d.expires_at = self.now + Duration::from_secs(left);
        }
        Some(answer)
    }

    fn on_response(&mut self, call_id: &str, wire: &str) {
        let code = status(wire);
        if let Some(rest) = call_id.strip_prefix("pub-") {
            let (p, note) = rest.split_once('-').unwrap();
            let (p, note): (usize, u32) = (p.parse().unwrap(), note.parse().unwrap());
            let publisher = &mut self.publishers[p];
            match code {
                200 => {
                    publisher.etag = header(wire, "SIP-ETag").map(str::to_string);
                    publisher.acked = Some(note);
                    publisher.sent_since.clear();
                    publisher.acked_until = self.now + publisher.expires;
                }
                412 => publisher.etag = None,
                _ => {}
            }
            return;
        }
        let cseq: u32 = header(wire, "CSeq").and_then(|c| c.split_whitespace().next()).and_then(|c| c.parse().ok()).unwrap_or(0);
        let Some(d) = self.dialogs.get_mut(call_id) else { return };
        match code {
            200 if cseq == 1 || (cseq == d.cseq && d.live) => {
                if cseq == 1 {
                    d.live = true;
                    d.to_tag = header(wire, "To").and_then(tag_of);
                }
                let granted = header(wire, "Expires").and_then(|e| e.parse().ok()).unwrap_or(d.expires);
                d.expires_at = self.now + Duration::from_secs(granted as u64);
            }
            481 if d.live && cseq == d.cseq => {
                let why = format!("dialog {call_id} of {} answered 481 to its refresh: the server lost it", d.aor);
                self.fail(why);
            }
            _ => {}
        }
    }

    fn publish(&mut self, p: usize) {
        let note = self.id() as u32;
        let aor = aor(p);
        let doc = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t{note}\"><status><basic>open</basic></status><note>n{note}</note></tuple></presence>"
        );
        let if_match = self.publishers[p].etag.as_ref().map(|t| format!("SIP-If-Match: {t}\r\n")).unwrap_or_default();
        // Some expire within the run, or while the server is down: their
        // watchers must then be told.
        let expires = if self.rng.chance(0.3) { 60 } else { 3600 };
        let publisher = &mut self.publishers[p];
        publisher.expires = Duration::from_secs(expires);
        if publisher.etag.is_some() {
            publisher.acked_until = publisher.acked_until.min(self.now + publisher.expires);
        }
        let req = format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKp{note}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\nTo: <{aor}>\r\n\
Call-ID: pub-{p}-{note}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\n{if_match}Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
            publisher_addr(p),
            doc.len()
        );
        self.publishers[p].sent_since.push(note);
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("{:?} gen {} PUBLISH {aor} n{note} if-match {}", self.now, self.generation, !if_match.is_empty());
        }
        self.request(publisher_addr(p), req, false);
    }

    fn subscribe_request(&self, call_id: &str, d: &Dialog, w: SocketAddr, expires: u32, branch: u64) -> String {
        let to_tag = d.to_tag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {w};branch=z9hG4bKs{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:watcher@example.net>;tag={}\r\n\
To: <{aor}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {} SUBSCRIBE\r\nContact: <sip:watcher@{w}>\r\nEvent: presence\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            d.from_tag,
            d.cseq,
            aor = d.aor,
        )
    }

    fn watcher_of(call_id: &str) -> SocketAddr {
        let w: usize = call_id.strip_prefix("sub-").and_then(|r| r.split('-').next()).and_then(|w| w.parse().ok()).unwrap();
        watcher_addr(w)
    }

    fn subscribe(&mut self, w: usize, p: usize) {
        let id = self.id();
        let call_id = format!("sub-{w}-{id}");
        // Some run out within the run, or while the server is down.
        let expires = if self.rng.chance(0.3) { 60 } else { 600 };
        let d = Dialog {
            aor: aor(p),
            from_tag: format!("f{id}"),
            to_tag: None,
            cseq: 1,
            live: false,
            max_notify_cseq: 0,
            last_doc: None,
            expires,
            expires_at: Duration::MAX,
        };
        let req = self.subscribe_request(&call_id, &d, watcher_addr(w), expires, id);
        self.dialogs.insert(call_id, d);
        self.request(watcher_addr(w), req, false);
    }

    /// A live dialog, chosen by the seed.
    fn some_live_dialog(&mut self) -> Option<String> {
        let live: Vec<String> = self.dialogs.iter().filter(|(_, d)| d.live && d.to_tag.is_some()).map(|(c, _)| c.clone()).collect();
        (!live.is_empty()).then(|| live[self.rng.below(live.len() as u64) as usize].clone())
    }

    fn refresh(&mut self, call_id: &str, expires: u32, reliable: bool) {
        let branch = self.id();
        let d = self.dialogs.get_mut(call_id).unwrap();
        d.cseq += 1;
        d.expires = expires;
        if expires == 0 {
            // Asked to end: no longer expected to be there.
            d.live = false;
        }
        let d = &self.dialogs[call_id];
        let req = self.subscribe_request(call_id, d, Self::watcher_of(call_id), expires, branch);
        self.request(Self::watcher_of(call_id), req, reliable);
    }

    fn step(&mut self) {
        let op = match self.rng.below(100) {
            0..50 => Op::Publish(self.rng.below(PUBLISHERS as u64) as usize),
            50..68 => Op::Subscribe(self.rng.below(WATCHERS as u64) as usize, self.rng.below(PUBLISHERS as u64) as usize),
            68..83 => Op::Refresh,
            83..88 => Op::Unsubscribe,
            _ => Op::Wait,
        };
        match op {
            Op::Publish(p) => self.publish(p),
            Op::Subscribe(w, p) => self.subscribe(w, p),
            Op::Refresh => {
                if let Some(c) = self.some_live_dialog() {
                    self.refresh(&c, 600, false);
                }
            }
            Op::Unsubscribe => {
                if let Some(c) = self.some_live_dialog() {
                    self.refresh(&c, 0, false);
                }
            }
            Op::Wait => self.now += Duration::from_millis(self.rng.below(3000)),
        }
        self.now += Duration::from_millis(1 + self.rng.below(50));
        self.tick();
    }

    /// The process dies: what is on the files is all that is left. The
    /// next server has a seeded shard count, starts `down` later, and
    /// reads `files`.
    fn restart(&mut self, files: Vec<Vec<u8>>, down: Duration) -> Result<(), String> {
        self.now += down;
        self.generation += 1;
        let n = 1 + self.rng.below(4) as u16;
        // The new process's clocks: its Instant epoch is new, Unix time
        // went on.
        let unix_ms = self.unix_at_epoch + self.now.as_millis() as u64;
        let (server, outs) = Server::start(n, &files, self.instant(), unix_ms)?;
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("{:?} restart on {n} shards", self.now);
        }
        self.server = server;
        // Restored watchers' asks to other shards may still be on their
        // way when traffic reaches the presentities' shards.
        if self.rng.chance(0.5) {
            for _ in 0..1 + self.rng.below(6) {
                let p = self.rng.below(PUBLISHERS as u64) as usize;
                self.publish(p);
            }
        }
        self.settle(outs);
        // The checkpoint the start began, written over the ticks.
        for _ in 0..10 {
            self.now += Duration::from_millis(5);
            self.tick();
        }
        if let Some(k) = (0..n).find(|&k| self.server.shards[k as usize].checkpoint_end().is_none()) {
            return Err(format!("shard {k} of {n} has not finished its checkpoint"));
        }
        Ok(())
    }

    /// Timer ticks until every shard's restored subscriptions have asked
    /// their presentities.
    fn finish_asks(&mut self) -> Result<(), String> {
        for _ in 0..100_000 {
            if self.server.shards.iter().all(|s| s.rewatch_pending() == 0) {
                return Ok(());
            }
            self.now += Duration::from_millis(5);
            self.tick();
        }
        Err("restored subscriptions are still asking after 100,000 ticks".into())
    }

    /// The invariants after a restart: what was acknowledged is there, and
    /// every live watcher saw its presentity's current document.
    fn check(&mut self) {
        let mut docs = Vec::new();
        for p in 0..PUBLISHERS {
            let id = self.id();
            let aor = aor(p);
            let probe: SocketAddr = "10.2.0.1:5060".parse().unwrap();
            let req = format!(
                "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {probe};branch=z9hG4bKq{id}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.net>;tag=q{id}\r\n\
To: <{aor}>\r\nCall-ID: probe-{id}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:probe@{probe}>\r\nEvent: presence\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
            );
            let got = self.request(probe, req, true);
            let doc = got.last().cloned().unwrap_or_default();
            let publisher = &self.publishers[p];
            if let Some(acked) = publisher.acked.filter(|_| publisher.acked_until > self.now + Duration::from_secs(1)) {
                let held = std::iter::once(acked).chain(publisher.sent_since.iter().copied()).any(|n| doc.contains(&format!("<note>n{n}</note>")));
                if !held {
                    self.fail(format!("{aor}: the acknowledged PUBLISH n{acked} is not in {doc:?}"));
                }
            }
            docs.push((aor, doc));
        }
        let stale: Vec<String> = self
            .dialogs
            .iter()
            .filter(|(_, d)| d.live)
            .filter_map(|(c, d)| {
                let current = &docs.iter().find(|(a, _)| *a == d.aor)?.1;
                (d.last_doc.as_ref() != Some(current)).then(|| format!("{c} of {} saw {:?}, the document is {current:?}", d.aor, d.last_doc))
            })
            .collect();
        if let Some(s) = stale.first() {
            self.fail(format!("{} watchers were not told the current document, e.g. {s}", stale.len()));
        }
        // A subscription whose time ran out (while the server ran or was
        // down) was ended with a NOTIFY.
        let overdue: Vec<String> =
            self.dialogs.iter().filter(|(_, d)| d.live && d.expires_at + Duration::from_secs(1) < self.now).map(|(c, _)| c.clone()).collect();
        if let Some(c) = overdue.first() {
            self.fail(format!("{} subscriptions outlived their expiry without a NOTIFY ending them, e.g. {c}", overdue.len()));
        }
        // Every live dialog is known: a refresh gets 200 (a 481 fails in
        // on_response).
        let live: Vec<String> = self.dialogs.iter().filter(|(_, d)| d.live && d.to_tag.is_some()).map(|(c, _)| c.clone()).collect();
        for c in live {
            self.refresh(&c, 600, true);
        }
    }
}

/// One seed: traffic, a crash, a restart on another shard count, more
/// traffic, a crash after the restart's checkpoint, a restart from the
/// second run's files alone.
fn run(seed: u64) -> Result<(u16, usize), String> {
    let mut sim = Sim::new(seed)?;
    let first = sim.server.n();
    // The second start reads the second run's files alone: its
    // checkpoint made the first run's unnecessary.
    for _ in 0..2 {
        for _ in 0..(20 + sim.rng.below(150)) {
            sim.step();
        }
        let files = std::mem::take(&mut sim.server.files);
        let down = Duration::from_millis(sim.rng.below(90_000));
        sim.restart(files, down)?;
        // Traffic while restored watchers are still asking, then until
        // every one has asked: only then must each have been told.
        for _ in 0..sim.rng.below(40) {
            sim.step();
        }
        sim.finish_asks()?;
        sim.check();
    }
    let live = sim.dialogs.values().filter(|d| d.live).count();
    match sim.failure {
        Some(f) => Err(f),
        None => Ok((first, live)),
    }
}

#[test]
fn crashes_and_restarts_keep_what_was_acknowledged() {
    let mut failures = Vec::new();
    let mut live = 0;
    for seed in seeds(200) {
        match run(seed) {
            Ok((_, l)) => live += l,
            Err(e) => failures.push(format!("seed {seed}: {e}")),
        }
    }
    eprintln!("{live} live subscriptions checked across the seeds' last restarts");
    assert!(failures.is_empty(), "{} seeds failed:\n{}", failures.len(), failures.join("\n"));
    assert!(live > 100, "the seeds barely subscribed: {live}");
}
