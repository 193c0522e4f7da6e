//! Replicating a node's journal records to its partitions' logs, sans-IO.
//!
//! The shards record the whole state of each key they change
//! (`storage::record`); in a cluster, the records of a presentity's
//! registration and publications also go to its partition's log, a
//! subject of a JetStream stream, so that the node that takes the
//! partition over can put them back (`Output::CatchUp` of
//! [`ownership`](super::ownership)).
//!
//! The [`Appender`] batches them per partition:
//! - At most one append is in flight per partition. It names the log's
//!   last sequence it expects to follow, so an owner that has been fenced
//!   out can never write after the new owner's marker; whatever the shards
//!   record meanwhile rides the next append (group commit).
//! - A failed or unanswered append is sent again with the same message id
//!   and the same expected sequence: JetStream's duplicate window answers
//!   a retry of one that did land with the sequence it landed at.
//! - An append refused on its expected sequence means another node owns
//!   the partition: everything queued for it is abandoned, and the host
//!   tells ownership ([`Ownership::fenced_out`](super::ownership::Ownership::fenced_out)).
//!
//! Each shard numbers its records `1, 2, 3, ...`. [`Appender::settled`]
//! is the shard's highest number below which every record is in its log
//! or abandoned; a shard that acknowledges changes only once replicated
//! (`durability = "replicated"`) holds its responses until then, and
//! drops those whose records were [`abandoned`](Appender::take_abandoned).

use super::ownership::{FenceAnswer, Holder, Output};
use super::partition::Partition;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The first byte of a batch of records in a partition's log; a fence
/// marker (text, `node:incarnation`) never starts with it.
pub const BATCH_MAGIC: u8 = 0xB7;

/// Writes `records` as one log message: the magic byte, then each record
/// with its length (u32, little-endian).
pub fn encode_batch<'a>(records: impl IntoIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.push(BATCH_MAGIC);
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
}

/// The records of a log message [`encode_batch`] wrote; `None` for any
/// other message (a fence marker) or a malformed one.
pub fn decode_batch(b: &[u8]) -> Option<Vec<&[u8]>> {
    let mut rest = b.strip_prefix(&[BATCH_MAGIC])?;
    let mut records = Vec::new();
    while !rest.is_empty() {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        records.push(rest.get(4..4 + len)?);
        rest = &rest[4 + len..];
    }
    Some(records)
}

/// Bounds and pacing of the appender.
#[derive(Clone, Debug)]
pub struct Config {
    pub partitions: u16,
    pub shards: u16,
    /// Most payload bytes in one append (NATS refuses messages over its
    /// `max_payload`, 1 MiB by default).
    pub max_batch_bytes: usize,
    /// How long after a failed append it is sent again.
    pub retry_after: Duration,
}

impl Config {
    pub fn new(partitions: u16, shards: u16) -> Config {
        Config { partitions, shards, max_batch_bytes: 512 * 1024, retry_after: Duration::from_millis(50) }
    }
}

/// One append for the host to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Append {
    pub id: u64,
    pub partition: Partition,
    /// The log's last sequence on the partition's subject it must follow.
    pub expected_last: u64,
    /// The same for every retry of the same batch (JetStream's
    /// `Nats-Msg-Id`, for its duplicate window).
    pub msg_id: String,
    pub payload: Vec<u8>,
}

/// A record waiting for its append.
struct Entry {
    /// The shard that made it and its number there; `None` for a note of
    /// the host's own ([`purge_note`]).
    from: Option<(u16, u64)>,
    bytes: Box<[u8]>,
}

/// The first byte of a note in a batch: records start with their kind
/// (1 to 4), a shard's forget item with 0xFE.
pub const PURGE_NOTE: u8 = 0xFD;

/// A note that the partition's log was purged below stream sequence
/// `below` after a checkpoint: every key alive then has a record from
/// `below` on, so a reader holding older ones may drop them (the records
/// that removed those keys may have been purged before it read them).
pub fn purge_note(below: u64) -> Box<[u8]> {
    let mut b = vec![PURGE_NOTE];
    b.extend_from_slice(&below.to_le_bytes());
    b.into()
}

