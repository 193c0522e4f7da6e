//! One worker thread's load loop: its flows ([`Transport`]), its share of
//! the simulated users and watches, its transactions (matched by Via
//! branch, retransmitted per RFC 3261 Timer E on UDP, given up at Timer F)
//! and its statistics. NOTIFYs from the server are answered, checked
//! against what was published ([`crate::check`]) and timed.
//!
//! A run has up to two phases. Scenarios with standing subscriptions
//! (`fanout`, `mixed`) first set them up; all workers wait for each other
//! (still answering NOTIFYs) before the measured phase starts, so the
//! report's rates and latencies are of the measured phase only.

use crate::check::{self, Watch};
use crate::profile::Profile;
use crate::scenario::{self, Ctx, Kind, Marker, PuaDialog, Scenario};
use crate::transport::{Incoming, Transport, TransportKind};
use hdrhistogram::Histogram;
use presence_engine::sip::oc::OcFeedback;
use presence_engine::sip::{HeaderName, Limits, Message};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Keep this many transactions outstanding (per worker).
    Closed { outstanding: usize },
    /// Start this many transactions per second (per worker).
    Open { rate: f64 },
}

#[derive(Clone, Copy, Debug)]
pub enum End {
    After(Duration),
    /// Start this many transactions (per worker).
    Count(u64),
}

/// The standing subscriptions of the `fanout` scenario.
#[derive(Clone, Copy, Debug)]
pub struct Fanout {
    pub presentities: usize,
    pub watchers: usize,
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub target: SocketAddr,
    pub transport: TransportKind,
    pub scenario: Scenario,
    /// This worker's users (the presentities, in `fanout`).
    pub users: Range<usize>,
    /// All users of the run (presentities are numbered below this).
    pub total_users: usize,
    pub domain: String,
    /// UDP sockets or TCP connections of this worker.
    pub flows: usize,
    pub load: Load,
    pub end: End,
    pub t1: Duration,
    /// Over which an open-loop rate ramps up from zero.
    pub ramp: Duration,
    pub fanout: Option<Fanout>,
    /// This worker's share of the fanout watches (global numbers).
    pub fanout_watches: Range<usize>,
    pub profile: Option<Profile>,
    /// Transactions outstanding while setting up subscriptions.
    pub setup_outstanding: usize,
    /// Idle time after the setup, before the measured phase.
    pub setup_settle: Duration,
    /// Fully validate one NOTIFY body in this many (1: all).
    pub pidf_sample: u64,
    /// End the subscriptions still open when the run is over.
    pub teardown: bool,
    /// `publish`: every Nth PUBLISH of a user with an entity tag is a
    /// refresh (no body); 0 never.
    pub refresh_every: u32,
    /// Act as an RFC 7339 client: ask for overload control in the Via and
    /// hold back the share of new requests the server says.
    pub overload_control: bool,
    /// `scale`: its load and phases.
    pub scale: Option<crate::scale::ScalePlan>,
}

/// What workers share: live counters for the progress line, the latest
/// published version of each presentity (for the NOTIFY checks), the
/// clock the PUBLISH markers use, and the setup barrier.
pub struct Shared {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub notifies: AtomicU64,
    pub outstanding: AtomicU64,
    pub stop: AtomicBool,
    pub latency: Mutex<Option<Histogram<u64>>>,
    pub epoch: Instant,
    /// Names this run in PUBLISH markers.
    pub run: u32,
    pub published: Vec<AtomicU32>,
    pub setup_done: AtomicUsize,
    pub threads: usize,
    /// Where workers of a `scale` run meet between phases.
    pub barrier: Barrier,
    /// What a `scale` run is doing, for the progress line.
    stage: Mutex<&'static str>,
}

impl Shared {
    pub fn new(threads: usize, presentities: usize) -> Shared {
        Shared {
            sent: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            notifies: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            latency: Mutex::new(None),
            epoch: Instant::now(),
            run: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u32 | 1),
            published: (0..presentities).map(|_| AtomicU32::new(0)).collect(),
            setup_done: AtomicUsize::new(0),
            threads,
            barrier: Barrier::new(threads),
            stage: Mutex::new(""),
        }
    }
    pub fn set_stage(&self, stage: &'static str) {
        if let Ok(mut s) = self.stage.lock() {
            *s = stage;
        }
    }
    /// The stage a `scale` run set, else setup or run.
    pub fn stage(&self) -> &'static str {
        match self.stage.lock().map(|s| *s) {
            Ok(s) if !s.is_empty() => s,
            _ if self.in_setup() => "setup",
            _ => "run",
        }
    }
    pub fn in_setup(&self) -> bool {
        self.setup_done.load(Ordering::Relaxed) < self.threads
    }
}

#[derive(Default, Clone, Copy, Debug)]
pub struct KindCount {
    pub sent: u64,
    pub ok: u64,
}

