//! `presenced` over real sockets on loopback: OPTIONS, error answers,
//! response routing (RFC 3261 18.2.2, RFC 3581), retransmissions, shard
//! ownership and clean shutdown, with one shard and with several.

mod common;
use common::*;
use presence_engine::core::ids::owner_of;
use presence_engine::reactor::memory::transparent_huge_pages_enabled as thp_enabled;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;

fn check_options_200(resp: &[u8]) {
    assert_eq!(status(resp), 200, "{}", String::from_utf8_lossy(resp));
    let allow = header(resp, "Allow").expect("Allow");
    assert!(allow.contains("OPTIONS"), "{allow}");
    assert!(header(resp, "Accept").is_some(), "Accept header");
    assert!(header(resp, "Supported").is_some(), "Supported header");
    assert!(header(resp, "To").unwrap().contains(";tag="), "To tag added");
    assert_eq!(header(resp, "Call-ID").unwrap(), "opt-1");
    assert_eq!(header(resp, "CSeq").unwrap(), "1 OPTIONS");
}

#[test]
fn options_over_udp_and_tcp_with_one_and_two_shards() {
    for shards in [1, 2] {
        let srv = Presenced::start(shards, &[]);
        let ip = Ipv4Addr::LOCALHOST;
        let s = udp_socket(ip, 0);
        let port = s.local_addr().unwrap().port();
        let resp = udp_transaction(&s, srv.addr, &options("sip:alice@example.com", &format!("UDP 127.0.0.1:{port};branch=z9hG4bKo1"), "opt-1"));
        check_options_200(&resp);

        let mut t = tcp_connect(srv.addr);
        let port = t.local_addr().unwrap().port();
        let resp = tcp_transaction(&mut t, &options("sip:alice@example.com", &format!("TCP 127.0.0.1:{port};branch=z9hG4bKo2"), "opt-1"));
        check_options_200(&resp);
        // Keep-alive ping on the same connection gets a pong, then the
        // connection still carries requests.
        t.write_all(b"\r\n\r\n").unwrap();
        let resp = tcp_transaction(&mut t, &options("sip:alice@example.com", &format!("TCP 127.0.0.1:{port};branch=z9hG4bKo3"), "opt-1"));
        check_options_200(&resp);
    }
}

#[test]
fn udp_responses_go_where_rfc3261_and_rfc3581_say() {
    let srv = Presenced::start(2, &[]);
    let ip = fresh_loopback();
    let sender = udp_socket(ip, 0);
    let sent_by = udp_socket(ip, 0);
    let sent_by_port = sent_by.local_addr().unwrap().port();

    // No rport: to the source address at the Via sent-by port, with received.
    let req = options("sip:bob@example.com", &format!("UDP client.example.com:{sent_by_port};branch=z9hG4bKr1"), "route-1");
    sender.send_to(&req, srv.addr).unwrap();
    let resp = recv(&sent_by, WAIT).expect("response at the sent-by port");
    let via = header(&resp, "Via").unwrap();
    assert!(via.contains(&format!("received={ip}")), "{via}");
    assert!(!via.contains("rport"), "{via}");
    assert!(recv(&sender, Duration::from_millis(200)).is_none(), "nothing to the source port");

    // rport: to the source address and port, with rport filled in.
    let req = options("sip:bob@example.com", &format!("UDP client.example.com:{sent_by_port};rport;branch=z9hG4bKr2"), "route-2");
    sender.send_to(&req, srv.addr).unwrap();
    let resp = recv(&sender, WAIT).expect("response at the source port");
    let via = header(&resp, "Via").unwrap();
    let src_port = sender.local_addr().unwrap().port();
    assert!(via.contains(&format!("rport={src_port}")) && via.contains(&format!("received={ip}")), "{via}");
    assert!(recv(&sent_by, Duration::from_millis(200)).is_none());
}

