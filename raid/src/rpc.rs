//! The bdev_raid_* methods, with SPDK's parameter names.
//!
//! Each function takes the method's parameter struct (decoded by the caller with serde;
//! unknown fields are refused, as SPDK's decoders do) and returns a [`BdevError`], whose
//! errno the JSON-RPC layer reports as `-errno`. Validation of the parameters happens here;
//! the arrays themselves live in [`crate::bdev`].
//!
//! `superblock: true` puts an on-disk superblock on every member ([`crate::persist`]).
//! `bdev_raid_set_options` ([`set_options`]) sets the rebuild window and bandwidth cap
//! ([`crate::rebuild`]).

use crate::bdev::{self, ArraySpec, RaidLevel, MAX_MEMBERS};
use crate::persist;
pub use crate::scrub::{scrub, BdevRaidScrubParams};
use oxstor_bdev::null::resolve_uuid;
use oxstor_bdev::BdevError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `bdev_raid_create` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidCreateParams {
    pub name: String,
    /// "raid0"/"0", "raid1"/"1", "raid10"/"10", "raid5"/"5"/"raid5f", "raid6"/"6" or
    /// "concat".
    pub raid_level: String,
    /// Required for raid0, raid10, raid5 and raid6: a power of two, at least one block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_size_kb: Option<u32>,
    /// SPDK's deprecated spelling of `strip_size_kb` (also in KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_size: Option<u32>,
    pub base_bdevs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superblock: Option<bool>,
}

/// `bdev_raid_delete` parameters. `clear_sb` is accepted; there is no superblock to clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidDeleteParams {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_sb: Option<bool>,
}

/// `bdev_raid_get_bdevs` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidGetBdevsParams {
    /// "all", "online", "configuring" or "offline".
    pub category: String,
}

/// `bdev_raid_remove_base_bdev` parameters: the member's own name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidRemoveBaseBdevParams {
    pub name: String,
}

/// `bdev_raid_add_base_bdev` parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevRaidAddBaseBdevParams {
    pub raid_bdev: String,
    pub base_bdev: String,
    /// oxstor extension: keep the new member as a hot spare even where it would grow the
    /// array (a raid1 whose members are all in service grows by one copy otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spare: Option<bool>,
}

