//! Presence by subscription: the server as a *subscriber* (RFC 6665,
//! RFC 3856) to a presentity's presence user agents (PUAs). It SUBSCRIBEs
//! to `Event: presence` at each agent and hands every NOTIFY's PIDF to the
//! compositor as that agent's publication, beside those made by PUBLISH.
//!
//! Sans-IO and one per shard, for the presentities the shard owns: the
//! shard tells it which agents a presentity has (from its bindings or the
//! configuration) and whether anyone watches it, feeds it responses,
//! NOTIFYs and time, and sends the SUBSCRIBEs it asks for ([`PeuOut`]).
//!
//! Each agent is a small state machine:
//!
//! ```text
//!            wanted                2xx                refresh due
//!   Idle ──────────────▶ Subscribing ─────▶ Active ───────────────▶ (in-dialog SUBSCRIBE)
//!    ▲                      │   │             │ 481, terminated, timeout
//!    │ not wanted           │   │ 489/405/501 ▼
//!    └──── Closing ◀────────┘   └──▶ Refused  Backoff ──(retry-after or 2^n)──▶ Subscribing
//!        (Expires 0 sent)          (until it registers again)
//! ```
//!
//! "Wanted" depends on [`Mode`]: always, never, or while the presentity has
//! watchers (and a grace period after the last one leaves), so presentities
//! nobody watches cost no traffic to their devices.

use super::pidf::{self, Pidf};
use crate::core::entropy::Entropy;
use crate::core::parted::PartedMap;
use crate::core::peer::Peer;
use crate::core::subscriber::{self, ClientDialog, Package, Target};
use crate::core::timer::TimerWheel;
use crate::sip::typed::SubState;
use crate::sip::{HeaderName, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// When the server subscribes to agents (`[peu] mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// While the presentity has watchers, and a grace period after.
    Watched,
    /// As soon as the agent is known.
    Always,
    /// Never: presence comes from PUBLISH and registration only.
    Off,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeuConfig {
    pub mode: Mode,
    /// How long subscriptions outlive the last watcher (mode watched).
    pub grace: Duration,
    /// Expires of the SUBSCRIBEs, seconds; refreshed at four fifths.
    pub expires: u32,
    /// Subscribe to agents of third-party registrations through the
    /// S-CSCF that registered them (Request-URI the AOR, Route the S-CSCF).
    pub route_via_scscf: bool,
    /// Most agents per presentity; further bindings are not subscribed.
    pub max_agents_per_presentity: usize,
    /// First wait before subscribing again after a failure; it doubles
    /// with each failure in a row up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

impl Default for PeuConfig {
    fn default() -> Self {
        PeuConfig {
            mode: Mode::Watched,
            grace: Duration::from_secs(30),
            expires: 3600,
            route_via_scscf: true,
            max_agents_per_presentity: 8,
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(1800),
        }
    }
}

/// How to reach one agent: what the shard derives from a binding (or a
/// configured agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddr {
    /// What names the agent across updates: the bound contact, or the
    /// configured URI.
    pub contact: Box<[u8]>,
    /// Request-URI of the SUBSCRIBE: the contact, or the AOR when routed
    /// through the S-CSCF.
    pub request_uri: Box<[u8]>,
    /// A Route header value (the S-CSCF), if any.
    pub route: Option<Box<[u8]>>,
    /// Where the request goes: a UDP address or the registration's flow.
    pub target: Peer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No subscription, and none wanted yet.
    Idle,
    /// An initial SUBSCRIBE is in flight.
    Subscribing,
    /// Subscribed; `due` is the refresh.
    Active,
    /// The last attempt failed; `due` is the next one.
    Backoff,
    /// The contact said it is no notifier of `presence` (489, 405, 501):
    /// not asked again until it registers again.
    Refused,
    /// An unsubscribe (Expires 0) is in flight.
    Closing,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Subscribing => "subscribing",
            State::Active => "active",
            State::Backoff => "backoff",
            State::Refused => "refused",
            State::Closing => "closing",
        }
    }
}

struct Agent {
    aor: Box<[u8]>,
    addr: AgentAddr,
    /// From the configuration, not a binding: never removed by bindings.
    configured: bool,
    state: State,
    /// The current (or last) dialog; a response to a SUBSCRIBE older than
    /// its CSeq is stale.
    dialog: ClientDialog,
    /// Expires to ask for (raised by a 423's Min-Expires).
    expires: u32,
    /// Refresh (Active) or retry (Backoff) time.
    due: Option<Instant>,
    /// Failures in a row, for the backoff.
    failures: u32,
    /// The binding is gone: forget the agent once its unsubscribe ends.
    gone: bool,
    /// Its publication is in the compositor.
    published: bool,
    /// Subscription lifetime granted, seconds (for the publication's).
    granted: u32,
}

