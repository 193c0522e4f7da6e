//! The shard's durable state: after every change it acknowledges, the
//! whole state of the changed key goes to its journal (`storage::record`);
//! at a restart the records are put back.
//!
//! Recorded: registrations, PUBLISHed publications and watchers'
//! presence subscriptions. Expiries are not recorded: a record carries
//! absolute times, and what expired while the server was down is left out
//! when it is put back.
//!
//! A restored subscription asks its presentity's shard again, as a new
//! SUBSCRIBE does, which counts it there and answers with the document;
//! the watcher gets a NOTIFY only if that changed while the server was
//! down (something expired in between) or the policy now shows it
//! something else.

use super::Shard;
use super::outbox::Outbox;
use crate::cluster::partition::Partition;
use crate::core::limits::Limit;
use crate::presence::authz::Action;
use crate::presence::pidf::Element;
use crate::presence::publication::Restored;
use crate::presence::watchers::{End, Package, Shown};
use crate::registrar::Binding;
use crate::storage::journal::Journal;
use crate::storage::record::SubscriptionState;
use crate::storage::record::{BindingState, ElementState, PublicationState, Record};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Maps the shard's monotonic clock to Unix time, the time of records.
#[derive(Clone, Copy, Debug)]
pub struct UnixClock {
    at: Instant,
    unix_ms: u64,
}

impl UnixClock {
    /// `at` is `unix_ms` milliseconds after the Unix epoch.
    pub fn new(at: Instant, unix_ms: u64) -> Self {
        UnixClock { at, unix_ms }
    }

    /// The system clock's reading now.
    pub fn system(now: Instant) -> Self {
        let unix_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        UnixClock { at: now, unix_ms }
    }

    pub fn to_unix_ms(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.at) {
            Some(after) => self.unix_ms.saturating_add(after.as_millis() as u64),
            None => self.unix_ms.saturating_sub(self.at.duration_since(t).as_millis() as u64),
        }
    }

    /// A time that is already past maps to `self.at` minus the
    /// difference, or to `self.at` if the `Instant` cannot go that far back.
    pub fn to_instant(&self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            self.at + Duration::from_millis(unix_ms - self.unix_ms)
        } else {
            self.at.checked_sub(Duration::from_millis(self.unix_ms - unix_ms)).unwrap_or(self.at)
        }
    }
}

/// The shard's journal and its clock, and the state of a restart.
pub struct Durable {
    pub journal: Journal,
    pub clock: UnixClock,
    /// Restored subscriptions that are to ask their presentities, by id,
    /// a slice per tick once every record is back (last first: the list
    /// is reversed when the sending starts). What they ask is read from
    /// the subscription when its turn comes, not copied here.
    asks: Vec<(u64, Package)>,
    /// Presentities whose document lost something that expired while the
    /// server was down, until the restored watchers have asked.
    changed_while_down: HashSet<Box<[u8]>>,
    /// While restored subscriptions may still ask (from any shard): how
    /// many shards have not yet said that all theirs have asked.
    /// `changed_while_down` and the removals log are dropped at zero.
    asking_shards: Option<u16>,
    /// The document version when the restored watchers' asks went out: a
    /// presentity above it changed since, before some of them arrived.
    window_version: u64,
    /// A checkpoint being written, a few keys per tick.
    checkpoint: Option<Checkpoint>,
}

/// A key of the shard's durable state.
pub(super) enum Key {
    Registration(Box<[u8]>),
    Publications(Box<[u8]>),
    Subscription(u64),
}

/// Recording every key's state into the journal's current segment, a
/// slice per tick so that no step stalls for the whole table. Keys that
/// change meanwhile record themselves as well, later in the same segment,
/// so the segment ends up holding every key's latest state either way.
struct Checkpoint {
    /// Those not yet recorded.
    keys: Vec<Key>,
    /// The journal position after its last record, once all are written.
    end: Option<u64>,
}

