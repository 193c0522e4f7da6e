//! What one step of the core asks the reactor to do.

use crate::core::peer::{Peer, Transmit};
use std::sync::Arc;

/// A message handed to another shard: received here, owned there. The
/// bytes are the datagram or stream frame as received; the owner parses
/// them again (a copy and a parse cost less than sharing parsed views
/// across threads).
#[derive(Debug)]
pub struct Forward {
    pub peer: Peer,
    pub received_on: u16,
    pub bytes: Vec<u8>,
}

/// Work one shard hands another over the lock-free queues. Everything in
/// it is owned or shared immutably (`Arc`), so it crosses threads as is.
#[derive(Debug)]
pub enum CoreMsg {
    /// A message received here for state owned there.
    Forward(Forward),
    /// The watcher's shard asks the presentity's shard: may `watcher`
    /// watch `aor`? The answer carries the current document.
    Watch {
        ask: u64,
        from: u16,
        aor: Box<[u8]>,
        watcher: Box<[u8]>,
    },
    WatchAnswer {
        ask: u64,
        action: crate::presence::authz::Action,
        version: u64,
        /// None before anything was published or registered (version
        /// 0): the watcher is shown the closed document, composed when a
        /// NOTIFY is written rather than kept per subscription.
        doc: Option<Arc<[u8]>>,
        /// The document changed while the server was down (a restart put
        /// back less than the journal recorded): a restored subscription
        /// is told.
        changed: bool,
    },
    /// The presentity's own winfo subscription (RFC 3857) asks for the
    /// watcher list and its changes.
    WatchInfo {
        ask: u64,
        from: u16,
        aor: Box<[u8]>,
    },
    WatchInfoAnswer {
        ask: u64,
        watchers: Vec<crate::presence::winfo::WatcherState>,
    },
    /// A watcher of `aor` came, went or changed status: for the shards
    /// holding winfo subscriptions to `aor`.
    WatcherChange {
        aor: Box<[u8]>,
        change: crate::presence::winfo::WatcherState,
    },
    /// The subscription of `from` made with `ask` ended.
    Unwatch {
        aor: Box<[u8]>,
        from: u16,
        ask: u64,
    },
    /// The presentity's policy for the subscription made with `ask`
    /// changed (a reloaded configuration).
    Authorize {
        ask: u64,
        action: crate::presence::authz::Action,
    },
    /// After a start from journals: every restored subscription of the
    /// sending shard has asked its presentity (the asks went before this,
    /// in the same queue).
    RewatchDone,
    /// A new version of `aor`'s document for the shard's watchers: one
    /// shared copy per shard, whatever the number of watchers.
    Document {
        aor: Box<[u8]>,
        version: u64,
        doc: Arc<[u8]>,
    },
}

/// What happened, for logs and for tests that observe the server from the
/// outside (through its log) rather than trusting the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A request was processed by its owner.
    Handled { method: String, status: u16, call_id: String, received_on: u16 },
    /// A retransmission was answered from its transaction (or absorbed).
    Retransmission { call_id: String, replayed: bool },
    /// A message could not be parsed; `answered` with that status, or dropped.
    Malformed { error: String, status: Option<u16> },
    /// An AOR's registration changed: open with these contacts, or closed
    /// when there are none. Presence is derived from it.
    Registration { aor: String, contacts: Vec<String> },
    /// A presentity's composed PIDF document changed (one shared copy).
    Document { aor: String, version: u64, document: std::sync::Arc<[u8]> },
    /// A reg-event subscription: started (status 0) or answered/timed out.
    RegSubscription { call_id: String, status: u16 },
    /// A watcher subscription changed state (active, pending, terminated).
    Watcher { aor: String, state: &'static str },
    /// The server's subscription to a presence user agent of `aor` changed
    /// state (subscribing, active, backoff, refused, closing, idle,
    /// removed); `status` is the response that moved it, if any.
    Agent { aor: String, uri: String, state: &'static str, status: u16 },
    /// A NOTIFY above the path MTU went over UDP (logged once per shard;
    /// pushed even when events are off).
    OversizeNotify { size: usize },
    /// A request for a partition another node serves was sent there.
    Hopped { method: String, node: u32, call_id: String },
    /// A response that matched nothing we sent.
    StrayResponse { status: u16 },
    /// A step panicked and was contained; `call_id` of the message, if it
    /// was one. Recorded even when events are off.
    Panic { call_id: String, what: String },
}

/// Filled by the core, drained by the reactor after each step.
#[derive(Debug, Default)]
pub struct Outbox {
    pub transmits: Vec<Transmit>,
    /// Messages for other shards.
    pub to_shards: Vec<(u16, CoreMsg)>,
    /// Messages for other nodes of the cluster.
    pub to_nodes: Vec<(crate::cluster::NodeId, crate::cluster::mail::NodeMsg)>,
    pub events: Vec<Event>,
    /// Events nobody will log are not built: each costs allocations on
    /// every request. The reactor sets this from the log filter.
    pub events_off: bool,
}

impl Outbox {
    /// Records an event, unless events are off.
    pub fn event(&mut self, make: impl FnOnce() -> Event) {
        if !self.events_off {
            self.events.push(make());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty() && self.to_shards.is_empty() && self.to_nodes.is_empty() && self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_built_only_when_someone_logs_them() {
        let mut out = Outbox { events_off: true, ..Outbox::default() };
        out.event(|| unreachable!("not built when off"));
        assert!(out.is_empty());
        out.events_off = false;
        out.event(|| Event::StrayResponse { status: 200 });
        assert_eq!(out.events.len(), 1);
    }
}
