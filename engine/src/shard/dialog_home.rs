//! Subscriptions that outlive their node: in a cluster, each dialog lives
//! in a partition, as a presentity does, so that the node that takes the
//! partition over takes the dialog over with it.
//!
//! - **Home**: a new dialog's to-tag names a partition this node serves
//!   (`core::ids::push_dialog_tag`), picked at random among them, so the
//!   dialogs spread over the partitions as the presentities do.
//! - **Records**: its records go to that partition's log as well as to the
//!   journal (`durable.rs`); a dialog's CSeq reservation is in them.
//! - **Take-over**: the replay puts the dialog back as a restart does (an
//!   earlier copy of it is forgotten first). It asks its presentity's
//!   shard once this node serves the partition, not before: the answer
//!   brings a NOTIFY, whose CSeq reservation must reach the partition's
//!   log. That NOTIFY goes whatever the answer: what the dead node last
//!   sent is not known, and its Contact moves the watcher's refreshes to
//!   this node.
//! - **Routing**: an in-dialog request goes to the partition's owner by
//!   its tag (`hop.rs`).
//! - **Moves**: a node sends no NOTIFY for a dialog whose partition it
//!   does not serve, and once another node serves it, forgets the dialog
//!   without a word to its watcher: the other node has it from the log
//!   and speaks for it now.

use super::durable::{UnixClock, Unrestorable};
use super::outbox::Outbox;
use super::{CoreMsg, Shard};
use crate::cluster::partition::Partition;
use crate::core::ids::{owner_of, tag_partition};
use crate::presence::watchers::{Package, Restore, Shown};
use crate::storage::record::{Record, SubscriptionState};
use std::collections::HashSet;
use std::time::Instant;

impl Shard {
    /// In a cluster, the partition a new dialog lives in: one this node
    /// serves at `now`, from a random start (`None`: it serves none, or
    /// the shard's records go to no partition log, so that its dialogs
    /// could not move with a partition and stay where they are made).
    pub(super) fn dialog_partition(&mut self, now: Instant) -> Option<u16> {
        let view = self.cfg.cluster.clone().filter(|_| self.replica.is_some())?;
        let n = view.partitions();
        let start = self.entropy.below(n as u64) as u16;
        (0..n).map(|i| (start + i) % n).find(|&p| view.serves_at(Partition(p), now))
    }

    /// The partition dialog tag `tag` names, among the cluster's.
    pub(super) fn home_of(&self, tag: &[u8]) -> Option<Partition> {
        let view = self.cfg.cluster.as_ref()?;
        tag_partition(tag).filter(|&p| p < view.partitions()).map(Partition)
    }

    /// Puts back a subscription record a take-over read from a partition
    /// log, in place of what this shard held of the dialog.
    pub(super) fn put_back_dialog(&mut self, now: Instant, clock: UnixClock, record: &Record<'_>, out: &mut Outbox) -> Result<(), Unrestorable> {
        let (call_id, local_tag) = match record {
            Record::Subscription(st) => (st.call_id, st.local_tag),
            Record::SubscriptionEnded { call_id, local_tag } => (*call_id, *local_tag),
            _ => return Err(Unrestorable("not a subscription")),
        };
        if let Some(id) = self.subscriptions.by_dialog(call_id, local_tag) {
            self.forget_dialog(id, out);
        }
        let Record::Subscription(st) = record else { return Ok(()) };
        let home = self.home_of(st.local_tag);
        if let (Some((id, _)), Some(home)) = (self.restore_subscription(now, clock, st)?, home)
            && let Some(r) = &mut self.replica
        {
            r.taken_over.insert(id);
            r.awaiting_serve.push((id, home));
        }
        Ok(())
    }

    /// Dialogs put back by a take-over ask their presentity once this node
    /// serves their partition, not before: the answer brings a NOTIFY,
    /// whose record (the CSeq reservation) must go to the partition's log.
    pub(super) fn ask_for_served_dialogs(&mut self, out: &mut Outbox) {
        let Some(view) = self.cfg.cluster.clone() else { return };
        let Some(r) = &mut self.replica else { return };
        if r.awaiting_serve.is_empty() {
            return;
        }
        let mut awaiting = std::mem::take(&mut r.awaiting_serve);
        let mut ready = Vec::new();
        // Kept while the dialog waits: the view may still name the old
        // owner for a moment; one whose partition went to another node is
        // forgotten at the next sweep, and leaves then.
        awaiting.retain(|&(id, p)| {
            if self.subscriptions.restored_ask(id).is_none() {
                return false;
            }
            if view.serves(p) {
                ready.push(id);
                return false;
            }
            true
        });
        if let Some(r) = &mut self.replica {
            r.awaiting_serve = awaiting;
        }
        for id in ready {
            self.ask_restored(id, out);
        }
    }

