//! Controllers and their namespace bdevs: attach (bring-up over the admin queue), keep-alive,
//! detach (shutdown notification), and the `nvme` bdev module.

use super::admin::{Wire, WireError};
use super::params::AttachParams;
use super::qpair::{self, Qpair, QpairConfig};
use crate::bytes::{array_at, u16_at, u32_at, u64_at, u8_at};
use crate::spec::command::CommandBuilder;
use crate::spec::identify::{cns, controller_offset as co, namespace_offset as no, oncs};
use crate::spec::nqn::space_padded_field_str;
use crate::spec::opcodes::{admin as op, feature};
use crate::spec::registers::{offset as reg, Cap, Cc, Csts, ShutdownNotification, ShutdownStatus};
use oxstor_bdev::{registry, Bdev, BdevChannel, BdevError, BdevIo, ConfigCall, Geometry, IoType};
use serde_json::{json, Value};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Keep Alive Timeout we ask for unless told otherwise (SPDK's default is 10 s; Linux 5 s).
const DEFAULT_KATO_MS: u32 = 30_000;
/// Admin queue size (SPDK's host default).
const ADMIN_QUEUE_SIZE: u16 = 32;
/// I/O queue size asked for unless told otherwise.
const DEFAULT_IO_QUEUE_SIZE: u32 = 128;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What Identify Controller told us.
#[derive(Debug, Clone)]
pub(crate) struct CtrlData {
    pub cntlid: u16,
    pub vendor_id: u16,
    pub serial_number: String,
    pub model_number: String,
    pub firmware_revision: String,
    pub subnqn: String,
    pub mdts_bytes: Option<u64>,
    pub in_capsule: u32,
    pub oncs: u16,
    pub oacs: u16,
    pub vwc: bool,
    pub version: u32,
}

/// One attached controller.
pub(crate) struct Controller {
    id: u64,
    name: String,
    params: AttachParams,
    addr: std::net::SocketAddr,
    hostnqn: String,
    hostid: [u8; 16],
    subnqn: String,
    data: CtrlData,
    num_io_queues: u16,
    io_sqsize: u16,
    admin: Arc<Mutex<Option<Wire>>>,
    keep_alive: Mutex<Option<(mpsc::Sender<()>, JoinHandle<()>)>>,
    bdevs: Mutex<Vec<String>>,
}

static CONTROLLERS: Mutex<Vec<Arc<Controller>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn wire_err(ctx: &str, e: WireError) -> BdevError {
    let errno = e.errno();
    BdevError::Io(
        format!("{ctx}: {e}"),
        std::io::Error::from_raw_os_error(errno),
    )
}

/// Parses the UUID of a `nqn.2014-08.org.nvmexpress:uuid:` NQN, for the Host Identifier.
fn uuid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn uuid_string(b: &[u8; 16]) -> String {
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

fn text(field: &[u8]) -> String {
    space_padded_field_str(field)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn identify(wire: &mut Wire, cns: u8, nsid: u32) -> Result<Vec<u8>, BdevError> {
    let cmd = CommandBuilder::new(op::IDENTIFY)
        .nsid(nsid)
        .cdw10(cns as u32);
    wire.command("Identify", cmd, &[], 4096)
        .map(|(_, data)| data)
        .map_err(|e| wire_err(&format!("Identify (CNS {cns}, NSID {nsid})"), e))
}

fn parse_ctrl_data(id: &[u8]) -> CtrlData {
    let mdts = u8_at(id, co::MDTS);
    let ioccsz = u32_at(id, co::IOCCSZ);
    CtrlData {
        cntlid: u16_at(id, co::CNTLID),
        vendor_id: u16_at(id, co::VID),
        serial_number: text(id.get(co::SN..co::SN + 20).unwrap_or_default()),
        model_number: text(id.get(co::MN..co::MN + 40).unwrap_or_default()),
        firmware_revision: text(id.get(co::FR..co::FR + 8).unwrap_or_default()),
        subnqn: crate::spec::fixed_field_str(
            id.get(co::SUBNQN..co::SUBNQN + 256).unwrap_or_default(),
        )
        .unwrap_or_default()
        .to_string(),
        // MDTS is a power of two of the minimum page size (4 KiB); 0 means no limit.
        mdts_bytes: (mdts != 0).then(|| 4096u64 << mdts.min(20)),
        // IOCCSZ counts 16-byte units of the whole capsule, the 64-byte SQE included.
        in_capsule: (ioccsz.saturating_mul(16)).saturating_sub(64),
        oncs: u16_at(id, co::ONCS),
        oacs: u16_at(id, co::OACS),
        vwc: u8_at(id, co::VWC) & 1 != 0,
        version: u32_at(id, co::VER),
    }
}

/// A namespace as Identify Namespace describes it.
struct NsInfo {
    nsid: u32,
    num_blocks: u64,
    block_size: u32,
    write_protected: bool,
    nguid: [u8; 16],
}

fn parse_ns(nsid: u32, id: &[u8]) -> Option<NsInfo> {
    let nsze = u64_at(id, no::NSZE);
    if nsze == 0 {
        return None; // inactive
    }
    let flbas = u8_at(id, no::FLBAS);
    let index = (flbas & 0xF) as usize | (((flbas >> 5) & 0x3) as usize) << 4;
    let lbaf = u32_at(id, no::LBAF0 + 4 * index);
    let metadata = lbaf & 0xFFFF;
    let lbads = (lbaf >> 16) & 0xFF;
    if metadata != 0 || !(9..=16).contains(&lbads) {
        tracing::warn!("namespace {nsid}: unsupported LBA format (LBADS {lbads}, MS {metadata})");
        return None;
    }
    Some(NsInfo {
        nsid,
        num_blocks: nsze,
        block_size: 1 << lbads,
        write_protected: u8_at(id, no::NSATTR) & 1 != 0,
        nguid: array_at(id, no::NGUID),
    })
}

/// Brings the controller up over a fresh admin connection; returns it, its controller ID,
/// Identify data and the number of I/O queues granted.
fn bring_up(
    p: &AttachParams,
    addr: std::net::SocketAddr,
    hostnqn: &str,
    hostid: [u8; 16],
    subnqn: &str,
    want_queues: u16,
) -> Result<(Wire, CtrlData, Cap, u16, Vec<NsInfo>), BdevError> {
    let timeout = p
        .fabrics_connect_timeout_us
        .filter(|&us| us > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_micros);
    let kato = p.keep_alive_timeout_ms.unwrap_or(DEFAULT_KATO_MS);
    let ctx = format!("{} ({addr}, {subnqn})", p.name);
    let mut w = Wire::connect(addr, timeout, p.hdgst, p.ddgst)
        .map_err(|e| wire_err(&format!("{ctx}: admin queue connection"), e))?;
    let cntlid = w
        .fabrics_connect(0, ADMIN_QUEUE_SIZE - 1, kato, None, hostid, subnqn, hostnqn)
        .map_err(|e| wire_err(&format!("{ctx}: host {hostnqn} connecting"), e))?;
    let cap = Cap::from_bits(
        w.property_get(reg::CAP, true)
            .map_err(|e| wire_err(&format!("{ctx}: reading CAP"), e))?,
    );
    let cc = Cc {
        enable: true,
        io_sq_entry_size: 6,
        io_cq_entry_size: 4,
        ..Cc::default()
    };
    w.property_set(reg::CC, cc.to_bits())
        .map_err(|e| wire_err(&format!("{ctx}: enabling the controller"), e))?;
    let deadline =
        Instant::now() + Duration::from_millis(500 * u64::from(cap.timeout_500ms.max(2)));
    loop {
        let csts = Csts::from_bits(
            w.property_get(reg::CSTS, false)
                .map_err(|e| wire_err(&format!("{ctx}: reading CSTS"), e))? as u32,
        );
        if csts.fatal {
            return Err(BdevError::Io(
                format!("{ctx}: controller reports a fatal status"),
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        if csts.ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(BdevError::Io(
                format!("{ctx}: controller did not become ready"),
                std::io::Error::from_raw_os_error(libc::ETIMEDOUT),
            ));
        }
        // Polling a register of a remote controller: nothing to wait on but time.
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut data = parse_ctrl_data(&identify(&mut w, cns::CONTROLLER, 0)?);
    data.cntlid = cntlid;
    let n = u32::from(want_queues.max(1) - 1);
    let (c, _) = w
        .command(
            "Set Features (Number of Queues)",
            CommandBuilder::new(op::SET_FEATURES)
                .cdw10(feature::NUMBER_OF_QUEUES as u32)
                .cdw11(n | (n << 16)),
            &[],
            0,
        )
        .map_err(|e| wire_err(&format!("{ctx}: Set Features"), e))?;
    let granted = ((c.dw0 & 0xFFFF).min(c.dw0 >> 16) + 1).min(u32::from(want_queues)) as u16;
    let list = identify(&mut w, cns::ACTIVE_NAMESPACE_LIST, 0)?;
    let mut namespaces = Vec::new();
    for chunk in list.chunks_exact(4) {
        let nsid = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        if nsid == 0 {
            break;
        }
        if let Some(ns) = parse_ns(nsid, &identify(&mut w, cns::NAMESPACE, nsid)?) {
            namespaces.push(ns);
        }
    }
    Ok((w, data, cap, granted, namespaces))
}

/// Attaches the controller `params` describe and registers one bdev per active namespace,
/// named `<name>n<nsid>`. Returns the bdev names. Blocks the calling (control) thread.
pub fn attach(params: AttachParams) -> Result<Vec<String>, BdevError> {
    let addr = params.resolve()?;
    let subnqn = params
        .subnqn
        .clone()
        .ok_or_else(|| BdevError::Invalid("subnqn is required".into()))?;
    if lock(&CONTROLLERS).iter().any(|c| c.name == params.name) {
        return Err(BdevError::Exists(params.name.clone()));
    }
    let reactors = registry::runtime()
        .ok_or(BdevError::NoRuntime)?
        .num_reactors();
    let hostnqn = params.hostnqn.clone().unwrap_or_else(|| {
        format!(
            "nqn.2014-08.org.nvmexpress:uuid:{}",
            oxstor_bdev::new_uuid()
        )
    });
    crate::spec::validate_nqn(&hostnqn)
        .map_err(|e| BdevError::Invalid(format!("hostnqn {hostnqn}: {e}")))?;
    let hostid = hostnqn
        .rsplit_once(":uuid:")
        .and_then(|(_, u)| uuid_bytes(u))
        .or_else(|| uuid_bytes(&oxstor_bdev::new_uuid()))
        .unwrap_or([0; 16]);
    let want = params
        .num_io_queues
        .map_or(reactors, |n| (n as usize).min(reactors))
        .clamp(1, 0xFFFE) as u16;
    let (wire, data, cap, granted, namespaces) =
        bring_up(&params, addr, &hostnqn, hostid, &subnqn, want)?;
    if granted < want {
        tracing::warn!(
            "{}: target granted {granted} I/O queues for {want} reactors; reactors past \
             {granted} cannot do I/O on its bdevs",
            params.name
        );
    }
    let depth = params
        .io_queue_size
        .unwrap_or(DEFAULT_IO_QUEUE_SIZE)
        .clamp(2, u32::from(cap.max_queue_entries) + 1);
    let kato = params.keep_alive_timeout_ms.unwrap_or(DEFAULT_KATO_MS);
    let ctrl = Arc::new(Controller {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: params.name.clone(),
        addr,
        hostnqn,
        hostid,
        subnqn,
        data,
        num_io_queues: granted,
        io_sqsize: (depth - 1) as u16,
        admin: Arc::new(Mutex::new(Some(wire))),
        keep_alive: Mutex::new(None),
        bdevs: Mutex::new(Vec::new()),
        params,
    });
    ctrl.start_keep_alive(kato);
    let mut names: Vec<String> = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let name = format!("{}n{}", ctrl.name, ns.nsid);
        let uuid = if ns.nguid != [0; 16] {
            uuid_string(&ns.nguid)
        } else {
            oxstor_bdev::new_uuid()
        };
        let bs = ns.block_size as u64;
        let mut geometry = Geometry::new(ns.block_size, ns.num_blocks);
        // The controller's MDTS bounds one command; the bdev layer splits larger I/O.
        let max_bytes = ctrl.data.mdts_bytes.unwrap_or(128 * 1024).min(1 << 20);
        geometry.max_transfer_blocks = (max_bytes / bs).clamp(1, 1 << 16) as u32;
        let o = ctrl.data.oncs;
        let supported = IoType::ALL.map(|t| match t {
            IoType::Read | IoType::Flush => true,
            IoType::Write => !ns.write_protected,
            IoType::Compare => o & oncs::COMPARE != 0,
            IoType::WriteZeroes => o & oncs::WRITE_ZEROES != 0 && !ns.write_protected,
            IoType::Unmap => {
                o & oncs::DATASET_MANAGEMENT != 0
                    && ctrl.data.in_capsule >= 16
                    && !ns.write_protected
            }
            IoType::Reset => false,
        });
        let bdev = NvmeBdev {
            name: name.clone(),
            uuid,
            ctrl: ctrl.clone(),
            nsid: ns.nsid,
            geometry,
            supported,
            first: i == 0,
        };
        if let Err(e) = registry::register(Arc::new(bdev)) {
            for n in &names {
                let _ = registry::unregister(n, Some("nvme"));
            }
            ctrl.shutdown();
            return Err(e);
        }
        names.push(name);
    }
    *lock(&ctrl.bdevs) = names.clone();
    {
        let mut all = lock(&CONTROLLERS);
        if all.iter().any(|c| c.name == ctrl.name) {
            drop(all);
            for n in &names {
                let _ = registry::unregister(n, Some("nvme"));
            }
            ctrl.shutdown();
            return Err(BdevError::Exists(ctrl.name.clone()));
        }
        all.push(ctrl.clone());
    }
    tracing::info!(
        "{}: attached controller {} of {} at {} ({} {}), bdevs {:?}",
        ctrl.name,
        ctrl.data.cntlid,
        ctrl.subnqn,
        ctrl.addr,
        ctrl.data.model_number,
        ctrl.data.serial_number,
        names
    );
    Ok(names)
}

/// Removes controller `name`: its bdevs (refused if one is claimed), its I/O queues, then a
/// normal shutdown notification on the admin queue.
pub fn detach(name: &str) -> Result<(), BdevError> {
    let ctrl = lock(&CONTROLLERS)
        .iter()
        .find(|c| c.name == name)
        .cloned()
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    let bdevs = lock(&ctrl.bdevs).clone();
    for b in &bdevs {
        if let Some(holder) = registry::lookup(b).ok().and_then(|e| e.claimed_by()) {
            return Err(BdevError::Claimed(b.clone(), holder));
        }
    }
    lock(&CONTROLLERS).retain(|c| !Arc::ptr_eq(c, &ctrl));
    for b in &bdevs {
        if let Err(e) = registry::unregister(b, Some("nvme")) {
            tracing::warn!("{name}: removing bdev {b}: {e}");
        }
    }
    ctrl.shutdown();
    tracing::info!("{name}: detached");
    Ok(())
}

/// `bdev_nvme_get_controllers`: every controller (or just `name`), SPDK's shape.
pub fn get_controllers(name: Option<&str>) -> Value {
    let all = lock(&CONTROLLERS).clone();
    Value::Array(
        all.iter()
            .filter(|c| name.is_none_or(|n| n == c.name))
            .map(|c| {
                json!({
                    "name": c.name,
                    "ctrlrs": [{
                        "state": if c.is_alive() { "enabled" } else { "failed" },
                        "trid": c.trid_json(),
                        "cntlid": c.data.cntlid,
                        "host": {"nqn": c.hostnqn, "addr": "", "svcid": ""},
                        "num_io_queues": c.num_io_queues,
                        "bdevs": *lock(&c.bdevs),
                    }]
                })
            })
            .collect(),
    )
}

/// The names of the controllers attached now.
pub fn controller_names() -> Vec<String> {
    lock(&CONTROLLERS).iter().map(|c| c.name.clone()).collect()
}

/// Detaches every controller (daemon shutdown).
pub fn detach_all() {
    for name in controller_names() {
        if let Err(e) = detach(&name) {
            tracing::warn!("detaching {name} at shutdown: {e}");
        }
    }
}

impl Controller {
    fn is_alive(&self) -> bool {
        lock(&self.admin).is_some()
    }

    fn trid_json(&self) -> Value {
        json!({
            "trtype": "TCP",
            "adrfam": if self.addr.is_ipv6() { "IPv6" } else { "IPv4" },
            "traddr": self.params.traddr,
            "trsvcid": self.addr.port().to_string(),
            "subnqn": self.subnqn,
        })
    }

    /// Sends Keep Alive every KATO / 2 from a small control thread that shares the admin
    /// connection (admin commands are serialised by its mutex).
    fn start_keep_alive(&self, kato_ms: u32) {
        if kato_ms == 0 {
            return;
        }
        let (tx, rx) = mpsc::channel::<()>();
        let admin = self.admin.clone();
        let name = self.name.clone();
        let period = Duration::from_millis(u64::from(kato_ms / 2).max(100));
        let spawned = std::thread::Builder::new()
            .name(format!("nvme_ka_{name}"))
            .spawn(move || loop {
                match rx.recv_timeout(period) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        let mut guard = lock(&admin);
                        let Some(w) = guard.as_mut() else { return };
                        if let Err(e) = w.keep_alive() {
                            tracing::error!("{name}: keep-alive failed ({e}); admin queue lost");
                            *guard = None;
                            return;
                        }
                    }
                    // Stop requested or the controller is gone.
                    _ => return,
                }
            });
        match spawned {
            Ok(handle) => *lock(&self.keep_alive) = Some((tx, handle)),
            Err(e) => tracing::error!("{}: cannot start keep-alive thread: {e}", self.name),
        }
    }

    /// Stops keep-alive, notifies the controller of a normal shutdown and closes the admin
    /// connection (which ends the association and the target's I/O queues with it).
    fn shutdown(&self) {
        if let Some((tx, handle)) = lock(&self.keep_alive).take() {
            drop(tx);
            let _ = handle.join();
        }
        let Some(mut w) = lock(&self.admin).take() else {
            return;
        };
        let cc = Cc {
            enable: true,
            io_sq_entry_size: 6,
            io_cq_entry_size: 4,
            shutdown: ShutdownNotification::Normal,
            ..Cc::default()
        };
        if let Err(e) = w.property_set(reg::CC, cc.to_bits()) {
            tracing::warn!("{}: shutdown notification failed: {e}", self.name);
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match w.property_get(reg::CSTS, false) {
                Ok(v) if Csts::from_bits(v as u32).shutdown == ShutdownStatus::Complete => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    tracing::warn!("{}: reading CSTS during shutdown: {e}", self.name);
                    break;
                }
            }
        }
    }

    fn qpair_config(&self, core: usize) -> Result<QpairConfig, BdevError> {
        let qid = core + 1;
        if qid > self.num_io_queues as usize {
            return Err(BdevError::Invalid(format!(
                "{}: the target granted {} I/O queues; reactor {core} has none",
                self.name, self.num_io_queues
            )));
        }
        Ok(QpairConfig {
            ctrl_name: self.name.clone(),
            addr: self.addr,
            hdgst: self.params.hdgst,
            ddgst: self.params.ddgst,
            qid: qid as u16,
            sqsize: self.io_sqsize,
            cntlid: self.data.cntlid,
            hostid: self.hostid,
            subnqn: self.subnqn.clone(),
            hostnqn: self.hostnqn.clone(),
            in_capsule: self.data.in_capsule,
        })
    }
}

/// One namespace of an attached controller, as a bdev.
pub struct NvmeBdev {
    name: String,
    uuid: String,
    ctrl: Arc<Controller>,
    nsid: u32,
    geometry: Geometry,
    supported: [bool; 7],
    /// The first namespace carries the controller's attach call for save_config.
    first: bool,
}

impl Bdev for NvmeBdev {
    fn name(&self) -> &str {
        &self.name
    }
    fn uuid(&self) -> &str {
        &self.uuid
    }
    fn module(&self) -> &'static str {
        "nvme"
    }
    fn product_name(&self) -> &'static str {
        "NVMe disk"
    }
    fn geometry(&self) -> Geometry {
        self.geometry
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        self.supported[t as usize]
    }
    fn create_channel(&self) -> Result<Box<dyn BdevChannel>, BdevError> {
        let ctrl = &self.ctrl;
        let qpair = qpair::get_or_connect(ctrl.id, |core| ctrl.qpair_config(core))?;
        Ok(Box::new(NvmeChannel {
            qpair,
            nsid: self.nsid,
        }))
    }
    fn config_call(&self) -> Option<ConfigCall> {
        self.first.then(|| ConfigCall {
            method: "bdev_nvme_attach_controller",
            params: serde_json::to_value(&self.ctrl.params).unwrap_or_default(),
        })
    }
    fn driver_info(&self) -> Value {
        let c = &self.ctrl;
        let d = &c.data;
        json!([{
            "trid": c.trid_json(),
            "ctrlr_data": {
                "cntlid": d.cntlid,
                "vendor_id": format!("{:#06x}", d.vendor_id),
                "model_number": d.model_number,
                "serial_number": d.serial_number,
                "firmware_revision": d.firmware_revision,
                "subnqn": d.subnqn,
                "oacs": {"security": d.oacs & 1, "format": (d.oacs >> 1) & 1,
                         "firmware": (d.oacs >> 2) & 1, "ns_manage": (d.oacs >> 3) & 1},
                "multi_ctrlr": true,
                "ana_reporting": false,
            },
            "vs": {"nvme_version": format!("{}.{}", d.version >> 16, (d.version >> 8) & 0xFF)},
            "ns_data": {"id": self.nsid, "can_share": true},
            "volatile_write_cache": d.vwc,
        }])
    }
}

struct NvmeChannel {
    qpair: Rc<Qpair>,
    nsid: u32,
}

impl BdevChannel for NvmeChannel {
    fn submit(&self, io: Box<BdevIo>) {
        self.qpair.submit(io, self.nsid);
    }
}
