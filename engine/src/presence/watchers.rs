//! Watcher subscriptions (RFC 6665, RFC 3856), held by the shard that
//! received the SUBSCRIBE: dialog state, expiry, and NOTIFY rate control.
//! Sans-IO: the shard asks it what to send and when; it writes NOTIFYs.
//!
//! Rate control (RFC 6446 style): a subscription sends at most one NOTIFY
//! per `min_interval` and has at most one in flight; changes in between
//! only replace the document it will send next, so a burst becomes one
//! NOTIFY with the latest state.

use super::winfo::{self, WatcherState};
use crate::core::entropy::Entropy;
use crate::core::ids;
use crate::core::peer::{Peer, Transport};
use crate::core::timer::TimerWheel;
use crate::sip::{HeaderName, Message, MessageWriter, Uri};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub min_notify_interval: Duration,
    /// Most NOTIFYs a shard keeps in flight; more wait for answers. A
    /// burst to a huge watcher list then goes out at the pace the watchers
    /// answer instead of outrunning T1 and retransmitting.
    pub window: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig { min_expires: 60, max_expires: 7200, default_expires: 3600, min_notify_interval: Duration::from_millis(1000), window: 4096 }
    }
}

/// What a watcher is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// The presentity's document as it changes.
    Real,
    /// A neutral closed document, whatever happens (polite blocking).
    Neutral,
    /// Nothing yet: the subscription is pending authorization.
    Pending,
}

/// The event package of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Package {
    Presence,
    /// `presence.winfo`: the presentity watching its own watchers.
    Winfo,
}

impl Package {
    fn event(self) -> &'static [u8] {
        match self {
            Package::Presence => b"presence",
            Package::Winfo => b"presence.winfo",
        }
    }
}

/// A winfo subscription's view of the watcher list: the whole list (for
/// a full-state NOTIFY) and what changed since the last NOTIFY (partial).
#[derive(Default)]
struct WinfoView {
    list: Vec<WatcherState>,
    changes: Vec<WatcherState>,
    version: u32,
    sent_full: bool,
}

/// What a new subscription starts with.
pub struct NewSub<'a> {
    pub aor: &'a [u8],
    pub ask: u64,
    pub package: Package,
    pub shown: Shown,
    pub expires: u32,
    /// Presence: the current document and its version.
    pub doc: Option<(u64, Arc<[u8]>)>,
    /// Winfo: the current watcher list.
    pub watchers: Vec<WatcherState>,
    /// The SUBSCRIBE came from a trusted element: NOTIFYs go where its
    /// Record-Route and Contact say. Otherwise they go back to the flow
    /// it came on, never to a third address, so a forged SUBSCRIBE cannot
    /// aim the server's NOTIFYs at anyone else.
    pub route_by_contact: bool,
    /// Who subscribes (the requester's identity), counted per watcher.
    pub watcher: &'a [u8],
}

impl Subscription {
    pub fn call_id(&self) -> &[u8] {
        &self.call_id
    }
    /// Our tag: the dialog's to-tag in the watcher's eyes.
    pub fn local_tag(&self) -> &[u8] {
        &self.local_tag
    }
}

pub struct Subscription {
    pub aor: Box<[u8]>,
    /// The subscriber's identity (asserted, or From).
    pub watcher: Box<[u8]>,
    pub package: Package,
    winfo: WinfoView,
    /// The ask that created it: its name on the presentity's shard.
    pub ask: u64,
    pub shown: Shown,
    call_id: Box<[u8]>,
    local_tag: Box<[u8]>,
    local_uri: Box<[u8]>,
    remote_tag: Box<[u8]>,
    remote_uri: Box<[u8]>,
    remote_target: Box<[u8]>,
    route_set: Vec<Box<[u8]>>,
    event_id: Option<Box<[u8]>>,
    pub to: Peer,
    remote_cseq: u32,
    local_cseq: u32,
    pub expires_at: Instant,
    /// The document to show next and its version.
    doc: Option<Arc<[u8]>>,
    version: u64,
    /// A newer document than the last NOTIFY carried is waiting.
    dirty: bool,
    in_flight: bool,
    last_notify: Option<Instant>,
    rate_timer_at: Option<Instant>,
    /// Where this subscription sits in its AOR's list (`Watchers::by_aor`).
    aor_slot: usize,
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    Expire(u64),
    Rate(u64),
}

