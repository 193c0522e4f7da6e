//! The Via header (RFC 3261 20.42, RFC 3581 rport).

use super::lex::{self, skip_lws, token_end};
use super::params::{Params, parse_header_params_seeing};

/// One Via entry (a Via header may hold several, comma separated).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a [u8],
    version: &'a [u8],
    transport: &'a [u8],
    host: &'a [u8],
    port: Option<u16>,
    params: Params<'a>,
    /// `branch` and `rport`, found in one pass when parsed: a request's
    /// top Via is asked for them several times between its transaction
    /// key and its answer, each a scan of the parameters (about 1,000
    /// instructions a PUBLISH, callgrind on `publish_loop`).
    branch: Option<&'a [u8]>,
    rport: Option<Option<u16>>,
}

impl<'a> Via<'a> {
    /// Parses exactly one `via-parm`. LWS is allowed around `/` and `:` and
    /// between the protocol and the sent-by (RFC 4475 3.1.1.1).
    pub fn parse(s: &'a [u8]) -> Result<Via<'a>, ()> {
        let (via, end) = Self::parse_at(s, 0)?;
        if skip_lws(s, end) != s.len() {
            return Err(());
        }
        Ok(via)
    }

    /// Every `via-parm` of a Via header value, in order. The list is parsed
    /// as it is read (a `via-parm` ends where its parameters end, and only a
    /// comma may follow), so no separate comma split runs first.
    pub fn list(s: &'a [u8]) -> ViaList<'a> {
        ViaList { s, pos: 0, done: false }
    }

    /// Parses the `via-parm` that starts at `s[i]` (after optional LWS);
    /// returns it and the index just past its last parameter.
    fn parse_at(s: &'a [u8], i: usize) -> Result<(Via<'a>, usize), ()> {
        let token = |i: usize| {
            let i = skip_lws(s, i);
            let e = token_end(s, i);
            if e == i { Err(()) } else { Ok((&s[i..e], e)) }
        };
        let slash = |i: usize| {
            let i = skip_lws(s, i);
            if s.get(i) == Some(&b'/') { Ok(i + 1) } else { Err(()) }
        };
        let (protocol, i) = token(i)?;
        let (version, i) = token(slash(i)?)?;
        let (transport, i) = token(slash(i)?)?;
        let h = skip_lws(s, i);
        if h == i {
            return Err(());
        }
        let he = if s.get(h) == Some(&b'[') {
            let close = memchr::memchr(b']', &s[h..]).ok_or(())? + h;
            if !s[h + 1..close].iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') || close == h + 1 {
                return Err(());
            }
            close + 1
        } else {
            lex::class_end(s, h, lex::Class::HOSTNAME)
        };
        if he == h {
            return Err(());
        }
        let host = &s[h..he];
        let mut i = he;
        let mut port = None;
        let c = skip_lws(s, i);
        if s.get(c) == Some(&b':') {
            let ps = skip_lws(s, c + 1);
            let pe = s[ps..].iter().position(|b| !b.is_ascii_digit()).map_or(s.len(), |p| p + ps);
            port = Some(lex::parse_u32_max(&s[ps..pe], u16::MAX as u32).ok_or(())? as u16);
            i = pe;
        }
        // The first of each counts, as a lookup by name would find it.
        let (mut branch, mut rport) = (None, None);
        let (params, pe) = parse_header_params_seeing(s, i, |name, value| {
            if branch.is_none() && name.eq_ignore_ascii_case(b"branch") {
                branch = Some(value);
            } else if rport.is_none() && name.eq_ignore_ascii_case(b"rport") {
                rport = Some(value.and_then(|v| lex::parse_u32_max(v, u16::MAX as u32)).map(|p| p as u16));
            }
        })?;
        Ok((Via { protocol, version, transport, host, port, params, branch: branch.flatten(), rport }, pe))
    }

    pub fn protocol(&self) -> &'a [u8] {
        self.protocol
    }
    pub fn version(&self) -> &'a [u8] {
        self.version
    }
    /// Transport token as written (UDP, TCP, TLS, SCTP, WS, or any extension).
    pub fn transport(&self) -> &'a [u8] {
        self.transport
    }
    pub fn host(&self) -> &'a [u8] {
        self.host
    }
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// The port a response goes to when sent-by names none: 5061 for TLS, else 5060.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(if self.transport.eq_ignore_ascii_case(b"TLS") { 5061 } else { 5060 })
    }
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    pub fn branch(&self) -> Option<&'a [u8]> {
        self.branch
    }
    /// True if the branch carries the RFC 3261 magic cookie; otherwise the
    /// transaction is matched the RFC 2543 way (RFC 4475 3.2.1).
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.len() > 7 && b[..7].eq_ignore_ascii_case(b"z9hG4bK"))
    }
    pub fn received(&self) -> Option<&'a [u8]> {
        self.params.value(b"received")
    }
    /// RFC 3581: `None` if absent, `Some(None)` if asked for (no value),
    /// `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.rport
    }
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.value(b"maddr")
    }
}

