//! Shared helpers for the benchmarks live here; the benchmarks are in `benches/`.
