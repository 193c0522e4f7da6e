//! The journal over the sans-IO shard: what one shard records, another
//! puts back, with the time that passed in between.

use super::durable::UnixClock;
use super::*;
use crate::storage::frame;
use crate::storage::journal::{Fsync, Journal};
use crate::storage::record::Record;
use crate::storage::segment::{HEADER_LEN, SegmentHeader, SegmentWriter};
use std::time::{Duration, Instant};

const UNIX_T0: u64 = 1_800_000_000_000;

fn shard(t0: Instant, unix_ms: u64, fsync: Fsync) -> Shard {
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.watch.min_notify_interval = Duration::ZERO;
    let mut s = Shard::new(cfg, t0);
    let seg = SegmentWriter::new(SegmentHeader { shard: 0, shards: 1, segment: 1, base_lsn: 0, created_unix_ms: unix_ms });
    s.attach_journal(Journal::new(seg, fsync, 1 << 20), UnixClock::new(t0, unix_ms));
    s
}

fn src() -> Peer {
    Peer::udp("192.0.2.1:5060".parse().unwrap())
}

fn send(s: &mut Shard, now: Instant, req: &str) -> Message<'static> {
    let mut out = Outbox::default();
    s.on_message(now, src(), req.as_bytes(), &mut out);
    let t = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 ")).expect("an answer");
    let wire: &'static [u8] = Box::leak(t.wire().into_owned().into_boxed_slice());
    Message::parse(wire, &Limits::default()).unwrap()
}

/// A branch no other request of the test has.
fn unique() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn register(aor: &str, cseq: u32, contact: &str, expires: u32) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr{}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=r\r\n\
To: <{aor}>\r\nCall-ID: reg-{aor}\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>;expires={expires}\r\nContent-Length: 0\r\n\r\n",
        unique()
    )
}

fn publish(aor: &str, n: u32, if_match: Option<&str>, note: &str, expires: u32) -> String {
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t{n}\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    let (doc, ct) = if note.is_empty() { (String::new(), "") } else { (doc, "Content-Type: application/pidf+xml\r\n") };
    let if_match = if_match.map(|t| format!("SIP-If-Match: {t}\r\n")).unwrap_or_default();
    format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp{}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\n\
To: <{aor}>\r\nCall-ID: p{n}{aor}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\n{if_match}{ct}Content-Length: {}\r\n\r\n{doc}",
        unique(),
        doc.len()
    )
}

fn etag(m: &Message<'_>) -> String {
    String::from_utf8(m.header(HeaderName::SipETag).unwrap().to_vec()).unwrap()
}

/// Performs every flush the journal has due, onto `file`.
fn flush(s: &mut Shard, now: Instant, file: &mut Vec<u8>) {
    s.journal_mut().unwrap().flush_into(now, false, file);
}

/// A restart: a new shard at `now` (`unix_ms`) puts back every record of
/// `file`.
fn restart(file: &[u8], now: Instant, unix_ms: u64) -> (Shard, usize) {
    assert_eq!(SegmentHeader::decode(file).unwrap().shard, 0);
    let mut s = shard(now, unix_ms, Fsync::Always);
    let clock = UnixClock::new(now, unix_ms);
    let mut n = 0;
    let ending = frame::scan(file, HEADER_LEN, |_, payload| {
        let r = Record::decode(payload).expect("a record this build wrote");
        s.restore(now, clock, &r, &mut Outbox::default()).unwrap();
        n += 1;
        Ok::<_, frame::Corrupt>(())
    })
    .unwrap();
    assert!(matches!(ending, frame::Ending::Clean { .. }));
    (s, n)
}

/// (contact, CSeq, expiry) of each binding.
type Bindings = Vec<(String, u32, u64)>;
/// (entity tag, expiry, elements) of each publication.
type Publications = Vec<(String, u64, Vec<String>)>;

/// What a shard holds of `aor`, in Unix times.
fn state(s: &Shard, clock: UnixClock, aor: &str) -> (Bindings, Publications) {
    let bindings = s
        .registrar()
        .registration(aor.as_bytes())
        .map(|r| r.bindings.iter().map(|b| (String::from_utf8(b.uri.to_vec()).unwrap(), b.cseq, clock.to_unix_ms(b.expires_at))).collect())
        .unwrap_or_default();
    let pubs = s
        .publications()
        .published(aor.as_bytes())
        .map(|(etag, at, els)| (String::from_utf8(etag.to_vec()).unwrap(), clock.to_unix_ms(at), els.iter().map(|e| e.xml.to_string()).collect()))
        .collect();
    (bindings, pubs)
}

