//! Server configuration: an embedded default that runs with no file
//! (loopback, port 5060, one shard per core, state in memory), a TOML file
//! that overrides it, and command-line flags that override both.

use crate::core::SipTimers;
use crate::core::limits::Caps;
use crate::core::overload::OverloadConfig;
use crate::core::trust::TrustList;
use crate::presence::authz::{Action, Policy, Rule};
use crate::presence::peu::{Mode, PeuConfig};
use crate::presence::publication::PublishConfig;
use crate::presence::watchers::WatchConfig;
use crate::registrar::RegistrarConfig;
use crate::shard::{Accept, ConfiguredAgent};
use crate::sip::Limits;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// UDP and TCP listen address. Port 0 picks a free port (for tests).
    pub listen: SocketAddr,
    /// Number of shards; 0 means one per online CPU.
    pub shards: usize,
    /// Pin shard `i` to CPU `i`.
    pub pin_cores: bool,
    pub limits: LimitsConfig,
    pub timers: TimersConfig,
    pub io: IoConfig,
    pub log: LogConfig,
    pub registrar: RegistrarSection,
    pub presence: PresenceSection,
    pub peu: PeuSection,
    pub security: SecuritySection,
    pub overload: OverloadSection,
    pub capacity: CapacitySection,
    pub storage: StorageSection,
    pub cluster: ClusterSection,
}

/// Membership of a cluster of nodes (`cluster::ownership`, carried to
/// NATS JetStream by `reactor::cluster_host`). Off while `node` is 0.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id in the cluster, from 1; 0: not in a cluster.
    pub node: u32,
    /// The JetStream servers, `nats://host:port`, comma-separated.
    pub nats: String,
    /// Partitions of the presentities: the same on every node, for the
    /// life of the cluster's data.
    pub partitions: u16,
    /// A lease's time to live in the store: a dead node's partitions are
    /// taken over this long (plus a tenth of a second) after its last renewal.
    pub lease_ttl_ms: u64,
    /// JetStream replicas of the lease bucket and the logs.
    pub replicas: usize,
    /// The SIP address other nodes forward requests to (IPv4); by
    /// default the listen address, which must then be a specific one.
    pub advertise: Option<std::net::SocketAddrV4>,
    /// When a change of a presentity is acknowledged: "local" once made
    /// (its record reaches the partition's log a few milliseconds later,
    /// and a crash in between loses it); "replicated" once the log has
    /// acknowledged its record (`cluster::replication`).
    pub durability: Durability,
    /// Records appended to the partition logs before they are checkpointed
    /// and purged, at the least (twice the last checkpoint otherwise).
    pub log_compact_min: u64,
    /// Most MiB of records the warm replica of the partitions this node
    /// would inherit keeps (`cluster::warm`); 0: none (a take-over then
    /// reads the logs).
    pub warm_replica_mb: u64,
    /// How long a request waits for its partition's owner while no node
    /// serves it (a move, a take-over), before 503 + Retry-After; 0: at once.
    pub move_wait_ms: u64,
    /// Most requests, and their bytes, waiting so per shard; beyond: 503.
    pub move_queue: usize,
    pub move_queue_bytes: usize,
    /// How long a node waits for the final response to a request it
    /// forwarded to the partition's owner before it answers 503 itself
    /// (the owner may be dead with its lease running); 0: never.
    pub hop_timeout_ms: u64,
}

/// `[cluster] durability`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    #[default]
    Local,
    Replicated,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            node: 0,
            nats: "nats://127.0.0.1:4222".into(),
            partitions: crate::cluster::partition::DEFAULT_PARTITIONS,
            lease_ttl_ms: 3000,
            replicas: 1,
            advertise: None,
            durability: Durability::Local,
            log_compact_min: 1_000_000,
            warm_replica_mb: 1024,
            move_wait_ms: 800,
            move_queue: 10_000,
            move_queue_bytes: 16 << 20,
            hop_timeout_ms: 900,
        }
    }
}

