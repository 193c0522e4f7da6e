//! Hash tables in 64 parts, so that no request pays for a whole rehash.
//!
//! A hash table that grows rehashes every entry inside the request that
//! made it grow: at a million entries that request took hundreds of
//! milliseconds here, and over a second for the subscription indexes,
//! whose rehash looks each subscription up again
//! (`bench/examples/growth_stall.rs`). In parts, a growth rehashes one
//! part, a 64th of the entries. Parts also give back their room one at a
//! time after a burst (`core::room`).
//!
//! [`PartedTable`] is the mechanism, for tables that hash their entries
//! themselves (indexes that compare against the entry they point to);
//! [`PartedMap`] is a map over it. Every table a shard grows with its
//! load is one of the two, or in parts of its own the same way
//! (`core::transaction`, `core::completed`).

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, OccupiedEntry};
use std::borrow::Borrow;
use std::hash::Hash;

/// Parts of every table split this way.
pub const PARTS: usize = 64;

/// The part of an entry with `hash`. hashbrown places an entry by the
/// hash's low bits and tags it with the top seven, so the part is taken
/// from bits that are neither: entries of one part then still spread over
/// all of its slots and tags.
pub fn part_of(hash: u64) -> usize {
    (hash >> 32) as usize % PARTS
}

/// A table of `T` found by a hash the caller computes, in [`PARTS`] parts.
pub struct PartedTable<T> {
    parts: Box<[HashTable<T>]>,
    len: usize,
}

impl<T> Default for PartedTable<T> {
    fn default() -> Self {
        PartedTable { parts: (0..PARTS).map(|_| HashTable::new()).collect(), len: 0 }
    }
}

impl<T> PartedTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries the parts hold together without any growing (as hashes
    /// spread, evenly).
    pub fn capacity(&self) -> usize {
        self.parts.iter().map(|p| p.capacity()).min().unwrap_or(0) * PARTS
    }

    /// Room for `n` entries in all, spread as the hashes spread.
    pub fn reserve(&mut self, n: usize, hasher: impl Fn(&T) -> u64) {
        let each = n.div_ceil(PARTS);
        for p in self.parts.iter_mut() {
            p.reserve(each.saturating_sub(p.len()), &hasher);
        }
    }

    pub fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        self.parts[part_of(hash)].find(hash, eq)
    }

    pub fn find_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.parts[part_of(hash)].find_mut(hash, eq)
    }

    /// The entry with `hash` that `eq` accepts, to read, change or remove.
    pub fn find_entry(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<Found<'_, T>> {
        let entry = self.parts[part_of(hash)].find_entry(hash, eq).ok()?;
        Some(Found { entry, len: &mut self.len })
    }

    /// Adds an entry the caller knows is not there.
    pub fn insert_unique(&mut self, hash: u64, value: T, hasher: impl Fn(&T) -> u64) -> &mut T {
        self.len += 1;
        self.parts[part_of(hash)].insert_unique(hash, value, hasher).into_mut()
    }

    /// The entry `eq` accepts, added by `make` when there is none.
    pub fn get_or_insert_with(&mut self, hash: u64, eq: impl FnMut(&T) -> bool, make: impl FnOnce() -> T, hasher: impl Fn(&T) -> u64) -> &mut T {
        match self.parts[part_of(hash)].entry(hash, eq, hasher) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                self.len += 1;
                e.insert(make()).into_mut()
            }
        }
    }

    /// Removes the entry `eq` accepts; a part that is mostly empty then
    /// gives back its room.
    pub fn remove(&mut self, hash: u64, eq: impl FnMut(&T) -> bool, hasher: impl Fn(&T) -> u64) -> Option<T> {
        self.find_entry(hash, eq).map(|found| found.remove(hasher))
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.parts.iter().flat_map(|p| p.iter())
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.parts.iter_mut().flat_map(|p| p.iter_mut())
    }

    /// Parts holding at least one entry (for tests of the spread).
    #[cfg(test)]
    pub fn parts_in_use(&self) -> usize {
        self.parts.iter().filter(|p| !p.is_empty()).count()
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool, hasher: impl Fn(&T) -> u64) {
        for p in self.parts.iter_mut() {
            p.retain(&mut keep);
            shrink_if_sparse(p, &hasher);
        }
        self.len = self.parts.iter().map(|p| p.len()).sum();
    }
}

