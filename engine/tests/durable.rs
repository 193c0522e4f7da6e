//! Durable state over real sockets and real files: what a killed server
//! acknowledged is there after a restart, with another shard count too,
//! and a damaged journal stops the start with an error that names it.

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

fn register(srv: &Presenced, aor: &str, contact: &str) {
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let req = format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch=z9hG4bKr{}\r\nMax-Forwards: 70\r\n\
From: <{aor}>;tag=d\r\nTo: <{aor}>\r\nCall-ID: reg-{}\r\nCSeq: 1 REGISTER\r\nContact: <{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
        s.local_addr().unwrap(),
        unique(),
        unique()
    );
    assert_eq!(status(&udp_transaction(&s, srv.addr, req.as_bytes())), 200);
}

/// The document a new watcher of `aor` is shown first.
fn first_document(srv: &Presenced, aor: &str) -> String {
    let (_, r, notify) = Sub::new(srv, Ua::udp(), aor, 600, "Event: presence\r\n");
    assert_eq!(status(&r), 200);
    body(&notify)
}

/// `presenced dump` of `dir` (or of one presentity), parsed.
fn dump(dir: &str, aor: Option<&str>) -> serde_json::Value {
    let mut args = vec!["dump", "--data-dir", dir];
    if let Some(a) = aor {
        args.extend(["--aor", a]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_presenced")).args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn generations(dir: &Path) -> Vec<String> {
    let mut g: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    g.sort();
    g
}

#[test]
fn a_killed_server_restarts_with_what_it_acknowledged() {
    let dir = DataDir::new("restart");
    let d = dir.to_str().unwrap();
    let mut aors = Vec::new();
    {
        let srv = Presenced::start(2, &["--data-dir", d, "--fsync", "always"]);
        for i in 0..20 {
            let aor = format!("sip:pub{i}@example.com");
            publish(&srv, &aor, "open", &format!("note {i}"));
            aors.push(aor);
        }
        register(&srv, "sip:erin@example.com", "sip:erin@192.0.2.9");
        // Dropped: SIGKILL, nothing flushed at exit.
    }
    // Two shards wrote; one reads everything back.
    {
        let srv = Presenced::start(1, &["--data-dir", d, "--fsync", "always"]);
        let read = srv.wait_logged("journals read", 1);
        assert_eq!(read[0]["records"], 21, "{read:?}");
        for (i, aor) in aors.iter().enumerate() {
            assert!(first_document(&srv, aor).contains(&format!("<note>note {i}</note>")), "{aor}");
        }
        assert!(first_document(&srv, "sip:erin@example.com").contains("<contact>sip:erin@192.0.2.9</contact>"));
        // The new generation's checkpoint is durable: the older one goes.
        srv.wait_matching("older journal generation removed", 1, WAIT, |_| true);
        assert_eq!(generations(&dir), vec!["gen-2"]);
        // A change made in this run, then SIGKILL again.
        publish(&srv, "sip:pub0@example.com", "closed", "changed after the restart");
    }
    // And back to two shards: the checkpoint and the change are there.
    let srv = Presenced::start(2, &["--data-dir", d]);
    assert!(first_document(&srv, "sip:pub0@example.com").contains("changed after the restart"));
    assert!(first_document(&srv, "sip:pub7@example.com").contains("<note>note 7</note>"));
    assert!(first_document(&srv, "sip:erin@example.com").contains("sip:erin@192.0.2.9"));
    drop(srv);
}

#[test]
fn a_clean_stop_with_interval_fsync_keeps_everything() {
    let dir = DataDir::new("clean-stop");
    let d = dir.to_str().unwrap();
    {
        let mut srv = Presenced::start(1, &["--data-dir", d, "--fsync", "interval"]);
        publish(&srv, "sip:last@example.com", "open", "said just before the stop");
        assert!(srv.terminate(), "a clean exit");
    }
    let srv = Presenced::start(1, &["--data-dir", d]);
    assert!(first_document(&srv, "sip:last@example.com").contains("said just before the stop"));
    drop(srv);
}

#[test]
fn interval_fsync_writes_within_its_interval() {
    let dir = DataDir::new("interval");
    let d = dir.to_str().unwrap();
    {
        let srv = Presenced::start(1, &["--data-dir", d, "--fsync", "interval"]);
        publish(&srv, "sip:soon@example.com", "open", "written within 10 ms");
        // Well past the interval, then SIGKILL (no flush at exit).
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let srv = Presenced::start(1, &["--data-dir", d]);
    assert!(first_document(&srv, "sip:soon@example.com").contains("written within 10 ms"));
    drop(srv);
}

#[test]
fn a_damaged_journal_stops_the_start_and_names_the_file() {
    let dir = DataDir::new("damaged");
    let d = dir.to_str().unwrap();
    {
        let srv = Presenced::start(1, &["--data-dir", d, "--fsync", "always"]);
        for i in 0..3 {
            publish(&srv, &format!("sip:d{i}@example.com"), "open", "x");
        }
    }
    let file = dir.join("gen-1").join("shard-0-000001.journal");
    let mut bytes = std::fs::read(&file).unwrap();
    // Flip one bit inside the first record (after the 64-byte header).
    bytes[64 + 20] ^= 0x10;
    std::fs::write(&file, &bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_presenced")).args(["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir", d]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gen-1/shard-0-000001.journal: offset 64: a checksum mismatch"), "{stderr}");
    // Not a journal at all.
    std::fs::write(&file, b"this file is not a journal but is long enough to have a header of 64 bytes").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_presenced")).args(["--listen", "127.0.0.1:0", "--shards", "1", "--data-dir", d]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shard-0-000001.journal: not a presenced journal"));
}