#[test]
fn a_restarted_shard_holds_what_was_acknowledged() {
    let t0 = Instant::now();
    let mut a = shard(t0, UNIX_T0, Fsync::Always);
    let clock_a = UnixClock::new(t0, UNIX_T0);
    let mut file = Vec::new();
    // Alice registers two contacts, refreshes one, removes the other.
    assert_eq!(send(&mut a, t0, &register("sip:alice@example.com", 1, "sip:alice@192.0.2.1", 600)).status(), Some(200));
    assert_eq!(send(&mut a, t0, &register("sip:alice@example.com", 2, "sip:alice@192.0.2.2", 600)).status(), Some(200));
    let t1 = t0 + Duration::from_secs(10);
    assert_eq!(send(&mut a, t1, &register("sip:alice@example.com", 3, "sip:alice@192.0.2.1", 3600)).status(), Some(200));
    assert_eq!(send(&mut a, t1, &register("sip:alice@example.com", 4, "sip:alice@192.0.2.2", 0)).status(), Some(200));
    // Bob registers, then unregisters.
    send(&mut a, t1, &register("sip:bob@example.com", 1, "sip:bob@192.0.2.3", 600));
    send(&mut a, t1, &register("sip:bob@example.com", 2, "sip:bob@192.0.2.3", 0));
    // Erin only registers.
    send(&mut a, t1, &register("sip:erin@example.com", 1, "sip:erin@192.0.2.9", 600));
    flush(&mut a, t1, &mut file);
    // Alice publishes, modifies, and publishes a second one; Carol
    // publishes and removes.
    let first = send(&mut a, t1, &publish("sip:alice@example.com", 1, None, "first", 3600));
    let modified = send(&mut a, t1, &publish("sip:alice@example.com", 2, Some(&etag(&first)), "modified", 3600));
    assert_eq!(modified.status(), Some(200));
    send(&mut a, t1, &publish("sip:alice@example.com", 3, None, "second device", 120));
    let carol = send(&mut a, t1, &publish("sip:carol@example.com", 1, None, "hi", 3600));
    send(&mut a, t1, &publish("sip:carol@example.com", 2, Some(&etag(&carol)), "", 0));
    // A refused request records nothing.
    assert_eq!(send(&mut a, t1, &publish("sip:dave@example.com", 1, Some("no-such-tag"), "", 3600)).status(), Some(412));
    flush(&mut a, t1, &mut file);
    assert_eq!(a.journal().unwrap().durable(), a.journal().unwrap().appended());

    // The restart comes 60 s later by the Unix clock, on a new monotonic
    // clock: everything is back, in the same Unix times.
    let t2 = Instant::now() + Duration::from_secs(1000);
    let (b, records) = restart(&file, t2, UNIX_T0 + 70_000);
    assert_eq!(records, 12, "one record per acknowledged change");
    let clock_b = UnixClock::new(t2, UNIX_T0 + 70_000);
    for aor in ["sip:alice@example.com", "sip:bob@example.com", "sip:carol@example.com", "sip:dave@example.com", "sip:erin@example.com"] {
        assert_eq!(state(&b, clock_b, aor), state(&a, clock_a, aor), "{aor}");
    }
    let (bindings, pubs) = state(&b, clock_b, "sip:alice@example.com");
    assert_eq!(bindings, vec![("sip:alice@192.0.2.1".to_string(), 3, UNIX_T0 + 3_610_000)]);
    assert_eq!(pubs.len(), 2);
    assert!(pubs[0].2[0].contains("modified") && pubs[1].2[0].contains("second device"));
    // The restored shard composes the same documents: from publications,
    // and from registration alone.
    let mut a = a;
    let mut b = b;
    for aor in [&b"sip:alice@example.com"[..], b"sip:erin@example.com"] {
        assert_eq!(a.publications.document(aor).unwrap().1, b.publications.document(aor).unwrap().1);
    }
    let erin = b.publications.document(b"sip:erin@example.com").unwrap().1;
    assert!(String::from_utf8_lossy(&erin).contains("<contact>sip:erin@192.0.2.9</contact>"));

    // A later restart, past the second device's 120 s and before the
    // rest expires: that publication is gone, the rest stays.
    let t3 = t2 + Duration::from_secs(5);
    let (c, _) = restart(&file, t3, UNIX_T0 + 10_000 + 200_000);
    let (bindings, pubs) = state(&c, UnixClock::new(t3, UNIX_T0 + 210_000), "sip:alice@example.com");
    assert_eq!(bindings.len(), 1);
    assert_eq!(pubs.len(), 1);
    assert!(pubs[0].2[0].contains("modified"));
    // And after everything expired, nothing is left.
    let (d, _) = restart(&file, t3, UNIX_T0 + 4_000_000);
    assert_eq!(d.registrar().len(), 0);
    assert_eq!(d.publications().presentities(), 0);
}

