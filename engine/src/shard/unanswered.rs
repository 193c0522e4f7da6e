//! Hops the owner has not answered. A node that forwards a request to the
//! partition's owner (`hop.rs`) keeps the request for a moment; if no
//! final response comes back within `[cluster] hop_timeout_ms`, it answers
//! the client 503 + Retry-After itself. The owner may have died with its
//! lease still running: without this, the request would vanish, and an
//! upstream proxy (the front) would time out on *this* node and take it
//! for dead, though only the node behind it is.
//!
//! Bounded: at most [`MAX_TRACKED`] requests and [`MAX_TRACKED_BYTES`];
//! beyond, a request is forwarded untracked, as the hop always was. A
//! retransmission takes the same hop branch and keeps the first deadline.

use crate::core::peer::Peer;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub const MAX_TRACKED: usize = 10_000;
pub const MAX_TRACKED_BYTES: usize = 16 << 20;

struct Tracked {
    due: Instant,
    peer: Peer,
    request: Box<[u8]>,
    /// The view's count of owner changes when it was forwarded.
    changes: u64,
}

/// A hop whose owner did not answer in time.
pub(super) struct Due {
    pub peer: Peer,
    pub request: Box<[u8]>,
    /// The view's count of owner changes when it was forwarded: if the
    /// owners have changed since, the request is routed again rather than
    /// refused (the node it went to may have handed the partition on).
    pub changes: u64,
}

pub(super) struct Unanswered {
    timeout: Duration,
    /// By the hop branch's hash.
    tracked: HashMap<u64, Tracked>,
    /// Deadlines in the order they were set (all share one timeout).
    order: VecDeque<(Instant, u64)>,
    bytes: usize,
}

impl Unanswered {
    pub fn new(timeout: Duration) -> Unanswered {
        Unanswered { timeout, tracked: HashMap::new(), order: VecDeque::new(), bytes: 0 }
    }

    /// A request forwarded under hop branch `key`, received from `peer`.
    pub fn forwarded(&mut self, now: Instant, key: u64, peer: Peer, request: &[u8], changes: u64) {
        if self.timeout.is_zero() || self.tracked.contains_key(&key) || self.tracked.len() >= MAX_TRACKED || self.bytes + request.len() > MAX_TRACKED_BYTES {
            return;
        }
        let due = now + self.timeout;
        self.bytes += request.len();
        self.tracked.insert(key, Tracked { due, peer, request: request.into(), changes });
        self.order.push_back((due, key));
    }

    /// A final response to the hop `key` came back.
    pub fn answered(&mut self, key: u64) {
        if let Some(t) = self.tracked.remove(&key) {
            self.bytes -= t.request.len();
        }
    }

    /// The requests whose owner has not answered by now, with the flow
    /// each came in on.
    pub fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(at, key)) = self.order.front() {
            if at > now {
                break;
            }
            self.order.pop_front();
            // Answered meanwhile, or tracked again later under a new deadline.
            if self.tracked.get(&key).is_some_and(|t| t.due == at) {
                let t = self.tracked.remove(&key).expect("looked up");
                self.bytes -= t.request.len();
                due.push(Due { peer: t.peer, request: t.request, changes: t.changes });
            }
        }
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tracked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_hop_is_due_once_and_an_answered_one_never() {
        let t0 = Instant::now();
        let peer = Peer::udp("192.0.2.1:5060".parse().unwrap());
        let mut u = Unanswered::new(Duration::from_millis(500));
        u.forwarded(t0, 1, peer, b"first", 0);
        u.forwarded(t0 + Duration::from_millis(100), 2, peer, b"second", 0);
        // A retransmission keeps the first deadline.
        u.forwarded(t0 + Duration::from_millis(200), 1, peer, b"first", 0);
        assert!(u.due(t0 + Duration::from_millis(499)).is_empty());
        u.answered(2);
        let due = u.due(t0 + Duration::from_millis(700));
        assert_eq!(due.len(), 1);
        assert_eq!(&due[0].request[..], b"first");
        assert_eq!(u.len(), 0);
        assert!(u.due(t0 + Duration::from_secs(5)).is_empty(), "once");
        let mut off = Unanswered::new(Duration::ZERO);
        off.forwarded(t0, 1, peer, b"x", 0);
        assert_eq!(off.len(), 0, "a zero timeout tracks nothing");
    }
}
