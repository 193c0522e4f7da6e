//! Documents across the nodes of a cluster. A subscription stays on the
//! node its SUBSCRIBE reached, as it stays on the shard; the presentity's
//! partition may be served by another node. Documents cross nodes the way
//! they cross shards: once per node that holds watchers.
//!
//! - On a node holding watchers of a presentity another node serves, the
//!   presentity's shard keeps a *mirror*: the owner's last document, and
//!   whom it asked for it. The watchers are counted in the watched table
//!   as for a local presentity, and shown the mirror's document under a
//!   version of this shard's own counter (owners change, and a new
//!   owner's versions are not comparable with the old one's).
//! - On the owner, the presentity's shard keeps the nodes that asked
//!   (*readers*), and sends each new document to each of them once,
//!   beside the fan-out to its own shards.
//!
//! Interest is soft state. A mirror asks again each [`REFRESH`], each
//! [`SWEEP`] while its owner has not answered, and at once when the
//! partition's owner changes (a failover, a move). An owner forgets a
//! reader after [`READER_TTL`] without a refresh. A lost message, a
//! crashed watchers' node or a moved partition so heal within a refresh,
//! with no state anyone must remember across a failure.
//!
//! Not carried across nodes: winfo subscriptions (a presentity's winfo
//! subscribers see the watchers of the nodes they are on) and the
//! authorization decision (each node decides with its own policy, which
//! the configuration makes the same on every node).

use super::watch::neutral;
use super::{Outbox, Shard};
use crate::cluster::NodeId;
use crate::cluster::mail::NodeMsg;
use crate::cluster::partition::partition_of;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a mirror re-sends its interest while watchers last.
pub const REFRESH: Duration = Duration::from_secs(10);
/// How long an owner keeps sending to a node that stopped refreshing.
pub const READER_TTL: Duration = Duration::from_secs(35);
/// How often mirrors and readers are looked over; also how soon an
/// unanswered interest is sent again.
pub const SWEEP: Duration = Duration::from_secs(1);

/// Where a presentity's documents come from, as this node sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// This node serves the partition (or there is no cluster).
    Here,
    /// Another node does.
    Node(NodeId),
    /// Nobody known does (a failover in progress, or this node's lease
    /// lapsed).
    Unknown,
}

/// Another node's presentity, as the watchers here see it.
struct Mirror {
    /// The node interest was last sent to.
    asked: Option<NodeId>,
    /// When it was sent.
    sent: Instant,
    /// The last document taken: the node it came from and its version there.
    seen: Option<(NodeId, u64)>,
    /// The watchers here are shown `doc` as this shard's version `version`
    /// (0: nothing yet, the closed document).
    version: u64,
    doc: Option<Arc<[u8]>>,
    /// Whether every watcher here is shown the mirror's document. Not
    /// yet when the mirror was made for watchers shown this node's own
    /// document (the partition moved away): the owner's first answer is
    /// then shown whatever it is.
    in_use: bool,
}

/// The shard's part in the exchange of documents between nodes.
pub(super) struct Remote {
    mirrors: HashMap<Box<[u8]>, Mirror, ahash::RandomState>,
    /// Per presentity served here: the nodes reading it, and when each
    /// last asked.
    readers: HashMap<Box<[u8]>, Vec<(NodeId, Instant)>, ahash::RandomState>,
    next_sweep: Option<Instant>,
    owner_changes_seen: u64,
}

impl Remote {
    pub fn new(hasher: ahash::RandomState) -> Remote {
        Remote { mirrors: HashMap::with_hasher(hasher.clone()), readers: HashMap::with_hasher(hasher), next_sweep: None, owner_changes_seen: 0 }
    }

    /// Whether another node reads `aor`'s documents. (Emptiness first:
    /// outside a cluster this is asked on every change, and costs no hash.)
    pub fn is_read(&self, aor: &[u8]) -> bool {
        !self.readers.is_empty() && self.readers.contains_key(aor)
    }

    pub fn mirrors(&self) -> usize {
        self.mirrors.len()
    }

    /// Presentities read by other nodes.
    pub fn read(&self) -> usize {
        self.readers.len()
    }
}

impl Shard {
    fn source(&self, aor: &[u8], now: Instant) -> Source {
        let Some(view) = &self.cfg.cluster else { return Source::Here };
        let p = partition_of(aor, view.partitions());
        if view.serves_at(p, now) {
            return Source::Here;
        }
        match view.owner(p) {
            Some(n) if n != view.me() => Source::Node(n),
            _ => Source::Unknown,
        }
    }

