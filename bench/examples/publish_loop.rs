//! The sans-IO PUBLISH path alone, for profilers (callgrind counts
//! instructions, which holds still on a noisy VM): U users each publish
//! once, then modify R times with the entity tag they got back, the
//! documents loadgen sends.
//!
//! cargo build --release -p bench --example publish_loop
//! valgrind --tool=callgrind target/release/examples/publish_loop 1000 20

use presence_engine::core::{Outbox, Peer};
use presence_engine::sip::{HeaderName, Limits, Message};
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn publish(u: usize, seq: usize, etag: Option<&str>) -> Vec<u8> {
    let aor = format!("sip:ue{u}@example.com");
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"lg1c16939d\"><status><basic>open</basic></status><contact>sip:ue{u}@127.0.0.1:42267</contact><note>lg:1c16939d:{u}:{seq}:130194</note></tuple></presence>\n"
    );
    let if_match = etag.map(|e| format!("SIP-If-Match: {e}\r\n")).unwrap_or_default();
    format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:42267;rport;branch=z9hG4bK-lg{u:x}x{seq:x}\r\nMax-Forwards: 70\r\n\
From: <{aor}>;tag=p{u}\r\nTo: <{aor}>\r\nCall-ID: pub-{u}-{seq}@loadgen\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n{if_match}Expires: 3600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        doc.len()
    )
    .into_bytes()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let users: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut shard = bench::presence::shard();
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    let peer = Peer::udp("127.0.0.1:42267".parse().unwrap());
    // Requests are built up front so the loop measures the server only.
    let mut etags: Vec<Option<String>> = vec![None; users];
    let t = Instant::now();
    let mut done = 0;
    for seq in 0..=rounds {
        let reqs: Vec<Vec<u8>> = (0..users).map(|u| publish(u, seq, etags[u].as_deref())).collect();
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