pub struct Watchers {
    cfg: WatchConfig,
    shard: u16,
    /// The server's address as written in Via and Contact, formatted once.
    local_text: String,
    next: u64,
    subs: HashMap<u64, Subscription, ahash::RandomState>,
    by_dialog: HashMap<Box<[u8]>, u64, ahash::RandomState>,
    by_aor: HashMap<Box<[u8]>, Vec<u64>, ahash::RandomState>,
    by_ask: HashMap<u64, u64, ahash::RandomState>,
    /// Subscriptions held per watcher identity (a limit's count).
    per_watcher: HashMap<Box<[u8]>, u32, ahash::RandomState>,
    entropy: Entropy,
    wheel: TimerWheel<Timer>,
    fired: Vec<Timer>,
}

/// An in-dialog request whose CSeq is not above the last one (or whose
/// dialog is gone).
#[derive(Debug, PartialEq, Eq)]
pub struct StaleCSeq;

/// What a terminating NOTIFY says (RFC 6665 4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Timeout,
    Unsubscribed,
    Rejected,
}

fn dialog_key(call_id: &[u8], local_tag: &[u8]) -> Box<[u8]> {
    [call_id, b"\0", local_tag].concat().into()
}

/// A literal IP host and port of a SIP URI, if it has one.
fn literal_addr(uri: &[u8]) -> Option<SocketAddr> {
    let u = Uri::parse(uri).ok()?;
    let host = std::str::from_utf8(u.host()).ok()?.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, u.port().unwrap_or(5060)))
}

impl Watchers {
    pub fn new(cfg: WatchConfig, shard: u16, local: SocketAddr, mut entropy: Entropy, now: Instant) -> Self {
        Watchers {
            cfg,
            shard,
            local_text: local.to_string(),
            next: 0,
            subs: HashMap::with_hasher(entropy.hasher()),
            by_dialog: HashMap::with_hasher(entropy.hasher()),
            by_aor: HashMap::with_hasher(entropy.hasher()),
            by_ask: HashMap::with_hasher(entropy.hasher()),
            per_watcher: HashMap::with_hasher(entropy.hasher()),
            entropy,
            wheel: TimerWheel::new(now, Duration::from_millis(10), 4096),
            fired: Vec::new(),
        }
    }

    pub fn config(&self) -> &WatchConfig {
        &self.cfg
    }
    pub fn len(&self) -> usize {
        self.subs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
    /// Timer wheel entries pending (fired lazily; for leak checks).
    pub fn wheel_entries(&self) -> usize {
        self.wheel.len()
    }
    pub fn get(&self, id: u64) -> Option<&Subscription> {
        self.subs.get(&id)
    }
    /// Subscriptions with a change they have not been sent yet (waiting
    /// for their rate limit, the window or an answer).
    pub fn unsent(&self) -> usize {
        self.subs.values().filter(|s| s.dirty).count()
    }
    /// Every subscription held here.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.values()
    }
    /// Subscriptions held here for watcher identity `watcher`.
    pub fn held_by(&self, watcher: &[u8]) -> usize {
        self.per_watcher.get(watcher).map_or(0, |n| *n as usize)
    }
    /// Local subscriptions watching `aor`.
    pub fn watching(&self, aor: &[u8]) -> usize {
        self.by_aor.get(aor).map_or(0, Vec::len)
    }

    /// The granted expiry for a requested one; `Err(min)` when too brief.
    pub fn grant(&self, requested: Option<u32>) -> Result<u32, u32> {
        let r = requested.unwrap_or(self.cfg.default_expires);
        if r != 0 && r < self.cfg.min_expires {
            return Err(self.cfg.min_expires);
        }
        Ok(r.min(self.cfg.max_expires))
    }

    /// The subscription an in-dialog request belongs to.
    pub fn find(&self, msg: &Message<'_>) -> Option<u64> {
        let tag = msg.to().tag()?;
        self.by_dialog.get(&dialog_key(msg.call_id(), tag)).copied()
    }

