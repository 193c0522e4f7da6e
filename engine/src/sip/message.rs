//! SIP messages: split the head into header spans (phase 1), then validate
//! the start line and the headers every transaction needs (phase 2).
//!
//! Nothing is copied and nothing is allocated: header names and values are
//! `u32` spans into the input, kept in a fixed inline array, and the headers
//! the core reads on every message (Via, From, To, Call-ID, CSeq,
//! Max-Forwards) are parsed once into borrowed typed values. Everything
//! else is parsed on access.

use arrayvec::ArrayVec;

use super::addr::NameAddr;
use super::error::ParseError;
use super::header::{HeaderName, KNOWN_HEADERS};
use super::lex::{self, CommaList};
use super::scan::{self, ByteScanner};
use super::typed::{self, CSeq, Event, MediaType, SubscriptionState};
use super::uri::Uri;
use super::via::Via;

/// Compile-time capacity of the inline header table.
pub const MAX_HEADERS: usize = 64;

const _: () = assert!(KNOWN_HEADERS <= 64, "the repeated-header mask is a u64");

/// Size limits applied while parsing. Exceeding one is an error that maps to
/// 513 (Message Too Large), never a panic or an unbounded allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Whole message, head and body.
    pub max_message_size: usize,
    /// Header lines (a line holding a comma list counts once); at most [`MAX_HEADERS`].
    pub max_headers: usize,
    /// One header line, folds included.
    pub max_header_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_message_size: 65_535, max_headers: MAX_HEADERS, max_header_len: 8_192 }
    }
}

/// SIP methods this codebase names; anything else is `Other` (compare the
/// raw token then). Methods are case-sensitive (RFC 3261 7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Register,
    Subscribe,
    Notify,
    Publish,
    Options,
    Invite,
    Ack,
    Bye,
    Cancel,
    Message,
    Info,
    Prack,
    Update,
    Refer,
    Other,
}

impl Method {
    const NAMED: [(Method, &'static str); 14] = [
        (Method::Register, "REGISTER"),
        (Method::Subscribe, "SUBSCRIBE"),
        (Method::Notify, "NOTIFY"),
        (Method::Publish, "PUBLISH"),
        (Method::Options, "OPTIONS"),
        (Method::Invite, "INVITE"),
        (Method::Ack, "ACK"),
        (Method::Bye, "BYE"),
        (Method::Cancel, "CANCEL"),
        (Method::Message, "MESSAGE"),
        (Method::Info, "INFO"),
        (Method::Prack, "PRACK"),
        (Method::Update, "UPDATE"),
        (Method::Refer, "REFER"),
    ];

    pub fn from_bytes(m: &[u8]) -> Method {
        Self::NAMED.iter().find(|(_, s)| s.as_bytes() == m).map_or(Method::Other, |(k, _)| *k)
    }

    /// The method name; `None` for `Other`.
    pub fn as_str(self) -> Option<&'static str> {
        Self::NAMED.iter().find(|(k, _)| *k == self).map(|(_, s)| *s)
    }
}

/// One header line as offsets into the buffer: 12 bytes, so the whole
/// table stays small enough to move cheaply.
#[derive(Clone, Copy, Debug)]
struct Span {
    line_start: u32,
    value_len: u32,
    /// Offset of the value from the line start.
    value_off: u16,
    name_len: u8,
    kind: HeaderName,
}

/// One header line: its recognised name, the name as written, and the value
/// with surrounding white space removed (folds inside are kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName,
    pub raw_name: &'a [u8],
    pub value: &'a [u8],
}

/// Phase 1: a message split into start line, header spans and body offset,
/// with nothing validated beyond line structure. A server also uses it on
/// its error path to copy Via/From/To/Call-ID/CSeq into a 4xx for a request
/// that failed phase 2.
#[derive(Clone, Debug)]
pub struct RawMessage<'a> {
    buf: &'a [u8],
    start_line: &'a [u8],
    spans: ArrayVec<Span, MAX_HEADERS>,
    /// 1-based index of the first header of each known kind; 0 = absent.
    first: [u8; KNOWN_HEADERS],
    /// Bit `k` set if known header `k` occurs more than once.
    repeated: u64,
    head_len: usize,
}

