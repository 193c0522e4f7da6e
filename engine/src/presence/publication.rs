//! The event state compositor for `presence` (RFC 3903): publications per
//! presentity with their entity tags and expiry, and one composed document
//! per presentity, re-serialised only when it changes and shared (an
//! `Arc`) with every NOTIFY and every shard that needs it.

use super::peu::SourceUpdate;
use super::pidf::{self, Element};
use crate::core::entropy::Entropy;
use crate::core::limits::{Caps, Limit};
use crate::core::parted::PartedMap;
use crate::core::reply::HandlerReply;
use crate::core::timer::{Recheck, TimerWheel};
use crate::sip::{HeaderName, Message};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishConfig {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Most publications of one presentity (PUBLISHed and from agents).
    pub max_publications: usize,
    /// Most bytes of one presentity's publications together, an upper
    /// bound of its composed document.
    pub max_document: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        let caps = Caps::default();
        PublishConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            max_publications: caps.publications_per_presentity,
            max_document: caps.document_size,
        }
    }
}

/// Bytes a publication adds to its presentity's document.
fn weight(elements: &[Element]) -> usize {
    elements.iter().map(|e| e.xml.len()).sum()
}

/// Where a publication came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A PUBLISH: modified, refreshed and removed by its entity tag.
    Publish,
    /// The NOTIFYs of a presence user agent the server subscribes to (see
    /// `peu`), by agent id: never matched by a PUBLISH's SIP-If-Match.
    Agent(u64),
}

struct Publication {
    source: Source,
    etag: Box<[u8]>,
    /// What composition needs of its document (not the entity, which is
    /// the presentity's).
    elements: Box<[Element]>,
    expires_at: Instant,
}

#[derive(Default)]
struct Presentity {
    /// Oldest modification first: composition lets the last one win.
    pubs: Vec<Publication>,
    /// Registered contacts (from the registrar).
    contacts: Vec<String>,
    /// The composed document, kept only while someone asked for it (a
    /// watcher) and until [`Publications::unwatched`]: it can be rebuilt
    /// from the publications, and most presentities are not watched at a
    /// given moment (the largest part of an unwatched entry otherwise).
    document: Option<Arc<[u8]>>,
    /// A 64-bit digest of the current document, to tell a change from a
    /// recomposition that came out the same (two different documents
    /// share a digest with odds of 2^-64 per change). `UNKNOWN_DIGEST`
    /// before the first composition and after a change nobody watched:
    /// the next composition is news either way.
    digest: u64,
    /// 0 until the first composition.
    version: u64,
    /// When the expiry wheel next looks at this presentity.
    recheck: Recheck,
}

/// A digest not yet taken. A document whose digest is 0 itself only
/// costs one needless NOTIFY.
const UNKNOWN_DIGEST: u64 = 0;

/// A presentity's composed document changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocChange {
    pub aor: Box<[u8]>,
    pub version: u64,
    pub document: Arc<[u8]>,
}

pub type PublishReply = HandlerReply;

/// A PUBLISHed publication read back from durable state.
pub struct Restored {
    pub etag: Box<[u8]>,
    pub expires_at: Instant,
    pub elements: Box<[Element]>,
}

/// Whether anyone would be told of a new document of an AOR (its owner
/// shard knows: watchers, or an event log that records every document).
/// Nobody reads the document of an unwatched presentity, so it is not
/// composed until a watcher asks ([`Publications::document`]).
pub type Watched<'a> = &'a dyn Fn(&[u8]) -> bool;

pub struct Publications {
    cfg: PublishConfig,
    shard: u16,
    entropy: Entropy,
    /// The last document version given out, shard-wide: a presentity that
    /// is forgotten and comes back continues above its old versions, so a
    /// watcher never takes a new document for an old one.
    last_version: u64,
    presentities: PartedMap<Box<[u8]>, Presentity>,
    digester: ahash::RandomState,
    wheel: TimerWheel<Box<[u8]>>,
    fired: Vec<Box<[u8]>>,
    /// Presentities forgotten since [`Publications::log_removals`] was
    /// turned on (after a restart, while restored watchers still ask).
    removed: Option<HashSet<Box<[u8]>>>,
}

