//! What a presentity's own shard keeps of its watchers: each watcher (its
//! shard, its ask, its identity and the decision), how many each shard
//! holds (where a new document must go), and the winfo subscribers.
//!
//! One list per presentity and one shard-wide index from (watcher's
//! shard, ask) to a watcher's place in its list: a watcher is found and
//! removed in O(1), so 100,000 watchers leaving together cost 100,000
//! steps, not their square. A table per presentity did the same at about
//! 200 bytes for a presentity with one watcher (most of them).

use crate::core::parted::{PartedMap, PartedTable};
use crate::presence::authz::Action;
use crate::presence::winfo::WatcherState;

/// One presence watcher, as its presentity's shard knows it.
pub(super) struct WatcherEntry {
    pub shard: u16,
    pub ask: u64,
    pub watcher: Box<[u8]>,
    pub action: Action,
}

impl WatcherEntry {
    pub fn state(&self, event: &'static str) -> WatcherState {
        let status = match self.action {
            Action::Allow | Action::PoliteBlock => "active",
            Action::Confirm => "pending",
            Action::Block => "terminated",
        };
        WatcherState { id: format!("{}-{}", self.shard, self.ask), uri: self.watcher.clone(), status, event }
    }
}

/// A presentity's watchers.
pub(super) struct WatchedBy {
    /// The presentity: the table's key, kept here rather than beside the
    /// box in each slot (16 bytes a slot, 2 slots a presentity at a
    /// million).
    pub aor: Box<[u8]>,
    /// Watchers held by each shard: where a new document must go.
    pub counts: Box<[u32]>,
    pub watchers: Vec<WatcherEntry>,
    /// Winfo subscriptions to this presentity: (shard, ask).
    pub winfo: Vec<(u16, u64)>,
}

impl WatchedBy {
    /// Has at least one presence watcher (winfo subscribers do not count).
    pub fn is_watched(&self) -> bool {
        !self.watchers.is_empty()
    }
}

/// Every watched presentity owned by a shard.
pub(super) struct WatchedTable {
    shards: u16,
    hasher: ahash::RandomState,
    /// Boxed: the table's empty slots then cost a pointer each. Found by
    /// the AOR's hash and compared against `WatchedBy::aor`.
    by_aor: PartedTable<Box<WatchedBy>>,
    /// (watcher's shard, ask), packed by `place_key` → place in its
    /// presentity's `watchers`.
    place: PartedMap<u64, u32>,
}

/// A shard's asks count up from 1 and stay below 2^48 (at a million a
/// second, for nine years), so (shard, ask) packs into one word.
fn place_key(shard: u16, ask: u64) -> u64 {
    debug_assert!(ask < 1 << 48);
    (shard as u64) << 48 | ask
}

impl WatchedTable {
    pub fn new(shards: u16, hasher: ahash::RandomState) -> Self {
        WatchedTable { shards, by_aor: PartedTable::new(), place: PartedMap::new(hasher.clone()), hasher }
    }

    /// Room for `n` watchers (and as many presentities), made now.
    pub fn reserve(&mut self, n: usize) {
        let hasher = &self.hasher;
        self.by_aor.reserve(n, |w| hasher.hash_one(&w.aor[..]));
        self.place.reserve(n);
    }

    /// Watchers there is room for without growing.
    pub fn capacity(&self) -> usize {
        self.by_aor.capacity().min(self.place.capacity())
    }

    /// Presentities with watchers or winfo subscribers.
    pub fn len(&self) -> usize {
        self.by_aor.len()
    }

    pub fn get(&self, aor: &[u8]) -> Option<&WatchedBy> {
        self.by_aor.find(self.hasher.hash_one(aor), |w| &w.aor[..] == aor).map(|w| &**w)
    }

    fn entry(&mut self, aor: &[u8]) -> &mut WatchedBy {
        let (shards, hasher) = (self.shards as usize, &self.hasher);
        let h = hasher.hash_one(aor);
        let new = || Box::new(WatchedBy { aor: aor.into(), counts: vec![0; shards].into(), watchers: Vec::new(), winfo: Vec::new() });
        self.by_aor.get_or_insert_with(h, |w| &w.aor[..] == aor, new, |w| hasher.hash_one(&w.aor[..]))
    }

    /// Adds a presence watcher; true if it is `aor`'s first.
    pub fn add_watcher(&mut self, aor: &[u8], entry: WatcherEntry) -> bool {
        let key = place_key(entry.shard, entry.ask);
        let w = self.entry(aor);
        let first = w.watchers.is_empty();
        w.counts[entry.shard as usize] += 1;
        if w.watchers.capacity() == 0 {
            // Most presentities have one watcher: room for exactly that.
            w.watchers.reserve_exact(1);
        }
        let at = u32::try_from(w.watchers.len()).expect("watchers per presentity are limited far below u32");
        w.watchers.push(entry);
        self.place.insert(key, at);
        first
    }

