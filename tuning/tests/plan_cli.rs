//! The `tuning` binary on real loadgen reports (tests/fixtures): the plan
//! it prints agrees with the model recomputed here from the same files and
//! the shipped profile, and missing or mixed inputs are clear errors.

use serde_json::Value;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}.json")
}

fn read(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

fn tuning(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tuning")).args(args).output().unwrap()
}

#[test]
fn plan_from_real_reports_matches_the_model() {
    let names = ["baseline-publish", "presenced-2-register", "presenced-2-publish", "presenced-2-subscribe", "presenced-2-fanout"];
    let files: Vec<String> = names.iter().map(|n| fixture(n)).collect();
    let mut args = vec!["--subscribers", "10000000", "--target-utilization", "0.5", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = tuning(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();

    // The shipped profile: 2 REGISTER, 6 PUBLISH, 1 SUBSCRIBE per
    // subscriber-hour, 4 watchers per presentity.
    let profile: toml::Value = toml::from_str(loadgen::profile::DEFAULT_PROFILE).unwrap();
    let per_s = |key: &str| profile[key].as_float().unwrap() * 10_000_000.0 / 3600.0;
    let watchers = profile["watchers_per_presentity"].as_integer().unwrap() as f64;
    let capacity = |name: &str| read(name)["throughput_per_s"].as_f64().unwrap();
    let notify_capacity = read("presenced-2-fanout")["notify"]["per_s"].as_f64().unwrap();
    let shares = [
        per_s("registrations_per_hour") / capacity("presenced-2-register"),
        per_s("publications_per_hour") / capacity("presenced-2-publish"),
        per_s("subscriptions_per_hour") / capacity("presenced-2-subscribe"),
        per_s("publications_per_hour") * watchers / notify_capacity,
    ];
    let utilization: f64 = shares.iter().sum();
    assert!((plan["utilization"].as_f64().unwrap() - utilization).abs() < 1e-9, "{plan}");
    assert_eq!(plan["hosts"].as_u64().unwrap(), (utilization / 0.5).ceil() as u64, "{plan}");
    let kinds: Vec<&str> = plan["lines"].as_array().unwrap().iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["REGISTER", "PUBLISH", "SUBSCRIBE", "NOTIFY"]);
    assert!(plan["of_baseline"].as_f64().unwrap() > 0.0);

    // The human form says the same.
    let text = tuning(&args[..args.len() - files.len() - 1].iter().copied().chain(files.iter().map(String::as_str)).collect::<Vec<_>>());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("{} host(s)", plan["hosts"])), "{text}");
}

#[test]
fn a_cluster_plan_survives_its_failures_from_the_cli() {
    let names = ["presenced-2-register", "presenced-2-publish", "presenced-2-subscribe", "presenced-2-fanout"];
    let files: Vec<String> = names.iter().map(|n| fixture(n)).collect();
    let mut args = vec!["--subscribers", "10000000", "--target-utilization", "0.5", "--failures", "1", "--json"];
    args.extend(files.iter().map(String::as_str));
    let out = tuning(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &plan["cluster"];
    let (nodes, u) = (c["nodes"].as_u64().unwrap(), plan["utilization"].as_f64().unwrap());
    // With one node down the others carry the busy hour and every forward
    // at a transaction's cost (the default), within the target; one node
    // fewer would not.
    let per_node = |up: u64| u * (1.0 + (up - 1) as f64 / up as f64) / up as f64;
    assert!(per_node(nodes - 1) <= 0.5 && (nodes < 3 || per_node(nodes - 2) > 0.5), "{plan}");
    assert!(nodes > plan["hosts"].as_u64().unwrap(), "a cluster needs more than the single-host count: {plan}");
    assert!((c["per_node_after_failures"].as_f64().unwrap() - per_node(nodes - 1)).abs() < 1e-9);
    let mut bad = vec!["--subscribers", "1000", "--failures", "1", "--hop-cost=-1"];
    bad.extend(files.iter().map(String::as_str));
    let out = tuning(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not be negative"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn missing_or_mixed_reports_are_clear_errors() {
    let without_fanout =
        tuning(&["--subscribers", "1000", &fixture("presenced-2-register"), &fixture("presenced-2-publish"), &fixture("presenced-2-subscribe")]);
    assert_eq!(without_fanout.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without_fanout.stderr).contains("--scenario fanout"));
    let twice = tuning(&["--subscribers", "1000", &fixture("presenced-2-publish"), &fixture("presenced-2-publish")]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&twice.stderr).contains("one server configuration"));
    let help = String::from_utf8_lossy(&tuning(&["--help"]).stdout).into_owned();
    for flag in ["--subscribers", "--profile", "--target-utilization", "--json"] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
}