#[test]
fn a_backlogged_journal_refuses_changes_with_503() {
    let t0 = Instant::now();
    let mut s = Shard::new(ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap()), t0);
    let seg = SegmentWriter::new(SegmentHeader { shard: 0, shards: 1, segment: 1, base_lsn: 0, created_unix_ms: UNIX_T0 });
    // Room for a few records only, and no flush ever performed: a device
    // that does not keep up.
    s.attach_journal(Journal::new(seg, Fsync::Always, 2000), UnixClock::new(t0, UNIX_T0));
    let mut refused = 0;
    for n in 0..50 {
        let m = send(&mut s, t0, &publish(&format!("sip:u{n}@example.com"), n, None, "busy", 3600));
        match m.status() {
            Some(200) => assert_eq!(refused, 0, "once refusing, it refuses until the device catches up"),
            Some(503) => {
                assert!(m.header(HeaderName::RetryAfter).is_some());
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused > 30, "{refused}");
    assert_eq!(s.stats().limited[Limit::Journal.index()], refused);
    // Nothing refused was applied.
    assert!(s.publications().presentities() < 20);
}

/// What `out` sends, as it goes on the wire.
fn wires(out: &Outbox) -> Vec<Vec<u8>> {
    out.transmits.iter().map(|t| t.wire().into_owned()).collect()
}

/// Every transmit of one step.
fn step(s: &mut Shard, now: Instant, msg: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Outbox::default();
    s.on_message(now, src(), msg, &mut out);
    wires(&out)
}

/// Every transmit of one timer tick.
fn tick(s: &mut Shard, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Outbox::default();
    s.on_time(now, &mut out);
    wires(&out)
}

/// The NOTIFYs among `sent`, each answered 200 on `s`; returns their CSeqs
/// and bodies.
fn answer_notifies(s: &mut Shard, now: Instant, sent: &[Vec<u8>]) -> Vec<(u32, String)> {
    let mut seen = Vec::new();
    for wire in sent.iter().filter(|w| w.starts_with(b"NOTIFY")) {
        let m = Message::parse(wire, &Limits::default()).unwrap();
        seen.push((m.cseq().seq, String::from_utf8_lossy(m.body()).into_owned()));
        let mut ok = Vec::new();
        sip::response_to(&mut ok, m.raw(), 200, "OK", None, None).finish(None, b"");
        step(s, now, &ok);
    }
    seen
}

fn subscribe(aor: &str, cseq: u32, to_tag: Option<&str>, expires: u32) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs{}\r\nMax-Forwards: 70\r\nFrom: <sip:w@example.net>;tag=wt\r\n\
To: <{aor}>{to_tag}\r\nCall-ID: watch-{aor}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:w@192.0.2.1>\r\nEvent: presence\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
        unique()
    )
}

/// A restart with `file`, completed (restored watchers ask): returns the
/// shard and what the completion sent.
fn restart_done(file: &[u8], now: Instant, unix_ms: u64) -> (Shard, Vec<Vec<u8>>) {
    let (mut s, _) = restart(file, now, unix_ms);
    let mut out = Outbox::default();
    s.restore_done(now, &mut out);
    (s, wires(&out))
}

