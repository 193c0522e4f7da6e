//! Watchers over real sockets (RFC 6665, RFC 3856): SUBSCRIBE gets 200 and
//! an immediate NOTIFY; refresh, unsubscribe, expiry, 481/489/406/423;
//! fan-out to 40 watchers over UDP and TCP on several shards; removal of a
//! watcher whose NOTIFY gets 481; coalescing of a PUBLISH burst; presence
//! following registration; authorization from the config file.

mod common;
use common::*;
use std::net::Ipv4Addr;
use std::time::Duration;

fn lifecycle(shards: usize, tcp: bool) {
    let srv = Presenced::start(shards, &["--notify-min-interval-ms", "0"]);
    let ua = if tcp { Ua::tcp(&srv) } else { Ua::udp() };
    let aor = format!("sip:target-{shards}-{tcp}@example.com");
    let (mut sub, ok, first) = Sub::new(&srv, ua, &aor, 600, "Event: presence\r\nAccept: application/pidf+xml\r\n");
    assert_eq!(status(&ok), 200, "200, never 202");
    assert_eq!(header(&ok, "Expires").as_deref(), Some("600"));
    assert!(!sub.to_tag.is_empty());
    assert_eq!(header(&first, "Event").as_deref(), Some("presence"));
    let state = header(&first, "Subscription-State").unwrap();
    assert!(state.starts_with("active;expires="), "{state}");
    assert_eq!(header(&first, "Content-Type").as_deref(), Some(PIDF_TYPE));
    assert!(body(&first).contains("<basic>closed</basic>"), "nothing published yet");

    publish(&srv, &aor, "open", "hello");
    let n = sub.next_notify(&srv);
    assert!(body(&n).contains("hello") && body(&n).contains("<basic>open</basic>"));

    // Refresh: 200 and a NOTIFY with the current state.
    let r = sub.resubscribe(&srv, 300);
    assert_eq!(status(&r), 200);
    assert_eq!(header(&r, "Expires").as_deref(), Some("300"));
    let n = sub.next_notify(&srv);
    assert!(body(&n).contains("hello"));
    // Unsubscribe: 200 and a final NOTIFY.
    let r = sub.resubscribe(&srv, 0);
    assert_eq!(status(&r), 200);
    let n = sub.next_notify(&srv);
    assert_eq!(header(&n, "Subscription-State").as_deref(), Some("terminated"));
    // Gone: a refresh now is 481, and changes notify nobody.
    assert_eq!(status(&sub.resubscribe(&srv, 300)), 481);
    publish(&srv, &aor, "closed", "bye");
    assert!(sub.no_notify(Duration::from_millis(300)));
}

mod lifecycle {
    use super::*;
    transport_matrix!(lifecycle);
}

#[test]
fn bad_subscribes() {
    let srv = Presenced::start(2, &[]);
    let aor = "sip:bad@example.com";
    let (_, r, _) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: dialog\r\n");
    assert_eq!(status(&r), 489);
    assert_eq!(header(&r, "Allow-Events").as_deref(), Some("presence, presence.winfo"));
    let (_, r, _) = Sub::new(&srv, Ua::udp(), aor, 600, "");
    assert_eq!(status(&r), 489, "no Event header");
    let (_, r, _) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\nAccept: text/plain\r\n");
    assert_eq!(status(&r), 406);
    let (_, r, _) = Sub::new(&srv, Ua::udp(), aor, 5, "Event: presence\r\n");
    assert_eq!(status(&r), 423);
    assert_eq!(header(&r, "Min-Expires").as_deref(), Some("60"));
    // In-dialog request for a dialog that does not exist.
    let ua = Ua::udp();
    let req = subscribe_req(&ua, aor, "nodialog", 2, "x", Some("ps0000ffff"), 600, "Event: presence\r\n");
    let Ua::Udp(s) = &ua else { unreachable!() };
    assert_eq!(status(&udp_transaction(s, srv.addr, &req)), 481);
}

