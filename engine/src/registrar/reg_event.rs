//! The server as a subscriber to the reg event package (RFC 3680): for an
//! AOR registered by a trusted S-CSCF, it SUBSCRIBEs to `Event: reg` at
//! that S-CSCF and applies the `application/reginfo+xml` NOTIFYs. Sans-IO:
//! it builds requests and judges NOTIFYs; the shard sends and answers.

use super::reginfo::RegInfo;
use crate::core::entropy::Entropy;
use crate::core::parted::PartedMap;
use crate::core::peer::Peer;
use crate::core::subscriber::{self, ClientDialog, Package, Target};
use crate::core::timer::TimerWheel;
use crate::sip::Message;
use crate::sip::typed::SubState;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One reg-event subscription this shard holds (a dialog it initiated).
#[derive(Clone, Debug)]
pub struct RegSubscription {
    /// Canonical AOR it watches.
    pub aor: Box<[u8]>,
    /// The AOR as a URI, for the Request-URI and To.
    pub aor_uri: Box<[u8]>,
    pub target: Peer,
    pub dialog: ClientDialog,
    /// Version of the last reginfo applied.
    pub version: Option<u32>,
    /// When to send the refreshing SUBSCRIBE.
    pub refresh_at: Option<Instant>,
}

/// What a NOTIFY on a reg subscription asks the shard to do.
#[derive(Debug, PartialEq)]
pub enum NotifyVerdict {
    /// Answer with this status (and reason); nothing to apply.
    Reject(u16, &'static str),
    /// 200, and apply this document to the registrar.
    Apply(RegInfo),
    /// 200, nothing to apply (no body, or an old version).
    Ignore,
    /// 200; the version skipped one or more: subscribe afresh for full state.
    Resubscribe,
    /// 200; the notifier ended the subscription.
    Terminated,
}

const REG: Package = Package { event: b"reg", accept: b"application/reginfo+xml" };

pub struct RegSubscriber {
    shard: u16,
    local: SocketAddr,
    /// `local` as written in Via and Contact.
    local_text: String,
    expires: u32,
    /// Tags and Call-IDs of new subscriptions.
    entropy: Entropy,
    subs: PartedMap<Box<[u8]>, RegSubscription>,
    by_aor: PartedMap<Box<[u8]>, Box<[u8]>>,
    /// Refresh deadlines by Call-ID; a firing whose subscription moved its
    /// deadline (or ended) is ignored.
    wheel: TimerWheel<Box<[u8]>>,
    fired: Vec<Box<[u8]>>,
}

impl RegSubscriber {
    pub fn new(shard: u16, local: SocketAddr, expires: u32, mut entropy: Entropy, now: Instant) -> Self {
        RegSubscriber {
            shard,
            local,
            local_text: local.to_string(),
            expires,
            subs: PartedMap::new(entropy.hasher()),
            by_aor: PartedMap::new(entropy.hasher()),
            entropy,
            wheel: TimerWheel::new(now, Duration::from_millis(100), 4096),
            fired: Vec::new(),
        }
    }

    /// The Call-ID of the subscription watching `aor`.
    pub fn call_id_for(&self, aor: &[u8]) -> Option<&[u8]> {
        self.by_aor.get(aor).map(|c| &c[..])
    }

    /// Subscriptions whose refresh is due at `now`.
    pub fn due(&mut self, now: Instant, out: &mut Vec<Box<[u8]>>) {
        self.wheel.advance(now, &mut self.fired);
        for call_id in self.fired.drain(..) {
            if self.subs.get(&call_id).and_then(|s| s.refresh_at).is_some_and(|at| at <= now) {
                out.push(call_id);
            }
        }
    }

    /// Writes an in-dialog SUBSCRIBE for `call_id`: a refresh, or with
    /// `expires` 0 an unsubscribe (after which the subscription is
    /// forgotten). Returns where to send it.
    pub fn resubscribe(&mut self, call_id: &[u8], expires: u32, branch: &[u8], out: &mut Vec<u8>) -> Option<Peer> {
        let mut sub = self.subs.get(call_id)?.clone();
        sub.refresh_at = None;
        self.write_subscribe(&mut sub, branch, expires, out);
        let target = sub.target;
        if expires == 0 {
            self.remove(call_id);
        } else {
            self.subs.insert(call_id.into(), sub);
        }
        Some(target)
    }

    pub fn is_subscribed(&self, aor: &[u8]) -> bool {
        self.by_aor.contains_key(aor)
    }

