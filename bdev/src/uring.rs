//! The uring bdev: a file or block device driven by this core's io_uring.
//!
//! Opened with O_DIRECT where the filesystem allows it (tmpfs does not), so reads and writes
//! go from the DMA buffer to the device without the page cache. Pooled buffers use io_uring's
//! fixed-buffer opcodes, which skip the per-I/O page pinning.

use crate::io::{BdevIo, IoStatus, IoType};
use crate::null::resolve_uuid;
use crate::traits::{Bdev, BdevChannel, ConfigCall, Geometry};
use crate::{complete_later, registry, BdevError};
use io_uring::{opcode, types};
use oxstor_reactor::reactor::with_ring;
use oxstor_reactor::{CompletionHandler, HandlerId};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::rc::Rc;
use std::sync::Arc;

/// `bdev_uring_create` parameters (SPDK's names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UringParams {
    pub name: String,
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

pub struct UringBdev {
    params: UringParams,
    uuid: String,
    geometry: Geometry,
    file: File,
    direct: bool,
}

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKSSZGET: libc::c_ulong = 0x1268;

fn open_file(path: &str) -> Result<(File, bool), BdevError> {
    let io_err = |e| BdevError::Io(format!("cannot open {path}"), e);
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!("{path}: O_DIRECT not supported here; using buffered I/O");
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(io_err)?;
            Ok((f, false))
        }
        Err(e) => Err(io_err(e)),
    }
}

fn device_size(file: &File, path: &str) -> Result<(u64, Option<u32>), BdevError> {
    let meta = file
        .metadata()
        .map_err(|e| BdevError::Io(path.to_string(), e))?;
    if meta.file_type().is_block_device() {
        let mut bytes: u64 = 0;
        let mut sector: libc::c_int = 0;
        // SAFETY: both ioctls write one integer of the stated type to a live local.
        let ok = unsafe {
            libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut bytes as *mut u64) == 0
                && libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut sector as *mut libc::c_int) == 0
        };
        if !ok {
            return Err(BdevError::Io(
                path.to_string(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok((bytes, Some(sector as u32)))
    } else if meta.file_type().is_file() {
        Ok((meta.len(), None))
    } else {
        Err(BdevError::Invalid(format!(
            "{path} is neither a regular file nor a block device"
        )))
    }
}

pub fn create(mut params: UringParams) -> Result<String, BdevError> {
    let (file, direct) = open_file(&params.filename)?;
    let (bytes, logical) = device_size(&file, &params.filename)?;
    let block_size = params.block_size.unwrap_or(logical.unwrap_or(512).max(512));
    crate::null::check_block_geometry(block_size, 1)?;
    if let Some(l) = logical {
        if block_size < l {
            return Err(BdevError::Invalid(format!(
                "block_size {block_size} is below the device's logical block size {l}"
            )));
        }
    }
    let num_blocks = bytes / block_size as u64;
    if num_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "{} is smaller than one block ({block_size} bytes)",
            params.filename
        )));
    }
    let uuid = resolve_uuid(&params.uuid)?;
    params.uuid = Some(uuid.clone());
    let name = params.name.clone();
    let geometry = Geometry::new(block_size, num_blocks);
    registry::register(Arc::new(UringBdev {
        params,
        uuid,
        geometry,
        file,
        direct,
    }))?;
    Ok(name)
}

pub fn delete(name: &str) -> Result<(), BdevError> {
    registry::unregister(name, Some("uring"))
}

impl Bdev for UringBdev {
    fn name(&self) -> &str {
        &self.params.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "uring"
    }
    fn product_name(&self) -> &'static str {
        "URING bdev"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        t != IoType::Compare
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        let fd = self
            .file
            .try_clone()
            .map_err(|e| BdevError::Io(self.params.filename.clone(), e))?;
        let state = Rc::new(UringState {
            file: fd,
            block_size: self.geometry.block_size as u64,
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            inflight: Cell::new(0),
            closing: Cell::new(false),
            handler: Cell::new(None),
        });
        let id = with_ring(|r| r.register_handler(state.clone()));
        state.handler.set(Some(id));
        Ok(Box::new(UringChannel { state }))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_uring_create",
            params: serde_json::to_value(&self.params).unwrap_or_default(),
        })
    }
    fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({ "filename": self.params.filename, "direct_io": self.direct })
    }
    fn destroy(&self) {
        if let Err(e) = self.file.sync_all() {
            tracing::error!(
                "uring bdev {}: fsync at close failed: {e}",
                self.params.name
            );
        }
    }
}

