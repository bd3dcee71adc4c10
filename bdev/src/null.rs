//! The null bdev: completes everything at once and moves no data. It measures the cost of the
//! stack above it.

use crate::io::{BdevIo, IoStatus, IoType};
use crate::traits::{Bdev, BdevChannel, ConfigCall, Geometry};
use crate::{complete_later, registry, BdevError};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `bdev_null_create` parameters (SPDK's names).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullParams {
    pub name: String,
    pub num_blocks: u64,
    pub block_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub md_size: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

pub struct NullBdev {
    params: NullParams,
    uuid: String,
    geometry: Geometry,
}

pub fn check_block_geometry(block_size: u32, num_blocks: u64) -> Result<(), BdevError> {
    if !(512..=65536).contains(&block_size) || !block_size.is_power_of_two() {
        return Err(BdevError::Invalid(format!(
            "block_size {block_size} must be a power of two between 512 and 65536"
        )));
    }
    if num_blocks == 0 {
        return Err(BdevError::Invalid(
            "num_blocks must be greater than 0".into(),
        ));
    }
    if num_blocks.checked_mul(block_size as u64).is_none() {
        return Err(BdevError::Invalid("bdev size overflows".into()));
    }
    Ok(())
}

pub fn resolve_uuid(uuid: &Option<String>) -> Result<String, BdevError> {
    match uuid {
        Some(u) if crate::is_valid_uuid(u) => Ok(u.to_lowercase()),
        Some(u) => Err(BdevError::Invalid(format!("invalid uuid '{u}'"))),
        None => Ok(crate::new_uuid()),
    }
}

pub fn create(mut params: NullParams) -> Result<String, BdevError> {
    check_block_geometry(params.block_size, params.num_blocks)?;
    if params.md_size != 0 {
        return Err(BdevError::Invalid(
            "metadata (md_size) is not supported".into(),
        ));
    }
    let uuid = resolve_uuid(&params.uuid)?;
    params.uuid = Some(uuid.clone());
    let geometry = Geometry::new(params.block_size, params.num_blocks);
    let name = params.name.clone();
    registry::register(Arc::new(NullBdev {
        params,
        uuid,
        geometry,
    }))?;
    Ok(name)
}

pub fn delete(name: &str) -> Result<(), BdevError> {
    registry::unregister(name, Some("null"))
}

impl Bdev for NullBdev {
    fn name(&self) -> &str {
        &self.params.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "null"
    }
    fn product_name(&self) -> &'static str {
        "Null disk"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        t != IoType::Compare
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        Ok(Box::new(NullChannel))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_null_create",
            params: serde_json::to_value(&self.params).unwrap_or_default(),
        })
    }
}

struct NullChannel;

impl BdevChannel for NullChannel {
    fn submit(&self, io: Box<BdevIo>) {
        complete_later(io, IoStatus::Success);
    }
}