impl<'a> RawMessage<'a> {
    /// Splits `buf` (one message, possibly followed by trailing octets).
    #[inline]
    pub fn split(buf: &'a [u8], limits: &Limits) -> Result<RawMessage<'a>, ParseError> {
        Self::split_inner(buf, limits, false)
    }

    /// Like [`RawMessage::split`] but ignoring size limits and keeping the
    /// first [`MAX_HEADERS`] headers: for answering a request that failed.
    pub fn split_lenient(buf: &'a [u8]) -> Result<RawMessage<'a>, ParseError> {
        let limits = Limits { max_message_size: usize::MAX, max_headers: MAX_HEADERS, max_header_len: usize::MAX };
        Self::split_inner(buf, &limits, true)
    }

    #[inline]
    fn split_inner(buf: &'a [u8], limits: &Limits, lenient: bool) -> Result<RawMessage<'a>, ParseError> {
        let mut raw = RawMessage::empty(buf);
        raw.split_into(limits, lenient)?;
        Ok(raw)
    }

    #[inline]
    fn empty(buf: &'a [u8]) -> RawMessage<'a> {
        RawMessage { buf, start_line: &[], spans: ArrayVec::new(), first: [0; KNOWN_HEADERS], repeated: 0, head_len: 0 }
    }

    /// Fills an empty `self` in place: the span table is large, and
    /// building it in a callee's frame and returning it by value cost a
    /// copy of all of it.
    fn split_into(&mut self, limits: &Limits, lenient: bool) -> Result<(), ParseError> {
        let buf = self.buf;
        let raw = self;
        if buf.len() > limits.max_message_size || buf.len() > u32::MAX as usize {
            return Err(ParseError::MessageTooLarge);
        }
        // Line ends come from one scanner, whose queries only move forward,
        // so each 64-byte block of the head is compared once. A header's
        // `:` is a few bytes into its line: `find_near` looks there.
        let mut lf = ByteScanner::new(buf, b'\n');
        let sl_end = lf.find_from(0).ok_or(ParseError::UnterminatedHead)?;
        if sl_end == 0 || buf[sl_end - 1] != b'\r' {
            return Err(ParseError::BadStartLine("line does not end in CRLF"));
        }
        raw.start_line = &buf[..sl_end - 1];
        let max_headers = limits.max_headers.min(MAX_HEADERS);
        let mut pos = sl_end + 1;
        loop {
            match buf.get(pos) {
                None => return Err(ParseError::UnterminatedHead),
                Some(b'\r') => {
                    if buf.get(pos + 1) == Some(&b'\n') {
                        raw.head_len = pos + 2;
                        return Ok(());
                    }
                    return Err(ParseError::BadHeaderLine);
                }
                // A continuation line with no header to continue, or a bare LF.
                Some(b' ' | b'\t' | b'\n') => return Err(ParseError::BadHeaderLine),
                Some(_) => {}
            }
            // The logical line runs to the first LF not followed by SP/HT.
            let first_lf = lf.find_from(pos).ok_or(ParseError::UnterminatedHead)?;
            let mut e = first_lf;
            loop {
                if buf[e - 1] != b'\r' {
                    return Err(ParseError::BadHeaderLine);
                }
                match buf.get(e + 1) {
                    Some(b' ' | b'\t') => e = lf.find_from(e + 1).ok_or(ParseError::UnterminatedHead)?,
                    _ => break,
                }
            }
            let line_end = e - 1;
            if line_end - pos > limits.max_header_len {
                return Err(ParseError::HeaderTooLong);
            }
            // name: a token, optional SP/HT, then the line's first ':',
            // which a valid line has before its first LF.
            let colon = scan::find_near(buf, pos, first_lf, b':').ok_or(ParseError::BadHeaderLine)?;
            let mut ne = colon;
            while ne > pos && matches!(buf[ne - 1], b' ' | b'\t') {
                ne -= 1;
            }
            let name_len = ne - pos;
            if name_len == 0 {
                return Err(ParseError::BadHeaderLine);
            }
            // Known names are matched exactly, which proves them tokens.
            let kind = HeaderName::from_line(&buf[pos..], name_len);
            if kind == HeaderName::Other && !lex::is_token_str(&buf[pos..ne]) {
                return Err(ParseError::BadHeaderLine);
            }
            // Nearly every value follows a single SP: take it before the loop.
            let mut vs = colon + 1 + (buf[colon + 1] == b' ') as usize;
            while vs < line_end && lex::is_lws(buf[vs]) {
                vs += 1;
            }
            let mut ve = line_end;
            while ve > vs && lex::is_lws(buf[ve - 1]) {
                ve -= 1;
            }
            let value_off = vs - pos;
            if name_len > u8::MAX as usize || value_off > u16::MAX as usize {
                return Err(ParseError::HeaderTooLong);
            }
            if raw.spans.len() >= max_headers {
                if !lenient {
                    return Err(ParseError::TooManyHeaders);
                }
            } else {
                if kind != HeaderName::Other {
                    let k = kind as usize;
                    if raw.first[k] == 0 {
                        raw.first[k] = raw.spans.len() as u8 + 1;
                    } else {
                        raw.repeated |= 1 << k;
                    }
                }
                raw.spans.push(Span { line_start: pos as u32, value_len: (ve - vs) as u32, value_off: value_off as u16, name_len: name_len as u8, kind });
            }
            pos = e + 1;
        }
    }

    #[inline(always)]
    fn header_at(&self, s: &Span) -> Header<'a> {
        let line = &self.buf[s.line_start as usize..];
        let v = s.value_off as usize;
        Header { name: s.kind, raw_name: &line[..s.name_len as usize], value: &line[v..v + s.value_len as usize] }
    }

    /// The first line, without its CRLF.
    pub fn start_line(&self) -> &'a [u8] {
        self.start_line
    }
    /// True if the start line is a Status-Line.
    pub fn is_response(&self) -> bool {
        self.start_line.len() >= 4 && self.start_line[..4].eq_ignore_ascii_case(b"SIP/")
    }
    /// Offset of the body in the buffer.
    pub fn head_len(&self) -> usize {
        self.head_len
    }
    /// All header lines in order.
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + '_ {
        self.spans.iter().map(|s| self.header_at(s))
    }
    /// Value of the first header of this kind, O(1) for known names.
    #[inline]
    pub fn header(&self, name: HeaderName) -> Option<&'a [u8]> {
        if name == HeaderName::Other {
            return None;
        }
        match self.first[name as usize] {
            0 => None,
            i => Some(self.header_at(&self.spans[i as usize - 1]).value),
        }
    }
    /// Values of every header of this kind, in order.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        // Start at the first occurrence: known single headers cost O(1).
        let start = match name {
            HeaderName::Other => self.spans.len(),
            _ => match self.first[name as usize] {
                0 => self.spans.len(),
                i => i as usize - 1,
            },
        };
        self.spans[start..].iter().filter(move |s| s.kind == name).map(|s| self.header_at(s).value)
    }
    /// Value of the first header named `name` (case-insensitive), for
    /// headers this parser does not know.
    pub fn header_by_name(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.headers().find(|h| h.raw_name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }
    /// The elements of every header of this kind, split at top-level commas.
    pub fn list(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.header_values(name).flat_map(CommaList::new)
    }
    /// True if a known header occurs more than once.
    pub fn is_repeated(&self, name: HeaderName) -> bool {
        name != HeaderName::Other && self.repeated & (1 << name as usize) != 0
    }

    /// The same split, now covering the whole frame (head and body) that a
    /// stream framer delimited after splitting the head alone.
    /// The bytes this message was split from (for a stream frame: the
    /// whole message, head and body).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn extend_to(mut self, frame: &'a [u8]) -> RawMessage<'a> {
        debug_assert!(frame.as_ptr() == self.buf.as_ptr() && frame.len() >= self.head_len);
        self.buf = frame;
        self
    }
}

