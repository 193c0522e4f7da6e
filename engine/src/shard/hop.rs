//! The hop between the nodes of a cluster: a REGISTER or PUBLISH for a
//! presentity whose partition another node serves goes to that node, as a
//! stateless proxy sends it (RFC 3261 16.11), and its responses come back
//! through here to the client.
//!
//! Stateless on purpose: the node keeps no transaction for the hop, so it
//! survives nothing it must remember. It keeps only a bounded watch on
//! the hop (`unanswered.rs`): an owner that has not answered within
//! `[cluster] hop_timeout_ms` may have died with its lease running, and the
//! client gets 503 + Retry-After from this node rather than nothing. What the response
//! needs to find its way back travels in the hop's own Via: the `rport` the
//! owner answers to, and `pn`, the flow the request came in on (transport,
//! connection, address), so the response leaves on that very flow, over
//! UDP or the client's TCP connection. The branch is a hash of the
//! client's branch and the request's identity, so a retransmission takes
//! the same branch and the owner's transaction absorbs it.
//!
//! An in-dialog request goes by its to-tag instead: a subscription's tag
//! names the partition whose log keeps it (`core::ids::push_dialog_tag`),
//! and the node serving that partition holds the dialog, so a refresh
//! that reaches any node (the front's failure route, after its node died)
//! finds the dialog where a take-over put it.
//!
//! A request for a partition no node serves now (a move or a take-over in
//! progress) waits for the view to name an owner (`waiting.rs`); past the
//! wait, or with no room to wait, it is answered 503 + Retry-After. A
//! request another node forwarded, for a partition this node does not
//! serve, goes on to the owner this node's view names, even back to the
//! node it came from (whose view was behind during a move), but never
//! past [`MAX_HOPS`] hops: then it waits, so two views that disagree for
//! a moment cannot bounce it.
//!
//! P-Asserted-Identity is dropped from a request whose source this node
//! does not trust (RFC 3325: the edge of the trust domain), since the
//! owner trusts the node it comes from.

use super::{Event, Outbox, Shard, lossy};
use crate::cluster::partition::Partition;
use crate::cluster::view::Route;
use crate::core::Transmit;
use crate::core::ids::{self, aor_hash};
use crate::core::limits::Limit;
use crate::core::peer::{ConnId, Peer, Transport};
use crate::sip::{HeaderName, Message};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};

/// The branch prefix of the hop's Via.
pub(super) const HOP_BRANCH: &[u8] = b"z9hG4bK.pn";

/// The most hops between nodes a request takes.
const MAX_HOPS: usize = 2;

/// What a hop did, for the shard's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HopCounts {
    /// Requests sent on to the node that serves their partition.
    pub forwarded: u64,
    /// Responses sent back to the client's flow.
    pub relayed: u64,
    /// Responses whose way back could not be read (dropped).
    pub lost: u64,
    /// Requests whose owner did not answer within the hop timeout,
    /// answered 503 here (`unanswered.rs`).
    pub unanswered: u64,
}

impl Shard {
    /// Takes `msg` if it belongs to the hop: a response to a forwarded
    /// request, or a request for a partition this node does not serve.
    /// False leaves it to this node.
    pub(super) fn cluster_hop(&mut self, now: std::time::Instant, peer: Peer, msg: &Message<'_>, out: &mut Outbox) -> bool {
        let Some(view) = self.cfg.cluster.clone() else { return false };
        let is_hop = |v: &crate::sip::Via<'_>| v.branch().is_some_and(|b| b.starts_with(HOP_BRANCH));
        let hopped = is_hop(msg.via());
        if !msg.is_request() {
            if hopped {
                self.relay_response(msg, out);
            }
            return hopped;
        }
        let route = match msg.to().tag() {
            // In a dialog: where the partition its tag names is served (a
            // subscription lives in that partition's log, and the node
            // serving it holds the dialog); a tag that names none is this
            // node's own.
            Some(tag) => match ids::tag_partition(tag).filter(|&p| p < view.partitions()) {
                Some(p) => view.route_partition(Partition(p), now),
                None => return false,
            },
            None => {
                let Some((aor, true)) = Self::addressed_aor(msg) else { return false };
                view.route(&aor, now)
            }
        };
        match route {
            Route::Here => false,
            Route::Node(node, addr) if !hopped || msg.vias().filter(is_hop).count() < MAX_HOPS => {
                self.forward_to_node(now, peer, msg, node, addr, out);
                true
            }
            Route::Node(..) | Route::Nobody => {
                let until = self.resuming.take();
                if !self.waiting.hold(now, until, peer, msg.as_bytes()) {
                    self.refuse_statelessly(msg, peer, self.cfg.shard, Limit::Partition, out);
                }
                true
            }
        }
    }

