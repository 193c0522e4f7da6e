//! The XML 1.0 tokenizer under PIDF validation: one pass over a `&str`
//! that hands out borrowed slices and checks well-formedness as it goes.
//!
//! Every PUBLISH body goes through it, so it does only what a PIDF needs:
//! elements, attributes, text, CDATA, comments and processing
//! instructions. It refuses a DTD outright (so there is no entity
//! expansion), end tags that do not match, `--` inside comments, `]]>` in
//! text, `<` in attribute values, control characters, names that are not
//! qualified names in the sense of Namespaces in XML (`a`, `p:a`; not
//! `:a`, `a:`, `p:q:a`), and an XML declaration anywhere but at the start. References are checked where
//! they are decoded ([`decode`]). Namespaces, the document's shape and the
//! node and depth limits are the caller's (`pidf::parse`).
//!
//! It replaced quick-xml: the whole PIDF pass went from 12,300 to 9,100
//! instructions for the loadgen's document (ARCHITECTURE.md, "Where a
//! PUBLISH's CPU goes"). `pidf`'s tests hold it to roxmltree's verdict on
//! mutated documents.

use memchr::{memchr, memchr2};
use std::borrow::Cow;

/// One piece of the document. Comments, processing instructions and the
/// XML declaration are checked and skipped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Token<'t> {
    /// A start tag `<name ...>` or `<name .../>` beginning at byte `at`;
    /// its attributes are in [`Tokens::attributes`] until the next token.
    Start { name: &'t str, at: usize, empty: bool },
    /// An end tag (or the end of an empty element); `end` is the byte
    /// after its `>`.
    End { end: usize },
    /// Character data as written, references not yet decoded.
    Text(&'t str),
    /// The content of a CDATA section.
    CData(&'t str),
}

/// An attribute of the current start tag: its name and its value as
/// written between the quotes.
pub(super) type Attribute<'t> = (&'t str, &'t str);

pub(super) struct Tokens<'t> {
    text: &'t str,
    /// Where the document starts: past a byte order mark, if any. The XML
    /// declaration may only be here.
    start: usize,
    pos: usize,
    /// Names of the open elements, for matching end tags. The caller's
    /// depth limit bounds it.
    open: Vec<&'t str>,
    attributes: Vec<Attribute<'t>>,
    /// The end of an empty element, owed as an `End` token.
    pending_end: Option<usize>,
}

fn err(what: impl std::fmt::Display) -> String {
    format!("PIDF XML: {what}")
}

fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// Classes of bytes in names: XML's NameStartChar and NameChar, with
/// every non-ASCII character allowed (UTF-8 was checked, and no PIDF name
/// needs the finer ranges). The colon is a class of its own: Namespaces in
/// XML allows one, between two names.
const NAME_START: u8 = 1;
const NAME_CHAR: u8 = 2;
const COLON: u8 = 4;
static NAME_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 {
            t[c] = NAME_START | NAME_CHAR;
        } else if b.is_ascii_digit() || b == b'-' || b == b'.' {
            t[c] = NAME_CHAR;
        } else if b == b':' {
            t[c] = COLON;
        }
        c += 1;
    }
    t
};

fn class(c: Option<&u8>) -> u8 {
    c.map_or(0, |&c| NAME_CLASS[c as usize])
}

/// No C0 control but tab, newline and carriage return, in a loop without
/// an early exit so that it runs a vector at a time.
fn has_control(text: &[u8]) -> bool {
    text.chunks(32).any(|chunk| chunk.iter().fold(false, |bad, &c| bad | (c < 0x20 && !is_space(c))))
}

impl<'t> Tokens<'t> {
    /// Starts on `text`, refusing characters XML does not allow anywhere
    /// (C0 controls other than tab, newline and carriage return). A byte
    /// order mark is skipped.
    pub(super) fn new(text: &'t str) -> Result<Self, String> {
        if has_control(text.as_bytes()) {
            return Err(err("a control character"));
        }
        let start = if text.starts_with('\u{feff}') { 3 } else { 0 };
        Ok(Tokens { text, start, pos: start, open: Vec::with_capacity(8), attributes: Vec::with_capacity(8), pending_end: None })
    }

    /// The attributes of the last start tag.
    pub(super) fn attributes(&self) -> &[Attribute<'t>] {
        &self.attributes
    }