/// Keys a checkpoint records per timer tick (each about a microsecond).
pub const CHECKPOINT_KEYS_PER_TICK: usize = 500;

/// Restored subscriptions that ask their presentities per timer tick (the
/// default of `[storage] restart_asks_per_tick`). An ask costs about
/// 2.5 µs between the two shards (`bench/e2e/durability.sh`), so a tick's
/// slice holds each shard for about a millisecond; a shard of 500,000
/// restored subscriptions has asked for all of them about 6 s after its
/// first answer (2.5 million: 33–35 s). Before, a start answered nothing
/// until every ask had been made. At 1,000 per tick, PUBLISH p99 during
/// the asks was 21 ms against 1.4 ms after them; at 250, 4.2 ms (and the
/// asks took twice as long).
pub const REWATCH_ASKS_PER_TICK: usize = 500;

/// A record that cannot be put back into this build's tables.
#[derive(Debug, PartialEq, Eq)]
pub struct Unrestorable(pub &'static str);

fn element_kind(kind: &[u8]) -> Result<&'static str, Unrestorable> {
    ["tuple", "person", "device", "other"].into_iter().find(|k| k.as_bytes() == kind).ok_or(Unrestorable("an element of an unknown kind"))
}

fn text(bytes: &[u8]) -> Result<Box<str>, Unrestorable> {
    std::str::from_utf8(bytes).map(Into::into).map_err(|_| Unrestorable("an element that is not UTF-8"))
}

impl Shard {
    /// Starts recording changes in `journal` (a server with a data
    /// directory); records written from now on carry `clock`'s times.
    pub fn attach_journal(&mut self, journal: Journal, clock: UnixClock) {
        self.subscriptions.track_durable();
        self.durable =
            Some(Durable { journal, clock, asks: Vec::new(), changed_while_down: HashSet::new(), asking_shards: None, window_version: 0, checkpoint: None });
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.durable.as_ref().map(|d| &d.journal)
    }

