//! The shard's side of replication: records of served partitions go to
//! the queue towards the logs, numbered; a replay puts records back, and a
//! partition taken back is first forgotten.

use super::*;
use crate::cluster::partition::{Partition, partition_of};
use crate::cluster::view::ClusterView;
use crate::shard::durable::UnixClock;
use crate::storage::record::Record;
use std::sync::Arc;
use std::time::Instant;

const PARTITIONS: u16 = 16;
const AOR: &str = "sip:alice@example.com";

fn publish(note: &str) -> String {
    publish_of(AOR, note)
}

fn publish_of(aor: &str, note: &str) -> String {
    let pidf = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"{note}\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    format!(
        "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{note}\r\nMax-Forwards: 5\r\n\
From: <{aor}>;tag=p1\r\nTo: <{aor}>\r\nCall-ID: {note}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{pidf}",
        pidf.len()
    )
}

/// A node's only shard serving alice's partition, with its record queues.
fn node(t0: Instant) -> (Shard, Arc<ClusterView>) {
    node_with(t0, |_| {})
}

fn node_with(t0: Instant, tweak: impl FnOnce(&mut ShardConfig)) -> (Shard, Arc<ClusterView>) {
    let view = Arc::new(ClusterView::new(1, PARTITIONS));
    view.set_owner(partition_of(AOR.as_bytes(), PARTITIONS), Some(1), None);
    view.open_logs(1);
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.cluster = Some(view.clone());
    tweak(&mut cfg);
    let mut shard = Shard::new(cfg, t0);
    shard.attach_replica(UnixClock::system(t0));
    (shard, view)
}

fn notes(shard: &Shard) -> Vec<String> {
    notes_of(shard, AOR)
}

#[test]
fn a_change_goes_to_its_partitions_log_numbered_and_a_replay_puts_it_back_elsewhere() {
    let t0 = Instant::now();
    let (mut a, view) = node(t0);
    let mut out = Outbox::default();
    a.on_message(t0, Peer::udp("192.0.2.9:5060".parse().unwrap()), publish("first").as_bytes(), &mut out);
    assert_eq!(a.replica_last(), 1);
    let q = view.logs().unwrap();
    a.ship_backlog(t0, q);
    let shipped = q.next_shipped(0).expect("shipped");
    assert_eq!((shipped.partition, shipped.seq), (partition_of(AOR.as_bytes(), PARTITIONS), 1));

    // Another node takes the partition over and replays the record.
    let (mut b, view_b) = node(t0);
    let qb = view_b.logs().unwrap();
    qb.replay(0, shipped.bytes).unwrap();
    assert_eq!(b.put_back_replayed(t0, qb, 10, &mut out), 1);
    assert!(notes(&b).iter().any(|n| n.contains("first")), "{:?}", notes(&b));
    assert_eq!(b.replica_last(), 0, "a record put back is not shipped again");
}

#[test]
fn a_partition_taken_back_is_forgotten_before_its_log_comes_back() {
    let t0 = Instant::now();
    let (mut a, view) = node(t0);
    let mut out = Outbox::default();
    a.on_message(t0, Peer::udp("192.0.2.9:5060".parse().unwrap()), publish("stale").as_bytes(), &mut out);
    assert!(!notes(&a).is_empty());
    let q = view.logs().unwrap();
    // Another partition's forget leaves alice alone; her own removes her.
    let p = partition_of(AOR.as_bytes(), PARTITIONS);
    q.replay(0, crate::shard::replica::forget_item(Partition((p.0 + 1) % PARTITIONS))).unwrap();
    a.put_back_replayed(t0, q, 10, &mut out);
    assert!(!notes(&a).is_empty());
    q.replay(0, crate::shard::replica::forget_item(p)).unwrap();
    assert_eq!(a.put_back_replayed(t0, q, 10, &mut out), 1);
    assert!(notes(&a).is_empty(), "{:?}", notes(&a));
}

const WATCHER: &str = "192.0.2.7:5070";

