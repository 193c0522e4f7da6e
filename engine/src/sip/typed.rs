//! Small typed header values: CSeq, Event, Subscription-State, media types,
//! token lists, delta-seconds.

use super::lex::{self, CommaList, skip_lws, token_end};
use super::params::{Params, parse_header_params};

/// Largest CSeq sequence number: RFC 3261 8.1.1.5 requires it below 2**31.
pub const MAX_CSEQ: u32 = (1 << 31) - 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CSeq<'a> {
    pub seq: u32,
    pub method: &'a [u8],
}

impl<'a> CSeq<'a> {
    pub fn parse(s: &'a [u8]) -> Result<CSeq<'a>, ()> {
        let s = lex::trim(s);
        let de = s.iter().position(|b| !b.is_ascii_digit()).ok_or(())?;
        let seq = lex::parse_u32_max(&s[..de], MAX_CSEQ).ok_or(())?;
        let m = skip_lws(s, de);
        if m == de || token_end(s, m) != s.len() || m == s.len() {
            return Err(());
        }
        Ok(CSeq { seq, method: &s[m..] })
    }
}

/// A value made of one token and header parameters: Event
/// (`presence;id=7`), Subscription-State (`active;expires=600`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenParams<'a> {
    pub token: &'a [u8],
    pub params: Params<'a>,
}

