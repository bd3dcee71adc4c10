//! The data an I/O carries: a whole DMA buffer, or a window into one that a parent I/O owns.
//!
//! Windows are how a split or striped I/O hands each child its part of the parent's buffer
//! without copying. The parent's owner is kept alive by the window itself.

use oxstor_reactor::DmaBuf;
use std::any::Any;
use std::ptr::NonNull;
use std::rc::Rc;

#[derive(Default)]
pub enum IoBuf {
    #[default]
    None,
    Dma(DmaBuf),
    Window(Window),
}

pub struct Window {
    ptr: NonNull<u8>,
    len: usize,
    fixed_index: Option<u16>,
    _owner: Rc<dyn Any>,
}

impl IoBuf {
    /// A window of `len` bytes at `offset` into `buf`, whose memory `owner` keeps alive.
    ///
    /// The caller promises that no two live windows over the same buffer overlap while
    /// either is written, which holds for children of one split I/O.
    pub fn window(buf: &mut IoBuf, offset: usize, len: usize, owner: Rc<dyn Any>) -> IoBuf {
        let (base, total, fixed_index) = match buf {
            IoBuf::None => return IoBuf::None,
            IoBuf::Dma(d) => (d.as_mut_ptr(), d.len(), d.fixed_index()),
            IoBuf::Window(w) => (w.ptr.as_ptr(), w.len, w.fixed_index),
        };
        assert!(offset + len <= total, "window outside its buffer");
        // SAFETY: offset + len ≤ total, so the pointer stays inside the parent buffer.
        let ptr = unsafe { base.add(offset) };
        IoBuf::Window(Window {
            ptr: NonNull::new(ptr).expect("buffer pointers are never null"),
            len,
            fixed_index,
            _owner: owner,
        })
    }

    /// Shares this buffer between readers: returns it behind an `Rc`, and a full-length
    /// window onto the same bytes. Replication uses it to write the bytes locally while the
    /// same bytes go to the network; neither reader may write through its handle.
    pub fn into_shared(mut self) -> (Rc<IoBuf>, IoBuf) {
        let len = self.len();
        let fixed_index = self.fixed_index();
        let ptr = self.as_mut_ptr();
        let shared = Rc::new(self);
        let Some(ptr) = NonNull::new(ptr) else {
            return (shared, IoBuf::None);
        };
        // Moving the IoBuf into the Rc does not move the bytes it points to (pool memory, or
        // a window's parent), so `ptr` stays valid for as long as `shared` lives.
        let window = IoBuf::Window(Window {
            ptr,
            len,
            fixed_index,
            _owner: shared.clone(),
        });
        (shared, window)
    }

    pub fn len(&self) -> usize {
        match self {
            IoBuf::None => 0,
            IoBuf::Dma(d) => d.len(),
            IoBuf::Window(w) => w.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            IoBuf::None => &[],
            IoBuf::Dma(d) => d.as_slice(),
            // SAFETY: the window lies inside a live buffer (kept by `_owner`) and no
            // overlapping window is written concurrently (see `window`).
            IoBuf::Window(w) => unsafe { std::slice::from_raw_parts(w.ptr.as_ptr(), w.len) },
        }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            IoBuf::None => &mut [],
            IoBuf::Dma(d) => d.as_mut_slice(),
            // SAFETY: as in `as_slice`, and &mut self makes this window's access exclusive.
            IoBuf::Window(w) => unsafe { std::slice::from_raw_parts_mut(w.ptr.as_ptr(), w.len) },
        }
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        match self {
            IoBuf::None => std::ptr::null_mut(),
            IoBuf::Dma(d) => d.as_mut_ptr(),
            IoBuf::Window(w) => w.ptr.as_ptr(),
        }
    }

    /// The io_uring fixed-buffer index covering this memory, if any.
    pub fn fixed_index(&self) -> Option<u16> {
        match self {
            IoBuf::None => None,
            IoBuf::Dma(d) => d.fixed_index(),
            IoBuf::Window(w) => w.fixed_index,
        }
    }

    pub fn take(&mut self) -> IoBuf {
        std::mem::take(self)
    }

    pub fn into_dma(self) -> Option<DmaBuf> {
        match self {
            IoBuf::Dma(d) => Some(d),
            _ => None,
        }
    }
}

impl From<DmaBuf> for IoBuf {
    fn from(d: DmaBuf) -> Self {
        IoBuf::Dma(d)
    }
}
