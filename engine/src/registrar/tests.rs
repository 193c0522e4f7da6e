//! One test per registrar rule, driven without sockets and with a fake clock.

use super::*;
use crate::sip::Limits;

const SRC: &str = "192.0.2.10:5060";
const SCSCF: &str = "192.0.2.200:5060";

struct Req {
    to: &'static str,
    from: &'static str,
    call_id: &'static str,
    cseq: u32,
    contacts: Vec<&'static str>,
    expires: Option<u32>,
}

impl Req {
    fn new(contacts: &[&'static str]) -> Req {
        Req { to: "sip:alice@example.com", from: "sip:alice@example.com", call_id: "c1", cseq: 1, contacts: contacts.to_vec(), expires: None }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\n\
From: <{}>;tag=f\r\nTo: <{}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\n",
            self.cseq, self.from, self.to, self.call_id, self.cseq
        );
        for c in &self.contacts {
            s.push_str(&format!("Contact: {c}\r\n"));
        }
        if let Some(e) = self.expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        s.push_str("Content-Length: 0\r\n\r\n");
        s.into_bytes()
    }
}

struct Fixture {
    reg: Registrar,
    t0: Instant,
    changes: Vec<RegChange>,
}

impl Fixture {
    fn new() -> Self {
        let t0 = Instant::now();
        let cfg = RegistrarConfig { trusted: crate::core::trust::TrustList::of_addrs(&[SCSCF.parse().unwrap()]), ..Default::default() };
        Fixture { reg: Registrar::new(cfg, t0, Default::default()), t0, changes: Vec::new() }
    }
    fn send_from(&mut self, r: &Req, at_secs: u64, src: &str) -> RegisterReply {
        let bytes = r.bytes();
        let msg = Message::parse(&bytes, &Limits::default()).unwrap();
        self.reg.register(self.t0 + Duration::from_secs(at_secs), &msg, Peer::udp(src.parse().unwrap()), &mut self.changes)
    }
    fn send(&mut self, r: &Req, at_secs: u64) -> RegisterReply {
        self.send_from(r, at_secs, SRC)
    }
    fn contacts(&self) -> Vec<String> {
        self.reg
            .registration(b"sip:alice@example.com")
            .map(|r| r.bindings.iter().map(|b| String::from_utf8_lossy(&b.uri).into_owned()).collect())
            .unwrap_or_default()
    }
}

fn contact_headers(r: &RegisterReply) -> Vec<String> {
    r.headers.iter().filter(|(n, _)| *n == HeaderName::Contact).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
}

#[test]
fn add_lists_bindings_with_remaining_expiry() {
    let mut f = Fixture::new();
    let r = f.send(&Req { expires: Some(300), ..Req::new(&["<sip:alice@192.0.2.10:5060>", "<sip:alice@198.51.100.1>;expires=120"]) }, 0);
    assert_eq!(r.code, 200);
    assert_eq!(contact_headers(&r), vec!["<sip:alice@192.0.2.10:5060>;expires=300", "<sip:alice@198.51.100.1>;expires=120"]);
    assert_eq!(f.changes.len(), 1);
    assert_eq!(f.changes[0].contacts.len(), 2);
}

#[test]
fn default_expiry_and_maximum() {
    let mut f = Fixture::new();
    let r = f.send(&Req::new(&["<sip:a@192.0.2.10>"]), 0);
    assert_eq!(contact_headers(&r), vec!["<sip:a@192.0.2.10>;expires=3600"]);
    let r = f.send(&Req { cseq: 2, expires: Some(999_999), ..Req::new(&["<sip:a@192.0.2.10>"]) }, 0);
    assert_eq!(contact_headers(&r), vec!["<sip:a@192.0.2.10>;expires=7200"], "shortened to the maximum");
}

#[test]
fn too_brief_is_423_with_min_expires_and_changes_nothing() {
    let mut f = Fixture::new();
    let r = f.send(&Req { expires: Some(30), ..Req::new(&["<sip:a@192.0.2.10>"]) }, 0);
    assert_eq!(r.code, 423);
    assert_eq!(r.headers, vec![(HeaderName::MinExpires, b"60".to_vec())]);
    assert!(f.contacts().is_empty() && f.changes.is_empty());
    // Atomic: one good contact and one too brief register neither.
    let r = f.send(&Req::new(&["<sip:a@192.0.2.10>", "<sip:b@192.0.2.10>;expires=5"]), 0);
    assert_eq!(r.code, 423);
    assert!(f.contacts().is_empty());
}

