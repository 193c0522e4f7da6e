//! The appender against a model of a JetStream subject per partition:
//! expected last subject sequence, a duplicate window by message id, and a
//! network that loses requests and answers.

use super::*;

fn holder(node: u32) -> Holder {
    Holder { node, incarnation: 7 }
}

/// The log: one stream, each message on a partition's subject.
#[derive(Default)]
struct Log {
    seq: u64,
    /// (sequence, partition, writer, payload).
    messages: Vec<(u64, u16, u32, Vec<u8>)>,
    /// Message id -> the sequence it landed at.
    seen_ids: std::collections::HashMap<String, u64>,
}

impl Log {
    fn last_of(&self, p: u16) -> u64 {
        self.messages.iter().rev().find(|m| m.1 == p).map_or(0, |m| m.0)
    }

    /// JetStream's order: a duplicate id is answered with its first
    /// sequence before the expected sequence is checked.
    fn append(&mut self, p: u16, writer: u32, expected_last: u64, msg_id: Option<&str>, payload: Vec<u8>) -> FenceAnswer {
        if let Some(id) = msg_id
            && let Some(&seq) = self.seen_ids.get(id)
        {
            return FenceAnswer::Appended { seq };
        }
        if self.last_of(p) != expected_last {
            return FenceAnswer::Conflict;
        }
        self.seq += 1;
        self.messages.push((self.seq, p, writer, payload));
        if let Some(id) = msg_id {
            self.seen_ids.insert(id.to_string(), self.seq);
        }
        FenceAnswer::Appended { seq: self.seq }
    }

    /// Each record in the log of `p`, in order.
    fn records(&self, p: u16) -> Vec<Vec<u8>> {
        self.messages.iter().filter(|m| m.1 == p).filter_map(|m| decode_batch(&m.3)).flatten().map(|r| r.to_vec()).collect()
    }
}

fn record(shard: u16, seq: u64) -> Box<[u8]> {
    format!("s{shard}r{seq}").into_bytes().into()
}

#[test]
fn batches_read_back_and_markers_are_not_batches() {
    let mut b = Vec::new();
    encode_batch([&b"one"[..], b"", b"three"], &mut b);
    assert_eq!(decode_batch(&b), Some(vec![&b"one"[..], b"", b"three"]));
    assert_eq!(decode_batch(b"1:7"), None, "a fence marker");
    assert_eq!(decode_batch(&b[..b.len() - 1]), None, "cut short");
}

#[test]
fn records_ride_one_append_per_partition_and_settle_in_order() {
    let t0 = Instant::now();
    let mut a = Appender::new(holder(1), Config::new(4, 2));
    let mut log = Log::default();
    a.open(Partition(1), 0);
    a.submit(0, 1, Partition(1), record(0, 1));
    let first = a.poll(t0).expect("an append");
    assert_eq!(a.poll(t0), None, "one in flight per partition");
    a.submit(0, 2, Partition(1), record(0, 2));
    a.submit(1, 1, Partition(1), record(1, 1));
    assert_eq!(a.settled(0), 0);
    let answer = log.append(1, 1, first.expected_last, Some(&first.msg_id), first.payload);
    assert_eq!(a.on_answer(first.id, answer, t0), None);
    assert_eq!(a.settled(0), 1);
    let second = a.poll(t0).expect("the rest in one");
    assert_eq!(second.expected_last, 1);
    let answer = log.append(1, 1, second.expected_last, Some(&second.msg_id), second.payload);
    a.on_answer(second.id, answer, t0);
    assert_eq!((a.settled(0), a.settled(1)), (2, 1));
    assert_eq!(log.records(1), vec![b"s0r1".to_vec(), b"s0r2".to_vec(), b"s1r1".to_vec()]);
    // A partition this node does not write: abandoned at once, and settled.
    a.submit(0, 3, Partition(2), record(0, 3));
    assert_eq!(a.take_abandoned(0), vec![3]);
    assert_eq!(a.settled(0), 3);
}

/// A purge note rides the partition's next batch after the records queued
/// before it, holds back no shard's settling, and is not written for a
/// partition this node does not write.
#[test]
fn a_purge_note_follows_the_records_before_it_and_settles_nothing() {
    let t0 = Instant::now();
    let mut a = Appender::new(holder(1), Config::new(4, 1));
    let mut log = Log::default();
    a.open(Partition(1), 0);
    a.submit(0, 1, Partition(1), record(0, 1));
    a.note(Partition(1), purge_note(42));
    a.note(Partition(2), purge_note(7));
    let append = a.poll(t0).expect("an append");
    assert_eq!(a.poll(t0), None, "nothing for the partition not written");
    let answer = log.append(1, 1, append.expected_last, Some(&append.msg_id), append.payload);
    a.on_answer(append.id, answer, t0);
    assert_eq!(a.settled(0), 1);
    assert_eq!(a.counters.appended_records, 1, "a note is not a shard's record");
    let records = log.records(1);
    assert_eq!(records, vec![b"s0r1".to_vec(), purge_note(42).to_vec()]);
    assert_eq!(read_purge_note(&records[1]), Some(42));
    assert_eq!(read_purge_note(&records[0]), None);
    assert_eq!(read_purge_note(&[PURGE_NOTE, 1, 2]), None, "cut short");
}