#[test]
fn bad_requests_get_the_right_answer_and_the_server_keeps_going() {
    for shards in [1, 2] {
        let srv = Presenced::start(shards, &["--max-message-size", "2000"]);
        let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
        let port = s.local_addr().unwrap().port();
        let via = |b: &str| format!("UDP 127.0.0.1:{port};rport;branch=z9hG4bK{b}");
        let base = String::from_utf8(options("sip:carol@example.com", &via("b1"), "bad-1")).unwrap();

        // Unknown method: 405 with Allow.
        let r = udp_transaction(&s, srv.addr, base.replace("OPTIONS sip", "FROB sip").replace("1 OPTIONS", "1 FROB").as_bytes());
        assert_eq!(status(&r), 405);
        assert!(header(&r, "Allow").unwrap().contains("OPTIONS"));

        // Missing Call-ID: 400 whose reason says so.
        let r = udp_transaction(&s, srv.addr, base.replace("z9hG4bKb1", "z9hG4bKb2").replace("Call-ID: bad-1\r\n", "").as_bytes());
        assert_eq!(status(&r), 400);
        assert!(String::from_utf8_lossy(&r).lines().next().unwrap().contains("Missing Call-ID"), "{}", String::from_utf8_lossy(&r));

        // Wrong version: 505.
        let r = udp_transaction(&s, srv.addr, base.replace("z9hG4bKb1", "z9hG4bKb3").replace(" SIP/2.0\r\nVia", " SIP/3.0\r\nVia").as_bytes());
        assert_eq!(status(&r), 505);

        // Oversize: 513.
        let big = base.replace("z9hG4bKb1", "z9hG4bKb4").replace("Content-Length: 0\r\n", &format!("Subject: {}\r\nContent-Length: 0\r\n", "x".repeat(3000)));
        let r = udp_transaction(&s, srv.addr, big.as_bytes());
        assert_eq!(status(&r), 513);

        // Unsupported Require: 420 listing it in Unsupported.
        let r = udp_transaction(&s, srv.addr, base.replace("z9hG4bKb1", "z9hG4bKb5").replace("Max-Forwards", "Require: foo, bar\r\nMax-Forwards").as_bytes());
        assert_eq!(status(&r), 420);
        assert_eq!(header(&r, "Unsupported").unwrap(), "foo, bar");

        // Non-SIP Request-URI scheme: 416.
        let r = udp_transaction(
            &s,
            srv.addr,
            base.replace("z9hG4bKb1", "z9hG4bKb6").replace("OPTIONS sip:carol@example.com SIP", "OPTIONS http://example.com/ SIP").as_bytes(),
        );
        assert_eq!(status(&r), 416);

        // Garbage, a broken response and an ACK: no answer at all.
        for junk in [
            &b"\x00\x01garbage\r\n\r\n"[..],
            b"SIP/2.0 999999 Nope\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\n\r\n",
            b"ACK sip:carol@example.com SIP/2.0\r\n\r\n",
        ] {
            s.send_to(junk, srv.addr).unwrap();
        }
        assert!(recv(&s, Duration::from_millis(300)).is_none(), "no answer to garbage, responses or ACK");

        let r = udp_transaction(&s, srv.addr, base.replace("z9hG4bKb1", "z9hG4bKb7").as_bytes());
        assert_eq!(status(&r), 200, "still answering");
    }
}

#[test]
fn retransmission_is_answered_from_the_transaction() {
    let srv = Presenced::start(2, &[]);
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let port = s.local_addr().unwrap().port();
    let req = options("sip:dave@example.com", &format!("UDP 127.0.0.1:{port};rport;branch=z9hG4bKrt1"), "retrans-1");
    let first = udp_transaction(&s, srv.addr, &req);
    let second = udp_transaction(&s, srv.addr, &req);
    assert_eq!(first, second, "the same response, to-tag included");
    let handled: Vec<_> = srv.wait_logged("handled", 1).into_iter().filter(|v| v["call_id"] == "retrans-1").collect();
    let retrans: Vec<_> = srv.wait_logged("retransmission", 1).into_iter().filter(|v| v["call_id"] == "retrans-1").collect();
    assert_eq!(handled.len(), 1, "processed once");
    assert_eq!(retrans.len(), 1);
    assert_eq!(retrans[0]["replayed"], true);
}

/// Requests for presentities on other shards are handled by their owner:
/// seen in the server's log (which shard handled it, which received it).
#[test]
fn requests_are_handled_by_the_owning_shard() {
    let shards = 2;
    let srv = Presenced::start(shards, &[]);
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let port = s.local_addr().unwrap().port();
    let mut t = tcp_connect(srv.addr);
    let tport = t.local_addr().unwrap().port();
    let users: Vec<String> = (0..24).map(|i| format!("sip:user{i}@example.com")).collect();
    for (i, u) in users.iter().enumerate() {
        let r = udp_transaction(&s, srv.addr, &options(u, &format!("UDP 127.0.0.1:{port};rport;branch=z9hG4bKown{i}"), &format!("own-udp-{i}")));
        assert_eq!(status(&r), 200);
        // Over TCP the answer must come back on this connection even when
        // another shard handles the request.
        let r = tcp_transaction(&mut t, &options(u, &format!("TCP 127.0.0.1:{tport};branch=z9hG4bKtown{i}"), &format!("own-tcp-{i}")));
        assert_eq!(status(&r), 200);
    }
    let handled = srv.wait_logged("handled", 2 * users.len());
    let mut by_call: HashMap<String, (u64, u64)> = HashMap::new();
    for v in &handled {
        by_call.insert(v["call_id"].as_str().unwrap().to_string(), (v["shard"].as_u64().unwrap(), v["received_on"].as_u64().unwrap()));
    }
    let mut forwarded = 0;
    let mut owners = HashSet::new();
    for (i, u) in users.iter().enumerate() {
        let owner = owner_of(u.as_bytes(), shards as u16) as u64;
        owners.insert(owner);
        for call in [format!("own-udp-{i}"), format!("own-tcp-{i}")] {
            let (shard, received_on) = by_call[&call];
            assert_eq!(shard, owner, "{call} for {u} handled on shard {shard}, owner is {owner}");
            if received_on != shard {
                forwarded += 1;
            }
        }
    }
    assert_eq!(owners.len(), shards, "the users spread over every shard");
    assert!(forwarded > 0, "some requests crossed shards");
}