    /// Puts back one subscription record; returns its id and package if it
    /// is still live (one that expired only ends: its timeout NOTIFY goes
    /// at the next tick).
    pub(super) fn restore_subscription(&mut self, now: Instant, clock: UnixClock, st: &SubscriptionState<'_>) -> Result<Option<(u64, Package)>, Unrestorable> {
        let (Some(package), Some(shown)) = (Package::from_code(st.package), Shown::from_code(st.shown)) else {
            return Err(Unrestorable("a subscription of an unknown package or state"));
        };
        self.next_ask += 1;
        let ask = self.next_ask;
        let r = Restore {
            texts: [st.aor, st.watcher, st.call_id, st.local_tag, st.local_uri, st.remote_tag, st.remote_uri, st.remote_target, st.event_id],
            route_set: st.route_set.clone(),
            package,
            shown,
            to: st.to,
            remote_cseq: st.remote_cseq,
            local_cseq: st.local_cseq,
            expires_at: clock.to_instant(st.expires_unix_ms),
        };
        let live = r.expires_at > now;
        let id = self.subscriptions.restore(now, r, ask).map_err(|e| Unrestorable(e.0))?;
        Ok(live.then_some((id, package)))
    }

    /// Restored subscription `id` asks its presentity's shard what it is
    /// shown (nothing if it has ended meanwhile).
    pub(super) fn ask_restored(&mut self, id: u64, out: &mut Outbox) {
        let Some((ask, aor, watcher, package)) = self.subscriptions.restored_ask(id) else { return };
        let (aor, watcher): (Box<[u8]>, Box<[u8]>) = (aor.into(), watcher.into());
        let owner = owner_of(&aor, self.cfg.shards);
        let from = self.cfg.shard;
        let msg = match package {
            Package::Presence => CoreMsg::Watch { ask, from, aor, watcher },
            Package::Winfo => CoreMsg::WatchInfo { ask, from, aor },
        };
        self.send_shard(owner, msg, out);
    }

    /// Whether restored subscription `id` came with a take-over (and so
    /// owes its watcher a NOTIFY once answered); asks once.
    pub(super) fn was_taken_over(&mut self, id: u64) -> bool {
        self.replica.as_mut().is_some_and(|r| r.taken_over.remove(&id))
    }

    /// Whether this node may NOTIFY for subscription `id`: not once it has
    /// stopped serving the dialog's partition (nor before it serves one it
    /// is taking over). The next holder speaks from the log's CSeq
    /// reservation, which a NOTIFY sent here now could pass unrecorded
    /// (found by the simulation: a dialog's CSeq went back from 71 to 13).
    /// Its take-over NOTIFY tells the watcher what this one would have.
    pub(super) fn speaks_for(&self, id: u64) -> bool {
        let Some(view) = self.cfg.cluster.as_ref().filter(|_| self.replica.is_some()) else { return true };
        let Some((_, tag)) = self.subscriptions.dialog_of(id) else { return true };
        self.home_of(tag).is_none_or(|p| view.serves(p))
    }

    /// Forgets subscription `id` without a NOTIFY or a record, and tells
    /// its presentity's shard.
    fn forget_dialog(&mut self, id: u64, out: &mut Outbox) {
        if let Some(r) = &mut self.replica {
            r.taken_over.remove(&id);
        }
        if let Some((aor, ask)) = self.subscriptions.forget(id) {
            let owner = owner_of(&aor, self.cfg.shards);
            self.send_shard(owner, CoreMsg::Unwatch { aor, from: self.cfg.shard, ask }, out);
        }
    }

    /// Forgets the dialogs of partitions `ps` (their log is about to bring
    /// them back); returns how many.
    pub(super) fn forget_dialogs_of(&mut self, ps: &HashSet<u16>, out: &mut Outbox) -> usize {
        let ids: Vec<u64> = self.subscriptions.tags().filter(|(_, tag)| self.home_of(tag).is_some_and(|p| ps.contains(&p.0))).map(|(id, _)| id).collect();
        for &id in &ids {
            self.forget_dialog(id, out);
        }
        ids.len()
    }

    /// After a change of owners: forgets the dialogs whose partition
    /// another node serves now (it took them from the log).
    pub(super) fn forget_moved_dialogs(&mut self, out: &mut Outbox) {
        let Some(view) = self.cfg.cluster.clone().filter(|_| self.replica.is_some()) else { return };
        let me = view.me();
        let moved: Vec<u64> =
            self.subscriptions.tags().filter(|(_, tag)| self.home_of(tag).and_then(|p| view.owner(p)).is_some_and(|n| n != me)).map(|(id, _)| id).collect();
        if moved.is_empty() {
            return;
        }
        for &id in &moved {
            self.forget_dialog(id, out);
        }
        tracing::info!(shard = self.cfg.shard, dialogs = moved.len(), "dialogs whose partition another node serves now forgotten");
    }
}
