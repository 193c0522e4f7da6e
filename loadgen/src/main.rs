//! `loadgen`: drive a SIP presence server and report what it sustained.

use clap::{Parser, Subcommand};
use loadgen::engine::{self, End, Fanout, Load, Shared, WorkerConfig};
use loadgen::profile::Profile;
use loadgen::report::{self, Report, RunInfo};
use loadgen::scale::{self, ScalePlan, ScaleReport};
use loadgen::scenario::Scenario;
use loadgen::transport::TransportKind;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SIP presence load generator: simulated UEs send REGISTER, PUBLISH and
/// SUBSCRIBE over UDP or TCP to any presence server; responses are matched
/// by Via branch, retransmitted per Timer E/F, counted by status and timed;
/// NOTIFYs are answered, checked against what was published, and timed.
#[derive(Parser, Debug)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure this host's request/response ceiling against a trivial
    /// in-process responder, with the same load engine (--scenario
    /// register or publish picks the messages).
    Baseline(Box<RunArgs>),
    /// Run only that trivial responder, as a process of its own, until
    /// killed: a floor under a server's latency when it is pinned and
    /// shares its core the same way (bench/e2e/overload.sh, mode floor).
    Responder {
        /// Address to answer on.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5060")]
        listen: SocketAddr,
        /// Ask the kernel for this time slice, microseconds (as presenced's
        /// `[io] sched_slice_us`; 0 keeps the default), so that the floor
        /// is measured under the same scheduling as the server.
        #[arg(long, value_name = "US", default_value_t = 0)]
        sched_slice_us: u32,
    },
    /// Compete for a core until killed: spin for --busy-us, sleep for
    /// --idle-us, over and over. Pinned beside a server, it takes its
    /// share in bursts of --busy-us; a plain busy loop takes it in the
    /// kernel's ticks (4 ms at HZ=250), which alone puts a 4 ms floor
    /// under every answer (bench/e2e/overload.sh, HOG=duty).
    Hog {
        #[arg(long, value_name = "MICROSECONDS", default_value_t = 1000)]
        busy_us: u64,
        #[arg(long, value_name = "MICROSECONDS", default_value_t = 250)]
        idle_us: u64,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Server address (HOST:PORT). Not used by `baseline`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5060")]
    target: String,
    /// register | publish (initial, then modifies with the SIP-ETag and refreshes) |
    /// subscribe (new dialogs, NOTIFYs answered) | fanout (--watchers on
    /// each of --presentities, then a PUBLISH storm) | mixed (a busy hour
    /// from --profile) | peu (each user registers as a presence user agent,
    /// a watcher subscribes to each, the server SUBSCRIBEs to the agents,
    /// which then NOTIFY their documents at the load rate) | scale (every
    /// user registers, publishes and watches --watchers others; then
    /// PUBLISH and SUBSCRIBE capacity for --duration each and latency at
    /// half capacity for --steady each, with server CPU per transaction
    /// and memory per entry from --server-pid).
    #[arg(long, default_value = "register")]
    scenario: String,
    /// Open loop: start R transactions per second in all (ramped up over
    /// --ramp seconds).
    #[arg(long, value_name = "R", conflicts_with = "max_outstanding")]
    rate: Option<f64>,
    /// Closed loop: keep K transactions outstanding in all [default: 256;
    /// mixed defaults to the profile's open-loop rate].
    #[arg(long, value_name = "K")]
    max_outstanding: Option<usize>,
    /// Run for S seconds [default: 10 unless --count].
    #[arg(long, value_name = "S", conflicts_with = "count")]
    duration: Option<f64>,
    /// Start N transactions in all, then stop.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Simulated users (distinct AORs), spread over the threads.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    users: usize,
    /// udp or tcp.
    #[arg(long, default_value = "udp")]
    transport: String,
    /// fanout: presentities that are watched and published.
    #[arg(long, value_name = "P", default_value_t = 10)]
    presentities: usize,
    /// fanout: watchers on each presentity; scale: presentities each user
    /// watches [default: 100 for fanout, 5 for scale].
    #[arg(long, value_name = "W")]
    watchers: Option<usize>,
    /// scale: seconds idle after each load step before the server's memory
    /// is read (the server's Timer J must let the load's transactions go).
    #[arg(long, value_name = "S", default_value_t = 35.0)]
    settle: f64,
    /// scale: seconds of each open-loop phase at half capacity (the
    /// capacity phases run for --duration).
    #[arg(long, value_name = "S", default_value_t = 60.0)]
    steady: f64,
    /// scale: the server's process id; its CPU time and memory (with its
    /// children's) are read from /proc around every phase.
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// mixed: the busy-hour traffic profile (TOML) [default: the shipped
    /// loadgen/profiles/busy-hour.toml].
    #[arg(long, value_name = "FILE.toml")]
    profile: Option<PathBuf>,
    /// fanout, mixed, peu: seconds idle after the setup (answering NOTIFYs)
    /// before the measured phase, so that the server's Timer J can end the
    /// setup's transactions first: what the server holds then is the
    /// standing state alone. The report's `setup.ended_unix_s` says when
    /// the measured phase began.
    #[arg(long, value_name = "S", default_value_t = 0.0)]
    setup_settle: f64,
    /// fanout, mixed, scale: setup transactions outstanding in all while setting up.
    #[arg(long, value_name = "K", default_value_t = 256)]
    setup_outstanding: usize,
    /// Fully parse one NOTIFY body in N as PIDF (1: every one). The
    /// presentity and version are checked on every NOTIFY either way.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pidf_sample: u64,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Worker threads [default: one per CPU].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// publish: every Nth PUBLISH of a user is a refresh (no body, only a
    /// new expiry); 0 never.
    #[arg(long, value_name = "N", default_value_t = 4)]
    refresh_every: u32,
    /// Leave the subscriptions open at the end (by default they are
    /// ended, so the server stops notifying ports that are gone).
    #[arg(long)]
    keep_subscriptions: bool,
    /// Local UDP sockets or TCP connections per thread (more flows for a
    /// SO_REUSEPORT server).
    #[arg(long, value_name = "N", default_value_t = 16, alias = "sockets", alias = "connections")]
    flows: usize,
    /// Domain of the simulated users' AORs.
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// Seconds to ramp an open-loop rate up from zero.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    ramp: f64,
    /// SIP timer T1 in milliseconds (retransmission base).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    t1_ms: u64,
    /// Act as an RFC 7339 client (as an S-CSCF would): ask for loss-based
    /// overload control in every Via and hold back, before sending, the
    /// share of new requests the server's feedback names. Held-back
    /// requests are reported as `throttled`, apart from `sent`.
    #[arg(long)]
    overload_control: bool,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

/// What one worker thread brings back.
enum WorkerOutcome {
    Run(Box<engine::WorkerResult>),
    Scale(scale::ScaleWorkerResult),
}

/// A run's report: one measured phase, or the phases of `scale`.
enum Outcome {
    Run(Box<Report>),
    Scale(ScaleReport),
}

fn run(args: &RunArgs, target: SocketAddr) -> Result<Outcome, String> {
    let transport = TransportKind::parse(&args.transport)?;
    let scenario = Scenario::parse(&args.scenario)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let profile = if scenario == Scenario::Mixed { Some(Profile::load(args.profile.as_deref())?) } else { None };
    let fanout = (scenario == Scenario::Fanout).then(|| Fanout { presentities: args.presentities.max(1), watchers: args.watchers.unwrap_or(100) });
    let scale = (scenario == Scenario::Scale).then(|| ScalePlan {
        watchers: args.watchers.unwrap_or(5),
        subscription_expires: 3600,
        settle: Duration::from_secs_f64(args.settle.max(0.0)),
        capacity: Duration::from_secs_f64(args.duration.unwrap_or(10.0)),
        steady: Duration::from_secs_f64(args.steady.max(0.0)),
        server_pid: args.server_pid,
    });
    if scale.is_some() && (args.rate.is_some() || args.count.is_some()) {
        return Err("scale measures capacity closed loop for --duration: --rate and --count do not apply".into());
    }
    // In fanout the users are the presentities; their watchers are extra.
    let users = match fanout {
        Some(f) => f.presentities,
        None => args.users.max(threads),
    };
    let load = match (args.rate, args.max_outstanding, &profile) {
        (Some(r), _, _) => Load::Open { rate: r / threads as f64 },
        (None, None, Some(p)) => Load::Open { rate: p.rate(users) / threads as f64 },
        (None, k, _) => Load::Closed { outstanding: (k.unwrap_or(256) / threads).max(1) },
    };
    let end = match (args.duration, args.count) {
        (_, Some(n)) => End::Count(n.div_ceil(threads as u64)),
        (Some(d), None) => End::After(Duration::from_secs_f64(d)),
        (None, None) => End::After(Duration::from_secs(10)),
    };
    let shared = Arc::new(Shared::new(threads, users));
    let cpu0 = report::process_cpu_s();
    let start = Instant::now();
    let slice = |total: usize, w: usize| total * w / threads..total * (w + 1) / threads;
    let watches = fanout.map_or(0, |f| f.presentities * f.watchers);
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let cfg = WorkerConfig {
                target,
                transport,
                scenario,
                users: slice(users, w),
                total_users: users,
                domain: args.domain.clone(),
                flows: args.flows,
                load,
                end,
                t1: Duration::from_millis(args.t1_ms),
                ramp: Duration::from_secs_f64(args.ramp),
                fanout,
                fanout_watches: slice(watches, w),
                profile: profile.clone(),
                setup_outstanding: (args.setup_outstanding / threads).max(1),
                setup_settle: Duration::from_secs_f64(args.setup_settle.max(0.0)),
                pidf_sample: args.pidf_sample.max(1),
                teardown: !args.keep_subscriptions,
                refresh_every: if scenario == Scenario::Publish { args.refresh_every } else { 0 },
                overload_control: args.overload_control,
                scale: scale.clone(),
            };
            let shared = shared.clone();
            let body = move || match cfg.scale {
                Some(_) => scale::run_worker(cfg, w, shared).map(WorkerOutcome::Scale),
                None => engine::run_worker(cfg, w, shared).map(|r| WorkerOutcome::Run(Box::new(r))),
            };
            std::thread::Builder::new().name(format!("loadgen-{w}")).spawn(body).unwrap()
        })
        .collect();
    // The live progress line.
    let mut last = (Instant::now(), 0u64);
    while handles.iter().any(|h| !h.is_finished()) {
        std::thread::sleep(Duration::from_millis(250));
        if args.quiet || last.0.elapsed() < Duration::from_secs(1) {
            continue;
        }
        let ok = shared.ok.load(Ordering::Relaxed);
        let rate = (ok - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), ok);
        let p99 = shared.latency.lock().ok().and_then(|mut h| h.take()).map_or(0, |h| h.value_at_quantile(0.99));
        eprint!(
            "\r[{:>5.1}s {:>5}] sent {:>9} ok {:>9} rate {:>8.0}/s outstanding {:>6} errors {:>6} NOTIFYs {:>9} p99 {:>7} µs ",
            start.elapsed().as_secs_f64(),
            shared.stage(),
            shared.sent.load(Ordering::Relaxed),
            ok,
            rate,
            shared.outstanding.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
            shared.notifies.load(Ordering::Relaxed),
            p99
        );
    }
    if !args.quiet {
        eprintln!();
    }
    let results = handles.into_iter().map(|h| h.join().expect("worker")).collect::<Result<Vec<_>, String>>()?;
    let info = RunInfo {
        scenario: scenario.name().into(),
        target: target.to_string(),
        transport: transport.name().into(),
        users,
        cpu_s: report::process_cpu_s() - cpu0,
    };
    // Workers of one run all return the same kind.
    let (mut runs, mut scales) = (Vec::new(), Vec::new());
    for r in results {
        match r {
            WorkerOutcome::Run(r) => runs.push(*r),
            WorkerOutcome::Scale(r) => scales.push(r),
        }
    }
    Ok(match scale {
        Some(plan) => Outcome::Scale(ScaleReport::build(info, plan.watchers, scales)),
        None => Outcome::Run(Box::new(Report::build(info, &runs))),
    })
}

