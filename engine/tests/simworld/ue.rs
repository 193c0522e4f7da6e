//! Simulated user agents: each registers, publishes (initial, modify,
//! refresh, remove), subscribes to presence and to its own watchers
//! (presence.winfo), refreshes and ends subscriptions, and answers NOTIFYs
//! with 200, 481 or not at all, all chosen by the seed. Requests run in
//! client transactions with Timer E retransmission over UDP.
//!
//! Some UEs are presence user agents: they register with the `events`
//! feature tag, answer the server's SUBSCRIBEs (200, 489, 503 with
//! Retry-After, or silence), NOTIFY their documents in the dialogs the 200s
//! open, update them now and then, and sometimes end them.

use presence_engine::core::entropy::Entropy;
use presence_engine::sip::{HeaderName, Limits, Message, Method, response_to};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

#[derive(Clone, Debug)]
enum Kind {
    Register,
    Publish {
        aor: String,
        remove: bool,
    },
    Subscribe {
        call_id: String,
        initial: bool,
    },
    /// A NOTIFY in a dialog the server's SUBSCRIBE opened (by Call-ID).
    AgentNotify {
        call_id: String,
    },
}

/// A dialog the server opened with this UE as a presence user agent.
pub struct AgentDialog {
    aor: String,
    local_tag: String,
    /// The server's From (with its tag): our NOTIFYs' To.
    remote: String,
    /// The server's Contact: our NOTIFYs' Request-URI.
    target: String,
    cseq: u32,
    /// The last SUBSCRIBE CSeq answered, and how (for retransmissions).
    answered: BTreeMap<u32, u16>,
    pub ended: bool,
}

struct Txn {
    bytes: Vec<u8>,
    kind: Kind,
    next_retransmit: Duration,
    interval: Duration,
    deadline: Duration,
}

/// One subscription as its subscriber sees it.
#[derive(Default)]
pub struct Dialog {
    pub aor: String,
    pub winfo: bool,
    from_tag: String,
    from_uri: String,
    to_tag: Option<String>,
    cseq: u32,
    /// The highest NOTIFY CSeq taken, and what it carried.
    pub last_cseq: u32,
    pub last_body: Vec<u8>,
    /// Winfo: watcher id → status, from full and partial documents.
    pub winfo_view: BTreeMap<String, String>,
    /// The answer chosen for each NOTIFY CSeq, kept for retransmissions
    /// (0: stay silent).
    answers: BTreeMap<u32, u16>,
    pub ended: bool,
}

pub struct Ue {
    pub addr: SocketAddr,
    pub tcp: bool,
    next_id: u64,
    txns: BTreeMap<String, Txn>,
    pub dialogs: BTreeMap<String, Dialog>,
    etags: BTreeMap<String, String>,
    reg_call_ids: BTreeMap<String, (String, u32)>,
    pub next_action: Duration,
    /// NOTIFYs received (first sight of each CSeq).
    pub notifies: u64,
    /// Registers as a presence user agent.
    pub pua: bool,
    /// Dialogs the server opened with this agent, by Call-ID.
    pub agent_dialogs: BTreeMap<String, AgentDialog>,
    /// Answers given to initial SUBSCRIBEs the UE did not accept, by
    /// Call-ID, so retransmissions get the same one (0: silence).
    refusals: BTreeMap<String, u16>,
    /// SUBSCRIBEs from the server, and agent NOTIFYs taken with 200.
    pub agent_subscribes: u64,
    pub agent_notifies: u64,
}

fn pidf(aor: &str, note: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\">\
<tuple id=\"t1\"><status><basic>open</basic></status><note>{note}</note></tuple></presence>"
    )
}

