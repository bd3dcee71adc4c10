//! Admin queue commands and the Fabrics commands (Connect, Property Get/Set).
//!
//! Admin commands are rare and small, so they run synchronously on the admin queue's core
//! and answer from the controller's shared state.

use super::conn::{Conn, Queue, TxSeg};
use super::controller::{self, Controller, AER_LIMIT};
use super::{discovery, rpc};
use crate::spec::command::Command;
use crate::spec::completion::{Status, ABORT_NOT_ABORTED};
use crate::spec::fabrics::{fabrics_type, Connect, ConnectData, PropertyGet, PropertySet};
use crate::spec::identify::{
    self, cns, controller_type, encode_active_namespace_list, encode_namespace_id_descriptors,
    IdentifyController, IdentifyNamespace, NamespaceIdDescriptor, IDENTIFY_DATA_LEN,
};
use crate::spec::log::{self as logpage, CommandEffectsLog, SmartLog};
use crate::spec::opcodes::{admin as op, feature, io as io_op, log_page};
use crate::spec::registers::{
    Cap, Cc, Property, ShutdownNotification, ShutdownStatus, VERSION_1_3,
};
use std::sync::Arc;

/// Connect response DW0 for an invalid parameter in the connect data (IATTR = 1).
fn bad_data_field(offset: u16) -> u64 {
    (1 << 16) | offset as u64
}

/// Connect response DW0 for an invalid parameter in the command itself (IATTR = 0).
fn bad_command_field(offset: u16) -> u64 {
    offset as u64
}

pub fn fabrics(conn: &Conn, slot: u16) {
    let Some(fctype) = conn.with_request(slot, |r| r.command().fabrics_type()) else {
        return;
    };
    let connected = conn.queue().is_some();
    match fctype {
        Some(fabrics_type::CONNECT) => connect(conn, slot),
        _ if !connected => conn.respond(slot, Status::COMMAND_SEQUENCE_ERROR, 0),
        Some(fabrics_type::PROPERTY_GET) => property_get(conn, slot),
        Some(fabrics_type::PROPERTY_SET) => property_set(conn, slot),
        _ => conn.respond(slot, Status::INVALID_OPCODE, 0),
    }
}

fn connect(conn: &Conn, slot: u16) {
    let parsed = conn.with_request(slot, |r| {
        let cmd = r.command();
        let connect = Connect::from_command(&cmd)?;
        let data = r.buf.as_ref()?;
        let cd = ConnectData::parse(data.as_slice()).ok()?;
        Some((
            connect,
            cd.subsystem_nqn().map(str::to_string),
            cd.host_nqn().map(str::to_string),
            cd.cntlid(),
            cd.host_id(),
        ))
    });
    let Some(Some((cmd, subnqn, hostnqn, cntlid, hostid))) = parsed else {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_command_field(24),
        );
    };
    if conn.queue().is_some() {
        return conn.respond(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
    }
    if cmd.record_format != 0 {
        return conn.respond(slot, Status::CONNECT_INCOMPATIBLE_FORMAT, 0);
    }
    let (Ok(subnqn), Ok(hostnqn)) = (subnqn, hostnqn) else {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_data_field(256),
        );
    };
    let Some(sub) = rpc::find_subsystem(&subnqn) else {
        tracing::warn!("connect from {} to unknown subsystem {subnqn}", conn.peer());
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_data_field(256),
        );
    };
    if !sub.host_allowed(&hostnqn) {
        tracing::warn!("host {hostnqn} is not allowed to connect to {subnqn}");
        return conn.respond(slot, Status::CONNECT_INVALID_HOST, bad_data_field(512));
    }
    let opts = rpc::transport_options();
    let depth = cmd.sq_size as u32 + 1;
    if cmd.queue_id == 0 {
        if cmd.sq_size == 0 || depth > opts.max_aq_depth {
            return conn.respond(
                slot,
                Status::CONNECT_INVALID_PARAMETERS,
                bad_command_field(44),
            );
        }
        let Some(id) = sub.allocate_cntlid(|id| controller::cntlid_in_use(&sub.nqn, id)) else {
            return conn.respond(slot, Status::CONNECT_CONTROLLER_BUSY, 0);
        };
        let max_io = if sub.is_discovery() {
            0
        } else {
            opts.max_io_qpairs_per_ctrlr as u16
        };
        let ctrl = Arc::new(Controller::new(
            id,
            sub.clone(),
            hostnqn.clone(),
            hostid,
            conn.core,
            conn.id,
            max_io,
            opts.max_queue_depth as u16,
            cmd.keep_alive_timeout_ms,
        ));
        controller::register(ctrl.clone());
        conn.bind_queue(Queue {
            ctrl,
            subsystem: sub.clone(),
            qid: 0,
            sqsize: cmd.sq_size,
        });
        super::conn::stat(|s| {
            s.admin_qpairs += 1;
            s.current_admin_qpairs += 1;
        });
        tracing::info!(
            "controller {id} of {subnqn} created for host {hostnqn} ({})",
            conn.peer()
        );
        return conn.respond(slot, Status::SUCCESS, id as u64);
    }
    if sub.is_discovery() {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_command_field(42),
        );
    }
    let Some(ctrl) = controller::find(&subnqn, cntlid) else {
        return conn.respond(slot, Status::CONNECT_INVALID_PARAMETERS, bad_data_field(16));
    };
    if ctrl.hostnqn != hostnqn {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_data_field(512),
        );
    }
    if !ctrl.is_ready() {
        return conn.respond(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
    }
    if cmd.queue_id > ctrl.features().num_io_queues {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_command_field(42),
        );
    }
    if cmd.sq_size == 0 || depth > opts.max_queue_depth {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_command_field(44),
        );
    }
    if !ctrl.add_io_queue(controller::IoQueueRef {
        qid: cmd.queue_id,
        core: conn.core,
        conn: conn.id,
    }) {
        return conn.respond(
            slot,
            Status::CONNECT_INVALID_PARAMETERS,
            bad_command_field(42),
        );
    }
    let id = ctrl.cntlid;
    conn.bind_queue(Queue {
        ctrl,
        subsystem: sub,
        qid: cmd.queue_id,
        sqsize: cmd.sq_size,
    });
    super::conn::stat(|s| {
        s.io_qpairs += 1;
        s.current_io_qpairs += 1;
    });
    conn.respond(slot, Status::SUCCESS, id as u64);
}

