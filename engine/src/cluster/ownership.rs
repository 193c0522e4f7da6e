//! One node's side of partition ownership: leases in a key-value store
//! with a time to live, fencing in the partition's log, and moving a
//! partition to the node that should own it.
//!
//! The store (NATS JetStream KV) gives linearizable compare-and-set on a
//! key's revision, and expires a key `ttl` after its last write. A lease is
//! the key of a partition holding this node's [`Holder`]:
//! - **Taking** is `create` (fails if the key exists). The node that
//!   should own the partition ([`placement`](super::placement)) takes it
//!   when the lease watch shows it free.
//! - **Keeping** is `update` with the last revision, every `renew_every`.
//! - **Acting** (serving requests, writing the log) is allowed only until
//!   `valid_until`: the *send* time of the last write the store accepted,
//!   plus `ttl` less the clock drift allowed and a guard. The store's
//!   expiry counts from when it *received* that write, later, so the
//!   node has stopped before any other node can create the key. This is
//!   the one timing assumption: clocks run at rates within `drift_ppm`.
//! - **Fencing** covers what timing cannot: a write already sent when the
//!   lease ran out. Every append to a partition's log names the sequence
//!   it expects to follow (JetStream's expected last subject sequence). A
//!   new owner first replays the log to its end and appends a marker
//!   expecting that end; once the marker is in, any append of an older
//!   owner fails, and a host whose append fails that way reports
//!   [`Ownership::fenced_out`]. If an old owner's write got in first, the
//!   marker fails instead and the new owner replays again.
//! - **Moving** (a node joined, or came back): an owner that is no longer
//!   the one placement names stops acting, waits for its host to drain
//!   what it has in flight, and deletes the key with its revision, at most
//!   `moves_at_once` partitions at a time; the named node sees the key go
//!   and takes it.
//!
//! The store does not tell watchers when a key expires (JetStream's
//! `max_age` removes it silently), so a node reads expiry off its own
//! clock: a lease or member key it has not seen written for `ttl` plus
//! the guard is presumed gone. Membership is the member keys seen written
//! within that time; a take on a lease presumed gone that is in fact still
//! there fails its create and is retried later.
//!
//! A request whose answer does not come within `op_timeout` counts as
//! failed. Its effect may still have happened; the lease watch then shows
//! this node holding a key it thinks it does not, and the node adopts it
//! with an `update` (only its own incarnation's: a restarted process
//! waits for the old one's leases to expire).

use super::NodeId;
use super::partition::Partition;
use super::placement;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Timing and pacing of leases.
#[derive(Clone, Debug)]
pub struct Config {
    pub partitions: u16,
    /// The store's time to live of a key after its last write.
    pub ttl: Duration,
    /// How often a held lease is renewed; a third of `ttl` leaves two
    /// renewals to fail before the lease lapses.
    pub renew_every: Duration,
    /// A store or log request with no answer by then has failed.
    pub op_timeout: Duration,
    /// The largest difference in clock rate between this node and the
    /// store, in parts per million.
    pub drift_ppm: u32,
    /// Taken off every lease's validity for the time between two calls of
    /// [`Ownership::on_time`] and the host's reaction to a stop.
    pub guard: Duration,
    /// Partitions being released at once when ownership moves.
    pub moves_at_once: usize,
    /// Takes in flight at once (a node starting takes its share).
    pub takes_at_once: usize,
    /// How long after a failed take the partition is tried again.
    pub take_retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            partitions: super::partition::DEFAULT_PARTITIONS,
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_secs(1),
            op_timeout: Duration::from_millis(500),
            drift_ppm: 10_000,
            guard: Duration::from_millis(100),
            moves_at_once: 1,
            takes_at_once: 64,
            take_retry: Duration::from_millis(500),
        }
    }
}

impl Config {
    /// How long after sending a write the store accepted the node may act.
    fn validity(&self) -> Duration {
        let drift = self.ttl.mul_f64(2.0 * self.drift_ppm as f64 / 1e6);
        self.ttl.saturating_sub(drift).saturating_sub(self.guard)
    }

