//! The process allocator: the system allocator, except that very large
//! allocations are reserved lazily.
//!
//! The `kafka-protocol` decoders size a `Vec` from an array's length prefix
//! before reading its elements, so a hostile four-byte prefix can ask for
//! hundreds of gigabytes, and a refused allocation aborts the process. Here an
//! allocation of `LAZY_BYTES_MIN` or more is an anonymous `MAP_NORESERVE`
//! mapping: it costs address space only, physical pages are used only as
//! elements are really decoded (each takes at least one byte of a frame that
//! is itself bounded by `socket.request.max.bytes`), and the decoder's error
//! on the short input frees it. This stays until the decoders check array
//! lengths against the bytes remaining.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are lazily reserved mappings.
const LAZY_BYTES_MIN: usize = 1 << 30;
/// The page size mappings are aligned to; larger alignments use the system allocator.
const PAGE_BYTES: usize = 4096;

pub struct LazyLargeAlloc;

fn is_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY: every pointer handed out is either the system allocator's, freed by
// it, or a fresh anonymous mapping of at least `layout.size()` bytes, aligned
// to a page, unmapped with the same size; `is_lazy` is a pure function of the
// layout, so `dealloc` and `realloc` take the same path `alloc` took.
unsafe impl GlobalAlloc for LazyLargeAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(&layout) {
            // SAFETY: forwarded with the caller's layout.
            return unsafe { System.alloc(layout) };
        }
        // SAFETY: an anonymous private mapping touches no existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            p as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            unsafe { self.alloc(layout) }
        } else {
            // SAFETY: forwarded with the caller's layout.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(&layout) {
            // SAFETY: `ptr` is a mapping of `layout.size()` bytes made by `alloc`.
            let rc = unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
            assert_eq!(rc, 0, "munmap of a lazily reserved allocation");
        } else {
            // SAFETY: `ptr` came from the system allocator with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_lazy(&layout) && !is_lazy(&new_layout) {
            // SAFETY: both layouts are the system allocator's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh allocation of the new layout.
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            // SAFETY: both regions are valid for the smaller size and do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated with `layout` by this allocator.
            unsafe { self.dealloc(ptr, layout) };
        }
        new_ptr
    }
}