#[test]
fn subscriptions_expire_with_a_timeout_notify() {
    let cfg = config_file("short.toml", "[presence]\nsubscribe_min_expires = 1\n");
    let srv = Presenced::start(2, &["--config", &cfg]);
    let (mut sub, ok, _) = Sub::new(&srv, Ua::udp(), "sip:brief@example.com", 1, "Event: presence\r\n");
    assert_eq!(header(&ok, "Expires").as_deref(), Some("1"));
    let n = sub.next_notify(&srv);
    assert_eq!(header(&n, "Subscription-State").as_deref(), Some("terminated;reason=timeout"));
}

/// 40 watchers, half over UDP and half over TCP, spread over the shards by
/// their flows, all get the change.
#[test]
fn forty_watchers_on_several_shards_all_get_the_change() {
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "0"]);
    let aor = "sip:popular@example.com";
    let mut subs: Vec<Sub> = (0..40)
        .map(|i| {
            let ua = if i % 2 == 0 { Ua::udp() } else { Ua::tcp(&srv) };
            let (sub, ok, first) = Sub::new(&srv, ua, aor, 600, "Event: presence\r\n");
            assert_eq!(status(&ok), 200);
            assert!(!first.is_empty());
            sub
        })
        .collect();
    let shards: std::collections::HashSet<String> = subs.iter().map(|s| s.to_tag[2..6].to_string()).collect();
    assert_eq!(shards.len(), 2, "subscriptions live on both shards (to-tags name them)");
    publish(&srv, aor, "open", "for everyone");
    for s in &mut subs {
        let n = s.next_notify(&srv);
        assert!(body(&n).contains("for everyone"));
    }
}

#[test]
fn a_watcher_answering_481_is_removed() {
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "0"]);
    let aor = "sip:leaver@example.com";
    let (mut gone, _, _) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n");
    let (mut stays, _, _) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n");
    publish(&srv, aor, "open", "one");
    gone.next_notify_answered(&srv, 481);
    stays.next_notify(&srv);
    let terminated = srv.wait_logged("watcher", 3).into_iter().filter(|v| v["state"] == "terminated").count();
    assert_eq!(terminated, 1);
    publish(&srv, aor, "open", "two");
    assert!(body(&stays.next_notify(&srv)).contains("two"));
    assert!(gone.no_notify(Duration::from_millis(300)), "the 481 watcher is gone");
}

/// 100 PUBLISHes inside the minimum interval: each watcher gets one NOTIFY,
/// with the last state.
#[test]
fn a_publish_burst_is_coalesced() {
    // 100 initial PUBLISHes make 100 publications: above the default limit.
    let cfg = config_file("burst", "[limits]\npublications_per_presentity = 200\n");
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "1500", "--config", &cfg]);
    let aor = "sip:bursty@example.com";
    let mut subs: Vec<Sub> = (0..4).map(|_| Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n").0).collect();
    for i in 0..100 {
        publish(&srv, aor, "open", &format!("state {i}"));
    }
    for s in &mut subs {
        let n = s.next_notify(&srv);
        assert!(body(&n).contains("state 99"), "{}", body(&n));
    }
    // Each was answered at once; nothing more comes, not even when the
    // interval has passed again.
    std::thread::sleep(Duration::from_millis(1700));
    for s in &mut subs {
        assert!(s.no_notify(Duration::from_millis(50)), "one NOTIFY for the whole burst");
    }
}

#[test]
fn registration_drives_open_and_closed() {
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "0"]);
    let aor = "sip:dave@example.com";
    let (mut sub, _, first) = Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n");
    assert!(body(&first).contains("<basic>closed</basic>"));
    let s = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let reg = |cseq: u32, expires: u32| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {};rport;branch=z9hG4bKr{}\r\nMax-Forwards: 70\r\n\
