//! The hop between two nodes, in process: two shards, each with its own
//! view of the same cluster, and the messages carried between them by hand.

use super::*;
use crate::cluster::partition::partition_of;
use crate::cluster::view::ClusterView;
use std::sync::Arc;
use std::time::Instant;

const N1: &str = "127.0.0.1:5061";
const N2: &str = "127.0.0.2:5062";
const PARTITIONS: u16 = 16;
const AOR: &[u8] = b"sip:alice@example.com";

fn client() -> Peer {
    Peer::tcp("192.0.2.9:40000".parse().unwrap(), crate::core::peer::ConnId(7))
}

fn publish(extra: &str) -> String {
    format!(
        "PUBLISH sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.9:40000;branch=z9hG4bKp1\r\nMax-Forwards: 5\r\n\
From: <sip:alice@example.com>;tag=p1\r\nTo: <sip:alice@example.com>\r\nCall-ID: p1\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 60\r\n{extra}\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{}",
        PIDF.len(),
        PIDF
    )
}

const PIDF: &str = "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:alice@example.com\">\
<tuple id=\"t\"><status><basic>open</basic></status></tuple></presence>";

/// A node's shard whose view puts alice's partition on `owner` (or nobody).
fn node(me: u32, addr: &str, owner: Option<u32>) -> Shard {
    node_waiting(me, addr, owner, waiting::MoveWait::default())
}

/// [`node`] with requests waiting for an owner as `wait` says.
fn node_waiting(me: u32, addr: &str, owner: Option<u32>, wait: waiting::MoveWait) -> Shard {
    let view = Arc::new(ClusterView::new(me, PARTITIONS));
    view.set_owner(partition_of(AOR, PARTITIONS), owner, None);
    view.set_address(1, N1.parse().ok());
    view.set_address(2, N2.parse().ok());
    let mut cfg = ShardConfig::with_defaults(0, 1, addr.parse().unwrap());
    cfg.cluster = Some(view);
    cfg.move_wait = wait;
    Shard::new(cfg, Instant::now())
}

fn one(out: &mut Outbox) -> Transmit {
    assert_eq!(out.transmits.len(), 1, "{:?}", out.transmits.iter().map(|t| String::from_utf8_lossy(&t.wire()).into_owned()).collect::<Vec<_>>());
    out.transmits.pop().unwrap()
}

fn text(t: &Transmit) -> String {
    String::from_utf8(t.wire().into_owned()).unwrap()
}

#[test]
fn a_publish_for_another_nodes_partition_goes_there_and_its_answer_comes_back_on_the_clients_flow() {
    let t0 = Instant::now();
    let (mut n1, mut n2) = (node(1, N1, Some(2)), node(2, N2, Some(2)));
    let mut out = Outbox::default();
    n1.on_message(t0, client(), publish("P-Asserted-Identity: <sip:bob@example.com>\r\n").as_bytes(), &mut out);
    let fwd = one(&mut out);
    assert_eq!(fwd.to, Peer::udp(N2.parse().unwrap()));
    let f = text(&fwd);
    let vias: Vec<&str> = f.lines().filter(|l| l.starts_with("Via:")).collect();
    assert_eq!(vias.len(), 2, "{f}");
    assert!(vias[0].starts_with(&format!("Via: SIP/2.0/UDP {N1};rport;branch=z9hG4bK.pn")), "{f}");
    assert!(f.contains("Max-Forwards: 4\r\n"), "{f}");
    assert!(!f.contains("P-Asserted-Identity"), "an untrusted source's asserted identity goes no further: {f}");
    assert!(f.ends_with(PIDF));
    assert_eq!(n1.stats().hop.forwarded, 1);

    // The owner serves it and answers the hop.
    n2.on_message(t0, Peer::udp(N1.parse().unwrap()), f.as_bytes(), &mut out);
    let answer = one(&mut out);
    assert_eq!(answer.to, Peer::udp(N1.parse().unwrap()));
    assert!(text(&answer).starts_with("SIP/2.0 200"), "{}", text(&answer));

    // Back through node 1, without its Via, to the client's TCP connection.
    n1.on_message(t0, Peer::udp(N2.parse().unwrap()), &answer.wire(), &mut out);
    let back = one(&mut out);
    assert_eq!(back.to, client());
    let b = text(&back);
    assert!(b.starts_with("SIP/2.0 200") && b.contains("SIP-ETag: "), "{b}");
    assert_eq!(b.lines().filter(|l| l.starts_with("Via:")).collect::<Vec<_>>(), ["Via: SIP/2.0/TCP 192.0.2.9:40000;branch=z9hG4bKp1"], "{b}");
    assert_eq!(n1.stats().hop.relayed, 1);

    // A retransmission takes the same branch, so the owner absorbs it.
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    let again = text(&one(&mut out));
    let branch = |m: &str| m.lines().find(|l| l.starts_with("Via:")).unwrap().split("branch=").nth(1).unwrap().split(';').next().unwrap().to_string();
    assert_eq!(branch(&again), branch(&f));
}

