//! When a table gives back the room a burst made it take.
//!
//! Hash tables grow to twice their peak and never shrink by themselves:
//! after a NOTIFY storm or a flood of transactions, the client and
//! completed-transaction tables held their peak's capacity for good (at
//! 300,000 NOTIFYs, about 260 bytes a subscription after every one was
//! answered). A table shrinks to twice its entries once it is at most an
//! eighth full. That rehashes what is left, which is few entries by then,
//! and it is paid once per halving of a burst, never per request.

/// Tables this small keep their room: shrinking them gains nothing.
const KEEP: usize = 4096;

/// The capacity to shrink a table of `len` entries and `capacity` slots
/// to, if it should shrink now.
pub fn shrink_to(len: usize, capacity: usize) -> Option<usize> {
    (capacity > KEEP && capacity / 8 >= len).then(|| (len * 2).max(KEEP / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_only_a_large_sparse_table() {
        assert_eq!(shrink_to(10, 1024), None, "small");
        assert_eq!(shrink_to(20_000, 131_072), None, "more than an eighth full");
        assert_eq!(shrink_to(10_000, 131_072), Some(20_000));
        assert_eq!(shrink_to(0, 1 << 20), Some(KEEP / 2));
    }

    #[test]
    fn a_drained_map_gives_its_room_back() {
        let mut m: std::collections::HashMap<u64, [u8; 64]> = (0..100_000).map(|i| (i, [0; 64])).collect();
        m.retain(|k, _| *k < 100);
        let before = m.capacity();
        if let Some(to) = shrink_to(m.len(), m.capacity()) {
            m.shrink_to(to);
        }
        assert!(m.capacity() <= KEEP && m.capacity() * 10 < before, "{before} -> {}", m.capacity());
        assert!((0..100).all(|k| m.contains_key(&k)));
    }
}