fn subscribe(cseq: u32, to_tag: Option<&str>) -> String {
    let to = to_tag.map_or(format!("<{AOR}>"), |t| format!("<{AOR}>;tag={t}"));
    format!(
        "SUBSCRIBE {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP {WATCHER};branch=z9hG4bKsub{cseq}\r\nMax-Forwards: 5\r\n\
From: <sip:bob@example.com>;tag=w1\r\nTo: {to}\r\nCall-ID: dialog-1\r\nCSeq: {cseq} SUBSCRIBE\r\nEvent: presence\r\n\
Contact: <sip:bob@{WATCHER}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The messages a step sent, whole.
fn sent(out: &mut Outbox) -> Vec<String> {
    std::mem::take(&mut out.transmits)
        .into_iter()
        .map(|t| {
            let mut b = t.bytes;
            b.extend_from_slice(t.shared.as_deref().unwrap_or_default());
            String::from_utf8_lossy(&b).into_owned()
        })
        .collect()
}

fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": "))).unwrap_or_else(|| panic!("no {name} in {msg}"))
}

fn notify_cseq(msg: &str) -> u32 {
    header(msg, "CSeq").split(' ').next().unwrap().parse().unwrap()
}

/// Everything the shard has shipped so far, decoded lazily by the caller.
fn drain_shipped(shard: &mut Shard, q: &crate::cluster::log_queues::LogQueues, now: Instant) -> Vec<crate::cluster::log_queues::Shipped> {
    shard.ship_backlog(now, q);
    std::iter::from_fn(|| q.next_shipped(0)).collect()
}

/// Node A (serving alice's partition only) after a watcher's SUBSCRIBE:
/// the shard, its view, the partition, the watcher and what A sent.
fn subscribed_at_a(t0: Instant) -> (Shard, Arc<ClusterView>, Partition, Peer, Vec<String>) {
    let (mut a, view) = node(t0);
    let mut out = Outbox::default();
    let watcher = Peer::udp(WATCHER.parse().unwrap());
    a.on_message(t0, watcher, subscribe(1, None).as_bytes(), &mut out);
    (a, view, partition_of(AOR.as_bytes(), PARTITIONS), watcher, sent(&mut out))
}

#[test]
fn a_dialog_lives_in_a_served_partition_and_the_node_that_takes_it_over_continues_it() {
    let t0 = Instant::now();
    let (mut a, view, p, watcher, msgs) = subscribed_at_a(t0);
    let mut out = Outbox::default();
    let ok = msgs.iter().find(|m| m.starts_with("SIP/2.0 200")).expect("the SUBSCRIBE's 200");
    let tag = header(ok, "To").split(";tag=").nth(1).unwrap().to_string();
    assert_eq!(crate::core::ids::tag_partition(tag.as_bytes()), Some(p.0), "the only partition node A serves is the dialog's home");
    let first = msgs.iter().find(|m| m.starts_with("NOTIFY")).expect("the first NOTIFY");
    let shipped = drain_shipped(&mut a, view.logs().unwrap(), t0);
    assert!(
        shipped.iter().any(|s| s.partition == p && matches!(Record::decode(&s.bytes), Ok(Record::Subscription(st)) if st.local_tag == tag.as_bytes())),
        "the dialog's record goes to its partition's log"
    );

    // Node B replays the log while taking the partition over: the dialog
    // is back, and says nothing until B serves the partition.
    let view_b = Arc::new(ClusterView::new(2, PARTITIONS));
    view_b.open_logs(1);
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5062".parse().unwrap());
    cfg.cluster = Some(view_b.clone());
    let mut b = Shard::new(cfg, t0);
    b.attach_replica(UnixClock::system(t0));
    let qb = view_b.logs().unwrap();
    for s in &shipped {
        qb.replay(0, s.bytes.clone()).unwrap();
    }
    b.put_back_replayed(t0, qb, 100, &mut out);
    assert!(sent(&mut out).iter().all(|m| !m.starts_with("NOTIFY")), "a NOTIFY before the partition is served");
    view_b.set_owner(p, Some(2), None);
    b.put_back_replayed(t0, qb, 100, &mut out);
    let msgs = sent(&mut out);
    let n = msgs.iter().find(|m| m.starts_with("NOTIFY")).expect("the taken-over dialog tells its watcher");
    assert_eq!(header(n, "Call-ID"), "dialog-1");
    assert!(header(n, "From").contains(&tag), "the same dialog: {n}");
    assert!(notify_cseq(n) > notify_cseq(first), "CSeq went back: {} after {}", notify_cseq(n), notify_cseq(first));
    assert!(header(n, "Contact").contains("5062"), "the watcher's refreshes move to node B: {n}");
    let shipped_b = drain_shipped(&mut b, qb, t0);
    assert!(
        shipped_b.iter().any(|s| s.partition == p && matches!(Record::decode(&s.bytes), Ok(Record::Subscription(_)))),
        "B's NOTIFY passed the reservation: its new one is in the log"
    );

    // A refresh reaches B by the dialog's tag.
    b.on_message(t0, watcher, subscribe(2, Some(&tag)).as_bytes(), &mut out);
    let msgs = sent(&mut out);
    assert!(msgs.iter().any(|m| m.starts_with("SIP/2.0 200")), "the refresh is answered");
    let last_cseq = msgs.iter().filter(|m| m.starts_with("NOTIFY")).map(|m| notify_cseq(m)).max().unwrap_or(notify_cseq(n));

    // The partition moves on: B forgets the dialog without a word.
    view_b.set_owner(p, Some(3), None);
    b.on_time(t0 + std::time::Duration::from_secs(2), &mut out);
    assert_eq!(b.subscriptions.len(), 0, "B still holds a dialog another node serves");
    // (Unanswered NOTIFYs already sent are still retransmitted.)
    let after: Vec<String> = sent(&mut out).into_iter().filter(|m| m.starts_with("NOTIFY")).collect();
    assert!(after.iter().all(|m| notify_cseq(m) <= last_cseq), "a forgotten dialog sent a new NOTIFY: {after:?}");
}

