//! Partitions: the unit of ownership between nodes.
//!
//! A presentity's partition is its AOR's fixed-seed hash modulo the
//! partition count, the hash its shard is chosen by. The count is fixed
//! for the life of a cluster's data (default 1024): changing it would
//! move presentities between partitions, and so between owners and log
//! subjects.

use crate::core::ids::aor_hash;

/// The default number of partitions: many more than nodes, so a node's
/// share moves in small steps, few enough that a node can hold a lease
/// on each of its own.
pub const DEFAULT_PARTITIONS: u16 = 1024;

/// One partition of the presentities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition(pub u16);

/// The partition of the presentity with normalised AOR `aor`.
pub fn partition_of(aor: &[u8], partitions: u16) -> Partition {
    Partition((aor_hash(aor) % partitions.max(1) as u64) as u16)
}

impl Partition {
    /// Every partition of a cluster of `count`.
    pub fn all(count: u16) -> impl Iterator<Item = Partition> {
        (0..count).map(Partition)
    }

    /// The key of this partition's lease in the lease store, and the
    /// suffix of its log subject: `p0042`.
    pub fn key(self) -> String {
        format!("p{:04}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aor_always_falls_in_the_same_partition_and_all_are_used() {
        let mut used = vec![0u32; 64];
        for i in 0..10_000 {
            let aor = format!("sip:user{i}@example.com");
            let p = partition_of(aor.as_bytes(), 64);
            assert_eq!(p, partition_of(aor.as_bytes(), 64));
            used[p.0 as usize] += 1;
        }
        // 10,000 AORs over 64 partitions: about 156 each.
        assert!(used.iter().all(|&n| (100..220).contains(&n)), "{used:?}");
    }

    #[test]
    fn with_a_power_of_two_the_partition_decides_the_shard() {
        // A node with 2, 4 or 8 shards can give each partition to one shard:
        // partition mod shards is the shard the AOR's hash picks.
        for i in 0..1000 {
            let aor = format!("sip:u{i}@example.net");
            let p = partition_of(aor.as_bytes(), DEFAULT_PARTITIONS);
            for shards in [1u16, 2, 4, 8] {
                assert_eq!(p.0 % shards, crate::core::ids::owner_of(aor.as_bytes(), shards));
            }
        }
    }

    #[test]
    fn keys_sort_as_partitions_do() {
        assert_eq!(Partition(7).key(), "p0007");
        assert!(Partition(9).key() < Partition(10).key());
    }
}
