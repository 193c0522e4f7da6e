//! The registrar (RFC 3261 10.3) for presentities, sans-IO: one per shard,
//! holding the bindings of the AORs that shard owns. It takes a validated
//! REGISTER and the time, and returns the response to send and the
//! registration changes the presence layer turns into NOTIFYs.
//!
//! Third-party registration (IMS): a REGISTER whose From differs from its
//! To is accepted only from a trusted S-CSCF address and registers the
//! public identity in To on the UE's behalf.

pub mod reg_event;
pub mod reginfo;

use crate::core::limits::{Caps, Limit};
use crate::core::parted::PartedMap;
use crate::core::peer::Peer;
use crate::core::reply::HandlerReply;
use crate::core::timer::{Recheck, TimerWheel};
use crate::core::trust::TrustList;
use crate::sip::{Contacts, HeaderName, Message, NameAddr, Uri};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Shorter non-zero expiries get 423 with this Min-Expires.
    pub min_expires: u32,
    /// Longer expiries are shortened to this.
    pub max_expires: u32,
    /// Expiry when the request names none.
    pub default_expires: u32,
    /// Network elements allowed to register on a UE's behalf (the
    /// S-CSCFs among the trusted elements).
    pub trusted: TrustList,
    /// Most bindings one AOR may hold; a REGISTER that would add more gets
    /// 403 and changes nothing.
    pub max_bindings: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 7200,
            default_expires: 3600,
            trusted: TrustList::default(),
            max_bindings: Caps::default().bindings_per_aor,
        }
    }
}

impl RegistrarConfig {
    pub fn is_trusted(&self, src: SocketAddr) -> bool {
        self.trusted.contains(src)
    }
}

/// One contact bound to an AOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as the UA wrote it.
    pub uri: Box<[u8]>,
    /// Contact header parameters other than `expires` (`+sip.instance`,
    /// `reg-id`, `q` ...), kept as given, each with its leading `;`.
    pub params: Box<[u8]>,
    pub call_id: Box<[u8]>,
    pub cseq: u32,
    pub expires_at: Instant,
    /// Where the REGISTER came from (address, transport, connection): the
    /// flow requests to this contact reuse (RFC 5626 style), since the
    /// server opens no connections of its own.
    pub flow: Peer,
    /// The contact is a presence user agent: its Contact carried the RFC
    /// 3840 `events` feature parameter listing `presence`, or its REGISTER
    /// listed `presence` in Allow-Events (or, from the reg event, its
    /// `events` unknown-param did).
    pub pua: bool,
}

impl Binding {
    pub fn remaining(&self, now: Instant) -> u32 {
        self.expires_at.saturating_duration_since(now).as_secs_f64().round() as u32
    }
}

/// The bindings of one AOR.
#[derive(Clone, Debug, Default)]
pub struct Registration {
    pub bindings: Vec<Binding>,
    /// The S-CSCF that registered it, for third-party registrations.
    pub registered_by: Option<SocketAddr>,
    /// When the expiry wheel next looks at this AOR.
    recheck: Recheck,
}

impl Registration {
    /// When its first binding expires.
    fn earliest_expiry(&self) -> Option<Instant> {
        self.bindings.iter().map(|b| b.expires_at).min()
    }
}

/// A change of an AOR's registration: what presence is derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegChange {
    pub aor: Box<[u8]>,
    /// The contact URIs bound after the change; empty means closed.
    pub contacts: Vec<Box<[u8]>>,
}

/// The answer to a REGISTER.
pub type RegisterReply = HandlerReply;

/// What the timer wheel holds: the AOR to look at. A firing for a binding
/// that was refreshed since finds it unexpired and leaves it.
struct Expiry {
    aor: Box<[u8]>,
}

pub struct Registrar {
    cfg: RegistrarConfig,
    regs: PartedMap<Box<[u8]>, Registration>,
    wheel: TimerWheel<Expiry>,
    fired: Vec<Expiry>,
}

/// One Contact of the request, checked and with its expiry resolved.
struct Update<'a> {
    uri: Uri<'a>,
    na: NameAddr<'a>,
    expires: u32,
}

impl Registrar {
    pub fn new(cfg: RegistrarConfig, now: Instant, hasher: ahash::RandomState) -> Self {
        Registrar { cfg, regs: PartedMap::new(hasher), wheel: TimerWheel::new(now, Duration::from_millis(100), 4096), fired: Vec::new() }
    }