/// Iterator over the `via-parm`s of one Via header value; yields one `Err`
/// and stops at the first malformed entry.
pub struct ViaList<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Iterator for ViaList<'a> {
    type Item = Result<Via<'a>, ()>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let s = self.s;
        let parsed = Via::parse_at(s, self.pos).and_then(|(via, end)| {
            let j = skip_lws(s, end);
            match s.get(j) {
                None => self.done = true,
                Some(b',') => self.pos = j + 1,
                Some(_) => return Err(()),
            }
            Ok(via)
        });
        if parsed.is_err() {
            self.done = true;
        }
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_and_rport_taken_while_parsing_agree_with_a_lookup_by_name() {
        let cases: &[&[u8]] = &[
            b"SIP/2.0/UDP h;branch=z9hG4bK1;rport",
            b"SIP/2.0/UDP h:5060 ; BRANCH = z9hG4bK2 ; RPort = 7000",
            b"SIP/2.0/UDP h;rport=1;rport=2;branch=a;branch=b",
            b"SIP/2.0/UDP h;branch;branch=later;rport=x",
            b"SIP/2.0/UDP h;x=\"a;branch=no\";branch=yes",
            b"SIP/2.0/UDP h;received=10.0.0.1",
            b"SIP/2.0/UDP h",
            b"SIP/2.0/UDP h;rport=70000",
        ];
        for &c in cases {
            let v = Via::parse(c).unwrap();
            let text = String::from_utf8_lossy(c);
            assert_eq!(v.branch(), v.params().value(b"branch"), "{text}");
            let rport = v.params().get(b"rport").map(|p| p.and_then(|p| lex::parse_u32_max(p, u16::MAX as u32)).map(|p| p as u16));
            assert_eq!(v.rport(), rport, "{text}");
        }
        let v = Via::parse(b"SIP/2.0/UDP h;x=\"a;branch=no\";branch=yes").unwrap();
        assert_eq!(v.branch(), Some(&b"yes"[..]), "a quoted value hides what looks like a parameter");
        assert_eq!(Via::parse(b"SIP/2.0/UDP h;branch;branch=later").unwrap().branch(), None, "the first counts, even without a value");
        assert_eq!(Via::parse(b"SIP/2.0/UDP h;rport=1;rport=2").unwrap().rport(), Some(Some(1)));
    }

    #[test]
    fn parses_with_lws_everywhere() {
        let v = Via::parse(b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport(), b"UDP");
        assert_eq!(v.host(), b"192.0.2.2");
        assert_eq!(v.port(), None);
        assert_eq!(v.port_or_default(), 5060);
        assert_eq!(v.branch(), Some(&b"390skdjuw"[..]));
        assert!(!v.has_rfc3261_branch());
        let w = Via::parse(b"SIP  / 2.0  / TCP     spindle.example.com   ;\r\n  branch  =   z9hG4bK9ikj8").unwrap();
        assert_eq!(w.host(), b"spindle.example.com");
        assert!(w.has_rfc3261_branch());
        let r = Via::parse(b"SIP/2.0/UDP [2001:db8::1]:5070;rport;branch=z9hG4bKx").unwrap();
        assert_eq!(r.port(), Some(5070));
        assert_eq!(r.rport(), Some(None));
        let q = Via::parse(b"SIP/2.0/TLS h.example.com;received=192.0.2.1;rport=9999").unwrap();
        assert_eq!(q.rport(), Some(Some(9999)));
        assert_eq!(q.port_or_default(), 5061);
    }

    #[test]
    fn lists_split_where_each_entry_ends() {
        let hosts = |s: &str| Via::list(s.as_bytes()).map(|v| v.map(|v| v.host().to_vec())).collect::<Vec<_>>();
        assert_eq!(hosts("SIP/2.0/UDP a;x=\"1,2\" , SIP/2.0/TCP b:5060,SIP/2.0/UDP c"), vec![Ok(b"a".to_vec()), Ok(b"b".to_vec()), Ok(b"c".to_vec())]);
        assert_eq!(hosts("SIP/2.0/UDP a,"), vec![Ok(b"a".to_vec()), Err(())]);
        assert_eq!(hosts("SIP/2.0/UDP a,,SIP/2.0/UDP b"), vec![Ok(b"a".to_vec()), Err(())]);
        assert_eq!(hosts("SIP/2.0/UDP a junk, SIP/2.0/UDP b"), vec![Err(())]);
        assert_eq!(hosts(""), vec![Err(())]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["SIP/2.0/UDP 192.0.2.15;;", "SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host junk", "SIP/2.0/UDP ;branch=x"] {
            assert!(Via::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