#[test]
fn an_in_dialog_request_goes_to_the_node_serving_its_tags_partition() {
    let t0 = Instant::now();
    let (mut a, view, p, watcher, msgs) = subscribed_at_a(t0);
    let mut out = Outbox::default();
    let tag = header(msgs.iter().find(|m| m.starts_with("SIP/2.0 200")).unwrap(), "To").split(";tag=").nth(1).unwrap().to_string();
    // Node 2 serves the partition now, and node A knows where it listens.
    view.set_owner(p, Some(2), None);
    view.set_address(2, Some("10.0.0.2:5060".parse().unwrap()));
    a.on_message(t0, watcher, subscribe(2, Some(&tag)).as_bytes(), &mut out);
    let t = std::mem::take(&mut out.transmits);
    assert_eq!(t.len(), 1, "{:?}", t.iter().map(|t| String::from_utf8_lossy(&t.bytes).into_owned()).collect::<Vec<_>>());
    assert_eq!(t[0].to.addr, "10.0.0.2:5060".parse::<std::net::SocketAddr>().unwrap(), "hopped to the owner of the tag's partition");
    assert!(t[0].bytes.starts_with(b"SUBSCRIBE"));
    // Nobody serves it: the refresh waits for an owner, and past the wait
    // is answered 503, never a 481 that would end the watcher's subscription.
    view.set_owner(p, None, None);
    a.on_message(t0, watcher, subscribe(3, Some(&tag)).as_bytes(), &mut out);
    assert!(sent(&mut out).iter().all(|m| !m.starts_with("SIP/2.0")), "answered while nobody serves the partition");
    a.on_time(t0 + std::time::Duration::from_secs(2), &mut out);
    // (The hop to node 2, never answered, got its 503 from node A too.)
    let msgs: Vec<String> = sent(&mut out).into_iter().filter(|m| m.starts_with("SIP/2.0")).collect();
    assert!(msgs.len() == 2 && msgs.iter().all(|m| m.starts_with("SIP/2.0 503")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("CSeq: 3 SUBSCRIBE")), "{msgs:?}");
}

fn notes_of(shard: &Shard, aor: &str) -> Vec<String> {
    let mut n: Vec<String> =
        shard.publications.published(aor.as_bytes()).flat_map(|(_, _, els)| els.iter().map(|e| e.xml.to_string()).collect::<Vec<_>>()).collect();
    n.sort();
    n
}

