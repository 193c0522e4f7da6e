//! RFC 7339 overload-control parameters of a Via, the encoding only.
//!
//! A client that supports overload control puts a valueless `oc` (and
//! optionally `oc-algo="loss"`) into the Via it adds. A server answers in
//! that same Via of its responses: `oc` carries the percentage of new
//! requests the client is to hold back (the loss algorithm), `oc-validity`
//! how long that holds in milliseconds (0: overload control ends), and
//! `oc-seq` orders feedback from one server (a timestamp, seconds with
//! milliseconds). What the percentage should be is `core::overload`'s job.

use super::lex;
use super::via::Via;

/// Feedback a server gives (and a client keeps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OcFeedback {
    /// Percent of new requests to drop at the client, 0..=100.
    pub loss_pct: u8,
    /// How long this feedback holds, in milliseconds; 0 ends it.
    pub validity_ms: u32,
    /// Milliseconds of the server's clock when it was given: larger is
    /// newer. Written as `seconds.milliseconds`.
    pub seq_ms: u64,
}

/// The names a server rewrites when it answers in a Via.
const OC_PARAMS: [&[u8]; 4] = [b"oc", b"oc-validity", b"oc-seq", b"oc-algo"];

/// Whether a Via parameter is one of the overload-control ones.
pub fn is_oc_param(name: &[u8]) -> bool {
    OC_PARAMS.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Whether the client that added `via` asks for loss-based overload
/// control: `oc` is present and `oc-algo`, if given, lists `loss` (the
/// default algorithm, RFC 7339 5.1).
pub fn client_supports_loss(via: &Via<'_>) -> bool {
    let params = via.params();
    if !params.has(b"oc") {
        return false;
    }
    match params.value(b"oc-algo") {
        None => true,
        Some(v) => lex::unquote(v).split(|c| *c == b',').any(|a| a.trim_ascii().eq_ignore_ascii_case(b"loss")),
    }
}

impl OcFeedback {
    /// Appends `;oc=N;oc-algo="loss";oc-validity=V;oc-seq=S.mmm`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut n = itoa::Buffer::new();
        out.extend_from_slice(b";oc=");
        out.extend_from_slice(n.format(self.loss_pct.min(100)).as_bytes());
        out.extend_from_slice(b";oc-algo=\"loss\";oc-validity=");
        out.extend_from_slice(n.format(self.validity_ms).as_bytes());
        out.extend_from_slice(b";oc-seq=");
        out.extend_from_slice(n.format(self.seq_ms / 1000).as_bytes());
        let ms = self.seq_ms % 1000;
        out.extend_from_slice(&[b'.', b'0' + (ms / 100) as u8, b'0' + (ms / 10 % 10) as u8, b'0' + (ms % 10) as u8]);
    }

    /// The feedback a server wrote into `via`, if it holds a valued `oc`.
    /// A missing `oc-validity` means the RFC's default of 500 ms.
    pub fn read(via: &Via<'_>) -> Option<OcFeedback> {
        let params = via.params();
        let loss_pct = lex::parse_u32_max(params.value(b"oc")?, 100)? as u8;
        let validity_ms = match params.value(b"oc-validity") {
            Some(v) => lex::parse_u32_max(v, u32::MAX)?,
            None => 500,
        };
        let seq_ms = params.value(b"oc-seq").and_then(parse_seq).unwrap_or(0);
        Some(OcFeedback { loss_pct, validity_ms, seq_ms })
    }
}

/// `seconds[.fraction]` to milliseconds (the fraction cut to three digits).
fn parse_seq(v: &[u8]) -> Option<u64> {
    let (secs, frac) = match v.iter().position(|c| *c == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &b""[..]),
    };
    let secs = lex::parse_u32_max(secs, u32::MAX)? as u64;
    let mut ms = 0u64;
    for i in 0..3 {
        let d = match frac.get(i) {
            Some(c) if c.is_ascii_digit() => (c - b'0') as u64,
            Some(_) => return None,
            None => 0,
        };
        ms = ms * 10 + d;
    }
    Some(secs * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &str) -> Via<'_> {
        Via::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_client_asks_with_a_bare_oc_and_may_name_algorithms() {
        assert!(client_supports_loss(&via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;oc")));
        assert!(client_supports_loss(&via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;oc;oc-algo=\"rate, loss\"")));
        assert!(!client_supports_loss(&via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;oc;oc-algo=\"rate\"")));
        assert!(!client_supports_loss(&via("SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1")));
    }

    #[test]
    fn feedback_round_trips_through_a_via() {
        let f = OcFeedback { loss_pct: 37, validity_ms: 500, seq_ms: 1_282_321_615_081 };
        let mut text = b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1".to_vec();
        f.write_to(&mut text);
        assert_eq!(String::from_utf8_lossy(&text), "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1;oc=37;oc-algo=\"loss\";oc-validity=500;oc-seq=1282321615.081");
        assert_eq!(OcFeedback::read(&Via::parse(&text).unwrap()), Some(f));
    }

    #[test]
    fn a_bare_oc_is_a_request_not_feedback_and_validity_defaults() {
        assert_eq!(OcFeedback::read(&via("SIP/2.0/UDP h;oc")), None);
        assert_eq!(OcFeedback::read(&via("SIP/2.0/UDP h;oc=101")), None);
        assert_eq!(OcFeedback::read(&via("SIP/2.0/UDP h;oc=10;oc-seq=12.5")), Some(OcFeedback { loss_pct: 10, validity_ms: 500, seq_ms: 12_500 }));
    }
}
