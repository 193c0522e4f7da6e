//! A worker's flows to the target: many UDP sockets (each its own source
//! port, so a SO_REUSEPORT server spreads them over its shards) or many TCP
//! connections (Content-Length framed, writes buffered when the kernel
//! pushes back). Received messages are copied into one scratch buffer so
//! the worker can answer while it walks them.

use presence_engine::sip::{Frame, Limits, StreamFramer};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    Udp,
    Tcp,
}

impl TransportKind {
    pub fn parse(s: &str) -> Result<TransportKind, String> {
        match s {
            "udp" => Ok(TransportKind::Udp),
            "tcp" => Ok(TransportKind::Tcp),
            other => Err(format!("transport {other:?}: use udp or tcp")),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        }
    }
    /// The Via transport token.
    pub fn via(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }
    /// The URI parameter a Contact needs so the server reaches it the same way.
    pub fn uri_param(self) -> &'static str {
        match self {
            TransportKind::Udp => "",
            TransportKind::Tcp => ";transport=tcp",
        }
    }
    /// Reliable transports get no Timer E retransmissions (RFC 3261 17.1.2.2).
    pub fn reliable(self) -> bool {
        self == TransportKind::Tcp
    }
}

enum Sock {
    Udp(UdpSocket),
    Tcp { stream: TcpStream, framer: Box<StreamFramer>, unsent: Vec<u8>, open: bool },
}

struct Flow {
    sock: Sock,
    local: SocketAddr,
}

/// One received message: which flow, from where, and its bytes in the
/// scratch buffer.
pub struct Incoming {
    pub flow: usize,
    pub from: SocketAddr,
    pub range: std::ops::Range<usize>,
}

pub struct Transport {
    kind: TransportKind,
    target: SocketAddr,
    flows: Vec<Flow>,
    fds: Vec<libc::pollfd>,
    buf: Vec<u8>,
    /// Connections the peer closed or broke.
    pub connection_errors: u64,
}

