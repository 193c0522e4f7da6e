//! One shard at run time: its core, its sockets, its connections, and the
//! loops that feed them. Everything here lives on the shard's own thread;
//! `RefCell` borrows never cross an await.

use super::ShardMsg;
use super::tcp;
use super::udp::{RecvBatch, SendBatch};
use crate::config::Config;
use crate::core::outbound::{Offer, Outbound};
use crate::core::{ConnId, Transmit, Transport};
use crate::shard::{CoreMsg, Event, Outbox, Shard, ShardConfig, ShardStats, TcpLimitCounts};
use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::net::UdpSocket;
use glommio::{GlommioError, ResourceType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the shard runs its timers and looks at the stop flag.
pub(super) const TICK: Duration = Duration::from_millis(5);

/// Records a take-over's replay puts back per tick, per shard (each a few
/// microseconds), so that the shard serves its other partitions meanwhile.
const REPLAY_PER_TICK: usize = 2_000;

/// What a held message waits for: the journal durable to `lsn` and the
/// shard's records for the partition logs settled to `rep`.
#[derive(Clone, Copy, Debug)]
struct Wait {
    lsn: u64,
    rep: u64,
}

impl Wait {
    /// Whether positions this far (`self`, as reached) cover `wait`.
    fn covers(self, wait: Wait) -> bool {
        wait.lsn <= self.lsn && wait.rep <= self.rep
    }
}

/// Everything a shard needs, moved into its executor thread.
pub(crate) struct ShardSetup {
    pub id: u16,
    pub shards: u16,
    pub cfg: Config,
    pub udp: socket2::Socket,
    pub tcp: socket2::Socket,
    pub mesh: MeshBuilder<ShardMsg, Full>,
    pub stop: Arc<AtomicBool>,
    pub policy: Arc<super::PolicyCell>,
    pub seed: u64,
    pub local_addr: std::net::SocketAddr,
    /// The journal, when the server has a data directory.
    pub storage: Option<ShardStorage>,
    /// What the cluster host publishes, when the node is in a cluster.
    pub cluster: Option<Arc<crate::cluster::view::ClusterView>>,
}

/// A shard's part of the data directory.
pub(crate) struct ShardStorage {
    /// The data directory and the generation this run writes.
    pub dir: std::path::PathBuf,
    pub generation: u64,
    /// `[storage] compact_after_bytes`.
    pub compact_after: u64,
    /// The records it owns, read from every older generation.
    pub frames: Vec<super::journal_io::Chunk>,
    pub counts: crate::storage::replay::Counts,
    pub huge_pages: Arc<super::memory::HugePagesForStart>,
    pub fsync: crate::storage::journal::Fsync,
    pub max_pending: usize,
    pub checkpoints: Arc<super::journal_io::Checkpoints>,
}

pub(crate) struct Runtime {
    pub id: u16,
    pub cfg: Config,
    pub core: RefCell<Shard>,
    /// Reused by every step; drained by [`Runtime::dispatch`].
    outbox: RefCell<Outbox>,
    udp: UdpSocket,
    udp_fd: RawFd,
    udp_out: RefCell<SendBatch>,
    /// Writers of the TCP connections this shard accepted.
    pub conns: RefCell<HashMap<ConnId, super::tcp::ConnWriter>>,
    pub next_conn: Cell<u64>,
    /// Connections closed or refused at a TCP limit.
    pub tcp_limited: Cell<TcpLimitCounts>,
    mesh: Option<Senders<ShardMsg>>,
    /// Messages for shards whose queue was full, in order; while any wait,
    /// the sockets are not read (see `core::outbound`).
    outbound: RefCell<Outbound<ShardMsg>>,
    /// Whether a task is awaiting room in each destination's queue.
    flushing: RefCell<Vec<bool>>,
    /// When the allocator was last asked to give back freed memory, and
    /// the shard's message count then (see `reactor::memory::give_back_when_quiet`).
    quiet_check: Cell<(Instant, u64)>,
    /// When the core's timers are next due (see [`Runtime::run_timers_if_due`]).
    next_tick: Cell<Instant>,
    /// Under `fsync = "always"`: messages waiting for the journal to be
    /// durable up to a position, in the order they were made.
    held: RefCell<std::collections::VecDeque<(Wait, Transmit)>>,
    /// Wakes the journal writer (see [`journal_loop`]).
    journal_kick: RefCell<Option<glommio::channels::local_channel::LocalSender<()>>>,
    /// `[cluster] durability = "replicated"`: responses wait for the logs.
    replicated: bool,
    /// The cluster's view and the queues to the cluster thread, if in one.
    cluster: Option<Arc<crate::cluster::view::ClusterView>>,
}

pub(crate) async fn run(setup: ShardSetup) -> ShardStats {
    let ShardSetup { id, shards, cfg, udp, tcp, mesh, stop, policy, seed, local_addr, storage, cluster } = setup;
    let (senders, receivers) = if shards > 1 {
        match mesh.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(_) => {
                tracing::error!(shard = id, "cannot join the shard mesh");
                return ShardStats::default();
            }
        }
    } else {
        (None, None)
    };
    let now = Instant::now();
    let mut core = Shard::new(
        ShardConfig {
            shard: id,
            shards,
            limits: cfg.parse_limits(),
            timers: cfg.sip_timers(),
            seed,
            registrar: cfg.registrar_config(),
            local_addr,
            reg_event_subscribe: cfg.registrar.subscribe_reg_event,
            reg_event_expires: cfg.registrar.reg_event_expires,
            publish: cfg.publish_config(),
            watch: cfg.watch_config(),
            policy: cfg.policy(),
            trusted: cfg.trusted(),
            accept: cfg.security.accept,
            caps: cfg.caps(),
            overload: cfg.overload_config(),
            peu: cfg.peu_config(),
            peu_agents: cfg.peu_agents(),
            expected: cfg.expected_per_shard(shards),
            restart_asks_per_tick: cfg.storage.restart_asks_per_tick,
            cluster: cluster.clone(),
            move_wait: cfg.cluster.move_wait(),
            hop_timeout: Duration::from_millis(cfg.cluster.hop_timeout_ms),
            panic_on: None,
        },
        now,
    );
    if cluster.as_ref().is_some_and(|v| v.logs().is_some()) {
        core.attach_replica(crate::shard::durable::UnixClock::system(now));
    }
    // SAFETY: the fd is a bound UDP socket we own; ownership moves.
    let udp = unsafe { UdpSocket::from_raw_fd(udp.into_raw_fd()) };
    let rt = Rc::new(Runtime {
        id,
        core: RefCell::new(core),
        outbox: RefCell::new(Outbox {
            // Every event is logged at debug on one of these two targets.
            events_off: !(tracing::enabled!(target: "presenced::request", tracing::Level::DEBUG)
                || tracing::enabled!(target: "presenced::presence", tracing::Level::DEBUG)),
            ..Outbox::default()
        }),
        udp_fd: udp.as_raw_fd(),
        udp,
        udp_out: RefCell::new(SendBatch::default()),
        conns: RefCell::new(HashMap::new()),
        next_conn: Cell::new(1),
        tcp_limited: Cell::new(TcpLimitCounts::default()),
        mesh: senders,
        outbound: RefCell::new(Outbound::new(shards)),
        flushing: RefCell::new(vec![false; shards as usize]),
        next_tick: Cell::new(Instant::now()),
        quiet_check: Cell::new((Instant::now(), 0)),
        held: RefCell::new(std::collections::VecDeque::new()),
        journal_kick: RefCell::new(None),
        replicated: cluster.is_some() && cfg.cluster.durability == crate::config::Durability::Replicated,
        cluster,
        cfg,
    });
    let journal = match storage {
        Some(st) => match start_journal(&rt, shards, st).await {
            Ok(j) => Some(j),
            Err(e) => {
                // Serving without the journal would acknowledge changes
                // that a restart loses: stop the server instead.
                tracing::error!(shard = id, "{e}; stopping");
                stop.store(true, Ordering::Release);
                return ShardStats::default();
            }
        },
        None => None,
    };

    let mut tasks = Vec::new();
    if let Some(files) = journal.clone() {
        tasks.push(glommio::spawn_local(super::journal_writer::journal_loop(rt.clone(), files)));
    }
    tasks.push(glommio::spawn_local(udp_loop(rt.clone())));
    tasks.push(glommio::spawn_local(tcp::accept_loop(rt.clone(), tcp)));
    if let Some(mut receivers) = receivers {
        for (_, rx) in receivers.streams() {
            let rt = rt.clone();
            tasks.push(glommio::spawn_local(async move {
                while let Some(msg) = rx.recv().await {
                    rt.on_shard_msg(msg);
                }
            }));
        }
    }
    tracing::debug!(shard = id, "shard running");

    // The timer loop is the shard's main task: when it ends, the executor
    // drops the others.
    // The policy in `cfg` is generation 0's. Reading the generation here
    // instead would miss a reload that came before this line: the shard
    // may already have served requests (and the operator sent SIGHUP)
    // while this task was starting.
    let mut policy_seen = 0;
    while !stop.load(Ordering::Acquire) {
        glommio::timer::sleep(TICK).await;
        let generation = policy.generation.load(Ordering::Acquire);
        if generation != policy_seen {
            policy_seen = generation;
            let p = policy.policy.lock().unwrap_or_else(|e| e.into_inner()).clone();
            rt.with_core(|core, out| core.set_policy(Instant::now(), p, out));
            tracing::info!(shard = id, "authorization policy reloaded");
        }
        rt.run_timers_if_due();
    }
    if let Some(m) = &rt.mesh {
        m.close();
    }
    if let Some(files) = &journal {
        super::journal_writer::flush_at_stop(&rt, files).await;
    }
    let stats = ShardStats { shed: rt.shed(), tcp: rt.tcp_limited.get(), ..rt.core.borrow().stats() };
    for t in tasks {
        drop(t);
    }
    tracing::debug!(shard = id, ?stats, "shard stopped");
    stats
}

