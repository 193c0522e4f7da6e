//! A warm replica: the latest record of every key of the partitions this
//! node would inherit, kept from the partition logs as they are written,
//! so that a take-over hands them to the shards from memory instead of
//! reading the logs back. Sans-IO: the host feeds it the log stream's
//! messages in order, and takes a partition's records when it takes the
//! partition over.
//!
//! **Which partitions.** Those this node would own if their owner went
//! away and it does not serve itself: first or second in the partition's
//! succession ([`placement::keeps_warm`]) over the live nodes. Each
//! partition is then kept by the one node that inherits it.
//!
//! **Passes.** The host reads the stream with one ordered consumer. A
//! partition kept from the stream's first message is complete up to where
//! the consumer stands. A partition that becomes wanted later has missed
//! records, so it waits for the next *pass*: the host starts the consumer
//! again from the first message, and every wanted partition is a member
//! from then on. Records of a partition already kept are applied once
//! (each partition remembers the last sequence it applied), so members of
//! an earlier pass stay complete through it. A new pass starts only after
//! the current one has caught up with the stream's end; what a member of
//! an earlier pass holds is therefore complete up to the end the last pass
//! reached, or further once this pass passes it.
//!
//! **Equivalence.** Each record is the whole state of its key, so the
//! latest record per key, handed in log order, puts back what reading the
//! whole log would. A removal (no bindings, no publications, a dialog
//! ended) drops the key: the shard taking over holds nothing of the
//! partition (or forgets it first), so there is nothing to remove. The
//! owner purges a partition's log below a checkpoint, perhaps before a
//! replica behind it read a removal there; the owner's note of the purge
//! ([`purge_note`](super::replication::purge_note)) follows the
//! checkpoint, and drops every key whose latest record is older.
//!
//! **Bounds.** The records kept are limited in bytes; a partition whose
//! record would pass the limit is dropped and left cold (its take-over
//! reads the log, as without a replica) until the live nodes change.

use super::NodeId;
use super::partition::Partition;
use super::placement;
use super::replication::{decode_batch, read_purge_note};
use crate::storage::record::Record;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long after the wanted partitions last grew a new pass may start:
/// the partitions of a lost node become wanted together.
const PASS_GATHER: Duration = Duration::from_millis(200);

/// What identifies a key's state among a partition's records: its kind
/// (registration, publications, dialog) and its name.
fn identity(r: &Record<'_>) -> Vec<u8> {
    let mut id = Vec::with_capacity(48);
    match r {
        Record::Registration { aor, .. } => {
            id.push(1);
            id.extend_from_slice(aor);
        }
        Record::Publications { aor, .. } => {
            id.push(2);
            id.extend_from_slice(aor);
        }
        Record::Subscription(s) => dialog_identity(&mut id, s.call_id, s.local_tag),
        Record::SubscriptionEnded { call_id, local_tag } => dialog_identity(&mut id, call_id, local_tag),
    }
    id
}

fn dialog_identity(id: &mut Vec<u8>, call_id: &[u8], local_tag: &[u8]) {
    id.push(3);
    id.extend_from_slice(local_tag);
    id.push(0);
    id.extend_from_slice(call_id);
}

/// Whether a record says its key holds nothing any more.
fn is_removal(r: &Record<'_>) -> bool {
    match r {
        Record::Registration { bindings, .. } => bindings.is_empty(),
        Record::Publications { publications, .. } => publications.is_empty(),
        Record::Subscription(_) => false,
        Record::SubscriptionEnded { .. } => true,
    }
}

/// A key's latest record, with the stream sequence it came in.
type Latest = (u64, Box<[u8]>);

/// One kept partition.
#[derive(Default)]
struct Kept {
    /// The latest record of each key, by its [`identity`].
    records: HashMap<Box<[u8]>, Latest>,
    /// The last stream sequence of the partition's subject applied (a
    /// fence marker or a batch): a take-over's marker expects it.
    last: u64,
    /// The pass it became a member in; `None`: wanted, waiting for a pass.
    joined: Option<u64>,
    bytes: usize,
}

