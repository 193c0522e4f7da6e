//! URIs: sip, sips, tel and pres (RFC 3261 19.1, RFC 3966, RFC 3859),
//! other schemes kept opaque. Parsing borrows; comparison follows RFC 3261
//! 19.1.4 without allocating.

use super::lex::{self, Canon};
use super::params::{self, Params};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheme {
    Sip,
    Sips,
    Tel,
    /// RFC 3859 presence URI; it names the same presentity as its sip: form.
    Pres,
    /// Any other scheme: the part after `:` is kept opaque.
    #[default]
    Other,
}

/// A parsed URI, borrowing from the message. Components keep their `%`
/// escapes; compare with [`Uri::equivalent`], key with [`Uri::push_aor`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uri<'a> {
    raw: &'a [u8],
    scheme: Scheme,
    scheme_raw: &'a [u8],
    user: Option<&'a [u8]>,
    password: Option<&'a [u8]>,
    /// Host for sip/sips/pres, the number for tel, the opaque part otherwise.
    host: &'a [u8],
    port: Option<u16>,
    params: Params<'a>,
    /// The header part after `?` (without it), empty if none.
    headers: &'a [u8],
}

impl<'a> Uri<'a> {
    /// Parses exactly `s` as a URI; trailing text is an error.
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, ()> {
        match Self::parse_prefix(s)? {
            (uri, end) if end == s.len() => Ok(uri),
            _ => Err(()),
        }
    }

    /// Parses the URI at the start of `s` and returns it with the index
    /// where it ends: at the first byte no URI of its scheme may hold (a
    /// URI never holds SP, `<`, `>` or `"`), so a start line or a
    /// bracketed address is parsed without first searching for its end.
    /// The caller checks what follows.
    pub fn parse_prefix(s: &'a [u8]) -> Result<(Uri<'a>, usize), ()> {
        let mut uri = Uri::default();
        let end = uri.parse_prefix_into(s)?;
        Ok((uri, end))
    }

    /// [`Uri::parse_prefix`] into `self` (left unspecified on error), so
    /// that an address parses its URI in place rather than copying a
    /// returned one.
    pub(crate) fn parse_prefix_into(&mut self, s: &'a [u8]) -> Result<usize, ()> {
        let colon = lex::class_end(s, 0, lex::Class::SCHEME);
        if colon == 0 || s.get(colon) != Some(&b':') || !s[0].is_ascii_alphabetic() {
            return Err(());
        }
        let scheme_raw = &s[..colon];
        let scheme = match scheme_raw.len() {
            3 if scheme_raw.eq_ignore_ascii_case(b"sip") => Scheme::Sip,
            3 if scheme_raw.eq_ignore_ascii_case(b"tel") => Scheme::Tel,
            4 if scheme_raw.eq_ignore_ascii_case(b"sips") => Scheme::Sips,
            4 if scheme_raw.eq_ignore_ascii_case(b"pres") => Scheme::Pres,
            _ => Scheme::Other,
        };
        let rest = &s[colon + 1..];
        *self = Uri { raw: s, scheme, scheme_raw, user: None, password: None, host: rest, port: None, params: Params::default(), headers: &[] };
        let len = match scheme {
            Scheme::Sip | Scheme::Sips | Scheme::Pres => self.parse_sip(rest)?,
            Scheme::Tel => self.parse_tel(rest)?,
            Scheme::Other => {
                let e = rest.iter().position(|&b| b <= b' ' || matches!(b, b'<' | b'>' | b'"' | 0x7f)).unwrap_or(rest.len());
                if e == 0 {
                    return Err(());
                }
                self.host = &rest[..e];
                e
            }
        };
        let end = colon + 1 + len;
        self.raw = &s[..end];
        Ok(end)
    }