/// The sequence a [`purge_note`] names; `None` for anything else.
pub fn read_purge_note(b: &[u8]) -> Option<u64> {
    match b {
        [PURGE_NOTE, rest @ ..] => Some(u64::from_le_bytes(rest.try_into().ok()?)),
        _ => None,
    }
}

struct InFlight {
    id: u64,
    entries: Vec<Entry>,
    msg_id: String,
    payload: Vec<u8>,
    /// Not before then (a retry after a failure).
    not_before: Instant,
    sent: bool,
}

#[derive(Default)]
struct Lane {
    /// The log's last sequence, while this node writes the partition.
    open: Option<u64>,
    queue: VecDeque<Entry>,
    in_flight: Option<InFlight>,
    /// Batches made for the partition in this opening: part of each
    /// message id.
    batches: u64,
    /// Which opening of the partition this is: a batch id names it, so
    /// that ids stay unique when a partition comes back.
    openings: u64,
    /// Closed for new records; closes entirely once drained.
    closing: bool,
}

#[derive(Default)]
struct ShardProgress {
    /// The highest record number submitted.
    highest: u64,
    /// Records submitted and neither in the log nor abandoned.
    outstanding: BTreeSet<u64>,
    abandoned: Vec<u64>,
}

/// Counts of what happened, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub appended_records: u64,
    pub appends: u64,
    pub retries: u64,
    pub abandoned: u64,
    pub fenced: u64,
}

pub struct Appender {
    me: Holder,
    cfg: Config,
    lanes: Vec<Lane>,
    shards: Vec<ShardProgress>,
    /// Lanes that may have a batch to start.
    ready: BTreeSet<u16>,
    /// Appends in flight by id.
    pending: BTreeMap<u64, Partition>,
    next_id: u64,
    pub counters: Counters,
}

impl Appender {
    pub fn new(me: Holder, cfg: Config) -> Appender {
        Appender {
            me,
            lanes: (0..cfg.partitions).map(|_| Lane::default()).collect(),
            shards: (0..cfg.shards).map(|_| ShardProgress::default()).collect(),
            ready: BTreeSet::new(),
            pending: BTreeMap::new(),
            next_id: 1,
            counters: Counters::default(),
            cfg,
        }
    }

    /// This node writes `p` from now on; its log ends at `last` (the
    /// node's own fence marker).
    pub fn open(&mut self, p: Partition, last: u64) {
        // Anything left of an earlier opening was never acknowledged and
        // belongs to a lease this node lost: abandoned.
        let lane = &mut self.lanes[p.0 as usize];
        let left: Vec<Entry> = lane.in_flight.take().map(|f| f.entries).unwrap_or_default().into_iter().chain(lane.queue.drain(..)).collect();
        lane.open = Some(last);
        lane.closing = false;
        lane.batches = 0;
        lane.openings += 1;
        for e in left {
            self.abandon(e);
        }
    }

    fn abandon(&mut self, e: Entry) {
        if let Some((shard, seq)) = e.from {
            let progress = &mut self.shards[shard as usize];
            progress.outstanding.remove(&seq);
            progress.abandoned.push(seq);
            self.counters.abandoned += 1;
        }
    }

    /// The node stops acting on `p`: records already queued still go out
    /// (the lease, or the fence, decides whether they land), new ones are
    /// abandoned.
    pub fn close(&mut self, p: Partition) {
        self.lanes[p.0 as usize].closing = true;
        self.settle_lane(p);
    }

    /// Whether nothing of `p` is queued or in flight.
    pub fn drained(&self, p: Partition) -> bool {
        let lane = &self.lanes[p.0 as usize];
        lane.queue.is_empty() && lane.in_flight.is_none()
    }

    /// Shard `shard`'s record number `seq` for partition `p` (numbers
    /// strictly increase per shard). A record for a partition this node
    /// does not write is abandoned at once.
    pub fn submit(&mut self, shard: u16, seq: u64, p: Partition, bytes: Box<[u8]>) {
        let progress = &mut self.shards[shard as usize];
        debug_assert!(seq > progress.highest, "record numbers increase");
        progress.highest = seq;
        let lane = &mut self.lanes[p.0 as usize];
        if lane.open.is_none() || lane.closing {
            progress.abandoned.push(seq);
            self.counters.abandoned += 1;
            return;
        }
        progress.outstanding.insert(seq);
        lane.queue.push_back(Entry { from: Some((shard, seq)), bytes });
        self.ready.insert(p.0);
    }