    /// Creates the dialog for an accepted initial SUBSCRIBE (RFC 3261
    /// 12.1.1: route set from Record-Route, remote target from Contact).
    /// Returns its id and the to-tag to answer with.
    pub fn create(&mut self, now: Instant, req: &Message<'_>, peer: Peer, new: NewSub<'_>) -> (u64, Box<[u8]>) {
        let NewSub { aor, ask, package, shown, expires, doc, watchers, route_by_contact, watcher } = new;
        *self.per_watcher.entry(watcher.into()).or_default() += 1;
        self.next += 1;
        let id = self.next;
        let mut tag = Vec::with_capacity(24);
        ids::push_tag(&mut tag, self.shard, self.entropy.u64());
        let remote_target: Box<[u8]> = match req.contacts() {
            crate::sip::Contacts::List(l) if !l.is_empty() => l[0].uri().as_bytes().into(),
            _ => req.from().uri().as_bytes().into(),
        };
        let route_set: Vec<Box<[u8]>> = req.record_routes().filter_map(|r| r.ok()).map(|r| r.uri().as_bytes().into()).collect();
        // Where NOTIFYs go: the connection for TCP; over UDP, for a trusted
        // element, the first route or the remote target when it is an IP
        // literal, else (and for anyone else) the flow the SUBSCRIBE came on.
        let to = match peer.transport {
            Transport::Udp if route_by_contact => route_set.first().or(Some(&remote_target)).and_then(|u| literal_addr(u)).map_or(peer, Peer::udp),
            _ => peer,
        };
        let (version, doc) = doc.map_or((0, None), |(v, d)| (v, Some(d)));
        let list = self.by_aor.entry(aor.into()).or_default();
        let aor_slot = list.len();
        list.push(id);
        let sub = Subscription {
            aor: aor.into(),
            watcher: watcher.into(),
            package,
            winfo: WinfoView { list: watchers, ..Default::default() },
            ask,
            shown,
            call_id: req.call_id().into(),
            local_tag: tag.clone().into(),
            local_uri: req.to().uri().as_bytes().into(),
            remote_tag: req.from().tag().unwrap_or_default().into(),
            remote_uri: req.from().uri().as_bytes().into(),
            remote_target,
            route_set,
            event_id: req.event().ok().flatten().and_then(|e| e.id()).map(Into::into),
            to,
            remote_cseq: req.cseq().seq,
            local_cseq: 0,
            expires_at: now + Duration::from_secs(expires as u64),
            doc,
            version,
            dirty: true,
            in_flight: false,
            last_notify: None,
            rate_timer_at: None,
            aor_slot,
        };
        self.by_dialog.insert(dialog_key(&sub.call_id, &sub.local_tag), id);
        self.by_ask.insert(ask, id);
        self.wheel.insert(sub.expires_at, Timer::Expire(id));
        self.subs.insert(id, sub);
        (id, tag.into())
    }

    /// A refreshing SUBSCRIBE in the dialog: `Err(StaleCSeq)` if its CSeq
    /// is not newer (RFC 3261 12.2.2: 500).
    pub fn refresh(&mut self, now: Instant, id: u64, cseq: u32, expires: u32) -> Result<(), StaleCSeq> {
        let sub = self.subs.get_mut(&id).ok_or(StaleCSeq)?;
        if cseq <= sub.remote_cseq {
            return Err(StaleCSeq);
        }
        sub.remote_cseq = cseq;
        sub.expires_at = now + Duration::from_secs(expires as u64);
        sub.dirty = true;
        self.wheel.insert(sub.expires_at, Timer::Expire(id));
        Ok(())
    }

    /// Queues a NOTIFY with the current state for `id` (after a refresh):
    /// ready now, or when its rate limit allows.
    pub fn poke(&mut self, now: Instant, id: u64, ready: &mut Vec<u64>) {
        if let Some(s) = self.subs.get_mut(&id) {
            s.dirty = true;
            Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
        }
    }

    /// Whether `id` has news to send and nothing in flight.
    pub fn wants_notify(&self, id: u64) -> bool {
        self.subs.get(&id).is_some_and(|s| s.dirty && !s.in_flight)
    }

    /// The subscription the presentity's shard knows by `ask`.
    pub fn by_ask(&self, ask: u64) -> Option<u64> {
        self.by_ask.get(&ask).copied()
    }

