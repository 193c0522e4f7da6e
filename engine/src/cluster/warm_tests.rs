//! A seeded simulation of the warm replica against a model stream: owners
//! append batches and fence markers, checkpoints re-append every live key
//! and purge what came before, the consumer breaks and resumes, nodes come
//! and go, the partitions served change, and take-overs happen at random.
//! Checked at every take-over that finds the partition warm: the records
//! taken, put back in order, are exactly what reading the partition's
//! whole history gives, and the sequence handed to the marker is the
//! subject's last. Checked after a calm: every partition the node would
//! inherit is warm.

use super::*;
use crate::cluster::replication::{encode_batch, purge_note};
use crate::core::entropy::Entropy;
use crate::storage::record::{ElementState, PublicationState};
use std::collections::BTreeMap;

const PARTS: u16 = 12;
const KEYS: u64 = 6;

/// One message of the model stream.
struct Message {
    seq: u64,
    p: Partition,
    payload: Vec<u8>,
}

struct World {
    rng: Entropy,
    now: Instant,
    /// The stream as it stands (purges remove messages).
    stream: Vec<Message>,
    next_seq: u64,
    /// Every partition's keys as its whole history leaves them: key → version.
    truth: HashMap<Partition, BTreeMap<u64, u64>>,
    version: u64,
    w: WarmReplica,
    /// Where the consumer stands in `stream` (an index), and whether it runs.
    cursor: usize,
    consuming: bool,
    live: Vec<NodeId>,
    serves: HashSet<Partition>,
    takes_checked: u64,
    /// Whether owners note their purges (off: shows the note is needed).
    notes: bool,
}

const ME: NodeId = 1;

fn aor(key: u64) -> Vec<u8> {
    format!("sip:k{key}@example.com").into_bytes()
}

/// A record of `key` at `version`; version 0 removes it.
fn record(key: u64, version: u64) -> Vec<u8> {
    let a = aor(key);
    let etag = format!("e{version}");
    let xml = format!("<tuple id='t{version}'/>");
    let publications = if version == 0 {
        vec![]
    } else {
        vec![PublicationState {
            etag: etag.as_bytes(),
            expires_unix_ms: version,
            elements: vec![ElementState { kind: b"tuple", id: None, xml: xml.as_bytes() }],
        }]
    };
    let mut out = Vec::new();
    Record::Publications { aor: &a, publications }.encode(&mut out);
    out
}

/// Reads records back into key → version (what putting them back gives).
fn put_back<'a>(records: impl IntoIterator<Item = &'a [u8]>, into: &mut BTreeMap<u64, u64>) {
    for r in records {
        let Ok(Record::Publications { aor, publications }) = Record::decode(r) else { panic!("not a record of the model") };
        let key: u64 = std::str::from_utf8(aor).unwrap().trim_start_matches("sip:k").trim_end_matches("@example.com").parse().unwrap();
        match publications.first() {
            None => drop(into.remove(&key)),
            Some(p) => drop(into.insert(key, p.expires_unix_ms)),
        }
    }
}

impl World {
    fn new(seed: u64, max_bytes: usize) -> World {
        let now = Instant::now();
        let mut w = World {
            rng: Entropy::for_shard(seed, 0),
            now,
            stream: Vec::new(),
            next_seq: 1,
            truth: HashMap::new(),
            version: 0,
            w: WarmReplica::new(ME, PARTS, max_bytes),
            cursor: 0,
            consuming: false,
            live: vec![1, 2, 3],
            serves: HashSet::new(),
            takes_checked: 0,
            notes: true,
        };
        w.tell_cluster();
        w
    }

    fn rand(&mut self, below: u64) -> u64 {
        self.rng.below(below.max(1))
    }

    fn tell_cluster(&mut self) {
        let serves = self.serves.clone();
        self.w.set_cluster(&self.live.clone(), |p| serves.contains(&p), self.now);
    }

    fn append(&mut self, p: Partition, payload: Vec<u8>) {
        self.stream.push(Message { seq: self.next_seq, p, payload });
        self.next_seq += 1;
    }

