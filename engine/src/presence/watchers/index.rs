//! The ways a shard finds its subscriptions besides their id: by dialog
//! (an in-dialog request), by AOR (a new document), and how many one
//! watcher identity holds (a limit).
//!
//! None of them copies a key: the dialog and AOR tables hold subscription
//! ids under the hash of their key and compare against the subscription
//! itself, and the per-watcher count is kept under a keyed 64-bit hash of
//! the identity. Copied keys were about 100 bytes a subscription, in three
//! allocations (ARCHITECTURE.md, memory per entry).

use super::Subscription;
use crate::core::parted::{PartedMap, PartedTable};

/// Subscriptions by id, in parts so that growing never rehashes them all.
pub(super) type Subs = PartedMap<u64, Box<Subscription>>;

pub(super) struct Index {
    hasher: ahash::RandomState,
    by_dialog: PartedTable<u64>,
    /// Never an empty list: the AOR compared is the first subscription's.
    by_aor: PartedTable<Vec<u64>>,
    /// Two identities whose hashes collide share a count, which makes the
    /// limit stricter for both; the hash is keyed per process, so nobody
    /// can choose identities that collide.
    per_watcher: PartedMap<u64, u32>,
}

impl Index {
    pub fn new(mut hasher: impl FnMut() -> ahash::RandomState) -> Index {
        Index { hasher: hasher(), by_dialog: PartedTable::new(), by_aor: PartedTable::new(), per_watcher: PartedMap::new(hasher()) }
    }

    pub fn reserve(&mut self, subs: &Subs, n: usize) {
        let hasher = &self.hasher;
        self.by_dialog.reserve(n, |id| dialog_hash_of(hasher, subs, *id));
        self.by_aor.reserve(n, |ids| aor_hash_of(hasher, subs, ids));
        self.per_watcher.reserve(n);
    }

    /// Entries every table has room for.
    pub fn capacity(&self) -> usize {
        self.by_dialog.capacity().min(self.by_aor.capacity()).min(self.per_watcher.capacity())
    }

    /// The subscription of the dialog (Call-ID, our tag).
    pub fn dialog(&self, subs: &Subs, call_id: &[u8], local_tag: &[u8]) -> Option<u64> {
        let h = dialog_hash(&self.hasher, call_id, local_tag);
        self.by_dialog.find(h, |id| subs.get(id).is_some_and(|s| s.call_id() == call_id && s.local_tag() == local_tag)).copied()
    }

    /// Subscriptions to `aor`.
    pub fn of_aor(&self, subs: &Subs, aor: &[u8]) -> &[u64] {
        let h = self.hasher.hash_one(aor);
        self.by_aor.find(h, |ids| first_aor_is(subs, ids, aor)).map_or(&[], |v| &v[..])
    }

    /// Subscriptions held for watcher identity `watcher`.
    pub fn held_by(&self, watcher: &[u8]) -> usize {
        self.per_watcher.get(&self.hasher.hash_one(watcher)).map_or(0, |n| *n as usize)
    }

    /// Indexes subscription `id`, already in `subs`, and sets its place in
    /// its AOR's list.
    pub fn add(&mut self, subs: &mut Subs, id: u64) {
        let s = subs.get(&id).expect("indexed after it is stored");
        let hasher = &self.hasher;
        *self.per_watcher.get_or_insert_with(&hasher.hash_one(s.watcher()), || 0) += 1;
        let h = dialog_hash(hasher, s.call_id(), s.local_tag());
        self.by_dialog.insert_unique(h, id, |other| dialog_hash_of(hasher, subs, *other));
        let aor = s.aor();
        let h = hasher.hash_one(aor);
        let slot = match self.by_aor.find_mut(h, |ids| first_aor_is(subs, ids, aor)) {
            Some(ids) => {
                ids.push(id);
                u32::try_from(ids.len() - 1).expect("subscriptions per shard are limited far below u32")
            }
            None => {
                // Most AORs have one watcher here: room for exactly that
                // (vec! allocates what it is given).
                self.by_aor.insert_unique(h, vec![id], |ids| aor_hash_of(hasher, subs, ids));
                0
            }
        };
        subs.get_mut(&id).expect("stored").aor_slot = slot;
    }

    /// Takes subscription `id`, still in `subs`, out of every index.
    pub fn remove(&mut self, subs: &mut Subs, id: u64) {
        let Some(s) = subs.get(&id) else { return };
        let w = self.hasher.hash_one(s.watcher());
        if let Some(n) = self.per_watcher.get_mut(&w) {
            *n -= 1;
            if *n == 0 {
                self.per_watcher.remove(&w);
            }
        }
        let h = dialog_hash(&self.hasher, s.call_id(), s.local_tag());
        let hasher = &self.hasher;
        self.by_dialog.remove(h, |other| *other == id, |other| dialog_hash_of(hasher, subs, *other));
        let (slot, aor) = (s.aor_slot as usize, s.aor());
        let h = self.hasher.hash_one(aor);
        let Some(mut e) = self.by_aor.find_entry(h, |ids| first_aor_is(subs, ids, aor)) else { return };
        let ids = e.get_mut();
        debug_assert_eq!(ids.get(slot), Some(&id));
        // O(1): the last subscription of the list takes this one's slot.
        ids.swap_remove(slot);
        let moved = ids.get(slot).copied();
        if ids.is_empty() {
            // Its hash, for a part that shrinks, is the AOR's: every other
            // list is looked up through its own first subscription.
            e.remove(|other| if other.is_empty() { h } else { aor_hash_of(hasher, subs, other) });
        }
        if let Some(m) = moved.and_then(|m| subs.get_mut(&m)) {
            m.aor_slot = slot as u32;
        }
    }
}

/// The dialog table's hash: of (Call-ID, our tag).
fn dialog_hash(hasher: &ahash::RandomState, call_id: &[u8], local_tag: &[u8]) -> u64 {
    hasher.hash_one((call_id, local_tag))
}

/// The dialog hash of subscription `id`, for a table that grows.
fn dialog_hash_of(hasher: &ahash::RandomState, subs: &Subs, id: u64) -> u64 {
    subs.get(&id).map_or(0, |s| dialog_hash(hasher, s.call_id(), s.local_tag()))
}

/// The AOR hash of a list (its first subscription's AOR), for a table
/// that grows.
fn aor_hash_of(hasher: &ahash::RandomState, subs: &Subs, ids: &[u64]) -> u64 {
    subs.get(&ids[0]).map_or(0, |s| hasher.hash_one(s.aor()))
}

fn first_aor_is(subs: &Subs, ids: &[u64], aor: &[u8]) -> bool {
    ids.first().and_then(|id| subs.get(id)).is_some_and(|s| s.aor() == aor)
}
