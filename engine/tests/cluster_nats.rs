//! The cluster host against a real `nats-server` with JetStream: leases
//! split between nodes as placement says, a crashed node's partitions are
//! taken over once its leases expire in the store, a node that comes back
//! gets its share moved back to it, and the log refuses an append that
//! expects a stale sequence (the fence). The simulation
//! (`sim_cluster.rs`) checks the protocol; this checks the wiring and the
//! store's semantics it relies on.

mod common;

use common::nats::NatsServer;
use common::{Presenced, config_file};
use presence_engine::cluster::ownership::{self, FenceAnswer};
use presence_engine::cluster::partition::Partition;
use presence_engine::cluster::placement;
use presence_engine::reactor::cluster_host::{ClusterHost, HostConfig, append_expecting};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PARTITIONS: u16 = 32;

fn host_config(url: &str, node: u32) -> HostConfig {
    HostConfig {
        ownership: ownership::Config {
            partitions: PARTITIONS,
            ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(500),
            op_timeout: Duration::from_millis(400),
            guard: Duration::from_millis(100),
            ..ownership::Config::default()
        },
        ..HostConfig::new(url, node)
    }
}

/// Waits up to `limit` for `done`, checking at every sample that no
/// partition is served by two hosts; returns how long it took.
fn settle(hosts: &[&ClusterHost], limit: Duration, what: &str, done: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        for p in Partition::all(PARTITIONS) {
            let serving: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].view().serves(p)).collect();
            assert!(serving.len() <= 1, "partition {} served by hosts {serving:?}", p.0);
        }
        if done() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}; served: {:?}", hosts.iter().map(|h| h.view().served().len()).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every partition is served by the host of the node placement names among `live`.
fn placed(hosts: &[(&ClusterHost, u32)], live: &[u32]) -> bool {
    Partition::all(PARTITIONS).all(|p| {
        let want = placement::owner(p, live).unwrap();
        hosts.iter().all(|(h, node)| h.view().serves(p) == (*node == want))
    })
}

#[test]
fn leases_split_fail_over_and_move_back_through_a_real_jetstream() {
    let _ = tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into())).with_test_writer().try_init();
    let nats = NatsServer::start("leases");
    let a = ClusterHost::start(host_config(&nats.url, 1), 1).unwrap();
    let b = ClusterHost::start(host_config(&nats.url, 2), 1).unwrap();
    let took = settle(&[&a, &b], Duration::from_secs(15), "two nodes split the partitions", || placed(&[(&a, 1), (&b, 2)], &[1, 2]));
    eprintln!("two nodes serve every partition as placement says after {took:?}");
    let share_a = a.view().served().len();
    assert!(share_a > 0 && share_a < PARTITIONS as usize);

    // Node 1 crashes: its leases stay in the store until they expire.
    a.halt().unwrap();
    let failover = settle(&[&b], Duration::from_secs(10), "node 2 takes over", || b.view().served().len() == PARTITIONS as usize);
    eprintln!("node 2 serves node 1's {share_a} partitions {failover:?} after the crash");
    assert!(failover >= Duration::from_millis(1500), "taken over in {failover:?}, before the 2 s leases could have expired");

    // Node 1 comes back as a new incarnation: its share moves back.
    let a2 = ClusterHost::start(host_config(&nats.url, 1), 2).unwrap();
    let back = settle(&[&a2, &b], Duration::from_secs(20), "node 1's share moves back", || placed(&[(&a2, 1), (&b, 2)], &[1, 2]));
    eprintln!("node 1's share moved back {back:?} after its restart");
}

#[test]
fn the_log_refuses_an_append_that_expects_a_stale_sequence() {
    let nats = NatsServer::start("fence");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url.as_str()).await.unwrap());
        js.get_or_create_stream(async_nats::jetstream::stream::Config { name: "FENCE".into(), subjects: vec!["fence.>".into()], ..Default::default() })
            .await
            .unwrap();
        let subject = || "fence.p0001".to_string();
        // Another subject's messages move the stream sequence, not this subject's.
        assert!(matches!(append_expecting(&js, "fence.p0002".into(), 0, "x".into()).await, FenceAnswer::Appended { .. }));
        let FenceAnswer::Appended { seq: first } = append_expecting(&js, subject(), 0, "marker of node 1".into()).await else { panic!("first append refused") };
        assert_eq!(append_expecting(&js, subject(), 0, "stale".into()).await, FenceAnswer::Conflict, "an append expecting an empty subject");
        let FenceAnswer::Appended { seq: second } = append_expecting(&js, subject(), first, "marker of node 2".into()).await else { panic!("second refused") };
        assert!(second > first);
        assert_eq!(append_expecting(&js, subject(), first, "old owner's late write".into()).await, FenceAnswer::Conflict);
    });
}

