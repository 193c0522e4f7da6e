//! Allocations that share the allocator's pages only with each other.
//!
//! mimalloc keeps blocks of one size class together in pages (64 KiB to 4
//! MiB) and gives none of a page back while any block in it lives. A log
//! whose entries all live the same time (Timer J's 32 s, Timer K's 5 s:
//! `core::completed`) allocates its blocks in a burst among everything
//! else the burst allocates. After a NOTIFY storm, the storm's
//! short-lived blocks were freed within seconds, but pages they shared
//! with a log's blocks stayed resident until Timer J had ended the
//! storm's last PUBLISH: 22-30 MiB 35 s after `notify-storm.sh` against
//! 12 before, 18 MiB a few seconds later (found by walking the heap's
//! areas with `mi_heap_visit_blocks`).
//!
//! An [`OwnPages`] is a mimalloc heap of its own (mimalloc v3 heaps are
//! first-class: any thread may allocate from one and free to it). Its
//! blocks never share a page with another heap's, so a log's pages empty
//! as the log moves on, and the rest of the process's pages empty with
//! the burst that filled them.

use allocator_api2::alloc::{AllocError, Allocator, Layout};
use libmimalloc_sys::{mi_heap_collect, mi_heap_delete, mi_heap_malloc_aligned, mi_heap_new, mi_heap_t};
use std::ptr::NonNull;
use std::sync::Arc;

/// A heap of its own, as an allocator for collections (`allocator_api2`,
/// which `hashbrown` takes too). Clones share the heap; it is deleted when
/// the last clone goes, which is after the last collection allocated from
/// it has been dropped (each collection holds a clone).
#[derive(Clone)]
pub struct OwnPages(Arc<Heap>);

struct Heap(NonNull<mi_heap_t>);

// SAFETY: mimalloc v3 heaps may be allocated from and freed to from any
// thread (mimalloc.h: "Heaps: first-class. Can allocate from any thread").
unsafe impl Send for Heap {}
// SAFETY: as above; the handle itself is never mutated.
unsafe impl Sync for Heap {}

impl Drop for Heap {
    fn drop(&mut self) {
        // SAFETY: the heap is ours and no clone of the handle is left;
        // mi_heap_delete moves any block still live to the main heap.
        unsafe { mi_heap_delete(self.0.as_ptr()) }
    }
}

impl OwnPages {
    pub fn new() -> Self {
        // SAFETY: creating a heap has no preconditions.
        let heap = unsafe { mi_heap_new() };
        OwnPages(Arc::new(Heap(NonNull::new(heap).expect("mimalloc could not create a heap"))))
    }

    /// Purges the pages this heap has emptied (a quiet shard's call, as
    /// `mi_collect` is for the thread's own heap).
    pub fn collect(&self) {
        // SAFETY: the heap is live while this handle is.
        unsafe { mi_heap_collect(self.0.0.as_ptr(), false) }
    }
}

impl Default for OwnPages {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for OwnPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnPages").field(&self.0.0).finish()
    }
}

// SAFETY: blocks come from mi_heap_malloc_aligned with the layout's size
// and alignment and go back through mi_free, which takes a block of any
// heap; a block stays valid until freed because the heap outlives every
// clone of the handle (and mi_heap_delete keeps live blocks valid).
unsafe impl Allocator for OwnPages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            // A dangling pointer at the alignment, never freed to mimalloc.
            let dangling = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        // SAFETY: the heap is live while this handle is.
        let p = unsafe { mi_heap_malloc_aligned(self.0.0.as_ptr(), layout.size(), layout.align()) };
        let p = NonNull::new(p.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: the caller passes a block this allocator returned.
            unsafe { libmimalloc_sys::mi_free(ptr.as_ptr().cast()) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe extern "C" {
        /// mimalloc v3: the heap that owns the page `p` lies in.
        fn mi_heap_of(p: *const std::ffi::c_void) -> *mut mi_heap_t;
    }

    fn heap_of<T>(p: *const T) -> *mut mi_heap_t {
        // SAFETY: p is a live mimalloc block.
        unsafe { mi_heap_of(p.cast()) }
    }

    #[test]
    fn blocks_never_share_a_page_with_the_rest_of_the_process() {
        let own = OwnPages::new();
        let mine = own.0.0.as_ptr();
        let mut logs = Vec::new();
        let mut others = Vec::new();
        // Interleaved, of the sizes a log allocates: were they in one heap,
        // consecutive blocks of a size would share its pages.
        for size in [64usize, 4 << 10, 32 << 10, 64 << 10] {
            for _ in 0..16 {
                let mut log: allocator_api2::vec::Vec<u8, OwnPages> = allocator_api2::vec::Vec::with_capacity_in(size, own.clone());
                log.extend_from_slice(&vec![1u8; size]);
                logs.push(log);
                others.push(vec![2u8; size]);
            }
        }
        for (log, other) in logs.iter().zip(&others) {
            assert_eq!(heap_of(log.as_ptr()), mine, "a log block is in the log's own pages");
            assert_ne!(heap_of(other.as_ptr()), mine, "nothing else is");
            assert!(log.iter().all(|&b| b == 1) && other.iter().all(|&b| b == 2));
        }
        own.collect();
    }

    #[test]
    fn alignment_is_kept_and_empty_collections_allocate_nothing() {
        let own = OwnPages::new();
        #[repr(align(64))]
        #[derive(Clone, Copy)]
        struct Line(#[allow(dead_code)] [u8; 64]);
        let mut v: allocator_api2::vec::Vec<Line, OwnPages> = allocator_api2::vec::Vec::new_in(own.clone());
        assert_eq!(v.capacity(), 0);
        for _ in 0..100 {
            v.push(Line([0; 64]));
        }
        assert_eq!(v.as_ptr() as usize % 64, 0);
        let mut table: hashbrown::HashTable<u64, OwnPages> = hashbrown::HashTable::new_in(own.clone());
        for i in 0..10_000u64 {
            table.insert_unique(i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i, |&x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert_eq!(table.len(), 10_000);
        assert!(table.find(7u64.wrapping_mul(0x9e37_79b9_7f4a_7c15), |&x| x == 7).is_some());
        drop(own);
        // The collections' clones keep the heap alive.
        v.push(Line([1; 64]));
        assert_eq!(v.len(), 101);
    }
}
