//! One shard, composed: bytes and time in, transmits, cross-shard messages
//! and events out. Parses, routes each message to its owning shard, runs
//! it in its transaction and hands it to its service (registrar,
//! presence); owns those services' tables for its share of presentities.
//! Sans-IO: knows nothing of sockets or executors.

use crate::core::capabilities;
use crate::core::entropy::Entropy;
use crate::core::ids;
use crate::core::ingress::Ingress;
use crate::core::limits::{Caps, Limit};
use crate::core::overload::{Overload, OverloadConfig, Verdict};
use crate::core::peer::{Peer, Transmit};
use crate::core::reply::{HandlerReply, StoredAnswer};
use crate::core::transaction::{ClientOutcome, ClientTransactions, ServerKey, ServerLookup, ServerTransactions, SipTimers, TxnRef};
use crate::core::trust::TrustList;
use crate::presence::authz::Policy;
use crate::presence::peu::{Peu, PeuConfig};
use crate::presence::publication::{DocChange, Publications, PublishConfig};
use crate::presence::watchers::{WatchConfig, Watchers};
use crate::registrar::reg_event::{NotifyVerdict, RegSubscriber};
use crate::registrar::{RegChange, Registrar, RegistrarConfig};
use crate::sip::{self, HeaderName, Limits, Message, Method, ParseError, RawMessage, Scheme, Via};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod dialog_home;
#[cfg(test)]
mod dialog_home_tests;
pub mod durable;
#[cfg(test)]
mod durable_tests;
pub mod hop;
#[cfg(test)]
mod hop_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod notify_tests;
pub mod outbox;
mod remote;
#[cfg(test)]
mod remote_tests;
pub mod replica;
#[cfg(test)]
mod replica_tests;
#[cfg(test)]
mod response_tests;
mod sources;
mod trace;
mod unanswered;
pub mod waiting;
mod watch;
mod watched;

pub use outbox::{CoreMsg, Event, Forward, Outbox};
pub use sources::ConfiguredAgent;
use watch::PendingWatch;
pub use watch::WatchedView;
use watched::WatchedTable;

/// Whom a shard serves (`[security] accept`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    /// Every source (development).
    Any,
    /// Trusted network elements only; requests from elsewhere get 403.
    Trusted,
}

/// What a shard core needs to know about its place and its limits.
#[derive(Clone, Debug)]
pub struct ShardConfig {
    pub shard: u16,
    pub shards: u16,
    pub limits: Limits,
    pub timers: SipTimers,
    /// The seed of every random choice the shard makes: hash seeds,
    /// tags, branches, Call-IDs, entity tags (see [`Entropy`]). The same
    /// seed and the same inputs give the same outputs, byte for byte.
    pub seed: u64,
    pub registrar: RegistrarConfig,
    /// The address the server listens on: Via and Contact of the requests
    /// it sends.
    pub local_addr: SocketAddr,
    /// SUBSCRIBE to the reg event at the S-CSCF of third-party
    /// registrations (RFC 3680).
    pub reg_event_subscribe: bool,
    /// Expires of those subscriptions, seconds.
    pub reg_event_expires: u32,
    pub publish: PublishConfig,
    pub watch: WatchConfig,
    pub policy: Policy,
    /// The trusted network elements: they may assert identities, register
    /// on a UE's behalf and route NOTIFYs by Contact and Record-Route.
    pub trusted: TrustList,
    pub accept: Accept,
    /// The limits on every table a peer can grow.
    pub caps: Caps,
    /// When the shard counts as overloaded and sheds new initial requests.
    pub overload: OverloadConfig,
    /// Presence user agents as sources (the server subscribing to them).
    pub peu: PeuConfig,
    /// Agents the configuration names; each shard takes those of the
    /// presentities it owns.
    pub peu_agents: Vec<ConfiguredAgent>,
    /// What the shard is sized for at start.
    pub expected: Expected,
    /// Restored subscriptions that ask their presentities per timer tick
    /// after a start from journals ([`durable::REWATCH_ASKS_PER_TICK`];
    /// simulations make it small, so that traffic meets asks not yet made).
    pub restart_asks_per_tick: usize,
    /// The cluster this node belongs to, if any: requests for a presentity
    /// whose partition another node serves go there (`hop.rs`).
    pub cluster: Option<std::sync::Arc<crate::cluster::view::ClusterView>>,
    /// How long, and how many, requests wait for their partition's owner
    /// while nobody serves it (`waiting.rs`).
    pub move_wait: waiting::MoveWait,
    /// How long a request forwarded to another node waits for its final
    /// response before this node answers 503 itself (`unanswered.rs`);
    /// zero: never.
    pub hop_timeout: Duration,
    /// Fault injection for tests: a request with this Call-ID and CSeq
    /// number panics in its handler. `None` in every real configuration.
    #[doc(hidden)]
    pub panic_on: Option<(Box<[u8]>, u32)>,
}

impl ShardConfig {
    /// Shard `shard` of `shards` at `local_addr` with every other setting at
    /// its default (as an empty configuration file gives).
    pub fn with_defaults(shard: u16, shards: u16, local_addr: SocketAddr) -> Self {
        ShardConfig {
            shard,
            shards,
            limits: Limits::default(),
            timers: SipTimers::default(),
            seed: 1,
            registrar: RegistrarConfig::default(),
            local_addr,
            reg_event_subscribe: false,
            reg_event_expires: 3600,
            publish: PublishConfig::default(),
            watch: WatchConfig::default(),
            policy: Policy::default(),
            trusted: TrustList::default(),
            accept: Accept::Any,
            caps: Caps::default(),
            overload: OverloadConfig::default(),
            peu: PeuConfig::default(),
            peu_agents: Vec::new(),
            expected: Expected::default(),
            restart_asks_per_tick: durable::REWATCH_ASKS_PER_TICK,
            cluster: None,
            move_wait: waiting::MoveWait::default(),
            // Over the owner's own wait for a partition it is taking
            // (`MoveWait`, 800 ms), so that it answers first; under the
            // front's 1 s.
            hop_timeout: Duration::from_millis(900),
            panic_on: None,
        }
    }
}

/// What a shard expects to hold. Its tables are sized for it when it
/// starts, so that no request on the way up pays for a growth. Tables in
/// parts (`core::parted`) grow a 64th at a time anyway (a few
/// milliseconds at a million entries); sizing saves even that, and the
/// memory a growing table holds twice while it moves. Zero: tables grow
/// as needed.
/// `shard().room()` tells what a shard's tables hold without growing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Presentities (publications, registrations).
    pub presentities: usize,
    /// Watcher subscriptions held here, and watchers of the presentities
    /// owned here.
    pub subscriptions: usize,
}

