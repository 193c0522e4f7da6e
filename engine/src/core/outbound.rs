//! Messages for other shards when their queues are full.
//!
//! The queues between shards are bounded. A message that carries state
//! (an answer to an ask, an unwatch, a document, a TCP frame for another
//! shard's connection) has no retransmission behind it, so it is never
//! dropped: it waits here, in order, behind whatever is already waiting
//! for the same shard. Only a forwarded client request may be shed, and
//! each one shed is counted: its client retransmits, as after a full
//! socket buffer.
//!
//! While anything waits, the shard's driver stops reading its sockets
//! ([`Outbound::is_holding`]) and keeps reading its shard queues. New work
//! then only comes from messages already in the system, each of which
//! makes a bounded number of others, so the backlog is bounded by the
//! state, and the shards cannot deadlock: every shard always drains what
//! is sent to it, which is what makes room for the messages held for it.
//!
//! Sans-IO: the caller passes how to try a queue (`try_send`); the
//! reactor drives it with glommio's mesh, the simulation with its own
//! bounded queues.

use std::collections::VecDeque;

/// What became of an offered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// In the destination's queue.
    Sent,
    /// Waiting here for room, in order.
    Held,
    /// Dropped (a forwarded client request) and counted.
    Shed,
}

pub struct Outbound<M> {
    held: Vec<VecDeque<M>>,
    /// A message taken by [`Self::next_held`] and not yet confirmed sent:
    /// later ones must not overtake it.
    in_transit: Vec<bool>,
    shed: u64,
    peak: usize,
}

impl<M> Outbound<M> {
    pub fn new(shards: u16) -> Self {
        Outbound { held: (0..shards).map(|_| VecDeque::new()).collect(), in_transit: vec![false; shards as usize], shed: 0, peak: 0 }
    }

    /// Offers `msg` to shard `to`. `try_send` puts it in the queue or gives
    /// it back when the queue is full. A `sheddable` message is dropped
    /// rather than held.
    pub fn offer(&mut self, to: u16, msg: M, sheddable: bool, try_send: impl FnOnce(M) -> Result<(), M>) -> Offer {
        let i = to as usize;
        let msg = if self.held[i].is_empty() && !self.in_transit[i] {
            match try_send(msg) {
                Ok(()) => return Offer::Sent,
                Err(m) => m,
            }
        } else {
            msg
        };
        if sheddable {
            self.shed += 1;
            return Offer::Shed;
        }
        self.held[i].push_back(msg);
        self.peak = self.peak.max(self.held());
        Offer::Held
    }

    /// Moves held messages for `to` into its queue while it takes them.
    pub fn pump(&mut self, to: u16, mut try_send: impl FnMut(M) -> Result<(), M>) {
        let i = to as usize;
        if self.in_transit[i] {
            return;
        }
        while let Some(m) = self.held[i].pop_front() {
            if let Err(m) = try_send(m) {
                self.held[i].push_front(m);
                return;
            }
        }
    }

    /// For a driver that awaits room: the next held message for `to`. Until
    /// [`Self::sent_held`] confirms it, nothing else for `to` is sent.
    pub fn next_held(&mut self, to: u16) -> Option<M> {
        let i = to as usize;
        let m = self.held[i].pop_front();
        self.in_transit[i] = m.is_some();
        m
    }

    /// The message from [`Self::next_held`] is in `to`'s queue.
    pub fn sent_held(&mut self, to: u16) {
        self.in_transit[to as usize] = false;
    }

    /// Something waits: the driver must not read new work from sockets.
    pub fn is_holding(&self) -> bool {
        self.held.iter().any(|q| !q.is_empty()) || self.in_transit.iter().any(|t| *t)
    }

    /// Messages waiting now.
    pub fn held(&self) -> usize {
        self.held.iter().map(VecDeque::len).sum()
    }
    /// The most messages that ever waited at once.
    pub fn peak(&self) -> usize {
        self.peak
    }
    /// Forwarded requests dropped so far.
    pub fn shed(&self) -> u64 {
        self.shed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue of capacity `cap`.
    fn queue(q: &mut Vec<u32>, cap: usize) -> impl FnMut(u32) -> Result<(), u32> + '_ {
        move |m| {
            if q.len() < cap {
                q.push(m);
                Ok(())
            } else {
                Err(m)
            }
        }
    }

    #[test]
    fn state_waits_in_order_and_requests_are_shed() {
        let mut ob = Outbound::new(2);
        let mut q = Vec::new();
        assert_eq!(ob.offer(1, 1, false, queue(&mut q, 1)), Offer::Sent);
        assert_eq!(ob.offer(1, 2, false, queue(&mut q, 1)), Offer::Held);
        assert!(ob.is_holding());
        assert_eq!(ob.offer(1, 99, true, queue(&mut q, 1)), Offer::Shed);
        q.clear();
        // Room now, but 3 must not overtake 2.
        assert_eq!(ob.offer(1, 3, false, queue(&mut q, 8)), Offer::Held);
        assert!(q.is_empty());
        ob.pump(1, queue(&mut q, 8));
        assert_eq!(q, vec![2, 3]);
        assert!(!ob.is_holding());
        assert_eq!((ob.shed(), ob.peak()), (1, 2));
    }

    #[test]
    fn a_message_in_transit_blocks_overtaking() {
        let mut ob = Outbound::new(2);
        let mut q = Vec::new();
        ob.offer(0, 1, false, queue(&mut q, 0));
        assert_eq!(ob.next_held(0), Some(1));
        assert!(ob.is_holding(), "in transit still holds the sockets");
        assert_eq!(ob.offer(0, 2, false, queue(&mut q, 8)), Offer::Held);
        ob.pump(0, queue(&mut q, 8));
        assert!(q.is_empty(), "nothing passes the message in transit");
        ob.sent_held(0);
        ob.pump(0, queue(&mut q, 8));
        assert_eq!(q, vec![2]);
        assert!(!ob.is_holding());
    }
}