    /// The next token, `None` at the end of the document.
    pub(super) fn next_token(&mut self) -> Result<Option<Token<'t>>, String> {
        if let Some(end) = self.pending_end.take() {
            return Ok(Some(Token::End { end }));
        }
        loop {
            let bytes = &self.text.as_bytes()[self.pos..];
            if bytes.is_empty() {
                return match self.open.last() {
                    Some(name) => Err(err(format_args!("<{name}> is not closed"))),
                    None => Ok(None),
                };
            }
            if bytes[0] != b'<' {
                let len = memchr(b'<', bytes).unwrap_or(bytes.len());
                let text = &self.text[self.pos..self.pos + len];
                if memchr(b']', text.as_bytes()).is_some() && text.contains("]]>") {
                    return Err(err("]]> in text"));
                }
                self.pos += len;
                return Ok(Some(Token::Text(text)));
            }
            match bytes.get(1) {
                Some(b'/') => return self.end_tag().map(Some),
                Some(b'?') => self.processing_instruction()?,
                Some(b'!') => {
                    if let Some(cdata) = self.markup_declaration()? {
                        return Ok(Some(Token::CData(cdata)));
                    }
                }
                _ => return self.start_tag().map(Some),
            }
        }
    }

    /// The end of the qualified name (`local` or `prefix:local`) starting
    /// at `at`, or an error if none starts there.
    fn name_at(&self, at: usize) -> Result<usize, String> {
        self.name_of_parts(at, 2)
    }

    /// The end of a name of at most `parts` parts joined by colons.
    fn name_of_parts(&self, at: usize, parts: usize) -> Result<usize, String> {
        let b = self.text.as_bytes();
        let mut i = at;
        for part in 0..parts {
            if class(b.get(i)) & NAME_START == 0 {
                return Err(err(format_args!("a name expected at byte {i}")));
            }
            i += 1;
            while class(b.get(i)) & NAME_CHAR != 0 {
                i += 1;
            }
            if part + 1 == parts || class(b.get(i)) != COLON {
                break;
            }
            i += 1;
        }
        if class(b.get(i)) == COLON {
            return Err(err(format_args!("{:?} is not a qualified name", &self.text[at..=i])));
        }
        Ok(i)
    }

    fn skip_space(&self, mut at: usize) -> usize {
        let b = self.text.as_bytes();
        while b.get(at).copied().is_some_and(is_space) {
            at += 1;
        }
        at
    }

    fn start_tag(&mut self) -> Result<Token<'t>, String> {
        let b = self.text.as_bytes();
        let at = self.pos;
        let name_end = self.name_at(at + 1)?;
        let name = &self.text[at + 1..name_end];
        self.attributes.clear();
        let mut i = name_end;
        loop {
            let spaced = self.skip_space(i);
            match b.get(spaced) {
                Some(b'>') => {
                    self.pos = spaced + 1;
                    self.open.push(name);
                    return Ok(Token::Start { name, at, empty: false });
                }
                Some(b'/') if b.get(spaced + 1) == Some(&b'>') => {
                    self.pos = spaced + 2;
                    self.pending_end = Some(self.pos);
                    return Ok(Token::Start { name, at, empty: true });
                }
                None => return Err(err(format_args!("<{name}> is not closed"))),
                Some(_) if spaced == i => return Err(err(format_args!("white space expected before an attribute of <{name}>"))),
                Some(_) => {}
            }
            let key_end = self.name_at(spaced)?;
            let eq = self.skip_space(key_end);
            if b.get(eq) != Some(&b'=') {
                return Err(err(format_args!("= expected after attribute {}", &self.text[spaced..key_end])));
            }
            let open = self.skip_space(eq + 1);
            let quote = match b.get(open) {
                Some(&q @ (b'"' | b'\'')) => q,
                _ => return Err(err("a quoted attribute value expected")),
            };
            let len = memchr(quote, &b[open + 1..]).ok_or_else(|| err("attribute value not closed"))?;
            let value = &self.text[open + 1..open + 1 + len];
            if memchr(b'<', value.as_bytes()).is_some() {
                return Err(err("< in an attribute value"));
            }
            self.attributes.push((&self.text[spaced..key_end], value));
            i = open + 2 + len;
        }
    }

    fn end_tag(&mut self) -> Result<Token<'t>, String> {
        // The usual case first: the open element's name (checked as a
        // qualified name at its start tag), ended there, then `>`. It
        // spares scanning the name a byte at a time, a third of the
        // tokenizer's name work on a PUBLISH's document.
        let b = self.text.as_bytes();
        if let Some(&open) = self.open.last() {
            let name_end = self.pos + 2 + open.len();
            if b.get(self.pos + 2..name_end) == Some(open.as_bytes()) && class(b.get(name_end)) & (NAME_CHAR | COLON) == 0 {
                let close = self.skip_space(name_end);
                if b.get(close) == Some(&b'>') {
                    self.open.pop();
                    self.pos = close + 1;
                    return Ok(Token::End { end: self.pos });
                }
            }
        }
        let name_end = self.name_at(self.pos + 2)?;
        let name = &self.text[self.pos + 2..name_end];
        let close = self.skip_space(name_end);
        if self.text.as_bytes().get(close) != Some(&b'>') {
            return Err(err(format_args!("</{name} is not closed")));
        }
        match self.open.pop() {
            Some(open) if open == name => {}
            Some(open) => return Err(err(format_args!("</{name}> closes <{open}>"))),
            None => return Err(err(format_args!("</{name}> without a start tag"))),
        }
        self.pos = close + 1;
        Ok(Token::End { end: self.pos })
    }

    /// `<?target ...?>`; the target `xml` (the declaration) only at the
    /// very start.
    fn processing_instruction(&mut self) -> Result<(), String> {
        let start = self.pos;
        // Namespaces in XML: no colon in a target.
        let target_end = self.name_of_parts(start + 2, 1).map_err(|_| err("a processing instruction's target must be a name without a colon"))?;
        let target = &self.text[start + 2..target_end];
        if target.eq_ignore_ascii_case("xml") && start != self.start {
            return Err(err("the XML declaration is not at the start"));
        }
        let rest = &self.text.as_bytes()[target_end..];
        let close = find(rest, b"?>").ok_or_else(|| err("processing instruction not closed"))?;
        if close > 0 && !is_space(rest[0]) {
            return Err(err("white space expected after a processing instruction's target"));
        }
        self.pos = target_end + close + 2;
        Ok(())
    }

    /// `<!--...-->` (skipped), `<![CDATA[...]]>` (returned); a DTD or
    /// anything else after `<!` is refused.
    fn markup_declaration(&mut self) -> Result<Option<&'t str>, String> {
        let rest = &self.text[self.pos..];
        if let Some(body) = rest.strip_prefix("<!--") {
            // "--" may only end a comment, and only as "-->".
            let dashes = find(body.as_bytes(), b"--").ok_or_else(|| err("comment not closed"))?;
            if body.as_bytes().get(dashes + 2) != Some(&b'>') {
                return Err(err("-- inside a comment"));
            }
            self.pos += 4 + dashes + 3;
            return Ok(None);
        }
        if let Some(body) = rest.strip_prefix("<![CDATA[") {
            let end = find(body.as_bytes(), b"]]>").ok_or_else(|| err("CDATA section not closed"))?;
            self.pos += 9 + end + 3;
            return Ok(Some(&body[..end]));
        }
        if rest.starts_with("<!DOCTYPE") {
            return Err(err("a DTD is not allowed"));
        }
        Err(err("unknown markup after <!"))
    }
}