/// Opens the shard's first segment of the new generation, puts back the
/// records it owns, and starts the generation with a checkpoint of every
/// key (written over the next ticks).
async fn start_journal(rt: &Rc<Runtime>, shards: u16, mut st: ShardStorage) -> Result<Rc<super::journal_writer::JournalFiles>, String> {
    let now = Instant::now();
    let clock = crate::shard::durable::UnixClock::system(now);
    let path = super::journal_io::segment_path(&st.dir, st.generation, rt.id, 1);
    let (journal, file) = super::journal_io::open(&path, rt.id, shards, st.fsync, st.max_pending, clock.to_unix_ms(now)).await?;
    let mut restored = 0u64;
    let (mut records_ms, started) = (0u64, Instant::now());
    rt.with_core(|core, out| {
        core.attach_journal(journal, clock);
        core.reserve_for_restore(st.counts);
        // Each chunk is freed once put back: the records and the tables
        // are not held twice over the whole start.
        for chunk in std::mem::take(&mut st.frames) {
            crate::storage::replay::records(&chunk, |r| {
                if let Err(e) = core.restore(now, clock, &r, out) {
                    tracing::warn!(shard = core.id(), key = %String::from_utf8_lossy(r.key()), "record left out: {}", e.0);
                }
                restored += 1;
            });
        }
        records_ms = started.elapsed().as_millis() as u64;
        // Now, not `now`: putting records back may have taken seconds.
        core.restore_done(Instant::now(), out);
    });
    st.huge_pages.shard_restored();
    // How long the shard took to put its records back; its restored
    // subscriptions ask their presentities over the next ticks, while it
    // serves (a log line says when the last has asked).
    let rewatch_pending = rt.core.borrow().rewatch_pending();
    tracing::info!(shard = rt.id, restored, records_ms, rewatch_pending, path = %path.display(), "journal opened");
    let (kick, kicks) = glommio::channels::local_channel::new_bounded(1);
    *rt.journal_kick.borrow_mut() = Some(kick);
    rt.kick_journal();
    Ok(Rc::new(super::journal_writer::JournalFiles::new(st.dir, st.generation, rt.id, file, st.compact_after, st.checkpoints, kicks)))
}