impl ClusterSection {
    /// The shards' bounds on requests waiting for an owner.
    pub fn move_wait(&self) -> crate::shard::waiting::MoveWait {
        crate::shard::waiting::MoveWait { wait: Duration::from_millis(self.move_wait_ms), max_requests: self.move_queue, max_bytes: self.move_queue_bytes }
    }

    /// The cluster host's configuration, if this node is in a cluster, for
    /// a server bound to `bound`: it advertises `advertise`, or else the
    /// bound address if other nodes can reach it (IPv4, not unspecified).
    pub fn host(&self, bound: SocketAddr) -> Option<crate::reactor::cluster_host::HostConfig> {
        if self.node == 0 {
            return None;
        }
        let reachable = match bound {
            SocketAddr::V4(a) if !a.ip().is_unspecified() => Some(a),
            _ => None,
        };
        let ttl = Duration::from_millis(self.lease_ttl_ms);
        let ownership = crate::cluster::ownership::Config {
            partitions: self.partitions,
            ttl,
            renew_every: ttl / 3,
            op_timeout: (ttl / 6).min(Duration::from_millis(500)),
            ..Default::default()
        };
        Some(crate::reactor::cluster_host::HostConfig {
            replicas: self.replicas,
            log_compact_min: self.log_compact_min.max(1),
            warm_replica_bytes: usize::try_from(self.warm_replica_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
            ownership,
            advertise: self.advertise.or(reachable),
            ..crate::reactor::cluster_host::HostConfig::new(&self.nats, self.node)
        })
    }
}

/// Durable state (`storage::journal`). Without `dir` the server keeps its
/// state in memory only, as the embedded default does.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Where each shard keeps its journal (`DIR/gen-N/shard-I.journal`).
    pub dir: Option<std::path::PathBuf>,
    /// "always": a change is answered once its record is synced (group
    /// commit); "interval": written and synced within `fsync_interval_ms`;
    /// "never": written as often, never synced.
    pub fsync: String,
    pub fsync_interval_ms: u64,
    /// Most bytes a shard's journal holds unwritten before it refuses new
    /// changes with 503 (its device is not keeping up).
    pub max_pending_bytes: usize,
    /// A shard's journal segment size past which it moves to a new
    /// segment, checkpoints every key into it and removes the older ones
    /// (at least twice the last checkpoint's size).
    pub compact_after_bytes: u64,
    /// After a start, how many restored subscriptions ask their
    /// presentities per 5 ms tick and shard, while the shard serves:
    /// more re-checks the watchers sooner, fewer stalls traffic less.
    pub restart_asks_per_tick: usize,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            dir: None,
            fsync: "interval".into(),
            fsync_interval_ms: 10,
            max_pending_bytes: 64 << 20,
            compact_after_bytes: 256 << 20,
            restart_asks_per_tick: crate::shard::durable::REWATCH_ASKS_PER_TICK,
        }
    }
}

/// What the node is expected to hold, across its shards: each shard sizes
/// its tables for its share when it starts, so that no request pays for a
/// table doubling on the way up (`shard::Expected`). 0: grow as needed.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CapacitySection {
    pub expected_presentities: usize,
    pub expected_subscriptions: usize,
}

/// Overload control: a shard whose requests wait longer than `target_ms`
/// for a whole `interval_ms` is overloaded until one waits less than half
/// of it again; meanwhile it drains its socket into an admission queue of
/// at most `queue_messages` and `queue_bytes`, and new initial requests
/// that would wait past `deadline_ms` are shed at once, one in
/// `refuse_every` with a 503 + Retry-After, the others dropped unanswered
/// (RFC 7339 clients always get the 503).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OverloadSection {
    /// Queueing delay that counts as a standing queue, ms (0: never shed).
    pub target_ms: u64,
    pub interval_ms: u64,
    pub deadline_ms: u64,
    pub refuse_every: u32,
    pub queue_messages: usize,
    pub queue_bytes: usize,
}

impl Default for OverloadSection {
    fn default() -> Self {
        let o = OverloadConfig::default();
        OverloadSection {
            target_ms: o.target.as_millis() as u64,
            interval_ms: o.interval.as_millis() as u64,
            deadline_ms: o.deadline.as_millis() as u64,
            refuse_every: o.refuse_every,
            queue_messages: o.queue_messages,
            queue_bytes: o.queue_bytes,
        }
    }
}

