//! Memory per entry, measured: one shard driven without sockets is given
//! N presentities with one publication each, or N subscriptions (one
//! watcher per presentity, each NOTIFY answered), then a virtual 40 s so
//! that Timer J and Timer K have let every transaction go. It prints, per
//! entry, the growth of the process's RSS (allocator overhead and all,
//! the figure issue 18 sets its 1 KiB target on) and of the bytes the
//! program holds allocated (what the tables ask for), and the tables'
//! census, so a regression shows which table grew.
//!
//! cargo run --release -p bench --example entry_memory -- publish 300000
//! cargo run --release -p bench --example entry_memory -- subscribe 300000

use bench::counting::{LIVE, held as held_now, rss_bytes};
use loadgen::scenario::{Ctx, Marker};
use loadgen::transport::TransportKind;
use presence_engine::core::Peer;
use presence_engine::shard::{Outbox, Shard};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: bench::counting::Counting = bench::counting::Counting;

/// Answers every NOTIFY in `out` with a 200, as a watcher does.
fn answer_notifies(shard: &mut Shard, now: Instant, out: &mut Outbox, scratch: &mut Outbox, resp: &mut Vec<u8>) {
    for t in out.transmits.drain(..) {
        if t.bytes.starts_with(b"NOTIFY") {
            resp.clear();
            bench::presence::ok_to(&t.wire(), resp);
            shard.on_message(now, Peer::udp(t.to.addr), resp, scratch);
        }
    }
    out.events.clear();
    scratch.transmits.clear();
    scratch.events.clear();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "publish".into());
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300_000);
    if !matches!(kind.as_str(), "publish" | "subscribe") {
        eprintln!("usage: entry_memory publish|subscribe [N]");
        std::process::exit(2);
    }
    let mut shard = bench::presence::shard();
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    let mut scratch = Outbox { events_off: true, ..Outbox::default() };
    let mut resp = Vec::with_capacity(512);
    let peer = Peer::udp("127.0.0.1:42267".parse().unwrap());
    let ctx = Ctx { domain: "example.com", run: 1, transport: TransportKind::Udp, local: peer.addr, oc: false };
    let start = Instant::now();
    let mut now = start;
    // Settle what the first requests allocate once (lazy statics, the
    // outboxes' buffers) before the baseline is read.
    let (rss0, held0) = (rss_bytes(), held_now());
    for i in 0..n {
        let req = match kind.as_str() {
            "publish" => ctx.publish(i as u64, i, 1, None, Marker { run: 1, presentity: i, seq: 1, sent_us: 0 }),
            _ => ctx.subscribe(i as u64, &format!("w{i}"), i, i, 3600, None),
        };
        shard.on_message(now, peer, &req, &mut out);
        answer_notifies(&mut shard, now, &mut out, &mut scratch, &mut resp);
        if i % 1024 == 0 {
            // Time moves as it would at about 100k requests a second.
            now = start + Duration::from_micros(i as u64 * 10);
            shard.on_time(now, &mut out);
            answer_notifies(&mut shard, now, &mut out, &mut scratch, &mut resp);
        }
    }
    let loaded = shard.census();
    let (rss_loaded, held_loaded) = (rss_bytes(), held_now());
    // 40 virtual seconds: Timer J (32 s) and Timer K let go.
    let end = now + Duration::from_secs(40);
    while now < end {
        now += Duration::from_millis(100);
        shard.on_time(now, &mut out);
        answer_notifies(&mut shard, now, &mut out, &mut scratch, &mut resp);
    }
    let drained = shard.census();
    let (rss1, held1) = (rss_bytes(), held_now());
    // The allocator gives freed pages back to the kernel some time after
    // (mimalloc's purge delay), on later calls; a server running for a
    // while has; this program asks for it at once.
    // SAFETY: mi_collect only walks the allocator's own structures.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let rss2 = rss_bytes();
    let per = |a: usize, b: usize| (a as f64 - b as f64) / n as f64;
    println!("{n} {kind} entries on one shard");
    println!(
        "  with transactions held: RSS {:.0} B/entry, held {:.0} B/entry ({} server, {} client transactions)",
        per(rss_loaded, rss0),
        per(held_loaded, held0),
        loaded.server_transactions,
        loaded.client_transactions
    );
    println!(
        "  after Timer J/K drain:  RSS {:.0} B/entry, held {:.0} B/entry ({} server, {} client transactions)",
        per(rss1, rss0),
        per(held1, held0),
        drained.server_transactions,
        drained.client_transactions
    );
    println!("  after the allocator gives back freed pages: RSS {:.0} B/entry", per(rss2, rss0));
    println!("  census: {drained:?}");
    if std::env::var_os("SIZES").is_some() {
        // Allocations held per entry by size; tables show as a few large.
        let mut rows: Vec<(usize, usize)> = LIVE.iter().enumerate().map(|(i, c)| (i * 8, c.load(Ordering::Relaxed))).filter(|r| r.1 >= n / 2).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.0 * r.1));
        for (size, count) in rows {
            println!("  {count:>9} allocations of up to {size:>4} B: {:.2} per entry", count as f64 / n as f64);
        }
    }
}