fn shrink_if_sparse<T>(part: &mut HashTable<T>, hasher: impl Fn(&T) -> u64) {
    let room = super::room::table_room(part.allocation_size(), std::mem::size_of::<T>());
    if let Some(to) = super::room::shrink_to(part.len(), room, super::room::KEEP_PART) {
        part.shrink_to(to, hasher);
    }
}

/// An entry found in a [`PartedTable`].
pub struct Found<'a, T> {
    entry: OccupiedEntry<'a, T>,
    len: &'a mut usize,
}

impl<'a, T> Found<'a, T> {
    pub fn get(&self) -> &T {
        self.entry.get()
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.entry.get_mut()
    }

    pub fn into_mut(self) -> &'a mut T {
        self.entry.into_mut()
    }

    /// Takes the entry out; its part gives back its room if it is now
    /// mostly empty.
    pub fn remove(self, hasher: impl Fn(&T) -> u64) -> T {
        let (value, vacant) = self.entry.remove();
        *self.len -= 1;
        shrink_if_sparse(vacant.into_table(), hasher);
        value
    }
}

/// A map in [`PARTS`] parts, each key hashed once per operation.
pub struct PartedMap<K, V> {
    hasher: ahash::RandomState,
    table: PartedTable<(K, V)>,
}

impl<K: Hash + Eq, V> PartedMap<K, V> {
    pub fn new(hasher: ahash::RandomState) -> Self {
        PartedMap { hasher, table: PartedTable::new() }
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Entries the parts hold together without any growing.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Room for `n` entries in all, spread as the keys spread.
    pub fn reserve(&mut self, n: usize) {
        let hasher = &self.hasher;
        self.table.reserve(n, |(k, _)| hasher.hash_one(k));
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.table.find(self.hash(key), |(k, _)| k.borrow() == key).map(|(_, v)| v)
    }

    pub fn get_mut<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
    {
        let h = self.hash(key);
        self.table.find_mut(h, |(k, _)| k.borrow() == key).map(|(_, v)| v)
    }

    pub fn contains_key<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
    {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let h = self.hash(&key);
        let hasher = &self.hasher;
        match self.table.parts[part_of(h)].entry(h, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().1, value)),
            Entry::Vacant(e) => {
                e.insert((key, value));
                self.table.len += 1;
                None
            }
        }
    }

    /// The value of `key`, added by `make` (and the key copied) only when
    /// there is none.
    pub fn get_or_insert_with<Q: Hash + Eq + ToKey<K> + ?Sized>(&mut self, key: &Q, make: impl FnOnce() -> V) -> &mut V
    where
        K: Borrow<Q>,
    {
        let h = self.hash(key);
        let hasher = &self.hasher;
        let (_, v) = self.table.get_or_insert_with(h, |(k, _)| k.borrow() == key, || (key.to_key(), make()), |(k, _)| hasher.hash_one(k));
        v
    }

    /// Removes; a part that is mostly empty gives back its room.
    pub fn remove<Q: Hash + Eq + ?Sized>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        let h = self.hash(key);
        let hasher = &self.hasher;
        self.table.remove(h, |(k, _)| k.borrow() == key, |(k, _)| hasher.hash_one(k)).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.table.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.table.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.table.iter_mut().map(|(_, v)| v)
    }

    /// Keeps the entries `keep` accepts.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let hasher = &self.hasher;
        self.table.retain(|(k, v)| keep(k, v), |(k, _)| hasher.hash_one(k));
    }
}

impl<K: Hash + Eq + Borrow<Q>, Q: Hash + Eq + ?Sized, V> std::ops::Index<&Q> for PartedMap<K, V> {
    type Output = V;

    /// Panics when `key` is absent, as a `HashMap` does.
    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("key in the map")
    }
}

/// The key a [`PartedMap`] stores, made from the one it was asked with.
pub trait ToKey<K> {
    fn to_key(&self) -> K;
}

impl ToKey<u64> for u64 {
    fn to_key(&self) -> u64 {
        *self
    }
}

