//! The load generator against an independent presence server: Kamailio
//! with its presence modules, in memory mode, started from the shipped
//! `loadgen/kamailio/kamailio.cfg` (the README's guide) on a free port.
//! `.ci/run` installs the Debian packages; on a machine without them the
//! test says so and passes only outside CI.

mod common;

use common::loadgen_at;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODULES: &str = "/usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so";

struct Kamailio {
    child: Child,
    port: u16,
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // Kamailio runs several processes in one group: stop them all.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // A port free for both UDP and TCP.
    loop {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn kamailio() -> Option<Kamailio> {
    let installed = Command::new("kamailio").arg("-v").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if !installed || !std::path::Path::new(MODULES).exists() {
        assert!(std::env::var_os("CI").is_none(), "CI must install kamailio and kamailio-presence-modules (.ci/run does)");
        eprintln!("kamailio or its presence modules are not installed: skipping (apt-get install kamailio kamailio-presence-modules)");
        return None;
    }
    let port = free_port();
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/kamailio/kamailio.cfg")).unwrap();
    let cfg = std::env::temp_dir().join(format!("kamailio-{}-{port}.cfg", std::process::id()));
    std::fs::write(&cfg, shipped.replace("127.0.0.1:5070", &format!("127.0.0.1:{port}"))).unwrap();
    let log = std::fs::File::create(std::env::temp_dir().join(format!("kamailio-{port}.log"))).unwrap();
    use std::os::unix::process::CommandExt;
    let child = Command::new("kamailio")
        .args(["-f", cfg.to_str().unwrap(), "-DD", "-E", "-m", "256", "-M", "16", "-Y", std::env::temp_dir().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("kamailio starts");
    let k = Kamailio { child, port };
    // Ready when it answers OPTIONS.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let me = sock.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ready\r\nMax-Forwards: 70\r\nFrom: <sip:t@example.com>;tag=1\r\n\
To: <sip:127.0.0.1:{port}>\r\nCall-ID: ready@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = sock.send_to(options.as_bytes(), ("127.0.0.1", port));
        if let Ok((n, _)) = sock.recv_from(&mut buf)
            && buf[..n].starts_with(b"SIP/2.0 200")
        {
            return Some(k);
        }
    }
    panic!("kamailio did not answer OPTIONS on port {port}");
}

#[test]
fn every_scenario_runs_against_kamailio() {
    let Some(k) = kamailio() else { return };
    let target = format!("127.0.0.1:{}", k.port);
    for transport in ["udp", "tcp"] {
        for scenario in ["register", "publish", "subscribe"] {
            let v = loadgen_at(&target, transport, scenario, &["--count", "800", "--users", "200", "--max-outstanding", "16"]);
            assert_eq!(v["ok"], 800, "{scenario} over {transport}: {v}");
            if scenario == "publish" {
                assert_eq!(v["publish_refreshes"], 200, "one refresh per user: {v}");
            }
            assert_eq!(v["errors"]["timeout"], 0, "{v}");
        }
        let args = ["--target", &target, "--transport", transport, "--scenario", "fanout"];
        let v = common::loadgen_report(&[&args[..], &["--presentities", "4", "--watchers", "25", "--count", "20", "--max-outstanding", "2"]].concat());
        // Kamailio's worker processes can send a NOTIFY with a newer CSeq
        // but an older document when PUBLISHes to one presentity overlap (a
        // CI run saw a version go back from 5 to 4): the peer's behaviour,
        // which loadgen reports. Anything else (a wrong document) fails.
        let examples = v["notify"]["mismatch_examples"].as_array().cloned().unwrap_or_default();
        assert!(examples.iter().all(|e| e.as_str().is_some_and(|e| e.contains("went back from version"))), "{v}");
        assert_eq!(v["setup"]["ok"], 100, "{v}");
        assert_eq!(v["ok"], 20, "{v}");
        // Kamailio does not rate-limit NOTIFYs: each PUBLISH reaches its 25
        // watchers. When its workers race, a NOTIFY can come again with an
        // old CSeq, which loadgen counts as a retransmission.
        let n = &v["notify"];
        assert_eq!(n["received"].as_u64().unwrap() + n["retransmitted"].as_u64().unwrap(), 500, "{v}");
        assert!(v["notify"]["publish_to_notify_us"]["p50"].as_u64().unwrap() > 0, "{v}");
    }
}

/// The scale scenario runs against Kamailio the same way (the bench's side
/// by side); its CPU and memory are read over its process tree.
#[test]
fn scale_runs_against_kamailio() {
    let Some(k) = kamailio() else { return };
    let target = format!("127.0.0.1:{}", k.port);
    let pid = k.child.id().to_string();
    let args = ["--users", "200", "--watchers", "2", "--settle", "0.2", "--duration", "0.5", "--steady", "0.5", "--max-outstanding", "8", "--server-pid", &pid];
    let v = common::scale_at(&target, &args);
    assert_eq!(v["load"][2]["ok"], 400, "{v}");
    assert!(v["readings"][0]["server"]["processes"].as_u64().unwrap() > 1, "Kamailio serves from forked children: {v}");
}
