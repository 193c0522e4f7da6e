//! Where a shard's randomness comes from: one seed, given in its
//! configuration, expanded by ChaCha12. Every identifier the server mints
//! (to-tags, branches, Call-IDs, entity tags) and every hash seed derives
//! from it, so a simulation replays byte for byte from its seed while
//! `presenced` seeds it from the operating system and an observer of any
//! number of identifiers can predict none of the next ones.

use rand::rngs::ChaCha12Rng;
use rand::{Rng, SeedableRng};

pub struct Entropy {
    rng: ChaCha12Rng,
}

impl Entropy {
    /// The stream of shard `shard` under the process seed `seed`: shards
    /// share one seed yet draw independent streams.
    pub fn for_shard(seed: u64, shard: u16) -> Entropy {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        key[8..10].copy_from_slice(&shard.to_le_bytes());
        key[31] = 0x5a;
        Entropy { rng: ChaCha12Rng::from_seed(key) }
    }

    /// An independent stream for one component (its own identifiers and
    /// hash seeds), so that components draw without sharing a borrow.
    pub fn fork(&mut self) -> Entropy {
        let mut key = [0u8; 32];
        self.rng.fill_bytes(&mut key);
        Entropy { rng: ChaCha12Rng::from_seed(key) }
    }

    pub fn u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform draw below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Widening multiply: bias below 2^-64 · n, nothing a test can see.
        ((self.u64() as u128 * n as u128) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64) < p
    }

    /// Seeds for a hash table: iteration order then depends on the seed
    /// alone, and a client cannot aim keys at one bucket without it.
    pub fn hasher(&mut self) -> ahash::RandomState {
        ahash::RandomState::with_seeds(self.u64(), self.u64(), self.u64(), self.u64())
    }

    /// A fresh seed from the operating system's generator, for a server
    /// process. Panics only if the OS has no generator, which a server
    /// cannot run without.
    pub fn os_seed() -> u64 {
        use rand::TryRng;
        let mut b = [0u8; 8];
        rand::rngs::SysRng.try_fill_bytes(&mut b).expect("the OS random generator");
        u64::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_shards_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut e = Entropy::for_shard(7, 0);
                move |_| e.u64()
            })
            .collect();
        let mut e = Entropy::for_shard(7, 0);
        assert_eq!(a, (0..4).map(|_| e.u64()).collect::<Vec<_>>());
        let mut other = Entropy::for_shard(7, 1);
        assert_ne!(a[0], other.u64());
        let mut f1 = Entropy::for_shard(7, 0).fork();
        let mut f2 = Entropy::for_shard(7, 0).fork();
        assert_eq!(f1.u64(), f2.u64());
    }

    #[test]
    fn below_stays_below_and_spreads() {
        let mut e = Entropy::for_shard(1, 0);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            let v = e.below(5);
            seen[v as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
        assert_ne!(Entropy::os_seed(), Entropy::os_seed());
    }
}
