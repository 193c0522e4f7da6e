//! Message framing. A datagram holds one message: [`Message::parse`]
//! takes the body from Content-Length and ignores trailing octets. A stream
//! (TCP) is cut into messages here by Content-Length (RFC 3261 18.3), with
//! partial reads, several messages per read, and RFC 5626 CRLF keep-alives.
//!
//! [`Message::parse`]: super::message::Message::parse

use super::error::ParseError;
use super::header::HeaderName;
use super::lex;
use super::message::{Limits, RawMessage};

/// What the next bytes of a stream hold.
// A frame is consumed at once where it is made; boxing the split head would
// cost an allocation per TCP message to save stack space nobody keeps.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Frame<'a> {
    /// One whole message, split and ready for [`Message::from_raw`](super::message::Message::from_raw).
    Message(RawMessage<'a>),
    /// A double-CRLF keep-alive ping: answer with a single CRLF (RFC 5626 4.4.1).
    Ping,
    /// A single-CRLF pong.
    Pong,
}

/// Accumulates stream bytes and yields frames. One per connection.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    start: usize,
    /// Bytes after `start` already searched for the end of the head.
    scanned: usize,
    limits: Limits,
}

impl StreamFramer {
    pub fn new(limits: Limits) -> Self {
        StreamFramer { buf: Vec::with_capacity(4096), start: 0, scanned: 0, limits }
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Space for a read of up to `n` bytes straight into the buffer; follow
    /// with [`StreamFramer::commit`] of the count actually read.
    pub fn read_space(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        let len = self.buf.len();
        self.buf.resize(len + n, 0);
        &mut self.buf[len..]
    }

    /// Keeps `n` bytes of the last [`StreamFramer::read_space`], drops the rest.
    pub fn commit(&mut self, n: usize, reserved: usize) {
        let keep = self.buf.len() - reserved + n.min(reserved);
        self.buf.truncate(keep);
    }

    /// The unconsumed bytes: after an error, what the server can still
    /// read a head from to answer before it closes the connection.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Unconsumed bytes.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. An error
    /// means the stream cannot be resynchronised: answer if possible, then
    /// close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, ParseError> {
        let StreamFramer { buf, start, scanned, limits } = self;
        let data = &buf[*start..];
        if data.starts_with(b"\r\n") {
            if data.starts_with(b"\r\n\r\n") {
                *start += 4;
                return Ok(Some(Frame::Ping));
            }
            if data.len() == 2 || data[2] != b'\r' {
                *start += 2;
                return Ok(Some(Frame::Pong));
            }
            return Ok(None);
        }
        let from = scanned.saturating_sub(3);
        let Some(p) = memchr::memmem::find(&data[from..], b"\r\n\r\n") else {
            if data.len() > limits.max_message_size {
                return Err(ParseError::MessageTooLarge);
            }
            *scanned = data.len();
            return Ok(None);
        };
        let head_end = from + p + 4;
        *scanned = head_end - 4;
        let raw = RawMessage::split(&data[..head_end], limits)?;
        if raw.is_repeated(HeaderName::ContentLength) {
            return Err(ParseError::DuplicateHeader(HeaderName::ContentLength));
        }
        // RFC 3261 18.3 makes Content-Length mandatory on streams; a missing
        // one is read as an empty body, the common reading of old peers.
        let body_len = match raw.header(HeaderName::ContentLength) {
            Some(v) => lex::parse_u32(v).ok_or(ParseError::BadHeader(HeaderName::ContentLength))? as usize,
            None => 0,
        };
        let total = head_end + body_len;
        if total > limits.max_message_size {
            return Err(ParseError::MessageTooLarge);
        }
        if data.len() < total {
            return Ok(None);
        }
        *start += total;
        *scanned = 0;
        Ok(Some(Frame::Message(raw.extend_to(&data[..total]))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::Message;

    fn msg(call_id: &str, body: &str) -> Vec<u8> {
        format!(
            "NOTIFY sip:a@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:b@h>;tag=1\r\nTo: <sip:a@h>;tag=2\r\n\
Call-ID: {call_id}\r\nCSeq: 1 NOTIFY\r\nl: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn drain(f: &mut StreamFramer) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            out.push(match fr {
                Frame::Message(raw) => {
                    let m = Message::from_raw(raw).unwrap();
                    format!("{}:{}", String::from_utf8_lossy(m.call_id()), String::from_utf8_lossy(m.body()))
                }
                Frame::Ping => "ping".into(),
                Frame::Pong => "pong".into(),
            });
        }
        out
    }

    #[test]
    fn several_messages_in_one_read() {
        let mut f = StreamFramer::new(Limits::default());
        let mut all = msg("a", "hello");
        all.extend_from_slice(b"\r\n\r\n");
        all.extend(msg("b", ""));
        f.push(&all);
        assert_eq!(drain(&mut f), vec!["a:hello", "ping", "b:"]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_at_a_time() {
        let mut f = StreamFramer::new(Limits::default());
        let mut all = msg("a", "x\r\n\r\ny");
        all.extend(msg("b", "z"));
        let mut got = Vec::new();
        for b in &all {
            f.push(std::slice::from_ref(b));
            got.extend(drain(&mut f));
        }
        assert_eq!(got, vec!["a:x\r\n\r\ny", "b:z"]);
    }

    #[test]
    fn read_space_and_commit() {
        let mut f = StreamFramer::new(Limits::default());
        let m = msg("r", "body");
        let space = f.read_space(8192);
        space[..m.len()].copy_from_slice(&m);
        f.commit(m.len(), 8192);
        assert_eq!(drain(&mut f), vec!["r:body"]);
    }

    #[test]
    fn limits_and_bad_lengths() {
        let limits = Limits { max_message_size: 300, ..Limits::default() };
        let mut f = StreamFramer::new(limits);
        f.push(&vec![b'a'; 301]);
        assert_eq!(f.next_frame().unwrap_err(), ParseError::MessageTooLarge);
        let mut f = StreamFramer::new(limits);
        f.push(&msg("big", &"x".repeat(200)));
        assert_eq!(f.next_frame().unwrap_err(), ParseError::MessageTooLarge);
        let mut f = StreamFramer::new(Limits::default());
        f.push(&String::from_utf8(msg("n", "")).unwrap().replace("l: 0", "l: -1").into_bytes());
        assert_eq!(f.next_frame().unwrap_err(), ParseError::BadHeader(HeaderName::ContentLength));
        let mut f = StreamFramer::new(Limits::default());
        f.push(b"\r\n");
        assert!(matches!(f.next_frame().unwrap(), Some(Frame::Pong)));
    }
}
