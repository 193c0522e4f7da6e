//! Deterministic simulation of the multi-shard protocol (see
//! `simworld/mod.rs` for the world and its invariants).
//!
//! `SIM_START=S SIM_SEEDS=N` runs other seeds; a failure prints its seed,
//! and `SIM_START=<seed> SIM_SEEDS=1 SIM_TRACE=1` replays it with every
//! cross-shard message printed. `bench/sim-seeds.sh` runs many seeds in
//! release mode.

mod simworld;

use simworld::seeds::seeds;
use simworld::{Pinned, run};

/// Runs `seeds`; panics listing every failing seed.
fn run_all(seeds: std::ops::Range<u64>, pinned: Pinned) {
    let mut failures = Vec::new();
    let (mut delivered, mut notifies, mut shed, mut checked, mut peak) = (0u64, 0u64, 0u64, 0usize, 0usize);
    let (mut agent_subs, mut agent_notifies) = (0u64, 0u64);
    let count = seeds.end - seeds.start;
    for seed in seeds {
        match run(seed, pinned) {
            Ok(o) => {
                delivered += o.delivered;
                notifies += o.notifies_seen;
                shed += o.shed;
                checked += o.subscriptions_checked;
                peak = peak.max(o.peak_held);
                agent_subs += o.agent_subscriptions;
                agent_notifies += o.agent_notifies;
            }
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "{count} seeds: {delivered} messages delivered, {notifies} NOTIFYs taken, {shed} forwards shed, \
{checked} live subscriptions checked, at most {peak} messages held for one shard, \
{agent_subs} agent subscriptions, {agent_notifies} agent NOTIFYs taken"
    );
    // The presence agents are exercised, not only present.
    if count >= 100 {
        assert!(agent_subs > count && agent_notifies > count, "agents barely exercised: {agent_subs} subscriptions, {agent_notifies} NOTIFYs");
    }
    assert!(failures.is_empty(), "{} of {count} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

/// Seeds choose 1 to 8 shards, queue capacities from 1, faults, traffic.
#[test]
fn a_thousand_seeds_keep_every_invariant() {
    run_all(seeds(1000), Pinned::default());
}

/// Queues of one message between 2 to 8 shards: everything that does not
/// fit waits, and nothing is lost.
#[test]
fn queue_capacity_one_loses_nothing() {
    for shards in [2, 3, 8] {
        run_all(seeds(100), Pinned { shards: Some(shards), queue_capacity: Some(1), ..Pinned::default() });
    }
}

/// The same seed gives the same run, byte for byte.
#[test]
fn the_same_seed_replays_exactly() {
    for seed in 0..20 {
        let a = run(seed, Pinned::default()).unwrap_or_else(|e| panic!("{e}"));
        let b = run(seed, Pinned::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a, b, "seed {seed} ran differently twice");
    }
    let a = run(1, Pinned::default()).unwrap();
    let b = run(2, Pinned::default()).unwrap();
    assert_ne!(a.trace, b.trace, "different seeds, different runs");
}

/// The invariants catch what the reactor used to do: drop a state-carrying
/// message when a shard queue is full.
#[test]
fn dropping_on_full_queues_is_caught() {
    let pinned = Pinned { shards: Some(3), queue_capacity: Some(1), drop_when_full: true };
    let failed = (0..100).filter(|&seed| run(seed, pinned).is_err()).count();
    eprintln!("{failed} of 100 seeds caught lost cross-shard messages");
    assert!(failed > 10, "only {failed} of 100 seeds noticed lost cross-shard messages");
}