/// How long a shard serves its admission queue before it drains its socket
/// again: the longest a datagram waits in the socket for its decision,
/// beyond the shard's turns off its core.
const SERVE_SLICE: Duration = Duration::from_micros(250);

/// Most datagrams decided in one turn of the admission stage (a few
/// milliseconds of reading and refusing).
const TAKE_IN_MAX: usize = 4096;

/// Reads the UDP socket in batches and serves what it reads; when it is
/// empty, waits for the next datagram through glommio (a 1-byte peek,
/// which only signals readiness). When a batch comes full (a backlog),
/// while the shard is overloaded, and while work is left in its admission
/// queue, it alternates instead: the whole socket
/// decided at once (refusals answered right away), then a slice of
/// admitted work (`core::ingress`).
async fn udp_loop(rt: Rc<Runtime>) {
    let mut batch = RecvBatch::new(rt.cfg.io.udp_batch, rt.cfg.limits.max_message_size);
    let mut probe = [0u8; 1];
    loop {
        rt.wait_while_holding().await;
        // A busy loop yields only when glommio's preempt timer (100 ms)
        // says so: the timer task alone would then run every 208 ms on a
        // half core (measured), each late turn ending 200 ms of Timer J's
        // transactions in one stall. (A 1 ms preempt timer fixed the
        // cadence, but one run in five then hung glommio's reactor.)
        rt.run_timers_if_due();
        // Responses waiting for the partition logs leave as soon as the
        // cluster thread settles them, not at the next timer tick (one
        // atomic read when nothing waits on the logs).
        if rt.replicated && !rt.held.borrow().is_empty() {
            rt.release_held();
        }
        let admitting = {
            let core = rt.core.borrow();
            core.is_shedding() || core.queued() > 0
        };
        if admitting {
            let taken = rt.take_in(&mut batch);
            rt.dispatch();
            rt.flush_udp().await;
            let served = {
                let mut out = rt.outbox.borrow_mut();
                rt.core.borrow_mut().serve_queued(Instant::now, SERVE_SLICE, usize::MAX, &mut out)
            };
            rt.dispatch();
            rt.flush_udp().await;
            if taken == 0 && served == 0 {
                let _ = rt.udp.peek_from(&mut probe).await;
            } else {
                glommio::yield_if_needed().await;
            }
            continue;
        }
        let n = rt.receive(&mut batch);
        if n == 0 {
            rt.flush_udp().await;
            let _ = rt.udp.peek_from(&mut probe).await;
            continue;
        }
        if n == batch.capacity() {
            // A full batch leaves more in the socket: a backlog, which goes
            // through the admission stage, so that it is decided before it
            // ages there rather than after.
            rt.with_core(|core, out| arrive(core, &batch, out));
            glommio::yield_if_needed().await;
            continue;
        }
        {
            let mut core = rt.core.borrow_mut();
            let mut out = rt.outbox.borrow_mut();
            for i in 0..n {
                if let Some((bytes, from)) = batch.get(i) {
                    // `now` per datagram: the batch's own processing is
                    // part of the later datagrams' wait.
                    core.on_message_at(Instant::now(), batch.received(i), crate::core::Peer::udp(from), bytes, &mut out);
                }
            }
        }
        rt.dispatch();
        rt.flush_udp().await;
        glommio::yield_if_needed().await;
    }
}

