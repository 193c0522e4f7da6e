//! Sequences of messages and clock steps into two `Shard` cores joined by
//! in-process queues. The input is a program: each op byte picks raw
//! bytes, a valid request template with fuzzed numbers, a clock step, a
//! delivery of cross-shard messages, or answers to the NOTIFYs sent. Any
//! panic is a finding, contained or not (`ShardStats::panics` must stay 0),
//! and every table must stay within what the input could have created.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_engine::core::{ConnId, Peer};
use presence_engine::shard::{CoreMsg, Outbox, Shard, ShardConfig};
use presence_engine::sip::{Limits, Message, response_to};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const AORS: [&str; 4] = ["sip:a@example.com", "sip:h1.example.com", "tel:+15550001", "sip:B@Example.COM"];

fn template(kind: u8, n: u32, aor: &str) -> Vec<u8> {
    let head = |method: &str, extra: &str, body: &str| {
        format!(
            "{method} {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;rport;branch=z9hG4bKf{n}\r\nMax-Forwards: 70\r\n\
From: <{aor}>;tag=f{}\r\nTo: <{aor}>{}\r\nCall-ID: c{}\r\nCSeq: {} {method}\r\nContact: <sip:u@198.51.100.1:5060>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            n % 7,
            if n % 5 == 0 { format!(";tag=ps0000{:x}", n) } else { String::new() },
            n % 11,
            n % 13 + 1,
            body.len()
        )
        .into_bytes()
    };
    let pidf = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t{}\"><status><basic>open</basic></status></tuple></presence>",
        n % 3
    );
    let expires = [0, 60, 100, 3600][(n % 4) as usize];
    match kind % 5 {
        0 => head("REGISTER", &format!("Expires: {expires}\r\n"), ""),
        1 => head("PUBLISH", &format!("Event: presence\r\nExpires: {expires}\r\nContent-Type: application/pidf+xml\r\n"), &pidf),
        2 => head("SUBSCRIBE", &format!("Event: presence\r\nExpires: {expires}\r\n"), ""),
        3 => head("SUBSCRIBE", &format!("Event: presence.winfo\r\nExpires: {expires}\r\n"), ""),
        _ => head("PUBLISH", &format!("Event: presence\r\nSIP-If-Match: e0000{:x}\r\nExpires: {expires}\r\n", n), ""),
    }
}

/// The input, read front to back.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// Exactly `n` bytes, or `None` at the end of the input.
    fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        self.take_upto(n).filter(|v| v.len() == n)
    }
    /// Up to `n` bytes: what is left when less.
    fn take_upto(&mut self, n: usize) -> Option<Vec<u8>> {
        if self.0.is_empty() && n > 0 {
            return None;
        }
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        Some(a.to_vec())
    }
}

fuzz_target!(|data: &[u8]| {
    let epoch = Instant::now();
    let mut now = epoch;
    let mut shards: Vec<Shard> = (0..2)
        .map(|i| {
            let mut cfg = ShardConfig::with_defaults(i, 2, "192.0.2.1:5060".parse().unwrap());
            cfg.seed = 1;
            Shard::new(cfg, epoch)
        })
        .collect();
    let mut queue: VecDeque<(u16, CoreMsg)> = VecDeque::new();
    let mut sent: Vec<(u16, Vec<u8>, Peer)> = Vec::new();
    let mut input = Reader(data);
    let mut steps = 0;
    while let Some(op) = input.take(1) {
        steps += 1;
        if steps > 200 {
            break;
        }
        let mut out = Outbox { events_off: true, ..Outbox::default() };
        let k = (op[0] >> 7) as usize;
        let peer = if op[0] & 0x40 != 0 { Peer::tcp("198.51.100.2:40000".parse().unwrap(), ConnId::new(k as u16, 1)) } else { Peer::udp("198.51.100.1:5060".parse().unwrap()) };
        match op[0] & 7 {
            0 | 1 => {
                let Some(len) = input.take(2) else { break };
                let len = (u16::from_le_bytes([len[0], len[1]]) % 2048) as usize;
                let Some(bytes) = input.take_upto(len) else { break };
                shards[k].on_message(now, peer, &bytes, &mut out);
            }
            2 | 3 => {
                let Some(p) = input.take(3) else { break };
                let n = u16::from_le_bytes([p[1], p[2]]) as u32;
                let msg = template(p[0], n, AORS[(p[0] >> 4) as usize % AORS.len()]);
                shards[k].on_message(now, peer, &msg, &mut out);
            }
            4 => {
                let Some(p) = input.take(2) else { break };
                now += Duration::from_millis(u16::from_le_bytes([p[0], p[1]]) as u64 * 20);
                for s in shards.iter_mut() {
                    s.on_time(now, &mut out);
                }
            }
            5 => {
                while let Some((dst, msg)) = queue.pop_front() {
                    let mut o = Outbox { events_off: true, ..Outbox::default() };
                    shards[dst as usize].on_shard_msg(now, msg, &mut o);
                    queue.extend(o.to_shards);
                    sent.extend(o.transmits.into_iter().map(|t| (dst, t.wire().into_owned(), t.to)));
                }
            }
            _ => {
                for (from, bytes, to) in std::mem::take(&mut sent) {
                    if let Ok(m) = Message::parse(&bytes, &Limits::default())
                        && m.is_request()
                    {
                        let mut resp = Vec::new();
                        let code = if op[0] & 0x10 != 0 { 481 } else { 200 };
                        response_to(&mut resp, m.raw(), code, "X", None, None).finish(None, b"");
                        shards[from as usize].on_message(now, to, &resp, &mut out);
                    }
                }
            }
        }
        queue.extend(out.to_shards.drain(..));
        sent.extend(out.transmits.drain(..).map(|t| (k as u16, t.wire().into_owned(), t.to)));
        sent.truncate(256);
        for s in &shards {
            assert_eq!(s.stats().panics, 0, "a step panicked");
        }
    }
});