    /// Forgets a subscription; returns its AOR and ask (for the
    /// presentity's shard).
    pub fn remove(&mut self, id: u64) -> Option<(Box<[u8]>, u64)> {
        let sub = self.subs.remove(&id)?;
        self.by_ask.remove(&sub.ask);
        if let Some(n) = self.per_watcher.get_mut(&sub.watcher) {
            *n -= 1;
            if *n == 0 {
                self.per_watcher.remove(&sub.watcher);
            }
        }
        self.by_dialog.remove(&dialog_key(&sub.call_id, &sub.local_tag));
        // O(1): the last subscription of the list takes this one's slot.
        if let Some(v) = self.by_aor.get_mut(&sub.aor) {
            debug_assert_eq!(v.get(sub.aor_slot), Some(&id));
            v.swap_remove(sub.aor_slot);
            if let Some(&moved) = v.get(sub.aor_slot)
                && let Some(m) = self.subs.get_mut(&moved)
            {
                m.aor_slot = sub.aor_slot;
            }
            if v.is_empty() {
                self.by_aor.remove(&sub.aor);
            }
        }
        Some((sub.aor, sub.ask))
    }

    /// The presentity's policy for a subscription changed (pending →
    /// allowed, or to polite-block).
    pub fn set_shown(&mut self, id: u64, shown: Shown) {
        if let Some(s) = self.subs.get_mut(&id) {
            s.shown = shown;
            s.dirty = true;
        }
    }

    /// A new version of `aor`'s document: returns the subscriptions that may
    /// notify now; the others are rate-limited and will come due.
    pub fn on_document(&mut self, now: Instant, aor: &[u8], version: u64, doc: &Arc<[u8]>, ready: &mut Vec<u64>) {
        let Some(ids) = self.by_aor.get(aor) else { return };
        for &id in ids {
            let Some(s) = self.subs.get_mut(&id) else { continue };
            if s.package != Package::Presence || version <= s.version {
                continue;
            }
            s.version = version;
            s.doc = Some(doc.clone());
            if s.shown != Shown::Real {
                continue;
            }
            s.dirty = true;
            Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
        }
    }

    /// A watcher of `aor` changed: every winfo subscription to `aor` here
    /// records it for its next (partial) NOTIFY.
    pub fn on_watcher_change(&mut self, now: Instant, aor: &[u8], change: &WatcherState, ready: &mut Vec<u64>) {
        let Some(ids) = self.by_aor.get(aor) else { return };
        for &id in ids {
            let Some(s) = self.subs.get_mut(&id) else { continue };
            if s.package != Package::Winfo {
                continue;
            }
            let v = &mut s.winfo;
            v.list.retain(|w| w.id != change.id);
            if change.status != "terminated" {
                v.list.push(change.clone());
            }
            v.changes.retain(|w| w.id != change.id);
            v.changes.push(change.clone());
            s.dirty = true;
            Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
        }
    }

    fn ready_or_schedule(cfg: &WatchConfig, wheel: &mut TimerWheel<Timer>, id: u64, s: &mut Subscription, now: Instant, ready: &mut Vec<u64>) {
        if s.in_flight || !s.dirty {
            return;
        }
        let next = s.last_notify.map_or(now, |t| t + cfg.min_notify_interval);
        if next <= now {
            ready.push(id);
        } else if s.rate_timer_at.is_none() {
            s.rate_timer_at = Some(next);
            wheel.insert(next, Timer::Rate(id));
        }
    }

    /// The answer to a NOTIFY: 2xx frees the subscription for the next one;
    /// 481, a timeout or any failure but 401/407 ends it (RFC 6665 4.1.2.4).
    /// Returns `Err((aor, ask))` when it ended.
    pub fn on_notify_result(&mut self, now: Instant, id: u64, status: Option<u16>, ready: &mut Vec<u64>) -> Result<(), (Box<[u8]>, u64)> {
        let Some(s) = self.subs.get_mut(&id) else { return Ok(()) };
        s.in_flight = false;
        match status {
            Some(200..=299) | Some(401) | Some(407) => {
                Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
                Ok(())
            }
            _ => Err(self.remove(id).unwrap_or_default()),
        }
    }

