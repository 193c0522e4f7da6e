//! The sans-IO SUBSCRIBE path alone, for profilers (callgrind counts
//! instructions, which holds still on a noisy VM): N new dialogs, each a
//! SUBSCRIBE answered 200 and its first NOTIFY answered by the watcher.
//!
//! cargo build --release -p bench --example subscribe_loop
//! valgrind --tool=callgrind target/release/examples/subscribe_loop 20000

use bench::presence::{answer_all, shard, subscribe, watcher_addr};
use presence_engine::core::Peer;
use presence_engine::shard::Outbox;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut s = shard();
    let requests: Vec<Vec<u8>> = (0..n).map(subscribe).collect();
    // Without the per-request events, as presenced runs below debug level.
    let (mut out, mut scratch) = (Outbox { events_off: true, ..Outbox::default() }, Outbox { events_off: true, ..Outbox::default() });
    let t = Instant::now();
    let mut notified = 0;
    for (i, req) in requests.iter().enumerate() {
        s.on_message(Instant::now(), Peer::udp(watcher_addr(i)), req, &mut out);
        notified += answer_all(&mut s, &mut out, &mut scratch);
    }
    let dt = t.elapsed();
    println!("{n} SUBSCRIBEs, {notified} NOTIFYs answered in {dt:?}: {:.2} µs per dialog", dt.as_secs_f64() * 1e6 / n as f64);
}
