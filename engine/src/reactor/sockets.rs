//! Every shard's sockets, bound before any executor starts.

use crate::config::Config;
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;

pub(crate) struct ShardSockets {
    pub udp: Socket,
    pub tcp: Socket,
}

/// Binds a UDP socket and a TCP listener per shard on `cfg.listen` with
/// SO_REUSEPORT. Port 0 is resolved once, before any shard binds, so that
/// all shards and both transports share one port.
pub(crate) fn bind_all(cfg: &Config, shards: usize) -> Result<(SocketAddr, Vec<ShardSockets>), String> {
    let mut last_err = String::new();
    // With port 0 the TCP port may be taken when the UDP one is free: retry.
    for _ in 0..if cfg.listen.port() == 0 { 16 } else { 1 } {
        match try_bind_all(cfg, shards) {
            Ok(r) => return Ok(r),
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

fn try_bind_all(cfg: &Config, shards: usize) -> Result<(SocketAddr, Vec<ShardSockets>), String> {
    let mut addr = cfg.listen;
    if addr.port() == 0 {
        addr.set_port(free_port(addr)?);
    }
    let mut out = Vec::with_capacity(shards);
    for _ in 0..shards {
        let udp = udp_socket(addr, cfg.io.socket_buffer).map_err(|e| format!("cannot bind UDP {addr}: {e}"))?;
        let tcp = tcp_listener(addr).map_err(|e| format!("cannot bind TCP {addr}: {e}"))?;
        out.push(ShardSockets { udp, tcp });
    }
    // Linux reports twice what it granted. A capped receive buffer is the
    // queue that overflows first under load, silently: say so once.
    if let Some(got) = out.first().and_then(|s| s.udp.recv_buffer_size().ok())
        && got / 2 < cfg.io.socket_buffer
    {
        tracing::warn!(asked = cfg.io.socket_buffer, granted = got / 2, "UDP receive buffer capped by net.core.rmem_max; see tuning/HOST-TUNING.md");
    }
    Ok((addr, out))
}

/// A port free for both UDP and TCP on `addr`'s address. Asked of the
/// kernel with sockets that do not set SO_REUSEPORT: a port-0 bind with
/// SO_REUSEPORT may be handed a port that another process of the same user
/// already holds with SO_REUSEPORT, and the two servers would then share
/// (and steal) each other's traffic.
fn free_port(addr: SocketAddr) -> Result<u16, String> {
    for _ in 0..64 {
        let udp = std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).map_err(|e| format!("cannot bind UDP {addr}: {e}"))?;
        let port = udp.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!("no port free for both UDP and TCP on {}", addr.ip()))
}

fn domain(addr: SocketAddr) -> Domain {
    if addr.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 }
}

fn udp_socket(addr: SocketAddr, buffer: usize) -> std::io::Result<Socket> {
    let s = Socket::new(domain(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    // Large buffers absorb bursts; the kernel caps them at net.core.*mem_max
    // (tuning/README.md says how to raise that).
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    super::udp::enable_timestamps(&s);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<Socket> {
    let s = Socket::new(domain(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s)
}