/// A presentity with agents.
#[derive(Default)]
struct Presentity {
    agents: Vec<u64>,
    /// Has at least one watcher.
    watched: bool,
    /// The last watcher left; subscriptions end at this time.
    grace_until: Option<Instant>,
    /// Another node of the cluster serves the presentity (its partition
    /// moved, or this node has not taken it yet): its agents subscribe
    /// from there, not here.
    elsewhere: bool,
}

#[derive(Clone, Debug)]
enum Timer {
    Agent(u64),
    Grace(Box<[u8]>),
}

/// What changes about an agent's publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceUpdate {
    /// A new document from the agent.
    Document(Pidf),
    /// The subscription was refreshed: keep the document longer.
    Extend,
    /// The source ended.
    Remove,
}

/// What the shard must do for this service.
#[derive(Debug)]
pub enum PeuOut {
    /// Send agent `agent` a SUBSCRIBE with this Expires (0: unsubscribe),
    /// written by [`Peu::write_subscribe`].
    Subscribe { agent: u64, expires: u32 },
    /// Apply to the compositor: agent `agent`'s publication of `aor`, kept
    /// until `until` unless renewed.
    Source { aor: Box<[u8]>, agent: u64, update: SourceUpdate, until: Instant },
    /// An agent's subscription changed state (for the logs).
    State { aor: Box<[u8]>, uri: Box<[u8]>, state: &'static str, status: u16 },
}

/// The answer the shard gives a NOTIFY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifyAnswer {
    pub code: u16,
    pub reason: &'static str,
}

impl NotifyAnswer {
    const OK: NotifyAnswer = NotifyAnswer { code: 200, reason: "OK" };
    fn new(code: u16, reason: &'static str) -> Self {
        NotifyAnswer { code, reason }
    }
}

const PRESENCE: Package = Package { event: b"presence", accept: b"application/pidf+xml" };

pub struct Peu {
    cfg: PeuConfig,
    shard: u16,
    local: SocketAddr,
    /// `local` as written in Via and Contact.
    local_text: String,
    entropy: Entropy,
    next: u64,
    agents: PartedMap<u64, Agent>,
    presentities: PartedMap<Box<[u8]>, Presentity>,
    by_call_id: PartedMap<Box<[u8]>, u64>,
    wheel: TimerWheel<Timer>,
    fired: Vec<Timer>,
    out: Vec<PeuOut>,
}

impl Peu {
    pub fn new(cfg: PeuConfig, shard: u16, local: SocketAddr, mut entropy: Entropy, now: Instant) -> Self {
        Peu {
            cfg,
            shard,
            local,
            local_text: local.to_string(),
            agents: PartedMap::new(entropy.hasher()),
            presentities: PartedMap::new(entropy.hasher()),
            by_call_id: PartedMap::new(entropy.hasher()),
            entropy,
            next: 0,
            wheel: TimerWheel::new(now, Duration::from_millis(100), 4096),
            fired: Vec::new(),
            out: Vec::new(),
        }
    }

