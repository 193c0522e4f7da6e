//! One test per RFC 3903 rule on the compositor, with a fake clock.

use super::*;
use crate::sip::Limits;

const PIDF: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"pres:alice@example.com\">\
<tuple id=\"t1\"><status><basic>STATE</basic></status></tuple></presence>";

struct P<'a> {
    event: Option<&'a str>,
    if_match: Vec<&'a str>,
    expires: Option<u32>,
    ctype: &'a str,
    body: String,
}

impl<'a> P<'a> {
    fn initial(state: &str) -> Self {
        P { event: Some("presence"), if_match: vec![], expires: None, ctype: "application/pidf+xml", body: PIDF.replace("STATE", state) }
    }
    fn refresh(tag: &'a str) -> Self {
        P { event: Some("presence"), if_match: vec![tag], expires: None, ctype: "", body: String::new() }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut s = String::from(
            "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKp\r\nMax-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\nCall-ID: p1\r\nCSeq: 1 PUBLISH\r\n",
        );
        if let Some(e) = self.event {
            s.push_str(&format!("Event: {e}\r\n"));
        }
        for t in &self.if_match {
            s.push_str(&format!("SIP-If-Match: {t}\r\n"));
        }
        if let Some(e) = self.expires {
            s.push_str(&format!("Expires: {e}\r\n"));
        }
        if !self.body.is_empty() {
            s.push_str(&format!("Content-Type: {}\r\n", self.ctype));
        }
        s.push_str(&format!("Content-Length: {}\r\n\r\n{}", self.body.len(), self.body));
        s.into_bytes()
    }
}

/// Every presentity watched: each change composed and announced.
fn watched(_: &[u8]) -> bool {
    true
}

struct F {
    pubs: Publications,
    t0: Instant,
    changes: Vec<DocChange>,
}

impl F {
    fn new() -> F {
        let t0 = Instant::now();
        F { pubs: Publications::new(PublishConfig::default(), 0, crate::core::entropy::Entropy::for_shard(0, 0), t0), t0, changes: vec![] }
    }
    fn send(&mut self, p: &P<'_>, at: u64) -> PublishReply {
        let b = p.bytes();
        let m = Message::parse(&b, &Limits::default()).unwrap();
        self.pubs.publish(self.t0 + Duration::from_secs(at), &m, &mut self.changes, &watched)
    }
    fn doc(&self) -> String {
        self.pubs.document_now(b"sip:alice@example.com").map(|(_, d)| String::from_utf8_lossy(&d).into_owned()).unwrap_or_default()
    }
}

fn etag(r: &PublishReply) -> String {
    r.headers.iter().find(|(n, _)| *n == HeaderName::SipETag).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).expect("SIP-ETag")
}

#[test]
fn initial_refresh_modify_remove_each_with_a_new_etag() {
    let mut f = F::new();
    let r = f.send(&P::initial("open"), 0);
    assert_eq!(r.code, 200);
    let e1 = etag(&r);
    assert!(f.doc().contains("<basic>open</basic>"));
    assert_eq!(f.changes.len(), 1);
    let r = f.send(&P::refresh(&e1), 10);
    assert_eq!(r.code, 200);
    let e2 = etag(&r);
    assert_ne!(e1, e2);
    assert_eq!(f.changes.len(), 1, "a refresh does not change the document");
    assert_eq!(f.send(&P::refresh(&e1), 11).code, 412, "the old tag is spent");
    let r = f.send(&P { if_match: vec![&e2], ..P::initial("closed") }, 12);
    assert_eq!(r.code, 200);
    let e3 = etag(&r);
    assert!(f.doc().contains("<basic>closed</basic>"));
    assert_eq!(f.changes.len(), 2);
    let r = f.send(&P { expires: Some(0), ..P::refresh(&e3) }, 13);
    assert_eq!(r.code, 200);
    assert_eq!(f.pubs.count(b"sip:alice@example.com"), 0);
    assert_eq!(f.changes.len(), 3, "removal changes the document (to closed, no state)");
}

#[test]
fn event_must_be_presence() {
    let mut f = F::new();
    let r = f.send(&P { event: None, ..P::initial("open") }, 0);
    assert_eq!((r.code, &r.headers[..]), (489, &[(HeaderName::AllowEvents, b"presence".to_vec())][..]));
    assert_eq!(f.send(&P { event: Some("dialog"), ..P::initial("open") }, 0).code, 489);
    assert!(f.changes.is_empty());
}

#[test]
fn several_if_match_is_400_unknown_is_412() {
    let mut f = F::new();
    let e = etag(&f.send(&P::initial("open"), 0));
    assert_eq!(f.send(&P { if_match: vec![&e, "x"], ..P::refresh(&e) }, 1).code, 400);
    assert_eq!(f.send(&P::refresh("nope"), 1).code, 412);
}