/// Runs timer ticks until the checkpoint a restart started is all in the
/// journal; returns how many ticks it took.
fn write_checkpoint(s: &mut Shard, now: Instant) -> usize {
    let mut ticks = 0;
    while s.checkpoint_end().is_none() {
        assert!(ticks < 10_000, "the checkpoint ends");
        s.on_time(now, &mut Outbox::default());
        ticks += 1;
    }
    s.clear_checkpoint();
    ticks
}

#[test]
fn a_checkpoint_is_written_a_slice_per_tick_and_holds_every_key() {
    let t0 = Instant::now();
    let mut a = shard(t0, UNIX_T0, Fsync::Always);
    let mut file = Vec::new();
    let keys = durable::CHECKPOINT_KEYS_PER_TICK * 2 + 10;
    for i in 0..keys {
        send(&mut a, t0, &publish(&format!("sip:p{i}@example.com"), 1, None, &format!("note {i}"), 3600));
    }
    flush(&mut a, t0, &mut file);
    // The restart's checkpoint goes into a journal of its own.
    let (mut b, _) = restart_done(&file, t0, UNIX_T0 + 1000);
    let before = b.journal().unwrap().appended();
    assert_eq!(write_checkpoint(&mut b, t0), 3, "{keys} keys at {} per tick", durable::CHECKPOINT_KEYS_PER_TICK);
    let mut file2 = Vec::new();
    flush(&mut b, t0, &mut file2);
    assert!(b.journal().unwrap().appended() > before);
    // That journal alone restores every publication.
    let (c, _) = restart_done(&file2, t0, UNIX_T0 + 2000);
    assert_eq!(c.publications.published_aors().len(), keys);
}

#[test]
fn a_watchers_dialog_continues_after_a_restart() {
    let t0 = Instant::now();
    let mut a = shard(t0, UNIX_T0, Fsync::Always);
    let mut file = Vec::new();
    let mut alice_tag = etag(&send(&mut a, t0, &publish("sip:alice@example.com", 1, None, "before", 3600)));
    // A short publication for Bob, which will expire while the server
    // is down.
    send(&mut a, t0, &publish("sip:bob@example.com", 1, None, "short", 60));
    let mut tags = Vec::new();
    let mut last_cseq = 0;
    for aor in ["sip:alice@example.com", "sip:bob@example.com"] {
        let sent = step(&mut a, t0, subscribe(aor, 1, None, 3600).as_bytes());
        let ok = Message::parse(&sent[0], &Limits::default()).unwrap();
        assert_eq!(ok.status(), Some(200));
        tags.push(String::from_utf8(ok.to().tag().unwrap().to_vec()).unwrap());
        answer_notifies(&mut a, t0, &sent);
    }
    // Alice changes 70 times: past the first CSeq reservation.
    for i in 0..70 {
        let sent = step(&mut a, t0, publish("sip:alice@example.com", 100 + i, Some(&alice_tag), &format!("change {i}"), 3600).as_bytes());
        let ok = Message::parse(&sent[0], &Limits::default()).unwrap();
        alice_tag = etag(&ok);
        for (cseq, _) in answer_notifies(&mut a, t0, &sent) {
            last_cseq = cseq;
        }
    }
    assert!(last_cseq > 64, "{last_cseq}");
    flush(&mut a, t0, &mut file);

    // The restart, 10 minutes later: Bob's publication expired meanwhile.
    let t1 = Instant::now() + Duration::from_secs(1);
    let (mut b, sent) = restart_done(&file, t1, UNIX_T0 + 600_000);
    let told = answer_notifies(&mut b, t1, &sent);
    assert_eq!(told.len(), 1, "only Bob's watcher, whose document changed, is told: {told:?}");
    assert!(told[0].1.contains("<basic>closed</basic>"), "{}", told[0].1);
    assert!(told[0].0 > 1, "its CSeq continues");
    // Alice's watcher refreshes in the dialog: 200, not 481.
    let sent = step(&mut b, t1, subscribe("sip:alice@example.com", 2, Some(&tags[0]), 3600).as_bytes());
    assert_eq!(Message::parse(&sent[0], &Limits::default()).unwrap().status(), Some(200));
    let refreshed = answer_notifies(&mut b, t1, &sent);
    assert_eq!(refreshed.len(), 1);
    assert!(refreshed[0].0 > last_cseq, "NOTIFY CSeq {} continues above {last_cseq}", refreshed[0].0);
    assert!(refreshed[0].1.contains("change 69"), "the restored document: {}", refreshed[0].1);
    // A new change reaches the restored watcher.
    let sent = step(&mut b, t1, publish("sip:alice@example.com", 999, Some(&alice_tag), "after the restart", 3600).as_bytes());
    let got = answer_notifies(&mut b, t1, &sent);
    assert!(got.iter().any(|(c, body)| *c > refreshed[0].0 && body.contains("after the restart")), "{got:?}");
    // A stale CSeq in the dialog is still refused (the remote CSeq was kept).
    let sent = step(&mut b, t1, subscribe("sip:alice@example.com", 2, Some(&tags[0]), 3600).as_bytes());
    assert_eq!(Message::parse(&sent[0], &Limits::default()).unwrap().status(), Some(500));
    // An unsubscribe ends it, and a restart after that does not bring it back.
    let sent = step(&mut b, t1, subscribe("sip:alice@example.com", 3, Some(&tags[0]), 0).as_bytes());
    assert_eq!(Message::parse(&sent[0], &Limits::default()).unwrap().status(), Some(200));
    answer_notifies(&mut b, t1, &sent);
    // (The second generation's journal, on its own file: its checkpoint,
    // written by the timer ticks, then the unsubscribe.)
    let mut file2 = Vec::new();
    write_checkpoint(&mut b, t1);
    flush(&mut b, t1, &mut file2);
    let (c, _) = restart_done(&file2, t1, UNIX_T0 + 601_000);
    assert_eq!(c.subscriptions().len(), 1, "Bob's watcher only");
}