#[test]
fn refresh_and_remove_one_binding() {
    let mut f = Fixture::new();
    f.send(&Req { expires: Some(100), ..Req::new(&["<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>"]) }, 0);
    // Refresh at t=50 with an equivalent URI (19.1.4: host case differs).
    let r = f.send(&Req { cseq: 2, expires: Some(100), ..Req::new(&["<sip:a@192.0.2.10>"]) }, 50);
    assert_eq!(contact_headers(&r), vec!["<sip:a@192.0.2.10>;expires=100", "<sip:b@192.0.2.11>;expires=50"]);
    let r = f.send(&Req { cseq: 3, ..Req::new(&["<sip:b@192.0.2.11>;expires=0"]) }, 60);
    assert_eq!(contact_headers(&r), vec!["<sip:a@192.0.2.10>;expires=90"]);
    assert_eq!(f.changes.last().unwrap().contacts.len(), 1);
}

#[test]
fn contact_uris_compare_per_rfc3261() {
    let mut f = Fixture::new();
    f.send(&Req::new(&["<sip:%61lice@EXAMPLE.org;transport=tcp>"]), 0);
    let r = f.send(&Req { cseq: 2, ..Req::new(&["<sip:alice@example.org;Transport=TCP>;expires=0"]) }, 1);
    assert_eq!(r.code, 200);
    assert!(f.contacts().is_empty(), "escaped user, host case and param case are equivalent");
}

#[test]
fn query_without_contact_returns_bindings_and_changes_nothing() {
    let mut f = Fixture::new();
    f.send(&Req::new(&["<sip:a@192.0.2.10>"]), 0);
    f.changes.clear();
    let r = f.send(&Req { cseq: 2, ..Req::new(&[]) }, 10);
    assert_eq!(r.code, 200);
    assert_eq!(contact_headers(&r), vec!["<sip:a@192.0.2.10>;expires=3590"]);
    assert!(f.changes.is_empty());
}

#[test]
fn wildcard_removes_all_only_with_expires_zero() {
    let mut f = Fixture::new();
    f.send(&Req::new(&["<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>"]), 0);
    let r = f.send(&Req { cseq: 2, expires: Some(60), ..Req::new(&["*"]) }, 1);
    assert_eq!(r.code, 400);
    assert_eq!(f.contacts().len(), 2);
    let r = f.send(&Req { cseq: 3, expires: Some(0), ..Req::new(&["*"]) }, 1);
    assert_eq!(r.code, 200);
    assert!(contact_headers(&r).is_empty() && f.contacts().is_empty());
    assert_eq!(f.changes.last().unwrap().contacts.len(), 0, "closed");
}

#[test]
fn stale_cseq_is_rejected_and_changes_nothing() {
    let mut f = Fixture::new();
    f.send(&Req { cseq: 5, ..Req::new(&["<sip:a@192.0.2.10>"]) }, 0);
    let r = f.send(&Req { cseq: 5, ..Req::new(&["<sip:a@192.0.2.10>;expires=0"]) }, 1);
    assert_eq!(r.code, 400);
    let r = f.send(&Req { cseq: 4, expires: Some(0), ..Req::new(&["*"]) }, 1);
    assert_eq!(r.code, 400);
    assert_eq!(f.contacts().len(), 1);
    // Another Call-ID may use any CSeq.
    let r = f.send(&Req { call_id: "other", cseq: 1, ..Req::new(&["<sip:a@192.0.2.10>;expires=0"]) }, 1);
    assert_eq!(r.code, 200);
    assert!(f.contacts().is_empty());
}

#[test]
fn instance_and_reg_id_are_kept() {
    let mut f = Fixture::new();
    let r = f.send(&Req::new(&["<sip:a@192.0.2.10>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1"]), 0);
    assert_eq!(contact_headers(&r), vec!["<sip:a@192.0.2.10>;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;expires=3600"]);
}

