//! The answer a handler (registrar, compositor) gives to a request: status,
//! reason and the headers to add. The shard writes the response around it.

use crate::sip::HeaderName;

#[derive(Debug, PartialEq, Eq)]
pub struct HandlerReply {
    pub code: u16,
    pub reason: &'static str,
    pub headers: Vec<(HeaderName, Vec<u8>)>,
}

impl HandlerReply {
    pub fn new(code: u16, reason: &'static str) -> Self {
        HandlerReply { code, reason, headers: Vec::new() }
    }

    /// Adds a header.
    pub fn with(mut self, name: HeaderName, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}
