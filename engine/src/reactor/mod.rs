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
//! - [`memory`]: process-wide memory settings (transparent huge pages).
//! - [`sched`]: the time slice a shard thread asks the scheduler for.

pub mod cluster_host;
pub mod dump;
pub mod journal_io;
mod journal_writer;
pub mod memory;
mod runtime;
pub mod sched;
mod sockets;
mod tcp;
pub mod udp;

use crate::config::Config;
use crate::core::Transmit;
use crate::presence::authz::Policy;
use crate::shard::{CoreMsg, ShardStats};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{CpuSet, LocalExecutorBuilder, Placement};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Counts the shards through one step of a start; the last to arrive
/// does what waits for all of them (older generations removed, huge pages
/// turned off).
pub(crate) struct LastShard(AtomicUsize);

impl LastShard {
    pub fn new(shards: usize) -> Self {
        LastShard(AtomicUsize::new(shards))
    }

    /// One shard is through; whether it was the last.
    pub fn arrive(&self) -> bool {
        self.0.fetch_sub(1, Ordering::AcqRel) == 1
    }
}

/// What crosses from one shard to another.
pub(crate) enum ShardMsg {
    /// Work for the target shard's core.
    Core(CoreMsg),
    /// A message to send on a TCP connection the target shard owns.
    Transmit(Transmit),
}

/// The authorization policy as the operator last loaded it. Shards look at
/// the generation on their timer tick and copy the policy when it moved:
/// the lock is taken only on a reload, never on the request path.
#[derive(Default)]
pub(crate) struct PolicyCell {
    pub generation: AtomicU64,
    pub policy: Mutex<Policy>,
}

/// A running server: its shards and the address they listen on.
pub struct Server {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    policy: Arc<PolicyCell>,
    shards: Vec<glommio::ExecutorJoinHandle<ShardStats>>,
    cluster: Option<Arc<crate::cluster::view::ClusterView>>,
}

