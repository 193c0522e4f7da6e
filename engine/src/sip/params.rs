//! Parameter lists: `*( SEMI generic-param )` in header values (RFC 3261 25.1)
//! and `*( ";" uri-parameter )` in URIs. Both are kept as the raw, already
//! validated text and scanned again on lookup: a list holds a handful of
//! short parameters, so a rescan is cheaper than storing them.

use super::lex::{self, quoted_string_end, skip_lws, token_end};

/// A validated parameter list, borrowed from the message. The raw text starts
/// at the first `;` (or is empty).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params<'a> {
    raw: &'a [u8],
}

/// One parameter. `value` is raw: a quoted value keeps its quotes (see
/// [`lex::unquote`]), a URI parameter keeps its `%` escapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param<'a> {
    pub name: &'a [u8],
    pub value: Option<&'a [u8]>,
}

impl Param<'_> {
    /// Writes `;name` or `;name=value`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(b';');
        out.extend_from_slice(self.name);
        if let Some(v) = self.value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }
}

impl<'a> Params<'a> {
    /// Wraps text already checked by [`parse_header_params`] or the URI parser.
    pub(crate) fn from_validated(raw: &'a [u8]) -> Self {
        Params { raw }
    }

    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { s: self.raw, pos: 0 }
    }

    /// The parameter named `name` (case-insensitive): `None` if absent,
    /// `Some(None)` if present without a value.
    pub fn get(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        self.iter().find(|p| p.name.eq_ignore_ascii_case(name)).map(|p| p.value)
    }

    /// The value of `name`, or `None` if it is absent or has no value.
    pub fn value(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.get(name).flatten()
    }

    pub fn has(&self, name: &[u8]) -> bool {
        self.get(name).is_some()
    }
}

impl<'a> IntoIterator for Params<'a> {
    type Item = Param<'a>;
    type IntoIter = ParamIter<'a>;
    fn into_iter(self) -> ParamIter<'a> {
        self.iter()
    }
}

/// Iterator over a validated parameter list.
pub struct ParamIter<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        let s = self.s;
        // Find the next ';' and the end of this parameter (next ';' outside quotes).
        let semi = s[self.pos.min(s.len())..].iter().position(|&b| b == b';')? + self.pos;
        let start = semi + 1;
        let mut end = start;
        while end < s.len() && s[end] != b';' {
            if s[end] == b'"' {
                end = quoted_string_end(s, end).unwrap_or(s.len());
            } else {
                end += 1;
            }
        }
        self.pos = end;
        let item = &s[start..end];
        let (name, value) = match item.iter().position(|&b| b == b'=') {
            // A quoted value cannot hold the '=' we split on before its quote.
            Some(eq) => (lex::trim(&item[..eq]), Some(lex::trim(&item[eq + 1..]))),
            None => (lex::trim(item), None),
        };
        Some(Param { name, value })
    }
}

/// Parses `*( SEMI generic-param )` starting at `s[i]`. Returns the validated
/// list and the index just past its last parameter; the caller decides what
/// may follow (end of value, a comma, ...). An empty parameter (`;;`) or a
/// malformed value is an error.
pub fn parse_header_params(s: &[u8], i: usize) -> Result<(Params<'_>, usize), ()> {
    parse_header_params_seeing(s, i, |_, _| {})
}

/// [`parse_header_params`], showing `seen` each parameter's name and raw
/// value as it validates them: a caller that wants a few of them (the
/// Via's branch and rport) takes them from this pass instead of scanning
/// the list again ([`ParamIter`] costs about 950 instructions a Via).
pub fn parse_header_params_seeing<'s>(s: &'s [u8], i: usize, mut seen: impl FnMut(&'s [u8], Option<&'s [u8]>)) -> Result<(Params<'s>, usize), ()> {
    let mut end = i;
    let first = skip_lws(s, i);
    if first >= s.len() || s[first] != b';' {
        return Ok((Params::default(), i));
    }
    let raw_start = first;
    loop {
        let j = skip_lws(s, end);
        if j >= s.len() || s[j] != b';' {
            break;
        }
        // name
        let n = skip_lws(s, j + 1);
        let ne = token_end(s, n);
        if ne == n {
            return Err(());
        }
        end = ne;
        // optional "= value"
        let k = skip_lws(s, ne);
        let mut value = None;
        if k < s.len() && s[k] == b'=' {
            let v = skip_lws(s, k + 1);
            if v >= s.len() {
                return Err(());
            }
            end = if s[v] == b'"' {
                quoted_string_end(s, v).ok_or(())?
            } else {
                let ve = lex::class_end(s, v, lex::Class::GEN_VALUE);
                if ve == v {
                    return Err(());
                }
                ve
            };
            value = Some(&s[v..end]);
        }
        seen(&s[n..ne], value);
    }
    Ok((Params::from_validated(&s[raw_start..end]), end))
}

/// Scans the URI parameters `*( ";" uri-parameter )` starting at `s[i]`
/// in one pass: each needs a name, names and values are `paramchar`s or
/// escapes, a value follows `=` and is not empty. Returns the index just past
/// the last parameter (the caller decides what may follow), or `None`.
pub fn uri_params_end(s: &[u8], mut i: usize) -> Option<usize> {
    while s.get(i) == Some(&b';') {
        let n = i + 1;
        i = lex::escaped_end(s, n, lex::Class::URI_PARAM)?;
        if i == n {
            return None;
        }
        if s.get(i) == Some(&b'=') {
            let v = i + 1;
            i = lex::escaped_end(s, v, lex::Class::URI_PARAM)?;
            if i == v {
                return None;
            }
        }
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_params_with_lws_and_quotes() {
        let s = br#" ;  tag    = 1918181833n ; q=0.5;x="a;b" ;lr, next"#;
        let (p, end) = parse_header_params(s, 0).unwrap();
        assert_eq!(&s[end..], b", next");
        assert_eq!(p.value(b"TAG"), Some(&b"1918181833n"[..]));
        assert_eq!(p.value(b"q"), Some(&b"0.5"[..]));
        assert_eq!(p.value(b"x"), Some(&br#""a;b""#[..]));
        assert_eq!(p.get(b"lr"), Some(None));
        assert_eq!(p.get(b"nope"), None);
        assert_eq!(p.iter().count(), 4);
    }

    #[test]
    fn empty_params_are_errors() {
        assert!(parse_header_params(b";;", 0).is_err());
        assert!(parse_header_params(b";a=", 0).is_err());
        assert!(parse_header_params(b";a=\"open", 0).is_err());
        assert!(parse_header_params(b";received=[2001:db8::1]", 0).is_ok());
    }

    #[test]
    fn uri_params() {
        let end = |s: &str| uri_params_end(s.as_bytes(), 0);
        assert_eq!(end(";lr;transport=tcp;%6C%72"), Some(24));
        assert_eq!(end(";lr;transport=tcp?h=v"), Some(17));
        assert_eq!(end(""), Some(0));
        assert_eq!(end(";lr;"), None);
        assert_eq!(end(";a="), None);
        assert_eq!(end(";a=%2"), None);
        assert_eq!(end(";a=b c"), Some(4));
    }
}
