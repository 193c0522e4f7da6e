//! A `presenced` process on loopback for tests that speak SIP over real
//! sockets, with its JSON log collected so tests can observe what each
//! shard did.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod nats;
pub mod ua;
#[allow(unused_imports)]
pub use ua::*;

pub const WAIT: Duration = Duration::from_secs(3);

pub struct Presenced {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Presenced {
    /// Starts the server on a free loopback port with `shards` shards,
    /// request-level debug logging in JSON, and `extra` flags.
    pub fn start(shards: usize, extra: &[&str]) -> Presenced {
        let shards = shards.to_string();
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--shards",
            &shards,
            "--log-format",
            "json",
            "--log-level",
            "info,presenced::request=debug,presenced::presence=debug,tables=debug",
        ];
        // A debug build on a busy CI host can queue past any delay target:
        // no shedding here unless a test asks (overload control is tested
        // on the sans-IO shard with a fake clock, and measured in bench/).
        if !extra.contains(&"--overload-target-ms") {
            args.extend_from_slice(&["--overload-target-ms", "0"]);
        }
        args.extend_from_slice(extra);
        let mut child =
            Command::new(env!("CARGO_BIN_EXE_presenced")).args(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start presenced");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.split_whitespace().find_map(|w| w.parse::<SocketAddr>().ok()).unwrap_or_else(|| panic!("no address in {line:?}"));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    sink.lock().unwrap().push(v);
                } else {
                    eprintln!("presenced: {line}");
                }
            }
        });
        Presenced { child, addr, log }
    }

    /// Every log record so far, in order.
    pub fn records(&self) -> Vec<serde_json::Value> {
        self.log.lock().unwrap().clone()
    }

    /// Log records whose message is `msg`.
    pub fn logged(&self, msg: &str) -> Vec<serde_json::Value> {
        self.log.lock().unwrap().iter().filter(|v| v["message"] == msg).cloned().collect()
    }

    /// Waits (up to `wait`) until `n` records with message `msg` match
    /// `pred` (the log is read on its own thread, behind the sockets);
    /// panics with the records otherwise.
    pub fn wait_matching(&self, msg: &str, n: usize, wait: Duration, pred: impl Fn(&serde_json::Value) -> bool) {
        let end = Instant::now() + wait;
        while self.logged(msg).iter().filter(|r| pred(r)).count() < n {
            assert!(Instant::now() < end, "fewer than {n} matching {msg:?} records: {:?}", self.logged(msg));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until at least `n` records with message `msg` are logged.
    pub fn wait_logged(&self, msg: &str, n: usize) -> Vec<serde_json::Value> {
        let end = Instant::now() + WAIT;
        loop {
            let got = self.logged(msg);
            if got.len() >= n || Instant::now() > end {
                return got;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process id (to read /proc).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits; returns whether it exited cleanly in time.
    pub fn terminate(&mut self) -> bool {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Sends the server a signal (SIGHUP reloads its configuration).
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Presenced {
    fn drop(&mut self) {
        // A failing test shows what the server last said: a flake on a
        // busy CI host is otherwise a timeout with nothing to go on.
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            for record in log.iter().skip(log.len().saturating_sub(40)) {
                eprintln!("presenced log: {record}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh loopback address (127.0.1.N) per call in this process, so that
/// tests can each bind port 5060 (where UDP responses go for a Via without
/// port or rport) without meeting each other.
pub fn fresh_loopback() -> Ipv4Addr {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ipv4Addr::new(127, 0, 1 + (n / 250) as u8, (n % 250) as u8 + 1)
}

pub fn udp_socket(ip: Ipv4Addr, port: u16) -> UdpSocket {
    let s = UdpSocket::bind((ip, port)).expect("bind test socket");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// Receives one datagram, or `None` within `wait`.
pub fn recv(s: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 65536];
    match s.recv_from(&mut buf) {
        Ok((n, _)) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

/// Sends `req` over UDP from `s` and returns the first response.
pub fn udp_transaction(s: &UdpSocket, server: SocketAddr, req: &[u8]) -> Vec<u8> {
    s.send_to(req, server).unwrap();
    recv(s, WAIT).unwrap_or_else(|| panic!("no response to\n{}", String::from_utf8_lossy(req)))
}

/// Reads one whole SIP message (by Content-Length) from a TCP stream.
pub fn tcp_read_message(s: &mut TcpStream, wait: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
        if buf == b"\r\n" {
            buf.clear(); // a keep-alive pong
        }
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let cl =
        head.lines().find_map(|l| l.strip_prefix("content-length:").or_else(|| l.strip_prefix("l:"))).map(|v| v.trim().parse::<usize>().unwrap()).unwrap_or(0);
    let mut body = vec![0; cl];
    s.read_exact(&mut body).ok()?;
    buf.extend_from_slice(&body);
    Some(buf)
}

pub fn tcp_connect(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(server).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn tcp_transaction(s: &mut TcpStream, req: &[u8]) -> Vec<u8> {
    s.write_all(req).unwrap();
    tcp_read_message(s, WAIT).unwrap_or_else(|| panic!("no TCP response to\n{}", String::from_utf8_lossy(req)))
}

/// Status code of a response.
pub fn status(resp: &[u8]) -> u16 {
    std::str::from_utf8(&resp[8..11]).unwrap().parse().unwrap()
}

/// The value of the first header named `name` (case-insensitive, long form).
pub fn header(resp: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(resp);
    let head = text.split("\r\n\r\n").next().unwrap();
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// An OPTIONS request to `ruri` with a fresh Call-ID; `via` is the top Via
/// value (transport, sent-by and params).
pub fn options(ruri: &str, via: &str, call_id: &str) -> Vec<u8> {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/{via}\r\nMax-Forwards: 70\r\n\
From: <sip:tester@example.com>;tag=t1\r\nTo: <{ruri}>\r\nCall-ID: {call_id}\r\n\
CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A SIP client over one transport, for request/response exchanges.
pub enum Client {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream),
}

impl Client {
    /// A client of `srv`; over UDP it sends from `ip` (any port).
    pub fn new(srv: &Presenced, tcp: bool, ip: Ipv4Addr) -> Client {
        if tcp { Client::Tcp(tcp_connect(srv.addr)) } else { Client::Udp(udp_socket(ip, 0), srv.addr) }
    }

    /// A top Via value (after `SIP/2.0/`) for this client with `branch`.
    pub fn via(&self, branch: &str) -> String {
        match self {
            Client::Udp(s, _) => format!("UDP {};rport;branch=z9hG4bK{branch}", s.local_addr().unwrap()),
            Client::Tcp(t) => format!("TCP {};branch=z9hG4bK{branch}", t.local_addr().unwrap()),
        }
    }

    /// A Via with a branch never used before in this process.
    pub fn fresh_via(&self) -> String {
        self.via(&format!("x{}", unique()))
    }

    /// Sends a request and returns the response.
    pub fn send(&mut self, req: &[u8]) -> Vec<u8> {
        match self {
            Client::Udp(s, to) => udp_transaction(s, *to, req),
            Client::Tcp(t) => tcp_transaction(t, req),
        }
    }
}

/// A number never returned before in this process (branches, Call-IDs).
pub fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The RFC 4475 fixture folder.
pub fn rfc4475_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475")
}

/// file -> (class, expected handling), read from the fixture README table.
pub fn rfc4475_table() -> std::collections::BTreeMap<String, (String, String)> {
    std::fs::read_to_string(rfc4475_dir().join("README.md"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| file") && !l.starts_with("|---"))
        .map(|l| {
            let c: Vec<&str> = l.split('|').map(str::trim).collect();
            (c[1].to_string(), (c[3].to_string(), c[4].to_string()))
        })
        .collect()
}

/// Four tests running `$f(shards, tcp)` over UDP and TCP with one and two
/// shards.
#[macro_export]
macro_rules! transport_matrix {
    ($f:ident) => {
        #[test]
        fn udp_one_shard() {
            $f(1, false);
        }
        #[test]
        fn tcp_one_shard() {
            $f(1, true);
        }
        #[test]
        fn udp_two_shards() {
            $f(2, false);
        }
        #[test]
        fn tcp_two_shards() {
            $f(2, true);
        }
    };
}

/// A data directory of this test process's own: empty at first, and
/// removed when dropped, also when the test fails (declare it before the
/// server, which is then dropped first).
pub struct DataDir(std::path::PathBuf);

impl DataDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("presenced-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        DataDir(dir)
    }
}

impl std::ops::Deref for DataDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a config file `name` with `text` into this test process's own
/// temporary directory and returns its path as a string for `--config`.
pub fn config_file(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("presenced-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}
