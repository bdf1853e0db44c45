//! The binary's memory allocator: power-of-two size classes carved from a static arena, each
//! freed block kept on its class's free list for the next allocation of that class.
//!
//! Why not the C library's: musl's malloc hands every freed group of blocks straight back to
//! the kernel, so start-up's allocate-free-allocate pattern (config parse, passwd, the boot
//! steps) is a stream of mmap/munmap pairs and fresh-page faults: 32 of those syscalls and
//! ~150 µs on the way from exec to the main program's start (BENCHMARKS.md, row 3). The arena
//! lives in .bss, so it costs a page only once that page is used.
//!
//! Bounded: the arena never grows and is never given back; what does not fit (a block over
//! [`MAX_CLASS`], an alignment over a page, an arena used up) goes to the C library's malloc.
//! One lock serves every thread; the one rule is that a vfork child (`spawn`) never
//! allocates, which holds whatever the allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::{Mutex, PoisonError};

/// The smallest block: room for the free list's link, and malloc's own 16-byte alignment.
const MIN_CLASS: usize = 16;
/// The largest block served from the arena (the log sinks' buffers are bigger and long-lived).
pub const MAX_CLASS: usize = 64 * 1024;
const CLASSES: usize = (MAX_CLASS / MIN_CLASS).trailing_zeros() as usize + 1;
const PAGE: usize = 4096;

#[repr(C, align(4096))]
struct Arena<const N: usize>([u8; N]);

/// Free list heads, one per class; each free block holds a pointer to the next.
struct Lists {
    used: usize,
    free: [*mut u8; CLASSES],
}

// SAFETY: the pointers are blocks of the arena, only followed under the lock that owns them.
unsafe impl Send for Lists {}

pub struct Pool<const N: usize> {
    arena: UnsafeCell<Arena<N>>,
    lists: Mutex<Lists>,
}

// SAFETY: the arena's bytes are only handed out and taken back under `lists`' lock; a block
// belongs to one owner at a time, as with any allocator.
unsafe impl<const N: usize> Sync for Pool<N> {}

impl<const N: usize> Default for Pool<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of a layout: index and block size, `None` when the arena does not serve it.
fn class(layout: Layout) -> Option<(usize, usize)> {
    if layout.align() > PAGE {
        return None;
    }
    let size = layout.size().max(layout.align()).max(MIN_CLASS).checked_next_power_of_two()?;
    (size <= MAX_CLASS).then(|| ((size / MIN_CLASS).trailing_zeros() as usize, size))
}

impl<const N: usize> Pool<N> {
    pub const fn new() -> Self {
        Pool {
            arena: UnsafeCell::new(Arena([0; N])),
            lists: Mutex::new(Lists { used: 0, free: [std::ptr::null_mut(); CLASSES] }),
        }
    }

    fn owns(&self, p: *mut u8) -> bool {
        (p as usize).wrapping_sub(self.arena.get() as usize) < N
    }

    /// A block of class `c`, size `size`, and whether it is fresh (never handed out, so still
    /// zero): a freed one, else fresh from the arena (aligned to its size up to a page, which
    /// covers any alignment the class admits), else null.
    fn take(&self, c: usize, size: usize) -> (*mut u8, bool) {
        let mut l = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        let head = l.free[c];
        if !head.is_null() {
            // SAFETY: `head` is a free block of ours; its first word is the next link.
            l.free[c] = unsafe { *head.cast::<*mut u8>() };
            return (head, false);
        }
        let start = l.used.next_multiple_of(size.min(PAGE));
        if start + size > N {
            return (std::ptr::null_mut(), false);
        }
        l.used = start + size;
        // SAFETY: `start + size <= N`: the block lies inside the arena.
        (unsafe { self.arena.get().cast::<u8>().add(start) }, true)
    }

    fn give(&self, p: *mut u8, c: usize) {
        let mut l = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `p` is a block of ours, at least MIN_CLASS bytes, aligned for a pointer.
        unsafe { *p.cast::<*mut u8>() = l.free[c] };
        l.free[c] = p;
    }
}

