//! oxstor-reactor: the thread-per-core engine everything in oxstor runs on.
//!
//! One OS thread per core in the core mask, pinned with `core_affinity`. Each thread runs a
//! [`Reactor`](reactor) loop that, on every iteration,
//!
//! 1. drains its bounded lock-free mailbox of cross-core messages,
//! 2. reaps io_uring completions and dispatches them by token,
//! 3. runs its registered pollers (each reports busy or idle),
//! 4. fires expired timers,
//! 5. submits every queued io_uring entry in one system call.
//!
//! A reactor that has found nothing to do for a short streak blocks in `io_uring_enter` until a
//! completion, a message (signalled through an eventfd the ring is reading) or its next timer.
//!
//! State that belongs to a core is only reachable from that core's thread (thread-locals holding
//! `Rc`/`RefCell`), so the I/O path takes no locks. Other cores reach it with a message.

pub mod clock;
pub mod cpuset;
pub mod dma;
mod mailbox;
pub mod net;
mod poller;
pub mod reactor;
pub mod ring;
pub mod runtime;
mod timer;

pub use cpuset::CoreMask;
pub use dma::{DmaBuf, DmaRegion, PoolConfig};
pub use poller::{PollStatus, PollerId};
pub use reactor::{
    core_index, hold_awake, is_reactor_thread, now_ticks, register_poller, release_awake,
    schedule_after, unregister_poller,
};
pub use ring::{CompletionHandler, HandlerId};
pub use runtime::{Handle, Runtime, RuntimeConfig};
