//! The agent state machines, driven without sockets on a fake clock.

use super::*;
use crate::sip::Limits;

const AOR: &[u8] = b"sip:alice@example.com";
const PIDF: &str = r#"<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="sip:alice@example.com"><tuple id="ua"><status><basic>open</basic></status></tuple></presence>"#;

struct Fixture {
    peu: Peu,
    t0: Instant,
}

fn agent(contact: &str) -> AgentAddr {
    AgentAddr { contact: contact.as_bytes().into(), request_uri: contact.as_bytes().into(), route: None, target: Peer::udp("192.0.2.7:5062".parse().unwrap()) }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Fixture {
    fn new(mode: Mode) -> Fixture {
        let t0 = Instant::now();
        let cfg = PeuConfig { mode, grace: secs(30), retry_base: secs(5), retry_max: secs(60), ..Default::default() };
        Fixture { peu: Peu::new(cfg, 0, "127.0.0.1:5060".parse().unwrap(), Entropy::for_shard(7, 0), t0), t0 }
    }

    /// A fixture in `Always` mode with the one agent `UA` of `AOR`, and the
    /// initial SUBSCRIBE it made.
    fn with_agent(watched: bool) -> (Fixture, (u64, u32, String, u32)) {
        let mut f = Fixture::new(Mode::Always);
        f.peu.set_agents(f.t0, AOR, &[agent(UA)], watched, true, true);
        let first = f.subscribes().remove(0);
        (f, first)
    }

    /// The SUBSCRIBEs asked for, written out: (agent, expires, bytes, cseq).
    fn subscribes(&mut self) -> Vec<(u64, u32, String, u32)> {
        let mut sent = Vec::new();
        for o in self.peu.take_out() {
            if let PeuOut::Subscribe { agent, expires } = o {
                let mut bytes = Vec::new();
                let (_, cseq) = self.peu.write_subscribe(agent, expires, b"z9hG4bK.ps0000.1", &mut bytes).unwrap();
                sent.push((agent, expires, String::from_utf8(bytes).unwrap(), cseq));
            }
        }
        sent
    }

    fn respond(&mut self, at: u64, sub: &(u64, u32, String, u32), status: u16, extra: &str) {
        let resp = format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK.ps0000.1\r\nFrom: {}\r\nTo: {};tag=pua\r\nCall-ID: {}\r\nCSeq: {} SUBSCRIBE\r\n{extra}Content-Length: 0\r\n\r\n",
            header(&sub.2, "From"),
            header(&sub.2, "To"),
            header(&sub.2, "Call-ID"),
            sub.3
        );
        let msg = Message::parse(resp.as_bytes(), &Limits::default()).unwrap();
        self.peu.on_response(self.t0 + secs(at), sub.0, sub.3, Some(status), Some(&msg));
    }

    fn notify(&mut self, at: u64, sub: &(u64, u32, String, u32), cseq: u32, state: &str, body: &str) -> NotifyAnswer {
        let ct = if body.is_empty() { String::new() } else { "Content-Type: application/pidf+xml\r\n".into() };
        let n = format!(
            "NOTIFY sip:presence@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bKn{cseq}\r\nMax-Forwards: 70\r\nFrom: {};tag=pua\r\nTo: {}\r\n\
Call-ID: {}\r\nCSeq: {cseq} NOTIFY\r\nEvent: presence\r\nSubscription-State: {state}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            header(&sub.2, "To"),
            header(&sub.2, "From"),
            header(&sub.2, "Call-ID"),
            body.len()
        );
        let msg = Message::parse(n.as_bytes(), &Limits::default()).unwrap();
        assert!(self.peu.owns(&msg));
        self.peu.on_notify(self.t0 + secs(at), &msg)
    }

    fn sources(&mut self) -> Vec<SourceUpdate> {
        self.peu.take_out().into_iter().filter_map(|o| if let PeuOut::Source { update, .. } = o { Some(update) } else { None }).collect()
    }

    fn state(&self) -> Option<&'static str> {
        self.peu.agent_state(AOR, b"sip:alice@192.0.2.7:5062")
    }

    fn tick(&mut self, at_ms: u64) {
        self.peu.on_time(self.t0 + Duration::from_millis(at_ms));
    }
}

fn header(msg: &str, name: &str) -> String {
    msg.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).unwrap().to_string()
}

const UA: &str = "sip:alice@192.0.2.7:5062";