/// Hands the datagrams of the last receive to the core's admission stage.
fn arrive(core: &mut Shard, batch: &RecvBatch, out: &mut Outbox) {
    let now = Instant::now();
    for i in 0..batch.capacity() {
        let Some((bytes, from)) = batch.get(i) else { break };
        core.on_arrival(now, batch.received(i), crate::core::Peer::udp(from), bytes, out);
    }
}

impl Runtime {
    /// One batch from the UDP socket, without blocking (0: none waiting).
    fn receive(&self, batch: &mut RecvBatch) -> usize {
        batch.recv(self.udp_fd).unwrap_or_else(|e| {
            tracing::warn!(shard = self.id, error = %e, "UDP receive failed");
            0
        })
    }

    /// Drains the UDP socket into the core's admission stage, while its
    /// queue has room and at most [`TAKE_IN_MAX`] at a time (a flood that
    /// refills the socket as fast as it is read must not starve service);
    /// returns how many datagrams were read.
    fn take_in(self: &Rc<Self>, batch: &mut RecvBatch) -> usize {
        let start = Instant::now();
        let mut taken = 0;
        while self.core.borrow().can_take() && taken < TAKE_IN_MAX {
            let n = self.receive(batch);
            if n == 0 {
                break;
            }
            // Each batch's refusals leave at once, not after the drain.
            self.with_core(|core, out| arrive(core, batch, out));
            taken += n;
            if n < batch.capacity() {
                // The socket was empty at that read: what came since is
                // the next turn's. Reading on while datagrams trickle in
                // chased the arrivals for 5-23 ms at a time (as long as
                // deciding one took about as long as the next took to
                // come), while the admitted work waited and went late.
                break;
            }
        }
        if taken > 0 {
            self.core.borrow_mut().took_in(start.elapsed(), taken);
        }
        taken
    }