impl Publications {
    pub fn new(cfg: PublishConfig, shard: u16, mut entropy: Entropy, now: Instant) -> Self {
        Publications {
            cfg,
            shard,
            presentities: PartedMap::new(entropy.hasher()),
            digester: entropy.hasher(),
            entropy,
            last_version: 0,
            removed: None,
            wheel: TimerWheel::new(now, Duration::from_millis(100), 4096),
            fired: Vec::new(),
        }
    }

    /// The last document version given out on this shard: a presentity
    /// whose version is above it changed after this call.
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Starts (or stops and clears) noting presentities that are
    /// forgotten: a change [`Publications::last_version`] cannot show.
    pub fn log_removals(&mut self, on: bool) {
        self.removed = on.then(HashSet::new);
    }

    /// Whether `aor` was forgotten while removals were noted.
    pub fn was_removed(&self, aor: &[u8]) -> bool {
        self.removed.as_ref().is_some_and(|r| r.contains(aor))
    }

    fn forget(&mut self, aor: &[u8]) {
        self.presentities.remove(aor);
        if let Some(r) = &mut self.removed {
            r.insert(aor.into());
        }
    }

    /// The current document of `aor` and its version; composed again if
    /// it was not kept, and kept from now on until `unwatched`, so that
    /// its watchers share one copy.
    pub fn document(&mut self, aor: &[u8]) -> Option<(u64, Arc<[u8]>)> {
        let p = self.presentities.get_mut(aor)?;
        if p.version == 0 {
            return None;
        }
        let doc = composed(aor, p);
        if p.digest == UNKNOWN_DIGEST {
            // Changed while unwatched: this is the document of the version
            // given then, and what a later change is compared with.
            p.digest = self.digester.hash_one(&doc[..]);
        }
        p.document = Some(doc.clone());
        Some((p.version, doc))
    }

    /// As [`document`](Self::document), without keeping what it composes:
    /// for inspection (tests, invariant checks).
    pub fn document_now(&self, aor: &[u8]) -> Option<(u64, Arc<[u8]>)> {
        let p = self.presentities.get(aor).filter(|p| p.version != 0)?;
        Some((p.version, composed(aor, p)))
    }

