//! What a NOTIFY must be: for the presentity the watch subscribed to, with
//! a Subscription-State, a well-formed PIDF document about that
//! presentity, and a published version that was really sent, never older
//! than one this watch already saw. The first NOTIFY showing a version
//! gives the publish-to-NOTIFY latency.

use crate::scenario::Marker;
use hdrhistogram::Histogram;
use presence_engine::sip::{HeaderName, Message};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WatchState {
    Sent,
    Accepted,
    Refused,
    Ended,
}

/// One subscription this worker made; small, so a worker can hold
/// millions.
#[derive(Clone, Debug)]
pub struct Watch {
    presentity: u32,
    /// Numbers the watcher's user part (see `Scenario::watcher_name`).
    pub watcher: u32,
    /// The server's To tag, from the 200: needed to unsubscribe.
    pub to_tag: Option<Box<[u8]>>,
    last_seq: u32,
    /// CSeq of the last NOTIFY: one not above it is a retransmission.
    last_notify_cseq: u32,
    state: WatchState,
    notified: bool,
}

impl Watch {
    pub fn new(presentity: usize, watcher: usize) -> Watch {
        Watch {
            presentity: presentity as u32,
            watcher: watcher as u32,
            to_tag: None,
            last_seq: 0,
            last_notify_cseq: 0,
            state: WatchState::Sent,
            notified: false,
        }
    }
    pub fn presentity(&self) -> usize {
        self.presentity as usize
    }
    /// The SUBSCRIBE's final answer arrived with the dialog's To tag (or
    /// it failed or timed out: `ok` false).
    pub fn answered(&mut self, ok: bool, to_tag: Option<&[u8]>) {
        match self.state {
            WatchState::Sent => {
                self.state = if ok { WatchState::Accepted } else { WatchState::Refused };
                self.to_tag = to_tag.filter(|_| ok).map(Box::from);
            }
            // The only in-dialog SUBSCRIBE sent is the one ending it.
            WatchState::Accepted => self.state = WatchState::Ended,
            _ => {}
        }
    }
    /// Still open at the server, as far as this side knows.
    pub fn is_open(&self) -> bool {
        self.state == WatchState::Accepted && self.to_tag.is_some()
    }
    pub fn accepted(&self) -> bool {
        matches!(self.state, WatchState::Accepted | WatchState::Ended)
    }
    /// Not answered yet, or accepted and not notified yet.
    pub fn awaiting_first_notify(&self) -> bool {
        self.state == WatchState::Sent || self.state == WatchState::Accepted && !self.notified
    }
}

/// NOTIFY counts and the publish-to-NOTIFY latency.
pub struct NotifyStats {
    /// Distinct NOTIFYs (retransmissions not counted).
    pub received: u64,
    /// NOTIFYs received again (our 200 was lost or late).
    pub retransmitted: u64,
    /// NOTIFYs whose body was fully parsed as PIDF.
    pub validated: u64,
    pub mismatches: u64,
    /// The first few mismatches, said in words.
    pub examples: Vec<String>,
    /// µs from sending a PUBLISH to the first NOTIFY showing its version.
    pub latency: Histogram<u64>,
}

impl NotifyStats {
    pub fn new() -> NotifyStats {
        NotifyStats { received: 0, retransmitted: 0, validated: 0, mismatches: 0, examples: Vec::new(), latency: crate::engine::new_histogram() }
    }

    /// Forgets the setup phase's NOTIFYs (their mismatches stay).
    pub fn reset_counts(&mut self) {
        self.received = 0;
        self.retransmitted = 0;
        self.validated = 0;
        self.latency.reset();
    }

    fn mismatch(&mut self, why: String) {
        self.mismatches += 1;
        if self.examples.len() < 5 {
            self.examples.push(why);
        }
    }

    /// Checks one NOTIFY for watch `w`. `published[p]` is the newest
    /// version sent for presentity p; `sample` is how many NOTIFYs share one
    /// full PIDF validation (1: every one).
    #[allow(clippy::too_many_arguments)]
    pub fn check(&mut self, w: &mut Watch, msg: &Message<'_>, domain: &str, published: &[AtomicU32], run: u32, epoch: Instant, sample: u64) {
        let cseq = msg.cseq().seq;
        if w.notified && cseq <= w.last_notify_cseq {
            self.retransmitted += 1;
            return;
        }
        w.last_notify_cseq = cseq;
        self.received += 1;
        // A subscription's first NOTIFY shows whatever is current, not a
        // new version: it is not a publish-to-NOTIFY delay.
        let first = !std::mem::replace(&mut w.notified, true);
        let p = w.presentity as usize;
        let user = format!("ue{p}");
        if msg.from().uri().user() != Some(user.as_bytes()) {
            let from = String::from_utf8_lossy(msg.from().uri().as_bytes()).into_owned();
            return self.mismatch(format!("NOTIFY for the watch of {user} comes from {from}"));
        }
        match msg.header(HeaderName::SubscriptionState) {
            Some(s) if s.len() >= 10 && s[..10].eq_ignore_ascii_case(b"terminated") => w.state = WatchState::Ended,
            Some(_) => {}
            None => return self.mismatch("NOTIFY without Subscription-State".into()),
        }
        let body = msg.body();
        if body.is_empty() {
            return;
        }
        let pidf = msg.content_type().is_some_and(|t| t.is("application", "pidf+xml"));
        if !pidf {
            return self.mismatch(format!("NOTIFY body for {user} is not application/pidf+xml"));
        }
        if sample <= 1 || self.received.is_multiple_of(sample) {
            self.validated += 1;
            match presence_engine::presence::pidf::parse(body) {
                Ok(doc) => {
                    let expected = format!("{user}@{domain}");
                    let entity = doc.entity.split_once(':').map_or(doc.entity.as_str(), |(_, rest)| rest);
                    if entity != expected {
                        return self.mismatch(format!("PIDF entity {} in a NOTIFY for {user}", doc.entity));
                    }
                }
                Err(e) => {
                    return self.mismatch(format!("NOTIFY for {user} carries invalid PIDF: {e}"));
                }
            }
        }
        // Several publications may be composed; the newest version counts.
        let mut newest: Option<Marker> = None;
        for found in Marker::all(body) {
            let Some(m) = found else {
                return self.mismatch(format!("NOTIFY for {user} has a garbled version marker"));
            };
            if m.run != run {
                continue;
            }
            if m.presentity != p {
                return self.mismatch(format!("NOTIFY for {user} shows ue{}'s publication", m.presentity));
            }
            if newest.is_none_or(|n| m.seq > n.seq) {
                newest = Some(m);
            }
        }
        let Some(m) = newest else { return };
        if m.seq > published[p].load(Ordering::Acquire) {
            return self.mismatch(format!("NOTIFY for {user} shows version {} that was never published", m.seq));
        }
        if m.seq < w.last_seq {
            return self.mismatch(format!("NOTIFY for {user} went back from version {} to {}", w.last_seq, m.seq));
        }
        if m.seq > w.last_seq {
            w.last_seq = m.seq;
            if !first {
                let now = epoch.elapsed().as_micros() as u64;
                let _ = self.latency.record(now.saturating_sub(m.sent_us).max(1));
            }
        }
    }
}