#[test]
fn bindings_expire_on_the_wheel() {
    let mut f = Fixture::new();
    f.send(&Req { expires: Some(60), ..Req::new(&["<sip:a@192.0.2.10>", "<sip:b@192.0.2.11>;expires=120"]) }, 0);
    f.changes.clear();
    f.reg.on_time(f.t0 + Duration::from_secs(59), &mut f.changes);
    assert!(f.changes.is_empty());
    f.reg.on_time(f.t0 + Duration::from_secs(61), &mut f.changes);
    assert_eq!(f.changes.len(), 1);
    assert_eq!(f.contacts(), vec!["sip:b@192.0.2.11"]);
    // A refresh moves the deadline: the old firing leaves it alone.
    f.send(&Req { cseq: 2, ..Req::new(&["<sip:b@192.0.2.11>;expires=300"]) }, 100);
    f.reg.on_time(f.t0 + Duration::from_secs(130), &mut f.changes);
    assert_eq!(f.contacts(), vec!["sip:b@192.0.2.11"]);
    f.changes.clear();
    f.reg.on_time(f.t0 + Duration::from_secs(401), &mut f.changes);
    assert_eq!(f.changes, vec![RegChange { aor: (*b"sip:alice@example.com").into(), contacts: vec![] }]);
    assert!(f.reg.is_empty());
}

#[test]
fn third_party_needs_a_trusted_source() {
    let mut f = Fixture::new();
    let req = Req { from: "sip:scscf@ims.example.com", ..Req::new(&["<sip:a@192.0.2.10>"]) };
    let r = f.send(&req, 0);
    assert_eq!(r.code, 403);
    assert!(f.contacts().is_empty());
    let r = f.send_from(&req, 0, SCSCF);
    assert_eq!(r.code, 200);
    assert_eq!(f.reg.registration(b"sip:alice@example.com").unwrap().registered_by, Some(SCSCF.parse().unwrap()));
    // And de-registers with Expires 0.
    let r = f.send_from(&Req { cseq: 2, expires: Some(0), ..req }, 1, SCSCF);
    assert_eq!(r.code, 200);
    assert!(f.contacts().is_empty());
}

fn info(version: u32, full: bool, reg_state: &str, contacts: &[(&str, bool)]) -> reginfo::RegInfo {
    reginfo::RegInfo {
        version,
        full,
        registrations: vec![reginfo::RegInfoRegistration {
            aor: "sip:alice@example.com".into(),
            state: reg_state.into(),
            contacts: contacts
                .iter()
                .map(|(u, active)| reginfo::RegInfoContact { uri: u.to_string(), active: *active, event: "registered".into(), expires: Some(600), pua: false })
                .collect(),
        }],
    }
}

#[test]
fn reginfo_full_replaces_partial_updates_terminated_clears() {
    let mut f = Fixture::new();
    f.send(&Req::new(&["<sip:old@192.0.2.1>"]), 0);
    let now = f.t0 + Duration::from_secs(1);
    f.reg.apply_reginfo(
        now,
        &info(0, true, "active", &[("sip:a@192.0.2.10", true), ("sip:b@192.0.2.11", true)]),
        b"s",
        Peer::udp(SCSCF.parse().unwrap()),
        |_| true,
        &mut f.changes,
    );
    assert_eq!(f.contacts(), vec!["sip:a@192.0.2.10", "sip:b@192.0.2.11"], "full state replaced the old binding");
    f.reg.apply_reginfo(
        now,
        &info(1, false, "active", &[("sip:b@192.0.2.11", false), ("sip:c@192.0.2.12", true)]),
        b"s",
        Peer::udp(SCSCF.parse().unwrap()),
        |_| true,
        &mut f.changes,
    );
    assert_eq!(f.contacts(), vec!["sip:a@192.0.2.10", "sip:c@192.0.2.12"], "partial: one removed, one added");
    f.reg.apply_reginfo(now, &info(2, false, "terminated", &[]), b"s", Peer::udp(SCSCF.parse().unwrap()), |_| true, &mut f.changes);
    assert!(f.contacts().is_empty());
    assert_eq!(f.changes.last().unwrap().contacts.len(), 0);
    // AORs owned by another shard are left alone.
    let n = f.changes.len();
    f.reg.apply_reginfo(now, &info(0, true, "active", &[("sip:a@192.0.2.10", true)]), b"s", Peer::udp(SCSCF.parse().unwrap()), |_| false, &mut f.changes);
    assert!(f.contacts().is_empty() && f.changes.len() == n);
}

mod reg_event_rules {
    use super::super::reg_event::{NotifyVerdict, RegSubscriber};
    use crate::core::peer::Peer;
    use crate::sip::{Limits, Message};