fn cap(ctrl: &Controller) -> u64 {
    Cap {
        max_queue_entries: ctrl.queue_depth.saturating_sub(1),
        contiguous_queues_required: true,
        arbitration_mechanisms: 0,
        timeout_500ms: 30,
        doorbell_stride: 0,
        subsystem_reset: false,
        command_sets: crate::spec::registers::CAP_CSS_NVM,
        mps_min: 0,
        mps_max: 0,
    }
    .to_bits()
}

fn property_get(conn: &Conn, slot: u16) {
    let Some((ctrl, _, qid)) = conn.queue() else {
        return;
    };
    let Some(Some(get)) = conn.with_request(slot, |r| PropertyGet::from_command(&r.command()))
    else {
        return conn.respond(slot, Status::INVALID_FIELD, 0);
    };
    if qid != 0 {
        return conn.respond(slot, Status::INVALID_FIELD, 0);
    }
    let value = match Property::resolve(get.offset, get.size()) {
        Ok(Property::Cap) => cap(&ctrl),
        Ok(Property::Vs) => VERSION_1_3 as u64,
        Ok(Property::Cc) => ctrl.regs().cc.to_bits() as u64,
        Ok(Property::Csts) => ctrl.regs().csts.to_bits() as u64,
        Ok(Property::Nssr) => 0,
        Err(_) => return conn.respond(slot, Status::INVALID_FIELD, 0),
    };
    conn.respond(slot, Status::SUCCESS, value);
}

fn property_set(conn: &Conn, slot: u16) {
    let Some((ctrl, _, qid)) = conn.queue() else {
        return;
    };
    let Some(Some(set)) = conn.with_request(slot, |r| PropertySet::from_command(&r.command()))
    else {
        return conn.respond(slot, Status::INVALID_FIELD, 0);
    };
    if qid != 0 {
        return conn.respond(slot, Status::INVALID_FIELD, 0);
    }
    match Property::resolve_writable(set.offset, set.size()) {
        Ok(Property::Cc) => {
            let new = Cc::from_bits(set.value as u32);
            let mut regs = ctrl.regs();
            let old = regs.cc;
            if new.enable && !old.enable {
                regs.csts.ready = true;
                regs.csts.shutdown = ShutdownStatus::Normal;
            } else if !new.enable && old.enable {
                // A controller reset: the host will connect its I/O queues again.
                regs.csts.ready = false;
            }
            if new.shutdown != ShutdownNotification::None {
                regs.csts.shutdown = ShutdownStatus::Complete;
            }
            regs.cc = new;
            drop(regs);
            conn.respond(slot, Status::SUCCESS, 0)
        }
        Ok(_) => conn.respond(slot, Status::SUCCESS, 0),
        Err(_) => conn.respond(slot, Status::INVALID_FIELD, 0),
    }
}

