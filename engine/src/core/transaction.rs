//! Non-INVITE transactions (RFC 3261 17.1.2 and 17.2.2, with RFC 4320),
//! sans-IO: they take requests, responses and time, and give back what to
//! send and what happened. Each table keeps its own timer wheel.
//!
//! This server never sends 100 Trying to a non-INVITE request: over UDP it
//! would only add load, and RFC 4320 forbids it before Timer E could reach
//! T2. Nor does it ever send 408 to a non-INVITE request (RFC 4320 4.1).

use super::completed::Completed;
use super::entropy::Entropy;
use super::ids;
use super::parted::{PartedMap, PartedTable};
use super::peer::Transmit;
use super::reply::StoredAnswer;
use super::timer::TimerWheel;
use crate::sip::{Message, ResponseKey, Via};
use std::time::{Duration, Instant};

/// Transaction timer base values (RFC 3261 17.1.1.1, table 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipTimers {
    /// RTT estimate.
    pub t1: Duration,
    /// Cap on the retransmit interval of non-INVITE requests.
    pub t2: Duration,
    /// How long a message can stay in the network.
    pub t4: Duration,
}

impl Default for SipTimers {
    fn default() -> Self {
        SipTimers { t1: Duration::from_millis(500), t2: Duration::from_secs(4), t4: Duration::from_secs(5) }
    }
}

const TICK: Duration = Duration::from_millis(5);
const SLOTS: usize = 8192;

// ---------------------------------------------------------------- server

/// What identifies a server transaction (RFC 3261 17.2.3): the top Via's
/// branch, sent-by and the method; for an RFC 2543 peer (no magic cookie)
/// the Request-URI, tags, Call-ID, CSeq and top Via instead.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerKey(Box<[u8]>);

impl ServerKey {
    pub fn of(req: &Message<'_>) -> ServerKey {
        let via: &Via<'_> = req.via();
        let method = req.cseq().method;
        let mut k;
        if via.has_rfc3261_branch() {
            let branch = via.branch().unwrap_or_default();
            // Sized exactly: the boxed key is then the vector's own buffer.
            k = Vec::with_capacity(branch.len() + via.host().len() + 4 + method.len());
            k.extend_from_slice(branch);
            k.push(0);
            k.extend_from_slice(via.host());
            k.extend_from_slice(&via.port_or_default().to_be_bytes());
        } else {
            k = Vec::with_capacity(128);
            k.push(1);
            k.extend_from_slice(req.request_uri().map(|u| u.as_bytes()).unwrap_or_default());
            k.push(0);
            k.extend_from_slice(req.to().tag().unwrap_or_default());
            k.push(0);
            k.extend_from_slice(req.from().tag().unwrap_or_default());
            k.push(0);
            k.extend_from_slice(req.call_id());
            k.push(0);
            k.extend_from_slice(&req.cseq().seq.to_be_bytes());
            k.extend_from_slice(req.raw().header(crate::sip::HeaderName::Via).unwrap_or_default());
        }
        k.push(0);
        k.extend_from_slice(method);
        ServerKey(k.into_boxed_slice())
    }
}

/// What to do with an incoming request, per its server transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum ServerLookup {
    /// First sight: a transaction now exists in Trying; process the request
    /// and answer through this handle.
    New(TxnRef),
    /// A retransmission while the request is still being processed: drop it.
    Absorbed,
    /// A retransmission after the final response: answer it again with
    /// this, written around the retransmission.
    Replay(StoredAnswer),
}

/// A handle on a server transaction: its key's hash and a serial number,
/// so that answering it or ending it needs neither the key nor a copy of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnRef {
    hash: u64,
    serial: u64,
}

/// A transaction whose request is being processed (Trying).
struct ServerTxn {
    key: ServerKey,
    at: TxnRef,
}

