//! Presence costs on one core, sans-IO: composing a PIDF document, and the
//! fan-out of one change to N watchers (NOTIFY built and sent into the
//! outbox, its 200 parsed and matched), reported per watcher.
//!
//! Run: `cargo bench -p bench --bench presence`

use bench::presence::{answer_all, publish, with_watchers};
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use presence_engine::core::Peer;
use presence_engine::presence::pidf;
use presence_engine::shard::Outbox;
use std::time::Instant;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn compose(c: &mut Criterion) {
    let mut g = c.benchmark_group("pidf");
    let body = |note: &str| {
        let p = publish(0, note);
        let at = memchr::memmem::find(&p, b"\r\n\r\n").unwrap() + 4;
        p[at..].to_vec()
    };
    let docs: Vec<pidf::Pidf> = (0..3).map(|i| pidf::parse(&body(&format!("device {i}"))).unwrap()).collect();
    let one = body("hello");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_validate", |b| b.iter(|| pidf::parse(black_box(&one)).unwrap()));
    for n in [1usize, 3] {
        let refs: Vec<&[pidf::Element]> = docs.iter().take(n).map(|d| &d.elements[..]).collect();
        g.bench_with_input(BenchmarkId::new("compose_publications", n), &refs, |b, refs| {
            b.iter(|| pidf::compose(black_box("sip:popular@example.com"), refs, &[]))
        });
    }
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    g.sample_size(20);
    for n in [100usize, 1000] {
        let mut shard = with_watchers(n);
        let mut out = Outbox::default();
        let mut scratch = Outbox::default();
        let mut seq = 0;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("notify_per_watcher", n), |b| {
            b.iter(|| {
                seq += 1;
                let p = publish(seq, &format!("state {seq}"));
                shard.on_message(Instant::now(), Peer::udp("192.0.2.1:5060".parse().unwrap()), &p, &mut out);
                let sent = answer_all(&mut shard, &mut out, &mut scratch);
                assert_eq!(sent, n, "every watcher notified once");
            })
        });
    }
    g.finish();
}

criterion_group!(benches, compose, fanout);
criterion_main!(benches);
