//! `tuning`: how many presence hosts a busy hour needs, from loadgen's
//! reports of one server configuration.

use clap::Parser;
use loadgen::profile::Profile;
use std::path::PathBuf;
use std::process::ExitCode;
use tuning::measured::Capacity;
use tuning::plan::{Demand, Plan};

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
        let plan = Plan::build(cli.subscribers, Demand::of(&profile, cli.subscribers), &capacity, cli.target_utilization)?;
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
