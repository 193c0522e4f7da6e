//! CPU per datagram of three ways a shard can serve UDP, measured in one
//! run against the same client, so the numbers compare on a noisy machine:
//!
//! - `plain`: a thread in a blocking recvmmsg/sendmmsg loop (the ceiling);
//! - `glommio-batch`: what presenced does: a glommio task drains the fd
//!   with recvmmsg(MSG_DONTWAIT) and answers with sendmmsg, awaiting
//!   readiness through glommio only when the socket is empty;
//! - `glommio-socket`: glommio's UdpSocket recv_from/send_to, one datagram
//!   per call.
//!
//! The server echoes each 600-byte datagram; the client keeps a window of
//! datagrams in flight. Reported: server-thread CPU ns per echoed datagram
//! (CLOCK_THREAD_CPUTIME_ID) and echoes per second.
//!
//! cargo run --release -p bench --example udp_io_cost -- [seconds per variant]

use presence_engine::reactor::udp::{RecvBatch, SendBatch};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SIZE: usize = 600;
const WINDOW: usize = 64;
const BATCH: usize = 64;

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn is_stop(b: &[u8]) -> bool {
    b.starts_with(b"STOP")
}

/// Returns (datagrams echoed, server-thread CPU).
fn plain(sock: socket2::Socket) -> (u64, Duration) {
    sock.set_nonblocking(false).unwrap();
    let fd = sock.as_raw_fd();
    let mut rx = RecvBatch::new(BATCH, 65535);
    let mut tx = SendBatch::default();
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    loop {
        // Blocking: wait for one, take what else is queued.
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        unsafe { libc::poll(&mut pfd, 1, -1) };
        let got = rx.recv(fd).unwrap();
        if echo(&rx, got, &mut tx, fd, &mut n) {
            return (n, thread_cpu() - cpu0);
        }
    }
}

/// Echoes the `got` datagrams of `rx` with one sendmmsg; true on STOP.
fn echo(rx: &RecvBatch, got: usize, tx: &mut SendBatch, fd: std::os::fd::RawFd, n: &mut u64) -> bool {
    for i in 0..got {
        let (b, from) = rx.get(i).unwrap();
        if is_stop(b) {
            return true;
        }
        tx.push(from, b.to_vec());
        *n += 1;
    }
    while !tx.is_empty() {
        tx.flush(fd, BATCH).unwrap();
    }
    false
}

fn glommio_batch(sock: socket2::Socket) -> (u64, Duration) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let fd = sock.as_raw_fd();
            let gsock = unsafe { glommio::net::UdpSocket::from_raw_fd(sock.into_raw_fd()) };
            let mut rx = RecvBatch::new(BATCH, 65535);
            let mut tx = SendBatch::default();
            let mut probe = [0u8; 1];
            let cpu0 = thread_cpu();
            let mut n = 0u64;
            loop {
                let got = rx.recv(fd).unwrap();
                if got == 0 {
                    let _ = gsock.peek_from(&mut probe).await;
                    continue;
                }
                if echo(&rx, got, &mut tx, fd, &mut n) {
                    return (n, thread_cpu() - cpu0);
                }
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

fn glommio_socket(sock: socket2::Socket) -> (u64, Duration) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 << 10)
        .spawn(move || async move {
            use std::os::fd::{FromRawFd, IntoRawFd};
            let gsock = unsafe { glommio::net::UdpSocket::from_raw_fd(sock.into_raw_fd()) };
            let mut buf = vec![0u8; 65536];
            let cpu0 = thread_cpu();
            let mut n = 0u64;
            loop {
                let (len, from) = gsock.recv_from(&mut buf).await.unwrap();
                if is_stop(&buf[..len]) {
                    return (n, thread_cpu() - cpu0);
                }
                gsock.send_to(&buf[..len], from).await.unwrap();
                n += 1;
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Keeps WINDOW datagrams in flight for `dur`; a lost one is replaced
/// after 50 ms of silence.
fn client(server: SocketAddr, dur: Duration) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let msg = vec![b'x'; SIZE];
    for _ in 0..WINDOW {
        s.send_to(&msg, server).unwrap();
    }
    let end = Instant::now() + dur;
    let mut buf = vec![0u8; 2048];
    while Instant::now() < end {
        match s.recv_from(&mut buf) {
            Ok(_) => {
                s.send_to(&msg, server).unwrap();
            }
            Err(_) => {
                for _ in 0..WINDOW {
                    s.send_to(&msg, server).unwrap();
                }
            }
        }
    }
    s.send_to(b"STOP", server).unwrap();
}

fn server_socket() -> socket2::Socket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_nonblocking(true).unwrap();
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
    s
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(3.0);
    let dur = Duration::from_secs_f64(secs);
    type Variant = fn(socket2::Socket) -> (u64, Duration);
    let variants: [(&str, Variant); 3] = [("plain", plain), ("glommio-batch", glommio_batch), ("glommio-socket", glommio_socket)];
    let mut base = None;
    println!("{:<16} {:>12} {:>14} {:>12} {:>10}", "variant", "echoes", "echoes/s", "CPU ns/dgram", "vs plain");
    for (name, f) in variants {
        let sock = server_socket();
        let addr = sock.local_addr().unwrap().as_socket().unwrap();
        let srv = std::thread::spawn(move || f(sock));
        let t0 = Instant::now();
        client(addr, dur);
        let (n, cpu) = srv.join().unwrap();
        let wall = t0.elapsed();
        let per = cpu.as_nanos() as f64 / n.max(1) as f64;
        let base_per = *base.get_or_insert(per);
        println!("{name:<16} {n:>12} {:>14.0} {per:>12.0} {:>9.2}x", n as f64 / wall.as_secs_f64(), per / base_per);
    }
}