    /// Expired subscriptions (to end with a timeout NOTIFY) and those whose
    /// rate limit has passed (to notify now).
    pub fn on_time(&mut self, now: Instant, expired: &mut Vec<u64>, ready: &mut Vec<u64>) {
        self.wheel.advance(now, &mut self.fired);
        for t in std::mem::take(&mut self.fired) {
            match t {
                Timer::Expire(id) => {
                    if self.subs.get(&id).is_some_and(|s| s.expires_at <= now) {
                        expired.push(id);
                    }
                }
                Timer::Rate(id) => {
                    if let Some(s) = self.subs.get_mut(&id) {
                        s.rate_timer_at = None;
                        Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
                    }
                }
            }
        }
    }

    /// Writes the next NOTIFY of subscription `id` with `branch`: current
    /// state, or `end` for a final one. Returns where it goes.
    /// `neutral` makes the closed document for an AOR; it is called only
    /// when that document is what the watcher is shown.
    pub fn write_notify(&mut self, now: Instant, id: u64, branch: &[u8], end: Option<End>, neutral: fn(&[u8]) -> Arc<[u8]>, out: &mut Vec<u8>) -> Option<Peer> {
        let s = self.subs.get_mut(&id)?;
        s.local_cseq += 1;
        s.in_flight = true;
        s.dirty = false;
        s.last_notify = Some(now);
        let transport = if s.to.transport == Transport::Tcp { "TCP" } else { "UDP" };
        let local = &self.local_text;
        let mut w = MessageWriter::request(out, b"NOTIFY", &s.remote_target);
        w.header_parts(HeaderName::Via, &[b"SIP/2.0/", transport.as_bytes(), b" ", local.as_bytes(), b";rport;branch=", branch]);
        w.header(HeaderName::MaxForwards, b"70");
        for r in &s.route_set {
            w.header_parts(HeaderName::Route, &[b"<", r, b">"]);
        }
        w.header_parts(HeaderName::From, &[b"<", &s.local_uri, b">;tag=", &s.local_tag]);
        w.header_parts(HeaderName::To, &[b"<", &s.remote_uri, b">;tag=", &s.remote_tag]);
        w.header(HeaderName::CallId, &s.call_id);
        w.header_parts(HeaderName::CSeq, &[itoa::Buffer::new().format(s.local_cseq).as_bytes(), b" NOTIFY"]);
        w.header_parts(HeaderName::Contact, &[b"<sip:presence@", local.as_bytes(), b">"]);
        match &s.event_id {
            Some(id) => w.header_parts(HeaderName::Event, &[s.package.event(), b";id=", id]),
            None => w.header(HeaderName::Event, s.package.event()),
        };
        let remaining = s.expires_at.saturating_duration_since(now).as_secs();
        let state = match (end, s.shown) {
            (Some(End::Timeout), _) => "terminated;reason=timeout".to_string(),
            (Some(End::Unsubscribed), _) => "terminated".to_string(),
            (Some(End::Rejected), _) => "terminated;reason=rejected".to_string(),
            (None, Shown::Pending) => format!("pending;expires={remaining}"),
            (None, _) => format!("active;expires={remaining}"),
        };
        w.header(HeaderName::SubscriptionState, state.as_bytes());
        if s.package == Package::Winfo {
            // RFC 3857: full state first, then what changed, each with the
            // next version.
            let v = &mut s.winfo;
            let body = if v.sent_full { winfo::document(&s.aor, v.version, false, &v.changes) } else { winfo::document(&s.aor, v.version, true, &v.list) };
            v.version += 1;
            v.sent_full = true;
            v.changes.clear();
            w.finish(Some(b"application/watcherinfo+xml"), &body);
            return Some(s.to);
        }
        let closed;
        let body: &[u8] = match (end, s.shown, &s.doc) {
            (Some(End::Rejected), _, _) | (_, Shown::Pending, _) => b"",
            (_, Shown::Real, Some(doc)) => doc,
            _ => {
                closed = neutral(&s.aor);
                &closed
            }
        };
        w.finish(if body.is_empty() { None } else { Some(b"application/pidf+xml") }, body);
        Some(s.to)
    }
}
