//! `name-addr` / `addr-spec` with header parameters: From, To, Contact,
//! Route, Record-Route, P-Asserted-Identity (RFC 3261 20.10, 25.1).

use super::lex::{self, is_lws, quoted_string_end, skip_lws};
use super::params::{Params, parse_header_params};
use super::uri::Uri;
use std::borrow::Cow;

/// One address: optional display name, URI, header parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display: Option<&'a [u8]>,
    uri: Uri<'a>,
    bracketed: bool,
    params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parses one list element (already split at top-level commas).
    ///
    /// Without angle brackets the URI ends at the first `;` or white space
    /// and the parameters after it belong to the header (RFC 4475 3.3.12);
    /// such a URI may not hold `?` (3.1.2.13). Inside brackets no white space
    /// is allowed around the URI (3.1.2.14), and an unquoted display name is
    /// a run of tokens (3.1.2.15).
    pub fn parse(s: &'a [u8]) -> Result<NameAddr<'a>, ()> {
        let mut na = NameAddr::default();
        na.parse_into(s)?;
        Ok(na)
    }

    /// [`NameAddr::parse`] into `self`, which is left unspecified on error:
    /// the message parser fills its From and To in place this way, where a
    /// returned `Result` was copied out with a memcpy call each.
    pub(crate) fn parse_into(&mut self, s: &'a [u8]) -> Result<(), ()> {
        let s = lex::trim(s);
        let (display, lt) = if s.first() == Some(&b'<') {
            (None, 0)
        } else if s.first() == Some(&b'"') {
            let q = quoted_string_end(s, 0).ok_or(())?;
            let lt = skip_lws(s, q);
            if s.get(lt) != Some(&b'<') {
                return Err(());
            }
            (Some(&s[..q]), lt)
        } else {
            let j = lex::class_end(s, 0, lex::Class::TOKEN_OR_LWS);
            if s.get(j) == Some(&b'<') {
                let d = lex::trim(&s[..j]);
                (if d.is_empty() { None } else { Some(d) }, j)
            } else {
                // addr-spec
                let end = s.iter().position(|&b| b == b';' || is_lws(b)).unwrap_or(s.len());
                let uri_text = &s[..end];
                if uri_text.contains(&b'?') || uri_text.contains(&b',') {
                    return Err(());
                }
                let uri = Uri::parse(uri_text)?;
                let (params, pe) = parse_header_params(s, end)?;
                if skip_lws(s, pe) != s.len() {
                    return Err(());
                }
                *self = NameAddr { display: None, uri, bracketed: false, params };
                return Ok(());
            }
        };
        // No URI holds '>', so the URI runs exactly to the closing bracket.
        let len = self.uri.parse_prefix_into(&s[lt + 1..])?;
        let gt = lt + 1 + len;
        if s.get(gt) != Some(&b'>') {
            return Err(());
        }
        let (params, pe) = parse_header_params(s, gt + 1)?;
        if skip_lws(s, pe) != s.len() {
            return Err(());
        }
        self.display = display;
        self.bracketed = true;
        self.params = params;
        Ok(())
    }

    pub fn uri(&self) -> &Uri<'a> {
        &self.uri
    }
    /// The display name as written: quoted (with quotes) or a token run.
    pub fn display_raw(&self) -> Option<&'a [u8]> {
        self.display
    }
    /// The display name with quotes and quoted-pairs resolved.
    pub fn display_name(&self) -> Option<Cow<'a, [u8]>> {
        self.display.map(lex::unquote)
    }
    pub fn is_bracketed(&self) -> bool {
        self.bracketed
    }
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.params.value(b"tag")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> NameAddr<'_> {
        NameAddr::parse(s.as_bytes()).unwrap_or_else(|_| panic!("{s} should parse"))
    }

    #[test]
    fn forms() {
        let a = p(r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#);
        assert_eq!(a.display_name().as_deref(), Some(&br#"J Rosenberg \""#[..]));
        assert_eq!(a.uri().host(), b"example.com");
        assert_eq!(a.tag(), Some(&b"98asjd8"[..]));
        let b = p("caller<sip:caller@example.com>;tag=323");
        assert_eq!(b.display_raw(), Some(&b"caller"[..]));
        let c = p("sip:+19725552222@gw1.example.net;unknownparam");
        assert!(!c.is_bracketed());
        assert!(c.uri().params().is_empty());
        assert!(c.params().has(b"unknownparam"));
        let d = p("<sip:+19725552222@gw1.example.net;unknownparam>");
        assert!(d.uri().params().has(b"unknownparam"));
        assert!(d.params().is_empty());
        assert_eq!(p("isbn:2983792873").uri().host(), b"2983792873");
        assert_eq!(p("token1~` token2'+_ token3*%!.- <sip:mundane@example.com>").display_raw(), Some(&b"token1~` token2'+_ token3*%!.-"[..]));
        assert!(p("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>").uri().headers().starts_with(b"Route"));
    }

    #[test]
    fn torture_rejects() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            r#""Joe" <sip:joe@example.org>;;;;"#,
            "<sip:a@b",
            "<sip:a@b> trailing",
        ] {
            assert!(NameAddr::parse(bad.as_bytes()).is_err(), "{bad} should not parse");
        }
    }
}
