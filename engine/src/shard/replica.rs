//! The shard's side of replication in a cluster (`cluster::replication`):
//! each record of a presentity's registration or publications goes to the
//! partition's log as well as to the journal, numbered per shard; and the
//! records a take-over reads back from a log are put back here.
//!
//! Records wait in a backlog of the shard's own until the queue to the
//! cluster thread has room: never dropped, since a change the shard has
//! acknowledged must reach the log. While the backlog is full, changes
//! are refused with 503 (`Limit::Journal`, as when the journal is behind).

use super::Shard;
use super::durable::{Key, Sinks, UnixClock, Unrestorable};
use super::outbox::Outbox;
use crate::cluster::log_queues::{LogQueues, Shipped};
use crate::cluster::partition::{Partition, partition_of};
use crate::core::limits::Limit;
use crate::storage::record::Record;
use std::collections::VecDeque;
use std::time::Instant;

/// Records a shard keeps waiting for the queue before it refuses changes.
pub const BACKLOG_LIMIT: usize = 65_536;

/// The first byte of a replay item that is not a record but says: forget
/// what you hold of partition (u16, little-endian) before its log comes
/// back. Records start with their kind, 1 to 4.
const FORGET: u8 = 0xFE;

/// The replay item that makes a shard forget partition `p` (a node taking
/// back a partition it served before: what it still holds may have been
/// removed meanwhile, and the log's removal record compacted away).
pub fn forget_item(p: crate::cluster::partition::Partition) -> Box<[u8]> {
    let [lo, hi] = p.0.to_le_bytes();
    vec![FORGET, lo, hi].into()
}

pub struct Replica {
    pub(super) clock: UnixClock,
    partitions: u16,
    /// Records kept waiting before changes are refused ([`BACKLOG_LIMIT`]).
    backlog_limit: usize,
    /// The number of the last record made.
    last_seq: u64,
    backlog: VecDeque<Shipped>,
    /// The last checkpoint of the logs asked, and the keys it still has
    /// to ship (registrations and publications).
    checkpoint_seen: u64,
    checkpoint_keys: Vec<Key>,
    /// Dialogs put back by a take-over that still wait for their
    /// presentity's answer (then their watcher is told anew).
    pub(super) taken_over: std::collections::HashSet<u64>,
    /// Dialogs put back by a take-over, with their partition, until this
    /// node serves it.
    pub(super) awaiting_serve: Vec<(u64, Partition)>,
}

impl Replica {
    /// Queues an encoded record for `partition`'s log.
    pub(super) fn ship(&mut self, partition: Partition, bytes: Box<[u8]>) {
        self.last_seq += 1;
        self.backlog.push_back(Shipped { partition, seq: self.last_seq, bytes });
    }
}

impl Shard {
    /// Starts sending the shard's records to its partitions' logs, with
    /// `clock`'s times (a node in a cluster).
    pub fn attach_replica(&mut self, clock: UnixClock) {
        let partitions = self.cfg.cluster.as_ref().map_or(crate::cluster::partition::DEFAULT_PARTITIONS, |v| v.partitions());
        self.subscriptions.track_durable();
        self.replica = Some(Replica {
            clock,
            partitions,
            backlog_limit: BACKLOG_LIMIT,
            last_seq: 0,
            backlog: VecDeque::new(),
            checkpoint_seen: 0,
            checkpoint_keys: Vec::new(),
            taken_over: Default::default(),
            awaiting_serve: Vec::new(),
        });
    }

    /// The log of presentity `aor`'s records, if the shard ships any.
    pub(super) fn presentity_log(&self, aor: &[u8]) -> Option<Partition> {
        self.replica.as_ref().map(|r| partition_of(aor, r.partitions))
    }

    /// The log of the records of the dialog with to-tag `tag`: the
    /// partition its tag names, while this node serves it (a dialog whose
    /// partition moved on is no longer this node's to record).
    pub(super) fn dialog_log(&self, tag: &[u8]) -> Option<Partition> {
        let view = self.cfg.cluster.as_ref().filter(|_| self.replica.is_some())?;
        self.home_of(tag).filter(|&p| view.serves(p))
    }

    /// Refuses changes once `limit` records wait (the simulations use a
    /// tiny one).
    pub fn set_replica_backlog_limit(&mut self, limit: usize) {
        if let Some(r) = &mut self.replica {
            r.backlog_limit = limit;
        }
    }

    /// The number of the last record made for the logs (0: none).
    pub fn replica_last(&self) -> u64 {
        self.replica.as_ref().map_or(0, |r| r.last_seq)
    }

    /// A change could not reach its log now: too many records wait.
    pub(super) fn replica_refuses(&self) -> Option<Limit> {
        self.replica.as_ref().filter(|r| r.backlog.len() >= r.backlog_limit).map(|_| Limit::Journal)
    }

    /// Moves what fits of the backlog into the queue to the cluster
    /// thread, and ships a slice of a checkpoint of the logs if one is asked.
    pub fn ship_backlog(&mut self, now: Instant, queues: &LogQueues) {
        self.log_checkpoint_step(now, queues);
        let shard = self.cfg.shard;
        let Some(r) = &mut self.replica else { return };
        while let Some(s) = r.backlog.pop_front() {
            if let Err(s) = queues.ship(shard, s) {
                r.backlog.push_front(s);
                break;
            }
        }
    }

