//! Test user agents over UDP or TCP: a UA that receives responses and
//! requests, a watcher's subscription, and PUBLISH.

use super::*;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

pub const PIDF_TYPE: &str = "application/pidf+xml";

/// A watcher UA: one socket or connection, receiving responses and NOTIFYs.
pub enum Ua {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

impl Ua {
    pub fn udp() -> Ua {
        Ua::udp_at(Ipv4Addr::LOCALHOST)
    }
    /// A UA sending from loopback address `ip` (see `fresh_loopback`).
    pub fn udp_at(ip: Ipv4Addr) -> Ua {
        Ua::Udp(udp_socket(ip, 0))
    }
    pub fn tcp(srv: &Presenced) -> Ua {
        Ua::Tcp(tcp_connect(srv.addr))
    }
    pub fn addr(&self) -> SocketAddr {
        match self {
            Ua::Udp(s) => s.local_addr().unwrap(),
            Ua::Tcp(t) => t.local_addr().unwrap(),
        }
    }
    pub fn transport(&self) -> &'static str {
        if matches!(self, Ua::Udp(_)) { "UDP" } else { "TCP" }
    }
    pub fn send(&mut self, srv: SocketAddr, bytes: &[u8]) {
        match self {
            Ua::Udp(s) => {
                s.send_to(bytes, srv).unwrap();
            }
            Ua::Tcp(t) => t.write_all(bytes).unwrap(),
        }
    }
    pub fn recv(&mut self, wait: Duration) -> Option<Vec<u8>> {
        match self {
            Ua::Udp(s) => recv(s, wait),
            Ua::Tcp(t) => tcp_read_message(t, wait),
        }
    }
    /// Receives until a message starting with `prefix` arrives (other
    /// messages are kept in `stash`).
    pub fn expect(&mut self, prefix: &str, stash: &mut Vec<Vec<u8>>) -> Vec<u8> {
        if let Some(i) = stash.iter().position(|m| m.starts_with(prefix.as_bytes())) {
            return stash.remove(i);
        }
        let end = Instant::now() + WAIT;
        while Instant::now() < end {
            if let Some(m) = self.recv(Duration::from_millis(200)) {
                if m.starts_with(prefix.as_bytes()) {
                    return m;
                }
                stash.push(m);
            }
        }
        panic!(
            "no {prefix:?} within {WAIT:?}; got {:?}",
            stash.iter().map(|m| String::from_utf8_lossy(&m[..40.min(m.len())]).into_owned()).collect::<Vec<_>>()
        );
    }
    /// Answers a request (a NOTIFY) with `code`.
    pub fn answer(&mut self, srv: SocketAddr, req: &[u8], code: u16) {
        let h = |n: &str| header(req, n).unwrap();
        let resp = format!(
            "SIP/2.0 {code} X\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            h("Via"),
            h("From"),
            h("To"),
            h("Call-ID"),
            h("CSeq")
        );
        self.send(srv, resp.as_bytes());
    }
}

/// A subscription as the watcher sees it.
pub struct Sub {
    pub ua: Ua,
    pub aor: String,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub cseq: u32,
    pub stash: Vec<Vec<u8>>,
}

#[allow(clippy::too_many_arguments)]
pub fn subscribe_req(ua: &Ua, aor: &str, call_id: &str, cseq: u32, from_tag: &str, to_tag: Option<&str>, expires: u32, extra: &str) -> Vec<u8> {
    let from = format!("sip:watcher{from_tag}@example.net");
    subscribe_from(ua, &from, aor, call_id, cseq, from_tag, to_tag, expires, extra)
}

#[allow(clippy::too_many_arguments)]
pub fn subscribe_from(ua: &Ua, from: &str, aor: &str, call_id: &str, cseq: u32, from_tag: &str, to_tag: Option<&str>, expires: u32, extra: &str) -> Vec<u8> {
    let to = match to_tag {
        Some(t) => format!("<{aor}>;tag={t}"),
        None => format!("<{aor}>"),
    };
    format!(
        "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/{} {};rport;branch=z9hG4bKs{}\r\nMax-Forwards: 70\r\n\
From: <{from}>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\n\
Contact: <sip:w@{}>\r\n{extra}Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
        ua.transport(),
        ua.addr(),
        unique(),
        ua.addr()
    )
    .into_bytes()
}

