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

/// A final response as a completed server transaction keeps it through
/// Timer J (32 s over UDP): only what a retransmission of the request
/// cannot give back (status, reason, To tag and the server's own headers),
/// packed in one allocation of a few dozen bytes. The response is written
/// again around the retransmission, which carries the same Via, From, To,
/// Call-ID and CSeq (RFC 3261 17.2.3 matches it by them). The whole
/// response, kept instead, was about 400 bytes of every transaction and
/// most of the server's memory at load.
///
/// Layout: status (u16 BE), reason length (u8) and reason, tag length (u8)
/// and tag, then per header its `HeaderName` index (u8), value length
/// (u16 BE) and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAnswer(Box<[u8]>);

impl StoredAnswer {
    pub fn new(code: u16, reason: &str, tag: &[u8], headers: &[(HeaderName, &[u8])]) -> StoredAnswer {
        let mut b = Vec::new();
        Self::write(&mut b, code, reason, tag, headers);
        StoredAnswer(b.into_boxed_slice())
    }

    /// Appends the packed form to `b` (where a completed transaction keeps
    /// it without an allocation of its own: `core::completed`).
    pub fn write(b: &mut Vec<u8>, code: u16, reason: &str, tag: &[u8], headers: &[(HeaderName, &[u8])]) {
        let reason = &reason.as_bytes()[..reason.len().min(u8::MAX as usize)];
        let tag = &tag[..tag.len().min(u8::MAX as usize)];
        b.reserve(4 + reason.len() + tag.len() + headers.iter().map(|(_, v)| 3 + v.len()).sum::<usize>());
        b.extend_from_slice(&code.to_be_bytes());
        b.push(reason.len() as u8);
        b.extend_from_slice(reason);
        b.push(tag.len() as u8);
        b.extend_from_slice(tag);
        for (name, value) in headers {
            // Handlers add only known headers; an unknown name has no index.
            debug_assert!(*name != HeaderName::Other, "a stored answer names its headers");
            if *name == HeaderName::Other || value.len() > u16::MAX as usize {
                continue;
            }
            b.push(*name as u8);
            b.extend_from_slice(&(value.len() as u16).to_be_bytes());
            b.extend_from_slice(value);
        }
    }

    /// An answer from its packed form, as [`Self::write`] wrote it.
    pub fn from_bytes(packed: &[u8]) -> StoredAnswer {
        debug_assert!(packed.len() >= 4, "a packed answer has its code and two lengths");
        StoredAnswer(packed.into())
    }

    pub fn code(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }

    fn reason_bytes(&self) -> &[u8] {
        &self.0[3..3 + self.0[2] as usize]
    }

    /// Valid UTF-8 by construction, unless cut inside a character at 255
    /// bytes: then the valid prefix.
    pub fn reason(&self) -> &str {
        let r = self.reason_bytes();
        match std::str::from_utf8(r) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&r[..e.valid_up_to()]).unwrap_or_default(),
        }
    }

    fn tag_at(&self) -> usize {
        3 + self.0[2] as usize
    }

    pub fn tag(&self) -> &[u8] {
        let at = self.tag_at();
        &self.0[at + 1..at + 1 + self.0[at] as usize]
    }

    pub fn headers(&self) -> impl Iterator<Item = (HeaderName, &[u8])> {
        let at = self.tag_at();
        let mut rest = &self.0[at + 1 + self.0[at] as usize..];
        std::iter::from_fn(move || {
            let (&[name, hi, lo], tail) = rest.split_first_chunk::<3>()?;
            let len = u16::from_be_bytes([hi, lo]) as usize;
            let (value, tail) = tail.split_at(len.min(tail.len()));
            rest = tail;
            Some((HeaderName::ALL.get(name as usize).copied().unwrap_or(HeaderName::Other), value))
        })
    }
}

#[cfg(test)]
mod stored_answer_tests {
    use super::*;

    #[test]
    fn a_stored_answer_gives_back_what_it_was_given() {
        let headers: [(HeaderName, &[u8]); 3] = [(HeaderName::SipETag, b"e1x9"), (HeaderName::Expires, b"3600"), (HeaderName::Contact, b"")];
        let a = StoredAnswer::new(200, "OK", b"tag-77", &headers);
        assert_eq!((a.code(), a.reason(), a.tag()), (200, "OK", &b"tag-77"[..]));
        assert_eq!(a.headers().collect::<Vec<_>>(), headers.to_vec());
        assert_eq!(a.0.len(), 4 + 2 + 6 + (3 + 4) + (3 + 4) + 3);
        let bare = StoredAnswer::new(481, "Call/Transaction Does Not Exist", b"", &[]);
        assert_eq!((bare.code(), bare.reason(), bare.tag(), bare.headers().count()), (481, "Call/Transaction Does Not Exist", &b""[..], 0));
    }

    #[test]
    fn overlong_parts_are_cut_not_misread() {
        let reason = "é".repeat(200); // 400 bytes: cut at 255, inside a character
        let a = StoredAnswer::new(500, &reason, &[b'x'; 300], &[(HeaderName::Expires, b"1")]);
        assert_eq!(a.reason().len(), 254);
        assert_eq!(a.tag().len(), 255);
        assert_eq!(a.headers().collect::<Vec<_>>(), vec![(HeaderName::Expires, &b"1"[..])]);
    }
}
