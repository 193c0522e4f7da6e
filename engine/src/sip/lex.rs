//! Lexical building blocks of RFC 3261 section 25: character classes, linear
//! white space, quoted strings, numbers.
//!
//! Header values are borrowed straight from the wire, folds included. A value
//! can only contain CR or LF as part of a fold (CRLF followed by SP/HT: the
//! head splitter guarantees it), so every scanner here treats SP, HT, CR and LF
//! alike as linear white space. That is what keeps the parser zero-copy: no
//! value is ever unfolded into a new buffer.

/// Bit flags of the character class table.
const TOKEN: u16 = 1; // RFC 3261 `token` characters
const UNRESERVED: u16 = 2; // alphanum / mark
const USER: u16 = 4; // user-unreserved: & = + $ , ; ? /
const PASSWORD: u16 = 8; // & = + $ ,
const PARAM: u16 = 16; // param-unreserved: [ ] / : & + $
const HEADER: u16 = 32; // hnv-unreserved: [ ] / ? : + $
const WORD: u16 = 64; // Call-ID `word` characters
const GEN_VALUE: u16 = 128; // token / host: an unquoted header parameter value
const LWS: u16 = 256; // SP HT CR LF
const SCHEME: u16 = 512; // ALPHA DIGIT + - .
const HOSTNAME: u16 = 1024; // alphanum - .

/// A set of characters, as a mask over the class table: one lookup and one
/// AND per byte, whatever the set.
#[derive(Clone, Copy)]
pub struct Class(u16);

impl Class {
    pub const TOKEN: Class = Class(TOKEN);
    pub const WORD: Class = Class(WORD);
    pub const USER: Class = Class(UNRESERVED | USER);
    pub const PASSWORD: Class = Class(UNRESERVED | PASSWORD);
    pub const URI_PARAM: Class = Class(UNRESERVED | PARAM);
    pub const URI_HEADER: Class = Class(UNRESERVED | HEADER);
    pub const GEN_VALUE: Class = Class(GEN_VALUE);
    pub const TOKEN_OR_LWS: Class = Class(TOKEN | LWS);
    pub const LWS: Class = Class(LWS);
    pub const SCHEME: Class = Class(SCHEME);
    pub const HOSTNAME: Class = Class(HOSTNAME);

    #[inline(always)]
    pub fn has(self, b: u8) -> bool {
        CLASS[b as usize] & self.0 != 0
    }
}

const fn build_table() -> [u16; 256] {
    let mut t = [0u16; 256];
    let mut c = 0usize;
    while c < 256 {
        let b = c as u8;
        let alnum = b.is_ascii_alphanumeric();
        let mut f = 0u16;
        if alnum || matches!(b, b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~') {
            f |= TOKEN | GEN_VALUE;
        }
        if matches!(b, b':' | b'[' | b']') {
            f |= GEN_VALUE;
        }
        if alnum || matches!(b, b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')') {
            f |= UNRESERVED;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/') {
            f |= USER;
        }
        if matches!(b, b'&' | b'=' | b'+' | b'$' | b',') {
            f |= PASSWORD;
        }
        if matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$') {
            f |= PARAM;
        }
        if matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$') {
            f |= HEADER;
        }
        if alnum
            || matches!(
                b,
                b'-' | b'.'
                    | b'!'
                    | b'%'
                    | b'*'
                    | b'_'
                    | b'+'
                    | b'`'
                    | b'\''
                    | b'~'
                    | b'('
                    | b')'
                    | b'<'
                    | b'>'
                    | b':'
                    | b'\\'
                    | b'"'
                    | b'/'
                    | b'['
                    | b']'
                    | b'?'
                    | b'{'
                    | b'}'
            )
        {
            f |= WORD;
        }
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            f |= LWS;
        }
        if alnum || matches!(b, b'+' | b'-' | b'.') {
            f |= SCHEME;
        }
        if alnum || matches!(b, b'-' | b'.') {
            f |= HOSTNAME;
        }
        t[c] = f;
        c += 1;
    }
    t
}

static CLASS: [u16; 256] = build_table();

#[inline(always)]
pub fn is_token(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0
}
#[inline(always)]
pub fn is_lws(b: u8) -> bool {
    CLASS[b as usize] & LWS != 0
}

