//! The I/O descriptor and its completion path.
//!
//! A [`BdevIo`] is boxed once by whoever starts the I/O and can be reused for the next one
//! ([`BdevIo::reset`]). Each layer that forwards it pushes a completion frame (who to call back,
//! with what tag, and the layer's iostat and start time); [`BdevIo::complete`] pops one frame,
//! records the latency for that layer and hands the descriptor back. The frame vector keeps its
//! capacity across reuse, so steady-state I/O allocates nothing.
//!
//! A layer that only remaps the offset (raid0, concat) does not need a frame of its own: it
//! *forwards* the I/O ([`crate::IoChannel::forward`]) to a member, which records the member's
//! statistics and original offset in the descriptor. When the frame that was on top at that
//! moment pops, the offset is restored and the member's statistics counted with the same
//! latency. The array then pays no frame, completion call or reference count of its own per
//! I/O.

use crate::iobuf::IoBuf;
use crate::iostat::IoStat;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoType {
    Read,
    Write,
    Flush,
    Unmap,
    WriteZeroes,
    Reset,
    Compare,
}

impl IoType {
    pub const ALL: [IoType; 7] = [
        IoType::Read,
        IoType::Write,
        IoType::Flush,
        IoType::Unmap,
        IoType::WriteZeroes,
        IoType::Reset,
        IoType::Compare,
    ];

    /// SPDK's name for the type, as used in `supported_io_types` and error injection.
    pub fn name(self) -> &'static str {
        match self {
            IoType::Read => "read",
            IoType::Write => "write",
            IoType::Flush => "flush",
            IoType::Unmap => "unmap",
            IoType::WriteZeroes => "write_zeroes",
            IoType::Reset => "reset",
            IoType::Compare => "compare",
        }
    }

    /// Whether the I/O carries a data buffer of `num_blocks * block_size` bytes.
    pub fn has_data(self) -> bool {
        matches!(self, IoType::Read | IoType::Write | IoType::Compare)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    Pending,
    Success,
    /// Failed with this errno.
    Failed(i32),
    /// A Compare found different data.
    Miscompare,
}

impl IoStatus {
    pub fn is_success(self) -> bool {
        self == IoStatus::Success
    }
}

/// Receives a completed I/O. `tag` is what the submitter passed with it.
pub trait IoDone {
    fn io_done(&self, io: Box<BdevIo>, tag: u64);
}

struct Frame {
    done: Rc<dyn IoDone>,
    tag: u64,
    stat: Option<Rc<IoStat>>,
    start_ticks: u64,
}

pub struct BdevIo {
    pub io_type: IoType,
    pub offset_blocks: u64,
    pub num_blocks: u64,
    pub buf: IoBuf,
    pub status: IoStatus,
    /// Scratch words for the module currently holding the I/O (it must not rely on them
    /// surviving a trip through another layer).
    pub scratch: [u64; 2],
    frames: Vec<Frame>,
    /// A forward in flight (see the module docs); one level deep.
    forwarded: Option<Forwarded>,
}

/// What a forward owes the frame below it when that frame pops.
struct Forwarded {
    /// `frames.len()` once that frame has popped.
    depth: usize,
    /// The offset the forwarding layer received.
    offset_blocks: u64,
    /// The member's statistics.
    stat: Rc<IoStat>,
}

impl BdevIo {
    pub fn new(io_type: IoType, offset_blocks: u64, num_blocks: u64, buf: IoBuf) -> Box<BdevIo> {
        Box::new(BdevIo {
            io_type,
            offset_blocks,
            num_blocks,
            buf,
            status: IoStatus::Pending,
            scratch: [0; 2],
            frames: Vec::with_capacity(4),
            forwarded: None,
        })
    }

    /// Prepares a completed descriptor for its next use, keeping its allocation.
    pub fn reset(&mut self, io_type: IoType, offset_blocks: u64, num_blocks: u64) {
        debug_assert!(
            self.frames.is_empty() && self.forwarded.is_none(),
            "reset of an I/O still in flight"
        );
        self.io_type = io_type;
        self.offset_blocks = offset_blocks;
        self.num_blocks = num_blocks;
        self.status = IoStatus::Pending;
        self.scratch = [0; 2];
    }

    pub(crate) fn push_frame(
        &mut self,
        done: Rc<dyn IoDone>,
        tag: u64,
        stat: Option<Rc<IoStat>>,
        start_ticks: u64,
    ) {
        self.frames.push(Frame {
            done,
            tag,
            stat,
            start_ticks,
        });
    }

    /// Whether [`forward`](crate::IoChannel::forward) may take this I/O: the layer holding it
    /// has a frame and no forward is pending.
    #[inline]
    pub(crate) fn can_forward(&self) -> bool {
        self.forwarded.is_none() && !self.frames.is_empty()
    }

    /// Moves the I/O to `offset_blocks` of a member whose statistics are `stat`; undone when
    /// the current top frame pops.
    #[inline]
    pub(crate) fn set_forwarded(&mut self, offset_blocks: u64, stat: Rc<IoStat>) {
        self.forwarded = Some(Forwarded {
            depth: self.frames.len() - 1,
            offset_blocks: self.offset_blocks,
            stat,
        });
        self.offset_blocks = offset_blocks;
    }

    /// Hands the I/O back to whoever submitted it to the current layer.
    pub fn complete(mut self: Box<Self>, status: IoStatus) {
        self.status = status;
        let Some(frame) = self.frames.pop() else {
            tracing::error!("completion of an I/O that nobody submitted");
            return;
        };
        let now = oxstor_reactor::now_ticks();
        if self
            .forwarded
            .as_ref()
            .is_some_and(|f| f.depth == self.frames.len())
        {
            if let Some(f) = self.forwarded.take() {
                f.stat.record(&self, frame.start_ticks, now);
                self.offset_blocks = f.offset_blocks;
            }
        }
        if let Some(stat) = &frame.stat {
            stat.record(&self, frame.start_ticks, now);
        }
        frame.done.io_done(self, frame.tag);
    }

    pub fn len_bytes(&self, block_size: u32) -> u64 {
        self.num_blocks * block_size as u64
    }
}

impl std::fmt::Debug for BdevIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevIo")
            .field("type", &self.io_type)
            .field("offset_blocks", &self.offset_blocks)
            .field("num_blocks", &self.num_blocks)
            .field("status", &self.status)
            .finish()
    }
}
