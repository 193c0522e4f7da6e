//! The cluster host: carries one node's ownership machine
//! ([`crate::cluster::ownership`]) to NATS JetStream and back.
//!
//! It runs on a thread of its own with a current-thread tokio runtime, as
//! async-nats needs; no shard ever waits on it. The shards read its
//! answers from a [`ClusterView`] of atomics (who owns each partition,
//! and whether this node serves it), written after every step of the
//! machine.
//!
//! In JetStream:
//! - one KV bucket (`[cluster] bucket`) whose `max_age` is the lease time
//!   to live holds the leases (`p0042` → `node:incarnation`) and the
//!   member keys (`n7` → the same);
//! - one stream (`[cluster] stream`, subjects `<prefix>.p0042`) holds each
//!   partition's log; a new owner's fence marker is published there with
//!   the expected last subject sequence.
//!
//! On plain NATS (no JetStream), subjects `<mail_prefix>.<node>` carry the
//! messages between nodes about documents (`cluster::mail`): two tasks
//! move them between those subjects and the shards' bounded queues.
//!
//! The shards' journal records of registrations and publications go to
//! their partition's log ([`crate::cluster::replication`], fed by the
//! queues of [`crate::cluster::log_queues`]); a take-over reads the log back
//! into the shards before the node's marker fences the old owner out and
//! the node serves the partition. A move reports the partition drained
//! once its records are in the log.

use crate::cluster::NodeId;
use crate::cluster::log_queues::LogQueues;
use crate::cluster::ownership::{self, FenceAnswer, Holder, Key, KvAnswer, KvOp, Output, Ownership};
use crate::cluster::partition::Partition;
use crate::cluster::replication::{self, Appender, Replicator};
use crate::cluster::view::ClusterView;
use crate::cluster::warm::{Taken, WarmReplica};
use crate::storage::record::Record;
use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the host finds JetStream, and how this node takes part.
#[derive(Clone, Debug)]
pub struct HostConfig {
    /// `nats://host:port`, comma-separated for several servers.
    pub nats: String,
    pub node: NodeId,
    pub bucket: String,
    pub stream: String,
    /// Subjects of the partition logs: `<log_prefix>.p0042`.
    pub log_prefix: String,
    /// Subjects of the messages between nodes (`cluster::mail`), plain
    /// NATS: `<mail_prefix>.<node>`.
    pub mail_prefix: String,
    /// JetStream replicas of the bucket and the stream (3 in a cluster of three servers).
    pub replicas: usize,
    pub ownership: ownership::Config,
    /// How often the machine is given the time.
    pub tick: Duration,
    /// The SIP address other nodes forward requests to, carried in this
    /// node's member key.
    pub advertise: Option<SocketAddrV4>,
    /// Records appended to the partition logs before the first checkpoint
    /// of them, and at least between two (`Compaction`).
    pub log_compact_min: u64,
    /// Most bytes of records the warm replica keeps (`cluster::warm`); 0: none kept.
    pub warm_replica_bytes: usize,
}

impl HostConfig {
    pub fn new(nats: &str, node: NodeId) -> HostConfig {
        HostConfig {
            nats: nats.to_string(),
            node,
            bucket: "presence_leases".into(),
            stream: "PRESENCE_LOG".into(),
            log_prefix: "presence.log".into(),
            mail_prefix: "presence.node".into(),
            replicas: 1,
            ownership: ownership::Config::default(),
            tick: Duration::from_millis(20),
            advertise: None,
            log_compact_min: 1_000_000,
            warm_replica_bytes: 1 << 30,
        }
    }
}

/// What the owner of a [`ClusterHost`] tells its thread.
enum Command {
    /// Stop all I/O now (a crash, to the cluster).
    Halt,
    /// Release every lease and the member key, then stop.
    Leave,
}

/// A running host. Dropping it halts it as [`ClusterHost::halt`] does.
pub struct ClusterHost {
    view: Arc<ClusterView>,
    commands: Option<tokio::sync::mpsc::UnboundedSender<Command>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl ClusterHost {
    /// Starts the host thread. Node ids start at 1 (0 means "nobody" in the view).
    pub fn start(cfg: HostConfig, incarnation: u64) -> Result<ClusterHost, String> {
        if !(1..=crate::cluster::view::MAX_NODE).contains(&cfg.node) {
            return Err(format!("cluster node ids run from 1 to {}", crate::cluster::view::MAX_NODE));
        }
        let view = Arc::new(ClusterView::new(cfg.node, cfg.ownership.partitions));
        Self::start_with(cfg, incarnation, view)
    }

    /// Starts the host thread writing into `view` (which the shards read).
    pub fn start_with(cfg: HostConfig, incarnation: u64, view: Arc<ClusterView>) -> Result<ClusterHost, String> {
        if cfg.node == 0 || view.me() != cfg.node || view.partitions() != cfg.ownership.partitions {
            return Err("the cluster view does not match the host's node and partitions".into());
        }
        cfg.ownership.check()?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = view.clone();
        let thread = std::thread::Builder::new()
            .name(format!("cluster-{}", cfg.node))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("tokio runtime: {e}"))?;
                let node = cfg.node;
                rt.block_on(run(cfg, incarnation, shared, rx)).inspect_err(|e| tracing::error!(node, error = %e, "cluster host stopped"))
            })
            .map_err(|e| format!("cluster thread: {e}"))?;
        Ok(ClusterHost { view, commands: Some(tx), thread: Some(thread) })
    }

    pub fn view(&self) -> &Arc<ClusterView> {
        &self.view
    }

    /// Stops all I/O at once, deleting nothing: to the cluster this is a
    /// crash, and the node's leases expire. Returns the host's error if it
    /// had stopped on one.
    pub fn halt(mut self) -> Result<(), String> {
        self.stop(Command::Halt)
    }

    /// Leaves the cluster cleanly: stops serving, releases every lease and
    /// the member key (the others take over at once), then stops; gives up
    /// after four request timeouts, leaving the rest to expire.
    pub fn leave(mut self) -> Result<(), String> {
        self.stop(Command::Leave)
    }

    fn stop(&mut self, how: Command) -> Result<(), String> {
        if let Some(tx) = self.commands.take() {
            let _ = tx.send(how);
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("cluster thread panicked".into()),
            None => Ok(()),
        }
    }
}

