//! End-to-end NOTIFY fan-out of one presentity to many watchers through a
//! running `presenced`, over real UDP on loopback.
//!
//! W watchers subscribe (from S client sockets, so the kernel spreads them
//! over the server's shards); then one PUBLISH changes the presentity and
//! the run times how long until every watcher has its NOTIFY (each is
//! answered 200, as a real watcher would). Reported per shard count:
//! NOTIFYs/s delivered, and the server's CPU time per NOTIFY (from
//! /proc/PID/stat), which is the figure that carries over between
//! machines; the client shares the 2 cores and is usually the limit.
//!
//! cargo build --release -p presence-engine --bin presenced
//! cargo run --release -p bench --example fanout_e2e -- [watchers] [shards,...] [publishes]

use bench::presence::ok_to;
use presence_engine::sip::{Limits, Message};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SOCKETS: usize = 64;
const WINDOW: usize = 2000;
const AOR: &str = "sip:popular@example.com";

fn presenced() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|p| p.parent()).unwrap();
    let bin = dir.join("presenced");
    if !bin.exists() {
        eprintln!("{} not found: cargo build --release -p presence-engine --bin presenced", bin.display());
        std::process::exit(2);
    }
    bin
}

fn start(shards: usize) -> (Child, SocketAddr) {
    let mut child = Command::new(presenced())
        .args(["--listen", "127.0.0.1:0", "--shards", &shards.to_string(), "--notify-min-interval-ms", "0", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start presenced");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.split_whitespace().find_map(|w| w.parse().ok()).expect("address");
    (child, addr)
}

/// utime + stime of a process, from /proc.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

struct Clients {
    socks: Vec<UdpSocket>,
    server: SocketAddr,
    buf: Vec<u8>,
    resp: Vec<u8>,
    /// Per watcher: the highest NOTIFY CSeq seen, so retransmissions are
    /// answered but not counted twice.
    cseq: Vec<u32>,
}

impl Clients {
    fn new(server: SocketAddr, watchers: usize) -> Clients {
        let socks = (0..SOCKETS)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
                let _ = s.set_recv_buffer_size(8 << 20);
                s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
                s.set_nonblocking(true).unwrap();
                UdpSocket::from(s)
            })
            .collect();
        Clients { socks, server, buf: vec![0; 65536], resp: Vec::with_capacity(512), cseq: vec![0; watchers] }
    }

    /// Receives whatever is queued; answers NOTIFYs. Returns (200s to
    /// SUBSCRIBE seen, new NOTIFYs: retransmissions are answered, not
    /// counted).
    fn pump(&mut self, wait_ms: i32) -> (usize, usize) {
        let (mut oks, mut notifies) = (0, 0);
        let mut fds: Vec<libc::pollfd> = self.socks.iter().map(|s| libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as u64, wait_ms) };
        for (i, s) in self.socks.iter().enumerate() {
            if fds[i].revents == 0 {
                continue;
            }
            while let Ok((n, _)) = s.recv_from(&mut self.buf) {
                let m = &self.buf[..n];
                if m.starts_with(b"NOTIFY") {
                    self.resp.clear();
                    ok_to(m, &mut self.resp);
                    let _ = s.send_to(&self.resp, self.server);
                    if let Ok(msg) = Message::parse(m, &Limits::default()) {
                        let w: usize = std::str::from_utf8(&msg.call_id()[3..]).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
                        let seq = msg.cseq().seq;
                        if let Some(last) = self.cseq.get_mut(w)
                            && seq > *last
                        {
                            *last = seq;
                            notifies += 1;
                        }
                    }
                } else if m.starts_with(b"SIP/2.0 200") {
                    oks += 1;
                }
            }
        }
        (oks, notifies)
    }
}

fn subscribe(i: usize, from: SocketAddr) -> Vec<u8> {
    format!(
        "SUBSCRIBE {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP {from};rport;branch=z9hG4bKe{i}\r\nMax-Forwards: 70\r\n\
From: <sip:w{i}@example.net>;tag=f{i}\r\nTo: <{AOR}>\r\nCall-ID: e2e{i}\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:w{i}@{from}>\r\n\
Event: presence\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn run(watchers: usize, shards: usize, publishes: usize) {
    let (mut child, server) = start(shards);
    let mut c = Clients::new(server, watchers);
    // Subscribe everyone, a window at a time.
    let t = Instant::now();
    let (mut sent, mut oks, mut first) = (0, 0, 0);
    while first < watchers {
        while sent < watchers && sent - first < WINDOW {
            let s = &c.socks[sent % SOCKETS];
            let _ = s.send_to(&subscribe(sent, s.local_addr().unwrap()), server);
            sent += 1;
        }
        let (o, n) = c.pump(100);
        oks += o;
        first += n;
        if t.elapsed() > Duration::from_secs(120) {
            eprintln!("subscribing stalled: {oks} 200s, {first} NOTIFYs of {watchers}");
            break;
        }
    }
    let sub_time = t.elapsed();
    println!(
        "shards={shards}: {watchers} watchers subscribed in {:.2} s ({:.0} SUBSCRIBE+NOTIFY/s)",
        sub_time.as_secs_f64(),
        watchers as f64 / sub_time.as_secs_f64()
    );
    for p in 0..publishes {
        let doc = format!(
            "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{AOR}\"><tuple id=\"t\"><status><basic>open</basic></status><note>run {p}</note></tuple></presence>"
        );
        let publ = format!(
            "PUBLISH {AOR} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKpub{p}\r\nMax-Forwards: 70\r\nFrom: <{AOR}>;tag=p\r\nTo: <{AOR}>\r\n\
Call-ID: pub{p}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
            doc.len()
        );
        let cpu0 = cpu_of(child.id());
        let t0 = Instant::now();
        c.socks[0].send_to(publ.as_bytes(), server).unwrap();
        let mut got = 0;
        let mut resent = Instant::now();
        while got < watchers && t0.elapsed() < Duration::from_secs(120) {
            got += c.pump(50).1;
            // The server's socket may drop the PUBLISH under the flood of
            // 200s: retransmit it (Timer E) until NOTIFYs flow.
            if got == 0 && resent.elapsed() > Duration::from_millis(500) {
                c.socks[0].send_to(publ.as_bytes(), server).unwrap();
                resent = Instant::now();
            }
        }
        let dt = t0.elapsed();
        let cpu = cpu_of(child.id()) - cpu0;
        println!(
            "shards={shards} publish {p}: {got}/{watchers} NOTIFYs in {:.3} s = {:.0} NOTIFYs/s; server CPU {:.2} s = {:.1} µs per NOTIFY",
            dt.as_secs_f64(),
            got as f64 / dt.as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / got.max(1) as f64
        );
        // Let retransmissions of anything lost settle before the next run.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_millis(2000) {
            c.pump(50);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let mut args = std::env::args().skip(1);
    let watchers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let shards: Vec<usize> = args.next().map(|a| a.split(',').filter_map(|s| s.parse().ok()).collect()).unwrap_or(vec![1, 2]);
    let publishes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    for s in shards {
        run(watchers, s, publishes);
    }
}