#[test]
fn a_retry_of_an_append_that_landed_is_answered_from_the_duplicate_window() {
    let t0 = Instant::now();
    let mut a = Appender::new(holder(1), Config::new(1, 1));
    let mut log = Log::default();
    a.open(Partition(0), 0);
    a.submit(0, 1, Partition(0), record(0, 1));
    let first = a.poll(t0).unwrap();
    // It lands, but the answer is lost.
    log.append(0, 1, first.expected_last, Some(&first.msg_id), first.payload.clone());
    a.on_answer(first.id, FenceAnswer::Failed, t0);
    assert_eq!(a.poll(t0), None, "not before the retry pause");
    let retry = a.poll(t0 + a.cfg.retry_after).expect("retried");
    assert_eq!((retry.msg_id.as_str(), retry.expected_last, &retry.payload), (first.msg_id.as_str(), 0, &first.payload));
    let answer = log.append(0, 1, retry.expected_last, Some(&retry.msg_id), retry.payload);
    assert_eq!(answer, FenceAnswer::Appended { seq: 1 });
    a.on_answer(retry.id, answer, t0);
    assert_eq!(a.settled(0), 1);
    assert_eq!(log.records(0).len(), 1, "once");
}

#[test]
fn a_fenced_out_writer_abandons_what_it_queued_and_closed_lanes_drain_first() {
    let t0 = Instant::now();
    let mut a = Appender::new(holder(1), Config::new(2, 1));
    let mut log = Log::default();
    a.open(Partition(0), 0);
    a.submit(0, 1, Partition(0), record(0, 1));
    let first = a.poll(t0).unwrap();
    a.submit(0, 2, Partition(0), record(0, 2));
    // A new owner's marker got in first.
    log.append(0, 2, 0, None, b"2:1".to_vec());
    let answer = log.append(0, 1, first.expected_last, Some(&first.msg_id), first.payload);
    assert_eq!(a.on_answer(first.id, answer, t0), Some(Partition(0)));
    assert_eq!(a.take_abandoned(0), vec![1, 2]);
    assert_eq!(a.settled(0), 2);
    assert!(!a.is_open(Partition(0)));

    // Closing for a move: what is queued still goes, nothing new is taken.
    a.open(Partition(1), 0);
    a.submit(0, 3, Partition(1), record(0, 3));
    a.close(Partition(1));
    a.submit(0, 4, Partition(1), record(0, 4));
    assert!(!a.drained(Partition(1)));
    let last = a.poll(t0).unwrap();
    let answer = log.append(1, 1, last.expected_last, Some(&last.msg_id), last.payload);
    a.on_answer(last.id, answer, t0);
    assert!(a.drained(Partition(1)) && !a.is_open(Partition(1)));
    assert_eq!(a.take_abandoned(0), vec![4]);
    assert_eq!(log.records(1), vec![b"s0r3".to_vec()]);
}

