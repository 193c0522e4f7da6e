//! What the shards read of the cluster: who owns each partition and where
//! each node listens. Written by the cluster host after every step of its
//! ownership machine, read by the shards on every request for a presentity,
//! without a lock: one atomic per partition and per node.

use super::NodeId;
use super::log_queues::LogQueues;
use super::mail::Mail;
use super::partition::{Partition, partition_of};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// Node ids run from 1 to this.
pub const MAX_NODE: NodeId = 1023;

/// Where a request for a partition goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node serves it.
    Here,
    /// Another node does, listening there.
    Node(NodeId, SocketAddr),
    /// No node does now, or the owner's address is not known yet.
    Nobody,
}

#[derive(Debug)]
pub struct ClusterView {
    me: NodeId,
    partitions: u16,
    /// Each partition's owner; 0: none known.
    owner: Vec<AtomicU32>,
    /// For a partition this node serves, the end of its lease, in
    /// microseconds since `epoch`: past it, the shards stop serving it on
    /// their own, even if the host that should have said so is stalled.
    valid_until: Vec<AtomicU64>,
    epoch: Instant,
    /// Each node's SIP address, IPv4 and port, with bit 48 set; 0: unknown.
    address: Vec<AtomicU64>,
    /// Counts changes of owner: a shard that saw the same count last time
    /// need not look again at what it holds (`shard/remote.rs`).
    owner_changes: AtomicU64,
    /// The queues to and from other nodes, once the shards are known.
    mail: OnceLock<Mail>,
    /// The queues of journal records to and from the partition logs.
    logs: OnceLock<LogQueues>,
}

impl ClusterView {
    pub fn new(me: NodeId, partitions: u16) -> ClusterView {
        assert!((1..=MAX_NODE).contains(&me), "node ids run from 1 to {MAX_NODE}");
        ClusterView {
            me,
            partitions,
            owner: (0..partitions).map(|_| AtomicU32::new(0)).collect(),
            valid_until: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            address: (0..=MAX_NODE).map(|_| AtomicU64::new(0)).collect(),
            owner_changes: AtomicU64::new(0),
            mail: OnceLock::new(),
            logs: OnceLock::new(),
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The node to send a request for `p` to, if any is known.
    pub fn owner(&self, p: Partition) -> Option<NodeId> {
        Some(self.owner[p.0 as usize].load(Ordering::Acquire)).filter(|&n| n != 0)
    }

    /// Records `p`'s owner, and when it is this node, until when its lease
    /// lets it act (`None`: without limit, for tests that set owners by hand).
    pub fn set_owner(&self, p: Partition, node: Option<NodeId>, valid_until: Option<Instant>) {
        let until = valid_until.map_or(u64::MAX, |t| t.saturating_duration_since(self.epoch).as_micros() as u64);
        self.valid_until[p.0 as usize].store(until, Ordering::Release);
        if self.owner[p.0 as usize].swap(node.unwrap_or(0), Ordering::AcqRel) != node.unwrap_or(0) {
            self.owner_changes.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// How many times an owner has changed so far.
    pub fn owner_changes(&self) -> u64 {
        self.owner_changes.load(Ordering::Acquire)
    }

    /// Makes the queues between `shards` shards and the cluster thread
    /// (once; later calls keep the first).
    pub fn open_mail(&self, shards: u16) -> &Mail {
        self.mail.get_or_init(|| Mail::new(self.me, shards))
    }

    /// The queues, if opened.
    pub fn mail(&self) -> Option<&Mail> {
        self.mail.get()
    }

    /// Makes the queues of journal records between `shards` shards and the
    /// cluster thread (once; later calls keep the first).
    pub fn open_logs(&self, shards: u16) -> &LogQueues {
        self.logs.get_or_init(|| LogQueues::new(shards))
    }

    /// The record queues, if opened.
    pub fn logs(&self) -> Option<&LogQueues> {
        self.logs.get()
    }

    /// Whether this node serves `p` (as last published; see [`Self::route`]
    /// for the check against the lease's end).
    pub fn serves(&self, p: Partition) -> bool {
        self.owner(p) == Some(self.me)
    }

    /// Whether this node serves `p` at `now`: it owns it and its lease has
    /// not run out.
    pub fn serves_at(&self, p: Partition, now: Instant) -> bool {
        self.serves(p) && (now.saturating_duration_since(self.epoch).as_micros() as u64) < self.valid_until[p.0 as usize].load(Ordering::Acquire)
    }

    /// The partitions this node serves.
    pub fn served(&self) -> Vec<Partition> {
        Partition::all(self.partitions).filter(|&p| self.serves(p)).collect()
    }

    pub fn address(&self, node: NodeId) -> Option<SocketAddr> {
        let v = self.address.get(node as usize)?.load(Ordering::Acquire);
        (v >> 48 == 1).then(|| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from((v >> 16) as u32), v as u16)))
    }

    /// Records where `node` listens; only IPv4 addresses are carried
    /// (`[cluster]` refuses another advertised address).
    pub fn set_address(&self, node: NodeId, addr: Option<SocketAddrV4>) {
        if let Some(slot) = self.address.get(node as usize) {
            let v = addr.map_or(0, |a| 1u64 << 48 | (u32::from(*a.ip()) as u64) << 16 | a.port() as u64);
            slot.store(v, Ordering::Release);
        }
    }

    /// Where a request for the presentity with normalised AOR `aor` goes
    /// at `now`.
    pub fn route(&self, aor: &[u8], now: Instant) -> Route {
        self.route_partition(partition_of(aor, self.partitions), now)
    }

    /// Where a request for partition `p` goes at `now`.
    pub fn route_partition(&self, p: Partition, now: Instant) -> Route {
        if self.serves_at(p, now) {
            return Route::Here;
        }
        match self.owner(p) {
            Some(n) if n == self.me => Route::Nobody,
            Some(n) => self.address(n).map_or(Route::Nobody, |a| Route::Node(n, a)),
            None => Route::Nobody,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_owners_and_addresses() {
        let v = ClusterView::new(1, 8);
        let aor = b"sip:alice@example.com";
        let p = partition_of(aor, 8);
        let now = Instant::now();
        assert_eq!(v.route(aor, now), Route::Nobody);
        v.set_owner(p, Some(1), Some(now + std::time::Duration::from_secs(1)));
        v.set_owner(p, Some(1), Some(now + std::time::Duration::from_secs(1)));
        assert_eq!(v.owner_changes(), 1, "a renewal is no change of owner");
        assert_eq!(v.route(aor, now), Route::Here);
        assert_eq!(v.route(aor, now + std::time::Duration::from_secs(1)), Route::Nobody, "past the lease, even if nobody said so");
        v.set_owner(p, Some(2), None);
        assert_eq!(v.route(aor, now), Route::Nobody, "owner known, address not yet");
        let a: SocketAddrV4 = "10.0.0.2:5062".parse().unwrap();
        v.set_address(2, Some(a));
        assert_eq!(v.route(aor, now), Route::Node(2, SocketAddr::V4(a)));
        assert_eq!(v.served(), vec![]);
        v.set_address(2, None);
        assert_eq!(v.address(2), None);
        assert_eq!(v.address(MAX_NODE + 1), None);
    }
}
