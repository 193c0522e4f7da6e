//! Parses one sample message in a loop: a target for `perf record` or
//! `valgrind --tool=callgrind` when looking into parser cost.
//!
//! Run: `cargo run --release -p bench --example parse_loop -- publish_pidf 1000000`

use bench::samples;
use presence_engine::sip::{Limits, Message};
use std::hint::black_box;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "publish_pidf".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let bytes = samples::ALL.iter().find(|(k, _)| *k == name).map(|(_, b)| *b).expect("sample name");
    let limits = Limits::default();
    let only_full = args.next().as_deref() == Some("full");
    let t = std::time::Instant::now();
    let mut naive_sum = 0usize;
    for _ in 0..if only_full { 0 } else { n } {
        naive_sum += bench::naive_split(black_box(bytes));
    }
    let naive_ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{name}: naive memchr splitter {naive_ns:.0} ns/msg (checksum {naive_sum})");
    let t = std::time::Instant::now();
    let mut split_sum = 0usize;
    for _ in 0..if only_full { 0 } else { n } {
        split_sum += presence_engine::sip::RawMessage::split(black_box(bytes), &limits).unwrap().head_len();
    }
    let split_ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{name}: split only {split_ns:.0} ns/msg (checksum {split_sum})");
    let t = std::time::Instant::now();
    let mut sum = 0u64;
    for _ in 0..n {
        let m = Message::parse(black_box(bytes), &limits).unwrap();
        sum += m.cseq().seq as u64;
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    println!("{name}: {ns:.0} ns/msg, {:.0} msgs/s, {:.0} MB/s (checksum {sum})", 1e9 / ns, bytes.len() as f64 * 1e3 / ns);
}
