//! The subscriber's side of an RFC 6665 dialog, for the subscriptions the
//! server itself makes (to the reg event at an S-CSCF, to presence user
//! agents): identifiers, the SUBSCRIBEs it writes, what a 2xx grants, and
//! whether a NOTIFY belongs to it. Services keep one per subscription and
//! add their package's rules (what a body means, when to retry).

use super::entropy::Entropy;
use super::ids;
use super::peer::Transport;
use crate::sip::typed::SubState;
use crate::sip::{HeaderName, Message, MessageWriter};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Where a SUBSCRIBE goes and whom it is about.
pub struct Target<'a> {
    pub request_uri: &'a [u8],
    /// The To URI (the resource: the AOR).
    pub to: &'a [u8],
    /// A Route header value, if any.
    pub route: Option<&'a [u8]>,
    pub transport: Transport,
}

/// What the server's SUBSCRIBEs of one package carry.
#[derive(Clone, Copy, Debug)]
pub struct Package {
    pub event: &'static [u8],
    pub accept: &'static [u8],
}

/// One subscriber dialog: ours until the notifier's tag is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDialog {
    pub call_id: Box<[u8]>,
    /// Our tag, minted with the shard's id so NOTIFYs route back to it.
    pub local_tag: Box<[u8]>,
    pub remote_tag: Option<Box<[u8]>>,
    /// CSeq of our last SUBSCRIBE.
    pub cseq: u32,
    /// CSeq of the last NOTIFY taken.
    pub remote_cseq: Option<u32>,
}

/// Why a NOTIFY is not taken (RFC 6665 4.1.3, RFC 3261 12.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not this dialog (481).
    NoDialog,
    /// Another event package (489).
    BadEvent,
    /// A CSeq not above the last one taken (500).
    OutOfOrder,
}

impl Refusal {
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::NoDialog => (481, "Subscription Does Not Exist"),
            Refusal::BadEvent => (489, "Bad Event"),
            Refusal::OutOfOrder => (500, "Server Internal Error: CSeq out of order"),
        }
    }
}

impl ClientDialog {
    /// A new dialog of shard `shard`: a Call-ID `<prefix>-<shard>-<random>@<ip>`
    /// and a tag that names the shard.
    pub fn new(entropy: &mut Entropy, shard: u16, local: SocketAddr, prefix: &str) -> ClientDialog {
        let mut tag = Vec::with_capacity(24);
        ids::push_tag(&mut tag, shard, entropy.u64());
        let call_id = format!("{prefix}-{shard}-{:016x}@{}", entropy.u64(), local.ip()).into_bytes();
        ClientDialog { call_id: call_id.into(), local_tag: tag.into(), remote_tag: None, cseq: 0, remote_cseq: None }
    }

    /// Writes the next SUBSCRIBE of the dialog (in it once the notifier's
    /// tag is known) with `branch`, from the server at `local`.
    pub fn write_subscribe(&mut self, local: &str, target: &Target<'_>, package: Package, expires: u32, branch: &[u8], out: &mut Vec<u8>) {
        self.cseq += 1;
        let transport = match target.transport {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
        };
        let mut w = MessageWriter::request(out, b"SUBSCRIBE", target.request_uri);
        w.header_parts(HeaderName::Via, &[b"SIP/2.0/", transport.as_bytes(), b" ", local.as_bytes(), b";rport;branch=", branch]);
        w.header(HeaderName::MaxForwards, b"70");
        if let Some(route) = target.route {
            w.header(HeaderName::Route, route);
        }
        w.header_parts(HeaderName::From, &[b"<sip:presence@", local.as_bytes(), b">;tag=", &self.local_tag]);
        match &self.remote_tag {
            Some(t) => w.header_parts(HeaderName::To, &[b"<", target.to, b">;tag=", t]),
            None => w.header_parts(HeaderName::To, &[b"<", target.to, b">"]),
        };
        w.header(HeaderName::CallId, &self.call_id);
        w.header_parts(HeaderName::CSeq, &[itoa::Buffer::new().format(self.cseq).as_bytes(), b" SUBSCRIBE"]);
        w.header_parts(HeaderName::Contact, &[b"<sip:presence@", local.as_bytes(), b">"]);
        w.header(HeaderName::Event, package.event);
        w.header(HeaderName::Accept, package.accept);
        w.header_u32(HeaderName::Expires, expires);
        w.finish(None, b"");
    }

    /// A 2xx to our SUBSCRIBE: the notifier's tag (from the first), and
    /// the interval granted (its Expires, never more than asked).
    pub fn on_success(&mut self, resp: Option<&Message<'_>>, asked: u32) -> u32 {
        if self.remote_tag.is_none() {
            self.remote_tag = resp.and_then(|r| r.to().tag()).map(Into::into);
        }
        resp.and_then(|r| r.expires()).unwrap_or(asked).min(asked)
    }

    /// Whether `msg` (a NOTIFY) is in this dialog: our tag in its To.
    pub fn is_ours(&self, msg: &Message<'_>) -> bool {
        msg.to().tag() == Some(&self.local_tag[..])
    }