/// The record queues under pressure, simulated: queues of 3 records each
/// way and a backlog of 8, a cluster thread that drains a few records
/// when it gets to run, and PUBLISHes faster than that. Every PUBLISH is
/// answered 200, or 503 with Retry-After once the backlog is full (never
/// dropped, never another answer); the log gets every record once, in
/// order; each presentity's latest record holds every publication
/// acknowledged. Then the log is handed through a replay queue of 3 to a
/// shard that puts back 1 to 3 a tick: the cluster thread waits for room,
/// and the shard ends with the same publications.
#[test]
fn tiny_record_queues_never_lose_reorder_or_silently_refuse_a_change() {
    const AORS: usize = 6;
    let mut refused_total = 0;
    for seed in 0..60u64 {
        let mut rng = crate::core::entropy::Entropy::for_shard(seed, 7);
        let t0 = Instant::now();
        let (mut a, _view) = node_serving_all(t0);
        a.set_replica_backlog_limit(8);
        let q = crate::cluster::log_queues::LogQueues::with_room(1, 3);
        let mut log: Vec<crate::cluster::log_queues::Shipped> = Vec::new();
        let mut acked: Vec<Vec<String>> = vec![Vec::new(); AORS];
        let aor = |k: usize| format!("sip:u{k}@example.com");
        let drain = |q: &crate::cluster::log_queues::LogQueues, log: &mut Vec<crate::cluster::log_queues::Shipped>, n: u64| {
            for _ in 0..n {
                let Some(s) = q.next_shipped(0) else { break };
                assert_eq!(s.seq, log.last().map_or(0, |l| l.seq) + 1, "seed {seed}: a record lost, repeated or out of order");
                q.set_settled(0, s.seq);
                log.push(s);
            }
        };
        for step in 0..400u64 {
            let now = t0 + std::time::Duration::from_millis(step);
            let k = rng.below(AORS as u64) as usize;
            let note = format!("s{seed}x{step}");
            let mut out = Outbox::default();
            a.on_message(now, Peer::udp("192.0.2.9:5060".parse().unwrap()), publish_of(&aor(k), &note).as_bytes(), &mut out);
            let answers = sent(&mut out);
            assert_eq!(answers.len(), 1, "seed {seed}: {answers:?}");
            match answers[0].split(' ').nth(1) {
                Some("200") => acked[k].push(note),
                Some("503") => {
                    assert!(answers[0].contains("Retry-After:"), "seed {seed}: 503 without Retry-After: {}", answers[0]);
                    refused_total += 1;
                }
                _ => panic!("seed {seed}: {}", answers[0]),
            }
            // The shard's tick and the cluster thread run when they get to.
            if rng.chance(0.5) {
                a.ship_backlog(now, &q);
            }
            drain(&q, &mut log, rng.below(3));
        }
        // Calm: everything reaches the log.
        while log.last().map_or(0, |l| l.seq) < a.replica_last() {
            a.ship_backlog(t0, &q);
            drain(&q, &mut log, 3);
        }
        let latest = |log: &[crate::cluster::log_queues::Shipped], k: usize| {
            log.iter().rev().find_map(|s| match Record::decode(&s.bytes) {
                Ok(Record::Publications { aor: a, publications }) if a == aor(k).as_bytes() => {
                    Some(publications.iter().flat_map(|p| p.elements.iter().map(|e| String::from_utf8_lossy(e.xml).into_owned())).collect::<Vec<_>>())
                }
                _ => None,
            })
        };
        for (k, notes) in acked.iter().enumerate() {
            let in_log = latest(&log, k).unwrap_or_default();
            for note in notes {
                assert!(in_log.iter().any(|x| x.contains(note)), "seed {seed}: {} acknowledged {note}; its latest record lacks it", aor(k));
            }
        }

        // Read back through a replay queue of 3.
        let (mut b, _view_b) = node_serving_all(t0);
        let qb = crate::cluster::log_queues::LogQueues::with_room(1, 3);
        let mut handed = 0;
        let mut put_back = 0;
        for s in &log {
            let mut record = s.bytes.clone();
            loop {
                match qb.replay(0, record) {
                    Ok(()) => break,
                    Err(back) => {
                        record = back;
                        let mut out = Outbox::default();
                        put_back += b.put_back_replayed(t0, &qb, 1 + rng.below(3) as usize, &mut out);
                    }
                }
            }
            handed += 1;
        }
        while put_back < handed {
            let mut out = Outbox::default();
            put_back += b.put_back_replayed(t0, &qb, 1 + rng.below(3) as usize, &mut out);
        }
        for k in 0..AORS {
            assert_eq!(notes_of(&b, &aor(k)), notes_of(&a, &aor(k)), "seed {seed}: {} after the replay", aor(k));
        }
    }
    assert!(refused_total > 0, "the backlog never filled: the simulation shows nothing of the limit");
}

/// A node's only shard serving every partition, with its record queues.
fn node_serving_all(t0: Instant) -> (Shard, Arc<ClusterView>) {
    let (shard, view) = node_with(t0, |cfg| cfg.publish.max_publications = 1_000);
    for p in 0..PARTITIONS {
        view.set_owner(Partition(p), Some(1), None);
    }
    (shard, view)
}
