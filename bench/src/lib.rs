//! Benchmark support: sample messages shared by the criterion benchmarks
//! (`benches/`) and the end-to-end benchmark runs.

pub mod counting;
pub mod presence;
pub mod samples;

/// The floor for any SIP parser on this host: find each line end and each
/// colon with memchr, check nothing, keep nothing. Benchmarks report the
/// real parser as a multiple of this, measured in the same run, because
/// absolute times on a shared 2-core VM drift from run to run.
pub fn naive_split(buf: &[u8]) -> usize {
    let mut pos = 0;
    let mut colons = 0;
    while let Some(e) = memchr::memchr(b'\n', &buf[pos..]) {
        let line = &buf[pos..pos + e];
        pos += e + 1;
        if line.len() <= 1 {
            break;
        }
        colons += memchr::memchr(b':', line).unwrap_or(0);
    }
    pos + colons
}
