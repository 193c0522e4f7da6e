//! Writing SIP messages into a reusable buffer, and responses built from a
//! request per RFC 3261 8.2.6.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::addr::NameAddr;
use super::header::HeaderName;
use super::lex::CommaList;
use super::message::{Message, RawMessage};
use super::oc::{self, OcFeedback};
use super::via::Via;

/// Appends one message to a caller-owned buffer. Start with
/// [`MessageWriter::request`], [`MessageWriter::response`] or
/// [`response_to`], add headers, end with [`MessageWriter::finish`], which
/// writes Content-Length itself.
pub struct MessageWriter<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> MessageWriter<'b> {
    pub fn request(out: &'b mut Vec<u8>, method: &[u8], uri: &[u8]) -> Self {
        out.extend_from_slice(method);
        out.push(b' ');
        out.extend_from_slice(uri);
        out.extend_from_slice(b" SIP/2.0\r\n");
        MessageWriter { out }
    }

    pub fn response(out: &'b mut Vec<u8>, code: u16, reason: &str) -> Self {
        out.extend_from_slice(b"SIP/2.0 ");
        out.extend_from_slice(itoa::Buffer::new().format(code).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        MessageWriter { out }
    }

    pub fn header(&mut self, name: HeaderName, value: &[u8]) -> &mut Self {
        self.header_raw(name.as_str().as_bytes(), value)
    }

    pub fn header_raw(&mut self, name: &[u8], value: &[u8]) -> &mut Self {
        self.header_parts_raw(name, &[value])
    }

    /// A header whose value is the concatenation of `parts`: saves the
    /// caller a temporary buffer.
    pub fn header_parts(&mut self, name: HeaderName, parts: &[&[u8]]) -> &mut Self {
        self.header_parts_raw(name.as_str().as_bytes(), parts)
    }

    fn header_parts_raw(&mut self, name: &[u8], parts: &[&[u8]]) -> &mut Self {
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        for p in parts {
            self.out.extend_from_slice(p);
        }
        self.out.extend_from_slice(b"\r\n");
        self
    }

    pub fn header_u32(&mut self, name: HeaderName, v: u32) -> &mut Self {
        self.header(name, itoa::Buffer::new().format(v).as_bytes())
    }

    /// Writes Content-Type (if given and the body is not empty),
    /// Content-Length, the blank line and the body.
    pub fn finish(self, content_type: Option<&[u8]>, body: &[u8]) {
        let out = self.finish_before_body(content_type, body.len());
        out.extend_from_slice(body);
    }

    /// [`Self::finish`] for a body of `len` bytes that the caller sends
    /// right after these bytes (a document shared by many messages).
    pub fn finish_before_body(self, content_type: Option<&[u8]>, len: usize) -> &'b mut Vec<u8> {
        let out = self.out;
        if let (Some(ct), false) = (content_type, len == 0) {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(ct);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out
    }
}

/// Starts a response to `req` (RFC 3261 8.2.6.2): copies every Via in order,
/// From, Call-ID and CSeq, and To with `to_tag` added when To has none and
/// the response is not a 100. Works on a [`RawMessage`] so that a request
/// which failed validation can still be answered.
///
/// With `source` (the address the request came from) the top Via is stamped
/// per RFC 3261 18.2.1 and RFC 3581: `received` when the sent-by host is not
/// that address or rport was asked for, and `rport` filled in with the port.
pub fn response_to<'b>(
    out: &'b mut Vec<u8>,
    req: &RawMessage<'_>,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    source: Option<SocketAddr>,
) -> MessageWriter<'b> {
    response_to_with(out, req, code, reason, to_tag, source, None)
}

/// A request to answer: its bytes only (it may have failed validation),
/// or a parsed [`Message`], whose top Via and To tag are then not parsed
/// a second time (about a fifth of building a 200).
pub enum Request<'m, 'r> {
    Raw(&'m RawMessage<'r>),
    Parsed(&'m Message<'r>),
}