    /// A checkpoint of the logs: every key of the partitions this node
    /// serves is shipped again, a slice per tick while the backlog has
    /// room (so that traffic's records are never refused for it), then the
    /// shard says so. Once the checkpoint's records are in, the cluster
    /// thread purges each log up to where the checkpoint began: a key's
    /// latest state is then in the checkpoint or after it.
    fn log_checkpoint_step(&mut self, now: Instant, queues: &LogQueues) {
        let Some(r) = &self.replica else { return };
        let asked = queues.checkpoint_asked();
        if asked > r.checkpoint_seen {
            let Some(view) = self.cfg.cluster.clone() else { return };
            let served = |aor: &[u8]| view.serves(partition_of(aor, view.partitions()));
            let mut keys: Vec<Key> = self.registrar.aors().into_iter().filter(|a| served(a)).map(Key::Registration).collect();
            keys.extend(self.publications.published_aors().into_iter().filter(|a| served(a)).map(Key::Publications));
            keys.extend(self.subscriptions.tags().filter(|(_, tag)| self.dialog_log(tag).is_some()).map(|(id, _)| Key::Subscription(id)));
            let r = self.replica.as_mut().expect("checked");
            r.checkpoint_seen = asked;
            r.checkpoint_keys = keys;
        } else if r.checkpoint_keys.is_empty() || r.backlog.len() >= r.backlog_limit / 2 {
            return;
        }
        let r = self.replica.as_mut().expect("checked");
        let keys = &mut r.checkpoint_keys;
        let slice = keys.split_off(keys.len().saturating_sub(super::durable::CHECKPOINT_KEYS_PER_TICK));
        let done = keys.is_empty();
        for key in slice {
            match key {
                Key::Registration(aor) => self.write_registration(now, &aor, Sinks::Log),
                Key::Publications(aor) => self.write_publications(now, &aor, Sinks::Log),
                Key::Subscription(id) => self.write_subscription(now, id, Sinks::Log),
            }
        }
        if done && let Some(r) = &self.replica {
            queues.checkpoint_shipped(self.cfg.shard, r.checkpoint_seen, r.last_seq);
        }
    }

    /// Drops every registration and publication of the partitions `ps`
    /// (one pass over the shard's keys, for all of them: a pass per
    /// partition took seconds when a node with 150,000 presentities took
    /// back hundreds of partitions).
    fn forget_partitions(&mut self, now: Instant, ps: &std::collections::HashSet<u16>, out: &mut Outbox) {
        let Some(clock) = self.replica.as_ref().map(|r| r.clock) else { return };
        let partitions = self.replica.as_ref().map_or(1, |r| r.partitions);
        let mine = |aor: &[u8]| ps.contains(&partition_of(aor, partitions).0);
        let registered: Vec<Box<[u8]>> = self.registrar.aors().into_iter().filter(|a| mine(a)).collect();
        let published: Vec<Box<[u8]>> = self.publications.published_aors().into_iter().filter(|a| mine(a)).collect();
        for aor in &registered {
            let _ = self.restore(now, clock, &Record::Registration { aor, registered_by: None, bindings: Vec::new() }, out);
        }
        for aor in &published {
            let _ = self.restore(now, clock, &Record::Publications { aor, publications: Vec::new() }, out);
        }
        let dialogs = self.forget_dialogs_of(ps, out);
        tracing::debug!(
            shard = self.cfg.shard,
            partitions = ps.len(),
            registered = registered.len(),
            published = published.len(),
            dialogs,
            "partitions forgotten before their replay"
        );
    }

    /// Puts back records a take-over read from the logs: at most `budget`
    /// of them, returning how many. A record that does not read or cannot
    /// be put back is logged and skipped (the log is this cluster's own).
    pub fn put_back_replayed(&mut self, now: Instant, queues: &LogQueues, budget: usize, out: &mut Outbox) -> usize {
        let Some(clock) = self.replica.as_ref().map(|r| r.clock) else { return 0 };
        self.ask_for_served_dialogs(out);
        let shard = self.cfg.shard;
        let mut n = 0;
        // Forget items come together, ahead of their partitions' records:
        // one pass over the shard's keys forgets them all.
        let mut forget = std::collections::HashSet::new();
        while n < budget {
            let Some(bytes) = queues.next_replayed(shard) else { break };
            n += 1;
            if let [FORGET, lo, hi] = bytes[..] {
                forget.insert(u16::from_le_bytes([lo, hi]));
                continue;
            }
            if !forget.is_empty() {
                self.forget_partitions(now, &std::mem::take(&mut forget), out);
            }
            let result = match Record::decode(&bytes) {
                Ok(record @ (Record::Registration { .. } | Record::Publications { .. })) => self.restore(now, clock, &record, out),
                Ok(record) => self.put_back_dialog(now, clock, &record, out),
                Err(_) => Err(Unrestorable("a record that does not read")),
            };
            if let Err(Unrestorable(why)) = result {
                tracing::warn!(shard, why, "a record from a partition log was skipped");
            }
        }
        if !forget.is_empty() {
            self.forget_partitions(now, &forget, out);
        }
        self.drain_local(now, out);
        self.record_subscriptions(now);
        n
    }
}
