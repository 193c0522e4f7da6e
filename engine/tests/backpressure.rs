//! Cross-shard queues of one message, real sockets: 2 shards, 2,000
//! watchers over UDP and TCP on 4 presentities. Every watcher ends with the
//! last published document, and once all have unsubscribed each owner's
//! winfo lists no watcher: nothing that crossed shards was lost, however
//! often the queues were full.

mod common;

use common::*;
use presence_engine::sip::{HeaderName, Limits, Message, response_to};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

const PRESENTITIES: usize = 4;
const UDP_SOCKETS: usize = 40;
const SUBS_PER_UDP: usize = 25;
const TCP_CONNS: usize = 20;
const SUBS_PER_TCP: usize = 50;

enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream, Vec<u8>),
}

/// One client endpoint and the requests it still waits on.
struct Endpoint {
    link: Link,
    addr: SocketAddr,
}

#[derive(Default)]
struct Dialog {
    endpoint: usize,
    aor: String,
    from_tag: String,
    to_tag: Option<String>,
    last_cseq: u32,
    last_body: String,
    terminated: bool,
}

struct Pending {
    endpoint: usize,
    bytes: Vec<u8>,
    sent: Instant,
}

struct Clients {
    server: SocketAddr,
    eps: Vec<Endpoint>,
    dialogs: HashMap<String, Dialog>,
    /// Requests without a final response yet, by branch, with their
    /// final status once it comes.
    pending: HashMap<String, Pending>,
    finals: HashMap<String, u16>,
    next: u32,
}

/// The whole SIP messages at the front of a TCP buffer.
fn take_frames(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { break };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let cl = head.lines().find_map(|l| l.strip_prefix("content-length:").or_else(|| l.strip_prefix("l:"))).map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() < end + 4 + cl {
            break;
        }
        out.push(buf.drain(..end + 4 + cl).collect());
    }
    out
}

impl Clients {
    fn send_raw(&mut self, ep: usize, bytes: &[u8]) {
        match &mut self.eps[ep].link {
            Link::Udp(s) => {
                let _ = s.send_to(bytes, self.server);
            }
            Link::Tcp(s, _) => {
                s.set_nonblocking(false).unwrap();
                s.write_all(bytes).unwrap();
                s.set_nonblocking(true).unwrap();
            }
        }
    }

    fn request(&mut self, ep: usize, branch: String, bytes: Vec<u8>) {
        self.send_raw(ep, &bytes);
        self.pending.insert(branch, Pending { endpoint: ep, bytes, sent: Instant::now() });
    }

    fn subscribe(&mut self, ep: usize, call_id: &str, cseq: u32, expires: u32, event: &str, from: &str) {
        self.next += 1;
        let branch = format!("z9hG4bKbp{}", self.next);
        let d = &self.dialogs[call_id];
        let to = match &d.to_tag {
            Some(t) => format!("<{}>;tag={t}", d.aor),
            None => format!("<{}>", d.aor),
        };
        let transport = if matches!(self.eps[ep].link, Link::Tcp(..)) { "TCP" } else { "UDP" };
        let addr = self.eps[ep].addr;
        let bytes = format!(
            "SUBSCRIBE {} SIP/2.0\r\nVia: SIP/2.0/{transport} {addr};rport;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <{from}>;tag={}\r\n\
To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:w@{addr}>\r\nEvent: {event}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            d.aor, d.from_tag
        );
        self.request(ep, branch, bytes.into_bytes());
    }

