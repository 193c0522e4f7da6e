//! When a table gives back the room a burst made it take.
//!
//! Hash tables grow to twice their peak and never shrink by themselves:
//! after a NOTIFY storm or a flood of transactions, the client and
//! completed-transaction tables held their peak's capacity for good (at
//! 300,000 NOTIFYs, about 260 bytes a subscription after every one was
//! answered). A table shrinks to twice its entries once it is at most an
//! eighth full. That rehashes what is left, which is few entries by then,
//! and it is paid once per halving of a burst, never per request.

/// A table this small keeps its room: shrinking it gains nothing.
pub const KEEP: usize = 4096;

/// A part of a table in parts (`core::parted`) keeps this much.
pub const KEEP_PART: usize = KEEP / super::parted::PARTS;

/// The capacity to shrink a table of `len` entries and `capacity` slots
/// to, if it should shrink now; `keep` is the room it may always keep.
pub fn shrink_to(len: usize, capacity: usize, keep: usize) -> Option<usize> {
    (capacity > keep && capacity / 8 >= len).then(|| (len * 2).max(keep / 2))
}

/// The entries a hashbrown table's allocation has room for, whatever its
/// tombstones. Its `capacity()` is entries plus free slots, so each
/// removal that leaves a tombstone lowers it: a table emptied by removals
/// can report a fraction of the allocation it still holds, and a shrink
/// decided on `capacity()` comes late or not at all. The allocation is
/// `buckets` slots of `entry` bytes and a control byte each (plus one
/// group of control bytes), and holds entries in 7/8 of its slots.
pub fn table_room(allocation_size: usize, entry: usize) -> usize {
    allocation_size / (entry + 1) / 8 * 7
}

/// Room a drained work buffer may keep (entries): a queue emptied at every
/// step keeps what a busy second needed, but not what a storm did.
pub const KEEP_QUEUE: usize = 256;

/// A buffer that a burst may have grown and that can give the room back.
/// Queues drained at every step are trimmed only when the shard is quiet
/// (`Shard::give_back_room`): trimming them as they drain would reallocate
/// on every step of a steady load above `keep`.
pub trait GiveBack {
    /// Shrinks to twice the entries held (at least `keep / 2`) if at most
    /// an eighth of the room is used and the room exceeds `keep`.
    fn give_back(&mut self, keep: usize);
}

impl<T> GiveBack for Vec<T> {
    fn give_back(&mut self, keep: usize) {
        if let Some(to) = shrink_to(self.len(), self.capacity(), keep) {
            self.shrink_to(to);
        }
    }
}

impl<T> GiveBack for std::collections::VecDeque<T> {
    fn give_back(&mut self, keep: usize) {
        if let Some(to) = shrink_to(self.len(), self.capacity(), keep) {
            self.shrink_to(to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table drained by removals keeps its allocation, but each removal
    /// that leaves a tombstone lowers its reported capacity (a full table
    /// emptied this way reports about half its room). `table_room` reads
    /// the room from the allocation, tombstones or not, and the shrink
    /// decided on it gives the room back.
    #[test]
    fn a_table_emptied_by_removals_is_seen_to_hold_its_room() {
        let hash = |k: &u64| k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut t: hashbrown::HashTable<u64> = hashbrown::HashTable::with_capacity(14_000);
        let peak = t.capacity();
        for k in 0..peak as u64 {
            t.insert_unique(hash(&k), k, hash);
        }
        for k in 0..peak as u64 {
            t.find_entry(hash(&k), |&x| x == k).ok().unwrap().remove();
        }
        let room = table_room(t.allocation_size(), std::mem::size_of::<u64>());
        assert!(room >= peak && room < peak + peak / 8, "{room} for {peak}");
        assert!(t.capacity() < peak * 3 / 4, "tombstones hide the room: {} of {peak}", t.capacity());
        let to = shrink_to(t.len(), room, KEEP_PART).expect("an empty table of that room shrinks");
        t.shrink_to(to, hash);
        assert!(table_room(t.allocation_size(), 8) <= KEEP_PART);
    }

    #[test]
    fn drained_queues_give_back_what_a_burst_took() {
        let mut v: Vec<u64> = (0..100_000).collect();
        let mut q: std::collections::VecDeque<u64> = (0..100_000).collect();
        v.clear();
        q.truncate(3);
        v.give_back(KEEP_QUEUE);
        q.give_back(KEEP_QUEUE);
        assert!(v.capacity() <= KEEP_QUEUE && q.capacity() <= KEEP_QUEUE, "{} {}", v.capacity(), q.capacity());
        assert_eq!(q, [0, 1, 2]);
        // A queue in use keeps its room.
        let mut busy: Vec<u64> = Vec::with_capacity(1000);
        busy.extend(0..200);
        busy.give_back(KEEP_QUEUE);
        assert_eq!(busy.capacity(), 1000);
    }

    #[test]
    fn shrinks_only_a_large_sparse_table() {
        assert_eq!(shrink_to(10, 1024, KEEP), None, "small");
        assert_eq!(shrink_to(20_000, 131_072, KEEP), None, "more than an eighth full");
        assert_eq!(shrink_to(10_000, 131_072, KEEP), Some(20_000));
        assert_eq!(shrink_to(0, 1 << 20, KEEP), Some(KEEP / 2));
        assert_eq!(shrink_to(0, 448, KEEP_PART), Some(KEEP_PART / 2), "a part of a table");
    }

    #[test]
    fn a_drained_map_gives_its_room_back() {
        let mut m: std::collections::HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
        m.retain(|k, _| *k < 100);
        let before = m.capacity();
        if let Some(to) = shrink_to(m.len(), m.capacity(), KEEP) {
            m.shrink_to(to);
        }
        assert!(m.capacity() <= KEEP && m.capacity() * 10 < before, "{before} -> {}", m.capacity());
        assert!((0..100).all(|k| m.contains_key(&k)));
    }
}