    /// Whether `aor`'s partition is, as last published, another node's: a
    /// document this node composes for it (a publication expiring after a
    /// move) is nobody's to show.
    pub(super) fn served_elsewhere(&self, aor: &[u8]) -> bool {
        self.cfg.cluster.as_ref().is_some_and(|v| !v.serves(partition_of(aor, v.partitions())))
    }

    /// The document a new watcher of `aor` is shown: `None` when this node
    /// serves it (the caller reads its own publications), otherwise the
    /// mirror's, made and asked for if this is its first watcher.
    ///
    /// `first_watcher`: the watcher being added is `aor`'s only one here,
    /// so nobody here is shown anything but the mirror (the owner's first
    /// answer then needs no NOTIFY if it is what the mirror shows).
    pub(super) fn mirrored_document(&mut self, now: Instant, aor: &[u8], first_watcher: bool, out: &mut Outbox) -> Option<Option<(u64, Arc<[u8]>)>> {
        let asked = match self.source(aor, now) {
            Source::Here => return None,
            Source::Node(n) => Some(n),
            Source::Unknown => None,
        };
        if !self.remote.mirrors.contains_key(aor)
            && let Some(n) = asked
        {
            out.to_nodes.push((n, NodeMsg::Interest { aor: aor.into() }));
        }
        let m = self.remote.mirrors.entry(aor.into()).or_insert(Mirror { asked, sent: now, seen: None, version: 0, doc: None, in_use: first_watcher });
        Some(match (&m.doc, m.version) {
            (_, 0) => None,
            (Some(d), v) => Some((v, d.clone())),
            (None, v) => Some((v, neutral(aor))),
        })
    }

    /// The last watcher of `aor` here is gone: so is its mirror, and the
    /// owner is told.
    pub(super) fn drop_mirror(&mut self, aor: &[u8], out: &mut Outbox) {
        if self.remote.mirrors.is_empty() {
            return;
        }
        if let Some(m) = self.remote.mirrors.remove(aor)
            && let Some(n) = m.asked
        {
            out.to_nodes.push((n, NodeMsg::Withdraw { aor: aor.into() }));
        }
    }

    /// A new document of a presentity served here, for the nodes reading
    /// it. A mirror of it left from before this node took the partition
    /// (the sweep has not come yet) is dropped: the watchers here are
    /// shown this document, and a later move makes a fresh mirror.
    pub(super) fn send_to_readers(&mut self, aor: &[u8], version: u64, doc: &Arc<[u8]>, out: &mut Outbox) {
        self.drop_mirror(aor, out);
        if self.remote.readers.is_empty() {
            return;
        }
        for &(n, _) in self.remote.readers.get(aor).map_or(&[][..], |r| &r[..]) {
            out.to_nodes.push((n, NodeMsg::Document { aor: aor.into(), version, doc: Some(doc.clone()) }));
        }
    }

    /// A message from another node of the cluster.
    pub fn on_node_msg(&mut self, now: Instant, from: NodeId, msg: NodeMsg, out: &mut Outbox) {
        self.guarded(now, None, out, |s, out| {
            match msg {
                NodeMsg::Interest { aor } => s.on_interest(now, from, aor, out),
                NodeMsg::Withdraw { aor } => s.forget_reader(now, &aor, |&(n, _)| n == from, out),
                NodeMsg::Document { aor, version, doc } => s.on_remote_document(from, &aor, version, doc, out),
            }
            s.drain_local(now, out);
        });
    }

    /// On the owner: `from` reads `aor`; it gets the document now (if this
    /// node serves it; otherwise it asks again until someone does).
    fn on_interest(&mut self, now: Instant, from: NodeId, aor: Box<[u8]>, out: &mut Outbox) {
        if self.source(&aor, now) != Source::Here {
            return;
        }
        let full = self.remote.readers.len() >= self.cfg.caps.subscriptions;
        let first = match self.remote.readers.get_mut(&aor) {
            Some(list) => {
                match list.iter_mut().find(|(n, _)| *n == from) {
                    Some(r) => r.1 = now,
                    None => list.push((from, now)),
                }
                false
            }
            // Bounded like the subscriptions this shard may hold; the node
            // asking gets no document, and its watchers keep the closed one.
            None if full => {
                self.stats.readers_refused += 1;
                return;
            }
            None => {
                self.remote.readers.insert(aor.clone(), vec![(from, now)]);
                true
            }
        };
        if first && self.presentity_watchers.get(&aor).is_none() {
            self.watched_changed(now, &aor, true, out);
        }
        // Nothing published: at the shard's last version, so that it is not
        // taken for older than a document it follows (one that expired).
        let (version, doc) = self.publications.document(&aor).map_or((self.publications.last_version(), None), |(v, d)| (v, Some(d)));
        out.to_nodes.push((from, NodeMsg::Document { aor, version, doc }));
    }