    /// Judges a NOTIFY of `package` in this dialog and, if it is taken,
    /// records its CSeq and the notifier's tag (the NOTIFY may overtake
    /// the 2xx). Returns its subscription state.
    pub fn take_notify(&mut self, msg: &Message<'_>, package: &str) -> Result<SubState, Refusal> {
        if !self.is_ours(msg) {
            return Err(Refusal::NoDialog);
        }
        if !msg.event().ok().flatten().is_some_and(|e| e.is(package)) {
            return Err(Refusal::BadEvent);
        }
        let cseq = msg.cseq().seq;
        if self.remote_cseq.is_some_and(|c| cseq <= c) {
            return Err(Refusal::OutOfOrder);
        }
        self.remote_cseq = Some(cseq);
        if self.remote_tag.is_none() {
            self.remote_tag = msg.from().tag().map(Into::into);
        }
        Ok(subscription_state(msg))
    }
}

/// A NOTIFY's Subscription-State (`Other` when missing or malformed).
pub fn subscription_state(msg: &Message<'_>) -> SubState {
    match msg.subscription_state() {
        Ok(Some(s)) => s.state(),
        _ => SubState::Other,
    }
}

/// When to refresh a subscription granted `granted` seconds at `now`:
/// at four fifths of it, early enough for a retransmitted SUBSCRIBE.
pub fn refresh_at(now: Instant, granted: u32) -> Instant {
    now + Duration::from_millis(granted as u64 * 800)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::Limits;

    const PKG: Package = Package { event: b"presence", accept: b"application/pidf+xml" };

    fn dialog() -> ClientDialog {
        ClientDialog::new(&mut Entropy::for_shard(3, 2), 2, "127.0.0.1:5060".parse().unwrap(), "t")
    }

    fn notify(call_id: &[u8], cseq: u32, event: &str, to_tag: &str) -> Vec<u8> {
        format!(
            "NOTIFY sip:presence@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKn{cseq}\r\nFrom: <sip:a@example.com>;tag=ua\r\n\
To: <sip:presence@127.0.0.1:5060>;tag={to_tag}\r\nCall-ID: {}\r\nCSeq: {cseq} NOTIFY\r\nEvent: {event}\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n",
            String::from_utf8_lossy(call_id)
        )
        .into_bytes()
    }

    #[test]
    fn writes_initial_then_in_dialog_subscribes() {
        let mut d = dialog();
        assert_eq!(ids::tag_shard(&d.local_tag), Some(2));
        let target = Target { request_uri: b"sip:a@192.0.2.1", to: b"sip:a@example.com", route: Some(b"<sip:192.0.2.9;lr>"), transport: Transport::Tcp };
        let mut out = Vec::new();
        d.write_subscribe("127.0.0.1:5060", &target, PKG, 600, b"z9hG4bK.ps0002.1", &mut out);
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!((m.cseq().seq, m.to().tag(), m.expires()), (1, None, Some(600)));
        assert_eq!(m.header(HeaderName::Route), Some(&b"<sip:192.0.2.9;lr>"[..]));
        assert!(m.via().transport().eq_ignore_ascii_case(b"TCP"));
        let ok = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.ps0002.1\r\nFrom: <sip:presence@127.0.0.1:5060>;tag=x\r\n\
To: <sip:a@example.com>;tag=ua\r\nCall-ID: c\r\nCSeq: 1 SUBSCRIBE\r\nExpires: 9000\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(d.on_success(Some(&Message::parse(ok, &Limits::default()).unwrap()), 600), 600, "never more than asked");
        out.clear();
        d.write_subscribe("127.0.0.1:5060", &target, PKG, 0, b"z9hG4bK.ps0002.2", &mut out);
        let m = Message::parse(&out, &Limits::default()).unwrap();
        assert_eq!((m.cseq().seq, m.to().tag()), (2, Some(&b"ua"[..])));
    }

    #[test]
    fn notifies_are_judged_by_tag_event_and_cseq() {
        let mut d = dialog();
        let tag = String::from_utf8_lossy(&d.local_tag).into_owned();
        let call_id = d.call_id.clone();
        let take = |d: &mut ClientDialog, bytes: Vec<u8>| d.take_notify(&Message::parse(&bytes, &Limits::default()).unwrap(), "presence");
        assert_eq!(take(&mut d, notify(&call_id, 1, "presence", "other")), Err(Refusal::NoDialog));
        assert_eq!(take(&mut d, notify(&call_id, 1, "reg", &tag)), Err(Refusal::BadEvent));
        assert_eq!(take(&mut d, notify(&call_id, 2, "presence", &tag)), Ok(SubState::Active));
        assert_eq!(d.remote_tag.as_deref(), Some(&b"ua"[..]), "learned from the NOTIFY that overtook the 2xx");
        assert_eq!(take(&mut d, notify(&call_id, 2, "presence", &tag)), Err(Refusal::OutOfOrder));
        assert_eq!(take(&mut d, notify(&call_id, 3, "presence", &tag)), Ok(SubState::Active));
    }
}
