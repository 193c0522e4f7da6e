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
            #[inline]
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                NAME_TABLE.lookup(name)
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

/// Hash of a header name: length, first and last byte, case folded. With
/// the known names it leaves at most [`BUCKET`] candidates per slot.
#[inline(always)]
const fn name_hash(name: &[u8]) -> usize {
    let (f, l) = (name[0] | 0x20, name[name.len() - 1] | 0x20);
    (name.len().wrapping_mul(7) ^ (f as usize).wrapping_mul(3) ^ (l as usize).wrapping_mul(13)) & 0xff
}

const BUCKET: usize = 2;
/// Longest known name, rounded up to whole 8-byte words.
const NAME_CAP: usize = 24;

/// Hash table from name to [`HeaderName`], built at compile time.
struct NameTable {
    slots: [[u8; BUCKET]; 256],
    /// Compact forms by lower-case letter.
    compact: [u8; 128],
    /// Lower-case names, zero padded, and their lengths.
    lower: [[u8; NAME_CAP]; KNOWN_HEADERS],
    len: [u8; KNOWN_HEADERS],
}

impl NameTable {
    const fn build() -> NameTable {
        let mut t = NameTable {
            slots: [[u8::MAX; BUCKET]; 256],
            compact: [u8::MAX; 128],
            lower: [[0; NAME_CAP]; KNOWN_HEADERS],
            len: [0; KNOWN_HEADERS],
        };
        let mut i = 0;
        while i < KNOWN_HEADERS {
            let h = HeaderName::ALL[i];
            if let Some(c) = h.compact() {
                t.compact[c as usize] = i as u8;
            }
            let name = h.as_str().as_bytes();
            assert!(name.len() <= NAME_CAP, "raise NAME_CAP");
            let mut j = 0;
            while j < name.len() {
                t.lower[i][j] = name[j].to_ascii_lowercase();
                j += 1;
            }
            t.len[i] = name.len() as u8;
            let slot = name_hash(name);
            if t.slots[slot][0] == u8::MAX {
                t.slots[slot][0] = i as u8;
            } else if t.slots[slot][1] == u8::MAX {
                t.slots[slot][1] = i as u8;
            } else {
                panic!("header name hash bucket overflow: change name_hash");
            }
            i += 1;
        }
        t
    }

    /// `name` must be a non-empty token (the head splitter checks), which
    /// makes `byte | 0x20` an exact case fold against lower-case names: the
    /// only token byte that folds onto '-' is '-' itself.
    #[inline(always)]
    fn lookup(&self, name: &[u8]) -> HeaderName {
        if name.len() == 1 {
            let i = self.compact[(name[0].to_ascii_lowercase() & 0x7f) as usize];
            return if i == u8::MAX { HeaderName::Other } else { HeaderName::ALL[i as usize] };
        }
        for &i in &self.slots[name_hash(name)] {
            if i == u8::MAX {
                break;
            }
            let i = i as usize;
            if self.len[i] as usize == name.len() && fold_eq(name, &self.lower[i]) {
                return HeaderName::ALL[i];
            }
        }
        HeaderName::Other
    }
}

/// `name | 0x20 == lower` bytewise, eight bytes at a time. `lower` is zero
/// padded to at least `name.len()` rounded up to 8.
#[inline(always)]
fn fold_eq(name: &[u8], lower: &[u8; NAME_CAP]) -> bool {
    const FOLD: u64 = 0x2020_2020_2020_2020;
    let mut i = 0;
    while i + 8 <= name.len() {
        let x = u64::from_le_bytes(name[i..i + 8].try_into().unwrap());
        let y = u64::from_le_bytes(lower[i..i + 8].try_into().unwrap());
        if x | FOLD != y {
            return false;
        }
        i += 8;
    }
    name[i..].iter().zip(&lower[i..]).all(|(x, y)| x | 0x20 == *y)
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
        for h in HeaderName::ALL {
            assert_eq!(HeaderName::from_bytes(h.as_str().as_bytes()), h);
            if let Some(c) = h.compact() {
                assert_eq!(HeaderName::from_bytes(&[c]), h);
            }
        }
    }
}
