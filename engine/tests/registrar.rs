//! The registrar over real sockets: register, refresh, query, de-register,
//! expiry, wildcard, 423, stale CSeq and third-party REGISTER, over UDP and
//! TCP with one and two shards; registration changes observed as presence
//! events in the log of the owning shard.

mod common;
use common::*;
use presence_engine::core::ids::owner_of;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

static NEXT_BRANCH: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// REGISTER for `aor` from `from` with the given Contact and Expires lines.
fn register(c: &Client, aor: &str, from: &str, call_id: &str, cseq: u32, contacts: &[&str], expires: Option<u32>) -> Vec<u8> {
    let branch = format!("reg{}", NEXT_BRANCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let mut s = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag=f{cseq}\r\n\
To: <{aor}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\n",
        c.via(&branch)
    );
    for ct in contacts {
        s.push_str(&format!("Contact: {ct}\r\n"));
    }
    if let Some(e) = expires {
        s.push_str(&format!("Expires: {e}\r\n"));
    }
    s.push_str("Content-Length: 0\r\n\r\n");
    s.into_bytes()
}

/// Contact header values of a response.
fn contacts(resp: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(resp);
    text.split("\r\n\r\n").next().unwrap().lines().filter_map(|l| l.strip_prefix("Contact: ").map(str::to_string)).collect()
}

/// Registration events for `aor`: (state, shard).
fn reg_events(srv: &Presenced, aor: &str, at_least: usize) -> Vec<(String, u64)> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let ev: Vec<(String, u64)> = srv
            .logged("registration")
            .into_iter()
            .filter(|v| v["aor"] == aor)
            .map(|v| (v["state"].as_str().unwrap().to_string(), v["shard"].as_u64().unwrap()))
            .collect();
        if ev.len() >= at_least || std::time::Instant::now() > end {
            return ev;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lifecycle(shards: usize, tcp: bool) {
    let srv = Presenced::start(shards, &[]);
    let mut c = Client::new(&srv, tcp, Ipv4Addr::LOCALHOST);
    let aor = format!("sip:alice-{shards}-{tcp}@example.com");
    let ct = "<sip:alice@192.0.2.10:5060>";

    // Register.
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 1, &[ct], Some(600)));
    assert_eq!(status(&r), 200, "{}", String::from_utf8_lossy(&r));
    assert_eq!(contacts(&r), vec![format!("{ct};expires=600")]);
    // Refresh with a second contact (its own expires param wins).
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 2, &[ct, "<sip:alice@198.51.100.7>;expires=300"], Some(900)));
    assert_eq!(status(&r), 200);
    assert_eq!(contacts(&r), vec![format!("{ct};expires=900"), "<sip:alice@198.51.100.7>;expires=300".to_string()]);
    // Query: no Contact, the bindings come back unchanged.
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 3, &[], None));
    assert_eq!(contacts(&r).len(), 2);
    // Too brief: 423 with Min-Expires, nothing changes.
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 4, &["<sip:x@192.0.2.99>"], Some(10)));
    assert_eq!(status(&r), 423);
    assert_eq!(header(&r, "Min-Expires").as_deref(), Some("60"));
    // Stale CSeq for the same Call-ID: rejected, nothing changes.
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 2, &[&format!("{ct};expires=0")], None));
    assert_eq!(status(&r), 400);
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 5, &[], None));
    assert_eq!(contacts(&r).len(), 2, "the stale request changed nothing");
    // Wildcard with a non-zero Expires: 400.
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 6, &["*"], Some(60)));
    assert_eq!(status(&r), 400);
    // De-register one, then all with the wildcard.
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 7, &["<sip:alice@198.51.100.7>"], Some(0)));
    assert_eq!(contacts(&r), vec![format!("{ct};expires=900")]);
    let r = c.send(&register(&c, &aor, &aor, "cid-1", 8, &["*"], Some(0)));
    assert_eq!(status(&r), 200);
    assert!(contacts(&r).is_empty());

    // Presence followed: open (1 contact), open (2), open (1), closed; all
    // on the AOR's owning shard.
    let ev = reg_events(&srv, &aor, 4);
    let states: Vec<&str> = ev.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(states, ["open", "open", "open", "closed"]);
    let owner = owner_of(aor.as_bytes(), shards as u16) as u64;
    assert!(ev.iter().all(|(_, s)| *s == owner), "events on owner {owner}: {ev:?}");
}