/// The network elements the server trusts, and whom it serves.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// Trusted network elements (S-CSCF, I-CSCF, application servers):
    /// "IP", "IP:port", "[IPv6]:port" or "IP/prefix". `registrar.
    /// trusted_scscf` entries are trusted as well. A trusted element may
    /// register on a UE's behalf, assert identities (P-Asserted-Identity)
    /// and have NOTIFYs sent where its Contact and Record-Route say.
    pub trusted: Vec<String>,
    /// "any": serve every source (the embedded default, for development);
    /// "trusted": requests from elsewhere get 403.
    pub accept: Accept,
}

impl Default for SecuritySection {
    fn default() -> Self {
        SecuritySection { trusted: Vec::new(), accept: Accept::Any }
    }
}

/// Presence by subscription: the server SUBSCRIBEs to presentities'
/// presence user agents and takes their NOTIFYs as publications.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PeuSection {
    /// "watched": only while the presentity has watchers (and
    /// `grace_seconds` after the last leaves); "always"; or "off".
    pub mode: Mode,
    /// How long agent subscriptions outlive the last watcher, seconds.
    pub grace_seconds: u64,
    /// Expires of the server's SUBSCRIBEs, seconds (refreshed at 4/5).
    pub expires: u32,
    /// Reach agents of third-party registrations through the S-CSCF that
    /// registered them (Request-URI the AOR, Route the S-CSCF).
    pub route_via_scscf: bool,
    /// Most agents subscribed per presentity.
    pub max_agents_per_presentity: usize,
    /// First wait before subscribing again after a failure, ms; doubles
    /// per failure in a row up to `retry_max_seconds`. An agent's
    /// Retry-After takes precedence.
    pub retry_base_ms: u64,
    pub retry_max_seconds: u64,
    /// Agents that need no registration: `[[peu.agent]] presentity =
    /// "sip:alice@example.com" uri = "sip:pua@192.0.2.9:5062"` (UDP, a
    /// literal IP host).
    pub agent: Vec<AgentEntry>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub presentity: String,
    pub uri: String,
}