#[derive(Default, Clone, Copy, Debug)]
pub struct SetupResult {
    pub subscriptions: u64,
    pub ok: u64,
    pub failed: u64,
    pub duration_s: f64,
    /// Wall-clock time (Unix seconds) when this worker's setup, settle
    /// included, ended.
    pub ended_unix_s: f64,
}

/// What one worker measured.
pub struct WorkerResult {
    pub sent: u64,
    pub retransmissions: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub timeouts: u64,
    pub unmatched: u64,
    pub latency: Histogram<u64>,
    /// The same, of 2xx answers and of 503s only (overload runs).
    pub latency_2xx: Histogram<u64>,
    pub latency_503: Histogram<u64>,
    pub kinds: [KindCount; 4],
    pub setup: Option<SetupResult>,
    pub teardown: Option<SetupResult>,
    /// Seconds of the measured phase.
    pub measured_s: f64,
    pub notify: check::NotifyStats,
    pub connection_errors: u64,
    /// PUBLISH refreshes among the PUBLISHes sent.
    pub publish_refreshes: u64,
    /// New requests held back at this client on the server's RFC 7339
    /// feedback (never sent; counted apart from `sent`).
    pub throttled: u64,
    /// Open loop: the most requests that were due by the schedule and not
    /// yet issued at one turn of the loop. Anything beyond a few means the
    /// generator fell behind and then sent a burst to catch up.
    pub behind_max: u64,
}

impl WorkerResult {
    pub fn new() -> WorkerResult {
        WorkerResult {
            sent: 0,
            retransmissions: 0,
            statuses: BTreeMap::new(),
            timeouts: 0,
            unmatched: 0,
            latency: new_histogram(),
            latency_2xx: new_histogram(),
            latency_503: new_histogram(),
            kinds: [KindCount::default(); 4],
            setup: None,
            teardown: None,
            measured_s: 0.0,
            notify: check::NotifyStats::new(),
            connection_errors: 0,
            publish_refreshes: 0,
            throttled: 0,
            behind_max: 0,
        }
    }
}

impl Default for WorkerResult {
    fn default() -> WorkerResult {
        WorkerResult::new()
    }
}

/// Compact per-user state: a million users fit in tens of MiB.
#[derive(Default)]
struct User {
    cseq: u32,
    /// A transaction of this user is outstanding (PUBLISH must be serial:
    /// each success changes the entity tag).
    busy: bool,
    etag: Option<Box<[u8]>>,
    /// `peu`: the dialog the server's SUBSCRIBE opened with this user as
    /// a presence user agent, and the CSeq of its last NOTIFY.
    dialog: Option<Box<PuaDialog>>,
    notify_cseq: u32,
}

struct Txn {
    kind: Kind,
    /// The user (REGISTER, PUBLISH) or the watch (SUBSCRIBE).
    who: u32,
    flow: u32,
    setup: bool,
    /// Kept for Timer E over UDP only.
    bytes: Vec<u8>,
    first: Instant,
    last: Instant,
    interval: Duration,
}

enum Action {
    Register(usize),
    Publish(usize),
    Subscribe {
        watcher: usize,
        presentity: usize,
        expires: u32,
    },
    /// End watch n's dialog (SUBSCRIBE with Expires 0).
    Unsubscribe(usize),
    /// User u, as a presence user agent, NOTIFYs its document.
    Notify(usize),
}

/// Where the next transaction comes from.
pub(crate) enum Source {
    /// Round robin over this worker's users, one kind.
    Users { kind: Kind, next: usize },
    /// Each of this worker's users once (REGISTER or PUBLISH), in order.
    Once { kind: Kind, next: usize },
    /// A new subscription from `watcher<u>` to user u, round robin.
    NewWatches { next: usize },
    /// The fanout's standing subscriptions: global watch g watches
    /// presentity g / W.
    FanoutSetup { next: usize },
    /// Standing subscriptions: each user watches `per_user` others spread
    /// over the population (the mixed profile's and the scale run's).
    Standing { user: usize, j: usize, per_user: usize, expires: u32 },
    /// The busy hour: kinds by smooth weighted round robin.
    Mixed { credit: [f64; 3], next: [usize; 2] },
    /// Every watch still open, ended.
    Teardown { next: usize },
    /// `peu` setup: every user registers as a presence user agent, then a
    /// watcher (`pw<u>`) subscribes to each.
    PeuSetup { next: usize, subscribing: bool },
    /// `peu` setup: each agent's first NOTIFY in the server's dialog.
    PeuFirst { next: usize },
}

const T2: Duration = Duration::from_secs(4);
/// After the measured phase, wait this long without a message for the
/// last NOTIFYs (the server may hold them for its rate limit).
const NOTIFY_QUIET: Duration = Duration::from_millis(1500);

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

