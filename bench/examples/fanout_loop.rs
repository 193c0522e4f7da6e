//! The sans-IO fan-out loop alone, for profilers (callgrind counts
//! instructions, which holds still on a noisy VM): W watchers, R changes,
//! every NOTIFY answered.
//!
//! cargo build --release -p bench --example fanout_loop
//! valgrind --tool=callgrind target/release/examples/fanout_loop 1000 20

use bench::presence::{answer_all, publish, with_watchers};
use presence_engine::core::Peer;
use presence_engine::shard::Outbox;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let watchers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut shard = with_watchers(watchers);
    let (mut out, mut scratch) = (Outbox::default(), Outbox::default());
    let t = Instant::now();
    let mut notified = 0;
    for r in 0..rounds {
        let p = publish(r + 1, &format!("state {r}"));
        shard.on_message(Instant::now(), Peer::udp("192.0.2.1:5060".parse().unwrap()), &p, &mut out);
        notified += answer_all(&mut shard, &mut out, &mut scratch);
    }
    let dt = t.elapsed();
    println!("{notified} NOTIFYs in {dt:?}: {:.2} µs per watcher (NOTIFY built, 200 parsed and matched)", dt.as_secs_f64() * 1e6 / notified as f64);
}
