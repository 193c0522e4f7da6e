//! What the journal keeps of subscriptions, and putting them back.
//!
//! A subscription is recorded when it is created or refreshed, and when
//! it ends. Its NOTIFYs' CSeq is not recorded per NOTIFY, which would be
//! a record per NOTIFY of every fan-out: a record reserves
//! [`CSEQ_RESERVE`] CSeqs ahead, a NOTIFY that passes the reservation
//! records the subscription again, and a restored dialog continues from
//! the reservation, above every NOTIFY sent before the restart.

use super::*;

/// CSeqs a subscription's record reserves ahead of its NOTIFYs.
pub const CSEQ_RESERVE: u32 = 64;

/// A dialog by Call-ID and local tag.
pub type DialogKey = (Box<[u8]>, Box<[u8]>);

/// Subscriptions whose record is due: changed (by id), or ended (by
/// dialog).
#[derive(Default)]
pub(super) struct Marks {
    pub changed: Vec<u64>,
    pub ended: Vec<DialogKey>,
}

/// A subscription's durable state, borrowed from the table.
pub struct DurableView<'a> {
    pub aor: &'a [u8],
    pub watcher: &'a [u8],
    pub call_id: &'a [u8],
    pub local_tag: &'a [u8],
    pub local_uri: &'a [u8],
    pub remote_tag: &'a [u8],
    pub remote_uri: &'a [u8],
    pub remote_target: &'a [u8],
    pub event_id: &'a [u8],
    pub route_set: &'a [Box<[u8]>],
    pub package: Package,
    pub shown: Shown,
    pub to: Peer,
    pub remote_cseq: u32,
    /// Above every CSeq sent.
    pub local_cseq: u32,
    pub expires_at: Instant,
}

/// A subscription read back from the journal.
pub struct Restore<'a> {
    pub texts: [&'a [u8]; TEXTS],
    pub route_set: Vec<&'a [u8]>,
    pub package: Package,
    pub shown: Shown,
    pub to: Peer,
    pub remote_cseq: u32,
    pub local_cseq: u32,
    pub expires_at: Instant,
}

impl Package {
    pub fn code(self) -> u8 {
        match self {
            Package::Presence => 0,
            Package::Winfo => 1,
        }
    }
    pub fn from_code(c: u8) -> Option<Package> {
        [Package::Presence, Package::Winfo].into_iter().find(|p| p.code() == c)
    }
}

impl Shown {
    pub fn code(self) -> u8 {
        match self {
            Shown::Real => 0,
            Shown::Neutral => 1,
            Shown::Pending => 2,
        }
    }
    pub fn from_code(c: u8) -> Option<Shown> {
        [Shown::Real, Shown::Neutral, Shown::Pending].into_iter().find(|s| s.code() == c)
    }
}

