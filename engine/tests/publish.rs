//! PUBLISH (RFC 3903) to a running presenced over UDP and TCP, with one
//! and two shards: every rule of section 6, and the composed document
//! (observed in the owning shard's log) following publications,
//! registrations and expiry.

mod common;
use common::*;
use presence_engine::core::ids::owner_of;
use std::net::Ipv4Addr;
use std::time::Duration;

/// PUBLISH with extra header lines and an optional (type, body).
fn publish(c: &mut Client, aor: &str, extra: &str, ctype_body: Option<(&str, &str)>) -> Vec<u8> {
    let n = unique();
    let (ct, body) = match ctype_body {
        Some((t, b)) => (format!("Content-Type: {t}\r\n"), b.to_string()),
        None => (String::new(), String::new()),
    };
    let req = format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/{}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p{n}\r\nTo: <{aor}>\r\n\
Call-ID: pub-{n}\r\nCSeq: 1 PUBLISH\r\n{extra}{ct}Content-Length: {}\r\n\r\n{body}",
        c.fresh_via(),
        body.len()
    );
    c.send(req.as_bytes())
}

fn pidf(aor: &str, basic: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"t1\"><status><basic>{basic}</basic></status></tuple><note>{note}</note></presence>"
    )
}

const PIDF: &str = "application/pidf+xml";

