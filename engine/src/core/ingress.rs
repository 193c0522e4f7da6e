//! The admission queue: datagrams taken off a socket ahead of their
//! service, while a shard has a backlog or is overloaded.
//!
//! Without it the socket's buffer is the only queue, and it is first in,
//! first out: a request that is to be refused waits behind every request
//! that is to be served, and its 503 comes as late as their 200s. With it
//! the shard drains the socket at each turn, decides at once what it takes
//! in, answers the rest right away, and serves what it took from here (see
//! `Shard::on_arrival` and ARCHITECTURE.md, "Overload").
//!
//! Bounded in messages and in bytes; the reactor stops reading its socket
//! while the queue is full, and the socket's buffer takes the rest.

use std::collections::VecDeque;
use std::time::Instant;

use super::Peer;

/// A datagram taken in and waiting for service.
#[derive(Debug)]
pub struct Arrived {
    /// When it reached the socket (the start of its sojourn).
    pub received: Instant,
    pub peer: Peer,
    pub bytes: Vec<u8>,
    /// When it was taken in, and how many were queued ahead of it then:
    /// the queue's real pace, once it is served.
    pub queued_at: Instant,
    pub ahead: usize,
    /// The sojourn predicted when it was taken in.
    pub predicted: std::time::Duration,
}

#[derive(Debug)]
pub struct Ingress {
    queue: VecDeque<Arrived>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    /// Buffers of served messages, reused so that taking one in does not
    /// allocate once the queue has been this deep before.
    spare: Vec<Vec<u8>>,
}

/// Spare buffers kept; beyond, served ones are freed.
const SPARE: usize = 1024;

impl Ingress {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Ingress { queue: VecDeque::new(), bytes: 0, max_messages: max_messages.max(1), max_bytes: max_bytes.max(1), spare: Vec::new() }
    }

    /// Whether another message may be taken in. A caller that reads in
    /// batches checks before each batch, so the queue may go past its
    /// bounds by one batch less one.
    pub fn has_room(&self) -> bool {
        self.queue.len() < self.max_messages && self.bytes < self.max_bytes
    }

    pub fn push(&mut self, now: Instant, received: Instant, predicted: std::time::Duration, peer: Peer, bytes: &[u8]) {
        let mut buf = self.spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(bytes);
        self.bytes += buf.len();
        let ahead = self.queue.len();
        self.queue.push_back(Arrived { received, peer, bytes: buf, queued_at: now, ahead, predicted });
    }

    pub fn pop(&mut self) -> Option<Arrived> {
        let a = self.queue.pop_front()?;
        self.bytes -= a.bytes.len();
        Some(a)
    }

    /// Gives back a served message's buffer for reuse.
    pub fn recycle(&mut self, bytes: Vec<u8>) {
        // A buffer grown by one large message is not kept.
        if self.spare.len() < SPARE && bytes.capacity() <= 4096 {
            self.spare.push(bytes);
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Gives back the room a burst took: the queue's, and spare buffers
    /// beyond what a quiet shard reuses.
    pub fn give_back_room(&mut self) {
        use super::room::{GiveBack, KEEP_QUEUE};
        self.queue.give_back(KEEP_QUEUE);
        self.spare.truncate(KEEP_QUEUE / 4);
        self.spare.give_back(KEEP_QUEUE);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        Peer::udp("192.0.2.1:5060".parse().unwrap())
    }

    #[test]
    fn first_in_first_out_within_bounds_of_count_and_bytes() {
        let t0 = Instant::now();
        let mut q = Ingress::new(3, 1000);
        for i in 0..3u8 {
            assert!(q.has_room());
            q.push(t0, t0, std::time::Duration::ZERO, peer(), &[i; 10]);
        }
        assert!(!q.has_room(), "three messages is the bound");
        assert_eq!(q.pop().unwrap().bytes, vec![0; 10]);
        assert!(q.has_room());
        q.push(t0, t0, std::time::Duration::ZERO, peer(), &[9; 995]);
        assert!(!q.has_room(), "over 1000 bytes");
        let a = q.pop().unwrap();
        assert_eq!(a.bytes, vec![1; 10]);
        q.recycle(a.bytes);
        assert_eq!(q.pop().unwrap().bytes, vec![2; 10]);
        assert_eq!(q.pop().unwrap().bytes, vec![9; 995]);
        assert!(q.is_empty() && q.pop().is_none());
        // A recycled buffer carries nothing of its last message.
        q.push(t0, t0, std::time::Duration::ZERO, peer(), b"new");
        assert_eq!(q.pop().unwrap().bytes, b"new");
    }
}