    /// Room for `n` registered AORs, made now (see `shard::Expected`).
    pub fn reserve(&mut self, n: usize) {
        self.regs.reserve(n);
    }

    /// Registered AORs there is room for without growing.
    pub fn capacity(&self) -> usize {
        self.regs.capacity()
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.cfg
    }

    pub fn registration(&self, aor: &[u8]) -> Option<&Registration> {
        self.regs.get(aor)
    }

    /// Number of registered AORs.
    pub fn len(&self) -> usize {
        self.regs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }
    /// Timer wheel entries pending (fired lazily; for leak checks).
    pub fn wheel_entries(&self) -> usize {
        self.wheel.len()
    }

    /// Processes a REGISTER (RFC 3261 10.3 steps 4-8) atomically: either
    /// every Contact is applied or none is.
    pub fn register(&mut self, now: Instant, req: &Message<'_>, flow: Peer, changes: &mut Vec<RegChange>) -> RegisterReply {
        let source = flow.addr;
        let to_uri = req.to().uri();
        let aor: Box<[u8]> = to_uri.aor().into();
        // Third party: From names someone else. Only a trusted S-CSCF may.
        let third_party = req.from().uri().aor().as_slice() != &*aor;
        if third_party && !self.cfg.is_trusted(source) {
            return RegisterReply::new(403, "Forbidden: third-party registration from an untrusted source");
        }
        let call_id = req.call_id();
        let cseq = req.cseq().seq;
        let header_expires = req.expires();
        let allows_presence = req.allow_events().filter_map(|e| e.ok()).any(|e| e.eq_ignore_ascii_case(b"presence"));

        let existing = self.regs.get(&aor);
        // Step 7: a binding from the same Call-ID with a CSeq not higher
        // than stored means an old or replayed request: abort.
        let stale = |b: &Binding| *b.call_id == *call_id && cseq <= b.cseq;

        match req.contacts() {
            Contacts::Star => {
                if header_expires != Some(0) {
                    return RegisterReply::new(400, "Bad Request: Contact * needs Expires: 0");
                }
                if existing.is_some_and(|r| r.bindings.iter().any(stale)) {
                    return RegisterReply::new(400, "Bad Request: CSeq not higher than the registration's");
                }
                if self.regs.remove(&aor).is_some() {
                    changes.push(RegChange { aor: aor.clone(), contacts: Vec::new() });
                }
                self.ok(&aor, now)
            }
            Contacts::List(list) if list.is_empty() => self.ok(&aor, now),
            Contacts::List(list) => {
                let mut updates = Vec::with_capacity(list.len());
                for na in list {
                    let uri = *na.uri();
                    let requested = match na.params().value(b"expires") {
                        Some(v) => crate::sip::typed::delta_seconds(v).unwrap_or(self.cfg.default_expires),
                        None => header_expires.unwrap_or(self.cfg.default_expires),
                    };
                    if requested != 0 && requested < self.cfg.min_expires {
                        return RegisterReply::new(423, "Interval Too Brief").with(HeaderName::MinExpires, self.cfg.min_expires.to_string());
                    }
                    updates.push(Update { uri, na, expires: requested.min(self.cfg.max_expires) });
                }
                if let Some(reg) = existing {
                    for u in &updates {
                        let hit = reg.bindings.iter().find(|b| Uri::parse(&b.uri).is_ok_and(|s| s.equivalent(&u.uri)));
                        if hit.is_some_and(stale) {
                            return RegisterReply::new(400, "Bad Request: CSeq not higher than the binding's");
                        }
                    }
                }
                // The bindings after the request: more than the limit, and
                // nothing is applied.
                let bound = |u: &Update<'_>| existing.is_some_and(|r| r.bindings.iter().any(|b| Uri::parse(&b.uri).is_ok_and(|s| s.equivalent(&u.uri))));
                let kept = existing.map_or(0, |r| r.bindings.len()) - updates.iter().filter(|u| u.expires == 0 && bound(u)).count();
                let added = updates.iter().filter(|u| u.expires != 0 && !bound(u)).count();
                if added > 0 && kept + added > self.cfg.max_bindings {
                    return Limit::BindingsPerAor.reply(0);
                }
                // Every check passed: apply.
                let before: Vec<Box<[u8]>> = existing.map(|r| r.bindings.iter().map(|b| b.uri.clone()).collect()).unwrap_or_default();
                let reg = self.regs.get_or_insert_with(&aor[..], Default::default);
                if third_party {
                    reg.registered_by = Some(source);
                }
                for u in updates {
                    let pos = reg.bindings.iter().position(|b| Uri::parse(&b.uri).is_ok_and(|s| s.equivalent(&u.uri)));
                    if u.expires == 0 {
                        if let Some(p) = pos {
                            reg.bindings.remove(p);
                        }
                        continue;
                    }
                    let at = now + Duration::from_secs(u.expires as u64);
                    let pua = allows_presence || u.na.params().value(b"events").is_some_and(|v| events_include(v, b"presence"));
                    let binding = Binding {
                        uri: u.uri.as_bytes().into(),
                        params: params_without_expires(&u.na),
                        call_id: call_id.into(),
                        cseq,
                        expires_at: at,
                        flow,
                        pua,
                    };
                    place(&mut reg.bindings, pos, binding);
                }
                self.schedule_expiry(&aor);
                self.settle(&aor, before, changes);
                self.ok(&aor, now)
            }
        }
    }

