//! What each scenario sends: the scenario names, the three request kinds
//! they are built from, and the marker a PUBLISH carries so the NOTIFYs it
//! causes can be checked and timed.

use crate::transport::TransportKind;
use std::net::SocketAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// REGISTER each user (refreshing on later rounds).
    Register,
    /// PUBLISH a PIDF document for each user: initial, then modify with the
    /// entity tag the server returned, every few rounds a refresh.
    Publish,
    /// A new SUBSCRIBE to each user's presence; every NOTIFY answered.
    Subscribe,
    /// W watchers on each of P presentities, then a storm of PUBLISHes;
    /// measures NOTIFYs delivered and publish-to-NOTIFY latency.
    Fanout,
    /// A busy hour from a TOML traffic profile: standing watchers, then
    /// REGISTER, PUBLISH and SUBSCRIBE at per-subscriber rates.
    Mixed,
    /// Presence by subscription: each user registers as a presence user
    /// agent (`events="presence"`), a watcher subscribes to each, the
    /// server SUBSCRIBEs to the agents, and the agents then send NOTIFYs
    /// (their PIDF documents) at the load rate; measures the NOTIFYs the
    /// server ingests and the watcher NOTIFYs they cause.
    Peu,
    /// Capacity at scale: every user registers and publishes once, then
    /// watches W others; with that state in place, PUBLISH and SUBSCRIBE
    /// capacity (closed loop) and latency at half of it (open loop), each
    /// phase with the server's CPU and memory when --server-pid is given.
    Scale,
}

impl Scenario {
    pub const ALL: [Scenario; 7] =
        [Scenario::Register, Scenario::Publish, Scenario::Subscribe, Scenario::Fanout, Scenario::Mixed, Scenario::Peu, Scenario::Scale];

    pub fn parse(s: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("scenario {s:?}: use one of register, publish, subscribe, fanout, mixed, peu, scale"))
    }
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Register => "register",
            Scenario::Publish => "publish",
            Scenario::Subscribe => "subscribe",
            Scenario::Fanout => "fanout",
            Scenario::Mixed => "mixed",
            Scenario::Peu => "peu",
            Scenario::Scale => "scale",
        }
    }
}

impl Scenario {
    /// The user part of watcher `n`: the fanout's watchers are extra
    /// identities, the mixed profile's are the users themselves.
    pub fn watcher_name(self, n: usize) -> String {
        match self {
            Scenario::Fanout => format!("lgw{n}"),
            Scenario::Mixed | Scenario::Scale => format!("ue{n}"),
            Scenario::Peu => format!("pw{n}"),
            _ => format!("watcher{n}"),
        }
    }
}

/// The request kinds every scenario is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Register = 0,
    Publish = 1,
    Subscribe = 2,
    /// A presence user agent's NOTIFY to the server (scenario `peu`).
    Notify = 3,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Register, Kind::Publish, Kind::Subscribe, Kind::Notify];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Register => "register",
            Kind::Publish => "publish",
            Kind::Subscribe => "subscribe",
            Kind::Notify => "notify",
        }
    }
}

/// What every request of one worker shares.
pub struct Ctx<'a> {
    pub domain: &'a str,
    /// Makes this run's Call-IDs unique among runs against one server.
    pub run: u32,
    pub transport: TransportKind,
    /// The sending flow's local address (Via sent-by and Contact).
    pub local: SocketAddr,
    /// Ask for RFC 7339 loss-based overload control in every Via.
    pub oc: bool,
}

/// The Via branch of transaction `n`; responses are matched by it.
pub const BRANCH_PREFIX: &[u8] = b"z9hG4bK-lg";

/// Transaction number from a branch this load generator made.
pub fn parse_branch(b: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(b.strip_prefix(BRANCH_PREFIX)?).ok()?, 16).ok()
}

pub fn aor(u: usize, domain: &str) -> String {
    format!("sip:ue{u}@{domain}")
}