#[test]
fn a_subscription_that_expired_while_down_ends_with_a_timeout_notify() {
    let t0 = Instant::now();
    let mut a = shard(t0, UNIX_T0, Fsync::Always);
    let mut file = Vec::new();
    send(&mut a, t0, &publish("sip:carol@example.com", 1, None, "here", 3600));
    let sent = step(&mut a, t0, subscribe("sip:carol@example.com", 1, None, 60).as_bytes());
    assert_eq!(Message::parse(&sent[0], &Limits::default()).unwrap().status(), Some(200));
    let first = answer_notifies(&mut a, t0, &sent);
    assert_eq!(first.len(), 1);
    flush(&mut a, t0, &mut file);

    // Ten minutes down: the subscription's 60 s ran out meanwhile.
    let t1 = Instant::now() + Duration::from_secs(1);
    let (mut b, sent) = restart_done(&file, t1, UNIX_T0 + 600_000);
    assert!(sent.iter().all(|w| !w.starts_with(b"NOTIFY")), "nothing before the first tick");
    let sent = tick(&mut b, t1 + Duration::from_millis(10));
    let notifies: Vec<Message<'_>> = sent.iter().filter(|w| w.starts_with(b"NOTIFY")).map(|w| Message::parse(w, &Limits::default()).unwrap()).collect();
    assert_eq!(notifies.len(), 1, "one timeout NOTIFY");
    let state = String::from_utf8_lossy(notifies[0].header(HeaderName::SubscriptionState).unwrap()).into_owned();
    assert_eq!(state, "terminated;reason=timeout");
    assert!(notifies[0].cseq().seq > first[0].0, "its CSeq continues");
    assert_eq!(b.subscriptions().len(), 0, "and it is gone");
}

#[test]
fn a_checkpoint_waits_while_the_device_is_behind() {
    let t0 = Instant::now();
    let mut a = shard(t0, UNIX_T0, Fsync::Always);
    let mut file = Vec::new();
    for i in 0..6000 {
        let ok = send(&mut a, t0, &publish(&format!("sip:slow{i}@example.com"), 1, None, &format!("note {i}"), 3600));
        assert_eq!(ok.status(), Some(200));
        if i % 1000 == 999 {
            flush(&mut a, t0, &mut file);
        }
    }
    flush(&mut a, t0, &mut file);
    // The restarted shard's journal holds at most 1 MiB unwritten; the
    // checkpoint (about 1.1 MiB of records) stops at half of it while
    // nothing is written.
    let (mut b, _) = restart_done(&file, t0, UNIX_T0 + 1000);
    for _ in 0..100 {
        b.on_time(t0, &mut Outbox::default());
    }
    assert!(
        b.checkpoint_end().is_none(),
        "the checkpoint waits for the device: {} appended, {} held",
        b.journal().unwrap().appended(),
        b.journal().unwrap().pending_len()
    );
    let held = b.journal().unwrap().pending_len();
    assert!(held < (1 << 19) + 500 * 400, "{held} bytes held: past half the limit by more than a slice");
    assert!(!b.journal().unwrap().is_backlogged(), "changes are still accepted");
    let mut file2 = Vec::new();
    assert!(write_checkpoint_flushing(&mut b, t0, &mut file2) > 0);
    let (c, _) = restart_done(&file2, t0, UNIX_T0 + 2000);
    assert_eq!(c.publications.published_aors().len(), 6000);
}