    /// Carries out what the core asked for: UDP datagrams into the send
    /// batch, TCP frames to their connection (here or on its shard),
    /// forwards to their owner, events to the log.
    pub fn dispatch(self: &Rc<Self>) {
        let mut out = self.outbox.borrow_mut();
        if out.is_empty() {
            return;
        }
        let hold = self.hold_until();
        for t in out.transmits.drain(..) {
            match hold {
                Some(wait) => self.held.borrow_mut().push_back((wait, t)),
                None => self.transmit(t),
            }
        }
        if self.core.borrow().journal().is_some_and(|j| j.deadline().is_some()) {
            self.kick_journal();
        }
        for (shard, msg) in out.to_shards.drain(..) {
            self.send_to_shard(shard, ShardMsg::Core(msg));
        }
        // A full queue drops the message: interest is refreshed, and a
        // mirror asks again, so a lost document costs a refresh period.
        let mail = self.cluster.as_ref().and_then(|v| v.mail());
        for (to, msg) in out.to_nodes.drain(..) {
            if let Some(mail) = mail {
                mail.send(to, &msg);
            }
        }
        for e in out.events.drain(..) {
            log_event(self.id, &e);
        }
    }

    /// Hands the core what other nodes sent it since the last tick.
    fn take_node_mail(self: &Rc<Self>, now: Instant) {
        let Some(view) = self.cluster.clone() else { return };
        let Some(mail) = view.mail() else { return };
        // At most a queue's worth per tick, so that a flood cannot hold
        // the shard's timers; one step and one flush for all of it.
        self.with_core(|core, out| {
            for _ in 0..crate::cluster::mail::QUEUE_ROOM {
                let Some((from, msg)) = mail.receive(self.id) else { break };
                core.on_node_msg(now, from, msg, out);
            }
        });
    }

    fn transmit(self: &Rc<Self>, t: Transmit) {
        match t.to.transport {
            Transport::Udp => self.udp_out.borrow_mut().push(t),
            Transport::Tcp if t.to.conn.shard() == self.id => self.write_tcp(t),
            Transport::Tcp => self.send_to_shard(t.to.conn.shard(), ShardMsg::Transmit(t)),
        }
    }

