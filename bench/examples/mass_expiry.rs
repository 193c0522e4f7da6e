//! N watchers of one presentity whose subscriptions all expire in the
//! same tick, on 1 and 2 shards, sans-IO (no sockets): the time of the
//! expiry step (timeout NOTIFYs written, unwatches applied on the
//! presentity's shard) per watcher. Removal must be O(1), so the time per
//! watcher must stay flat from 10,000 to 100,000 watchers.
//!
//!   cargo run --release -p bench --example mass_expiry -- [N...]

use presence_engine::core::Peer;
use presence_engine::shard::{CoreMsg, Outbox, Shard, ShardConfig};
use presence_engine::sip::{Limits, Message, response_to};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AOR: &str = "sip:popular@example.com";

struct Cluster {
    shards: Vec<Shard>,
    queue: VecDeque<(u16, CoreMsg)>,
}

impl Cluster {
    fn new(n: u16, epoch: Instant) -> Cluster {
        let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let shards = (0..n)
            .map(|i| {
                let mut cfg = ShardConfig::with_defaults(i, n, local);
                cfg.seed = 7;
                cfg.watch.min_notify_interval = Duration::ZERO;
                cfg.watch.window = usize::MAX;
                Shard::new(cfg, epoch)
            })
            .collect();
        Cluster { shards, queue: VecDeque::new() }
    }

    /// Carries out an outbox of shard `k`: NOTIFYs are answered 200 at once
    /// (`answer`), cross-shard messages delivered until none is left.
    fn run(&mut self, k: u16, now: Instant, out: &mut Outbox, answer: bool) {
        let mut work: VecDeque<(u16, Outbox)> = VecDeque::new();
        work.push_back((k, std::mem::take(out)));
        while let Some((k, o)) = work.pop_front() {
            for t in o.transmits {
                if answer && t.bytes.starts_with(b"NOTIFY") {
                    let wire = t.wire();
                    let m = Message::parse(&wire, &Limits::default()).unwrap();
                    let mut resp = Vec::new();
                    response_to(&mut resp, m.raw(), 200, "OK", None, None).finish(None, b"");
                    let mut o2 = Outbox { events_off: true, ..Outbox::default() };
                    self.shards[k as usize].on_message(now, t.to, &resp, &mut o2);
                    work.push_back((k, o2));
                }
            }
            self.queue.extend(o.to_shards);
            while let Some((dst, msg)) = self.queue.pop_front() {
                let mut o2 = Outbox { events_off: true, ..Outbox::default() };
                self.shards[dst as usize].on_shard_msg(now, msg, &mut o2);
                work.push_back((dst, o2));
            }
        }
    }
}

fn subscribe(i: u32) -> Vec<u8> {
    format!(
        "SUBSCRIBE {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;rport;branch=z9hG4bKme{i}\r\nMax-Forwards: 70\r\n\
From: <sip:w{i}@example.net>;tag=f{i}\r\nTo: <{AOR}>\r\nCall-ID: me{i}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@198.51.100.7:5060>\r\n\
Event: presence\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Seconds for the expiry of `n` watchers on `shards` shards.
fn expiry(n: u32, shards: u16) -> Duration {
    let t0 = Instant::now();
    let mut c = Cluster::new(shards, t0);
    let peer = Peer::udp("198.51.100.7:5060".parse().unwrap());
    for i in 0..n {
        let k = (i % shards as u32) as u16;
        let mut out = Outbox { events_off: true, ..Outbox::default() };
        c.shards[k as usize].on_message(t0, peer, &subscribe(i), &mut out);
        c.run(k, t0, &mut out, true);
    }
    let held: usize = c.shards.iter().map(|s| s.census().subscriptions).sum();
    assert_eq!(held, n as usize, "every SUBSCRIBE made a subscription");
    // Every subscription expires at t0 + 60 s: one tick ends them all.
    let at = t0 + Duration::from_secs(61);
    let start = Instant::now();
    for k in 0..shards {
        let mut out = Outbox { events_off: true, ..Outbox::default() };
        c.shards[k as usize].on_time(at, &mut out);
        c.run(k, at, &mut out, false);
    }
    let took = start.elapsed();
    let left: usize = c.shards.iter().map(|s| s.census().subscriptions + s.census().watched).sum();
    assert_eq!(left, 0, "every subscription and the presentity's watcher list are gone");
    took
}

fn main() {
    let sizes: Vec<u32> = std::env::args().skip(1).map(|a| a.parse().expect("a watcher count")).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000] } else { sizes };
    println!("{:>8} {:>7} {:>12} {:>14}", "watchers", "shards", "expiry ms", "ns per watcher");
    for shards in [1u16, 2] {
        for &n in &sizes {
            let t = expiry(n, shards);
            println!("{n:>8} {shards:>7} {:>12.1} {:>14.0}", t.as_secs_f64() * 1e3, t.as_nanos() as f64 / n as f64);
        }
    }
}
