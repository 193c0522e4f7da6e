//! The SIP codec: a zero-copy parser in the style of httparse, a builder,
//! and framing for datagrams and streams.
//!
//! - [`lex`]: character classes, LWS, quoted strings, numbers.
//! - [`header`]: header names (compact forms, case-insensitive).
//! - [`message`]: split the head into spans, validate, typed access.
//! - [`uri`], [`addr`], [`via`], [`params`], [`typed`]: header grammars.
//! - [`response_key`]: a response's status, top branch and CSeq method,
//!   read without a parse.
//! - [`builder`]: write requests and responses, responses from requests.
//! - `scan`: finds LFs and colons in a head 64 bytes at a time.
//! - [`framing`]: cut a TCP stream into messages.
//! - [`error`]: parse errors and the SIP status each maps to.

// The grammar parsers fail without detail on purpose: the caller knows
// which header failed and maps that to a `ParseError` and its status, and
// an error value would cost on the hot path for nothing.
#![allow(clippy::result_unit_err)]

pub mod addr;
pub mod builder;
pub mod error;
pub mod framing;
pub mod header;
pub mod lex;
pub mod message;
pub mod oc;
pub mod params;
pub mod response_key;
mod scan;
pub mod typed;
pub mod uri;
pub mod via;

pub use addr::NameAddr;
pub use builder::{MessageWriter, Request, response_to, response_to_with};
pub use error::ParseError;
pub use framing::{Frame, StreamFramer};
pub use header::HeaderName;
pub use message::{Contacts, Header, Limits, MAX_HEADERS, Message, Method, RawMessage, StartLine};
pub use response_key::{ResponseKey, response_key};
pub use uri::{Scheme, Uri};
pub use via::Via;
