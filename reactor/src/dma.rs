//! DMA-able memory: large regions and a pool of I/O buffers carved from them.
//!
//! Memory comes from 2 MiB hugepages (`hugepage-rs`), which stay resident and physically
//! contiguous per page: what a device (or io_uring's fixed buffers) wants. Without reserved
//! hugepages we fall back to ordinary anonymous pages and say so once.
//!
//! The buffer pool has one size class per power of two from 4 KiB to 128 KiB. Each class is a
//! single region sliced into equal buffers, with a global lock-free free list and a small
//! per-core cache in front of it (the SPDK iobuf shape): the common case touches only
//! thread-local state. A buffer may be dropped on any thread; it simply goes back to that
//! thread's cache or to the global list. An I/O that finds its class empty does not fail: it
//! waits in its reactor's queue, which is served as buffers come back.
//!
//! Each class region is registered with every reactor's io_uring, so a pooled buffer can be
//! used with `ReadFixed`/`WriteFixed` (see [`DmaBuf::fixed_index`]).

use crossbeam_queue::ArrayQueue;
use std::alloc::Layout;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

const HUGEPAGE: usize = 2 * 1024 * 1024;
const PAGE: usize = 4096;
pub const MIN_BUF: usize = 4096;
pub const MAX_BUF: usize = 128 * 1024;
const CLASSES: usize = 6; // 4K, 8K, 16K, 32K, 64K, 128K
const CACHE_PER_CLASS: usize = 64;

static WARNED_NO_HUGEPAGES: AtomicBool = AtomicBool::new(false);

/// A contiguous, page-aligned, zero-initialised memory region, hugepage-backed when possible.
pub struct DmaRegion {
    ptr: NonNull<u8>,
    len: usize,
    mapped_len: usize,
    huge: bool,
}

// SAFETY: a DmaRegion is plain memory with no thread affinity; access to its bytes goes through
// raw pointers whose users synchronise themselves (one owner per buffer, or device semantics).
unsafe impl Send for DmaRegion {}
// SAFETY: as above; &DmaRegion only hands out the base pointer and length.
unsafe impl Sync for DmaRegion {}

impl DmaRegion {
    pub fn alloc(len: usize) -> std::io::Result<DmaRegion> {
        let len = len.max(1);
        let huge_len = len.div_ceil(HUGEPAGE) * HUGEPAGE;
        if let Ok(layout) = Layout::from_size_align(huge_len, PAGE) {
            // SAFETY: the layout has a non-zero size; a null return is handled.
            let p = unsafe { hugepage_rs::alloc(layout) };
            if let Some(ptr) = NonNull::new(p) {
                return Ok(DmaRegion {
                    ptr,
                    len,
                    mapped_len: huge_len,
                    huge: true,
                });
            }
        }
        if !WARNED_NO_HUGEPAGES.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "no hugepages available (vm.nr_hugepages); DMA memory falls back to normal pages"
            );
        }
        let mapped_len = len.div_ceil(PAGE) * PAGE;
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(DmaRegion {
            ptr: NonNull::new(p.cast()).ok_or_else(std::io::Error::last_os_error)?,
            len,
            mapped_len,
            huge: false,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_hugepage(&self) -> bool {
        self.huge
    }
}

impl Drop for DmaRegion {
    fn drop(&mut self) {
        if self.huge {
            let layout = Layout::from_size_align(self.mapped_len, PAGE).expect("layout was valid");
            // SAFETY: allocated by hugepage_rs::alloc with this same layout, freed once.
            unsafe { hugepage_rs::dealloc(self.ptr.as_ptr(), layout) };
        } else {
            // SAFETY: mapped by mmap with this length, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.mapped_len) };
        }
    }
}

/// How many buffers each size class holds (4 KiB first, then 8, 16, 32, 64, 128 KiB).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub counts: [usize; CLASSES],
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            counts: [8192, 2048, 1024, 512, 512, 1024],
        }
    }
}

struct Class {
    size: usize,
    region: DmaRegion,
    free: ArrayQueue<u32>,
}