    /// Parses the part after `sip:`; returns its length.
    fn parse_sip(&mut self, rest: &'a [u8]) -> Result<usize, ()> {
        // No '@' may appear after the userinfo (paramchar and hvalue exclude
        // it), so an '@' after a run of user (and password) characters ends
        // the userinfo even when the user part holds ';', '?' or ','
        // (RFC 4475 3.1.1.2, 3.1.1.9). Without that '@' the run was the host.
        // A '%' that is no escape is an error wherever it stands in a sip
        // URI, so the scans check escapes as they go, even before they
        // know whether they scanned a userinfo.
        let ue = lex::escaped_end(rest, 0, lex::Class::USER).ok_or(())?;
        let at = match rest.get(ue) {
            Some(b'@') => Some((ue, None)),
            Some(b':') => {
                let pe = lex::escaped_end(rest, ue + 1, lex::Class::PASSWORD).ok_or(())?;
                (rest.get(pe) == Some(&b'@')).then_some((pe, Some(&rest[ue + 1..pe])))
            }
            _ => None,
        };
        let hp = match at {
            Some((_, _)) if ue == 0 => return Err(()),
            Some((at, password)) => {
                self.user = Some(&rest[..ue]);
                self.password = password;
                at + 1
            }
            None => 0,
        };
        // host
        let hostport = &rest[hp..];
        let mut i = if hostport.first() == Some(&b'[') {
            let close = memchr::memchr(b']', hostport).ok_or(())?;
            if close < 3 || !hostport[1..close].iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(());
            }
            close + 1
        } else {
            let e = lex::class_end(hostport, 0, lex::Class::HOSTNAME);
            if e == 0 {
                return Err(());
            }
            e
        };
        self.host = &hostport[..i];
        // port
        if hostport.get(i) == Some(&b':') {
            let ps = i + 1;
            let pe = hostport[ps..].iter().position(|b| !b.is_ascii_digit()).map_or(hostport.len(), |p| p + ps);
            self.port = Some(lex::parse_u32_max(&hostport[ps..pe], u16::MAX as u32).ok_or(())? as u16);
            i = pe;
        }
        // params
        if hostport.get(i) == Some(&b';') {
            let pe = params::uri_params_end(hostport, i).ok_or(())?;
            self.params = Params::from_validated(&hostport[i..pe]);
            i = pe;
        }
        // headers: hname "=" hvalue *( "&" hname "=" hvalue ), hvalue may be empty
        if hostport.get(i) == Some(&b'?') {
            let h = i + 1;
            let mut j = h;
            loop {
                let ne = lex::escaped_end(hostport, j, lex::Class::URI_HEADER).ok_or(())?;
                if ne == j || hostport.get(ne) != Some(&b'=') {
                    return Err(());
                }
                j = lex::escaped_end(hostport, ne + 1, lex::Class::URI_HEADER).ok_or(())?;
                if hostport.get(j) != Some(&b'&') {
                    break;
                }
                j += 1;
            }
            self.headers = &hostport[h..j];
            i = j;
        }
        Ok(hp + i)
    }

    /// Parses the part after `tel:`; returns its length.
    fn parse_tel(&mut self, rest: &'a [u8]) -> Result<usize, ()> {
        let valid_digit = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')' | b'*' | b'#' | b'p' | b'w' | b'%');
        let semi = rest.iter().position(|b| !valid_digit(b)).unwrap_or(rest.len());
        if semi == 0 {
            return Err(());
        }
        self.host = &rest[..semi];
        let pe = params::uri_params_end(rest, semi).ok_or(())?;
        self.params = Params::from_validated(&rest[semi..pe]);
        Ok(pe)
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
    pub fn scheme_raw(&self) -> &'a [u8] {
        self.scheme_raw
    }
    pub fn user(&self) -> Option<&'a [u8]> {
        self.user
    }
    pub fn password(&self) -> Option<&'a [u8]> {
        self.password
    }
    /// Host (sip, sips, pres), number (tel) or opaque part (other schemes).
    pub fn host(&self) -> &'a [u8] {
        self.host
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    pub fn headers(&self) -> &'a [u8] {
        self.headers
    }
    /// True for the schemes this server serves: sip, sips, tel, pres.
    pub fn is_served_scheme(&self) -> bool {
        self.scheme != Scheme::Other
    }

    /// URI equivalence per RFC 3261 19.1.4 (sip, sips, pres), RFC 3966 5
    /// (tel: visual separators ignored), and exact match for other schemes.
    pub fn equivalent(&self, other: &Uri<'_>) -> bool {
        if self.scheme != other.scheme {
            return false;
        }
        match self.scheme {
            Scheme::Other => self.scheme_raw.eq_ignore_ascii_case(other.scheme_raw) && self.host == other.host,
            Scheme::Tel => tel_digits(self.host).eq(tel_digits(other.host)) && params_match_all(self.params, other.params),
            Scheme::Sip | Scheme::Sips | Scheme::Pres => {
                opt_canon_eq(self.user, other.user, false)
                    && opt_canon_eq(self.password, other.password, false)
                    && Canon::eq(self.host, other.host, true)
                    && self.port == other.port
                    && sip_params_match(self.params, other.params)
                    && headers_match(self.headers, other.headers)
            }
        }
    }

    /// Appends the canonical address-of-record of this URI (RFC 3261 10.3
    /// step 5): parameters and headers removed, escapes of unreserved
    /// characters resolved, host lower-cased. sips: and pres: name the same
    /// presentity as sip:, so they key as `sip:`.
    pub fn push_aor(&self, out: &mut Vec<u8>) {
        match self.scheme {
            Scheme::Sip | Scheme::Sips | Scheme::Pres => {
                out.extend_from_slice(b"sip:");
                if let Some(u) = self.user {
                    Canon::push(out, u, false);
                    out.push(b'@');
                }
                Canon::push(out, self.host, true);
                if let Some(p) = self.port {
                    out.push(b':');
                    out.extend_from_slice(itoa::Buffer::new().format(p).as_bytes());
                }
            }
            Scheme::Tel => {
                out.extend_from_slice(b"tel:");
                out.extend(tel_digits(self.host));
            }
            Scheme::Other => {
                out.extend(self.scheme_raw.iter().map(|b| b.to_ascii_lowercase()));
                out.push(b':');
                out.extend_from_slice(self.host);
            }
        }
    }

    /// The canonical AOR as a new vector; see [`Uri::push_aor`].
    pub fn aor(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.raw.len());
        self.push_aor(&mut v);
        v
    }
}