/// The first line of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartLine<'a> {
    Request { method: Method, method_raw: &'a [u8], uri: Uri<'a> },
    Response { code: u16, reason: &'a [u8] },
}

/// A validated SIP message borrowing from its buffer.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    raw: RawMessage<'a>,
    start: StartLine<'a>,
    body: &'a [u8],
    via: Via<'a>,
    from: NameAddr<'a>,
    to: NameAddr<'a>,
    call_id: &'a [u8],
    cseq: CSeq<'a>,
    max_forwards: Option<u8>,
}

/// Headers whose repetition makes a message invalid (RFC 4475 3.3.8, 3.3.9).
const SINGLE_MASK: u64 = {
    let mut m = 0u64;
    let mut i = 0;
    while i < KNOWN_HEADERS {
        if HeaderName::ALL[i].is_single() {
            m |= 1 << i;
        }
        i += 1;
    }
    m
};

impl<'a> Message<'a> {
    /// Parses one message from `buf`. The body is `Content-Length` octets
    /// (trailing octets are ignored, as a datagram requires) or, without
    /// Content-Length, the rest of `buf`.
    ///
    /// Inlined, phase 2 with it, so that the message is built in the
    /// caller's own slot: when either is an out-of-line call, LLVM keeps a
    /// local copy and moves the 1.5 KB value out at the end, about a tenth
    /// of the parse time (seen in the criterion binary).
    #[inline(always)]
    pub fn parse(buf: &'a [u8], limits: &Limits) -> Result<Message<'a>, ParseError> {
        let mut m = Self::unvalidated(buf);
        m.raw.split_into(limits, false)?;
        m.validate()?;
        Ok(m)
    }

    /// Phase 2 on an already split message.
    #[inline(always)]
    pub fn from_raw(raw: RawMessage<'a>) -> Result<Message<'a>, ParseError> {
        let mut m = Self::unvalidated(raw.buf);
        m.raw = raw;
        m.validate()?;
        Ok(m)
    }

    /// An empty message over `buf`, for the splitter and
    /// [`Message::validate`] to fill in place. The empty span table is
    /// written inside this literal, not built apart and moved in: a moved
    /// table is copied whole, uninitialised slots and all (800 bytes).
    #[inline(always)]
    fn unvalidated(buf: &'a [u8]) -> Message<'a> {
        Message {
            raw: RawMessage::empty(buf),
            start: StartLine::Response { code: 0, reason: &[] },
            body: &[],
            via: Via::default(),
            from: NameAddr::default(),
            to: NameAddr::default(),
            call_id: &[],
            cseq: CSeq::default(),
            max_forwards: None,
        }
    }

    /// Phase 2: checks the start line and the headers every transaction
    /// needs, and fills the typed fields.
    #[inline(always)]
    fn validate(&mut self) -> Result<(), ParseError> {
        let raw = &self.raw;
        let start = parse_start_line(raw.start_line)?;
        let single_dups = raw.repeated & SINGLE_MASK;
        if single_dups != 0 {
            return Err(ParseError::DuplicateHeader(HeaderName::ALL[single_dups.trailing_zeros() as usize]));
        }
        // Every Via entry is checked: a response copies them all.
        let mut top_via = None;
        for value in raw.header_values(HeaderName::Via) {
            for via in Via::list(value) {
                let via = via.map_err(|_| ParseError::BadHeader(HeaderName::Via))?;
                top_via.get_or_insert(via);
            }
        }
        let via = top_via.ok_or(ParseError::MissingHeader(HeaderName::Via))?;
        for (name, slot) in [(HeaderName::From, &mut self.from), (HeaderName::To, &mut self.to)] {
            let v = raw.header(name).ok_or(ParseError::MissingHeader(name))?;
            slot.parse_into(v).map_err(|_| ParseError::BadHeader(name))?;
        }
        let call_id = raw.header(HeaderName::CallId).ok_or(ParseError::MissingHeader(HeaderName::CallId))?;
        if !valid_call_id(call_id) {
            return Err(ParseError::BadHeader(HeaderName::CallId));
        }
        let cseq = raw.header(HeaderName::CSeq).ok_or(ParseError::MissingHeader(HeaderName::CSeq))?;
        let cseq = CSeq::parse(cseq).map_err(|_| ParseError::BadHeader(HeaderName::CSeq))?;
        if let StartLine::Request { method_raw, .. } = start {
            if cseq.method != method_raw {
                return Err(ParseError::CSeqMethodMismatch);
            }
        }
        let max_forwards = match raw.header(HeaderName::MaxForwards) {
            Some(v) => Some(lex::parse_u32_max(v, 255).ok_or(ParseError::BadHeader(HeaderName::MaxForwards))? as u8),
            None => None,
        };
        if let Some(v) = raw.header(HeaderName::Expires) {
            typed::delta_seconds(v).map_err(|_| ParseError::BadHeader(HeaderName::Expires))?;
        }
        if let Some(v) = raw.header(HeaderName::ContentType) {
            MediaType::parse(v).map_err(|_| ParseError::BadHeader(HeaderName::ContentType))?;
        }
        validate_contacts(raw)?;
        let body = match raw.header(HeaderName::ContentLength) {
            Some(v) => {
                let len = lex::parse_u32(v).ok_or(ParseError::BadHeader(HeaderName::ContentLength))? as usize;
                raw.buf.get(raw.head_len..raw.head_len + len).ok_or(ParseError::BodyTruncated)?
            }
            None => &raw.buf[raw.head_len..],
        };
        self.start = start;
        self.body = body;
        self.via = via;
        self.call_id = call_id;
        self.cseq = cseq;
        self.max_forwards = max_forwards;
        Ok(())
    }

    pub fn raw(&self) -> &RawMessage<'a> {
        &self.raw
    }
    pub fn start_line(&self) -> &StartLine<'a> {
        &self.start
    }
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }
    pub fn method(&self) -> Option<Method> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            _ => None,
        }
    }
    pub fn method_raw(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Request { method_raw, .. } => Some(method_raw),
            _ => None,
        }
    }
    pub fn request_uri(&self) -> Option<&Uri<'a>> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            _ => None,
        }
    }
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn reason(&self) -> Option<&'a [u8]> {
        match self.start {
            StartLine::Response { reason, .. } => Some(reason),
            _ => None,
        }
    }
    /// The message itself: head and body, without trailing octets.
    pub fn as_bytes(&self) -> &'a [u8] {
        &self.raw.buf[..self.raw.head_len + self.body.len()]
    }
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
    /// The top Via.
    pub fn via(&self) -> &Via<'a> {
        &self.via
    }
    /// Every Via entry, top first (all were validated by [`Message::parse`]).
    pub fn vias(&self) -> impl Iterator<Item = Via<'a>> + '_ {
        self.raw.header_values(HeaderName::Via).flat_map(Via::list).filter_map(Result::ok)
    }
    pub fn from(&self) -> &NameAddr<'a> {
        &self.from
    }
    pub fn to(&self) -> &NameAddr<'a> {
        &self.to
    }
    pub fn call_id(&self) -> &'a [u8] {
        self.call_id
    }
    pub fn cseq(&self) -> CSeq<'a> {
        self.cseq
    }
    pub fn max_forwards(&self) -> Option<u8> {
        self.max_forwards
    }
    pub fn header(&self, name: HeaderName) -> Option<&'a [u8]> {
        self.raw.header(name)
    }
    pub fn headers(&self) -> impl Iterator<Item = Header<'a>> + '_ {
        self.raw.headers()
    }
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.raw.header_values(name)
    }

    /// Expires header (validated by parse).
    pub fn expires(&self) -> Option<u32> {
        self.header(HeaderName::Expires).and_then(|v| typed::delta_seconds(v).ok())
    }
    /// Content-Type (validated by parse).
    pub fn content_type(&self) -> Option<MediaType<'a>> {
        self.header(HeaderName::ContentType).and_then(|v| MediaType::parse(v).ok())
    }
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.single(HeaderName::MinExpires, typed::delta_seconds)
    }
    pub fn event(&self) -> Result<Option<Event<'a>>, ParseError> {
        self.single(HeaderName::Event, Event::parse)
    }
    pub fn subscription_state(&self) -> Result<Option<SubscriptionState<'a>>, ParseError> {
        self.single(HeaderName::SubscriptionState, SubscriptionState::parse)
    }
    /// SIP-ETag (RFC 3903): an entity tag is a token.
    pub fn sip_etag(&self) -> Result<Option<&'a [u8]>, ParseError> {
        self.single(HeaderName::SipETag, entity_tag)
    }
    /// Every SIP-If-Match value; RFC 3903 makes more than one a 400, which the
    /// PUBLISH handler decides, so the parser keeps them all.
    pub fn sip_if_match(&self) -> impl Iterator<Item = Result<&'a [u8], ParseError>> + '_ {
        self.header_values(HeaderName::SipIfMatch).map(|v| entity_tag(v).map_err(|_| ParseError::BadHeader(HeaderName::SipIfMatch)))
    }
    pub fn accept(&self) -> impl Iterator<Item = Result<MediaType<'a>, ParseError>> + '_ {
        self.typed_list(HeaderName::Accept, MediaType::parse)
    }
    pub fn allow_events(&self) -> impl Iterator<Item = Result<&'a [u8], ParseError>> + '_ {
        self.typed_list(HeaderName::AllowEvents, token)
    }
    pub fn require(&self) -> impl Iterator<Item = Result<&'a [u8], ParseError>> + '_ {
        self.typed_list(HeaderName::Require, token)
    }
    pub fn proxy_require(&self) -> impl Iterator<Item = Result<&'a [u8], ParseError>> + '_ {
        self.typed_list(HeaderName::ProxyRequire, token)
    }
    pub fn supported(&self) -> impl Iterator<Item = Result<&'a [u8], ParseError>> + '_ {
        self.typed_list(HeaderName::Supported, token)
    }
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'a>, ParseError>> + '_ {
        self.typed_list(HeaderName::Route, NameAddr::parse)
    }
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'a>, ParseError>> + '_ {
        self.typed_list(HeaderName::RecordRoute, NameAddr::parse)
    }
    pub fn p_asserted_identity(&self) -> impl Iterator<Item = Result<NameAddr<'a>, ParseError>> + '_ {
        self.typed_list(HeaderName::PAssertedIdentity, NameAddr::parse)
    }
    /// Contact headers (validated by parse).
    pub fn contacts(&self) -> Contacts<'a> {
        if self.raw.list(HeaderName::Contact).next().is_some_and(|c| c == b"*") {
            Contacts::Star
        } else {
            Contacts::List(self.raw.list(HeaderName::Contact).filter_map(|c| NameAddr::parse(c).ok()).collect())
        }
    }

    fn single<T>(&self, name: HeaderName, parse: fn(&'a [u8]) -> Result<T, ()>) -> Result<Option<T>, ParseError> {
        self.header(name).map(|v| parse(v).map_err(|_| ParseError::BadHeader(name))).transpose()
    }
    fn typed_list<'s, T: 's>(&'s self, name: HeaderName, parse: fn(&'a [u8]) -> Result<T, ()>) -> impl Iterator<Item = Result<T, ParseError>> + 's {
        self.raw.list(name).map(move |v| parse(v).map_err(|_| ParseError::BadHeader(name)))
    }

    /// Serializes the message: start line, every header as received, a
    /// Content-Length if the message had none, the body.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.raw.start_line);
        out.extend_from_slice(b"\r\n");
        for h in self.headers() {
            out.extend_from_slice(h.raw_name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value);
            out.extend_from_slice(b"\r\n");
        }
        if self.header(HeaderName::ContentLength).is_none() {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
    }
}