    /// Appends `note` to `p`'s log with its next batch, if this node still
    /// writes `p`: fenced like the records (no shard waits on it).
    pub fn note(&mut self, p: Partition, note: Box<[u8]>) {
        let lane = &mut self.lanes[p.0 as usize];
        if lane.open.is_some() && !lane.closing {
            lane.queue.push_back(Entry { from: None, bytes: note });
            self.ready.insert(p.0);
        }
    }

    /// The next append to make now, if any.
    pub fn poll(&mut self, now: Instant) -> Option<Append> {
        let ready: Vec<u16> = self.ready.iter().copied().collect();
        for i in ready {
            let lane = &mut self.lanes[i as usize];
            let Some(last) = lane.open else {
                self.ready.remove(&i);
                continue;
            };
            if lane.in_flight.is_none() {
                if lane.queue.is_empty() {
                    self.ready.remove(&i);
                    continue;
                }
                let mut entries = Vec::new();
                let mut bytes = 1;
                while let Some(e) = lane.queue.front() {
                    if !entries.is_empty() && bytes + 4 + e.bytes.len() > self.cfg.max_batch_bytes {
                        break;
                    }
                    bytes += 4 + e.bytes.len();
                    entries.push(lane.queue.pop_front().expect("front"));
                }
                let mut payload = Vec::with_capacity(bytes);
                encode_batch(entries.iter().map(|e| &e.bytes[..]), &mut payload);
                lane.batches += 1;
                let msg_id = format!("{}:{}:{}:{}:{}", self.me.node, self.me.incarnation, i, lane.openings, lane.batches);
                lane.in_flight = Some(InFlight { id: 0, entries, msg_id, payload, not_before: now, sent: false });
            }
            let f = lane.in_flight.as_mut().expect("made above");
            if f.sent || now < f.not_before {
                continue;
            }
            f.sent = true;
            f.id = self.next_id;
            self.next_id += 1;
            self.pending.insert(f.id, Partition(i));
            self.counters.appends += 1;
            return Some(Append { id: f.id, partition: Partition(i), expected_last: last, msg_id: f.msg_id.clone(), payload: f.payload.clone() });
        }
        None
    }

    /// The log answered append `id`. Returns the partition this node has
    /// been fenced out of while acting on it, if that is what the answer
    /// says (the node's ownership machine must hear of it).
    pub fn on_answer(&mut self, id: u64, answer: FenceAnswer, now: Instant) -> Option<Partition> {
        let p = self.pending.remove(&id)?;
        let i = p.0 as usize;
        let lane = &mut self.lanes[i];
        let f = lane.in_flight.as_mut().filter(|f| f.id == id)?;
        match answer {
            FenceAnswer::Appended { seq } => {
                let f = lane.in_flight.take().expect("matched");
                lane.open = lane.open.map(|_| seq);
                self.counters.appended_records += f.entries.iter().filter(|e| e.from.is_some()).count() as u64;
                for e in f.entries {
                    if let Some((shard, seq)) = e.from {
                        self.shards[shard as usize].outstanding.remove(&seq);
                    }
                }
                self.ready.insert(p.0);
                self.settle_lane(p);
                None
            }
            FenceAnswer::Failed => {
                f.sent = false;
                f.not_before = now + self.cfg.retry_after;
                self.counters.retries += 1;
                self.ready.insert(p.0);
                None
            }
            // The log's last sequence was not the one expected: fenced out.
            FenceAnswer::Conflict => {
                self.counters.fenced += 1;
                let f = lane.in_flight.take().expect("matched");
                let queued: Vec<Entry> = lane.queue.drain(..).collect();
                // A closing lane's node has stopped already, and may be
                // taking the partition back (its marker in flight): that
                // must not be undone by a late answer to its old opening.
                let acting = !lane.closing;
                lane.open = None;
                lane.closing = false;
                for e in f.entries.into_iter().chain(queued) {
                    self.abandon(e);
                }
                acting.then_some(p)
            }
        }
    }

