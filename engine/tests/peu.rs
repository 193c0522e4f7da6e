//! Presence by subscription over real sockets: the server SUBSCRIBEs to a
//! presence user agent (a test PUA that registers with the `events`
//! feature tag) when its presentity gets a watcher, takes the agent's
//! NOTIFYs as publications, composes them with PUBLISHed state, and
//! unsubscribes after the grace period or when the binding goes. Refusals
//! (489) hold until the agent registers again; an agent that never answers
//! is retried with a growing backoff. 1 and 2 shards, UDP and TCP.

mod common;
use common::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A presence user agent: registers, answers the server's SUBSCRIBEs and
/// sends NOTIFYs in the dialog they create.
struct Pua {
    ua: Ua,
    aor: String,
    user: String,
    stash: Vec<Vec<u8>>,
    reg_cseq: u32,
    /// The dialog the server's SUBSCRIBE made: (SUBSCRIBE, our NOTIFY CSeq).
    dialog: Option<(Vec<u8>, u32)>,
}

impl Pua {
    fn new(ua: Ua, aor: &str) -> Pua {
        let user = aor.trim_start_matches("sip:").split('@').next().unwrap().to_string();
        Pua { ua, aor: aor.into(), user, stash: Vec::new(), reg_cseq: 0, dialog: None }
    }

    fn contact(&self) -> String {
        let transport = if self.ua.transport() == "TCP" { ";transport=tcp" } else { "" };
        format!("<sip:{}@{}{transport}>", self.user, self.ua.addr())
    }

    /// REGISTERs the contact with `feature` after it (`;events="presence"`,
    /// or nothing) for `expires` seconds; returns the status.
    fn register(&mut self, srv: &Presenced, expires: u32, feature: &str, extra: &str) -> u16 {
        self.reg_cseq += 1;
        let req = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{} {};rport;branch=z9hG4bKr{}\r\nMax-Forwards: 70\r\n\
From: <{aor}>;tag=r\r\nTo: <{aor}>\r\nCall-ID: reg-{user}\r\nCSeq: {} REGISTER\r\nContact: {}{feature}\r\n{extra}Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
            self.ua.transport(),
            self.ua.addr(),
            unique(),
            self.reg_cseq,
            self.contact(),
            aor = self.aor,
            user = self.user,
        );
        self.ua.send(srv.addr, req.as_bytes());
        status(&self.ua.expect("SIP/2.0", &mut self.stash))
    }

    /// The next SUBSCRIBE from the server, or `None` within `wait`.
    fn next_subscribe(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if let Some(i) = self.stash.iter().position(|m| m.starts_with(b"SUBSCRIBE")) {
            return Some(self.stash.remove(i));
        }
        let end = Instant::now() + wait;
        while Instant::now() < end {
            if let Some(m) = self.ua.recv(Duration::from_millis(50)) {
                if m.starts_with(b"SUBSCRIBE") {
                    return Some(m);
                }
                self.stash.push(m);
            }
        }
        None
    }

    fn expect_subscribe(&mut self) -> Vec<u8> {
        self.next_subscribe(WAIT).expect("a SUBSCRIBE from the server")
    }

    /// Answers a SUBSCRIBE with `code` (and our tag on a 2xx); a 2xx to an
    /// initial one opens the dialog for `notify`.
    fn answer(&mut self, srv: &Presenced, sub: &[u8], code: u16, extra: &str) {
        let h = |n: &str| header(sub, n).unwrap();
        let to = if h("To").contains(";tag=") { h("To") } else { format!("{};tag=pua-{}", h("To"), self.user) };
        let resp = format!(
            "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("Call-ID"),
            h("CSeq")
        );
        self.ua.send(srv.addr, resp.as_bytes());
        if (200..300).contains(&code) && !h("To").contains(";tag=") {
            self.dialog = Some((sub.to_vec(), 0));
        }
    }

    /// Sends a NOTIFY in the dialog; returns the server's status.
    fn notify(&mut self, srv: &Presenced, state: &str, note: &str) -> u16 {
        let body = if note.is_empty() {
            String::new()
        } else {
            format!(
                "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\
<tuple id=\"pua\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>",
                self.aor
            )
        };
        self.notify_raw(srv, state, &body)
    }

    fn notify_raw(&mut self, srv: &Presenced, state: &str, body: &str) -> u16 {
        let contact = self.contact();
        let (sub, cseq) = self.dialog.as_mut().expect("a dialog");
        *cseq += 1;
        let cseq = *cseq;
        let sub = sub.clone();
        let h = |n: &str| header(&sub, n).unwrap();
        let ct = if body.is_empty() { String::new() } else { "Content-Type: application/pidf+xml\r\n".into() };
        let target = h("Contact").trim_matches(|c| c == '<' || c == '>').to_string();
        let req = format!(
            "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/{} {};rport;branch=z9hG4bKn{}\r\nMax-Forwards: 70\r\nFrom: {};tag=pua-{}\r\nTo: {}\r\n\
Call-ID: {}\r\nCSeq: {cseq} NOTIFY\r\nContact: {}\r\nEvent: presence\r\nSubscription-State: {state}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            self.ua.transport(),
            self.ua.addr(),
            unique(),
            h("To"),
            self.user,
            h("From"),
            h("Call-ID"),
            contact,
            body.len()
        );
        self.ua.send(srv.addr, req.as_bytes());
        status(&self.ua.expect("SIP/2.0", &mut self.stash))
    }
}

