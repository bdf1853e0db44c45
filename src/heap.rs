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
//! No allocation happens between vfork and exec (`spawn`), so one lock is enough.

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

/// Free list heads, one per class; each free block holds the address of the next.
struct Lists {
    used: usize,
    free: [usize; CLASSES],
}

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
        Pool { arena: UnsafeCell::new(Arena([0; N])), lists: Mutex::new(Lists { used: 0, free: [0; CLASSES] }) }
    }

    fn base(&self) -> usize {
        self.arena.get() as usize
    }

    fn owns(&self, p: *mut u8) -> bool {
        (p as usize).wrapping_sub(self.base()) < N
    }

    /// A block of class `c`, size `size`: a freed one, else fresh from the arena (aligned to
    /// its size up to a page, which covers any alignment the class admits), else null.
    fn take(&self, c: usize, size: usize) -> *mut u8 {
        let mut l = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        let head = l.free[c];
        if head != 0 {
            // SAFETY: `head` is a free block of ours; its first word is the next link.
            l.free[c] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        let start = l.used.next_multiple_of(size.min(PAGE));
        if start + size > N {
            return std::ptr::null_mut();
        }
        l.used = start + size;
        (self.base() + start) as *mut u8
    }

    fn give(&self, p: *mut u8, c: usize) {
        let mut l = self.lists.lock().unwrap_or_else(PoisonError::into_inner);
        // SAFETY: `p` is a block of ours, at least MIN_CLASS bytes, aligned for a usize.
        unsafe { *(p as *mut usize) = l.free[c] };
        l.free[c] = p as usize;
    }
}

// SAFETY: every block handed out is `size` bytes of the arena (or the C library's), aligned
// as the layout asks, and owned by the caller until it comes back through dealloc/realloc.
unsafe impl<const N: usize> GlobalAlloc for Pool<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some((c, size)) = class(layout) {
            let p = self.take(c, size);
            if !p.is_null() {
                return p;
            }
        }
        // SAFETY: forwarded as the caller gave it.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_none() {
            // SAFETY: forwarded as the caller gave it (calloc skips zeroing fresh pages).
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: `alloc` returns null or `layout.size()` writable bytes.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                std::ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
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
        let (old_class, new_class) = (class(layout), class(new));
        if self.owns(p) {
            if old_class.map(|c| c.0) == new_class.map(|c| c.0) {
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
                    for round in 0..2000 {
                        let size = 16 << (round % 6);
                        let b = p.alloc(l(size, 8));
                        std::ptr::write_bytes(b, t, size);
                        std::thread::yield_now();
                        assert!((0..size).all(|i| *b.add(i) == t), "block shared between threads");
                        p.dealloc(b, l(size, 8));
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
    }
}