    /// Adds a winfo subscriber; returns the presentity's watchers.
    pub fn add_winfo(&mut self, aor: &[u8], shard: u16, ask: u64) -> &WatchedBy {
        let w = self.entry(aor);
        w.winfo.push((shard, ask));
        w
    }

    /// Removes the presence watcher or winfo subscriber (`shard`, `ask`)
    /// of `aor`: returns the watcher's entry if it was one, and whether
    /// `aor` lost its last presence watcher by it.
    pub fn remove(&mut self, aor: &[u8], shard: u16, ask: u64) -> (Option<WatcherEntry>, bool) {
        let Some(mut found) = self.by_aor.find_entry(self.hasher.hash_one(aor), |w| &w.aor[..] == aor) else { return (None, false) };
        let w = &mut **found.get_mut();
        let mut removed = None;
        match self.place.get(&place_key(shard, ask)).copied() {
            Some(at) if w.watchers.get(at as usize).is_some_and(|e| (e.shard, e.ask) == (shard, ask)) => {
                self.place.remove(&place_key(shard, ask));
                let e = w.watchers.swap_remove(at as usize);
                // O(1): the last watcher takes the removed one's place.
                if let Some(moved) = w.watchers.get(at as usize) {
                    self.place.insert(place_key(moved.shard, moved.ask), at);
                }
                let c = &mut w.counts[shard as usize];
                *c = c.saturating_sub(1);
                removed = Some(e);
            }
            _ => w.winfo.retain(|s| *s != (shard, ask)),
        }
        let unwatched = removed.is_some() && w.watchers.is_empty();
        if w.watchers.is_empty() && w.winfo.is_empty() {
            let hasher = &self.hasher;
            found.remove(|w| hasher.hash_one(&w.aor[..]));
        }
        (removed, unwatched)
    }

    /// The presentities with presence watchers.
    pub fn watched_aors(&self) -> impl Iterator<Item = &[u8]> {
        self.by_aor.iter().filter(|w| w.is_watched()).map(|w| &w.aor[..])
    }

    /// Every presentity and its watchers, to change decisions in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut WatchedBy> {
        self.by_aor.iter_mut().map(|w| &mut **w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(shard: u16, ask: u64) -> WatcherEntry {
        WatcherEntry { shard, ask, watcher: format!("sip:w{ask}@example.com").into_bytes().into(), action: Action::Allow }
    }

    /// Watchers come and go in a random order; the table agrees with a
    /// plain model, and every index entry points at its own watcher.
    #[test]
    fn agrees_with_a_model_under_random_churn() {
        for seed in 0..20 {
            let mut rng = crate::core::entropy::Entropy::for_shard(seed, 0);
            let mut t = WatchedTable::new(3, ahash::RandomState::with_seeds(1, 2, 3, 4));
            let mut model: Vec<(u8, u16, u64)> = Vec::new();
            for ask in 0..2000u64 {
                if model.is_empty() || rng.below(3) > 0 {
                    let (aor, shard) = (rng.below(8) as u8, rng.below(3) as u16);
                    let first = t.add_watcher(&[aor], entry(shard, ask));
                    assert_eq!(first, !model.iter().any(|m| m.0 == aor), "seed {seed}");
                    model.push((aor, shard, ask));
                } else {
                    let (aor, shard, ask) = model.swap_remove(rng.below(model.len() as u64) as usize);
                    let (e, unwatched) = t.remove(&[aor], shard, ask);
                    assert_eq!(e.map(|e| (e.shard, e.ask)), Some((shard, ask)), "seed {seed}");
                    assert_eq!(unwatched, !model.iter().any(|m| m.0 == aor), "seed {seed}");
                }
                assert_eq!(t.place.len(), model.len());
            }
            for w in t.by_aor.iter() {
                let aor = &w.aor;
                let mut counts = [0u32; 3];
                for (i, e) in w.watchers.iter().enumerate() {
                    assert_eq!(t.place.get(&place_key(e.shard, e.ask)), Some(&(i as u32)));
                    counts[e.shard as usize] += 1;
                }
                assert_eq!(&w.counts[..], &counts[..]);
                assert_eq!(w.watchers.len(), model.iter().filter(|m| [m.0] == aor[..]).count());
            }
        }
    }

    #[test]
    fn a_presentity_stays_while_winfo_watches_it() {
        let mut t = WatchedTable::new(1, ahash::RandomState::with_seeds(1, 2, 3, 4));
        t.add_watcher(b"a", entry(0, 1));
        assert!(t.add_winfo(b"a", 0, 2).is_watched());
        assert!(matches!(t.remove(b"a", 0, 1), (Some(_), true)));
        assert_eq!(t.len(), 1, "the winfo subscriber keeps it");
        assert!(!t.get(b"a").unwrap().is_watched());
        assert!(matches!(t.remove(b"a", 0, 2), (None, false)));
        assert_eq!(t.len(), 0);
        assert!(matches!(t.remove(b"a", 0, 2), (None, false)), "twice is nothing");
    }
}