    /// 200 listing every binding of `aor` with its remaining expiry.
    fn ok(&self, aor: &[u8], now: Instant) -> RegisterReply {
        let mut headers = Vec::new();
        if let Some(reg) = self.regs.get(aor) {
            for b in &reg.bindings {
                let mut v = Vec::with_capacity(b.uri.len() + b.params.len() + 24);
                v.push(b'<');
                v.extend_from_slice(&b.uri);
                v.push(b'>');
                v.extend_from_slice(&b.params);
                v.extend_from_slice(b";expires=");
                v.extend_from_slice(itoa::Buffer::new().format(b.remaining(now)).as_bytes());
                headers.push((HeaderName::Contact, v));
            }
        }
        RegisterReply { code: 200, reason: "OK", headers, limit: None }
    }

    /// Applies a reginfo document from a reg-event NOTIFY (RFC 3680) to the
    /// AORs it names that `owned` accepts: a full document replaces their
    /// bindings with its active contacts; a partial one adds or refreshes
    /// active contacts and removes terminated ones; a terminated
    /// registration removes them all.
    /// `scscf` is the S-CSCF the NOTIFY came from: requests to these
    /// contacts go through it.
    pub fn apply_reginfo(
        &mut self,
        now: Instant,
        info: &reginfo::RegInfo,
        call_id: &[u8],
        scscf: Peer,
        owned: impl Fn(&[u8]) -> bool,
        changes: &mut Vec<RegChange>,
    ) {
        for r in &info.registrations {
            let Ok(uri) = Uri::parse(r.aor.as_bytes()) else { continue };
            let aor: Box<[u8]> = uri.aor().into();
            if !owned(&aor) {
                continue;
            }
            let reg = self.regs.get_or_insert_with(&aor[..], Default::default);
            reg.registered_by.get_or_insert(scscf.addr);
            let before: Vec<Box<[u8]>> = reg.bindings.iter().map(|b| b.uri.clone()).collect();
            if info.full || r.state == "terminated" {
                reg.bindings.retain(|b| r.contacts.iter().any(|c| c.active && same_uri(&b.uri, c.uri.as_bytes())));
            }
            if r.state != "terminated" {
                for c in &r.contacts {
                    let pos = reg.bindings.iter().position(|b| same_uri(&b.uri, c.uri.as_bytes()));
                    if !c.active {
                        if let Some(p) = pos {
                            reg.bindings.remove(p);
                        }
                        continue;
                    }
                    let secs = c.expires.unwrap_or(self.cfg.default_expires).min(self.cfg.max_expires).max(1);
                    let at = now + Duration::from_secs(secs as u64);
                    let binding = Binding {
                        uri: c.uri.as_bytes().into(),
                        params: Box::default(),
                        call_id: call_id.into(),
                        cseq: 0,
                        expires_at: at,
                        flow: scscf,
                        pua: c.pua,
                    };
                    place(&mut reg.bindings, pos, binding);
                }
            }
            self.schedule_expiry(&aor);
            self.settle(&aor, before, changes);
        }
    }

