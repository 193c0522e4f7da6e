//! Property tests for the SIP codec: no input panics, and any message the
//! parser accepts serializes to bytes that parse back to the same message.

use presence_engine::sip::{Frame, Header, HeaderName, Limits, Message, RawMessage, StreamFramer, response_to};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn headers_but_length<'a>(m: &Message<'a>) -> Vec<Header<'a>> {
    m.headers().filter(|h| h.name != HeaderName::ContentLength).collect()
}

/// Everything observable about a message, for comparing two parses.
fn same(a: &Message<'_>, b: &Message<'_>) -> bool {
    a.start_line() == b.start_line()
        && headers_but_length(a) == headers_but_length(b)
        && a.body() == b.body()
        && a.via() == b.via()
        && a.from() == b.from()
        && a.to() == b.to()
        && a.call_id() == b.call_id()
        && a.cseq() == b.cseq()
        && a.max_forwards() == b.max_forwards()
}

/// Serialize → parse must reproduce the message.
fn assert_round_trip(m: &Message<'_>) {
    let mut out = Vec::new();
    m.write_to(&mut out);
    let again = Message::parse(&out, &Limits { max_message_size: usize::MAX, ..Limits::default() })
        .unwrap_or_else(|e| panic!("re-parse failed: {e:?}\n{}", String::from_utf8_lossy(&out)));
    assert!(same(m, &again), "round trip changed the message:\n{}", String::from_utf8_lossy(&out));
}

/// Exercises every accessor so that lazily parsed headers are covered too.
fn touch_everything(m: &Message<'_>) {
    let _ = (m.expires(), m.content_type(), m.min_expires(), m.event(), m.subscription_state(), m.sip_etag());
    let _ = (m.sip_if_match().count(), m.accept().count(), m.allow_events().count(), m.require().count());
    let _ = (m.supported().count(), m.routes().count(), m.record_routes().count(), m.p_asserted_identity().count());
    let _ = (m.contacts(), m.vias().count(), m.to().uri().aor(), m.from().display_name());
    if let Some(u) = m.request_uri() {
        let _ = u.equivalent(m.to().uri());
    }
}