/// End of the run of `class` characters starting at `i`.
#[inline]
pub fn class_end(s: &[u8], i: usize, class: Class) -> usize {
    let Some(rest) = s.get(i..) else { return i };
    // Four bytes per loop trip: one taken branch per four bytes, not one
    // per byte, which is what bounds a byte loop on runs such as a Via
    // branch or a host name.
    let mut chunks = rest.chunks_exact(4);
    let mut at = i;
    for c in &mut chunks {
        if !class.has(c[0]) {
            return at;
        }
        if !class.has(c[1]) {
            return at + 1;
        }
        if !class.has(c[2]) {
            return at + 2;
        }
        if !class.has(c[3]) {
            return at + 3;
        }
        at += 4;
    }
    chunks.remainder().iter().position(|&b| !class.has(b)).map_or(s.len(), |p| at + p)
}

/// Index of the first non-LWS byte at or after `i`.
#[inline(always)]
pub fn skip_lws(s: &[u8], i: usize) -> usize {
    // Most calls find no white space at all.
    match s.get(i) {
        Some(&b) if is_lws(b) => class_end(s, i + 1, Class::LWS),
        _ => i,
    }
}

/// `s` without leading and trailing linear white space.
#[inline]
pub fn trim(s: &[u8]) -> &[u8] {
    let start = skip_lws(s, 0);
    let end = s[start..].iter().rposition(|&b| !is_lws(b)).map_or(start, |p| start + p + 1);
    &s[start..end]
}

/// End of the run of token characters starting at `i`.
#[inline]
pub fn token_end(s: &[u8], i: usize) -> usize {
    class_end(s, i, Class::TOKEN)
}

/// True if `s` is a non-empty token.
#[inline]
pub fn is_token_str(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token(b))
}

/// `s[i]` must be `"`: returns the index just past the closing quote, or `None`
/// if the string is unterminated or holds a bare CR/LF that is not a fold.
pub fn quoted_string_end(s: &[u8], i: usize) -> Option<usize> {
    debug_assert_eq!(s.get(i), Some(&b'"'));
    let mut j = i + 1;
    while j < s.len() {
        match s[j] {
            b'"' => return Some(j + 1),
            // quoted-pair: any octet but CR and LF may be escaped
            b'\\' => {
                if j + 1 >= s.len() || matches!(s[j + 1], b'\r' | b'\n') {
                    return None;
                }
                j += 2;
            }
            _ => j += 1,
        }
    }
    None
}