impl Default for NotifyStats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_engine::sip::Limits;

    fn notify(from_user: &str, state: &str, body: &str) -> Vec<u8> {
        static CSEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        let cseq = CSEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let ct = if body.is_empty() { String::new() } else { "Content-Type: application/pidf+xml\r\n".into() };
        format!(
            "NOTIFY sip:lgw0@127.0.0.1:5000 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
From: <sip:{from_user}@example.com>;tag=a\r\nTo: <sip:lgw0@example.com>;tag=w0\r\nCall-ID: c\r\nCSeq: {cseq} NOTIFY\r\n\
Event: presence\r\nSubscription-State: {state}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn doc(entity: &str, note: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{entity}\">\
<tuple id=\"t\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
        )
    }

    fn run(stats: &mut NotifyStats, w: &mut Watch, published: &[AtomicU32], bytes: &[u8]) {
        let m = Message::parse(bytes, &Limits::default()).unwrap();
        stats.check(w, &m, "example.com", published, 1, Instant::now(), 1);
    }

    #[test]
    fn good_notifies_pass_and_time_each_new_version_once() {
        let published: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(2)).collect();
        let (mut s, mut w) = (NotifyStats::new(), Watch::new(1, 0));
        assert!(w.awaiting_first_notify());
        w.answered(true, Some(b"t"));
        assert!(w.is_open());
        assert!(w.awaiting_first_notify());
        run(&mut s, &mut w, &published, &notify("ue1", "active;expires=60", ""));
        run(&mut s, &mut w, &published, &notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:1:0")));
        run(&mut s, &mut w, &published, &notify("ue1", "active", &doc("pres:ue1@example.com", "lg:1:1:2:0")));
        run(&mut s, &mut w, &published, &notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:2:0")));
        // A document an earlier run left on the server is not this run's to check.
        run(&mut s, &mut w, &published, &notify("ue1", "active", &doc("sip:ue1@example.com", "lg:2:1:99:0")));
        assert_eq!((s.received, s.mismatches), (5, 0), "{:?}", s.examples);
        assert_eq!(s.latency.len(), 2, "versions 1 and 2 timed once each (the first NOTIFY is never timed)");
        assert!(!w.awaiting_first_notify());
        // The same NOTIFY again is a retransmission, not a new one.
        let again = notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:2:0"));
        run(&mut s, &mut w, &published, &again);
        run(&mut s, &mut w, &published, &again);
        assert_eq!((s.received, s.retransmitted), (6, 1));
        // A new subscription whose first NOTIFY shows version 2 does not time it.
        let mut fresh = Watch::new(1, 1);
        run(&mut s, &mut fresh, &published, &notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:2:0")));
        assert_eq!(s.latency.len(), 2);
        run(&mut s, &mut w, &published, &notify("ue1", "terminated;reason=timeout", ""));
        assert_eq!(w.state, WatchState::Ended);
        assert!(!w.is_open());
    }

    #[test]
    fn each_kind_of_wrong_notify_is_a_mismatch() {
        let published: Vec<AtomicU32> = (0..3).map(|_| AtomicU32::new(2)).collect();
        let cases = [
            (notify("ue2", "active", ""), "comes from"),
            (notify("ue1", "active", &doc("sip:ue2@example.com", "x")), "entity"),
            (notify("ue1", "active", "<presence"), "invalid PIDF"),
            (notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:2:1:0")), "ue2's publication"),
            (notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:9:0")), "never published"),
            (notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:x")), "garbled"),
        ];
        for (bytes, why) in cases {
            let (mut s, mut w) = (NotifyStats::new(), Watch::new(1, 0));
            run(&mut s, &mut w, &published, &bytes);
            assert_eq!(s.mismatches, 1, "{why}");
            assert!(s.examples[0].contains(why), "{:?} should say {why}", s.examples);
        }
        let (mut s, mut w) = (NotifyStats::new(), Watch::new(1, 0));
        run(&mut s, &mut w, &published, &notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:2:0")));
        run(&mut s, &mut w, &published, &notify("ue1", "active", &doc("sip:ue1@example.com", "lg:1:1:1:0")));
        assert!(s.examples[0].contains("went back"), "{:?}", s.examples);
    }
}