/// The server transactions of one shard: those being processed, in a
/// table, and those completed over UDP, held for Timer J in a log
/// (`core::completed`) that expires them in completion order. Each key is
/// hashed once.
///
/// The table is split in parts (`core::parted`) by hash: a hash table that churns
/// (40,000 inserts and removals a second) rehashes now and then, to grow
/// or to clear the tombstones removals leave, and a rehash moves every
/// entry at once. One table of a million stalled the shard for tens of
/// milliseconds each time; a part rehashes a sixty-fourth.
pub struct ServerTransactions {
    hasher: ahash::RandomState,
    /// Transactions whose request is being processed.
    trying: PartedTable<ServerTxn>,
    next_serial: u64,
    completed: Completed,
    /// Where a final answer is written before it is held.
    scratch: Vec<u8>,
}

impl ServerTransactions {
    pub fn new(timers: SipTimers, epoch: Instant, hasher: ahash::RandomState) -> Self {
        ServerTransactions { hasher, trying: PartedTable::new(), next_serial: 0, completed: Completed::new(64 * timers.t1, epoch), scratch: Vec::new() }
    }

    /// Transactions in progress and completed ones held for Timer J.
    pub fn len(&self) -> usize {
        self.trying.len() + self.completed.len()
    }
    /// For a quiet shard: the Timer J log's spare room goes back.
    pub fn give_back_room(&mut self) {
        self.completed.give_back_room();
    }
    /// Entries Timer J has still to end (for leak checks).
    pub fn timers_pending(&self) -> usize {
        self.completed.pending()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `key` has a transaction (a retransmission is answered from
    /// it even when the table is at its limit).
    pub fn knows(&self, key: &ServerKey) -> bool {
        let hash = self.hasher.hash_one(&key.0);
        self.trying.find(hash, |t| t.key == *key).is_some() || self.completed.find(hash, &key.0).is_some()
    }

    /// Matches a request to its transaction, creating one when it is new.
    pub fn on_request(&mut self, key: ServerKey) -> ServerLookup {
        let hash = self.hasher.hash_one(&key.0);
        if self.trying.find(hash, |t| t.key == key).is_some() {
            return ServerLookup::Absorbed;
        }
        if let Some(answer) = self.completed.find(hash, &key.0) {
            return ServerLookup::Replay(StoredAnswer::from_bytes(answer));
        }
        let at = TxnRef { hash, serial: self.next_serial };
        self.next_serial += 1;
        self.trying.insert_unique(hash, ServerTxn { key, at }, |t| t.at.hash);
        ServerLookup::New(at)
    }

    /// The final response was sent for `txn` over UDP: the transaction is
    /// Completed, and holds the answer `write` puts in its buffer (see
    /// [`StoredAnswer::write`]) for 64*T1 (Timer J) to answer retransmissions.
    pub fn complete(&mut self, txn: TxnRef, now: Instant, write: impl FnOnce(&mut Vec<u8>)) {
        let Some(t) = self.take(txn) else { return };
        self.scratch.clear();
        write(&mut self.scratch);
        self.completed.insert(now, txn.hash, &t.key.0, &self.scratch);
    }

    /// Forgets a transaction in progress: its final response went over a
    /// reliable transport (which retransmits nothing), or it gets none (an
    /// ACK, a request that is dropped). A stale handle is ignored.
    pub fn forget(&mut self, txn: TxnRef) {
        self.take(txn);
    }

    fn take(&mut self, txn: TxnRef) -> Option<ServerTxn> {
        self.trying.remove(txn.hash, |t| t.at == txn, |t| t.at.hash)
    }

    /// Forgets the transaction of `key`, whatever its state (its request's
    /// processing failed).
    pub fn forget_key(&mut self, key: &ServerKey) {
        let hash = self.hasher.hash_one(&key.0);
        if self.trying.remove(hash, |t| t.key == *key, |t| t.at.hash).is_none() {
            self.completed.remove(hash, &key.0);
        }
    }

    /// Ends transactions whose Timer J fired.
    pub fn on_time(&mut self, now: Instant) {
        self.completed.expire(now);
    }
}

// ---------------------------------------------------------------- client

/// How a client transaction ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientOutcome<C> {
    /// A final response arrived (the caller has the message in hand).
    Final { ctx: C, status: u16 },
    /// Timer F fired with no final response.
    Timeout { ctx: C },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientState {
    Trying,
    Proceeding,
}

/// Over UDP one entry at a time carries both Timer E and Timer F: each
/// firing resends and sets the next at the sooner of the next E and F.
/// With a separate F entry, every NOTIFY left one in the wheel for 32 s,
/// long after its transaction ended (Timer K is 5 s): a storm's worth of
/// them (`bench/examples/storm_memory.rs`). Over TCP F alone is set.
/// Timer K needs no entry: completed transactions wait in a log.
#[derive(Clone, Copy, Debug)]
enum ClientTimer {
    E(u64),
    F(u64),
}

struct ClientTxn<C> {
    /// The request, kept only where Timer E may resend it (UDP): its own
    /// bytes and, for a NOTIFY, a reference to the shared document. None
    /// over a reliable transport.
    retransmit: Option<Transmit>,
    method: &'static [u8],
    state: ClientState,
    interval: Duration,
    /// When Timer F fires.
    deadline: Instant,
    ctx: C,
}

/// Requests this shard sends (NOTIFY, SUBSCRIBE), keyed by the random
/// token in the branch we minted (`ids::push_branch`); `C` is the
/// caller's context, returned with the outcome.
pub struct ClientTransactions<C> {
    shard: u16,
    timers: SipTimers,
    entropy: Entropy,
    /// Live transactions. In parts: a NOTIFY storm grows it a part at a time.
    map: PartedMap<u64, ClientTxn<C>>,
    /// Transactions completed over UDP, held for Timer K (T4) only to
    /// absorb retransmitted finals, so only their token is kept: about 50
    /// bytes each in the same log as Timer J's (`core::completed`), where
    /// the whole transaction in `map` took about 450 with its wheel entry.
    /// A NOTIFY storm at 176,000/s holds 5 s of them, 880,000.
    completed: Completed,
    wheel: TimerWheel<ClientTimer>,
    fired: Vec<ClientTimer>,
}

impl<C> ClientTransactions<C> {
    pub fn new(shard: u16, timers: SipTimers, epoch: Instant, mut entropy: Entropy) -> Self {
        let map = PartedMap::new(entropy.hasher());
        let completed = Completed::new(timers.t4, epoch);
        ClientTransactions { shard, timers, entropy, map, completed, wheel: TimerWheel::new(epoch, TICK, SLOTS), fired: Vec::new() }
    }

    /// Live transactions and completed ones held for Timer K.
    pub fn len(&self) -> usize {
        self.map.len() + self.completed.len()
    }
    /// For a quiet shard: the Timer K log's and the wheel's spare room
    /// goes back.
    pub fn give_back_room(&mut self) {
        self.completed.give_back_room();
        self.wheel.give_back_room();
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Timer entries and Timer K records still pending (fired lazily; for
    /// leak checks).
    pub fn timers_pending(&self) -> usize {
        self.wheel.len() + self.completed.pending()
    }

    /// Bytes of requests kept for retransmission, each transaction's own
    /// (a shared document is counted where it is owned).
    pub fn bytes_held(&self) -> usize {
        self.map.values().filter_map(|t| t.retransmit.as_ref()).map(|r| r.bytes.len()).sum()
    }

    /// Writes a fresh branch (this shard's id and 64 random bits) for a
    /// request about to be built, and returns its token for
    /// [`Self::start`]. A token still in use is drawn again.
    pub fn new_branch(&mut self, out: &mut Vec<u8>) -> u64 {
        let token = loop {
            let t = self.entropy.u64();
            if !self.map.contains_key(&t) && !self.in_timer_k(t) {
                break t;
            }
        };
        ids::push_branch(out, self.shard, token);
        token
    }

    /// Starts the transaction for a request built with branch `seq` and
    /// returns it for the caller to send once now. Timers E (UDP only: a
    /// copy of the request's own bytes is kept for it) and F start.
    pub fn start(&mut self, seq: u64, request: Transmit, method: &'static [u8], ctx: C, now: Instant) -> Transmit {
        let retransmit = (!request.to.transport.is_reliable()).then(|| request.clone());
        let deadline = now + 64 * self.timers.t1;
        if retransmit.is_some() {
            self.wheel.insert((now + self.timers.t1).min(deadline), ClientTimer::E(seq));
        } else {
            self.wheel.insert(deadline, ClientTimer::F(seq));
        }
        let t = ClientTxn { retransmit, method, state: ClientState::Trying, interval: self.timers.t1, deadline, ctx };
        self.map.insert(seq, t);
        request
    }

    /// Matches a response (RFC 3261 17.1.3: our branch and the CSeq
    /// method). Provisional responses move to Proceeding; the first final
    /// one ends the transaction for the caller. Retransmitted finals and
    /// strays give `None`.
    pub fn on_response(&mut self, resp: &Message<'_>, now: Instant) -> Option<ClientOutcome<C>> {
        let key = ResponseKey { status: resp.status()?, branch: resp.via().branch()?, method: resp.cseq().method };
        self.on_response_key(&key, now)
    }

    /// [`Self::on_response`] for a response read only as far as its key
    /// (`sip::response_key`).
    pub fn on_response_key(&mut self, key: &ResponseKey<'_>, now: Instant) -> Option<ClientOutcome<C>> {
        let seq = self.own_seq(key.branch)?;
        let status = key.status;
        let t = self.map.get_mut(&seq)?;
        if *t.method != *key.method {
            return None;
        }
        if status < 200 {
            t.state = ClientState::Proceeding;
            return None;
        }
        // Nothing is resent once a final response came: the transaction
        // (the request's bytes with it) goes now. Over UDP its token waits
        // out Timer K in the log, where a retransmitted final finds no
        // live transaction and is absorbed as the RFC's Completed state
        // would (17.1.2.2).
        let t = self.map.remove(&seq)?;
        if t.retransmit.is_some() {
            // Over UDP. The token is random, so it is its own hash.
            self.completed.insert(now, seq, &seq.to_le_bytes(), b"");
        }
        Some(ClientOutcome::Final { ctx: t.ctx, status })
    }

    /// Whether a response with `branch` is a retransmitted final of a
    /// transaction held for Timer K (to be absorbed, not reported stray).
    pub fn absorbs(&self, branch: &[u8]) -> bool {
        self.own_seq(branch).is_some_and(|seq| self.in_timer_k(seq))
    }

    /// Whether the transaction with token `seq` completed and waits out
    /// Timer K.
    fn in_timer_k(&self, seq: u64) -> bool {
        self.completed.find(seq, &seq.to_le_bytes()).is_some()
    }

    /// The context of the live transaction a response with `branch`
    /// belongs to, if any: what its owner will need from the response.
    pub fn context(&self, branch: &[u8]) -> Option<&C> {
        self.map.get(&self.own_seq(branch)?).map(|t| &t.ctx)
    }

    /// The sequence number in a branch this shard minted.
    fn own_seq(&self, branch: &[u8]) -> Option<u64> {
        let (shard, seq) = ids::parse_branch(branch)?;
        (shard == self.shard).then_some(seq)
    }

    /// Runs Timers E, F and K: retransmissions go to `send`, timeouts are
    /// returned in `outcomes`.
    pub fn on_time(&mut self, now: Instant, send: &mut Vec<Transmit>, outcomes: &mut Vec<ClientOutcome<C>>) {
        self.wheel.advance(now, &mut self.fired);
        for timer in std::mem::take(&mut self.fired) {
            match timer {
                ClientTimer::E(seq) => {
                    let Some(t) = self.map.get_mut(&seq) else { continue };
                    let next = match t.state {
                        ClientState::Trying => (t.interval * 2).min(self.timers.t2),
                        ClientState::Proceeding => self.timers.t2,
                    };
                    if now >= t.deadline {
                        self.time_out(seq, outcomes);
                        continue;
                    }
                    let Some(request) = &t.retransmit else { continue };
                    send.push(request.clone());
                    t.interval = next;
                    self.wheel.insert((now + next).min(t.deadline), ClientTimer::E(seq));
                }
                ClientTimer::F(seq) => self.time_out(seq, outcomes),
            }
        }
        self.completed.expire(now);
    }

    /// Timer F: the transaction ends without a final response.
    fn time_out(&mut self, seq: u64, outcomes: &mut Vec<ClientOutcome<C>>) {
        if let Some(t) = self.map.remove(&seq) {
            outcomes.push(ClientOutcome::Timeout { ctx: t.ctx });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::peer::Peer;
    use crate::sip::Limits;
    use std::net::SocketAddr;
    use std::sync::Arc;

    fn peer_udp() -> Peer {
        Peer::udp("127.0.0.1:5070".parse::<SocketAddr>().unwrap())
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:alice@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n\
From: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n\
Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    /// Many transactions spread over the parts: each is found again, the
    /// count follows inserts and removals, and Timer J empties them all.
    #[test]
    fn server_transactions_spread_over_parts_and_all_expire() {
        let t0 = Instant::now();
        let mut st = ServerTransactions::new(SipTimers::default(), t0, Default::default());
        let text = String::from_utf8(OPTIONS.to_vec()).unwrap();
        let key = |i: usize| ServerKey::of(&Message::parse(text.replace("z9hG4bK-1", &format!("z9hG4bK-{i}")).as_bytes(), &Limits::default()).unwrap());
        let keys: Vec<ServerKey> = (0..5000).map(key).collect();
        let txns: Vec<TxnRef> = (0..5000)
            .map(|i| match st.on_request(key(i)) {
                ServerLookup::New(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(st.len(), 5000);
        assert!(st.trying.parts_in_use() > crate::core::parted::PARTS / 2, "spread over the parts");
        for k in &keys {
            assert!(st.knows(k));
        }
        st.forget_key(&keys[0]);
        st.forget(txns[1]);
        assert_eq!(st.len(), 4998);
        assert!(!st.knows(&keys[0]) && !st.knows(&keys[1]) && st.knows(&keys[2]));
        for t in &txns[2..] {
            st.complete(*t, t0, |b| StoredAnswer::write(b, 200, "OK", b"t", &[]));
        }
        st.on_time(t0 + 64 * SipTimers::default().t1 + TICK);
        assert!(st.is_empty() && st.timers_pending() == 0);
    }

    #[test]
    fn server_absorbs_then_replays_until_timer_j() {
        let t0 = Instant::now();
        let timers = SipTimers::default();
        let mut st = ServerTransactions::new(timers, t0, Default::default());
        let msg = Message::parse(OPTIONS, &Limits::default()).unwrap();
        let key = || ServerKey::of(&msg);
        let ServerLookup::New(txn) = st.on_request(key()) else { panic!("a new transaction") };
        assert_eq!(st.on_request(key()), ServerLookup::Absorbed, "no 100 Trying: RFC 4320");
        let resp = StoredAnswer::new(200, "OK", b"t1", &[]);
        st.complete(txn, t0, |b| StoredAnswer::write(b, 200, "OK", b"t1", &[]));
        assert_eq!(st.len(), 1, "completed, held for Timer J");
        assert_eq!(st.on_request(key()), ServerLookup::Replay(resp.clone()));
        st.on_time(t0 + 64 * timers.t1 - Duration::from_millis(10));
        assert_eq!(st.on_request(key()), ServerLookup::Replay(resp));
        st.on_time(t0 + 64 * timers.t1 + TICK);
        assert!(st.is_empty(), "Timer J ended the transaction");
        let ServerLookup::New(again) = st.on_request(key()) else { panic!("a new transaction after Timer J") };
        assert_ne!(again, txn, "a new transaction gets a new handle");
        // A stale handle (an old Timer J) leaves the new transaction alone.
        st.forget(txn);
        assert_eq!(st.len(), 1);
        st.forget(again);
        assert!(st.is_empty());
    }

    #[test]
    fn server_over_tcp_ends_at_the_final_response() {
        let t0 = Instant::now();
        let mut st = ServerTransactions::new(SipTimers::default(), t0, Default::default());
        let msg = Message::parse(OPTIONS, &Limits::default()).unwrap();
        let ServerLookup::New(txn) = st.on_request(ServerKey::of(&msg)) else { panic!("a new transaction") };
        // Over TCP the shard keeps no answer.
        st.forget(txn);
        assert!(st.is_empty());
    }

    #[test]
    fn server_keys_differ_by_branch_and_method() {
        let a = Message::parse(OPTIONS, &Limits::default()).unwrap();
        let other_branch = String::from_utf8_lossy(OPTIONS).replace("z9hG4bK-1", "z9hG4bK-2");
        let b = Message::parse(other_branch.as_bytes(), &Limits::default()).unwrap();
        assert_ne!(ServerKey::of(&a), ServerKey::of(&b));
        let rfc2543 = String::from_utf8_lossy(OPTIONS).replace("branch=z9hG4bK-1", "branch=1");
        let c = Message::parse(rfc2543.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(ServerKey::of(&c), ServerKey::of(&Message::parse(rfc2543.as_bytes(), &Limits::default()).unwrap()));
        assert_ne!(ServerKey::of(&a), ServerKey::of(&c));
    }

    fn response_for(branch: &[u8], status: u16, method: &str) -> Vec<u8> {
        format!(
            "SIP/2.0 {status} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={}\r\nFrom: <sip:a@x>;tag=1\r\n\
To: <sip:b@x>;tag=2\r\nCall-ID: n1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n",
            String::from_utf8_lossy(branch)
        )
        .into_bytes()
    }

    /// Times at which Timer E retransmits, from the start, over UDP.
    fn retransmit_times(ct: &mut ClientTransactions<u32>, t0: Instant, until: Duration) -> Vec<u64> {
        let mut sends = vec![];
        let mut outcomes = vec![];
        let mut at = vec![];
        let mut ms = 0;
        while ms <= until.as_millis() as u64 {
            ct.on_time(t0 + Duration::from_millis(ms), &mut sends, &mut outcomes);
            for _ in sends.drain(..) {
                at.push(ms);
            }
            ms += 5;
        }
        at
    }

    #[test]
    fn client_timer_e_doubles_to_t2_then_f_times_out() {
        let t0 = Instant::now();
        let timers = SipTimers::default();
        let mut ct = ClientTransactions::<u32>::new(2, timers, t0, Entropy::for_shard(9, 0));
        let mut branch = vec![];
        let seq = ct.new_branch(&mut branch);
        ct.start(seq, Transmit::new(peer_udp(), b"NOTIFY".to_vec()), b"NOTIFY", 42, t0);
        let at = retransmit_times(&mut ct, t0, Duration::from_millis(31_000));
        // 500, 1500, 3500, 7500, then every 4 s (T2) until Timer F at 32 s.
        assert_eq!(&at[..5], &[500, 1500, 3500, 7500, 11500]);
        assert!(at.windows(2).skip(3).all(|w| w[1] - w[0] == 4000), "{at:?}");
        let mut sends = vec![];
        let mut outcomes = vec![];
        ct.on_time(t0 + 64 * timers.t1 + TICK, &mut sends, &mut outcomes);
        assert_eq!(outcomes, vec![ClientOutcome::Timeout { ctx: 42 }]);
        assert!(ct.is_empty());
    }

    /// A request whose document is shared (a NOTIFY's body) is resent
    /// whole, pointing at the same document, and only its own bytes are
    /// copied for Timer E.
    #[test]
    fn a_retransmission_carries_the_shared_document() {
        let t0 = Instant::now();
        let mut ct = ClientTransactions::<u32>::new(0, SipTimers::default(), t0, Entropy::for_shard(9, 0));
        let mut branch = vec![];
        let seq = ct.new_branch(&mut branch);
        let doc: Arc<[u8]> = Arc::from(&b"<presence/>"[..]);
        let notify = Transmit { to: peer_udp(), bytes: b"NOTIFY head\r\n\r\n".to_vec(), shared: Some(doc.clone()) };
        let sent = ct.start(seq, notify.clone(), b"NOTIFY", 1, t0);
        assert_eq!(sent, notify);
        assert_eq!(ct.bytes_held(), notify.bytes.len(), "the document is not copied");
        let mut sends = vec![];
        ct.on_time(t0 + Duration::from_millis(505), &mut sends, &mut vec![]);
        assert_eq!(sends.len(), 1, "Timer E");
        assert_eq!(sends[0].wire(), notify.wire());
        assert!(Arc::ptr_eq(sends[0].shared.as_ref().unwrap(), &doc));
    }

    #[test]
    fn client_over_tcp_never_retransmits() {
        let t0 = Instant::now();
        let mut ct = ClientTransactions::<u32>::new(0, SipTimers::default(), t0, Entropy::for_shard(9, 0));
        let mut branch = vec![];
        let seq = ct.new_branch(&mut branch);
        let to = Peer::tcp("127.0.0.1:5070".parse().unwrap(), super::super::peer::ConnId::new(0, 9));
        ct.start(seq, Transmit::new(to, b"NOTIFY".to_vec()), b"NOTIFY", 7, t0);
        assert!(retransmit_times(&mut ct, t0, Duration::from_secs(31)).is_empty());
        let mut outcomes = vec![];
        ct.on_time(t0 + Duration::from_secs(33), &mut vec![], &mut outcomes);
        assert_eq!(outcomes, vec![ClientOutcome::Timeout { ctx: 7 }]);
    }

    #[test]
    fn client_final_response_reports_once_and_stops_retransmitting() {
        let t0 = Instant::now();
        let timers = SipTimers::default();
        let mut ct = ClientTransactions::<&str>::new(1, timers, t0, Entropy::for_shard(9, 0));
        let mut branch = vec![];
        let seq = ct.new_branch(&mut branch);
        ct.start(seq, Transmit::new(peer_udp(), b"NOTIFY".to_vec()), b"NOTIFY", "w1", t0);
        let limits = Limits::default();
        // A response with the wrong method does not match (17.1.3).
        let wrong = response_for(&branch, 200, "SUBSCRIBE");
        assert_eq!(ct.on_response(&Message::parse(&wrong, &limits).unwrap(), t0), None);
        let trying = response_for(&branch, 100, "NOTIFY");
        assert_eq!(ct.on_response(&Message::parse(&trying, &limits).unwrap(), t0), None);
        let gone = response_for(&branch, 481, "NOTIFY");
        let gone = Message::parse(&gone, &limits).unwrap();
        assert_eq!(ct.bytes_held(), 6, "the NOTIFY, kept for Timer E");
        assert_eq!(ct.on_response(&gone, t0), Some(ClientOutcome::Final { ctx: "w1", status: 481 }));
        assert_eq!(ct.bytes_held(), 0, "completed: nothing left to resend, so nothing kept");
        assert_eq!(ct.len(), 1, "Timer K still holds the transaction");
        assert_eq!(ct.on_response(&gone, t0), None, "a retransmitted final is absorbed");
        assert!(ct.absorbs(&branch), "Timer K holds its token");
        assert_eq!(ct.timers_pending(), 2, "the Timer E entry, fired lazily, and the Timer K record");
        let mut sends = vec![];
        let mut outcomes = vec![];
        ct.on_time(t0 + Duration::from_secs(4), &mut sends, &mut outcomes);
        assert!(sends.is_empty() && outcomes.is_empty());
        assert!(ct.absorbs(&branch));
        ct.on_time(t0 + timers.t4 + Duration::from_millis(10), &mut sends, &mut outcomes);
        assert!(ct.is_empty(), "Timer K ended it");
        assert!(!ct.absorbs(&branch));
        assert_eq!(ct.timers_pending(), 0);
        // A branch minted by another shard is not ours.
        let mut other = vec![];
        ids::push_branch(&mut other, 3, seq);
        let stray = response_for(&other, 200, "NOTIFY");
        assert_eq!(ct.on_response(&Message::parse(&stray, &limits).unwrap(), t0), None);
    }
}
