//! Runs the loadgen binary the way a perf engineer would and reads back
//! its JSON report, checking what every report must hold.

use serde_json::Value;
use std::process::Command;

/// Runs `loadgen ARGS --quiet --threads 2 --report F`, asserts success, the
/// documented fields, and no NOTIFY mismatch; returns the report.
pub fn loadgen(args: &[&str]) -> Value {
    let v = loadgen_report(args);
    assert_eq!(v["notify"]["mismatches"], 0, "every NOTIFY matches what was published: {}", v["notify"]);
    v
}

/// [`loadgen`] without the NOTIFY mismatch check, for a peer whose NOTIFYs
/// the caller judges itself.
pub fn loadgen_report(args: &[&str]) -> Value {
    let report = std::env::temp_dir().join(format!("loadgen-test-{}-{}.json", std::process::id(), args.join("_").replace(['/', ':'], "-")));
    let out =
        Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).args(["--quiet", "--threads", "2", "--report", report.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    for field in ["scenario", "transport", "duration_s", "sent", "ok", "errors", "throughput_per_s", "latency_us", "cpu_s", "max_rss_mib", "notify"] {
        assert!(!v[field].is_null(), "report has {field}: {v}");
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_us"][q].as_u64().is_some(), "latency {q}");
    }
    assert_eq!(v["unmatched"], 0, "{v}");
    v
}

/// [`loadgen`] of `scenario` against `target` over `transport`, with the
/// `rest` of the arguments.
pub fn loadgen_at(target: &str, transport: &str, scenario: &str, rest: &[&str]) -> Value {
    let mut args = vec!["--target", target, "--transport", transport, "--scenario", scenario];
    args.extend_from_slice(rest);
    loadgen(&args)
}
