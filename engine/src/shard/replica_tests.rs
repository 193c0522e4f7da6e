//! The shard's side of replication: records of served partitions go to
//! the queue towards the logs, numbered; a replay puts records back, and a
//! partition taken back is first forgotten.

use super::*;
use crate::cluster::partition::{Partition, partition_of};
use crate::cluster::view::ClusterView;
use crate::shard::durable::UnixClock;
use std::sync::Arc;
use std::time::Instant;

const PARTITIONS: u16 = 16;
const AOR: &str = "sip:alice@example.com";

fn publish(note: &str) -> String {
    let pidf = format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{AOR}\">\
<tuple id=\"t\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    );
    format!(
        "PUBLISH {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{note}\r\nMax-Forwards: 5\r\n\
From: <{AOR}>;tag=p1\r\nTo: <{AOR}>\r\nCall-ID: {note}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{pidf}",
        pidf.len()
    )
}

/// A node's only shard serving alice's partition, with its record queues.
fn node(t0: Instant) -> (Shard, Arc<ClusterView>) {
    let view = Arc::new(ClusterView::new(1, PARTITIONS));
    view.set_owner(partition_of(AOR.as_bytes(), PARTITIONS), Some(1), None);
    view.open_logs(1);
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    cfg.cluster = Some(view.clone());
    let mut shard = Shard::new(cfg, t0);
    shard.attach_replica(UnixClock::system(t0));
    (shard, view)
}

fn notes(shard: &Shard) -> Vec<String> {
    shard.publications.published(AOR.as_bytes()).flat_map(|(_, _, els)| els.iter().map(|e| e.xml.to_string()).collect::<Vec<_>>()).collect()
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