    const FULL: &str = "<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"V\" state=\"S\"><registration aor=\"sip:alice@example.com\" id=\"1\" state=\"active\"/></reginfo>";

    /// A NOTIFY; each one built gets the next CSeq, as a notifier's do.
    fn notify(call_id: &str, to_tag: &str, event: &str, ctype: &str, body: &str, state: &str) -> Vec<u8> {
        static CSEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let cseq = CSEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "NOTIFY sip:presence@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKx\r\n\
From: <sip:alice@example.com>;tag=n1\r\nTo: <sip:presence@127.0.0.1:5060>;tag={to_tag}\r\nCall-ID: {call_id}\r\n\
CSeq: {cseq} NOTIFY\r\nEvent: {event}\r\nSubscription-State: {state}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn setup() -> (RegSubscriber, String, String) {
        let mut rs = RegSubscriber::new(1, "127.0.0.1:5060".parse().unwrap(), 3600, crate::core::entropy::Entropy::for_shard(7, 1), std::time::Instant::now());
        let mut out = Vec::new();
        let call_id =
            rs.subscribe(b"sip:alice@example.com", b"sip:alice@example.com", Peer::udp("192.0.2.200:5060".parse().unwrap()), b"z9hG4bK.ps0001.1", &mut out);
        let sub = Message::parse(&out, &Limits::default()).expect("the SUBSCRIBE parses");
        assert_eq!(sub.event().unwrap().unwrap().package(), b"reg");
        let tag = String::from_utf8(sub.from().tag().unwrap().to_vec()).unwrap();
        assert_eq!(crate::core::ids::tag_shard(tag.as_bytes()), Some(1), "the dialog's tag names its shard");
        (rs, String::from_utf8(call_id.to_vec()).unwrap(), tag)
    }

    fn verdict(rs: &mut RegSubscriber, bytes: &[u8]) -> NotifyVerdict {
        rs.on_notify(&Message::parse(bytes, &Limits::default()).unwrap(), "192.0.2.200:5060".parse().unwrap())
    }

    #[test]
    fn dialog_package_and_media_type_are_checked() {
        let (mut rs, cid, tag) = setup();
        let body = FULL.replace('V', "0").replace('S', "full");
        assert_eq!(
            verdict(&mut rs, &notify("nope", &tag, "reg", "application/reginfo+xml", &body, "active")),
            NotifyVerdict::Reject(481, "Subscription Does Not Exist")
        );
        assert_eq!(
            verdict(&mut rs, &notify(&cid, "wrong", "reg", "application/reginfo+xml", &body, "active")),
            NotifyVerdict::Reject(481, "Subscription Does Not Exist")
        );
        assert_eq!(verdict(&mut rs, &notify(&cid, &tag, "presence", "application/reginfo+xml", &body, "active")), NotifyVerdict::Reject(489, "Bad Event"));
        assert_eq!(verdict(&mut rs, &notify(&cid, &tag, "reg", "text/plain", &body, "active")), NotifyVerdict::Reject(415, "Unsupported Media Type"));
        assert_eq!(
            verdict(&mut rs, &notify(&cid, &tag, "reg", "application/reginfo+xml", "<x", "active")),
            NotifyVerdict::Reject(400, "Bad Request: malformed reginfo")
        );
    }

    #[test]
    fn versions_in_order_apply_old_ones_are_ignored_gaps_resubscribe() {
        let (mut rs, cid, tag) = setup();
        let doc = |v: u32, s: &str| FULL.replace('V', &v.to_string()).replace('S', s);
        let n = |v: u32, s: &str| notify(&cid, &tag, "reg", "application/reginfo+xml", &doc(v, s), "active");
        assert!(matches!(verdict(&mut rs, &n(0, "full")), NotifyVerdict::Apply(_)));
        assert!(matches!(verdict(&mut rs, &n(1, "partial")), NotifyVerdict::Apply(_)));
        assert_eq!(verdict(&mut rs, &n(1, "partial")), NotifyVerdict::Ignore, "a repeated version");
        assert_eq!(verdict(&mut rs, &n(3, "partial")), NotifyVerdict::Resubscribe, "version 2 is missing");
        assert!(matches!(verdict(&mut rs, &n(9, "full")), NotifyVerdict::Apply(_)), "full state resets the version");
        let end = notify(&cid, &tag, "reg", "application/reginfo+xml", "", "terminated;reason=noresource");
        assert_eq!(verdict(&mut rs, &end), NotifyVerdict::Terminated);
        assert!(rs.is_empty());
    }

