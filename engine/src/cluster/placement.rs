//! Which node should own a partition, and which would inherit it.
//!
//! Rendezvous (highest random weight) hashing: every node scores every
//! partition by a fixed-seed hash of the pair, and the live node with the
//! highest score should own it. Every node computes the same answer from
//! the same list of live nodes, with no table to agree on. When a node
//! joins, only the partitions it now scores highest on move to it (about
//! 1/N of them); when one leaves, only its own move, each to the node
//! that scored second, which is why that node keeps a warm replica.

use super::NodeId;
use super::partition::Partition;

const SEEDS: [u64; 4] = [0x6a09_e667_f3bc_c908, 0xbb67_ae85_84ca_a73b, 0x3c6e_f372_fe94_f82b, 0xa54f_f53a_5f1d_36f1];

/// The score of `node` for `p`; ties (practically never) go to the lower id.
fn score(p: Partition, node: NodeId) -> (u64, std::cmp::Reverse<NodeId>) {
    let h = ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]).hash_one((p.0, node));
    (h, std::cmp::Reverse(node))
}

/// The node that should own `p` among `live`, if any is.
pub fn owner(p: Partition, live: &[NodeId]) -> Option<NodeId> {
    live.iter().copied().max_by_key(|&n| score(p, n))
}

/// The live nodes in the order they would own `p`: the owner first, then
/// the node that inherits it if the owner goes, and so on.
pub fn succession(p: Partition, live: &[NodeId]) -> Vec<NodeId> {
    let mut order = live.to_vec();
    order.sort_by_key(|&n| std::cmp::Reverse(score(p, n)));
    order.dedup();
    order
}

/// Whether `node` should keep `p` warm: it owns it, or is among the
/// `replicas` next in line.
pub fn keeps_warm(p: Partition, live: &[NodeId], node: NodeId, replicas: usize) -> bool {
    succession(p, live).iter().take(replicas + 1).any(|&n| n == node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(live: &[NodeId], count: u16) -> Vec<Option<NodeId>> {
        Partition::all(count).map(|p| owner(p, live)).collect()
    }

    #[test]
    fn every_node_gets_a_fair_share() {
        let live = [1, 2, 3];
        let mut share = [0u32; 4];
        for o in owners(&live, 1024) {
            share[o.unwrap() as usize] += 1;
        }
        assert!(share[1..].iter().all(|&n| (280..400).contains(&n)), "{share:?}");
    }

    #[test]
    fn a_joining_node_takes_only_partitions_that_become_its_own() {
        let before = owners(&[1, 2, 3], 1024);
        let after = owners(&[1, 2, 3, 4], 1024);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b != a {
                assert_eq!(*a, Some(4), "a partition moved between old nodes");
                moved += 1;
            }
        }
        assert!((200..320).contains(&moved), "{moved} moved to the fourth node");
    }

    #[test]
    fn a_leaving_node_hands_each_partition_to_the_next_in_line() {
        let live = [1, 2, 3, 4];
        for p in Partition::all(256) {
            let line = succession(p, &live);
            let without: Vec<NodeId> = live.iter().copied().filter(|&n| n != line[0]).collect();
            assert_eq!(owner(p, &without), Some(line[1]));
            assert!(keeps_warm(p, &live, line[1], 1));
            assert!(!keeps_warm(p, &live, line[2], 1));
        }
    }

    #[test]
    fn the_order_of_the_list_does_not_matter_and_nobody_owns_without_nodes() {
        for p in Partition::all(64) {
            assert_eq!(owner(p, &[3, 1, 2]), owner(p, &[2, 3, 1]));
        }
        assert_eq!(owner(Partition(0), &[]), None);
    }
}
