//! Identifiers the server mints (to-tags, entity tags, NOTIFY branches)
//! carry 64 random bits from the shard's seed besides the shard id: an
//! observer of many cannot predict the next, and the same seed mints the
//! same ones (which is what lets a simulation replay).

use presence_engine::core::Peer;
use presence_engine::shard::{Outbox, Shard, ShardConfig};
use presence_engine::sip::{HeaderName, Limits, Message};
use std::time::Instant;

fn shard(seed: u64) -> Shard {
    let mut cfg = ShardConfig::with_defaults(3, 4, "192.0.2.1:5060".parse().unwrap());
    cfg.seed = seed;
    // Hundreds of publications of one presentity: above the default limit.
    cfg.publish.max_publications = 10_000;
    cfg.publish.max_document = 10 << 20;
    Shard::new(cfg, Instant::now())
}

fn request(method: &str, i: u32, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;rport;branch=z9hG4bKid{i}\r\nMax-Forwards: 70\r\n\
From: <sip:carol@example.com>;tag=f{i}\r\nTo: <sip:carol@example.com>\r\nCall-ID: id{i}\r\nCSeq: 1 {method}\r\n\
Contact: <sip:w@198.51.100.1:5060>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the shard sends for `n` OPTIONS, PUBLISHes and SUBSCRIBEs (the
/// presentity's owner is this shard's job for PUBLISH only when it owns
/// it, so all go through `on_message` and forwards are followed locally).
/// To-tags, entity tags and branches, as minted.
type Minted = (Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);

fn minted(s: &mut Shard, n: u32) -> Minted {
    let (mut tags, mut etags, mut branches) = (Vec::new(), Vec::new(), Vec::new());
    let peer = Peer::udp("198.51.100.1:5060".parse().unwrap());
    let now = Instant::now();
    let pidf = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:carol@example.com\">\
<tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";
    for i in 0..n {
        let mut out = Outbox::default();
        s.on_message(now, peer, &request("OPTIONS", i, "", ""), &mut out);
        s.on_message(now, peer, &request("PUBLISH", 1_000_000 + i, "Event: presence\r\nContent-Type: application/pidf+xml\r\n", pidf), &mut out);
        s.on_message(now, peer, &request("SUBSCRIBE", 2_000_000 + i, "Event: presence\r\n", ""), &mut out);
        // Follow hand-offs to the presentity's shard as if this shard
        // owned everything: the answers come back to it.
        while !out.to_shards.is_empty() {
            for (_, msg) in std::mem::take(&mut out.to_shards) {
                s.on_shard_msg(now, msg, &mut out);
            }
        }
        for t in &out.transmits {
            let wire = t.wire();
            let m = Message::parse(&wire, &Limits::default()).unwrap();
            if m.is_request() {
                branches.push(m.via().branch().unwrap().to_vec());
            } else {
                if let Some(tag) = m.to().tag() {
                    tags.push(tag.to_vec());
                }
                if let Some(e) = m.header(HeaderName::SipETag) {
                    etags.push(e.to_vec());
                }
            }
        }
    }
    (tags, etags, branches)
}

/// The random part of an identifier: the hex digits after `prefix` and
/// the four-digit shard id.
fn random_part(id: &[u8], prefix: &[u8]) -> u64 {
    let rest = id.strip_prefix(prefix).unwrap_or_else(|| panic!("{} lacks {}", String::from_utf8_lossy(id), String::from_utf8_lossy(prefix)));
    assert_eq!(&rest[..4], b"0003", "the shard id leads: {}", String::from_utf8_lossy(id));
    let hex = std::str::from_utf8(&rest[4..]).unwrap().trim_start_matches('.');
    u64::from_str_radix(hex, 16).unwrap()
}

/// Every one of the 64 bits takes both values across the sample: a counter
/// or a clock would leave the high bits fixed.
fn assert_random(name: &str, values: &[u64]) {
    assert!(values.len() >= 100, "{name}: only {} minted", values.len());
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), values.len(), "{name}: repeated identifiers");
    let (ones, zeros) = values.iter().fold((0u64, 0u64), |(o, z), v| (o | v, z | !v));
    assert_eq!(ones & zeros, u64::MAX, "{name}: some bits never change (ones {ones:016x}, zeros {zeros:016x})");
    let steps: std::collections::HashSet<u64> = values.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    assert!(steps.len() > values.len() / 2, "{name}: successive identifiers differ by a pattern");
}

#[test]
fn minted_identifiers_are_unpredictable_and_seeded() {
    let (tags, etags, branches) = minted(&mut shard(42), 150);
    let tags: Vec<u64> = tags.iter().map(|t| random_part(t, b"ps")).collect();
    let etags: Vec<u64> = etags.iter().map(|e| random_part(e, b"e")).collect();
    let branches: Vec<u64> = branches.iter().map(|b| random_part(b, b"z9hG4bK.ps")).collect();
    assert_random("to-tags", &tags);
    assert_random("entity tags", &etags);
    assert_random("NOTIFY branches", &branches);

    // The same seed mints the same identifiers; another seed, others.
    let again = minted(&mut shard(42), 150);
    let other = minted(&mut shard(43), 150);
    assert_eq!(again.0.iter().map(|t| random_part(t, b"ps")).collect::<Vec<_>>(), tags);
    assert!(other.0.iter().map(|t| random_part(t, b"ps")).all(|t| !tags.contains(&t)));
}
