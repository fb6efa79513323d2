//! The process's allocator: mimalloc, told to keep the memory it frees.
//!
//! A training step allocates and frees hundreds of activation buffers of megabytes each.
//! glibc's malloc returns those above its mmap threshold to the kernel, which faults them back
//! in zeroed on the next step (a quarter of the bench's time was kernel time); mimalloc
//! reuses them, but by default still hands freed memory back to the kernel ("purges" it) a
//! second after it is freed. A step at the sizes users train takes longer than that, so every
//! step paid the page faults again: 7.5% of a DALL-E 8 x 512 step at 320 positions went to the
//! kernel zeroing pages (`perf`, `clear_page`). [`Allocator`] turns purging off the first time
//! it allocates: a process keeps its peak working set until it exits, as PyTorch's caching
//! allocators do, and the peak itself does not grow.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, Ordering};

use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_e` (`mimalloc.h`); `libmimalloc-sys`
/// names only the options whose numbers version 2 shares. The test below reads it back.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's "never purge".
const NEVER: std::ffi::c_long = -1;

static CONFIGURED: AtomicBool = AtomicBool::new(false);

/// mimalloc with purging off (see the module's docs).
pub struct Allocator;

impl Allocator {
    #[inline]
    fn configure(&self) {
        if !CONFIGURED.load(Ordering::Relaxed) {
            // Two threads racing here set the same value twice; `mi_option_set` writes a
            // static and does not allocate.
            unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, NEVER) };
            CONFIGURED.store(true, Ordering::Relaxed);
        }
    }
}

// SAFETY: every call goes to mimalloc's own `GlobalAlloc`, unchanged.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.configure();
        unsafe { MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.configure();
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purging_is_off_once_anything_is_allocated() {
        let buffer = vec![1u8; 4 << 20];
        assert_eq!(buffer.len(), 4 << 20);
        // A wrong option number would read back mimalloc 3's default (1000 ms) or another
        // option's value.
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) },
            NEVER
        );
    }
}
