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

#[cfg(test)]
mod tests {
    use super::*;

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