/// Runs one admin command from the admin queue of `conn`.
pub fn execute(conn: &Conn, slot: u16) {
    let Some((ctrl, _, _)) = conn.queue() else {
        return;
    };
    let Some(opcode) = conn.with_request(slot, |r| r.sqe[0]) else {
        return;
    };
    let discovery = ctrl.subsystem.is_discovery();
    match opcode {
        op::IDENTIFY => identify(conn, slot, &ctrl),
        op::GET_LOG_PAGE => get_log_page(conn, slot, &ctrl),
        op::GET_FEATURES => get_features(conn, slot, &ctrl),
        op::SET_FEATURES => set_features(conn, slot, &ctrl),
        op::KEEP_ALIVE => {
            ctrl.keep_alive();
            conn.respond(slot, Status::SUCCESS, 0)
        }
        op::ASYNC_EVENT_REQUEST => async_event_request(conn, slot, &ctrl),
        op::ABORT if !discovery => conn.respond(slot, Status::SUCCESS, ABORT_NOT_ABORTED as u64),
        _ => conn.respond(slot, Status::INVALID_OPCODE, 0),
    }
}

/// Sends up to the host's transfer length of `data`, zero-padded to it.
fn send_data(conn: &Conn, slot: u16, mut data: Vec<u8>) {
    let Some(len) = conn.with_request(slot, |r| r.command().sgl().length as usize) else {
        return;
    };
    data.resize(len, 0);
    conn.respond_data(slot, TxSeg::Heap(data), Status::SUCCESS, 0);
}

fn identify(conn: &Conn, slot: u16, ctrl: &Arc<Controller>) {
    let Some((cns_value, nsid)) =
        conn.with_request(slot, |r| (r.command().identify_cns(), r.command().nsid()))
    else {
        return;
    };
    let sub = &ctrl.subsystem;
    let mut buf = Box::new([0u8; IDENTIFY_DATA_LEN]);
    match cns_value {
        cns::CONTROLLER => identify_controller(ctrl).encode_into(&mut buf),
        cns::NAMESPACE if !sub.is_discovery() => {
            // An inactive NSID returns zeroes, as the spec asks.
            if let Some(ns) = sub.namespace(nsid) {
                let g = ns.entry.bdev.geometry();
                IdentifyNamespace {
                    size_blocks: g.num_blocks,
                    capacity_blocks: g.num_blocks,
                    utilization_blocks: g.num_blocks,
                    features: identify::nsfeat::THIN_PROVISIONING,
                    nmic: 1,
                    optimal_io_boundary: g.optimal_io_boundary.min(u16::MAX as u32) as u16,
                    write_protected: ns.read_only || !ns.entry.bdev.writable(),
                    nguid: ns.nguid,
                    eui64: ns.eui64,
                    block_size_shift: g.block_size.trailing_zeros() as u8,
                    ..Default::default()
                }
                .encode_into(&mut buf);
            } else if nsid == 0 || nsid == u32::MAX {
                return conn.respond(slot, Status::INVALID_NAMESPACE_OR_FORMAT, 0);
            }
        }
        cns::ACTIVE_NAMESPACE_LIST if !sub.is_discovery() => {
            let active: Vec<u32> = sub.state().namespaces.keys().copied().collect();
            encode_active_namespace_list(&active, nsid, &mut buf);
        }
        cns::NAMESPACE_ID_DESCRIPTORS if !sub.is_discovery() => {
            let Some(ns) = sub.namespace(nsid) else {
                return conn.respond(slot, Status::INVALID_NAMESPACE_OR_FORMAT, 0);
            };
            encode_namespace_id_descriptors(
                &[
                    NamespaceIdDescriptor::Eui64(ns.eui64),
                    NamespaceIdDescriptor::Nguid(ns.nguid),
                    NamespaceIdDescriptor::Uuid(ns.uuid),
                    NamespaceIdDescriptor::CommandSet(0),
                ],
                &mut buf,
            );
        }
        _ => return conn.respond(slot, Status::INVALID_FIELD, 0),
    }
    send_data(conn, slot, buf.to_vec());
}