/// Counters a shard keeps about its own traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    /// Messages taken in from the network and served: requests,
    /// responses (a NOTIFY's 200 included) and malformed ones. A shard
    /// that takes few is quiet (`reactor::memory`).
    pub messages: u64,
    pub requests: u64,
    pub responses_sent: u64,
    pub malformed: u64,
    pub dropped: u64,
    pub forwarded: u64,
    pub retransmissions: u64,
    /// Forwarded requests shed because the owner's queue was full (set by
    /// the driver, which owns the queues).
    pub shed: u64,
    /// TCP limits the driver enforced (set by the driver, which owns the
    /// connections).
    pub tcp: TcpLimitCounts,
    /// Steps that panicked and were contained (see `Shard::guarded`).
    pub panics: u64,
    /// NOTIFYs sent over UDP above the path MTU (see `watch.rs`).
    pub oversize_udp_notifies: u64,
    /// New initial requests dropped unanswered under overload, having
    /// waited past the drop threshold (four times the delay target).
    pub overload_dropped: u64,
    /// Requests answered by a limit, per limit (`Limit::index`).
    pub limited: [u64; Limit::ALL.len()],
    /// The hop to other nodes of a cluster.
    pub hop: hop::HopCounts,
    /// Requests that waited for their partition's owner (`waiting.rs`).
    pub waits: waiting::WaitCounts,
    /// Other nodes' interests in a presentity refused at the readers limit
    /// (`Caps::subscriptions` presentities read elsewhere, `remote.rs`).
    pub readers_refused: u64,
}

/// Connections closed or refused at a TCP limit, per kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpLimitCounts {
    /// Accepted and closed at once: `max_tcp_connections_per_shard`.
    pub refused: u64,
    /// Closed with more than `tcp_max_queued_bytes` unread.
    pub unread: u64,
    /// Closed after `tcp_idle_timeout_seconds` of silence.
    pub idle: u64,
}

/// How much state a shard holds, table by table. Once traffic stops and
/// every expiry has passed, all of it must be zero: anything left is a
/// leak (the simulation checks this for every seed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub server_transactions: usize,
    pub client_transactions: usize,
    /// Entries in all of the shard's timer wheels.
    pub timers: usize,
    /// SUBSCRIBEs waiting for their presentity shard's answer.
    pub pending_asks: usize,
    /// Presentities owned here with watchers or winfo subscribers.
    pub watched: usize,
    pub subscriptions: usize,
    pub deferred_notifies: usize,
    pub notifies_in_flight: usize,
    /// Subscriptions with a change not yet sent.
    pub unsent_changes: usize,
    pub presentities: usize,
    pub registrations: usize,
    pub reg_subscriptions: usize,
    /// Presence user agents known as sources.
    pub agents: usize,
    /// Other nodes' presentities watched here (`remote.rs`).
    pub mirrors: usize,
    /// Presentities served here that other nodes read.
    pub read_elsewhere: usize,
}

impl Census {
    pub fn is_empty(&self) -> bool {
        *self == Census::default()
    }
}

/// Context of a request this shard sent, returned with its outcome.
#[derive(Debug)]
pub enum ClientCtx {
    /// A SUBSCRIBE to the reg event, by the subscription's Call-ID.
    RegSubscribe(Box<[u8]>),
    /// A NOTIFY to a watcher, by subscription id.
    Notify(u64),
    /// A SUBSCRIBE to a presence user agent, by agent and CSeq.
    Peu { agent: u64, cseq: u32 },
}

pub struct Shard {
    cfg: ShardConfig,
    server: ServerTransactions,
    client: ClientTransactions<ClientCtx>,
    registrar: Registrar,
    reg_changes: Vec<RegChange>,
    reg_sub: RegSubscriber,
    publications: Publications,
    doc_changes: Vec<DocChange>,
    /// The server's subscriptions to presence user agents of presentities
    /// owned here.
    peu: Peu,
    /// Watcher subscriptions received here.
    subscriptions: Watchers,
    /// For presentities owned here: their watchers and how many each
    /// shard holds.
    presentity_watchers: WatchedTable,
    /// SUBSCRIBEs waiting for their presentity shard's answer, by ask id.
    pending_watch: HashMap<u64, PendingWatch, ahash::RandomState>,
    next_ask: u64,
    /// NOTIFYs in flight on this shard, and subscriptions waiting for the
    /// window to open (see `WatchConfig::window`).
    notifies_in_flight: usize,
    deferred_notifies: VecDeque<u64>,
    /// Messages this shard sends itself, handled before a step returns.
    local: VecDeque<CoreMsg>,
    /// Queueing delay of what arrives, and whether to shed.
    overload: Overload,
    /// Datagrams taken in while overloaded, waiting for service.
    ingress: Ingress,
    /// When the last slice of queued work ended with work left.
    busy_since: Option<Instant>,
    /// When the table sizes are next traced (target `tables`, debug).
    next_table_trace: Instant,
    /// The last timer step.
    last_tick: Instant,
    /// How service went since the last trace.
    window: trace::ServiceWindow,
    /// To-tags of responses outside dialogs.
    entropy: Entropy,
    stats: ShardStats,
    outcomes: Vec<ClientOutcome<ClientCtx>>,
    /// The journal, when the server keeps its state on disk.
    durable: Option<durable::Durable>,
    /// Records on their way to the partition logs, in a cluster.
    replica: Option<replica::Replica>,
    /// Documents exchanged with other nodes of the cluster.
    remote: remote::Remote,
    /// Requests waiting for their partition's owner (`waiting.rs`).
    waiting: waiting::Waiting,
    /// The deadline of the waiting request being routed again, if one is.
    resuming: Option<Instant>,
    /// Requests forwarded to another node, until it answers (`unanswered.rs`).
    unanswered: unanswered::Unanswered,
}

impl Shard {
    pub fn new(cfg: ShardConfig, now: Instant) -> Shard {
        let mut e = Entropy::for_shard(cfg.seed, cfg.shard);
        let mut shard = Shard {
            server: ServerTransactions::new(cfg.timers, now, e.hasher()),
            client: ClientTransactions::new(cfg.shard, cfg.timers, now, e.fork()),
            registrar: Registrar::new(cfg.registrar.clone(), now, e.hasher()),
            reg_changes: Vec::new(),
            reg_sub: RegSubscriber::new(cfg.shard, cfg.local_addr, cfg.reg_event_expires, e.fork(), now),
            publications: Publications::new(cfg.publish.clone(), cfg.shard, e.fork(), now),
            doc_changes: Vec::new(),
            peu: Peu::new(cfg.peu.clone(), cfg.shard, cfg.local_addr, e.fork(), now),
            subscriptions: Watchers::new(cfg.watch.clone(), cfg.shard, cfg.local_addr, e.fork(), now),
            presentity_watchers: WatchedTable::new(cfg.shards, e.hasher()),
            pending_watch: HashMap::with_hasher(e.hasher()),
            next_ask: 0,
            notifies_in_flight: 0,
            deferred_notifies: VecDeque::new(),
            local: VecDeque::new(),
            overload: Overload::new(cfg.overload),
            ingress: Ingress::new(cfg.overload.queue_messages, cfg.overload.queue_bytes),
            busy_since: None,
            next_table_trace: now,
            last_tick: now,
            window: trace::ServiceWindow::default(),
            entropy: e,
            stats: ShardStats::default(),
            outcomes: Vec::new(),
            durable: None,
            replica: None,
            // Seeded from the shard's seed without drawing on `e`, whose
            // stream the tags and branches above depend on.
            remote: remote::Remote::new(ahash::RandomState::with_seeds(cfg.seed, cfg.shard as u64, 0x6d69_7272, 0x7265_6164)),
            waiting: waiting::Waiting::new(cfg.move_wait),
            resuming: None,
            unanswered: unanswered::Unanswered::new(cfg.hop_timeout),
            cfg,
        };
        shard.reserve(shard.cfg.expected);
        shard.add_configured_agents(now);
        shard
    }