/// Contact header values: `*` (only valid in a de-registering REGISTER) or a
/// list of addresses. Lists are short, so one small vector is fine here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contacts<'a> {
    Star,
    List(Vec<NameAddr<'a>>),
}

fn token(s: &[u8]) -> Result<&[u8], ()> {
    if lex::is_token_str(s) { Ok(s) } else { Err(()) }
}

fn entity_tag(s: &[u8]) -> Result<&[u8], ()> {
    token(lex::trim(s))
}

/// Call-ID = word [ "@" word ].
fn valid_call_id(v: &[u8]) -> bool {
    let e = lex::class_end(v, 0, lex::Class::WORD);
    if e == v.len() {
        return e > 0;
    }
    if e == 0 || v[e] != b'@' {
        return false;
    }
    let host_end = lex::class_end(v, e + 1, lex::Class::WORD);
    host_end == v.len() && host_end > e + 1
}

/// `*` must stand alone; every address must parse and its `expires`, if
/// any, be delta-seconds (RFC 4475 3.1.2.4 sends an overlarge one).
fn validate_contacts(raw: &RawMessage<'_>) -> Result<(), ParseError> {
    let bad = ParseError::BadHeader(HeaderName::Contact);
    let mut count = 0;
    let mut star = false;
    // Nested loops rather than `list()`: a flattened iterator costs more
    // than the one or two elements a Contact usually holds.
    for value in raw.header_values(HeaderName::Contact) {
        for c in CommaList::new(value) {
            count += 1;
            if c == b"*" {
                star = true;
                continue;
            }
            let na = NameAddr::parse(c).map_err(|_| bad)?;
            if let Some(e) = na.params().get(b"expires") {
                e.ok_or(()).and_then(typed::delta_seconds).map_err(|_| bad)?;
            }
        }
    }
    if star && count > 1 {
        return Err(bad);
    }
    Ok(())
}

