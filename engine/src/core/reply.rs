//! The answer a handler (registrar, compositor) gives to a request: status,
//! reason and the headers to add. The shard writes the response around it.

use super::limits::Limit;
use crate::sip::HeaderName;

#[derive(Debug, PartialEq, Eq)]
pub struct HandlerReply {
    pub code: u16,
    pub reason: &'static str,
    pub headers: Vec<(HeaderName, Vec<u8>)>,
    /// The limit this answer enforces, if any (counted by the shard).
    pub limit: Option<Limit>,
}

impl HandlerReply {
    pub fn new(code: u16, reason: &'static str) -> Self {
        HandlerReply { code, reason, headers: Vec::new(), limit: None }
    }

    /// Adds a header.
    pub fn with(mut self, name: HeaderName, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}