    /// Makes sure the wheel looks at `aor` by its earliest binding expiry.
    fn schedule_expiry(&mut self, aor: &[u8]) {
        let Some(reg) = self.regs.get_mut(aor) else { return };
        reg.recheck.ensure(&mut self.wheel, reg.earliest_expiry(), || Expiry { aor: aor.into() });
    }

    /// After a change to `aor`'s bindings: forget an empty registration and
    /// report the change if the set of contacts differs from `before`.
    fn settle(&mut self, aor: &[u8], before: Vec<Box<[u8]>>, changes: &mut Vec<RegChange>) {
        let after: Vec<Box<[u8]>> = self.regs.get(aor).map(|r| r.bindings.iter().map(|b| b.uri.clone()).collect()).unwrap_or_default();
        if after.is_empty() {
            self.regs.remove(aor);
        }
        if before != after {
            changes.push(RegChange { aor: aor.into(), contacts: after });
        }
    }

    /// Every AOR with a registration.
    pub fn aors(&self) -> Vec<Box<[u8]>> {
        self.regs.iter().map(|(aor, _)| aor.clone()).collect()
    }

    /// Puts back an AOR's registration from durable state (a restart):
    /// it replaces whatever `aor` had. Bindings whose time passed while
    /// the server was down are left out; the contacts left are reported
    /// like any change.
    pub fn restore(&mut self, now: Instant, aor: &[u8], registered_by: Option<SocketAddr>, mut bindings: Vec<Binding>, changes: &mut Vec<RegChange>) {
        let before: Vec<Box<[u8]>> = self.regs.get(aor).map(|r| r.bindings.iter().map(|b| b.uri.clone()).collect()).unwrap_or_default();
        bindings.retain(|b| b.expires_at > now);
        if bindings.is_empty() {
            self.regs.remove(aor);
        } else {
            let reg = self.regs.get_or_insert_with(aor, Registration::default);
            reg.bindings = bindings;
            reg.registered_by = registered_by;
            self.schedule_expiry(aor);
        }
        self.settle(aor, before, changes);
    }

    /// Removes the bindings whose time has come; reports each AOR whose
    /// set of contacts changed.
    pub fn on_time(&mut self, now: Instant, changes: &mut Vec<RegChange>) {
        self.wheel.advance(now, &mut self.fired);
        for Expiry { aor } in self.fired.drain(..) {
            let Some(reg) = self.regs.get_mut(&aor) else { continue };
            reg.recheck.fired(now);
            let before = reg.bindings.len();
            reg.bindings.retain(|b| b.expires_at > now);
            reg.recheck.ensure(&mut self.wheel, reg.earliest_expiry(), || Expiry { aor: aor.clone() });
            if reg.bindings.len() != before {
                let contacts: Vec<Box<[u8]>> = reg.bindings.iter().map(|b| b.uri.clone()).collect();
                if contacts.is_empty() {
                    self.regs.remove(&aor);
                }
                changes.push(RegChange { aor, contacts });
            }
        }
    }
}

/// Replaces the binding at `pos` or adds it.
fn place(bindings: &mut Vec<Binding>, pos: Option<usize>, binding: Binding) {
    match pos {
        Some(p) => bindings[p] = binding,
        None => bindings.push(binding),
    }
}

/// Whether an RFC 3840 `events` feature value (`"presence,reg"`, quoted
/// or not) lists `package`.
pub fn events_include(value: &[u8], package: &[u8]) -> bool {
    let v = value.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(value);
    v.split(|&c| c == b',').any(|e| e.trim_ascii().eq_ignore_ascii_case(package))
}

/// RFC 3261 19.1.4 equivalence of two URIs given as text.
fn same_uri(a: &[u8], b: &[u8]) -> bool {
    match (Uri::parse(a), Uri::parse(b)) {
        (Ok(x), Ok(y)) => x.equivalent(&y),
        _ => a == b,
    }
}

/// The Contact's header parameters minus `expires`, each as `;name[=value]`.
fn params_without_expires(na: &NameAddr<'_>) -> Box<[u8]> {
    let mut out = Vec::new();
    for p in na.params() {
        if !p.name.eq_ignore_ascii_case(b"expires") {
            p.write_to(&mut out);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests;
