//! Watchers on the shard: SUBSCRIBE handling where the subscription lives
//! (the receiving shard), authorization and watcher counts where the
//! presentity lives, and the fan-out of each new document version: once to
//! each shard that holds watchers, which notifies its own.

use super::watched::WatcherEntry;
use super::{ClientCtx, CoreMsg, Event, Outbox, Reply, Shard, lossy};
use crate::core::limits::Limit;
use crate::core::peer::{Peer, Transmit};
use crate::core::transaction::TxnRef;
use crate::core::{capabilities, ids};
use crate::presence::authz::Action;
use crate::presence::pidf;
use crate::presence::watchers::{End, NewSub, Package, Shown};
use crate::presence::winfo::WatcherState;
use crate::sip::{HeaderName, Message};
use std::sync::Arc;
use std::time::Instant;

/// An initial SUBSCRIBE waiting for its presentity shard's answer. Its
/// server transaction stays in Trying meanwhile (retransmissions are
/// absorbed).
pub(super) struct PendingWatch {
    bytes: Vec<u8>,
    peer: Peer,
    txn: TxnRef,
    received_on: u16,
    expires: u32,
    package: Package,
    since: Instant,
}

/// What a presentity's shard knows of its watchers, for tests and
/// simulations that check it against the subscriptions the other shards
/// hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchedView {
    /// Watchers counted per shard: where documents go.
    pub counts: Vec<u32>,
    /// (shard, ask) of each presence watcher.
    pub watchers: Vec<(u16, u64)>,
    /// (shard, ask) of each winfo subscriber.
    pub winfo: Vec<(u16, u64)>,
}

/// A document and its version.
type VersionedDoc = (u64, Arc<[u8]>);

/// What a new SUBSCRIBE asked for, carried to its answer.
#[derive(Clone, Copy)]
struct Asked<'a> {
    /// Its name on the presentity's shard.
    ask: u64,
    package: Package,
    /// Granted.
    expires: u32,
    /// The presentity and the requester's identity, as the SUBSCRIBE's
    /// first handling found them.
    aor: &'a [u8],
    watcher: &'a [u8],
}

impl Shard {
    /// What this shard, as `aor`'s owner, knows of its watchers.
    pub fn watched_view(&self, aor: &[u8]) -> Option<WatchedView> {
        let w = self.presentity_watchers.get(aor)?;
        let mut watchers: Vec<(u16, u64)> = w.watchers.iter().map(|e| (e.shard, e.ask)).collect();
        watchers.sort_unstable();
        let mut winfo = w.winfo.clone();
        winfo.sort_unstable();
        Some(WatchedView { counts: w.counts.to_vec(), watchers, winfo })
    }

    /// The document a watcher of `aor` is shown now: the composed one, or
    /// the neutral closed one when there is none. Only meaningful on the
    /// owner.
    pub fn current_document(&self, aor: &[u8]) -> (u64, Arc<[u8]>) {
        self.publications.document_now(aor).unwrap_or_else(|| (0, neutral(aor)))
    }

