//! Presence: publications (RFC 3903) composed per presentity into one PIDF
//! document (RFC 3863/4479), owned by the presentity's shard.
//!
//! - [`pidf`]: validate published documents, compose and serialise one.
//! - [`publication`]: the event state compositor's table and PUBLISH rules.
//! - [`watchers`]: watcher subscriptions, NOTIFY writing and rate control.
//! - [`peu`]: the server subscribing to presence user agents, their
//!   NOTIFYs taken as publications.
//! - [`authz`]: who may watch whom.
//! - [`winfo`]: watcher information documents (RFC 3857/3858).

pub mod authz;
pub mod peu;
pub mod pidf;
pub mod publication;
pub mod watchers;
pub mod winfo;