fn identify_controller(ctrl: &Controller) -> IdentifyController {
    let sub = &ctrl.subsystem;
    let opts = rpc::transport_options();
    let discovery = sub.is_discovery();
    // MDTS is a power of two in units of the 4 KiB minimum page size.
    let mdts = (opts.max_io_size / 4096).max(1).trailing_zeros() as u8;
    let icd = opts.in_capsule_data_size;
    IdentifyController {
        vendor_id: 0,
        subsystem_vendor_id: 0,
        serial_number: sub.serial_number.clone(),
        model_number: if discovery {
            "oxstor discovery".into()
        } else {
            sub.model_number.clone()
        },
        firmware_revision: env!("CARGO_PKG_VERSION").chars().take(8).collect(),
        cmic: if discovery { 0 } else { 0x02 },
        mdts,
        controller_id: ctrl.cntlid,
        version: VERSION_1_3,
        oaes: if discovery {
            0
        } else {
            identify::oaes::NAMESPACE_ATTRIBUTE
        },
        ctratt: 0,
        controller_type: if discovery {
            controller_type::DISCOVERY
        } else {
            controller_type::IO
        },
        async_event_request_limit: (AER_LIMIT - 1) as u8,
        lpa: identify::lpa::COMMANDS_EFFECTS | identify::lpa::EXTENDED_DATA,
        error_log_entries: 127,
        keep_alive_granularity_100ms: 10,
        sqes: 0x66,
        cqes: 0x44,
        max_commands: ctrl.queue_depth,
        namespace_count: if discovery {
            0
        } else if sub.max_namespaces > 0 {
            sub.max_namespaces
        } else {
            1024
        },
        oncs: if discovery {
            0
        } else {
            identify::oncs::COMPARE
                | identify::oncs::DATASET_MANAGEMENT
                | identify::oncs::WRITE_ZEROES
        },
        vwc: if discovery { 0 } else { 1 },
        sgls: identify::sgls::SUPPORTED | identify::sgls::OFFSET | (1 << 2),
        subsystem_nqn: sub.nqn.clone(),
        ioccsz: (64 + icd) / 16,
        iorcsz: 1,
        icdoff: 0,
        fcatt: 0,
        msdbd: 1,
        ..Default::default()
    }
}

fn get_log_page(conn: &Conn, slot: u16, ctrl: &Arc<Controller>) {
    let Some(glp) = conn.with_request(slot, |r| r.command().get_log_page()) else {
        return;
    };
    let discovery = ctrl.subsystem.is_discovery();
    let log: Vec<u8> = match glp.log_id {
        log_page::DISCOVERY if discovery => discovery::log_page(&ctrl.hostnqn),
        log_page::ERROR_INFORMATION => vec![0; logpage::ERROR_LOG_ENTRY_LEN * 128],
        log_page::SMART_HEALTH if !discovery => SmartLog {
            temperature_kelvin: 300,
            available_spare: 100,
            available_spare_threshold: 10,
            power_cycles: 1,
            ..Default::default()
        }
        .encode()
        .to_vec(),
        log_page::FIRMWARE_SLOT if !discovery => {
            let mut fw = vec![0u8; 512];
            fw[0] = 1; // active slot 1
            let rev = env!("CARGO_PKG_VERSION").as_bytes();
            fw[8..8 + rev.len().min(8)].copy_from_slice(&rev[..rev.len().min(8)]);
            fw
        }
        log_page::CHANGED_NAMESPACE_LIST if !discovery => {
            let changed = if glp.retain_async_event {
                ctrl.aer().changed_namespaces.clone()
            } else {
                std::mem::take(&mut ctrl.aer().changed_namespaces)
            };
            logpage::encode_changed_namespace_list(&changed).to_vec()
        }
        log_page::COMMANDS_SUPPORTED_AND_EFFECTS if !discovery => {
            let mut effects = CommandEffectsLog::default();
            for o in [
                op::GET_LOG_PAGE,
                op::IDENTIFY,
                op::ABORT,
                op::SET_FEATURES,
                op::GET_FEATURES,
                op::ASYNC_EVENT_REQUEST,
                op::KEEP_ALIVE,
            ] {
                effects.admin[o as usize] = logpage::effects::CSUPP;
            }
            for o in [io_op::FLUSH, io_op::READ, io_op::COMPARE] {
                effects.io[o as usize] = logpage::effects::CSUPP;
            }
            for o in [io_op::WRITE, io_op::WRITE_ZEROES, io_op::DATASET_MANAGEMENT] {
                effects.io[o as usize] = logpage::effects::CSUPP | logpage::effects::LBCC;
            }
            effects.encode().to_vec()
        }
        _ => return conn.respond(slot, Status::INVALID_LOG_PAGE, 0),
    };
    let len = glp.byte_len() as usize;
    let mut out = vec![0u8; len.min(1 << 20)];
    if logpage::copy_log_window(&log, glp.offset, &mut out).is_err() {
        return conn.respond(slot, Status::INVALID_FIELD, 0);
    }
    send_data(conn, slot, out);
}

