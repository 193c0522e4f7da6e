//! Parse and serialize throughput of the SIP codec on typical presence
//! messages, in messages/s and bytes/s (one core).
//!
//! Run: `cargo bench -p bench --bench sip_codec`

use bench::samples;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use presence_engine::sip::{Limits, Message, RawMessage, response_to};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("parse");
    for (name, bytes) in samples::ALL {
        // Same-run floor: memchr over lines and colons, no checks. Quote the
        // parser as a multiple of this; absolute times drift on shared VMs.
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new(name, "naive_floor"), bytes, |b, bytes| b.iter(|| bench::naive_split(black_box(bytes))));
        for (unit, tp) in [("msgs", Throughput::Elements(1)), ("bytes", Throughput::Bytes(bytes.len() as u64))] {
            g.throughput(tp);
            g.bench_with_input(BenchmarkId::new(name, unit), bytes, |b, bytes| {
                b.iter(|| {
                    let m = Message::parse(black_box(bytes), &limits).unwrap();
                    black_box(m.cseq().seq)
                })
            });
        }
    }
    g.finish();
}

fn serialize(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("serialize");
    let mut out = Vec::with_capacity(4096);
    for (name, bytes) in samples::ALL {
        let m = Message::parse(bytes, &limits).unwrap();
        for (unit, tp) in [("msgs", Throughput::Elements(1)), ("bytes", Throughput::Bytes(bytes.len() as u64))] {
            g.throughput(tp);
            g.bench_function(BenchmarkId::new(name, unit), |b| {
                b.iter(|| {
                    out.clear();
                    black_box(&m).write_to(&mut out);
                    black_box(out.len())
                })
            });
        }
    }
    g.finish();
}

/// What the server does per SUBSCRIBE: a 200 built from the request with a
/// fresh To-tag and a stamped Via.
fn build_response(c: &mut Criterion) {
    let raw = RawMessage::split(samples::SUBSCRIBE, &Limits::default()).unwrap();
    let src = "10.20.30.41:5060".parse().unwrap();
    let mut out = Vec::with_capacity(1024);
    let mut g = c.benchmark_group("build");
    g.throughput(Throughput::Elements(1));
    g.bench_function("200_to_subscribe", |b| {
        b.iter(|| {
            out.clear();
            let mut w = response_to(&mut out, black_box(&raw), 200, "OK", Some(b"s0.1f"), Some(src));
            w.header_u32(presence_engine::sip::HeaderName::Expires, 3600);
            w.finish(None, b"");
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = parse, serialize, build_response
}
criterion_main!(benches);