    /// Makes room for `e` in every table that grows with it.
    fn reserve(&mut self, e: Expected) {
        self.publications.reserve(e.presentities);
        self.registrar.reserve(e.presentities);
        self.subscriptions.reserve(e.subscriptions);
        self.presentity_watchers.reserve(e.subscriptions);
    }

    /// What the tables hold without growing, each kind by its smallest
    /// table.
    pub fn room(&self) -> Expected {
        Expected {
            presentities: self.publications.capacity().min(self.registrar.capacity()),
            subscriptions: self.subscriptions.capacity().min(self.presentity_watchers.capacity()),
        }
    }

    pub fn id(&self) -> u16 {
        self.cfg.shard
    }
    pub fn stats(&self) -> ShardStats {
        ShardStats { waits: self.waiting.counts, ..self.stats }
    }

    /// A message from the network: parsed, routed to its owner (into
    /// `out.to_shards`) or handled here.
    pub fn on_message(&mut self, now: Instant, peer: Peer, bytes: &[u8], out: &mut Outbox) {
        self.on_message_at(now, now, peer, bytes, out);
    }

    /// A message that arrived (in the kernel) at `received` and is handled
    /// at `now`: the wait between is the shard's queueing delay, which
    /// decides whether it sheds new initial requests (`core::overload`).
    pub fn on_message_at(&mut self, now: Instant, received: Instant, peer: Peer, bytes: &[u8], out: &mut Outbox) {
        let wait = now.saturating_duration_since(received);
        self.overload.observe(now, wait);
        self.guarded(now, Some(bytes), out, |s, out| {
            if s.admit(wait, wait, peer, bytes, out) {
                s.serve(now, peer, bytes, out);
            }
            s.drain_local(now, out);
        });
    }

    /// A datagram taken off the socket while the shard has a backlog or is
    /// overloaded (see `core::ingress`): decided now, on the sojourn it will have once the
    /// queue ahead of it is served, and either answered or dropped at once,
    /// or queued for [`Self::serve_queued`].
    pub fn on_arrival(&mut self, now: Instant, received: Instant, peer: Peer, bytes: &[u8], out: &mut Outbox) {
        let age = now.saturating_duration_since(received);
        self.overload.waited_in_socket(now, age);
        let wait = self.overload.predicted(age, self.ingress.len());
        let mut take = false;
        self.guarded(now, Some(bytes), out, |s, out| take = s.admit(wait, age, peer, bytes, out));
        if take {
            self.ingress.push(now, received, wait, peer, bytes);
        }
    }

    /// Serves queued datagrams, oldest first, until the queue is empty,
    /// `max` are served or `budget` of `clock`'s time has passed; returns
    /// how many. Each is timed, which is the pace [`Self::on_arrival`]
    /// predicts with.
    pub fn serve_queued(&mut self, mut clock: impl FnMut() -> Instant, budget: Duration, max: usize, out: &mut Outbox) -> usize {
        let start = clock();
        // The time since the last slice, when work was left waiting: the
        // socket's drain and its refusals, which slow the queue as much as
        // serving does.
        if let Some(mark) = self.busy_since.take() {
            let gap = start.saturating_duration_since(mark);
            self.overload.busy(gap);
            self.window.slice_gap(gap);
        }
        let mut begun = start;
        let mut n = 0;
        while n < max {
            let Some(a) = self.ingress.pop() else { break };
            let now = clock();
            if n > 0 {
                let took = now - begun;
                self.overload.served(took);
                self.window.serve_took(took);
            }
            begun = now;
            let sojourn = now.saturating_duration_since(a.received);
            self.overload.observe(now, sojourn);
            self.overload.drained(a.ahead, now.saturating_duration_since(a.queued_at));
            self.window.served(sojourn, self.cfg.overload.deadline, a.predicted, a.ahead);
            self.guarded(now, Some(&a.bytes), out, |s, out| {
                s.serve(now, a.peer, &a.bytes, out);
                s.drain_local(now, out);
            });
            self.ingress.recycle(a.bytes);
            n += 1;
            if now - start >= budget {
                break;
            }
        }
        if n > 0 {
            let end = clock();
            self.window.slice(end - start);
            self.overload.served(end - begun);
            self.busy_since = (!self.ingress.is_empty()).then_some(end);
        }
        n
    }

    /// The reactor took `taken` datagrams in (through [`Self::on_arrival`])
    /// in `took` of wall time: for the trace.
    pub fn took_in(&mut self, took: Duration, taken: usize) {
        self.window.intake(took, taken);
    }

    /// Gives back the room a burst made the shard's work queues take (the
    /// admission queue, the NOTIFY window's queue) and the spare room its
    /// transaction logs and their timer wheel keep for a steady load. For
    /// a quiet shard: a busy one would only grow them again. Tables give
    /// theirs back as they drain (`core::room`).
    pub fn give_back_room(&mut self) {
        use crate::core::room::{GiveBack, KEEP_QUEUE};
        self.ingress.give_back_room();
        self.deferred_notifies.give_back(KEEP_QUEUE);
        self.server.give_back_room();
        self.client.give_back_room();
    }

    /// Datagrams queued for service.
    pub fn queued(&self) -> usize {
        self.ingress.len()
    }

    /// Whether the admission queue takes more (else leave them in the socket).
    pub fn can_take(&self) -> bool {
        self.ingress.has_room()
    }

    /// Whether the shard sheds new initial requests now.
    pub fn is_shedding(&self) -> bool {
        self.overload.shedding()
    }