fn get_features(conn: &Conn, slot: u16, ctrl: &Arc<Controller>) {
    let Some(fid) = conn.with_request(slot, |r| r.command().feature_id()) else {
        return;
    };
    let f = ctrl.features();
    let value: u64 = match fid {
        feature::NUMBER_OF_QUEUES => {
            let n = f.num_io_queues.saturating_sub(1) as u64;
            n | (n << 16)
        }
        feature::ASYNC_EVENT_CONFIG => f.async_event_config as u64,
        feature::KEEP_ALIVE_TIMER => ctrl.kato_ms() as u64,
        feature::VOLATILE_WRITE_CACHE => u64::from(f.volatile_write_cache),
        feature::ARBITRATION
        | feature::POWER_MANAGEMENT
        | feature::TEMPERATURE_THRESHOLD
        | feature::ERROR_RECOVERY
        | feature::INTERRUPT_COALESCING
        | feature::INTERRUPT_VECTOR_CONFIG
        | feature::WRITE_ATOMICITY => 0,
        feature::HOST_IDENTIFIER => {
            drop(f);
            let mut id = ctrl.hostid.to_vec();
            id.resize(16, 0);
            return send_data(conn, slot, id);
        }
        _ => {
            drop(f);
            return conn.respond(slot, Status::INVALID_FIELD, 0);
        }
    };
    drop(f);
    conn.respond(slot, Status::SUCCESS, value);
}

fn set_features(conn: &Conn, slot: u16, ctrl: &Arc<Controller>) {
    let Some((fid, save, cdw11)) = conn.with_request(slot, |r| {
        let c: Command<'_> = r.command();
        (c.feature_id(), c.feature_save(), c.cdw11())
    }) else {
        return;
    };
    if save {
        return conn.respond(slot, Status::FEATURE_NOT_SAVEABLE, 0);
    }
    let result = match fid {
        feature::NUMBER_OF_QUEUES => {
            if ctrl.io_queue_count() > 0 {
                return conn.respond(slot, Status::COMMAND_SEQUENCE_ERROR, 0);
            }
            let want = (cdw11 & 0xFFFF).max(cdw11 >> 16) as u16;
            if want == 0xFFFF {
                return conn.respond(slot, Status::INVALID_FIELD, 0);
            }
            let granted = (want + 1).min(ctrl.max_io_queues);
            ctrl.features().num_io_queues = granted;
            let n = granted.saturating_sub(1) as u64;
            n | (n << 16)
        }
        feature::ASYNC_EVENT_CONFIG => {
            ctrl.features().async_event_config = cdw11;
            0
        }
        feature::KEEP_ALIVE_TIMER => {
            ctrl.set_kato_ms(cdw11);
            0
        }
        feature::VOLATILE_WRITE_CACHE => {
            ctrl.features().volatile_write_cache = cdw11 & 1 != 0;
            0
        }
        feature::ARBITRATION
        | feature::POWER_MANAGEMENT
        | feature::TEMPERATURE_THRESHOLD
        | feature::ERROR_RECOVERY
        | feature::INTERRUPT_COALESCING
        | feature::INTERRUPT_VECTOR_CONFIG
        | feature::WRITE_ATOMICITY => 0,
        feature::HOST_IDENTIFIER => return conn.respond(slot, Status::COMMAND_SEQUENCE_ERROR, 0),
        _ => return conn.respond(slot, Status::INVALID_FIELD, 0),
    };
    conn.respond(slot, Status::SUCCESS, result);
}

fn async_event_request(conn: &Conn, slot: u16, ctrl: &Arc<Controller>) {
    let Some(cid) = conn.with_request(slot, |r| r.cid) else {
        return;
    };
    let mut aer = ctrl.aer();
    if let Some(event) = aer.pending.pop_front() {
        drop(aer);
        return conn.respond(slot, Status::SUCCESS, event as u64);
    }
    if aer.outstanding.len() >= AER_LIMIT {
        drop(aer);
        return conn.respond(slot, Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED, 0);
    }
    aer.outstanding.push(cid);
    drop(aer);
    conn.park(slot);
}