// SAFETY: every block handed out is `size` bytes of the arena (or the C library's), aligned
// as the layout asks, and owned by the caller until it comes back through dealloc/realloc.
unsafe impl<const N: usize> GlobalAlloc for Pool<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some((c, size)) = class(layout) {
            let (p, _) = self.take(c, size);
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc(layout) }
    }

    /// A fresh arena block is zero already (and its pages untouched: a zeroed 64 KiB read
    /// buffer costs no page until read into); a recycled one is cleared; the rest is calloc's.
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some((c, size)) = class(layout) {
            match self.take(c, size) {
                (p, true) => return p,
                (p, false) if !p.is_null() => {
                    // SAFETY: a block of at least `layout.size()` bytes, ours to write.
                    unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
                    return p;
                }
                _ => {}
            }
        }
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match class(layout) {
            Some((c, _)) if self.owns(p) => self.give(p, c),
            // SAFETY: a block that is not the arena's came from System with this layout.
            _ => unsafe { System.dealloc(p, layout) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY (whole body): the caller guarantees `p`/`layout` and a valid `new_size`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new_class = class(new);
        if self.owns(p) {
            if class(layout) == new_class {
                return p;
            }
        } else if new_class.is_none() {
            return unsafe { System.realloc(p, layout, new_size) };
        }
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> &'static Pool<{ 256 * 1024 }> {
        Box::leak(Box::default())
    }

    fn l(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_are_powers_of_two_from_16_to_64k() {
        assert_eq!(class(l(0, 1)), Some((0, 16)));
        assert_eq!(class(l(17, 1)), Some((1, 32)));
        assert_eq!(class(l(24, 32)), Some((1, 32)));
        assert_eq!(class(l(1, 4096)), Some((8, 4096)));
        assert_eq!(class(l(MAX_CLASS, 8)), Some((CLASSES - 1, MAX_CLASS)));
        assert_eq!(class(l(MAX_CLASS + 1, 8)), None);
        assert_eq!(class(l(8, 8192)), None);
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused() {
        let p = pool();
        unsafe {
            let a = p.alloc(l(10, 8));
            let b = p.alloc(l(100, 64));
            let c = p.alloc(l(5000, 4096));
            assert!(p.owns(a) && p.owns(b) && p.owns(c));
            assert_eq!(b as usize % 64, 0);
            assert_eq!(c as usize % 4096, 0);
            assert!(b as usize >= a as usize + 16 && c as usize >= b as usize + 128);
            std::ptr::write_bytes(c, 0xAB, 5000);
            p.dealloc(b, l(100, 64));
            // Same class (128 bytes), any alignment it admits: the freed block comes back.
            assert_eq!(p.alloc(l(65, 1)), b);
            p.dealloc(a, l(10, 8));
            p.dealloc(c, l(5000, 4096));
            assert_eq!(p.alloc(l(16, 16)), a);
            assert_eq!(p.alloc(l(8192, 8)), c);
        }
    }

    #[test]
    fn what_the_arena_cannot_serve_goes_to_the_c_library() {
        let p = pool();
        unsafe {
            let big = p.alloc(l(MAX_CLASS + 1, 8));
            assert!(!big.is_null() && !p.owns(big));
            p.dealloc(big, l(MAX_CLASS + 1, 8));
            // Use the arena up: 4 × 64 KiB, then the fifth block comes from System.
            let blocks: Vec<_> = (0..4).map(|_| p.alloc(l(MAX_CLASS, 8))).collect();
            assert!(blocks.iter().all(|&b| p.owns(b)));
            let extra = p.alloc(l(MAX_CLASS, 8));
            assert!(!extra.is_null() && !p.owns(extra));
            p.dealloc(extra, l(MAX_CLASS, 8));
            p.dealloc(blocks[0], l(MAX_CLASS, 8));
            assert_eq!(p.alloc(l(40_000, 8)), blocks[0]);
        }
    }

    #[test]
    fn a_static_pool_lives_in_bss_and_owns_exactly_its_arena() {
        static P: Pool<{ 64 * 1024 }> = Pool::new();
        unsafe {
            let a = P.alloc_zeroed(l(4096, 4096));
            assert!(P.owns(a) && (0..4096).all(|i| *a.add(i) == 0), "a fresh block is zero");
            let base = P.arena.get().cast::<u8>();
            assert_eq!(a, base);
            assert!(P.owns(base.add(64 * 1024 - 1)));
            assert!(!P.owns(base.add(64 * 1024)) && !P.owns(base.wrapping_sub(1)));
            // Blocks over a page are aligned to a page; one that does not fit is System's.
            let rest = P.alloc(l(32 * 1024, 8));
            assert_eq!(rest, base.add(4096));
            let over = P.alloc(l(32 * 1024, 8));
            assert!(!P.owns(over));
            P.dealloc(over, l(32 * 1024, 8));
            P.dealloc(rest, l(32 * 1024, 8));
            P.dealloc(a, l(4096, 4096));
        }
    }

    #[test]
    fn realloc_of_a_c_library_block_keeps_its_bytes_once_the_arena_is_full() {
        let p: &'static Pool<{ 64 * 1024 }> = Box::leak(Box::default());
        unsafe {
            let all = p.alloc(l(MAX_CLASS, 8));
            assert!(p.owns(all));
            let small = p.alloc(l(24, 8));
            assert!(!p.owns(small));
            small.copy_from_nonoverlapping(b"0123456789abcdefghijklmn".as_ptr(), 24);
            let grown = p.realloc(small, l(24, 8), 3000);
            assert!(!grown.is_null() && !p.owns(grown));
            assert_eq!(std::slice::from_raw_parts(grown, 24), b"0123456789abcdefghijklmn");
            // A freed block serves its own class only: a C-library block that grows into that
            // class moves into the arena; one that shrinks into an empty class stays outside.
            p.dealloc(all, l(MAX_CLASS, 8));
            let small = p.realloc(grown, l(3000, 8), 20);
            assert!(!p.owns(small));
            let moved = p.realloc(small, l(20, 8), 40_000);
            assert_eq!(moved, all);
            assert_eq!(std::slice::from_raw_parts(moved, 20), b"0123456789abcdefghij");
            p.dealloc(moved, l(40_000, 8));
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_recycled() {
        let p = pool();
        unsafe {
            let a = p.alloc(l(200, 8));
            std::ptr::write_bytes(a, 0xFF, 200);
            p.dealloc(a, l(200, 8));
            let z = p.alloc_zeroed(l(256, 8));
            assert_eq!(z, a);
            assert!((0..256).all(|i| *z.add(i) == 0));
            let big = p.alloc_zeroed(l(MAX_CLASS * 2, 8));
            assert!(!p.owns(big) && (0..MAX_CLASS * 2).all(|i| *big.add(i) == 0));
            p.dealloc(big, l(MAX_CLASS * 2, 8));
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_sources() {
        let p = pool();
        unsafe {
            let mut q = p.alloc(l(16, 8));
            for i in 0..16u8 {
                *q.add(i as usize) = i;
            }
            // Within the class: the same block.
            assert_eq!(p.realloc(q, l(16, 8), 12), q);
            let mut size = 16;
            for new in [100, 5000, MAX_CLASS, 200_000, 300_000, 64] {
                q = p.realloc(q, l(size, 8), new);
                assert!(!q.is_null());
                size = new;
                for i in 0..16u8 {
                    assert_eq!(*q.add(i as usize), i, "after realloc to {new}");
                }
            }
            assert!(p.owns(q));
            p.dealloc(q, l(size, 8));
        }
    }

    #[test]
    fn threads_share_it_without_handing_a_block_out_twice() {
        let p = pool();
        let ts: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || unsafe {
                    for round in 0..2000usize {
                        let size = 16 << (round % 10);
                        let align = 1 << (round % 13);
                        let b = p.alloc(l(size, align));
                        assert_eq!(b as usize % align, 0);
                        std::ptr::write_bytes(b, t, size);
                        std::thread::yield_now();
                        assert!((0..size).all(|i| *b.add(i) == t), "block shared between threads");
                        p.dealloc(b, l(size, align));
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
    }
}