impl Ctx<'_> {
    fn via(&self, branch: u64) -> String {
        let oc = if self.oc { ";oc;oc-algo=\"loss\"" } else { "" };
        format!("SIP/2.0/{} {};rport;branch=z9hG4bK-lg{branch:x}{oc}", self.transport.via(), self.local)
    }
    fn contact(&self, user: &str) -> String {
        format!("<sip:{user}@{}{}>", self.local, self.transport.uri_param())
    }

    /// REGISTER of user `u` (Contact at the sending flow); a `pua` marks
    /// the contact as a presence user agent (RFC 3840 `events`).
    pub fn register(&self, branch: u64, u: usize, cseq: u32, expires: u32, pua: bool) -> Vec<u8> {
        let (aor, domain) = (aor(u, self.domain), self.domain);
        let feature = if pua { ";events=\"presence\"" } else { "" };
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=r{u}\r\nTo: <{aor}>\r\n\
Call-ID: reg-{u}@loadgen\r\nCSeq: {cseq} REGISTER\r\nContact: {}{feature}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            self.via(branch),
            self.contact(&format!("ue{u}"))
        )
        .into_bytes()
    }

    /// A presence user agent's NOTIFY in the dialog the server's SUBSCRIBE
    /// made (`d`), carrying user `u`'s document with `marker`.
    pub fn notify(&self, branch: u64, u: usize, d: &PuaDialog, cseq: u32, marker: Marker) -> Vec<u8> {
        let doc = self.document(u, marker);
        format!(
            "NOTIFY {} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {}\r\nCall-ID: {}\r\n\
CSeq: {cseq} NOTIFY\r\nContact: {}\r\nEvent: presence\r\nSubscription-State: active;expires=3600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
            d.target,
            self.via(branch),
            aor(u, self.domain),
            d.local_tag,
            d.remote,
            d.call_id,
            self.contact(&format!("ue{u}")),
            doc.len()
        )
        .into_bytes()
    }

    /// User `u`'s PIDF document carrying `marker`. The tuple id names the
    /// run, so a server that keeps the first of two tuples with one id
    /// (Kamailio) still shows this run's next to what earlier runs left.
    fn document(&self, u: usize, marker: Marker) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\
<tuple id=\"lg{:x}\"><status><basic>open</basic></status><contact>sip:ue{u}@{}</contact><note>{marker}</note></tuple></presence>\n",
            aor(u, self.domain),
            marker.run,
            self.local
        )
    }

    /// PUBLISH of user `u`'s PIDF document carrying `marker`: initial
    /// without `etag`, a modify with it.
    pub fn publish(&self, branch: u64, u: usize, cseq: u32, etag: Option<&[u8]>, marker: Marker) -> Vec<u8> {
        let aor = aor(u, self.domain);
        let doc = self.document(u, marker);
        let if_match = etag.map(|e| format!("SIP-If-Match: {}\r\n", String::from_utf8_lossy(e))).unwrap_or_default();
        format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p{u}\r\nTo: <{aor}>\r\n\
Call-ID: pub-{u}-{cseq}@loadgen\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\n{if_match}Expires: 3600\r\n\
Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
            self.via(branch),
            doc.len()
        )
        .into_bytes()
    }

    /// A PUBLISH refresh of user `u`'s publication `etag`: no body, only a
    /// new expiry (RFC 3903 section 4.2).
    pub fn publish_refresh(&self, branch: u64, u: usize, cseq: u32, etag: &[u8]) -> Vec<u8> {
        let aor = aor(u, self.domain);
        format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p{u}\r\nTo: <{aor}>\r\n\
Call-ID: pub-{u}-{cseq}@loadgen\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nSIP-If-Match: {}\r\nExpires: 3600\r\n\
Content-Length: 0\r\n\r\n",
            self.via(branch),
            String::from_utf8_lossy(etag)
        )
        .into_bytes()
    }

    /// A SUBSCRIBE from `watcher` (a user part) to user `presentity`'s
    /// presence: a new dialog without `to_tag`, else a refresh (or with
    /// Expires 0 the end) of the dialog. The From tag names the worker's
    /// watch slot, so the NOTIFYs (which carry it as their To tag) find it.
    pub fn subscribe(&self, branch: u64, watcher: &str, watch: usize, presentity: usize, expires: u32, to_tag: Option<&[u8]>) -> Vec<u8> {
        let (aor, domain, run) = (aor(presentity, self.domain), self.domain, self.run);
        let (to_tag, cseq) = match to_tag {
            Some(t) => (format!(";tag={}", String::from_utf8_lossy(t)), 2),
            None => (String::new(), 1),
        };
        format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: <sip:{watcher}@{domain}>;tag={}\r\n\
To: <{aor}>{to_tag}\r\nCall-ID: sub-{run:x}-{watch}@loadgen\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: {}\r\nEvent: presence\r\n\
Accept: application/pidf+xml\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            self.via(branch),
            watch_tag(watch),
            self.contact(watcher)
        )
        .into_bytes()
    }
}

/// The dialog a server's SUBSCRIBE opened with a simulated presence user
/// agent, as the agent sends NOTIFYs in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PuaDialog {
    pub call_id: String,
    /// Our tag (the To tag of our 200).
    pub local_tag: String,
    /// The server's From, with its tag: our NOTIFYs' To.
    pub remote: String,
    /// The server's Contact URI: our NOTIFYs' Request-URI.
    pub target: String,
}

