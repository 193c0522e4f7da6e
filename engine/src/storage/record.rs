//! What a journal record says: the whole durable state of one key as it
//! stands after a change (an upsert), or that the key is gone.
//!
//! Whole state rather than deltas, for one key at a time: replaying a
//! record twice, or out of a crash in the middle of a step, gives the same
//! table; the last record of a key is all a restart needs of it, so a
//! snapshot is the same records for the live keys; and every record names
//! its presentity, so re-partitioning to another shard count routes each
//! one by the same hash the shards use. A key's state is small (its
//! bindings, its publications' elements, one dialog), and a limit bounds
//! each.
//!
//! Times are Unix milliseconds: an `Instant` does not survive a restart.

use super::codec::{Dec, Enc, Malformed};
use crate::core::ids;
use crate::core::peer::{ConnId, Peer, Transport};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One contact bound to an AOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingState<'a> {
    pub uri: &'a [u8],
    pub params: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq: u32,
    pub expires_unix_ms: u64,
    /// The flow the REGISTER came on. A TCP connection does not survive a
    /// restart: replay keeps its address and transport only.
    pub flow: Peer,
    pub pua: bool,
}

/// A top-level PIDF element of a publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementState<'a> {
    pub kind: &'a [u8],
    pub id: Option<&'a [u8]>,
    pub xml: &'a [u8],
}

/// One PUBLISHed publication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicationState<'a> {
    pub etag: &'a [u8],
    pub expires_unix_ms: u64,
    pub elements: Vec<ElementState<'a>>,
}

/// A watcher's subscription (a dialog the server holds as notifier).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionState<'a> {
    pub aor: &'a [u8],
    pub watcher: &'a [u8],
    pub call_id: &'a [u8],
    /// The server's tag: names the dialog, and the shard it lives on.
    pub local_tag: &'a [u8],
    pub local_uri: &'a [u8],
    pub remote_tag: &'a [u8],
    pub remote_uri: &'a [u8],
    pub remote_target: &'a [u8],
    pub event_id: &'a [u8],
    pub route_set: Vec<&'a [u8]>,
    /// The event package and what the watcher is shown, as the presence
    /// layer numbers them.
    pub package: u8,
    pub shown: u8,
    /// Where NOTIFYs go.
    pub to: Peer,
    pub remote_cseq: u32,
    /// A CSeq above every NOTIFY sent in the dialog: NOTIFYs after a
    /// restart start from here.
    pub local_cseq: u32,
    pub expires_unix_ms: u64,
}

/// A record's payload, borrowed from the journal's bytes when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// An AOR's registration; no bindings: unregistered.
    Registration { aor: &'a [u8], registered_by: Option<SocketAddr>, bindings: Vec<BindingState<'a>> },
    /// A presentity's PUBLISHed publications, oldest modification first;
    /// none: it has none left.
    Publications { aor: &'a [u8], publications: Vec<PublicationState<'a>> },
    /// A subscription as it stands after its creation or refresh, or
    /// after its NOTIFYs used up the CSeqs its last record reserved.
    Subscription(SubscriptionState<'a>),
    /// The subscription of dialog (`call_id`, `local_tag`) ended.
    SubscriptionEnded { call_id: &'a [u8], local_tag: &'a [u8] },
}

/// Record kinds, the payload's first byte. Never reuse a number.
mod tag {
    pub const REGISTRATION: u8 = 1;
    pub const PUBLICATIONS: u8 = 2;
    pub const SUBSCRIPTION: u8 = 3;
    pub const SUBSCRIPTION_ENDED: u8 = 4;
}

/// Most items of one list in a record, a bound for a corrupt count (the
/// configured limits are far lower).
const MAX_ITEMS: u64 = 1 << 16;

impl<'a> Record<'a> {
    /// The shard of `shards` that owns the record's key: a presentity's
    /// by the hash of its AOR, a subscription's by the shard its tag
    /// names (folded into the layout, as in-dialog requests are routed).
    pub fn owner(&self, shards: u16) -> u16 {
        match self {
            Record::Registration { aor, .. } | Record::Publications { aor, .. } => ids::owner_of(aor, shards),
            Record::Subscription(SubscriptionState { local_tag, .. }) | Record::SubscriptionEnded { local_tag, .. } => {
                ids::tag_shard(local_tag).unwrap_or(0) % shards.max(1)
            }
        }
    }