    /// RFC 6665 4.2.1 and RFC 3856 for `Event: presence`.
    pub(super) fn on_subscribe(&mut self, msg: &Message<'_>, reply: Reply, out: &mut Outbox) {
        let package = match msg.event() {
            Ok(Some(e)) if e.is("presence") => Package::Presence,
            Ok(Some(e)) if e.is("presence.winfo") => Package::Winfo,
            _ => {
                let events = capabilities::joined(capabilities::ALLOW_EVENTS);
                return self.respond(msg, reply, 489, "Bad Event", &[(HeaderName::AllowEvents, events.as_bytes())], out);
            }
        };
        let expires = match self.subscriptions.grant(msg.expires()) {
            Ok(e) => e,
            Err(min) => {
                let min = min.to_string();
                return self.respond(msg, reply, 423, "Interval Too Brief", &[(HeaderName::MinExpires, min.as_bytes())], out);
            }
        };
        if let Some(tag) = msg.to().tag() {
            // In the dialog: refresh or unsubscribe.
            let tag = tag.to_vec();
            let Some(id) = self.subscriptions.find(msg) else {
                return self.respond(msg, reply, 481, "Subscription Does Not Exist", &[], out);
            };
            if self.subscriptions.refresh(reply.now, id, msg.cseq().seq, expires.max(1)).is_err() {
                return self.respond(msg, reply, 500, "Server Internal Error: CSeq out of order", &[], out);
            }
            let mut exp = itoa::Buffer::new();
            let contact = self.subscriptions.contact();
            let headers = [(HeaderName::Expires, exp.format(expires).as_bytes()), (HeaderName::Contact, &contact[..])];
            self.respond_tagged(msg, reply, 200, "OK", &headers, &tag, out);
            if expires == 0 {
                self.send_notify(reply.now, id, Some(End::Unsubscribed), out);
            } else {
                // RFC 6665 4.2.1.2: a refresh is followed by a NOTIFY.
                let mut ready = Vec::new();
                self.subscriptions.poke(reply.now, id, &mut ready);
                self.notify_ready(reply.now, ready, out);
            }
            return;
        }
        // A new subscription: the watcher must accept the package's format
        // (RFC 3856 6.7, RFC 3857 5.2).
        let format = match package {
            Package::Presence => ("application", "pidf+xml"),
            Package::Winfo => ("application", "watcherinfo+xml"),
        };
        let mut accepts = msg.accept().filter_map(|a| a.ok()).peekable();
        if accepts.peek().is_some() && !accepts.any(|a| a.accepts(format.0, format.1)) {
            let want = format!("{}/{}", format.0, format.1);
            return self.respond(msg, reply, 406, "Not Acceptable", &[(HeaderName::Accept, want.as_bytes())], out);
        }
        let Some(uri) = msg.request_uri() else { return };
        let aor: Box<[u8]> = uri.aor().into();
        let watcher: Box<[u8]> = self.requester(msg, reply.peer).into();
        // Only the presentity itself may see its watchers.
        if package == Package::Winfo && watcher != aor {
            return self.respond(msg, reply, 403, "Forbidden: only the presentity may watch its watchers", &[], out);
        }
        // Limits: room for the ask and the subscription, and the watcher's
        // own share.
        let caps = &self.cfg.caps;
        if self.pending_watch.len() >= caps.pending_asks {
            return self.refuse(msg, reply, Limit::PendingAsks, out);
        }
        if self.subscriptions.len() + self.pending_watch.len() >= caps.subscriptions {
            return self.refuse(msg, reply, Limit::Subscriptions, out);
        }
        if self.subscriptions.held_by(&watcher) >= caps.subscriptions_per_watcher {
            return self.refuse(msg, reply, Limit::SubscriptionsPerWatcher, out);
        }
        // A replicated dialog lives in a partition this node serves: with
        // none (joining, or cut off), it could not outlive this node.
        if self.replica.is_some() && self.dialog_partition(reply.now).is_none() {
            return self.refuse(msg, reply, Limit::Partition, out);
        }
        self.next_ask += 1;
        let ask = self.next_ask;
        let owner = ids::owner_of(&aor, self.cfg.shards);
        let from = self.cfg.shard;
        if owner == from && package == Package::Presence {
            // The presentity is this shard's own: decide now, with the
            // request still parsed, instead of keeping its bytes for an
            // answer that would come back through this shard's own queue
            // and parsing them again (a sixth of a SUBSCRIBE's instructions,
            // `bench/examples/subscribe_loop.rs`). Other shards' asks go
            // over the queues below.
            let (action, version, doc) = self.decide_watch(reply.now, ask, from, &aor, &watcher, out);
            let asked = Asked { ask, package, expires, aor: &aor, watcher: &watcher };
            return self.answer_watch(msg, reply, asked, action, doc.map(|d| (version, d)), out);
        }
        self.pending_watch.insert(
            ask,
            PendingWatch {
                bytes: msg.as_bytes().to_vec(),
                peer: reply.peer,
                txn: reply.txn,
                received_on: reply.received_on,
                expires,
                package,
                since: reply.now,
            },
        );
        let ask_msg = match package {
            Package::Presence => CoreMsg::Watch { ask, from, aor, watcher },
            Package::Winfo => CoreMsg::WatchInfo { ask, from, aor },
        };
        self.send_shard(owner, ask_msg, out);
    }