mod lifecycle {
    use super::*;
    transport_matrix!(lifecycle);
}

#[test]
fn bindings_expire_and_presence_closes() {
    for shards in [1, 2] {
        let srv = Presenced::start(shards, &["--min-expires", "1"]);
        let mut c = Client::new(&srv, false, Ipv4Addr::LOCALHOST);
        let aor = "sip:shortlived@example.com";
        let r = c.send(&register(&c, aor, aor, "exp-1", 1, &["<sip:s@192.0.2.1>"], Some(1)));
        assert_eq!(contacts(&r), vec!["<sip:s@192.0.2.1>;expires=1"]);
        let ev = reg_events(&srv, aor, 2);
        assert_eq!(ev.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["open", "closed"], "expired within {WAIT:?}");
        let r = c.send(&register(&c, aor, aor, "exp-1", 2, &[], None));
        assert!(contacts(&r).is_empty(), "the binding is gone");
    }
}

#[test]
fn third_party_register_needs_a_trusted_s_cscf() {
    let scscf_ip = fresh_loopback();
    let trust = scscf_ip.to_string();
    for shards in [1, 2] {
        let srv = Presenced::start(shards, &["--trust", &trust]);
        let aor = "sip:+15551234567@ims.example.com";
        let scscf_uri = "sip:scscf1.ims.example.com";
        // From an untrusted address: 403, nothing registered.
        let mut other = Client::new(&srv, false, Ipv4Addr::LOCALHOST);
        let r = other.send(&register(&other, aor, scscf_uri, "tp-1", 1, &["<sip:ue@192.0.2.50>"], Some(600)));
        assert_eq!(status(&r), 403);
        // From the trusted S-CSCF, over UDP and TCP.
        let mut scscf = Client::new(&srv, false, scscf_ip);
        let r = scscf.send(&register(&scscf, aor, scscf_uri, "tp-2", 1, &["<sip:ue@192.0.2.50>"], Some(600)));
        assert_eq!(status(&r), 200);
        assert_eq!(contacts(&r), vec!["<sip:ue@192.0.2.50>;expires=600"]);
        // De-registration on the UE's behalf.
        let r = scscf.send(&register(&scscf, aor, scscf_uri, "tp-2", 2, &["<sip:ue@192.0.2.50>"], Some(0)));
        assert_eq!(status(&r), 200);
        assert!(contacts(&r).is_empty());
        let ev = reg_events(&srv, aor, 2);
        assert_eq!(ev.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["open", "closed"]);
        // A TCP connection from an untrusted address is refused too.
        let mut t = Client::new(&srv, true, Ipv4Addr::LOCALHOST);
        let r = t.send(&register(&t, aor, scscf_uri, "tp-3", 1, &["<sip:ue@192.0.2.50>"], Some(600)));
        assert_eq!(status(&r), 403);
    }
}