    /// Whether leases can be kept at all with these timings.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_every + self.op_timeout >= self.validity() {
            return Err(format!(
                "a lease valid for {:?} cannot be renewed every {:?} with requests timing out after {:?}",
                self.validity(),
                self.renew_every,
                self.op_timeout
            ));
        }
        if self.partitions == 0 || self.moves_at_once == 0 || self.takes_at_once == 0 {
            return Err("partitions, moves_at_once and takes_at_once must be at least 1".into());
        }
        Ok(())
    }
}

/// Who holds a lease: the node, and the process start it was taken in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Holder {
    pub node: NodeId,
    pub incarnation: u64,
}

/// A key of the lease store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A partition's lease.
    Lease(Partition),
    /// A node's membership: it is live while this key is.
    Member(NodeId),
}

/// A request to the lease store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Write the key only if it does not exist.
    Create { key: Key, holder: Holder },
    /// Write the key only if its revision is still `revision`.
    Update { key: Key, holder: Holder, revision: u64 },
    /// Delete the key only if its revision is still `revision`.
    Delete { key: Key, revision: u64 },
    /// Write the key whatever it holds.
    Put { key: Key, holder: Holder },
    /// Delete the key whatever it holds.
    Remove { key: Key },
}

/// The store's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvAnswer {
    Done {
        revision: u64,
    },
    /// The key exists (create) or has another revision (update, delete).
    Conflict,
    Failed,
}

/// The log's answer to an append that expects the subject's last
/// sequence: a fence marker, or a batch of records (`replication`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceAnswer {
    Appended {
        seq: u64,
    },
    /// The log's last sequence was not the one expected.
    Conflict,
    Failed,
}

/// What the machine asks its host to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Kv {
        id: u64,
        op: KvOp,
    },
    /// Append a marker of `holder` to the partition's log, expecting its
    /// last sequence to be `expected_last`; answer with [`Ownership::on_fence`].
    Fence {
        id: u64,
        partition: Partition,
        holder: Holder,
        expected_last: u64,
    },
    /// Replay the partition's log to its end; answer with [`Ownership::caught_up`].
    CatchUp(Partition),
    /// Serve the partition: its requests and its log are this node's.
    Serve(Partition),
    /// Stop acting on the partition now. When it follows a move, answer
    /// with [`Ownership::drained`] once nothing of it is in flight.
    Stop(Partition),
}

/// Where a partition stands on this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Idle,
    /// A create is in flight.
    Taking,
    /// Held; the host replays the log.
    CatchingUp {
        since: Instant,
    },
    /// Held; the marker is in flight.
    Fencing,
    Serving,
    /// Held, stopped for a move; the host drains (`drained` once it has).
    Draining {
        drained: bool,
    },
    /// Stopped; the delete is in flight.
    Releasing,
}

/// A lease this node holds.
#[derive(Clone, Copy, Debug)]
struct Held {
    revision: u64,
    valid_until: Instant,
    next_renew: Instant,
    renewing: bool,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    state: State,
    held: Option<Held>,
    /// After a take that failed, not before: the lease watch may lag, and a
    /// take retried at once on its stale revision would only fail again.
    retry_at: Option<Instant>,
}

const IDLE: Slot = Slot { state: State::Idle, held: None, retry_at: None };

#[derive(Clone, Copy, Debug)]
enum Purpose {
    Member,
    /// The member key's delete, when leaving.
    Unmember,
    Take(Partition),
    Adopt(Partition),
    Renew(Partition),
    Release(Partition),
    Fence(Partition),
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    sent: Instant,
    purpose: Purpose,
}

/// Counts of what happened, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub taken: u64,
    pub adopted: u64,
    pub served: u64,
    pub lost: u64,
    pub released: u64,
    pub fence_retries: u64,
    pub timed_out: u64,
}

