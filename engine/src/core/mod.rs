//! The sans-IO protocol core: pure state machines that take messages and
//! time and return messages, timers and cross-shard hand-offs. The reactor
//! (`crate::reactor`) drives them; unit tests drive them with a fake clock.
//!
//! - [`peer`]: transports, peers, connection ids, transmits.
//! - [`ids`]: presentity ownership and identifiers that carry their shard.
//! - [`timer`]: the per-shard timer wheel.
//! - [`transaction`]: non-INVITE server and client transactions.
//! - [`completed`]: completed server transactions held for Timer J, as a log.
//! - [`subscriber`]: the subscriber's side of the dialogs the server
//!   makes (reg event, presence agents).
//! - [`trust`]: the trusted network elements (addresses, ports, networks).
//! - [`limits`]: every limit, its answer (503 + Retry-After, 403, 413)
//!   and its default.
//! - [`overload`]: overload detection by queueing delay (CoDel style).
//! - [`ingress`]: the admission queue that overload control decides at.
//! - [`parted`]: maps in 64 parts, so that no growth rehashes everything.
//! - [`reply`]: what a handler answers (status, reason, headers).
//! - [`room`]: when a table gives back what a burst made it take.
//! - [`own_pages`]: a heap of its own for a log, so that its blocks pin
//!   no page of anything else's.
//! - [`capabilities`]: methods, bodies, events and extensions served.

pub mod capabilities;
pub mod completed;
pub mod entropy;
pub mod ids;
pub mod ingress;
pub mod limits;
pub mod outbound;
pub mod overload;
pub mod own_pages;
pub mod parted;
pub mod peer;
pub mod reply;
pub mod room;
pub mod subscriber;
pub mod timer;
pub mod transaction;
pub mod trust;

pub use peer::{ConnId, Peer, Transmit, Transport};
pub use transaction::SipTimers;
