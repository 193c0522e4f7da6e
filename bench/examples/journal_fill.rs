//! Writes a data directory as a server of SHARDS shards would leave it
//! holding PRESENTITIES presentities, each with one PUBLISHed publication,
//! and SUBSCRIPTIONS watchers' presence subscriptions spread over them
//! (all valid for an hour): the input of the restart-time measurement in
//! bench/e2e/durability.sh. Driving that many through SIP would take the
//! load generator minutes; the records are the ones the shards write
//! (`storage::record`), framed as the journal frames them, in the order
//! a checkpoint writes them (a presentity's watchers together).
//!
//!   cargo run --release -p bench --example journal_fill -- DIR PRESENTITIES SUBSCRIPTIONS SHARDS

use presence_engine::core::{Peer, ids};
use presence_engine::storage::frame;
use presence_engine::storage::record::{ElementState, PublicationState, Record, SubscriptionState};
use presence_engine::storage::segment::SegmentHeader;
use std::io::Write;
use std::time::{Duration, SystemTime};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, presentities, subscriptions, shards] = &args[..] else {
        eprintln!("usage: journal_fill DIR PRESENTITIES SUBSCRIPTIONS SHARDS");
        std::process::exit(2);
    };
    let (presentities, subscriptions): (u64, u64) = (presentities.parse().unwrap(), subscriptions.parse().unwrap());
    let shards: u16 = shards.parse().unwrap();
    assert!(presentities > 0 && shards > 0);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let expires = (now + Duration::from_secs(3600)).as_millis() as u64;
    let gen_dir = std::path::Path::new(dir).join("gen-1");
    std::fs::create_dir_all(&gen_dir).unwrap();
    let mut files: Vec<std::io::BufWriter<std::fs::File>> = (0..shards)
        .map(|shard| {
            let f = std::fs::File::create(gen_dir.join(format!("shard-{shard}-000001.journal"))).unwrap();
            let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
            let header = SegmentHeader { shard, shards, segment: 1, base_lsn: 0, created_unix_ms: now.as_millis() as u64 };
            f.write_all(&header.encode()).unwrap();
            f
        })
        .collect();
    let mut framed = Vec::new();
    let mut payload = Vec::new();
    let mut put = |shard: u16, record: &Record, files: &mut Vec<std::io::BufWriter<std::fs::File>>| {
        payload.clear();
        record.encode(&mut payload);
        framed.clear();
        frame::push(&mut framed, &payload);
        files[shard as usize].write_all(&framed).unwrap();
        framed.len() as u64
    };
    let (mut bytes, started) = (0u64, std::time::Instant::now());
    for p in 0..presentities {
        let aor = format!("sip:p{p}@example.com");
        let xml = format!("<tuple id=\"t1\"><status><basic>open</basic></status><note>presentity {p}</note></tuple>");
        let etag = format!("e{p}");
        let record = Record::Publications {
            aor: aor.as_bytes(),
            publications: vec![PublicationState {
                etag: etag.as_bytes(),
                expires_unix_ms: expires,
                elements: vec![ElementState { kind: b"tuple", id: Some(b"t1"), xml: xml.as_bytes() }],
            }],
        };
        bytes += put(ids::owner_of(aor.as_bytes(), shards), &record, &mut files);
    }
    let notified = Peer::udp("192.0.2.50:5060".parse().unwrap());
    let mut tag = Vec::new();
    // Watcher s watches presentity s % PRESENTITIES; a presentity's
    // watchers are written together, as a checkpoint writes them.
    for s in (0..presentities).flat_map(|p| (p..subscriptions).step_by(presentities as usize)) {
        let aor = format!("sip:p{}@example.com", s % presentities);
        let shard = ids::owner_of(aor.as_bytes(), shards);
        tag.clear();
        ids::push_tag(&mut tag, shard, s + 1);
        let (watcher, call_id, remote_tag) = (format!("sip:w{s}@example.com"), format!("c{s}"), format!("r{s}"));
        let target = format!("sip:w{s}@192.0.2.50:5060");
        let record = Record::Subscription(SubscriptionState {
            aor: aor.as_bytes(),
            watcher: watcher.as_bytes(),
            call_id: call_id.as_bytes(),
            local_tag: &tag,
            local_uri: aor.as_bytes(),
            remote_tag: remote_tag.as_bytes(),
            remote_uri: watcher.as_bytes(),
            remote_target: target.as_bytes(),
            event_id: b"",
            route_set: Vec::new(),
            package: 0,
            shown: 0,
            to: notified,
            remote_cseq: 1,
            local_cseq: 64,
            expires_unix_ms: expires,
        });
        bytes += put(shard, &record, &mut files);
    }
    for mut f in files {
        f.flush().unwrap();
        f.into_inner().unwrap().sync_all().unwrap();
    }
    eprintln!(
        "wrote {presentities} presentities and {subscriptions} subscriptions for {shards} shard(s) in {dir}: {} MiB of records in {:.1} s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
}
