//! One worker thread's load loop: its own UDP sockets, its share of the
//! simulated users, its transactions (matched by Via branch, retransmitted
//! per RFC 3261 Timer E, given up at Timer F) and its statistics.

use crate::scenario::{self, Scenario};
use hdrhistogram::Histogram;
use presence_engine::sip::{HeaderName, Limits, Message};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Keep this many transactions outstanding (per worker).
    Closed { outstanding: usize },
    /// Start this many transactions per second (per worker).
    Open { rate: f64 },
}

#[derive(Clone, Copy, Debug)]
pub enum End {
    After(Duration),
    /// Start this many transactions (per worker).
    Count(u64),
}

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub target: SocketAddr,
    pub scenario: Scenario,
    pub users: std::ops::Range<usize>,
    pub domain: String,
    pub sockets: usize,
    pub load: Load,
    pub end: End,
    pub t1: Duration,
    /// Seconds over which an open-loop rate ramps up from zero.
    pub ramp: Duration,
}

/// Counters the progress line reads while workers run.
#[derive(Default)]
pub struct Shared {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub outstanding: AtomicU64,
    pub stop: AtomicBool,
    pub latency: Mutex<Option<Histogram<u64>>>,
}

/// What one worker measured.
pub struct WorkerResult {
    pub sent: u64,
    pub retransmissions: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub timeouts: u64,
    pub unmatched: u64,
    pub notifies: u64,
    pub latency: Histogram<u64>,
}

struct Txn {
    user: usize,
    sock: usize,
    bytes: Vec<u8>,
    first: Instant,
    last: Instant,
    interval: Duration,
}

const T2: Duration = Duration::from_secs(4);
const BRANCH_PREFIX: &[u8] = b"z9hG4bK-lg";

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn parse_branch(b: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(b.strip_prefix(BRANCH_PREFIX)?).ok()?, 16).ok()
}

