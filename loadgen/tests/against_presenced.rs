//! The loadgen binary against a real presenced (started in this process
//! through the library, on real loopback sockets), and against its own
//! baseline responder: every scenario runs, the JSON report has the
//! documented fields, and the counts add up.

use presence_engine::config::Config;
use presence_engine::reactor::Server;
use std::process::Command;

fn server() -> Server {
    let mut cfg = Config::default();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.shards = 2;
    cfg.log.level = "warn".into();
    Server::start(&cfg).expect("presenced starts")
}

fn loadgen(args: &[&str]) -> serde_json::Value {
    let report = std::env::temp_dir().join(format!("loadgen-test-{}-{}.json", std::process::id(), args.join("_").replace(['/', ':'], "-")));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .args(["--quiet", "--threads", "2", "--report", report.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "loadgen failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    for field in ["scenario", "duration_s", "sent", "ok", "errors", "throughput_per_s", "latency_us", "cpu_s"] {
        assert!(!v[field].is_null(), "report has {field}: {v}");
    }
    for q in ["p50", "p90", "p99", "p999", "max"] {
        assert!(v["latency_us"][q].as_u64().is_some(), "latency {q}");
    }
    v
}

#[test]
fn scenarios_against_presenced() {
    let srv = server();
    let target = srv.local_addr().to_string();
    for scenario in ["register", "publish"] {
        let v = loadgen(&["--target", &target, "--scenario", scenario, "--count", "2000", "--users", "500", "--max-outstanding", "64"]);
        assert_eq!(v["scenario"], scenario);
        assert_eq!(v["sent"], 2000, "{v}");
        assert_eq!(v["ok"], 2000, "every request answered 2xx: {v}");
        assert_eq!(v["errors"]["timeout"], 0);
        assert!(v["throughput_per_s"].as_f64().unwrap() > 0.0);
    }
    // Subscribe: each SUBSCRIBE is answered and its NOTIFY answered 200.
    let v = loadgen(&["--target", &target, "--scenario", "subscribe", "--count", "400", "--users", "100", "--max-outstanding", "32"]);
    assert_eq!(v["ok"], 400, "{v}");
    assert!(v["notifies"].as_u64().unwrap() >= 300, "NOTIFYs answered: {v}");
    // An open-loop run at a fixed rate for a fixed time.
    let v = loadgen(&["--target", &target, "--scenario", "register", "--rate", "2000", "--duration", "1", "--ramp", "0.2", "--users", "200"]);
    let sent = v["sent"].as_u64().unwrap();
    assert!((1500..=2200).contains(&sent), "about 2000/s for 1 s (ramp 0.2 s): {sent}");
    srv.shutdown();
}

#[test]
fn baseline_measures_the_host() {
    let v = loadgen(&["baseline", "--count", "3000", "--max-outstanding", "64"]);
    assert_eq!(v["scenario"], "baseline");
    assert_eq!(v["ok"], 3000, "{v}");
}

#[test]
fn unknown_scenarios_and_transports_are_clear_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(["--scenario", "mixed", "--count", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not built yet"));
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(["--transport", "tcp", "--count", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let help = Command::new(env!("CARGO_BIN_EXE_loadgen")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--target", "--scenario", "--rate", "--max-outstanding", "--duration", "--count", "--users", "--transport", "--report"] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
}
