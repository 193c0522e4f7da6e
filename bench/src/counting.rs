//! A global allocator for memory measurements: mimalloc, as presenced
//! runs it, counting the bytes the program holds and its live allocations
//! by size. An example installs it with
//! `#[global_allocator] static GLOBAL: bench::counting::Counting = bench::counting::Counting;`.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};

/// mimalloc, as presenced runs it, counting the bytes held.
pub struct Counting;

pub static HELD: AtomicUsize = AtomicUsize::new(0);

/// Live allocations by size in 8-byte steps (the last holds all larger):
/// which allocation an entry's bytes are in, to find what to shrink.
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicUsize = AtomicUsize::new(0);
pub static LIVE: [AtomicUsize; 129] = [ZERO; 129];

/// Bytes in allocations over 1 KiB (tables, buffers).
pub static LARGE: AtomicUsize = AtomicUsize::new(0);

fn large(size: usize) -> usize {
    if size > 1024 { size } else { 0 }
}

pub fn size_step(size: usize) -> usize {
    size.div_ceil(8).min(128)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HELD.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE[size_step(layout.size())].fetch_add(1, Ordering::Relaxed);
        LARGE.fetch_add(large(layout.size()), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE[size_step(layout.size())].fetch_sub(1, Ordering::Relaxed);
        LARGE.fetch_sub(large(layout.size()), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HELD.fetch_add(new_size, Ordering::Relaxed);
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE[size_step(new_size)].fetch_add(1, Ordering::Relaxed);
        LIVE[size_step(layout.size())].fetch_sub(1, Ordering::Relaxed);
        LARGE.fetch_add(large(new_size), Ordering::Relaxed);
        LARGE.fetch_sub(large(layout.size()), Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Bytes the program holds now.
pub fn held() -> usize {
    HELD.load(Ordering::Relaxed)
}

/// Live allocations by size step (8 bytes each), now.
pub fn live() -> Vec<usize> {
    LIVE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// The process's resident set, bytes.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm's resident field");
    pages * 4096
}
