//! Bytes held per entry, counted by the allocator: a regression in what a
//! presentity or a subscription keeps fails here, deterministically. RSS
//! (allocator overhead included, the figure issue 18's target is set on)
//! is measured by `bench/examples/entry_memory.rs`; the budgets below are
//! that run's bytes held at 20,000 entries plus about 10 %.
//!
//! One test function: every allocation of this process is counted, so
//! nothing else may run beside it.

use presence_engine::core::Peer;
use presence_engine::shard::{Outbox, Shard, ShardConfig};
use presence_engine::sip::{Limits, Message, response_to};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: usize = 20_000;
const PUBLICATION_BUDGET: usize = 700;
const SUBSCRIPTION_BUDGET: usize = 940;

fn addr(i: usize) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5060))
}

fn publish(i: usize) -> Vec<u8> {
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:user{i}@example.com\">\
<tuple id=\"t{i}\"><status><basic>open</basic></status><contact>sip:user{i}@{}</contact><note>in the office</note></tuple></presence>\n",
        addr(i)
    );
    format!(
        "PUBLISH sip:user{i}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKp{i}\r\nMax-Forwards: 70\r\n\
From: <sip:user{i}@example.com>;tag=p{i}\r\nTo: <sip:user{i}@example.com>\r\nCall-ID: pub-{i}@example.com\r\nCSeq: 1 PUBLISH\r\n\
Event: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        addr(i),
        doc.len()
    )
    .into_bytes()
}

fn subscribe(i: usize) -> Vec<u8> {
    format!(
        "SUBSCRIBE sip:user{i}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKs{i}\r\nMax-Forwards: 70\r\n\
From: <sip:watcher{i}@example.net>;tag=w{i}\r\nTo: <sip:user{i}@example.com>\r\nCall-ID: sub-{i}@example.net\r\nCSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:watcher{i}@{a}>\r\nEvent: presence\r\nAccept: application/pidf+xml\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n",
        a = addr(i)
    )
    .into_bytes()
}

/// Feeds `requests` to a fresh shard, answers its NOTIFYs, lets 40 s pass
/// (Timers J and K), and returns the bytes held per request.
fn held_per_entry(requests: impl Fn(usize) -> Vec<u8>) -> usize {
    let t0 = Instant::now();
    let mut shard = Shard::new(ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap()), t0);
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    let mut scratch = Outbox { events_off: true, ..Outbox::default() };
    let mut resp = Vec::with_capacity(512);
    let before = HELD.load(Ordering::Relaxed);
    let mut answer = |shard: &mut Shard, now: Instant, out: &mut Outbox| {
        for t in out.transmits.drain(..) {
            if t.bytes.starts_with(b"NOTIFY") {
                let wire = t.wire();
                let m = Message::parse(&wire, &Limits::default()).expect("a NOTIFY parses");
                resp.clear();
                response_to(&mut resp, m.raw(), 200, "OK", None, None).finish(None, b"");
                shard.on_message(now, Peer::udp(t.to.addr), &resp, &mut scratch);
                scratch.transmits.clear();
            } else {
                assert!(t.bytes.starts_with(b"SIP/2.0 200 "), "{}", String::from_utf8_lossy(&t.bytes));
            }
        }
    };
    for i in 0..N {
        let now = t0 + Duration::from_micros(i as u64 * 10);
        shard.on_message(now, Peer::udp(addr(i)), &requests(i), &mut out);
        answer(&mut shard, now, &mut out);
    }
    let mut now = t0 + Duration::from_micros(N as u64 * 10);
    for _ in 0..400 {
        now += Duration::from_millis(100);
        shard.on_time(now, &mut out);
        answer(&mut shard, now, &mut out);
    }
    let census = shard.census();
    assert_eq!((census.server_transactions, census.client_transactions), (0, 0), "every transaction has ended");
    let held = HELD.load(Ordering::Relaxed) - before;
    drop(shard);
    held / N
}

#[test]
fn bytes_held_per_presentity_and_per_subscription_stay_within_budget() {
    let publication = held_per_entry(publish);
    let subscription = held_per_entry(subscribe);
    println!("bytes held: {publication} per presentity with one publication, {subscription} per subscription");
    assert!(publication <= PUBLICATION_BUDGET, "a presentity with one publication holds {publication} bytes, budget {PUBLICATION_BUDGET}");
    assert!(subscription <= SUBSCRIPTION_BUDGET, "a subscription holds {subscription} bytes, budget {SUBSCRIPTION_BUDGET}");
}
