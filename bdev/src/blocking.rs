//! Control-path I/O: one bdev I/O submitted on a chosen reactor from an ordinary thread, and
//! waited for. For superblocks, examine probes, admin tools and tests: never the I/O path, and
//! never on a reactor thread, where waiting would stall (or deadlock) the very core that must
//! complete the I/O.

use crate::registry::{self, BdevEntry};
use crate::{BdevError, BdevIo, IoBuf, IoDone, IoStatus, IoType};
use oxstor_reactor::runtime::Reply;
use oxstor_reactor::DmaBuf;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// What came back: the status, and the buffer's bytes (read data, or what was written).
pub type Outcome = (IoStatus, Vec<u8>);

type Answer = Result<Outcome, BdevError>;

struct Waiter(RefCell<Option<Reply<Answer>>>);

impl IoDone for Waiter {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if let Some(reply) = self.0.borrow_mut().take() {
            reply.send(Ok((io.status, io.buf.as_slice().to_vec())));
        }
    }
}

/// Runs `io_type` over `num_blocks` blocks at `offset_blocks` of `entry` on reactor `core`.
/// Data-carrying types get a zeroed buffer of `num_blocks` blocks, or of `data`'s length
/// (filled with it) when given, so a caller can also submit a deliberately wrong length.
pub fn io(
    core: usize,
    entry: &Arc<BdevEntry>,
    io_type: IoType,
    offset_blocks: u64,
    num_blocks: u64,
    data: Option<&[u8]>,
    timeout: Duration,
) -> Result<Outcome, BdevError> {
    if oxstor_reactor::is_reactor_thread() {
        return Err(BdevError::Invalid(
            "blocking bdev I/O cannot wait on a reactor thread".into(),
        ));
    }
    let rt = registry::runtime().ok_or(BdevError::NoRuntime)?;
    let entry = entry.clone();
    let data = data.map(<[u8]>::to_vec);
    let rx = rt.call_on(core, move |reply: Reply<Answer>| {
        let buf = if io_type.has_data() {
            let bs = entry.bdev.geometry().block_size as u64;
            let len = data.as_ref().map_or((num_blocks * bs) as usize, Vec::len);
            let Some(mut buf) = DmaBuf::zeroed(len) else {
                return reply.send(Err(BdevError::NoMem(format!("{len}-byte I/O buffer"))));
            };
            if let Some(d) = &data {
                buf.as_mut_slice().copy_from_slice(d);
            }
            IoBuf::Dma(buf)
        } else {
            IoBuf::None
        };
        let channel = match entry.channel() {
            Ok(ch) => ch,
            Err(e) => return reply.send(Err(e)),
        };
        channel.submit(
            BdevIo::new(io_type, offset_blocks, num_blocks, buf),
            Rc::new(Waiter(RefCell::new(Some(reply)))),
            0,
        );
    });
    rx.recv_timeout(timeout).map_err(|_| {
        BdevError::Io(
            format!("{io_type:?} of {num_blocks} blocks at {offset_blocks}"),
            std::io::Error::from(std::io::ErrorKind::TimedOut),
        )
    })?
}