pub fn run_worker(cfg: WorkerConfig, id: usize, shared: Arc<Shared>) -> Result<WorkerResult, String> {
    let mut w = Worker::open(&cfg, id, &shared)?;
    match w.setup_source() {
        Some(source) => w.setup(source),
        None => {
            shared.setup_done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let source = w.measured_source();
    w.measured(source, cfg.load, cfg.end);
    if cfg.teardown && !w.watches.is_empty() {
        // The final NOTIFYs are checked but not counted as measured.
        let n = &w.res.notify;
        let counts = (n.received, n.validated, n.retransmitted);
        w.res.teardown = Some(w.teardown());
        let n = &mut w.res.notify;
        (n.received, n.validated, n.retransmitted) = counts;
    }
    w.flush_progress();
    shared.outstanding.store(0, Ordering::Relaxed);
    w.res.connection_errors = w.net.connection_errors;
    Ok(w.res)
}

pub(crate) struct Worker<'a> {
    pub(crate) cfg: &'a WorkerConfig,
    pub(crate) shared: &'a Shared,
    pub(crate) net: Transport,
    users: Vec<User>,
    watches: Vec<Watch>,
    txns: HashMap<u64, Txn>,
    /// Watches below this index have had their first NOTIFY (or never will).
    notified_upto: usize,
    branch: u64,
    rng: u64,
    pub(crate) res: WorkerResult,
    window_hist: Histogram<u64>,
    limits: Limits,
    data: Vec<u8>,
    incoming: Vec<Incoming>,
    resp: Vec<u8>,
    /// Progress not yet published to `shared`.
    sent_reported: u64,
    setup_sent: u64,
    /// Uncounted transactions that ended 2xx, all along.
    pub(crate) setup_ok: u64,
    ok_delta: u64,
    err_delta: u64,
    notify_delta: u64,
    last_progress: Instant,
    last_tick: Instant,
    last_message: Instant,
    /// The server's latest RFC 7339 feedback and until when it holds.
    oc: Option<(OcFeedback, Instant)>,
}

impl<'a> Worker<'a> {
    /// Opens the worker's flows to the target.
    pub(crate) fn open(cfg: &'a WorkerConfig, id: usize, shared: &'a Shared) -> Result<Worker<'a>, String> {
        let net =
            Transport::open(cfg.transport, cfg.target, cfg.flows).map_err(|e| format!("cannot open {} flows to {}: {e}", cfg.transport.name(), cfg.target))?;
        Ok(Worker::new(cfg, id, shared, net))
    }

    fn new(cfg: &'a WorkerConfig, id: usize, shared: &'a Shared, net: Transport) -> Worker<'a> {
        let now = Instant::now();
        Worker {
            cfg,
            shared,
            net,
            users: (0..cfg.users.len()).map(|_| User::default()).collect(),
            watches: Vec::new(),
            txns: HashMap::new(),
            notified_upto: 0,
            branch: (id as u64) << 48,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1),
            res: WorkerResult::new(),
            oc: None,
            window_hist: new_histogram(),
            limits: Limits::default(),
            data: Vec::with_capacity(1 << 16),
            incoming: Vec::new(),
            resp: Vec::with_capacity(512),
            sent_reported: 0,
            setup_sent: 0,
            setup_ok: 0,
            ok_delta: 0,
            err_delta: 0,
            notify_delta: 0,
            last_progress: now,
            last_tick: now,
            last_message: now,
        }
    }

    fn setup_source(&self) -> Option<Source> {
        match self.cfg.scenario {
            Scenario::Fanout => Some(Source::FanoutSetup { next: self.cfg.fanout_watches.start }),
            Scenario::Mixed => {
                let p = self.cfg.profile.as_ref().expect("mixed profile");
                Some(Source::Standing { user: self.cfg.users.start, j: 0, per_user: p.watchers_per_presentity, expires: p.subscription_expires })
            }
            Scenario::Peu => Some(Source::PeuSetup { next: self.cfg.users.start, subscribing: false }),
            _ => None,
        }
    }

    pub(crate) fn measured_source(&self) -> Source {
        let start = self.cfg.users.start;
        match self.cfg.scenario {
            Scenario::Register => Source::Users { kind: Kind::Register, next: start },
            Scenario::Publish | Scenario::Fanout | Scenario::Scale => Source::Users { kind: Kind::Publish, next: start },
            Scenario::Subscribe => Source::NewWatches { next: start },
            Scenario::Mixed => Source::Mixed { credit: [0.0; 3], next: [start; 2] },
            Scenario::Peu => Source::Users { kind: Kind::Notify, next: start },
        }
    }

    /// Sets up the standing subscriptions, waits for their first NOTIFYs,
    /// then for the other workers.
    fn setup(&mut self, source: Source) {
        let started_at = Instant::now();
        let mut setup = SetupResult { subscriptions: self.run_unmeasured(source), ..SetupResult::default() };
        if self.cfg.scenario == Scenario::Peu {
            // Its setup also registers the agents: count the watches only.
            setup.subscriptions = self.watches.len() as u64;
        }
        // Each accepted subscription gets an immediate NOTIFY; wait for
        // them (up to Timer F) so they do not count in the measured phase.
        let deadline = Instant::now() + 64 * self.cfg.t1;
        while Instant::now() < deadline && !self.first_notifies_in() {
            self.step(true);
        }
        if self.cfg.scenario == Scenario::Peu {
            // The server subscribes to each agent once it is watched; each
            // answers and sends its first document.
            while Instant::now() < deadline && self.users.iter().any(|u| u.dialog.is_none()) {
                self.step(true);
            }
            self.run_unmeasured(Source::PeuFirst { next: self.cfg.users.start });
            self.answer_for(Duration::from_millis(500));
        }
        for w in &self.watches {
            if w.accepted() {
                setup.ok += 1;
            }
        }
        setup.failed = setup.subscriptions - setup.ok;
        setup.duration_s = started_at.elapsed().as_secs_f64();
        self.answer_for(self.cfg.setup_settle);
        setup.ended_unix_s = unix_now_s();
        self.res.setup = Some(setup);
        self.res.notify.reset_counts();
        self.shared.setup_done.fetch_add(1, Ordering::Relaxed);
        while self.shared.in_setup() && !self.shared.stop.load(Ordering::Relaxed) {
            self.step(true);
        }
    }

    /// Answers whatever arrives for `d`, starting nothing, or until the run
    /// is stopped.
    pub(crate) fn answer_for(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until && !self.shared.stop.load(Ordering::Relaxed) {
            self.step(true);
        }
    }

    /// Runs every transaction of `source`, closed loop at the setup
    /// outstanding, uncounted; returns how many it started.
    pub(crate) fn run_unmeasured(&mut self, mut source: Source) -> u64 {
        let mut started = 0;
        let mut exhausted = false;
        while !exhausted || !self.txns.is_empty() {
            let mut budget = self.cfg.setup_outstanding.saturating_sub(self.txns.len());
            while budget > 0 && !exhausted {
                match self.next_action(&mut source) {
                    Some(a) => {
                        self.start(a, true);
                        started += 1;
                        budget -= 1;
                    }
                    None => exhausted = true,
                }
            }
            self.step(budget == 0);
        }
        started
    }

    /// Ends every subscription still open, so the server is not left
    /// sending NOTIFYs to ports that are gone; waits briefly for the final
    /// NOTIFYs. Returns how many it ended.
    fn teardown(&mut self) -> SetupResult {
        let started_at = Instant::now();
        let sent = self.run_unmeasured(Source::Teardown { next: 0 });
        // Answer the final NOTIFYs rather than leave them to retransmit.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && self.last_message.elapsed() < Duration::from_millis(200) {
            self.step(true);
        }
        let left = self.watches.iter().filter(|w| w.is_open()).count() as u64;
        SetupResult {
            subscriptions: sent,
            ok: sent.saturating_sub(left),
            failed: left.min(sent),
            duration_s: started_at.elapsed().as_secs_f64(),
            ended_unix_s: unix_now_s(),
        }
    }

    /// The measured phase: start transactions per the load model until the
    /// end, then drain.
    pub(crate) fn measured(&mut self, mut source: Source, load: Load, end: End) {
        let start = Instant::now();
        let mut started: u64 = 0;
        let lingers = matches!(self.cfg.scenario, Scenario::Fanout | Scenario::Mixed | Scenario::Peu | Scenario::Scale);
        loop {
            let now = Instant::now();
            let issuing = !self.shared.stop.load(Ordering::Relaxed)
                && match end {
                    End::After(d) => now.duration_since(start) < d,
                    End::Count(n) => started < n,
                };
            if !issuing {
                if self.res.measured_s == 0.0 {
                    self.res.measured_s = now.duration_since(start).as_secs_f64();
                }
                // Every new subscription's first NOTIFY belongs to this
                // phase; fanout and mixed also wait for the last versions.
                if self.txns.is_empty() && self.first_notifies_in() && (!lingers || now.duration_since(self.last_message) >= NOTIFY_QUIET) {
                    break;
                }
                // Outstanding transactions get until Timer F.
                if now.duration_since(start) > self.end_deadline(end) {
                    break;
                }
            }
            let mut budget = if !issuing {
                0
            } else {
                match load {
                    Load::Closed { outstanding } => outstanding.saturating_sub(self.txns.len()),
                    Load::Open { rate } => {
                        let t = now.duration_since(start).as_secs_f64();
                        let ramp = self.cfg.ramp.as_secs_f64();
                        // Area under a linear ramp to `rate`, then flat.
                        let due = if t < ramp { rate * t * t / (2.0 * ramp) } else { rate * (t - ramp / 2.0) };
                        let behind = (due as u64).saturating_sub(started);
                        self.res.behind_max = self.res.behind_max.max(behind);
                        behind.min(1024) as usize
                    }
                }
            };
            if let End::Count(n) = end {
                budget = budget.min(n.saturating_sub(started) as usize);
            }
            let mut issued = 0;
            while issued < budget {
                let Some(a) = self.next_action(&mut source) else {
                    break;
                };
                if self.held_back(&a, now) {
                    self.res.throttled += 1;
                    started += 1;
                    issued += 1;
                    continue;
                }
                self.start(a, false);
                started += 1;
                issued += 1;
            }
            self.step(issued == 0);
        }
        if self.res.measured_s == 0.0 {
            self.res.measured_s = start.elapsed().as_secs_f64();
        }
        self.res.timeouts += self.txns.len() as u64;
    }

    /// One turn of the loop: receive and answer, run timers, publish
    /// progress; `idle` lets it sleep briefly when nothing arrived.
    pub(crate) fn step(&mut self, idle: bool) {
        let got = self.receive();
        self.timers();
        self.progress();
        if idle && !got {
            self.net.wait(1);
        }
    }

    /// Whether every accepted subscription has had its first NOTIFY. A
    /// watch stops waiting once notified, so the scan resumes where it
    /// stopped.
    pub(crate) fn first_notifies_in(&mut self) -> bool {
        while let Some(w) = self.watches.get(self.notified_upto) {
            if w.awaiting_first_notify() {
                return false;
            }
            self.notified_upto += 1;
        }
        true
    }

    fn end_deadline(&self, end: End) -> Duration {
        let run = match end {
            End::After(d) => d,
            End::Count(_) => Duration::from_secs(3600 * 24),
        };
        run + 64 * self.cfg.t1 + NOTIFY_QUIET
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: deterministic per worker.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next local user at or after `*next` with nothing outstanding.
    fn next_idle_user(&self, next: &mut usize) -> Option<usize> {
        let r = &self.cfg.users;
        for _ in 0..r.len() {
            let u = *next;
            *next = if u + 1 >= r.end { r.start } else { u + 1 };
            if !self.users[u - r.start].busy {
                return Some(u);
            }
        }
        None
    }

    /// The next local user at or after `*next` with a dialog (an agent the
    /// server subscribed to) and nothing outstanding.
    fn next_idle_agent(&self, next: &mut usize) -> Option<usize> {
        let r = &self.cfg.users;
        for _ in 0..r.len() {
            let u = self.next_idle_user(next)?;
            if self.users[u - r.start].dialog.is_some() {
                return Some(u);
            }
        }
        None
    }

    fn next_action(&mut self, source: &mut Source) -> Option<Action> {
        let cfg = self.cfg;
        match source {
            Source::Users { kind: Kind::Notify, next } => Some(Action::Notify(self.next_idle_agent(next)?)),
            Source::Users { kind, next } => {
                let u = self.next_idle_user(next)?;
                Some(if *kind == Kind::Register { Action::Register(u) } else { Action::Publish(u) })
            }
            Source::Once { kind, next } => {
                if *next >= cfg.users.end {
                    return None;
                }
                let u = *next;
                *next += 1;
                Some(if *kind == Kind::Register { Action::Register(u) } else { Action::Publish(u) })
            }
            Source::PeuSetup { next, subscribing } => {
                if *next >= cfg.users.end {
                    if *subscribing {
                        return None;
                    }
                    *subscribing = true;
                    *next = cfg.users.start;
                }
                let u = *next;
                *next += 1;
                Some(if *subscribing { Action::Subscribe { watcher: u, presentity: u, expires: 3600 } } else { Action::Register(u) })
            }
            Source::PeuFirst { next } => {
                while *next < cfg.users.end {
                    let u = *next;
                    *next += 1;
                    if self.users[u - cfg.users.start].dialog.is_some() {
                        return Some(Action::Notify(u));
                    }
                }
                None
            }
            Source::NewWatches { next } => {
                let u = *next;
                *next = if u + 1 >= cfg.users.end { cfg.users.start } else { u + 1 };
                Some(Action::Subscribe { watcher: u, presentity: u, expires: 600 })
            }
            Source::FanoutSetup { next } => {
                let g = *next;
                if g >= cfg.fanout_watches.end {
                    return None;
                }
                *next += 1;
                let f = cfg.fanout.expect("fanout shape");
                Some(Action::Subscribe { watcher: g, presentity: g / f.watchers.max(1), expires: 3600 })
            }
            Source::Standing { user, j, per_user, expires } => {
                if *per_user == 0 || *user >= cfg.users.end {
                    return None;
                }
                let (u, k) = (*user, *j);
                *j += 1;
                if *j == *per_user {
                    *j = 0;
                    *user += 1;
                }
                // Each user watches W others spread over the population.
                let total = cfg.total_users.max(1);
                let stride = (total / (*per_user + 1)).max(1);
                let presentity = (u + 1 + k * stride) % total;
                Some(Action::Subscribe { watcher: u, presentity, expires: *expires })
            }
            Source::Mixed { credit, next } => {
                let p = cfg.profile.as_ref().expect("mixed profile");
                let weights = p.weights();
                let sum: f64 = weights.iter().sum();
                // Smooth weighted round robin: each kind earns its weight,
                // the richest goes and pays the total.
                for k in 0..3 {
                    credit[k] += weights[k];
                }
                let k = (0..3).max_by(|a, b| credit[*a].total_cmp(&credit[*b])).unwrap();
                credit[k] -= sum;
                match Kind::ALL[k] {
                    Kind::Register => Some(Action::Register(self.next_idle_user(&mut next[0])?)),
                    Kind::Publish => Some(Action::Publish(self.next_idle_user(&mut next[1])?)),
                    Kind::Subscribe => {
                        let u = cfg.users.start + (self.random() as usize) % cfg.users.len().max(1);
                        let presentity = (self.random() as usize) % cfg.total_users.max(1);
                        Some(Action::Subscribe { watcher: u, presentity, expires: p.subscription_expires })
                    }
                    Kind::Notify => unreachable!("the profile weighs three kinds"),
                }
            }
            Source::Teardown { next } => {
                while *next < self.watches.len() {
                    let n = *next;
                    *next += 1;
                    if self.watches[n].is_open() {
                        return Some(Action::Unsubscribe(n));
                    }
                }
                None
            }
        }
    }

    fn ctx(&self, flow: usize) -> Ctx<'a> {
        let cfg: &'a WorkerConfig = self.cfg;
        Ctx { domain: &cfg.domain, run: self.shared.run, transport: self.cfg.transport, local: self.net.local(flow), oc: cfg.overload_control }
    }

    /// RFC 7339 loss algorithm at the client: while the server's feedback
    /// holds, each new request (REGISTER, PUBLISH, a new SUBSCRIBE) is held
    /// back with the probability it asked for; requests in a dialog (agent
    /// NOTIFYs, unsubscribes) always go.
    fn held_back(&mut self, action: &Action, now: Instant) -> bool {
        let new_work = matches!(action, Action::Register(_) | Action::Publish(_) | Action::Subscribe { .. });
        match self.oc {
            Some((f, until)) if new_work && now < until && f.loss_pct > 0 => self.random() % 100 < f.loss_pct as u64,
            _ => false,
        }
    }

    /// Keeps the newest feedback a response carries (by `oc-seq`).
    fn take_feedback(&mut self, msg: &Message<'_>) {
        let Some(f) = OcFeedback::read(msg.via()) else {
            return;
        };
        if self.oc.is_some_and(|(old, _)| old.seq_ms >= f.seq_ms && old != f) {
            return;
        }
        self.oc = Some((f, Instant::now() + Duration::from_millis(f.validity_ms as u64)));
    }

    /// Sends the first copy of a new transaction; `setup` ones (standing
    /// subscriptions and their teardown) are not counted as measured.
    fn start(&mut self, action: Action, setup: bool) {
        self.branch += 1;
        let branch = self.branch;
        let now = Instant::now();
        let (kind, who, flow, bytes) = match action {
            Action::Register(u) => {
                let flow = u % self.net.len();
                let ctx = self.ctx(flow);
                let user = &mut self.users[u - self.cfg.users.start];
                user.cseq += 1;
                user.busy = true;
                let pua = self.cfg.scenario == Scenario::Peu;
                (Kind::Register, u, flow, ctx.register(branch, u, user.cseq, 3600, pua))
            }
            Action::Publish(u) => {
                let flow = u % self.net.len();
                let ctx = self.ctx(flow);
                let every = self.cfg.refresh_every;
                let user = &mut self.users[u - self.cfg.users.start];
                if let Some(etag) = user.etag.as_deref().filter(|_| every > 0 && (user.cseq + 1).is_multiple_of(every)) {
                    user.cseq += 1;
                    user.busy = true;
                    self.res.publish_refreshes += 1;
                    let bytes = ctx.publish_refresh(branch, u, user.cseq, etag);
                    (Kind::Publish, u, flow, bytes)
                } else {
                    let seq = self.shared.published[u].fetch_add(1, Ordering::AcqRel) + 1;
                    let marker = Marker { run: self.shared.run, presentity: u, seq, sent_us: self.shared.epoch.elapsed().as_micros() as u64 };
                    let user = &mut self.users[u - self.cfg.users.start];
                    user.cseq += 1;
                    user.busy = true;
                    (Kind::Publish, u, flow, ctx.publish(branch, u, user.cseq, user.etag.as_deref(), marker))
                }
            }
            Action::Subscribe { watcher, presentity, expires } => {
                let watch = self.watches.len();
                self.watches.push(Watch::new(presentity, watcher));
                let flow = watch % self.net.len();
                let ctx = self.ctx(flow);
                let name = self.cfg.scenario.watcher_name(watcher);
                (Kind::Subscribe, watch, flow, ctx.subscribe(branch, &name, watch, presentity, expires, None))
            }
            Action::Notify(u) => {
                let flow = u % self.net.len();
                let ctx = self.ctx(flow);
                let seq = self.shared.published[u].fetch_add(1, Ordering::AcqRel) + 1;
                let marker = Marker { run: self.shared.run, presentity: u, seq, sent_us: self.shared.epoch.elapsed().as_micros() as u64 };
                let user = &mut self.users[u - self.cfg.users.start];
                user.notify_cseq += 1;
                user.busy = true;
                let d = user.dialog.as_deref().expect("only agents with a dialog notify");
                (Kind::Notify, u, flow, ctx.notify(branch, u, d, user.notify_cseq, marker))
            }
            Action::Unsubscribe(watch) => {
                let flow = watch % self.net.len();
                let w = &self.watches[watch];
                let name = self.cfg.scenario.watcher_name(w.watcher as usize);
                let bytes = self.ctx(flow).subscribe(branch, &name, watch, w.presentity(), 0, w.to_tag.as_deref());
                (Kind::Subscribe, watch, flow, bytes)
            }
        };
        self.net.send(flow, &bytes);
        let bytes = if self.net.kind().reliable() { Vec::new() } else { bytes };
        self.txns.insert(branch, Txn { kind, who: who as u32, flow: flow as u32, setup, bytes, first: now, last: now, interval: self.cfg.t1 });
        if setup {
            self.setup_sent += 1;
        } else {
            self.res.sent += 1;
            self.res.kinds[kind as usize].sent += 1;
        }
    }

    fn receive(&mut self) -> bool {
        let mut data = std::mem::take(&mut self.data);
        let mut incoming = std::mem::take(&mut self.incoming);
        let got = self.net.receive(&mut data, &mut incoming);
        for m in &incoming {
            self.on_message(&data[m.range.clone()], m.flow, m.from);
        }
        if got {
            self.last_message = Instant::now();
        }
        self.data = data;
        self.incoming = incoming;
        got
    }

    fn on_message(&mut self, bytes: &[u8], flow: usize, from: SocketAddr) {
        let Ok(msg) = Message::parse(bytes, &self.limits) else {
            self.res.unmatched += 1;
            return;
        };
        if msg.is_request() {
            return self.on_request(&msg, flow, from);
        }
        let status = msg.status().unwrap_or(0);
        if self.cfg.overload_control {
            self.take_feedback(&msg);
        }
        let Some(b) = msg.via().branch().and_then(scenario::parse_branch).filter(|b| self.txns.contains_key(b)) else {
            self.res.unmatched += 1;
            return;
        };
        if status < 200 {
            // Provisional: keep waiting; Timer E moves to T2.
            if let Some(t) = self.txns.get_mut(&b) {
                t.interval = T2;
            }
            return;
        }
        let t = self.txns.remove(&b).expect("checked above");
        self.finish(&t, Some((status, &msg)));
    }

    /// A request from the server: NOTIFYs are checked and answered 200
    /// (481 for a subscription this worker never made); anything else is
    /// counted as unexpected and answered 200 so the server stops resending.
    fn on_request(&mut self, msg: &Message<'_>, flow: usize, from: SocketAddr) {
        let mut code = 200;
        if msg.method_raw() == Some(b"SUBSCRIBE") {
            return self.on_agent_subscribe(msg, flow, from);
        }
        if msg.method_raw() == Some(b"NOTIFY") {
            self.notify_delta += 1;
            let watch = msg.to().tag().and_then(scenario::parse_watch_tag).and_then(|i| self.watches.get_mut(i));
            match watch {
                Some(w) => self.res.notify.check(w, msg, &self.cfg.domain, &self.shared.published, self.shared.run, self.shared.epoch, self.cfg.pidf_sample),
                None => {
                    self.res.unmatched += 1;
                    code = 481;
                }
            }
        } else {
            self.res.unmatched += 1;
        }
        self.resp.clear();
        let reason = if code == 200 { "OK" } else { "Call/Transaction Does Not Exist" };
        presence_engine::sip::response_to(&mut self.resp, msg.raw(), code, reason, None, None).finish(None, b"");
        let resp = std::mem::take(&mut self.resp);
        self.net.send_to(flow, &resp, from);
        self.resp = resp;
    }

    /// The server SUBSCRIBEs to a simulated presence user agent: an
    /// initial one opens the dialog the agent NOTIFYs in, an in-dialog one
    /// refreshes it or (Expires 0) ends it; all get 200.
    fn on_agent_subscribe(&mut self, msg: &Message<'_>, flow: usize, from: SocketAddr) {
        let user = msg.request_uri().and_then(|u| u.user()).and_then(scenario::user_of).filter(|u| self.cfg.users.contains(u));
        let Some(u) = user else {
            self.res.unmatched += 1;
            self.resp.clear();
            presence_engine::sip::response_to(&mut self.resp, msg.raw(), 404, "Not Found", None, None).finish(None, b"");
            let resp = std::mem::take(&mut self.resp);
            self.net.send_to(flow, &resp, from);
            self.resp = resp;
            return;
        };
        let tag = format!("pua{u}");
        let ending = msg.expires() == Some(0);
        let state = &mut self.users[u - self.cfg.users.start];
        if msg.to().tag().is_none() {
            state.dialog = PuaDialog::of(msg, tag.clone()).map(Box::new);
            state.notify_cseq = 0;
        } else if ending {
            state.dialog = None;
        }
        let expires = msg.expires().unwrap_or(3600).to_string();
        self.resp.clear();
        let mut w = presence_engine::sip::response_to(&mut self.resp, msg.raw(), 200, "OK", Some(tag.as_bytes()), None);
        w.header(HeaderName::Expires, expires.as_bytes());
        w.finish(None, b"");
        let resp = std::mem::take(&mut self.resp);
        self.net.send_to(flow, &resp, from);
        self.resp = resp;
    }

    /// A transaction ended with a final response, or timed out (`None`).
    fn finish(&mut self, t: &Txn, outcome: Option<(u16, &Message<'_>)>) {
        let ok = matches!(outcome, Some((200..=299, _)));
        match t.kind {
            Kind::Notify => {
                let user = &mut self.users[t.who as usize - self.cfg.users.start];
                user.busy = false;
                if matches!(outcome, Some((481, _))) {
                    user.dialog = None;
                }
            }
            Kind::Register | Kind::Publish => {
                let user = &mut self.users[t.who as usize - self.cfg.users.start];
                user.busy = false;
                if t.kind == Kind::Publish {
                    match outcome {
                        Some((200..=299, m)) => user.etag = m.header(HeaderName::SipETag).map(Box::from),
                        // 412 or no answer: the tag may be gone; start over.
                        Some((412, _)) | None => user.etag = None,
                        _ => {}
                    }
                }
            }
            Kind::Subscribe => {
                // The To tag is needed only to end the dialog: a run that
                // leaves its subscriptions open keeps none (5 million
                // watches must not cost the generator hundreds of MiB).
                let to_tag = outcome.and_then(|(_, m)| m.to().tag()).filter(|_| self.cfg.teardown);
                self.watches[t.who as usize].answered(ok, to_tag);
            }
        }
        if t.setup {
            // Uncounted, but shown on the progress line.
            if ok {
                self.setup_ok += 1;
                self.ok_delta += 1;
            } else {
                self.err_delta += 1;
            }
            return;
        }
        match outcome {
            Some((status, _)) => {
                let us = (t.first.elapsed().as_micros() as u64).max(1);
                let _ = self.res.latency.record(us);
                match status {
                    200..=299 => {
                        let _ = self.res.latency_2xx.record(us);
                    }
                    503 => {
                        let _ = self.res.latency_503.record(us);
                    }
                    _ => {}
                }
                let _ = self.window_hist.record(us);
                *self.res.statuses.entry(status).or_insert(0) += 1;
            }
            None => self.res.timeouts += 1,
        }
        if ok {
            self.ok_delta += 1;
            self.res.kinds[t.kind as usize].ok += 1;
        } else {
            self.err_delta += 1;
        }
    }

    /// Timer E (UDP retransmission) and Timer F (give up), every 5 ms.
    fn timers(&mut self) {
        let now = Instant::now();
        if now.duration_since(self.last_tick) < Duration::from_millis(5) {
            return;
        }
        self.last_tick = now;
        let give_up = 64 * self.cfg.t1;
        let mut dead = Vec::new();
        for (b, t) in self.txns.iter_mut() {
            if now.duration_since(t.first) >= give_up {
                dead.push(*b);
            } else if !t.bytes.is_empty() && now.duration_since(t.last) >= t.interval {
                self.net.send(t.flow as usize, &t.bytes);
                t.last = now;
                t.interval = (t.interval * 2).min(T2);
                self.res.retransmissions += 1;
            }
        }
        for b in dead {
            if let Some(t) = self.txns.remove(&b) {
                self.finish(&t, None);
            }
        }
    }

    /// Publishes counters for the progress line a few times a second.
    fn progress(&mut self) {
        if self.last_progress.elapsed() >= Duration::from_millis(250) {
            self.last_progress = Instant::now();
            self.flush_progress();
        }
    }

    /// After the result was taken for a new phase: nothing of the new one
    /// has been reported yet.
    pub(crate) fn reset_progress(&mut self) {
        self.sent_reported = 0;
    }

    pub(crate) fn flush_progress(&mut self) {
        let s = self.shared;
        s.sent.fetch_add(self.res.sent - self.sent_reported + std::mem::take(&mut self.setup_sent), Ordering::Relaxed);
        self.sent_reported = self.res.sent;
        s.ok.fetch_add(std::mem::take(&mut self.ok_delta), Ordering::Relaxed);
        s.errors.fetch_add(std::mem::take(&mut self.err_delta), Ordering::Relaxed);
        s.notifies.fetch_add(std::mem::take(&mut self.notify_delta), Ordering::Relaxed);
        s.outstanding.store(self.txns.len() as u64, Ordering::Relaxed);
        if let Ok(mut h) = s.latency.lock() {
            match h.as_mut() {
                Some(h) => {
                    let _ = h.add(&self.window_hist);
                }
                None => *h = Some(self.window_hist.clone()),
            }
        }
        self.window_hist.reset();
    }
}

/// Wall-clock time in Unix seconds, for reports that other tools line up
/// with their own samples (a server's RSS over a run).
fn unix_now_s() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
