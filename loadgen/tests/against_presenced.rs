//! The loadgen binary against a real presenced (started in this process
//! through the library, on real loopback sockets), and against its own
//! baseline responder: every scenario runs over UDP and TCP, the JSON
//! report has the documented fields, the counts add up, and every NOTIFY
//! passes the check against what was published.

use presence_engine::config::Config;
use presence_engine::reactor::Server;
mod common;

use common::{loadgen, loadgen_at};
use std::process::Command;

fn server(notify_min_interval_ms: u64) -> Server {
    let mut cfg = Config { listen: "127.0.0.1:0".parse().unwrap(), shards: 2, ..Config::default() };
    cfg.log.level = "warn".into();
    // A debug-build server on a busy host queues: no shedding in tests.
    cfg.overload.target_ms = 0;
    cfg.presence.notify_min_interval_ms = notify_min_interval_ms;
    Server::start(&cfg).expect("presenced starts")
}

#[test]
fn scenarios_against_presenced() {
    let srv = server(1000);
    let target = srv.local_addr().to_string();
    for transport in ["udp", "tcp"] {
        for scenario in ["register", "publish"] {
            let v = loadgen_at(&target, transport, scenario, &["--count", "2000", "--users", "500", "--max-outstanding", "64"]);
            assert_eq!((v["scenario"].as_str(), v["transport"].as_str()), (Some(scenario), Some(transport)));
            assert_eq!(v["sent"], 2000, "{v}");
            assert_eq!(v["ok"], 2000, "every request answered 2xx: {v}");
            assert_eq!(v["errors"]["timeout"], 0);
            assert!(v["throughput_per_s"].as_f64().unwrap() > 0.0);
            if scenario == "publish" {
                // 500 users, 4 PUBLISHes each: initial, 2 modifies, 1 refresh.
                assert_eq!(v["publish_refreshes"], 500, "{v}");
            }
        }
        // Subscribe: each SUBSCRIBE is answered, its NOTIFY answered 200
        // and checked, and every subscription is ended afterwards.
        let v = loadgen_at(&target, transport, "subscribe", &["--count", "400", "--users", "100", "--max-outstanding", "32"]);
        assert_eq!(v["ok"], 400, "{v}");
        assert_eq!(v["notifies"], 400, "one NOTIFY per new subscription: {v}");
        assert_eq!(v["notify"]["pidf_validated"], 400, "{v}");
        assert_eq!(v["teardown"]["ok"], 400, "{v}");
    }
    // An open-loop run at a fixed rate for a fixed time.
    let v = loadgen(&["--target", &target, "--scenario", "register", "--rate", "2000", "--duration", "1", "--ramp", "0.2", "--users", "200"]);
    let sent = v["sent"].as_u64().unwrap();
    assert!((1500..=2200).contains(&sent), "about 2000/s for 1 s (ramp 0.2 s): {sent}");
    srv.shutdown();
}

#[test]
fn fanout_delivers_every_version_to_every_watcher() {
    // No NOTIFY rate limit: each watcher can see each version.
    let srv = server(0);
    let target = srv.local_addr().to_string();
    for transport in ["udp", "tcp"] {
        let unix_now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let began = unix_now();
        let args = ["--presentities", "3", "--watchers", "40", "--count", "30", "--max-outstanding", "2", "--setup-settle", "0.5"];
        let v = loadgen_at(&target, transport, "fanout", &args);
        // The storm began once the subscriptions had stood idle 0.5 s, and
        // the report says when (scripts line the server's RSS up with it).
        let storm_began = v["setup"]["ended_unix_s"].as_f64().unwrap();
        let setup_s = v["setup"]["duration_s"].as_f64().unwrap();
        assert!(storm_began >= began + setup_s + 0.5 && storm_began <= unix_now(), "{began} {storm_began}: {v}");
        assert_eq!(v["setup"]["subscriptions"], 120, "{v}");
        assert_eq!(v["setup"]["ok"], 120, "{v}");
        assert_eq!(v["ok"], 30, "every PUBLISH of the storm accepted: {v}");
        assert_eq!(v["by_kind"]["publish"]["ok"], 30, "{v}");
        // Each PUBLISH reaches the presentity's 40 watchers; coalescing may
        // merge versions that arrive while a NOTIFY is in flight, but the
        // newest one always reaches every watcher.
        let notifies = v["notify"]["received"].as_u64().unwrap();
        assert!((120..=1200).contains(&notifies), "{notifies} NOTIFYs: {v}");
        let lat = &v["notify"]["publish_to_notify_us"];
        assert!(lat["p50"].as_u64().unwrap() > 0 && lat["max"].as_u64().unwrap() >= lat["p50"].as_u64().unwrap(), "{v}");
        assert_eq!(v["teardown"]["ok"], 120, "{v}");
    }
    srv.shutdown();
}

