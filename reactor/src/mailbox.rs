//! A reactor's inbox: a bounded lock-free queue plus an eventfd to wake a sleeping reactor.
//!
//! Senders never drop a message. When the queue is full the sender backs off (spins, then
//! yields) until the owner has drained some: back-pressure instead of loss. The eventfd is only
//! written when the owner has announced it is about to sleep, so a busy reactor costs senders
//! no system call.

use crossbeam_queue::ArrayQueue;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

pub type Message = Box<dyn FnOnce() + Send + 'static>;

pub struct Mailbox {
    queue: ArrayQueue<Message>,
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl Mailbox {
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mailbox {
            queue: ArrayQueue::new(capacity),
            sleeping: AtomicBool::new(false),
            // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn send(&self, msg: Message) {
        let mut msg = msg;
        let mut spins = 0u32;
        loop {
            match self.queue.push(msg) {
                Ok(()) => break,
                Err(back) => {
                    msg = back;
                    self.wake();
                    spins += 1;
                    if spins < 64 {
                        std::hint::spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake();
        }
    }

    pub fn pop(&self) -> Option<Message> {
        self.queue.pop()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd we own; failure (EAGAIN when the
        // counter is saturated) still leaves the reactor woken, so the result is ignored.
        unsafe {
            libc::write(
                self.eventfd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    /// Announce (or retract) an imminent sleep. Returns false if messages arrived meanwhile,
    /// in which case the caller must not sleep.
    pub fn set_sleeping(&self, sleeping: bool) -> bool {
        self.sleeping.store(sleeping, Ordering::SeqCst);
        !sleeping || self.queue.is_empty()
    }

    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }
}