    /// A new version from the shard-wide counter, for a document shown
    /// under this shard's name that is not composed here (another node's
    /// presentity, `shard/remote.rs`): above every version given before.
    pub fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }

    /// Nobody watches `aor` any more: its document need not be kept.
    pub fn unwatched(&mut self, aor: &[u8]) {
        if let Some(p) = self.presentities.get_mut(aor) {
            p.document = None;
        }
    }

    /// Live publications of `aor`.
    pub fn count(&self, aor: &[u8]) -> usize {
        self.presentities.get(aor).map_or(0, |p| p.pubs.len())
    }

    fn new_etag(&mut self) -> Box<[u8]> {
        // "e", the shard as four hex digits, 64 random bits in hex (an
        // entity tag is the only credential a modifying PUBLISH shows, so
        // it must not be guessable): written by hand because format! cost
        // more than the rest of a refresh.
        let mut tag = Vec::with_capacity(1 + 4 + 16);
        tag.push(b'e');
        push_hex(&mut tag, self.shard as u64, 4);
        push_hex(&mut tag, self.entropy.u64(), 16);
        tag.into()
    }

    /// PUBLISH processing in the order of RFC 3903 section 6; a rejected
    /// request changes nothing.
    pub fn publish(&mut self, now: Instant, req: &Message<'_>, changes: &mut Vec<DocChange>, watched: Watched<'_>) -> PublishReply {
        // Step 2: the event package.
        match req.event() {
            Ok(Some(e)) if e.is("presence") => {}
            _ => return PublishReply::new(489, "Bad Event").with(HeaderName::AllowEvents, "presence"),
        }
        let Some(uri) = req.request_uri() else { return PublishReply::new(400, "Bad Request") };
        let aor: Box<[u8]> = uri.aor().into();
        // Step 3: the entity tag, if any, must name a live publication.
        let mut tags = req.sip_if_match();
        let if_match = match (tags.next(), tags.next()) {
            (None, _) => None,
            (Some(Ok(t)), None) => Some(t),
            (Some(Err(_)), None) => return PublishReply::new(400, "Bad Request: malformed SIP-If-Match"),
            (Some(_), Some(_)) => return PublishReply::new(400, "Bad Request: more than one SIP-If-Match"),
        };
        let existing = match if_match {
            Some(tag) => {
                let pos =
                    self.presentities.get(&aor).and_then(|p| p.pubs.iter().position(|x| x.source == Source::Publish && *x.etag == *tag && x.expires_at > now));
                match pos {
                    Some(i) => Some(i),
                    None => return PublishReply::new(412, "Conditional Request Failed"),
                }
            }
            None => None,
        };
        // Step 4: the expiry.
        let requested = req.expires().unwrap_or(self.cfg.default_expires);
        if requested != 0 && requested < self.cfg.min_expires {
            return PublishReply::new(423, "Interval Too Brief").with(HeaderName::MinExpires, self.cfg.min_expires.to_string());
        }
        let expires = requested.min(self.cfg.max_expires);
        // Step 5: an initial publication needs state.
        let body = req.body();
        if existing.is_none() && body.is_empty() {
            return PublishReply::new(400, "Bad Request: initial PUBLISH without body");
        }
        // Step 6: the state itself.
        let doc = if body.is_empty() {
            None
        } else {
            if !req.content_type().is_some_and(|t| t.is("application", "pidf+xml")) {
                return PublishReply::new(415, "Unsupported Media Type").with(HeaderName::Accept, "application/pidf+xml");
            }
            match pidf::parse(body) {
                Ok(d) => Some(d),
                Err(_) => return PublishReply::new(400, "Bad Request: malformed PIDF"),
            }
        };

        // Limits: a new publication needs a place; the publications
        // together must fit the document limit.
        let p = self.presentities.get(&aor);
        if existing.is_none() && doc.is_some() && expires != 0 && p.is_some_and(|p| p.pubs.len() >= self.cfg.max_publications) {
            return Limit::PublicationsPerPresentity.reply(0);
        }
        if let Some(d) = &doc {
            let others: usize = p.map_or(0, |p| p.pubs.iter().enumerate().filter(|(i, _)| Some(*i) != existing).map(|(_, x)| weight(&x.elements)).sum());
            if others + weight(&d.elements) > self.cfg.max_document {
                return Limit::DocumentSize.reply(0);
            }
        }
        // Every check passed: apply.
        let etag = self.new_etag();
        let at = now + Duration::from_secs(expires as u64);
        let p = self.presentities.get_or_insert_with(&aor[..], Presentity::default);
        let changed = match (existing, doc, expires) {
            (Some(i), _, 0) => {
                p.pubs.remove(i);
                true
            }
            (Some(i), None, _) => {
                p.pubs[i].etag = etag.clone();
                p.pubs[i].expires_at = at;
                false
            }
            (Some(i), Some(d), _) => {
                let mut old = p.pubs.remove(i);
                old.etag = etag.clone();
                old.expires_at = at;
                old.elements = d.elements;
                p.pubs.push(old);
                true
            }
            (None, Some(_), 0) => false,
            (None, Some(d), _) => {
                // Most presentities have one publication: room for exactly
                // that (a Vec's first push would make room for four).
                p.pubs.reserve_exact(1);
                p.pubs.push(Publication { source: Source::Publish, etag: etag.clone(), elements: d.elements, expires_at: at });
                true
            }
            (None, None, _) => unreachable!("rejected in step 5"),
        };
        self.schedule_expiry(&aor);
        if changed {
            self.recompose(&aor, changes, watched);
        }
        PublishReply::new(200, "OK").with(HeaderName::SipETag, etag.to_vec()).with(HeaderName::Expires, itoa::Buffer::new().format(expires).as_bytes())
    }

    /// A publication by agent `agent` (a presence user agent the server
    /// subscribes to): a new document replaces its previous one and, like
    /// a modifying PUBLISH, becomes the newest in composition; `Extend`
    /// keeps it until `until`; `Remove` ends it. The body was validated
    /// by the caller exactly as a PUBLISH body is.
    /// A document beyond the presentity's limits is refused (`Err`) and
    /// the agent's previous one, if any, stays.
    pub fn update_source(
        &mut self,
        aor: &[u8],
        agent: u64,
        update: SourceUpdate,
        until: Instant,
        changes: &mut Vec<DocChange>,
        watched: Watched<'_>,
    ) -> Result<(), Limit> {
        let source = Source::Agent(agent);
        let pos = self.presentities.get(aor).and_then(|p| p.pubs.iter().position(|x| x.source == source));
        if let (SourceUpdate::Document(pidf), Some(p)) = (&update, self.presentities.get(aor)) {
            if pos.is_none() && p.pubs.len() >= self.cfg.max_publications {
                return Err(Limit::PublicationsPerPresentity);
            }
            let others: usize = p.pubs.iter().filter(|x| x.source != source).map(|x| weight(&x.elements)).sum();
            if others + weight(&pidf.elements) > self.cfg.max_document {
                return Err(Limit::DocumentSize);
            }
        }
        let changed = match (update, pos) {
            (SourceUpdate::Document(pidf), pos) => {
                let p = self.presentities.get_or_insert_with(aor, Default::default);
                if let Some(i) = pos {
                    p.pubs.remove(i);
                }
                p.pubs.reserve_exact(1);
                p.pubs.push(Publication { source, etag: Box::default(), elements: pidf.elements, expires_at: until });
                true
            }
            (SourceUpdate::Extend, Some(i)) => {
                let x = &mut self.presentities.get_mut(aor).expect("found above").pubs[i];
                x.expires_at = x.expires_at.max(until);
                false
            }
            (SourceUpdate::Remove, Some(i)) => {
                self.presentities.get_mut(aor).expect("found above").pubs.remove(i);
                true
            }
            (_, None) => false,
        };
        self.schedule_expiry(aor);
        if changed {
            self.recompose(aor, changes, watched);
        }
        Ok(())
    }

    /// The registrar's view of `aor` changed.
    pub fn on_registration(&mut self, aor: &[u8], contacts: &[String], changes: &mut Vec<DocChange>, watched: Watched<'_>) {
        let p = self.presentities.get_or_insert_with(aor, Default::default);
        p.contacts = contacts.to_vec();
        self.recompose(aor, changes, watched);
    }

    /// Publications whose time has come are removed.
    pub fn on_time(&mut self, now: Instant, changes: &mut Vec<DocChange>, watched: Watched<'_>) {
        self.wheel.advance(now, &mut self.fired);
        for aor in std::mem::take(&mut self.fired) {
            let Some(p) = self.presentities.get_mut(&aor) else { continue };
            p.recheck.fired(now);
            let before = p.pubs.len();
            p.pubs.retain(|x| x.expires_at > now);
            let expired = p.pubs.len() != before;
            self.schedule_expiry(&aor);
            if expired {
                self.recompose(&aor, changes, watched);
            }
        }
    }

    /// The PUBLISHed publications of `aor` (not the agents'), oldest
    /// modification first, as (entity tag, expiry, elements): what the
    /// journal keeps of a presentity.
    pub fn published(&self, aor: &[u8]) -> impl Iterator<Item = (&[u8], Instant, &[Element])> {
        self.presentities
            .get(aor)
            .into_iter()
            .flat_map(|p| p.pubs.iter())
            .filter(|x| x.source == Source::Publish)
            .map(|x| (&x.etag[..], x.expires_at, &x.elements[..]))
    }

    /// Every presentity with a PUBLISHed publication.
    pub fn published_aors(&self) -> Vec<Box<[u8]>> {
        self.presentities.iter().filter(|(_, p)| p.pubs.iter().any(|x| x.source == Source::Publish)).map(|(aor, _)| aor.clone()).collect()
    }

    /// Puts back the PUBLISHed publications of `aor` from durable state (a
    /// restart), in place of those it had; an agent's stay. Those whose
    /// time passed while the server was down are left out.
    pub fn restore(&mut self, now: Instant, aor: &[u8], pubs: Vec<Restored>, changes: &mut Vec<DocChange>, watched: Watched<'_>) {
        let live: Vec<Publication> = pubs
            .into_iter()
            .filter(|r| r.expires_at > now)
            .map(|r| Publication { source: Source::Publish, etag: r.etag, elements: r.elements, expires_at: r.expires_at })
            .collect();
        let p = match self.presentities.get_mut(aor) {
            Some(p) => p,
            None if live.is_empty() => return,
            None => self.presentities.get_or_insert_with(aor, Presentity::default),
        };
        p.pubs.retain(|x| x.source != Source::Publish);
        p.pubs.extend(live);
        self.schedule_expiry(aor);
        // (Which also forgets the presentity if nothing is left.)
        self.recompose(aor, changes, watched);
    }

    /// Makes sure the wheel looks at `aor` by its earliest expiry.
    fn schedule_expiry(&mut self, aor: &[u8]) {
        let Some(p) = self.presentities.get_mut(aor) else { return };
        p.recheck.ensure(&mut self.wheel, p.pubs.iter().map(|x| x.expires_at).min(), || aor.into());
    }

    /// (AOR, agent) of every publication made by a presence agent.
    pub fn agent_sources(&self) -> Vec<(Box<[u8]>, u64)> {
        let mut v = Vec::new();
        for (aor, p) in self.presentities.iter() {
            for x in &p.pubs {
                if let Source::Agent(id) = x.source {
                    v.push((aor.clone(), id));
                }
            }
        }
        v.sort();
        v
    }

    /// Wheel entries pending (they stay one per presentity).
    pub fn wheel_entries(&self) -> usize {
        self.wheel.len()
    }

    /// Room for `n` presentities, made now (see `shard::Expected`).
    pub fn reserve(&mut self, n: usize) {
        self.presentities.reserve(n);
    }

    /// Presentities there is room for without growing.
    pub fn capacity(&self) -> usize {
        self.presentities.capacity()
    }

    /// Presentities with any state.
    pub fn presentities(&self) -> usize {
        self.presentities.len()
    }

    /// Composes and serialises the document once; a presentity with no
    /// state left is forgotten after its closed document is announced.
    /// Unwatched, it only takes a new version: its digest is cleared
    /// (unknown) and the document is composed when a watcher asks.
    fn recompose(&mut self, aor: &[u8], changes: &mut Vec<DocChange>, watched: Watched<'_>) {
        let Some(p) = self.presentities.get_mut(aor) else { return };
        if !watched(aor) {
            if p.pubs.is_empty() && p.contacts.is_empty() {
                self.forget(aor);
                return;
            }
            self.last_version += 1;
            p.version = self.last_version;
            p.digest = UNKNOWN_DIGEST;
            p.document = None;
            return;
        }
        let doc = compose(aor, p);
        let digest = self.digester.hash_one(doc.as_bytes());
        if p.digest != UNKNOWN_DIGEST && p.digest == digest {
            return;
        }
        let doc: Arc<[u8]> = doc.into_bytes().into();
        self.last_version += 1;
        p.version = self.last_version;
        p.digest = digest;
        if p.document.is_some() {
            p.document = Some(doc.clone());
        }
        changes.push(DocChange { aor: aor.into(), version: p.version, document: doc });
        if p.pubs.is_empty() && p.contacts.is_empty() {
            // Watchers (issue 5's subscriptions) keep their own copy; the
            // table keeps only presentities with state.
            self.forget(aor);
        }
    }
}

/// The document of presentity `aor` as its state composes it now.
fn compose(aor: &[u8], p: &Presentity) -> String {
    let pubs: Vec<&[Element]> = p.pubs.iter().map(|x| &x.elements[..]).collect();
    let contacts: Vec<&str> = p.contacts.iter().map(String::as_str).collect();
    pidf::compose(&String::from_utf8_lossy(aor), &pubs, &contacts)
}

/// The presentity's document: the one kept, or composed anew.
fn composed(aor: &[u8], p: &Presentity) -> Arc<[u8]> {
    p.document.clone().unwrap_or_else(|| compose(aor, p).into_bytes().into())
}

/// Appends `v` in lower-case hex, at least `min_digits` digits.
fn push_hex(out: &mut Vec<u8>, v: u64, min_digits: u32) {
    let digits = (64 - v.leading_zeros()).div_ceil(4).max(min_digits);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(v >> (4 * i) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests;
