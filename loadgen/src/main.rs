//! `loadgen`: drive a SIP presence server and report what it sustained.

use clap::{Parser, Subcommand};
use loadgen::engine::{self, End, Load, Shared, WorkerConfig};
use loadgen::report::{self, Report};
use loadgen::scenario::Scenario;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// SIP presence load generator: simulated UEs send REGISTER, PUBLISH or
/// SUBSCRIBE over UDP to any presence server; responses are matched by Via
/// branch, retransmitted per Timer E/F, counted by status and timed.
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
    /// in-process responder, with the same load engine.
    Baseline(RunArgs),
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Server address (HOST:PORT). Not used by `baseline`.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:5060")]
    target: String,
    /// register, publish or subscribe.
    #[arg(long, default_value = "register")]
    scenario: String,
    /// Open loop: start R transactions per second in all (ramped up over
    /// --ramp seconds).
    #[arg(long, value_name = "R", conflicts_with = "max_outstanding")]
    rate: Option<f64>,
    /// Closed loop: keep K transactions outstanding in all [default: 256].
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
    /// Transport: udp (tcp is not built yet).
    #[arg(long, default_value = "udp")]
    transport: String,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Worker threads [default: one per CPU].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Local UDP sockets per thread (more flows for a SO_REUSEPORT server).
    #[arg(long, value_name = "N", default_value_t = 16)]
    sockets: usize,
    /// Domain of the simulated users' AORs.
    #[arg(long, default_value = "example.com")]
    domain: String,
    /// Seconds to ramp an open-loop rate up from zero.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    ramp: f64,
    /// SIP timer T1 in milliseconds (retransmission base).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    t1_ms: u64,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

fn run(args: &RunArgs, target: SocketAddr) -> Result<Report, String> {
    if args.transport != "udp" {
        return Err(format!("transport {:?}: this build has udp only", args.transport));
    }
    let scenario = Scenario::parse(&args.scenario)?;
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let users = args.users.max(threads);
    let load = match (args.rate, args.max_outstanding) {
        (Some(r), _) => Load::Open { rate: r / threads as f64 },
        (None, k) => Load::Closed { outstanding: (k.unwrap_or(256) / threads).max(1) },
    };
    let end = match (args.duration, args.count) {
        (_, Some(n)) => End::Count(n.div_ceil(threads as u64)),
        (Some(d), None) => End::After(Duration::from_secs_f64(d)),
        (None, None) => End::After(Duration::from_secs(10)),
    };
    let shared = Arc::new(Shared::default());
    let cpu0 = report::process_cpu_s();
    let start = Instant::now();
    let per = users / threads;
    let handles: Vec<_> = (0..threads)
        .map(|w| {
            let cfg = WorkerConfig {
                target,
                scenario,
                users: w * per..if w + 1 == threads { users } else { (w + 1) * per },
                domain: args.domain.clone(),
                sockets: args.sockets,
                load,
                end,
                t1: Duration::from_millis(args.t1_ms),
                ramp: Duration::from_secs_f64(args.ramp),
            };
            let shared = shared.clone();
            std::thread::Builder::new().name(format!("loadgen-{w}")).spawn(move || engine::run_worker(cfg, w, shared)).unwrap()
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
            "\r[{:>5.1}s] sent {:>9} ok {:>9} rate {:>8.0}/s outstanding {:>6} errors {:>6} p99 {:>7} µs ",
            start.elapsed().as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            ok,
            rate,
            shared.outstanding.load(Ordering::Relaxed),
            shared.errors.load(Ordering::Relaxed),
            p99
        );
    }
    if !args.quiet {
        eprintln!();
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("worker")).collect();
    let duration = start.elapsed().as_secs_f64();
    Ok(Report::build(scenario.name(), target.to_string(), users, &results, duration, report::process_cpu_s() - cpu0))
}

fn finish(args: &RunArgs, report: Report) -> ExitCode {
    println!("{}", report.summary());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report).expect("report serialises");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Baseline(args)) => {
            let (addr, stop) = match loadgen::baseline::start_responder("127.0.0.1:0".parse().unwrap()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("loadgen: cannot start the baseline responder: {e}");
                    return ExitCode::from(1);
                }
            };
            let mut args = args;
            args.scenario = "register".into();
            let r = run(&args, addr);
            stop.store(true, Ordering::Relaxed);
            match r {
                Ok(mut rep) => {
                    rep.scenario = "baseline".into();
                    finish(&args, rep)
                }
                Err(e) => {
                    eprintln!("loadgen: {e}");
                    ExitCode::from(2)
                }
            }
        }
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
