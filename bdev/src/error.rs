//! The error bdev: passes I/O to a base bdev and fails (or corrupts) a chosen number of them
//! by I/O type. RAID and replication tests use it to fail members on cue.

use crate::io::{BdevIo, IoDone, IoStatus, IoType};
use crate::null::resolve_uuid;
use crate::traits::{Bdev, BdevChannel, ConfigCall, Geometry};
use crate::{complete_later, registry, BdevError, ClaimGuard, IoChannel};
use serde::{Deserialize, Serialize};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// `bdev_error_create` parameters (SPDK's names). The new bdev is named `EE_<base_name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorParams {
    pub base_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// `bdev_error_inject_error` parameters (SPDK's names).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InjectParams {
    pub name: String,
    pub io_type: String,
    pub error_type: String,
    #[serde(default)]
    pub num: Option<u32>,
    #[serde(default)]
    pub queue_depth: Option<u32>,
    #[serde(default)]
    pub corrupt_offset: Option<u64>,
    #[serde(default)]
    pub corrupt_value: Option<u8>,
}

const KIND_NONE: u8 = 0;
const KIND_FAILURE: u8 = 1;
const KIND_NOMEM: u8 = 2;
const KIND_CORRUPT: u8 = 3;

#[derive(Default)]
struct Rule {
    kind: AtomicU8,
    remaining: AtomicU32,
    corrupt_offset: AtomicU64,
    corrupt_value: AtomicU8,
}

impl Rule {
    /// Consumes one injection if any remain; returns its kind.
    fn take(&self) -> u8 {
        let kind = self.kind.load(Ordering::Relaxed);
        if kind == KIND_NONE {
            return KIND_NONE;
        }
        match self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            Ok(_) => kind,
            Err(_) => KIND_NONE,
        }
    }
}

pub struct ErrorBdev {
    name: String,
    params: ErrorParams,
    uuid: String,
    geometry: Geometry,
    supported: [bool; 7],
    rules: Arc<[Rule; 7]>,
    base: Mutex<Option<ClaimGuard>>,
}

pub fn create(mut params: ErrorParams) -> Result<String, BdevError> {
    let name = format!("EE_{}", params.base_name);
    if registry::lookup(&name).is_ok() {
        return Err(BdevError::Exists(name));
    }
    let guard = registry::claim(&params.base_name, "error")?;
    let base = guard.entry().bdev.clone();
    let uuid = resolve_uuid(&params.uuid)?;
    params.uuid = Some(uuid.clone());
    let rules: Arc<[Rule; 7]> = Arc::new(Default::default());
    registry::register(Arc::new(ErrorBdev {
        name: name.clone(),
        params,
        uuid,
        geometry: base.geometry(),
        supported: IoType::ALL.map(|t| base.io_type_supported(t)),
        rules: rules.clone(),
        base: Mutex::new(Some(guard)),
    }))?;
    ERROR_RULES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((name.clone(), rules));
    Ok(name)
}

pub fn delete(name: &str) -> Result<(), BdevError> {
    registry::unregister(name, Some("error"))
}

pub fn inject(p: &InjectParams) -> Result<(), BdevError> {
    let entry = registry::lookup(&p.name)?;
    if entry.bdev.module() != "error" {
        return Err(BdevError::Invalid(format!(
            "{} is not an error bdev",
            p.name
        )));
    }
    let kind = match p.error_type.as_str() {
        "failure" => KIND_FAILURE,
        "nomem" => KIND_NOMEM,
        "corrupt_data" => KIND_CORRUPT,
        "clear" => KIND_NONE,
        other => {
            return Err(BdevError::Invalid(format!(
                "unsupported error_type '{other}' (failure, nomem, corrupt_data, clear)"
            )))
        }
    };
    let types: Vec<IoType> = match p.io_type.as_str() {
        "all" => IoType::ALL.to_vec(),
        "clear" => {
            // SPDK accepts io_type "clear" to remove every injection.
            return set_rules(&p.name, &IoType::ALL, KIND_NONE, 0, 0, 0);
        }
        name => match IoType::ALL.iter().find(|t| t.name() == name) {
            Some(t) => vec![*t],
            None => return Err(BdevError::Invalid(format!("unknown io_type '{name}'"))),
        },
    };
    if kind == KIND_CORRUPT && p.corrupt_value == Some(0) {
        return Err(BdevError::Invalid("corrupt_value must be non-zero".into()));
    }
    set_rules(
        &p.name,
        &types,
        kind,
        p.num.unwrap_or(1),
        p.corrupt_offset.unwrap_or(0),
        p.corrupt_value.unwrap_or(0xff),
    )
}

fn set_rules(
    name: &str,
    types: &[IoType],
    kind: u8,
    num: u32,
    off: u64,
    val: u8,
) -> Result<(), BdevError> {
    let rules = ERROR_RULES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, r)| r.clone())
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    for t in types {
        let r = &rules[*t as usize];
        r.remaining.store(num, Ordering::Relaxed);
        r.corrupt_offset.store(off, Ordering::Relaxed);
        r.corrupt_value.store(val, Ordering::Relaxed);
        r.kind.store(kind, Ordering::Relaxed);
    }
    Ok(())
}

// Injection is a control-path operation that must reach the bdev's shared rule table.
static ERROR_RULES: Mutex<Vec<(String, Arc<[Rule; 7]>)>> = Mutex::new(Vec::new());

impl Bdev for ErrorBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "error"
    }
    fn product_name(&self) -> &'static str {
        "Error Injection Disk"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        self.supported[t as usize]
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        let guard = self.base.lock().unwrap_or_else(|p| p.into_inner());
        let entry = guard
            .as_ref()
            .ok_or_else(|| BdevError::NotFound(self.params.base_name.clone()))?;
        Ok(Box::new(ErrorChannel(Rc::new(ErrorState {
            base: entry.entry().channel()?,
            rules: self.rules.clone(),
        }))))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_error_create",
            params: serde_json::to_value(&self.params).unwrap_or_default(),
        })
    }
    fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({ "base_bdev": self.params.base_name })
    }
    fn destroy(&self) {
        ERROR_RULES
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _)| n != &self.name);
        self.base.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

struct ErrorState {
    base: Rc<IoChannel>,
    rules: Arc<[Rule; 7]>,
}

fn corrupt(io: &mut BdevIo, rule: &Rule) {
    let data = io.buf.as_mut_slice();
    if data.is_empty() {
        return;
    }
    let at = (rule.corrupt_offset.load(Ordering::Relaxed) as usize) % data.len();
    data[at] ^= rule.corrupt_value.load(Ordering::Relaxed);
}

impl IoDone for ErrorState {
    fn io_done(&self, mut io: Box<BdevIo>, tag: u64) {
        if tag == 1 && io.status.is_success() {
            corrupt(&mut io, &self.rules[IoType::Read as usize]);
        }
        let status = io.status;
        io.complete(status);
    }
}

struct ErrorChannel(Rc<ErrorState>);

impl BdevChannel for ErrorChannel {
    fn submit(&self, mut io: Box<BdevIo>) {
        let rule = &self.0.rules[io.io_type as usize];
        let mut tag = 0;
        match rule.take() {
            KIND_FAILURE => return complete_later(io, IoStatus::Failed(libc::EIO)),
            KIND_NOMEM => return complete_later(io, IoStatus::Failed(libc::ENOMEM)),
            KIND_CORRUPT if io.io_type == IoType::Read => tag = 1,
            KIND_CORRUPT => corrupt(&mut io, rule),
            _ => {}
        }
        self.0.base.submit(io, self.0.clone(), tag);
    }
}
