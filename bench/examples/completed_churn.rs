//! The Timer J log (`core::completed`) under a steady churn, sans-IO:
//! RATE completed transactions a second, each held 32 s, for SECONDS of
//! virtual time, with a PUBLISH-sized key and answer. Prints the process's
//! RSS each virtual 4 s and the bytes per held transaction, so that growth
//! at a constant held count (an index that keeps doubling, arena chunks the
//! allocator does not reuse) shows as a rising line.
//!
//!   cargo run --release -p bench --example completed_churn -- [RATE] [SECONDS]

use presence_engine::core::completed::Completed;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(45_000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(120);
    let hold = Duration::from_secs(32);
    let t0 = Instant::now();
    let before = rss_bytes();
    let mut log = Completed::new(hold, t0);
    let hasher = std::hash::RandomState::new();
    // A loadgen branch, host and port, method; an answer with a tag, an
    // entity tag and Expires (as `StoredAnswer::write` packs a 200).
    let answer = [0u8; 52];
    let step = Duration::from_nanos(1_000_000_000 / rate);
    let mut now = t0;
    let mut key = Vec::with_capacity(64);
    let wall = Instant::now();
    println!("{rate} completed/s held {} s, {seconds} s of virtual time", hold.as_secs());
    for n in 0..rate * seconds {
        key.clear();
        key.extend_from_slice(format!("z9hG4bK-lg-{n:016x}\0127.0.0.1").as_bytes());
        key.extend_from_slice(&5094u16.to_be_bytes());
        key.extend_from_slice(b"\0PUBLISH");
        log.insert(now, hasher.hash_one(&key), &key, &answer);
        now += step;
        if n % (rate / 200).max(1) == 0 {
            // The shard's 5 ms timer step.
            log.expire(now);
        }
        if n % (rate * 4) == 0 && n > 0 {
            let grown = rss_bytes().saturating_sub(before);
            println!(
                "t={:>4} s held {:>9} rss +{:>5} MiB = {:>4} B per held (arena {:>4} MiB)",
                (n / rate),
                log.len(),
                grown >> 20,
                grown / log.len().max(1) as u64,
                log.arena_bytes() >> 20
            );
        }
    }
    println!("{:.2} s of wall time", wall.elapsed().as_secs_f64());
}