fn finish(args: &RunArgs, outcome: Outcome) -> ExitCode {
    let (summary, json) = match &outcome {
        Outcome::Run(r) => (r.summary(), serde_json::to_string_pretty(r)),
        Outcome::Scale(r) => (r.summary(), serde_json::to_string_pretty(r)),
    };
    println!("{summary}");
    if let Some(path) = &args.report {
        let json = json.expect("report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A measuring tool must not stall on its own page faults: huge pages
    // zeroed on first touch put milliseconds into the latencies it reports
    // (presence_engine::reactor::memory).
    let _ = presence_engine::reactor::memory::disable_transparent_huge_pages();
    match cli.command {
        Some(Command::Baseline(args)) => {
            let (addr, stop) = match loadgen::baseline::start_responder("127.0.0.1:0".parse().unwrap(), 0) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("loadgen: cannot start the baseline responder: {e}");
                    return ExitCode::from(1);
                }
            };
            let mut args = *args;
            // The responder answers every request 200 and keeps no state:
            // its ceiling is measured with REGISTERs or with PUBLISHes (the
            // same messages as a `publish` run, so the two compare).
            if !matches!(args.scenario.as_str(), "register" | "publish") {
                eprintln!("loadgen: baseline runs the register or publish messages, not {:?}", args.scenario);
                return ExitCode::from(2);
            }
            args.transport = "udp".into();
            let r = run(&args, addr);
            stop.store(true, Ordering::Relaxed);
            match r {
                Ok(Outcome::Run(mut rep)) => {
                    rep.scenario = "baseline".into();
                    finish(&args, Outcome::Run(rep))
                }
                Ok(other) => finish(&args, other),
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Some(Command::Hog { busy_us, idle_us }) => {
            let (busy, idle) = (std::time::Duration::from_micros(busy_us), std::time::Duration::from_micros(idle_us));
            loop {
                let until = std::time::Instant::now() + busy;
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                std::thread::sleep(idle);
            }
        }
        Some(Command::Responder { listen, sched_slice_us }) => match loadgen::baseline::start_responder(listen, sched_slice_us) {
            Ok((addr, _stop)) => {
                eprintln!("loadgen: responder answering 200 on {addr}");
                loop {
                    std::thread::park();
                }
            }
            Err(e) => {
                eprintln!("loadgen: cannot start the responder on {listen}: {e}");
                ExitCode::from(1)
            }
        },
        None => {
            let args = cli.run;
            let target = match args.target.to_socket_addrs().ok().and_then(|mut a| a.next()) {
                Some(t) => t,
                None => {
                    eprintln!("loadgen: cannot resolve --target {:?}", args.target);
                    return ExitCode::from(2);
                }
            };
            match run(&args, target) {
                Ok(rep) => finish(&args, rep),
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