    pub fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.durable.as_mut().map(|d| &mut d.journal)
    }

    /// A change could not be made durable now: the journal is behind its
    /// device or the device fails, or too many records wait for the
    /// partition logs.
    pub(super) fn journal_refuses(&self) -> Option<Limit> {
        self.durable.as_ref().filter(|d| d.journal.is_backlogged()).map(|_| Limit::Journal).or_else(|| self.replica_refuses())
    }

    /// The clock of records, if the shard keeps any.
    fn records_clock(&self) -> Option<UnixClock> {
        self.durable.as_ref().map(|d| d.clock).or_else(|| self.replica.as_ref().map(|r| r.clock))
    }

    /// Records the registration of `aor` as it now stands, in the journal
    /// and in its partition's log.
    pub(super) fn record_registration(&mut self, now: Instant, aor: &[u8]) {
        self.write_registration(now, aor, Sinks::Both);
    }

    /// Records the PUBLISHed publications of `aor` as they now stand, in
    /// the journal and in its partition's log.
    pub(super) fn record_publications(&mut self, now: Instant, aor: &[u8]) {
        self.write_publications(now, aor, Sinks::Both);
    }

    /// A checkpoint of the journal is the journal's alone, and one of the
    /// partition logs the logs' alone.
    pub(super) fn write_registration(&mut self, now: Instant, aor: &[u8], to: Sinks) {
        let Some(clock) = self.records_clock() else { return };
        let reg = self.registrar.registration(aor);
        let bindings = reg
            .map(|r| {
                r.bindings
                    .iter()
                    .map(|b| BindingState {
                        uri: &b.uri,
                        params: &b.params,
                        call_id: &b.call_id,
                        cseq: b.cseq,
                        expires_unix_ms: clock.to_unix_ms(b.expires_at),
                        flow: b.flow,
                        pua: b.pua,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = Record::Registration { aor, registered_by: reg.and_then(|r| r.registered_by), bindings };
        let log = self.presentity_log(aor);
        write(self.durable.as_mut().filter(|_| to != Sinks::Log), self.replica.as_mut().filter(|_| to != Sinks::Journal).zip(log), now, &record);
    }

    pub(super) fn write_publications(&mut self, now: Instant, aor: &[u8], to: Sinks) {
        let Some(clock) = self.records_clock() else { return };
        let publications = self
            .publications
            .published(aor)
            .map(|(etag, at, elements)| PublicationState {
                etag,
                expires_unix_ms: clock.to_unix_ms(at),
                elements: elements
                    .iter()
                    .map(|e| ElementState { kind: e.kind.as_bytes(), id: e.id.as_deref().map(str::as_bytes), xml: e.xml.as_bytes() })
                    .collect(),
            })
            .collect();
        let record = Record::Publications { aor, publications };
        let log = self.presentity_log(aor);
        write(self.durable.as_mut().filter(|_| to != Sinks::Log), self.replica.as_mut().filter(|_| to != Sinks::Journal).zip(log), now, &record);
    }

    /// Sizes the tables for what a restart's records hold (upper bounds:
    /// a key may have several records), so that they do not grow and move
    /// record by record.
    pub fn reserve_for_restore(&mut self, c: crate::storage::replay::Counts) {
        let room = self.room();
        self.reserve(super::Expected {
            presentities: c.presentities.saturating_sub(room.presentities),
            subscriptions: c.subscriptions.saturating_sub(room.subscriptions),
        });
        if let Some(d) = &mut self.durable {
            d.asks.reserve(c.subscriptions);
        }
    }

    /// Every record is back: restored subscriptions start asking their
    /// presentities (a slice per tick, [`Shard::rewatch_step`], so that
    /// the shard serves traffic meanwhile), and a checkpoint of every key
    /// starts the new generation of journals (the older ones are no
    /// longer needed once it is durable, see [`Shard::checkpoint_end`]).
    pub fn restore_done(&mut self, now: Instant, out: &mut Outbox) {
        let Some(d) = self.durable.as_mut() else { return };
        // Watchers before winfo subscribers: a winfo subscriber's full
        // state then lists the restored watchers whose asks reach the
        // presentity's shard first (the others follow as partial state).
        // Reversed, to be sent from the end.
        d.asks.sort_by_key(|(_, package)| *package == Package::Winfo);
        d.asks.reverse();
        d.asking_shards = Some(self.cfg.shards);
        d.window_version = self.publications.last_version();
        self.publications.log_removals(true);
        if d.asks.is_empty() {
            self.announce_rewatch_done(out);
            self.drain_local(now, out);
        } else {
            self.rewatch_step(now, self.cfg.restart_asks_per_tick, out);
        }
        self.subscriptions.take_marks();
        self.resubscribe_reg_events(now, out);
        self.start_checkpoint();
    }

    /// Sends the next `budget` asks of restored subscriptions, leaving out
    /// those that ended before their turn (their end already told the
    /// presentity's shard, which knew nothing of them).
    pub(super) fn rewatch_step(&mut self, now: Instant, budget: usize, out: &mut Outbox) {
        let Some(d) = self.durable.as_mut() else { return };
        if d.asks.is_empty() {
            return;
        }
        let slice = d.asks.split_off(d.asks.len().saturating_sub(budget));
        let last = d.asks.is_empty();
        if last {
            d.asks = Vec::new();
        }
        for (id, _) in slice.into_iter().rev() {
            // One that ended before its turn told its presentity's shard,
            // which knew nothing of it: it asks nothing.
            self.ask_restored(id, out);
        }
        if last {
            self.announce_rewatch_done(out);
        }
        self.drain_local(now, out);
    }

    /// Tells every shard that this one's restored subscriptions have all
    /// asked: behind the asks in each shard's queue, so that once a shard
    /// has heard it from all, no restored ask is still on its way to it.
    fn announce_rewatch_done(&mut self, out: &mut Outbox) {
        tracing::info!(shard = self.cfg.shard, "every restored subscription has asked its presentity");
        for shard in 0..self.cfg.shards {
            self.send_shard(shard, crate::shard::CoreMsg::RewatchDone, out);
        }
    }

    /// Another shard's (or this one's) restored subscriptions have all
    /// asked; after the last, nothing is kept for asks any more.
    pub(super) fn on_rewatch_done(&mut self) {
        let Some(d) = &mut self.durable else { return };
        let Some(n) = d.asking_shards.as_mut() else { return };
        *n -= 1;
        if *n == 0 {
            d.asking_shards = None;
            d.changed_while_down = HashSet::new();
            self.publications.log_removals(false);
        }
    }

    /// Restored subscriptions that have not asked their presentity yet.
    pub fn rewatch_pending(&self) -> usize {
        self.durable.as_ref().map_or(0, |d| d.asks.len())
    }

    /// The server's reg-event subscriptions are not journaled (their
    /// dialogs died with the process, and the S-CSCF ends them at its next
    /// NOTIFY's 481): a new one goes to the S-CSCF of every restored
    /// third-party registration, as after its REGISTER.
    fn resubscribe_reg_events(&mut self, now: Instant, out: &mut Outbox) {
        if !self.cfg.reg_event_subscribe {
            return;
        }
        for aor in self.registrar.aors() {
            let scscf = self.registrar.registration(&aor).and_then(|r| r.registered_by);
            if let Some(scscf) = scscf
                && !self.reg_sub.is_subscribed(&aor)
            {
                self.start_reg_subscription(now, &aor, &aor, crate::core::Peer::udp(scscf), out);
            }
        }
    }

    /// Starts recording every key's state into the journal's current
    /// segment (after a start, or after the journal moved to a new
    /// segment so that the older ones can go).
    pub fn start_checkpoint(&mut self) {
        if self.durable.is_none() {
            return;
        }
        let mut keys: Vec<Key> = self.registrar.aors().into_iter().map(Key::Registration).collect();
        keys.extend(self.publications.published_aors().into_iter().map(Key::Publications));
        keys.extend(self.subscriptions.ids().into_iter().map(Key::Subscription));
        if let Some(d) = &mut self.durable {
            d.checkpoint = Some(Checkpoint { keys, end: None });
        }
    }

    /// Records the checkpoint's next `budget` keys.
    pub(super) fn checkpoint_step(&mut self, now: Instant, budget: usize) {
        let Some(d) = self.durable.as_mut() else { return };
        let Some(Checkpoint { keys, end: None }) = d.checkpoint.as_mut() else { return };
        if !d.journal.has_room_for_background() {
            // The device is behind: traffic's records first.
            return;
        }
        let slice = keys.split_off(keys.len().saturating_sub(budget));
        let done = keys.is_empty();
        for key in slice {
            match key {
                Key::Registration(aor) => self.write_registration(now, &aor, Sinks::Journal),
                Key::Publications(aor) => self.write_publications(now, &aor, Sinks::Journal),
                Key::Subscription(id) => self.write_subscription(now, id, Sinks::Journal),
            }
        }
        if done && let Some(d) = &mut self.durable {
            let end = d.journal.appended();
            if let Some(c) = &mut d.checkpoint {
                c.end = Some(end);
            }
        }
    }

    /// The journal position after the checkpoint's last record, once it
    /// is all written (in memory; durable once the journal says so).
    pub fn checkpoint_end(&self) -> Option<u64> {
        self.durable.as_ref()?.checkpoint.as_ref()?.end
    }

    /// Whether a checkpoint is being written.
    pub fn checkpointing(&self) -> bool {
        self.durable.as_ref().is_some_and(|d| d.checkpoint.is_some())
    }

    /// The reactor is done with the finished checkpoint.
    pub fn clear_checkpoint(&mut self) {
        if let Some(d) = &mut self.durable {
            d.checkpoint = None;
        }
    }

    /// Records the subscriptions that changed or ended in this step, in
    /// the journal and in their partition's log (nothing is marked without
    /// a journal or a replica).
    pub(super) fn record_subscriptions(&mut self, now: Instant) {
        if !self.subscriptions.has_marks() {
            return;
        }
        let (changed, ended) = self.subscriptions.take_marks();
        for id in changed {
            self.write_subscription(now, id, Sinks::Both);
        }
        for (call_id, local_tag) in ended {
            let record = Record::SubscriptionEnded { call_id: &call_id, local_tag: &local_tag };
            let log = self.dialog_log(&local_tag);
            write(self.durable.as_mut(), self.replica.as_mut().zip(log), now, &record);
        }
    }

    pub(super) fn write_subscription(&mut self, now: Instant, id: u64, to: Sinks) {
        let Some(clock) = self.records_clock() else { return };
        let log = self.subscriptions.dialog_of(id).and_then(|(_, tag)| self.dialog_log(tag));
        let Some(v) = self.subscriptions.durable_view(id) else { return };
        let record = Record::Subscription(SubscriptionState {
            aor: v.aor,
            watcher: v.watcher,
            call_id: v.call_id,
            local_tag: v.local_tag,
            local_uri: v.local_uri,
            remote_tag: v.remote_tag,
            remote_uri: v.remote_uri,
            remote_target: v.remote_target,
            event_id: v.event_id,
            route_set: v.route_set.iter().map(|r| &r[..]).collect(),
            package: v.package.code(),
            shown: v.shown.code(),
            to: v.to,
            remote_cseq: v.remote_cseq,
            local_cseq: v.local_cseq,
            expires_unix_ms: clock.to_unix_ms(v.expires_at),
        });
        write(self.durable.as_mut().filter(|_| to != Sinks::Log), self.replica.as_mut().filter(|_| to != Sinks::Journal).zip(log), now, &record);
    }

    /// On a presentity's shard: whether its document changed since its
    /// restored watchers last saw it: it lost something that expired
    /// while the server was down, or it changed after the start while a
    /// restored watcher's ask was still on its way (that watcher was not
    /// among those told).
    pub(super) fn changed_while_down(&self, aor: &[u8], version: u64) -> bool {
        let Some(d) = &self.durable else { return false };
        if d.asking_shards.is_none() {
            return false;
        }
        d.changed_while_down.contains(aor) || version > d.window_version || self.publications.was_removed(aor)
    }

    /// The restored subscription an answer to `ask` is for.
    pub(super) fn take_rewatch(&mut self, ask: u64) -> Option<u64> {
        if self.durable.is_none() && self.replica.is_none() {
            return None;
        }
        self.subscriptions.take_restored(ask)
    }

    /// A restored winfo subscription's presentity answered with its
    /// watchers: the subscriber gets them as full state.
    pub(super) fn on_rewinfo(&mut self, now: Instant, id: u64, watchers: Vec<crate::presence::winfo::WatcherState>, out: &mut Outbox) {
        self.was_taken_over(id);
        let mut ready = Vec::new();
        self.subscriptions.rewinfo(now, id, watchers, &mut ready);
        self.notify_ready(now, ready, out);
    }

    /// A restored subscription's presentity answered.
    pub(super) fn on_rewatched(&mut self, now: Instant, id: u64, action: Action, doc: Option<(u64, Arc<[u8]>)>, changed: bool, out: &mut Outbox) {
        let shown = match action {
            Action::Block => return self.send_notify(now, id, Some(End::Rejected), out),
            Action::Allow => Shown::Real,
            Action::PoliteBlock => Shown::Neutral,
            Action::Confirm => Shown::Pending,
        };
        // A dialog taken over from another node tells its watcher anew.
        let changed = self.was_taken_over(id) || changed;
        let mut ready = Vec::new();
        self.subscriptions.rewatched(now, id, shown, doc, changed, &mut ready);
        self.notify_ready(now, ready, out);
    }

    fn note_lost(&mut self, aor: &[u8], lost: bool) {
        if let (true, Some(d)) = (lost, &mut self.durable) {
            d.changed_while_down.insert(aor.into());
        }
    }

    /// Puts back one record read from a journal (a restart). `clock` maps
    /// its times; what expired before `now` is left out.
    pub fn restore(&mut self, now: Instant, clock: UnixClock, record: &Record<'_>, out: &mut Outbox) -> Result<(), Unrestorable> {
        match record {
            Record::Registration { aor, registered_by, bindings } => {
                let bindings: Vec<Binding> = bindings
                    .iter()
                    .map(|b| Binding {
                        uri: b.uri.into(),
                        params: b.params.into(),
                        call_id: b.call_id.into(),
                        cseq: b.cseq,
                        expires_at: clock.to_instant(b.expires_unix_ms),
                        flow: b.flow,
                        pua: b.pua,
                    })
                    .collect();
                let lost = bindings.iter().any(|b| b.expires_at <= now);
                self.registrar.restore(now, aor, *registered_by, bindings, &mut self.reg_changes);
                self.emit_reg_changes(now, out);
                self.note_lost(aor, lost);
            }
            Record::Publications { aor, publications } => {
                let mut pubs = Vec::with_capacity(publications.len());
                for p in publications {
                    let elements: Result<Box<[Element]>, Unrestorable> =
                        p.elements.iter().map(|e| Ok(Element { kind: element_kind(e.kind)?, id: e.id.map(text).transpose()?, xml: text(e.xml)? })).collect();
                    pubs.push(Restored { etag: p.etag.into(), expires_at: clock.to_instant(p.expires_unix_ms), elements: elements? });
                }
                let lost = pubs.iter().any(|p| p.expires_at <= now);
                self.publications.restore(now, aor, pubs, &mut self.doc_changes, &super::doc_readers(&self.presentity_watchers, &self.remote, out));
                self.emit_doc_changes(out);
                self.note_lost(aor, lost);
            }
            Record::Subscription(st) => {
                // Asked once every record is back (`restore_done`).
                if let (Some(live), Some(d)) = (self.restore_subscription(now, clock, st)?, &mut self.durable) {
                    d.asks.push(live);
                }
            }
            Record::SubscriptionEnded { call_id, local_tag } => self.subscriptions.restore_end(call_id, local_tag),
        }
        Ok(())
    }
}

/// Where a record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sinks {
    /// The journal and the partition's log, those the shard has.
    Both,
    Journal,
    Log,
}

/// Writes `record` to the journal and to the partition log given, encoding
/// it once.
fn write(durable: Option<&mut Durable>, replica: Option<(&mut super::replica::Replica, Partition)>, now: Instant, record: &Record<'_>) {
    match (durable, replica) {
        (Some(d), None) => {
            d.journal.append(now, |out| record.encode(out));
        }
        (durable, Some((r, partition))) => {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            if let Some(d) = durable {
                d.journal.append(now, |out| out.extend_from_slice(&bytes));
            }
            r.ship(partition, bytes.into());
        }
        (None, None) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_clock_maps_both_ways() {
        let t0 = Instant::now();
        let c = UnixClock::new(t0, 1_800_000_000_000);
        assert_eq!(c.to_unix_ms(t0 + Duration::from_secs(3600)), 1_800_003_600_000);
        assert_eq!(c.to_instant(1_800_003_600_000), t0 + Duration::from_secs(3600));
        // A restart an hour later: what expired in between is in its past.
        let later = UnixClock::new(t0, 1_800_003_600_000);
        assert!(later.to_instant(1_800_000_060_000) <= t0);
    }
}