/// One core's in-flight table. The ring's handler table holds it until the last completion.
struct UringState {
    file: File,
    block_size: u64,
    slots: RefCell<Vec<Option<Box<BdevIo>>>>,
    free: RefCell<Vec<u32>>,
    inflight: Cell<usize>,
    closing: Cell<bool>,
    handler: Cell<Option<HandlerId>>,
}

impl UringState {
    fn park(&self, io: Box<BdevIo>) -> u32 {
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                slots.push(None);
                (slots.len() - 1) as u32
            }
        };
        slots[slot as usize] = Some(io);
        slot
    }

    fn submit(&self, mut io: Box<BdevIo>) {
        let Some(handler) = self.handler.get() else {
            complete_later(io, IoStatus::Failed(libc::ENODEV));
            return;
        };
        let fd = types::Fd(self.file.as_raw_fd());
        let offset = io.offset_blocks * self.block_size;
        let len = io.num_blocks * self.block_size;
        let fixed = io
            .buf
            .fixed_index()
            .filter(|_| with_ring(|r| r.has_fixed_buffers()));
        let ptr = io.buf.as_mut_ptr();
        let entry = match io.io_type {
            IoType::Read => match fixed {
                Some(i) => opcode::ReadFixed::new(fd, ptr, len as u32, i)
                    .offset(offset)
                    .build(),
                None => opcode::Read::new(fd, ptr, len as u32)
                    .offset(offset)
                    .build(),
            },
            IoType::Write => match fixed {
                Some(i) => opcode::WriteFixed::new(fd, ptr, len as u32, i)
                    .offset(offset)
                    .build(),
                None => opcode::Write::new(fd, ptr, len as u32)
                    .offset(offset)
                    .build(),
            },
            IoType::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            IoType::Unmap => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            IoType::WriteZeroes => opcode::Fallocate::new(fd, len)
                .offset(offset)
                .mode(libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE)
                .build(),
            IoType::Reset => {
                complete_later(io, IoStatus::Success);
                return;
            }
            IoType::Compare => {
                complete_later(io, IoStatus::Failed(libc::ENOTSUP));
                return;
            }
        };
        io.scratch[0] = len;
        let slot = self.park(io);
        self.inflight.set(self.inflight.get() + 1);
        // SAFETY: the buffer belongs to the I/O parked in `slots[slot]`, which stays there
        // until this handler receives the completion; the fd is `self.file`, which lives as
        // long as this state, and the ring keeps the state alive while the handler is set.
        with_ring(|r| unsafe { r.push(entry, handler, slot as u64) });
    }
}

impl CompletionHandler for UringState {
    fn complete(&self, tag: u64, result: i32, _flags: u32) {
        let io = self
            .slots
            .borrow_mut()
            .get_mut(tag as usize)
            .and_then(Option::take);
        self.free.borrow_mut().push(tag as u32);
        self.inflight.set(self.inflight.get() - 1);
        if let Some(io) = io {
            let status = if result < 0 {
                IoStatus::Failed(-result)
            } else if io.io_type.has_data() && result as u64 != io.scratch[0] {
                // Short transfer: past the end of a file that shrank under us.
                IoStatus::Failed(libc::EIO)
            } else {
                IoStatus::Success
            };
            io.complete(status);
        }
        if self.closing.get() && self.inflight.get() == 0 {
            self.release();
        }
    }
}

impl UringState {
    fn release(&self) {
        if let Some(id) = self.handler.take() {
            with_ring(|r| r.unregister_handler(id));
        }
    }
}

struct UringChannel {
    state: Rc<UringState>,
}

impl BdevChannel for UringChannel {
    fn submit(&self, io: Box<BdevIo>) {
        self.state.submit(io);
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        if self.state.inflight.get() == 0 {
            if oxstor_reactor::is_reactor_thread() {
                self.state.release();
            }
        } else {
            self.state.closing.set(true);
        }
    }
}
