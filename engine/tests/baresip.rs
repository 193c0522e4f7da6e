//! Interop with an independent presence user agent: baresip (Debian
//! `baresip-core`, installed by `.ci/run`), whose `presence` module
//! answers a SUBSCRIBE for its own account with 200 and a PIDF NOTIFY, and
//! NOTIFYs again when its status changes.
//!
//! baresip registers to presenced but advertises no `events` feature tag,
//! so it is named as a configured agent (`[[peu.agent]]`). A watcher's
//! SUBSCRIBE makes presenced SUBSCRIBE to baresip; baresip's NOTIFY is the
//! watcher's document; `presence_offline` (over baresip's ctrl_tcp) reaches
//! the watcher as a closed tuple; when the watcher leaves, presenced
//! unsubscribes and baresip answers 200.

mod common;
use common::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port free for both UDP and TCP (bound and released), for
/// baresip to listen on. baresip binds its SIP port over UDP and TCP, so a
/// port found free for UDP alone failed now and then in CI: "tcp:
/// sock_bind: Address already in use". Ports handed out by `bind(0)` come
/// from the kernel's ephemeral range, which every outgoing TCP connection
/// on the host also draws from, so the port is taken below that range.
fn free_port() -> u16 {
    let ephemeral_low =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok()).unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919).wrapping_add(unique().wrapping_mul(104_729)) % span;
    (0..span)
        .map(|i| low + ((start + i) % span) as u16)
        .find(|&port| UdpSocket::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a loopback port free for UDP and TCP below the ephemeral range")
}

struct Baresip {
    child: Child,
    ctrl: u16,
    /// baresip's own output, shown when the test fails.
    log: std::path::PathBuf,
}

impl Baresip {
    /// baresip with one account registered at `registrar`, listening on
    /// `sip_port`, status set to online before anyone subscribes (its
    /// status is `?` until set, which is no valid PIDF basic value).
    fn start(user: &str, registrar: std::net::SocketAddr, sip_port: u16) -> Baresip {
        let dir = std::env::temp_dir().join(format!("presenced-baresip-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).unwrap();
        let ctrl = std::iter::repeat_with(free_port).find(|&p| p != sip_port).unwrap();
        std::fs::write(
            dir.join("config"),
            format!(
                "sip_listen 127.0.0.1:{sip_port}\nmodule_path /usr/lib/baresip/modules\nmodule g711.so\nmodule_app account.so\n\
module_app contact.so\nmodule_app presence.so\nmodule_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl}\n\
audio_player aufile,/dev/null\naudio_source aufile,/dev/null\n"
            ),
        )
        .unwrap();
        // pubint=0: baresip does not PUBLISH, so subscription is the only path.
        std::fs::write(dir.join("accounts"), format!("<sip:{user}@{registrar}>;regint=600;pubint=0\n")).unwrap();
        std::fs::write(dir.join("contacts"), "").unwrap();
        let log = dir.join("output.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("baresip")
            .args(["-f", dir.to_str().unwrap(), "-e", "/presence_online"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip is installed (.ci/run installs baresip-core)");
        Baresip { child, ctrl, log }
    }

    /// A ctrl_tcp command (a netstring with JSON).
    fn command(&self, command: &str) {
        let end = Instant::now() + WAIT;
        let mut c = loop {
            match TcpStream::connect(("127.0.0.1", self.ctrl)) {
                Ok(c) => break c,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("baresip ctrl_tcp: {e}"),
            }
        };
        let json = format!("{{\"command\":\"{command}\",\"params\":\"\",\"token\":\"t\"}}");
        c.write_all(format!("{}:{json},", json.len()).as_bytes()).unwrap();
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("baresip's output:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

/// The tuple baresip contributes (its id differs from the registration's
/// "reg" tuples), with its basic status.
fn baresip_basic(doc: &str) -> Option<String> {
    doc.split("<tuple").filter(|t| !t.contains("id=\"reg")).find_map(|t| {
        let start = t.find("<basic>")? + 7;
        Some(t[start..start + t[start..].find("</basic>")?].to_string())
    })
}

#[test]
fn baresip_as_a_presence_user_agent() {
    let sip_port = free_port();
    let aor = "sip:bob@example.com";
    let cfg = config_file("baresip-agent", &format!("[[peu.agent]]\npresentity = \"{aor}\"\nuri = \"sip:bob@127.0.0.1:{sip_port}\"\n"));
    let srv = Presenced::start(2, &["--config", &cfg, "--notify-min-interval-ms", "0", "--peu-grace-seconds", "1"]);
    let bs = Baresip::start("bob", srv.addr, sip_port);
    // baresip is up once it has registered.
    srv.wait_matching("handled", 1, Duration::from_secs(10), |r| r["method"] == "REGISTER" && r["status"] == 200);

    let (mut watcher, ok, _first) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n");
    assert_eq!(status(&ok), 200);
    // presenced subscribes to baresip; baresip's NOTIFY (open) reaches the
    // watcher.
    let mut doc = String::new();
    let end = Instant::now() + Duration::from_secs(10);
    while baresip_basic(&doc).as_deref() != Some("open") {
        assert!(Instant::now() < end, "baresip's document never reached the watcher: {doc}");
        doc = body(&watcher.next_notify(&srv));
    }
    // baresip accepted the SUBSCRIBE with 200.
    srv.wait_matching("presence agent", 1, WAIT, |r| r["state"] == "active" && r["status"] == 200);

    // baresip goes offline: its NOTIFY reaches the watcher.
    bs.command("presence_offline");
    while baresip_basic(&doc).as_deref() != Some("closed") {
        assert!(Instant::now() < end, "baresip's update never reached the watcher: {doc}");
        doc = body(&watcher.next_notify(&srv));
    }
    // Both of baresip's NOTIFYs were answered 200.
    srv.wait_matching("handled", 2, WAIT, |r| r["method"] == "NOTIFY" && r["status"] == 200);

    // The watcher leaves; after the grace period presenced unsubscribes
    // and baresip answers 200.
    assert_eq!(status(&watcher.resubscribe(&srv, 0)), 200);
    srv.wait_matching("presence agent", 1, Duration::from_secs(10), |r| r["state"] == "idle" && r["status"] == 200);
}