struct Pool {
    classes: Vec<Class>,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Sets up the pool; later calls (and allocations before any call) use the first config seen.
pub fn init(config: &PoolConfig) -> std::io::Result<()> {
    if POOL.get().is_some() {
        return Ok(());
    }
    let mut classes = Vec::with_capacity(CLASSES);
    for (i, &count) in config.counts.iter().enumerate() {
        let size = MIN_BUF << i;
        let count = count.max(1);
        let region = DmaRegion::alloc(size * count)?;
        let free = ArrayQueue::new(count);
        for n in 0..count as u32 {
            let _ = free.push(n);
        }
        classes.push(Class { size, region, free });
    }
    let _ = POOL.set(Pool { classes });
    Ok(())
}

fn pool() -> &'static Pool {
    if POOL.get().is_none() {
        if let Err(e) = init(&PoolConfig::default()) {
            panic!("cannot allocate the DMA buffer pool: {e}");
        }
    }
    POOL.get().expect("pool initialised above")
}

/// The pool's class regions, in fixed-buffer index order, for io_uring registration.
pub(crate) fn class_regions() -> Vec<(*mut u8, usize)> {
    pool()
        .classes
        .iter()
        .map(|c| (c.region.as_ptr(), c.region.len()))
        .collect()
}

fn class_for(len: usize) -> Option<usize> {
    if len > MAX_BUF {
        return None;
    }
    let size = len.max(MIN_BUF).next_power_of_two();
    Some(size.trailing_zeros() as usize - MIN_BUF.trailing_zeros() as usize)
}

type Waiter = (usize, Box<dyn FnOnce(DmaBuf)>);

/// A thread's cached buffer indices; handed back to the global lists when the thread exits,
/// so restarting reactors does not leak buffers.
#[derive(Default)]
struct Cache([Vec<u32>; CLASSES]);

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(pool) = POOL.get() {
            for (class, list) in self.0.iter_mut().enumerate() {
                for index in list.drain(..) {
                    let _ = pool.classes[class].free.push(index);
                }
            }
        }
    }
}

impl std::ops::Deref for Cache {
    type Target = [Vec<u32>; CLASSES];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Cache {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static WAITERS: RefCell<VecDeque<Waiter>> = const { RefCell::new(VecDeque::new()) };
}

enum Backing {
    Pooled { class: u8, index: u32 },
    Owned(#[allow(dead_code)] DmaRegion), // held only to keep the memory alive
}

/// One I/O buffer. It is 4 KiB aligned, owned by exactly one I/O at a time, and travels
/// from socket to disk and back without being copied.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    backing: Backing,
}

// SAFETY: a DmaBuf uniquely owns its bytes; returning it to the pool is thread-safe (lock-free
// global list, or the dropping thread's own cache).
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// A buffer of `len` bytes (contents unspecified), or None if its class is exhausted.
    /// Lengths above 128 KiB get a dedicated region (a slow path for large jobs).
    pub fn alloc(len: usize) -> Option<DmaBuf> {
        let Some(class) = class_for(len) else {
            let region = DmaRegion::alloc(len).ok()?;
            return Some(DmaBuf {
                ptr: NonNull::new(region.as_ptr())?,
                len,
                capacity: region.len(),
                backing: Backing::Owned(region),
            });
        };
        let pool = pool();
        let index = CACHE
            .with(|c| c.borrow_mut()[class].pop())
            .or_else(|| pool.classes[class].free.pop())?;
        let c = &pool.classes[class];
        // SAFETY: index < count, so the offset stays inside the class region.
        let ptr = unsafe { c.region.as_ptr().add(index as usize * c.size) };
        Some(DmaBuf {
            ptr: NonNull::new(ptr)?,
            len,
            capacity: c.size,
            backing: Backing::Pooled {
                class: class as u8,
                index,
            },
        })
    }

