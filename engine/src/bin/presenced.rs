//! `presenced`: the presence server. With no arguments it runs on the
//! embedded default (UDP and TCP on 127.0.0.1:5060, one shard per core,
//! state in memory); a TOML file and flags override it.

use clap::Parser;
use presence_engine::config::Config;
use presence_engine::core::entropy::Entropy;
use presence_engine::presence::peu::Mode;
use presence_engine::reactor::{self, Server};
use presence_engine::shard::Accept;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SIP presence server (RFC 3856/3903/6665), sharded thread-per-core.
///
/// Settings come from the embedded default, then the --config file, then
/// these flags, each overriding the one before.
#[derive(Parser, Debug)]
#[command(name = "presenced", version)]
struct Args {
    /// TOML configuration file (every key optional; see README.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for both UDP and TCP [default: 127.0.0.1:5060]. Port 0 picks
    /// a free port, printed at startup.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
    /// Number of shards (executor threads) [default: one per CPU].
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Pin shard i to CPU i.
    #[arg(long)]
    pin_cores: bool,
    /// Largest SIP message accepted, bytes; larger ones get 513 [default: 65535].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Most header lines per message; more get 513 [default: 64].
    #[arg(long, value_name = "N")]
    max_headers: Option<usize>,
    /// Longest header line, bytes; longer gets 513 [default: 8192].
    #[arg(long, value_name = "BYTES")]
    max_header_len: Option<usize>,
    /// Most TCP connections per shard [default: 50000].
    #[arg(long, value_name = "N")]
    max_tcp_connections: Option<usize>,
    /// SIP timer T1 in milliseconds (RTT estimate) [default: 500].
    #[arg(long, value_name = "MS")]
    t1_ms: Option<u64>,
    /// Trust this network element (IP, IP:port or IP/prefix): it may
    /// register on a UE's behalf, assert identities (P-Asserted-Identity)
    /// and route NOTIFYs by its Contact; repeat for several. Adds to the
    /// config file's [security] trusted.
    #[arg(long = "trust", value_name = "ADDR")]
    trust: Vec<String>,
    /// Overload control: queueing delay (ms) that, held for 100 ms, makes
    /// a shard answer new REGISTER, PUBLISH and SUBSCRIBE with 503 +
    /// Retry-After; 0 turns shedding off [default: 20].
    #[arg(long, value_name = "MS")]
    overload_target_ms: Option<u64>,
    /// Presentities the node is expected to hold: each shard sizes its
    /// tables for its share at start, so none grows (and rehashes) under
    /// traffic [default: 0, grow as needed].
    #[arg(long, value_name = "N")]
    expected_presentities: Option<usize>,
    /// Subscriptions the node is expected to hold (as above) [default: 0].
    #[arg(long, value_name = "N")]
    expected_subscriptions: Option<usize>,
    /// Whom to serve: any source (development), or trusted elements only
    /// (others get 403) [default: any].
    #[arg(long, value_name = "WHO", value_parser = ["any", "trusted"])]
    accept: Option<String>,
    /// Subscribe to the reg event (RFC 3680) at the S-CSCF of each
    /// third-party registration.
    #[arg(long)]
    reg_event: bool,
    /// Shortest registration accepted, seconds; shorter gets 423 [default: 60].
    #[arg(long, value_name = "SECONDS")]
    min_expires: Option<u32>,
    /// Longest registration granted, seconds [default: 7200].
    #[arg(long, value_name = "SECONDS")]
    max_expires: Option<u32>,
    /// Shortest publication accepted, seconds; shorter gets 423 [default: 60].
    #[arg(long, value_name = "SECONDS")]
    publish_min_expires: Option<u32>,
    /// Least milliseconds between two NOTIFYs of one subscription;
    /// changes in between are coalesced [default: 1000].
    #[arg(long, value_name = "MS")]
    notify_min_interval_ms: Option<u64>,
    /// Most NOTIFYs a shard keeps in flight; more wait for answers
    /// [default: 4096].
    #[arg(long, value_name = "N")]
    notify_window: Option<usize>,
    /// When the server subscribes to presence user agents (contacts
    /// registered with the `events="presence"` feature tag or Allow-Events:
    /// presence, and configured agents) and takes their NOTIFYs as
    /// publications: watched (while the presentity has watchers), always,
    /// or off [default: watched].
    #[arg(long, value_name = "MODE", value_parser = ["watched", "always", "off"])]
    peu: Option<String>,
    /// How long agent subscriptions outlive the last watcher, seconds
    /// [default: 30].
    #[arg(long, value_name = "SECONDS")]
    peu_grace_seconds: Option<u64>,
    /// First wait before subscribing to an agent again after a failure,
    /// ms; doubles per failure in a row [default: 5000].
    #[arg(long, value_name = "MS")]
    peu_retry_base_ms: Option<u64>,
    /// Keep the server's state (registrations, publications, watchers'
    /// subscriptions) in journals under DIR, and restore it at start
    /// [default: memory only].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
    /// When journal records reach the disk: always (a change is answered
    /// once synced, with group commit), interval (synced within
    /// [storage] fsync_interval_ms, 10 by default), or never (written as
    /// often, never synced) [default: interval].
    #[arg(long, value_name = "MODE", value_parser = ["always", "interval", "never"])]
    fsync: Option<String>,
    /// Join a cluster as node N (from 1): hold leases on partitions in
    /// NATS JetStream ([cluster] section) [default: not in a cluster].
    #[arg(long, value_name = "N")]
    cluster_node: Option<u32>,
    /// The JetStream servers of the cluster, nats://host:port,
    /// comma-separated [default: nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Log level (error, warn, info, debug, trace) or a tracing filter
    /// such as "info,presenced::request=debug" [default: info].
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Check the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Print what a data directory holds (bindings, publications, composed
    /// documents, watchers) as JSON, and exit. Offline and read-only: the
    /// directory may belong to a running server.
    Dump {
        /// The data directory, as given to the server's --data-dir.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Only this presentity (a SIP URI).
        #[arg(long, value_name = "URI")]
        aor: Option<String>,
    },
}

fn dump(dir: &std::path::Path, aor: Option<&str>) -> ExitCode {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    match reactor::dump::dump(dir, aor, now) {
        Ok(v) => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("presenced dump: {e}");
            ExitCode::from(1)
        }
    }
}