    pub fn config(&self) -> &PeuConfig {
        &self.cfg
    }
    /// Agents known (subscribed or not).
    pub fn len(&self) -> usize {
        self.agents.len()
    }
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
    /// Agents with a live subscription (for tests and stats).
    pub fn active(&self) -> usize {
        self.agents.values().filter(|a| a.state == State::Active).count()
    }
    /// Timer wheel entries pending (fired lazily; for leak checks).
    pub fn wheel_entries(&self) -> usize {
        self.wheel.len()
    }
    /// (AOR, agent) of every agent that may have a publication in the
    /// compositor: it published, and its subscription is live (an agent
    /// being unsubscribed, backing off, refused or idle has none).
    pub fn published(&self) -> Vec<(Box<[u8]>, u64)> {
        let live = |a: &Agent| a.published && matches!(a.state, State::Subscribing | State::Active);
        let mut v: Vec<_> = self.agents.iter().filter(|(_, a)| live(a)).map(|(id, a)| (a.aor.clone(), *id)).collect();
        v.sort();
        v
    }
    /// What the shard must do next, in order.
    pub fn take_out(&mut self) -> Vec<PeuOut> {
        std::mem::take(&mut self.out)
    }
    /// The state of the agent at `contact` for `aor` (for tests).
    pub fn agent_state(&self, aor: &[u8], contact: &[u8]) -> Option<&'static str> {
        let p = self.presentities.get(aor)?;
        p.agents.iter().filter_map(|id| self.agents.get(id)).find(|a| *a.addr.contact == *contact).map(|a| a.state.name())
    }

    /// The agents `aor`'s bindings make: the list replaces the previous one
    /// (agents no longer listed are unsubscribed and their publications
    /// removed). `registered` says a REGISTER just refreshed these
    /// bindings, which lifts a refusal; `watched` whether the presentity
    /// has watchers now; `served` whether this node serves it
    /// ([`set_served`](Self::set_served)).
    pub fn set_agents(&mut self, now: Instant, aor: &[u8], agents: &[AgentAddr], watched: bool, registered: bool, served: bool) {
        if self.cfg.mode == Mode::Off {
            return;
        }
        let known: Vec<u64> = self.presentities.get(aor).map(|p| p.agents.clone()).unwrap_or_default();
        // Gone: bound agents no longer listed (an address that changed is a
        // new agent).
        for id in &known {
            let Some(a) = self.agents.get(id) else { continue };
            if !a.configured && !agents.contains(&a.addr) {
                self.end_agent(now, *id);
            }
        }
        if agents.is_empty() && !self.presentities.contains_key(aor) {
            return;
        }
        // A presentity already tracked knows whether it is watched
        // (`set_watched` keeps it); a new one starts from the shard's word.
        let watched = watched && self.cfg.mode == Mode::Watched;
        let p = self.presentities.get_or_insert_with(aor, || Presentity { watched, ..Default::default() });
        p.elsewhere = !served;
        for addr in agents {
            let existing = p.agents.iter().copied().find(|id| self.agents.get(id).is_some_and(|a| a.addr == *addr && !a.gone));
            match existing {
                Some(id) => {
                    let a = self.agents.get_mut(&id).expect("listed");
                    if registered && a.state == State::Refused {
                        a.state = State::Idle;
                        a.failures = 0;
                    }
                }
                None => {
                    let live = p.agents.iter().filter(|id| self.agents.get(id).is_some_and(|a| !a.gone)).count();
                    if live >= self.cfg.max_agents_per_presentity {
                        continue;
                    }
                    self.next += 1;
                    let id = self.next;
                    p.agents.push(id);
                    let agent = new_agent(&mut self.entropy, self.shard, self.local, aor, addr.clone(), false, self.cfg.expires);
                    self.by_call_id.insert(agent.dialog.call_id.clone(), id);
                    self.agents.insert(id, agent);
                }
            }
        }
        self.settle(now, aor);
    }

    /// A configured agent of `aor` (`[[peu.agent]]`): needs no binding.
    /// `served`: whether this node serves `aor` now.
    pub fn add_configured(&mut self, now: Instant, aor: &[u8], addr: AgentAddr, served: bool) {
        if self.cfg.mode == Mode::Off {
            return;
        }
        let p = self.presentities.get_or_insert_with(aor, Default::default);
        p.elsewhere = !served;
        self.next += 1;
        let id = self.next;
        p.agents.push(id);
        let agent = new_agent(&mut self.entropy, self.shard, self.local, aor, addr, true, self.cfg.expires);
        self.by_call_id.insert(agent.dialog.call_id.clone(), id);
        self.agents.insert(id, agent);
        self.settle(now, aor);
    }

    /// Whether this node serves `aor` changed (its partition moved to or
    /// from another node of the cluster): its agents subscribe only where
    /// it is served, so that one node at a time asks the device and takes
    /// its NOTIFYs as the presentity's publication.
    pub fn set_served(&mut self, now: Instant, aor: &[u8], served: bool) {
        let Some(p) = self.presentities.get_mut(aor) else { return };
        if p.elsewhere != served {
            return;
        }
        p.elsewhere = !served;
        self.settle(now, aor);
    }

    /// The presentities with agents, for [`set_served`](Self::set_served).
    pub fn presentities(&self) -> Vec<Box<[u8]>> {
        self.presentities.iter().map(|(k, _)| k.clone()).collect()
    }

    /// Whether `aor` has watchers changed. Presentities without agents are
    /// not tracked, so this costs nothing for them.
    pub fn set_watched(&mut self, now: Instant, aor: &[u8], watched: bool) {
        if self.cfg.mode != Mode::Watched {
            return;
        }
        let Some(p) = self.presentities.get_mut(aor) else { return };
        if p.watched == watched {
            return;
        }
        p.watched = watched;
        if watched {
            p.grace_until = None;
        } else {
            let at = now + self.cfg.grace;
            p.grace_until = Some(at);
            self.wheel.insert(at, Timer::Grace(aor.into()));
        }
        self.settle(now, aor);
    }

    fn wanted(&self, p: &Presentity) -> bool {
        if p.elsewhere {
            return false;
        }
        match self.cfg.mode {
            Mode::Always => true,
            Mode::Watched => p.watched || p.grace_until.is_some(),
            Mode::Off => false,
        }
    }

    /// Brings every agent of `aor` in line with whether it is wanted:
    /// subscribes the idle ones, unsubscribes the rest, and forgets the
    /// presentity once it has no agents.
    fn settle(&mut self, now: Instant, aor: &[u8]) {
        let Some(p) = self.presentities.get(aor) else { return };
        let wanted = self.wanted(p);
        let ids = p.agents.clone();
        for id in ids {
            let Some(a) = self.agents.get(&id) else { continue };
            match (wanted && !a.gone, a.state) {
                (true, State::Idle) => self.subscribe(id),
                (false, State::Subscribing | State::Active) => self.unsubscribe(now, id),
                (false, State::Backoff) => self.set_state(id, State::Idle, 0),
                _ => {}
            }
        }
        let p = self.presentities.get(aor).expect("looked up above");
        if p.agents.is_empty() && !p.watched {
            self.presentities.remove(aor);
        }
    }

    fn set_state(&mut self, id: u64, state: State, status: u16) {
        let Some(a) = self.agents.get_mut(&id) else { return };
        if a.state != state {
            a.state = state;
            self.out.push(PeuOut::State { aor: a.aor.clone(), uri: a.addr.contact.clone(), state: state.name(), status });
        }
    }

    /// A new dialog: fresh Call-ID and tag, so nothing of an ended one is
    /// taken for this one.
    fn subscribe(&mut self, id: u64) {
        let Some(a) = self.agents.get_mut(&id) else { return };
        self.by_call_id.remove(&a.dialog.call_id);
        a.dialog = ClientDialog::new(&mut self.entropy, self.shard, self.local, "peu");
        a.due = None;
        self.by_call_id.insert(a.dialog.call_id.clone(), id);
        let expires = a.expires;
        self.set_state(id, State::Subscribing, 0);
        self.out.push(PeuOut::Subscribe { agent: id, expires });
    }

    /// Ends the subscription: the source ends with it, so its publication
    /// goes now (a later watcher must not see a document nobody keeps
    /// current).
    fn unsubscribe(&mut self, now: Instant, id: u64) {
        self.drop_publication(now, id);
        self.set_state(id, State::Closing, 0);
        self.out.push(PeuOut::Subscribe { agent: id, expires: 0 });
    }

    /// The agent's binding is gone: unsubscribe if subscribed, drop its
    /// publication, and forget it (now, or when the unsubscribe ends).
    fn end_agent(&mut self, now: Instant, id: u64) {
        let Some(a) = self.agents.get_mut(&id) else { return };
        a.gone = true;
        self.drop_publication(now, id);
        match self.agents[&id].state {
            State::Subscribing | State::Active => self.unsubscribe(now, id),
            State::Closing => {}
            _ => self.forget(id),
        }
    }

    fn forget(&mut self, id: u64) {
        let Some(a) = self.agents.remove(&id) else { return };
        if self.by_call_id.get(&a.dialog.call_id) == Some(&id) {
            self.by_call_id.remove(&a.dialog.call_id);
        }
        if let Some(p) = self.presentities.get_mut(&a.aor) {
            p.agents.retain(|x| *x != id);
            if p.agents.is_empty() && !p.watched {
                self.presentities.remove(&a.aor);
            }
        }
        self.out.push(PeuOut::State { aor: a.aor, uri: a.addr.contact, state: "removed", status: 0 });
    }

    fn drop_publication(&mut self, now: Instant, id: u64) {
        let Some(a) = self.agents.get_mut(&id) else { return };
        if a.published {
            a.published = false;
            self.out.push(PeuOut::Source { aor: a.aor.clone(), agent: id, update: SourceUpdate::Remove, until: now });
        }
    }

    /// The source failed or ended: drop its publication and try again
    /// later, after `retry_after` seconds when the agent named them, else
    /// after the backoff (doubling per failure in a row, capped).
    fn back_off(&mut self, now: Instant, id: u64, retry_after: Option<u32>, status: u16) {
        self.drop_publication(now, id);
        let Some(a) = self.agents.get_mut(&id) else { return };
        if a.gone {
            return self.forget(id);
        }
        let doubling = self.cfg.retry_base.saturating_mul(1u32 << a.failures.min(20));
        let wait = retry_after.map_or(doubling, |s| Duration::from_secs(s as u64)).min(self.cfg.retry_max).max(Duration::from_millis(100));
        a.failures = a.failures.saturating_add(1);
        let at = now + wait;
        a.due = Some(at);
        self.wheel.insert(at, Timer::Agent(id));
        self.set_state(id, State::Backoff, status);
    }

    /// Writes agent `agent`'s SUBSCRIBE (as asked by `PeuOut::Subscribe`)
    /// with `branch`. Returns where it goes and its CSeq (the context its
    /// response comes back with).
    pub fn write_subscribe(&mut self, agent: u64, expires: u32, branch: &[u8], out: &mut Vec<u8>) -> Option<(Peer, u32)> {
        let a = self.agents.get_mut(&agent)?;
        let addr = &a.addr;
        let target = Target { request_uri: &addr.request_uri, to: &a.aor, route: addr.route.as_deref(), transport: addr.target.transport };
        a.dialog.write_subscribe(&self.local_text, &target, PRESENCE, expires, branch, out);
        Some((addr.target, a.dialog.cseq))
    }

    /// The outcome of the SUBSCRIBE with CSeq `cseq` of `agent`: a final
    /// response, or `None` for a timeout.
    pub fn on_response(&mut self, now: Instant, agent: u64, cseq: u32, status: Option<u16>, resp: Option<&Message<'_>>) {
        let Some(a) = self.agents.get_mut(&agent) else { return };
        if cseq != a.dialog.cseq {
            // Superseded by a later SUBSCRIBE of this agent.
            return;
        }
        if a.state == State::Closing {
            // The unsubscribe ended, however it ended.
            if a.gone {
                return self.forget(agent);
            }
            self.set_state(agent, State::Idle, status.unwrap_or(408));
            let aor = self.agents[&agent].aor.clone();
            return self.settle(now, &aor);
        }
        if !matches!(a.state, State::Subscribing | State::Active) {
            return;
        }
        match status {
            Some(200..=299) => {
                let granted = a.dialog.on_success(resp, a.expires);
                if granted == 0 {
                    // A notifier may end it at once (RFC 6665 4.1.2.1).
                    return self.back_off(now, agent, None, 200);
                }
                let refresh = a.state == State::Active;
                a.failures = 0;
                a.granted = granted;
                let at = subscriber::refresh_at(now, granted);
                a.due = Some(at);
                self.wheel.insert(at, Timer::Agent(agent));
                if refresh && a.published {
                    let until = now + Duration::from_secs(granted as u64 + 32);
                    self.out.push(PeuOut::Source { aor: a.aor.clone(), agent, update: SourceUpdate::Extend, until });
                }
                self.set_state(agent, State::Active, 200);
            }
            Some(405 | 489 | 501) => {
                self.drop_publication(now, agent);
                self.set_state(agent, State::Refused, status.unwrap_or_default());
                if self.agents[&agent].gone {
                    self.forget(agent);
                }
            }
            Some(423) => {
                // Ask again, for the interval the agent wants.
                let min = resp.and_then(|r| r.min_expires().ok().flatten()).unwrap_or(a.expires.saturating_mul(2));
                a.expires = min.clamp(a.expires, 86_400);
                let retry = resp.and_then(retry_after);
                self.back_off(now, agent, retry, 423);
            }
            Some(code) => {
                let retry = resp.and_then(retry_after);
                self.back_off(now, agent, retry, code);
            }
            None => self.back_off(now, agent, None, 408),
        }
    }

    /// Whether a NOTIFY belongs to one of these subscriptions (by Call-ID).
    pub fn owns(&self, msg: &Message<'_>) -> bool {
        self.by_call_id.contains_key(msg.call_id())
    }

    /// A NOTIFY on an agent's subscription (RFC 6665 4.1.3): its body,
    /// checked as a PUBLISH body is, becomes the agent's publication; a
    /// terminated state ends the source. Returns the answer to send.
    pub fn on_notify(&mut self, now: Instant, msg: &Message<'_>) -> NotifyAnswer {
        let Some(&id) = self.by_call_id.get(msg.call_id()) else {
            return NotifyAnswer::new(481, "Subscription Does Not Exist");
        };
        let a = self.agents.get_mut(&id).expect("indexed agents exist");
        if !a.dialog.is_ours(msg) {
            return NotifyAnswer::new(481, "Subscription Does Not Exist");
        }
        let state = subscriber::subscription_state(msg);
        if matches!(a.state, State::Idle | State::Backoff | State::Refused) {
            // The dialog already ended here; the notifier's own final
            // NOTIFY may come after (RFC 6665 4.1.2.3) and is taken.
            return if state == SubState::Terminated { NotifyAnswer::OK } else { NotifyAnswer::new(481, "Subscription Does Not Exist") };
        }
        if !matches!(msg.subscription_state(), Ok(Some(_))) {
            return NotifyAnswer::new(400, "Bad Request: Subscription-State missing");
        }
        // The body is judged before anything changes, as a PUBLISH's is.
        let body = msg.body();
        let doc = if body.is_empty() || state != SubState::Active {
            None
        } else if !msg.content_type().is_some_and(|t| t.is("application", "pidf+xml")) {
            return NotifyAnswer::new(415, "Unsupported Media Type");
        } else {
            match pidf::parse(body) {
                Ok(d) => Some(d),
                Err(_) => return NotifyAnswer::new(400, "Bad Request: malformed PIDF"),
            }
        };
        if let Err(refusal) = a.dialog.take_notify(msg, "presence") {
            let (code, reason) = refusal.status();
            return NotifyAnswer::new(code, reason);
        }
        if a.state == State::Closing {
            // The answer to our unsubscribe; its body is of no interest.
            return NotifyAnswer::OK;
        }
        match state {
            SubState::Terminated => {
                let retry = msg.subscription_state().ok().flatten().and_then(|s| s.retry_after());
                self.back_off(now, id, retry, 0);
            }
            SubState::Active => {
                if let Some(doc) = doc {
                    let expires = msg.subscription_state().ok().flatten().and_then(|s| s.expires());
                    let granted = expires.unwrap_or(a.granted.max(a.expires));
                    a.published = true;
                    let until = now + Duration::from_secs(granted as u64 + 32);
                    self.out.push(PeuOut::Source { aor: a.aor.clone(), agent: id, update: SourceUpdate::Document(doc), until });
                }
            }
            // Pending (or an unknown state): nothing to show yet.
            _ => {}
        }
        NotifyAnswer::OK
    }

    /// Refreshes, retries and grace periods whose time has come.
    pub fn on_time(&mut self, now: Instant) {
        self.wheel.advance(now, &mut self.fired);
        for t in std::mem::take(&mut self.fired) {
            match t {
                Timer::Agent(id) => {
                    let Some(a) = self.agents.get_mut(&id) else { continue };
                    if a.due.is_none_or(|d| d > now) {
                        continue;
                    }
                    a.due = None;
                    match a.state {
                        State::Active => {
                            let expires = a.expires;
                            self.out.push(PeuOut::Subscribe { agent: id, expires });
                        }
                        State::Backoff => {
                            let aor = a.aor.clone();
                            let wanted = self.presentities.get(&aor).is_some_and(|p| self.wanted(p));
                            self.set_state(id, State::Idle, 0);
                            if wanted {
                                self.subscribe(id);
                            }
                        }
                        _ => {}
                    }
                }
                Timer::Grace(aor) => {
                    let Some(p) = self.presentities.get_mut(&aor) else { continue };
                    if p.watched || p.grace_until.is_none_or(|g| g > now) {
                        continue;
                    }
                    p.grace_until = None;
                    self.settle(now, &aor);
                }
            }
        }
    }
}

fn new_agent(entropy: &mut Entropy, shard: u16, local: SocketAddr, aor: &[u8], addr: AgentAddr, configured: bool, expires: u32) -> Agent {
    Agent {
        aor: aor.into(),
        addr,
        configured,
        state: State::Idle,
        dialog: ClientDialog::new(entropy, shard, local, "peu"),
        expires,
        due: None,
        failures: 0,
        gone: false,
        published: false,
        granted: 0,
    }
}

/// A response's Retry-After, seconds.
fn retry_after(resp: &Message<'_>) -> Option<u32> {
    let v = resp.header(HeaderName::RetryAfter)?;
    let digits = v.iter().take_while(|c| c.is_ascii_digit()).count();
    std::str::from_utf8(&v[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