impl Drop for ClusterHost {
    fn drop(&mut self) {
        let _ = self.stop(Command::Halt);
    }
}

fn lease_value(h: Holder) -> bytes::Bytes {
    format!("{}:{}", h.node, h.incarnation).into()
}

/// A member key's value: the holder, and where the node listens for SIP.
fn member_value(h: Holder, advertise: Option<SocketAddrV4>) -> bytes::Bytes {
    match advertise {
        Some(a) => format!("{}:{}@{a}", h.node, h.incarnation).into(),
        None => lease_value(h),
    }
}

/// A lease's or member key's value: `node:incarnation[@ip:port]`.
fn parse_value(v: &[u8]) -> Option<(Holder, Option<SocketAddrV4>)> {
    let text = std::str::from_utf8(v).ok()?;
    let (holder, addr) = match text.split_once('@') {
        Some((h, a)) => (h, Some(a.parse().ok()?)),
        None => (text, None),
    };
    let (node, inc) = holder.split_once(':')?;
    Some((Holder { node: node.parse().ok()?, incarnation: inc.parse().ok()? }, addr))
}

fn parse_holder(v: &[u8]) -> Option<Holder> {
    parse_value(v).map(|(h, _)| h)
}

fn key_name(k: Key) -> String {
    match k {
        Key::Lease(p) => p.key(),
        Key::Member(n) => format!("n{n}"),
    }
}

/// What a watched key is.
fn parse_key(k: &str) -> Option<Key> {
    if let Some(n) = k.strip_prefix('n') {
        return n.parse().ok().map(Key::Member);
    }
    k.strip_prefix('p')?.parse().ok().map(|p| Key::Lease(Partition(p)))
}

/// An answer coming back from a spawned request.
enum Back {
    Kv(u64, KvAnswer),
    Fence(u64, FenceAnswer),
    CaughtUp(Partition, u64),
    /// A replay session ended: the partitions it read back, with their
    /// logs' last sequences, or none if it failed (the machine's next
    /// catch-up asks again).
    Replayed(Vec<Partition>, Option<Vec<u64>>),
    Append(u64, FenceAnswer),
}

/// The host's side of replication: the appender composed with the
/// machine, and the take-overs' replays.
struct Replication {
    r: Replicator,
    /// Partitions whose log is being read back, or queued to be.
    replaying: HashSet<Partition>,
    /// Partitions waiting for the next replay session, and since when the
    /// first of them has waited.
    queued_replays: Vec<Partition>,
    queued_since: Option<Instant>,
    /// A replay session is running.
    session: bool,
    /// Records handed to each shard for putting back, in all.
    handed: Arc<Vec<AtomicU64>>,
    compaction: Compaction,
    /// Partitions this process has served: taking one back, the shards
    /// first forget what they still hold of it.
    served_before: HashSet<Partition>,
    /// The records of the partitions this node would inherit, kept by
    /// [`follow`]; shared with it and the replay sessions, never with a
    /// shard (the lock is this thread's and its tasks').
    warm: Option<Arc<Mutex<WarmReplica>>>,
}

/// Keeping the partition logs bounded: once the records appended since the
/// last checkpoint reach `threshold`, every shard ships every key of the
/// partitions this node serves again (a checkpoint), and once those records
/// are in, each log is purged up to where it stood when the checkpoint was
/// asked. The threshold is twice what the last checkpoint wrote, and at
/// least `[cluster] log_compact_min`, so the logs stay within about three
/// times the live state plus that minimum.
struct Compaction {
    generation: u64,
    /// Records appended in all when the last checkpoint was asked.
    since: u64,
    threshold: u64,
    min: u64,
    /// The checkpoint being written: each open partition's last sequence
    /// when it was asked.
    pending: Option<Vec<(Partition, u64)>>,
}

/// A stopped partition is reported drained no sooner than this after its
/// stop: records the shards made just before it are still on their way
/// (each shard ships every tick, 5 ms).
const DRAIN_GRACE: Duration = Duration::from_millis(30);

/// How long the first partition to catch up waits for others to share
/// its replay session.
const REPLAY_GATHER: Duration = Duration::from_millis(50);