    /// Each tick: refuses the waiting requests whose wait ran out, and
    /// routes the others again once the view's owners have changed.
    pub(super) fn waiting_step(&mut self, now: std::time::Instant, out: &mut Outbox) {
        // Hops the owner did not answer in time: it may have died with its
        // lease still running. Answered here, so that nobody upstream takes
        // this node for the dead one; unless the owners changed since (the
        // node it went to may have handed the partition on, or left) and
        // the request is outside a dialog: then routed again, as if it had
        // just come in. (In a dialog, the new holder may have taken the
        // request's CSeq from the log already, and would answer 500.)
        let changes = self.cfg.cluster.as_ref().map_or(0, |v| v.owner_changes());
        for d in self.unanswered.due(now) {
            let Ok(msg) = Message::parse(&d.request, &self.cfg.limits) else { continue };
            if d.changes != changes && msg.to().tag().is_none() {
                self.route_message(now, d.peer, &d.request, out);
                continue;
            }
            self.stats.hop.unanswered += 1;
            self.refuse_statelessly(&msg, d.peer, self.cfg.shard, Limit::Partition, out);
        }
        let Some(view) = self.cfg.cluster.as_ref() else { return };
        let (expired, retry) = self.waiting.due(now, view.owner_changes());
        for h in expired {
            if let Ok(msg) = Message::parse(&h.bytes, &self.cfg.limits) {
                self.refuse_statelessly(&msg, h.peer, self.cfg.shard, Limit::Partition, out);
            }
        }
        for h in retry {
            let before = self.waiting.len();
            self.resuming = Some(h.until);
            self.route_message(now, h.peer, &h.bytes, out);
            self.resuming = None;
            if self.waiting.len() == before {
                self.waiting.counts.resumed += 1;
            }
        }
    }

    fn forward_to_node(&mut self, now: std::time::Instant, peer: Peer, msg: &Message<'_>, node: u32, to: SocketAddr, out: &mut Outbox) {
        if msg.max_forwards() == Some(0) {
            self.answer_statelessly(msg, peer, self.cfg.shard, 483, "Too Many Hops", &[], out);
            return;
        }
        let bytes = msg.as_bytes();
        let line_end = memchr::memmem::find(bytes, b"\r\n").expect("a parsed message has a start line") + 2;
        let mut fwd = Vec::with_capacity(bytes.len() + 160);
        fwd.extend_from_slice(&bytes[..line_end]);
        let mut id = Vec::with_capacity(96);
        id.extend_from_slice(msg.via().branch().unwrap_or_default());
        id.extend_from_slice(msg.call_id());
        let _ = write!(id, "{}", msg.cseq().seq);
        let _ = write!(fwd, "Via: SIP/2.0/UDP {};rport;branch=", self.cfg.local_addr);
        fwd.extend_from_slice(HOP_BRANCH);
        let key = aor_hash(&id);
        let _ = write!(fwd, "{key:x};pn=");
        push_flow(&mut fwd, peer);
        fwd.extend_from_slice(b"\r\n");
        let trusted = self.cfg.trusted.contains(peer.addr);
        let mut max_forwards_seen = false;
        for h in msg.headers() {
            match h.name {
                HeaderName::PAssertedIdentity if !trusted => continue,
                HeaderName::MaxForwards => {
                    max_forwards_seen = true;
                    let left = msg.max_forwards().unwrap_or(70).saturating_sub(1);
                    let _ = write!(fwd, "Max-Forwards: {left}\r\n");
                    continue;
                }
                _ => {}
            }
            fwd.extend_from_slice(h.raw_name);
            fwd.extend_from_slice(b": ");
            fwd.extend_from_slice(h.value);
            fwd.extend_from_slice(b"\r\n");
        }
        if !max_forwards_seen {
            fwd.extend_from_slice(b"Max-Forwards: 70\r\n");
        }
        fwd.extend_from_slice(b"\r\n");
        fwd.extend_from_slice(msg.body());
        self.stats.hop.forwarded += 1;
        out.event(|| Event::Hopped { method: lossy(msg.method_raw().unwrap_or_default()), node, call_id: lossy(msg.call_id()) });
        out.transmits.push(Transmit::new(Peer::udp(to), fwd));
        let changes = self.cfg.cluster.as_ref().map_or(0, |v| v.owner_changes());
        self.unanswered.forwarded(now, key, peer, msg.as_bytes(), changes);
    }

