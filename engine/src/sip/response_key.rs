//! What matches a response to its client transaction, read without
//! parsing the message: the status, the top Via's branch and the CSeq
//! method (RFC 3261 section 17.1.3).
//!
//! A fan-out sends one NOTIFY per watcher and gets one 200 back for each.
//! Of that 200 the server needs the status alone, and a full parse (every
//! header split and named, From, To and the Vias validated) was most of
//! the instructions spent on it. The shard uses this key to find the
//! transaction first and parses the whole response only when the
//! transaction's owner reads more than the status.
//!
//! The reader is conservative: a folded header line, a second CSeq, a
//! quote in the top Via, or anything else it does not expect gives
//! `None`, and the caller parses the message in full instead.

use super::header::HeaderName;
use super::lex::trim;
use super::typed::CSeq;
use memchr::memchr;

/// The fields of a response that name its client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseKey<'a> {
    pub status: u16,
    pub branch: &'a [u8],
    pub method: &'a [u8],
}

/// The key of the response in `bytes`, or `None` when it is not a
/// response or not plainly written (the caller then parses it in full).
pub fn response_key(bytes: &[u8]) -> Option<ResponseKey<'_>> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3) != Some(&b' ') {
        return None;
    }
    let status = code.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let (mut branch, mut method) = (None, None);
    let mut at = memchr(b'\n', rest)? + 1;
    loop {
        // Lines end in CRLF, as the full parse requires; a head cut short
        // has no blank line.
        let end = at + memchr(b'\n', &rest[at..])?;
        let line = rest[at..end].strip_suffix(b"\r")?;
        at = end + 1;
        let Some(&first) = line.first() else {
            return Some(ResponseKey { status, branch: branch?, method: method? });
        };
        if matches!(first, b' ' | b'\t') {
            return None;
        }
        // Only Via (v) and CSeq are read; the rest is skipped unnamed.
        if !matches!(first | 0x20, b'v' | b'c') {
            continue;
        }
        let colon = memchr(b':', line)?;
        // The line starts with its name (a fold was refused above).
        let name_len = trim(&line[..colon]).len();
        if name_len == 0 {
            return None;
        }
        let value = &line[colon + 1..];
        match HeaderName::from_line(line, name_len) {
            HeaderName::Via if branch.is_none() => branch = Some(top_via_branch(trim(value))?),
            HeaderName::CSeq if method.is_some() => return None,
            HeaderName::CSeq => method = Some(CSeq::parse(value).ok()?.method),
            _ => {}
        }
    }
}

/// The branch parameter of the first Via value in `value`.
fn top_via_branch(value: &[u8]) -> Option<&[u8]> {
    let first = &value[..memchr(b',', value).unwrap_or(value.len())];
    if memchr(b'"', first).is_some() {
        return None;
    }
    // The protocol and sent-by come before the first parameter.
    let mut at = memchr(b';', first)?;
    if trim(&first[..at]).is_empty() {
        return None;
    }
    while at < first.len() {
        let start = at + 1;
        let end = start + memchr(b';', &first[start..]).unwrap_or(first.len() - start);
        let param = &first[start..end];
        if let Some(eq) = memchr(b'=', param)
            && trim(&param[..eq]).eq_ignore_ascii_case(b"branch")
        {
            let value = trim(&param[eq + 1..]);
            return (!value.is_empty()).then_some(value);
        }
        at = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{Limits, Message};

    const OK: &str = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK0001.2a;rport=5060, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother\r\n\
From: <sip:ps@example.com>;tag=a\r\nTo: <sip:w@example.com>;tag=b\r\nCall-ID: c1\r\nCSeq: 7 NOTIFY\r\nContent-Length: 0\r\n\r\n";

    /// `OK` with `from` replaced by `to`.
    fn edited((from, to): (&str, &str)) -> String {
        OK.replace(from, to)
    }

    /// Wherever the key is read, it agrees with the full parse.
    fn agrees(text: &str) -> Option<ResponseKey<'_>> {
        let key = response_key(text.as_bytes())?;
        let msg = Message::parse(text.as_bytes(), &Limits::default()).expect("a key is read only from a response that parses");
        assert_eq!(Some(key.status), msg.status(), "{text}");
        assert_eq!(Some(key.branch), msg.via().branch(), "{text}");
        assert_eq!(key.method, msg.cseq().method, "{text}");
        Some(key)
    }

    #[test]
    fn reads_what_the_full_parse_reads() {
        let key = agrees(OK).unwrap();
        assert_eq!((key.status, key.branch, key.method), (200, &b"z9hG4bK0001.2a"[..], &b"NOTIFY"[..]));
        let variants = [
            ("Via: ", "v:  "),
            ("Via: ", "VIA :"),
            (";branch=", " ; BRANCH = "),
            ("CSeq: 7 NOTIFY", "cseq:7   NOTIFY "),
            (", SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother", "\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKother"),
            ("200 OK", "481 Call/Transaction Does Not Exist"),
        ];
        for v in variants.map(edited) {
            let key = agrees(&v).unwrap_or_else(|| panic!("no key in {v}"));
            assert_eq!(key.branch.to_ascii_lowercase(), b"z9hg4bk0001.2a", "{v}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_the_full_parse() {
        for v in [
            ("SIP/2.0 200", "SIP/2.0 20"),
            ("SIP/2.0 200 OK", "NOTIFY sip:a@b SIP/2.0"),
            ("To: ", "To:\r\n "),
            (";branch=z9hG4bK0001.2a", ""),
            (";branch=z9hG4bK0001.2a", ";branch="),
            ("CSeq: 7 NOTIFY", "CSeq: 7NOTIFY"),
            ("CSeq: 7 NOTIFY", "CSeq: NOTIFY"),
            ("Call-ID: c1", "CSeq: 8 NOTIFY"),
            ("Via: SIP/2.0/UDP 192.0.2.1:5060", "Via: SIP/2.0/UDP \"x\""),
            ("\r\n\r\n", "\r\n"),
            ("\r\n", "\n"),
            ("Call-ID: c1\r\n", "Call-ID: c1\n"),
        ]
        .map(edited)
        {
            assert_eq!(response_key(v.as_bytes()), None, "{v}");
        }
    }
}