#[test]
fn a_trusted_sources_asserted_identity_is_kept() {
    let t0 = Instant::now();
    let view = Arc::new(ClusterView::new(1, PARTITIONS));
    view.set_owner(partition_of(AOR, PARTITIONS), Some(2), None);
    view.set_address(2, N2.parse().ok());
    let mut cfg = ShardConfig::with_defaults(0, 1, N1.parse().unwrap());
    cfg.cluster = Some(view);
    cfg.trusted = TrustList::parse(&["192.0.2.9"]).unwrap();
    let mut n1 = Shard::new(cfg, t0);
    let mut out = Outbox::default();
    n1.on_message(t0, client(), publish("P-Asserted-Identity: <sip:alice@example.com>\r\n").as_bytes(), &mut out);
    assert!(text(&one(&mut out)).contains("P-Asserted-Identity: <sip:alice@example.com>\r\n"));
}

#[test]
fn a_request_waits_for_its_partitions_owner_and_goes_on_once_one_serves_it() {
    let t0 = Instant::now();
    let ms = std::time::Duration::from_millis;
    let p = partition_of(AOR, PARTITIONS);
    let mut out = Outbox::default();
    // Nobody serves the partition (moving, or its owner's lease not expired yet).
    let mut n1 = node(1, N1, None);
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    n1.on_time(t0 + ms(100), &mut out);
    assert!(out.transmits.is_empty(), "answered while nobody serves the partition");
    // Node 2 serves it now: the request goes there as any other would.
    n1.cfg.cluster.as_ref().unwrap().set_owner(p, Some(2), None);
    n1.on_time(t0 + ms(105), &mut out);
    let fwd = one(&mut out);
    assert_eq!(fwd.to, Peer::udp(N2.parse().unwrap()));
    assert!(text(&fwd).starts_with("PUBLISH "));
    // This node serves it now: served here.
    let mut n1 = node(1, N1, None);
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    n1.cfg.cluster.as_ref().unwrap().set_owner(p, Some(1), None);
    n1.on_time(t0 + ms(5), &mut out);
    assert!(text(&one(&mut out)).starts_with("SIP/2.0 200"));
    assert_eq!(n1.stats().waits, waiting::WaitCounts { held: 1, resumed: 1, timed_out: 0, full: 0 });
    // Forwarded by a node that thinks this one serves it, while this one
    // is still taking it: it waits here, and is served once this node does.
    let mut n2 = node(2, N2, None);
    let mut out1 = Outbox::default();
    node(1, N1, Some(2)).on_message(t0, client(), publish("").as_bytes(), &mut out1);
    n2.on_message(t0, Peer::udp(N1.parse().unwrap()), &one(&mut out1).wire(), &mut out);
    assert!(out.transmits.is_empty());
    n2.cfg.cluster.as_ref().unwrap().set_owner(p, Some(2), None);
    n2.on_time(t0 + ms(5), &mut out);
    let r = one(&mut out);
    assert_eq!(r.to, Peer::udp(N1.parse().unwrap()));
    assert!(text(&r).starts_with("SIP/2.0 200"), "{}", text(&r));
}

