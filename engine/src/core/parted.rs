//! A map from u64 keys (transaction tokens, subscription ids) in 64 parts.
//!
//! A hash table that grows rehashes every entry inside the request that
//! made it grow: at a million entries that request took hundreds of
//! milliseconds here (`bench/examples/growth_stall.rs`). In parts, a growth
//! rehashes one part, a 64th of the entries, so no request pays for more
//! than that. Parts also give back their room one at a time after a burst
//! (`core::room`).

use std::collections::HashMap;

/// Parts of every table split this way: these maps, the server
/// transactions and the Timer J index (`core::completed`).
pub const PARTS: usize = 64;

pub struct PartedMap<V> {
    parts: Vec<HashMap<u64, V, ahash::RandomState>>,
    len: usize,
}

impl<V> PartedMap<V> {
    pub fn new(hasher: ahash::RandomState) -> Self {
        PartedMap { parts: (0..PARTS).map(|_| HashMap::with_hasher(hasher.clone())).collect(), len: 0 }
    }

    /// Keys may be sequential or random: either spreads over the parts.
    fn part(&self, key: u64) -> usize {
        (key % PARTS as u64) as usize
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries the parts hold together without any growing.
    pub fn capacity(&self) -> usize {
        self.parts.iter().map(|p| p.capacity()).min().unwrap_or(0) * PARTS
    }

    /// Room for `n` entries in all, spread as the keys spread.
    pub fn reserve(&mut self, n: usize) {
        let each = n.div_ceil(PARTS);
        for p in &mut self.parts {
            p.reserve(each.saturating_sub(p.len()));
        }
    }

    pub fn get(&self, key: &u64) -> Option<&V> {
        self.parts[self.part(*key)].get(key)
    }

    pub fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        let p = self.part(*key);
        self.parts[p].get_mut(key)
    }

    pub fn contains_key(&self, key: &u64) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let p = self.part(key);
        let old = self.parts[p].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes; a part that is mostly empty gives back its room.
    pub fn remove(&mut self, key: &u64) -> Option<V> {
        let p = self.part(*key);
        let part = &mut self.parts[p];
        let old = part.remove(key)?;
        self.len -= 1;
        if let Some(to) = super::room::shrink_to(part.len(), part.capacity(), super::room::KEEP_PART) {
            part.shrink_to(to);
        }
        Some(old)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.parts.iter().flat_map(|p| p.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agrees with a plain map under random inserts and removals.
    #[test]
    fn agrees_with_a_map_model() {
        for seed in 0..10 {
            let mut rng = crate::core::entropy::Entropy::for_shard(seed, 0);
            let mut m = PartedMap::new(ahash::RandomState::with_seeds(1, 2, 3, 4));
            let mut model = HashMap::new();
            for i in 0..20_000u64 {
                let key = if seed % 2 == 0 { rng.u64() % 5000 } else { i % 3000 };
                if rng.below(3) == 0 {
                    assert_eq!(m.remove(&key), model.remove(&key), "seed {seed}");
                } else {
                    assert_eq!(m.insert(key, i), model.insert(key, i), "seed {seed}");
                }
                assert_eq!(m.len(), model.len());
            }
            assert!(model.iter().all(|(k, v)| m.get(k) == Some(v)));
            assert_eq!(m.values().count(), model.len());
        }
    }

    #[test]
    fn growing_rehashes_one_part_and_a_drained_map_gives_its_room_back() {
        let mut m = PartedMap::new(ahash::RandomState::with_seeds(1, 2, 3, 4));
        m.reserve(64_000);
        let room = m.capacity();
        assert!(room >= 64_000);
        for k in 0..64_000u64 {
            m.insert(k, [0u8; 32]);
        }
        assert_eq!(m.capacity(), room, "sized: nothing grew");
        let largest = m.parts.iter().map(|p| p.capacity()).max().unwrap();
        assert!(largest * 16 < 64_000, "a part is a small share of the whole: {largest}");
        for k in 0..64_000u64 {
            m.remove(&k);
        }
        assert!(m.parts.iter().all(|p| p.capacity() <= crate::core::room::KEEP_PART), "each part gave its room back");
    }
}