/// The longest a take-over may read a partition's log.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(cfg: HostConfig, incarnation: u64, view: Arc<ClusterView>, mut commands: tokio::sync::mpsc::UnboundedReceiver<Command>) -> Result<(), String> {
    // A node may start before its JetStream servers: it keeps trying, and
    // holds no lease meanwhile.
    let servers = cfg
        .nats
        .split(',')
        .map(|s| s.trim().parse::<async_nats::ServerAddr>().map_err(|e| format!("NATS server {s:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let client =
        async_nats::ConnectOptions::new().retry_on_initial_connect().connect(servers).await.map_err(|e| format!("connecting to NATS at {}: {e}", cfg.nats))?;
    if view.mail().is_some() {
        carry_mail(client.clone(), &cfg, view.clone()).await;
    }
    let js = jetstream::new(client);
    // A JetStream cluster that is still electing its leader refuses to
    // make streams: try again each second until it does, or until told to stop.
    let (store, log) = loop {
        match setup(&cfg, &js).await {
            Ok(done) => break done,
            Err(e) => {
                tracing::warn!(node = cfg.node, error = %e, "JetStream not ready; trying again in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = commands.recv() => return Ok(()),
                }
            }
        }
    };

    let mut m = Ownership::new(cfg.node, incarnation, cfg.ownership.clone());
    let mut rep = view.logs().map(|q| Replication {
        r: Replicator::new(Appender::new(m.holder(), replication::Config::new(cfg.ownership.partitions, q.shards())), DRAIN_GRACE),
        replaying: HashSet::new(),
        queued_replays: Vec::new(),
        queued_since: None,
        session: false,
        served_before: HashSet::new(),
        warm: (cfg.warm_replica_bytes > 0).then(|| Arc::new(Mutex::new(WarmReplica::new(cfg.node, cfg.ownership.partitions, cfg.warm_replica_bytes)))),
        compaction: Compaction { generation: 0, since: 0, threshold: cfg.log_compact_min, min: cfg.log_compact_min, pending: None },
        handed: Arc::new((0..q.shards()).map(|_| AtomicU64::new(0)).collect()),
    });
    if let Some(w) = rep.as_ref().and_then(|r| r.warm.clone()) {
        tokio::spawn(follow(log.clone(), cfg.log_prefix.clone(), w));
    }
    // The shards never wake this thread: it looks for their records every
    // 2 ms, as it does for their mail.
    let mut ship_tick = tokio::time::interval(Duration::from_millis(2));
    ship_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (back_tx, mut back) = tokio::sync::mpsc::unbounded_channel::<Back>();
    let mut watch = Some(store.watch_with_history(">").await.map_err(|e| format!("watching {}: {e}", cfg.bucket))?);
    // A broken watch is made again by a task of its own: nothing in this
    // loop may wait on the network, or the leases would not be timed out.
    let (rewatch_tx, mut rewatch) = tokio::sync::mpsc::unbounded_channel::<kv::Watch>();
    let mut tick = tokio::time::interval(cfg.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(node = cfg.node, incarnation, nats = %cfg.nats, "cluster host started");
    let mut leave_by = None;
    loop {
        tokio::select! {
            cmd = commands.recv(), if leave_by.is_none() => match cmd {
                Some(Command::Leave) => {
                    tracing::info!(node = cfg.node, "leaving the cluster");
                    leave_by = Some(Instant::now() + cfg.ownership.op_timeout * 4);
                    m.leave(Instant::now());
                }
                Some(Command::Halt) | None => break,
            },
            Some(w) = rewatch.recv() => watch = Some(w),
            entry = async { watch.as_mut().expect("guarded").next().await }, if watch.is_some() => match entry {
                Some(Ok(e)) => {
                    let written = e.operation == kv::Operation::Put;
                    match parse_key(&e.key) {
                        Some(Key::Lease(p)) if p.0 < cfg.ownership.partitions => {
                            let seen = if written { parse_holder(&e.value).map(|h| (h, e.revision)) } else { None };
                            m.on_lease(p, seen, Instant::now());
                        }
                        Some(Key::Member(n)) => {
                            view.set_address(n, if written { parse_value(&e.value).and_then(|v| v.1) } else { None });
                            m.on_member(n, written, Instant::now());
                        }
                        _ => tracing::warn!(key = %e.key, "unknown key in the lease bucket"),
                    }
                }
                // The watch broke (a server went away): start it over; it
                // delivers the latest of every key again.
                broken => {
                    let why = broken.and_then(|r| r.err()).map(|e| e.to_string()).unwrap_or_else(|| "ended".into());
                    tracing::warn!(error = %why, "lease watch broke; watching again");
                    watch = None;
                    let (store, tx, pause, timeout) = (store.clone(), rewatch_tx.clone(), cfg.tick, cfg.ownership.op_timeout);
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(pause).await;
                            if let Ok(Ok(w)) = tokio::time::timeout(timeout, store.watch_with_history(">")).await {
                                let _ = tx.send(w);
                                return;
                            }
                        }
                    });
                }
            },
            Some(b) = back.recv() => {
                let now = Instant::now();
                match b {
                    Back::Kv(id, a) => m.on_kv(id, a, now),
                    Back::Fence(id, a) => {
                        if let Some(r) = rep.as_mut() {
                            r.r.on_fence_answer(id, a);
                        }
                        m.on_fence(id, a, now)
                    }
                    Back::CaughtUp(p, last) => m.caught_up(p, last, now),
                    Back::Replayed(parts, lasts) => {
                        if let Some(r) = rep.as_mut() {
                            r.session = false;
                            for p in &parts {
                                r.replaying.remove(p);
                            }
                        }
                        for (p, last) in parts.into_iter().zip(lasts.unwrap_or_default()) {
                            m.caught_up(p, last, now);
                        }
                    }
                    Back::Append(id, a) => {
                        if let Some(p) = rep.as_mut().and_then(|r| r.r.appender.on_answer(id, a, now)) {
                            tracing::warn!(partition = p.0, "fenced out of a partition's log: another node owns it");
                            m.fenced_out(p, now);
                        }
                    }
                }
            }
            _ = ship_tick.tick(), if rep.is_some() => {
                if let (Some(r), Some(q)) = (rep.as_mut(), view.logs()) {
                    exchange_records(r, q, &mut m, &js, &cfg, &back_tx);
                    compact(r, q, &log, &cfg);
                    start_replays(r, &view, &log, &cfg, &back_tx);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                m.on_time(now);
                if let Some(w) = rep.as_ref().and_then(|r| r.warm.as_ref()) {
                    w.lock().expect("warm replica").set_cluster(m.live(), |p| holds(m.state(p)), now);
                }
            }
        }
        while let Some(o) = m.poll() {
            if let Some(r) = rep.as_mut() {
                r.r.on_output(&o, Instant::now());
            }
            carry(&cfg, Jet { store: &store, log: &log, js: &js }, &back_tx, &mut m, rep.as_mut(), &view, o);
        }
        publish(&m, &view, Instant::now());
        if m.left() {
            tracing::info!(node = cfg.node, "left the cluster");
            return Ok(());
        }
        if leave_by.is_some_and(|t| Instant::now() >= t) {
            tracing::warn!(node = cfg.node, "leaving the cluster took too long; the rest of its leases will expire");
            return Ok(());
        }
    }
    tracing::info!(node = cfg.node, "cluster host halted");
    Ok(())
}

/// Carries the shards' messages to other nodes and theirs to the shards
/// (`cluster::mail`), as two tasks of their own: plain NATS subjects, at
/// most once, since interest is refreshed and documents follow it.
async fn carry_mail(client: async_nats::Client, cfg: &HostConfig, view: Arc<ClusterView>) {
    let inbox = format!("{}.{}", cfg.mail_prefix, cfg.node);
    match client.subscribe(inbox.clone()).await {
        Ok(mut sub) => {
            let view = view.clone();
            tokio::spawn(async move {
                let Some(mail) = view.mail() else { return };
                while let Some(m) = sub.next().await {
                    match crate::cluster::mail::decode(&m.payload) {
                        Some((from, msg)) => drop(mail.deliver(from, msg)),
                        None => tracing::warn!(subject = %m.subject, "unreadable message from another node"),
                    }
                }
            });
        }
        Err(e) => tracing::error!(subject = %inbox, error = %e, "cannot receive from other nodes"),
    }
    let prefix = cfg.mail_prefix.clone();
    tokio::spawn(async move {
        let Some(mail) = view.mail() else { return };
        // The shards never wake this thread: it looks every 2 ms, a
        // latency well under a NOTIFY's and a cost of nothing when idle.
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut dropped_seen, mut warned) = (0, Instant::now());
        loop {
            tick.tick().await;
            let dropped = mail.dropped();
            // Said at most once a second.
            if dropped != dropped_seen && warned.elapsed() >= Duration::from_secs(1) {
                warned = Instant::now();
                tracing::warn!(dropped = dropped - dropped_seen, total = dropped, "messages between nodes dropped at a full queue; refreshes repair them");
                dropped_seen = dropped;
            }
            while let Some((to, bytes)) = mail.next_outbound() {
                if let Err(e) = client.publish(format!("{prefix}.{to}"), bytes.into()).await {
                    tracing::debug!(to, error = %e, "message to another node lost");
                }
            }
        }
    });
}