pub struct Ownership {
    me: Holder,
    cfg: Config,
    /// When each node's member key was last seen written (by this node's clock).
    members: BTreeMap<NodeId, Instant>,
    /// The nodes whose member key was seen written within the time to live, sorted.
    live: Vec<NodeId>,
    /// Each partition's owner by placement among `live`, computed when
    /// `live` changes rather than on every input (a take-over brings
    /// thousands of inputs, each followed by a pass over every partition).
    placed: Vec<Option<NodeId>>,
    placed_for: Option<Vec<NodeId>>,
    /// Each partition's holder and revision, as the lease watch last showed
    /// them, and when that write was seen.
    seen: Vec<Option<(Holder, u64, Instant)>>,
    slots: Vec<Slot>,
    /// Requests in flight by id; a BTreeMap so timeouts fire in a fixed order.
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    member_due: Option<Instant>,
    member_in_flight: bool,
    /// Leaving the cluster: releasing every lease, then the member key.
    leaving: bool,
    member_removed: bool,
    out: VecDeque<Output>,
    pub counters: Counters,
}

impl Ownership {
    pub fn new(node: NodeId, incarnation: u64, cfg: Config) -> Self {
        assert!(cfg.check().is_ok(), "{:?}", cfg.check());
        let n = cfg.partitions as usize;
        Ownership {
            me: Holder { node, incarnation },
            members: BTreeMap::new(),
            live: Vec::new(),
            placed: Vec::new(),
            placed_for: None,
            seen: vec![None; n],
            slots: vec![IDLE; n],
            pending: BTreeMap::new(),
            next_id: 1,
            member_due: None,
            member_in_flight: false,
            leaving: false,
            member_removed: false,
            out: VecDeque::new(),
            counters: Counters::default(),
            cfg,
        }
    }

    pub fn holder(&self) -> Holder {
        self.me
    }

    /// Leaves the cluster (a clean shutdown): stops acting on every
    /// partition at once, releases each lease once the host has drained
    /// it, takes nothing more, and deletes the member key, so that the
    /// others take over at once rather than after the time to live.
    pub fn leave(&mut self, now: Instant) {
        self.leaving = true;
        for i in 0..self.slots.len() {
            if matches!(self.slots[i].state, State::CatchingUp { .. } | State::Fencing | State::Serving) {
                self.slots[i].state = State::Draining { drained: false };
                self.out.push_back(Output::Stop(Partition(i as u16)));
            }
        }
        self.on_time(now);
    }

    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// Whether a leave is complete: no lease held or being taken, and the
    /// member key deleted.
    pub fn left(&self) -> bool {
        self.leaving && self.member_removed && self.slots.iter().all(|s| s.state == State::Idle && s.held.is_none())
    }

    /// The next thing for the host to do.
    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn state(&self, p: Partition) -> State {
        self.slots[p.0 as usize].state
    }

    /// Whether this node may act on `p` now: it serves it and its lease is
    /// still valid. The host asks before every request and every append.
    pub fn serving(&self, p: Partition, now: Instant) -> bool {
        self.valid_until(p).is_some_and(|t| now < t)
    }

    /// Until when this node may act on `p`, if it serves it.
    pub fn valid_until(&self, p: Partition) -> Option<Instant> {
        let s = &self.slots[p.0 as usize];
        s.held.filter(|_| s.state == State::Serving).map(|h| h.valid_until)
    }

    /// The node requests for `p` go to: this one if it serves it,
    /// otherwise the holder the lease watch shows (None while nobody holds it).
    pub fn route(&self, p: Partition, now: Instant) -> Option<NodeId> {
        if self.serving(p, now) {
            return Some(self.me.node);
        }
        self.seen[p.0 as usize].filter(|s| !self.presumed_gone(s.2, now)).map(|(h, ..)| h.node).filter(|&n| n != self.me.node)
    }

    /// The nodes this node counts as live, sorted.
    pub fn live(&self) -> &[NodeId] {
        &self.live
    }

    /// The member watch: `node`'s member key was written (`true`) or deleted.
    pub fn on_member(&mut self, node: NodeId, written: bool, now: Instant) {
        if written {
            self.members.insert(node, now);
        } else {
            self.members.remove(&node);
        }
        self.on_time(now);
    }