impl Default for PeuSection {
    fn default() -> Self {
        let p = PeuConfig::default();
        PeuSection {
            mode: p.mode,
            grace_seconds: p.grace.as_secs(),
            expires: p.expires,
            route_via_scscf: p.route_via_scscf,
            max_agents_per_presentity: p.max_agents_per_presentity,
            retry_base_ms: p.retry_base.as_millis() as u64,
            retry_max_seconds: p.retry_max.as_secs(),
            agent: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSection {
    /// Shortest publication accepted, seconds (423 with Min-Expires below).
    pub publish_min_expires: u32,
    /// Longest publication granted, seconds.
    pub publish_max_expires: u32,
    /// Publication length when the PUBLISH names none, seconds.
    pub publish_default_expires: u32,
    /// Shortest subscription accepted, seconds (423 below).
    pub subscribe_min_expires: u32,
    /// Longest subscription granted, seconds.
    pub subscribe_max_expires: u32,
    /// Subscription length when the SUBSCRIBE names none, seconds.
    pub subscribe_default_expires: u32,
    /// Least time between two NOTIFYs of one subscription (RFC 6446
    /// style); changes in between are coalesced into the next one.
    pub notify_min_interval_ms: u64,
    /// Most NOTIFYs one shard keeps in flight; more wait for answers.
    pub notify_window: usize,
    /// What watchers no rule matches get: allow, block, polite-block or
    /// confirm.
    pub default_authorization: Action,
    /// Authorization rules, first match wins:
    /// `[[presence.authorization]] presentity = "sip:alice@example.com"
    /// watcher = "example.org" action = "block"`.
    pub authorization: Vec<Rule>,
}

impl Default for PresenceSection {
    fn default() -> Self {
        let p = PublishConfig::default();
        let w = WatchConfig::default();
        PresenceSection {
            publish_min_expires: p.min_expires,
            publish_max_expires: p.max_expires,
            publish_default_expires: p.default_expires,
            subscribe_min_expires: w.min_expires,
            subscribe_max_expires: w.max_expires,
            subscribe_default_expires: w.default_expires,
            notify_min_interval_ms: w.min_notify_interval.as_millis() as u64,
            notify_window: w.window,
            default_authorization: Action::Allow,
            authorization: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarSection {
    /// Shortest registration accepted, seconds (423 with Min-Expires below).
    pub min_expires: u32,
    /// Longest registration granted, seconds (longer ones are shortened).
    pub max_expires: u32,
    /// Registration length when the REGISTER names none, seconds.
    pub default_expires: u32,
    /// S-CSCF addresses trusted to register on a UE's behalf (third-party
    /// REGISTER): "IP" (any port) or "IP:port". Empty by default.
    pub trusted_scscf: Vec<String>,
    /// SUBSCRIBE to the reg event (RFC 3680) at the S-CSCF of each
    /// third-party registration and apply its reginfo NOTIFYs.
    pub subscribe_reg_event: bool,
    /// Expires of those subscriptions, seconds.
    pub reg_event_expires: u32,
}

impl Default for RegistrarSection {
    fn default() -> Self {
        let r = RegistrarConfig::default();
        RegistrarSection {
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            default_expires: r.default_expires,
            trusted_scscf: Vec::new(),
            subscribe_reg_event: false,
            reg_event_expires: 3600,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest message accepted, head and body (513 above).
    pub max_message_size: usize,
    /// Most header lines in a message (513 above).
    pub max_headers: usize,
    /// Longest header line (513 above).
    pub max_header_len: usize,
    /// Most TCP connections one shard keeps open.
    pub max_tcp_connections_per_shard: usize,
    /// Server transactions per shard; a new request beyond gets 503.
    pub server_transactions_per_shard: usize,
    /// SUBSCRIBEs waiting for their presentity's shard, per shard (503).
    pub pending_asks_per_shard: usize,
    /// Watcher subscriptions held per shard (503).
    pub subscriptions_per_shard: usize,
    /// Subscriptions one watcher identity holds on a shard (403).
    pub subscriptions_per_watcher: usize,
    /// Publications of one presentity, PUBLISHed and from agents (403).
    pub publications_per_presentity: usize,
    /// Bytes of one presentity's publications together (413).
    pub document_size: usize,
    /// Bindings of one AOR (403).
    pub bindings_per_aor: usize,
    /// Retry-After of every 503 for capacity, seconds.
    pub retry_after_seconds: u32,
    /// Bytes waiting for one TCP peer; a peer that does not read and lets
    /// more pile up is closed.
    pub tcp_max_queued_bytes: usize,
    /// A TCP connection with no traffic for this long is closed, seconds
    /// (above the longest registration and subscription, so that a client
    /// that only refreshes keeps its connection).
    pub tcp_idle_timeout_seconds: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TimersConfig {
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IoConfig {
    /// Datagrams moved per recvmmsg/sendmmsg call.
    pub udp_batch: usize,
    /// SO_RCVBUF and SO_SNDBUF of each shard's UDP socket, bytes.
    pub socket_buffer: usize,
    /// Memory glommio registers with io_uring per shard. Small, so the
    /// server starts under an ordinary RLIMIT_MEMLOCK (8 MiB here).
    pub io_memory: usize,
    /// Capacity of each shard-to-shard queue.
    pub queue_capacity: usize,
    /// Transparent huge pages for the server's memory. Off by default: on
    /// first touch each 2 MiB page is zeroed inside the request that
    /// touched it, a stall of milliseconds (`reactor::memory`).
    pub transparent_huge_pages: bool,
    /// Time slice each shard thread asks the kernel's fair scheduler for,
    /// microseconds (Linux 6.12+; 0 keeps the kernel's default). Shorter
    /// slices let a shard that shares its core answer sooner, at the same
    /// share of the core (`reactor::sched`).
    pub sched_slice_us: u32,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace, or a tracing filter directive.
    pub level: String,
    /// "text" or "json".
    pub format: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:5060".parse().unwrap(),
            shards: 0,
            pin_cores: false,
            limits: LimitsConfig::default(),
            timers: TimersConfig::default(),
            io: IoConfig::default(),
            log: LogConfig::default(),
            registrar: RegistrarSection::default(),
            presence: PresenceSection::default(),
            peu: PeuSection::default(),
            security: SecuritySection::default(),
            overload: OverloadSection::default(),
            capacity: CapacitySection::default(),
            storage: StorageSection::default(),
            cluster: ClusterSection::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = Limits::default();
        let c = Caps::default();
        LimitsConfig {
            max_message_size: l.max_message_size,
            max_headers: l.max_headers,
            max_header_len: l.max_header_len,
            max_tcp_connections_per_shard: 50_000,
            server_transactions_per_shard: c.server_transactions,
            pending_asks_per_shard: c.pending_asks,
            subscriptions_per_shard: c.subscriptions,
            subscriptions_per_watcher: c.subscriptions_per_watcher,
            publications_per_presentity: c.publications_per_presentity,
            document_size: c.document_size,
            bindings_per_aor: c.bindings_per_aor,
            retry_after_seconds: c.retry_after,
            tcp_max_queued_bytes: 4 << 20,
            tcp_idle_timeout_seconds: 7500,
        }
    }
}

impl Default for TimersConfig {
    fn default() -> Self {
        let t = SipTimers::default();
        TimersConfig { t1_ms: t.t1.as_millis() as u64, t2_ms: t.t2.as_millis() as u64, t4_ms: t.t4.as_millis() as u64 }
    }
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig { udp_batch: 64, socket_buffer: 8 << 20, io_memory: 64 << 10, queue_capacity: 4096, transparent_huge_pages: false, sched_slice_us: 0 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into(), format: "text".into() }
    }
}

impl Config {
    /// Reads a TOML file; every key is optional and overrides the default.
    pub fn from_file(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Config::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values no shard could run with.
    pub fn validate(&self) -> Result<(), String> {
        if self.shards > 256 {
            return Err(format!("shards = {}: at most 256", self.shards));
        }
        let l = &self.limits;
        if l.max_headers == 0 || l.max_headers > crate::sip::MAX_HEADERS {
            return Err(format!("limits.max_headers = {}: must be 1..={}", l.max_headers, crate::sip::MAX_HEADERS));
        }
        if l.max_message_size < 512 || l.max_message_size > 65_535 {
            return Err(format!("limits.max_message_size = {}: must be 512..=65535", l.max_message_size));
        }
        if self.timers.t1_ms == 0 || self.timers.t2_ms < self.timers.t1_ms {
            return Err("timers: need t1_ms > 0 and t2_ms >= t1_ms".into());
        }
        if self.io.udp_batch == 0 || self.io.udp_batch > 1024 {
            return Err(format!("io.udp_batch = {}: must be 1..=1024", self.io.udp_batch));
        }
        let per_shard = self.expected_per_shard(self.shard_count() as u16);
        if per_shard.subscriptions > l.subscriptions_per_shard {
            return Err(format!(
                "capacity.expected_subscriptions = {} is {} a shard, above limits.subscriptions_per_shard = {}",
                self.capacity.expected_subscriptions, per_shard.subscriptions, l.subscriptions_per_shard
            ));
        }
        TrustList::parse(&self.registrar.trusted_scscf)?;
        TrustList::parse(&self.security.trusted)?;
        let c = &self.cluster;
        if c.node != 0 {
            if c.partitions == 0 {
                return Err("cluster.partitions must be at least 1".into());
            }
            if c.hop_timeout_ms > 32_000 {
                return Err(format!("cluster.hop_timeout_ms = {}: at most 32000", c.hop_timeout_ms));
            }
            if c.move_wait_ms > 32_000 {
                return Err(format!("cluster.move_wait_ms = {}: at most 32000 (a client gives up on a request after 32 s)", c.move_wait_ms));
            }
            if c.move_queue > 1_000_000 || c.move_queue_bytes > 1 << 30 {
                return Err("cluster.move_queue: at most 1000000 requests and 1 GiB (move_queue_bytes)".into());
            }
            if !(1000..=60_000).contains(&c.lease_ttl_ms) {
                return Err(format!("cluster.lease_ttl_ms = {}: must be 1000..=60000", c.lease_ttl_ms));
            }
            if !(1..=5).contains(&c.replicas) {
                return Err(format!("cluster.replicas = {}: must be 1..=5", c.replicas));
            }
            if c.nats.is_empty() {
                return Err("cluster.nats: the JetStream servers are needed when cluster.node is set".into());
            }
            let host = c.host(self.listen).expect("node set");
            if host.advertise.is_none() {
                return Err(format!("cluster: listen = {} is not an address other nodes can reach: set cluster.advertise", self.listen));
            }
            host.ownership.check().map_err(|e| format!("cluster: {e}"))?;
        }
        let r = &self.registrar;
        if r.min_expires > r.max_expires || r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            return Err("registrar: need min_expires <= default_expires <= max_expires".into());
        }
        let peu = &self.peu;
        if peu.expires < 60 || peu.max_agents_per_presentity == 0 || peu.retry_base_ms == 0 || peu.retry_max_seconds * 1000 < peu.retry_base_ms {
            return Err("peu: need expires >= 60, max_agents_per_presentity >= 1, 0 < retry_base_ms <= retry_max_seconds * 1000".into());
        }
        for a in &peu.agent {
            ConfiguredAgent::parse(&a.presentity, &a.uri)?;
        }
        self.fsync()?;
        if self.storage.max_pending_bytes < 1 << 20 {
            return Err(format!("storage.max_pending_bytes = {}: at least 1 MiB", self.storage.max_pending_bytes));
        }
        if self.storage.compact_after_bytes < 64 << 10 {
            return Err(format!("storage.compact_after_bytes = {}: at least 64 KiB", self.storage.compact_after_bytes));
        }
        if !(1..=100_000).contains(&self.storage.restart_asks_per_tick) {
            return Err(format!("storage.restart_asks_per_tick = {}: from 1 to 100000", self.storage.restart_asks_per_tick));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(format!("log.format = {:?}: must be \"text\" or \"json\"", self.log.format));
        }
        Ok(())
    }

    /// `[storage] fsync` as the journal takes it.
    pub fn fsync(&self) -> Result<crate::storage::journal::Fsync, String> {
        use crate::storage::journal::Fsync;
        let every = Duration::from_millis(self.storage.fsync_interval_ms);
        if every.is_zero() || every > Duration::from_secs(10) {
            return Err(format!("storage.fsync_interval_ms = {}: must be 1..=10000", self.storage.fsync_interval_ms));
        }
        match self.storage.fsync.as_str() {
            "always" => Ok(Fsync::Always),
            "interval" => Ok(Fsync::Interval(every)),
            "never" => Ok(Fsync::Never(every)),
            other => Err(format!("storage.fsync = {other:?}: must be \"always\", \"interval\" or \"never\"")),
        }
    }

    /// The shard count this config asks for, with 0 resolved to the CPUs.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 { self.shards } else { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) }
    }

    pub fn parse_limits(&self) -> Limits {
        Limits { max_message_size: self.limits.max_message_size, max_headers: self.limits.max_headers, max_header_len: self.limits.max_header_len }
    }

    pub fn registrar_config(&self) -> RegistrarConfig {
        RegistrarConfig {
            min_expires: self.registrar.min_expires,
            max_expires: self.registrar.max_expires,
            default_expires: self.registrar.default_expires,
            trusted: self.trusted(),
            max_bindings: self.limits.bindings_per_aor,
        }
    }

    pub fn publish_config(&self) -> PublishConfig {
        PublishConfig {
            min_expires: self.presence.publish_min_expires,
            max_expires: self.presence.publish_max_expires,
            default_expires: self.presence.publish_default_expires.clamp(self.presence.publish_min_expires, self.presence.publish_max_expires),
            max_publications: self.limits.publications_per_presentity,
            max_document: self.limits.document_size,
        }
    }

    pub fn watch_config(&self) -> WatchConfig {
        let p = &self.presence;
        WatchConfig {
            min_expires: p.subscribe_min_expires,
            max_expires: p.subscribe_max_expires,
            default_expires: p.subscribe_default_expires.clamp(p.subscribe_min_expires, p.subscribe_max_expires),
            min_notify_interval: Duration::from_millis(p.notify_min_interval_ms),
            window: p.notify_window.max(1),
        }
    }

    pub fn overload_config(&self) -> OverloadConfig {
        let o = &self.overload;
        OverloadConfig {
            target: Duration::from_millis(o.target_ms),
            interval: Duration::from_millis(o.interval_ms),
            deadline: Duration::from_millis(o.deadline_ms),
            refuse_every: o.refuse_every.max(1),
            queue_messages: o.queue_messages.max(1),
            queue_bytes: o.queue_bytes.max(1),
        }
    }

    /// Each shard's share of what the node is expected to hold (the hash
    /// spreads presentities evenly; rounded up).
    pub fn expected_per_shard(&self, shards: u16) -> crate::shard::Expected {
        let shards = shards.max(1) as usize;
        let c = &self.capacity;
        crate::shard::Expected { presentities: c.expected_presentities.div_ceil(shards), subscriptions: c.expected_subscriptions.div_ceil(shards) }
    }

    /// The limits' values.
    pub fn caps(&self) -> Caps {
        let l = &self.limits;
        Caps {
            server_transactions: l.server_transactions_per_shard,
            pending_asks: l.pending_asks_per_shard,
            subscriptions: l.subscriptions_per_shard,
            subscriptions_per_watcher: l.subscriptions_per_watcher,
            publications_per_presentity: l.publications_per_presentity,
            document_size: l.document_size,
            bindings_per_aor: l.bindings_per_aor,
            retry_after: l.retry_after_seconds,
        }
    }

    /// Every trusted element: `[security] trusted` and
    /// `registrar.trusted_scscf` (validated by [`Self::validate`]).
    pub fn trusted(&self) -> TrustList {
        let all: Vec<&String> = self.security.trusted.iter().chain(&self.registrar.trusted_scscf).collect();
        TrustList::parse(&all).unwrap_or_default()
    }

    pub fn peu_config(&self) -> PeuConfig {
        let p = &self.peu;
        PeuConfig {
            mode: p.mode,
            grace: Duration::from_secs(p.grace_seconds),
            expires: p.expires,
            route_via_scscf: p.route_via_scscf,
            max_agents_per_presentity: p.max_agents_per_presentity,
            retry_base: Duration::from_millis(p.retry_base_ms),
            retry_max: Duration::from_secs(p.retry_max_seconds),
        }
    }

    /// The configured agents (validated by [`Self::validate`]).
    pub fn peu_agents(&self) -> Vec<ConfiguredAgent> {
        self.peu.agent.iter().filter_map(|a| ConfiguredAgent::parse(&a.presentity, &a.uri).ok()).collect()
    }

    pub fn policy(&self) -> Policy {
        Policy { rules: self.presence.authorization.clone(), default: self.presence.default_authorization }
    }

    pub fn sip_timers(&self) -> SipTimers {
        SipTimers { t1: Duration::from_millis(self.timers.t1_ms), t2: Duration::from_millis(self.timers.t2_ms), t4: Duration::from_millis(self.timers.t4_ms) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        assert_eq!(Config::default().listen.to_string(), "127.0.0.1:5060");
    }

    /// The reference block in README.md is a valid file whose values are
    /// the defaults, so the documentation cannot drift from the code.
    #[test]
    fn expected_entries_are_shared_by_the_shards_and_checked_against_the_limits() {
        let cfg = Config::from_toml("shards = 3\n[capacity]\nexpected_presentities = 1000000\nexpected_subscriptions = 10").unwrap();
        assert_eq!(cfg.expected_per_shard(3), crate::shard::Expected { presentities: 333_334, subscriptions: 4 });
        let too_many = Config::from_toml("shards = 2\n[limits]\nsubscriptions_per_shard = 10\n[capacity]\nexpected_subscriptions = 21");
        let err = too_many.and_then(|c| c.validate()).unwrap_err();
        assert!(err.contains("capacity.expected_subscriptions = 21 is 11 a shard"), "{err}");
    }

    #[test]
    fn readme_config_block_is_the_default() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + 8;
        let end = start + readme[start..].find("```").unwrap();
        assert_eq!(Config::from_toml(&readme[start..end]).unwrap(), Config::default());
    }

    #[test]
    fn trusted_elements_from_both_keys() {
        let c = Config::from_toml("[registrar]\ntrusted_scscf = [\"192.0.2.1\"]\n[security]\ntrusted = [\"10.0.0.0/8\"]\naccept = \"trusted\"\n").unwrap();
        let t = c.trusted();
        assert!(t.contains("192.0.2.1:5060".parse().unwrap()) && t.contains("10.1.2.3:5060".parse().unwrap()));
        assert!(!t.contains("192.0.2.2:5060".parse().unwrap()));
        assert_eq!(c.registrar_config().trusted, t, "the registrar trusts the same elements");
        assert_eq!(c.security.accept, Accept::Trusted);
        assert!(Config::from_toml("[security]\ntrusted = [\"10.0.0.0/40\"]").unwrap_err().contains("10.0.0.0/40"));
        assert!(Config::from_toml("[security]\naccept = \"some\"").is_err());
    }

    #[test]
    fn file_overrides_and_rejects_unknown_keys() {
        let c = Config::from_toml("listen = \"0.0.0.0:5070\"\nshards = 2\n[timers]\nt1_ms = 100\n").unwrap();
        assert_eq!(c.listen.port(), 5070);
        assert_eq!(c.shards, 2);
        assert_eq!(c.timers.t1_ms, 100);
        assert_eq!(c.timers.t2_ms, 4000);
        assert!(Config::from_toml("lisen = \"x\"").unwrap_err().contains("unknown field"));
        assert!(Config::from_toml("[limits]\nmax_headers = 1000").unwrap_err().contains("max_headers"));
        assert_eq!(Config::from_toml("[storage]\nrestart_asks_per_tick = 50").unwrap().storage.restart_asks_per_tick, 50);
        assert!(Config::from_toml("[storage]\nrestart_asks_per_tick = 0").unwrap_err().contains("restart_asks_per_tick"));
        let c = Config::from_toml("[cluster]\nnode = 2\nlease_ttl_ms = 1500").unwrap();
        let host = c.cluster.host(c.listen).unwrap();
        assert_eq!((host.node, host.ownership.ttl, host.ownership.renew_every), (2, Duration::from_millis(1500), Duration::from_millis(500)));
        assert!(Config::default().cluster.host(Config::default().listen).is_none(), "not in a cluster by default");
        assert!(Config::from_toml("[cluster]\nnode = 1\nlease_ttl_ms = 100").unwrap_err().contains("lease_ttl_ms"));
        assert!(Config::from_toml("[cluster]\nnode = 1\nmove_wait_ms = 40000").unwrap_err().contains("move_wait_ms"));
        let c = Config::from_toml("[cluster]\nnode = 1\nmove_wait_ms = 0\nmove_queue = 5").unwrap();
        assert_eq!((c.cluster.move_wait().wait, c.cluster.move_wait().max_requests), (Duration::ZERO, 5));
        assert!(Config::from_toml("[cluster]\nnode = 1\nreplicas = 0").unwrap_err().contains("replicas"));
        let anywhere = "listen = \"0.0.0.0:5060\"\n[cluster]\nnode = 1";
        assert!(Config::from_toml(anywhere).unwrap_err().contains("cluster.advertise"));
        let c = Config::from_toml(&format!("{anywhere}\nadvertise = \"10.0.0.1:5060\"")).unwrap();
        assert_eq!(c.cluster.host(c.listen).unwrap().advertise, Some("10.0.0.1:5060".parse().unwrap()));
    }
}
