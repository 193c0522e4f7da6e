//! How long a checkpoint holds a shard's thread per timer tick: a shard
//! restores the data directory DIR (written for one shard, e.g. by
//! `journal_fill DIR 200000 1000000 1`), starts its checkpoint as a start
//! does, and runs timer ticks until every key is recorded; prints the
//! ticks, the mean and the longest tick, and the journal bytes written.
//! Sans-IO: each tick's records are handed to a device that keeps up
//! (written nowhere), as the reactor's writer task takes them; what the
//! reactor's traffic waits behind is the tick itself.
//!
//!   cargo run --release -p bench --example checkpoint_slice -- DIR

use presence_engine::shard::durable::UnixClock;
use presence_engine::shard::{Outbox, Shard, ShardConfig};
use presence_engine::storage::journal::{Fsync, Journal};
use presence_engine::storage::replay::{Replay, records};
use presence_engine::storage::segment::{SegmentHeader, SegmentWriter};
use std::time::{Duration, Instant, SystemTime};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let dir = std::env::args().nth(1).expect("usage: checkpoint_slice DIR");
    let mut replay = Replay::new(1);
    let mut files: Vec<_> = std::fs::read_dir(std::path::Path::new(&dir).join("gen-1")).expect("DIR/gen-1").map(|e| e.unwrap().path()).collect();
    files.sort();
    for f in &files {
        replay.add_segment(&f.display().to_string(), &std::fs::read(f).unwrap()).unwrap();
    }
    let now = Instant::now();
    let unix_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64;
    let clock = UnixClock::new(now, unix_ms);
    let mut cfg = ShardConfig::with_defaults(0, 1, "127.0.0.1:5060".parse().unwrap());
    // The restored subscriptions' asks all at once, before the ticks: the
    // ticks then time the checkpoint alone (a start's ticks also carry
    // `restart_asks_per_tick` asks each until they are done).
    cfg.restart_asks_per_tick = usize::MAX;
    let mut shard = Shard::new(cfg, now);
    let seg = SegmentWriter::new(SegmentHeader { shard: 0, shards: 1, segment: 1, base_lsn: 0, created_unix_ms: unix_ms });
    // No backlog limit: nothing is flushed here.
    shard.attach_journal(Journal::new(seg, Fsync::Never(Duration::from_secs(3600)), usize::MAX), clock);
    shard.reserve_for_restore(replay.counts[0]);
    let mut out = Outbox { events_off: true, ..Outbox::default() };
    records(&replay.per_shard[0], |r| {
        let _ = shard.restore(now, clock, &r, &mut out);
    });
    shard.restore_done(now, &mut out);
    let j = shard.journal_mut().unwrap();
    while let Some(f) = j.poll_now() {
        j.completed(now, &f, Ok(()));
    }
    let before = shard.journal().unwrap().appended();
    let (mut ticks, mut longest, started) = (0u32, Duration::ZERO, Instant::now());
    let mut t = now;
    while shard.checkpoint_end().is_none() {
        t += Duration::from_millis(5);
        let mut out = Outbox { events_off: true, ..Outbox::default() };
        let tick = Instant::now();
        shard.on_time(t, &mut out);
        longest = longest.max(tick.elapsed());
        let j = shard.journal_mut().unwrap();
        while let Some(f) = j.poll_now() {
            j.completed(t, &f, Ok(()));
        }
        ticks += 1;
    }
    let total = started.elapsed();
    let bytes = shard.journal().unwrap().appended() - before;
    println!(
        "{} records restored; checkpoint: {ticks} ticks, mean {:.0} us, longest {:.0} us per tick; {} MiB written",
        replay.records,
        total.as_secs_f64() * 1e6 / ticks as f64,
        longest.as_secs_f64() * 1e6,
        bytes >> 20
    );
}