impl PuaDialog {
    /// The dialog of an initial SUBSCRIBE answered with tag `local_tag`.
    pub fn of(sub: &presence_engine::sip::Message<'_>, local_tag: String) -> Option<PuaDialog> {
        use presence_engine::sip::{Contacts, HeaderName};
        let target = match sub.contacts() {
            Contacts::List(l) if !l.is_empty() => String::from_utf8_lossy(l[0].uri().as_bytes()).into_owned(),
            _ => return None,
        };
        Some(PuaDialog {
            call_id: String::from_utf8_lossy(sub.call_id()).into_owned(),
            local_tag,
            remote: String::from_utf8_lossy(sub.header(HeaderName::From)?).into_owned(),
            target,
        })
    }
}

/// The user a SUBSCRIBE's Request-URI names (`ue<u>`).
pub fn user_of(ruri_user: &[u8]) -> Option<usize> {
    std::str::from_utf8(ruri_user.strip_prefix(b"ue")?).ok()?.parse().ok()
}

pub fn watch_tag(watch: usize) -> String {
    format!("w{watch:x}")
}

/// The watch slot a NOTIFY's To tag names.
pub fn parse_watch_tag(tag: &[u8]) -> Option<usize> {
    usize::from_str_radix(std::str::from_utf8(tag.strip_prefix(b"w")?).ok()?, 16).ok()
}

/// Carried in each PUBLISH's `<note>`: whose document, which version, and
/// when it was sent (µs since the run's epoch). A NOTIFY is checked
/// against it and timed by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Which run published it: documents left on the server by earlier
    /// runs are not checked against this run's versions.
    pub run: u32,
    pub presentity: usize,
    pub seq: u32,
    pub sent_us: u64,
}

impl std::fmt::Display for Marker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lg:{:x}:{}:{}:{}", self.run, self.presentity, self.seq, self.sent_us)
    }
}

impl Marker {
    /// Every marker in a document, in order; `None` for one that does not
    /// parse.
    pub fn all(body: &[u8]) -> impl Iterator<Item = Option<Marker>> + '_ {
        memchr::memmem::find_iter(body, b"lg:").map(move |at| Marker::parse(&body[at + 3..]))
    }

    /// A marker's fields, from just after its `lg:` to the next `<`.
    fn parse(rest: &[u8]) -> Option<Marker> {
        let end = memchr::memchr(b'<', rest).unwrap_or(rest.len());
        let mut parts = std::str::from_utf8(&rest[..end]).ok()?.split(':');
        Some(Marker {
            run: u32::from_str_radix(parts.next()?, 16).ok()?,
            presentity: parts.next()?.parse().ok()?,
            seq: parts.next()?.parse().ok()?,
            sent_us: parts.next()?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_engine::sip::{Limits, Message};

    fn ctx(transport: TransportKind) -> Ctx<'static> {
        Ctx { domain: "example.com", run: 1, transport, local: "127.0.0.1:4000".parse().unwrap(), oc: false }
    }

    #[test]
    fn requests_parse_and_carry_their_ids() {
        for t in [TransportKind::Udp, TransportKind::Tcp] {
            let c = ctx(t);
            let marker = Marker { run: 0xabc, presentity: 7, seq: 3, sent_us: 99 };
            for bytes in [
                c.register(0x2a, 7, 1, 3600, false),
                c.register(0x2a, 7, 1, 3600, true),
                c.publish(0x2a, 7, 1, Some(b"e1"), marker),
                c.subscribe(0x2a, "lgw9", 9, 7, 600, None),
                c.subscribe(0x2a, "lgw9", 9, 7, 0, Some(b"x")),
                c.publish_refresh(0x2a, 7, 2, b"e1"),
            ] {
                let m = Message::parse(&bytes, &Limits::default()).unwrap();
                assert_eq!(m.via().branch().and_then(parse_branch), Some(0x2a));
                assert!(String::from_utf8_lossy(&bytes).contains(&format!("SIP/2.0/{}", t.via())));
            }
            let sub = c.subscribe(1, "lgw9", 9, 7, 600, None);
            let m = Message::parse(&sub, &Limits::default()).unwrap();
            assert_eq!(m.from().tag().and_then(parse_watch_tag), Some(9));
            let publ = c.publish(1, 7, 1, None, marker);
            let m = Message::parse(&publ, &Limits::default()).unwrap();
            assert_eq!(Marker::all(m.body()).collect::<Vec<_>>(), [Some(marker)]);
            presence_engine::presence::pidf::parse(m.body()).expect("valid PIDF");
        }
    }

    #[test]
    fn markers_that_do_not_parse_are_reported() {
        assert_eq!(Marker::all(b"<note>nothing</note>").next(), None);
        assert_eq!(Marker::all(b"<note>lg:1:1:x:3</note>").next(), Some(None));
    }

    #[test]
    fn scenario_names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Ok(s));
        }
        assert!(Scenario::parse("storm").unwrap_err().contains("fanout"));
    }
}
