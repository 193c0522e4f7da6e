//! `presenced dump`: what a data directory holds, offline, as JSON.
//!
//! The journals are read exactly as a start reads them, into one sans-IO
//! shard that stands for the whole node; its tables are then printed per
//! presentity: bindings, publications, the composed document and the
//! watchers' subscriptions. Nothing is written: the directory can belong
//! to a running server.

use crate::shard::durable::UnixClock;
use crate::shard::{Outbox, Shard, ShardConfig};
use crate::storage::replay::{Replay, records};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The state under `dir`, for every presentity or only `aor`'s (a SIP URI,
/// normalised as the server keys it). Times are Unix milliseconds as of
/// `unix_now_ms`; what expired before then is left out, as a start would.
pub fn dump(dir: &Path, aor: Option<&str>, unix_now_ms: u64) -> Result<Value, String> {
    let wanted = match aor {
        Some(a) => Some(crate::sip::Uri::parse(a.as_bytes()).map_err(|e| format!("--aor {a:?}: {e:?}"))?.aor()),
        None => None,
    };
    let mut replay = Replay::new(1);
    let mut files = Vec::new();
    for seg in super::journal_io::segments(dir)? {
        let data = std::fs::read(&seg).map_err(|e| format!("cannot read {}: {e}", seg.display()))?;
        replay.add_segment(&seg.display().to_string(), &data).map_err(|d| d.0)?;
        files.push(json!({"path": seg.display().to_string(), "bytes": data.len()}));
    }
    let now = Instant::now();
    let clock = UnixClock::new(now, unix_now_ms);
    let mut shard = Shard::new(ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap()), now);
    let mut left_out = Vec::new();
    records(&replay.per_shard[0], |r| {
        if let Err(e) = shard.restore(now, clock, &r, &mut Outbox::default()) {
            left_out.push(json!({"key": text(r.key()), "why": e.0}));
        }
    });
    // Subscriptions that expired are put back to end at the first tick,
    // as a start ends them: after it, they are gone.
    shard.on_time(now + std::time::Duration::from_millis(10), &mut Outbox::default());
    let mut aors: BTreeSet<Box<[u8]>> = shard.registrar().aors().into_iter().collect();
    aors.extend(shard.publications().published_aors());
    aors.extend(shard.subscriptions().iter().map(|s| Box::<[u8]>::from(s.aor())));
    if let Some(w) = &wanted {
        aors.retain(|a| a[..] == w[..]);
    }
    let mut presentities = Vec::new();
    for aor in aors {
        presentities.push(presentity(&mut shard, clock, &aor));
    }
    Ok(json!({
        "files": files,
        "records": replay.records,
        "cut": replay.cut,
        "left_out": left_out,
        "presentities": presentities,
    }))
}

fn presentity(shard: &mut Shard, clock: UnixClock, aor: &[u8]) -> Value {
    let bindings: Vec<Value> = shard
        .registrar()
        .registration(aor)
        .map(|r| {
            r.bindings
                .iter()
                .map(|b| {
                    json!({
                        "contact": text(&b.uri),
                        "params": text(&b.params),
                        "call_id": text(&b.call_id),
                        "cseq": b.cseq,
                        "expires_unix_ms": clock.to_unix_ms(b.expires_at),
                        "flow": format!("{:?} {}", b.flow.transport, b.flow.addr),
                        "presence_agent": b.pua,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let publications: Vec<Value> = shard
        .publications()
        .published(aor)
        .map(|(etag, at, elements)| {
            json!({
                "etag": text(etag),
                "expires_unix_ms": clock.to_unix_ms(at),
                "elements": elements.iter().map(|e| json!({"kind": e.kind, "id": e.id.as_deref(), "xml": &*e.xml})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let ids: Vec<u64> = shard.subscriptions().iter().filter(|s| s.aor() == aor).map(|s| s.ask).collect();
    let mut watchers = Vec::new();
    for ask in ids {
        let Some(id) = shard.subscriptions().by_ask(ask) else { continue };
        let Some(v) = shard.subscriptions_mut().durable_view(id) else { continue };
        watchers.push(json!({
            "watcher": text(v.watcher),
            "event": match v.package {
                crate::presence::watchers::Package::Presence => "presence",
                crate::presence::watchers::Package::Winfo => "presence.winfo",
            },
            "call_id": text(v.call_id),
            "local_tag": text(v.local_tag),
            "remote_tag": text(v.remote_tag),
            "remote_target": text(v.remote_target),
            "route_set": v.route_set.iter().map(|r| text(r)).collect::<Vec<_>>(),
            "notify_to": format!("{:?} {}", v.to.transport, v.to.addr),
            "remote_cseq": v.remote_cseq,
            "next_notify_cseq_above": v.local_cseq,
            "shown": format!("{:?}", v.shown),
            "expires_unix_ms": clock.to_unix_ms(v.expires_at),
        }));
    }
    let document = shard.publications_mut().document(aor).map(|(_, d)| text(&d));
    json!({
        "aor": text(aor),
        "bindings": bindings,
        "publications": publications,
        "document": document,
        "watchers": watchers,
    })
}