impl Sub {
    /// SUBSCRIBEs and returns the 200 and the first NOTIFY (answered 200).
    pub fn new(srv: &Presenced, mut ua: Ua, aor: &str, expires: u32, extra: &str) -> (Sub, Vec<u8>, Vec<u8>) {
        let n = unique();
        let call_id = format!("sub-{n}");
        let from_tag = format!("w{n}");
        ua.send(srv.addr, &subscribe_req(&ua, aor, &call_id, 1, &from_tag, None, expires, extra));
        let mut stash = Vec::new();
        let ok = ua.expect("SIP/2.0", &mut stash);
        let to = header(&ok, "To").unwrap();
        let to_tag = to.split(";tag=").nth(1).unwrap_or_default().to_string();
        let mut sub = Sub { ua, aor: aor.into(), call_id, from_tag, to_tag, cseq: 1, stash };
        if status(&ok) != 200 {
            return (sub, ok, Vec::new());
        }
        let notify = sub.next_notify(srv);
        (sub, ok, notify)
    }
    /// The next NOTIFY, answered 200.
    pub fn next_notify(&mut self, srv: &Presenced) -> Vec<u8> {
        self.next_notify_answered(srv, 200)
    }
    pub fn next_notify_answered(&mut self, srv: &Presenced, code: u16) -> Vec<u8> {
        let n = self.ua.expect("NOTIFY", &mut self.stash);
        assert_eq!(header(&n, "Call-ID").unwrap(), self.call_id);
        self.ua.answer(srv.addr, &n, code);
        n
    }
    pub fn no_notify(&mut self, wait: Duration) -> bool {
        self.stash.iter().all(|m| !m.starts_with(b"NOTIFY")) && self.ua.recv(wait).is_none()
    }
    /// An in-dialog SUBSCRIBE; returns its response.
    pub fn resubscribe(&mut self, srv: &Presenced, expires: u32) -> Vec<u8> {
        self.cseq += 1;
        let req = subscribe_req(&self.ua, &self.aor, &self.call_id, self.cseq, &self.from_tag, Some(&self.to_tag), expires, "Event: presence\r\n");
        self.ua.send(srv.addr, &req);
        self.ua.expect("SIP/2.0", &mut self.stash)
    }
}

pub fn body(m: &[u8]) -> String {
    let t = String::from_utf8_lossy(m);
    t.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

pub fn publish(srv: &Presenced, aor: &str, basic: &str, note: &str) {
    assert_eq!(publish_status(srv, aor, basic, note, WAIT), Some(200), "no 200 to a PUBLISH for {aor}");
}

/// PUBLISHes once over UDP and returns the status of the response, if one
/// came within `wait` (a request hopped to a dead node gets none).
pub fn publish_status(srv: &Presenced, aor: &str, basic: &str, note: &str, wait: Duration) -> Option<u16> {
    let s = send_publish(srv, aor, basic, note);
    recv(&s, wait).map(|r| status(&r))
}

/// PUBLISHes over UDP as a client does (RFC 3261 17.1.2.2): sent again
/// after 500 ms, then 1 s, 2 s, 4 s, 4 s..., until a final response or
/// `wait`; its status, if one came.
pub fn publish_status_retransmitting(srv: &Presenced, aor: &str, basic: &str, note: &str, wait: Duration) -> Option<u16> {
    let (s, req) = publish_request(aor, basic, note);
    let deadline = std::time::Instant::now() + wait;
    let mut interval = Duration::from_millis(500);
    loop {
        s.send_to(&req, srv.addr).unwrap();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if let Some(r) = recv(&s, interval.min(left)) {
            return Some(status(&r));
        }
        if left <= interval {
            return None;
        }
        interval = (interval * 2).min(Duration::from_secs(4));
    }
}

/// Sends one PUBLISH over UDP from a socket of its own, which it returns
/// for the response.
pub fn send_publish(srv: &Presenced, aor: &str, basic: &str, note: &str) -> UdpSocket {
    let (s, req) = publish_request(aor, basic, note);
    s.send_to(&req, srv.addr).unwrap();
    s
}

/// A PUBLISH with a socket of its own to send it from.
fn publish_request(aor: &str, basic: &str, note: &str) -> (UdpSocket, Vec<u8>) {
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let doc = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"t1\"><status><basic>{basic}</basic></status><note>{note}</note></tuple></presence>"
    );
    let req = format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch=z9hG4bKpb{}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\n\
To: <{aor}>\r\nCall-ID: pb-{}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: {PIDF_TYPE}\r\nContent-Length: {}\r\n\r\n{doc}",
        s.local_addr().unwrap(),
        unique(),
        unique(),
        doc.len()
    );
    (s, req.into_bytes())
}
