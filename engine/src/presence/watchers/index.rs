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

    /// Every subscription, those of one AOR together.
    pub fn ids_by_aor(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_aor.iter().flat_map(|ids| ids.iter().copied())
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
        let hasher = &self.hasher;
        let w = hasher.hash_one(s.watcher());
        if let Some(n) = self.per_watcher.get_mut(&w) {
            *n -= 1;
            if *n == 0 {
                self.per_watcher.remove(&w);
            }
        }
        let h = dialog_hash(hasher, s.call_id(), s.local_tag());
        self.by_dialog.remove(h, |other| *other == id, |other| dialog_hash_of(hasher, subs, *other));
        let (slot, aor) = (s.aor_slot as usize, s.aor());
        let h = hasher.hash_one(aor);
        let Some(mut e) = self.by_aor.find_entry(h, |ids| first_aor_is(subs, ids, aor)) else { return };
        let ids = e.get_mut();
        debug_assert_eq!(ids.get(slot), Some(&id));
        // O(1): the last subscription of the list takes this one's slot.
        ids.swap_remove(slot);
        let moved = ids.get(slot).copied();
        if ids.is_empty() {
            e.remove(|other| aor_hash_of(hasher, subs, other));
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

#[cfg(test)]
mod tests {
    use super::super::{Package, Shown, Texts};
    use super::*;
    use crate::core::Peer;
    use std::collections::{HashMap, HashSet};
    use std::time::Instant;

    fn subscription(aor: &str, watcher: &str, call_id: &str, tag: &str) -> Box<Subscription> {
        let (aor, watcher, call_id, tag) = (aor.as_bytes(), watcher.as_bytes(), call_id.as_bytes(), tag.as_bytes());
        let texts = Texts::new([aor, watcher, call_id, tag, aor, b"1", watcher, watcher, b""]);
        let to = Peer::udp("127.0.0.1:5060".parse().unwrap());
        Box::new(Subscription { remote_cseq: 1, ..Subscription::new(texts, Package::Presence, 0, Shown::Real, to, Instant::now()) })
    }

    /// Subscriptions come and go, thousands at a time, so that the parts
    /// of every index grow and then shrink (rehashing through the
    /// subscriptions still held): each lookup agrees with a plain model.
    #[test]
    fn lookups_agree_with_a_model_while_parts_grow_and_shrink() {
        let mut rng = crate::core::entropy::Entropy::for_shard(3, 0);
        let mut subs: Subs = PartedMap::new(ahash::RandomState::with_seeds(1, 2, 3, 4));
        let mut seeds = 0u64;
        let mut index = Index::new(|| {
            seeds += 1;
            ahash::RandomState::with_seeds(seeds, 2, 3, 4)
        });
        // id -> (aor, watcher, call-id, tag)
        let mut model: HashMap<u64, (String, String, String, String)> = HashMap::new();
        let mut next = 0u64;
        for round in 0..6 {
            // Fill to 12,000 on even rounds, drain to 20 on odd ones.
            let target = if round % 2 == 0 { 12_000 } else { 20 };
            while model.len() != target {
                if model.len() < target {
                    next += 1;
                    let t =
                        (format!("sip:p{}@example.com", rng.below(300)), format!("sip:w{}@example.com", rng.below(50)), format!("c{next}"), format!("t{next}"));
                    subs.insert(next, subscription(&t.0, &t.1, &t.2, &t.3));
                    index.add(&mut subs, next);
                    model.insert(next, t);
                } else {
                    let id = *model.keys().next().unwrap();
                    index.remove(&mut subs, id);
                    subs.remove(&id);
                    model.remove(&id);
                }
            }
            for (id, (_, _, call_id, tag)) in model.iter().take(500) {
                assert_eq!(index.dialog(&subs, call_id.as_bytes(), tag.as_bytes()), Some(*id), "round {round}");
            }
            let mut by_aor: HashMap<&str, HashSet<u64>> = HashMap::new();
            let mut by_watcher: HashMap<&str, usize> = HashMap::new();
            for (id, (aor, watcher, _, _)) in &model {
                by_aor.entry(aor).or_default().insert(*id);
                *by_watcher.entry(watcher).or_default() += 1;
            }
            for n in 0..300 {
                let aor = format!("sip:p{n}@example.com");
                let got: HashSet<u64> = index.of_aor(&subs, aor.as_bytes()).iter().copied().collect();
                assert_eq!(got, by_aor.get(aor.as_str()).cloned().unwrap_or_default(), "round {round}, {aor}");
            }
            for n in 0..50 {
                let w = format!("sip:w{n}@example.com");
                assert_eq!(index.held_by(w.as_bytes()), by_watcher.get(w.as_str()).copied().unwrap_or(0), "round {round}");
            }
            assert!(index.dialog(&subs, b"c0", b"t0").is_none());
        }
    }
}
