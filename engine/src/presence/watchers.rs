//! Watcher subscriptions (RFC 6665, RFC 3856), held by the shard that
//! received the SUBSCRIBE: dialog state, expiry, and NOTIFY rate control.
//! Sans-IO: the shard asks it what to send and when; it writes NOTIFYs.
//!
//! Rate control (RFC 6446 style): a subscription sends at most one NOTIFY
//! per `min_interval` and has at most one in flight; changes in between
//! only replace the document it will send next, so a burst becomes one
//! NOTIFY with the latest state.

mod durable;
mod index;
pub use durable::{DurableView, NotRestored, Restore};

use super::winfo::{self, WatcherState};
use crate::core::entropy::Entropy;
use crate::core::ids;
use crate::core::parted::PartedMap;
use crate::core::peer::{Peer, Transport};
use crate::core::timer::TimerWheel;
use crate::sip::{HeaderName, Message, MessageWriter, Uri};
use index::{Index, Subs};
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
    /// In a cluster: the partition (one this node serves) whose log keeps
    /// the dialog, named in its tag.
    pub partition: Option<u16>,
}

impl Subscription {
    /// The presentity watched.
    pub fn aor(&self) -> &[u8] {
        self.texts.get(Text::Aor)
    }
    /// The subscriber's identity (asserted, or From).
    pub fn watcher(&self) -> &[u8] {
        self.texts.get(Text::Watcher)
    }
    pub fn call_id(&self) -> &[u8] {
        self.texts.get(Text::CallId)
    }
    /// Our tag: the dialog's to-tag in the watcher's eyes.
    pub fn local_tag(&self) -> &[u8] {
        self.texts.get(Text::LocalTag)
    }
}

/// The byte strings a subscription keeps for its life, by name.
#[derive(Clone, Copy)]
enum Text {
    Aor,
    /// The subscriber's identity (asserted, or From).
    Watcher,
    CallId,
    LocalTag,
    LocalUri,
    RemoteTag,
    RemoteUri,
    RemoteTarget,
    /// The Event header's id parameter; empty without one (an id is a
    /// token, never empty).
    EventId,
}

const TEXTS: usize = Text::EventId as usize + 1;

/// A subscription's byte strings in one allocation of their exact total
/// length, with the length of each but the last (what remains): nine
/// separate boxes cost 144 bytes of pointers and nine allocations'
/// rounding per subscription. 32 bytes in all.
struct Texts {
    buf: Box<[u8]>,
    lens: [u16; TEXTS - 1],
}

impl Texts {
    fn new(parts: [&[u8]; TEXTS]) -> Texts {
        let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut lens = [0u16; TEXTS - 1];
        for (i, part) in parts.iter().enumerate() {
            buf.extend_from_slice(part);
            if let Some(len) = lens.get_mut(i) {
                // Each is part of one request, or made from one, and a
                // request is at most 65,535 bytes (sip::Limits, checked in
                // config).
                *len = u16::try_from(part.len()).expect("a subscription's text is shorter than a request");
            }
        }
        Texts { buf: buf.into_boxed_slice(), lens }
    }

    fn get(&self, t: Text) -> &[u8] {
        let i = t as usize;
        let start: usize = self.lens[..i].iter().map(|&l| l as usize).sum();
        let end = self.lens.get(i).map_or(self.buf.len(), |&l| start + l as usize);
        &self.buf[start..end]
    }
}

pub struct Subscription {
    texts: Texts,
    pub package: Package,
    /// Winfo subscriptions only.
    winfo: Option<Box<WinfoView>>,
    /// The ask that created it: its name on the presentity's shard.
    pub ask: u64,
    pub shown: Shown,
    /// Empty (no allocation) unless the SUBSCRIBE had Record-Route.
    route_set: Box<[Box<[u8]>]>,
    pub to: Peer,
    remote_cseq: u32,
    local_cseq: u32,
    /// The CSeq the journal's last record of this subscription promised
    /// to stay under (see `durable`).
    cseq_reserved: u32,
    pub expires_at: Instant,
    /// The document to show next and its version.
    doc: Option<Arc<[u8]>>,
    version: u64,
    /// A newer document than the last NOTIFY carried is waiting.
    dirty: bool,
    in_flight: bool,
    last_notify: Option<Instant>,
    /// A rate-limit timer is set (when is the wheel's to know).
    rate_timer_set: bool,
    /// In the shard's queue for a place in the NOTIFY window: queued once,
    /// however many documents come while it waits.
    waiting_for_window: bool,
    /// Restored by a start and not yet answered by its presentity's shard
    /// (`durable`).
    rewatching: bool,
    /// Where this subscription sits in its AOR's list (`index::Index`).
    aor_slot: u32,
}

