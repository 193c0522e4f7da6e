//! Messages between the nodes of a cluster about documents, and the
//! queues that carry them between the shards and the cluster thread.
//!
//! A subscription stays on the node its SUBSCRIBE reached; the presentity's
//! owner may be another node. The watchers' node tells the owner it is
//! interested, and the owner sends it each new document once, whatever
//! the number of watchers there: the cross-node twin of the fan-out
//! between shards (`shard/remote.rs` has the rules).
//!
//! The queues are bounded and lock-free: a shard never waits on the
//! cluster thread. What does not fit is dropped and counted; interest is
//! re-sent periodically, so a lost message costs a refresh period.

use super::NodeId;
use crossbeam_queue::ArrayQueue;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one node tells another about a presentity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeMsg {
    /// The sender holds watchers of `aor`: send it the document now and
    /// each new one. Repeated as a refresh while the watchers last.
    Interest { aor: Box<[u8]> },
    /// The sender holds no watcher of `aor` any more.
    Withdraw { aor: Box<[u8]> },
    /// `aor`'s document at the owner's `version`; `None` when nothing is
    /// published or registered (the watchers are shown the closed one).
    Document { aor: Box<[u8]>, version: u64, doc: Option<Arc<[u8]>> },
}

impl NodeMsg {
    pub fn aor(&self) -> &[u8] {
        match self {
            NodeMsg::Interest { aor } | NodeMsg::Withdraw { aor } | NodeMsg::Document { aor, .. } => aor,
        }
    }
}

const INTEREST: u8 = 1;
const WITHDRAW: u8 = 2;
const DOCUMENT: u8 = 3;
const NO_DOCUMENT: u8 = 4;
/// Kind, sender, version, AOR length.
const HEAD: usize = 1 + 4 + 8 + 2;

/// Writes `msg` from `from` as one NATS payload: kind, sender, version
/// (little-endian), the AOR with its length, and the document as the rest.
pub fn encode(from: NodeId, msg: &NodeMsg) -> Vec<u8> {
    let (kind, version, doc): (u8, u64, &[u8]) = match msg {
        NodeMsg::Interest { .. } => (INTEREST, 0, b""),
        NodeMsg::Withdraw { .. } => (WITHDRAW, 0, b""),
        NodeMsg::Document { version, doc: Some(d), .. } => (DOCUMENT, *version, d),
        NodeMsg::Document { version, doc: None, .. } => (NO_DOCUMENT, *version, b""),
    };
    let aor = msg.aor();
    let mut b = Vec::with_capacity(HEAD + aor.len() + doc.len());
    b.push(kind);
    b.extend_from_slice(&from.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&(aor.len() as u16).to_le_bytes());
    b.extend_from_slice(aor);
    b.extend_from_slice(doc);
    b
}

/// Reads a payload [`encode`] wrote; `None` for anything else (dropped).
pub fn decode(b: &[u8]) -> Option<(NodeId, NodeMsg)> {
    if b.len() < HEAD {
        return None;
    }
    let from = u32::from_le_bytes(b[1..5].try_into().ok()?);
    let version = u64::from_le_bytes(b[5..13].try_into().ok()?);
    let len = u16::from_le_bytes(b[13..15].try_into().ok()?) as usize;
    let aor: Box<[u8]> = b.get(HEAD..HEAD + len)?.into();
    let rest = &b[HEAD + len..];
    let msg = match b[0] {
        INTEREST if rest.is_empty() => NodeMsg::Interest { aor },
        WITHDRAW if rest.is_empty() => NodeMsg::Withdraw { aor },
        DOCUMENT => NodeMsg::Document { aor, version, doc: Some(rest.into()) },
        NO_DOCUMENT if rest.is_empty() => NodeMsg::Document { aor, version, doc: None },
        _ => return None,
    };
    Some((from, msg))
}

/// Room in each queue. At a few hundred bytes a document, a full outbound
/// queue is a few megabytes; past it, documents wait for the next refresh.
pub const QUEUE_ROOM: usize = 8192;

/// The queues between one node's shards and its cluster thread.
#[derive(Debug)]
pub struct Mail {
    /// This node: the sender of everything sent here.
    me: NodeId,
    /// Encoded messages for other nodes, from any shard.
    outbound: ArrayQueue<(NodeId, Vec<u8>)>,
    /// Messages from other nodes, per shard (the presentity's).
    inbound: Vec<ArrayQueue<(NodeId, NodeMsg)>>,
    dropped: AtomicU64,
}

impl Mail {
    pub fn new(me: NodeId, shards: u16) -> Mail {
        Mail {
            me,
            outbound: ArrayQueue::new(QUEUE_ROOM),
            inbound: (0..shards.max(1)).map(|_| ArrayQueue::new(QUEUE_ROOM)).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    pub fn shards(&self) -> u16 {
        self.inbound.len() as u16
    }

    /// From a shard: `msg` for node `to`. False if the queue was full (dropped).
    pub fn send(&self, to: NodeId, msg: &NodeMsg) -> bool {
        let ok = self.outbound.push((to, encode(self.me, msg))).is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// From the cluster thread: the next message to publish.
    pub fn next_outbound(&self) -> Option<(NodeId, Vec<u8>)> {
        self.outbound.pop()
    }

    /// From the cluster thread: a message another node sent, for the
    /// shard that owns its presentity. False if that queue was full.
    pub fn deliver(&self, from: NodeId, msg: NodeMsg) -> bool {
        let shard = crate::core::ids::owner_of(msg.aor(), self.shards());
        let ok = self.inbound[shard as usize].push((from, msg)).is_ok();
        if !ok {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// From a shard: the next message for it.
    pub fn receive(&self, shard: u16) -> Option<(NodeId, NodeMsg)> {
        self.inbound.get(shard as usize)?.pop()
    }

    /// Messages dropped at a full queue, either way.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_and_garbage_does_not() {
        let aor: Box<[u8]> = (*b"sip:alice@example.com").into();
        let msgs = [
            NodeMsg::Interest { aor: aor.clone() },
            NodeMsg::Withdraw { aor: aor.clone() },
            NodeMsg::Document { aor: aor.clone(), version: u64::MAX - 1, doc: Some((*b"<presence/>").into()) },
            NodeMsg::Document { aor: aor.clone(), version: 7, doc: None },
        ];
        for m in msgs {
            let b = encode(1023, &m);
            assert_eq!(decode(&b), Some((1023, m)));
            assert_eq!(
                decode(&b[..b.len() - 1]).map(|(_, m)| matches!(m, NodeMsg::Document { doc: Some(_), .. })),
                if b[0] == DOCUMENT { Some(true) } else { None }
            );
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[9; 40]), None, "unknown kind");
        let mut long = encode(1, &NodeMsg::Interest { aor });
        long[13] = 200;
        assert_eq!(decode(&long), None, "AOR longer than the payload");
    }

    #[test]
    fn queues_are_bounded_and_count_what_they_drop() {
        let mail = Mail::new(1, 2);
        let m = NodeMsg::Withdraw { aor: (*b"sip:a@x").into() };
        for _ in 0..QUEUE_ROOM {
            assert!(mail.send(2, &m));
        }
        assert!(!mail.send(2, &m));
        assert_eq!(mail.dropped(), 1);
        assert_eq!(mail.next_outbound().map(|(to, b)| (to, decode(&b))), Some((2, Some((1, m.clone())))));
        assert!(mail.deliver(2, m.clone()));
        let shard = crate::core::ids::owner_of(m.aor(), 2);
        assert_eq!(mail.receive(shard), Some((2, m)));
        assert_eq!(mail.receive(1 - shard), None);
    }
}
