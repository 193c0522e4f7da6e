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
        let cfg = RegistrarConfig { trusted: vec![SCSCF.parse().unwrap()], ..Default::default() };
        Fixture { reg: Registrar::new(cfg, t0), t0, changes: Vec::new() }
    }
    fn send_from(&mut self, r: &Req, at_secs: u64, src: &str) -> RegisterReply {
        let bytes = r.bytes();
        let msg = Message::parse(&bytes, &Limits::default()).unwrap();
        self.reg.register(self.t0 + Duration::from_secs(at_secs), &msg, src.parse().unwrap(), &mut self.changes)
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
