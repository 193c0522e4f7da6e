//! Every limit hit over the sans-IO shard, with its answer and its count.

use super::*;
use crate::presence::pidf;
use std::time::{Duration, Instant};

fn shard(caps: Caps) -> (Shard, Instant) {
    shard_with(caps, OverloadConfig::default())
}

fn shard_with(caps: Caps, overload: OverloadConfig) -> (Shard, Instant) {
    let t0 = Instant::now();
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.overload = overload;
    cfg.publish.max_publications = caps.publications_per_presentity;
    cfg.publish.max_document = caps.document_size;
    cfg.registrar.max_bindings = caps.bindings_per_aor;
    cfg.watch.min_notify_interval = Duration::ZERO;
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
    let wire = t.wire();
    let m = Message::parse(&wire, &Limits::default()).unwrap();
    (m.status().unwrap(), m.header(HeaderName::RetryAfter).map(|v| String::from_utf8_lossy(v).into_owned()))
}

fn publish(n: u32, note_len: usize) -> String {
    publish_to("sip:a@example.com", n, note_len)
}

fn publish_to(aor: &str, n: u32, note_len: usize) -> String {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t{n}\"><status><basic>open</basic></status><note>{}</note></tuple></presence>",
        "x".repeat(note_len)
    );
    pidf::parse(doc.as_bytes()).expect("valid");
    format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp{n}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\n\
To: <{aor}>\r\nCall-ID: p{n}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
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

/// Overload on a fake clock: requests that waited 50 ms (above the 20 ms
/// target) for more than 100 ms make the shard shed new REGISTER, PUBLISH
/// and SUBSCRIBE past the 40 ms deadline with 503 + Retry-After, without a
/// transaction, while an in-dialog SUBSCRIBE and the answer to a NOTIFY
/// are still served; one request that waited less ends it.
#[test]
fn overload_sheds_new_work_and_keeps_dialogs() {
    // Every shed request answered (one in one), to see each answer.
    let (mut s, t0) = shard_with(Caps { retry_after: 3, ..Caps::default() }, OverloadConfig { refuse_every: 1, ..OverloadConfig::default() });
    // A dialog before the overload; its first NOTIFY is left unanswered.
    let mut out = Outbox::default();
    s.on_message(t0, src(), subscribe(1, "sip:w@example.net").as_bytes(), &mut out);
    let ok = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 200")).expect("200").bytes.clone();
    let notify = out.transmits.iter().find(|t| t.bytes.starts_with(b"NOTIFY")).expect("NOTIFY").wire().into_owned();
    let to = Message::parse(&ok, &Limits::default()).unwrap().to().tag().unwrap().to_vec();
    let waited = |at: Duration| (t0 + at, t0 + at - Duration::from_millis(50));
    let send_at = |s: &mut Shard, (now, received): (Instant, Instant), req: &[u8]| {
        let mut out = Outbox::default();
        s.on_message_at(now, received, src(), req, &mut out);
        out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 ")).map(|t| Message::parse(&t.wire(), &Limits::default()).unwrap().status().unwrap())
    };
    let within = (t0 + Duration::from_millis(100), t0 + Duration::from_millis(70));
    assert_eq!(send_at(&mut s, within, publish(1, 5).as_bytes()), Some(200), "a queue within the deadline is served");
    assert_eq!(send_at(&mut s, waited(Duration::from_millis(210)), publish(2, 5).as_bytes()), Some(503));
    assert!(s.is_shedding());
    let txns = s.census().server_transactions;
    assert_eq!(send_at(&mut s, waited(Duration::from_millis(220)), register(1, "sip:a@192.0.2.1").as_bytes()), Some(503));
    assert_eq!(s.census().server_transactions, txns, "shed without a transaction");
    // In-dialog requests and responses keep priority.
    let refresh = subscribe(1, "sip:w@example.net")
        .replace("To: <sip:a1@example.com>", &format!("To: <sip:a1@example.com>;tag={}", String::from_utf8_lossy(&to)))
        .replace("CSeq: 1 SUBSCRIBE", "CSeq: 2 SUBSCRIBE")
        .replace("z9hG4bKs1", "z9hG4bKs1b");
    assert_eq!(send_at(&mut s, waited(Duration::from_millis(230)), refresh.as_bytes()), Some(200));
    let m = Message::parse(&notify, &Limits::default()).unwrap();
    let mut answer = Vec::new();
    crate::sip::response_to(&mut answer, m.raw(), 200, "OK", None, None).finish(None, b"");
    // The refresh's NOTIFY waited for this answer; taking it sends it.
    let (now, received) = waited(Duration::from_millis(240));
    let mut out = Outbox::default();
    s.on_message_at(now, received, src(), &answer, &mut out);
    assert!(out.transmits.iter().any(|t| t.bytes.starts_with(b"NOTIFY")), "the NOTIFY's answer was taken");
    assert_eq!(s.stats().limited[Limit::Overload.index()], 2);
    // The queue drains: served again.
    assert_eq!(send_at(&mut s, (t0 + Duration::from_millis(300), t0 + Duration::from_millis(299)), publish(3, 5).as_bytes()), Some(200));
}