/// The content of a quoted string (without the quotes) with its quoted-pairs
/// resolved. Borrows when there is nothing to resolve.
pub fn unquote(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let inner = if s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"' { &s[1..s.len() - 1] } else { s };
    if !inner.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut it = inner.iter();
    while let Some(&b) = it.next() {
        if b == b'\\' {
            if let Some(&n) = it.next() {
                out.push(n);
            }
        } else {
            out.push(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A decimal number of at most `max`, all digits. Leading zeros are legal
/// (RFC 4475 3.1.1.1 sends `Max-Forwards: 0068`); overflow is an error, not a wrap.
#[inline]
pub fn parse_u32_max(s: &[u8], max: u32) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    // `v` stays at most `max` < 2^32 before each step, so `v * 10 + 9`
    // cannot overflow a u64: no checked arithmetic per digit.
    let mut v: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
        if v > max as u64 {
            return None;
        }
    }
    Some(v as u32)
}

#[inline]
pub fn parse_u32(s: &[u8]) -> Option<u32> {
    parse_u32_max(s, u32::MAX)
}

/// Value of one hex digit.
#[inline]
pub fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// End of the run of `class` characters and `%XX` escapes starting at
/// `s[i]`, or `None` if the run holds a `%` that does not start a valid escape.
#[inline]
pub fn escaped_end(s: &[u8], mut i: usize, class: Class) -> Option<usize> {
    loop {
        i = class_end(s, i, class);
        if s.get(i) != Some(&b'%') {
            return Some(i);
        }
        match (s.get(i + 1).copied().and_then(hex_val), s.get(i + 2).copied().and_then(hex_val)) {
            (Some(_), Some(_)) => i += 3,
            _ => return None,
        }
    }
}

/// RFC 2396 `reserved` characters: the only ones whose escaped and unescaped
/// forms differ when URIs are compared (RFC 3261 19.1.4).
#[inline]
pub fn is_reserved(b: u8) -> bool {
    matches!(b, b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b',')
}

/// The canonical form of URI components used for comparison (RFC 3261
/// 19.1.4): escapes of unreserved characters are resolved, escapes of
/// reserved characters stay escapes (so `a%3Bb` differs from `a;b`), and
/// optionally ASCII case is folded. Works unit by unit, without allocating.
pub struct Canon<'a> {
    s: &'a [u8],
    i: usize,
    fold: bool,
}

impl<'a> Canon<'a> {
    pub fn new(s: &'a [u8], fold: bool) -> Self {
        Canon { s, i: 0, fold }
    }

    /// True if `a` and `b` have the same canonical form.
    pub fn eq(a: &[u8], b: &[u8], fold: bool) -> bool {
        Canon::new(a, fold).eq(Canon::new(b, fold))
    }

    /// Appends the canonical form of `s`, escaped reserved characters written
    /// as `%XX` with upper-case hex.
    pub fn push(out: &mut Vec<u8>, s: &[u8], fold: bool) {
        // Without escapes the canonical form is the text itself (folded):
        // one copy instead of a step per byte, which was most of a
        // PUBLISH's AOR normalisation (`Uri::push_aor`, callgrind).
        if memchr::memchr(b'%', s).is_none() {
            if fold {
                out.extend(s.iter().map(u8::to_ascii_lowercase));
            } else {
                out.extend_from_slice(s);
            }
            return;
        }
        for unit in Canon::new(s, fold) {
            if unit > 0xff {
                let v = (unit & 0xff) as usize;
                out.extend_from_slice(&[b'%', b"0123456789ABCDEF"[v >> 4], b"0123456789ABCDEF"[v & 15]]);
            } else {
                out.push(unit as u8);
            }
        }
    }
}

impl Iterator for Canon<'_> {
    /// A plain octet (0..=255) or an escaped reserved octet (0x100 + octet).
    type Item = u16;
    fn next(&mut self) -> Option<u16> {
        let s = self.s;
        let b = *s.get(self.i)?;
        if b == b'%' && self.i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex_val(s[self.i + 1]), hex_val(s[self.i + 2])) {
                self.i += 3;
                let v = h * 16 + l;
                return Some(if is_reserved(v) {
                    0x100 | v as u16
                } else if self.fold {
                    v.to_ascii_lowercase() as u16
                } else {
                    v as u16
                });
            }
        }
        self.i += 1;
        Some(if self.fold { b.to_ascii_lowercase() as u16 } else { b as u16 })
    }
}

/// Splits a header value at top-level commas: commas inside quoted strings or
/// inside `<...>` do not separate list elements. Elements are trimmed; empty
/// elements (as in `a,,b`) are yielded as empty slices so callers can reject them.
pub struct CommaList<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> CommaList<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        CommaList { s, pos: 0, done: trim(s).is_empty() }
    }
}

