//! The I/O side: one glommio executor per shard, each with its own UDP
//! socket and TCP listener on the shared address (SO_REUSEPORT), driving
//! that shard's sans-IO core (`crate::core`). Shards exchange work over
//! glommio's lock-free shared channels (a full mesh).
//!
//! - [`udp`]: recvmmsg/sendmmsg batches.
//! - [`runtime`]: one shard's loops (UDP, timers, mesh) and the dispatch of
//!   what its core asks for.
//! - [`tcp`]: accepting, framing and writing TCP connections.
//! - [`sockets`]: creating the sockets before any executor starts, so that
//!   an address in use is a clear error at startup.

mod runtime;
mod sockets;
mod tcp;
pub mod udp;

use crate::config::Config;
use crate::core::{CoreMsg, ShardStats, Transmit};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{CpuSet, LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What crosses from one shard to another.
pub(crate) enum ShardMsg {
    /// Work for the target shard's core.
    Core(CoreMsg),
    /// A message to send on a TCP connection the target shard owns.
    Transmit(Transmit),
}

/// A running server: its shards and the address they listen on.
pub struct Server {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shards: Vec<glommio::ExecutorJoinHandle<ShardStats>>,
}

impl Server {
    /// Binds every shard's sockets, then starts one executor per shard.
    pub fn start(cfg: &Config) -> Result<Server, String> {
        cfg.validate()?;
        let n = cfg.shard_count();
        let (local_addr, socks) = sockets::bind_all(cfg, n)?;
        let stop = Arc::new(AtomicBool::new(false));
        let mesh = MeshBuilder::<ShardMsg, _>::full(n, cfg.io.queue_capacity);
        let cpus: Vec<usize> = if cfg.pin_cores {
            CpuSet::online().map_err(|e| format!("cannot read the CPU set: {e}"))?.into_iter().map(|l| l.cpu).collect()
        } else {
            Vec::new()
        };
        if cfg.pin_cores && cpus.len() < n {
            return Err(format!("pin_cores: {n} shards but only {} CPUs online", cpus.len()));
        }
        let tag_seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let mut shards = Vec::with_capacity(n);
        for (i, sock) in socks.into_iter().enumerate() {
            let placement = if cfg.pin_cores { Placement::Fixed(cpus[i]) } else { Placement::Unbound };
            let ctx = runtime::ShardSetup {
                id: i as u16,
                shards: n as u16,
                cfg: cfg.clone(),
                udp: sock.udp,
                tcp: sock.tcp,
                mesh: mesh.clone(),
                stop: stop.clone(),
                tag_seed: tag_seed.wrapping_add((i as u64) << 40),
                local_addr,
            };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{i}"))
                .io_memory(cfg.io.io_memory)
                .spawn(move || runtime::run(ctx))
                .map_err(|e| format!("cannot start shard {i}: {e}"))?;
            shards.push(handle);
        }
        Ok(Server { local_addr, stop, shards })
    }

    /// The address every shard listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Asks every shard to stop and waits for them; returns each shard's
    /// counters.
    pub fn shutdown(self) -> Vec<ShardStats> {
        self.stop.store(true, Ordering::Release);
        self.shards.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread
/// it starts afterwards), so that [`wait_for_stop_signal`] receives them.
pub fn block_stop_signals() {
    // SAFETY: plain signal-mask calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM; returns its name.
pub fn wait_for_stop_signal() -> &'static str {
    // SAFETY: as above; sigwait writes the signal number.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
        if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" }
    }
}