/// The first `pattern` (a few bytes) in `hay`. The patterns here are
/// short and the spans they end are short too, where a `memmem` searcher
/// costs more to set up than it saves.
fn find(hay: &[u8], pattern: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(i) = memchr(pattern[0], &hay[at..]) {
        if hay[at + i..].starts_with(pattern) {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

/// Character data or an attribute value with its references replaced.
/// Borrowed when there are none; an undefined entity, a malformed
/// reference or one to a character XML does not allow is an error.
#[inline]
pub(super) fn decode(raw: &str) -> Result<Cow<'_, str>, String> {
    match memchr(b'&', raw.as_bytes()) {
        None => Ok(Cow::Borrowed(raw)),
        Some(first) => decode_from(raw, first).map(Cow::Owned),
    }
}

/// [`decode`] past its first `&`, at `first` (rare: kept out of line).
#[inline(never)]
fn decode_from(raw: &str, first: usize) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut rest = &raw[first..];
    while let Some(amp) = memchr(b'&', rest.as_bytes()) {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = memchr2(b';', b'&', after.as_bytes()).filter(|&i| after.as_bytes()[i] == b';').ok_or_else(|| err("& without ;"))?;
        out.push(reference(&after[..semi])?);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The character a reference names (`lt` or `#x3C`, between `&` and `;`).
fn reference(name: &str) -> Result<char, String> {
    let code = match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => match (name.strip_prefix("#x"), name.strip_prefix('#')) {
            (Some(hex), _) if !hex.is_empty() && hex.bytes().all(|c| c.is_ascii_hexdigit()) => u32::from_str_radix(hex, 16).ok(),
            (None, Some(dec)) if !dec.is_empty() && dec.bytes().all(|c| c.is_ascii_digit()) => dec.parse().ok(),
            _ => return Err(err(format_args!("undefined entity &{name};"))),
        },
    };
    // XML's Char production: no C0 controls but tab, newline and return,
    // no surrogates, no U+FFFE and U+FFFF.
    code.filter(|&c| matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF))
        .and_then(char::from_u32)
        .ok_or_else(|| err(format_args!("&{name}; is not an XML character")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(doc: &str) -> Result<Vec<String>, String> {
        let mut t = Tokens::new(doc)?;
        let mut out = Vec::new();
        while let Some(tok) = t.next_token()? {
            out.push(match tok {
                Token::Start { name, empty, .. } => format!("<{name}{:?}{}", t.attributes(), if empty { "/" } else { "" }),
                Token::End { .. } => "end".into(),
                Token::Text(s) => format!("text {s:?}"),
                Token::CData(s) => format!("cdata {s:?}"),
            });
        }
        Ok(out)
    }

    #[test]
    fn tokens_of_a_document() {
        let doc = "\u{feff}<?xml version=\"1.0\"?>\n<!-- c --><a x = '1' y=\"&lt;\"><b/>t<![CDATA[<c>]]><?pi data?></a >\n";
        assert_eq!(
            tokens(doc).unwrap(),
            ["text \"\\n\"", "<a[(\"x\", \"1\"), (\"y\", \"&lt;\")]", "<b[]/", "end", "text \"t\"", "cdata \"<c>\"", "end", "text \"\\n\""]
        );
    }

    #[test]
    fn malformed_markup_is_refused() {
        for bad in [
            "<a>",
            "<a></b>",
            "<a></ab>",
            "<ab></a>",
            "<a></a:b>",
            "<a:b></a>",
            "<a></a",
            "<a></a x>",
            "</a>",
            "<a x='1'y='2'/>",
            "<a x=1/>",
            "<a x='<'/>",
            "<a x='1/>",
            "<a x/>",
            "<1a/>",
            "<a>]]></a>",
            "<a><!-- x -- y --></a>",
            "<a><!-- x ---></a>",
            "<a><!-- x</a>",
            "<a><![CDATA[x</a>",
            "<!DOCTYPE a><a/>",
            "<a><!ELEMENT a></a>",
            "<a/><?xml version='1.0'?>",
            "<a><?pi</a>",
            "<a><?pi?x?></a>",
            "<a><?p:i x?></a>",
            "<:a/>",
            "<a:/>",
            "<a:b:c/>",
            "<a :b='1'/>",
            "<a>\u{1}</a>",
            "<a",
        ] {
            assert!(tokens(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn end_tags_match_their_start_tags_with_or_without_space() {
        assert_eq!(tokens("<p:a><b></b ></p:a\n>").unwrap(), ["<p:a[]", "<b[]", "end", "end"]);
    }

    #[test]
    fn find_finds_the_first_whole_pattern() {
        assert_eq!(find(b"a-b--c-->", b"-->"), Some(6));
        assert_eq!(find(b"]]]>", b"]]>"), Some(1));
        assert_eq!(find(b"?x?", b"?>"), None);
        assert_eq!(find(b"", b"?>"), None);
    }

    #[test]
    fn references_decode_or_fail() {
        assert_eq!(decode("plain").unwrap(), Cow::Borrowed("plain"));
        assert_eq!(decode("a &amp; &lt;&gt;&apos;&quot; &#65;&#x42;").unwrap(), "a & <>'\" AB");
        for bad in ["&work;", "&amp", "& amp;", "&#;", "&#x;", "&#xFFFFFFFF;", "&#0;", "&#xD800;", "&#xFFFE;", "&#12a;", "&&amp;"] {
            assert!(decode(bad).is_err(), "{bad:?} decoded");
        }
    }
}