From: <{aor}>;tag=d\r\nTo: <{aor}>\r\nCall-ID: dave-reg\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:dave@192.0.2.44>\r\n\
Expires: {expires}\r\nContent-Length: 0\r\n\r\n",
            s.local_addr().unwrap(),
            unique()
        )
    };
    assert_eq!(status(&udp_transaction(&s, srv.addr, reg(1, 600).as_bytes())), 200);
    let n = sub.next_notify(&srv);
    assert!(body(&n).contains("<basic>open</basic>") && body(&n).contains("<contact>sip:dave@192.0.2.44</contact>"));
    assert_eq!(status(&udp_transaction(&s, srv.addr, reg(2, 0).as_bytes())), 200);
    let n = sub.next_notify(&srv);
    assert!(body(&n).contains("<basic>closed</basic>") && !body(&n).contains("192.0.2.44"));
}

#[test]
fn authorization_rules_from_the_config_file() {
    let dir = std::env::temp_dir().join(format!("presenced-authz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("authz.toml");
    // Watchers are sip:watcher<tag>@example.net; rules match by domain or URI.
    std::fs::write(
        &cfg,
        "[presence]\nnotify_min_interval_ms = 0\n\
[[presence.authorization]]\npresentity = \"sip:private@example.com\"\nwatcher = \"example.net\"\naction = \"block\"\n\
[[presence.authorization]]\npresentity = \"sip:shy@example.com\"\nwatcher = \"*\"\naction = \"polite-block\"\n\
[[presence.authorization]]\npresentity = \"sip:careful@example.com\"\nwatcher = \"example.net\"\naction = \"confirm\"\n",
    )
    .unwrap();
    let srv = Presenced::start(2, &["--config", cfg.to_str().unwrap()]);
    let (_, r, _) = Sub::new(&srv, Ua::udp(), "sip:private@example.com", 600, "Event: presence\r\n");
    assert_eq!(status(&r), 403);
    // Polite block: active, but always the neutral document.
    publish(&srv, "sip:shy@example.com", "open", "secret");
    let (mut sub, r, first) = Sub::new(&srv, Ua::udp(), "sip:shy@example.com", 600, "Event: presence\r\n");
    assert_eq!(status(&r), 200);
    assert!(header(&first, "Subscription-State").unwrap().starts_with("active"));
    assert!(!body(&first).contains("secret") && body(&first).contains("<basic>closed</basic>"));
    publish(&srv, "sip:shy@example.com", "open", "secret2");
    assert!(sub.no_notify(Duration::from_millis(300)), "no news for a politely blocked watcher");
    // Confirm: pending, no document.
    let (_, r, first) = Sub::new(&srv, Ua::udp(), "sip:careful@example.com", 600, "Event: presence\r\n");
    assert_eq!(status(&r), 200);
    assert!(header(&first, "Subscription-State").unwrap().starts_with("pending"));
    assert!(body(&first).is_empty());
    // Anyone else: allowed.
    let (_, r, first) = Sub::new(&srv, Ua::udp(), "sip:open@example.com", 600, "Event: presence\r\n");
    assert_eq!(status(&r), 200);
    assert!(header(&first, "Subscription-State").unwrap().starts_with("active"));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The policy changes at run time (SIGHUP reloads the file): a pending
/// watcher becomes active with the document; a blocked one is ended.
#[test]
fn authorization_changes_at_run_time_on_sighup() {
    let dir = std::env::temp_dir().join(format!("presenced-reauthz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("authz.toml");
    let rules = |action: &str| {
        format!(
            "[presence]\nnotify_min_interval_ms = 0\n[[presence.authorization]]\npresentity = \"sip:guarded@example.com\"\nwatcher = \"example.net\"\naction = \"{action}\"\n"
        )
    };
    std::fs::write(&cfg, rules("confirm")).unwrap();
    let srv = Presenced::start(2, &["--config", cfg.to_str().unwrap()]);
    publish(&srv, "sip:guarded@example.com", "open", "visible now");
    let (mut sub, r, first) = Sub::new(&srv, Ua::udp(), "sip:guarded@example.com", 600, "Event: presence\r\n");
    assert_eq!(status(&r), 200);
    assert!(header(&first, "Subscription-State").unwrap().starts_with("pending"));
    // The presentity allows the watcher.
    std::fs::write(&cfg, rules("allow")).unwrap();
    srv.signal(libc::SIGHUP);
    let n = sub.next_notify(&srv);
    assert!(header(&n, "Subscription-State").unwrap().starts_with("active"));
    assert!(body(&n).contains("visible now"));
    // And then blocks it: the subscription ends.
    std::fs::write(&cfg, rules("block")).unwrap();
    srv.signal(libc::SIGHUP);
    let n = sub.next_notify(&srv);
    assert_eq!(header(&n, "Subscription-State").as_deref(), Some("terminated;reason=rejected"));
    publish(&srv, "sip:guarded@example.com", "closed", "gone");
    assert!(sub.no_notify(Duration::from_millis(300)));
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// presence.winfo (RFC 3857/3858): the presentity sees its watchers, full
/// state first, then partial updates with increasing versions; nobody
/// else may subscribe to it.
#[test]
fn the_presentity_watches_its_watchers() {
    for shards in [1, 2] {
        let srv = Presenced::start(shards, &["--notify-min-interval-ms", "0"]);
        let alice = format!("sip:alice-winfo-{shards}@example.com");
        // Alice subscribes to her own watcher list.
        let mut ua = Ua::udp();
        ua.send(
            srv.addr,
            &subscribe_from(&ua, &alice, &alice, "winfo-1", 1, "a1", None, 600, "Event: presence.winfo\r\nAccept: application/watcherinfo+xml\r\n"),
        );
        let mut stash = Vec::new();
        let ok = ua.expect("SIP/2.0", &mut stash);
        assert_eq!(status(&ok), 200);
        let full = ua.expect("NOTIFY", &mut stash);
        ua.answer(srv.addr, &full, 200);
        assert_eq!(header(&full, "Event").as_deref(), Some("presence.winfo"));
        assert_eq!(header(&full, "Content-Type").as_deref(), Some("application/watcherinfo+xml"));
        assert!(body(&full).contains("version=\"0\" state=\"full\""), "{}", body(&full));
        // Bob watches Alice: a partial update, version 1.
        let (mut bob, ok, _) = Sub::new(&srv, Ua::udp(), &alice, 600, "Event: presence\r\n");
        assert_eq!(status(&ok), 200);
        let n = ua.expect("NOTIFY", &mut stash);
        ua.answer(srv.addr, &n, 200);
        let b = body(&n);
        assert!(b.contains("version=\"1\" state=\"partial\"") && b.contains("status=\"active\"") && b.contains("@example.net</watcher>"), "{b}");
        // Bob leaves: version 2, terminated.
        assert_eq!(status(&bob.resubscribe(&srv, 0)), 200);
        let n = ua.expect("NOTIFY", &mut stash);
        ua.answer(srv.addr, &n, 200);
        let b = body(&n);
        assert!(b.contains("version=\"2\"") && b.contains("status=\"terminated\""), "{b}");
        // Carol may not see Alice's watchers.
        let (_, r, _) = Sub::new(&srv, Ua::udp(), &alice, 600, "Event: presence.winfo\r\n");
        assert_eq!(status(&r), 403);
    }
}

/// RFC 3261 12.1.1: the dialog's route set comes from Record-Route and its
/// remote target from Contact; NOTIFYs go to the first route with Route
/// headers and the Contact as Request-URI. The Event id is echoed. Routing
/// by Record-Route is for trusted elements (here, loopback); anyone else's
/// NOTIFYs go back to its own flow (`tests/edge.rs`).
#[test]
fn notifies_follow_the_route_set_and_echo_the_event_id() {
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "0", "--trust", "127.0.0.1"]);
    let proxy = udp_socket(Ipv4Addr::LOCALHOST, 0);
    let proxy_addr = proxy.local_addr().unwrap();
    let mut ua = Ua::udp();
    let rr = format!("Record-Route: <sip:{proxy_addr};lr>\r\nEvent: presence;id=feed7\r\n");
    ua.send(srv.addr, &subscribe_req(&ua, "sip:routed@example.com", "rs-1", 1, "r1", None, 600, &rr));
    let mut stash = Vec::new();
    assert_eq!(status(&ua.expect("SIP/2.0", &mut stash)), 200);
    let n = recv(&proxy, WAIT).expect("the NOTIFY goes to the first route");
    let text = String::from_utf8_lossy(&n).to_string();
    assert!(text.starts_with(&format!("NOTIFY sip:w@{} SIP/2.0", ua.addr())), "Request-URI is the remote target: {text}");
    assert_eq!(header(&n, "Route"), Some(format!("<sip:{proxy_addr};lr>")));
    assert_eq!(header(&n, "Event").as_deref(), Some("presence;id=feed7"));
    assert!(stash.iter().all(|m| !m.starts_with(b"NOTIFY")) && ua.recv(Duration::from_millis(200)).is_none(), "not sent straight to the UA");
}

/// A shard keeps at most `--notify-window` NOTIFYs in flight: a change for
/// many watchers goes out as fast as they answer, not all at once.
#[test]
fn notifies_wait_for_the_window() {
    // T1 = 2 s: nothing is retransmitted while the test holds answers back.
    let srv = Presenced::start(1, &["--notify-min-interval-ms", "0", "--notify-window", "2", "--t1-ms", "2000"]);
    let aor = "sip:windowed@example.com";
    let mut subs: Vec<Sub> = (0..6).map(|_| Sub::new(&srv, Ua::udp(), aor, 600, "Event: presence\r\n").0).collect();
    publish(&srv, aor, "open", "paced");
    // Unanswered, only two arrive (well within T1, so no retransmissions).
    std::thread::sleep(Duration::from_millis(200));
    let mut waiting: Vec<(usize, Vec<u8>)> = Vec::new();
    for (i, s) in subs.iter_mut().enumerate() {
        if let Some(m) = s.ua.recv(Duration::from_millis(10)) {
            waiting.push((i, m));
        }
    }
    assert_eq!(waiting.len(), 2, "the window holds two in flight");
    // Answering lets the rest through, two at a time.
    let mut got = waiting.len();
    while let Some((i, m)) = waiting.pop() {
        subs[i].ua.answer(srv.addr, &m, 200);
        std::thread::sleep(Duration::from_millis(50));
        for (j, s) in subs.iter_mut().enumerate() {
            if let Some(m) = s.ua.recv(Duration::from_millis(5)) {
                assert!(body(&m).contains("paced"));
                waiting.push((j, m));
                got += 1;
            }
        }
    }
    assert_eq!(got, 6, "every watcher was notified once");
}

/// An AOR without a user part has one owner for every method: PUBLISHes
/// from many source ports (so from every shard's socket), to case variants
/// of the host, all reach the document that SUBSCRIBEs from many other
/// ports see. Before the owner was computed for such AORs, REGISTER and
/// PUBLISH stayed on the receiving shard and most watchers never saw them.
#[test]
fn an_aor_without_a_user_part_has_one_owner() {
    let srv = Presenced::start(2, &["--notify-min-interval-ms", "0"]);
    for (i, variant) in ["sip:h1.example.com", "sip:H1.Example.COM", "sip:h1.EXAMPLE.com;transport=udp"].iter().enumerate() {
        // Each publish() comes from a fresh socket: a new flow, a shard
        // picked by the kernel.
        for round in 0..4 {
            let note = format!("v{i}-{round}");
            publish(&srv, variant, "open", &note);
            for _ in 0..4 {
                let (_, ok, first) = Sub::new(&srv, Ua::udp(), "sip:h1.example.com", 600, "Event: presence\r\n");
                assert_eq!(status(&ok), 200);
                assert!(body(&first).contains(&note), "a watcher sees {note} published to {variant}: {}", body(&first));
            }
        }
    }
}