/// Why a recorded subscription is not put back.
#[derive(Debug, PartialEq, Eq)]
pub struct NotRestored(pub &'static str);

impl Watchers {
    /// From now on, keep note of what the journal must record.
    pub fn track_durable(&mut self) {
        self.marks.get_or_insert_with(Marks::default);
    }

    pub(super) fn mark_changed(&mut self, id: u64) {
        if let Some(m) = &mut self.marks {
            m.changed.push(id);
        }
    }

    /// The subscriptions to record since the last call: changed ones (each
    /// once) and ended ones (Call-ID, local tag).
    pub fn take_marks(&mut self) -> (Vec<u64>, Vec<DialogKey>) {
        let Some(m) = &mut self.marks else { return Default::default() };
        let mut changed = std::mem::take(&mut m.changed);
        changed.sort_unstable();
        changed.dedup();
        (changed, std::mem::take(&mut m.ended))
    }

    /// Whether anything waits in [`Watchers::take_marks`].
    pub fn has_marks(&self) -> bool {
        self.marks.as_ref().is_some_and(|m| !m.changed.is_empty() || !m.ended.is_empty())
    }

    /// Every subscription's id (a checkpoint records them all), those of
    /// one presentity together: a start that puts them back in this order
    /// finds the presentity's list, and the subscription it compares
    /// against, still in the cache for all but the first (3 million
    /// records a shard, 5 watchers a presentity: 6.8 s against 8.2 s on
    /// average over runs on a noisy VM).
    pub fn ids(&self) -> Vec<u64> {
        self.index.ids_by_aor().collect()
    }

    /// What the journal records of subscription `id`. Its reservation is
    /// renewed here: the record about to be written promises the new one.
    pub fn durable_view(&mut self, id: u64) -> Option<DurableView<'_>> {
        let s = self.subs.get_mut(&id)?;
        s.cseq_reserved = s.local_cseq + CSEQ_RESERVE;
        let s = &**s;
        Some(DurableView {
            aor: s.texts.get(Text::Aor),
            watcher: s.texts.get(Text::Watcher),
            call_id: s.texts.get(Text::CallId),
            local_tag: s.texts.get(Text::LocalTag),
            local_uri: s.texts.get(Text::LocalUri),
            remote_tag: s.texts.get(Text::RemoteTag),
            remote_uri: s.texts.get(Text::RemoteUri),
            remote_target: s.texts.get(Text::RemoteTarget),
            event_id: s.texts.get(Text::EventId),
            route_set: &s.route_set,
            package: s.package,
            shown: s.shown,
            to: s.to,
            remote_cseq: s.remote_cseq,
            local_cseq: s.cseq_reserved,
            expires_at: s.expires_at,
        })
    }

    /// Puts back a recorded subscription (a restart), in place of the same
    /// dialog's earlier record, under the new `ask`; returns its id. It
    /// shows nothing until [`Watchers::rewatched`] brings its presentity's
    /// answer.
    pub fn restore(&mut self, now: Instant, r: Restore<'_>, ask: u64) -> Result<u64, NotRestored> {
        if r.texts.iter().any(|t| t.len() > u16::MAX as usize) {
            return Err(NotRestored("a text longer than any request"));
        }
        // Not noted for the journal: what is restored is already in it.
        let marks = self.marks.take();
        if let Some(old) = self.index.dialog(&self.subs, r.texts[Text::CallId as usize], r.texts[Text::LocalTag as usize]) {
            self.remove(old);
        }
        // One that expired while the server was down is put back to end
        // now, as its expiry would have: the next tick sends its watcher
        // the timeout NOTIFY (RFC 6665 4.4.1) and tells its presentity.
        let expires_at = r.expires_at.max(now);
        self.next += 1;
        let id = self.next;
        let sub = Box::new(Subscription {
            // The watcher list comes with the presentity's answer. A
            // winfo document's version goes up by one per NOTIFY, as
            // the CSeq does from a higher start: the reserved CSeq is
            // above every version sent, so the full state sent after
            // the restart supersedes what the subscriber holds
            // (RFC 3858 4.4).
            winfo: (r.package == Package::Winfo).then(|| Box::new(WinfoView { version: r.local_cseq, ..Default::default() })),
            route_set: r.route_set.iter().map(|x| Box::<[u8]>::from(*x)).collect(),
            remote_cseq: r.remote_cseq,
            local_cseq: r.local_cseq,
            cseq_reserved: r.local_cseq,
            rewatching: r.expires_at > now,
            ..Subscription::new(Texts::new(r.texts), r.package, ask, r.shown, r.to, expires_at)
        });
        self.insert(id, sub);
        self.marks = marks;
        Ok(id)
    }

    /// A restored winfo subscription's presentity answered with its
    /// watcher list: a full-state NOTIFY is due.
    pub fn rewinfo(&mut self, now: Instant, id: u64, watchers: Vec<WatcherState>, ready: &mut Vec<u64>) {
        let Some(s) = self.subs.get_mut(&id) else { return };
        let Some(v) = s.winfo.as_mut() else { return };
        v.list = watchers;
        v.changes.clear();
        v.sent_full = false;
        s.dirty = true;
        Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
    }

    /// Subscription `id`'s dialog: its Call-ID and local tag.
    pub fn dialog_of(&self, id: u64) -> Option<(&[u8], &[u8])> {
        self.subs.get(&id).map(|s| (s.call_id(), s.local_tag()))
    }

    /// Every subscription's id and local tag.
    pub fn tags(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.subs.iter().map(|(id, s)| (*id, s.local_tag()))
    }

    /// The subscription of dialog (`call_id`, `local_tag`), if held.
    pub fn by_dialog(&self, call_id: &[u8], local_tag: &[u8]) -> Option<u64> {
        self.index.dialog(&self.subs, call_id, local_tag)
    }

    /// Forgets subscription `id` without noting its end for the journal
    /// (another node holds it now, or its log is about to bring it back):
    /// returns its AOR and ask, for the presentity's shard.
    pub fn forget(&mut self, id: u64) -> Option<(Box<[u8]>, u64)> {
        let marks = self.marks.take();
        let gone = self.remove(id);
        self.marks = marks;
        gone
    }

    /// Removes the dialog a journal's end record names (a restart).
    pub fn restore_end(&mut self, call_id: &[u8], local_tag: &[u8]) {
        let marks = self.marks.take();
        if let Some(id) = self.index.dialog(&self.subs, call_id, local_tag) {
            self.remove(id);
        }
        self.marks = marks;
    }

    /// What restored subscription `id` asks its presentity's shard: its
    /// ask, presentity, watcher and package; `None` once it has ended (or
    /// was answered).
    pub fn restored_ask(&self, id: u64) -> Option<(u64, &[u8], &[u8], Package)> {
        self.subs.get(&id).filter(|s| s.rewatching).map(|s| (s.ask, s.aor(), s.watcher(), s.package))
    }

    /// The restored subscription an answer to `ask` is for, if it is one
    /// still waiting (a new subscription is made only when its answer
    /// comes, so an answer to the ask of one that exists is a restored
    /// one's).
    pub fn take_restored(&mut self, ask: u64) -> Option<u64> {
        let id = *self.by_ask.get(&ask)?;
        let s = self.subs.get_mut(&id)?;
        std::mem::replace(&mut s.rewatching, false).then_some(id)
    }

    /// A restored subscription's presentity answered: what it is shown,
    /// and the document. A NOTIFY is due (`ready`) only if that differs
    /// from what the watcher was last told before the restart.
    pub fn rewatched(&mut self, now: Instant, id: u64, shown: Shown, doc: Option<(u64, Arc<[u8]>)>, changed: bool, ready: &mut Vec<u64>) {
        let Some(s) = self.subs.get_mut(&id) else { return };
        // A NOTIFY sent since the restart (a refresh before this answer)
        // carried no document: the watcher gets the real one now even if
        // nothing changed.
        let news = changed || s.shown != shown || s.last_notify.is_some();
        s.shown = shown;
        if let Some((version, doc)) = doc {
            s.version = version;
            s.doc = Some(doc);
        }
        if news {
            s.dirty = true;
            Self::ready_or_schedule(&self.cfg, &mut self.wheel, id, s, now, ready);
        }
    }
}
