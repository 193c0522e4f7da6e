//! Sends PUBLISHes of new presentities (sip:ackN@example.com) to TARGET at
//! RATE per second for up to SECONDS, and writes to OUT the presentity of
//! every PUBLISH that got a 200, one per line: what the server
//! acknowledged, for bench/e2e/durability.sh to look for in the journals
//! after it kills the server with SIGKILL mid-run. Stops early once the
//! server has stopped answering for a second.
//!
//!   cargo run --release -p bench --example acked_publish -- TARGET RATE SECONDS OUT

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, rate, seconds, out] = &args[..] else {
        eprintln!("usage: acked_publish TARGET RATE SECONDS OUT");
        std::process::exit(2);
    };
    let target: SocketAddr = target.parse().unwrap();
    let rate: u64 = rate.parse().unwrap();
    let seconds: f64 = seconds.parse().unwrap();
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let me = sock.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let last_answer = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let receiver = {
        let (sock, done, last_answer) = (sock.clone(), done.clone(), last_answer.clone());
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !done.load(Ordering::Relaxed) {
                let Ok(n) = sock.recv(&mut buf) else { continue };
                let m = &buf[..n];
                last_answer.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                if !m.starts_with(b"SIP/2.0 200") {
                    continue;
                }
                // The Call-ID names the presentity: "ackN".
                let text = String::from_utf8_lossy(m);
                if let Some(id) = text.lines().find_map(|l| l.strip_prefix("Call-ID: ")) {
                    acked.push(id.trim().to_string());
                }
            }
            acked
        })
    };
    let mut sent = 0u64;
    loop {
        let elapsed = start.elapsed();
        if elapsed.as_secs_f64() >= seconds {
            break;
        }
        let quiet_ms = elapsed.as_millis() as u64 - last_answer.load(Ordering::Relaxed);
        if sent > 0 && quiet_ms > 1000 {
            break;
        }
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let id = format!("ack{sent}");
            let aor = format!("sip:{id}@example.com");
            let doc = format!(
                "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t1\"><status><basic>open</basic></status></tuple></presence>"
            );
            let req = format!(
                "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bK{id}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\nTo: <{aor}>\r\n\
Call-ID: {id}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nExpires: 3600\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
                doc.len()
            );
            let _ = sock.send_to(req.as_bytes(), target);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // Answers still on their way.
    std::thread::sleep(Duration::from_millis(300));
    done.store(true, Ordering::Relaxed);
    let acked = receiver.join().unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for id in &acked {
        writeln!(f, "sip:{id}@example.com").unwrap();
    }
    eprintln!("sent {sent}, acknowledged {}", acked.len());
}