/// While overloaded, shed requests beyond the one in `refuse_every` are dropped unanswered,
/// PUBLISH before it is even parsed; a request within the deadline is
/// served even while overloaded.
#[test]
fn overload_drops_most_shed_requests() {
    let (mut s, t0) = shard_with(Caps::default(), OverloadConfig { refuse_every: 4, ..OverloadConfig::default() });
    let mut answers = Vec::new();
    for i in 0..=20u32 {
        let now = t0 + Duration::from_millis(10 * i as u64);
        let mut out = Outbox::default();
        s.on_message_at(now, now - Duration::from_millis(60), src(), publish(i, 5).as_bytes(), &mut out);
        answers.push(out.transmits.first().map(|t| Message::parse(&t.wire(), &Limits::default()).unwrap().status().unwrap()));
    }
    // Past the deadline before the shard counts as overloaded (a burst's
    // excess): each refused. 100 ms above target: overloaded from the
    // eleventh on.
    assert!(answers[..10].iter().all(|a| *a == Some(503)), "{answers:?}");
    let shed = &answers[10..];
    assert!(s.is_shedding());
    assert_eq!(shed.iter().filter(|a| a.is_none()).count(), 9, "{answers:?}");
    assert_eq!(shed.iter().filter(|a| **a == Some(503)).count(), 2, "one in four answered: {answers:?}");
    assert_eq!(s.stats().overload_dropped, 9);
    // An RFC 7339 client's request is refused, never dropped: it backs off
    // as told, while a drop brings its retransmission back.
    for i in 30..34u32 {
        let now = t0 + Duration::from_millis(210);
        let req = publish(i, 5).replace(&format!("branch=z9hG4bKp{i}"), &format!("branch=z9hG4bKp{i};oc"));
        let mut out = Outbox::default();
        s.on_message_at(now, now - Duration::from_millis(60), src(), req.as_bytes(), &mut out);
        assert!(out.transmits.first().is_some_and(|t| t.bytes.starts_with(b"SIP/2.0 503")), "request {i} of an oc client");
    }
    assert_eq!(s.stats().overload_dropped, 9);
    // Waited 30 ms: overloaded still, but within the deadline.
    let now = t0 + Duration::from_millis(220);
    let mut out = Outbox::default();
    s.on_message_at(now, now - Duration::from_millis(30), src(), publish(99, 5).as_bytes(), &mut out);
    assert!(out.transmits[0].bytes.starts_with(b"SIP/2.0 200"));
}