#[test]
fn past_the_wait_or_without_room_the_answer_is_503_not_another_hop() {
    let t0 = Instant::now();
    let mut out = Outbox::default();
    let mut n1 = node(1, N1, None);
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    let wait = waiting::MoveWait::default().wait;
    n1.on_time(t0 + wait - std::time::Duration::from_millis(1), &mut out);
    assert!(out.transmits.is_empty());
    n1.on_time(t0 + wait, &mut out);
    let r = text(&one(&mut out));
    assert!(r.starts_with("SIP/2.0 503") && r.contains("Retry-After: "), "{r}");
    assert_eq!(n1.stats().limited[Limit::Partition.index()], 1);
    assert_eq!(n1.stats().waits.timed_out, 1);
    // No room to wait: at once.
    let full = waiting::MoveWait { max_requests: 1, ..Default::default() };
    let mut n1 = node_waiting(1, N1, None, full);
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    assert!(out.transmits.is_empty());
    n1.on_message(t0, client(), publish("").replace("z9hG4bKp1", "z9hG4bKp2").as_bytes(), &mut out);
    assert!(text(&one(&mut out)).starts_with("SIP/2.0 503"));
    assert_eq!(n1.stats().waits.full, 1);
    // Forwarded twice already (node 1 to 2 and back), and no wait: not bounced again.
    let off = waiting::MoveWait { wait: std::time::Duration::ZERO, ..Default::default() };
    let mut out1 = Outbox::default();
    node(1, N1, Some(2)).on_message(t0, client(), publish("").as_bytes(), &mut out1);
    node(2, N2, Some(1)).on_message(t0, Peer::udp(N1.parse().unwrap()), &one(&mut out1).wire(), &mut out1);
    let twice = one(&mut out1);
    assert_eq!(twice.to, Peer::udp(N1.parse().unwrap()), "node 2's view names node 1: back there, once");
    let mut n1 = node_waiting(1, N1, Some(2), off);
    n1.on_message(t0, Peer::udp(N2.parse().unwrap()), &twice.wire(), &mut out);
    let r = one(&mut out);
    assert_eq!(r.to, Peer::udp(N2.parse().unwrap()));
    assert!(text(&r).starts_with("SIP/2.0 503"), "{}", text(&r));
    // Max-Forwards spent.
    let mut n1 = node(1, N1, Some(2));
    n1.on_message(t0, client(), publish("").replace("Max-Forwards: 5", "Max-Forwards: 0").as_bytes(), &mut out);
    assert!(text(&one(&mut out)).starts_with("SIP/2.0 483"));
}

#[test]
fn the_serving_node_and_other_requests_are_not_touched() {
    let t0 = Instant::now();
    let mut out = Outbox::default();
    let mut n2 = node(2, N2, Some(2));
    n2.on_message(t0, client(), publish("").as_bytes(), &mut out);
    assert!(text(&one(&mut out)).starts_with("SIP/2.0 200"), "served here");
    // OPTIONS to the server itself is answered by any node.
    let mut n1 = node(1, N1, Some(2));
    let options = "OPTIONS sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKo1\r\nMax-Forwards: 70\r\n\
From: <sip:x@example.net>;tag=o\r\nTo: <sip:example.com>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    n1.on_message(t0, client(), options.as_bytes(), &mut out);
    assert!(text(&one(&mut out)).starts_with("SIP/2.0 200"));
    assert_eq!(n1.stats().hop.forwarded, 0);
}

/// During a move node 1's view is behind: it forwards to node 2, whose
/// view names node 1 again, so the request goes back there (a second hop)
/// and node 1, serving it now, answers. The answer retraces both hops to
/// the client's flow.
#[test]
fn a_request_sent_to_a_node_that_no_longer_serves_it_goes_back_once_and_its_answer_retraces_the_hops() {
    let t0 = Instant::now();
    let mut out = Outbox::default();
    let (mut n1, mut n2) = (node(1, N1, Some(2)), node(2, N2, Some(1)));
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    let first = one(&mut out);
    n2.on_message(t0, Peer::udp(N1.parse().unwrap()), &first.wire(), &mut out);
    let second = one(&mut out);
    assert_eq!(second.to, Peer::udp(N1.parse().unwrap()));
    // Node 1 has taken the partition meanwhile.
    n1.cfg.cluster.as_ref().unwrap().set_owner(partition_of(AOR, PARTITIONS), Some(1), None);
    n1.on_message(t0, Peer::udp(N2.parse().unwrap()), &second.wire(), &mut out);
    let answer = one(&mut out);
    assert_eq!(answer.to, Peer::udp(N2.parse().unwrap()), "answered to the last hop");
    assert!(text(&answer).starts_with("SIP/2.0 200"), "{}", text(&answer));
    n2.on_message(t0, Peer::udp(N1.parse().unwrap()), &answer.wire(), &mut out);
    let relayed = one(&mut out);
    assert_eq!(relayed.to, Peer::udp(N1.parse().unwrap()), "node 2 relays to the flow it took the request from");
    n1.on_message(t0, Peer::udp(N2.parse().unwrap()), &relayed.wire(), &mut out);
    let back = one(&mut out);
    assert_eq!(back.to, client());
    let b = text(&back);
    assert!(b.starts_with("SIP/2.0 200") && b.lines().filter(|l| l.starts_with("Via:")).count() == 1, "{b}");
}