impl<'a> Iterator for CommaList<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        // Most values are one element: with no comma left there is nothing
        // to split, whatever quotes or brackets hold.
        if memchr::memchr(b',', &s[start..]).is_none() {
            self.done = true;
            return Some(trim(&s[start..]));
        }
        let mut i = start;
        // Jump between the only bytes that matter: a comma ends the element
        // unless it sits inside <...> or a quoted string.
        while let Some(off) = memchr::memchr3(b',', b'"', b'<', &s[i..]) {
            i += off;
            match s[i] {
                b'"' => match quoted_string_end(s, i) {
                    Some(e) => i = e,
                    // Unterminated: the rest is one (invalid) element.
                    None => {
                        i = s.len();
                        break;
                    }
                },
                b'<' => match memchr::memchr(b'>', &s[i..]) {
                    Some(e) => i += e + 1,
                    None => {
                        i = s.len();
                        break;
                    }
                },
                _ => break,
            }
        }
        if i < s.len() && s[i] != b',' {
            i = s.len();
        }
        if i >= s.len() {
            self.done = true;
        } else {
            self.pos = i + 1;
        }
        Some(trim(&s[start..i.min(s.len())]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_reject_overflow_and_accept_leading_zeros() {
        assert_eq!(parse_u32(b"0068"), Some(68));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        assert_eq!(parse_u32(b"36893488147419103232"), None);
        assert_eq!(parse_u32(b""), None);
        assert_eq!(parse_u32(b"-1"), None);
    }

    /// The four-byte loop and its remainder against a plain scan: every
    /// start, every run length, a run that reaches the end of the slice.
    #[test]
    fn class_end_agrees_with_a_plain_scan() {
        for len in 0..12usize {
            for stop in 0..=len {
                let s: Vec<u8> = (0..len).map(|k| if k == stop { b' ' } else { b'a' }).collect();
                for i in 0..=len + 1 {
                    let expect = if i > len { i } else { s[i..].iter().position(|&b| !is_token(b)).map_or(len, |p| i + p) };
                    assert_eq!(class_end(&s, i, Class::TOKEN), expect, "len {len} stop {stop} from {i}");
                }
            }
        }
    }

    #[test]
    fn escaped_runs() {
        assert_eq!(escaped_end(b"ab%41c;", 0, Class::URI_PARAM), Some(6));
        assert_eq!(escaped_end(b"ab%4", 0, Class::URI_PARAM), None);
        assert_eq!(escaped_end(b"ab%zz", 0, Class::URI_PARAM), None);
        assert_eq!(escaped_end(b"%41", 0, Class::URI_PARAM), Some(3));
        assert_eq!(escaped_end(b"a%2Cb", 0, Class::URI_PARAM), Some(5));
        assert_eq!(escaped_end(b"", 0, Class::URI_PARAM), Some(0));
        assert_eq!(escaped_end(b"a b", 0, Class::URI_PARAM), Some(1));
    }

    #[test]
    fn quoted_strings() {
        assert_eq!(quoted_string_end(br#""a\"b" x"#, 0), Some(6));
        assert_eq!(quoted_string_end(br#""unterminated"#, 0), None);
        assert_eq!(quoted_string_end(br#""ends in escape\"#, 0), None);
        assert_eq!(&*unquote(br#""J Rosenberg \\\"""#), br#"J Rosenberg \""#);
    }

    #[test]
    fn comma_list_respects_quotes_and_angles() {
        let v: Vec<&[u8]> = CommaList::new(br#""a,b" <sip:x,y@h>;p=1 , <sip:z@h>"#).collect();
        assert_eq!(v, vec![&br#""a,b" <sip:x,y@h>;p=1"#[..], &b"<sip:z@h>"[..]]);
        let v: Vec<&[u8]> = CommaList::new(b"a,,b").collect();
        assert_eq!(v, vec![&b"a"[..], &b""[..], &b"b"[..]]);
        assert_eq!(CommaList::new(b"  ").count(), 0);
    }

    #[test]
    fn canonical_form_resolves_only_unreserved_escapes() {
        let mut out = Vec::new();
        Canon::push(&mut out, b"%75se%72%3b", false);
        assert_eq!(out, b"user%3B");
        out.clear();
        Canon::push(&mut out, b"ExAmple%2ecom", true);
        assert_eq!(out, b"example.com");
        assert!(Canon::eq(b"%61lice", b"alice", false));
        assert!(!Canon::eq(b"a%3Bb", b"a;b", false));
        assert!(!Canon::eq(b"Alice", b"alice", false));
        // Without escapes: the text itself, folded or not, appended.
        out.clear();
        Canon::push(&mut out, b"Ex.COM", true);
        Canon::push(&mut out, b"|Bob", false);
        assert_eq!(out, b"ex.com|Bob");
    }

    #[test]
    fn canonical_form_pushed_is_the_canonical_units() {
        for (s, fold) in [(&b"Alice-99.x_y"[..], false), (b"HoSt.Example.COM", true), (b"a%41%3Bb%zz%", true), (b"%", false), (b"", true)] {
            let mut pushed = Vec::new();
            Canon::push(&mut pushed, s, fold);
            let units: Vec<u8> = Canon::new(s, fold).flat_map(|u| if u > 0xff { format!("%{:02X}", u & 0xff).into_bytes() } else { vec![u as u8] }).collect();
            assert_eq!(pushed, units, "{:?} fold {fold}", String::from_utf8_lossy(s));
        }
    }
}
