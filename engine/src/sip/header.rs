//! Header names: the ones a presence server reads, recognised once per header
//! line so that every later lookup is an integer compare.

macro_rules! header_names {
    ($( $variant:ident => $canon:literal, compact $compact:expr, single $single:literal; )*) => {
        /// A header name as recognised by the parser. Names are case-insensitive
        /// and compact forms map to their long form (RFC 3261 7.3.3), so `v`,
        /// `VIA` and `Via` are all [`HeaderName::Via`]. Anything else is
        /// [`HeaderName::Other`] and keeps its raw spelling in the message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum HeaderName {
            $( $variant, )*
            Other,
        }

        /// Number of known (non-`Other`) header names.
        pub const KNOWN_HEADERS: usize = [$( HeaderName::$variant, )*].len();

        impl HeaderName {
            /// All known names, in declaration order.
            pub const ALL: [HeaderName; KNOWN_HEADERS] = [$( HeaderName::$variant, )*];

            /// The canonical (long, conventionally capitalised) spelling.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other => "Other",
                }
            }

            /// The compact form, if RFC 3261 or an extension defines one.
            pub const fn compact(self) -> Option<u8> {
                match self {
                    $( HeaderName::$variant => $compact, )*
                    HeaderName::Other => None,
                }
            }

            /// True for headers that may appear at most once in a message.
            pub const fn is_single(self) -> bool {
                match self {
                    $( HeaderName::$variant => $single, )*
                    HeaderName::Other => false,
                }
            }

            /// Recognises a header name, case-insensitively, long or compact.
            /// Only an exact match counts: a name with any byte that is not
            /// the known name's, in either case, is [`HeaderName::Other`].
            #[inline]
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if name.is_empty() {
                    return HeaderName::Other;
                }
                NAME_TABLE.lookup(name, name.len())
            }

            /// [`HeaderName::from_bytes`] of `line[..len]`, where `line`
            /// continues past the name (the rest of the head): lets a short
            /// name be read in one load.
            #[inline(always)]
            pub(crate) fn from_line(line: &[u8], len: usize) -> HeaderName {
                NAME_TABLE.lookup(line, len)
            }
        }
    };
}

header_names! {
    Via => "Via", compact Some(b'v'), single false;
    From => "From", compact Some(b'f'), single true;
    To => "To", compact Some(b't'), single true;
    CallId => "Call-ID", compact Some(b'i'), single true;
    CSeq => "CSeq", compact None, single true;
    MaxForwards => "Max-Forwards", compact None, single true;
    Contact => "Contact", compact Some(b'm'), single false;
    ContentLength => "Content-Length", compact Some(b'l'), single true;
    ContentType => "Content-Type", compact Some(b'c'), single true;
    ContentEncoding => "Content-Encoding", compact Some(b'e'), single false;
    Expires => "Expires", compact None, single true;
    MinExpires => "Min-Expires", compact None, single true;
    Event => "Event", compact Some(b'o'), single true;
    AllowEvents => "Allow-Events", compact Some(b'u'), single false;
    SubscriptionState => "Subscription-State", compact None, single true;
    SipETag => "SIP-ETag", compact None, single true;
    SipIfMatch => "SIP-If-Match", compact None, single false;
    Accept => "Accept", compact None, single false;
    Allow => "Allow", compact None, single false;
    Require => "Require", compact None, single false;
    ProxyRequire => "Proxy-Require", compact None, single false;
    Supported => "Supported", compact Some(b'k'), single false;
    Unsupported => "Unsupported", compact None, single false;
    Route => "Route", compact None, single false;
    RecordRoute => "Record-Route", compact None, single false;
    PAssertedIdentity => "P-Asserted-Identity", compact None, single false;
    Subject => "Subject", compact Some(b's'), single false;
    UserAgent => "User-Agent", compact None, single false;
    Server => "Server", compact None, single false;
    Date => "Date", compact None, single false;
    Authorization => "Authorization", compact None, single false;
    WwwAuthenticate => "WWW-Authenticate", compact None, single false;
    Warning => "Warning", compact None, single false;
    RetryAfter => "Retry-After", compact None, single false;
}

/// Hash of a header name: length, first and last byte, case folded. It is
/// perfect on the known names (the table build fails otherwise), so a
/// lookup reads one slot and compares one candidate: no probing loop whose
/// branches differ from line to line.
#[inline(always)]
const fn name_hash(name: &[u8]) -> usize {
    let (f, l) = (name[0] | 0x20, name[name.len() - 1] | 0x20);
    (name.len() ^ f as usize ^ (l as usize).wrapping_mul(12)) & 0xff
}

/// Longest known name the word compare handles: three 8-byte words.
const NAME_CAP: usize = 24;

/// A known name as little-endian words for an exact, case-insensitive
/// compare of `(x | fold) == lower`: `fold` has 0x20 at letter positions
/// only, so a letter matches either case and every other byte (such as
/// `-`, which CR would otherwise fold onto) must match exactly.
#[derive(Clone, Copy)]
struct NameWords {
    /// Bytes 0..8, 8..16 and the last eight (overlapping; zero padded when
    /// the name is shorter than eight).
    lower: [u64; 3],
    fold: [u64; 3],
    len: u8,
}

