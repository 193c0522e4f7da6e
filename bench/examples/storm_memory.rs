//! What a NOTIFY storm leaves behind, counted by the allocator: one shard
//! driven without sockets, W watchers of one presentity (every NOTIFY
//! answered at once), then P PUBLISHes 100 ms apart in virtual time, then
//! 6 s (Timer K) and 35 s (Timer J) of nothing. Prints the bytes held,
//! and those in allocations over 1 KiB (tables, buffers), at each point:
//! what the storm leaves held is ours, not the allocator's.
//!
//! cargo run --release -p bench --example storm_memory -- 10000 100

use bench::counting::{LARGE, held, rss_bytes};
use bench::presence::{ok_to, publish, with_watchers};
use presence_engine::core::Peer;
use presence_engine::shard::{Outbox, Shard};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: bench::counting::Counting = bench::counting::Counting;

/// Answers every NOTIFY at `now`, and those the answers release, until
/// none is left; returns how many.
fn answer_all(shard: &mut Shard, now: Instant, out: &mut Outbox) -> usize {
    let (mut n, mut resp, mut next) = (0, Vec::with_capacity(512), Outbox::default());
    while !out.transmits.is_empty() {
        for t in out.transmits.drain(..) {
            if t.bytes.starts_with(b"NOTIFY") {
                n += 1;
                resp.clear();
                ok_to(&t.wire(), &mut resp);
                shard.on_message(now, Peer::udp(t.to.addr), &resp, &mut next);
            }
        }
        std::mem::swap(out, &mut next);
        out.events.clear();
    }
    n
}

fn idle(shard: &mut Shard, now: &mut Instant, d: Duration, out: &mut Outbox) {
    let end = *now + d;
    while *now < end {
        *now += Duration::from_millis(10);
        shard.on_time(*now, out);
        answer_all(shard, *now, out);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let watchers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let publishes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let mut shard = with_watchers(watchers);
    let mut out = Outbox::default();
    // with_watchers runs on the real clock: continue from it.
    let mut now = Instant::now();
    idle(&mut shard, &mut now, Duration::from_secs(40), &mut out);
    let show = |what: &str| {
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        println!(
            "{what:>26}: held {:7.2} MiB, in allocations over 1 KiB {:7.2} MiB, RSS {:7.2} MiB",
            mib(held()),
            mib(LARGE.load(Ordering::Relaxed)),
            mib(rss_bytes())
        );
    };
    show("subscriptions standing");
    let mut notified = 0;
    for r in 0..publishes {
        let p = publish(r + 1, &format!("state {r}"));
        shard.on_message(now, Peer::udp("192.0.2.1:5060".parse().unwrap()), &p, &mut out);
        notified += answer_all(&mut shard, now, &mut out);
        for _ in 0..10 {
            now += Duration::from_millis(10);
            shard.on_time(now, &mut out);
            notified += answer_all(&mut shard, now, &mut out);
        }
    }
    show(&format!("after {notified} NOTIFYs"));
    idle(&mut shard, &mut now, Duration::from_secs(6), &mut out);
    show("6 s later (Timer K)");
    idle(&mut shard, &mut now, Duration::from_secs(29), &mut out);
    show("35 s later (Timer J)");
    println!("  census: {:?}", shard.census());
}