/// Documents logged for `aor`, in order: (shard, document).
fn documents(srv: &Presenced, aor: &str, at_least: usize) -> Vec<(u64, String)> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let d: Vec<(u64, String)> = srv
            .logged("document")
            .into_iter()
            .filter(|v| v["aor"] == aor)
            .map(|v| (v["shard"].as_u64().unwrap(), v["document"].as_str().unwrap().to_string()))
            .collect();
        if d.len() >= at_least || std::time::Instant::now() > end {
            return d;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rules(shards: usize, tcp: bool) {
    let srv = Presenced::start(shards, &[]);
    let mut c = Client::new(&srv, tcp, Ipv4Addr::LOCALHOST);
    let aor = format!("sip:pub-{shards}-{tcp}@example.com");
    let ev = "Event: presence\r\n";

    // Initial: 200 with an entity tag and the granted expiry.
    let r = publish(&mut c, &aor, &format!("{ev}Expires: 600\r\n"), Some((PIDF, &pidf(&aor, "open", "first"))));
    assert_eq!(status(&r), 200, "{}", String::from_utf8_lossy(&r));
    let e1 = header(&r, "SIP-ETag").expect("SIP-ETag");
    assert_eq!(header(&r, "Expires").as_deref(), Some("600"));
    // Refresh: no body, SIP-If-Match; a new tag.
    let r = publish(&mut c, &aor, &format!("{ev}SIP-If-Match: {e1}\r\nExpires: 600\r\n"), None);
    assert_eq!(status(&r), 200);
    let e2 = header(&r, "SIP-ETag").unwrap();
    assert_ne!(e1, e2);
    // The spent tag: 412.
    assert_eq!(status(&publish(&mut c, &aor, &format!("{ev}SIP-If-Match: {e1}\r\n"), None)), 412);
    // Modify.
    let r = publish(&mut c, &aor, &format!("{ev}SIP-If-Match: {e2}\r\n"), Some((PIDF, &pidf(&aor, "closed", "second"))));
    assert_eq!(status(&r), 200);
    let e3 = header(&r, "SIP-ETag").unwrap();
    // Rule by rule, none of which changes anything.
    let r = publish(&mut c, &aor, "", Some((PIDF, &pidf(&aor, "open", "x"))));
    assert_eq!(status(&r), 489);
    assert_eq!(header(&r, "Allow-Events").as_deref(), Some("presence"));
    assert_eq!(status(&publish(&mut c, &aor, &format!("{ev}SIP-If-Match: {e3}\r\nSIP-If-Match: {e3}\r\n"), None)), 400);
    let r = publish(&mut c, &aor, &format!("{ev}Expires: 5\r\n"), Some((PIDF, &pidf(&aor, "open", "x"))));
    assert_eq!(status(&r), 423);
    assert_eq!(header(&r, "Min-Expires").as_deref(), Some("60"));
    let r = publish(&mut c, &aor, ev, None);
    assert_eq!(status(&r), 400, "initial PUBLISH without body");
    let r = publish(&mut c, &aor, ev, Some(("text/plain", "hello")));
    assert_eq!(status(&r), 415);
    assert_eq!(header(&r, "Accept").as_deref(), Some(PIDF));
    let r = publish(&mut c, &aor, ev, Some((PIDF, "<presence xmlns=\"urn:ietf:params:xml:ns:pidf\">")));
    assert_eq!(status(&r), 400);
    // Remove.
    let r = publish(&mut c, &aor, &format!("{ev}SIP-If-Match: {e3}\r\nExpires: 0\r\n"), None);
    assert_eq!(status(&r), 200);
    assert_eq!(status(&publish(&mut c, &aor, &format!("{ev}SIP-If-Match: {e3}\r\n"), None)), 412, "removed");

    // The document followed: open "first", closed "second", then the
    // neutral closed document; all on the owner, nothing from rejections.
    let docs = documents(&srv, &aor, 3);
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert!(docs[0].1.contains("first") && docs[0].1.contains("<basic>open</basic>"));
    assert!(docs[1].1.contains("second") && docs[1].1.contains("<basic>closed</basic>"));
    assert!(!docs[2].1.contains("second") && docs[2].1.contains("id=\"reg\""));
    let owner = owner_of(aor.as_bytes(), shards as u16) as u64;
    assert!(docs.iter().all(|(s, _)| *s == owner));
}

mod rules {
    use super::*;
    transport_matrix!(rules);
}

#[test]
fn publications_expire_and_registration_shows_through() {
    let srv = Presenced::start(2, &["--publish-min-expires", "1"]);
    let mut c = Client::new(&srv, false, Ipv4Addr::LOCALHOST);
    let aor = "sip:carol@example.com";
    // Registered: open, one tuple per contact.
    let reg = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=r\r\nTo: <{aor}>\r\n\
Call-ID: carol-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:carol@192.0.2.33>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        c.fresh_via()
    );
    assert_eq!(status(&c.send(reg.as_bytes())), 200);
    // Published for 1 s: the publication hides the registration tuple...
    let r = publish(&mut c, aor, "Event: presence\r\nExpires: 1\r\n", Some((PIDF, &pidf(aor, "closed", "in a meeting"))));
    assert_eq!(status(&r), 200);
    // ... until it expires and the registration shows through again.
    let docs = documents(&srv, aor, 3);
    assert_eq!(docs.len(), 3, "{docs:?}");
    assert!(docs[0].1.contains("<contact>sip:carol@192.0.2.33</contact>"));
    assert!(docs[1].1.contains("in a meeting") && !docs[1].1.contains("192.0.2.33"));
    assert!(docs[2].1.contains("<contact>sip:carol@192.0.2.33</contact>") && !docs[2].1.contains("meeting"));
}

/// A retransmitted PUBLISH gets its first answer again, byte for byte
/// (SIP-ETag, Expires and To tag included), though the transaction keeps
/// only the parts the retransmission cannot give back; the publication is
/// made once.
#[test]
fn a_retransmitted_publish_gets_the_same_answer() {
    let srv = Presenced::start(1, &[]);
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let aor = "sip:rita@example.com";
    let doc = pidf(aor, "open", "replayed");
    let req = format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch=z9hG4bKreplay1\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=r1\r\nTo: <{aor}>\r\n\
Call-ID: replay-1\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        s.local_addr().unwrap(),
        doc.len()
    );
    let first = udp_transaction(&s, srv.addr, req.as_bytes());
    assert_eq!(status(&first), 200);
    let text = String::from_utf8_lossy(&first);
    assert!(text.contains("SIP-ETag: ") && text.contains("Expires: 600"), "{text}");
    let second = udp_transaction(&s, srv.addr, req.as_bytes());
    assert_eq!(String::from_utf8_lossy(&second), text);
    let handled: Vec<_> = srv.wait_logged("handled", 1).into_iter().filter(|v| v["call_id"] == "replay-1").collect();
    assert_eq!(handled.len(), 1, "published once");
}
