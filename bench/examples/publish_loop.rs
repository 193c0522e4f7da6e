//! The sans-IO PUBLISH path alone, for profilers (callgrind counts
//! instructions, which holds still on a noisy VM): U users each publish
//! once, then modify R times with the entity tag they got back: the
//! requests loadgen sends.
//!
//! cargo build --release -p bench --example publish_loop
//! valgrind --tool=callgrind target/release/examples/publish_loop 1000 20

use loadgen::scenario::{Ctx, Marker};
use loadgen::transport::TransportKind;
use presence_engine::core::Peer;
use presence_engine::shard::Outbox;
use presence_engine::sip::{HeaderName, Limits, Message};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut shard = bench::presence::shard();
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    let peer = Peer::udp("127.0.0.1:42267".parse().unwrap());
    let ctx = Ctx { domain: "example.com", run: 1, transport: TransportKind::Udp, local: peer.addr, oc: false };
    // Requests are built up front so the loop measures the server only.
    let mut etags: Vec<Option<String>> = vec![None; users];
    let t = Instant::now();
    let mut done = 0;
    for seq in 0..=rounds {
        let reqs: Vec<Vec<u8>> = (0..users)
            .map(|u| {
                let marker = Marker { run: 1, presentity: u, seq: seq as u32, sent_us: 0 };
                let branch = (seq * users + u) as u64;
                ctx.publish(branch, u, seq as u32, etags[u].as_deref().map(str::as_bytes), marker)
            })
            .collect();
        for (u, r) in reqs.iter().enumerate() {
            shard.on_message(Instant::now(), peer, r, &mut out);
            for tx in out.transmits.drain(..) {
                let m = Message::parse(&tx.bytes, &Limits::default()).expect("a response");
                assert_eq!(m.status(), Some(200));
                etags[u] = m.header(HeaderName::SipETag).map(|e| String::from_utf8_lossy(e).into_owned());
                done += 1;
            }
            out.events.clear();
        }
    }
    let dt = t.elapsed();
    println!("{done} PUBLISHes in {dt:?}: {:.2} µs each (request building included)", dt.as_secs_f64() * 1e6 / done as f64);
}