    /// Like [`alloc`](Self::alloc), but when the pool is empty the request queues on this
    /// reactor and `then` runs once a buffer is free. Must be called on a reactor thread.
    pub fn alloc_or_wait(len: usize, then: Box<dyn FnOnce(DmaBuf)>) {
        match DmaBuf::alloc(len) {
            Some(buf) => then(buf),
            None => WAITERS.with(|w| w.borrow_mut().push_back((len, then))),
        }
    }

    /// A zero-filled buffer.
    pub fn zeroed(len: usize) -> Option<DmaBuf> {
        let mut b = DmaBuf::alloc(len)?;
        b.as_mut_slice().fill(0);
        Some(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the visible length (not the capacity).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.capacity, "DmaBuf::set_len beyond capacity");
        self.len = len;
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len lies in memory this buffer uniquely owns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// The io_uring fixed-buffer index covering this buffer, if it is pooled.
    pub fn fixed_index(&self) -> Option<u16> {
        match self.backing {
            Backing::Pooled { class, .. } => Some(class as u16),
            Backing::Owned(_) => None,
        }
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        if let Backing::Pooled { class, index } = self.backing {
            let class = class as usize;
            let cached = CACHE
                .try_with(|c| {
                    let mut c = c.borrow_mut();
                    if c[class].len() < CACHE_PER_CLASS {
                        c[class].push(index);
                        true
                    } else {
                        false
                    }
                })
                .unwrap_or(false);
            if !cached {
                // Cannot fail: the list has room for every buffer of the class.
                let _ = pool().classes[class].free.push(index);
            }
        }
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DmaBuf({:p}, len {}, cap {})",
            self.ptr, self.len, self.capacity
        )
    }
}

/// Hands freed buffers to queued waiters, oldest first. Returns how many were served.
pub(crate) fn serve_waiters() -> usize {
    let mut served = 0;
    loop {
        let next = WAITERS.with(|w| {
            let mut w = w.borrow_mut();
            let len = w.front()?.0;
            let buf = DmaBuf::alloc(len)?;
            w.pop_front().map(|(_, then)| (buf, then))
        });
        match next {
            Some((buf, then)) => {
                then(buf);
                served += 1;
            }
            None => return served,
        }
    }
}

pub(crate) fn has_waiters() -> bool {
    WAITERS.with(|w| !w.borrow().is_empty())
}

/// Free buffers per class (cached buffers of other cores are not counted).
pub fn free_counts() -> Vec<(usize, usize)> {
    pool()
        .classes
        .iter()
        .map(|c| (c.size, c.free.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_cover_4k_to_128k() {
        assert_eq!(class_for(1), Some(0));
        assert_eq!(class_for(4096), Some(0));
        assert_eq!(class_for(4097), Some(1));
        assert_eq!(class_for(128 * 1024), Some(5));
        assert_eq!(class_for(128 * 1024 + 1), None);
    }

    #[test]
    fn buffers_are_aligned_and_reused() {
        let mut a = DmaBuf::alloc(4096).unwrap();
        assert_eq!(a.as_ptr() as usize % 4096, 0);
        a.as_mut_slice().fill(7);
        let p = a.as_ptr();
        drop(a);
        let b = DmaBuf::alloc(4096).unwrap();
        assert_eq!(
            b.as_ptr(),
            p,
            "the per-core cache hands back the last freed buffer"
        );
        let big = DmaBuf::alloc(1 << 20).unwrap();
        assert_eq!(big.len(), 1 << 20);
        assert!(big.fixed_index().is_none());
        assert_eq!(b.fixed_index(), Some(0));
    }

    #[test]
    fn exhausted_class_queues_waiters() {
        // Drain the 128 KiB class entirely, then free one buffer: the waiter gets it.
        let mut held = Vec::new();
        while let Some(b) = DmaBuf::alloc(MAX_BUF) {
            held.push(b);
        }
        let got = std::rc::Rc::new(std::cell::Cell::new(false));
        let g = got.clone();
        DmaBuf::alloc_or_wait(MAX_BUF, Box::new(move |_b| g.set(true)));
        assert!(has_waiters());
        assert_eq!(serve_waiters(), 0);
        held.pop();
        assert_eq!(serve_waiters(), 1);
        assert!(got.get());
    }
}