struct Dialog {
    aor: String,
    call_id: String,
    from_tag: String,
    to_tag: String,
}

/// What one load client got a 2xx for.
#[derive(Default)]
struct Acked {
    /// Presentities whose PUBLISH got its 200.
    published: Vec<String>,
    /// Watched presentity, Call-ID, From tag and To tag of each SUBSCRIBE
    /// that got its 200.
    subscribed: Vec<Dialog>,
}

/// One request of the kill -9 load: a PUBLISH of a new presentity, and
/// every third time a SUBSCRIBE to the one before it as well.
fn load_client(c: usize, addr: std::net::SocketAddr, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Acked {
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let me = s.local_addr().unwrap();
    let mut acked = Acked::default();
    for i in 0.. {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let aor = format!("sip:load{c}x{i}@example.com");
        let req = if i % 3 == 2 {
            let watched = format!("sip:load{c}x{}@example.com", i - 1);
            format!(
                "SUBSCRIBE {watched} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bKs{c}x{i}\r\nMax-Forwards: 70\r\n\
From: <sip:watcher{c}@example.com>;tag=w{c}x{i}\r\nTo: <{watched}>\r\nCall-ID: k{c}x{i}\r\nCSeq: 1 SUBSCRIBE\r\n\
Contact: <sip:watcher{c}@{me}>\r\nEvent: presence\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
            )
        } else {
            let doc = format!(
                "<?xml version=\"1.0\"?><presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"{aor}\"><tuple id=\"t1\"><status><basic>open</basic></status><note>n{i}</note></tuple></presence>"
            );
            format!(
                "PUBLISH {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bKk{c}x{i}\r\nMax-Forwards: 70\r\nFrom: <{aor}>;tag=p\r\n\
To: <{aor}>\r\nCall-ID: k{c}x{i}\r\nCSeq: 1 PUBLISH\r\nEvent: presence\r\nContent-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{doc}",
                doc.len()
            )
        };
        s.send_to(req.as_bytes(), addr).unwrap();
        // The answer to this request (NOTIFYs come too, and are left
        // unanswered); one that never comes (the server died) is not an
        // acknowledgement.
        let end = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let answer = loop {
            let Some(m) = recv(&s, end.saturating_duration_since(std::time::Instant::now())) else { break None };
            if !m.starts_with(b"NOTIFY") && header(&m, "Call-ID").as_deref() == Some(&format!("k{c}x{i}")) {
                break Some(m);
            }
        };
        match answer {
            Some(r) if status(&r) == 200 && i % 3 == 2 => acked.subscribed.push(Dialog {
                aor: format!("sip:load{c}x{}@example.com", i - 1),
                call_id: format!("k{c}x{i}"),
                from_tag: format!("w{c}x{i}"),
                to_tag: header(&r, "To").and_then(|t| t.split(";tag=").nth(1).map(str::to_string)).unwrap_or_default(),
            }),
            Some(r) if status(&r) == 200 => acked.published.push(aor),
            _ => break,
        }
    }
    acked
}

/// kill -9 in the middle of a PUBLISH and SUBSCRIBE load with `fsync =
/// "always"`: every PUBLISH and SUBSCRIBE that got its 200 is there after
/// the restart, in `dump` and through SIP.
#[test]
fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = DataDir::new("kill-9");
    let d = dir.to_str().unwrap();
    let srv = Presenced::start(2, &["--data-dir", d, "--fsync", "always"]);
    let addr = srv.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || load_client(c, addr, stop))
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(400));
    srv.signal(libc::SIGKILL);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<Acked> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    drop(srv);
    let published: Vec<&String> = acked.iter().flat_map(|a| &a.published).collect();
    let subscribed: Vec<&Dialog> = acked.iter().flat_map(|a| &a.subscribed).collect();
    assert!(published.len() > 50 && subscribed.len() > 20, "the load ran: {} PUBLISH, {} SUBSCRIBE acknowledged", published.len(), subscribed.len());
    // Every acknowledged publication and subscription is in the journals
    // (offline dump).
    let state = dump(d, None);
    let presentities = state["presentities"].as_array().unwrap();
    let held: std::collections::HashSet<&str> =
        presentities.iter().filter(|p| !p["publications"].as_array().unwrap().is_empty()).map(|p| p["aor"].as_str().unwrap()).collect();
    let missing: Vec<&&String> = published.iter().filter(|a| !held.contains(a.as_str())).collect();
    assert!(missing.is_empty(), "{} of {} acknowledged PUBLISHes missing: {:?}", missing.len(), published.len(), &missing[..missing.len().min(5)]);
    let watched: std::collections::HashSet<(&str, &str)> = presentities
        .iter()
        .flat_map(|p| p["watchers"].as_array().unwrap().iter().map(move |w| (p["aor"].as_str().unwrap(), w["call_id"].as_str().unwrap())))
        .collect();
    let lost: Vec<&str> = subscribed.iter().filter(|d| !watched.contains(&(d.aor.as_str(), d.call_id.as_str()))).map(|d| d.call_id.as_str()).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged SUBSCRIBEs missing: {:?}", lost.len(), subscribed.len(), &lost[..lost.len().min(5)]);
    // Replay equals live state: a restart puts the records back into a
    // shard and checkpoints that shard's live tables into a new
    // generation; once that is durable the older ones are gone, and the
    // new generation alone dumps the same state.
    {
        let srv = Presenced::start(1, &["--data-dir", d, "--fsync", "always"]);
        srv.wait_matching("older journal generation removed", 1, WAIT, |_| true);
        srv.signal(libc::SIGKILL);
    }
    assert_eq!(generations(&dir), vec!["gen-2"]);
    let live = dump(d, None);
    assert_eq!(comparable(&live), comparable(&state), "the checkpoint of the live tables differs from the replayed journals");
    let srv = Presenced::start(1, &["--data-dir", d]);
    let read = srv.wait_logged("journals read", 1);
    let records = read[0]["records"].as_u64().unwrap();
    assert!(records >= (published.len() + subscribed.len()) as u64, "{records} records for {} acknowledged requests", published.len() + subscribed.len());
    // Each acknowledged publication is back (checked through SIP for a
    // sample spread over the run, and its last ones), and a sample of the
    // subscriptions answers an in-dialog refresh.
    let step = (published.len() / 40).max(1);
    let sample: Vec<&&String> = published.iter().step_by(step).chain(published.iter().rev().take(8)).collect();
    for aor in sample {
        assert!(first_document(&srv, aor).contains("<basic>open</basic>"), "{aor} was acknowledged and is gone");
    }
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let me = s.local_addr().unwrap();
    let step = (subscribed.len() / 20).max(1);
    let mut refreshed = std::collections::HashSet::new();
    for d in subscribed.iter().step_by(step).chain(subscribed.iter().rev().take(4)) {
        // The sample and the last ones may overlap: one refresh each (a
        // second with the same CSeq would be stale).
        if !refreshed.insert(&d.call_id) {
            continue;
        }
        let req = format!(
            "SUBSCRIBE {aor} SIP/2.0\r\nVia: SIP/2.0/UDP {me};rport;branch=z9hG4bKr{}\r\nMax-Forwards: 70\r\nFrom: <sip:watcher@example.com>;tag={}\r\n\
To: <{aor}>;tag={}\r\nCall-ID: {}\r\nCSeq: 2 SUBSCRIBE\r\nContact: <sip:watcher@{me}>\r\nEvent: presence\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            unique(),
            d.from_tag,
            d.to_tag,
            d.call_id,
            aor = d.aor,
        );
        s.send_to(req.as_bytes(), srv.addr).unwrap();
        let answer = loop {
            let m = recv(&s, WAIT).expect("an answer to the refresh");
            if !m.starts_with(b"NOTIFY") {
                break m;
            }
        };
        assert_eq!(status(&answer), 200, "the acknowledged subscription {} is known after the restart", d.call_id);
    }
    drop(srv);
}

