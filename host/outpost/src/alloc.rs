//! The process's global allocator: mimalloc, entered the way C's `malloc`
//! is whenever the alignment allows it.
//!
//! The `mimalloc` crate sends every Rust allocation through
//! `mi_malloc_aligned`. mimalloc's aligned path has a fast case only for
//! blocks of at most 1 KiB; a larger block whose size is not a power of
//! two is over-allocated and aligned by hand, a slow path wasmtime takes
//! for several of its per-instance allocations on every request. Plain
//! `mi_malloc` already returns 16-byte aligned blocks for sizes of 16 and
//! up (and blocks of 8 aligned to 8), so those layouts need no aligned
//! entry point, the same rule `std`'s system allocator applies to `malloc`.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// mimalloc's `MI_MAX_ALIGN_SIZE`: the alignment `mi_malloc` guarantees
/// for every block of at least this size.
const MALLOC_ALIGN: usize = 16;

/// mimalloc as the global allocator (see the module docs).
pub struct Mimalloc;

/// Whether `mi_malloc(size)` is aligned enough for `align`.
fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

/// `layout` from mimalloc's plain entry point when it is aligned enough,
/// otherwise from its aligned one.
///
/// # Safety
///
/// As for `GlobalAlloc::alloc`.
// Inlined so the entry points are direct calls, not through pointers.
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain_fn: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned_fn: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: mimalloc's allocation functions accept any size.
    unsafe {
        if plain(layout.align(), layout.size()) {
            plain_fn(layout.size()).cast()
        } else {
            aligned_fn(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: every pointer handed out comes from mimalloc with at least the
// layout's alignment (see `plain`), and mimalloc frees and reallocates
// blocks from either entry point.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded from the caller.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator; the new block keeps the
        // layout's alignment by the same rule as `alloc`.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size and alignment up to a few pages comes back aligned and
    /// keeps its bytes across a reallocation.
    #[test]
    fn blocks_are_aligned_and_keep_their_contents() {
        let a = Mimalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in (1..=96).chain([1000, 1024, 1500, 4096, 5000, 70_000]) {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: the layouts are non-zero sized; each block is
                // freed with the layout (and size) it was last given.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    p.write_bytes(0xab, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "realloc {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == 0xab));
                    a.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} align {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