impl Ue {
    pub fn new(addr: SocketAddr, tcp: bool, pua: bool, first_action: Duration) -> Ue {
        Ue {
            addr,
            tcp,
            next_id: 0,
            txns: BTreeMap::new(),
            dialogs: BTreeMap::new(),
            etags: BTreeMap::new(),
            reg_call_ids: BTreeMap::new(),
            next_action: first_action,
            notifies: 0,
            pua,
            agent_dialogs: BTreeMap::new(),
            refusals: BTreeMap::new(),
            agent_subscribes: 0,
            agent_notifies: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn via(&mut self) -> (String, String) {
        let branch = format!("z9hG4bKue{}x{}", self.addr.port(), self.id());
        let transport = if self.tcp { "TCP" } else { "UDP" };
        (format!("SIP/2.0/{transport} {};rport;branch={branch}", self.addr), branch)
    }

    fn start(&mut self, now: Duration, branch: String, bytes: Vec<u8>, kind: Kind) -> Vec<u8> {
        let txn = Txn { bytes: bytes.clone(), kind, next_retransmit: now + T1, interval: T1, deadline: now + 64 * T1 };
        self.txns.insert(branch, txn);
        bytes
    }

    /// One random action among `aors`; returns what to send.
    pub fn act(&mut self, now: Duration, rng: &mut Entropy, aors: &[String]) -> Vec<Vec<u8>> {
        let aor = aors[rng.below(aors.len() as u64) as usize].clone();
        let expires = if rng.chance(0.15) { 0 } else { 100 + rng.below(200) as u32 };
        let roll = rng.below(100);
        let live_agent: Vec<String> = self.agent_dialogs.iter().filter(|(_, d)| !d.ended).map(|(c, _)| c.clone()).collect();
        let msg = if roll < 15 {
            self.register(now, &aor, expires)
        } else if roll < 25 && !live_agent.is_empty() {
            // As an agent: a new document, or (now and then) the end.
            let call_id = live_agent[rng.below(live_agent.len() as u64) as usize].clone();
            let state = if rng.chance(0.1) { "terminated;reason=deactivated" } else { "active;expires=100" };
            match self.agent_notify(now, &call_id, state) {
                Some(m) => m,
                None => return Vec::new(),
            }
        } else if roll < 45 {
            self.publish(now, rng, &aor, expires)
        } else if roll < 65 {
            self.subscribe(now, &aor, false, expires.max(100))
        } else if roll < 72 {
            self.subscribe(now, &aor, true, expires.max(100))
        } else {
            let live: Vec<String> = self.dialogs.iter().filter(|(_, d)| !d.ended && d.to_tag.is_some()).map(|(c, _)| c.clone()).collect();
            if live.is_empty() {
                return Vec::new();
            }
            let call_id = live[rng.below(live.len() as u64) as usize].clone();
            self.resubscribe(now, &call_id, expires)
        };
        vec![msg]
    }

    fn register(&mut self, now: Duration, aor: &str, expires: u32) -> Vec<u8> {
        let (via, branch) = self.via();
        let n = self.id();
        let (call_id, cseq) = self.reg_call_ids.entry(aor.to_string()).or_insert_with(|| (format!("reg{n}-{}", self.addr), 0));
        *cseq += 1;
        let feature = if self.pua { ";events=\"presence\"" } else { "" };
        let bytes = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=r{n}\r\nTo: <{aor}>\r\n\
Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:ue@{}>{feature}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            self.addr
        )
        .into_bytes();
        self.start(now, branch, bytes, Kind::Register)
    }

    fn publish(&mut self, now: Duration, rng: &mut Entropy, aor: &str, expires: u32) -> Vec<u8> {
        let (via, branch) = self.via();
        let n = self.id();
        let etag = self.etags.get(aor).cloned();
        // With an entity tag: modify, refresh or remove; sometimes a new
        // publication anyway, sometimes a stale tag (412).
        let (if_match, body, expires) = match etag {
            Some(e) => match rng.below(10) {
                0..=3 => (Some(e), Some(pidf(aor, &format!("m{n}"))), expires.max(100)),
                4..=6 => (Some(e), None, expires.max(100)),
                7 => (Some(e), None, 0),
                8 => (Some(format!("{e}stale")), None, 100),
                _ => (None, Some(pidf(aor, &format!("i{n}"))), expires.max(100)),
            },
            None => (None, Some(pidf(aor, &format!("i{n}"))), expires.max(100)),
        };
        let mut head = format!(
            "PUBLISH {aor} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p{n}\r\nTo: <{aor}>\r\n\
Call-ID: pub{n}-{}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: {expires}\r\n",
            self.addr
        );
        if let Some(e) = &if_match {
            head.push_str(&format!("SIP-If-Match: {e}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() {
            head.push_str("Content-Type: application/pidf+xml\r\n");
        }
        let bytes = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len()).into_bytes();
        self.start(now, branch, bytes, Kind::Publish { aor: aor.to_string(), remove: expires == 0 })
    }

    fn subscribe(&mut self, now: Duration, aor: &str, winfo: bool, expires: u32) -> Vec<u8> {
        let n = self.id();
        let call_id = format!("sub{n}-{}", self.addr);
        // Only the presentity may watch its own watchers.
        let from_uri = if winfo { aor.to_string() } else { format!("sip:w{}@example.net", self.addr.port()) };
        let d = Dialog { aor: aor.to_string(), winfo, from_tag: format!("f{n}"), from_uri, cseq: 0, ..Dialog::default() };
        self.dialogs.insert(call_id.clone(), d);
        self.subscribe_in(now, &call_id, expires, true)
    }

    fn resubscribe(&mut self, now: Duration, call_id: &str, expires: u32) -> Vec<u8> {
        self.subscribe_in(now, call_id, expires, false)
    }

    fn subscribe_in(&mut self, now: Duration, call_id: &str, expires: u32, initial: bool) -> Vec<u8> {
        let (via, branch) = self.via();
        let addr = self.addr;
        let d = self.dialogs.get_mut(call_id).expect("dialog");
        d.cseq += 1;
        let to = match &d.to_tag {
            Some(t) => format!("<{}>;tag={t}", d.aor),
            None => format!("<{}>", d.aor),
        };
        let event = if d.winfo { "presence.winfo" } else { "presence" };
        let bytes = format!(
            "SUBSCRIBE {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
CSeq: {} SUBSCRIBE\r\nContact: <sip:w@{addr}>\r\nEvent: {event}\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            d.aor, d.from_uri, d.from_tag, d.cseq
        )
        .into_bytes();
        self.start(now, branch, bytes, Kind::Subscribe { call_id: call_id.to_string(), initial })
    }

    /// Retransmissions due (UDP only) and transactions given up.
    pub fn on_time(&mut self, now: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut dead = Vec::new();
        for (branch, t) in self.txns.iter_mut() {
            if t.deadline <= now {
                dead.push(branch.clone());
            } else if !self.tcp && t.next_retransmit <= now {
                out.push(t.bytes.clone());
                t.interval = (t.interval * 2).min(T2);
                t.next_retransmit = now + t.interval;
            }
        }
        for b in dead {
            if let Some(Txn { kind: Kind::Subscribe { call_id, initial: true }, .. }) = self.txns.remove(&b)
                && let Some(d) = self.dialogs.get_mut(&call_id)
            {
                // Never answered: the UE gives up on it (a NOTIFY for it
                // later gets 481).
                d.ended = true;
            }
        }
        out
    }

    pub fn next_timer(&self) -> Option<Duration> {
        self.txns.values().map(|t| if self.tcp { t.deadline } else { t.next_retransmit.min(t.deadline) }).min()
    }

    /// A message from the server: a response to one of ours, or a NOTIFY.
    /// Returns what to send back.
    pub fn on_message(&mut self, now: Duration, rng: &mut Entropy, bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let msg = Message::parse(bytes, &Limits::default())
            .map_err(|e| format!("the server sent an unparsable message ({e}): {}", String::from_utf8_lossy(bytes)))?;
        if !msg.is_request() {
            self.on_response(&msg);
            return Ok(Vec::new());
        }
        if msg.method() == Some(Method::Subscribe) && self.pua {
            return Ok(self.on_agent_subscribe(now, rng, &msg));
        }
        if msg.method() != Some(Method::Notify) {
            return Err(format!("unexpected request from the server: {}", String::from_utf8_lossy(bytes)));
        }
        let call_id = String::from_utf8_lossy(msg.call_id()).into_owned();
        let cseq = msg.cseq().seq;
        let code = match self.dialogs.get_mut(&call_id) {
            None => 481,
            Some(d) if d.ended && !d.answers.contains_key(&cseq) => 481,
            Some(d) => {
                let code = *d.answers.entry(cseq).or_insert_with(|| match rng.below(100) {
                    0..=5 => 481,
                    6..=10 => 0,
                    _ => 200,
                });
                if code == 200 && cseq > d.last_cseq {
                    self.notifies += 1;
                    d.last_cseq = cseq;
                    d.last_body = msg.body().to_vec();
                    if d.to_tag.is_none() {
                        d.to_tag = msg.from().tag().map(|t| String::from_utf8_lossy(t).into_owned());
                    }
                    if d.winfo {
                        apply_winfo(&mut d.winfo_view, msg.body());
                    }
                    let state = msg.header(HeaderName::SubscriptionState).unwrap_or_default();
                    if state.starts_with(b"terminated") {
                        d.ended = true;
                    }
                }
                if code == 481 {
                    d.ended = true;
                }
                code
            }
        };
        if code == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity(300);
        let reason = if code == 200 { "OK" } else { "Call/Transaction Does Not Exist" };
        response_to(&mut out, msg.raw(), code, reason, None, None).finish(None, b"");
        Ok(vec![out])
    }

    fn on_response(&mut self, msg: &Message<'_>) {
        let Some(branch) = msg.via().branch() else { return };
        let branch = String::from_utf8_lossy(branch).into_owned();
        let status = msg.status().unwrap_or(0);
        if status < 200 {
            return;
        }
        let Some(txn) = self.txns.remove(&branch) else { return };
        match txn.kind {
            Kind::Register => {}
            Kind::AgentNotify { call_id } => {
                if status == 200 {
                    self.agent_notifies += 1;
                }
                if status == 481
                    && let Some(d) = self.agent_dialogs.get_mut(&call_id)
                {
                    d.ended = true;
                }
            }
            Kind::Publish { aor, remove } => match status {
                200..=299 => match msg.sip_etag() {
                    Ok(Some(e)) if !remove => {
                        self.etags.insert(aor, String::from_utf8_lossy(e).into_owned());
                    }
                    _ => {
                        self.etags.remove(&aor);
                    }
                },
                412 => {
                    self.etags.remove(&aor);
                }
                _ => {}
            },
            Kind::Subscribe { call_id, initial } => {
                let Some(d) = self.dialogs.get_mut(&call_id) else { return };
                if (200..300).contains(&status) {
                    if initial && d.to_tag.is_none() {
                        d.to_tag = msg.to().tag().map(|t| String::from_utf8_lossy(t).into_owned());
                    }
                } else if initial || status == 481 {
                    d.ended = true;
                }
            }
        }
    }
}

impl Ue {
    /// The server SUBSCRIBEs to this agent. An initial SUBSCRIBE is
    /// accepted (a dialog and its first NOTIFY), refused (489, or 503 with
    /// Retry-After) or ignored, by the seed; an in-dialog one refreshes
    /// (200 and a NOTIFY) or ends the dialog (Expires 0, a terminating
    /// NOTIFY most of the time); one for a dialog gone gets 481.
    fn on_agent_subscribe(&mut self, now: Duration, rng: &mut Entropy, msg: &Message<'_>) -> Vec<Vec<u8>> {
        let call_id = String::from_utf8_lossy(msg.call_id()).into_owned();
        let cseq = msg.cseq().seq;
        let expires = msg.expires().unwrap_or(3600);
        let mut out = Vec::new();
        if msg.to().tag().is_none() {
            let code = match self.agent_dialogs.get(&call_id) {
                Some(_) => 200,
                None => *self.refusals.entry(call_id.clone()).or_insert_with(|| match rng.below(100) {
                    0..=4 => 489,
                    5..=9 => 503,
                    10..=14 => 0,
                    _ => 200,
                }),
            };
            if code == 0 {
                return out;
            }
            let tag = format!("a{}x{}", self.addr.port(), cseq);
            let fresh = code == 200 && !self.agent_dialogs.contains_key(&call_id);
            if fresh {
                self.agent_subscribes += 1;
                self.refusals.remove(&call_id);
                let header = |n: HeaderName| String::from_utf8_lossy(msg.header(n).unwrap_or_default()).into_owned();
                let target = match msg.contacts() {
                    presence_engine::sip::Contacts::List(l) if !l.is_empty() => String::from_utf8_lossy(l[0].uri().as_bytes()).into_owned(),
                    _ => return out,
                };
                let aor = String::from_utf8_lossy(msg.to().uri().as_bytes()).into_owned();
                let d = AgentDialog { aor, local_tag: tag.clone(), remote: header(HeaderName::From), target, cseq: 0, answered: BTreeMap::new(), ended: false };
                self.agent_dialogs.insert(call_id.clone(), d);
            }
            let tag = self.agent_dialogs.get(&call_id).map_or(tag, |d| d.local_tag.clone());
            out.push(self.agent_answer(msg, code, Some(&tag), expires));
            if fresh && let Some(n) = self.agent_notify(now, &call_id, "active;expires=100") {
                out.push(n);
            }
            return out;
        }
        let Some(d) = self.agent_dialogs.get_mut(&call_id).filter(|d| !d.ended || d.answered.contains_key(&cseq)) else {
            out.push(self.agent_answer(msg, 481, None, 0));
            return out;
        };
        let first = !d.answered.contains_key(&cseq);
        d.answered.insert(cseq, 200);
        if expires == 0 {
            d.ended = true;
        }
        out.push(self.agent_answer(msg, 200, None, expires));
        if first {
            let state = if expires == 0 { "terminated" } else { "active;expires=100" };
            if (expires != 0 || rng.chance(0.7))
                && let Some(n) = self.agent_notify_in(now, &call_id, state)
            {
                out.push(n);
            }
        }
        out
    }

    fn agent_answer(&self, msg: &Message<'_>, code: u16, tag: Option<&str>, expires: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(300);
        let reason = match code {
            200 => "OK",
            481 => "Call/Transaction Does Not Exist",
            489 => "Bad Event",
            _ => "Service Unavailable",
        };
        let mut w = response_to(&mut out, msg.raw(), code, reason, tag.map(str::as_bytes), None);
        match code {
            200 => {
                w.header(HeaderName::Expires, expires.to_string().as_bytes());
            }
            503 => {
                w.header(HeaderName::RetryAfter, b"3");
            }
            _ => {}
        }
        w.finish(None, b"");
        out
    }

    /// A NOTIFY in agent dialog `call_id` with `state` (a new document
    /// when active); `None` if the dialog ended.
    fn agent_notify(&mut self, now: Duration, call_id: &str, state: &str) -> Option<Vec<u8>> {
        if self.agent_dialogs.get(call_id).is_none_or(|d| d.ended) {
            return None;
        }
        self.agent_notify_in(now, call_id, state)
    }

    fn agent_notify_in(&mut self, now: Duration, call_id: &str, state: &str) -> Option<Vec<u8>> {
        let (via, branch) = self.via();
        let n = self.id();
        let addr = self.addr;
        let d = self.agent_dialogs.get_mut(call_id)?;
        d.cseq += 1;
        if state.starts_with("terminated") {
            d.ended = true;
        }
        let body = if state.starts_with("active") {
            format!(
                "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{}\">\
<tuple id=\"pua{}\"><status><basic>open</basic></status><note>n{n}</note></tuple></presence>",
                d.aor,
                addr.port()
            )
        } else {
            String::new()
        };
        let ct = if body.is_empty() { "" } else { "Content-Type: application/pidf+xml\r\n" };
        let bytes = format!(
            "NOTIFY {} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nFrom: <{}>;tag={}\r\nTo: {}\r\nCall-ID: {call_id}\r\n\
CSeq: {} NOTIFY\r\nContact: <sip:ue@{addr}>\r\nEvent: presence\r\nSubscription-State: {state}\r\n{ct}Content-Length: {}\r\n\r\n{body}",
            d.target,
            d.aor,
            d.local_tag,
            d.remote,
            d.cseq,
            body.len()
        )
        .into_bytes();
        Some(self.start(now, branch, bytes, Kind::AgentNotify { call_id: call_id.to_string() }))
    }
}

/// Applies a watcherinfo document: a full one replaces the view, a
/// partial one changes the watchers it names.
fn apply_winfo(view: &mut BTreeMap<String, String>, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    if text.contains("state=\"full\"") {
        view.clear();
    }
    for w in text.split("<watcher ").skip(1) {
        let attr = |name: &str| w.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string();
        let (id, status) = (attr("id"), attr("status"));
        if status == "terminated" {
            view.remove(&id);
        } else {
            view.insert(id, status);
        }
    }
}