/// A telephone number without its visual separators (RFC 3966 5.1.1).
fn tel_digits(n: &[u8]) -> impl Iterator<Item = u8> + '_ {
    n.iter().filter(|b| !matches!(b, b'-' | b'.' | b'(' | b')')).map(|b| b.to_ascii_lowercase())
}

/// `name=value` of a URI header; a missing value is empty.
fn split_kv(kv: &[u8]) -> (&[u8], &[u8]) {
    let eq = memchr::memchr(b'=', kv).unwrap_or(kv.len());
    (&kv[..eq], kv.get(eq + 1..).unwrap_or(&[]))
}

fn opt_canon_eq(a: Option<&[u8]>, b: Option<&[u8]>, fold: bool) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Canon::eq(a, b, fold),
        _ => false,
    }
}

/// 19.1.4: parameters in both must match; user, ttl, method, maddr and
/// transport (components with a default value) must not appear in only one;
/// any other parameter in only one is ignored.
fn sip_params_match(a: Params<'_>, b: Params<'_>) -> bool {
    const STRICT: [&[u8]; 5] = [b"user", b"ttl", b"method", b"maddr", b"transport"];
    let one_way = |x: Params<'_>, y: Params<'_>| {
        x.iter().all(|p| match y.iter().find(|q| Canon::eq(p.name, q.name, true)) {
            Some(q) => opt_canon_eq(p.value, q.value, true),
            None => !STRICT.iter().any(|s| Canon::eq(p.name, s, true)),
        })
    };
    one_way(a, b) && one_way(b, a)
}

/// RFC 3966: every parameter must appear in both, with equal values.
fn params_match_all(a: Params<'_>, b: Params<'_>) -> bool {
    let one_way = |x: Params<'_>, y: Params<'_>| x.iter().all(|p| y.iter().any(|q| Canon::eq(p.name, q.name, true) && opt_canon_eq(p.value, q.value, true)));
    one_way(a, b) && one_way(b, a)
}