pub fn run_worker(cfg: WorkerConfig, worker: usize, shared: Arc<Shared>) -> WorkerResult {
    let bind: SocketAddr = if cfg.target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let local_ip = if cfg.target.ip().is_loopback() { cfg.target.ip() } else { bind.ip() };
    let socks: Vec<UdpSocket> = (0..cfg.sockets.max(1))
        .map(|_| {
            let s = UdpSocket::bind(SocketAddr::new(local_ip, 0)).expect("bind a client socket");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let addrs: Vec<SocketAddr> = socks.iter().map(|s| s.local_addr().unwrap()).collect();
    let users = cfg.users.clone();
    let mut etags: HashMap<usize, String> = HashMap::new();
    let mut cseqs: HashMap<usize, u32> = HashMap::new();
    let mut txns: HashMap<u64, Txn> = HashMap::new();
    let mut res = WorkerResult {
        sent: 0,
        retransmissions: 0,
        statuses: BTreeMap::new(),
        timeouts: 0,
        unmatched: 0,
        notifies: 0,
        latency: new_histogram(),
    };
    let mut window_hist = new_histogram();
    let limits = Limits::default();
    let mut buf = vec![0u8; 65536];
    let mut resp = Vec::with_capacity(512);
    let start = Instant::now();
    let mut next_user = users.start;
    let mut branch: u64 = (worker as u64) << 48;
    let mut last_tick = start;
    let mut last_publish = start;
    let mut started: u64 = 0;
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut fds: Vec<libc::pollfd> = socks.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();

    loop {
        let now = Instant::now();
        let issuing = !shared.stop.load(Ordering::Relaxed)
            && match cfg.end {
                End::After(d) => now.duration_since(start) < d,
                End::Count(n) => started < n,
            };
        if !issuing && txns.is_empty() {
            break;
        }
        // Drain: after the end, outstanding transactions get until Timer F.
        if !issuing && now.duration_since(start) > end_deadline(&cfg) {
            break;
        }
        // 1. Start transactions.
        let mut budget = if !issuing {
            0
        } else {
            match cfg.load {
                Load::Closed { outstanding } => outstanding.saturating_sub(txns.len()),
                Load::Open { rate } => {
                    let t = now.duration_since(start).as_secs_f64();
                    let ramp = cfg.ramp.as_secs_f64();
                    // Area under a linear ramp to `rate`, then flat.
                    let due = if t < ramp { rate * t * t / (2.0 * ramp) } else { rate * (t - ramp / 2.0) };
                    (due as u64).saturating_sub(started).min(1024) as usize
                }
            }
        };
        if let End::Count(n) = cfg.end {
            budget = budget.min(n.saturating_sub(started) as usize);
        }
        for _ in 0..budget {
            let u = next_user;
            next_user = if next_user + 1 >= users.end { users.start } else { next_user + 1 };
            let sock = u % socks.len();
            let cseq = cseqs.entry(u).or_insert(0);
            *cseq += 1;
            branch += 1;
            let bytes = scenario::request(cfg.scenario, u, &cfg.domain, addrs[sock], branch, *cseq, etags.get(&u).map(String::as_str));
            let _ = socks[sock].send_to(&bytes, cfg.target);
            txns.insert(branch, Txn { user: u, sock, bytes, first: now, last: now, interval: cfg.t1 });
            started += 1;
            res.sent += 1;
        }
        // 2. Receive.
        let mut got_any = false;
        for (i, s) in socks.iter().enumerate() {
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                got_any = true;
                let Ok(msg) = Message::parse(&buf[..n], &limits) else {
                    res.unmatched += 1;
                    continue;
                };
                if msg.is_request() {
                    // A NOTIFY (or anything else) from the server: answer 200.
                    if msg.method_raw() == Some(b"NOTIFY") {
                        res.notifies += 1;
                    } else {
                        res.unmatched += 1;
                    }
                    resp.clear();
                    presence_engine::sip::response_to(&mut resp, msg.raw(), 200, "OK", None, None).finish(None, b"");
                    let _ = socks[i].send_to(&resp, from);
                    continue;
                }
                let status = msg.status().unwrap_or(0);
                let Some(b) = msg.via().branch().and_then(parse_branch).filter(|b| txns.contains_key(b)) else {
                    res.unmatched += 1;
                    continue;
                };
                if status < 200 {
                    // Provisional: keep waiting (Timer E moves to T2).
                    if let Some(t) = txns.get_mut(&b) {
                        t.interval = T2;
                    }
                    continue;
                }
                let Some(t) = txns.remove(&b) else { continue };
                let us = t.first.elapsed().as_micros() as u64;
                let _ = res.latency.record(us.max(1));
                let _ = window_hist.record(us.max(1));
                *res.statuses.entry(status).or_insert(0) += 1;
                if (200..300).contains(&status) {
                    ok += 1;
                    if cfg.scenario == scenario::Scenario::Publish {
                        if let Some(e) = msg.header(HeaderName::SipETag) {
                            etags.insert(t.user, String::from_utf8_lossy(e).into_owned());
                        }
                    }
                } else {
                    errors += 1;
                    if status == 412 {
                        etags.remove(&t.user);
                    }
                }
            }
        }
        // 3. Timers: retransmit (Timer E), give up (Timer F).
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_millis(5) {
            last_tick = now;
            let give_up = 64 * cfg.t1;
            let mut dead = Vec::new();
            for (b, t) in txns.iter_mut() {
                if now.duration_since(t.first) >= give_up {
                    dead.push(*b);
                } else if now.duration_since(t.last) >= t.interval {
                    let _ = socks[t.sock].send_to(&t.bytes, cfg.target);
                    t.last = now;
                    t.interval = (t.interval * 2).min(T2);
                    res.retransmissions += 1;
                }
            }
            for b in dead {
                if let Some(t) = txns.remove(&b) {
                    etags.remove(&t.user);
                }
                res.timeouts += 1;
                errors += 1;
            }
        }
        // 4. Progress, a few times a second.
        if now.duration_since(last_publish) >= Duration::from_millis(250) {
            last_publish = now;
            shared.sent.store(res.sent, Ordering::Relaxed);
            shared.ok.fetch_add(ok, Ordering::Relaxed);
            shared.errors.fetch_add(errors, Ordering::Relaxed);
            ok = 0;
            errors = 0;
            shared.outstanding.store(txns.len() as u64, Ordering::Relaxed);
            if let Ok(mut h) = shared.latency.lock() {
                match h.as_mut() {
                    Some(h) => {
                        let _ = h.add(&window_hist);
                    }
                    None => *h = Some(window_hist.clone()),
                }
            }
            window_hist.reset();
        }
        if !got_any && budget == 0 {
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, 1) };
        }
    }
    shared.sent.store(res.sent, Ordering::Relaxed);
    shared.ok.fetch_add(ok, Ordering::Relaxed);
    shared.errors.fetch_add(errors, Ordering::Relaxed);
    shared.outstanding.store(0, Ordering::Relaxed);
    res.timeouts += txns.len() as u64;
    res
}

/// How long after the start a worker may keep draining.
fn end_deadline(cfg: &WorkerConfig) -> Duration {
    let run = match cfg.end {
        End::After(d) => d,
        End::Count(_) => Duration::from_secs(3600 * 24),
    };
    run + 64 * cfg.t1
}