#[test]
fn expired_etag_is_412() {
    let mut f = F::new();
    let e = etag(&f.send(&P { expires: Some(60), ..P::initial("open") }, 0));
    f.pubs.on_time(f.t0 + Duration::from_secs(61), &mut f.changes, &watched);
    assert_eq!(f.send(&P::refresh(&e), 62).code, 412);
    assert_eq!(f.changes.len(), 2, "expiry recomposed the document");
}

#[test]
fn brief_is_423_long_is_shortened() {
    let mut f = F::new();
    let r = f.send(&P { expires: Some(5), ..P::initial("open") }, 0);
    assert_eq!((r.code, &r.headers[..]), (423, &[(HeaderName::MinExpires, b"60".to_vec())][..]));
    let r = f.send(&P { expires: Some(1_000_000), ..P::initial("open") }, 0);
    assert!(r.headers.contains(&(HeaderName::Expires, b"7200".to_vec())));
}

#[test]
fn initial_without_body_is_400_wrong_type_415_bad_pidf_400() {
    let mut f = F::new();
    assert_eq!(f.send(&P { body: String::new(), ..P::initial("open") }, 0).code, 400);
    let r = f.send(&P { ctype: "text/plain", ..P::initial("open") }, 0);
    assert_eq!((r.code, &r.headers[..]), (415, &[(HeaderName::Accept, b"application/pidf+xml".to_vec())][..]));
    let r = f.send(&P { body: "<presence".into(), ..P::initial("open") }, 0);
    assert_eq!(r.code, 400);
    assert!(f.changes.is_empty() && f.doc().is_empty(), "nothing changed");
}

#[test]
fn rejected_modify_keeps_the_old_state() {
    let mut f = F::new();
    let e = etag(&f.send(&P::initial("open"), 0));
    assert_eq!(f.send(&P { if_match: vec![&e], body: "<bad".into(), ..P::initial("open") }, 1).code, 400);
    assert!(f.doc().contains("<basic>open</basic>"));
    assert_eq!(f.send(&P::refresh(&e), 2).code, 200, "the tag still works");
}

#[test]
fn registration_tuples_only_without_publications() {
    let mut f = F::new();
    f.pubs.on_registration(b"sip:alice@example.com", &["sip:alice@192.0.2.7".into()], &mut f.changes, &watched);
    assert!(f.doc().contains("<contact>sip:alice@192.0.2.7</contact>") && f.doc().contains("<basic>open</basic>"));
    f.send(&P::initial("closed"), 0);
    assert!(!f.doc().contains("192.0.2.7") && f.doc().contains("<basic>closed</basic>"));
    f.pubs.on_registration(b"sip:alice@example.com", &[], &mut f.changes, &watched);
    assert_eq!(f.changes.len(), 2, "the published document hides the registration change");
}

#[test]
fn many_refreshes_keep_one_expiry_entry_and_still_expire() {
    let mut f = F::new();
    let mut e = etag(&f.send(&P { expires: Some(60), ..P::initial("open") }, 0));
    // A refresh every second for 100 s, each pushing the expiry on.
    for t in 1..=100 {
        let r = f.send(&P { expires: Some(60), ..P::refresh(&e) }, t);
        assert_eq!(r.code, 200, "refresh at {t}");
        e = etag(&r);
        f.pubs.on_time(f.t0 + Duration::from_secs(t), &mut f.changes, &watched);
        assert!(f.pubs.wheel_entries() <= 2, "{} wheel entries after {t} refreshes", f.pubs.wheel_entries());
    }
    assert_eq!(f.pubs.count(b"sip:alice@example.com"), 1, "refreshed, so alive at 100 s");
    // No more refreshes: it expires 60 s after the last one, not before.
    f.pubs.on_time(f.t0 + Duration::from_secs(159), &mut f.changes, &watched);
    assert_eq!(f.pubs.count(b"sip:alice@example.com"), 1);
    f.pubs.on_time(f.t0 + Duration::from_secs(161), &mut f.changes, &watched);
    assert_eq!(f.pubs.count(b"sip:alice@example.com"), 0, "expired");
    assert_eq!(f.send(&P::refresh(&e), 162).code, 412);
}

#[test]
fn a_shorter_publication_expires_first_beside_a_longer_one() {
    let mut f = F::new();
    f.send(&P { expires: Some(3600), ..P::initial("open") }, 0);
    f.send(&P { expires: Some(60), ..P::initial("closed") }, 10);
    f.pubs.on_time(f.t0 + Duration::from_secs(71), &mut f.changes, &watched);
    assert_eq!(f.pubs.count(b"sip:alice@example.com"), 1, "the 60 s one is gone at 71 s");
    f.pubs.on_time(f.t0 + Duration::from_secs(3601), &mut f.changes, &watched);
    assert_eq!(f.pubs.count(b"sip:alice@example.com"), 0);
}

