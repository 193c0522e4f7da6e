//! Answers to this shard's NOTIFYs: read by their key alone when plainly
//! written (`sip::response_key`), parsed in full otherwise, with the same
//! outcome either way.

use super::*;
use std::time::Instant;

fn src() -> Peer {
    Peer::udp("192.0.2.1:5060".parse().unwrap())
}

const SUBSCRIBE: &str = "SUBSCRIBE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKs1\r\nMax-Forwards: 70\r\n\
From: <sip:w@example.net>;tag=s1\r\nTo: <sip:a@example.com>\r\nCall-ID: s1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w@192.0.2.1>\r\n\
Event: presence\r\nContent-Length: 0\r\n\r\n";

/// A shard with one subscription, and the watcher's answer `code` to its
/// first NOTIFY, passed through `rewrite`.
fn answered(code: u16, rewrite: impl Fn(String) -> String) -> (Shard, Census) {
    let t0 = Instant::now();
    let mut s = Shard::new(ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap()), t0);
    let mut out = Outbox::default();
    s.on_message(t0, src(), SUBSCRIBE.as_bytes(), &mut out);
    let notify = out.transmits.iter().find(|t| t.bytes.starts_with(b"NOTIFY")).expect("NOTIFY").wire().into_owned();
    let m = Message::parse(&notify, &Limits::default()).unwrap();
    let mut answer = Vec::new();
    sip::response_to(&mut answer, m.raw(), code, "Answer", None, None).finish(None, b"");
    let before = s.census();
    let answer = rewrite(String::from_utf8(answer).unwrap());
    s.on_message(t0, src(), answer.as_bytes(), &mut Outbox::default());
    (s, before)
}

#[test]
fn notify_answers_are_taken_with_or_without_the_full_parse() {
    let plain = |a: String| a;
    // A folded line: no key is read, and the full parse takes it.
    let folded = |a: String| a.replace("Call-ID: ", "Call-ID:\r\n  ");
    for (how, rewrite) in [("plain", &plain as &dyn Fn(String) -> String), ("folded", &folded)] {
        assert_eq!(
            sip::response_key(rewrite("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\n\r\n".into()).as_bytes())
                .is_some(),
            how == "plain"
        );
        let (s, before) = answered(200, rewrite);
        assert_eq!(before.notifies_in_flight, 1, "{how}");
        assert_eq!((s.census().notifies_in_flight, s.census().subscriptions), (0, 1), "{how}: a 200 ends the NOTIFY and keeps the dialog");
        let (s, before) = answered(481, rewrite);
        assert_eq!(before.subscriptions, 1, "{how}");
        assert_eq!(s.census().subscriptions, 0, "{how}: a 481 ends the subscription");
    }
    // Another shard's branch, or a stray: left to the full parse, which
    // does not take it for this shard's NOTIFY.
    let (s, _) = answered(481, |a| a.replace(";branch=z9hG4bK", ";branch=z9hG4bKx"));
    assert_eq!(s.census().subscriptions, 1);
}

/// RFC 3261 12.1.1: the 200 that makes the dialog carries the
/// SUBSCRIBE's Record-Route, in order, and so does its replay to a
/// retransmission; the watcher's refreshes then take the same proxies.
#[test]
fn the_subscribes_200_copies_its_record_route() {
    let t0 = Instant::now();
    let mut s = Shard::new(ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap()), t0);
    let rr = "Record-Route: <sip:10.77.0.1;r2=on;lr>\r\nRecord-Route: <sip:127.0.0.1:5080;r2=on;lr>\r\n";
    let req = SUBSCRIBE.replace("Event: presence\r\n", &format!("Event: presence\r\n{rr}"));
    for attempt in ["first", "retransmission"] {
        let mut out = Outbox::default();
        s.on_message(t0, src(), req.as_bytes(), &mut out);
        let ok = out.transmits.iter().find(|t| t.bytes.starts_with(b"SIP/2.0 200")).expect("200").wire().into_owned();
        let ok = String::from_utf8(ok).unwrap();
        let got: Vec<&str> = ok.lines().filter(|l| l.starts_with("Record-Route:")).collect();
        assert_eq!(got, ["Record-Route: <sip:10.77.0.1;r2=on;lr>", "Record-Route: <sip:127.0.0.1:5080;r2=on;lr>"], "{attempt}: {ok}");
    }
}
