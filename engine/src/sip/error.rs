//! Parse errors, each mapped to the response a server sends for it.

use super::header::HeaderName;
use std::fmt;

/// Why a message could not be parsed. Every variant maps to one SIP status
/// code ([`ParseError::status`]) and a reason phrase that says what is wrong
/// ([`ParseError::reason`]); a server answers a broken *request* with that
/// response and silently drops a broken *response* (RFC 3261 16.7 / 18.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The first line is neither a Request-Line nor a Status-Line.
    BadStartLine(&'static str),
    /// The SIP-Version is well formed but not SIP/2.0.
    VersionNotSupported,
    /// The Request-URI does not parse, or carries what it must not (headers).
    BadRequestUri(&'static str),
    /// The Request-URI scheme is not one this server serves (sip, sips, tel, pres).
    UnsupportedUriScheme,
    /// The status code of a response is not three digits in 100..=699.
    BadStatusCode,
    /// A header line without a colon, with a bad name, or ending in a bare LF.
    BadHeaderLine,
    /// A header value does not follow its grammar.
    BadHeader(HeaderName),
    /// A header every request (or response) must carry is absent.
    MissingHeader(HeaderName),
    /// A header that may appear once appears more than once (RFC 4475 3.3.8).
    DuplicateHeader(HeaderName),
    /// The CSeq method differs from the Request-Line method (RFC 4475 3.1.2.17).
    CSeqMethodMismatch,
    /// Content-Length promises more octets than the datagram holds.
    BodyTruncated,
    /// The message is larger than the configured limit.
    MessageTooLarge,
    /// More header lines than the configured limit.
    TooManyHeaders,
    /// One header line longer than the configured limit.
    HeaderTooLong,
    /// The head (start line and headers) is not terminated by an empty line.
    UnterminatedHead,
}

impl ParseError {
    /// The status code of the response a server sends for a request with this error.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::VersionNotSupported => 505,
            ParseError::UnsupportedUriScheme => 416,
            ParseError::MessageTooLarge | ParseError::TooManyHeaders | ParseError::HeaderTooLong => 513,
            _ => 400,
        }
    }

    /// A reason phrase naming what is wrong, for the status line.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadStartLine(why) => write!(f, "Bad start line: {why}"),
            ParseError::VersionNotSupported => f.write_str("Version Not Supported"),
            ParseError::BadRequestUri(why) => write!(f, "Bad Request-URI: {why}"),
            ParseError::UnsupportedUriScheme => f.write_str("Unsupported URI Scheme"),
            ParseError::BadStatusCode => f.write_str("Bad status code"),
            ParseError::BadHeaderLine => f.write_str("Malformed header line"),
            ParseError::BadHeader(h) => write!(f, "Bad {} header", h.as_str()),
            ParseError::MissingHeader(h) => write!(f, "Missing {} header", h.as_str()),
            ParseError::DuplicateHeader(h) => write!(f, "Duplicate {} header", h.as_str()),
            ParseError::CSeqMethodMismatch => f.write_str("CSeq method does not match request method"),
            ParseError::BodyTruncated => f.write_str("Content-Length larger than message"),
            ParseError::MessageTooLarge => f.write_str("Message Too Large"),
            ParseError::TooManyHeaders => f.write_str("Message Too Large: too many headers"),
            ParseError::HeaderTooLong => f.write_str("Message Too Large: header too long"),
            ParseError::UnterminatedHead => f.write_str("Headers not terminated by an empty line"),
        }
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_reasons() {
        assert_eq!(ParseError::VersionNotSupported.status(), 505);
        assert_eq!(ParseError::UnsupportedUriScheme.status(), 416);
        assert_eq!(ParseError::MessageTooLarge.status(), 513);
        assert_eq!(ParseError::MissingHeader(HeaderName::CallId).status(), 400);
        assert_eq!(ParseError::MissingHeader(HeaderName::CallId).reason(), "Missing Call-ID header");
        assert_eq!(ParseError::DuplicateHeader(HeaderName::ContentLength).reason(), "Duplicate Content-Length header");
    }
}