    pub fn get(&self, call_id: &[u8]) -> Option<&RegSubscription> {
        self.subs.get(call_id)
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
    /// Timer wheel entries pending (fired lazily; for leak checks).
    pub fn wheel_entries(&self) -> usize {
        self.wheel.len()
    }

    /// Creates the subscription for `aor` at `target` and writes its
    /// initial SUBSCRIBE into `out`, with the branch from `branch`. Returns
    /// the Call-ID (the caller's transaction context).
    pub fn subscribe(&mut self, aor: &[u8], aor_uri: &[u8], target: Peer, branch: &[u8], out: &mut Vec<u8>) -> Box<[u8]> {
        let dialog = ClientDialog::new(&mut self.entropy, self.shard, self.local, "reg");
        let call_id = dialog.call_id.clone();
        let mut sub = RegSubscription { aor: aor.into(), aor_uri: aor_uri.into(), target, dialog, version: None, refresh_at: None };
        self.write_subscribe(&mut sub, branch, self.expires, out);
        if let Some(old) = self.by_aor.insert(aor.into(), call_id.clone()) {
            self.subs.remove(&old);
        }
        self.subs.insert(call_id.clone(), sub);
        call_id
    }

    fn write_subscribe(&self, sub: &mut RegSubscription, branch: &[u8], expires: u32, out: &mut Vec<u8>) {
        let target = Target { request_uri: &sub.aor_uri, to: &sub.aor_uri, route: None, transport: sub.target.transport };
        sub.dialog.write_subscribe(&self.local_text, &target, REG, expires, branch, out);
    }

    /// The final response to a SUBSCRIBE: a 2xx sets the dialog's remote
    /// tag and schedules the refresh at four fifths of the granted Expires;
    /// anything else ends the subscription. Returns whether it lives.
    pub fn on_subscribe_response(&mut self, call_id: &[u8], status: u16, resp: Option<&Message<'_>>, now: Instant) -> bool {
        let ok = (200..300).contains(&status);
        if ok {
            let Some(sub) = self.subs.get_mut(call_id) else { return false };
            let granted = sub.dialog.on_success(resp, self.expires);
            if granted == 0 {
                self.remove(call_id);
                return false;
            }
            let at = subscriber::refresh_at(now, granted);
            sub.refresh_at = Some(at);
            self.wheel.insert(at, call_id.into());
            return true;
        }
        self.remove(call_id);
        false
    }

    pub fn remove(&mut self, call_id: &[u8]) -> Option<RegSubscription> {
        let sub = self.subs.remove(call_id)?;
        if self.by_aor.get(&sub.aor).is_some_and(|c| **c == *call_id) {
            self.by_aor.remove(&sub.aor);
        }
        Some(sub)
    }

    /// Judges a NOTIFY (RFC 6665 4.1.3 and RFC 3680 5.2): its dialog, its
    /// package, its state and its reginfo version.
    /// Only the S-CSCF the subscription went to may notify (from any port
    /// of its address): anyone else gets 403.
    pub fn on_notify(&mut self, msg: &Message<'_>, source: SocketAddr) -> NotifyVerdict {
        let Some(sub) = self.subs.get_mut(msg.call_id()) else {
            return NotifyVerdict::Reject(481, "Subscription Does Not Exist");
        };
        if !sub.dialog.is_ours(msg) {
            return NotifyVerdict::Reject(481, "Subscription Does Not Exist");
        }
        if source.ip() != sub.target.addr.ip() {
            return NotifyVerdict::Reject(403, "Forbidden: not from the S-CSCF of the subscription");
        }
        // The body is judged before the dialog takes the NOTIFY, so that a
        // corrected retry with the same CSeq is not refused.
        let body = msg.body();
        let info = if body.is_empty() {
            None
        } else if !msg.content_type().is_some_and(|t| t.is("application", "reginfo+xml")) {
            return NotifyVerdict::Reject(415, "Unsupported Media Type");
        } else {
            match super::reginfo::parse(body) {
                Err(_) => return NotifyVerdict::Reject(400, "Bad Request: malformed reginfo"),
                Ok(info) => Some(info),
            }
        };
        let state = match sub.dialog.take_notify(msg, "reg") {
            Ok(state) => state,
            Err(refusal) => {
                let (code, reason) = refusal.status();
                return NotifyVerdict::Reject(code, reason);
            }
        };
        let terminated = state == SubState::Terminated;
        let verdict = match info {
            None => NotifyVerdict::Ignore,
            Some(info) => match sub.version {
                // RFC 3680 5.2: a full document resets; a partial one must
                // be the next version; an old one is ignored.
                _ if info.full => {
                    sub.version = Some(info.version);
                    NotifyVerdict::Apply(info)
                }
                Some(v) if info.version == v.wrapping_add(1) => {
                    sub.version = Some(info.version);
                    NotifyVerdict::Apply(info)
                }
                Some(v) if info.version <= v => NotifyVerdict::Ignore,
                _ => NotifyVerdict::Resubscribe,
            },
        };
        if terminated {
            let call_id: Box<[u8]> = msg.call_id().into();
            self.remove(&call_id);
            return match verdict {
                NotifyVerdict::Apply(info) => NotifyVerdict::Apply(info),
                _ => NotifyVerdict::Terminated,
            };
        }
        verdict
    }
}