    /// On the owner: the readers of `aor` (node, last asked) that `gone`
    /// picks stop reading.
    fn forget_reader(&mut self, now: Instant, aor: &[u8], gone: impl Fn(&(NodeId, Instant)) -> bool, out: &mut Outbox) {
        let Some(list) = self.remote.readers.get_mut(aor) else { return };
        list.retain(|r| !gone(r));
        if list.is_empty() {
            self.remote.readers.remove(aor);
            if self.presentity_watchers.get(aor).is_none() {
                self.publications.unwatched(aor);
                self.watched_changed(now, aor, false, out);
            }
        }
    }

    /// On a watchers' node: a document from the node asked. Shown to the
    /// watchers here if it differs from what they have.
    fn on_remote_document(&mut self, from: NodeId, aor: &[u8], version: u64, doc: Option<Arc<[u8]>>, out: &mut Outbox) {
        let Some(m) = self.remote.mirrors.get_mut(aor) else { return };
        // From a node no longer asked (the partition moved), or older
        // than what was taken: stale.
        if m.asked != Some(from) || m.seen.is_some_and(|(n, v)| n == from && v > version) {
            return;
        }
        m.seen = Some((from, version));
        if m.in_use && m.doc.as_deref() == doc.as_deref() {
            return;
        }
        m.in_use = true;
        m.version = self.publications.next_version();
        m.doc = doc;
        let (v, shown) = (m.version, m.doc.clone().unwrap_or_else(|| neutral(aor)));
        self.fan_out_here(aor, v, &shown, out);
    }

    /// Once a [`SWEEP`]: mirrors follow their partition's owner and
    /// refresh their interest; readers that stopped refreshing are
    /// forgotten; after a change of owners, watched presentities this node
    /// no longer serves get mirrors.
    pub(super) fn remote_on_time(&mut self, now: Instant, out: &mut Outbox) {
        let Some(view) = self.cfg.cluster.clone() else { return };
        if self.remote.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.remote.next_sweep = Some(now + SWEEP);
        let changes = view.owner_changes();
        if changes != self.remote.owner_changes_seen {
            self.remote.owner_changes_seen = changes;
            self.forget_moved_dialogs(out);
            self.agents_follow_partitions(now, out);
            let moved: Vec<Box<[u8]>> = self
                .presentity_watchers
                .watched_aors()
                .filter(|aor| !self.remote.mirrors.contains_key(*aor) && self.source(aor, now) != Source::Here)
                .map(Box::from)
                .collect();
            for aor in moved {
                self.mirrored_document(now, &aor, false, out);
            }
        }
        let mut mirrors = std::mem::take(&mut self.remote.mirrors);
        let mut taken_over = Vec::new();
        mirrors.retain(|aor, m| {
            match self.source(aor, now) {
                Source::Here => {
                    taken_over.push(aor.clone());
                    return false;
                }
                Source::Node(n) if m.asked != Some(n) => {
                    m.asked = Some(n);
                    m.seen = None;
                }
                Source::Node(_) if now.saturating_duration_since(m.sent) >= if m.seen.is_none() { SWEEP } else { REFRESH } => {}
                Source::Node(_) => return true,
                Source::Unknown => {
                    m.asked = None;
                    return true;
                }
            }
            m.sent = now;
            out.to_nodes.push((m.asked.expect("set above"), NodeMsg::Interest { aor: aor.clone() }));
            true
        });
        self.remote.mirrors = mirrors;
        // This node serves them now: its own document (what it has; with
        // no replicated log, nothing) under a new version.
        for aor in taken_over {
            let doc = self.publications.document(&aor).map_or_else(|| neutral(&aor), |(_, d)| d);
            let version = self.publications.next_version();
            self.fan_out_here(&aor, version, &doc, out);
        }
        let lapsed = |&(_, asked): &(NodeId, Instant)| now.saturating_duration_since(asked) >= READER_TTL;
        let with_lapsed: Vec<Box<[u8]>> = self.remote.readers.iter().filter(|(_, l)| l.iter().any(lapsed)).map(|(a, _)| a.clone()).collect();
        for aor in with_lapsed {
            self.forget_reader(now, &aor, lapsed, out);
        }
    }
}
