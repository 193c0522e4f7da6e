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
            pub fn as_str(self) -> &'static str {
                match self {
                    $( HeaderName::$variant => $canon, )*
                    HeaderName::Other => "Other",
                }
            }

            /// The compact form, if RFC 3261 or an extension defines one.
            pub fn compact(self) -> Option<u8> {
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
            pub fn from_bytes(name: &[u8]) -> HeaderName {
                if name.len() == 1 {
                    let c = name[0].to_ascii_lowercase();
                    $( if $compact == Some(c) { return HeaderName::$variant; } )*
                    return HeaderName::Other;
                }
                // Dispatch on length first: one integer compare rules out
                // almost every candidate before any byte comparison.
                $(
                    if name.len() == $canon.len() && name.eq_ignore_ascii_case($canon.as_bytes()) {
                        return HeaderName::$variant;
                    }
                )*
                HeaderName::Other
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
