//! A panic while handling one message is contained at the step boundary:
//! counted, reported with the Call-ID, its transaction and dialog removed,
//! and the shard goes on. Panics are injected through
//! `ShardConfig::panic_on` (no network input can reach one).

use presence_engine::core::Peer;
use presence_engine::shard::{Event, Outbox, Shard, ShardConfig};
use std::time::Instant;

const AOR: &str = "sip:dana@example.com";

fn shard(panic_on: Option<(&str, u32)>) -> Shard {
    let mut cfg = ShardConfig::with_defaults(0, 1, "192.0.2.1:5060".parse().unwrap());
    cfg.panic_on = panic_on.map(|(c, n)| (c.as_bytes().into(), n));
    Shard::new(cfg, Instant::now())
}

fn peer() -> Peer {
    Peer::udp("198.51.100.9:5060".parse().unwrap())
}

fn request(method: &str, call_id: &str, cseq: u32, to_tag: Option<&str>, extra: &str) -> Vec<u8> {
    let to = to_tag.map_or(format!("<{AOR}>"), |t| format!("<{AOR}>;tag={t}"));
    format!(
        "{method} {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.9:5060;rport;branch=z9hG4bK{call_id}{cseq}\r\nMax-Forwards: 70\r\n\
From: <sip:w@example.net>;tag=f1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:w@198.51.100.9:5060>\r\n\
{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn statuses(out: &Outbox) -> Vec<String> {
    out.transmits.iter().map(|t| String::from_utf8_lossy(&t.bytes[..t.bytes.len().min(20)]).into_owned()).collect()
}

#[test]
fn a_panicking_request_is_contained_and_the_shard_goes_on() {
    let mut s = shard(Some(("boom", 1)));
    let now = Instant::now();
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    s.on_message(now, peer(), &request("OPTIONS", "boom", 1, None, ""), &mut out);
    assert!(out.transmits.is_empty(), "no answer from a panicked step: {:?}", statuses(&out));
    assert_eq!(s.stats().panics, 1);
    assert!(
        out.events.iter().any(|e| matches!(e, Event::Panic { call_id, what } if call_id == "boom" && what.contains("fault injected"))),
        "reported with its Call-ID even with events off: {:?}",
        out.events
    );
    assert_eq!(s.census().server_transactions, 0, "its transaction is not left in Trying");
    // The retransmission is handled afresh (and panics again), then the
    // shard serves the next request.
    s.on_message(now, peer(), &request("OPTIONS", "boom", 1, None, ""), &mut out);
    assert_eq!(s.stats().panics, 2);
    let mut out = Outbox::default();
    s.on_message(now, peer(), &request("OPTIONS", "fine", 1, None, ""), &mut out);
    assert!(out.transmits[0].bytes.starts_with(b"SIP/2.0 200 "), "{:?}", statuses(&out));
}

#[test]
fn a_panicking_refresh_removes_its_subscription() {
    let mut s = shard(Some(("dlg", 2)));
    let now = Instant::now();
    let mut out = Outbox::default();
    s.on_message(now, peer(), &request("SUBSCRIBE", "dlg", 1, None, "Event: presence\r\nExpires: 600\r\n"), &mut out);
    let ok = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 200")).expect("200 to the SUBSCRIBE");
    let ok = String::from_utf8_lossy(&ok.bytes).into_owned();
    let tag = ok.split("To: ").nth(1).unwrap().split(";tag=").nth(1).unwrap().split("\r\n").next().unwrap().to_string();
    assert_eq!(s.census().subscriptions, 1);
    assert!(s.watched_view(AOR.as_bytes()).is_some());
    let mut out = Outbox::default();
    s.on_message(now, peer(), &request("SUBSCRIBE", "dlg", 2, Some(&tag), "Event: presence\r\nExpires: 600\r\n"), &mut out);
    assert_eq!(s.stats().panics, 1);
    assert_eq!(s.census().subscriptions, 0, "the dialog is removed, not left half-refreshed");
    assert_eq!(s.watched_view(AOR.as_bytes()), None, "and its presentity no longer counts it");
}