    /// What this step's messages wait for: under `fsync = "always"`, the
    /// end of the journal while any of it is not durable; under
    /// `durability = "replicated"`, the shard's last record for the
    /// partition logs while any is not settled; never less than what
    /// earlier messages wait for, so that nothing overtakes them.
    fn hold_until(&self) -> Option<Wait> {
        let core = self.core.borrow();
        let lsn = core.journal().filter(|j| j.fsync() == crate::storage::journal::Fsync::Always).map_or(0, |j| j.appended());
        let rep = if self.replicated { core.replica_last() } else { 0 };
        let held = self.held.borrow();
        let wait = match held.back() {
            Some((w, _)) => Wait { lsn: w.lsn.max(lsn), rep: w.rep.max(rep) },
            None => Wait { lsn, rep },
        };
        (held.back().is_some() || !self.reached(&core).covers(wait)).then_some(wait)
    }

    /// How far the journal is durable and the shard's records for the logs
    /// are settled (without either: all the way).
    fn reached(&self, core: &Shard) -> Wait {
        Wait {
            lsn: core.journal().map_or(u64::MAX, |j| j.durable()),
            rep: self.cluster.as_ref().and_then(|v| v.logs()).map_or(u64::MAX, |q| q.settled(self.id)),
        }
    }

    /// Sends the held messages the journal has made durable and the logs
    /// have settled. Those waiting on a record the logs abandoned (the
    /// node lost the partition before its record got in) are dropped
    /// instead: their change is not acknowledged.
    pub(super) fn release_held(self: &Rc<Self>) {
        if let Some(q) = self.cluster.as_ref().and_then(|v| v.logs()) {
            let abandoned = q.take_abandoned(self.id);
            if let Some(&first) = abandoned.iter().min() {
                let mut held = self.held.borrow_mut();
                let before = held.len();
                held.retain(|(w, _)| w.rep < first);
                tracing::warn!(
                    shard = self.id,
                    records = abandoned.len(),
                    responses = before - held.len(),
                    "records abandoned by the partition logs; their responses dropped"
                );
            }
        }
        let reached = self.reached(&self.core.borrow());
        loop {
            let next = {
                let mut held = self.held.borrow_mut();
                match held.front() {
                    Some((w, _)) if reached.covers(*w) => held.pop_front().map(|(_, t)| t),
                    _ => None,
                }
            };
            let Some(t) = next else { break };
            self.transmit(t);
        }
        if !self.udp_out.borrow().is_empty() {
            let _ = self.udp_out.borrow_mut().flush(self.udp_fd, self.cfg.io.udp_batch);
        }
    }

    /// Moves the shard's records towards the partition logs, puts back
    /// what a take-over replays, and sends what the logs have settled.
    fn exchange_records(self: &Rc<Self>, now: Instant) {
        let Some(view) = self.cluster.clone() else { return };
        let Some(q) = view.logs() else { return };
        let mut put_back = 0;
        self.with_core(|core, out| {
            core.ship_backlog(now, q);
            put_back = core.put_back_replayed(now, q, REPLAY_PER_TICK, out);
        });
        if put_back > 0 {
            q.put_back(self.id, put_back as u64);
        }
        if !self.held.borrow().is_empty() {
            self.release_held();
        }
    }

    /// Tells the journal writer there is something to write.
    fn kick_journal(&self) {
        if let Some(k) = &*self.journal_kick.borrow() {
            let _ = k.try_send(());
        }
    }

    /// Sends to another shard's queue. A full queue sheds a forwarded
    /// request (its client retransmits) and holds anything else, in order,
    /// for a task that awaits room.
    fn send_to_shard(self: &Rc<Self>, shard: u16, msg: ShardMsg) {
        let Some(mesh) = &self.mesh else { return };
        let sheddable = matches!(msg, ShardMsg::Core(CoreMsg::Forward(_)));
        let offer = self.outbound.borrow_mut().offer(shard, msg, sheddable, |m| match mesh.try_send_to(shard as usize, m) {
            Ok(()) => Ok(()),
            Err(GlommioError::WouldBlock(ResourceType::Channel(m))) => Err(m),
            Err(e) => {
                // Closed: the server is stopping.
                tracing::debug!(shard = self.id, to = shard, error = %e, "shard queue closed");
                Ok(())
            }
        });
        match offer {
            Offer::Sent => {}
            Offer::Shed => tracing::debug!(shard = self.id, to = shard, "shard queue full; forwarded request shed"),
            Offer::Held => self.start_flusher(shard),
        }
    }