/// The lease bucket and the log stream, made if they do not exist.
async fn setup(cfg: &HostConfig, js: &jetstream::Context) -> Result<(kv::Store, stream::Stream), String> {
    // The bucket's stream is made here rather than by `create_key_value`,
    // which first reads the account's info in a form nats-server 2.9
    // (Debian's) does not send. The configuration is what a KV bucket is.
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{}", cfg.bucket),
        subjects: vec![format!("$KV.{}.>", cfg.bucket)],
        max_messages_per_subject: 1,
        max_age: cfg.ownership.ttl,
        duplicate_window: cfg.ownership.ttl.min(Duration::from_secs(120)),
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("lease bucket {}: {e}", cfg.bucket))?;
    let store = js.get_key_value(cfg.bucket.as_str()).await.map_err(|e| format!("lease bucket {}: {e}", cfg.bucket))?;
    js.get_or_create_stream(stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.log_prefix)],
        num_replicas: cfg.replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("log stream {}: {e}", cfg.stream))?;
    let log = js.get_stream(cfg.stream.as_str()).await.map_err(|e| format!("log stream {}: {e}", cfg.stream))?;
    Ok((store, log))
}

/// The handles to JetStream: the lease bucket, the log stream, and the context appends go through.
struct Jet<'a> {
    store: &'a kv::Store,
    log: &'a stream::Stream,
    js: &'a jetstream::Context,
}