/// The partitions a `presenced` serves, from its log.
fn served(srv: &Presenced) -> BTreeSet<u64> {
    common::nats::served_partitions(srv.records())
}

const N: u64 = 64;

/// Two `presenced` nodes in one cluster, once they serve every partition
/// as placement says.
fn two_nodes(nats: &NatsServer, name: &str) -> (Presenced, Presenced) {
    two_nodes_with(nats, name, "")
}

/// [`two_nodes`] with more lines of `[cluster]`.
fn two_nodes_with(nats: &NatsServer, name: &str, cluster: &str) -> (Presenced, Presenced) {
    let cfg = config_file(name, &format!("[cluster]\npartitions = {N}\nlease_ttl_ms = 1500\n{cluster}"));
    let n1 = Presenced::start(1, &["--config", &cfg, "--cluster-node", "1", "--nats", &nats.url]);
    let n2 = Presenced::start(1, &["--config", &cfg, "--cluster-node", "2", "--nats", &nats.url]);
    let took = wait_placed(&n1, &n2);
    eprintln!("two presenced nodes serve {} and {} partitions after {took:?}", served(&n1).len(), served(&n2).len());
    (n1, n2)
}

/// Waits (20 s at most) until nodes 1 and 2 serve the partitions as
/// placement splits them, never one partition on both; how long it took.
fn wait_placed(n1: &Presenced, n2: &Presenced) -> Duration {
    let start = Instant::now();
    loop {
        let (a, b) = (served(n1), served(n2));
        assert!(a.is_disjoint(&b), "both nodes serve {:?}", a.intersection(&b).collect::<Vec<_>>());
        let placed = (0..N as u16).all(|p| {
            let want = placement::owner(Partition(p), &[1, 2]).unwrap();
            (if want == 1 { &a } else { &b }).contains(&(p as u64))
        });
        if placed && a.len() + b.len() == N as usize {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "not split within 20 s: {} and {} partitions", a.len(), b.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `victim` with SIGKILL and waits until `survivor` serves every
/// partition (10 s at most).
fn kill_and_take_over(victim: &Presenced, survivor: &Presenced) {
    victim.signal(libc::SIGKILL);
    let killed = Instant::now();
    while served(survivor).len() < N as usize {
        assert!(killed.elapsed() < Duration::from_secs(10), "the survivor serves only {} partitions 10 s after the kill", served(survivor).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("the survivor serves all {N} partitions {:?} after the kill -9", killed.elapsed());
}

#[test]
fn presenced_nodes_split_the_partitions_and_one_takes_over_after_kill_9() {
    let nats = NatsServer::start("presenced");
    let (n1, n2) = two_nodes(&nats, "cluster-kill.toml");
    kill_and_take_over(&n1, &n2);
}

/// A node stopped with SIGTERM leaves the cluster: the other serves its
/// partitions within a few round trips, not after the 1.5 s lease.
#[test]
fn a_presenced_node_stopped_cleanly_hands_its_partitions_over_at_once() {
    let nats = NatsServer::start("presenced-leave");
    let (mut n1, n2) = two_nodes(&nats, "cluster-leave.toml");
    let stopped = Instant::now();
    assert!(n1.terminate(), "node 1 did not exit cleanly");
    while served(&n2).len() < N as usize {
        assert!(stopped.elapsed() < Duration::from_secs(10), "node 2 serves only {} partitions", served(&n2).len());
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = stopped.elapsed();
    eprintln!("node 2 serves all {N} partitions {took:?} after node 1's SIGTERM");
    assert!(!n1.wait_logged("left the cluster", 1).is_empty(), "node 1 did not report leaving");
    assert!(took < Duration::from_millis(1000), "handed over in {took:?}: the leases expired rather than being released");
}

/// A PUBLISH sent to the node that does not serve its presentity's
/// partition is forwarded to the one that does, and the client gets the
/// owner's answer from the node it asked; one the asked node serves stays
/// there.
#[test]
fn a_publish_reaches_the_node_that_serves_its_partition() {
    let nats = NatsServer::start("presenced-hop");
    let (n1, n2) = two_nodes(&nats, "cluster-hop.toml");
    let (remote, local) = (aor_served_by(2), aor_served_by(1));
    common::publish(&n1, &remote, "open", "via node 1");
    n1.wait_matching("forwarded to node", 1, common::WAIT, |r| r["node"] == 2 && r["method"] == "PUBLISH");
    n2.wait_matching("handled", 1, common::WAIT, |r| r["method"] == "PUBLISH" && r["status"] == 200);
    assert!(n1.logged("handled").iter().all(|r| r["method"] != "PUBLISH"), "node 1 handled a PUBLISH itself");
    common::publish(&n1, &local, "open", "on node 1");
    n1.wait_matching("handled", 1, common::WAIT, |r| r["method"] == "PUBLISH" && r["status"] == 200);
    assert_eq!(n1.logged("forwarded to node").len(), 1, "the local presentity was forwarded");
}

/// The AOR `hop{i}` with the lowest `i` that placement puts on `node`.
fn aor_served_by(node: u32) -> String {
    aors_served_by(node, 1).remove(0)
}

/// The first `k` AORs `hop{i}` that placement puts on `node`.
fn aors_served_by(node: u32, k: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("sip:hop{i}@example.com"))
        .filter(|a| placement::owner(presence_engine::cluster::partition::partition_of(a.as_bytes(), N as u16), &[1, 2]) == Some(node))
        .take(k)
        .collect()
}

/// With `durability = "replicated"`, a PUBLISH is answered once its
/// record is in its partition's log. The owner is killed: the node that
/// takes its partitions over puts them back before it serves them, so a
/// watcher that subscribes there is shown every publication the dead node
/// acknowledged, and the taking node's log says how many records it put
/// back. By default they come from its warm replica of those partitions
/// (node 1 inherits every partition of node 2); without one
/// (`warm_replica_mb = 0`) from reading the logs.
#[test]
fn publications_acknowledged_by_a_killed_owner_are_served_by_the_node_that_takes_over() {
    for (name, extra, warm) in [("warm", "", true), ("cold", "warm_replica_mb = 0\n", false)] {
        eprintln!("-- take-over {name}");
        take_over_keeps_acknowledged_publications(name, extra, warm);
    }
}

fn take_over_keeps_acknowledged_publications(name: &str, extra: &str, warm: bool) {
    let nats = NatsServer::start(&format!("presenced-replicated-{name}"));
    let (n1, n2) = two_nodes_with(&nats, &format!("cluster-replicated-{name}.toml"), &format!("durability = \"replicated\"\n{extra}"));
    let aors = aors_served_by(2, 12);
    for (i, aor) in aors.iter().enumerate() {
        common::publish(&n2, aor, "open", &format!("acknowledged by node 2 ({i})"));
    }
    // Node 1's own partitions came from the logs at its start (nothing was kept yet).
    let before = n1.logged("partition logs replayed").len();
    kill_and_take_over(&n2, &n1);
    for (i, aor) in aors.iter().enumerate() {
        let (_sub, ok, first) = common::Sub::new(&n1, common::Ua::udp(), aor, 600, "Event: presence\r\n");
        assert_eq!(common::status(&ok), 200);
        let body = common::body(&first);
        assert!(body.contains(&format!("acknowledged by node 2 ({i})")) && body.contains("<basic>open</basic>"), "{aor} after the take-over: {body}");
    }
    let replayed: u64 = n1.logged("partition log replayed").iter().map(|r| r["records"].as_u64().unwrap_or(0)).sum();
    assert!(replayed >= aors.len() as u64, "node 1 put back {replayed} records");
    let sessions = n1.logged("partition logs replayed");
    let (from_warm, cold): (u64, u64) =
        sessions[before..].iter().fold((0, 0), |(w, c), r| (w + r["warm"].as_u64().unwrap_or(0), c + r["cold"].as_u64().unwrap_or(0)));
    eprintln!("{name}: {from_warm} partitions from the warm replica, {cold} read from the logs");
    if warm {
        assert!(from_warm > 0 && cold == 0, "{name}: {from_warm} partitions from the warm replica, {cold} read from the logs");
    } else {
        assert!(from_warm == 0 && cold > 0, "{name}: {from_warm} partitions from the warm replica, {cold} read from the logs");
    }
}

/// A watcher on node 1 of a presentity node 2 serves: node 2's
/// publication reaches it through node 1, over its dialog with node 1.
/// Node 2 is killed: once node 1 serves the partition, it has node 2's
/// publication from the partition's log (the watcher is never shown the
/// closed document), and a new PUBLISH reaches it over the same dialog.
#[test]
fn a_watcher_on_one_node_follows_a_presentity_on_another_and_through_its_failover() {
    let nats = NatsServer::start("presenced-remote");
    let (n1, n2) = two_nodes(&nats, "cluster-remote.toml");
    let aor = aor_served_by(2);
    let (mut sub, ok, first) = common::Sub::new(&n1, common::Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert_eq!(common::status(&ok), 200);
    assert!(common::body(&first).contains("<basic>closed</basic>"), "{}", common::body(&first));

    common::publish(&n2, &aor, "open", "published on node 2");
    let n = sub.next_notify(&n1);
    assert!(common::body(&n).contains("published on node 2"), "{}", common::body(&n));
    assert!(n1.logged("handled").iter().all(|r| r["method"] != "PUBLISH"), "the PUBLISH went to node 2 only");

    n2.signal(libc::SIGKILL);
    let killed = Instant::now();
    // Published at node 1 until it serves the partition: before, node 1
    // forwards to the dead node (no answer) or answers 503.
    let mut tries = 0;
    while common::publish_status(&n1, &aor, "open", "after the failover", Duration::from_millis(300)) != Some(200) {
        tries += 1;
        assert!(killed.elapsed() < Duration::from_secs(10), "node 1 did not take the partition over");
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        let n = sub.next_notify(&n1);
        let body = common::body(&n);
        assert_eq!(common::header(&n, "Call-ID").as_deref(), Some(sub.call_id.as_str()), "the same dialog");
        if body.contains("after the failover") {
            break;
        }
        assert!(body.contains("published on node 2"), "the publication node 2 acknowledged was lost in the take-over: {body}");
    }
    let took = killed.elapsed();
    eprintln!("a PUBLISH reached the watcher {took:?} after the owner's kill -9 ({tries} PUBLISHes answered 503 first)");
    assert!(took < Duration::from_secs(5), "the watcher heard of the new PUBLISH {took:?} after the kill");
}

/// `durability = "replicated"` answers a PUBLISH once its record is in
/// the partition's log: while the JetStream server is paused, the answer
/// waits, and it comes once the server resumes. `"local"` answers at once.
#[test]
fn a_replicated_node_answers_a_publish_once_the_log_has_it() {
    for (durability, waits) in [("replicated", true), ("local", false)] {
        let nats = NatsServer::start(&format!("presenced-durability-{durability}"));
        let cfg = config_file(
            &format!("cluster-durability-{durability}.toml"),
            &format!("[cluster]\npartitions = 8\nlease_ttl_ms = 6000\ndurability = \"{durability}\"\n"),
        );
        let n = Presenced::start(1, &["--config", &cfg, "--cluster-node", "1", "--nats", &nats.url]);
        let start = Instant::now();
        while served(&n).len() < 8 {
            assert!(start.elapsed() < Duration::from_secs(20), "{durability}: the node serves {} partitions", served(&n).len());
            std::thread::sleep(Duration::from_millis(20));
        }
        let aor = "sip:held@example.com";
        common::publish(&n, aor, "open", "before the pause");
        nats.signal(libc::SIGSTOP);
        let s = common::send_publish(&n, aor, "open", "during the pause");
        let during = common::recv(&s, Duration::from_millis(700)).map(|r| common::status(&r));
        nats.signal(libc::SIGCONT);
        if waits {
            assert_eq!(during, None, "{durability}: answered while the log could not have the record");
            let after = common::recv(&s, Duration::from_secs(3)).map(|r| common::status(&r));
            assert_eq!(after, Some(200), "{durability}: no answer once the log was back");
        } else {
            assert_eq!(during, Some(200), "{durability}: the answer waited for the log");
        }
    }
}

/// The partition logs stay bounded: with `log_compact_min = 20`, one
/// PUBLISH of a quiet presentity and then forty of four others of its
/// partition make the
/// node checkpoint its partitions' keys into the logs and purge what came
/// before. After its kill -9, the node that takes over reads back fewer
/// records than were written and still shows each presentity's latest
/// publication, the quiet one's included (only the checkpoint has it).
#[test]
fn compacted_partition_logs_still_bring_back_the_latest_state() {
    let nats = NatsServer::start("presenced-compact");
    let (n1, n2) = two_nodes_with(&nats, "cluster-compact.toml", "durability = \"replicated\"\nlog_compact_min = 20\n");
    // Published once, before everything the checkpoint follows, in the
    // partition of the others: only the checkpoint keeps it.
    let quiet = aor_served_by(2);
    let partition = |a: &str| presence_engine::cluster::partition::partition_of(a.as_bytes(), N as u16);
    let aors: Vec<String> = (0..).map(|i| format!("sip:same{i}@example.com")).filter(|a| partition(a) == partition(&quiet)).take(4).collect();
    common::publish(&n2, &quiet, "open", "published before the checkpoint");
    let rounds = 10;
    for round in 0..rounds {
        for aor in &aors {
            common::publish(&n2, aor, "open", &format!("round {round}"));
        }
    }
    n2.wait_logged("partition logs checkpointed; purging", 1);
    // The purges are requests of their own: let them land.
    std::thread::sleep(Duration::from_millis(300));
    kill_and_take_over(&n2, &n1);
    for aor in &aors {
        let (_sub, ok, first) = common::Sub::new(&n1, common::Ua::udp(), aor, 600, "Event: presence\r\n");
        assert_eq!(common::status(&ok), 200);
        let body = common::body(&first);
        assert!(body.contains(&format!("round {}", rounds - 1)), "{aor} after the take-over: {body}");
    }
    let (_sub, _, first) = common::Sub::new(&n1, common::Ua::udp(), &quiet, 600, "Event: presence\r\n");
    assert!(common::body(&first).contains("published before the checkpoint"), "{quiet}: {}", common::body(&first));
    let written = (rounds * aors.len() + 1) as u64;
    let replayed: u64 = n1.logged("partition log replayed").iter().map(|r| r["records"].as_u64().unwrap_or(0)).sum();
    eprintln!("{written} records written, {replayed} read back after compaction");
    assert!(replayed >= aors.len() as u64 && replayed < written, "{replayed} records read back of {written} written");
}

fn cseq(m: &[u8]) -> u32 {
    common::header(m, "CSeq").and_then(|c| c.split(' ').next().and_then(|n| n.parse().ok())).expect("a CSeq")
}

/// With `durability = "replicated"`, a subscription outlives the node that
/// holds it. A watcher subscribes at node 2 to a presentity node 2 serves:
/// its dialog lives in a partition node 2 serves, and its record is in that
/// partition's log. A refresh sent to node 1 is hopped to node 2 by the
/// dialog's tag. Node 2 is killed (-9): node 1 takes the partitions over
/// from their logs and continues the dialog. It NOTIFYs the watcher over
/// the same dialog (same Call-ID and tags, a higher CSeq), a new PUBLISH
/// reaches the watcher, and a refresh is answered by node 1.
#[test]
fn a_subscription_outlives_the_node_that_held_it() {
    let nats = NatsServer::start("presenced-dialogs");
    let (n1, n2) = two_nodes_with(&nats, "cluster-dialogs.toml", "durability = \"replicated\"\n");
    let aor = aor_served_by(2);
    let (mut sub, ok, first) = common::Sub::new(&n2, common::Ua::udp(), &aor, 600, "Event: presence\r\n");
    assert_eq!(common::status(&ok), 200);
    let mut last = cseq(&first);
    common::publish(&n2, &aor, "open", "before the kill");
    let n = sub.next_notify(&n2);
    assert!(common::body(&n).contains("before the kill"), "{}", common::body(&n));
    last = last.max(cseq(&n));

    // A refresh at the node that does not hold the dialog goes to the one
    // that does.
    assert_eq!(common::status(&sub.resubscribe(&n1, 600)), 200, "the refresh through node 1");
    n1.wait_matching("forwarded to node", 1, common::WAIT, |r| r["node"] == 2 && r["method"] == "SUBSCRIBE");
    let n = sub.next_notify(&n2);
    last = last.max(cseq(&n));

    let killed = Instant::now();
    kill_and_take_over(&n2, &n1);
    while common::publish_status(&n1, &aor, "open", "after the kill", Duration::from_millis(300)) != Some(200) {
        assert!(killed.elapsed() < Duration::from_secs(10), "node 1 took no PUBLISH for the partition");
        std::thread::sleep(Duration::from_millis(100));
    }
    loop {
        let n = sub.next_notify(&n1);
        assert!(common::header(&n, "From").is_some_and(|f| f.contains(&sub.to_tag)), "another dialog: {}", String::from_utf8_lossy(&n));
        assert!(cseq(&n) > last, "the dialog's CSeq went from {last} to {}", cseq(&n));
        last = cseq(&n);
        let body = common::body(&n);
        assert!(body.contains("<basic>open</basic>"), "the watcher was shown {body}");
        if body.contains("after the kill") {
            break;
        }
    }
    let took = killed.elapsed();
    eprintln!("the subscription held by the killed node was continued by node 1: a new PUBLISH reached its watcher {took:?} after the kill -9");
    assert!(took < Duration::from_secs(5), "{took:?} from the kill to the NOTIFY");
    assert_eq!(common::status(&sub.resubscribe(&n1, 600)), 200, "the refresh at node 1 after the take-over");
}

/// Rebalancing moves partitions without refusing requests. Node 1 serves
/// every partition; a client PUBLISHes to it without pause, over UDP with
/// retransmissions as any client does, for presentities in every
/// partition. Node 2 joins: its share of the partitions moves to it one at
/// a time, and leaves again with SIGTERM: they move back. Requests that
/// arrive while their partition has no owner wait for one, and requests
/// that a node forwarded to one that no longer serves them come back: every
/// PUBLISH of the run is answered 200.
#[test]
fn partitions_move_to_a_joining_node_and_back_without_refusing_a_request() {
    let nats = NatsServer::start("presenced-moves");
    let cfg = config_file("cluster-moves.toml", &format!("[cluster]\npartitions = {N}\nlease_ttl_ms = 1500\ndurability = \"replicated\"\n"));
    let n1 = Presenced::start(1, &["--config", &cfg, "--cluster-node", "1", "--nats", &nats.url]);
    let start = Instant::now();
    while served(&n1).len() < N as usize {
        assert!(start.elapsed() < Duration::from_secs(20), "node 1 alone serves {} partitions", served(&n1).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let aors: Vec<String> = (0..N).map(|i| format!("sip:mover{i}@example.com")).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses = std::thread::scope(|sc| {
        let publisher = sc.spawn(|| {
            let mut statuses: std::collections::BTreeMap<Option<u16>, u64> = Default::default();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let st = common::publish_status_retransmitting(&n1, &aors[i % aors.len()], "open", &format!("publication {i}"), Duration::from_secs(8));
                *statuses.entry(st).or_default() += 1;
                i += 1;
            }
            statuses
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut n2 = Presenced::start(1, &["--config", &cfg, "--cluster-node", "2", "--nats", &nats.url]);
        let took = wait_placed(&n1, &n2);
        eprintln!("node 2 took its {} partitions {took:?} after it started", served(&n2).len());
        std::thread::sleep(Duration::from_millis(300));
        let left = Instant::now();
        assert!(n2.terminate(), "node 2 did not exit cleanly");
        while served(&n1).len() < N as usize {
            assert!(left.elapsed() < Duration::from_secs(10), "node 1 serves only {} partitions after node 2 left", served(&n1).len());
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("node 1 serves all {N} partitions {:?} after node 2's SIGTERM", left.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        publisher.join().unwrap()
    });
    let total: u64 = statuses.values().sum();
    eprintln!("{total} PUBLISHes through the moves: {statuses:?}");
    assert!(total >= N, "only {total} PUBLISHes during the moves");
    assert_eq!(statuses.keys().collect::<Vec<_>>(), vec![&Some(200)], "a PUBLISH was refused or unanswered during the moves: {statuses:?}");
}
