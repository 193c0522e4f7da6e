//! The host's request/response ceiling: a trivial responder that parses
//! each request and answers 200 (no state, no presence logic) over
//! recvmmsg/sendmmsg, driven by the same load engine. A server's report
//! divided by this one says what fraction of the machine's packet rate it
//! reached.

use presence_engine::core::peer::{Peer, Transmit};
use presence_engine::reactor::udp::{RecvBatch, SendBatch};
use presence_engine::sip::{Limits, Message};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Starts the responder on `addr` (port 0: any); returns its address and a
/// stop flag.
pub fn start_responder(addr: SocketAddr, sched_slice_us: u32) -> std::io::Result<(SocketAddr, Arc<AtomicBool>)> {
    let sock = UdpSocket::bind(addr)?;
    sock.set_nonblocking(true)?;
    let local = sock.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::Builder::new().name("baseline-responder".into()).spawn(move || {
        if sched_slice_us > 0
            && let Err(e) = presence_engine::reactor::sched::request_slice(std::time::Duration::from_micros(sched_slice_us as u64))
        {
            eprintln!("loadgen: responder keeps the default scheduler slice: {e}");
        }
        let fd = sock.as_raw_fd();
        let mut rx = RecvBatch::new(64, 65535);
        let mut tx = SendBatch::default();
        let limits = Limits::default();
        while !flag.load(Ordering::Relaxed) {
            let n = rx.recv(fd).unwrap_or(0);
            if n == 0 {
                let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                unsafe { libc::poll(&mut pfd, 1, 50) };
                continue;
            }
            for i in 0..n {
                let Some((bytes, from)) = rx.get(i) else {
                    continue;
                };
                let Ok(m) = Message::parse(bytes, &limits) else {
                    continue;
                };
                if !m.is_request() {
                    continue;
                }
                let mut out = Vec::with_capacity(512);
                presence_engine::sip::response_to(&mut out, m.raw(), 200, "OK", Some(b"baseline"), Some(from)).finish(None, b"");
                tx.push(Transmit::new(Peer::udp(from), out));
            }
            while !tx.is_empty() {
                if tx.flush(fd, 64).map(|r| r.blocked).unwrap_or(false) {
                    std::thread::yield_now();
                }
            }
        }
    })?;
    Ok((local, stop))
}