impl Server {
    /// Binds every shard's sockets, then starts one executor per shard.
    pub fn start(cfg: &Config) -> Result<Server, String> {
        cfg.validate()?;
        let n = cfg.shard_count();
        let (local_addr, socks) = sockets::bind_all(cfg, n)?;
        let stop = Arc::new(AtomicBool::new(false));
        let policy = Arc::new(PolicyCell { generation: AtomicU64::new(0), policy: Mutex::new(cfg.policy()) });
        let mesh = MeshBuilder::<ShardMsg, _>::full(n, cfg.io.queue_capacity);
        let cpus: Vec<usize> = if cfg.pin_cores {
            CpuSet::online().map_err(|e| format!("cannot read the CPU set: {e}"))?.into_iter().map(|l| l.cpu).collect()
        } else {
            Vec::new()
        };
        if cfg.pin_cores && cpus.len() < n {
            return Err(format!("pin_cores: {n} shards but only {} CPUs online", cpus.len()));
        }
        // One seed for the process from the OS generator; each shard
        // expands it into its own stream (core::entropy).
        let seed = crate::core::entropy::Entropy::os_seed();
        let mut storage = Self::load_storage(cfg, n as u16)?;
        // Empty until the cluster host (started by the caller, see
        // `cluster_view`) fills it: until then every presentity of a
        // clustered node is answered 503 + Retry-After.
        let cluster = (cfg.cluster.node != 0).then(|| {
            let view = Arc::new(crate::cluster::view::ClusterView::new(cfg.cluster.node, cfg.cluster.partitions));
            view.open_mail(n as u16);
            view.open_logs(n as u16);
            view
        });
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
                policy: policy.clone(),
                seed,
                local_addr,
                storage: storage.as_mut().map(|s| s.take(i as u16)),
                cluster: cluster.clone(),
            };
            let handle = LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{i}"))
                .io_memory(cfg.io.io_memory)
                .spawn(move || runtime::run(ctx))
                .map_err(|e| format!("cannot start shard {i}: {e}"))?;
            shards.push(handle);
        }
        Ok(Server { local_addr, stop, policy, shards, cluster })
    }

    /// What the shards read of the cluster, for the cluster host to write.
    pub fn cluster_view(&self) -> Option<&Arc<crate::cluster::view::ClusterView>> {
        self.cluster.as_ref()
    }

    /// The address every shard listens on (UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Reads the data directory, if there is one, before any shard starts:
    /// a damaged journal stops the start with an error that names it.
    fn load_storage(cfg: &Config, shards: u16) -> Result<Option<StorageStart>, String> {
        let Some(dir) = &cfg.storage.dir else { return Ok(None) };
        let started = std::time::Instant::now();
        let (loaded, checkpoints) = journal_io::load(dir, shards)?;
        tracing::info!(
            dir = %dir.display(),
            generation = loaded.generation,
            files = loaded.files,
            bytes = loaded.bytes,
            records = loaded.records,
            ms = started.elapsed().as_millis() as u64,
            "journals read"
        );
        Ok(Some(StorageStart {
            dir: dir.clone(),
            fsync: cfg.fsync()?,
            max_pending: cfg.storage.max_pending_bytes,
            compact_after: cfg.storage.compact_after_bytes,
            huge_pages: Arc::new(memory::HugePagesForStart::new(shards as usize, !cfg.io.transparent_huge_pages)),
            loaded,
            checkpoints: Arc::new(checkpoints),
        }))
    }

    /// Installs a new authorization policy on every shard (within a tick);
    /// existing subscriptions whose decision changes are told.
    pub fn set_policy(&self, policy: Policy) {
        *self.policy.policy.lock().unwrap_or_else(|e| e.into_inner()) = policy;
        self.policy.generation.fetch_add(1, Ordering::Release);
    }

    /// Asks every shard to stop and waits for them; returns each shard's
    /// counters.
    pub fn shutdown(self) -> Vec<ShardStats> {
        self.stop.store(true, Ordering::Release);
        self.shards.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    }
}

/// The data directory as read at start, handed out shard by shard.
struct StorageStart {
    dir: std::path::PathBuf,
    fsync: crate::storage::journal::Fsync,
    max_pending: usize,
    compact_after: u64,
    huge_pages: Arc<memory::HugePagesForStart>,
    loaded: journal_io::Loaded,
    checkpoints: Arc<journal_io::Checkpoints>,
}

impl StorageStart {
    fn take(&mut self, shard: u16) -> runtime::ShardStorage {
        runtime::ShardStorage {
            dir: self.dir.clone(),
            generation: self.loaded.generation,
            compact_after: self.compact_after,
            frames: std::mem::take(&mut self.loaded.per_shard[shard as usize]),
            counts: self.loaded.counts[shard as usize],
            huge_pages: self.huge_pages.clone(),
            fsync: self.fsync,
            max_pending: self.max_pending,
            checkpoints: self.checkpoints.clone(),
        }
    }
}

/// What the operator asked with a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT or SIGTERM: shut down.
    Stop(&'static str),
    /// SIGHUP: reload the configuration file's authorization rules.
    Reload,
}

fn handled_signals() -> libc::sigset_t {
    // SAFETY: plain signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every
/// thread it starts afterwards), so that [`wait_for_signal`] receives them.
pub fn block_signals() {
    let set = handled_signals();
    // SAFETY: the set is initialised above.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for the next handled signal.
pub fn wait_for_signal() -> Signal {
    let set = handled_signals();
    let mut sig = 0;
    // SAFETY: sigwait writes the signal number.
    unsafe { libc::sigwait(&set, &mut sig) };
    match sig {
        libc::SIGHUP => Signal::Reload,
        libc::SIGINT => Signal::Stop("SIGINT"),
        _ => Signal::Stop("SIGTERM"),
    }
}
