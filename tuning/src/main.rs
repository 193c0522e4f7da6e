//! `tuning`: how many presence hosts a busy hour needs, from loadgen's
//! reports of one server configuration.

use clap::Parser;
use loadgen::profile::Profile;
use std::path::PathBuf;
use std::process::ExitCode;
use tuning::measured::Capacity;
use tuning::plan::{ClusterOptions, Demand, Plan};

/// Capacity plan: the busy-hour demand of a subscriber base (from a
/// loadgen traffic profile) against what one host sustained (loadgen
/// reports of register, publish, subscribe and fanout runs, plus an
/// optional baseline), and the hosts needed at a target utilization.
#[derive(Parser, Debug)]
#[command(name = "tuning", version)]
struct Cli {
    /// Subscribers to plan for.
    #[arg(long, value_name = "N")]
    subscribers: u64,
    /// The busy-hour traffic profile [default: the shipped
    /// loadgen/profiles/busy-hour.toml].
    #[arg(long, value_name = "FILE.toml")]
    profile: Option<PathBuf>,
    /// Each host runs at most this share of its measured capacity; the
    /// rest is headroom for failover and peaks.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.6)]
    target_utilization: f64,
    /// Plan a cluster that survives this many node failures at once
    /// (nodes behind a SIP front, issue 20) [default: no cluster].
    #[arg(long, value_name = "F")]
    failures: Option<u64>,
    /// A forward between nodes costs the forwarding node this share of a
    /// transaction (cluster plans; 1.0 is the conservative default: the hop
    /// is not measured on its own).
    #[arg(long, value_name = "SHARE", default_value_t = 1.0)]
    hop_cost: f64,
    /// Extra cost per transaction of replicating the journal (cluster
    /// plans; replication is not built, so not measured).
    #[arg(long, value_name = "SHARE", default_value_t = 0.0)]
    replication_overhead: f64,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
    /// loadgen --report files of one server configuration.
    #[arg(required = true, value_name = "REPORT.json")]
    reports: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = || -> Result<(Plan, Vec<String>), String> {
        let profile = Profile::load(cli.profile.as_deref())?;
        let capacity = Capacity::from_files(&cli.reports)?;
        let mut plan = Plan::build(cli.subscribers, Demand::of(&profile, cli.subscribers), &capacity, cli.target_utilization)?;
        if let Some(failures) = cli.failures {
            plan = plan.with_cluster(ClusterOptions { failures, hop_cost: cli.hop_cost, replication: cli.replication_overhead })?;
        }
        Ok((plan, capacity.warnings))
    };
    match run() {
        Ok((plan, warnings)) => {
            for w in warnings {
                eprintln!("tuning: warning: {w}");
            }
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&plan).expect("plan serialises"));
            } else {
                println!("{}", plan.summary());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tuning: {e}");
            ExitCode::from(2)
        }
    }
}
