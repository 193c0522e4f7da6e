//! The requests of each scenario, for user `u` from local address `from`.

use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// REGISTER each user (refreshing on later rounds).
    Register,
    /// PUBLISH a PIDF document for each user: initial, then modify with the
    /// entity tag the server returned.
    Publish,
    /// SUBSCRIBE to each user's presence and answer every NOTIFY.
    Subscribe,
}

impl Scenario {
    pub fn parse(s: &str) -> Result<Scenario, String> {
        match s {
            "register" => Ok(Scenario::Register),
            "publish" => Ok(Scenario::Publish),
            "subscribe" => Ok(Scenario::Subscribe),
            other => Err(format!("scenario {other:?}: this build has register, publish and subscribe (fanout and mixed are not built yet)")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Publish => "publish",
            Scenario::Subscribe => "subscribe",
        }
    }
}

pub fn aor(u: usize, domain: &str) -> String {
    format!("sip:ue{u}@{domain}")
}

/// The request of `scenario` for user `u`; `branch` and `cseq` are the
/// transaction's; `etag` is the user's last SIP-ETag (PUBLISH).
pub fn request(scenario: Scenario, u: usize, domain: &str, from: SocketAddr, branch: u64, cseq: u32, etag: Option<&str>) -> Vec<u8> {
    let aor = aor(u, domain);
    let via = format!("SIP/2.0/UDP {from};rport;branch=z9hG4bK-lg{branch:x}");
    match scenario {
        Scenario::Register => format!(
            "REGISTER sip:{domain} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=r{u}\r\nTo: <{aor}>\r\n\
Call-ID: reg-{u}@loadgen\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:ue{u}@{from}>\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
        Scenario::Publish => {
            let doc = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"t1\"><status><basic>open</basic></status><contact>sip:ue{u}@{from}</contact><note>seq {cseq}</note></tuple></presence>\n"
            );
            let if_match = etag.map(|e| format!("SIP-If-Match: {e}\r\n")).unwrap_or_default();
            format!(
                "PUBLISH {aor} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p{u}\r\nTo: <{aor}>\r\n\
Call-ID: pub-{u}-{cseq}@loadgen\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n{if_match}Expires: 3600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
                doc.len()
            )
            .into_bytes()
        }
        Scenario::Subscribe => format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <sip:watcher{u}@{domain}>;tag=s{u}-{cseq}\r\n\
To: <{aor}>\r\nCall-ID: sub-{u}-{cseq}@loadgen\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:watcher{u}@{from}>\r\nEvent: presence\r\n\
Accept: application/pidf+xml\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes(),
    }
}