/// What a take-over gets of a warm partition.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken {
    /// The records to put back, in log order.
    pub records: Vec<Box<[u8]>>,
    /// The partition subject's last sequence among the messages read.
    pub last: u64,
}

/// Counts, for logs and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub passes: u64,
    pub records_applied: u64,
    pub partitions_taken: u64,
    pub records_taken: u64,
    /// Partitions dropped at the byte limit.
    pub dropped: u64,
}

pub struct WarmReplica {
    me: NodeId,
    partitions: u16,
    max_bytes: usize,
    kept: HashMap<Partition, Kept>,
    /// Dropped at the byte limit: not wanted again until the live nodes change.
    over_limit: HashSet<Partition>,
    live: Vec<NodeId>,
    bytes: usize,
    /// The current pass (0: none yet) and the sequence its consumer has reached.
    pass: u64,
    position: u64,
    /// The stream's end as the last pass found it: members of earlier
    /// passes are complete up to here.
    prior_end: u64,
    /// The current pass has reached the stream's end.
    caught_up: bool,
    /// Since when a wanted partition has waited for a pass.
    waiting_since: Option<Instant>,
    pub counters: Counters,
}

impl WarmReplica {
    pub fn new(me: NodeId, partitions: u16, max_bytes: usize) -> WarmReplica {
        WarmReplica {
            me,
            partitions,
            max_bytes,
            kept: HashMap::new(),
            over_limit: HashSet::new(),
            live: Vec::new(),
            bytes: 0,
            pass: 0,
            position: 0,
            prior_end: 0,
            caught_up: false,
            waiting_since: None,
            counters: Counters::default(),
        }
    }

    /// The live nodes and the partitions this node holds (past the
    /// take-over's replay: fencing, serving, or handing over), as its
    /// ownership machine has them: keeps exactly the partitions it would
    /// inherit. Returns whether that changed anything.
    pub fn set_cluster(&mut self, live: &[NodeId], holds: impl Fn(Partition) -> bool, now: Instant) -> bool {
        if live != self.live {
            self.live = live.to_vec();
            self.over_limit.clear();
        }
        let mut changed = false;
        for p in Partition::all(self.partitions) {
            let wanted = !holds(p) && !self.over_limit.contains(&p) && placement::keeps_warm(p, &self.live, self.me, 1);
            match (wanted, self.kept.contains_key(&p)) {
                (true, false) => {
                    self.kept.insert(p, Kept::default());
                    self.waiting_since.get_or_insert(now);
                    changed = true;
                }
                (false, true) => {
                    self.drop_partition(p);
                    changed = true;
                }
                _ => {}
            }
        }
        changed
    }

    fn drop_partition(&mut self, p: Partition) {
        if let Some(k) = self.kept.remove(&p) {
            self.bytes -= k.bytes;
        }
    }

    /// Whether the host should start a pass now (read the stream again
    /// from its first message, after calling [`start_pass`](Self::start_pass)).
    pub fn pass_due(&self, now: Instant) -> bool {
        let waiting = self.waiting_since.is_some_and(|t| now.duration_since(t) >= PASS_GATHER);
        waiting && (self.pass == 0 || self.caught_up)
    }

    /// A pass starts: every wanted partition is a member from here on.
    /// The host reads the stream from its first message.
    pub fn start_pass(&mut self) {
        debug_assert!(self.pass == 0 || self.caught_up, "a pass starts only once the last one caught up");
        self.prior_end = self.prior_end.max(self.position);
        self.pass += 1;
        self.position = 0;
        self.caught_up = false;
        self.waiting_since = None;
        self.counters.passes += 1;
        let pass = self.pass;
        for k in self.kept.values_mut() {
            k.joined.get_or_insert(pass);
        }
    }

