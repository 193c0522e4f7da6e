//! Every limit hit over the sans-IO shard, with its answer and its count.

use super::*;
use crate::presence::pidf;
use std::time::{Duration, Instant};

fn shard(caps: Caps) -> (Shard, Instant) {
    let t0 = Instant::now();
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.publish.max_publications = caps.publications_per_presentity;
    cfg.publish.max_document = caps.document_size;
    cfg.registrar.max_bindings = caps.bindings_per_aor;
    cfg.caps = caps;
    (Shard::new(cfg, t0), t0)
}

fn src() -> Peer {
    Peer::udp("192.0.2.1:5060".parse().unwrap())
}

/// Sends `req` and returns the status and the Retry-After of the answer.
fn send(s: &mut Shard, now: Instant, req: String) -> (u16, Option<String>) {
    let mut out = Outbox::default();
    s.on_message(now, src(), req.as_bytes(), &mut out);
    let t = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 ")).expect("an answer");
    let m = Message::parse(&t.bytes, &Limits::default()).unwrap();
    (m.status().unwrap(), m.header(HeaderName::RetryAfter).map(|v| String::from_utf8_lossy(v).into_owned()))
}

fn publish(n: u32, note_len: usize) -> String {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@example.com\"><tuple id=\"t{n}\"><status><basic>open</basic></status><note>{}</note></tuple></presence>",
        "x".repeat(note_len)
    );
    pidf::parse(doc.as_bytes()).expect("valid");
    format!(
        "PUBLISH sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp{n}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=p\r\n\
To: <sip:a@example.com>\r\nCall-ID: p{n}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        doc.len()
    )
}

fn subscribe(n: u32, from: &str) -> String {
    format!(
        "SUBSCRIBE sip:a{n}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs{n}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=s{n}\r\n\
To: <sip:a{n}@example.com>\r\nCall-ID: s{n}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@192.0.2.1>\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n"
    )
}

fn register(n: u32, contact: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr{n}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=r\r\n\
To: <sip:a@example.com>\r\nCall-ID: reg\r\nCSeq: {n} REGISTER\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn limited(s: &Shard, l: Limit) -> u64 {
    s.stats().limited[l.index()]
}

#[test]
fn server_transactions_beyond_the_limit_get_503_without_one() {
    let (mut s, t0) = shard(Caps { server_transactions: 2, retry_after: 9, ..Caps::default() });
    assert_eq!(send(&mut s, t0, register(1, "sip:a@192.0.2.1")).0, 200);
    assert_eq!(send(&mut s, t0, register(2, "sip:a@192.0.2.1")).0, 200);
    assert_eq!(send(&mut s, t0, register(3, "sip:a@192.0.2.1")), (503, Some("9".into())));
    assert_eq!(s.census().server_transactions, 2, "no transaction for the refused request");
    // A retransmission of a known transaction is still answered from it.
    assert_eq!(send(&mut s, t0, register(2, "sip:a@192.0.2.1")).0, 200);
    assert_eq!(limited(&s, Limit::ServerTransactions), 1);
    // Timer J frees the places.
    let later = t0 + Duration::from_secs(40);
    s.on_time(later, &mut Outbox::default());
    assert_eq!(send(&mut s, later, register(4, "sip:a@192.0.2.1")).0, 200);
}

#[test]
fn subscriptions_and_asks_per_shard_and_per_watcher() {
    let (mut s, t0) = shard(Caps { subscriptions: 3, subscriptions_per_watcher: 2, ..Caps::default() });
    assert_eq!(send(&mut s, t0, subscribe(1, "sip:w1@example.net")).0, 200);
    assert_eq!(send(&mut s, t0, subscribe(2, "sip:w1@example.net")).0, 200);
    assert_eq!(send(&mut s, t0, subscribe(3, "sip:w1@example.net")).0, 403, "the watcher's share");
    assert_eq!(send(&mut s, t0, subscribe(4, "sip:w2@example.net")).0, 200);
    assert_eq!(send(&mut s, t0, subscribe(5, "sip:w3@example.net")), (503, Some("5".into())), "the shard's");
    assert_eq!((limited(&s, Limit::SubscriptionsPerWatcher), limited(&s, Limit::Subscriptions)), (1, 1));
    let (mut s, t0) = shard(Caps { pending_asks: 0, ..Caps::default() });
    assert_eq!(send(&mut s, t0, subscribe(1, "sip:w1@example.net")).0, 503);
    assert_eq!(limited(&s, Limit::PendingAsks), 1);
}

#[test]
fn publications_and_document_size_per_presentity() {
    let (mut s, t0) = shard(Caps { publications_per_presentity: 2, document_size: 600, ..Caps::default() });
    assert_eq!(send(&mut s, t0, publish(1, 10)).0, 200);
    assert_eq!(send(&mut s, t0, publish(2, 10)).0, 200);
    assert_eq!(send(&mut s, t0, publish(3, 10)).0, 403);
    assert_eq!(s.publications().count(b"sip:a@example.com"), 2, "nothing applied");
    let (mut s, t0) = shard(Caps { document_size: 600, ..Caps::default() });
    assert_eq!(send(&mut s, t0, publish(1, 200)).0, 200);
    assert_eq!(send(&mut s, t0, publish(2, 400)).0, 413);
    assert_eq!((limited(&s, Limit::DocumentSize), s.publications().count(b"sip:a@example.com")), (1, 1));
}

#[test]
fn bindings_per_aor() {
    let (mut s, t0) = shard(Caps { bindings_per_aor: 2, ..Caps::default() });
    assert_eq!(send(&mut s, t0, register(1, "sip:a@192.0.2.1")).0, 200);
    assert_eq!(send(&mut s, t0, register(2, "sip:a@192.0.2.2")).0, 200);
    assert_eq!(send(&mut s, t0, register(3, "sip:a@192.0.2.3")).0, 403);
    assert_eq!(send(&mut s, t0, register(4, "sip:a@192.0.2.2")).0, 200, "a refresh adds nothing");
    assert_eq!(s.registrar().registration(b"sip:a@example.com").unwrap().bindings.len(), 2);
    assert_eq!(limited(&s, Limit::BindingsPerAor), 1);
}