fn parse_start_line(line: &[u8]) -> Result<StartLine<'_>, ParseError> {
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // SIP-Version SP Status-Code SP Reason-Phrase
        // The spaces are a few bytes in: a plain scan, not a memchr call.
        let sp = line.iter().position(|&b| b == b' ').ok_or(ParseError::BadStartLine("no status code"))?;
        check_version(&line[..sp])?;
        let rest = &line[sp + 1..];
        let code_end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        let code = &rest[..code_end];
        if code.len() != 3 {
            return Err(ParseError::BadStatusCode);
        }
        let code = lex::parse_u32_max(code, 699).filter(|c| *c >= 100).ok_or(ParseError::BadStatusCode)? as u16;
        let reason = rest.get(code_end + 1..).unwrap_or(&[]);
        if reason.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(ParseError::BadStartLine("control character in reason phrase"));
        }
        return Ok(StartLine::Response { code, reason });
    }
    // Method SP Request-URI SP SIP-Version, single spaces only (RFC 4475 3.1.2.9-10)
    let sp1 = memchr::memchr(b' ', line).ok_or(ParseError::BadStartLine("not a request line"))?;
    let method_raw = &line[..sp1];
    if !lex::is_token_str(method_raw) {
        return Err(ParseError::BadStartLine("bad method"));
    }
    let rest = &line[sp1 + 1..];
    // A URI never holds SP, so a good one ends exactly where the version
    // starts and no search for the second SP is needed.
    let uri = match Uri::parse_prefix(rest) {
        Ok((uri, len)) if rest.get(len) == Some(&b' ') => {
            check_version(&rest[len + 1..])?;
            uri
        }
        _ => return Err(request_line_error(rest)),
    };
    if !uri.is_served_scheme() {
        return Err(ParseError::UnsupportedUriScheme);
    }
    if !uri.headers().is_empty() {
        return Err(ParseError::BadRequestUri("headers are not allowed in a Request-URI"));
    }
    Ok(StartLine::Request { method: Method::from_bytes(method_raw), method_raw, uri })
}

