//! Any datagram: parse must not panic, and what parses must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use presence_engine::sip::{Limits, Message, RawMessage, response_to};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = Message::parse(data, &limits) {
        let _ = (m.event(), m.subscription_state(), m.contacts(), m.accept().count(), m.routes().count());
        let mut out = Vec::new();
        m.write_to(&mut out);
        let again = Message::parse(&out, &Limits { max_message_size: usize::MAX, ..limits }).expect("serialized message must parse");
        assert_eq!(m.start_line(), again.start_line());
        assert_eq!(m.body(), again.body());
        assert_eq!(m.call_id(), again.call_id());
    }
    if let Ok(raw) = RawMessage::split_lenient(data) {
        let mut out = Vec::new();
        response_to(&mut out, &raw, 400, "Bad Request", Some(b"t"), Some("127.0.0.1:5060".parse().unwrap())).finish(None, b"");
    }
});