/// A dump's state without what a restart legitimately moves: the files
/// and counts, and each watcher's NOTIFY CSeq reservation (a restored
/// subscription reserves its next block of CSeqs).
fn comparable(dump: &serde_json::Value) -> serde_json::Value {
    let mut p = dump["presentities"].clone();
    for presentity in p.as_array_mut().unwrap() {
        for w in presentity["watchers"].as_array_mut().unwrap() {
            w.as_object_mut().unwrap().remove("next_notify_cseq_above");
        }
    }
    p
}

fn notify_cseq(n: &[u8]) -> u32 {
    header(n, "CSeq").unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// A watcher's dialog survives kill -9 and a restart with another shard
/// count: its refresh gets 200, and NOTIFYs continue with higher CSeqs.
#[test]
fn a_watchers_dialog_survives_a_restart() {
    let dir = DataDir::new("watcher");
    let d = dir.to_str().unwrap();
    let aor = "sip:watched@example.com";
    let (mut sub, last) = {
        let srv = Presenced::start(2, &["--data-dir", d, "--fsync", "always", "--notify-min-interval-ms", "0"]);
        publish(&srv, aor, "open", "first");
        let (mut sub, r, first) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n");
        assert_eq!(status(&r), 200);
        assert!(body(&first).contains("first"));
        publish(&srv, aor, "open", "second");
        let n = sub.next_notify(&srv);
        assert!(body(&n).contains("second"));
        let last = notify_cseq(&n);
        // Its 200 is processed before the kill.
        std::thread::sleep(std::time::Duration::from_millis(100));
        (sub, last)
    };
    // The dump shows the watcher with its dialog.
    let state = dump(d, Some(aor));
    let p = &state["presentities"][0];
    assert_eq!(p["aor"], aor);
    assert!(p["document"].as_str().unwrap().contains("second"));
    assert_eq!(p["watchers"].as_array().unwrap().len(), 1, "{p}");
    assert!(p["watchers"][0]["next_notify_cseq_above"].as_u64().unwrap() > last as u64);
    let srv = Presenced::start(1, &["--data-dir", d, "--notify-min-interval-ms", "0"]);
    // Nothing expired: no NOTIFY for the restart itself.
    assert!(sub.no_notify(std::time::Duration::from_millis(300)));
    let r = sub.resubscribe(&srv, 600);
    assert_eq!(status(&r), 200, "the dialog is known after the restart");
    let n = sub.next_notify(&srv);
    assert!(notify_cseq(&n) > last, "CSeq {} after {last}", notify_cseq(&n));
    assert!(body(&n).contains("second"));
    publish(&srv, aor, "closed", "third");
    let n = sub.next_notify(&srv);
    assert!(body(&n).contains("third"));
    drop(srv);
}

/// A journal that keeps growing moves to a new segment, checkpoints every
/// key into it and removes the older segments; what only the removed
/// segments held (publications from the start of the run) is still there
/// after kill -9 and a restart.
#[test]
fn compaction_removes_old_segments_and_keeps_every_key() {
    let dir = DataDir::new("compact");
    let d = dir.to_str().unwrap();
    let cfg = config_file("compact.toml", "[storage]\ncompact_after_bytes = 65536\n");
    let srv = Presenced::start(1, &["--config", &cfg, "--data-dir", d, "--fsync", "always"]);
    let early: Vec<String> = (0..10).map(|i| format!("sip:early{i}@example.com")).collect();
    for (i, aor) in early.iter().enumerate() {
        publish(&srv, aor, "open", &format!("early note {i}"));
    }
    // Refreshes of a few registrations: each a record, the state the same
    // size, so the journal grows while the checkpoints stay small.
    let mut rounds = 0;
    while srv.logged("older journal segment removed").len() < 3 {
        assert!(rounds < 200, "no compaction after {rounds} rounds: {:?}", srv.logged("journal moved to a new segment; checkpointing into it"));
        for r in 0..30 {
            register(&srv, &format!("sip:reg{r}@example.com"), &format!("sip:reg{r}@192.0.2.7"));
        }
        rounds += 1;
    }
    let segments = || -> Vec<String> {
        let mut s: Vec<String> = std::fs::read_dir(dir.join("gen-1")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        s.sort();
        s
    };
    let now = segments();
    assert!(now.len() <= 2, "older segments are removed: {now:?}");
    assert!(!now.contains(&"shard-0-000001.journal".to_string()), "the first segment is gone: {now:?}");
    srv.signal(libc::SIGKILL);
    drop(srv);
    let state = dump(d, None);
    for (i, aor) in early.iter().enumerate() {
        let p = state["presentities"].as_array().unwrap().iter().find(|p| p["aor"] == aor.as_str());
        let doc = p.map(|p| p["document"].to_string()).unwrap_or_default();
        assert!(doc.contains(&format!("early note {i}")), "{aor} was only in removed segments and is lost: {p:?}");
    }
    for r in 0..30 {
        let aor = format!("sip:reg{r}@example.com");
        let p = state["presentities"].as_array().unwrap().iter().find(|p| p["aor"] == aor.as_str()).unwrap_or_else(|| panic!("{aor} lost"));
        assert_eq!(p["bindings"].as_array().unwrap().len(), 1, "{p}");
    }
}

/// The server's reg-event subscriptions are not journaled, but the
/// third-party registrations are: after kill -9 the restarted server
/// SUBSCRIBEs to the S-CSCF again for each of them.
#[test]
fn reg_event_subscriptions_are_made_again_after_a_restart() {
    let dir = DataDir::new("reg-event");
    let d = dir.to_str().unwrap();
    let flags = ["--data-dir", d, "--fsync", "always", "--trust", "127.0.0.1", "--reg-event"];
    let scscf = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let aor = "sip:+15550002222@ims.example.com";
    // The next message from the server with first line starting `start`.
    let next = |start: &str| -> Vec<u8> {
        loop {
            let m = recv(&scscf, WAIT).unwrap_or_else(|| panic!("no {start}"));
            if m.starts_with(start.as_bytes()) {
                return m;
            }
        }
    };
    {
        let srv = Presenced::start(1, &flags);
        let req = format!(
            "REGISTER sip:ims.example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch=z9hG4bKtp{}\r\nMax-Forwards: 70\r\n\
From: <sip:scscf@ims.example.com>;tag=s\r\nTo: <{aor}>\r\nCall-ID: tp-reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:ue@192.0.2.70>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            scscf.local_addr().unwrap(),
            unique()
        );
        scscf.send_to(req.as_bytes(), srv.addr).unwrap();
        let sub = next("SUBSCRIBE ");
        assert_eq!(header(&sub, "Event").as_deref(), Some("reg"));
        srv.signal(libc::SIGKILL);
    }
    let srv = Presenced::start(1, &flags);
    let sub = next("SUBSCRIBE ");
    assert!(sub.starts_with(format!("SUBSCRIBE {aor} SIP/2.0").as_bytes()), "{}", String::from_utf8_lossy(&sub));
    assert_eq!(header(&sub, "Event").as_deref(), Some("reg"));
    drop(srv);
}

/// A presentity's own presence.winfo subscription survives kill -9: after
/// the restart it gets the watcher list as full state, with a version
/// above every one it was sent, and its in-dialog refresh gets 200.
#[test]
fn a_winfo_subscription_survives_a_restart() {
    let dir = DataDir::new("winfo");
    let d = dir.to_str().unwrap();
    let flags = ["--data-dir", d, "--fsync", "always", "--notify-min-interval-ms", "0"];
    let alice = "sip:alice-winfo@example.com";
    let mut ua = Ua::udp();
    let mut stash = Vec::new();
    let subscribe = |ua: &Ua, to_tag: &str, cseq: u32| -> Vec<u8> {
        format!(
            "SUBSCRIBE {alice} SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch=z9hG4bKwi{}\r\nMax-Forwards: 70\r\nFrom: <{alice}>;tag=wa\r\nTo: <{alice}>{to_tag}\r\n\
Call-ID: winfo-restart\r\nCSeq: {cseq} SUBSCRIBE\r\nContact: <sip:alice@{}>\r\nEvent: presence.winfo\r\nAccept: application/watcherinfo+xml\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n",
            ua.addr(),
            unique(),
            ua.addr()
        )
        .into_bytes()
    };
    let version = |n: &[u8]| -> u32 {
        let b = body(n);
        let info = b.split("<watcherinfo").nth(1).unwrap_or_else(|| panic!("not watcherinfo: {b}"));
        let v = info.split("version=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or_else(|| panic!("no version in {b}"));
        v.parse().unwrap()
    };
    let to_tag;
    let last_version;
    {
        let srv = Presenced::start(1, &flags);
        ua.send(srv.addr, &subscribe(&ua, "", 1));
        let ok = ua.expect("SIP/2.0", &mut stash);
        assert_eq!(status(&ok), 200);
        to_tag = header(&ok, "To").unwrap().split(";tag=").nth(1).unwrap().to_string();
        let full = ua.expect("NOTIFY", &mut stash);
        ua.answer(srv.addr, &full, 200);
        let (_bob, ok, _) = Sub::new(&srv, Ua::udp(), alice, 600, "Event: presence\r\n");
        assert_eq!(status(&ok), 200);
        let partial = ua.expect("NOTIFY", &mut stash);
        ua.answer(srv.addr, &partial, 200);
        last_version = version(&partial);
        srv.signal(libc::SIGKILL);
    }
    let srv = Presenced::start(1, &flags);
    let full = ua.expect("NOTIFY", &mut stash);
    ua.answer(srv.addr, &full, 200);
    let b = body(&full);
    assert!(b.contains("state=\"full\"") && b.contains("@example.net</watcher>"), "the watcher list as full state: {b}");
    assert!(version(&full) > last_version, "version {} after {last_version}", version(&full));
    assert_eq!(header(&full, "Call-ID").as_deref(), Some("winfo-restart"));
    ua.send(srv.addr, &subscribe(&ua, &format!(";tag={to_tag}"), 2));
    assert_eq!(status(&ua.expect("SIP/2.0", &mut stash)), 200, "the winfo dialog is known after the restart");
    drop(srv);
}