    /// Nothing is kept (a single node, or one that holds everything it
    /// would inherit): the host stops reading the stream, and the next
    /// partition wanted waits for a pass from the first message, which
    /// may then start at once.
    pub fn idle(&mut self) {
        debug_assert!(self.kept.is_empty());
        self.caught_up = true;
    }

    /// Where the host's consumer resumes after it broke: the message
    /// after the last one applied, in the same pass.
    pub fn resume_from(&self) -> u64 {
        self.position + 1
    }

    /// The host's consumer has reached the stream's end.
    pub fn caught_up(&mut self) {
        if self.pass > 0 {
            self.caught_up = true;
        }
    }

    /// The stream's message `seq`, on partition `p`'s subject, in order.
    pub fn on_message(&mut self, seq: u64, p: Partition, payload: &[u8]) {
        if seq <= self.position {
            return;
        }
        self.position = seq;
        let Some(k) = self.kept.get_mut(&p) else { return };
        if k.joined.is_none() || seq <= k.last {
            return;
        }
        k.last = seq;
        // A fence marker changes no key.
        let Some(batch) = decode_batch(payload) else { return };
        let mut grew = 0isize;
        for bytes in batch {
            if let Some(below) = read_purge_note(bytes) {
                k.records.retain(|id, (seq, r)| {
                    let keep = *seq >= below;
                    if !keep {
                        grew -= (id.len() + r.len()) as isize;
                    }
                    keep
                });
                continue;
            }
            let Ok(record) = Record::decode(bytes) else { continue };
            let id = identity(&record);
            let old = if is_removal(&record) {
                k.records.remove(id.as_slice())
            } else {
                grew += (id.len() + bytes.len()) as isize;
                k.records.insert(id.clone().into(), (seq, bytes.into()))
            };
            if let Some((_, old)) = old {
                grew -= (id.len() + old.len()) as isize;
            }
            self.counters.records_applied += 1;
        }
        k.bytes = (k.bytes as isize + grew) as usize;
        self.bytes = (self.bytes as isize + grew) as usize;
        if self.bytes > self.max_bytes {
            tracing::warn!(partition = p.0, bytes = self.bytes, limit = self.max_bytes, "warm replica full: partition left cold");
            self.drop_partition(p);
            self.over_limit.insert(p);
            self.counters.dropped += 1;
        }
    }

    /// Up to which stream sequence `p`'s records are complete, if it is
    /// kept as a member of a pass.
    pub fn complete_up_to(&self, p: Partition) -> Option<u64> {
        let joined = self.kept.get(&p)?.joined?;
        Some(if joined == self.pass { self.position } else { self.position.max(self.prior_end) })
    }

    /// Whether `p` is kept and will be complete once the consumer has read far enough.
    pub fn is_warm(&self, p: Partition) -> bool {
        self.complete_up_to(p).is_some()
    }

    /// A copy of `p`'s records for a take-over, if they are complete up
    /// to `end` (the stream's last sequence, read after the old owner
    /// stopped). The partition stays kept until this node holds it
    /// ([`set_cluster`](Self::set_cluster)): a take-over that fails finds
    /// it warm the next time.
    pub fn take(&mut self, p: Partition, end: u64) -> Option<Taken> {
        if self.complete_up_to(p)? < end {
            return None;
        }
        let k = self.kept.get(&p)?;
        let mut records: Vec<&Latest> = k.records.values().collect();
        records.sort_by_key(|r| r.0);
        self.counters.partitions_taken += 1;
        self.counters.records_taken += records.len() as u64;
        Some(Taken { records: records.into_iter().map(|r| r.1.clone()).collect(), last: k.last })
    }

    /// Bytes of records kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Partitions kept (members or waiting for a pass).
    pub fn kept(&self) -> usize {
        self.kept.len()
    }

    pub fn position(&self) -> u64 {
        self.position
    }
}

#[cfg(test)]
#[path = "warm_tests.rs"]
mod tests;