/// Hash table from name to [`HeaderName`], built at compile time.
struct NameTable {
    /// Index into `words` by [`name_hash`]; `u8::MAX` if no known name.
    slots: [u8; 256],
    /// Compact forms by lower-case letter.
    compact: [u8; 128],
    words: [NameWords; KNOWN_HEADERS],
}

/// Little-endian word of `s[at..at + 8]`, zero padded past the end of `s`.
const fn word_at(s: &[u8], at: usize, fold: bool) -> u64 {
    let mut w = 0u64;
    let mut j = 0;
    while j < 8 && at + j < s.len() {
        let b = s[at + j];
        let v = if fold { if b.is_ascii_alphabetic() { 0x20 } else { 0 } } else { b.to_ascii_lowercase() };
        w |= (v as u64) << (8 * j);
        j += 1;
    }
    w
}

impl NameTable {
    const fn build() -> NameTable {
        let mut t = NameTable { slots: [u8::MAX; 256], compact: [u8::MAX; 128], words: [NameWords { lower: [0; 3], fold: [0; 3], len: 0 }; KNOWN_HEADERS] };
        let mut i = 0;
        while i < KNOWN_HEADERS {
            let h = HeaderName::ALL[i];
            if let Some(c) = h.compact() {
                t.compact[c as usize] = i as u8;
            }
            let name = h.as_str().as_bytes();
            assert!(name.len() >= 2 && name.len() <= NAME_CAP, "names are 2 to NAME_CAP bytes");
            let last = if name.len() >= 8 { name.len() - 8 } else { 0 };
            t.words[i] = NameWords {
                lower: [word_at(name, 0, false), word_at(name, 8, false), word_at(name, last, false)],
                fold: [word_at(name, 0, true), word_at(name, 8, true), word_at(name, last, true)],
                len: name.len() as u8,
            };
            let slot = name_hash(name);
            assert!(t.slots[slot] == u8::MAX, "two known header names share a hash slot: change name_hash");
            t.slots[slot] = i as u8;
            i += 1;
        }
        t
    }

    /// Recognises `head[..len]`, exactly up to ASCII case. `head` may go on
    /// past the name (the splitter passes the rest of the buffer) so that a
    /// short name is read as one 8-byte load.
    #[inline(always)]
    fn lookup(&self, head: &[u8], len: usize) -> HeaderName {
        debug_assert!(len >= 1 && len <= head.len());
        if len == 1 {
            let b = head[0];
            let i = if b.is_ascii_alphabetic() { self.compact[(b | 0x20) as usize] } else { u8::MAX };
            return if i == u8::MAX { HeaderName::Other } else { HeaderName::ALL[i as usize] };
        }
        if len > NAME_CAP {
            return HeaderName::Other;
        }
        let name = &head[..len];
        let mut padded = [0u8; 8];
        let w0 = if head.len() >= 8 {
            let w = u64::from_le_bytes(head[..8].try_into().unwrap());
            if len >= 8 { w } else { w & (u64::MAX >> (64 - 8 * len)) }
        } else {
            padded[..len].copy_from_slice(name);
            u64::from_le_bytes(padded)
        };
        let i = self.slots[name_hash(name)];
        if i == u8::MAX {
            return HeaderName::Other;
        }
        let w = &self.words[i as usize];
        let matched = w.len as usize == len
            && w0 | w.fold[0] == w.lower[0]
            && (len <= 8 || ((len <= 16 || word(name, 8) | w.fold[1] == w.lower[1]) && word(name, len - 8) | w.fold[2] == w.lower[2]));
        if matched {
            return HeaderName::ALL[i as usize];
        }
        HeaderName::Other
    }
}

#[inline(always)]
fn word(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap())
}

static NAME_TABLE: NameTable = NameTable::build();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_compact_and_case_insensitive_forms() {
        assert_eq!(HeaderName::from_bytes(b"Via"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(HeaderName::from_bytes(b"call-id"), HeaderName::CallId);
        assert_eq!(HeaderName::from_bytes(b"o"), HeaderName::Event);
        assert_eq!(HeaderName::from_bytes(b"u"), HeaderName::AllowEvents);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"x"), HeaderName::Other);
        // Exact up to case: CR folds onto '-' under a plain `| 0x20`, and a
        // high byte masked to 7 bits would look like a compact form.
        assert_eq!(HeaderName::from_bytes(b"Call\rID"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Max\rForwards"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(&[0xf6]), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Vib"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"Content-Lengthx"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b""), HeaderName::Other);
        // A name read from a longer line stops at its length.
        assert_eq!(HeaderName::from_line(b"To: <sip:a@b>\r\n", 2), HeaderName::To);
        assert_eq!(HeaderName::from_line(b"Contact: x", 7), HeaderName::Contact);
        for h in HeaderName::ALL {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(h.as_str().to_ascii_uppercase().as_bytes()), h);
            assert_eq!(HeaderName::from_bytes(h.as_str().to_ascii_lowercase().as_bytes()), h);
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), h);
            }
        }
    }
}
