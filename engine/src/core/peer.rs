//! Who a message came from and where one goes: the only I/O facts the
//! sans-IO core needs.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

/// Transport of a message. Timers differ between them (RFC 3261 17: no
/// retransmission over reliable transports, Timer J/K are zero there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn is_reliable(self) -> bool {
        matches!(self, Transport::Tcp)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        }
    }
}

/// A TCP connection, named so that its owner is known without a lookup:
/// the top 16 bits are the shard that accepted it. Zero means "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ConnId(pub u64);

impl ConnId {
    pub const NONE: ConnId = ConnId(0);

    pub fn new(shard: u16, seq: u64) -> ConnId {
        ConnId(((shard as u64) << 48) | (seq & 0xFFFF_FFFF_FFFF) | (1 << 47))
    }
    pub fn shard(self) -> u16 {
        (self.0 >> 48) as u16
    }
    pub fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// The remote end of a message: its address, transport and, for TCP, the
/// connection it arrived on (or must leave on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub conn: ConnId,
}

impl Peer {
    pub fn udp(addr: SocketAddr) -> Peer {
        Peer { transport: Transport::Udp, addr, conn: ConnId::NONE }
    }
    pub fn tcp(addr: SocketAddr, conn: ConnId) -> Peer {
        Peer { transport: Transport::Tcp, addr, conn }
    }
}

/// One message to send: `bytes`, followed by `shared` when the message
/// ends in a document that many messages carry. A NOTIFY to a thousand
/// watchers writes its own start line and headers a thousand times but
/// points at one copy of the document: the reactor hands the two parts to
/// the kernel as two iovecs, and a client transaction keeps only its own
/// headers for retransmission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Vec<u8>,
    pub shared: Option<Arc<[u8]>>,
}

impl Transmit {
    /// A message written whole into `bytes`.
    pub fn new(to: Peer, bytes: Vec<u8>) -> Self {
        Transmit { to, bytes, shared: None }
    }

    /// The message's length on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.shared.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The message as one slice; copies only when it is in two parts.
    pub fn wire(&self) -> Cow<'_, [u8]> {
        match &self.shared {
            None => Cow::Borrowed(&self.bytes),
            Some(s) => Cow::Owned([&self.bytes[..], s].concat()),
        }
    }

    /// The message as one buffer (a stream write), reusing `bytes`.
    pub fn into_contiguous(self) -> Vec<u8> {
        let mut bytes = self.bytes;
        if let Some(s) = self.shared {
            bytes.extend_from_slice(&s);
        }
        bytes
    }
}