    /// On the presentity's shard: decide, count the watcher's shard, and
    /// answer with the current document.
    pub(super) fn on_watch(&mut self, now: Instant, ask: u64, from: u16, aor: &[u8], watcher: &[u8], out: &mut Outbox) {
        let (action, version, doc) = self.decide_watch(now, ask, from, aor, watcher, out);
        let changed = self.changed_while_down(aor, version);
        self.send_shard(from, CoreMsg::WatchAnswer { ask, action, version, doc, changed }, out);
    }

    /// The presentity's side of a new watcher: the decision, the watcher
    /// counted for shard `from`, and the document it is shown.
    fn decide_watch(&mut self, now: Instant, ask: u64, from: u16, aor: &[u8], watcher: &[u8], out: &mut Outbox) -> (Action, u64, Option<Arc<[u8]>>) {
        let action = self.cfg.policy.decide(aor, watcher);
        let mut first = false;
        if action != Action::Block {
            let entry = || WatcherEntry { shard: from, ask, watcher: watcher.into(), action };
            first = self.presentity_watchers.add_watcher(aor, entry());
            self.tell_winfo(aor, || entry().state("subscribe"), out);
            if first {
                self.watched_changed(now, aor, true, out);
            }
        }
        // A blocked watcher gets 403 and no document: none is composed,
        // and none kept on its behalf (only the last watcher leaving
        // drops a kept document).
        let shown = match action {
            Action::Block => None,
            // Another node's presentity: its mirror's document.
            _ => self.mirrored_document(now, aor, first, out).unwrap_or_else(|| self.publications.document(aor)),
        };
        let (version, doc) = shown.map_or((0, None), |(v, d)| (v, Some(d)));
        (action, version, doc)
    }

    /// On the presentity's shard: a subscription on `from` is gone (a
    /// watcher, or a winfo subscriber).
    pub(super) fn on_unwatch(&mut self, now: Instant, aor: &[u8], from: u16, ask: u64, out: &mut Outbox) {
        let (removed, unwatched) = self.presentity_watchers.remove(aor, from, ask);
        if let Some(mut entry) = removed {
            entry.action = Action::Block;
            self.tell_winfo(aor, || entry.state("deactivated"), out);
        }
        if unwatched {
            self.drop_mirror(aor, out);
            if !self.remote.is_read(aor) {
                self.publications.unwatched(aor);
                self.watched_changed(now, aor, false, out);
            }
        }
    }

    /// On the presentity's shard: a winfo subscription starts; it gets the
    /// watcher list now and every change after.
    pub(super) fn on_watch_info(&mut self, ask: u64, from: u16, aor: &[u8], out: &mut Outbox) {
        let w = self.presentity_watchers.add_winfo(aor, from, ask);
        let watchers = w.watchers.iter().map(|e| e.state("subscribe")).collect();
        self.send_shard(from, CoreMsg::WatchInfoAnswer { ask, watchers }, out);
    }

    /// Sends a watcher change to every shard holding winfo subscriptions
    /// of `aor` (once per shard). The change is made only if there is one:
    /// most presentities have none, and it is a formatted id and a copy
    /// of the watcher's identity.
    fn tell_winfo(&mut self, aor: &[u8], change: impl FnOnce() -> WatcherState, out: &mut Outbox) {
        let Some(w) = self.presentity_watchers.get(aor).filter(|w| !w.winfo.is_empty()) else { return };
        let change = change();
        let mut shards: Vec<u16> = w.winfo.iter().map(|(s, _)| *s).collect();
        shards.sort_unstable();
        shards.dedup();
        for s in shards {
            self.send_shard(s, CoreMsg::WatcherChange { aor: aor.into(), change: change.clone() }, out);
        }
    }

