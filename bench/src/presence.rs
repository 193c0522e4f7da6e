//! A one-shard presence core driven without sockets, for benchmarks: N
//! watchers subscribed to one presentity, and the request bytes to change
//! its state.

use presence_engine::core::Peer;
use presence_engine::shard::{Outbox, Shard, ShardConfig};
use presence_engine::sip::{Limits, Message};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub const PRESENTITY: &str = "sip:popular@example.com";

pub fn shard() -> Shard {
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.watch.min_notify_interval = Duration::ZERO;
    Shard::new(cfg, Instant::now())
}

pub fn watcher_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5060))
}

pub fn subscribe(i: usize) -> Vec<u8> {
    let a = watcher_addr(i);
    format!(
        "SUBSCRIBE {PRESENTITY} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bKs{i}\r\nMax-Forwards: 70\r\n\
From: <sip:w{i}@example.net>;tag=f{i}\r\nTo: <{PRESENTITY}>\r\nCall-ID: sub{i}@example.net\r\nCSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:w{i}@{a}>\r\nEvent: presence\r\nAccept: application/pidf+xml\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A PUBLISH of `note` (initial, so every one changes the document).
pub fn publish(seq: usize, note: &str) -> Vec<u8> {
    let doc = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" \
xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{PRESENTITY}\">\n\
<tuple id=\"t1\"><status><basic>open</basic></status><contact>sip:popular@192.0.2.1</contact><note>{note}</note></tuple>\n\
<dm:person id=\"p1\"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>\n</presence>\n"
    );
    format!(
        "PUBLISH {PRESENTITY} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp{seq}\r\nMax-Forwards: 70\r\n\
From: <{PRESENTITY}>;tag=p\r\nTo: <{PRESENTITY}>\r\nCall-ID: pub{seq}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n\
Expires: 3600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        doc.len()
    )
    .into_bytes()
}

/// A 200 to a NOTIFY the shard sent.
pub fn ok_to(notify: &[u8], out: &mut Vec<u8>) {
    let m = Message::parse(notify, &Limits::default()).expect("NOTIFY parses");
    presence_engine::sip::response_to(out, m.raw(), 200, "OK", None, None).finish(None, b"");
}

/// Feeds every NOTIFY in `out` its 200; returns how many there were.
pub fn answer_all(shard: &mut Shard, out: &mut Outbox, scratch: &mut Outbox) -> usize {
    let mut n = 0;
    let mut resp = Vec::with_capacity(512);
    let now = Instant::now();
    for t in out.transmits.drain(..) {
        if !t.bytes.starts_with(b"NOTIFY") {
            continue;
        }
        n += 1;
        resp.clear();
        ok_to(&t.wire(), &mut resp);
        shard.on_message(now, Peer::udp(t.to.addr), &resp, scratch);
    }
    out.events.clear();
    scratch.transmits.clear();
    scratch.events.clear();
    n
}

/// A shard with `n` active watchers of [`PRESENTITY`], all idle.
pub fn with_watchers(n: usize) -> Shard {
    let mut s = shard();
    let mut out = Outbox::default();
    let mut scratch = Outbox::default();
    let now = Instant::now();
    for i in 0..n {
        s.on_message(now, Peer::udp(watcher_addr(i)), &subscribe(i), &mut out);
        answer_all(&mut s, &mut out, &mut scratch);
    }
    s
}