impl Subscription {
    /// A subscription with nothing sent yet, no route set and no
    /// document; its makers set what they know beyond that.
    fn new(texts: Texts, package: Package, ask: u64, shown: Shown, to: Peer, expires_at: Instant) -> Self {
        Subscription {
            texts,
            package,
            winfo: None,
            ask,
            shown,
            route_set: Box::default(),
            to,
            remote_cseq: 0,
            local_cseq: 0,
            cseq_reserved: 0,
            expires_at,
            doc: None,
            version: 0,
            dirty: false,
            in_flight: false,
            last_notify: None,
            rate_timer_set: false,
            waiting_for_window: false,
            rewatching: false,
            aor_slot: 0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Timer {
    Expire(u64),
    Rate(u64),
}

pub struct Watchers {
    cfg: WatchConfig,
    shard: u16,
    /// The server's address as written in Via, and its Contact in the
    /// dialogs (`<sip:presence@address>`), formatted once.
    local_text: String,
    contact: Arc<[u8]>,
    next: u64,
    /// Boxed: a table's empty slots then cost a pointer, not a
    /// subscription.
    subs: Subs,
    /// By dialog, by AOR, and counted per watcher identity.
    index: Index,
    by_ask: PartedMap<u64, u64>,
    entropy: Entropy,
    wheel: TimerWheel<Timer>,
    fired: Vec<Timer>,
    /// What the journal must hear of, when there is one (`durable`).
    marks: Option<durable::Marks>,
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
            contact: format!("<sip:presence@{local}>").into_bytes().into(),
            next: 0,
            subs: PartedMap::new(entropy.hasher()),
            index: Index::new(|| entropy.hasher()),
            by_ask: PartedMap::new(entropy.hasher()),
            entropy,
            wheel: TimerWheel::new(now, Duration::from_millis(10), 4096),
            fired: Vec::new(),
            marks: None,
        }
    }

    /// The Contact of the server in its subscription dialogs (shared, so
    /// that a caller may hold it while it changes the subscriptions).
    pub fn contact(&self) -> Arc<[u8]> {
        self.contact.clone()
    }

    /// Room for `n` subscriptions in every table, made now (see
    /// `shard::Expected`).
    pub fn reserve(&mut self, n: usize) {
        self.subs.reserve(n);
        self.by_ask.reserve(n);
        self.index.reserve(&self.subs, n);
    }

    /// Subscriptions there is room for without any table growing.
    pub fn capacity(&self) -> usize {
        self.subs.capacity().min(self.by_ask.capacity()).min(self.index.capacity())
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
        self.subs.get(&id).map(|s| &**s)
    }
    /// Subscriptions with a change they have not been sent yet (waiting
    /// for their rate limit, the window or an answer).
    pub fn unsent(&self) -> usize {
        self.subs.values().filter(|s| s.dirty).count()
    }
    /// Every subscription held here.
    pub fn iter(&self) -> impl Iterator<Item = &Subscription> {
        self.subs.values().map(|s| &**s)
    }
    /// Subscriptions held here for watcher identity `watcher`.
    pub fn held_by(&self, watcher: &[u8]) -> usize {
        self.index.held_by(watcher)
    }
    /// Local subscriptions watching `aor`.
    pub fn watching(&self, aor: &[u8]) -> usize {
        self.index.of_aor(&self.subs, aor).len()
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
        self.index.dialog(&self.subs, msg.call_id(), tag)
    }

    /// Creates the dialog for an accepted initial SUBSCRIBE (RFC 3261
    /// 12.1.1: route set from Record-Route, remote target from Contact).
    /// Returns its id and the to-tag to answer with.
    pub fn create(&mut self, now: Instant, req: &Message<'_>, peer: Peer, new: NewSub<'_>) -> (u64, Box<[u8]>) {
        let NewSub { aor, ask, package, shown, expires, doc, watchers, route_by_contact, watcher, partition } = new;
        self.next += 1;
        let id = self.next;
        let mut tag = Vec::with_capacity(24);
        match partition {
            Some(p) => ids::push_dialog_tag(&mut tag, self.shard, p, self.entropy.u64()),
            None => ids::push_tag(&mut tag, self.shard, self.entropy.u64()),
        }
        let remote_target: &[u8] = match req.contacts() {
            crate::sip::Contacts::List(l) if !l.is_empty() => l[0].uri().as_bytes(),
            _ => req.from().uri().as_bytes(),
        };
        let route_set: Vec<Box<[u8]>> = req.record_routes().filter_map(|r| r.ok()).map(|r| r.uri().as_bytes().into()).collect();
        // Where NOTIFYs go: the connection for TCP; over UDP, for a trusted
        // element, the first route or the remote target when it is an IP
        // literal, else (and for anyone else) the flow the SUBSCRIBE came on.
        let to = match peer.transport {
            Transport::Udp if route_by_contact => literal_addr(route_set.first().map_or(remote_target, |r| &r[..])).map_or(peer, Peer::udp),
            _ => peer,
        };
        let (version, doc) = doc.map_or((0, None), |(v, d)| (v, Some(d)));
        let event = req.event().ok().flatten();
        let texts = Texts::new([
            aor,
            watcher,
            req.call_id(),
            &tag,
            req.to().uri().as_bytes(),
            req.from().tag().unwrap_or_default(),
            req.from().uri().as_bytes(),
            remote_target,
            event.as_ref().and_then(|e| e.id()).unwrap_or_default(),
        ]);
        let sub = Box::new(Subscription {
            winfo: (package == Package::Winfo).then(|| Box::new(WinfoView { list: watchers, ..Default::default() })),
            route_set: route_set.into_boxed_slice(),
            remote_cseq: req.cseq().seq,
            doc,
            version,
            dirty: true,
            ..Subscription::new(texts, package, ask, shown, to, now + Duration::from_secs(expires as u64))
        });
        self.insert(id, sub);
        self.mark_changed(id);
        (id, tag.into())
    }

    /// Puts a subscription in every table: by ask, expiry timer, by id,
    /// and the dialog/presentity index.
    fn insert(&mut self, id: u64, sub: Box<Subscription>) {
        self.by_ask.insert(sub.ask, id);
        self.wheel.insert(sub.expires_at, Timer::Expire(id));
        self.subs.insert(id, sub);
        self.index.add(&mut self.subs, id);
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
        self.mark_changed(id);
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

    /// Marks `id` as queued for a place in the NOTIFY window; false if it
    /// already is (or is gone), so that the queue holds each subscription
    /// once and stays bounded by their number.
    pub fn queue_for_window(&mut self, id: u64) -> bool {
        self.subs.get_mut(&id).is_some_and(|s| !std::mem::replace(&mut s.waiting_for_window, true))
    }

    /// `id` left the window queue: whether it still has news to send.
    pub fn leave_window_queue(&mut self, id: u64) -> bool {
        self.subs.get_mut(&id).is_some_and(|s| {
            s.waiting_for_window = false;
            s.dirty && !s.in_flight
        })
    }

    /// The subscription the presentity's shard knows by `ask`.
    pub fn by_ask(&self, ask: u64) -> Option<u64> {
        self.by_ask.get(&ask).copied()
    }

    /// Forgets a subscription; returns its AOR and ask (for the
    /// presentity's shard).
    pub fn remove(&mut self, id: u64) -> Option<(Box<[u8]>, u64)> {
        self.index.remove(&mut self.subs, id);
        let sub = self.subs.remove(&id)?;
        self.by_ask.remove(&sub.ask);
        if let Some(m) = &mut self.marks {
            m.ended.push((sub.call_id().into(), sub.local_tag().into()));
        }
        Some((sub.aor().into(), sub.ask))
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
        for &id in self.index.of_aor(&self.subs, aor) {
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
        for &id in self.index.of_aor(&self.subs, aor) {
            let Some(s) = self.subs.get_mut(&id) else { continue };
            let Some(v) = s.winfo.as_deref_mut() else { continue };
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
        } else if !s.rate_timer_set {
            s.rate_timer_set = true;
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
                        s.rate_timer_set = false;
                        Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
                    }
                }
            }
        }
    }

