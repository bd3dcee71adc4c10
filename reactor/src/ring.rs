//! The reactor's io_uring: one ring per core, shared by everything on that core.
//!
//! Submitters push entries through [`Ring::push`]; the reactor submits them all with one
//! `io_uring_enter` at the end of the loop iteration. A completion is routed by its token: the
//! upper 16 bits of `user_data` name a registered [`CompletionHandler`], the lower 48 bits are
//! the handler's own tag (an index into its in-flight table, typically). Routing by token keeps
//! the I/O path free of allocation: no boxed callback per operation.

use io_uring::{cqueue, squeue, types, IoUring};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

/// Receives the completions of the operations it submitted.
pub trait CompletionHandler {
    fn complete(&self, tag: u64, result: i32, flags: u32);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandlerId(u16);

const TAG_BITS: u32 = 48;
/// Marks an operation that waits on a peer (a receive for the next request, an accept): it
/// may stay in flight forever, and must not keep the reactor from sleeping.
const PASSIVE_BIT: u64 = 1 << (TAG_BITS - 1);
const TAG_MASK: u64 = PASSIVE_BIT - 1;
const REAP_BATCH: usize = 32;

pub struct Ring {
    uring: RefCell<IoUring>,
    handlers: RefCell<Vec<Option<Rc<dyn CompletionHandler>>>>,
    free_ids: RefCell<Vec<u16>>,
    queued: Cell<usize>,
    inflight: Cell<usize>,
    active: Cell<usize>,
    fixed_buffers: Cell<bool>,
}

impl Ring {
    pub(crate) fn new(entries: u32) -> io::Result<Ring> {
        let tuned = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_cqsize(entries * 4)
            .build(entries);
        let uring = match tuned {
            Ok(r) => r,
            // Older kernels lack the task-run flags; the plain ring is still correct.
            Err(_) => IoUring::builder()
                .setup_cqsize(entries * 4)
                .build(entries)?,
        };
        Ok(Ring {
            uring: RefCell::new(uring),
            handlers: RefCell::new(Vec::new()),
            free_ids: RefCell::new(Vec::new()),
            queued: Cell::new(0),
            inflight: Cell::new(0),
            active: Cell::new(0),
            fixed_buffers: Cell::new(false),
        })
    }

    pub fn register_handler(&self, handler: Rc<dyn CompletionHandler>) -> HandlerId {
        let mut handlers = self.handlers.borrow_mut();
        if let Some(id) = self.free_ids.borrow_mut().pop() {
            handlers[id as usize] = Some(handler);
            return HandlerId(id);
        }
        let id = handlers.len();
        assert!(
            id < u16::MAX as usize,
            "too many io_uring completion handlers"
        );
        handlers.push(Some(handler));
        HandlerId(id as u16)
    }

    /// Forget a handler. Its owner must have no operations in flight: a late completion for a
    /// released id is dropped with a warning.
    pub fn unregister_handler(&self, id: HandlerId) {
        let mut handlers = self.handlers.borrow_mut();
        if let Some(slot) = handlers.get_mut(id.0 as usize) {
            if slot.take().is_some() {
                self.free_ids.borrow_mut().push(id.0);
            }
        }
    }

    /// Queue an operation; it is submitted at the end of this loop iteration.
    ///
    /// # Safety
    /// Every buffer and file descriptor `entry` refers to must stay valid until the handler has
    /// received the completion for (`handler`, `tag`).
    pub unsafe fn push(&self, entry: squeue::Entry, handler: HandlerId, tag: u64) {
        // SAFETY: forwarded contract.
        unsafe { self.push_with(entry, handler, tag, false) };
        self.active.set(self.active.get() + 1);
    }

    /// Like [`push`](Self::push), for an operation that waits on a peer and may never
    /// complete on its own (the reactor may sleep while only such operations are in flight).
    ///
    /// # Safety
    /// As for [`push`](Self::push).
    pub unsafe fn push_passive(&self, entry: squeue::Entry, handler: HandlerId, tag: u64) {
        // SAFETY: forwarded contract.
        unsafe { self.push_with(entry, handler, tag, true) };
    }