impl<'m, 'r> From<&'m RawMessage<'r>> for Request<'m, 'r> {
    fn from(r: &'m RawMessage<'r>) -> Self {
        Request::Raw(r)
    }
}

impl<'m, 'r> From<&'m Message<'r>> for Request<'m, 'r> {
    fn from(m: &'m Message<'r>) -> Self {
        Request::Parsed(m)
    }
}

/// Like [`response_to`], and when the client asked for loss-based overload
/// control in its Via (RFC 7339), answers there with `oc` feedback
/// (`None`: no feedback to give; only written together with a `source`).
pub fn response_to_with<'b, 'm, 'r: 'm>(
    out: &'b mut Vec<u8>,
    req: impl Into<Request<'m, 'r>>,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    source: Option<SocketAddr>,
    oc: Option<&OcFeedback>,
) -> MessageWriter<'b> {
    let (req, top_via, to_tagged) = match req.into() {
        Request::Raw(r) => (r, None, None),
        Request::Parsed(m) => (m.raw(), Some(*m.via()), Some(m.to().tag().is_some())),
    };
    let mut w = MessageWriter::response(out, code, reason);
    let mut first_via = true;
    for v in req.header_values(HeaderName::Via) {
        match (first_via, source) {
            (true, Some(src)) => write_stamped_via(w.out, v, top_via, src, oc),
            _ => {
                w.header(HeaderName::Via, v);
            }
        }
        first_via = false;
    }
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId, HeaderName::CSeq] {
        let Some(v) = req.header(name) else { continue };
        let to_untagged = || to_tagged.map_or_else(|| NameAddr::parse(v).map(|na| na.tag().is_none()).unwrap_or(false), |tagged| !tagged);
        let add_tag = name == HeaderName::To && code != 100 && to_tag.is_some() && to_untagged();
        match (add_tag, to_tag) {
            (true, Some(tag)) => w.header_parts(name, &[v, b";tag=", tag]),
            _ => w.header(name, v),
        };
    }
    w
}

/// An address as it appears in a Via: dotted quad, or bracketed IPv6. IPv4
/// is formatted by hand: `fmt` costs more than the rest of a response.
fn format_ip(ip: IpAddr) -> arrayvec::ArrayString<48> {
    let mut out = arrayvec::ArrayString::<48>::new();
    match ip {
        IpAddr::V4(a) => {
            let mut b = itoa::Buffer::new();
            for (i, o) in a.octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(b.format(*o));
            }
        }
        IpAddr::V6(a) => {
            let _ = write!(out, "[{a}]");
        }
    }
    out
}