/// The server as reg-event subscriber (RFC 3680) at a test S-CSCF on
/// loopback: third-party REGISTER, SUBSCRIBE at the S-CSCF, full and
/// partial reginfo NOTIFYs, a version gap that triggers a new
/// subscription, a terminated registration, and 481 for a stray NOTIFY.
#[test]
fn reg_event_subscription_follows_the_s_cscf() {
    for shards in [1, 2] {
        let scscf_ip = fresh_loopback();
        let srv = Presenced::start(shards, &["--trust", &scscf_ip.to_string(), "--reg-event"]);
        let scscf = udp_socket(scscf_ip, 0);
        let aor = "sip:+15550001111@ims.example.com";
        let mut c = Client::Udp(udp_socket(scscf_ip, 0), srv.addr);
        let r = c.send(&register(&c, aor, "sip:scscf@ims.example.com", "re-1", 1, &["<sip:ue@192.0.2.60>"], Some(600)));
        assert_eq!(status(&r), 200);
        // The SUBSCRIBE goes to the S-CSCF's address: here, the client's
        // socket that sent the REGISTER.
        let Client::Udp(reg_sock, _) = &c else { unreachable!() };
        let sub = recv(reg_sock, WAIT).expect("SUBSCRIBE at the S-CSCF");
        let text = String::from_utf8_lossy(&sub).to_string();
        assert!(text.starts_with(&format!("SUBSCRIBE {aor} SIP/2.0")), "{text}");
        assert_eq!(header(&sub, "Event").as_deref(), Some("reg"));
        assert_eq!(header(&sub, "Accept").as_deref(), Some("application/reginfo+xml"));
        let dialog = accept_subscribe(reg_sock, srv.addr, &sub);

        let contacts_of = |n: usize| -> Vec<String> {
            let ev: Vec<String> =
                srv.wait_logged("registration", n).into_iter().filter(|v| v["aor"] == aor).map(|v| v["contacts"].as_str().unwrap().to_string()).collect();
            ev
        };
        // Full state, version 0: two active contacts.
        let full = reginfo(0, "full", "active", &[("sip:ue@192.0.2.60", "active", "registered"), ("sip:ue2@192.0.2.61", "active", "created")]);
        assert_eq!(status(&dialog.notify(&scscf, srv.addr, 1, "active;expires=600", &full)), 200);
        // Partial, version 1: one contact expired.
        let part = reginfo(1, "partial", "active", &[("sip:ue2@192.0.2.61", "terminated", "expired")]);
        assert_eq!(status(&dialog.notify(&scscf, srv.addr, 2, "active;expires=600", &part)), 200);
        let ev = contacts_of(3);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(ev[1].split(", ").count(), 2, "full state applied: {ev:?}");
        assert_eq!(ev[2], "sip:ue@192.0.2.60", "partial state applied: {ev:?}");

        // Partial, version 3: a gap. Answered, then a fresh SUBSCRIBE.
        let gap = reginfo(3, "partial", "active", &[("sip:ue@192.0.2.60", "terminated", "deactivated")]);
        assert_eq!(status(&dialog.notify(&scscf, srv.addr, 3, "active;expires=600", &gap)), 200);
        let sub2 = recv(reg_sock, WAIT).expect("a new SUBSCRIBE after the version gap");
        assert_ne!(header(&sub2, "Call-ID"), header(&sub, "Call-ID"));
        assert_eq!(contacts_of(3).len(), 3, "the gapped document was not applied");
        let dialog2 = accept_subscribe(reg_sock, srv.addr, &sub2);
        // The old dialog is gone: 481.
        assert_eq!(status(&dialog.notify(&scscf, srv.addr, 4, "active", &full)), 481);
        // Full state on the new dialog: the registration is terminated.
        let done = reginfo(0, "full", "terminated", &[("sip:ue@192.0.2.60", "terminated", "unregistered")]);
        assert_eq!(status(&dialog2.notify(&scscf, srv.addr, 1, "terminated;reason=noresource", &done)), 200);
        let ev = contacts_of(4);
        assert_eq!(ev.last().map(String::as_str), Some(""), "closed: {ev:?}");
    }
}