/// The error for a Request-Line whose URI did not parse up to a SP, found
/// in the order a reader checks: the version's SP, white space, the
/// version, then the URI itself.
#[cold]
fn request_line_error(rest: &[u8]) -> ParseError {
    let Some(sp2) = memchr::memchr(b' ', rest) else {
        return ParseError::BadStartLine("no SIP-Version");
    };
    let (uri_text, version) = (&rest[..sp2], &rest[sp2 + 1..]);
    if uri_text.is_empty() {
        return ParseError::BadStartLine("extra white space");
    }
    match check_version(version) {
        Err(e) => e,
        Ok(()) => ParseError::BadRequestUri("malformed"),
    }
}

/// `SIP/digits.digits`: anything else is a syntax error; a well-formed
/// version other than 2.0 is 505.
fn check_version(v: &[u8]) -> Result<(), ParseError> {
    if v == b"SIP/2.0" {
        return Ok(());
    }
    let bad = ParseError::BadStartLine("bad SIP-Version");
    if v.len() < 7 || !v[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(bad);
    }
    let nums = &v[4..];
    let dot = memchr::memchr(b'.', nums).ok_or(bad)?;
    let (major, minor) = (&nums[..dot], &nums[dot + 1..]);
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return Err(bad);
    }
    if nums != b"2.0" {
        return Err(ParseError::VersionNotSupported);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_call_id;

    #[test]
    fn call_id_is_a_word_with_at_most_one_at() {
        for ok in [&b"a"[..], b"5b6f0c1d@10.20.30.40", b"x@y", b"(weird)<id>:\"/[]?{}"] {
            assert!(valid_call_id(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [&b""[..], b"@", b"@h", b"a@", b"a@b@c", b"a b", b"a;b", b"a@b c", b"a,b"] {
            assert!(!valid_call_id(bad), "{}", String::from_utf8_lossy(bad));
        }
    }
}