/// Writes `Via: <value>` with the first entry stamped for `src`, and
/// with overload-control feedback when the client asked for it.
/// `top` is the entry already parsed from these bytes, if the caller has it.
fn write_stamped_via(out: &mut Vec<u8>, value: &[u8], top: Option<Via<'_>>, src: SocketAddr, oc: Option<&OcFeedback>) {
    let first = CommaList::new(value).next().unwrap_or(value);
    let Some(via) = top.or_else(|| Via::parse(first).ok()) else {
        // Phase 2 rejected it; answer with the Via as it came.
        MessageWriter { out }.header(HeaderName::Via, value);
        return;
    };
    let ip = format_ip(src.ip());
    let rport_asked = via.rport().is_some();
    let add_received = rport_asked || !via.host().eq_ignore_ascii_case(ip.as_bytes());
    let first_off = first.as_ptr() as usize - value.as_ptr() as usize;
    let params_off = if via.params().is_empty() { first_off + first.len() } else { via.params().raw().as_ptr() as usize - value.as_ptr() as usize };
    out.extend_from_slice(b"Via: ");
    out.extend_from_slice(&value[..params_off]);
    let oc = oc.filter(|_| oc::client_supports_loss(&via));
    for p in via.params() {
        if p.name.eq_ignore_ascii_case(b"received") || p.name.eq_ignore_ascii_case(b"rport") || (oc.is_some() && oc::is_oc_param(p.name)) {
            continue;
        }
        p.write_to(out);
    }
    if let Some(f) = oc {
        f.write_to(out);
    }
    if add_received {
        out.extend_from_slice(b";received=");
        // RFC 3261 writes received as a bare IPv6 address ... but sent-by
        // style brackets are what peers parse most reliably.
        out.extend_from_slice(ip.as_bytes());
    }
    if rport_asked {
        out.extend_from_slice(b";rport=");
        out.extend_from_slice(itoa::Buffer::new().format(src.port()).as_bytes());
    }
    out.extend_from_slice(&value[first_off + first.len()..]);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{Limits, Message};

    const SUB: &[u8] = b"SUBSCRIBE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK776;rport, SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1\r\n\
Via: SIP/2.0/TCP up.example.com;branch=z9hG4bKu\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@example.com>;tag=a1\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: c1@10.0.0.1\r\n\
CSeq: 5 SUBSCRIBE\r\n\
Event: presence\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn response_copies_dialog_headers_and_adds_to_tag() {
        let req = RawMessage::split(SUB, &Limits::default()).unwrap();
        let mut out = Vec::new();
        let mut w = response_to(&mut out, &req, 200, "OK", Some(b"srv7"), None);
        w.header_u32(HeaderName::Expires, 600);
        w.finish(None, b"");
        let resp = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(resp.status(), Some(200));
        assert_eq!(resp.vias().count(), 3);
        assert_eq!(resp.via().branch(), Some(&b"z9hG4bK776"[..]));
        assert_eq!(resp.to().tag(), Some(&b"srv7"[..]));
        assert_eq!(resp.from().tag(), Some(&b"a1"[..]));
        assert_eq!(resp.call_id(), b"c1@10.0.0.1");
        assert_eq!(resp.cseq().seq, 5);
        assert_eq!(resp.expires(), Some(600));
        assert!(resp.body().is_empty());
    }

    #[test]
    fn a_parsed_request_gets_the_same_bytes_as_a_raw_one() {
        let tagged = String::from_utf8(SUB.to_vec()).unwrap().replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=old");
        let no_rport = String::from_utf8(SUB.to_vec()).unwrap().replace(";rport", "");
        let oc_asked = String::from_utf8(SUB.to_vec()).unwrap().replace(";rport,", ";rport;oc;oc-algo=\"loss\";oc-seq=1.0,");
        let src: SocketAddr = "192.0.2.9:40000".parse().unwrap();
        let f = OcFeedback { loss_pct: 40, validity_ms: 500, seq_ms: 7_001 };
        for req in [SUB, tagged.as_bytes(), no_rport.as_bytes(), oc_asked.as_bytes()] {
            let msg = Message::parse(req, &Limits::default()).unwrap();
            for (code, source, oc) in [(200, Some(src), None), (100, Some(src), None), (202, None, None), (200, Some(src), Some(&f))] {
                let (mut raw, mut parsed) = (Vec::new(), Vec::new());
                response_to_with(&mut raw, msg.raw(), code, "X", Some(b"t9"), source, oc).finish(None, b"");
                response_to_with(&mut parsed, &msg, code, "X", Some(b"t9"), source, oc).finish(None, b"");
                assert_eq!(String::from_utf8_lossy(&parsed), String::from_utf8_lossy(&raw), "{code} {source:?}");
            }
        }
    }

    #[test]
    fn existing_to_tag_is_kept_and_100_gets_none() {
        let with_tag = String::from_utf8(SUB.to_vec()).unwrap().replace("To: <sip:bob@example.com>", "To: <sip:bob@example.com>;tag=old");
        let req = RawMessage::split(with_tag.as_bytes(), &Limits::default()).unwrap();
        let mut out = Vec::new();
        response_to(&mut out, &req, 200, "OK", Some(b"new"), None).finish(None, b"");
        assert_eq!(Message::parse(&out, &Limits::default()).unwrap().to().tag(), Some(&b"old"[..]));
        let req = RawMessage::split(SUB, &Limits::default()).unwrap();
        out.clear();
        response_to(&mut out, &req, 100, "Trying", Some(b"new"), None).finish(None, b"");
        assert_eq!(Message::parse(&out, &Limits::default()).unwrap().to().tag(), None);
    }

    #[test]
    fn top_via_is_stamped_per_rfc3581() {
        let req = RawMessage::split(SUB, &Limits::default()).unwrap();
        let mut out = Vec::new();
        response_to(&mut out, &req, 200, "OK", None, Some("192.0.2.9:40000".parse().unwrap())).finish(None, b"");
        let resp = Message::parse(&out, &Limits::default()).unwrap();
        let vias: Vec<_> = resp.vias().collect();
        assert_eq!(vias.len(), 3);
        assert_eq!(vias[0].received(), Some(&b"192.0.2.9"[..]));
        assert_eq!(vias[0].rport(), Some(Some(40000)));
        assert_eq!(vias[0].branch(), Some(&b"z9hG4bK776"[..]));
        assert_eq!(vias[1].host(), b"proxy.example.com");
        assert_eq!(vias[1].received(), None);
        // No rport asked and sent-by equal to the source: nothing added.
        let plain = String::from_utf8(SUB.to_vec()).unwrap().replace(";rport", "");
        let req = RawMessage::split(plain.as_bytes(), &Limits::default()).unwrap();
        out.clear();
        response_to(&mut out, &req, 200, "OK", None, Some("10.0.0.1:5062".parse().unwrap())).finish(None, b"");
        let resp = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(resp.via().received(), None);
        assert_eq!(resp.via().rport(), None);
    }

    #[test]
    fn overload_feedback_goes_only_to_a_client_that_asked() {
        let f = OcFeedback { loss_pct: 40, validity_ms: 500, seq_ms: 7_001 };
        let src = Some("10.0.0.1:5062".parse().unwrap());
        let asked = String::from_utf8(SUB.to_vec()).unwrap().replace(";rport,", ";rport;oc;oc-algo=\"loss\";oc-seq=1.0,");
        let req = RawMessage::split(asked.as_bytes(), &Limits::default()).unwrap();
        let mut out = Vec::new();
        response_to_with(&mut out, &req, 200, "OK", None, src, Some(&f)).finish(None, b"");
        let resp = Message::parse(&out, &Limits::default()).unwrap();
        let vias: Vec<_> = resp.vias().collect();
        assert_eq!(OcFeedback::read(&vias[0]), Some(f));
        // The client's own oc parameters were replaced, not repeated.
        assert_eq!(vias[0].params().iter().filter(|p| p.name == b"oc").count(), 1);
        assert_eq!(OcFeedback::read(&vias[1]), None);
        // A client that did not ask gets no feedback.
        let req = RawMessage::split(SUB, &Limits::default()).unwrap();
        out.clear();
        response_to_with(&mut out, &req, 200, "OK", None, src, Some(&f)).finish(None, b"");
        assert!(!Message::parse(&out, &Limits::default()).unwrap().via().params().has(b"oc"));
    }

    #[test]
    fn request_writer_round_trips() {
        let mut out = Vec::new();
        let mut w = MessageWriter::request(&mut out, b"PUBLISH", b"sip:alice@example.com");
        w.header(HeaderName::Via, b"SIP/2.0/UDP h;branch=z9hG4bK1")
            .header(HeaderName::MaxForwards, b"70")
            .header(HeaderName::From, b"<sip:alice@example.com>;tag=x")
            .header(HeaderName::To, b"<sip:alice@example.com>")
            .header(HeaderName::CallId, b"p1")
            .header(HeaderName::CSeq, b"1 PUBLISH")
            .header(HeaderName::Event, b"presence")
            .header_u32(HeaderName::Expires, 3600);
        w.finish(Some(b"application/pidf+xml"), b"<presence/>");
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!(m.body(), b"<presence/>");
        assert!(m.content_type().unwrap().is("application", "pidf+xml"));
        assert!(m.event().unwrap().unwrap().is("presence"));
    }
}
