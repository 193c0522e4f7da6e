//! Presence user agents as sources, on the presentity's shard: which
//! agents a presentity has (its PUA bindings, or configured ones), whether
//! anyone watches it, and the SUBSCRIBEs, NOTIFYs and publications that
//! follow (the state machines are in `presence::peu`).

use super::{ClientCtx, Event, Outbox, Reply, Shard, lossy};
use crate::core::ids;
use crate::core::peer::{Peer, Transmit, Transport};
use crate::presence::peu::{AgentAddr, PeuOut};
use crate::sip::{HeaderName, Message, Uri};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// An agent the configuration names (`[[peu.agent]]`): reached over UDP at
/// the literal address of its URI, with no registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredAgent {
    /// The presentity's normalised AOR.
    pub presentity: Box<[u8]>,
    pub uri: Box<[u8]>,
    pub addr: SocketAddr,
}

impl ConfiguredAgent {
    /// Checks a `[[peu.agent]]` entry: both URIs must parse, and the
    /// agent's must have a literal IP host (the server resolves no names).
    pub fn parse(presentity: &str, uri: &str) -> Result<ConfiguredAgent, String> {
        let p = Uri::parse(presentity.as_bytes()).map_err(|_| format!("peu.agent presentity {presentity:?} is not a SIP URI"))?;
        let u = Uri::parse(uri.as_bytes()).map_err(|_| format!("peu.agent uri {uri:?} is not a SIP URI"))?;
        if u.params().value(b"transport").is_some_and(|t| !t.eq_ignore_ascii_case(b"udp")) {
            return Err(format!("peu.agent uri {uri:?}: configured agents are reached over UDP only"));
        }
        let addr = literal_addr(u.as_bytes()).ok_or_else(|| format!("peu.agent uri {uri:?} needs a literal IP host (no DNS here)"))?;
        Ok(ConfiguredAgent { presentity: p.aor().into(), uri: uri.as_bytes().into(), addr })
    }
}

/// A literal IP host and port of a SIP URI, if it has one.
pub(super) fn literal_addr(uri: &[u8]) -> Option<SocketAddr> {
    let u = Uri::parse(uri).ok()?;
    let host = std::str::from_utf8(u.host()).ok()?.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().ok()?;
    Some(SocketAddr::new(ip, u.port().unwrap_or(5060)))
}

impl Shard {
    /// Registers the configured agents of the presentities owned here.
    pub(super) fn add_configured_agents(&mut self, now: Instant) {
        for a in self.cfg.peu_agents.clone() {
            if ids::owner_of(&a.presentity, self.cfg.shards) != self.cfg.shard {
                continue;
            }
            let addr = AgentAddr { contact: a.uri.clone(), request_uri: a.uri.clone(), route: None, target: Peer::udp(a.addr) };
            let served = self.serves_aor(&a.presentity);
            self.peu.add_configured(now, &a.presentity, addr, served);
        }
    }

    /// The agents `aor`'s PUA bindings make, and how to reach each: over
    /// the registration's flow (its TCP connection, or over UDP the
    /// REGISTER's source; the contact's address if a trusted element
    /// registered it); or, for a
    /// third-party registration with `route_via_scscf`, through the S-CSCF
    /// with the AOR as Request-URI.
    ///
    /// Through the S-CSCF one subscription serves every PUA binding of the
    /// AOR (the S-CSCF routes it to the registered contacts), so those
    /// bindings make one agent, named by the AOR.
    fn agents_of(&self, aor: &[u8]) -> Vec<AgentAddr> {
        let Some(reg) = self.registrar.registration(aor) else { return Vec::new() };
        let via_scscf = reg.registered_by.filter(|_| self.peu.config().route_via_scscf);
        let mut agents: Vec<AgentAddr> = reg
            .bindings
            .iter()
            .filter(|b| b.pua)
            .map(|b| match via_scscf {
                Some(scscf) => {
                    let target = if b.flow.addr == scscf { b.flow } else { Peer::udp(scscf) };
                    let route = format!("<sip:{scscf};lr>").into_bytes().into();
                    AgentAddr { contact: aor.into(), request_uri: aor.into(), route: Some(route), target }
                }
                None => {
                    // Only a trusted element may point the server at a
                    // third address; anyone else is reached on its flow.
                    let target = match b.flow.transport {
                        Transport::Udp if self.is_trusted(b.flow) => literal_addr(&b.uri).map_or(b.flow, Peer::udp),
                        _ => b.flow,
                    };
                    AgentAddr { contact: b.uri.clone(), request_uri: b.uri.clone(), route: None, target }
                }
            })
            .collect();
        agents.dedup();
        agents
    }