    /// On the winfo subscriber's shard: the watcher list for a pending
    /// SUBSCRIBE to `presence.winfo`.
    pub(super) fn on_watch_info_answer(&mut self, now: Instant, ask: u64, watchers: Vec<WatcherState>, out: &mut Outbox) {
        if let Some(id) = self.take_rewatch(ask) {
            return self.on_rewinfo(now, id, watchers, out);
        }
        self.accept_pending(now, ask, Shown::Real, None, watchers, out);
    }

    /// On a winfo subscriber's shard: a watcher changed.
    pub(super) fn on_watcher_change(&mut self, now: Instant, aor: &[u8], change: &WatcherState, out: &mut Outbox) {
        let mut ready = Vec::new();
        self.subscriptions.on_watcher_change(now, aor, change, &mut ready);
        self.notify_ready(now, ready, out);
    }

    /// A new authorization policy (a reloaded configuration): applied to
    /// the presentities owned here, each changed decision sent to the
    /// watcher's shard.
    pub fn set_policy(&mut self, now: Instant, policy: crate::presence::authz::Policy, out: &mut Outbox) {
        self.cfg.policy = policy;
        let mut changes = Vec::new();
        for w in self.presentity_watchers.iter_mut() {
            let aor = &w.aor;
            for e in w.watchers.iter_mut() {
                let action = self.cfg.policy.decide(aor, &e.watcher);
                if action != e.action {
                    e.action = action;
                    let event = match action {
                        Action::Block => "rejected",
                        Action::Confirm => "subscribe",
                        _ => "approved",
                    };
                    changes.push((aor.clone(), e.shard, e.ask, action, e.state(event)));
                }
            }
        }
        for (aor, shard, ask, action, state) in changes {
            self.send_shard(shard, CoreMsg::Authorize { ask, action }, out);
            self.tell_winfo(&aor, || state, out);
        }
        self.drain_local(now, out);
    }

    /// On the watcher's shard: the decision for an existing subscription
    /// changed.
    pub(super) fn on_authorize(&mut self, now: Instant, ask: u64, action: Action, out: &mut Outbox) {
        let Some(id) = self.subscriptions.by_ask(ask) else { return };
        let shown = match action {
            Action::Block => return self.send_notify(now, id, Some(End::Rejected), out),
            Action::Allow => Shown::Real,
            Action::PoliteBlock => Shown::Neutral,
            Action::Confirm => Shown::Pending,
        };
        self.subscriptions.set_shown(id, shown);
        if let Some(s) = self.subscriptions.get(id) {
            let state = if shown == Shown::Pending { "pending" } else { "active" };
            out.event(|| Event::Watcher { aor: lossy(s.aor()), state });
        }
        let mut ready = Vec::new();
        self.subscriptions.poke(now, id, &mut ready);
        self.notify_ready(now, ready, out);
    }

    /// On the presentity's shard: a new document goes once to every shard
    /// holding watchers of it, and once to every other node reading it
    /// (`remote.rs`), as one shared copy. A document of a partition
    /// another node serves is not shown: that node's is.
    pub(super) fn fan_out(&mut self, aor: &[u8], version: u64, doc: &Arc<[u8]>, out: &mut Outbox) {
        if self.served_elsewhere(aor) {
            return;
        }
        self.send_to_readers(aor, version, doc, out);
        self.fan_out_here(aor, version, doc, out);
    }