    /// Runs one step; a panic in it is contained at this boundary so that
    /// one message or timer cannot take the shard down. The panic is
    /// counted and reported (an `Event::Panic`, logged at error level with
    /// the Call-ID), the request's transaction and its dialog's
    /// subscription are removed rather than left half-changed, and the
    /// step's remaining local hand-offs still run.
    fn guarded(&mut self, now: Instant, bytes: Option<&[u8]>, out: &mut Outbox, step: impl FnOnce(&mut Shard, &mut Outbox)) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(self, out)));
        if let Err(payload) = outcome {
            self.contain(now, bytes, payload, out);
        }
        self.record_subscriptions(now);
    }

    /// After a panic: count and report it, remove the request's
    /// transaction and its dialog's subscription, and run what the step
    /// handed this shard itself, each message guarded again (each is taken
    /// off the queue before it runs, so this ends).
    fn contain(&mut self, now: Instant, mut bytes: Option<&[u8]>, mut payload: Box<dyn std::any::Any + Send>, out: &mut Outbox) {
        loop {
            self.stats.panics += 1;
            let what = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
            let call_id = bytes.and_then(|b| RawMessage::split_lenient(b).ok()).and_then(|r| r.header(HeaderName::CallId).map(lossy)).unwrap_or_default();
            // Events are pushed even when off: a panic is always logged.
            out.events.push(Event::Panic { call_id, what });
            if let Some(msg) = bytes.and_then(|b| Message::parse(b, &self.cfg.limits).ok())
                && msg.is_request()
            {
                self.server.forget_key(&ServerKey::of(&msg));
                if let Some(id) = self.subscriptions.find(&msg) {
                    self.end_subscription(id, out);
                }
            }
            bytes = None;
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.drain_local(now, out))) {
                Ok(()) => return,
                Err(p) => payload = p,
            }
        }
    }

    /// Overload control's decision on a message whose sojourn is (or will
    /// be) `wait`: whether to serve it. A new initial request past the
    /// deadline is answered here or dropped (`Overload::verdict`); PUBLISH
    /// and REGISTER (never in a dialog) are decided before they cost even
    /// a parse; dialogs and responses are always served.
    /// `wait` is the sojourn the request will have (or has, when served
    /// at once), `age` how long it has waited so far.
    fn admit(&mut self, wait: Duration, age: Duration, peer: Peer, bytes: &[u8], out: &mut Outbox) -> bool {
        if !self.overload.past_deadline(wait) {
            return true;
        }
        let sure = bytes.starts_with(b"PUBLISH ") || bytes.starts_with(b"REGISTER ");
        if !sure && !bytes.starts_with(b"SUBSCRIBE ") {
            return true;
        }
        let limits = self.cfg.limits;
        let msg = if sure {
            None
        } else {
            match Message::parse(bytes, &limits) {
                Ok(m) if is_initial(&m) => Some(m),
                // Malformed (answered as such when served), or in a dialog.
                _ => return true,
            }
        };
        let verdict = self.overload.verdict(wait);
        if verdict == Verdict::Serve {
            return true;
        }
        // A quick filter before the parse that decides (see below).
        if verdict == Verdict::Drop && msg.is_none() && memchr::memmem::find(bytes, b";oc").is_none() {
            self.stats.overload_dropped += 1;
            return false;
        }
        let msg = match msg {
            Some(m) => m,
            None => match Message::parse(bytes, &limits) {
                Ok(m) => m,
                Err(_) => return true,
            },
        };
        // A client that takes RFC 7339 feedback is refused, not dropped: it
        // backs off as told, and a drop would only bring its
        // retransmission back into the queue.
        if verdict == Verdict::Drop && !sip::oc::client_supports_loss(msg.via()) {
            self.stats.overload_dropped += 1;
        } else {
            self.refuse_statelessly(&msg, peer, self.cfg.shard, Limit::Overload, out);
            self.window.refused(age);
        }
        false
    }

    /// Parses a message and routes it: to its owner shard, or handled here.
    fn serve(&mut self, now: Instant, peer: Peer, bytes: &[u8], out: &mut Outbox) {
        self.stats.messages += 1;
        if self.on_notify_response(now, bytes, out) {
            return;
        }
        self.route_message(now, peer, bytes, out);
    }

    /// Routes a message: to another node, to its owner shard, or handled here.
    fn route_message(&mut self, now: Instant, peer: Peer, bytes: &[u8], out: &mut Outbox) {
        match Message::parse(bytes, &self.cfg.limits) {
            Err(e) => self.on_malformed(peer, bytes, e, out),
            Ok(msg) if self.cluster_hop(now, peer, &msg, out) => {}
            Ok(msg) => match self.owner(&msg) {
                Some(owner) if owner != self.cfg.shard => {
                    self.stats.forwarded += 1;
                    let fwd = Forward { peer, received_on: self.cfg.shard, bytes: bytes.to_vec() };
                    out.to_shards.push((owner, CoreMsg::Forward(fwd)));
                }
                _ => self.on_owned(now, peer, &msg, self.cfg.shard, out),
            },
        }
    }

    /// Work from another shard (or this one).
    pub fn on_shard_msg(&mut self, now: Instant, msg: CoreMsg, out: &mut Outbox) {
        self.guarded(now, None, out, |s, out| {
            s.dispatch_shard_msg(now, msg, out);
            s.drain_local(now, out);
        });
    }

    fn dispatch_shard_msg(&mut self, now: Instant, msg: CoreMsg, out: &mut Outbox) {
        match msg {
            // Never forwarded again, so a disagreement about ownership
            // cannot loop.
            CoreMsg::Forward(fwd) => match Message::parse(&fwd.bytes, &self.cfg.limits) {
                Ok(msg) => self.on_owned(now, fwd.peer, &msg, fwd.received_on, out),
                Err(e) => self.on_malformed(fwd.peer, &fwd.bytes, e, out),
            },
            CoreMsg::Watch { ask, from, aor, watcher } => self.on_watch(now, ask, from, &aor, &watcher, out),
            CoreMsg::WatchAnswer { ask, action, version, doc, changed } => self.on_watch_answer(now, ask, action, version, doc, changed, out),
            CoreMsg::Unwatch { aor, from, ask } => self.on_unwatch(now, &aor, from, ask, out),
            CoreMsg::Authorize { ask, action } => self.on_authorize(now, ask, action, out),
            CoreMsg::WatchInfo { ask, from, aor } => self.on_watch_info(ask, from, &aor, out),
            CoreMsg::WatchInfoAnswer { ask, watchers } => self.on_watch_info_answer(now, ask, watchers, out),
            CoreMsg::WatcherChange { aor, change } => self.on_watcher_change(now, &aor, &change, out),
            CoreMsg::Document { aor, version, doc } => self.on_document(now, &aor, version, &doc, out),
            CoreMsg::RewatchDone => self.on_rewatch_done(),
        }
    }

    /// Sends `msg` to `shard`: over the queues, or to this shard's own
    /// queue, drained before the current step returns.
    fn send_shard(&mut self, shard: u16, msg: CoreMsg, out: &mut Outbox) {
        if shard == self.cfg.shard {
            self.local.push_back(msg);
        } else {
            out.to_shards.push((shard, msg));
        }
    }

    fn drain_local(&mut self, now: Instant, out: &mut Outbox) {
        while let Some(msg) = self.local.pop_front() {
            self.dispatch_shard_msg(now, msg, out);
        }
    }

    /// A TCP stream that cannot be framed: `pending` is what was buffered
    /// (a head, if the error was found in one). Answered like a malformed
    /// message; the reactor closes the connection after.
    pub fn on_stream_error(&mut self, now: Instant, peer: Peer, pending: &[u8], e: ParseError, out: &mut Outbox) {
        self.guarded(now, None, out, |s, out| {
            s.on_malformed(peer, pending, e, out);
            s.drain_local(now, out);
        });
    }

    /// Runs the shard's timers.
    pub fn on_time(&mut self, now: Instant, out: &mut Outbox) {
        self.guarded(now, None, out, |s, out| s.on_time_unguarded(now, out));
    }

    fn on_time_unguarded(&mut self, now: Instant, out: &mut Outbox) {
        self.checkpoint_step(now, durable::CHECKPOINT_KEYS_PER_TICK);
        self.rewatch_step(now, self.cfg.restart_asks_per_tick, out);
        self.window.timer_step(now.saturating_duration_since(self.last_tick));
        self.last_tick = now;
        self.server.on_time(now);
        self.client.on_time(now, &mut out.transmits, &mut self.outcomes);
        for outcome in std::mem::take(&mut self.outcomes) {
            match outcome {
                ClientOutcome::Timeout { ctx: ClientCtx::RegSubscribe(call_id) } => {
                    self.reg_sub.on_subscribe_response(&call_id, 408, None, now);
                    out.event(|| Event::RegSubscription { call_id: lossy(&call_id), status: 408 });
                }
                ClientOutcome::Timeout { ctx: ClientCtx::Notify(id) } => self.on_notify_result(now, id, None, out),
                ClientOutcome::Timeout { ctx: ClientCtx::Peu { agent, cseq } } => self.on_agent_response(now, agent, cseq, None, None, out),
                ClientOutcome::Final { .. } => {}
            }
        }
        self.watchers_on_time(now, out);
        self.remote_on_time(now, out);
        self.waiting_step(now, out);
        self.registrar.on_time(now, &mut self.reg_changes);
        self.emit_reg_changes(now, out);
        self.peu.on_time(now);
        self.drain_peu(now, out);
        self.publications.on_time(now, &mut self.doc_changes, &doc_readers(&self.presentity_watchers, &self.remote, out));
        self.emit_doc_changes(out);
        let mut due = Vec::new();
        self.reg_sub.due(now, &mut due);
        for call_id in due {
            self.send_resubscribe(now, &call_id, self.cfg.reg_event_expires, out);
        }
        self.drain_local(now, out);
        self.trace_tables(now);
    }

    /// Once a second, at debug level: how big each table is, to tell which
    /// one a memory curve follows, and how service went (`trace`).
    fn trace_tables(&mut self, now: Instant) {
        if !trace::due(now, &mut self.next_table_trace) {
            return;
        }
        let tables = trace::Tables {
            server_transactions: self.server.len(),
            server_timers: self.server.timers_pending(),
            client_transactions: self.client.len(),
            bindings: self.registrar.len(),
            presentities: self.publications.presentities(),
            subscriptions: self.subscriptions.len(),
            queued: self.ingress.len(),
        };
        self.window.emit(self.cfg.shard, tables);
    }

    /// An in-dialog SUBSCRIBE on a reg subscription: a refresh, or with
    /// `expires` 0 the end of it.
    fn send_resubscribe(&mut self, now: Instant, call_id: &[u8], expires: u32, out: &mut Outbox) {
        let mut branch = Vec::with_capacity(32);
        let seq = self.client.new_branch(&mut branch);
        let mut bytes = Vec::with_capacity(512);
        let Some(target) = self.reg_sub.resubscribe(call_id, expires, &branch, &mut bytes) else { return };
        let t = self.client.start(seq, Transmit::new(target, bytes), b"SUBSCRIBE", ClientCtx::RegSubscribe(call_id.into()), now);
        out.event(|| Event::RegSubscription { call_id: lossy(call_id), status: 0 });
        out.transmits.push(t);
    }

    /// Registration changes become presence events (open with the bound
    /// contacts, or closed). The presence layer consumes them to notify
    /// watchers; the reactor logs them.
    /// The same changes decide which presence user agents the server
    /// subscribes to.
    fn emit_reg_changes(&mut self, now: Instant, out: &mut Outbox) {
        for c in std::mem::take(&mut self.reg_changes) {
            let contacts: Vec<String> = c.contacts.iter().map(|u| lossy(u)).collect();
            self.publications.on_registration(&c.aor, &contacts, &mut self.doc_changes, &doc_readers(&self.presentity_watchers, &self.remote, out));
            out.event(|| Event::Registration { aor: lossy(&c.aor), contacts });
            self.sync_agents(now, &c.aor, false, out);
        }
        self.emit_doc_changes(out);
    }

    /// A presentity's composed document changed: announced once (the
    /// watcher fan-out consumes these).
    fn emit_doc_changes(&mut self, out: &mut Outbox) {
        for d in std::mem::take(&mut self.doc_changes) {
            self.fan_out(&d.aor, d.version, &d.document, out);
            out.event(|| Event::Document { aor: lossy(&d.aor), version: d.version, document: d.document });
        }
    }

    /// Every table's size (see [`Census`]).
    pub fn census(&self) -> Census {
        Census {
            server_transactions: self.server.len(),
            client_transactions: self.client.len(),
            timers: self.server.timers_pending()
                + self.client.timers_pending()
                + self.registrar.wheel_entries()
                + self.reg_sub.wheel_entries()
                + self.publications.wheel_entries()
                + self.subscriptions.wheel_entries()
                + self.peu.wheel_entries(),
            pending_asks: self.pending_watch.len(),
            watched: self.presentity_watchers.len(),
            subscriptions: self.subscriptions.len(),
            deferred_notifies: self.deferred_notifies.len(),
            notifies_in_flight: self.notifies_in_flight,
            unsent_changes: self.subscriptions.unsent(),
            presentities: self.publications.presentities(),
            registrations: self.registrar.len(),
            reg_subscriptions: self.reg_sub.len(),
            agents: self.peu.len(),
            mirrors: self.remote.mirrors(),
            read_elsewhere: self.remote.read(),
        }
    }

    /// Watcher subscriptions held here (read-only).
    pub fn subscriptions(&self) -> &Watchers {
        &self.subscriptions
    }

    /// The compositor of this shard (read-only).
    pub fn publications(&self) -> &Publications {
        &self.publications
    }

    /// The server's subscriptions to presence agents (read-only).
    pub fn peu(&self) -> &Peu {
        &self.peu
    }

    pub fn subscriptions_mut(&mut self) -> &mut Watchers {
        &mut self.subscriptions
    }

    pub fn publications_mut(&mut self) -> &mut Publications {
        &mut self.publications
    }

    /// The registrar of this shard (read-only, for tests and stats).
    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    /// Which shard owns this message's state: the minting shard of our
    /// branch (responses) or to-tag (in-dialog requests), the owner of the
    /// registered AOR (REGISTER: To) or of the addressed presentity
    /// (Request-URI with a user part). `None`: no state, any shard will do.
    fn owner(&self, msg: &Message<'_>) -> Option<u16> {
        let shard = if !msg.is_request() {
            ids::parse_branch(msg.via().branch()?)?.0
        } else if let Some(tag) = msg.to().tag() {
            ids::tag_shard(tag)?
        } else if msg.method() == Some(Method::Subscribe) {
            // A subscription lives on the shard that received it (for TCP,
            // its connection's); it asks the presentity's shard itself.
            return None;
        } else {
            ids::owner_of(&Self::addressed_aor(msg)?.0, self.cfg.shards)
        };
        // A tag or branch minted when the server had more shards (before
        // a restart with fewer) folds into the layout, as the journal's
        // replay placed its dialog (`storage::record::Record::owner`).
        Some(shard % self.cfg.shards.max(1))
    }

    /// The normalised AOR an out-of-dialog request addresses, and whether
    /// it writes that presentity's state. REGISTER and PUBLISH write it:
    /// they go to the hash of the AOR, with or without a user part,
    /// because SUBSCRIBE asks that same owner. Anything else addressed to a
    /// user (OPTIONS) is answered by that user's owner too; to the server
    /// itself (None), by any shard.
    fn addressed_aor(msg: &Message<'_>) -> Option<(Vec<u8>, bool)> {
        let (uri, writes) = match msg.method()? {
            Method::Register => (msg.to().uri(), true),
            Method::Publish => (msg.request_uri()?, true),
            _ => (msg.request_uri()?, false),
        };
        if !uri.is_served_scheme() || (!writes && uri.scheme() != Scheme::Tel && uri.user().is_none()) {
            return None;
        }
        let mut aor = Vec::with_capacity(64);
        uri.push_aor(&mut aor);
        Some((aor, writes))
    }

    /// A response to one of this shard's NOTIFYs, taken without a parse:
    /// all its subscription reads is the status, and the transaction is
    /// found by the top branch and the CSeq method (`sip::response_key`).
    /// After a fan-out these are most of what arrives. False for anything
    /// else, which the caller parses in full.
    fn on_notify_response(&mut self, now: Instant, bytes: &[u8], out: &mut Outbox) -> bool {
        let Some(key) = sip::response_key(bytes) else { return false };
        if self.client.absorbs(key.branch) {
            // A retransmitted final of a transaction in Timer K.
            return true;
        }
        if !matches!(self.client.context(key.branch), Some(ClientCtx::Notify(_))) {
            return false;
        }
        if let Some(ClientOutcome::Final { ctx: ClientCtx::Notify(id), status }) = self.client.on_response_key(&key, now) {
            self.on_notify_result(now, id, Some(status), out);
        }
        true
    }

    fn on_owned(&mut self, now: Instant, peer: Peer, msg: &Message<'_>, received_on: u16, out: &mut Outbox) {
        if !msg.is_request() {
            match self.client.on_response(msg, now) {
                Some(ClientOutcome::Final { ctx: ClientCtx::RegSubscribe(call_id), status }) => {
                    self.reg_sub.on_subscribe_response(&call_id, status, Some(msg), now);
                    out.event(|| Event::RegSubscription { call_id: lossy(&call_id), status });
                }
                Some(ClientOutcome::Final { ctx: ClientCtx::Notify(id), status }) => self.on_notify_result(now, id, Some(status), out),
                Some(ClientOutcome::Final { ctx: ClientCtx::Peu { agent, cseq }, status }) => {
                    self.on_agent_response(now, agent, cseq, Some(status), Some(msg), out)
                }
                Some(ClientOutcome::Timeout { .. }) => {}
                None => out.event(|| Event::StrayResponse { status: msg.status().unwrap_or(0) }),
            }
            return;
        }
        self.stats.requests += 1;
        // No INVITE transactions here: an ACK can only belong to a 405 we
        // sent, and ACKs are never answered.
        if msg.method() == Some(Method::Ack) {
            return;
        }
        let key = ServerKey::of(msg);
        if self.server.len() >= self.cfg.caps.server_transactions && !self.server.knows(&key) {
            // No room for another transaction: answered without one.
            return self.refuse_statelessly(msg, peer, received_on, Limit::ServerTransactions, out);
        }
        let txn = match self.server.on_request(key) {
            ServerLookup::New(txn) => txn,
            ServerLookup::Absorbed => {
                self.stats.retransmissions += 1;
                out.event(|| Event::Retransmission { call_id: lossy(msg.call_id()), replayed: false });
                return;
            }
            ServerLookup::Replay(answer) => {
                self.stats.retransmissions += 1;
                out.event(|| Event::Retransmission { call_id: lossy(msg.call_id()), replayed: true });
                let headers: Vec<(HeaderName, &[u8])> = answer.headers().collect();
                out.transmits.push(self.response(msg, peer, answer.code(), answer.reason(), &headers, answer.tag()));
                return;
            }
        };
        let reply = Reply { now, peer, txn, received_on };
        self.handle(msg, reply, out);
    }

    /// RFC 3261 8.2: method, then headers (Require), then the method's own
    /// processing.
    fn handle(&mut self, msg: &Message<'_>, reply: Reply, out: &mut Outbox) {
        if let Some((call_id, cseq)) = &self.cfg.panic_on
            && **call_id == *msg.call_id()
            && *cseq == msg.cseq().seq
        {
            panic!("fault injected for Call-ID {}", lossy(call_id));
        }
        if self.cfg.accept == Accept::Trusted && !self.is_trusted(reply.peer) {
            return self.respond(msg, reply, 403, "Forbidden: not a trusted network element", &[], out);
        }
        let method = msg.method().unwrap_or(Method::Other);
        if !capabilities::ALLOW.contains(&msg.method_raw().and_then(|m| std::str::from_utf8(m).ok()).unwrap_or("")) {
            let allow = capabilities::joined(capabilities::ALLOW);
            return self.respond(msg, reply, 405, "Method Not Allowed", &[(HeaderName::Allow, allow.as_bytes())], out);
        }
        if method != Method::Cancel {
            let unsupported: Vec<&[u8]> =
                msg.require().filter_map(|t| t.ok()).filter(|t| !capabilities::SUPPORTED.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(t))).collect();
            if !unsupported.is_empty() {
                let list = unsupported.join(&b", "[..]);
                return self.respond(msg, reply, 420, "Bad Extension", &[(HeaderName::Unsupported, &list)], out);
            }
        }
        match method {
            Method::Options => {
                let allow = capabilities::joined(capabilities::ALLOW);
                let accept = capabilities::joined(capabilities::ACCEPT);
                let events = capabilities::joined(capabilities::ALLOW_EVENTS);
                let supported = capabilities::joined(capabilities::SUPPORTED);
                let mut headers =
                    vec![(HeaderName::Allow, allow.as_bytes()), (HeaderName::Accept, accept.as_bytes()), (HeaderName::Supported, supported.as_bytes())];
                if !events.is_empty() {
                    headers.push((HeaderName::AllowEvents, events.as_bytes()));
                }
                self.respond(msg, reply, 200, "OK", &headers, out)
            }
            Method::Register => {
                // RFC 3261 10.3 step 4: the AOR must be one we can serve.
                if !msg.to().uri().is_served_scheme() {
                    return self.respond(msg, reply, 404, "Not Found: To is not a SIP or tel URI", &[], out);
                }
                if let Some(limit) = self.journal_refuses() {
                    return self.refuse(msg, reply, limit, out);
                }
                let r = self.registrar.register(reply.now, msg, reply.peer, &mut self.reg_changes);
                if r.code == 200 {
                    self.record_registration(reply.now, &msg.to().uri().aor());
                }
                self.respond_with(msg, reply, &r, out);
                self.emit_reg_changes(reply.now, out);
                if r.code == 200 {
                    // A REGISTER (even a refresh) lifts an agent's refusal.
                    self.sync_agents(reply.now, &msg.to().uri().aor(), true, out);
                }
                if r.code == 200 && self.cfg.reg_event_subscribe {
                    let aor = msg.to().uri().aor();
                    let reg = self.registrar.registration(&aor);
                    let by_scscf = reg.is_some_and(|reg| reg.registered_by.is_some());
                    if by_scscf && !self.reg_sub.is_subscribed(&aor) {
                        let uri = msg.to().uri().as_bytes().to_vec();
                        self.start_reg_subscription(reply.now, &aor, &uri, reply.peer, out);
                    } else if reg.is_none() {
                        // De-registered: the reg subscription has nothing left to watch.
                        if let Some(call_id) = self.reg_sub.call_id_for(&aor).map(|c| c.to_vec()) {
                            self.send_resubscribe(reply.now, &call_id, 0, out);
                        }
                    }
                }
            }
            Method::Notify if self.peu.owns(msg) => self.on_agent_notify(msg, reply, out),
            Method::Notify => self.on_reg_notify(msg, reply, out),
            Method::Subscribe => self.on_subscribe(msg, reply, out),
            Method::Publish => {
                if let Some(limit) = self.journal_refuses() {
                    return self.refuse(msg, reply, limit, out);
                }
                let r = self.publications.publish(reply.now, msg, &mut self.doc_changes, &doc_readers(&self.presentity_watchers, &self.remote, out));
                if r.code == 200 {
                    if let Some(uri) = msg.request_uri() {
                        self.record_publications(reply.now, &uri.aor());
                    }
                }
                self.respond_with(msg, reply, &r, out);
                self.emit_doc_changes(out);
            }
            // ALLOW and these arms are two lists: a method in one and not
            // the other is answered, never a panic.
            _ => self.respond(msg, reply, 501, "Not Implemented", &[], out),
        }
    }

    /// SUBSCRIBEs to the reg event of `aor` at the S-CSCF `target`.
    pub(super) fn start_reg_subscription(&mut self, now: Instant, aor: &[u8], aor_uri: &[u8], target: Peer, out: &mut Outbox) {
        let mut branch = Vec::with_capacity(32);
        let seq = self.client.new_branch(&mut branch);
        let mut bytes = Vec::with_capacity(512);
        let call_id = self.reg_sub.subscribe(aor, aor_uri, target, &branch, &mut bytes);
        let t = self.client.start(seq, Transmit::new(target, bytes), b"SUBSCRIBE", ClientCtx::RegSubscribe(call_id.clone()), now);
        out.event(|| Event::RegSubscription { call_id: lossy(&call_id), status: 0 });
        out.transmits.push(t);
    }

    /// A NOTIFY: only reg-event NOTIFYs on our subscriptions are expected
    /// (RFC 3680); the rest get 481 (no such dialog) or 489.
    fn on_reg_notify(&mut self, msg: &Message<'_>, reply: Reply, out: &mut Outbox) {
        let verdict = self.reg_sub.on_notify(msg, reply.peer.addr);
        match verdict {
            NotifyVerdict::Reject(code, reason) => {
                let accept: &[(HeaderName, &[u8])] = if code == 415 { &[(HeaderName::Accept, b"application/reginfo+xml")] } else { &[] };
                self.respond(msg, reply, code, reason, accept, out)
            }
            NotifyVerdict::Apply(info) => {
                let shards = self.cfg.shards;
                let me = self.cfg.shard;
                if let Some(limit) = self.journal_refuses() {
                    return self.refuse(msg, reply, limit, out);
                }
                self.registrar.apply_reginfo(reply.now, &info, msg.call_id(), reply.peer, |aor| ids::owner_of(aor, shards) == me, &mut self.reg_changes);
                for r in &info.registrations {
                    if let Ok(uri) = sip::Uri::parse(r.aor.as_bytes()) {
                        let aor = uri.aor();
                        if ids::owner_of(&aor, shards) == me {
                            self.record_registration(reply.now, &aor);
                        }
                    }
                }
                self.respond(msg, reply, 200, "OK", &[], out);
                self.emit_reg_changes(reply.now, out);
                // A contact can become (or stop being) a presence agent
                // with the same URI, which is no change of contacts.
                for r in &info.registrations {
                    if let Ok(uri) = sip::Uri::parse(r.aor.as_bytes()) {
                        self.sync_agents(reply.now, &uri.aor(), false, out);
                    }
                }
            }
            NotifyVerdict::Ignore | NotifyVerdict::Terminated => self.respond(msg, reply, 200, "OK", &[], out),
            NotifyVerdict::Resubscribe => {
                self.respond(msg, reply, 200, "OK", &[], out);
                // A version gap: the state may have missed changes. Start
                // over with a new subscription, whose first NOTIFY is full.
                if let Some(old) = self.reg_sub.remove(msg.call_id()) {
                    out.event(|| Event::RegSubscription { call_id: lossy(&old.dialog.call_id), status: 0 });
                    self.start_reg_subscription(reply.now, &old.aor, &old.aor_uri, old.target, out);
                }
            }
        }
    }

    /// Whether `peer` is a trusted network element.
    pub(super) fn is_trusted(&self, peer: Peer) -> bool {
        self.cfg.trusted.contains(peer.addr)
    }

    /// Who sent a request: the identity a trusted element asserts in
    /// P-Asserted-Identity (RFC 3325; the first SIP or tel URI), else the
    /// From URI. An untrusted source's P-Asserted-Identity is ignored.
    pub(super) fn requester(&self, msg: &Message<'_>, peer: Peer) -> Vec<u8> {
        if self.is_trusted(peer)
            && let Some(pai) = msg.p_asserted_identity().filter_map(|p| p.ok()).find(|p| p.uri().is_served_scheme())
        {
            return pai.uri().aor();
        }
        msg.from().uri().aor()
    }

    /// Answers `msg` for `limit` in its transaction.
    fn refuse(&mut self, msg: &Message<'_>, reply: Reply, limit: Limit, out: &mut Outbox) {
        let r = limit.reply(self.cfg.caps.retry_after);
        self.respond_with(msg, reply, &r, out);
    }

    /// Answers `msg` for `limit` without a transaction (there is no room
    /// for one); a retransmission is answered the same way.
    fn refuse_statelessly(&mut self, msg: &Message<'_>, peer: Peer, received_on: u16, limit: Limit, out: &mut Outbox) {
        self.stats.limited[limit.index()] += 1;
        let r = limit.reply(self.cfg.caps.retry_after);
        let headers: Vec<(HeaderName, &[u8])> = r.headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        self.answer_statelessly(msg, peer, received_on, r.code, r.reason, &headers, out);
    }

    /// Answers `msg` without a transaction; a retransmission is answered
    /// the same way.
    #[allow(clippy::too_many_arguments)]
    fn answer_statelessly(
        &mut self,
        msg: &Message<'_>,
        peer: Peer,
        received_on: u16,
        code: u16,
        reason: &str,
        headers: &[(HeaderName, &[u8])],
        out: &mut Outbox,
    ) {
        let mut tag = Vec::with_capacity(24);
        ids::push_tag(&mut tag, self.cfg.shard, self.entropy.u64());
        let t = self.response(msg, peer, code, reason, headers, &tag);
        self.stats.responses_sent += 1;
        out.event(|| Event::Handled { method: lossy(msg.method_raw().unwrap_or_default()), status: code, call_id: lossy(msg.call_id()), received_on });
        out.transmits.push(t);
    }

    /// Sends a handler's answer.
    fn respond_with(&mut self, msg: &Message<'_>, reply: Reply, r: &HandlerReply, out: &mut Outbox) {
        if let Some(limit) = r.limit {
            self.stats.limited[limit.index()] += 1;
        }
        let headers: Vec<(HeaderName, &[u8])> = r.headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        self.respond(msg, reply, r.code, r.reason, &headers, out);
    }

    /// Sends a final response to `msg` within its server transaction.
    fn respond(&mut self, msg: &Message<'_>, reply: Reply, code: u16, reason: &str, headers: &[(HeaderName, &[u8])], out: &mut Outbox) {
        let mut tag = Vec::with_capacity(24);
        ids::push_tag(&mut tag, self.cfg.shard, self.entropy.u64());
        self.respond_tagged(msg, reply, code, reason, headers, &tag, out);
    }

    /// Like [`Self::respond`] with a given to-tag (a dialog's).
    #[allow(clippy::too_many_arguments)]
    fn respond_tagged(&mut self, msg: &Message<'_>, reply: Reply, code: u16, reason: &str, headers: &[(HeaderName, &[u8])], tag: &[u8], out: &mut Outbox) {
        let t = self.response(msg, reply.peer, code, reason, headers, tag);
        if code >= 200 {
            if t.to.transport.is_reliable() {
                // A reliable transport carries no retransmission to answer.
                self.server.forget(reply.txn);
            } else {
                self.server.complete(reply.txn, reply.now, |b| StoredAnswer::write(b, code, reason, tag, headers));
            }
        }
        self.stats.responses_sent += 1;
        out.event(|| Event::Handled {
            method: lossy(msg.method_raw().unwrap_or_default()),
            status: code,
            call_id: lossy(msg.call_id()),
            received_on: reply.received_on,
        });
        out.transmits.push(t);
    }

    /// A response to `msg` from `peer`, addressed per RFC 3261 18.2.2.
    fn response(&self, msg: &Message<'_>, peer: Peer, code: u16, reason: &str, headers: &[(HeaderName, &[u8])], tag: &[u8]) -> Transmit {
        let mut bytes = Vec::with_capacity(512);
        // Clients that asked (RFC 7339) hear how much to hold back.
        let oc = self.overload.feedback();
        let mut w = sip::response_to_with(&mut bytes, msg, code, reason, Some(tag), Some(peer.addr), oc.as_ref());
        for (name, value) in headers {
            w.header(*name, value);
        }
        w.header(HeaderName::Server, b"presenced");
        w.finish(None, b"");
        Transmit::new(response_peer(msg.via(), peer), bytes)
    }

    /// A message that failed to parse: a request is answered with the
    /// status its error maps to when enough of it survives to address a
    /// response (a Via); a response is dropped (RFC 3261 18.1.2).
    fn on_malformed(&mut self, peer: Peer, bytes: &[u8], e: ParseError, out: &mut Outbox) {
        self.stats.malformed += 1;
        let answered = self.answer_malformed(peer, bytes, e, out);
        if answered.is_none() {
            self.stats.dropped += 1;
        }
        out.event(|| Event::Malformed { error: e.to_string(), status: answered });
    }

    fn answer_malformed(&mut self, peer: Peer, bytes: &[u8], e: ParseError, out: &mut Outbox) -> Option<u16> {
        if bytes.starts_with(b"SIP/") {
            return None;
        }
        // An oversize datagram arrives cut at the limit: answer from the
        // whole header lines before the cut, if they hold what a response
        // needs.
        let cut;
        let bytes = match e {
            ParseError::MessageTooLarge if memchr::memmem::find(bytes, b"\r\n\r\n").is_none() => {
                let end = memchr::memmem::rfind(bytes, b"\r\n")? + 2;
                cut = [&bytes[..end], b"\r\n"].concat();
                &cut[..]
            }
            _ => bytes,
        };
        let raw = RawMessage::split_lenient(bytes).ok()?;
        if raw.start_line().starts_with(b"ACK ") {
            return None;
        }
        // A request without any Via cannot be answered; one whose top Via
        // does not parse is answered at its source address and port, the
        // only return path it has.
        let top_via = raw.list(HeaderName::Via).next()?;
        let to = match Via::parse(top_via) {
            Ok(via) => response_peer(&via, peer),
            Err(()) => peer,
        };
        let mut bytes = Vec::with_capacity(512);
        let code = e.status();
        let mut w = sip::response_to(&mut bytes, &raw, code, &e.reason(), None, Some(peer.addr));
        w.header(HeaderName::Server, b"presenced");
        w.finish(None, b"");
        self.stats.responses_sent += 1;
        out.transmits.push(Transmit::new(to, bytes));
        Some(code)
    }
}

