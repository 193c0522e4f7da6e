//! Every RFC 4475 torture message sent to a running `presenced`, as a
//! datagram and over TCP, with one shard and with two: each gets the
//! response its row of `fixtures/rfc4475/README.md` calls for (or none
//! where the row says discard), and the server keeps answering.
//!
//! Several fixtures share a branch and sent-by, so to the server they are
//! retransmissions of one transaction; each fixture and transport therefore
//! gets a server of its own.
//!
//! Over UDP the answer goes where RFC 3261 18.2.2 and RFC 3581 send it:
//! the source address at the Via sent-by port (5060 for most of the
//! corpus), or the source port when the Via asks with rport. Each fixture
//! is sent from its own loopback address so a test socket can hold 5060.

mod common;
use common::*;
use presence_engine::sip::{HeaderName, RawMessage, Via};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

fn dir() -> PathBuf {
    rfc4475_dir()
}

fn table() -> BTreeMap<String, (String, String)> {
    rfc4475_table()
}

/// The status this server answers each fixture with, `None` for no answer.
/// INVITE, MESSAGE and unknown methods get 405; REGISTERs are processed
/// by the registrar.
fn expected(name: &str, tcp: bool) -> Option<u16> {
    Some(match name {
        // Responses are never answered.
        "unreason" | "noreason" | "scalarlg" | "bigcode" | "bcast" => return None,
        // Over TCP a Content-Length beyond what was sent means "more to
        // come": the server waits (the row allows discard).
        "clerr" if tcp => return None,
        "lwsdisp" | "semiuri" | "transports" | "badbranch" | "zeromf" => 200,
        // REGISTERs: escaped NULs in contacts, a query without Contact
        // (Authorization ignored), Contact params outside/inside <>, escaped
        // headers in a Contact; dblreq's first message.
        "escnull" | "dblreq" | "regaut01" | "cparam01" | "cparam02" | "regescrt" => 200,
        // REGISTER whose To is an isbn: URI: not an AOR we serve.
        "unksm2" => 404,
        "wsinv" | "intmeth" | "esc01" | "esc02" | "longreq" | "mpart01" | "baddate" | "invut" | "sdp01" | "inv2543" => 405,
        "badinv01" | "clerr" | "ncl" | "scalar02" | "quotbal" | "ltgtruri" | "lwsruri" | "lwsstart" | "trws" | "escruri" | "regbadct" | "badaspec"
        | "baddn" | "mismatch01" | "mismatch02" | "insuf" | "multi01" | "mcl01" => 400,
        "badvers" => 505,
        "unkscm" | "novelsc" => 416,
        "bext01" => 420,
        other => panic!("no expectation for fixture {other}: add one"),
    })
}

/// The expectation agrees with the table: rows for responses expect
/// silence; a row naming one status (no alternatives) gets that class.
fn consistent_with_table(name: &str, class: &str, handling: &str, want: Option<u16>) {
    if class.contains("response") {
        assert_eq!(want, None, "{name}: a response is never answered");
        return;
    }
    let listed: Vec<u16> = handling.split(|c: char| !c.is_ascii_digit()).filter(|w| w.len() == 3).filter_map(|w| w.parse().ok()).collect();
    if listed.len() == 1 && !handling.contains(" or ") {
        assert_eq!(want.map(|s| s / 100), Some(listed[0] / 100), "{name}: table says {handling:?}");
    }
    if class == "invalid" {
        assert!(want.is_none_or(|s| s >= 400), "{name}: an invalid request never gets 2xx");
    }
}

/// Where a UDP answer to `bytes` sent from `sender` must arrive.
fn response_port(bytes: &[u8], sender: &UdpSocket) -> u16 {
    let via = RawMessage::split_lenient(bytes).ok().and_then(|r| r.list(HeaderName::Via).next().and_then(|v| Via::parse(v).ok()));
    match via {
        Some(v) if v.rport().is_none() => v.port_or_default(),
        _ => sender.local_addr().unwrap().port(),
    }
}

fn still_answers(srv: &Presenced, tag: &str) {
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let port = s.local_addr().unwrap().port();
    let r = udp_transaction(&s, srv.addr, &options("sip:probe@example.com", &format!("UDP 127.0.0.1:{port};rport;branch=z9hG4bK{tag}"), tag));
    assert_eq!(status(&r), 200, "server still answers after {tag}");
}

fn run_corpus(shards: usize) {
    let rows = table();
    assert_eq!(rows.len(), 49);
    let mut failures = Vec::new();
    for (name, (class, handling)) in &rows {
        let bytes = std::fs::read(dir().join(format!("{name}.dat"))).unwrap();

        // UDP.
        let srv = Presenced::start(shards, &[]);
        let want = expected(name, false);
        consistent_with_table(name, class, handling, want);
        let ip = fresh_loopback();
        let sender = udp_socket(ip, 0);
        let port = response_port(&bytes, &sender);
        let catcher = (port != sender.local_addr().unwrap().port()).then(|| udp_socket(ip, port));
        let rx = catcher.as_ref().unwrap_or(&sender);
        sender.send_to(&bytes, srv.addr).unwrap();
        let got = recv(rx, if want.is_some() { WAIT } else { QUIET }).map(|r| status(&r));
        if got != want {
            failures.push(format!("{name} over UDP: want {want:?}, got {got:?} ({handling})"));
        }
        if catcher.is_some() && recv(&sender, Duration::from_millis(20)).is_some() {
            failures.push(format!("{name} over UDP: an answer went to the source port without rport"));
        }

        still_answers(&srv, &format!("after-{name}"));

        // TCP.
        let srv = Presenced::start(shards, &[]);
        let want = expected(name, true);
        let mut t = tcp_connect(srv.addr);
        t.write_all(&bytes).unwrap();
        let mut got = tcp_read_message(&mut t, if want.is_some() { WAIT } else { QUIET }).map(|r| status(&r));
        if name == "dblreq" {
            // On a stream both messages are requests (a REGISTER, then an
            // INVITE): two answers, in either order once shards differ.
            let second = tcp_read_message(&mut t, WAIT).map(|r| status(&r));
            let mut both = [got, second];
            both.sort();
            if both != [Some(200), Some(405)] {
                failures.push(format!("dblreq over TCP: want 200 and 405, got {both:?}"));
            }
            got = want;
        }
        if got != want {
            failures.push(format!("{name} over TCP: want {want:?}, got {got:?} ({handling})"));
        }
        drop(t);
        still_answers(&srv, &format!("after-{name}"));
    }
    assert!(failures.is_empty(), "{} fixture(s) mishandled with {shards} shard(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn corpus_with_one_shard() {
    run_corpus(1);
}

#[test]
fn corpus_with_two_shards() {
    run_corpus(2);
}