/// Seeded runs: two nodes, one partition each at first; node 2 takes
/// node 1's partition over in the middle of the run (its marker fences
/// node 1 out), while shards keep submitting on both and the network
/// loses a third of the requests and answers and delays the rest.
/// Invariants: every record a shard saw settled and not abandoned is in
/// its partition's log exactly once, in the order submitted; nothing of
/// node 1's lands on partition 0 after node 2's marker; once calm,
/// everything submitted is settled.
#[test]
fn seeded_runs_lose_nothing_settled_and_never_write_past_a_fence() {
    for seed in 0..200u64 {
        run(seed);
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A request or answer on its way.
enum Flight {
    Request { node: usize, append: Append },
    Answer { node: usize, id: u64, answer: FenceAnswer },
}

fn run(seed: u64) {
    let t0 = Instant::now();
    let mut rng = Rng(seed);
    let mut now = t0;
    let shards = 2u16;
    let mut nodes = [Appender::new(holder(1), Config::new(2, shards)), Appender::new(holder(2), Config::new(2, shards))];
    // Small batches, so that a run has many appends.
    for n in &mut nodes {
        n.cfg.max_batch_bytes = 64;
    }
    let mut log = Log::default();
    nodes[0].open(Partition(0), 0);
    nodes[1].open(Partition(1), 0);
    let mut next_seq = [[0u64; 2]; 2];
    // What each node submitted: (shard, seq) -> partition.
    let mut submitted: Vec<std::collections::HashMap<(u16, u64), u16>> = vec![Default::default(), Default::default()];
    let mut abandoned: Vec<std::collections::HashSet<(u16, u64)>> = vec![Default::default(), Default::default()];
    let mut flights: Vec<(Instant, Flight)> = Vec::new();
    let mut marker_at = None;
    let takeover_step = 100 + rng.next() % 200;
    let mut marker_pending = false;
    for step in 0..5_000u64 {
        let calm = step >= 600;
        let all_settled = (0..2).all(|n| (0..shards).all(|sh| nodes[n].settled(sh) == next_seq[n][sh as usize]));
        if calm && all_settled && flights.is_empty() {
            break;
        }
        now += Duration::from_millis(1 + rng.next() % 5);
        // Shards submit while the run is not calm.
        if !calm {
            for n in 0..2 {
                if rng.chance(40) {
                    let shard = (rng.next() % shards as u64) as u16;
                    let p = (rng.next() % 2) as u16;
                    next_seq[n][shard as usize] += 1;
                    let seq = next_seq[n][shard as usize];
                    submitted[n].insert((shard, seq), p);
                    nodes[n].submit(shard, seq, Partition(p), format!("n{n}s{shard}r{seq}").into_bytes().into());
                }
            }
        }
        // Node 2 takes partition 0: it has caught up to the log's end and
        // appends its marker expecting that end (retried on a conflict,
        // as ownership replays again).
        if step == takeover_step {
            marker_pending = true;
        }
        if marker_pending {
            let last = log.last_of(0);
            if let FenceAnswer::Appended { seq } = log.append(0, 2, last, None, b"2:7".to_vec()) {
                marker_pending = false;
                marker_at = Some(seq);
                nodes[1].open(Partition(0), seq);
            }
        }
        for (n, node) in nodes.iter_mut().enumerate() {
            while let Some(append) = node.poll(now) {
                if calm || !rng.chance(33) {
                    flights.push((now + Duration::from_millis(rng.next() % 20), Flight::Request { node: n, append }));
                } else {
                    // Lost on the way: the host's timeout answers Failed.
                    flights.push((now + Duration::from_millis(30), Flight::Answer { node: n, id: append.id, answer: FenceAnswer::Failed }));
                }
            }
        }
        flights.sort_by_key(|f| f.0);
        let due: Vec<Flight> = {
            let split = flights.partition_point(|f| f.0 <= now);
            flights.drain(..split).map(|f| f.1).collect()
        };
        for f in due {
            match f {
                Flight::Request { node, append } => {
                    let answer = log.append(append.partition.0, node as u32 + 1, append.expected_last, Some(&append.msg_id), append.payload);
                    // The answer may be lost: the host then times out.
                    let answer = if calm || !rng.chance(33) { answer } else { FenceAnswer::Failed };
                    flights.push((now + Duration::from_millis(rng.next() % 20), Flight::Answer { node, id: append.id, answer }));
                }
                Flight::Answer { node, id, answer } => {
                    if let Some(p) = nodes[node].on_answer(id, answer, now) {
                        assert_eq!((node, p), (0, Partition(0)), "seed {seed}: only node 1 is fenced out, of partition 0");
                    }
                }
            }
        }
        for n in 0..2 {
            for shard in 0..shards {
                for seq in nodes[n].take_abandoned(shard) {
                    abandoned[n].insert((shard, seq));
                }
            }
        }
    }
    let marker_at = marker_at.unwrap_or_else(|| panic!("seed {seed}: the marker never landed"));
    for n in 0..2 {
        for shard in 0..shards {
            assert_eq!(nodes[n].settled(shard), next_seq[n][shard as usize], "seed {seed}: node {} shard {shard} settles everything once calm", n + 1);
        }
    }
    // Nothing of node 1's after node 2's marker on partition 0.
    assert!(
        log.messages.iter().all(|m| !(m.1 == 0 && m.2 == 1 && m.0 > marker_at)),
        "seed {seed}: node 1 wrote partition 0 after node 2's marker at {marker_at}"
    );
    // Every settled record that was not abandoned is in its log once, and
    // each shard's records in their order.
    for n in 0..2 {
        for p in 0..2u16 {
            let in_log: Vec<Vec<u8>> = log.records(p);
            let mut expected: Vec<(u16, u64)> = submitted[n].iter().filter(|(k, q)| **q == p && !abandoned[n].contains(k)).map(|(k, _)| *k).collect();
            expected.sort();
            for (shard, seq) in &expected {
                let r = format!("n{n}s{shard}r{seq}").into_bytes();
                assert_eq!(in_log.iter().filter(|x| **x == r).count(), 1, "seed {seed}: {} in partition {p}'s log once", String::from_utf8_lossy(&r));
            }
            for shard in 0..shards {
                let prefix = format!("n{n}s{shard}r");
                let order: Vec<u64> = in_log.iter().filter_map(|x| std::str::from_utf8(x).ok()?.strip_prefix(prefix.as_str())?.parse().ok()).collect();
                assert!(order.windows(2).all(|w| w[0] < w[1]), "seed {seed}: node {} shard {shard} out of order in partition {p}: {order:?}", n + 1);
            }
            // Nothing abandoned is in the log.
            for (shard, seq) in abandoned[n].iter().filter(|k| submitted[n].get(k) == Some(&p)) {
                let r = format!("n{n}s{shard}r{seq}").into_bytes();
                assert!(!in_log.contains(&r), "seed {seed}: abandoned {} is in the log", String::from_utf8_lossy(&r));
            }
        }
    }
}