/// Hands one output of the machine to JetStream (as a task whose answer
/// comes back on `back`) or settles it here.
fn carry(
    cfg: &HostConfig,
    jet: Jet<'_>,
    back: &tokio::sync::mpsc::UnboundedSender<Back>,
    m: &mut Ownership,
    rep: Option<&mut Replication>,
    view: &Arc<ClusterView>,
    o: Output,
) {
    let timeout = cfg.ownership.op_timeout;
    let Jet { store, log, js } = jet;
    match o {
        Output::Kv { id, op } => {
            let (store, back, advertise) = (store.clone(), back.clone(), cfg.advertise);
            tokio::spawn(async move {
                let answer = tokio::time::timeout(timeout, kv_op(&store, op, advertise)).await.unwrap_or(KvAnswer::Failed);
                let _ = back.send(Back::Kv(id, answer));
            });
        }
        Output::Fence { id, partition, holder, expected_last } => {
            let (js, back) = (js.clone(), back.clone());
            let subject = format!("{}.{}", cfg.log_prefix, partition.key());
            tokio::spawn(async move {
                let answer =
                    tokio::time::timeout(timeout, append_expecting(&js, subject, expected_last, lease_value(holder))).await.unwrap_or(FenceAnswer::Failed);
                let _ = back.send(Back::Fence(id, answer));
            });
        }
        Output::CatchUp(p) => {
            let subject = format!("{}.{}", cfg.log_prefix, p.key());
            match (rep, view.logs()) {
                (Some(r), Some(_)) => {
                    // The machine asks again while a long replay runs: once
                    // per partition, in the next session (`start_replays`).
                    if r.replaying.insert(p) {
                        r.queued_replays.push(p);
                        r.queued_since.get_or_insert_with(Instant::now);
                    }
                }
                _ => {
                    let (log, back) = (log.clone(), back.clone());
                    tokio::spawn(async move {
                        // No shards to replay into (the host alone, in tests):
                        // the log's end is what the marker must expect.
                        match tokio::time::timeout(timeout, last_sequence(&log, &subject)).await {
                            Ok(Ok(last)) => drop(back.send(Back::CaughtUp(p, last))),
                            // Failed: the machine asks again after its timeout.
                            Ok(Err(e)) => tracing::warn!(partition = p.0, error = %e, "reading the end of a partition log"),
                            Err(_) => {}
                        }
                    });
                }
            }
        }
        Output::Serve(p) => {
            tracing::info!(partition = p.0, "serving partition");
            if let Some(r) = rep {
                r.served_before.insert(p);
            }
        }
        Output::Stop(p) => {
            tracing::info!(partition = p.0, "stopped serving partition");
            // With shards, the replicator reports it drained once its
            // records are in; without, nothing is in flight.
            if rep.is_none() {
                m.drained(p, Instant::now());
            }
        }
    }
}

/// Every 2 ms: takes the shards' records into the appender, starts the
/// appends it has ready, tells the shards what settled or was abandoned,
/// and reports stopped partitions drained once their records are in.
fn exchange_records(
    r: &mut Replication,
    q: &LogQueues,
    m: &mut Ownership,
    js: &jetstream::Context,
    cfg: &HostConfig,
    back: &tokio::sync::mpsc::UnboundedSender<Back>,
) {
    let now = Instant::now();
    let r = &mut r.r;
    for shard in 0..q.shards() {
        while let Some(s) = q.next_shipped(shard) {
            r.appender.submit(shard, s.seq, s.partition, s.bytes);
        }
    }
    while let Some(a) = r.appender.poll(now) {
        let (js, back, timeout) = (js.clone(), back.clone(), cfg.ownership.op_timeout);
        let subject = format!("{}.{}", cfg.log_prefix, a.partition.key());
        tokio::spawn(async move {
            let answer =
                tokio::time::timeout(timeout, append(&js, subject, a.expected_last, Some(&a.msg_id), a.payload.into())).await.unwrap_or(FenceAnswer::Failed);
            let _ = back.send(Back::Append(a.id, answer));
        });
    }
    for shard in 0..q.shards() {
        q.set_settled(shard, r.appender.settled(shard));
        q.abandon(shard, r.appender.take_abandoned(shard));
    }
    for p in r.take_drained(now) {
        m.drained(p, now);
    }
}

async fn kv_op(store: &kv::Store, op: KvOp, advertise: Option<SocketAddrV4>) -> KvAnswer {
    use kv::{CreateErrorKind, UpdateErrorKind};
    match op {
        KvOp::Create { key, holder } => match store.create(key_name(key), lease_value(holder)).await {
            Ok(revision) => KvAnswer::Done { revision },
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => KvAnswer::Conflict,
            Err(_) => KvAnswer::Failed,
        },
        KvOp::Update { key, holder, revision } => match store.update(key_name(key), lease_value(holder), revision).await {
            Ok(revision) => KvAnswer::Done { revision },
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => KvAnswer::Conflict,
            Err(_) => KvAnswer::Failed,
        },
        KvOp::Delete { key, revision } => match store.delete_expect_revision(key_name(key), Some(revision)).await {
            // The delete marker's revision is not returned; the machine does not need it.
            Ok(()) => KvAnswer::Done { revision: 0 },
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => KvAnswer::Conflict,
            Err(_) => KvAnswer::Failed,
        },
        KvOp::Put { key, holder } => match store.put(key_name(key), member_value(holder, advertise)).await {
            Ok(revision) => KvAnswer::Done { revision },
            Err(_) => KvAnswer::Failed,
        },
        KvOp::Remove { key } => match store.delete(key_name(key)).await {
            Ok(()) => KvAnswer::Done { revision: 0 },
            Err(_) => KvAnswer::Failed,
        },
    }
}