    #[test]
    fn refresh_at_four_fifths_of_the_granted_expiry_then_unsubscribe() {
        use std::time::{Duration, Instant};
        let (mut rs, cid, _) = setup();
        let t0 = Instant::now();
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.ps0001.1\r\nFrom: <sip:presence@127.0.0.1:5060>;tag=x\r\n\
To: <sip:alice@example.com>;tag=remote\r\nCall-ID: {cid}\r\nCSeq: 1 SUBSCRIBE\r\nExpires: 100\r\nContent-Length: 0\r\n\r\n"
        );
        let ok = Message::parse(ok.as_bytes(), &Limits::default()).unwrap();
        assert!(rs.on_subscribe_response(cid.as_bytes(), 200, Some(&ok), t0));
        let mut due = vec![];
        rs.due(t0 + Duration::from_secs(79), &mut due);
        assert!(due.is_empty());
        rs.due(t0 + Duration::from_secs(81), &mut due);
        assert_eq!(due, vec![cid.as_bytes().into()]);
        let mut out = vec![];
        assert!(rs.resubscribe(cid.as_bytes(), 3600, b"z9hG4bK.ps0001.2", &mut out).is_some());
        let refresh = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(refresh.cseq().seq, 2);
        assert_eq!(refresh.to().tag(), Some(&b"remote"[..]), "in the dialog");
        out.clear();
        rs.resubscribe(cid.as_bytes(), 0, b"z9hG4bK.ps0001.3", &mut out);
        assert_eq!(Message::parse(&out, &Limits::default()).unwrap().expires(), Some(0));
        assert!(rs.is_empty(), "unsubscribed");
        // A rejected SUBSCRIBE ends a subscription too.
        let (mut rs, cid, _) = setup();
        assert!(!rs.on_subscribe_response(cid.as_bytes(), 403, None, t0));
        assert!(rs.is_empty());
    }
}

#[test]
fn refreshes_keep_one_expiry_entry_and_bindings_still_expire() {
    let mut f = Fixture::new();
    for t in 0..100u32 {
        let r = Req { cseq: t + 1, expires: Some(600), ..Req::new(&["<sip:alice@192.0.2.1>"]) };
        assert_eq!(f.send(&r, t as u64).code, 200);
        f.reg.on_time(f.t0 + Duration::from_secs(t as u64), &mut f.changes);
        assert!(f.reg.wheel_entries() <= 2, "{} wheel entries after {t} refreshes", f.reg.wheel_entries());
    }
    f.reg.on_time(f.t0 + Duration::from_secs(99 + 599), &mut f.changes);
    assert_eq!(f.contacts().len(), 1, "alive until 600 s after the last refresh");
    f.reg.on_time(f.t0 + Duration::from_secs(99 + 601), &mut f.changes);
    assert!(f.contacts().is_empty(), "expired");
}

#[test]
fn presence_agents_are_marked_by_feature_tag_or_allow_events() {
    let pua = |f: &Fixture| -> Vec<bool> { f.reg.registration(b"sip:alice@example.com").unwrap().bindings.iter().map(|b| b.pua).collect() };
    let mut f = Fixture::new();
    let contacts =
        ["<sip:a@192.0.2.1>;events=\"presence,dialog\"", "<sip:b@192.0.2.2>;events=\"dialog\"", "<sip:c@192.0.2.3>;+sip.instance=\"x\";events=presence"];
    assert_eq!(f.send(&Req::new(&contacts), 0).code, 200);
    assert_eq!(pua(&f), vec![true, false, true]);
    // Allow-Events: presence in the REGISTER marks every contact it binds.
    let bytes = String::from_utf8(Req { cseq: 2, ..Req::new(&["<sip:b@192.0.2.2>"]) }.bytes())
        .unwrap()
        .replace("Content-Length", "Allow-Events: presence\r\nContent-Length");
    let msg = Message::parse(bytes.as_bytes(), &Limits::default()).unwrap();
    assert_eq!(f.reg.register(f.t0, &msg, Peer::udp(SRC.parse().unwrap()), &mut f.changes).code, 200);
    assert_eq!(pua(&f), vec![true, true, true]);
    assert!(events_include(b"\"reg, Presence\"", b"presence") && !events_include(b"\"presence.winfo\"", b"presence"));
}