fn start(shards: usize, extra: &[&str]) -> Presenced {
    let mut flags = vec!["--notify-min-interval-ms", "0", "--peu-grace-seconds", "1"];
    flags.extend_from_slice(extra);
    Presenced::start(shards, &flags)
}

const FEATURE: &str = ";events=\"presence\"";

/// A PUA of a new presentity named `name-<n>`, registered with the feature
/// tag over UDP, a watcher of it, and the server's SUBSCRIBE to the PUA
/// that the watcher brought.
fn watched_pua(srv: &Presenced, name: &str) -> (Pua, Sub, Vec<u8>) {
    let aor = format!("sip:{name}-{}@example.com", unique());
    let mut pua = Pua::new(Ua::udp(), &aor);
    assert_eq!(pua.register(srv, 600, FEATURE, ""), 200);
    let (watcher, ok, _) = Sub::new(srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert_eq!(status(&ok), 200);
    let sub = pua.expect_subscribe();
    (pua, watcher, sub)
}

/// The whole life of a PUA source with one watcher.
fn pua_lifecycle(shards: usize, tcp: bool) {
    let srv = start(shards, &[]);
    let aor = format!("sip:pua-{shards}-{tcp}-{}@example.com", unique());
    let mut pua = Pua::new(if tcp { Ua::tcp(&srv) } else { Ua::udp() }, &aor);
    assert_eq!(pua.register(&srv, 600, FEATURE, ""), 200);
    assert!(pua.next_subscribe(Duration::from_millis(500)).is_none(), "nobody watches: the device is left alone");

    // A watcher: the server subscribes to the agent.
    let (mut watcher, ok, first) = Sub::new(&srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert_eq!(status(&ok), 200);
    assert!(body(&first).contains("<basic>open</basic>"), "registered");
    let sub = pua.expect_subscribe();
    let line = String::from_utf8_lossy(&sub[..sub.iter().position(|&c| c == b'\r').unwrap()]).into_owned();
    assert!(line.starts_with(&format!("SUBSCRIBE sip:{}@", pua.user)), "to the contact: {line}");
    assert_eq!(header(&sub, "Event").as_deref(), Some("presence"));
    assert_eq!(header(&sub, "Accept").as_deref(), Some("application/pidf+xml"));
    assert_eq!(header(&sub, "Expires").as_deref(), Some("3600"));
    assert!(header(&sub, "To").unwrap().contains(&aor));
    assert!(header(&sub, "Via").unwrap().contains(if tcp { "SIP/2.0/TCP" } else { "SIP/2.0/UDP" }));
    pua.answer(&srv, &sub, 200, "Expires: 3600\r\n");

    // Its NOTIFY reaches the watcher, and so does its next one.
    assert_eq!(pua.notify(&srv, "active;expires=3600", "first-from-pua"), 200);
    let n = watcher.next_notify(&srv);
    assert!(body(&n).contains("first-from-pua"), "{}", body(&n));
    assert_eq!(pua.notify(&srv, "active;expires=3590", "update-from-pua"), 200);
    let n = watcher.next_notify(&srv);
    assert!(body(&n).contains("update-from-pua") && !body(&n).contains("first-from-pua"), "replaced: {}", body(&n));

    // A PUBLISH for the same presentity is composed with it.
    publish(&srv, &aor, "open", "from-publish");
    let n = watcher.next_notify(&srv);
    assert!(body(&n).contains("from-publish") && body(&n).contains("update-from-pua"), "both sources: {}", body(&n));

    // A bad body gets 400 and changes nothing; pending changes nothing.
    assert_eq!(pua.notify_raw(&srv, "active", "<presence"), 400);
    assert_eq!(pua.notify(&srv, "pending", "ignored"), 200);
    assert!(watcher.no_notify(Duration::from_millis(300)));

    // The last watcher leaves: the server unsubscribes after the grace
    // period (1 s here), not before.
    let left = Instant::now();
    assert_eq!(status(&watcher.resubscribe(&srv, 0)), 200);
    let unsub = pua.expect_subscribe();
    let waited = left.elapsed();
    assert_eq!(header(&unsub, "Expires").as_deref(), Some("0"));
    assert!(header(&unsub, "To").unwrap().contains(";tag=pua-"), "in the dialog");
    assert!(waited >= Duration::from_millis(900), "unsubscribed after {waited:?}, before the grace period");
    pua.answer(&srv, &unsub, 200, "");
    assert_eq!(pua.notify(&srv, "terminated", ""), 200, "its final NOTIFY is taken");

    // The agent's publication went with the source: a new watcher sees
    // the PUBLISHed state only.
    let (mut watcher, _, first) = Sub::new(&srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert!(body(&first).contains("from-publish") && !body(&first).contains("from-pua"), "{}", body(&first));
    let sub = pua.expect_subscribe();
    assert!(!header(&sub, "To").unwrap().contains(";tag="), "a new dialog");
    pua.answer(&srv, &sub, 200, "");
    assert_eq!(pua.notify(&srv, "active", "back-again"), 200);
    assert!(body(&watcher.next_notify(&srv)).contains("back-again"));

    // De-registration: the server unsubscribes at once, and the watcher
    // sees the source gone.
    assert_eq!(pua.register(&srv, 0, "", ""), 200);
    let unsub = pua.next_subscribe(Duration::from_millis(500)).expect("an unsubscribe at de-registration, without the grace period");
    assert_eq!(header(&unsub, "Expires").as_deref(), Some("0"));
    pua.answer(&srv, &unsub, 200, "");
    let mut n = watcher.next_notify(&srv);
    while body(&n).contains("back-again") {
        n = watcher.next_notify(&srv);
    }
    assert!(body(&n).contains("from-publish"));
    // The answer to the unsubscribe lets the server forget the agent.
    srv.wait_matching("presence agent", 1, WAIT, |r| r["state"] == "removed");
}

mod lifecycle {
    use super::*;
    #[test]
    fn udp_one_shard() {
        pua_lifecycle(1, false);
    }
    #[test]
    fn udp_two_shards() {
        pua_lifecycle(2, false);
    }
    #[test]
    fn tcp_one_shard() {
        pua_lifecycle(1, true);
    }
    #[test]
    fn tcp_two_shards() {
        pua_lifecycle(2, true);
    }
}

/// Allow-Events: presence in the REGISTER marks the binding as well.
#[test]
fn allow_events_in_the_register_makes_a_pua() {
    let srv = start(2, &[]);
    let aor = format!("sip:allow-{}@example.com", unique());
    let mut pua = Pua::new(Ua::udp(), &aor);
    assert_eq!(pua.register(&srv, 600, "", "Allow-Events: presence, dialog\r\n"), 200);
    let (_watcher, _, _) = Sub::new(&srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    let sub = pua.expect_subscribe();
    assert_eq!(header(&sub, "Event").as_deref(), Some("presence"));
    // And a binding without either is never asked.
    let plain = format!("sip:plain-{}@example.com", unique());
    let mut ua = Pua::new(Ua::udp(), &plain);
    assert_eq!(ua.register(&srv, 600, "", ""), 200);
    let (_w, _, _) = Sub::new(&srv, Ua::udp(), &plain, 600, "Event: presence\r\n");
    assert!(ua.next_subscribe(Duration::from_millis(500)).is_none());
}

#[test]
fn a_pua_that_answers_489_is_not_asked_again_until_it_registers() {
    let srv = start(2, &[]);
    let (mut pua, mut w1, sub) = watched_pua(&srv, "refuses");
    let aor = pua.aor.clone();
    pua.answer(&srv, &sub, 489, "");
    // The watcher leaves and another comes after the grace period: the
    // agent is not asked again.
    assert_eq!(status(&w1.resubscribe(&srv, 0)), 200);
    std::thread::sleep(Duration::from_millis(1300));
    let (_w2, _, _) = Sub::new(&srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert!(pua.next_subscribe(Duration::from_millis(1500)).is_none(), "refused: not asked again");
    // Registering again lifts it.
    assert_eq!(pua.register(&srv, 600, FEATURE, ""), 200);
    let again = pua.next_subscribe(WAIT).expect("asked again after registering");
    assert_eq!(header(&again, "Event").as_deref(), Some("presence"));
    let refused = srv.logged("presence agent").into_iter().filter(|r| r["state"] == "refused" && r["status"] == 489).count();
    assert_eq!(refused, 1);
}

/// An agent that never answers: each attempt times out (Timer F, 64*T1)
/// and the next one waits longer than the one before.
#[test]
fn a_pua_that_never_answers_gets_backoff_not_a_loop() {
    let srv = start(1, &["--t1-ms", "20", "--peu-retry-base-ms", "500"]);
    let aor = format!("sip:silent-{}@example.com", unique());
    let mut pua = Pua::new(Ua::udp(), &aor);
    assert_eq!(pua.register(&srv, 600, FEATURE, ""), 200);
    let (_w, _, _) = Sub::new(&srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    // Attempts are new dialogs (new Call-IDs); retransmissions repeat one.
    let start = Instant::now();
    let mut firsts: Vec<(String, Duration)> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut total = 0;
    while start.elapsed() < Duration::from_secs(6) {
        if let Some(s) = pua.next_subscribe(Duration::from_millis(100)) {
            total += 1;
            let call_id = header(&s, "Call-ID").unwrap();
            if seen.insert(call_id.clone()) {
                firsts.push((call_id, start.elapsed()));
            }
        }
    }
    // Timer F is 1.28 s; waits of 0.5, 1 and 2 s put attempts near 0,
    // 1.8, 4.1 (and 7.4) s.
    assert_eq!(firsts.len(), 3, "attempts at {firsts:?}");
    let gap1 = firsts[1].1 - firsts[0].1;
    let gap2 = firsts[2].1 - firsts[1].1;
    assert!(gap2 > gap1 + Duration::from_millis(300), "the wait grows: {gap1:?} then {gap2:?}");
    assert!(total < 40, "retransmissions bounded by the transaction: {total}");
    assert!(srv.logged("presence agent").iter().filter(|r| r["state"] == "backoff" && r["status"] == 408).count() >= 2);
}

/// An agent the configuration names, with mode "always": subscribed at
/// start without registration or watchers.
#[test]
fn a_configured_agent_needs_no_registration() {
    let pua_ua = Ua::udp();
    let aor = format!("sip:static-{}@example.com", unique());
    let user = aor.trim_start_matches("sip:").split('@').next().unwrap().to_string();
    let cfg = config_file("peu-static", &format!("[peu]\nmode = \"always\"\n[[peu.agent]]\npresentity = \"{aor}\"\nuri = \"sip:{user}@{}\"\n", pua_ua.addr()));
    let srv = start(2, &["--config", &cfg]);
    let mut pua = Pua::new(pua_ua, &aor);
    let sub = pua.expect_subscribe();
    assert!(header(&sub, "To").unwrap().contains(&aor));
    pua.answer(&srv, &sub, 200, "");
    assert_eq!(pua.notify(&srv, "active", "configured-source"), 200);
    let (_w, _, first) = Sub::new(&srv, Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert!(body(&first).contains("configured-source"), "{}", body(&first));
}

/// A NOTIFY storm from one agent is coalesced like a PUBLISH burst: the
/// watcher gets at most one NOTIFY per interval, and the last carries the
/// agent's last document.
#[test]
fn a_notify_storm_from_an_agent_is_coalesced() {
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "1000"]);
    let (mut pua, mut watcher, sub) = watched_pua(&srv, "storm");
    pua.answer(&srv, &sub, 200, "");
    for i in 0..30 {
        assert_eq!(pua.notify(&srv, "active", &format!("storm-{i}")), 200);
    }
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < end {
        if let Some(n) = watcher.ua.recv(Duration::from_millis(100)) {
            if n.starts_with(b"NOTIFY") {
                watcher.ua.answer(srv.addr, &n, 200);
                seen.push(body(&n));
            }
        }
    }
    assert!((1..=4).contains(&seen.len()), "{} NOTIFYs for 30 documents", seen.len());
    assert!(seen.last().unwrap().contains("storm-29"), "the last document wins: {:?}", seen.last());
}

/// The server's subscriptions to agents and the publications they made
/// are not journaled; the agent's registration and the watcher are. After
/// kill -9 the restarted server subscribes to the agent again (its
/// presentity is still watched), and the agent's next NOTIFY reaches the
/// restored watcher.
#[test]
fn after_a_restart_the_agent_is_subscribed_again() {
    let dir = DataDir::new("peu-restart");
    let d = dir.to_str().unwrap();
    let flags = ["--data-dir", d, "--fsync", "always"];
    let srv = start(1, &flags);
    let (mut pua, mut watcher, sub) = watched_pua(&srv, "restart");
    pua.answer(&srv, &sub, 200, "Expires: 600\r\n");
    assert_eq!(pua.notify(&srv, "active;expires=600", "before the crash"), 200);
    while !body(&watcher.next_notify(&srv)).contains("before the crash") {}
    srv.signal(libc::SIGKILL);
    drop(srv);
    let srv = start(1, &flags);
    let again = pua.expect_subscribe();
    assert!(!header(&again, "To").unwrap().contains(";tag="), "a new dialog: {}", String::from_utf8_lossy(&again));
    pua.dialog = None;
    pua.answer(&srv, &again, 200, "Expires: 600\r\n");
    assert_eq!(pua.notify(&srv, "active;expires=600", "after the restart"), 200);
    while !body(&watcher.next_notify(&srv)).contains("after the restart") {}
    drop(srv);
}