/// Starts a checkpoint of the logs when they have grown enough, and purges
/// them once it is in.
fn compact(rep: &mut Replication, q: &LogQueues, log: &stream::Stream, cfg: &HostConfig) {
    let appender = &rep.r.appender;
    let c = &mut rep.compaction;
    let appended = appender.counters.appended_records;
    match &c.pending {
        None if appended - c.since >= c.threshold => {
            c.generation += 1;
            c.since = appended;
            let open: Vec<(Partition, u64)> = Partition::all(cfg.ownership.partitions).filter_map(|p| appender.last_of(p).map(|l| (p, l))).collect();
            tracing::info!(generation = c.generation, partitions = open.len(), "checkpointing the partition logs");
            c.pending = Some(open);
            q.ask_checkpoint(c.generation);
        }
        Some(open) => {
            let shipped: Option<Vec<u64>> = (0..q.shards()).map(|s| q.checkpoint_of(s, c.generation).filter(|&last| q.settled(s) >= last)).collect();
            if shipped.is_none() {
                return;
            }
            // Only the partitions still written here: a purge is not fenced,
            // and a new owner's log is its own.
            let purges: Vec<(Partition, u64)> = open.iter().copied().filter(|&(p, _)| appender.is_open(p)).collect();
            let written = appended - c.since;
            c.threshold = c.min.max(2 * written);
            c.pending = None;
            tracing::info!(generation = c.generation, partitions = purges.len(), records = written, "partition logs checkpointed; purging");
            for (p, upto) in purges {
                // Readers of the log that may have missed removals in what
                // is purged (a warm replica behind) drop what is older.
                rep.r.appender.note(p, replication::purge_note(upto));
                let (log, subject) = (log.clone(), format!("{}.{}", cfg.log_prefix, p.key()));
                tokio::spawn(async move {
                    // Keeps the messages from `upto` on: the subject's last
                    // message, which the node's next append expects, is
                    // never purged (a partition with no keys has nothing
                    // in the checkpoint to follow it).
                    if let Err(e) = log.purge().filter(subject.as_str()).sequence(upto).await {
                        tracing::warn!(subject, error = %e, "purging a partition log");
                    }
                });
            }
        }
        None => {}
    }
}

