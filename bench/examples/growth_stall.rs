//! What a table doubling costs the request that triggers it: one shard,
//! driven without sockets, takes N new presentities (one PUBLISH each) or
//! N new subscriptions, and each request is timed alone. Run once with
//! the shard sized for nothing (tables grow, each doubling rehashes every
//! entry inside one request) and once sized for N (`[capacity]`,
//! `shard::Expected`).
//!
//! cargo run --release -p bench --example growth_stall -- publish 1000000
//! cargo run --release -p bench --example growth_stall -- subscribe 1000000

use loadgen::scenario::{Ctx, Marker};
use loadgen::transport::TransportKind;
use presence_engine::core::Peer;
use presence_engine::shard::{Expected, Outbox, Shard, ShardConfig};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn run(kind: &str, n: usize, expected: usize) {
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.watch.min_notify_interval = Duration::ZERO;
    cfg.expected = Expected { presentities: expected, subscriptions: expected };
    let built = Instant::now();
    let mut shard = Shard::new(cfg, built);
    let sizing = built.elapsed();
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    let peer = Peer::udp("127.0.0.1:42267".parse().unwrap());
    let ctx = Ctx { domain: "example.com", run: 1, transport: TransportKind::Udp, local: peer.addr, oc: false };
    let mut took: Vec<(Duration, usize)> = Vec::with_capacity(n);
    let mut scratch = Outbox { events_off: true, ..Outbox::default() };
    let mut resp = Vec::with_capacity(512);
    let start = Instant::now();
    for i in 0..n {
        let req = match kind {
            "publish" => ctx.publish(i as u64, i, 1, None, Marker { run: 1, presentity: i, seq: 1, sent_us: 0 }),
            _ => ctx.subscribe(i as u64, &format!("w{i}"), i, i, 3600, None),
        };
        let now = start + Duration::from_micros(i as u64 * 10);
        let t = Instant::now();
        shard.on_message(now, peer, &req, &mut out);
        took.push((t.elapsed(), i));
        // The watcher answers its NOTIFY (untimed), as a live one does.
        for tx in std::mem::take(&mut out.transmits) {
            if tx.bytes.starts_with(b"NOTIFY") {
                resp.clear();
                bench::presence::ok_to(&tx.wire(), &mut resp);
                shard.on_message(now, Peer::udp(tx.to.addr), &resp, &mut scratch);
                scratch.transmits.clear();
            }
        }
        out.events.clear();
        if i % 4096 == 0 {
            // Timers run as in the server, outside any request.
            shard.on_time(now, &mut out);
            out.transmits.clear();
        }
    }
    let mut sorted: Vec<Duration> = took.iter().map(|t| t.0).collect();
    sorted.sort_unstable();
    let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p) as usize];
    took.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
    let slowest: Vec<String> = took.iter().take(5).map(|(d, i)| format!("#{i} {:.1} ms", d.as_secs_f64() * 1e3)).collect();
    println!(
        "{n} {kind}, sized for {expected} (sizing took {:.0} ms): p50 {:.1} us, p99 {:.1} us, p99.99 {:.0} us, max {:.1} ms; slowest: {}",
        sizing.as_secs_f64() * 1e3,
        q(0.5).as_secs_f64() * 1e6,
        q(0.99).as_secs_f64() * 1e6,
        q(0.9999).as_secs_f64() * 1e6,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        slowest.join(", ")
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "publish".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    if !matches!(kind.as_str(), "publish" | "subscribe") {
        eprintln!("usage: growth_stall publish|subscribe [N]");
        std::process::exit(2);
    }
    // As presenced runs (reactor::memory): no transparent huge pages.
    presence_engine::reactor::memory::disable_transparent_huge_pages().expect("prctl");
    run(&kind, n, 0);
    run(&kind, n, n);
}