    /// A task that moves held messages for `to` into its queue as room
    /// appears, one at a time and in order.
    fn start_flusher(self: &Rc<Self>, to: u16) {
        if std::mem::replace(&mut self.flushing.borrow_mut()[to as usize], true) {
            return;
        }
        let rt = self.clone();
        glommio::spawn_local(async move {
            loop {
                let next = rt.outbound.borrow_mut().next_held(to);
                let Some(msg) = next else { break };
                if let Some(mesh) = &rt.mesh {
                    let _ = mesh.send_to(to as usize, msg).await;
                }
                rt.outbound.borrow_mut().sent_held(to);
            }
            rt.flushing.borrow_mut()[to as usize] = false;
        })
        .detach();
    }

    /// Waits while messages are held for full shard queues: new work from
    /// the sockets would only add to them. Shard queues are still read
    /// meanwhile, which is what lets every shard's backlog drain.
    pub async fn wait_while_holding(&self) {
        while self.outbound.borrow().is_holding() {
            glommio::timer::sleep(Duration::from_micros(200)).await;
        }
    }

    /// Forwarded requests shed for full queues so far.
    pub fn shed(&self) -> u64 {
        self.outbound.borrow().shed()
    }

    /// Counts a TCP limit hit; the first of each kind is also logged by
    /// the caller's warning, later ones only counted.
    pub fn count_tcp_limit(&self, f: impl FnOnce(&mut TcpLimitCounts)) {
        let mut c = self.tcp_limited.get();
        f(&mut c);
        self.tcp_limited.set(c);
    }

    fn on_shard_msg(self: &Rc<Self>, msg: ShardMsg) {
        match msg {
            ShardMsg::Core(msg) => self.with_core(|core, out| core.on_shard_msg(Instant::now(), msg, out)),
            ShardMsg::Transmit(t) => self.write_tcp(t),
        }
    }

    /// Queues bytes on one of this shard's TCP connections; a connection
    /// that has closed drops them.
    /// A peer that does not read, so that more than
    /// `tcp_max_queued_bytes` wait for it, is closed (its bytes dropped).
    pub fn write_tcp(&self, t: Transmit) {
        let max = self.cfg.limits.tcp_max_queued_bytes;
        let mut conns = self.conns.borrow_mut();
        match conns.get(&t.to.conn) {
            Some(w) if w.queued.get() + t.len() > max => {
                tracing::warn!(shard = self.id, peer = %t.to.addr, queued = w.queued.get(), "TCP peer does not read; connection closed");
                self.count_tcp_limit(|c| c.unread += 1);
                w.close();
                conns.remove(&t.to.conn);
            }
            Some(w) => w.send(t.into_contiguous()),
            None => tracing::debug!(shard = self.id, peer = %t.to.addr, "TCP connection gone; message dropped"),
        }
    }

    /// Sends the queued datagrams; if the socket buffer is full, waits for
    /// room by sending one through glommio.
    async fn flush_udp(&self) {
        loop {
            let res = self.udp_out.borrow_mut().flush(self.udp_fd, self.cfg.io.udp_batch);
            match res {
                Ok(r) if r.blocked => {
                    let first = self.udp_out.borrow_mut().pop_front();
                    if let Some((to, bytes)) = first {
                        let _ = self.udp.send_to(&bytes, to).await;
                    }
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::warn!(shard = self.id, error = %e, "UDP send failed");
                    return;
                }
            }
        }
    }

