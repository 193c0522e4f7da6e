//! Typical presence traffic, as an IMS UE and a presence server send it.
//! Sizes are those of real-world messages: a PUBLISH with a PIDF/RPID body
//! is about 1 KB, a SUBSCRIBE about 500 bytes.

pub const PUBLISH_PIDF: &[u8] = b"PUBLISH sip:alice@ims.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.20.30.40:5060;branch=z9hG4bK-524287-1---f2a5c07e4d1b9e3a;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@ims.example.com>;tag=8c1f9a3e\r\n\
To: <sip:alice@ims.example.com>\r\n\
Call-ID: 5b6f0c1d2e3f4a5b6c7d8e9f0a1b2c3d@10.20.30.40\r\n\
CSeq: 2 PUBLISH\r\n\
P-Asserted-Identity: <sip:alice@ims.example.com>\r\n\
Event: presence\r\n\
Expires: 3600\r\n\
Content-Type: application/pidf+xml\r\n\
User-Agent: ExampleUE/4.2\r\n\
Content-Length: 490\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" entity=\"sip:alice@ims.example.com\">\r\n\
<tuple id=\"t8a3f\"><status><basic>open</basic></status><contact priority=\"0.8\">sip:alice@10.20.30.40</contact></tuple>\r\n\
<dm:person id=\"p1\"><rpid:activities><rpid:on-the-phone/></rpid:activities></dm:person>\r\n\
<note xml:lang=\"en\">In a meeting until 3pm</note>\r\n\
</presence>\r\n";

pub const SUBSCRIBE: &[u8] = b"SUBSCRIBE sip:bob@ims.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.20.30.41:5060;branch=z9hG4bK-524287-1---77aa0c3e9d21;rport\r\n\
Max-Forwards: 70\r\n\
Contact: <sip:carol@10.20.30.41:5060;transport=udp>\r\n\
To: <sip:bob@ims.example.com>\r\n\
From: \"Carol\" <sip:carol@ims.example.com>;tag=4f1c2b7a\r\n\
Call-ID: 9e8d7c6b5a4f3e2d1c0b@10.20.30.41\r\n\
CSeq: 1 SUBSCRIBE\r\n\
Expires: 3600\r\n\
Accept: application/pidf+xml, application/rlmi+xml, multipart/related\r\n\
Supported: eventlist\r\n\
Event: presence\r\n\
Allow-Events: presence, presence.winfo\r\n\
Content-Length: 0\r\n\
\r\n";

pub const NOTIFY_PIDF: &[u8] = b"NOTIFY sip:carol@10.20.30.41:5060;transport=udp SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK.s1.3f9a77c1e0d2\r\n\
Max-Forwards: 70\r\n\
From: <sip:bob@ims.example.com>;tag=s1.91ac3e\r\n\
To: \"Carol\" <sip:carol@ims.example.com>;tag=4f1c2b7a\r\n\
Call-ID: 9e8d7c6b5a4f3e2d1c0b@10.20.30.41\r\n\
CSeq: 7 NOTIFY\r\n\
Contact: <sip:ps@10.0.0.5:5060>\r\n\
Event: presence\r\n\
Subscription-State: active;expires=3412\r\n\
Content-Type: application/pidf+xml\r\n\
Content-Length: 322\r\n\
\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n\
<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:bob@ims.example.com\">\r\n\
<tuple id=\"b71\"><status><basic>open</basic></status><contact>sip:bob@10.20.30.77</contact></tuple>\r\n\
<tuple id=\"b72\"><status><basic>closed</basic></status></tuple>\r\n\
<note>Available</note>\r\n\
</presence>\r\n";

pub const OK_200: &[u8] = b"SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 10.20.30.40:5060;branch=z9hG4bK-524287-1---f2a5c07e4d1b9e3a;rport=5060;received=10.20.30.40\r\n\
From: <sip:alice@ims.example.com>;tag=8c1f9a3e\r\n\
To: <sip:alice@ims.example.com>;tag=s0.7a1e\r\n\
Call-ID: 5b6f0c1d2e3f4a5b6c7d8e9f0a1b2c3d@10.20.30.40\r\n\
CSeq: 2 PUBLISH\r\n\
SIP-ETag: s0e4f1a9c2b\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\
\r\n";

/// All samples with a short name, for benchmarks and end-to-end runs.
pub const ALL: [(&str, &[u8]); 4] = [("publish_pidf", PUBLISH_PIDF), ("subscribe", SUBSCRIBE), ("notify_pidf", NOTIFY_PIDF), ("ok_200", OK_200)];

#[cfg(test)]
mod tests {
    use presence_engine::sip::{Limits, Message};

    /// The samples must be valid, or the benchmarks would time error paths.
    #[test]
    fn samples_parse_with_their_bodies() {
        for (name, bytes) in super::ALL {
            let m = Message::parse(bytes, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.as_bytes().len(), bytes.len(), "{name}: Content-Length must cover the body exactly");
        }
    }
}
