//! Parses one PIDF document in a loop, for a profiler:
//! `cargo run --release -p bench --example pidf_loop -- [N]`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<presence xmlns=\"urn:ietf:params:xml:ns:pidf\" entity=\"sip:ue12345@example.com\"><tuple id=\"lg1c16939d\"><status><basic>open</basic></status><contact>sip:ue12345@127.0.0.1:42267</contact><note>lg:1c16939d:12345:4:130194</note></tuple></presence>\n";
    let t = std::time::Instant::now();
    let mut elements = 0;
    for _ in 0..n {
        elements += presence_engine::presence::pidf::parse(doc.as_bytes()).expect("valid").elements.len();
    }
    println!("{:.0} ns per parse ({elements} elements)", t.elapsed().as_nanos() as f64 / n as f64);
}