impl ToKey<Box<[u8]>> for [u8] {
    fn to_key(&self) -> Box<[u8]> {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn hasher() -> ahash::RandomState {
        ahash::RandomState::with_seeds(1, 2, 3, 4)
    }

    /// Agrees with a plain map under random inserts, lookups, removals
    /// and retains, across growth and shrinking of its parts.
    #[test]
    fn agrees_with_a_map_model() {
        for seed in 0..10 {
            let mut rng = crate::core::entropy::Entropy::for_shard(seed, 0);
            let mut m: PartedMap<Box<[u8]>, u64> = PartedMap::new(hasher());
            let mut model: HashMap<Box<[u8]>, u64> = HashMap::new();
            for i in 0..20_000u64 {
                let n = if seed % 2 == 0 { rng.u64() % 5000 } else { i % 3000 };
                let key: Box<[u8]> = format!("sip:u{n}@example.com").into_bytes().into();
                match rng.below(8) {
                    0..=2 => assert_eq!(m.remove(&key[..]), model.remove(&key), "seed {seed}"),
                    3 => assert_eq!(*m.get_or_insert_with(&key[..], || i), *model.entry(key.clone()).or_insert(i)),
                    4 => assert_eq!(m.get(&key[..]), model.get(&key)),
                    5 if i % 1000 == 0 => {
                        m.retain(|_, v| *v % 3 != 0);
                        model.retain(|_, v| *v % 3 != 0);
                    }
                    _ => assert_eq!(m.insert(key.clone(), i), model.insert(key, i), "seed {seed}"),
                }
                assert_eq!(m.len(), model.len());
            }
            assert!(model.iter().all(|(k, v)| m.get(&k[..]) == Some(v)));
            assert_eq!(m.iter().count(), model.len());
            assert!(m.iter().all(|(k, v)| model.get(k) == Some(v)));
        }
    }

    /// Growing from nothing to 64,000 entries, no single insert rehashes
    /// more than a part: the largest capacity any part reached stays a
    /// small share of the whole, and every part grew on its own.
    #[test]
    fn growth_rehashes_one_part_at_a_time() {
        let mut m: PartedMap<u64, u64> = PartedMap::new(hasher());
        let mut largest_jump = 0;
        for k in 0..64_000u64 {
            let before: Vec<usize> = m.table.parts.iter().map(|p| p.capacity()).collect();
            m.insert(k, k);
            let grew: Vec<usize> = m.table.parts.iter().zip(&before).filter(|(p, b)| p.capacity() != **b).map(|(p, _)| p.len()).collect();
            assert!(grew.len() <= 1, "one insert grew {} parts", grew.len());
            largest_jump = largest_jump.max(grew.first().copied().unwrap_or(0));
        }
        assert!(largest_jump * 16 < 64_000, "a growth moved {largest_jump} entries");
        assert!((0..64_000u64).all(|k| m.get(&k) == Some(&k)));
    }

    #[test]
    fn sized_holds_without_growing_and_drained_gives_its_room_back() {
        let mut m: PartedMap<u64, [u8; 32]> = PartedMap::new(hasher());
        m.reserve(64_000);
        let room = m.capacity();
        assert!(room >= 64_000);
        for k in 0..64_000u64 {
            m.insert(k, [0u8; 32]);
        }
        assert_eq!(m.capacity(), room, "sized: nothing grew");
        for k in 0..64_000u64 {
            assert!(m.remove(&k).is_some());
        }
        assert!(m.is_empty());
        assert!(m.table.parts.iter().all(|p| p.capacity() <= crate::core::room::KEEP_PART), "each part gave its room back");
    }

    /// Entries of one part spread over its slots and tags: the part's bits
    /// are neither the low bits hashbrown places by nor the top seven it
    /// tags with.
    #[test]
    fn a_part_is_chosen_by_bits_hashbrown_does_not_use() {
        let h = hasher();
        let in_part_0: Vec<u64> = (0..200_000u64).map(|k| h.hash_one(k)).filter(|x| part_of(*x) == 0).collect();
        assert!(in_part_0.len() > 2_000);
        let distinct = |f: &dyn Fn(u64) -> u64| in_part_0.iter().map(|x| f(*x)).collect::<std::collections::HashSet<_>>().len();
        assert_eq!(distinct(&|x| x & 127), 128, "slots");
        assert_eq!(distinct(&|x| x >> 57), 128, "tags");

        let mut table: PartedTable<u64> = PartedTable::new();
        for k in 0..100_000u64 {
            table.insert_unique(h.hash_one(k), k, |v| h.hash_one(*v));
        }
        let sizes: Vec<usize> = table.parts.iter().map(|p| p.len()).collect();
        let (lo, hi) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
        assert!(lo * 10 > hi * 8, "parts are even: {lo}..{hi}");
        let mut found = table.find_entry(h.hash_one(7u64), |v| *v == 7).expect("there");
        *found.get_mut() = 7;
        assert_eq!(found.remove(|v| h.hash_one(*v)), 7);
        assert_eq!(table.len(), 99_999);
        assert!(table.find(h.hash_one(7u64), |v| *v == 7).is_none());
    }
}