/// The reg subscription is refreshed in its dialog before the granted
/// expiry runs out, and ended (Expires: 0) when the S-CSCF de-registers.
#[test]
fn reg_event_subscription_is_refreshed_and_ended() {
    let scscf_ip = fresh_loopback();
    let srv = Presenced::start(2, &["--trust", &scscf_ip.to_string(), "--reg-event"]);
    let aor = "sip:+15550002222@ims.example.com";
    let mut c = Client::Udp(udp_socket(scscf_ip, 0), srv.addr);
    let r = c.send(&register(&c, aor, "sip:scscf@ims.example.com", "rf-1", 1, &["<sip:ue@192.0.2.70>"], Some(600)));
    assert_eq!(status(&r), 200);
    let Client::Udp(sock, _) = &c else { unreachable!() };
    let sub = recv(sock, WAIT).expect("SUBSCRIBE");
    accept_subscribe_for(sock, srv.addr, &sub, 2);
    // Granted 2 s: the refresh comes at 1.6 s, in the same dialog.
    let refresh = recv(sock, WAIT).unwrap_or_else(|| panic!("refresh SUBSCRIBE; log: {:?}", srv.logged("reg subscription")));
    assert_eq!(header(&refresh, "Call-ID"), header(&sub, "Call-ID"));
    assert_eq!(header(&refresh, "CSeq").as_deref(), Some("2 SUBSCRIBE"));
    assert!(header(&refresh, "To").unwrap().contains(";tag=scscf1"), "in-dialog");
    accept_subscribe_for(sock, srv.addr, &refresh, 600);
    // De-registration on the UE's behalf ends the subscription.
    let r = c.send(&register(&c, aor, "sip:scscf@ims.example.com", "rf-1", 2, &["<sip:ue@192.0.2.70>"], Some(0)));
    assert_eq!(status(&r), 200);
    let Client::Udp(sock, _) = &c else { unreachable!() };
    let end = recv(sock, WAIT).expect("unSUBSCRIBE");
    assert_eq!(header(&end, "Expires").as_deref(), Some("0"));
    assert_eq!(header(&end, "CSeq").as_deref(), Some("3 SUBSCRIBE"));
}

/// The server's SUBSCRIBE is a client transaction: unanswered over UDP it
/// is retransmitted (Timer E, T1 = 100 ms here) with the same branch, and
/// stops once answered.
#[test]
fn unanswered_subscribe_is_retransmitted_over_udp() {
    let scscf_ip = fresh_loopback();
    let srv = Presenced::start(1, &["--trust", &scscf_ip.to_string(), "--reg-event", "--t1-ms", "100"]);
    let aor = "sip:+15550003333@ims.example.com";
    let mut c = Client::Udp(udp_socket(scscf_ip, 0), srv.addr);
    let r = c.send(&register(&c, aor, "sip:scscf@ims.example.com", "rt-1", 1, &["<sip:ue@192.0.2.80>"], Some(600)));
    assert_eq!(status(&r), 200);
    let Client::Udp(sock, _) = &c else { unreachable!() };
    let first = recv(sock, WAIT).expect("SUBSCRIBE");
    let again = recv(sock, Duration::from_millis(1000)).expect("Timer E retransmission");
    assert_eq!(first, again, "the same request, branch included");
    let third = recv(sock, Duration::from_millis(1000)).expect("a second retransmission, 200 ms later");
    assert_eq!(first, third);
    accept_subscribe(sock, srv.addr, &first);
    std::thread::sleep(Duration::from_millis(100));
    while recv(sock, Duration::from_millis(10)).is_some() {} // one may have crossed the 200
    assert!(recv(sock, Duration::from_millis(600)).is_none(), "no retransmission after the final response");
}