/// A configured presence user agent follows its presentity's partition:
/// no SUBSCRIBE while another node serves it, one once this node does
/// (at its next look after the owners change), and an unsubscribe
/// (Expires 0) when the partition moves away again.
#[test]
fn a_configured_agent_subscribes_only_from_the_node_serving_its_presentity() {
    let t0 = Instant::now();
    let agent: std::net::SocketAddr = "192.0.2.7:5062".parse().unwrap();
    let view = Arc::new(ClusterView::new(1, PARTITIONS));
    let p = partition_of(AOR, PARTITIONS);
    view.set_owner(p, Some(2), None);
    let mut cfg = ShardConfig::with_defaults(0, 1, N1.parse().unwrap());
    cfg.cluster = Some(view.clone());
    cfg.peu.mode = crate::presence::peu::Mode::Always;
    cfg.peu_agents = vec![super::sources::ConfiguredAgent { presentity: AOR.into(), uri: b"sip:alice@192.0.2.7:5062".as_slice().into(), addr: agent }];
    let mut n1 = Shard::new(cfg, t0);
    let mut out = Outbox::default();
    let to_agent = |out: &mut Outbox| -> Vec<String> { std::mem::take(&mut out.transmits).iter().filter(|t| t.to.addr == agent).map(text).collect() };
    n1.on_time(t0 + std::time::Duration::from_millis(10), &mut out);
    assert!(to_agent(&mut out).is_empty(), "node 2 serves alice: node 1 leaves her device alone");
    view.set_owner(p, Some(1), None);
    n1.on_time(t0 + std::time::Duration::from_millis(1100), &mut out);
    let sent = to_agent(&mut out);
    assert!(sent.len() == 1 && sent[0].starts_with("SUBSCRIBE sip:alice@192.0.2.7:5062") && sent[0].contains("Expires: 3600"), "{sent:?}");
    view.set_owner(p, Some(2), None);
    n1.on_time(t0 + std::time::Duration::from_millis(2200), &mut out);
    let sent: Vec<String> = to_agent(&mut out).into_iter().filter(|m| m.starts_with("SUBSCRIBE")).collect();
    assert!(sent.iter().any(|m| m.contains("Expires: 0")), "the partition moved away: unsubscribed: {sent:?}");
}

/// The owner does not answer a forwarded request (it died with its lease
/// still running): after the hop timeout the forwarding node answers the
/// client 503 + Retry-After itself. One it does answer is relayed, and no
/// 503 follows.
#[test]
fn a_hop_the_owner_does_not_answer_gets_503_from_the_forwarding_node() {
    let t0 = Instant::now();
    let ms = std::time::Duration::from_millis;
    let mut out = Outbox::default();
    let mut n1 = node(1, N1, Some(2));
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    assert_eq!(one(&mut out).to, Peer::udp(N2.parse().unwrap()));
    n1.on_time(t0 + ms(899), &mut out);
    assert!(out.transmits.is_empty());
    n1.on_time(t0 + ms(900), &mut out);
    let r = one(&mut out);
    assert_eq!(r.to, client());
    assert!(text(&r).starts_with("SIP/2.0 503") && text(&r).contains("Retry-After: "), "{}", text(&r));
    assert_eq!(n1.stats().hop.unanswered, 1);
    // Answered in time: relayed, and nothing more.
    let mut n2 = node(2, N2, Some(2));
    let mut n1 = node(1, N1, Some(2));
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    let fwd = one(&mut out);
    n2.on_message(t0, Peer::udp(N1.parse().unwrap()), &fwd.wire(), &mut out);
    let answer = one(&mut out);
    n1.on_message(t0 + ms(10), Peer::udp(N2.parse().unwrap()), &answer.wire(), &mut out);
    assert!(text(&one(&mut out)).starts_with("SIP/2.0 200"));
    n1.on_time(t0 + ms(1000), &mut out);
    assert!(out.transmits.is_empty(), "a 503 after the owner's answer");
    assert_eq!(n1.stats().hop.unanswered, 0);
}

/// A hop unanswered because the owners changed meanwhile (the node it went
/// to handed the partition back, or left) is routed again by the new
/// view, not refused.
#[test]
fn an_unanswered_hop_after_a_change_of_owners_is_routed_again() {
    let t0 = Instant::now();
    let mut out = Outbox::default();
    let mut n1 = node(1, N1, Some(2));
    n1.on_message(t0, client(), publish("").as_bytes(), &mut out);
    assert_eq!(one(&mut out).to, Peer::udp(N2.parse().unwrap()));
    n1.cfg.cluster.as_ref().unwrap().set_owner(partition_of(AOR, PARTITIONS), Some(1), None);
    n1.on_time(t0 + std::time::Duration::from_millis(900), &mut out);
    let r = one(&mut out);
    assert_eq!(r.to, client());
    assert!(text(&r).starts_with("SIP/2.0 200"), "served here now: {}", text(&r));
    assert_eq!(n1.stats().hop.unanswered, 0);
}