/// `bdev_raid_create`: returns the new array's name. An array whose members do not all
/// exist yet is created "configuring" and goes online when the last one appears.
pub fn create(p: BdevRaidCreateParams) -> Result<String, BdevError> {
    let invalid = |m: String| Err(BdevError::Invalid(m));
    if p.name.is_empty() {
        return invalid("name must not be empty".into());
    }
    let level = RaidLevel::parse(&p.raid_level)?;
    let strip_kb = match (p.strip_size_kb, p.strip_size) {
        (Some(a), Some(b)) if a != b => {
            return invalid(format!(
                "strip_size_kb ({a}) and the deprecated strip_size ({b}) disagree"
            ))
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => 0,
    };
    if level.needs_strip() && strip_kb == 0 {
        return invalid(format!("strip_size_kb is required for {}", level.name()));
    }
    if strip_kb != 0 && !strip_kb.is_power_of_two() {
        return invalid(format!("strip_size_kb {strip_kb} is not a power of two"));
    }
    let n = p.base_bdevs.len();
    if n < level.min_members() || n > MAX_MEMBERS {
        return invalid(format!(
            "{} needs between {} and {MAX_MEMBERS} base bdevs, got {n}",
            level.name(),
            level.min_members()
        ));
    }
    // SPDK's "" for a member that is missing from the start: the array is created
    // degraded (raid1 with at least one member, raid5/raid6 with at most as many missing as
    // parity members), and bdev_raid_add_base_bdev later fills the slot with a rebuild.
    let empty = p.base_bdevs.iter().filter(|b| b.is_empty()).count();
    if empty > 0 {
        let allowed = match level {
            RaidLevel::Raid1 => n - 1,
            RaidLevel::Raid5 | RaidLevel::Raid6 => level.parity_members(),
            _ => 0,
        };
        if empty > allowed {
            return invalid(format!(
                "{} cannot start with {empty} of {n} base bdevs missing (\"\")",
                level.name()
            ));
        }
        if p.superblock == Some(true) {
            return invalid(
                "a degraded create (\"\" in base_bdevs) needs superblock: false".into(),
            );
        }
    }
    for (i, b) in p.base_bdevs.iter().enumerate() {
        if b.is_empty() {
            continue;
        }
        if p.base_bdevs[..i].contains(b) {
            return invalid(format!("base bdev {b} is listed twice"));
        }
    }
    let uuid = resolve_uuid(&p.uuid)?;
    let persist = match p.superblock {
        Some(true) => Some(persist::for_create(&p.name, &uuid, n)?),
        _ => None,
    };
    let name = bdev::create_array(ArraySpec {
        name: p.name,
        uuid,
        level,
        strip_kb,
        base_bdevs: p.base_bdevs,
        persist,
    })?;
    bdev::examine();
    // A superblock array that assembled now gets its superblocks before we answer.
    if let Ok(raid) = bdev::find(&name) {
        if let Err(e) = persist::sync(&raid) {
            let _ = bdev::delete_array(&name);
            return Err(BdevError::Invalid(format!(
                "cannot write the superblock: {e}"
            )));
        }
    }
    Ok(name)
}

/// `bdev_raid_delete`: removes the array and releases its members.
pub fn delete(p: BdevRaidDeleteParams) -> Result<(), BdevError> {
    if p.clear_sb == Some(true) {
        persist::clear(&*bdev::find(&p.name)?);
    }
    bdev::delete_array(&p.name)
}

/// `bdev_raid_get_bdevs`: the arrays in `category`, in SPDK's shape.
pub fn get_bdevs(p: BdevRaidGetBdevsParams) -> Result<Value, BdevError> {
    let want = match p.category.as_str() {
        "all" => None,
        c @ ("online" | "configuring" | "offline") => Some(c),
        other => {
            return Err(BdevError::Invalid(format!(
                "category '{other}' is not one of all, online, configuring, offline"
            )))
        }
    };
    let arrays = bdev::list()
        .iter()
        .filter(|r| want.is_none_or(|c| r.raid_state().name() == c))
        .map(|r| {
            let mut v = r.info();
            if let Some(s) = crate::scrub::info(r.id()) {
                v["scrub"] = s;
            }
            if let Some(p) = r.persist() {
                v["superblock_events"] = p.events().into();
                v["stale_base_bdevs"] = p
                    .stale_members()
                    .into_iter()
                    .map(|(name, reason)| serde_json::json!({"name": name, "reason": reason}))
                    .collect();
            }
            v
        })
        .collect();
    Ok(Value::Array(arrays))
}

/// `bdev_raid_remove_base_bdev`: takes a member out of its array. A mirror, raid5 (one
/// member) or raid6 (two) carries on degraded; refused where it would lose data (raid0, concat, the last copy of a mirror).
/// A hot spare just leaves (and, on a superblock array, the superblocks stop listing it).
pub fn remove_base_bdev(p: BdevRaidRemoveBaseBdevParams) -> Result<(), BdevError> {
    if let Some(raid) = bdev::find_spare(&p.name) {
        return persist::remove_spare(&raid, &p.name);
    }
    let (raid, slot) = bdev::find_member(&p.name)?;
    raid.remove_member(slot)?;
    let _ = persist::sync(&raid);
    Ok(())
}

/// `bdev_raid_add_base_bdev`: fills a free slot. On a configuring array that may complete
/// it; on a degraded raid1/raid10/raid5/raid6 the new member is rebuilt in the background (a
/// copy for mirrors, recomputed from parity for raid5/raid6), with progress under `process`
/// in `bdev_raid_get_bdevs`. A raid1 whose members are all in service grows by one copy
/// (a new slot, rebuilt the same way). Otherwise, with no missing slot (or while a rebuild
/// runs, or with `"spare": true`), the member becomes a hot spare, which takes the slot of
/// the next member to fail.
pub fn add_base_bdev(p: BdevRaidAddBaseBdevParams) -> Result<(), BdevError> {
    let raid = bdev::find(&p.raid_bdev)?;
    if let Ok((other, _)) = bdev::find_member(&p.base_bdev) {
        if other.name() != raid.name() {
            return Err(BdevError::Claimed(
                p.base_bdev,
                format!("raid {}", other.name()),
            ));
        }
    }
    persist::note_returning(&raid, &p.base_bdev);
    raid.add_member(&p.base_bdev, p.spare == Some(true))?;
    let _ = persist::sync(&raid);
    Ok(())
}

/// Claims members of configuring arrays that exist by now (SPDK's examine). Runs by itself
/// every 100 ms on the first reactor; callers may run it right after creating bdevs.
pub fn examine() {
    bdev::examine();
}

/// Assembles arrays from the superblocks of bdevs created since the last call (see
/// [`persist::examine_all`]). Call on the control thread after every bdev-creating RPC and
/// after loading a configuration.
pub fn examine_all() {
    persist::examine_all();
}

/// `bdev_raid_set_options`: `process_window_size_kb`, `process_max_bandwidth_mb_sec`
/// (0 = unlimited), our `process_queue_depth` (windows in flight) and md's
/// `start_dirty_degraded` (assembles arrays waiting for it at once). Global; applies to running and future rebuilds.
pub fn set_options(p: crate::rebuild::BdevRaidSetOptionsParams) -> Result<(), BdevError> {
    let force = p.start_dirty_degraded == Some(true);
    crate::rebuild::set_options(p)?;
    if force && !oxstor_reactor::is_reactor_thread() {
        // Arrays that waited for it may start now.
        persist::examine_all();
    }
    Ok(())
}