impl Transport {
    /// Opens `n` flows to `target`.
    pub fn open(kind: TransportKind, target: SocketAddr, n: usize) -> io::Result<Transport> {
        let local_ip = if target.ip().is_loopback() { target.ip() } else { wildcard(target).ip() };
        // What Via and Contact carry when bound to the wildcard address.
        let mut advertised_ip = None;
        let mut flows = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let flow = match kind {
                TransportKind::Udp => {
                    let s = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
                    s.set_nonblocking(true)?;
                    // A server answers in bursts (one sendmmsg per batch):
                    // a load generator must not lose answers in its own
                    // socket and count the resend 500 ms later as the
                    // server's latency (capped by net.core.rmem_max).
                    let _ = socket2::SockRef::from(&s).set_recv_buffer_size(4 << 20);
                    let mut local = s.local_addr()?;
                    if local.ip().is_unspecified() {
                        let ip = match advertised_ip {
                            Some(ip) => ip,
                            None => *advertised_ip.insert(local_ip_towards(target)?),
                        };
                        local.set_ip(ip);
                    }
                    Flow { local, sock: Sock::Udp(s) }
                }
                TransportKind::Tcp => {
                    let stream = TcpStream::connect(target)?;
                    stream.set_nodelay(true)?;
                    stream.set_nonblocking(true)?;
                    let local = stream.local_addr()?;
                    let framer = Box::new(StreamFramer::new(Limits::default()));
                    Flow { local, sock: Sock::Tcp { stream, framer, unsent: Vec::new(), open: true } }
                }
            };
            flows.push(flow);
        }
        let fds = flows.iter().map(|f| libc::pollfd { fd: f.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        Ok(Transport { kind, target, flows, fds, buf: vec![0u8; 65536], connection_errors: 0 })
    }

    pub fn kind(&self) -> TransportKind {
        self.kind
    }
    pub fn len(&self) -> usize {
        self.flows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
    pub fn local(&self, flow: usize) -> SocketAddr {
        self.flows[flow].local
    }

    /// Sends a request on `flow` to the target.
    pub fn send(&mut self, flow: usize, bytes: &[u8]) {
        self.send_to(flow, bytes, self.target);
    }

    /// Sends on `flow`; `dest` matters only for UDP (the answer to a
    /// server-initiated request goes back where it came from).
    pub fn send_to(&mut self, flow: usize, bytes: &[u8], dest: SocketAddr) {
        match &mut self.flows[flow].sock {
            Sock::Udp(s) => {
                // A full socket buffer loses the datagram; Timer E resends it.
                let _ = s.send_to(bytes, dest);
            }
            Sock::Tcp { stream, unsent, open, .. } => {
                if !*open {
                    return;
                }
                unsent.extend_from_slice(bytes);
                if flush(stream, unsent).is_err() {
                    *open = false;
                    self.connection_errors += 1;
                }
            }
        }
    }

    /// Reads whatever is ready on every flow into `data` (cleared first) and
    /// lists the messages in `out`. Returns whether anything arrived.
    pub fn receive(&mut self, data: &mut Vec<u8>, out: &mut Vec<Incoming>) -> bool {
        data.clear();
        out.clear();
        let target = self.target;
        for (i, flow) in self.flows.iter_mut().enumerate() {
            match &mut flow.sock {
                Sock::Udp(s) => {
                    // Bounded per call so one busy socket cannot starve the others.
                    for _ in 0..64 {
                        let Ok((n, from)) = s.recv_from(&mut self.buf) else {
                            break;
                        };
                        let at = data.len();
                        data.extend_from_slice(&self.buf[..n]);
                        out.push(Incoming { flow: i, from, range: at..at + n });
                    }
                }
                Sock::Tcp { stream, framer, unsent, open } => {
                    if !*open {
                        continue;
                    }
                    if flush(stream, unsent).is_err() {
                        *open = false;
                        self.connection_errors += 1;
                        continue;
                    }
                    for _ in 0..16 {
                        let space = framer.read_space(65536);
                        match stream.read(space) {
                            Ok(0) => {
                                framer.commit(0, 65536);
                                *open = false;
                                self.connection_errors += 1;
                                break;
                            }
                            Ok(n) => framer.commit(n, 65536),
                            Err(e) => {
                                framer.commit(0, 65536);
                                if e.kind() != io::ErrorKind::WouldBlock {
                                    *open = false;
                                    self.connection_errors += 1;
                                }
                                break;
                            }
                        }
                    }
                    loop {
                        match framer.next_frame() {
                            Ok(Some(Frame::Message(raw))) => {
                                let bytes = raw.as_bytes();
                                let at = data.len();
                                data.extend_from_slice(bytes);
                                out.push(Incoming { flow: i, from: target, range: at..at + bytes.len() });
                            }
                            Ok(Some(Frame::Ping)) => {
                                let _ = stream.write(b"\r\n");
                            }
                            Ok(Some(Frame::Pong)) => {}
                            Ok(None) => break,
                            Err(_) => {
                                // The stream cannot be resynchronised.
                                *open = false;
                                self.connection_errors += 1;
                                break;
                            }
                        }
                    }
                }
            }
        }
        !out.is_empty()
    }

    /// Waits up to `ms` for any flow to become readable (or writable, when
    /// a TCP flow has bytes waiting).
    pub fn wait(&mut self, ms: i32) {
        for (fd, flow) in self.fds.iter_mut().zip(&self.flows) {
            fd.events = libc::POLLIN;
            if let Sock::Tcp { unsent, .. } = &flow.sock
                && !unsent.is_empty()
            {
                fd.events |= libc::POLLOUT;
            }
        }
        unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
    }
}

impl Flow {
    fn raw_fd(&self) -> i32 {
        match &self.sock {
            Sock::Udp(s) => s.as_raw_fd(),
            Sock::Tcp { stream, .. } => stream.as_raw_fd(),
        }
    }
}

/// The local address the kernel would use to reach `target` (for Via and
/// Contact when bound to the wildcard address).
fn local_ip_towards(target: SocketAddr) -> io::Result<std::net::IpAddr> {
    let probe = UdpSocket::bind(wildcard(target))?;
    probe.connect(target)?;
    Ok(probe.local_addr()?.ip())
}

/// Port 0 on the wildcard address of `target`'s family.
fn wildcard(target: SocketAddr) -> SocketAddr {
    let ip: std::net::IpAddr = if target.is_ipv4() { std::net::Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    SocketAddr::new(ip, 0)
}

/// Writes what the kernel takes of `unsent` now; the rest waits for the
/// socket to be writable again (`Transport::wait` asks for POLLOUT).
fn flush(stream: &mut TcpStream, unsent: &mut Vec<u8>) -> io::Result<()> {
    while !unsent.is_empty() {
        match stream.write(unsent) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                unsent.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