    /// An owner's batch of changes to `p`.
    fn write(&mut self, p: Partition) {
        let mut records = Vec::new();
        for _ in 0..1 + self.rand(3) {
            let key = self.rand(KEYS);
            self.version += 1;
            let version = if self.rand(5) == 0 { 0 } else { self.version };
            let t = self.truth.entry(p).or_default();
            if version == 0 {
                t.remove(&key);
            } else {
                t.insert(key, version);
            }
            records.push(record(key, version));
        }
        let mut payload = Vec::new();
        encode_batch(records.iter().map(|r| &r[..]), &mut payload);
        self.append(p, payload);
    }

    /// A checkpoint of `p` (every live key again), then a purge of what came before it.
    fn checkpoint(&mut self, p: Partition) {
        let live: Vec<(u64, u64)> = self.truth.get(&p).map(|t| t.iter().map(|(&k, &v)| (k, v)).collect()).unwrap_or_default();
        let records: Vec<Vec<u8>> = live.iter().map(|&(k, v)| record(k, v)).collect();
        let mut payload = Vec::new();
        encode_batch(records.iter().map(|r| &r[..]), &mut payload);
        let upto = self.next_seq;
        self.append(p, payload);
        // The purge keeps the subject's messages from `upto` on.
        let before = self.stream.len();
        let consumed: Vec<u64> = self.stream[..self.cursor].iter().map(|m| m.seq).collect();
        self.stream.retain(|m| m.p != p || m.seq >= upto);
        // The consumer's place is a sequence, not an index.
        let at = consumed.last().copied().unwrap_or(0);
        self.cursor = self.stream.iter().take_while(|m| m.seq <= at).count();
        assert!(self.stream.len() <= before);
        // The owner's note of the purge rides its next batch (here: alone,
        // or with a batch of changes).
        if self.notes {
            let mut payload = Vec::new();
            encode_batch([&purge_note(upto)[..]], &mut payload);
            self.append(p, payload);
        }
    }

    /// The consumer reads up to `n` messages.
    fn consume(&mut self, n: usize) {
        if !self.consuming {
            return;
        }
        for _ in 0..n {
            let Some(m) = self.stream.get(self.cursor) else {
                self.w.caught_up();
                return;
            };
            self.w.on_message(m.seq, m.p, &m.payload);
            self.cursor += 1;
        }
        if self.cursor == self.stream.len() {
            self.w.caught_up();
        }
    }

    /// The host's loop: a pass when due, else keep reading.
    fn host_step(&mut self) {
        if self.w.pass_due(self.now) {
            self.w.start_pass();
            self.cursor = 0;
            self.consuming = true;
        } else if self.w.kept() == 0 {
            // Nothing to keep: the host stops reading.
            self.w.idle();
            self.consuming = false;
        }
        let n = self.rand(8) as usize;
        self.consume(n);
    }

    /// The consumer broke: it resumes after the last message applied.
    fn break_consumer(&mut self) {
        let from = self.w.resume_from();
        self.cursor = self.stream.iter().take_while(|m| m.seq < from).count();
    }

    /// This node takes `p` over: with the replica if it is warm (reading on
    /// until it is complete up to the stream's end), checked against the truth.
    fn take_over(&mut self, p: Partition) {
        if !self.w.is_warm(p) {
            return;
        }
        let end = self.stream.last().map_or(0, |m| m.seq);
        let mut guard = 0;
        loop {
            match self.w.complete_up_to(p) {
                // Dropped at the byte limit while reading on: cold.
                None => return,
                Some(upto) if upto >= end => break,
                Some(_) => self.consume(16),
            }
            guard += 1;
            assert!(guard < 10_000, "the replica of {p:?} never reached the stream's end {end}");
        }
        let taken = self.w.take(p, end).expect("complete");
        let mut state = BTreeMap::new();
        put_back(taken.records.iter().map(|r| &r[..]), &mut state);
        let want = self.truth.get(&p).cloned().unwrap_or_default();
        assert_eq!(state, want, "{p:?} taken from the replica differs from its whole log");
        let last = self.stream.iter().rev().find(|m| m.p == p).map_or(0, |m| m.seq);
        assert_eq!(taken.last, last, "{p:?}: the marker would expect a sequence that is not the subject's last");
        self.takes_checked += 1;
        self.serves.insert(p);
        self.tell_cluster();
    }