/// A presence agent learned from the reg event (RFC 3680: its contact's
/// `events` unknown-param lists presence) of a third-party registration is
/// subscribed to through the S-CSCF (Request-URI the AOR, Route the
/// S-CSCF); its NOTIFYs reach the watcher; the reg event ending the
/// contact ends the subscription.
#[test]
fn reg_event_pua_is_reached_through_the_s_cscf() {
    let scscf_ip = fresh_loopback();
    let srv = Presenced::start(2, &["--trust", &scscf_ip.to_string(), "--reg-event", "--notify-min-interval-ms", "0"]);
    let aor = "sip:+15550004444@ims.example.com";
    let mut c = Client::Udp(udp_socket(scscf_ip, 0), srv.addr);
    // Registered without the feature tag: not an agent yet.
    let r = c.send(&register(&c, aor, "sip:scscf@ims.example.com", "pua-1", 1, &["<sip:ue@192.0.2.90>"], Some(600)));
    assert_eq!(status(&r), 200);
    let Client::Udp(sock, _) = &c else { unreachable!() };
    let scscf = sock.local_addr().unwrap();
    let reg_sub = recv(sock, WAIT).expect("reg SUBSCRIBE");
    assert_eq!(header(&reg_sub, "Event").as_deref(), Some("reg"));
    let reg_dialog = accept_subscribe(sock, srv.addr, &reg_sub);
    let (mut watcher, ok, _) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n");
    assert_eq!(status(&ok), 200);
    assert!(recv(sock, Duration::from_millis(400)).is_none(), "no agent among the bindings yet");

    // The reg event says the contact is a presence agent.
    let with_pua = |version: u32, state: &str, event: &str| {
        format!(
            "<?xml version=\"1.0\"?>\n<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"{version}\" state=\"full\">\n\
<registration aor=\"{aor}\" id=\"r1\" state=\"active\"><contact id=\"c1\" state=\"{state}\" event=\"{event}\" expires=\"600\">\
<uri>sip:ue@192.0.2.90</uri><unknown-param name=\"events\">\"presence\"</unknown-param></contact></registration>\n</reginfo>\n"
        )
    };
    assert_eq!(status(&reg_dialog.notify(&scscf_sock(&c), srv.addr, 1, "active;expires=600", &with_pua(0, "active", "registered"))), 200);
    let sub = recv(sock, WAIT).expect("presence SUBSCRIBE at the S-CSCF");
    let text = String::from_utf8_lossy(&sub).into_owned();
    assert!(text.starts_with(&format!("SUBSCRIBE {aor} SIP/2.0\r\n")), "Request-URI the AOR: {text}");
    assert_eq!(header(&sub, "Route"), Some(format!("<sip:{scscf};lr>")), "{text}");
    assert_eq!(header(&sub, "Event").as_deref(), Some("presence"));
    let dialog = accept_subscribe(sock, srv.addr, &sub);
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"ue\"><status><basic>open</basic></status><note>via-scscf</note></tuple></presence>"
    );
    let n = format!(
        "NOTIFY {} SIP/2.0\r\nVia: SIP/2.0/UDP {scscf};rport;branch=z9hG4bKpn1\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\n\
Call-ID: {}\r\nCSeq: 1 NOTIFY\r\nEvent: presence\r\nSubscription-State: active;expires=600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
        dialog.target,
        dialog.our_to,
        dialog.server_from,
        dialog.call_id,
        doc.len()
    );
    assert_eq!(status(&udp_transaction(sock, srv.addr, n.as_bytes())), 200);
    let mut seen = body(&watcher.next_notify(&srv));
    while !seen.contains("via-scscf") {
        seen = body(&watcher.next_notify(&srv));
    }

    // The reg event ends the contact: the server unsubscribes.
    assert_eq!(status(&reg_dialog.notify(&scscf_sock(&c), srv.addr, 2, "active;expires=600", &with_pua(1, "terminated", "unregistered"))), 200);
    let end = recv(sock, WAIT).expect("unsubscribe at the S-CSCF");
    assert_eq!(header(&end, "Expires").as_deref(), Some("0"));
    assert_eq!(header(&end, "Call-ID"), Some(dialog.call_id.clone()));
    while seen.contains("via-scscf") {
        seen = body(&watcher.next_notify(&srv));
    }
}

/// Reg-event NOTIFYs count only from the S-CSCF the subscription went to
/// (any port of its address); the same dialog from another address gets
/// 403 and changes nothing.
#[test]
fn reg_event_notifies_only_from_the_s_cscf() {
    let scscf_ip = fresh_loopback();
    let srv = Presenced::start(1, &["--trust", &scscf_ip.to_string(), "--reg-event"]);
    let aor = "sip:+15550001111@ims.example.com";
    let mut c = Client::Udp(udp_socket(scscf_ip, 0), srv.addr);
    let r = c.send(&register(&c, aor, "sip:scscf@ims.example.com", "only-1", 1, &["<sip:ue@192.0.2.95>"], Some(600)));
    assert_eq!(status(&r), 200);
    let Client::Udp(sock, _) = &c else { unreachable!() };
    let dialog = accept_subscribe(sock, srv.addr, &recv(sock, WAIT).expect("reg SUBSCRIBE"));
    let empty = reginfo(0, "full", "terminated", &[("sip:ue@192.0.2.95", "terminated", "unregistered")]);
    let elsewhere = udp_socket(fresh_loopback(), 0);
    assert_eq!(status(&dialog.notify(&elsewhere, srv.addr, 1, "active", &empty)), 403);
    std::thread::sleep(Duration::from_millis(100));
    assert!(srv.logged("registration").iter().all(|v| v["contacts"] != ""), "nothing applied");
    assert_eq!(status(&dialog.notify(&scscf_sock(&c), srv.addr, 2, "active", &empty)), 200, "another port of the S-CSCF");
}