    /// The lease watch: partition `p`'s key was written by `holder` at
    /// `revision`, or deleted.
    pub fn on_lease(&mut self, p: Partition, seen: Option<(Holder, u64)>, now: Instant) {
        self.seen[p.0 as usize] = seen.map(|(h, rev)| (h, rev, now));
        let slot = &mut self.slots[p.0 as usize];
        match (seen, slot.held.as_mut()) {
            // Our own write, whose answer may have been lost: its revision is the current one.
            (Some((h, rev)), Some(held)) if h == self.me => held.revision = held.revision.max(rev),
            // Someone else holds what we think we hold: our lease lapsed in the store.
            (Some(_), Some(_)) => self.lose(p),
            _ => {}
        }
        self.on_time(now);
    }

    /// The host replayed `p`'s log up to and including `last`.
    pub fn caught_up(&mut self, p: Partition, last: u64, now: Instant) {
        if !matches!(self.slots[p.0 as usize].state, State::CatchingUp { .. }) || !self.valid(p, now) {
            return;
        }
        let id = self.send(Purpose::Fence(p), now);
        self.out.push_back(Output::Fence { id, partition: p, holder: self.me, expected_last: last });
        self.slots[p.0 as usize].state = State::Fencing;
    }

    /// The host has nothing of `p` in flight after a [`Output::Stop`] for a move.
    pub fn drained(&mut self, p: Partition, now: Instant) {
        if matches!(self.slots[p.0 as usize].state, State::Draining { .. }) {
            self.slots[p.0 as usize].state = State::Draining { drained: true };
            self.release(p, now);
        }
    }

    /// An append of the host's to `p`'s log failed on its expected sequence:
    /// another owner has written, so this node is not the owner any more.
    pub fn fenced_out(&mut self, p: Partition, now: Instant) {
        if self.slots[p.0 as usize].held.is_some() {
            self.lose(p);
        }
        self.on_time(now);
    }

    pub fn on_kv(&mut self, id: u64, answer: KvAnswer, now: Instant) {
        let Some(pending) = self.pending.remove(&id) else { return };
        self.answered(pending, Answer::Kv(answer), now);
        self.on_time(now);
    }

    pub fn on_fence(&mut self, id: u64, answer: FenceAnswer, now: Instant) {
        let Some(pending) = self.pending.remove(&id) else { return };
        self.answered(pending, Answer::Fence(answer), now);
        self.on_time(now);
    }

    /// Time passes: timeouts, lapses, renewals, heartbeats, takes and moves.
    pub fn on_time(&mut self, now: Instant) {
        self.live = self.members.iter().filter(|&(_, &at)| !self.presumed_gone(at, now)).map(|(&n, _)| n).collect();
        if self.placed_for.as_ref() != Some(&self.live) {
            self.placed = (0..self.slots.len()).map(|i| placement::owner(Partition(i as u16), &self.live)).collect();
            self.placed_for = Some(self.live.clone());
        }
        self.time_out(now);
        self.heartbeat(now);
        for i in 0..self.slots.len() {
            self.keep(Partition(i as u16), now);
        }
        if !self.leaving {
            self.take(now);
            self.move_one();
        }
    }

    /// Whether a key last seen written at `at` has expired by now, as far
    /// as this node can tell.
    fn presumed_gone(&self, at: Instant, now: Instant) -> bool {
        now.duration_since(at) >= self.cfg.ttl + self.cfg.guard
    }

    fn valid(&self, p: Partition, now: Instant) -> bool {
        self.slots[p.0 as usize].held.is_some_and(|h| now < h.valid_until)
    }