    /// The key, for messages about the record.
    pub fn key(&self) -> &'a [u8] {
        match self {
            Record::Registration { aor, .. } | Record::Publications { aor, .. } => aor,
            Record::Subscription(SubscriptionState { local_tag, .. }) | Record::SubscriptionEnded { local_tag, .. } => local_tag,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut e = Enc(out);
        match self {
            Record::Registration { aor, registered_by, bindings } => {
                e.u8(tag::REGISTRATION).bytes(aor);
                match registered_by {
                    None => {
                        e.u8(0);
                    }
                    Some(a) => put_addr(e.u8(1), a),
                }
                e.u64(bindings.len() as u64);
                for b in bindings {
                    e.bytes(b.uri).bytes(b.params).bytes(b.call_id).u64(b.cseq.into()).u64(b.expires_unix_ms);
                    put_flow(&mut e, &b.flow);
                    e.u8(b.pua.into());
                }
            }
            Record::Publications { aor, publications } => {
                e.u8(tag::PUBLICATIONS).bytes(aor).u64(publications.len() as u64);
                for p in publications {
                    e.bytes(p.etag).u64(p.expires_unix_ms).u64(p.elements.len() as u64);
                    for el in &p.elements {
                        e.bytes(el.kind).opt_bytes(el.id).bytes(el.xml);
                    }
                }
            }
            Record::Subscription(s) => {
                e.u8(tag::SUBSCRIPTION);
                for t in [s.aor, s.watcher, s.call_id, s.local_tag, s.local_uri, s.remote_tag, s.remote_uri, s.remote_target, s.event_id] {
                    e.bytes(t);
                }
                e.u64(s.route_set.len() as u64);
                for r in &s.route_set {
                    e.bytes(r);
                }
                e.u8(s.package).u8(s.shown);
                put_flow(&mut e, &s.to);
                e.u64(s.remote_cseq.into()).u64(s.local_cseq.into()).u64(s.expires_unix_ms);
            }
            Record::SubscriptionEnded { call_id, local_tag } => {
                e.u8(tag::SUBSCRIPTION_ENDED).bytes(call_id).bytes(local_tag);
            }
        }
    }

    pub fn decode(payload: &'a [u8]) -> Result<Record<'a>, Malformed> {
        let mut d = Dec::new(payload);
        let record = match d.u8()? {
            tag::REGISTRATION => {
                let aor = d.bytes()?;
                let registered_by = match d.u8()? {
                    0 => None,
                    1 => Some(get_addr(&mut d)?),
                    _ => return Err(d.err("an option tag other than 0 or 1")),
                };
                let n = count(&mut d)?;
                let mut bindings = Vec::with_capacity(n);
                for _ in 0..n {
                    bindings.push(BindingState {
                        uri: d.bytes()?,
                        params: d.bytes()?,
                        call_id: d.bytes()?,
                        cseq: d.u32()?,
                        expires_unix_ms: d.u64()?,
                        flow: get_flow(&mut d)?,
                        pua: d.bool()?,
                    });
                }
                Record::Registration { aor, registered_by, bindings }
            }
            tag::PUBLICATIONS => {
                let aor = d.bytes()?;
                let n = count(&mut d)?;
                let mut publications = Vec::with_capacity(n);
                for _ in 0..n {
                    let etag = d.bytes()?;
                    let expires_unix_ms = d.u64()?;
                    let m = count(&mut d)?;
                    let mut elements = Vec::with_capacity(m);
                    for _ in 0..m {
                        elements.push(ElementState { kind: d.bytes()?, id: d.opt_bytes()?, xml: d.bytes()? });
                    }
                    publications.push(PublicationState { etag, expires_unix_ms, elements });
                }
                Record::Publications { aor, publications }
            }
            tag::SUBSCRIPTION => {
                let (aor, watcher, call_id) = (d.bytes()?, d.bytes()?, d.bytes()?);
                let (local_tag, local_uri, remote_tag) = (d.bytes()?, d.bytes()?, d.bytes()?);
                let (remote_uri, remote_target, event_id) = (d.bytes()?, d.bytes()?, d.bytes()?);
                let n = count(&mut d)?;
                let mut route_set = Vec::with_capacity(n);
                for _ in 0..n {
                    route_set.push(d.bytes()?);
                }
                Record::Subscription(SubscriptionState {
                    aor,
                    watcher,
                    call_id,
                    local_tag,
                    local_uri,
                    remote_tag,
                    remote_uri,
                    remote_target,
                    event_id,
                    route_set,
                    package: d.u8()?,
                    shown: d.u8()?,
                    to: get_flow(&mut d)?,
                    remote_cseq: d.u32()?,
                    local_cseq: d.u32()?,
                    expires_unix_ms: d.u64()?,
                })
            }
            tag::SUBSCRIPTION_ENDED => Record::SubscriptionEnded { call_id: d.bytes()?, local_tag: d.bytes()? },
            _ => return Err(d.err("an unknown record kind")),
        };
        d.finish()?;
        Ok(record)
    }
}

fn count(d: &mut Dec<'_>) -> Result<usize, Malformed> {
    let n = d.u64()?;
    if n > MAX_ITEMS {
        return Err(d.err("a list longer than any limit allows"));
    }
    Ok(n as usize)
}

fn put_addr(e: &mut Enc<'_>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => e.u8(4).bytes(&ip.octets()),
        IpAddr::V6(ip) => e.u8(6).bytes(&ip.octets()),
    };
    e.u64(a.port().into());
}