/// The admission stage on a fake clock: while overloaded, a datagram is
/// decided when it is taken off the socket, on the sojourn it will have
/// behind the queue at the measured pace. What would wait past the
/// deadline gets its 503 at once, before any queued work is served; an
/// in-dialog request is taken in however long the queue; what was taken
/// is served afterwards, oldest first. The queue's bound is reported so
/// that the reactor leaves the rest in the socket.
#[test]
fn overload_refuses_at_arrival_and_serves_what_it_took() {
    let overload = OverloadConfig { refuse_every: 1, queue_messages: 2000, ..OverloadConfig::default() };
    let (mut s, t0) = shard_with(Caps::default(), overload);
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    // A dialog before the overload.
    s.on_message(t0, src(), subscribe(1, "sip:w@example.net").as_bytes(), &mut out);
    let ok = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 200")).expect("200").bytes.clone();
    let to = Message::parse(&ok, &Limits::default()).unwrap().to().tag().unwrap().to_vec();
    // Requests that waited 50 ms for over an interval: overloaded.
    for i in 0..=11u32 {
        let now = t0 + Duration::from_millis(10 * i as u64);
        s.on_message_at(now, now - Duration::from_millis(50), src(), publish(1000 + i, 5).as_bytes(), &mut out);
    }
    assert!(s.is_shedding());
    let statuses = |out: &Outbox| -> Vec<u16> {
        out.transmits
            .iter()
            .filter(|t| t.bytes.starts_with(b"SIP/2.0 "))
            .map(|t| Message::parse(&t.bytes, &Limits::default()).unwrap().status().unwrap())
            .collect()
    };
    // 200 that waited 35 ms in the socket are taken in (no pace measured
    // yet), then 150 served at 100 us each: the pace.
    let t = t0 + Duration::from_millis(200);
    for i in 0..200u32 {
        s.on_arrival(t, t - Duration::from_millis(35), src(), publish_to(&format!("sip:p{i}@example.com"), i, 5).as_bytes(), &mut out);
    }
    assert_eq!(s.queued(), 200);
    let mut clock = t;
    let mut tick = || {
        clock += Duration::from_micros(100);
        clock
    };
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    assert_eq!(s.serve_queued(&mut tick, Duration::from_secs(1), 150, &mut out), 150);
    assert_eq!(statuses(&out), vec![200; 150]);
    assert!(s.is_shedding(), "served at 35-50 ms: still overloaded");
    // 500 fresh PUBLISHes: the queue ahead of the k-th holds 50 + k, which
    // at 100 us each passes the 40 ms deadline from about the 350th on.
    let now = t + Duration::from_millis(15);
    let refused_before = s.stats().limited[Limit::Overload.index()];
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    for i in 200..700u32 {
        s.on_arrival(now, now, src(), publish_to(&format!("sip:p{i}@example.com"), i, 5).as_bytes(), &mut out);
    }
    let refused = statuses(&out);
    assert!(refused.iter().all(|c| *c == 503), "only refusals leave at arrival: {refused:?}");
    assert!((140..=160).contains(&refused.len()), "{} refused", refused.len());
    assert_eq!(s.queued(), 50 + 500 - refused.len());
    assert_eq!(s.stats().limited[Limit::Overload.index()] - refused_before, refused.len() as u64);
    // An in-dialog SUBSCRIBE is taken in behind them all.
    let refresh = subscribe(1, "sip:w@example.net")
        .replace("To: <sip:a1@example.com>", &format!("To: <sip:a1@example.com>;tag={}", String::from_utf8_lossy(&to)))
        .replace("CSeq: 1 SUBSCRIBE", "CSeq: 2 SUBSCRIBE")
        .replace("z9hG4bKs1", "z9hG4bKs1b");
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    s.on_arrival(now, now, src(), refresh.as_bytes(), &mut out);
    assert!(out.transmits.is_empty());
    let queued = s.queued();
    let served = s.serve_queued(&mut tick, Duration::from_secs(10), usize::MAX, &mut out);
    assert_eq!(served, queued);
    assert_eq!(s.queued(), 0);
    let answers = statuses(&out);
    assert_eq!(answers.len(), queued, "one answer each");
    assert!(answers.iter().all(|c| *c == 200), "{answers:?}");
    let last = out.transmits.iter().rfind(|t| t.bytes.starts_with(b"SIP/2.0 ")).unwrap();
    assert!(String::from_utf8_lossy(&last.bytes).contains("CSeq: 2 SUBSCRIBE"), "the refresh, served last");
    // The bound: full at 2000 messages.
    let fresh = now + Duration::from_millis(100);
    let mut n = 0u32;
    while s.can_take() {
        let sub =
            subscribe(1, "sip:w@example.net").replace("To: <sip:a1@example.com>", &format!("To: <sip:a1@example.com>;tag={}", String::from_utf8_lossy(&to)));
        s.on_arrival(fresh, fresh, src(), sub.as_bytes(), &mut out);
        n += 1;
        assert!(n <= 2000);
    }
    assert_eq!(s.queued(), 2000);
}

/// Plain clients at twice the capacity fill the socket: every request
/// is past the deadline when it is taken in, so none is admitted and none
/// served, and the detector, which watches service, would see nothing.
/// The wait in the socket alone starts the shedding: after an interval
/// most are dropped unanswered (cheap) and one in `refuse_every` gets its
/// 503, instead of a 503 each (which cost the shard all its time).
#[test]
fn a_socket_that_stays_full_starts_shedding_with_nothing_served() {
    let (mut s, t0) = shard_with(Caps::default(), OverloadConfig::default());
    assert!(!s.is_shedding());
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    // 300 ms of arrivals, each 60 ms old when read, none served.
    for i in 0..300u32 {
        let now = t0 + Duration::from_millis(i as u64);
        s.on_arrival(now, now - Duration::from_millis(60), src(), publish_to(&format!("sip:p{i}@example.com"), i, 5).as_bytes(), &mut out);
    }
    assert_eq!(s.queued(), 0, "nothing admitted");
    assert!(s.is_shedding(), "the socket's standing queue is overload");
    let refused = s.stats().limited[Limit::Overload.index()];
    let dropped = s.stats().overload_dropped;
    assert_eq!(refused + dropped, 300);
    // The first interval's requests are refused each; after it, one in 8.
    assert!(dropped >= 150, "{dropped} dropped, {refused} refused");
    assert!(refused >= 100 + 150 / 8, "{refused} refused");
}