    fn send(&mut self, purpose: Purpose, now: Instant) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.insert(id, Pending { sent: now, purpose });
        id
    }

    fn kv(&mut self, purpose: Purpose, op: KvOp, now: Instant) {
        let id = self.send(purpose, now);
        self.out.push_back(Output::Kv { id, op });
    }

    fn time_out(&mut self, now: Instant) {
        let late: Vec<u64> = self.pending.iter().filter(|(_, p)| now.duration_since(p.sent) >= self.cfg.op_timeout).map(|(&id, _)| id).collect();
        for id in late {
            let pending = self.pending.remove(&id).expect("listed above");
            self.counters.timed_out += 1;
            let failed = match pending.purpose {
                Purpose::Fence(_) => Answer::Fence(FenceAnswer::Failed),
                _ => Answer::Kv(KvAnswer::Failed),
            };
            self.answered(pending, failed, now);
        }
    }

    fn heartbeat(&mut self, now: Instant) {
        if self.member_in_flight || self.member_removed || self.member_due.is_some_and(|due| now < due && !self.leaving) {
            return;
        }
        self.member_in_flight = true;
        let key = Key::Member(self.me.node);
        if self.leaving {
            self.kv(Purpose::Unmember, KvOp::Remove { key }, now);
        } else {
            self.kv(Purpose::Member, KvOp::Put { key, holder: self.me }, now);
        }
    }

    /// Lapse or renew a held lease; catch up again if a replay went unanswered.
    fn keep(&mut self, p: Partition, now: Instant) {
        let slot = self.slots[p.0 as usize];
        let Some(held) = slot.held else { return };
        if now >= held.valid_until {
            self.lose(p);
            return;
        }
        if let State::CatchingUp { since } = slot.state
            && now.duration_since(since) >= self.cfg.op_timeout
        {
            self.slots[p.0 as usize].state = State::CatchingUp { since: now };
            self.out.push_back(Output::CatchUp(p));
        }
        if slot.state == (State::Draining { drained: true }) && !held.renewing {
            self.release(p, now);
            return;
        }
        if !held.renewing && now >= held.next_renew && slot.state != State::Releasing {
            self.slots[p.0 as usize].held.as_mut().expect("held").renewing = true;
            self.kv(Purpose::Renew(p), KvOp::Update { key: Key::Lease(p), holder: self.me, revision: held.revision }, now);
        }
    }

    /// Take the free partitions placement gives this node, and adopt
    /// those the store shows it holding.
    fn take(&mut self, now: Instant) {
        if !self.live.contains(&self.me.node) {
            return; // Not a member yet: the others do not count on us.
        }
        let mut in_flight = self.slots.iter().filter(|s| s.state == State::Taking).count();
        for i in 0..self.slots.len() {
            if in_flight >= self.cfg.takes_at_once {
                break;
            }
            let p = Partition(i as u16);
            if self.slots[i].state != State::Idle || self.slots[i].retry_at.is_some_and(|t| now < t) {
                continue;
            }
            let seen = self.seen[i].filter(|s| !self.presumed_gone(s.2, now));
            match seen {
                Some((h, revision, _)) if h == self.me => {
                    self.slots[i].state = State::Taking;
                    self.kv(Purpose::Adopt(p), KvOp::Update { key: Key::Lease(p), holder: self.me, revision }, now);
                }
                None if self.placed[i] == Some(self.me.node) => {
                    self.slots[i].state = State::Taking;
                    self.kv(Purpose::Take(p), KvOp::Create { key: Key::Lease(p), holder: self.me }, now);
                }
                _ => continue,
            }
            in_flight += 1;
        }
    }

    /// Start releasing a partition that placement gives another node.
    fn move_one(&mut self) {
        let moving = self.slots.iter().filter(|s| matches!(s.state, State::Draining { .. } | State::Releasing)).count();
        if moving >= self.cfg.moves_at_once {
            return;
        }
        let me = self.me.node;
        let Some(i) = (0..self.slots.len()).find(|&i| self.slots[i].state == State::Serving && self.placed[i].is_some_and(|n| n != me)) else {
            return;
        };
        self.slots[i].state = State::Draining { drained: false };
        self.out.push_back(Output::Stop(Partition(i as u16)));
    }

    fn release(&mut self, p: Partition, now: Instant) {
        let Some(held) = self.slots[p.0 as usize].held else {
            self.slots[p.0 as usize].state = State::Idle;
            return;
        };
        if held.renewing {
            return; // The delete needs the revision the renewal brings; `answered` comes back here.
        }
        self.slots[p.0 as usize].state = State::Releasing;
        self.kv(Purpose::Release(p), KvOp::Delete { key: Key::Lease(p), revision: held.revision }, now);
    }

    /// The lease is gone (lapsed, or another holds it): stop acting.
    fn lose(&mut self, p: Partition) {
        let slot = &mut self.slots[p.0 as usize];
        let acting = matches!(slot.state, State::CatchingUp { .. } | State::Fencing | State::Serving);
        if acting {
            self.out.push_back(Output::Stop(p));
        }
        if slot.held.is_some() && !matches!(slot.state, State::Releasing | State::Draining { .. }) {
            self.counters.lost += 1;
        }
        *slot = IDLE;
    }

    fn hold(&mut self, p: Partition, revision: u64, sent: Instant, now: Instant) {
        let held = Held { revision, valid_until: sent + self.cfg.validity(), next_renew: sent + self.cfg.renew_every, renewing: false };
        if self.leaving {
            // Taken as the leave began: given back at once, never served.
            self.slots[p.0 as usize] = Slot { state: State::Draining { drained: true }, held: Some(held), retry_at: None };
            self.release(p, now);
            return;
        }
        self.slots[p.0 as usize] = Slot { state: State::CatchingUp { since: now }, held: Some(held), retry_at: None };
        self.out.push_back(Output::CatchUp(p));
    }

    fn answered(&mut self, pending: Pending, answer: Answer, now: Instant) {
        let sent = pending.sent;
        match (pending.purpose, answer) {
            (Purpose::Member, Answer::Kv(a)) => {
                self.member_in_flight = false;
                // A failed heartbeat is retried at once; a good one after a renewal period.
                self.member_due = matches!(a, KvAnswer::Done { .. }).then(|| sent + self.cfg.renew_every);
            }
            (Purpose::Unmember, Answer::Kv(a)) => {
                self.member_in_flight = false;
                self.member_removed = matches!(a, KvAnswer::Done { .. });
            }
            (Purpose::Take(p) | Purpose::Adopt(p), Answer::Kv(a)) => {
                if self.slots[p.0 as usize].state != State::Taking {
                    return;
                }
                match a {
                    KvAnswer::Done { revision } => {
                        if matches!(pending.purpose, Purpose::Take(_)) {
                            self.counters.taken += 1;
                        } else {
                            self.counters.adopted += 1;
                        }
                        self.hold(p, revision, sent, now);
                    }
                    // Someone else's, or a create of ours whose answer was
                    // lost: the lease watch tells which.
                    KvAnswer::Conflict | KvAnswer::Failed => self.slots[p.0 as usize] = Slot { retry_at: Some(now + self.cfg.take_retry), ..IDLE },
                }
            }
            (Purpose::Renew(p), Answer::Kv(a)) => {
                let Some(held) = self.slots[p.0 as usize].held.as_mut() else { return };
                held.renewing = false;
                match a {
                    KvAnswer::Done { revision } => {
                        held.revision = revision;
                        held.valid_until = held.valid_until.max(sent + self.cfg.validity());
                        held.next_renew = sent + self.cfg.renew_every;
                    }
                    // Failed: retried at the next tick, while the lease is valid.
                    KvAnswer::Failed => {}
                    KvAnswer::Conflict => match self.seen[p.0 as usize] {
                        // An earlier renewal's answer was lost: renew from the watch's revision.
                        Some((h, rev, _)) if h == self.me && rev != held.revision => held.revision = rev,
                        _ => self.lose(p),
                    },
                }
                if self.slots[p.0 as usize].state == (State::Draining { drained: true }) {
                    self.release(p, now);
                }
            }
            (Purpose::Release(p), Answer::Kv(a)) => {
                if self.slots[p.0 as usize].state != State::Releasing {
                    return;
                }
                match a {
                    KvAnswer::Done { .. } | KvAnswer::Conflict => {
                        self.counters.released += 1;
                        self.slots[p.0 as usize] = IDLE;
                    }
                    // Maybe deleted, maybe not: retried; the lease lapses anyway.
                    KvAnswer::Failed => self.slots[p.0 as usize].state = State::Draining { drained: true },
                }
            }
            (Purpose::Fence(p), Answer::Fence(a)) => {
                if self.slots[p.0 as usize].state != State::Fencing {
                    return;
                }
                match a {
                    FenceAnswer::Appended { .. } if self.valid(p, now) => {
                        self.counters.served += 1;
                        self.slots[p.0 as usize].state = State::Serving;
                        self.out.push_back(Output::Serve(p));
                    }
                    FenceAnswer::Appended { .. } => {}
                    // An older owner's write got in after our replay (or our
                    // marker did, its answer lost): replay again.
                    FenceAnswer::Conflict | FenceAnswer::Failed => {
                        self.counters.fence_retries += 1;
                        self.slots[p.0 as usize].state = State::CatchingUp { since: now };
                        self.out.push_back(Output::CatchUp(p));
                    }
                }
            }
            (purpose, answer) => unreachable!("{purpose:?} answered with {answer:?}"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Answer {
    Kv(KvAnswer),
    Fence(FenceAnswer),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config { partitions: 8, ..Config::default() }
    }

    fn drain(m: &mut Ownership) -> Vec<Output> {
        std::iter::from_fn(|| m.poll()).collect()
    }

    #[test]
    fn timing_that_cannot_keep_a_lease_is_refused() {
        assert!(cfg().check().is_ok());
        let slow = Config { renew_every: Duration::from_secs(3), ..cfg() };
        assert!(slow.check().unwrap_err().contains("cannot be renewed"));
        assert!(Config { moves_at_once: 0, ..cfg() }.check().is_err());
    }

    #[test]
    fn a_node_takes_its_placement_share_serves_after_its_marker_and_stops_when_the_lease_lapses() {
        let t0 = Instant::now();
        let mut m = Ownership::new(1, 7, cfg());
        m.on_member(2, true, t0);
        m.on_member(1, true, t0);
        let mine: Vec<Partition> = Partition::all(8).filter(|&p| placement::owner(p, &[1, 2]) == Some(1)).collect();
        let creates: Vec<(u64, Partition)> = drain(&mut m)
            .into_iter()
            .filter_map(|o| match o {
                Output::Kv { id, op: KvOp::Create { key: Key::Lease(p), holder } } => {
                    assert_eq!(holder, Holder { node: 1, incarnation: 7 });
                    Some((id, p))
                }
                Output::Kv { op: KvOp::Put { key: Key::Member(1), .. }, .. } => None,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(creates.iter().map(|c| c.1).collect::<Vec<_>>(), mine, "takes exactly what placement gives it");
        let (id, p) = creates[0];
        m.on_kv(id, KvAnswer::Done { revision: 10 }, t0);
        assert_eq!(drain(&mut m), vec![Output::CatchUp(p)]);
        assert!(!m.serving(p, t0), "not before its replay and marker");
        m.caught_up(p, 41, t0);
        let Some(Output::Fence { id, expected_last: 41, .. }) = m.poll() else { panic!("no fence") };
        m.on_fence(id, FenceAnswer::Appended { seq: 42 }, t0);
        assert_eq!(drain(&mut m), vec![Output::Serve(p)]);
        assert!(m.serving(p, t0));
        // Renewals go out and get no answer: the lease lapses before the
        // store could expire it, and the node stops.
        let mut t = t0;
        let mut stopped = false;
        while t < t0 + Duration::from_secs(4) {
            t += Duration::from_millis(10);
            m.on_time(t);
            stopped |= drain(&mut m).contains(&Output::Stop(p));
            assert_eq!(m.serving(p, t), !stopped, "at {:?}", t - t0);
        }
        assert!(stopped);
        assert!(m.counters.lost >= 1);
    }
}
