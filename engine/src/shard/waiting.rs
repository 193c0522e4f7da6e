//! Requests waiting for their partition's owner. While a partition moves
//! between nodes, or a node takes over a dead one's, no node serves it for
//! a moment (the old owner has stopped, the new one is putting its state
//! back): a request for it waits here instead of being refused, and goes
//! on as soon as the view names an owner, this node or another (`hop.rs`).
//! A request another node forwarded here waits too, since the two views
//! disagree only while this node is taking the partition.
//!
//! Bounded three ways, each answered 503 + Retry-After (`Limit::Partition`)
//! as a request was before it could wait: how long one waits
//! (`[cluster] move_wait_ms`), how many wait per shard and their bytes.
//! A retransmission of a waiting request over UDP waits beside it: both go
//! on together, and the transaction that takes the first (here, or at the
//! owner by the hop's branch) absorbs the second.
//!
//! Nothing is re-read until the view's owners change: the shard asks
//! [`Waiting::due`] every tick.

use crate::core::peer::Peer;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The bounds (`[cluster] move_wait_ms`, `move_queue`, `move_queue_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MoveWait {
    /// The longest a request waits; zero: refused at once.
    pub wait: Duration,
    pub max_requests: usize,
    pub max_bytes: usize,
}

impl Default for MoveWait {
    fn default() -> Self {
        // Under the 1 s an upstream proxy (the front's `fr_timer`) gives a
        // node: a node that answers later is marked down by it.
        MoveWait { wait: Duration::from_millis(800), max_requests: 10_000, max_bytes: 16 << 20 }
    }
}

/// A request waiting, as it came in.
pub(super) struct Held {
    pub until: Instant,
    pub peer: Peer,
    pub bytes: Box<[u8]>,
}

/// Counts, for the shard's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitCounts {
    /// Requests that waited for an owner.
    pub held: u64,
    /// Requests sent on once their partition had an owner.
    pub resumed: u64,
    /// Refused: no owner within the wait, or no room to wait.
    pub timed_out: u64,
    pub full: u64,
}

pub(super) struct Waiting {
    bounds: MoveWait,
    queue: VecDeque<Held>,
    bytes: usize,
    /// The view's count of owner changes when the queue was last tried.
    tried_at: u64,
    /// The earliest deadline in the queue (a request that waits on keeps
    /// its first, so the queue is not in deadline order).
    earliest: Option<Instant>,
    pub counts: WaitCounts,
}

impl Waiting {
    pub fn new(bounds: MoveWait) -> Waiting {
        Waiting { bounds, queue: VecDeque::new(), bytes: 0, tried_at: 0, earliest: None, counts: WaitCounts::default() }
    }

    /// Holds a request until `until` (its first arrival's deadline when it
    /// comes back from [`due`](Self::due) still without an owner, else
    /// `now` + the wait). False: no room or no wait; refuse it.
    pub fn hold(&mut self, now: Instant, until: Option<Instant>, peer: Peer, bytes: &[u8]) -> bool {
        let fresh = until.is_none();
        let until = until.unwrap_or(now + self.bounds.wait);
        if until <= now || self.queue.len() >= self.bounds.max_requests || self.bytes + bytes.len() > self.bounds.max_bytes {
            if fresh && !self.bounds.wait.is_zero() {
                self.counts.full += 1;
            }
            return false;
        }
        if fresh {
            self.counts.held += 1;
        }
        self.bytes += bytes.len();
        self.earliest = Some(self.earliest.map_or(until, |e| e.min(until)));
        self.queue.push_back(Held { until, peer, bytes: bytes.into() });
        true
    }

    /// What to do now: the requests whose wait ran out (to refuse), and,
    /// if the owners changed since the last try (`owner_changes`, the
    /// view's count), every other request (to route again). The rest wait on.
    pub fn due(&mut self, now: Instant, owner_changes: u64) -> (Vec<Held>, Vec<Held>) {
        if self.queue.is_empty() {
            self.tried_at = owner_changes;
            return (Vec::new(), Vec::new());
        }
        let changed = owner_changes != self.tried_at;
        self.tried_at = owner_changes;
        let (mut expired, mut retry) = (Vec::new(), Vec::new());
        if !changed && self.earliest.is_none_or(|e| e > now) {
            return (expired, retry);
        }
        let mut kept = VecDeque::with_capacity(if changed { 0 } else { self.queue.len() });
        for h in self.queue.drain(..) {
            if h.until <= now {
                self.bytes -= h.bytes.len();
                self.counts.timed_out += 1;
                expired.push(h);
            } else if changed {
                self.bytes -= h.bytes.len();
                retry.push(h);
            } else {
                kept.push_back(h);
            }
        }
        self.queue = kept;
        self.earliest = self.queue.iter().map(|h| h.until).min();
        (expired, retry)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer::udp("127.0.0.1:5060".parse().unwrap())
    }

    #[test]
    fn requests_wait_for_a_change_of_owners_or_their_deadline() {
        let t0 = Instant::now();
        let mut w = Waiting::new(MoveWait { wait: Duration::from_secs(2), max_requests: 3, max_bytes: 100 });
        assert!(w.hold(t0, None, peer(), b"first"));
        assert!(w.hold(t0 + Duration::from_secs(1), None, peer(), b"second"));
        let (expired, retry) = w.due(t0 + Duration::from_millis(500), 0);
        assert!(expired.is_empty() && retry.is_empty(), "nothing changed, nothing due");
        let (expired, retry) = w.due(t0 + Duration::from_secs(2), 0);
        assert_eq!(expired.iter().map(|h| &h.bytes[..]).collect::<Vec<_>>(), vec![&b"first"[..]]);
        assert!(retry.is_empty());
        let (expired, retry) = w.due(t0 + Duration::from_millis(2100), 1);
        assert!(expired.is_empty());
        assert_eq!(retry.len(), 1, "the owners changed: tried again");
        // Still no owner: it waits on with its first deadline, then is due.
        let h = &retry[0];
        assert!(w.hold(t0 + Duration::from_millis(2100), Some(h.until), h.peer, &h.bytes));
        assert_eq!(w.due(t0 + Duration::from_millis(3000), 1).0.len(), 1);
        assert_eq!(w.counts, WaitCounts { held: 2, resumed: 0, timed_out: 2, full: 0 });
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_full_queue_or_no_wait_refuses() {
        let t0 = Instant::now();
        let mut w = Waiting::new(MoveWait { wait: Duration::from_secs(2), max_requests: 2, max_bytes: 10 });
        assert!(w.hold(t0, None, peer(), b"12345"));
        assert!(!w.hold(t0, None, peer(), b"1234567"), "over the bytes");
        assert!(w.hold(t0, None, peer(), b"12345"));
        assert!(!w.hold(t0, None, peer(), b""), "over the count");
        assert_eq!(w.counts.full, 2);
        let mut none = Waiting::new(MoveWait { wait: Duration::ZERO, max_requests: 2, max_bytes: 10 });
        assert!(!none.hold(t0, None, peer(), b"1"));
        assert_eq!(none.counts.full, 0, "waiting is off, not full");
    }
}