    /// Runs the core's timers if [`TICK`] has passed since they last ran,
    /// from the timer task when the shard idles and from the UDP loop when
    /// it is busy. Retransmissions and refreshes leave at once.
    fn run_timers_if_due(self: &Rc<Self>) {
        let now = Instant::now();
        if now < self.next_tick.get() {
            return;
        }
        self.next_tick.set(now + TICK);
        self.take_node_mail(now);
        self.exchange_records(now);
        self.with_core(|core, out| core.on_time(now, out));
        let (since, messages_then) = self.quiet_check.get();
        if now.duration_since(since) >= super::memory::QUIET_CHECK {
            let messages = self.core.borrow().stats().messages;
            super::memory::give_back_when_quiet(messages - messages_then, || self.give_back_room());
            self.quiet_check.set((now, messages));
        }
    }

    /// Gives back the room a burst made the core's and the reactor's own
    /// work queues take (see `memory::give_back_when_quiet`).
    fn give_back_room(&self) {
        use crate::core::room::{GiveBack, KEEP_QUEUE};
        self.core.borrow_mut().give_back_room();
        self.udp_out.borrow_mut().give_back(KEEP_QUEUE);
        let mut out = self.outbox.borrow_mut();
        out.transmits.give_back(KEEP_QUEUE);
        out.to_shards.give_back(KEEP_QUEUE);
        out.events.give_back(KEEP_QUEUE);
    }

    /// One step of the core outside the UDP loop (a TCP frame, a message
    /// from another shard), then its outbox. Datagrams it produced are
    /// flushed at once rather than waiting for the next UDP receive.
    pub fn with_core(self: &Rc<Self>, f: impl FnOnce(&mut Shard, &mut Outbox)) {
        {
            let mut out = self.outbox.borrow_mut();
            f(&mut self.core.borrow_mut(), &mut out);
        }
        self.dispatch();
        if !self.udp_out.borrow().is_empty() {
            let _ = self.udp_out.borrow_mut().flush(self.udp_fd, self.cfg.io.udp_batch);
        }
    }
}

fn log_event(shard: u16, e: &Event) {
    match e {
        Event::Handled { method, status, call_id, received_on } => {
            tracing::debug!(target: "presenced::request", shard, received_on, method = method.as_str(), status, call_id = call_id.as_str(), "handled");
        }
        Event::Retransmission { call_id, replayed } => {
            tracing::debug!(target: "presenced::request", shard, call_id = call_id.as_str(), replayed, "retransmission");
        }
        Event::Hopped { method, node, call_id } => {
            tracing::debug!(target: "presenced::request", shard, method = method.as_str(), node, call_id = call_id.as_str(), "forwarded to node");
        }
        Event::Malformed { error, status } => {
            tracing::debug!(target: "presenced::request", shard, error = error.as_str(), status, "malformed");
        }
        Event::Registration { aor, contacts } => {
            let state = if contacts.is_empty() { "closed" } else { "open" };
            tracing::debug!(target: "presenced::presence", shard, aor = aor.as_str(), state, contacts = contacts.join(", ").as_str(), "registration");
        }
        Event::Document { aor, version, document } => {
            tracing::debug!(target: "presenced::presence", shard, aor = aor.as_str(), version, document = %String::from_utf8_lossy(document), "document");
        }
        Event::Watcher { aor, state } => {
            tracing::debug!(target: "presenced::presence", shard, aor = aor.as_str(), state, "watcher");
        }
        Event::OversizeNotify { size } => {
            tracing::warn!(shard, size, "a NOTIFY above the path MTU went over UDP (watcher reached over UDP); further ones are only counted");
        }
        Event::Agent { aor, uri, state, status } => {
            tracing::debug!(target: "presenced::presence", shard, aor = aor.as_str(), agent = uri.as_str(), state, status, "presence agent");
        }
        Event::RegSubscription { call_id, status } => {
            tracing::debug!(target: "presenced::presence", shard, call_id = call_id.as_str(), status, "reg subscription");
        }
        Event::Panic { call_id, what } => {
            tracing::error!(shard, call_id = call_id.as_str(), panic = what.as_str(), "a step panicked; contained, its transaction and dialog removed");
        }
        Event::StrayResponse { status } => {
            tracing::debug!(target: "presenced::request", shard, status, "stray response");
        }
    }
}