/// The stream sequence of `subject`'s last message; 0 if it has none.
async fn last_sequence(log: &stream::Stream, subject: &str) -> Result<u64, String> {
    match log.get_last_raw_message_by_subject(subject).await {
        Ok(msg) => Ok(msg.sequence),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether a partition in `state` is past its take-over's replay here:
/// a warm replica no longer keeps it.
fn holds(state: ownership::State) -> bool {
    use ownership::State::*;
    matches!(state, Fencing | Serving | Draining { .. } | Releasing)
}

/// How long a take-over waits for the warm replica to read up to the
/// stream's end before it reads the partitions' logs itself.
const WARM_WAIT: Duration = Duration::from_secs(2);

/// Keeps the warm replica: reads the log stream with one ordered consumer
/// from its first message, then follows it as it grows; starts again
/// from the first message when the replica wants a new pass, and from
/// where it stopped when the consumer breaks. Reads nothing while the
/// replica keeps nothing (a single node reads none of its own appends).
async fn follow(log: stream::Stream, prefix: String, warm: Arc<Mutex<WarmReplica>>) {
    use jetstream::consumer::{DeliverPolicy, pull};
    let mut started = false;
    loop {
        let from = {
            let mut w = warm.lock().expect("warm replica");
            if w.pass_due(Instant::now()) {
                w.start_pass();
                tracing::info!(partitions = w.kept(), "warm replica: reading the partition logs from their start");
                started = true;
            } else if w.kept() == 0 {
                w.idle();
                started = false;
            }
            started.then(|| w.resume_from())
        };
        let Some(from) = from else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let policy = if from <= 1 { DeliverPolicy::All } else { DeliverPolicy::ByStartSequence { start_sequence: from } };
        let mut messages = match log.create_consumer(pull::OrderedConfig { deliver_policy: policy, ..Default::default() }).await {
            Ok(c) => match c.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "warm replica: reading the partition logs; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "warm replica: reading the partition logs; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            tokio::select! {
                m = messages.next() => {
                    let msg = match m {
                        Some(Ok(msg)) => msg,
                        broken => {
                            let why = broken.and_then(|r| r.err()).map(|e| e.to_string()).unwrap_or_else(|| "ended".into());
                            tracing::warn!(error = %why, "warm replica: the log consumer broke; resuming");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            break;
                        }
                    };
                    let Ok(info) = msg.info() else { continue };
                    let (seq, pending) = (info.stream_sequence, info.pending);
                    let mut w = warm.lock().expect("warm replica");
                    if let Some(p) = subject_partition(&msg.subject, &prefix) {
                        w.on_message(seq, p, &msg.payload);
                    }
                    if pending == 0 {
                        w.caught_up();
                    }
                    if w.pass_due(Instant::now()) || w.kept() == 0 {
                        break;
                    }
                }
                // Idle: at the stream's end, perhaps (an ordered consumer's
                // last message before a pause says so, an empty stream does not).
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Ok(info) = log.get_info().await {
                        let mut w = warm.lock().expect("warm replica");
                        if info.state.last_sequence <= w.position() {
                            w.caught_up();
                        }
                        if w.pass_due(Instant::now()) || w.kept() == 0 {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// The warm replica's records of those of `parts` it keeps, once it has
/// read up to the stream's end (read now, after their old owner stopped),
/// or of none if it does not get there within [`WARM_WAIT`].
async fn take_warm(log: &stream::Stream, warm: &Mutex<WarmReplica>, parts: &[(Partition, bool)]) -> HashMap<Partition, Taken> {
    let mut taken = HashMap::new();
    if !parts.iter().any(|&(p, _)| warm.lock().expect("warm replica").is_warm(p)) {
        return taken;
    }
    let end = match log.get_info().await {
        Ok(info) => info.state.last_sequence,
        Err(e) => {
            tracing::warn!(error = %e, "reading the log stream's end; the take-over reads the logs");
            return taken;
        }
    };
    let deadline = Instant::now() + WARM_WAIT;
    loop {
        {
            let w = warm.lock().expect("warm replica");
            let behind = parts.iter().any(|&(p, _)| w.complete_up_to(p).is_some_and(|upto| upto < end));
            if !behind {
                drop(w);
                let mut w = warm.lock().expect("warm replica");
                for &(p, _) in parts {
                    if let Some(t) = w.take(p, end) {
                        taken.insert(p, t);
                    }
                }
                return taken;
            }
        }
        if Instant::now() >= deadline {
            tracing::warn!(end, "the warm replica did not reach the log stream's end in time; the take-over reads the logs");
            return taken;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts a replay session for the partitions queued, if none runs.
fn start_replays(r: &mut Replication, view: &Arc<ClusterView>, log: &stream::Stream, cfg: &HostConfig, back: &tokio::sync::mpsc::UnboundedSender<Back>) {
    // A node taking over takes its partitions in waves (`takes_at_once`),
    // their catch-ups a few milliseconds apart: gathered for a moment, they
    // share one pass over the stream instead of a pass per wave.
    if r.session || r.queued_since.is_none_or(|t| t.elapsed() < REPLAY_GATHER) {
        return;
    }
    r.session = true;
    r.queued_since = None;
    let parts: Vec<(Partition, bool)> = std::mem::take(&mut r.queued_replays).into_iter().map(|p| (p, r.served_before.contains(&p))).collect();
    let (log, back, handed, view, prefix, node, warm) =
        (log.clone(), back.clone(), r.handed.clone(), view.clone(), cfg.log_prefix.clone(), cfg.node, r.warm.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let Some(q) = view.logs() else { return };
        let names: Vec<Partition> = parts.iter().map(|&(p, _)| p).collect();
        let lasts = match tokio::time::timeout(REPLAY_TIMEOUT, replay(&log, &prefix, &parts, q, &handed, warm.as_deref())).await {
            Ok(Ok(read)) => {
                let records: u64 = read.iter().map(|r| r.records).sum();
                let warm = read.iter().filter(|r| r.warm).count();
                tracing::info!(
                    node,
                    partitions = read.len(),
                    warm,
                    cold = read.len() - warm,
                    records,
                    ms = started.elapsed().as_millis() as u64,
                    "partition logs replayed"
                );
                for (&p, r) in names.iter().zip(&read) {
                    tracing::info!(node, partition = p.0, records = r.records, last = r.last, warm = r.warm, "partition log replayed");
                }
                Some(read.into_iter().map(|r| r.last).collect())
            }
            Ok(Err(e)) => {
                tracing::warn!(partitions = names.len(), error = %e, "replaying partition logs");
                None
            }
            Err(_) => {
                tracing::warn!(partitions = names.len(), "replaying partition logs took too long");
                None
            }
        };
        let _ = back.send(Back::Replayed(names, lasts));
    });
}

/// The partition a log subject `<prefix>.p0042` is for.
fn subject_partition(subject: &str, prefix: &str) -> Option<Partition> {
    subject.strip_prefix(prefix)?.strip_prefix(".p")?.parse().ok().map(Partition)
}

/// One partition read back by [`replay`].
struct ReadBack {
    /// The log's last sequence, which the node's marker then expects.
    last: u64,
    records: u64,
    /// From the warm replica rather than the log.
    warm: bool,
}

/// Reads the logs of `parts` (each with whether the shards must forget it
/// first) back into the shards. Those the warm replica keeps come from it
/// ([`take_warm`]); for the others (all, without a replica), each log's last sequence first, then the
/// stream once from its start to the highest of them, through one ordered
/// consumer, handing each record of a wanted partition (up to its log's
/// last sequence) to the shard that owns its key; then waits until every
/// shard has put back what it was handed. One pass for all: a node taking
/// over hundreds of partitions reads the stream once, not once per
/// partition (nats-server 2.9 took about 2 s to start a consumer filtered
/// on one partition's subject of a 100,000-message stream, and reading
/// message by message by subject ran at about 4,000 messages a second).
async fn replay(
    log: &stream::Stream,
    prefix: &str,
    parts: &[(Partition, bool)],
    q: &LogQueues,
    handed: &[AtomicU64],
    warm: Option<&Mutex<WarmReplica>>,
) -> Result<Vec<ReadBack>, String> {
    use jetstream::consumer::{DeliverPolicy, pull};
    let shards = q.shards();
    let from_warm = match warm {
        Some(w) => take_warm(log, w, parts).await,
        None => HashMap::new(),
    };
    let mut wanted: HashMap<Partition, (u64, u64)> = HashMap::new();
    for &(p, _) in parts {
        if !from_warm.contains_key(&p) {
            wanted.insert(p, (last_sequence(log, &format!("{prefix}.{}", p.key())).await?, 0));
        }
    }
    let mut wait_for = vec![0u64; shards as usize];
    // Ahead of the records, in each shard's queue.
    for &(p, forget) in parts {
        if forget {
            for shard in 0..shards {
                hand(q, handed, &mut wait_for, shard, crate::shard::replica::forget_item(p)).await;
            }
        }
    }
    for t in from_warm.values() {
        for r in &t.records {
            let Ok(record) = Record::decode(r) else { continue };
            hand(q, handed, &mut wait_for, record.owner(shards), r.clone()).await;
        }
    }
    let end = wanted.values().map(|w| w.0).max().unwrap_or(0);
    tracing::debug!(partitions = parts.len(), end, "partition logs' ends read; reading the stream");
    if end > 0 {
        let consumer = log
            .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
            .await
            .map_err(|e| format!("reading the partition logs: {e}"))?;
        let mut messages = consumer.messages().await.map_err(|e| format!("reading the partition logs: {e}"))?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| format!("reading the partition logs: {e}"))?;
            let seq = msg.info().map_err(|e| format!("reading the partition logs: {e}"))?.stream_sequence;
            if let Some(p) = subject_partition(&msg.subject, prefix)
                && let Some(w) = wanted.get_mut(&p)
                && seq <= w.0
            {
                for r in replication::decode_batch(&msg.payload).unwrap_or_default() {
                    // The log's notes are for warm replicas; the shards take records only.
                    if replication::read_purge_note(r).is_some() {
                        continue;
                    }
                    let Ok(record) = Record::decode(r) else {
                        tracing::warn!(subject = %msg.subject, seq, "a record in a partition log does not read; skipped");
                        continue;
                    };
                    hand(q, handed, &mut wait_for, record.owner(shards), r.into()).await;
                    w.1 += 1;
                }
            }
            if seq >= end {
                break;
            }
        }
    }
    tracing::debug!(partitions = parts.len(), "stream read; waiting for the shards to put the records back");
    // Each shard puts back in the order handed: past these counts, every
    // record read is back.
    while (0..shards).any(|s| q.replayed(s) < wait_for[s as usize]) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(parts
        .iter()
        .map(|(p, _)| match from_warm.get(p) {
            Some(t) => ReadBack { last: t.last, records: t.records.len() as u64, warm: true },
            None => ReadBack { last: wanted[p].0, records: wanted[p].1, warm: false },
        })
        .collect())
}

/// Hands `shard` one item to put back, waiting for room (the shard puts
/// back 2,000 a tick), and notes how far its count must reach.
async fn hand(q: &LogQueues, handed: &[AtomicU64], wait_for: &mut [u64], shard: u16, mut bytes: Box<[u8]>) {
    while let Err(b) = q.replay(shard, bytes) {
        bytes = b;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    wait_for[shard as usize] = handed[shard as usize].fetch_add(1, Ordering::AcqRel) + 1;
}

/// Publishes `payload` on `subject` only if the subject's last message is
/// at stream sequence `expected_last` (0: the subject is empty); under
/// `msg_id`, if given, for JetStream's duplicate window (a retry of an
/// append that landed is answered with where it landed).
async fn append(js: &jetstream::Context, subject: String, expected_last: u64, msg_id: Option<&str>, payload: bytes::Bytes) -> FenceAnswer {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected_last.to_string().as_str());
    if let Some(id) = msg_id {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    }
    match js.publish_with_headers(subject, headers, payload).await {
        Ok(ack) => match ack.await {
            Ok(ack) => FenceAnswer::Appended { seq: ack.sequence },
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => FenceAnswer::Conflict,
            Err(_) => FenceAnswer::Failed,
        },
        Err(_) => FenceAnswer::Failed,
    }
}

/// [`append`] of a fence marker, without a message id.
pub async fn append_expecting(js: &jetstream::Context, subject: String, expected_last: u64, payload: bytes::Bytes) -> FenceAnswer {
    append(js, subject, expected_last, None, payload).await
}

/// Writes the machine's view into the atomics the shards read: each
/// partition's owner, and for those this node serves, until when its lease
/// lets it (the shards check that themselves, should this thread stall).
fn publish(m: &Ownership, view: &ClusterView, now: Instant) {
    for p in Partition::all(view.partitions()) {
        view.set_owner(p, m.route(p, now), m.valid_until(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_read_back() {
        for k in [Key::Lease(Partition(42)), Key::Member(7)] {
            assert_eq!(parse_key(&key_name(k)), Some(k));
        }
        let h = Holder { node: 3, incarnation: u64::MAX };
        assert_eq!(parse_holder(&lease_value(h)), Some(h));
        assert_eq!(parse_holder(b"3"), None);
        let a: SocketAddrV4 = "10.1.2.3:5060".parse().unwrap();
        assert_eq!(parse_value(&member_value(h, Some(a))), Some((h, Some(a))));
        assert_eq!(parse_key("x1"), None);
        let subject = format!("presence.log.{}", Partition(42).key());
        assert_eq!(subject_partition(&subject, "presence.log"), Some(Partition(42)));
        assert_eq!(subject_partition("presence.node.3", "presence.log"), None);
    }
}