/// A second socket on the S-CSCF's address, for NOTIFYs (their answers
/// must not be mixed with the server's requests to the S-CSCF).
fn scscf_sock(c: &Client) -> UdpSocket {
    let Client::Udp(sock, _) = c else { unreachable!() };
    match sock.local_addr().unwrap().ip() {
        std::net::IpAddr::V4(ip) => udp_socket(ip, 0),
        std::net::IpAddr::V6(_) => unreachable!("loopback v4"),
    }
}

struct Dialog {
    call_id: String,
    /// The server's side: its From (with tag) becomes the NOTIFY's To.
    server_from: String,
    /// Our side: the SUBSCRIBE's To plus our tag.
    our_to: String,
    target: String,
}

impl Dialog {
    fn notify(&self, s: &UdpSocket, srv: SocketAddr, cseq: u32, state: &str, body: &str) -> Vec<u8> {
        let port = s.local_addr().unwrap();
        let req = format!(
            "NOTIFY {} SIP/2.0\r\nVia: SIP/2.0/UDP {port};rport;branch=z9hG4bKn{cseq}-{}\r\nMax-Forwards: 70\r\n\
From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} NOTIFY\r\nEvent: reg\r\nSubscription-State: {state}\r\n\
Content-Type: application/reginfo+xml\r\nContent-Length: {}\r\n\r\n{body}",
            self.target,
            NEXT_BRANCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            self.our_to,
            self.server_from,
            self.call_id,
            body.len()
        );
        udp_transaction(s, srv, req.as_bytes())
    }
}

/// Answers a SUBSCRIBE with 200 (adding our to-tag) and returns the dialog.
fn accept_subscribe(s: &UdpSocket, srv: SocketAddr, sub: &[u8]) -> Dialog {
    accept_subscribe_for(s, srv, sub, 600)
}

fn accept_subscribe_for(s: &UdpSocket, srv: SocketAddr, sub: &[u8], expires: u32) -> Dialog {
    let h = |n: &str| header(sub, n).unwrap_or_else(|| panic!("{n} in SUBSCRIBE"));
    let to_h = h("To");
    let to = if to_h.contains(";tag=") { to_h } else { format!("{to_h};tag=scscf1") };
    let resp = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\nExpires: {expires}\r\nContact: <sip:scscf@{}>\r\nContent-Length: 0\r\n\r\n",
        h("Via"),
        h("From"),
        h("Call-ID"),
        h("CSeq"),
        s.local_addr().unwrap()
    );
    s.send_to(resp.as_bytes(), srv).unwrap();
    let contact = h("Contact");
    Dialog { call_id: h("Call-ID"), server_from: h("From"), our_to: to, target: contact.trim_matches(|c| c == '<' || c == '>').to_string() }
}

fn reginfo(version: u32, state: &str, reg_state: &str, contacts: &[(&str, &str, &str)]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\"?>\n<reginfo xmlns=\"urn:ietf:params:xml:ns:reginfo\" version=\"{version}\" state=\"{state}\">\n\
<registration aor=\"sip:+15550001111@ims.example.com\" id=\"r1\" state=\"{reg_state}\">\n"
    );
    for (i, (uri, cstate, event)) in contacts.iter().enumerate() {
        s.push_str(&format!("<contact id=\"c{i}\" state=\"{cstate}\" event=\"{event}\" expires=\"600\"><uri>{uri}</uri></contact>\n"));
    }
    s.push_str("</registration>\n</reginfo>\n");
    s
}