    /// Writes the next NOTIFY of subscription `id` with `branch`: current
    /// state, or `end` for a final one. Returns where it goes and, when
    /// the body is a presence document, that document: it is shared by
    /// every watcher of the presentity on this shard, so `out` gets the
    /// start line and headers only, and the document is sent after them
    /// as it is (`Transmit::shared`). A winfo body is this subscription's
    /// own and is written into `out`. `neutral` makes the closed document
    /// for an AOR; it is called only when that document is what the
    /// watcher is shown.
    pub fn write_notify(
        &mut self,
        now: Instant,
        id: u64,
        branch: &[u8],
        end: Option<End>,
        neutral: fn(&[u8]) -> Arc<[u8]>,
        out: &mut Vec<u8>,
    ) -> Option<(Peer, Option<Arc<[u8]>>)> {
        let s = self.subs.get_mut(&id)?;
        s.local_cseq += 1;
        if s.local_cseq > s.cseq_reserved
            && let Some(m) = &mut self.marks
        {
            s.cseq_reserved = s.local_cseq + durable::CSEQ_RESERVE;
            m.changed.push(id);
        }
        s.in_flight = true;
        s.dirty = false;
        s.last_notify = Some(now);
        let transport = if s.to.transport == Transport::Tcp { "TCP" } else { "UDP" };
        let local = &self.local_text;
        // One allocation for the NOTIFY's own part: the dialog's texts and
        // the route set, plus the fixed header names and values (under 400
        // bytes with the local address).
        let routes: usize = s.route_set.iter().map(|r| r.len() + 11).sum();
        out.reserve(400 + 3 * local.len() + branch.len() + s.texts.buf.len() + routes);
        let mut w = MessageWriter::request(out, b"NOTIFY", s.texts.get(Text::RemoteTarget));
        w.header_parts(HeaderName::Via, &[b"SIP/2.0/", transport.as_bytes(), b" ", local.as_bytes(), b";rport;branch=", branch]);
        w.header(HeaderName::MaxForwards, b"70");
        for r in &s.route_set {
            w.header_parts(HeaderName::Route, &[b"<", r, b">"]);
        }
        let t = &s.texts;
        w.header_parts(HeaderName::From, &[b"<", t.get(Text::LocalUri), b">;tag=", t.get(Text::LocalTag)]);
        w.header_parts(HeaderName::To, &[b"<", t.get(Text::RemoteUri), b">;tag=", t.get(Text::RemoteTag)]);
        w.header(HeaderName::CallId, t.get(Text::CallId));
        w.header_parts(HeaderName::CSeq, &[itoa::Buffer::new().format(s.local_cseq).as_bytes(), b" NOTIFY"]);
        w.header(HeaderName::Contact, &self.contact);
        match t.get(Text::EventId) {
            b"" => w.header(HeaderName::Event, s.package.event()),
            id => w.header_parts(HeaderName::Event, &[s.package.event(), b";id=", id]),
        };
        let remaining = s.expires_at.saturating_duration_since(now).as_secs();
        let mut digits = itoa::Buffer::new();
        let state: [&[u8]; 2] = match (end, s.shown) {
            (Some(End::Timeout), _) => [b"terminated;reason=timeout", b""],
            (Some(End::Unsubscribed), _) => [b"terminated", b""],
            (Some(End::Rejected), _) => [b"terminated;reason=rejected", b""],
            (None, Shown::Pending) => [b"pending;expires=", digits.format(remaining).as_bytes()],
            (None, _) => [b"active;expires=", digits.format(remaining).as_bytes()],
        };
        w.header_parts(HeaderName::SubscriptionState, &state);
        if let Some(v) = s.winfo.as_deref_mut() {
            // RFC 3857: full state first, then what changed, each with the
            // next version.
            let aor = s.texts.get(Text::Aor);
            let body = if v.sent_full { winfo::document(aor, v.version, false, &v.changes) } else { winfo::document(aor, v.version, true, &v.list) };
            v.version += 1;
            v.sent_full = true;
            v.changes.clear();
            w.finish(Some(b"application/watcherinfo+xml"), &body);
            return Some((s.to, None));
        }
        let body = match (end, s.shown, &s.doc) {
            (Some(End::Rejected), _, _) | (_, Shown::Pending, _) => None,
            (_, Shown::Real, Some(doc)) => Some(doc.clone()),
            _ => Some(neutral(s.aor())),
        };
        match body {
            Some(doc) if !doc.is_empty() => {
                w.finish_before_body(Some(b"application/pidf+xml"), doc.len());
                Some((s.to, Some(doc)))
            }
            _ => {
                w.finish(None, b"");
                Some((s.to, None))
            }
        }
    }
}
