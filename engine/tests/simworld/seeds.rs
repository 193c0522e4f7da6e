//! Which seeds a simulation test runs: `default` of them from 0, or
//! `SIM_SEEDS` from `SIM_START` (to run more, or to replay one).

pub fn seeds(default: u64) -> std::ops::Range<u64> {
    let start = std::env::var("SIM_START").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let count = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default);
    start..start + count
}