    unsafe fn push_with(&self, entry: squeue::Entry, handler: HandlerId, tag: u64, passive: bool) {
        debug_assert!(tag <= TAG_MASK);
        let flag = if passive { PASSIVE_BIT } else { 0 };
        let entry = entry.user_data(((handler.0 as u64) << TAG_BITS) | flag | (tag & TAG_MASK));
        let mut uring = self.uring.borrow_mut();
        loop {
            // SAFETY: the caller guarantees the entry's buffers outlive its completion.
            if unsafe { uring.submission().push(&entry) }.is_ok() {
                break;
            }
            // Submission queue full: hand what we have to the kernel now and retry.
            if let Err(e) = uring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EAGAIN) {
                    tracing::error!("io_uring submit failed: {e}");
                }
                drop(uring);
                self.reap();
                uring = self.uring.borrow_mut();
            }
        }
        self.queued.set(self.queued.get() + 1);
        self.inflight.set(self.inflight.get() + 1);
    }

    /// Submits queued entries (one system call) if there are any, or if the kernel asks us to
    /// run deferred completion work.
    pub(crate) fn submit(&self) {
        let uring = self.uring.borrow();
        let taskrun = {
            // SAFETY: reading the shared SQ flags word has no preconditions.
            let mut sq = unsafe { uring.submission_shared() };
            sq.sync();
            sq.taskrun()
        };
        if self.queued.get() == 0 && !taskrun {
            return;
        }
        match uring.submit() {
            Ok(_) => self.queued.set(0),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {} // CQ full: reap, then retry
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => tracing::error!("io_uring submit failed: {e}"),
        }
    }

    /// Blocks until at least one completion arrives or `timeout_ns` passes.
    pub(crate) fn wait(&self, timeout_ns: Option<u64>) {
        let uring = self.uring.borrow();
        let result = match timeout_ns {
            Some(ns) => {
                let ts = types::Timespec::new()
                    .sec(ns / 1_000_000_000)
                    .nsec((ns % 1_000_000_000) as u32);
                let args = types::SubmitArgs::new().timespec(&ts);
                uring.submitter().submit_with_args(1, &args)
            }
            None => uring.submit_and_wait(1),
        };
        match result {
            Ok(_) => self.queued.set(0),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                self.queued.set(0)
            }
            Err(e) => tracing::error!("io_uring wait failed: {e}"),
        }
    }

    /// Dispatches every available completion. Returns how many were handled.
    pub(crate) fn reap(&self) -> usize {
        let mut total = 0;
        {
            // The common idle case: nothing to reap, and no batch to set up.
            let mut uring = self.uring.borrow_mut();
            if uring.completion().is_empty() {
                return 0;
            }
        }
        let mut batch = [(0u64, 0i32, 0u32); REAP_BATCH];
        loop {
            let n = {
                let mut uring = self.uring.borrow_mut();
                let mut cq = uring.completion();
                let mut n = 0;
                for cqe in &mut cq {
                    batch[n] = (cqe.user_data(), cqe.result(), cqe.flags());
                    n += 1;
                    if n == REAP_BATCH {
                        break;
                    }
                }
                n
            };
            if n == 0 {
                return total;
            }
            total += n;
            for &(user_data, result, flags) in &batch[..n] {
                if !cqueue::more(flags) {
                    self.inflight.set(self.inflight.get().saturating_sub(1));
                    if user_data & PASSIVE_BIT == 0 {
                        self.active.set(self.active.get().saturating_sub(1));
                    }
                }
                let id = (user_data >> TAG_BITS) as usize;
                let handler = self.handlers.borrow().get(id).and_then(|h| h.clone());
                match handler {
                    Some(h) => h.complete(user_data & TAG_MASK, result, flags),
                    None => tracing::warn!("io_uring completion for released handler {id}"),
                }
            }
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.get()
    }

    /// Operations in flight that will complete without a peer's help (disk I/O, sends,
    /// receives of data already announced). While there are any, the reactor keeps polling:
    /// on a VM, waking a halted vCPU for their completion costs far more than the poll.
    pub fn active(&self) -> usize {
        self.active.get()
    }

    /// Registers DMA regions as fixed buffers; the index of a region in `regions` becomes its
    /// `buf_index` for `ReadFixed`/`WriteFixed`.
    pub(crate) fn register_buffers(&self, regions: &[(*mut u8, usize)]) -> io::Result<()> {
        let iovecs: Vec<libc::iovec> = regions
            .iter()
            .map(|&(base, len)| libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            })
            .collect();
        // SAFETY: the regions are the DMA pool's, which live for the whole process (they are
        // never unmapped), so the kernel's long-term pin never outlives the memory.
        unsafe { self.uring.borrow().submitter().register_buffers(&iovecs) }?;
        self.fixed_buffers.set(true);
        Ok(())
    }

    /// Whether DMA pool buffers may be used with `ReadFixed`/`WriteFixed` on this ring.
    pub fn has_fixed_buffers(&self) -> bool {
        self.fixed_buffers.get()
    }

    pub(crate) fn release_handlers(&self) {
        let handlers = std::mem::take(&mut *self.handlers.borrow_mut());
        drop(handlers);
    }
}