impl<'a> TokenParams<'a> {
    pub fn parse(s: &'a [u8]) -> Result<TokenParams<'a>, ()> {
        let s = lex::trim(s);
        let te = token_end(s, 0);
        if te == 0 {
            return Err(());
        }
        let (params, pe) = parse_header_params(s, te)?;
        if skip_lws(s, pe) != s.len() {
            return Err(());
        }
        Ok(TokenParams { token: &s[..te], params })
    }
}

/// Event header (RFC 6665 8.2.1): package name and optional `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a>(pub TokenParams<'a>);

impl<'a> Event<'a> {
    pub fn parse(s: &'a [u8]) -> Result<Event<'a>, ()> {
        TokenParams::parse(s).map(Event)
    }
    /// Package name, compared case-insensitively by [`Event::is`].
    pub fn package(&self) -> &'a [u8] {
        self.0.token
    }
    pub fn is(&self, package: &str) -> bool {
        self.0.token.eq_ignore_ascii_case(package.as_bytes())
    }
    pub fn id(&self) -> Option<&'a [u8]> {
        self.0.params.value(b"id")
    }
    pub fn params(&self) -> Params<'a> {
        self.0.params
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubState {
    Active,
    Pending,
    Terminated,
    Other,
}

/// Subscription-State header (RFC 6665 8.2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubscriptionState<'a>(pub TokenParams<'a>);

impl<'a> SubscriptionState<'a> {
    pub fn parse(s: &'a [u8]) -> Result<SubscriptionState<'a>, ()> {
        let tp = TokenParams::parse(s)?;
        for name in [&b"expires"[..], b"retry-after"] {
            if let Some(v) = tp.params.get(name) {
                v.and_then(lex::parse_u32).ok_or(())?;
            }
        }
        Ok(SubscriptionState(tp))
    }
    pub fn state(&self) -> SubState {
        let t = self.0.token;
        if t.eq_ignore_ascii_case(b"active") {
            SubState::Active
        } else if t.eq_ignore_ascii_case(b"pending") {
            SubState::Pending
        } else if t.eq_ignore_ascii_case(b"terminated") {
            SubState::Terminated
        } else {
            SubState::Other
        }
    }
    pub fn expires(&self) -> Option<u32> {
        self.0.params.value(b"expires").and_then(lex::parse_u32)
    }
    pub fn retry_after(&self) -> Option<u32> {
        self.0.params.value(b"retry-after").and_then(lex::parse_u32)
    }
    pub fn reason(&self) -> Option<&'a [u8]> {
        self.0.params.value(b"reason")
    }
}

/// A media type or media range: `type/subtype;params` (Content-Type, Accept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub type_: &'a [u8],
    pub subtype: &'a [u8],
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    pub fn parse(s: &'a [u8]) -> Result<MediaType<'a>, ()> {
        let s = lex::trim(s);
        let te = token_end(s, 0);
        let slash = skip_lws(s, te);
        if te == 0 || s.get(slash) != Some(&b'/') {
            return Err(());
        }
        let ss = skip_lws(s, slash + 1);
        let se = token_end(s, ss);
        if se == ss {
            return Err(());
        }
        let (params, pe) = parse_header_params(s, se)?;
        if skip_lws(s, pe) != s.len() {
            return Err(());
        }
        Ok(MediaType { type_: &s[..te], subtype: &s[ss..se], params })
    }

    /// True if this is `type/subtype`, case-insensitively.
    pub fn is(&self, type_: &str, subtype: &str) -> bool {
        self.type_.eq_ignore_ascii_case(type_.as_bytes()) && self.subtype.eq_ignore_ascii_case(subtype.as_bytes())
    }

    /// True if this media range (possibly with `*` wildcards) accepts `type/subtype`.
    pub fn accepts(&self, type_: &str, subtype: &str) -> bool {
        (self.type_ == b"*" || self.type_.eq_ignore_ascii_case(type_.as_bytes()))
            && (self.subtype == b"*" || self.subtype.eq_ignore_ascii_case(subtype.as_bytes()))
    }
}

/// Parses a comma-separated list of tokens (Require, Supported, Allow,
/// Allow-Events ...), checking every element.
pub fn token_list(s: &[u8]) -> impl Iterator<Item = Result<&[u8], ()>> {
    CommaList::new(s).map(|t| if lex::is_token_str(t) { Ok(t) } else { Err(()) })
}

/// A delta-seconds value (Expires, Min-Expires): digits only, at most 2**32-1.
/// White space inside the digits is refused by the digit check itself.
#[inline]
pub fn delta_seconds(s: &[u8]) -> Result<u32, ()> {
    lex::parse_u32(lex::trim(s)).ok_or(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cseq() {
        assert_eq!(CSeq::parse(b"0009\r\n  INVITE").unwrap(), CSeq { seq: 9, method: b"INVITE" });
        assert!(CSeq::parse(b"36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse(b"2147483648 REGISTER").is_err());
        assert!(CSeq::parse(b"2147483647 REGISTER").is_ok());
        assert!(CSeq::parse(b"1REGISTER").is_err());
        assert!(CSeq::parse(b"1 REGISTER x").is_err());
        assert!(CSeq::parse(b"REGISTER").is_err());
    }

    #[test]
    fn event_and_state() {
        let e = Event::parse(b"Presence ; id=17").unwrap();
        assert!(e.is("presence"));
        assert_eq!(e.id(), Some(&b"17"[..]));
        let st = SubscriptionState::parse(b"terminated;reason=timeout").unwrap();
        assert_eq!(st.state(), SubState::Terminated);
        assert_eq!(st.reason(), Some(&b"timeout"[..]));
        assert_eq!(SubscriptionState::parse(b"active;expires=600").unwrap().expires(), Some(600));
        assert!(SubscriptionState::parse(b"active;expires=soon").is_err());
    }

    #[test]
    fn media_types() {
        let m = MediaType::parse(b"application/pidf+xml; charset=\"utf-8\"").unwrap();
        assert!(m.is("application", "PIDF+XML"));
        assert_eq!(m.params.value(b"charset"), Some(&b"\"utf-8\""[..]));
        assert!(MediaType::parse(b"*/*").unwrap().accepts("text", "plain"));
        assert!(MediaType::parse(b"application/*").unwrap().accepts("application", "pidf+xml"));
        assert!(MediaType::parse(b"application").is_err());
        let list: Vec<_> = token_list(b"100rel, timer ,path").collect();
        assert_eq!(list, vec![Ok(&b"100rel"[..]), Ok(&b"timer"[..]), Ok(&b"path"[..])]);
        assert!(token_list(b"a b").any(|r| r.is_err()));
        assert_eq!(delta_seconds(b" 3600 "), Ok(3600));
        assert!(delta_seconds(b"10000000000000000000000000000000000000").is_err());
        assert!(delta_seconds(b"36 00").is_err());
        assert!(delta_seconds(b"36\r\n 00").is_err());
        assert!(delta_seconds(b"").is_err());
    }
}