/// A request that starts new work: an out-of-dialog REGISTER, PUBLISH or
/// SUBSCRIBE (what overload control sheds).
fn is_initial(msg: &Message<'_>) -> bool {
    msg.is_request() && msg.to().tag().is_none() && matches!(msg.method(), Some(Method::Register | Method::Publish | Method::Subscribe))
}

/// Where and how a response to one request goes.
#[derive(Clone, Copy)]
struct Reply {
    now: Instant,
    peer: Peer,
    txn: TxnRef,
    received_on: u16,
}

/// Where a response goes (RFC 3261 18.2.2, RFC 3581): back on the
/// connection for TCP; over UDP to the source address, at the source port
/// when the client asked with `rport`, else at the Via sent-by port.
pub fn response_peer(via: &Via<'_>, src: Peer) -> Peer {
    if src.transport.is_reliable() || via.rport().is_some() {
        return src;
    }
    Peer::udp(SocketAddr::new(src.addr.ip(), via.port_or_default()))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Who reads a presentity's new document: its watchers (the owner's
/// table), or the event log when it records every document (debug
/// logging, tests). With neither, the compositor does not compose it.
fn doc_readers<'a>(watchers: &'a WatchedTable, remote: &'a remote::Remote, out: &Outbox) -> impl Fn(&[u8]) -> bool + use<'a> {
    let logged = !out.events_off;
    move |aor| logged || watchers.get(aor).is_some() || remote.is_read(aor)
}