/// URI headers are never ignored: the same set on both sides, names
/// case-insensitive, values exact after unescaping.
fn headers_match(a: &[u8], b: &[u8]) -> bool {
    if a.is_empty() || b.is_empty() {
        return a.is_empty() && b.is_empty();
    }
    let contains = |set: &[u8], kv: &[u8]| {
        let (n, v) = split_kv(kv);
        set.split(|&c| c == b'&').any(|o| {
            let (on, ov) = split_kv(o);
            Canon::eq(n, on, true) && Canon::eq(v, ov, false)
        })
    };
    a.split(|&c| c == b'&').all(|kv| contains(b, kv)) && b.split(|&c| c == b'&').all(|kv| contains(a, kv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Uri<'_> {
        Uri::parse(s.as_bytes()).unwrap_or_else(|_| panic!("{s} should parse"))
    }
    fn eq(a: &str, b: &str) -> bool {
        u(a).equivalent(&u(b))
    }

    #[test]
    fn parses_components() {
        let x = u("sip:alice:secret@Example.COM:5070;transport=tcp;lr?subject=hi&priority=urgent");
        assert_eq!(x.scheme(), Scheme::Sip);
        assert_eq!(x.user(), Some(&b"alice"[..]));
        assert_eq!(x.password(), Some(&b"secret"[..]));
        assert_eq!(x.host(), b"Example.COM");
        assert_eq!(x.port(), Some(5070));
        assert_eq!(x.params().value(b"transport"), Some(&b"tcp"[..]));
        assert!(x.params().has(b"lr"));
        assert_eq!(x.headers(), b"subject=hi&priority=urgent");
        let v6 = u("sips:[2001:db8::10]:5061");
        assert_eq!(v6.host(), b"[2001:db8::10]");
        assert_eq!(v6.port(), Some(5061));
        let t = u("tel:+1-201-555-0123;phone-context=example.com");
        assert_eq!(t.scheme(), Scheme::Tel);
        assert_eq!(t.host(), b"+1-201-555-0123");
        assert_eq!(u("soap.beep://192.0.2.103:3002").scheme(), Scheme::Other);
    }

    #[test]
    fn user_part_may_hold_reserved_characters() {
        let x = u("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(x.user(), Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..]));
        assert_eq!(x.password(), Some(&b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"[..]));
        assert_eq!(x.host(), b"example.com");
        let s = u("sip:user;par=u%40example.net@example.com");
        assert_eq!(s.user(), Some(&b"user;par=u%40example.net"[..]));
        assert!(s.params().is_empty());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "<sip:a@b>",
            "sip:",
            "sip:a@",
            "sip:a@b:99999",
            "sip:a@b;",
            "sip:a@b c",
            "sip:a@b?x",
            "sip:%zz@b",
            ":x",
            "1sip:a",
            "sip:a:%zz@b",
            "sip:b;p=%zz",
            "sip:b?h=%4",
            "sip:@b",
            "sip:b:%41",
        ] {
            assert!(Uri::parse(bad.as_bytes()).is_err(), "{bad} should not parse");
        }
    }

    // The examples of RFC 3261 19.1.4.
    #[test]
    fn rfc3261_equivalent_examples() {
        assert!(eq("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"));
        assert!(eq("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"));
        assert!(eq("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;newparam=5"));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(eq("sip:alice@atlanta.com?subject=project%20x&priority=urgent", "sip:alice@atlanta.com?priority=urgent&subject=project%20x"));
    }

    #[test]
    fn rfc3261_not_equivalent_examples() {
        assert!(!eq("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"));
        assert!(!eq("sip:bob@biloxi.com", "sips:bob@biloxi.com"));
        assert!(!eq("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"));
        assert!(!eq("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"));
        assert!(!eq("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;newparam=6"));
        assert!(!eq("sip:carol@chicago.com", "sip:carol@chicago.com;maddr=239.255.255.1"));
        assert!(!eq("sip:a%3Bb@h", "sip:a;b@h"));
    }

    #[test]
    fn escapes_compare_equal_and_aor_is_canonical() {
        assert!(eq("sip:%75se%72@example.com", "sip:user@example.com"));
        let mut k = Vec::new();
        u("sips:%75ser@EXAMPLE.com;transport=tcp?x=y").push_aor(&mut k);
        assert_eq!(k, b"sip:user@example.com");
        assert_eq!(u("tel:+1-201-555-0123").aor(), b"tel:+12015550123");
        assert_eq!(u("pres:bob@Biloxi.com").aor(), b"sip:bob@biloxi.com");
        assert!(eq("tel:+1-201-555-0123", "tel:+1.201.555.0123"));
    }
}