    /// The fan-out to this node's shards.
    pub(super) fn fan_out_here(&mut self, aor: &[u8], version: u64, doc: &Arc<[u8]>, out: &mut Outbox) {
        let Some(w) = self.presentity_watchers.get(aor) else { return };
        let shards: Vec<u16> = w.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(s, _)| s as u16).collect();
        for s in shards {
            self.send_shard(s, CoreMsg::Document { aor: aor.into(), version, doc: doc.clone() }, out);
        }
    }

    /// On the watcher's shard: the decision for a pending SUBSCRIBE.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_watch_answer(&mut self, now: Instant, ask: u64, action: Action, version: u64, doc: Option<Arc<[u8]>>, changed: bool, out: &mut Outbox) {
        if let Some(id) = self.take_rewatch(ask) {
            return self.on_rewatched(now, id, action, doc.map(|d| (version, d)), changed, out);
        }
        self.resume_pending(now, ask, |s, msg, reply, asked| s.answer_watch(msg, reply, asked, action, doc.map(|d| (version, d)), out));
    }

    /// Takes pending ask `ask` back and hands its SUBSCRIBE, parsed again,
    /// to `then`.
    fn resume_pending(&mut self, now: Instant, ask: u64, then: impl FnOnce(&mut Shard, &Message<'_>, Reply, Asked<'_>)) {
        let Some(p) = self.pending_watch.remove(&ask) else { return };
        let Ok(msg) = Message::parse(&p.bytes, &self.cfg.limits) else { return };
        let Some(uri) = msg.request_uri() else { return };
        let aor = uri.aor();
        let watcher = self.requester(&msg, p.peer);
        let reply = Reply { now, peer: p.peer, txn: p.txn, received_on: p.received_on };
        then(self, &msg, reply, Asked { ask, package: p.package, expires: p.expires, aor: &aor, watcher: &watcher });
    }

    /// Answers a new SUBSCRIBE by its presentity's decision: 403, or the
    /// dialog, its 200 and the first NOTIFY.
    fn answer_watch(&mut self, msg: &Message<'_>, reply: Reply, asked: Asked<'_>, action: Action, doc: Option<VersionedDoc>, out: &mut Outbox) {
        let shown = match action {
            Action::Block => return self.respond(msg, reply, 403, "Forbidden", &[], out),
            Action::Allow => Shown::Real,
            Action::PoliteBlock => Shown::Neutral,
            Action::Confirm => Shown::Pending,
        };
        self.accept(msg, reply, asked, (shown, doc), Vec::new(), out);
    }

    /// Accepts a pending SUBSCRIBE: the dialog, the 200, the first NOTIFY.
    fn accept_pending(&mut self, now: Instant, ask: u64, shown: Shown, doc: Option<VersionedDoc>, watchers: Vec<WatcherState>, out: &mut Outbox) {
        self.resume_pending(now, ask, |s, msg, reply, asked| s.accept(msg, reply, asked, (shown, doc), watchers, out));
    }

    /// Accepts a new SUBSCRIBE: the dialog, the 200, the first NOTIFY.
    fn accept(
        &mut self,
        msg: &Message<'_>,
        reply: Reply,
        asked: Asked<'_>,
        (shown, doc): (Shown, Option<VersionedDoc>),
        watchers: Vec<WatcherState>,
        out: &mut Outbox,
    ) {
        let Asked { ask, package, expires, aor, watcher } = asked;
        let now = reply.now;
        let route_by_contact = self.is_trusted(reply.peer);
        let partition = self.dialog_partition(now);
        let new = NewSub { aor, ask, package, shown, expires, doc, watchers, route_by_contact, watcher, partition };
        let (id, tag) = self.subscriptions.create(now, msg, reply.peer, new);
        let mut exp = itoa::Buffer::new();
        let contact = self.subscriptions.contact();
        let mut headers = vec![(HeaderName::Expires, exp.format(expires).as_bytes()), (HeaderName::Contact, &contact[..])];
        // RFC 3261 12.1.1: the dialog's 200 carries the request's
        // Record-Route, so that the watcher's in-dialog requests take the
        // same proxies (a cluster's front) as the NOTIFYs.
        headers.extend(msg.header_values(HeaderName::RecordRoute).map(|v| (HeaderName::RecordRoute, v)));
        // RFC 6665: 200, never 202.
        self.respond_tagged(msg, reply, 200, "OK", &headers, &tag, out);
        let state = if shown == Shown::Pending { "pending" } else { "active" };
        out.event(|| Event::Watcher { aor: lossy(aor), state });
        // The first NOTIFY at once; a fetch (Expires 0) ends with it.
        let end = (expires == 0).then_some(End::Timeout);
        self.send_notify(now, id, end, out);
    }

    /// On the watcher's shard: a new version of a watched document.
    pub(super) fn on_document(&mut self, now: Instant, aor: &[u8], version: u64, doc: &Arc<[u8]>, out: &mut Outbox) {
        let mut ready = Vec::new();
        self.subscriptions.on_document(now, aor, version, doc, &mut ready);
        self.notify_ready(now, ready, out);
    }

    /// Sends the ready subscriptions their NOTIFY while the shard's window
    /// allows; the rest wait for answers to free it.
    pub(super) fn notify_ready(&mut self, now: Instant, ready: Vec<u64>, out: &mut Outbox) {
        for id in ready {
            if self.notifies_in_flight < self.cfg.watch.window {
                self.send_notify(now, id, None, out);
            } else if self.subscriptions.queue_for_window(id) {
                self.deferred_notifies.push_back(id);
            }
        }
    }

    /// An answer (or a timeout) freed a place in the window.
    fn open_window(&mut self, now: Instant, out: &mut Outbox) {
        self.notifies_in_flight = self.notifies_in_flight.saturating_sub(1);
        while self.notifies_in_flight < self.cfg.watch.window {
            let Some(id) = self.deferred_notifies.pop_front() else { break };
            if self.subscriptions.leave_window_queue(id) {
                self.send_notify(now, id, None, out);
            }
        }
    }

    /// Sends subscription `id` its NOTIFY in a client transaction; a final
    /// one (`end`) also removes the subscription.
    pub(super) fn send_notify(&mut self, now: Instant, id: u64, end: Option<End>, out: &mut Outbox) {
        if self.subscriptions.get(id).is_none() || !self.speaks_for(id) {
            return;
        }
        let mut branch = Vec::with_capacity(32);
        let seq = self.client.new_branch(&mut branch);
        // write_notify reserves what the NOTIFY's own part needs.
        let mut bytes = Vec::new();
        let Some((to, shared)) = self.subscriptions.write_notify(now, id, &branch, end, neutral, &mut bytes) else { return };
        let notify = Transmit { to, bytes, shared };
        if to.transport == crate::core::peer::Transport::Udp && notify.len() > UDP_PATH_MTU {
            // RFC 3261 18.1.1 would move it to TCP, but the server opens no
            // connections: a watcher reached over UDP gets it over UDP
            // (fragmented). Counted; logged once per shard.
            if self.stats.oversize_udp_notifies == 0 {
                let size = notify.len();
                out.events.push(Event::OversizeNotify { size });
            }
            self.stats.oversize_udp_notifies += 1;
        }
        let t = self.client.start(seq, notify, b"NOTIFY", ClientCtx::Notify(id), now);
        self.notifies_in_flight += 1;
        out.transmits.push(t);
        if end.is_some() {
            self.end_subscription(id, out);
        }
    }

    pub(super) fn end_subscription(&mut self, id: u64, out: &mut Outbox) {
        if let Some((aor, ask)) = self.subscriptions.remove(id) {
            self.unwatch(aor, ask, out);
        }
    }

    fn unwatch(&mut self, aor: Box<[u8]>, ask: u64, out: &mut Outbox) {
        out.event(|| Event::Watcher { aor: lossy(&aor), state: "terminated" });
        let owner = ids::owner_of(&aor, self.cfg.shards);
        self.send_shard(owner, CoreMsg::Unwatch { aor, from: self.cfg.shard, ask }, out);
    }

    /// The outcome of a NOTIFY: `None` is a timeout.
    pub(super) fn on_notify_result(&mut self, now: Instant, id: u64, status: Option<u16>, out: &mut Outbox) {
        self.open_window(now, out);
        let mut ready = Vec::new();
        if let Err((aor, ask)) = self.subscriptions.on_notify_result(now, id, status, &mut ready) {
            self.unwatch(aor, ask, out);
        }
        self.notify_ready(now, ready, out);
    }

    /// A SUBSCRIBE whose presentity shard has not answered within 64*T1
    /// (asks are never dropped, but a shard can be that far behind) is
    /// answered 500, so that neither the watcher nor the transaction waits
    /// for ever, and its ask is taken back.
    fn expire_pending(&mut self, now: Instant, out: &mut Outbox) {
        let limit = 64 * self.cfg.timers.t1;
        let stale: Vec<u64> = self.pending_watch.iter().filter(|(_, p)| now.duration_since(p.since) >= limit).map(|(a, _)| *a).collect();
        for ask in stale {
            let Some(p) = self.pending_watch.remove(&ask) else { continue };
            let Ok(msg) = Message::parse(&p.bytes, &self.cfg.limits) else { continue };
            let reply = Reply { now, peer: p.peer, txn: p.txn, received_on: p.received_on };
            self.respond(&msg, reply, 500, "Server Internal Error: presentity not reachable", &[(HeaderName::RetryAfter, b"5")], out);
            // The ask may still reach the presentity's shard, which would
            // then count a watcher nobody holds: take it back. The unwatch
            // follows the ask on the same FIFO queue, so it is applied
            // after it (or finds nothing, which is harmless).
            if let Some(uri) = msg.request_uri() {
                self.unwatch(uri.aor().into(), ask, out);
            }
        }
    }

    /// Expired subscriptions end with a timeout NOTIFY; rate-limited ones
    /// whose interval passed get theirs.
    pub(super) fn watchers_on_time(&mut self, now: Instant, out: &mut Outbox) {
        if !self.pending_watch.is_empty() {
            self.expire_pending(now, out);
        }
        let (mut expired, mut ready) = (Vec::new(), Vec::new());
        self.subscriptions.on_time(now, &mut expired, &mut ready);
        for id in expired {
            self.send_notify(now, id, Some(End::Timeout), out);
        }
        self.notify_ready(now, ready, out);
    }
}

