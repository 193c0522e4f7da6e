//! What this server implements, in one place: OPTIONS, 405 and 420
//! answers are written from these lists, so they grow with the handlers.

/// Methods with a handler (the Allow header).
pub const ALLOW: &[&str] = &["OPTIONS", "REGISTER", "NOTIFY", "PUBLISH", "SUBSCRIBE"];

/// Body types accepted in requests (the Accept header).
pub const ACCEPT: &[&str] = &["application/pidf+xml", "application/reginfo+xml"];

/// Event packages served (the Allow-Events header): `presence` as event
/// state compositor (PUBLISH) and notifier (SUBSCRIBE).
pub const ALLOW_EVENTS: &[&str] = &["presence", "presence.winfo"];

/// SIP extensions supported (option tags of Supported; a Require naming
/// anything else is answered 420).
pub const SUPPORTED: &[&str] = &[];

/// `a, b, c` for a header value.
pub fn joined(list: &[&str]) -> String {
    list.join(", ")
}