#[test]
fn entity_tags_are_the_hex_format_would_write() {
    for (v, min) in [(0u64, 4u32), (0x1f, 4), (0xabcd, 4), (0x12345, 4), (0, 1), (1, 1), (u64::MAX, 1)] {
        let mut out = Vec::new();
        super::push_hex(&mut out, v, min);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{v:0width$x}", width = min as usize));
    }
}

#[test]
fn the_document_is_kept_only_while_watched_and_then_shared() {
    let aor = b"sip:alice@example.com";
    let mut f = F::new();
    let e1 = etag(&f.send(&P::initial("open"), 0));
    let kept = |f: &F| f.pubs.presentities.get(&aor[..]).is_some_and(|p| p.document.is_some());
    assert!(!kept(&f), "nobody asked: the document is not kept");
    assert!(f.doc().contains("<basic>open</basic>"), "but it is composed when looked at");
    assert!(!kept(&f), "looking is not watching");
    // A watcher asks: from now on one copy, shared.
    let (v1, d1) = f.pubs.document(aor).expect("a document");
    let (_, again) = f.pubs.document(aor).expect("a document");
    assert!(kept(&f) && Arc::ptr_eq(&d1, &again));
    // A change replaces the kept copy with the one the watchers are sent.
    f.send(&P { if_match: vec![&e1], ..P::initial("closed") }, 1);
    let change = f.changes.last().expect("a change").clone();
    let (v2, d2) = f.pubs.document(aor).expect("a document");
    assert!(v2 > v1 && Arc::ptr_eq(&d2, &change.document));
    assert!(String::from_utf8_lossy(&d2).contains("<basic>closed</basic>"));
    // The same document again is no change, kept copy or not.
    f.pubs.unwatched(aor);
    assert!(!kept(&f));
    let before = f.changes.len();
    f.pubs.on_registration(aor, &[], &mut f.changes, &watched);
    assert_eq!(f.changes.len(), before, "recomposed the same: no new version");
    assert_eq!(f.pubs.document_now(aor).map(|(v, _)| v), Some(v2));
}

/// Changes nobody watches are not composed: no change is announced, the
/// version still moves on, and a watcher who comes later gets the
/// current document composed then. A change back to a document watchers
/// saw before the unwatched spell is still news to the new watcher.
#[test]
fn unwatched_changes_are_composed_only_when_a_watcher_asks() {
    let aor = b"sip:alice@example.com";
    let nobody = |_: &[u8]| false;
    let mut f = F::new();
    let send = |f: &mut F, p: &P<'_>, at: u64, w: Watched<'_>| {
        let b = p.bytes();
        let m = Message::parse(&b, &Limits::default()).unwrap();
        etag(&f.pubs.publish(f.t0 + Duration::from_secs(at), &m, &mut f.changes, w))
    };
    // Watched: "open" announced, version v1.
    let e1 = send(&mut f, &P::initial("open"), 0, &watched);
    let (v1, d1) = f.pubs.document(aor).expect("a document");
    assert!(String::from_utf8_lossy(&d1).contains("<basic>open</basic>"));
    assert_eq!(f.changes.len(), 1);
    // The watcher leaves; "closed" is published unwatched: nothing
    // composed, nothing announced, the digest forgotten.
    f.pubs.unwatched(aor);
    let e2 = send(&mut f, &P { if_match: vec![&e1], ..P::initial("closed") }, 1, &nobody);
    assert_eq!(f.changes.len(), 1, "nobody watches: no change announced");
    let p = f.pubs.presentities.get(&aor[..]).expect("state kept");
    assert!(p.document.is_none() && p.digest == UNKNOWN_DIGEST && p.version > v1);
    // A new watcher gets "closed", composed now, under the new version.
    let (v2, d2) = f.pubs.document(aor).expect("a document");
    assert!(v2 > v1 && String::from_utf8_lossy(&d2).contains("<basic>closed</basic>"));
    // Back to "open" while watched: the digest compared against is
    // "closed"'s, so the change is announced.
    let e3 = send(&mut f, &P { if_match: vec![&e2], ..P::initial("open") }, 2, &watched);
    let change = f.changes.last().expect("a change");
    assert!(change.version > v2 && String::from_utf8_lossy(&change.document).contains("<basic>open</basic>"));
    // Removed while unwatched: forgotten at once, nothing announced.
    f.pubs.unwatched(aor);
    let before = f.changes.len();
    send(&mut f, &P { expires: Some(0), ..P::refresh(&e3) }, 3, &nobody);
    assert_eq!(f.changes.len(), before);
    assert!(!f.pubs.presentities.contains_key(&aor[..]) && f.pubs.document(aor).is_none());
}