    fn publish(&mut self, ep: usize, aor: &str, note: &str) -> String {
        self.next += 1;
        let branch = format!("z9hG4bKbp{}", self.next);
        let addr = self.eps[ep].addr;
        let doc = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"t1\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
        );
        let bytes = format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {addr};rport;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\nTo: <{aor}>\r\n\
Call-ID: bp-pub-{}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
            self.next,
            doc.len()
        );
        self.request(ep, branch.clone(), bytes.into_bytes());
        branch
    }

    fn on_message(&mut self, ep: usize, bytes: &[u8]) {
        let Ok(m) = Message::parse(bytes, &Limits::default()) else { panic!("unparsable from the server: {}", String::from_utf8_lossy(bytes)) };
        if !m.is_request() {
            let branch = String::from_utf8_lossy(m.via().branch().unwrap_or_default()).into_owned();
            let status = m.status().unwrap();
            if status >= 200 && self.pending.remove(&branch).is_some() {
                self.finals.insert(branch, status);
                let call_id = String::from_utf8_lossy(m.call_id()).into_owned();
                if let Some(d) = self.dialogs.get_mut(&call_id)
                    && d.to_tag.is_none()
                {
                    d.to_tag = m.to().tag().map(|t| String::from_utf8_lossy(t).into_owned());
                }
            }
            return;
        }
        let call_id = String::from_utf8_lossy(m.call_id()).into_owned();
        let code = match self.dialogs.get_mut(&call_id) {
            Some(d) => {
                let cseq = m.cseq().seq;
                if cseq > d.last_cseq {
                    d.last_cseq = cseq;
                    d.last_body = String::from_utf8_lossy(m.body()).into_owned();
                    d.terminated = m.header(HeaderName::SubscriptionState).unwrap_or_default().starts_with(b"terminated");
                    if d.to_tag.is_none() {
                        d.to_tag = m.from().tag().map(|t| String::from_utf8_lossy(t).into_owned());
                    }
                }
                200
            }
            None => 481,
        };
        let mut out = Vec::new();
        response_to(&mut out, m.raw(), code, if code == 200 { "OK" } else { "Call/Transaction Does Not Exist" }, None, None).finish(None, b"");
        self.send_raw(ep, &out);
    }

    /// Reads every socket, answers, retransmits UDP requests; until `done`
    /// or the deadline.
    fn pump_until(&mut self, what: &str, limit: Duration, done: impl Fn(&Clients) -> bool) {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 65536];
        while !done(self) {
            assert!(Instant::now() < end, "{what}: not done within {limit:?}");
            let mut idle = true;
            for ep in 0..self.eps.len() {
                let mut got = Vec::new();
                match &mut self.eps[ep].link {
                    Link::Udp(s) => loop {
                        match s.recv_from(&mut buf) {
                            Ok((n, _)) => got.push(buf[..n].to_vec()),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                            Err(e) => panic!("{e}"),
                        }
                    },
                    Link::Tcp(s, acc) => loop {
                        match s.read(&mut buf) {
                            Ok(0) => panic!("the server closed a TCP connection"),
                            Ok(n) => acc.extend_from_slice(&buf[..n]),
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                                got = take_frames(acc);
                                break;
                            }
                            Err(e) => panic!("{e}"),
                        }
                    },
                }
                idle &= got.is_empty();
                for m in got {
                    self.on_message(ep, &m);
                }
            }
            // Timer E, roughly: resend what is unanswered over UDP.
            let now = Instant::now();
            let again: Vec<(usize, Vec<u8>)> = self
                .pending
                .values_mut()
                .filter(|p| matches!(self.eps[p.endpoint].link, Link::Udp(_)) && now - p.sent > Duration::from_millis(500))
                .map(|p| {
                    p.sent = now;
                    (p.endpoint, p.bytes.clone())
                })
                .collect();
            for (ep, bytes) in again {
                self.send_raw(ep, &bytes);
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

#[test]
fn two_thousand_watchers_through_queues_of_one() {
    let cfg = config_file("queue1.toml", "[io]\nqueue_capacity = 1\n[presence]\nnotify_min_interval_ms = 0\n");
    let srv = Presenced::start(2, &["--config", &cfg]);
    let mut c = Clients { server: srv.addr, eps: Vec::new(), dialogs: HashMap::new(), pending: HashMap::new(), finals: HashMap::new(), next: 0 };
    for _ in 0..UDP_SOCKETS {
        let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
        s.set_nonblocking(true).unwrap();
        let addr = s.local_addr().unwrap();
        c.eps.push(Endpoint { link: Link::Udp(s), addr });
    }
    for _ in 0..TCP_CONNS {
        let s = TcpStream::connect(srv.addr).unwrap();
        s.set_nonblocking(true).unwrap();
        let addr = s.local_addr().unwrap();
        c.eps.push(Endpoint { link: Link::Tcp(s, Vec::new()), addr });
    }
    let aors: Vec<String> = (0..PRESENTITIES).map(|i| format!("sip:bp{i}@example.com")).collect();
    let mut watchers = Vec::new();
    for ep in 0..c.eps.len() {
        let per = if ep < UDP_SOCKETS { SUBS_PER_UDP } else { SUBS_PER_TCP };
        for j in 0..per {
            let call_id = format!("bp-{ep}-{j}");
            let aor = aors[(ep + j) % PRESENTITIES].clone();
            c.dialogs.insert(call_id.clone(), Dialog { endpoint: ep, aor, from_tag: format!("w{ep}x{j}"), ..Dialog::default() });
            c.subscribe(ep, &call_id, 1, 600, "presence", &format!("sip:w{ep}x{j}@example.net"));
            watchers.push(call_id);
        }
    }
    assert_eq!(watchers.len(), 2000);
    c.pump_until("2,000 SUBSCRIBEs answered and notified", Duration::from_secs(60), |c| c.pending.is_empty() && c.dialogs.values().all(|d| d.last_cseq >= 1));
    assert!(c.finals.values().all(|s| *s == 200), "every SUBSCRIBE got 200");

    // Three rounds of PUBLISHes to every presentity, from UDP sockets on
    // both shards' flows.
    for round in 0..3 {
        for (i, aor) in aors.iter().enumerate() {
            c.publish(i % UDP_SOCKETS, aor, &format!("round{round}"));
        }
        c.pump_until("PUBLISHes answered", Duration::from_secs(30), |c| c.pending.is_empty());
    }
    c.pump_until("every watcher has the last document", Duration::from_secs(60), |c| c.dialogs.values().all(|d| d.last_body.contains("round2")));

    // Everyone unsubscribes; then each presentity fetches its watchers.
    for call_id in &watchers {
        let ep = c.dialogs[call_id].endpoint;
        let from = format!("sip:{}@example.net", c.dialogs[call_id].from_tag);
        c.subscribe(ep, call_id, 2, 0, "presence", &from);
    }
    c.pump_until("every watcher unsubscribed", Duration::from_secs(60), |c| c.pending.is_empty() && c.dialogs.values().all(|d| d.terminated));
    // The last Unwatch may still be crossing from the other shard when a
    // fetch arrives: fetch again until the list is empty. A lost Unwatch
    // would leave a watcher for ever.
    let end = Instant::now() + Duration::from_secs(5);
    for round in 0.. {
        for (i, aor) in aors.iter().enumerate() {
            let call_id = format!("bp-winfo-{round}-{i}");
            c.dialogs.insert(call_id.clone(), Dialog { endpoint: i, aor: aor.clone(), from_tag: format!("wi{round}x{i}"), ..Dialog::default() });
            c.subscribe(i, &call_id, 1, 0, "presence.winfo", aor);
        }
        c.pump_until("winfo fetched", Duration::from_secs(30), |c| {
            c.pending.is_empty() && (0..PRESENTITIES).all(|i| c.dialogs[&format!("bp-winfo-{round}-{i}")].last_cseq >= 1)
        });
        let left: Vec<usize> = (0..PRESENTITIES).map(|i| c.dialogs[&format!("bp-winfo-{round}-{i}")].last_body.matches("<watcher ").count()).collect();
        for i in 0..PRESENTITIES {
            assert!(c.dialogs[&format!("bp-winfo-{round}-{i}")].last_body.contains("state=\"full\""));
        }
        if left.iter().all(|n| *n == 0) {
            eprintln!("winfo empty for every presentity after {} fetch(es)", round + 1);
            break;
        }
        assert!(Instant::now() < end, "watchers left after everyone unsubscribed: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