/// Presence by subscription: the agents register with the feature tag,
/// presenced subscribes to each once it is watched, and every agent NOTIFY
/// is ingested and reaches its watcher as a checked document.
#[test]
fn peu_agents_notify_and_watchers_see_it() {
    let srv = server(0);
    let target = srv.local_addr().to_string();
    for transport in ["udp", "tcp"] {
        let v = loadgen_at(&target, transport, "peu", &["--users", "50", "--count", "500", "--max-outstanding", "16"]);
        assert_eq!(v["setup"]["subscriptions"], 50, "one watcher per agent: {v}");
        assert_eq!(v["setup"]["ok"], 50, "{v}");
        assert_eq!(v["by_kind"]["notify"]["ok"], 500, "every agent NOTIFY ingested with 200: {v}");
        // Each document reaches the agent's watcher, newest always; the
        // first documents (sent in setup) come on top.
        let received = v["notify"]["received"].as_u64().unwrap();
        assert!((50..=600).contains(&received), "{received} watcher NOTIFYs: {v}");
        assert_eq!(v["notify"]["mismatches"], 0, "{v}");
        assert_eq!(v["teardown"]["ok"], 50, "{v}");
    }
    srv.shutdown();
}

#[test]
fn mixed_replays_a_profile() {
    let srv = server(0);
    let target = srv.local_addr().to_string();
    let profile = std::env::temp_dir().join(format!("loadgen-profile-{}.toml", std::process::id()));
    // 100 users x 36 transactions/hour x 1000 = 1000/s.
    std::fs::write(
        &profile,
        "registrations_per_hour = 6.0\npublications_per_hour = 24.0\nsubscriptions_per_hour = 6.0\nwatchers_per_presentity = 3\ntime_scale = 1000.0\n",
    )
    .unwrap();
    let v =
        loadgen(&["--target", &target, "--scenario", "mixed", "--users", "100", "--duration", "2", "--ramp", "0.1", "--profile", profile.to_str().unwrap()]);
    let _ = std::fs::remove_file(&profile);
    assert_eq!(v["setup"]["subscriptions"], 300, "3 standing watchers per user: {v}");
    assert_eq!(v["setup"]["ok"], 300, "{v}");
    let sent = v["sent"].as_u64().unwrap();
    assert!((1500..=2100).contains(&sent), "the profile's 1000/s for 2 s (ramp 0.1 s): {sent}");
    // The kinds in the profile's proportions 1:4:1.
    let kind = |k: &str| v["by_kind"][k]["sent"].as_u64().unwrap() as f64 / sent as f64;
    assert!((kind("register") - 1.0 / 6.0).abs() < 0.02 && (kind("publish") - 4.0 / 6.0).abs() < 0.02, "{}", v["by_kind"]);
    assert_eq!(v["ok"], v["sent"], "{v}");
    assert!(v["notify"]["received"].as_u64().unwrap() > sent, "publications reach the standing watchers: {v}");
    srv.shutdown();
}

#[test]
fn a_million_simulated_users_fit_in_memory() {
    // Every one of a million users sends a REGISTER (to the stateless
    // baseline responder, so only the load generator's memory is measured).
    let v = loadgen(&["baseline", "--users", "1000000", "--count", "1000000", "--max-outstanding", "512"]);
    assert_eq!(v["ok"], 1_000_000, "{v}");
    let rss = v["max_rss_mib"].as_f64().unwrap();
    assert!(rss > 0.0 && rss < 1024.0, "peak RSS {rss} MiB for a million users");
}