#[test]
fn watched_mode_subscribes_only_while_watched_and_a_grace_after() {
    let mut f = Fixture::new(Mode::Watched);
    f.peu.set_agents(f.t0, AOR, &[agent(UA)], false, true, true);
    assert!(f.subscribes().is_empty(), "nobody watches: no traffic to the device");
    assert_eq!(f.state(), Some("idle"));
    f.peu.set_watched(f.t0, AOR, true);
    let subs = f.subscribes();
    assert_eq!(subs.len(), 1);
    let s = &subs[0].2;
    assert!(s.starts_with("SUBSCRIBE sip:alice@192.0.2.7:5062 SIP/2.0\r\n"), "{s}");
    assert!(s.contains("Event: presence\r\n") && s.contains("Accept: application/pidf+xml\r\n") && s.contains("Expires: 3600\r\n"), "{s}");
    assert!(s.contains("To: <sip:alice@example.com>\r\n"), "{s}");
    f.respond(0, &subs[0], 200, "Expires: 600\r\n");
    assert_eq!(f.state(), Some("active"));
    // Last watcher leaves: nothing before the grace period ends.
    f.peu.set_watched(f.t0 + secs(10), AOR, false);
    f.tick(39_000);
    assert!(f.subscribes().is_empty());
    f.tick(40_200);
    let unsub = f.subscribes();
    assert_eq!(unsub.len(), 1);
    assert_eq!(unsub[0].1, 0, "Expires 0");
    assert!(unsub[0].2.contains("To: <sip:alice@example.com>;tag=pua\r\n"), "in the dialog");
    f.respond(41, &unsub[0], 200, "");
    assert_eq!(f.state(), Some("idle"));
    // A watcher within the grace period keeps the subscription.
    f.peu.set_watched(f.t0 + secs(50), AOR, true);
    let again = f.subscribes();
    f.respond(50, &again[0], 200, "");
    f.peu.set_watched(f.t0 + secs(60), AOR, false);
    f.peu.set_watched(f.t0 + secs(70), AOR, true);
    f.tick(95_000);
    assert!(f.subscribes().is_empty(), "the watcher came back in time");
    assert_eq!(f.state(), Some("active"));
}

#[test]
fn refreshes_at_four_fifths_of_the_granted_interval() {
    let (mut f, first) = Fixture::with_agent(false);
    let subs = [first];
    f.respond(0, &subs[0], 200, "Expires: 100\r\n");
    f.tick(79_000);
    assert!(f.subscribes().is_empty());
    f.tick(80_100);
    let refresh = f.subscribes();
    assert_eq!(refresh.len(), 1);
    assert!(refresh[0].2.contains(";tag=pua\r\n") && refresh[0].3 == 2, "in-dialog, next CSeq");
}

#[test]
fn notifies_become_the_agents_publication_until_the_source_ends() {
    let (mut f, first) = Fixture::with_agent(false);
    let subs = [first];
    // The NOTIFY may overtake the 200.
    assert_eq!(f.notify(0, &subs[0], 1, "active;expires=3600", PIDF).code, 200);
    assert!(matches!(f.sources().as_slice(), [SourceUpdate::Document(_)]));
    f.respond(0, &subs[0], 200, "");
    assert_eq!(f.notify(1, &subs[0], 2, "pending", "").code, 200);
    assert!(f.sources().is_empty(), "pending changes nothing");
    assert_eq!(f.notify(1, &subs[0], 3, "active", "").code, 200);
    assert!(f.sources().is_empty(), "no body changes nothing");
    assert_eq!(f.notify(2, &subs[0], 4, "active", "<presence").code, 400);
    assert!(f.sources().is_empty(), "a bad body changes nothing");
    assert_eq!(f.notify(2, &subs[0], 3, "active", PIDF).code, 500, "CSeq not above the last");
    assert!(f.sources().is_empty());
    // Terminated with retry-after: the publication goes, and the agent is
    // asked again after exactly that long.
    assert_eq!(f.notify(3, &subs[0], 5, "terminated;reason=deactivated;retry-after=20", "").code, 200);
    assert_eq!(f.sources(), vec![SourceUpdate::Remove]);
    assert_eq!(f.state(), Some("backoff"));
    f.tick(22_000);
    assert!(f.subscribes().is_empty());
    f.tick(23_200);
    let again = f.subscribes();
    assert_eq!(again.len(), 1);
    assert_ne!(header(&again[0].2, "Call-ID"), header(&subs[0].2, "Call-ID"), "a new dialog");
    assert!(!again[0].2.contains(";tag=pua"));
}

#[test]
fn refusal_holds_until_the_contact_registers_again() {
    let (mut f, first) = Fixture::with_agent(false);
    let subs = [first];
    f.respond(0, &subs[0], 489, "");
    assert_eq!(f.state(), Some("refused"));
    // The binding changes elsewhere (no REGISTER of this contact): still refused.
    f.peu.set_agents(f.t0 + secs(1), AOR, &[agent(UA)], false, false, true);
    f.tick(3_600_000);
    assert!(f.subscribes().is_empty());
    f.peu.set_agents(f.t0 + secs(3601), AOR, &[agent(UA)], false, true, true);
    assert_eq!(f.subscribes().len(), 1, "registered again: asked again");
}