    /// A closing lane is closed once drained.
    fn settle_lane(&mut self, p: Partition) {
        if self.lanes[p.0 as usize].closing && self.drained(p) {
            let lane = &mut self.lanes[p.0 as usize];
            lane.open = None;
            lane.closing = false;
        }
    }

    /// Every record of `shard` numbered up to this is in its log or abandoned.
    pub fn settled(&self, shard: u16) -> u64 {
        let progress = &self.shards[shard as usize];
        progress.outstanding.first().map_or(progress.highest, |first| first - 1)
    }

    /// The record numbers of `shard` abandoned since the last call.
    pub fn take_abandoned(&mut self, shard: u16) -> Vec<u64> {
        std::mem::take(&mut self.shards[shard as usize].abandoned)
    }

    /// A partition's lane, for a failing test's message.
    pub fn describe_lane(&self, p: Partition) -> String {
        let l = &self.lanes[p.0 as usize];
        format!(
            "open {:?} closing {} queue {} in_flight {:?} ready {}",
            l.open,
            l.closing,
            l.queue.len(),
            l.in_flight.as_ref().map(|f| (f.id, f.sent, f.entries.len())),
            self.ready.contains(&p.0)
        )
    }

    /// The log's last sequence of `p` as far as this node knows, while it writes `p`.
    pub fn last_of(&self, p: Partition) -> Option<u64> {
        let lane = &self.lanes[p.0 as usize];
        lane.open.filter(|_| !lane.closing)
    }

    /// Whether this node writes `p` now.
    pub fn is_open(&self, p: Partition) -> bool {
        self.last_of(p).is_some()
    }
}

/// The appender composed with a node's ownership machine, as its host
/// runs them: a partition's lane opens at the node's own fence marker when
/// the machine serves it, and closes when it stops; a partition stopped
/// for a move is reported drained once its records are in the log.
pub struct Replicator {
    pub appender: Appender,
    /// Fence markers in flight, by the machine's request id.
    fences: HashMap<u64, Partition>,
    /// Where each partition's marker of this node landed, until served.
    markers: HashMap<Partition, u64>,
    /// Partitions stopped, and since when: drained no sooner than `grace`
    /// after the stop, since records the shards made just before it may
    /// still be on their way to the appender.
    draining: Vec<(Partition, Instant)>,
    grace: Duration,
}

impl Replicator {
    pub fn new(appender: Appender, grace: Duration) -> Replicator {
        Replicator { appender, fences: HashMap::new(), markers: HashMap::new(), draining: Vec::new(), grace }
    }

    /// Sees an output of the ownership machine before the host carries it.
    pub fn on_output(&mut self, o: &Output, now: Instant) {
        match *o {
            Output::Fence { id, partition, .. } => drop(self.fences.insert(id, partition)),
            Output::Serve(p) => {
                let marker = self.markers.remove(&p).unwrap_or(0);
                self.appender.open(p, marker);
            }
            Output::Stop(p) => {
                self.appender.close(p);
                self.markers.remove(&p);
                self.draining.push((p, now));
            }
            Output::Kv { .. } | Output::CatchUp(_) => {}
        }
    }

    /// The partitions stopped and not yet reported drained.
    pub fn draining(&self) -> Vec<Partition> {
        self.draining.iter().map(|d| d.0).collect()
    }

    /// The log's answer to fence marker `id` (before the machine sees it).
    pub fn on_fence_answer(&mut self, id: u64, answer: FenceAnswer) {
        if let Some(p) = self.fences.remove(&id)
            && let FenceAnswer::Appended { seq } = answer
        {
            self.markers.insert(p, seq);
        }
    }

    /// The partitions stopped at least `grace` ago whose records are all
    /// in the log (or abandoned): for the machine's `drained`.
    pub fn take_drained(&mut self, now: Instant) -> Vec<Partition> {
        let (grace, appender) = (self.grace, &self.appender);
        let mut done = Vec::new();
        self.draining.retain(|&(p, since)| {
            let drained = now.duration_since(since) >= grace && appender.drained(p);
            if drained {
                done.push(p);
            }
            !drained
        });
        done
    }
}

#[cfg(test)]
#[path = "replication_tests.rs"]
mod tests;