fn config(args: &Args) -> Result<Config, String> {
    let mut cfg = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.shards {
        cfg.shards = v;
    }
    cfg.pin_cores |= args.pin_cores;
    if let Some(v) = args.max_message_size {
        cfg.limits.max_message_size = v;
    }
    if let Some(v) = args.max_headers {
        cfg.limits.max_headers = v;
    }
    if let Some(v) = args.max_header_len {
        cfg.limits.max_header_len = v;
    }
    if let Some(v) = args.max_tcp_connections {
        cfg.limits.max_tcp_connections_per_shard = v;
    }
    if let Some(v) = args.t1_ms {
        cfg.timers.t1_ms = v;
    }
    cfg.security.trusted.extend(args.trust.iter().cloned());
    if let Some(v) = args.overload_target_ms {
        cfg.overload.target_ms = v;
    }
    if let Some(v) = args.expected_presentities {
        cfg.capacity.expected_presentities = v;
    }
    if let Some(v) = args.expected_subscriptions {
        cfg.capacity.expected_subscriptions = v;
    }
    if let Some(v) = &args.accept {
        cfg.security.accept = if v == "trusted" { Accept::Trusted } else { Accept::Any };
    }
    cfg.registrar.subscribe_reg_event |= args.reg_event;
    if let Some(v) = args.min_expires {
        cfg.registrar.min_expires = v;
        cfg.registrar.default_expires = cfg.registrar.default_expires.max(v);
    }
    if let Some(v) = args.max_expires {
        cfg.registrar.max_expires = v;
        cfg.registrar.default_expires = cfg.registrar.default_expires.min(v);
    }
    if let Some(v) = args.publish_min_expires {
        cfg.presence.publish_min_expires = v;
    }
    if let Some(v) = args.notify_min_interval_ms {
        cfg.presence.notify_min_interval_ms = v;
    }
    if let Some(v) = args.notify_window {
        cfg.presence.notify_window = v;
    }
    if let Some(v) = &args.peu {
        cfg.peu.mode = match v.as_str() {
            "always" => Mode::Always,
            "off" => Mode::Off,
            _ => Mode::Watched,
        };
    }
    if let Some(v) = args.peu_grace_seconds {
        cfg.peu.grace_seconds = v;
    }
    if let Some(v) = args.peu_retry_base_ms {
        cfg.peu.retry_base_ms = v;
    }
    if let Some(v) = &args.data_dir {
        cfg.storage.dir = Some(v.clone());
    }
    if let Some(v) = &args.fsync {
        cfg.storage.fsync = v.clone();
    }
    if let Some(v) = args.cluster_node {
        cfg.cluster.node = v;
    }
    if let Some(v) = &args.nats {
        cfg.cluster.nats = v.clone();
    }
    if let Some(v) = &args.log_level {
        cfg.log.level = v.clone();
    }
    if let Some(v) = &args.log_format {
        cfg.log.format = v.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(cfg: &Config) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.level).map_err(|e| format!("log level {:?}: {e}", cfg.log.level))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_thread_names(true);
    match cfg.log.format.as_str() {
        "json" => builder.json().flatten_event(true).init(),
        _ => builder.init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Dump { data_dir, aor }) = &args.command {
        return dump(data_dir, aor.as_deref());
    }
    let cfg = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging(&cfg) {
        eprintln!("presenced: {e}");
        return ExitCode::from(2);
    }
    // With a data directory, the start turns them off once every shard
    // has restored (`reactor::memory::HugePagesForStart`).
    if !cfg.io.transparent_huge_pages && cfg.storage.dir.is_none() {
        if let Err(e) = reactor::memory::disable_transparent_huge_pages() {
            tracing::warn!(error = %e, "cannot turn transparent huge pages off: first touches of memory may stall a shard for milliseconds");
        }
    }
    // Before any thread starts, so that every shard inherits the mask and
    // the signals reach only the sigwait below.
    reactor::block_signals();
    let server = match Server::start(&cfg) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("presenced: {e}");
            return ExitCode::from(1);
        }
    };
    // The cluster host starts after the signal mask is set, so that its
    // thread inherits it too; it advertises the address the shards bound
    // (or [cluster] advertise) as where other nodes forward requests.
    let host = cfg.cluster.host(server.local_addr()).zip(server.cluster_view());
    let cluster = match host.map(|(h, view)| reactor::cluster_host::ClusterHost::start_with(h, Entropy::os_seed(), view.clone())) {
        None => None,
        Some(Ok(host)) => Some(host),
        Some(Err(e)) => {
            eprintln!("presenced: cluster: {e}");
            return ExitCode::from(1);
        }
    };
    let shards = cfg.shard_count();
    tracing::info!(listen = %server.local_addr(), shards, "presenced ready");
    // One stable line on stdout for scripts and tests to wait on.
    println!("presenced listening on {} (udp, tcp) with {shards} shards", server.local_addr());
    let sig = loop {
        match reactor::wait_for_signal() {
            reactor::Signal::Stop(sig) => break sig,
            // SIGHUP: re-read the configuration; only the authorization
            // rules take effect without a restart.
            reactor::Signal::Reload => match config(&args) {
                Ok(new) => {
                    tracing::info!(rules = new.presence.authorization.len(), "configuration reloaded");
                    server.set_policy(new.policy());
                }
                Err(e) => tracing::error!("reload failed, keeping the running configuration: {e}"),
            },
        }
    };
    tracing::info!(signal = sig, "shutting down");
    // Leave the cluster first: the others take over its partitions at once
    // instead of after the lease time to live.
    if let Some(Err(e)) = cluster.map(|c| c.leave()) {
        tracing::warn!(error = %e, "leaving the cluster");
    }
    let stats = server.shutdown();
    for (i, s) in stats.iter().enumerate() {
        tracing::info!(
            shard = i,
            requests = s.requests,
            responses = s.responses_sent,
            malformed = s.malformed,
            forwarded = s.forwarded,
            retransmissions = s.retransmissions,
            limited = ?presence_engine::core::limits::Limit::ALL.iter().filter(|l| s.limited[l.index()] > 0).map(|l| (l.name(), s.limited[l.index()])).collect::<Vec<_>>(),
            overload_dropped = s.overload_dropped,
            tcp_refused = s.tcp.refused,
            tcp_unread_closed = s.tcp.unread,
            tcp_idle_closed = s.tcp.idle,
            hop_forwarded = s.hop.forwarded,
            hop_relayed = s.hop.relayed,
            hop_lost = s.hop.lost,
            waited_for_owner = s.waits.held,
            waited_then_routed = s.waits.resumed,
            waited_too_long = s.waits.timed_out,
            no_room_to_wait = s.waits.full,
            "shard stopped"
        );
    }
    ExitCode::SUCCESS
}
