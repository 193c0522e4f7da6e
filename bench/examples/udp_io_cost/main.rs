//! CPU per datagram of three ways a shard can serve UDP, measured in one
//! run against the same client, so the numbers compare on a noisy machine:
//!
//! - `plain`: a thread in a blocking recvmmsg/sendmmsg loop (the ceiling);
//! - `glommio-batch`: what presenced does: a glommio task drains the fd
//!   with recvmmsg(MSG_DONTWAIT) and answers with sendmmsg, awaiting
//!   readiness through glommio only when the socket is empty;
//! - `glommio-socket`: glommio's UdpSocket recv_from/send_to, one datagram
//!   per call;
//! - `uring`, `uring-defer`: io_uring with no executor: multishot RECVMSG
//!   into provided buffers, SENDMSGs batched into the enter that waits
//!   (`uring.rs`); `-defer` with SINGLE_ISSUER | DEFER_TASKRUN.
//!
//! The server thread runs on CPU 0 and the client on CPU 1 (where there are
//! two). The server echoes each 600-byte datagram; the client keeps a window of
//! datagrams in flight. Reported: server-thread CPU ns per echoed datagram
//! (CLOCK_THREAD_CPUTIME_ID), the same from the process's CPU less the
//! client thread's (which also counts kernel worker threads, such as
//! io_uring's io-wq, should any work be punted there), and echoes per second.
//!
//! cargo run --release -p bench --example udp_io_cost -- [seconds per variant, 3] [datagrams in flight, 64] [rounds, 1]

mod uring;

use presence_engine::core::peer::{Peer, Transmit};
use presence_engine::reactor::udp::{RecvBatch, SendBatch};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SIZE: usize = 600;
const BATCH: usize = 64;

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and an out-pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn uring(sock: socket2::Socket) -> (u64, Duration) {
    uring::serve(sock, false)
}

fn uring_defer(sock: socket2::Socket) -> (u64, Duration) {
    uring::serve(sock, true)
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
        tx.push(Transmit::new(Peer::udp(from), b.to_vec()));
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

/// Keeps `window` datagrams in flight for `dur`; a lost one is replaced
/// after 50 ms of silence.
fn client(server: SocketAddr, dur: Duration, window: usize) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let msg = vec![b'x'; SIZE];
    for _ in 0..window {
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
                for _ in 0..window {
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

/// Pins the calling thread (and threads it spawns later) to `cpu`, as the
/// benchmarks pin the server and the load to different cores; a no-op on
/// a one-core machine.
fn pin_to(cpu: usize) {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// One variant's run: (echoes, echoes/s, server-thread CPU ns per
/// datagram, process-less-client CPU ns per datagram).
fn measure(f: fn(socket2::Socket) -> (u64, Duration), dur: Duration, window: usize) -> (u64, f64, f64, f64) {
    let sock = server_socket();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let (proc0, client0) = (cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID), thread_cpu());
    let srv = std::thread::spawn(move || {
        pin_to(0);
        f(sock)
    });
    let t0 = Instant::now();
    client(addr, dur, window);
    let client_cpu = thread_cpu() - client0;
    let (n, cpu) = srv.join().unwrap();
    let others = cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID) - proc0 - client_cpu;
    let per = |d: Duration| d.as_nanos() as f64 / n.max(1) as f64;
    (n, n as f64 / t0.elapsed().as_secs_f64(), per(cpu), per(others))
}

fn main() {
    pin_to(1);
    let arg = |i: usize| std::env::args().nth(i).and_then(|a| a.parse::<f64>().ok());
    let dur = Duration::from_secs_f64(arg(1).unwrap_or(3.0));
    // More in flight means larger batches per wake-up, as at saturation.
    let window = arg(2).unwrap_or(64.0) as usize;
    // The variants run in turn, `rounds` times over, so that a slow spell
    // of the machine falls on all of them; each ratio is to plain's run in
    // the same round, and the summary gives their median.
    let rounds = arg(3).unwrap_or(1.0).max(1.0) as usize;
    type Variant = fn(socket2::Socket) -> (u64, Duration);
    let variants: [(&str, Variant); 5] =
        [("plain", plain), ("glommio-batch", glommio_batch), ("glommio-socket", glommio_socket), ("uring", uring), ("uring-defer", uring_defer)];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    println!("{:<16} {:>12} {:>12} {:>14} {:>10} {:>18}", "variant", "echoes", "echoes/s", "CPU ns/dgram", "vs plain", "process-client ns");
    for round in 0..rounds {
        let mut base = None;
        for (i, (name, f)) in variants.iter().enumerate() {
            let (n, rate, per, others) = measure(*f, dur, window);
            let base_per = *base.get_or_insert(per);
            ratios[i].push(per / base_per);
            println!("{name:<16} {n:>12} {rate:>12.0} {per:>14.0} {:>9.2}x {others:>18.0}", per / base_per);
        }
        if round + 1 < rounds {
            println!();
        }
    }
    if rounds > 1 {
        println!("\nCPU per datagram as a multiple of plain's in the same round, over {rounds} rounds: median (min-max)");
        for ((name, _), mut r) in variants.iter().zip(ratios) {
            r.sort_by(f64::total_cmp);
            println!("{name:<16} {:.2}x ({:.2}-{:.2})", r[r.len() / 2], r[0], r[r.len() - 1]);
        }
    }
}