#[test]
fn baseline_measures_the_host() {
    let v = loadgen(&["baseline", "--count", "3000", "--max-outstanding", "64"]);
    assert_eq!(v["scenario"], "baseline");
    assert_eq!(v["ok"], 3000, "{v}");
}

#[test]
fn bad_arguments_are_clear_errors() {
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).output().unwrap();
    let out = run(&["--scenario", "storm", "--count", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use one of register, publish, subscribe, fanout, mixed"));
    let out = run(&["--transport", "sctp", "--count", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use udp or tcp"));
    let out = run(&["--scenario", "mixed", "--profile", "/nonexistent.toml", "--count", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--target",
        "--scenario",
        "--rate",
        "--max-outstanding",
        "--duration",
        "--count",
        "--users",
        "--transport",
        "--report",
        "--presentities",
        "--watchers",
        "--profile",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
}

/// `--overload-control`: loadgen asks for RFC 7339 feedback in its Via and
/// holds back new requests as told. A responder that answers every request
/// 200 with "hold back 100 % for a minute" lets only the requests sent
/// before its first answer arrived through; without the flag loadgen
/// neither asks nor listens.
#[test]
fn overload_control_holds_back_what_the_server_asks() {
    use presence_engine::sip::oc::OcFeedback;
    use presence_engine::sip::{Limits, RawMessage, response_to_with};
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let target = sock.local_addr().unwrap().to_string();
    let asked = Arc::new(AtomicU64::new(0));
    let seen = asked.clone();
    std::thread::spawn(move || {
        let (mut buf, mut out) = (vec![0u8; 65536], Vec::new());
        let hold_all = OcFeedback { loss_pct: 100, validity_ms: 60_000, seq_ms: 1 };
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            let Ok(req) = RawMessage::split(&buf[..n], &Limits::default()) else { continue };
            if String::from_utf8_lossy(&buf[..n]).contains(";oc;oc-algo=\"loss\"") {
                seen.fetch_add(1, Ordering::Relaxed);
            }
            out.clear();
            response_to_with(&mut out, &req, 200, "OK", Some(b"t"), Some(from), Some(&hold_all)).finish(None, b"");
            let _ = sock.send_to(&out, from);
        }
    });
    let run = |extra: &[&str]| {
        let mut args = vec!["--target", &target, "--scenario", "register", "--rate", "2000", "--duration", "1", "--ramp", "0", "--users", "200"];
        args.extend_from_slice(extra);
        loadgen(&args)
    };
    let v = run(&[]);
    assert_eq!(v["throttled"], 0, "{v}");
    assert!(v["sent"].as_u64().unwrap() >= 1500, "{v}");
    assert_eq!(asked.load(Ordering::Relaxed), 0, "no oc asked without the flag");
    let v = run(&["--overload-control"]);
    let (sent, held) = (v["sent"].as_u64().unwrap(), v["throttled"].as_u64().unwrap());
    assert!(held >= 1500 && sent < 200, "only what went before the first answer: sent {sent}, held back {held}: {v}");
    assert_eq!(asked.load(Ordering::Relaxed), sent, "every request sent asked for overload control");
}

/// The scale scenario against presenced in this process: 300 users each
/// watching 3 others, the phases measured, this process read as the
/// server. Every PUBLISH changes a watched document, so NOTIFYs flow in the
/// PUBLISH phases too, and each one is checked.
#[test]
fn scale_loads_the_server_then_measures_it_in_phases() {
    let srv = server(0);
    let target = srv.local_addr().to_string();
    let me = std::process::id().to_string();
    let args = ["--users", "300", "--watchers", "3", "--settle", "0.2", "--duration", "0.5", "--steady", "0.5", "--max-outstanding", "16", "--server-pid", &me];
    let v = common::scale_at(&target, &args);
    assert_eq!(v["load"][2]["ok"], 900, "3 standing subscriptions per user: {v}");
    assert!(v["bytes_per_presentity"].is_number() && v["bytes_per_subscription"].is_number(), "{v}");
    for p in v["phases"].as_array().unwrap() {
        assert_eq!(p["report"]["notify"]["mismatches"], 0, "{p}");
        assert!(p["notifies_per_ok"].as_f64().unwrap() > 0.0, "PUBLISHes reach their watchers, SUBSCRIBEs get a first NOTIFY: {p}");
    }
    srv.shutdown();
}