#[test]
fn failures_back_off_doubling_to_the_cap_never_in_a_loop() {
    let (mut f, mut sub) = Fixture::with_agent(false);
    let mut at_ms = 0u64;
    let mut waits = Vec::new();
    for _ in 0..6 {
        // Timer F: no answer.
        f.peu.on_response(f.t0 + Duration::from_millis(at_ms), sub.0, sub.3, None, None);
        assert_eq!(f.state(), Some("backoff"));
        let start = at_ms;
        loop {
            at_ms += 100;
            f.tick(at_ms);
            let s = f.subscribes();
            if let Some(s) = s.into_iter().next() {
                sub = s;
                break;
            }
            assert!(at_ms - start < 120_000, "never retried");
        }
        waits.push((at_ms - start).div_ceil(1000));
    }
    assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
    // A 503 with Retry-After waits that long.
    f.respond(at_ms / 1000, &sub, 503, "Retry-After: 7\r\n");
    assert_eq!(f.state(), Some("backoff"));
}

#[test]
fn a_binding_that_goes_is_unsubscribed_and_its_publication_removed() {
    let (mut f, first) = Fixture::with_agent(true);
    let subs = [first];
    f.respond(0, &subs[0], 200, "");
    f.notify(0, &subs[0], 1, "active", PIDF);
    f.sources();
    f.peu.set_agents(f.t0 + secs(5), AOR, &[], true, false, true);
    let out = f.peu.take_out();
    assert!(out.iter().any(|o| matches!(o, PeuOut::Source { update: SourceUpdate::Remove, .. })));
    let unsub: Vec<u32> = out.iter().filter_map(|o| if let PeuOut::Subscribe { expires, .. } = o { Some(*expires) } else { None }).collect();
    assert_eq!(unsub, vec![0]);
    assert_eq!(f.peu.len(), 1, "kept until the unsubscribe ends");
    // Its final NOTIFY is answered 200, then the answer to the unsubscribe
    // forgets the agent.
    assert_eq!(f.notify(5, &subs[0], 2, "terminated", "").code, 200);
    let mut bytes = Vec::new();
    let (_, cseq) = f.peu.write_subscribe(subs[0].0, 0, b"z9hG4bK.ps0000.2", &mut bytes).unwrap();
    f.peu.on_response(f.t0 + secs(5), subs[0].0, cseq, Some(200), None);
    assert_eq!(f.peu.len(), 0);
    assert_eq!(f.peu.presentities.len(), 0, "nothing left");
}

#[test]
fn at_most_the_configured_agents_per_presentity() {
    let mut f = Fixture::new(Mode::Always);
    let many: Vec<AgentAddr> = (0..20).map(|i| agent(&format!("sip:alice@192.0.2.{i}:5062"))).collect();
    f.peu.set_agents(f.t0, AOR, &many, false, true, true);
    assert_eq!(f.peu.len(), 8);
    assert_eq!(f.subscribes().len(), 8);
}

#[test]
fn off_mode_keeps_nothing() {
    let mut f = Fixture::new(Mode::Off);
    f.peu.set_agents(f.t0, AOR, &[agent(UA)], true, true, true);
    assert!(f.peu.is_empty() && f.subscribes().is_empty());
}

#[test]
fn a_423_is_retried_with_the_agents_min_expires() {
    let (mut f, first) = Fixture::with_agent(false);
    let subs = [first];
    f.respond(0, &subs[0], 423, "Min-Expires: 7200\r\n");
    assert_eq!(f.state(), Some("backoff"));
    f.tick(5_200);
    let again = f.subscribes();
    assert_eq!(again.len(), 1);
    assert!(again[0].2.contains("Expires: 7200\r\n"), "{}", again[0].2);
}

/// In a cluster an agent subscribes only on the node that serves its
/// presentity: not while another node does, at once when this node takes
/// the partition, and it unsubscribes (its publication gone with it) when
/// the partition moves away.
#[test]
fn an_agent_subscribes_only_where_its_presentity_is_served() {
    let mut f = Fixture::new(Mode::Always);
    f.peu.set_agents(f.t0, AOR, &[agent(UA)], true, true, false);
    assert!(f.subscribes().is_empty(), "another node serves the presentity");
    assert_eq!(f.state(), Some("idle"));
    f.peu.set_served(f.t0 + secs(1), AOR, true);
    let subs = f.subscribes();
    assert_eq!(subs.len(), 1, "this node took the partition");
    f.respond(1, &subs[0], 200, "Expires: 600\r\n");
    assert_eq!(f.notify(1, &subs[0], 1, "active;expires=600", PIDF).code, 200);
    assert_eq!(f.sources().len(), 1, "the device's document is the presentity's publication here");
    f.peu.set_served(f.t0 + secs(2), AOR, true);
    assert!(f.subscribes().is_empty(), "no change, nothing sent");
    f.peu.set_served(f.t0 + secs(3), AOR, false);
    let out = f.peu.take_out();
    assert!(out.iter().any(|o| matches!(o, PeuOut::Subscribe { expires: 0, .. })), "Expires 0: the partition moved away");
    assert!(out.iter().any(|o| matches!(o, PeuOut::Source { update: SourceUpdate::Remove, .. })), "its publication leaves with it");
    // A configured agent added while another node serves the presentity waits too.
    let mut g = Fixture::new(Mode::Always);
    g.peu.add_configured(g.t0, AOR, agent(UA), false);
    assert!(g.subscribes().is_empty());
    assert_eq!(g.peu.presentities(), vec![Box::<[u8]>::from(AOR)]);
}