    /// A response to a request this node forwarded: without the hop's Via,
    /// to the flow the request came in on.
    fn relay_response(&mut self, msg: &Message<'_>, out: &mut Outbox) {
        if msg.status().is_some_and(|s| s >= 200)
            && let Some(key) = msg
                .via()
                .branch()
                .and_then(|b| b.strip_prefix(HOP_BRANCH))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u64::from_str_radix(h, 16).ok())
        {
            self.unanswered.answered(key);
        }
        let bytes = msg.as_bytes();
        let way_back = msg.via().params().value(b"pn").and_then(parse_flow);
        let top = msg.headers().find(|h| h.name == HeaderName::Via);
        let (Some(to), Some(top)) = (way_back, top) else {
            self.stats.hop.lost += 1;
            return;
        };
        let start = top.value.as_ptr() as usize - bytes.as_ptr() as usize;
        let end = start + top.value.len();
        let mut back = Vec::with_capacity(bytes.len());
        match memchr::memchr(b',', top.value) {
            // The hop's Via shares its header line with the ones below it.
            Some(comma) => {
                let rest = &bytes[start + comma + 1..];
                let skip = rest.iter().take_while(|c| c.is_ascii_whitespace()).count();
                back.extend_from_slice(&bytes[..start]);
                back.extend_from_slice(&rest[skip..]);
            }
            // A line of its own: the whole line goes.
            None => {
                let line_start = memchr::memmem::rfind(&bytes[..start], b"\r\n").map_or(0, |i| i + 2);
                let line_end = memchr::memmem::find(&bytes[end..], b"\r\n").map_or(bytes.len(), |i| end + i + 2);
                back.extend_from_slice(&bytes[..line_start]);
                back.extend_from_slice(&bytes[line_end..]);
            }
        }
        self.stats.hop.relayed += 1;
        out.transmits.push(Transmit::new(to, back));
    }
}

/// Writes a flow as a Via parameter value: `u` or `t`, the connection, the
/// address and the port, in hex (a token, whatever the address family).
fn push_flow(out: &mut Vec<u8>, peer: Peer) {
    out.push(if peer.transport == Transport::Tcp { b't' } else { b'u' });
    let _ = write!(out, "{:x}.", peer.conn.0);
    let (v4, v6);
    let octets: &[u8] = match peer.addr.ip() {
        IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    for b in octets {
        let _ = write!(out, "{b:02x}");
    }
    let _ = write!(out, ".{:x}", peer.addr.port());
}

/// Reads a flow written by [`push_flow`].
fn parse_flow(v: &[u8]) -> Option<Peer> {
    let text = std::str::from_utf8(v).ok()?;
    let (kind, rest) = text.split_at_checked(1)?;
    let mut parts = rest.split('.');
    let conn = u64::from_str_radix(parts.next()?, 16).ok()?;
    let ip = parts.next()?;
    let port = u16::from_str_radix(parts.next()?, 16).ok()?;
    let octets: Vec<u8> = (0..ip.len() / 2).map(|i| u8::from_str_radix(ip.get(2 * i..2 * i + 2)?, 16).ok()).collect::<Option<_>>()?;
    let ip = match octets.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(octets).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(octets).ok()?),
        _ => return None,
    };
    let addr = SocketAddr::new(ip, port);
    match kind {
        "u" => Some(Peer::udp(addr)),
        "t" => Some(Peer::tcp(addr, ConnId(conn))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_read_back() {
        for peer in [Peer::udp("192.0.2.7:5060".parse().unwrap()), Peer::tcp("[2001:db8::1]:5070".parse().unwrap(), ConnId(0x1234))] {
            let mut v = Vec::new();
            push_flow(&mut v, peer);
            assert!(v.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'.'), "not a token: {}", String::from_utf8_lossy(&v));
            assert_eq!(parse_flow(&v), Some(peer));
        }
        assert_eq!(parse_flow(b"x1.c0000201.13c4"), None);
        assert_eq!(parse_flow(b"u1.c00002.13c4"), None);
    }
}