    fn step(&mut self) {
        let pause = Duration::from_millis(1 + self.rand(40));
        self.now += pause;
        let p = Partition(self.rand(PARTS as u64) as u16);
        match self.rand(100) {
            0..=49 => self.write(p),
            50..=52 => self.checkpoint(p),
            53..=55 => self.break_consumer(),
            56..=57 => {
                // A node joins or leaves (this one stays).
                let n = 2 + self.rand(3) as NodeId;
                if let Some(i) = self.live.iter().position(|&x| x == n) {
                    self.live.remove(i);
                } else {
                    self.live.push(n);
                }
                self.tell_cluster();
            }
            // A partition this node served moves away.
            58..=59 if self.serves.remove(&p) => self.tell_cluster(),
            60..=63 => self.take_over(p),
            // A fence marker of another owner.
            64..=65 => self.append(p, b"2:7".to_vec()),
            _ => {}
        }
        self.host_step();
    }

    /// A calm: no changes, time passes, the consumer reads on.
    fn calm(&mut self) {
        for _ in 0..200 {
            self.now += Duration::from_millis(50);
            self.host_step();
            self.consume(1000);
        }
    }
}

fn run_seed(seed: u64, max_bytes: usize) -> u64 {
    let mut w = World::new(seed, max_bytes);
    for _ in 0..3000 {
        w.step();
    }
    w.calm();
    if max_bytes == usize::MAX {
        for p in Partition::all(PARTS) {
            let wanted = !w.serves.contains(&p) && placement::keeps_warm(p, &w.live, ME, 1);
            assert_eq!(w.w.is_warm(p), wanted, "seed {seed}: {p:?} (wanted {wanted}) after a calm");
        }
    }
    for p in Partition::all(PARTS) {
        w.take_over(p);
    }
    assert!(w.w.bytes() <= max_bytes, "seed {seed}: {} bytes kept over the limit {max_bytes}", w.w.bytes());
    w.takes_checked
}

#[test]
fn warm_replicas_hand_over_what_the_whole_log_holds() {
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let mut checked = 0;
    for seed in 0..seeds {
        checked += run_seed(seed, usize::MAX);
    }
    assert!(checked > seeds * 5, "only {checked} take-overs found their partition warm");
}

#[test]
fn a_full_replica_leaves_partitions_cold_and_stays_within_its_limit() {
    let mut dropped = 0;
    for seed in 0..20 {
        let mut w = World::new(seed, 600);
        for _ in 0..2000 {
            w.step();
        }
        w.calm();
        assert!(w.w.bytes() <= 600);
        dropped += w.w.counters.dropped;
        for p in Partition::all(PARTS) {
            w.take_over(p);
        }
    }
    assert!(dropped > 0, "the limit never bit");
}

#[test]
fn a_partition_wanted_after_the_pass_began_waits_for_the_next() {
    let now = Instant::now();
    let mut w = WarmReplica::new(1, 8, usize::MAX);
    // Alone, node 1 would inherit nothing it does not serve... serving nothing, it keeps all.
    w.set_cluster(&[1], |_| true, now);
    assert_eq!(w.kept(), 0);
    assert!(!w.pass_due(now + PASS_GATHER));
    w.set_cluster(&[1], |p| p.0 != 3, now);
    assert!(!w.pass_due(now), "a pass waits for the wanted partitions to gather");
    assert!(w.pass_due(now + PASS_GATHER));
    w.start_pass();
    assert!(w.is_warm(Partition(3)));
    w.on_message(1, Partition(3), b"1:1");
    // Partition 4 is wanted once the pass has read a message: not complete.
    w.set_cluster(&[1], |p| p.0 != 3 && p.0 != 4, now);
    assert!(!w.is_warm(Partition(4)));
    w.on_message(2, Partition(4), b"1:1");
    assert_eq!(w.take(Partition(4), 2), None);
    assert!(!w.pass_due(now + PASS_GATHER), "no new pass before this one caught up");
    w.caught_up();
    assert!(w.pass_due(now + PASS_GATHER));
    w.start_pass();
    // Partition 3 was complete up to 2 already; 4 reads from the start.
    assert_eq!(w.complete_up_to(Partition(3)), Some(2));
    assert_eq!(w.complete_up_to(Partition(4)), Some(0));
    w.on_message(1, Partition(3), b"1:1");
    w.on_message(2, Partition(4), b"1:1");
    assert_eq!(w.take(Partition(4), 2), Some(Taken { records: vec![], last: 2 }));
    assert_eq!(w.take(Partition(3), 3), None, "not complete up to 3");
}