/// RFC 7339: a client whose Via carries `oc` hears, in the Via of each
/// answer, the loss rate while the queue stands (and the zero after); a
/// client without `oc` hears nothing of it.
#[test]
fn rfc7339_clients_are_told_how_much_to_hold_back() {
    let (mut s, t0) = shard_with(Caps::default(), OverloadConfig::default());
    let answer_via = |s: &mut Shard, i: u32, waited_ms: u64, oc: bool| {
        let now = t0 + Duration::from_millis(10 * i as u64);
        let mut req = publish(i, 5);
        if oc {
            req = req.replace(&format!("branch=z9hG4bKp{i}"), &format!("branch=z9hG4bKp{i};oc"));
        }
        let mut out = Outbox::default();
        s.on_message_at(now, now - Duration::from_millis(waited_ms), src(), req.as_bytes(), &mut out);
        let t = out.transmits.first().expect("an answer (a sojourn under the deadline is served)");
        let m = Message::parse(&t.bytes, &Limits::default()).unwrap();
        crate::sip::oc::OcFeedback::read(m.via())
    };
    assert_eq!(answer_via(&mut s, 0, 1, true), None, "no overload: nothing to say");
    // A standing queue of 30 ms (above target, within the deadline).
    let mut told = Vec::new();
    for i in 1..=200 {
        told.push(answer_via(&mut s, i, 30, true).map(|f| f.loss_pct));
    }
    let last = told.last().copied().flatten().expect("told while the queue stands");
    assert!(last >= 50, "{told:?}");
    assert_eq!(answer_via(&mut s, 201, 30, false), None, "a client that did not ask is not told");
    // The queue drains: the rate comes down to zero, and zero is said.
    let mut after = Vec::new();
    for i in 202..=500 {
        after.push(answer_via(&mut s, i, 1, true).map(|f| f.loss_pct));
    }
    assert!(after.contains(&Some(0)) && after.last() == Some(&None), "{after:?}");
}

/// A NOTIFY above the path MTU to a watcher reached over UDP is sent,
/// counted, and reported once per shard.
#[test]
fn oversize_udp_notifies_are_counted_and_reported_once() {
    let (mut s, t0) = shard(Caps::default());
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    let big = publish_to("sip:a1@example.com", 1, 3000);
    s.on_message(t0, src(), big.as_bytes(), &mut out);
    for n in [1, 2] {
        s.on_message(
            t0,
            src(),
            subscribe(1, &format!("sip:w{n}@example.net"))
                .replace("Call-ID: s1", &format!("Call-ID: big{n}"))
                .replace("z9hG4bKs1", &format!("z9hG4bKbig{n}"))
                .as_bytes(),
            &mut out,
        );
    }
    let notifies: Vec<_> = out.transmits.iter().filter(|t| t.bytes.starts_with(b"NOTIFY")).collect();
    assert_eq!(notifies.len(), 2);
    let firsts: Vec<String> = out.transmits.iter().map(|t| String::from_utf8_lossy(&t.bytes[..t.bytes.len().min(60)]).into_owned()).collect();
    assert!(notifies.iter().all(|t| t.len() > 3000), "sent whole: {firsts:?}");
    assert_eq!(s.stats().oversize_udp_notifies, 2);
    assert_eq!(out.events.iter().filter(|e| matches!(e, Event::OversizeNotify { .. })).count(), 1);
}

/// A shard sized for what it will hold: its tables hold that much without
/// growing (so no request pays for a rehash on the way up), and one sized
/// for nothing grows as it goes.
#[test]
fn a_shard_sized_for_its_entries_never_grows_a_table_to_hold_them() {
    const N: u32 = 3000;
    let fill = |s: &mut Shard, t0: Instant| {
        for n in 0..N {
            assert_eq!(send(s, t0, publish_to(&format!("sip:p{n}@example.com"), n, 4)).0, 200);
            assert_eq!(send(s, t0, subscribe(n, &format!("sip:w{n}@example.net"))).0, 200);
        }
        assert_eq!((s.census().presentities, s.census().subscriptions), (N as usize, N as usize));
    };
    let t0 = Instant::now();
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.expected = Expected { presentities: N as usize, subscriptions: N as usize };
    let mut sized = Shard::new(cfg, t0);
    let room = sized.room();
    assert!(room.presentities >= N as usize && room.subscriptions >= N as usize, "{room:?}");
    fill(&mut sized, t0);
    assert_eq!(sized.room(), room, "no table grew");

    let (mut unsized_, t0) = shard(Caps::default());
    let room = unsized_.room();
    assert!(room.presentities < N as usize && room.subscriptions < N as usize, "{room:?}");
    fill(&mut unsized_, t0);
    assert_ne!(unsized_.room(), room, "tables grew as they filled");
}