/// Huge pages zeroed on first touch stalled a shard for milliseconds
/// (reactor::memory): off unless the config turns them on.
#[test]
fn transparent_huge_pages_are_off_unless_configured() {
    let mut off = Presenced::start(1, &[]);
    let cfg = config_file("thp.toml", "[io]\ntransparent_huge_pages = true\n");
    let mut on = Presenced::start(1, &["--config", &cfg]);
    if let (Some(off_state), Some(on_state)) = (thp_enabled(Some(off.pid())), thp_enabled(Some(on.pid()))) {
        assert!(!off_state, "the default turns them off");
        assert!(on_state, "the config keeps them");
    }
    assert!(off.terminate() && on.terminate());
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut srv = Presenced::start(2, &[]);
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let port = s.local_addr().unwrap().port();
    let r = udp_transaction(&s, srv.addr, &options("sip:eve@example.com", &format!("UDP 127.0.0.1:{port};rport;branch=z9hG4bKsig"), "sig-1"));
    assert_eq!(status(&r), 200);
    assert!(srv.is_running());
    assert!(srv.terminate(), "exit status 0 within 5 s of SIGTERM");
    assert_eq!(srv.logged("shard stopped").len(), 2);
}

#[test]
fn bad_command_line_and_config_are_clear_errors() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presenced")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--listen", "--shards", "--pin-cores", "--max-message-size", "--log-level"] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
    let dir = std::env::temp_dir().join(format!("presenced-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "shards = 2\nlistne = \"x\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presenced")).arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field"), "{}", String::from_utf8_lossy(&out.stderr));
    let good = dir.join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:0\"\nshards = 3\n[timers]\nt1_ms = 100\n").unwrap();
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_presenced")).arg("--config").arg(&good).args(["--shards", "1", "--check-config"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("shards: 1") && text.contains("t1_ms: 100"), "{text}");
    // An address in use (by a socket without SO_REUSEPORT) is a clear
    // startup error, not a panic.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_presenced")).args(["--listen", &addr, "--shards", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot bind UDP {addr}")), "{err}");
}

/// Thousands of mutated torture messages over UDP and TCP: afterwards the
/// process runs and every shard still answers.
#[test]
fn mutated_messages_never_stop_a_shard() {
    let shards = 2;
    let srv = Presenced::start(shards, &[]);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rfc4475");
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "dat"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    corpus.sort();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let mut streams: Vec<std::net::TcpStream> = (0..4).map(|_| tcp_connect(srv.addr)).collect();
    for i in 0..4000 {
        let mut m = corpus[rnd(corpus.len())].clone();
        for _ in 0..1 + rnd(8) {
            if m.len() < 2 {
                break;
            }
            let at = rnd(m.len());
            match rnd(4) {
                0 => m[at] = rnd(256) as u8,
                1 => {
                    m.remove(at);
                }
                2 => m.insert(at, b"\r\n:;,<>\"%"[rnd(9)]),
                _ => m.truncate(at.max(1)),
            }
        }
        let _ = s.send_to(&m, srv.addr);
        if i % 10 == 0 {
            let t = &mut streams[rnd(4)];
            if t.write_all(&m).is_err() {
                *t = tcp_connect(srv.addr);
            }
        }
        if i % 200 == 0 {
            std::thread::sleep(Duration::from_millis(5)); // let the socket buffer drain
        }
    }
    drop(streams);
    std::thread::sleep(Duration::from_millis(200));
    // One user owned by each shard answers, over both transports.
    let mut owners_seen = HashSet::new();
    let fresh = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let port = fresh.local_addr().unwrap().port();
    for i in 0.. {
        let user = format!("sip:after{i}@example.com");
        let owner = owner_of(user.as_bytes(), shards as u16);
        if !owners_seen.insert(owner) {
            continue;
        }
        let r = udp_transaction(&fresh, srv.addr, &options(&user, &format!("UDP 127.0.0.1:{port};rport;branch=z9hG4bKafter{i}"), &format!("after-{i}")));
        assert_eq!(status(&r), 200);
        let mut t = tcp_connect(srv.addr);
        let tport = t.local_addr().unwrap().port();
        let r = tcp_transaction(&mut t, &options(&user, &format!("TCP 127.0.0.1:{tport};branch=z9hG4bKtafter{i}"), &format!("tafter-{i}")));
        assert_eq!(status(&r), 200);
        if owners_seen.len() == shards {
            break;
        }
    }
}

/// With a data directory, huge pages serve the start (the tables being
/// rebuilt) and are off once every shard has restored.
#[test]
fn transparent_huge_pages_are_off_after_a_start_from_journals() {
    let dir = DataDir::new("thp");
    let srv = Presenced::start(2, &["--data-dir", dir.to_str().unwrap()]);
    srv.wait_matching("every shard restored: transparent huge pages off", 1, WAIT, |_| true);
    if let Some(on) = thp_enabled(Some(srv.pid())) {
        assert!(!on, "off after the start");
    }
    drop(srv);
}