    /// Brings `aor`'s agents in line with its bindings; `registered`: a
    /// REGISTER just (re)bound them, which lifts earlier refusals.
    pub(super) fn sync_agents(&mut self, now: Instant, aor: &[u8], registered: bool, out: &mut Outbox) {
        let agents = self.agents_of(aor);
        let watched = self.presentity_watchers.get(aor).is_some_and(|w| w.is_watched());
        let served = self.serves_aor(aor);
        self.peu.set_agents(now, aor, &agents, watched, registered, served);
        self.drain_peu(now, out);
    }

    /// Whether this node serves `aor`: always outside a cluster; in one,
    /// while it serves the AOR's partition.
    pub(super) fn serves_aor(&self, aor: &[u8]) -> bool {
        self.cfg.cluster.as_ref().is_none_or(|v| v.serves(crate::cluster::partition::partition_of(aor, v.partitions())))
    }

    /// After a change of owners: the agents of presentities whose
    /// partition this node gained subscribe, and those of presentities
    /// whose partition another node serves now end their subscriptions.
    pub(super) fn agents_follow_partitions(&mut self, now: Instant, out: &mut Outbox) {
        for aor in self.peu.presentities() {
            let served = self.serves_aor(&aor);
            self.peu.set_served(now, &aor, served);
        }
        self.drain_peu(now, out);
    }

    /// `aor` gained its first watcher or lost its last one.
    pub(super) fn watched_changed(&mut self, now: Instant, aor: &[u8], watched: bool, out: &mut Outbox) {
        self.peu.set_watched(now, aor, watched);
        self.drain_peu(now, out);
    }

    /// Does what the agents' state machines asked: sends SUBSCRIBEs in
    /// client transactions, applies publications, logs state changes.
    pub(super) fn drain_peu(&mut self, now: Instant, out: &mut Outbox) {
        loop {
            let work = self.peu.take_out();
            if work.is_empty() {
                return;
            }
            for w in work {
                match w {
                    PeuOut::Subscribe { agent, expires } => {
                        let mut branch = Vec::with_capacity(32);
                        let seq = self.client.new_branch(&mut branch);
                        let mut bytes = Vec::with_capacity(512);
                        let Some((to, cseq)) = self.peu.write_subscribe(agent, expires, &branch, &mut bytes) else { continue };
                        let t = self.client.start(seq, Transmit::new(to, bytes), b"SUBSCRIBE", ClientCtx::Peu { agent, cseq }, now);
                        out.transmits.push(t);
                    }
                    PeuOut::Source { aor, agent, update, until } => {
                        if let Err(limit) = self.publications.update_source(
                            &aor,
                            agent,
                            update,
                            until,
                            &mut self.doc_changes,
                            &super::doc_readers(&self.presentity_watchers, &self.remote, out),
                        ) {
                            // The agent's NOTIFY was taken; its document is
                            // refused, counted, and the previous one stays.
                            self.stats.limited[limit.index()] += 1;
                        }
                        self.emit_doc_changes(out);
                    }
                    PeuOut::State { aor, uri, state, status } => {
                        out.event(|| Event::Agent { aor: lossy(&aor), uri: lossy(&uri), state, status });
                    }
                }
            }
        }
    }

    /// A NOTIFY on one of the server's own subscriptions to an agent.
    pub(super) fn on_agent_notify(&mut self, msg: &Message<'_>, reply: Reply, out: &mut Outbox) {
        let answer = self.peu.on_notify(reply.now, msg);
        let accept: &[(HeaderName, &[u8])] = if answer.code == 415 { &[(HeaderName::Accept, b"application/pidf+xml")] } else { &[] };
        self.respond(msg, reply, answer.code, answer.reason, accept, out);
        self.drain_peu(reply.now, out);
    }

    /// The final response to (or the timeout of) an agent's SUBSCRIBE.
    pub(super) fn on_agent_response(&mut self, now: Instant, agent: u64, cseq: u32, status: Option<u16>, msg: Option<&Message<'_>>, out: &mut Outbox) {
        self.peu.on_response(now, agent, cseq, status, msg);
        self.drain_peu(now, out);
    }
}