/// Ticks and flushes until the checkpoint is all written; returns the
/// ticks.
fn write_checkpoint_flushing(s: &mut Shard, now: Instant, file: &mut Vec<u8>) -> usize {
    let mut ticks = 0;
    while s.checkpoint_end().is_none() {
        assert!(ticks < 10_000, "the checkpoint ends");
        s.on_time(now, &mut Outbox::default());
        flush(s, now, file);
        ticks += 1;
    }
    flush(s, now, file);
    ticks
}

/// A SUBSCRIBE to `aor` from watcher `w` (its own identity and dialog).
fn subscribe_as(w: usize, aor: &str, cseq: u32, to_tag: Option<&str>, expires: u32) -> String {
    subscribe(aor, cseq, to_tag, expires)
        .replace("sip:w@example.net>;tag=wt", &format!("sip:w{w}@example.net>;tag=wt"))
        .replace("Call-ID: watch-", &format!("Call-ID: w{w}-"))
}

#[test]
fn restored_watchers_ask_a_slice_per_tick_and_none_is_left_stale_or_counted_twice() {
    let t0 = Instant::now();
    let mut a = shard(t0, UNIX_T0, Fsync::Always);
    let mut file = Vec::new();
    let aor = "sip:alice@example.com";
    send(&mut a, t0, &publish(aor, 1, None, "the real one", 3600));
    let n = durable::REWATCH_ASKS_PER_TICK + 5;
    let mut tags = Vec::new();
    for w in 0..n {
        let sent = step(&mut a, t0, subscribe_as(w, aor, 1, None, 3600).as_bytes());
        let ok = Message::parse(&sent[0], &Limits::default()).unwrap();
        assert_eq!(ok.status(), Some(200));
        tags.push(String::from_utf8(ok.to().tag().unwrap().to_vec()).unwrap());
        answer_notifies(&mut a, t0, &sent);
    }
    flush(&mut a, t0, &mut file);

    let t1 = t0 + Duration::from_secs(5);
    let (mut b, sent) = restart_done(&file, t1, UNIX_T0 + 5000);
    assert!(answer_notifies(&mut b, t1, &sent).is_empty(), "nothing changed while down");
    assert_eq!(b.rewatch_pending(), 5, "the first slice asked at once, the rest at the next ticks");
    // The last watcher refreshes before its ask went out: its NOTIFY
    // cannot carry the document yet.
    let last = n - 1;
    let sent = step(&mut b, t1, subscribe_as(last, aor, 2, Some(&tags[last]), 3600).as_bytes());
    assert_eq!(Message::parse(&sent[0], &Limits::default()).unwrap().status(), Some(200));
    answer_notifies(&mut b, t1, &sent);
    // The one before it unsubscribes before its ask went out.
    let sent = step(&mut b, t1, subscribe_as(last - 1, aor, 2, Some(&tags[last - 1]), 0).as_bytes());
    assert_eq!(Message::parse(&sent[0], &Limits::default()).unwrap().status(), Some(200));
    answer_notifies(&mut b, t1, &sent);

    let mut ticks = 0;
    let mut told = Vec::new();
    while b.rewatch_pending() > 0 {
        let sent = tick(&mut b, t1);
        told.extend(answer_notifies(&mut b, t1, &sent));
        ticks += 1;
    }
    assert_eq!(ticks, 1);
    // The refreshed watcher now gets the document it was not shown.
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].1.contains("the real one"), "{}", told[0].1);
    // The presentity counts every live watcher once, and not the one that
    // left before its ask.
    assert_eq!(b.presentity_watchers.get(aor.as_bytes()).map_or(0, |w| w.watchers.len()), n - 1);
}
