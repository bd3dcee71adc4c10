//! The malloc bdev: a RAM disk on DMA (hugepage) memory.

use crate::io::{BdevIo, IoStatus, IoType};
use crate::null::{check_block_geometry, resolve_uuid};
use crate::traits::{Bdev, BdevChannel, ConfigCall, Geometry};
use crate::{complete_later, registry, BdevError};
use oxstor_reactor::DmaRegion;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `bdev_malloc_create` parameters (SPDK's names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MallocParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub num_blocks: u64,
    pub block_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimal_io_boundary: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md_size: Option<u32>,
}

/// Largest RAM disk we will try to allocate (keeps a typo from exhausting the machine).
const MAX_BYTES: u64 = 1 << 40;

pub struct MallocBdev {
    params: MallocParams,
    name: String,
    uuid: String,
    geometry: Geometry,
    memory: DmaRegion,
}

pub fn create(mut params: MallocParams) -> Result<String, BdevError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    check_block_geometry(params.block_size, params.num_blocks)?;
    if params.md_size.unwrap_or(0) != 0 {
        return Err(BdevError::Invalid(
            "metadata (md_size) is not supported".into(),
        ));
    }
    let bytes = params.num_blocks * params.block_size as u64;
    if bytes > MAX_BYTES {
        return Err(BdevError::NoMem(format!(
            "{bytes} bytes is too large for a malloc bdev"
        )));
    }
    let name = match &params.name {
        Some(n) => n.clone(),
        None => loop {
            let candidate = format!("Malloc{}", NEXT.fetch_add(1, Ordering::Relaxed));
            if registry::lookup(&candidate).is_err() {
                break candidate;
            }
        },
    };
    if registry::lookup(&name).is_ok() {
        return Err(BdevError::Exists(name));
    }
    let uuid = resolve_uuid(&params.uuid)?;
    params.name = Some(name.clone());
    params.uuid = Some(uuid.clone());
    let memory = DmaRegion::alloc(bytes as usize)
        .map_err(|e| BdevError::NoMem(format!("malloc bdev {name}: {e}")))?;
    let mut geometry = Geometry::new(params.block_size, params.num_blocks);
    geometry.optimal_io_boundary = params.optimal_io_boundary.unwrap_or(0);
    registry::register(Arc::new(MallocBdev {
        params,
        name: name.clone(),
        uuid,
        geometry,
        memory,
    }))?;
    Ok(name)
}

pub fn delete(name: &str) -> Result<(), BdevError> {
    registry::unregister(name, Some("malloc"))
}

impl Bdev for MallocBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "malloc"
    }
    fn product_name(&self) -> &'static str {
        "Malloc disk"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, _t: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            base: self.memory.as_ptr(),
            block_size: self.geometry.block_size as u64,
        }))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_malloc_create",
            params: serde_json::to_value(&self.params).unwrap_or_default(),
        })
    }
    fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({ "hugepage_backed": self.memory.is_hugepage() })
    }
}

struct MallocChannel {
    base: *mut u8,
    block_size: u64,
}

impl BdevChannel for MallocChannel {
    fn submit(&self, mut io: Box<BdevIo>) {
        // The generic channel checked the range, so offset and length lie inside the region.
        let offset = (io.offset_blocks * self.block_size) as usize;
        let len = (io.num_blocks * self.block_size) as usize;
        let status = match io.io_type {
            IoType::Read => {
                let dst = io.buf.as_mut_slice();
                // SAFETY: [offset, offset+len) is inside the region (checked range), the region
                // outlives every channel, and dst is a distinct DMA buffer of exactly len bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(self.base.add(offset), dst.as_mut_ptr(), len)
                };
                IoStatus::Success
            }
            IoType::Write => {
                let src = io.buf.as_slice();
                // SAFETY: as above, copying in the other direction. Concurrent writes to the
                // same blocks from two cores race exactly as they would on a real disk.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(offset), len) };
                IoStatus::Success
            }
            IoType::Compare => {
                // SAFETY: as for Read; the region is only read here.
                let disk = unsafe { std::slice::from_raw_parts(self.base.add(offset), len) };
                if disk == io.buf.as_slice() {
                    IoStatus::Success
                } else {
                    IoStatus::Miscompare
                }
            }
            IoType::Unmap | IoType::WriteZeroes => {
                // SAFETY: as for Write.
                unsafe { std::ptr::write_bytes(self.base.add(offset), 0, len) };
                IoStatus::Success
            }
            IoType::Flush | IoType::Reset => IoStatus::Success,
        };
        complete_later(io, status);
    }
}
