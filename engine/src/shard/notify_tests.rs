//! NOTIFYs that carry one presentity's document to many watchers: each
//! writes its own start line and headers and shares the document.

use super::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn src() -> Peer {
    Peer::udp("192.0.2.1:5060".parse().unwrap())
}

fn publish(n: u32, note: &str) -> String {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:a@example.com\"><tuple id=\"t{n}\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    format!(
        "PUBLISH sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp{n}\r\nMax-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=p\r\n\
To: <sip:a@example.com>\r\nCall-ID: p{n}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        doc.len()
    )
}

fn subscribe(w: u32) -> String {
    format!(
        "SUBSCRIBE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs{w}\r\nMax-Forwards: 70\r\nFrom: <sip:w{w}@example.net>;tag=s{w}\r\n\
To: <sip:a@example.com>\r\nCall-ID: s{w}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w{w}@192.0.2.1>\r\nEvent: presence\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A shard at time zero whose configuration `tune` adjusts.
fn shard(tune: impl FnOnce(&mut ShardConfig)) -> (Shard, Instant) {
    let t0 = Instant::now();
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    tune(&mut cfg);
    (Shard::new(cfg, t0), t0)
}

/// The NOTIFYs in `out`: each checked to parse whole, with its body being
/// the shared part and its Content-Length that part's length.
fn notifies(out: &Outbox) -> Vec<(String, Arc<[u8]>)> {
    let mut found = Vec::new();
    for t in out.transmits.iter().filter(|t| t.bytes.starts_with(b"NOTIFY")) {
        let doc = t.shared.clone().expect("a presence document is sent as the shared part");
        let head = String::from_utf8(t.bytes.clone()).unwrap();
        assert!(head.ends_with(&format!("Content-Length: {}\r\n\r\n", doc.len())), "{head}");
        assert!(!head.contains("<presence"), "the document is not copied into the head");
        let wire = t.wire();
        let m = Message::parse(&wire, &Limits::default()).expect("the two parts make one NOTIFY");
        assert_eq!(m.body(), &doc[..]);
        found.push((String::from_utf8_lossy(m.call_id()).into_owned(), doc));
    }
    found
}

/// The watchers' 200s to the NOTIFYs in `out`.
fn answers_to(out: &Outbox) -> Vec<Vec<u8>> {
    out.transmits
        .iter()
        .filter(|t| t.bytes.starts_with(b"NOTIFY"))
        .map(|t| {
            let wire = t.wire();
            let m = Message::parse(&wire, &Limits::default()).unwrap();
            let mut ok = Vec::new();
            sip::response_to(&mut ok, m.raw(), 200, "OK", None, None).finish(None, b"");
            ok
        })
        .collect()
}

#[test]
fn one_document_is_shared_by_every_watchers_notify() {
    let (mut s, t0) = shard(|cfg| cfg.watch.min_notify_interval = Duration::ZERO);
    let mut out = Outbox::default();
    s.on_message(t0, src(), publish(1, "first").as_bytes(), &mut out);
    for w in 0..3 {
        s.on_message(t0, src(), subscribe(w).as_bytes(), &mut out);
    }
    let first = notifies(&out);
    assert_eq!(first.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(), ["s0", "s1", "s2"]);
    assert!(first.iter().all(|(_, d)| Arc::ptr_eq(d, &first[0].1)), "one copy for all three");
    assert!(String::from_utf8_lossy(&first[0].1).contains("first"));
    // The watchers answer; a new publication reaches all three, again as
    // one shared copy, and a different one.
    let answers = answers_to(&out);
    for ok in answers {
        s.on_message(t0, src(), &ok, &mut Outbox::default());
    }
    let mut out = Outbox::default();
    s.on_message(t0, src(), publish(2, "second").as_bytes(), &mut out);
    let second = notifies(&out);
    assert_eq!(second.len(), 3);
    assert!(second.iter().all(|(_, d)| Arc::ptr_eq(d, &second[0].1)));
    assert!(!Arc::ptr_eq(&second[0].1, &first[0].1));
    assert!(String::from_utf8_lossy(&second[0].1).contains("second"));
}

/// A presentity with nothing published is shown the closed document, which
/// is sent the same way.
#[test]
fn the_closed_document_is_sent_as_a_shared_part_too() {
    let (mut s, t0) = shard(|_| {});
    let mut out = Outbox::default();
    s.on_message(t0, src(), subscribe(7).as_bytes(), &mut out);
    let sent = notifies(&out);
    assert_eq!(sent.len(), 1);
    assert!(String::from_utf8_lossy(&sent[0].1).contains("closed"));
}

/// Watchers waiting for a place in the NOTIFY window are queued once each,
/// however many documents come meanwhile (the queue grew by the window's
/// overflow on every PUBLISH of a storm before), and each then gets the
/// latest document.
#[test]
fn the_window_queue_holds_each_waiting_watcher_once() {
    let (mut s, t0) = shard(|cfg| {
        cfg.watch.min_notify_interval = Duration::ZERO;
        cfg.watch.window = 2;
    });
    let mut first = Outbox::default();
    s.on_message(t0, src(), publish(0, "v0").as_bytes(), &mut first);
    for w in 0..5 {
        s.on_message(t0, src(), subscribe(w).as_bytes(), &mut first);
    }
    // The first NOTIFYs go at once; all are answered.
    assert_eq!(notifies(&first).len(), 5);
    for ok in answers_to(&first) {
        s.on_message(t0, src(), &ok, &mut Outbox::default());
    }
    // Two NOTIFYs of v1 in flight, three watchers waiting; nothing more
    // is answered while nine more versions come.
    let mut out = Outbox::default();
    s.on_message(t0, src(), publish(1, "v1").as_bytes(), &mut out);
    assert_eq!(notifies(&out).len(), 2);
    for n in 2..=10 {
        s.on_message(t0, src(), publish(n, &format!("v{n}")).as_bytes(), &mut Outbox::default());
        assert_eq!(s.census().deferred_notifies, 3, "after PUBLISH {n}");
    }
    // Answering frees the window: every watcher is sent the last version,
    // none of the ones in between.
    let mut pending: Vec<Vec<u8>> = out.transmits.iter().filter(|t| t.bytes.starts_with(b"NOTIFY")).map(|t| t.wire().into_owned()).collect();
    let mut shown = Vec::new();
    while let Some(notify) = pending.pop() {
        let m = Message::parse(&notify, &Limits::default()).unwrap();
        shown.push((String::from_utf8_lossy(m.call_id()).into_owned(), String::from_utf8_lossy(m.body()).contains("v10")));
        let mut ok = Vec::new();
        sip::response_to(&mut ok, m.raw(), 200, "OK", None, None).finish(None, b"");
        let mut out = Outbox::default();
        s.on_message(t0, src(), &ok, &mut out);
        pending.extend(out.transmits.iter().filter(|t| t.bytes.starts_with(b"NOTIFY")).map(|t| t.wire().into_owned()));
    }
    assert_eq!(s.census().deferred_notifies, 0);
    let latest: Vec<&str> = shown.iter().filter(|(_, v10)| *v10).map(|(c, _)| c.as_str()).collect();
    assert_eq!(latest.len(), 5, "each watcher ends on the last version: {shown:?}");
    assert_eq!(shown.len(), 7, "two NOTIFYs of v1 and five of v10: {shown:?}");
}

/// A retransmitted 200 to a NOTIFY is absorbed while Timer K holds the
/// transaction's token (not reported as stray), and stray after.
#[test]
fn a_retransmitted_answer_is_absorbed_until_timer_k_ends() {
    let (mut s, t0) = shard(|_| {});
    let mut out = Outbox::default();
    s.on_message(t0, src(), subscribe(1).as_bytes(), &mut out);
    let ok = answers_to(&out).pop().expect("a 200 for the first NOTIFY");
    s.on_message(t0, src(), &ok, &mut Outbox::default());
    assert_eq!(s.census().client_transactions, 1, "held for Timer K");
    // Answers count as traffic, as requests do: a shard busy with a
    // NOTIFY storm's answers is not quiet (`reactor::memory`).
    assert_eq!((s.stats().requests, s.stats().messages), (1, 2));
    let stray = |out: &Outbox| out.events.iter().any(|e| matches!(e, Event::StrayResponse { .. }));
    let mut again = Outbox::default();
    s.on_message(t0 + Duration::from_secs(1), src(), &ok, &mut again);
    assert!(again.transmits.is_empty() && !stray(&again), "absorbed: {:?}", again.events);
    let t5 = t0 + Duration::from_secs(5) + Duration::from_millis(10);
    s.on_time(t5, &mut Outbox::default());
    assert_eq!(s.census().client_transactions, 0);
    let mut late = Outbox::default();
    s.on_message(t5, src(), &ok, &mut late);
    assert!(stray(&late), "Timer K ended: {:?}", late.events);
}
