//! The shard's durable state: after every change it acknowledges, the
//! whole state of the changed key goes to its journal (`storage::record`);
//! at a restart the records are put back.
//!
//! What is recorded so far: registrations and PUBLISHed publications.
//! Expiries are not recorded: a record carries absolute times, and what
//! expired while the server was down is left out when it is put back.

use super::Shard;
use super::outbox::Outbox;
use crate::core::limits::Limit;
use crate::presence::pidf::Element;
use crate::presence::publication::Restored;
use crate::registrar::Binding;
use crate::storage::journal::Journal;
use crate::storage::record::{BindingState, ElementState, PublicationState, Record};
use std::time::{Duration, Instant, SystemTime};

/// Maps the shard's monotonic clock to Unix time, the time of records.
#[derive(Clone, Copy, Debug)]
pub struct UnixClock {
    at: Instant,
    unix_ms: u64,
}

impl UnixClock {
    /// `at` is `unix_ms` milliseconds after the Unix epoch.
    pub fn new(at: Instant, unix_ms: u64) -> Self {
        UnixClock { at, unix_ms }
    }

    /// The system clock's reading now.
    pub fn system(now: Instant) -> Self {
        let unix_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        UnixClock { at: now, unix_ms }
    }

    pub fn to_unix_ms(&self, t: Instant) -> u64 {
        match t.checked_duration_since(self.at) {
            Some(after) => self.unix_ms.saturating_add(after.as_millis() as u64),
            None => self.unix_ms.saturating_sub(self.at.duration_since(t).as_millis() as u64),
        }
    }

    /// A time that is already past maps to `self.at` minus the
    /// difference, or to `self.at` if the `Instant` cannot go that far back.
    pub fn to_instant(&self, unix_ms: u64) -> Instant {
        if unix_ms >= self.unix_ms {
            self.at + Duration::from_millis(unix_ms - self.unix_ms)
        } else {
            self.at.checked_sub(Duration::from_millis(self.unix_ms - unix_ms)).unwrap_or(self.at)
        }
    }
}

/// The shard's journal and its clock.
pub struct Durable {
    pub journal: Journal,
    pub clock: UnixClock,
}

/// A record that cannot be put back into this build's tables.
#[derive(Debug, PartialEq, Eq)]
pub struct Unrestorable(pub &'static str);

fn element_kind(kind: &[u8]) -> Result<&'static str, Unrestorable> {
    ["tuple", "person", "device", "other"].into_iter().find(|k| k.as_bytes() == kind).ok_or(Unrestorable("an element of an unknown kind"))
}

fn text(bytes: &[u8]) -> Result<Box<str>, Unrestorable> {
    std::str::from_utf8(bytes).map(Into::into).map_err(|_| Unrestorable("an element that is not UTF-8"))
}

impl Shard {
    /// Starts recording changes in `journal` (a server with a data
    /// directory); records written from now on carry `clock`'s times.
    pub fn attach_journal(&mut self, journal: Journal, clock: UnixClock) {
        self.durable = Some(Durable { journal, clock });
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.durable.as_ref().map(|d| &d.journal)
    }

    pub fn journal_mut(&mut self) -> Option<&mut Journal> {
        self.durable.as_mut().map(|d| &mut d.journal)
    }

    /// A change could not be made durable now: the journal is behind its
    /// device or the device fails.
    pub(super) fn journal_refuses(&self) -> Option<Limit> {
        self.durable.as_ref().filter(|d| d.journal.is_backlogged()).map(|_| Limit::Journal)
    }

    /// Records the registration of `aor` as it now stands.
    pub(super) fn record_registration(&mut self, now: Instant, aor: &[u8]) {
        let Some(d) = &mut self.durable else { return };
        let clock = d.clock;
        let reg = self.registrar.registration(aor);
        let bindings = reg
            .map(|r| {
                r.bindings
                    .iter()
                    .map(|b| BindingState {
                        uri: &b.uri,
                        params: &b.params,
                        call_id: &b.call_id,
                        cseq: b.cseq,
                        expires_unix_ms: clock.to_unix_ms(b.expires_at),
                        flow: b.flow,
                        pua: b.pua,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let record = Record::Registration { aor, registered_by: reg.and_then(|r| r.registered_by), bindings };
        d.journal.append(now, |out| record.encode(out));
    }

    /// Records the PUBLISHed publications of `aor` as they now stand.
    pub(super) fn record_publications(&mut self, now: Instant, aor: &[u8]) {
        let Some(d) = &mut self.durable else { return };
        let clock = d.clock;
        let publications = self
            .publications
            .published(aor)
            .map(|(etag, at, elements)| PublicationState {
                etag,
                expires_unix_ms: clock.to_unix_ms(at),
                elements: elements
                    .iter()
                    .map(|e| ElementState { kind: e.kind.as_bytes(), id: e.id.as_deref().map(str::as_bytes), xml: e.xml.as_bytes() })
                    .collect(),
            })
            .collect();
        let record = Record::Publications { aor, publications };
        d.journal.append(now, |out| record.encode(out));
    }

    /// Records the state of every key: the start of a new generation of
    /// journals, after which the older ones are no longer needed.
    /// Returns the position after the last of these records.
    pub fn checkpoint(&mut self, now: Instant) -> Option<u64> {
        self.durable.as_ref()?;
        for aor in self.registrar.aors() {
            self.record_registration(now, &aor);
        }
        for aor in self.publications.published_aors() {
            self.record_publications(now, &aor);
        }
        self.journal().map(Journal::appended)
    }

    /// Puts back one record read from a journal (a restart). `clock` maps
    /// its times; what expired before `now` is left out.
    pub fn restore(&mut self, now: Instant, clock: UnixClock, record: &Record<'_>, out: &mut Outbox) -> Result<(), Unrestorable> {
        match record {
            Record::Registration { aor, registered_by, bindings } => {
                let bindings = bindings
                    .iter()
                    .map(|b| Binding {
                        uri: b.uri.into(),
                        params: b.params.into(),
                        call_id: b.call_id.into(),
                        cseq: b.cseq,
                        expires_at: clock.to_instant(b.expires_unix_ms),
                        flow: b.flow,
                        pua: b.pua,
                    })
                    .collect();
                self.registrar.restore(now, aor, *registered_by, bindings, &mut self.reg_changes);
                self.emit_reg_changes(now, out);
            }
            Record::Publications { aor, publications } => {
                let mut pubs = Vec::with_capacity(publications.len());
                for p in publications {
                    let elements: Result<Box<[Element]>, Unrestorable> =
                        p.elements.iter().map(|e| Ok(Element { kind: element_kind(e.kind)?, id: e.id.map(text).transpose()?, xml: text(e.xml)? })).collect();
                    pubs.push(Restored { etag: p.etag.into(), expires_at: clock.to_instant(p.expires_unix_ms), elements: elements? });
                }
                self.publications.restore(now, aor, pubs, &mut self.doc_changes, &super::doc_readers(&self.presentity_watchers, out));
                self.emit_doc_changes(out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unix_clock_maps_both_ways() {
        let t0 = Instant::now();
        let c = UnixClock::new(t0, 1_800_000_000_000);
        assert_eq!(c.to_unix_ms(t0 + Duration::from_secs(3600)), 1_800_003_600_000);
        assert_eq!(c.to_instant(1_800_003_600_000), t0 + Duration::from_secs(3600));
        // A restart an hour later: what expired in between is in its past.
        let later = UnixClock::new(t0, 1_800_003_600_000);
        assert!(later.to_instant(1_800_000_060_000) <= t0);
    }
}