fn get_addr(d: &mut Dec<'_>) -> Result<SocketAddr, Malformed> {
    let family = d.u8()?;
    let octets = d.bytes()?;
    let ip = match (family, octets.len()) {
        (4, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(octets).unwrap())),
        (6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(octets).unwrap())),
        _ => return Err(d.err("an address of no known family")),
    };
    Ok(SocketAddr::new(ip, d.u16()?))
}

fn put_flow(e: &mut Enc<'_>, flow: &Peer) {
    e.u8(match flow.transport {
        Transport::Udp => 0,
        Transport::Tcp => 1,
    });
    put_addr(e, &flow.addr);
}

/// A flow read back has no connection: the one it named died with the
/// process.
fn get_flow(d: &mut Dec<'_>) -> Result<Peer, Malformed> {
    let transport = match d.u8()? {
        0 => Transport::Udp,
        1 => Transport::Tcp,
        _ => return Err(d.err("an unknown transport")),
    };
    Ok(Peer { transport, addr: get_addr(d)?, conn: ConnId::NONE })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn samples() -> Vec<Record<'static>> {
        let flow = Peer::udp("192.0.2.7:5060".parse().unwrap());
        let tcp = Peer { transport: Transport::Tcp, addr: "[2001:db8::1]:5061".parse().unwrap(), conn: ConnId::NONE };
        vec![
            Record::Registration {
                aor: b"sip:alice@example.com",
                registered_by: Some("10.0.0.1:5060".parse().unwrap()),
                bindings: vec![
                    BindingState {
                        uri: b"sip:alice@192.0.2.7",
                        params: b";+sip.instance=\"<urn:uuid:1>\";reg-id=1",
                        call_id: b"reg-1",
                        cseq: 7,
                        expires_unix_ms: 1_800_000_000_123,
                        flow,
                        pua: true,
                    },
                    BindingState { uri: b"sip:alice@[2001:db8::1]", params: b"", call_id: b"reg-2", cseq: u32::MAX, expires_unix_ms: 0, flow: tcp, pua: false },
                ],
            },
            Record::Registration { aor: b"sip:bob@example.com", registered_by: None, bindings: vec![] },
            Record::Publications {
                aor: b"sip:alice@example.com",
                publications: vec![PublicationState {
                    etag: b"a1b2c3",
                    expires_unix_ms: 1_800_000_003_600,
                    elements: vec![
                        ElementState { kind: b"tuple", id: Some(b"t1"), xml: b"<tuple id=\"t1\"><status><basic>open</basic></status></tuple>" },
                        ElementState { kind: b"other", id: None, xml: b"<note>hi</note>" },
                    ],
                }],
            },
            Record::Publications { aor: b"sip:carol@example.com", publications: vec![] },
            Record::Subscription(SubscriptionState {
                aor: b"sip:alice@example.com",
                watcher: b"sip:bob@example.net",
                call_id: b"sub-1@192.0.2.8",
                local_tag: b"ps0001.8f2a",
                local_uri: b"sip:alice@example.com",
                remote_tag: b"w1",
                remote_uri: b"sip:bob@example.net",
                remote_target: b"sip:bob@192.0.2.8:5062",
                event_id: b"",
                route_set: vec![b"sip:p1.example.net;lr", b"sip:p2.example.net;lr"],
                package: 0,
                shown: 2,
                to: flow,
                remote_cseq: 3,
                local_cseq: 128,
                expires_unix_ms: 1_800_000_600_000,
            }),
            Record::SubscriptionEnded { call_id: b"sub-1@192.0.2.8", local_tag: b"ps0001.8f2a" },
        ]
    }

    #[test]
    fn every_record_kind_round_trips() {
        for r in samples() {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            assert_eq!(Record::decode(&buf), Ok(r.clone()));
            // Every proper prefix is refused, never misread.
            for n in 0..buf.len() {
                assert!(Record::decode(&buf[..n]).is_err(), "{r:?} cut at {n}");
            }
            let mut longer = buf.clone();
            longer.push(0);
            assert!(Record::decode(&longer).is_err());
        }
        assert_eq!(Record::decode(&[99]).unwrap_err().what, "an unknown record kind");
    }
}