/// Parse as a datagram and as a stream cut at `cut`; nothing may panic, and
/// whatever parses must round-trip.
fn exercise(bytes: &[u8], cut: usize) {
    if let Ok(m) = Message::parse(bytes, &Limits::default()) {
        touch_everything(&m);
        assert_round_trip(&m);
    }
    if let Ok(raw) = RawMessage::split_lenient(bytes) {
        let mut out = Vec::new();
        response_to(&mut out, &raw, 400, "Bad", Some(b"t"), Some("127.0.0.1:5060".parse().unwrap())).finish(None, b"");
    }
    let mut framer = StreamFramer::new(Limits::default());
    let cut = cut.min(bytes.len());
    for chunk in [&bytes[..cut], &bytes[cut..]] {
        framer.push(chunk);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Message(raw))) => {
                    if let Ok(m) = Message::from_raw(raw) {
                        touch_everything(&m);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    v.sort();
    v
}

// ---- generators of valid messages ----

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9.!%*_+`'~-]{0,11}"
}
fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,8}(\\.[a-z]{2,6}){0,2}",
        (0u8..=255, 0u8..=255, 0u8..=255, 1u8..=254).prop_map(|(a, b, c, d)| format!("{a}.{b}.{c}.{d}")),
        Just("[2001:db8::1]".to_string()),
    ]
}
fn user() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof!["[a-zA-Z0-9_.!~*'()&=+$-]", "%[0-9A-F]{2}"], 1..10).prop_map(|v| v.concat())
}
fn uri_params() -> impl Strategy<Value = String> {
    prop::collection::vec(("[a-z][a-z0-9-]{0,6}", prop::option::of("[a-zA-Z0-9_.-]{1,6}")), 0..3)
        .prop_map(|ps| ps.into_iter().map(|(n, v)| v.map_or(format!(";{n}"), |v| format!(";{n}={v}"))).collect())
}
fn sip_uri() -> impl Strategy<Value = String> {
    (prop_oneof![Just("sip"), Just("sips")], prop::option::of(user()), host(), prop::option::of(1u16..), uri_params()).prop_map(|(s, u, h, p, params)| {
        format!("{s}:{}{h}{}{params}", u.map_or(String::new(), |u| format!("{u}@")), p.map_or(String::new(), |p| format!(":{p}")))
    })
}
fn display() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z][A-Za-z0-9]{0,5}( [A-Za-z0-9]{1,5}){0,2}".prop_map(|d| format!("{d} ")),
        "[A-Za-z ,<>;:@]{0,10}".prop_map(|d| format!("\"{}\" ", d)),
        "[A-Za-z]{1,5}".prop_map(|d| format!("\"{d} \\\"quoted\\\" \\\\\" ")),
    ]
}
fn name_addr(tag: bool) -> impl Strategy<Value = String> {
    (display(), sip_uri(), token(), any::<bool>()).prop_map(move |(d, u, t, lws)| {
        let sep = if lws { " ;\r\n  " } else { ";" };
        if tag { format!("{d}<{u}>{sep}tag={t}") } else { format!("{d}<{u}>") }
    })
}
fn header_name(long: &'static str, compact: Option<char>) -> impl Strategy<Value = String> {
    (any::<bool>(), any::<bool>()).prop_map(move |(use_compact, upper)| match (use_compact, compact) {
        (true, Some(c)) => c.to_string(),
        _ if upper => long.to_ascii_uppercase(),
        _ => long.to_string(),
    })
}

#[derive(Debug, Clone)]
struct Generated {
    bytes: Vec<u8>,
    method: String,
    call_id: String,
    cseq: u32,
    branch: String,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Generated> {
    (
        prop_oneof![Just("PUBLISH".to_string()), Just("SUBSCRIBE".to_string()), Just("NOTIFY".to_string()), Just("REGISTER".to_string()), token()],
        sip_uri(),
        (name_addr(true), name_addr(false), token(), token(), 0u32..(1 << 31), 0u8..=255),
        (header_name("Via", Some('v')), header_name("From", Some('f')), header_name("To", Some('t')), header_name("Call-ID", Some('i'))),
        (host(), prop::option::of(1u16..), any::<bool>(), 0usize..3),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(("X-[A-Za-z]{1,8}", "[ -~]{0,20}"), 0..4),
    )
        .prop_map(|(method, ruri, (from, to, call_id, branch, cseq, mf), (vn, fname, tname, iname), (vh, vp, rport, extra_vias), body, extras)| {
            let mut head = format!("{method} {ruri} SIP/2.0\r\n");
            let port = vp.map_or(String::new(), |p| format!(":{p}"));
            let rp = if rport { ";rport" } else { "" };
            head += &format!("{vn}: SIP/2.0/UDP {vh}{port};branch=z9hG4bK{branch}{rp}");
            for i in 0..extra_vias {
                head += &format!(",\r\n SIP/2.0/TCP relay{i}.example.net;branch=z9hG4bKr{i}");
            }
            head += "\r\n";
            head += &format!("Max-Forwards: {mf}\r\n{fname}: {from}\r\n{tname}: {to}\r\n{iname}: {call_id}\r\nCSeq: {cseq} {method}\r\n");
            for (n, v) in &extras {
                head += &format!("{n}: {}\r\n", v.trim());
            }
            head += &format!("Content-Length: {}\r\n\r\n", body.len());
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(&body);
            Generated { bytes, method, call_id, cseq, branch: format!("z9hG4bK{branch}"), body }
        })
}

proptest! {
    #![proptest_config(Config { cases: 4000, ..Config::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), cut in 0usize..600) {
        exercise(&bytes, cut);
    }

    #[test]
    fn sip_shaped_noise_never_panics(
        lines in prop::collection::vec(("[A-Za-z-]{0,12}", "[ -~\t]{0,40}"), 0..12),
        start in prop_oneof![Just("SUBSCRIBE sip:a@b SIP/2.0".to_string()), Just("SIP/2.0 200 OK".to_string()), "[ -~]{0,30}"],
        cut in 0usize..800,
    ) {
        let mut s = format!("{start}\r\n");
        for (n, v) in lines {
            s += &format!("{n}:{v}\r\n");
        }
        s += "\r\n";
        exercise(s.as_bytes(), cut);
    }
}

proptest! {
    #![proptest_config(Config { cases: 3000, ..Config::default() })]

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0usize..49,
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        cut in 0usize..4000,
    ) {
        let fx = fixtures();
        let mut bytes = fx[which % fx.len()].clone();
        for (at, byte, op) in edits {
            if bytes.is_empty() { break; }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => { bytes.remove(i); }
            }
        }
        exercise(&bytes, cut);
    }
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    #[test]
    fn generated_requests_parse_and_round_trip(g in request()) {
        let m = Message::parse(&g.bytes, &Limits::default())
            .unwrap_or_else(|e| panic!("{e:?}\n{}", String::from_utf8_lossy(&g.bytes)));
        prop_assert_eq!(m.method_raw(), Some(g.method.as_bytes()));
        prop_assert_eq!(m.call_id(), g.call_id.as_bytes());
        prop_assert_eq!(m.cseq().seq, g.cseq);
        prop_assert_eq!(m.via().branch(), Some(g.branch.as_bytes()));
        prop_assert_eq!(m.body(), &g.body[..]);
        prop_assert!(m.from().tag().is_some());
        prop_assert!(m.to().tag().is_none());
        assert_round_trip(&m);
        // The same bytes over a stream, cut anywhere, give the same message.
        let mut framer = StreamFramer::new(Limits::default());
        let cut = g.bytes.len() / 2;
        framer.push(&g.bytes[..cut]);
        prop_assert!(framer.next_frame().unwrap().is_none());
        framer.push(&g.bytes[cut..]);
        match framer.next_frame().unwrap() {
            Some(Frame::Message(raw)) => prop_assert!(same(&m, &Message::from_raw(raw).unwrap())),
            other => prop_assert!(false, "expected a message, got {:?}", other),
        }
    }
}

#[test]
fn every_fixture_round_trips() {
    let mut parsed = 0;
    for f in fixtures() {
        if let Ok(m) = Message::parse(&f, &Limits::default()) {
            assert_round_trip(&m);
            parsed += 1;
        }
    }
    assert!(parsed >= 25, "most fixtures are valid messages; only {parsed} parsed");
}

/// An AOR written in the ways RFC 3261 19.1.4 (and RFC 3966 for tel)
/// calls equal: host case, escaped unreserved user characters, URI
/// parameters and headers, a port-less form kept as is.
fn aor_variant(user: &Option<String>, host: &str, case_mask: u64, escape_mask: u64, params: bool) -> String {
    let host: String = host.chars().enumerate().map(|(i, c)| if case_mask >> (i % 64) & 1 == 1 { c.to_ascii_uppercase() } else { c }).collect();
    let user: Option<String> = user
        .as_ref()
        .map(|u| u.chars().enumerate().map(|(i, c)| if escape_mask >> (i % 64) & 1 == 1 { format!("%{:02X}", c as u32) } else { c.to_string() }).collect());
    let mut s = match user {
        Some(u) => format!("sip:{u}@{host}"),
        None => format!("sip:{host}"),
    };
    if params {
        s.push_str(";transport=tcp;lr?subject=x");
    }
    s
}

proptest! {
    #![proptest_config(Config { cases: 2000, ..Config::default() })]

    /// Every variant of an AOR, with or without a user part, normalises to
    /// the same key and so has the same owning shard for every shard count.
    #[test]
    fn equal_aors_have_one_owner(
        user in proptest::option::of("[a-z0-9._~-]{1,12}"),
        host in "[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,6}){1,2}",
        case_mask in any::<u64>(),
        escape_mask in any::<u64>(),
        params in any::<bool>(),
    ) {
        use presence_engine::core::ids::owner_of;
        use presence_engine::sip::Uri;
        let plain = aor_variant(&user, &host, 0, 0, false);
        let other = aor_variant(&user, &host, case_mask, escape_mask, params);
        let a = Uri::parse(plain.as_bytes()).unwrap().aor();
        let b = Uri::parse(other.as_bytes()).map_err(|_| TestCaseError::fail(format!("{other} parses"))).unwrap().aor();
        prop_assert_eq!(&a, &b, "{} and {} normalise alike", plain, other);
        for shards in 1..=8u16 {
            prop_assert_eq!(owner_of(&a, shards), owner_of(&b, shards));
        }
    }

    /// tel: numbers with and without visual separators are one presentity.
    #[test]
    fn tel_variants_have_one_owner(digits in "[0-9]{4,12}", seps in proptest::collection::vec(0usize..4, 12)) {
        use presence_engine::core::ids::owner_of;
        use presence_engine::sip::Uri;
        let mut dotted = String::from("tel:+");
        for (i, d) in digits.chars().enumerate() {
            dotted.push(d);
            dotted.push_str(["", "-", ".", ""][seps[i % seps.len()]]);
        }
        let plain = format!("tel:+{digits}");
        let a = Uri::parse(plain.as_bytes()).unwrap().aor();
        let b = Uri::parse(dotted.trim_end_matches(['-', '.']).as_bytes()).unwrap().aor();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(owner_of(&a, 5), owner_of(&b, 5));
    }
}