/// NOTIFYs larger than this over UDP may be fragmented on the path
/// (RFC 3261 18.1.1: 200 bytes below a 1500-byte MTU).
const UDP_PATH_MTU: usize = 1300;

/// The document a watcher sees when there is nothing to show (or it is
/// politely blocked): one closed tuple.
pub(super) fn neutral(aor: &[u8]) -> Arc<[u8]> {
    pidf::compose(&String::from_utf8_lossy(aor), &[], &[]).into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ShardConfig;
    use std::time::Duration;

    #[test]
    fn a_subscribe_whose_ask_is_lost_gets_500() {
        let t0 = Instant::now();
        let cfg = ShardConfig::with_defaults(0, 2, "127.0.0.1:5060".parse().unwrap());
        let timers = cfg.timers;
        let mut shard = Shard::new(cfg, t0);
        // A presentity owned by shard 1: the ask leaves in `to_shards` and,
        // in this test, is never delivered.
        let aor = (0..).map(|i| format!("sip:u{i}@example.com")).find(|a| ids::owner_of(a.as_bytes(), 2) == 1).unwrap();
        let sub = format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlost\r\nMax-Forwards: 70\r\n\
From: <sip:w@example.net>;tag=w\r\nTo: <{aor}>\r\nCall-ID: lost\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@192.0.2.1>\r\n\
Event: presence\r\nContent-Length: 0\r\n\r\n"
        );
        let mut out = Outbox::default();
        shard.on_message(t0, Peer::udp("192.0.2.1:5060".parse().unwrap()), sub.as_bytes(), &mut out);
        assert!(out.transmits.is_empty(), "no answer before the presentity shard decides");
        assert!(matches!(out.to_shards.as_slice(), [(1, CoreMsg::Watch { .. })]));
        shard.on_time(t0 + 64 * timers.t1 - Duration::from_millis(100), &mut out);
        assert!(out.transmits.is_empty());
        shard.on_time(t0 + 64 * timers.t1, &mut out);
        assert_eq!(out.transmits.len(), 1);
        assert!(out.transmits[0].bytes.starts_with(b"SIP/2.0 500 "));
        // The ask is taken back, after it on the same queue, so that the
        // presentity's shard never counts a watcher nobody holds.
        assert!(
            matches!(out.to_shards.as_slice(), [(1, CoreMsg::Watch { ask: a, .. }), (1, CoreMsg::Unwatch { ask: b, from: 0, .. })] if a == b),
            "{:?}",
            out.to_shards
        );
    }

    /// A new SUBSCRIBE gets the same answer whether its presentity is its
    /// own shard's (decided at once, with the request still parsed) or
    /// another's (decided there, the request parsed again when the answer
    /// comes back), for every authorization action.
    #[test]
    fn local_and_remote_presentities_answer_a_subscribe_alike() {
        use crate::presence::authz::{Policy, Rule};
        let answer = |action: Action, local: bool| -> (Vec<u8>, Option<Vec<u8>>) {
            let t0 = Instant::now();
            let aor = (0..).map(|i| format!("sip:u{i}@example.com")).find(|a| ids::owner_of(a.as_bytes(), 2) == u16::from(!local)).unwrap();
            let mut shards: Vec<Shard> = (0..2)
                .map(|i| {
                    let mut cfg = ShardConfig::with_defaults(i, 2, "127.0.0.1:5060".parse().unwrap());
                    cfg.policy = Policy { rules: vec![Rule { presentity: aor.clone(), watcher: "*".into(), action }], default: Action::Allow };
                    Shard::new(cfg, t0)
                })
                .collect();
            let sub = format!(
                "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsame\r\nMax-Forwards: 70\r\n\
From: <sip:w@example.net>;tag=w\r\nTo: <{aor}>\r\nCall-ID: same\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@192.0.2.1>\r\n\
Event: presence\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
            );
            let mut out = Outbox::default();
            shards[0].on_message(t0, Peer::udp("192.0.2.1:5060".parse().unwrap()), sub.as_bytes(), &mut out);
            assert_eq!(out.to_shards.is_empty(), local, "only a remote presentity is asked over the queues");
            while let Some((to, msg)) = out.to_shards.pop() {
                let mut next = Outbox::default();
                shards[to as usize].on_shard_msg(t0, msg, &mut next);
                out.transmits.append(&mut next.transmits);
                out.to_shards.append(&mut next.to_shards);
            }
            let response = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0")).expect("answered").bytes.clone();
            let notify = out.transmits.iter().find(|t| t.bytes.starts_with(b"NOTIFY")).map(|t| t.wire().into_owned());
            (response, notify)
        };
        // The parts that do not name the shard or a random tag.
        let status = |r: &[u8]| String::from_utf8_lossy(&r[..r.iter().position(|b| *b == b'\r').unwrap()]).into_owned();
        let state = |n: &Option<Vec<u8>>| {
            n.as_ref().map(|n| {
                let text = String::from_utf8_lossy(n).into_owned();
                let st = text.lines().find(|l| l.starts_with("Subscription-State:")).unwrap_or_default().split(';').next().unwrap().to_string();
                (st, text.contains("<basic>closed</basic>"), text.contains("Content-Length: 0"))
            })
        };
        for action in [Action::Allow, Action::Block, Action::Confirm, Action::PoliteBlock] {
            let (local, remote) = (answer(action, true), answer(action, false));
            assert_eq!(status(&local.0), status(&remote.0), "{action:?}");
            assert_eq!(state(&local.1), state(&remote.1), "{action:?}");
            let expected = if action == Action::Block { "SIP/2.0 403 Forbidden" } else { "SIP/2.0 200 OK" };
            assert_eq!(status(&local.0), expected, "{action:?}");
            assert_eq!(local.1.is_some(), action != Action::Block, "{action:?}: a NOTIFY unless blocked");
            if let Some((st, _, _)) = state(&local.1) {
                let want = if action == Action::Confirm { "Subscription-State: pending" } else { "Subscription-State: active" };
                assert_eq!(st, want, "{action:?}");
            }
        }
    }
}
