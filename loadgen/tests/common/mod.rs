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

/// Runs a `scale` scenario against `target` with the `rest` of the
/// arguments (`--threads 2`, quiet) and checks what every scale report
/// must hold: the three load steps all answered 2xx, the four phases in
/// order with answers, the half-capacity phases offered half of what the
/// capacity phases achieved, and server readings around each phase.
pub fn scale_at(target: &str, rest: &[&str]) -> Value {
    let report = std::env::temp_dir().join(format!("loadgen-scale-{}-{}.json", std::process::id(), target.replace(':', "-")));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--target", target, "--scenario", "scale", "--quiet", "--threads", "2", "--report", report.to_str().unwrap()])
        .args(rest)
        .output()
        .unwrap();
    assert!(out.status.success(), "loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let _ = std::fs::remove_file(&report);
    let steps: Vec<&str> = v["load"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(steps, ["register", "publish", "subscribe"], "{v}");
    for s in v["load"].as_array().unwrap() {
        assert_eq!(s["ok"], s["sent"], "every load request answered 2xx: {s}");
    }
    let phases = v["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["publish capacity", "publish at half capacity", "subscribe capacity", "subscribe at half capacity"], "{v}");
    for pair in phases.chunks(2) {
        let capacity = pair[0]["report"]["throughput_per_s"].as_f64().unwrap();
        let offered = pair[1]["offered_per_s"].as_f64().unwrap();
        assert!(capacity > 0.0 && pair[1]["report"]["ok"].as_u64().unwrap() > 0, "{v}");
        assert!((offered - capacity / 2.0).abs() <= capacity * 0.01 + 2.0, "half of {capacity}/s offered, not {offered}: {v}");
        assert!(pair[0]["offered_per_s"].is_null(), "capacity phases are closed loop: {v}");
    }
    // start, after the presentities, after the subscriptions, and two
    // readings around each phase.
    assert_eq!(v["readings"].as_array().unwrap().len(), 3 + 2 * 4, "{v}");
    for p in phases {
        assert!(p["server_cpu_us_per_ok"].as_f64().is_some_and(|c| c > 0.0), "server CPU read around {}: {v}", p["name"]);
    }
    v
}
