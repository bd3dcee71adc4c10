//! NVM I/O commands on I/O queues, mapped onto bdev I/O.

use super::conn::{Conn, TxSeg};
use crate::spec::command::{Command, SglKind};
use crate::spec::completion::Status;
use crate::spec::opcodes::{admin as admin_op, io as op};
use oxstor_bdev::{BdevIo, IoBuf, IoStatus, IoType};
use oxstor_reactor::DmaBuf;

/// Whether a command on queue `qid` (None before Connect) carries data from the host, so it
/// needs an R2T when the data is not in the capsule. Opcodes mean different things on admin
/// and I/O queues, hence the queue.
pub fn wants_host_data(cmd: &Command<'_>, qid: Option<u16>) -> bool {
    match qid {
        None => cmd.opcode() == admin_op::FABRICS,
        Some(0) => matches!(cmd.opcode(), admin_op::FABRICS | admin_op::SET_FEATURES),
        Some(_) => matches!(
            cmd.opcode(),
            op::WRITE | op::COMPARE | op::DATASET_MANAGEMENT
        ),
    }
}

fn to_status(status: IoStatus, io_type: IoType) -> Status {
    match status {
        IoStatus::Success | IoStatus::Pending => Status::SUCCESS,
        IoStatus::Miscompare => Status::COMPARE_FAILURE,
        IoStatus::Failed(e) => match e {
            libc::EINVAL => Status::INVALID_FIELD,
            libc::EOPNOTSUPP => Status::INVALID_OPCODE,
            libc::ENOSPC => Status::CAPACITY_EXCEEDED,
            libc::EROFS | libc::EPERM | libc::EACCES => Status::NAMESPACE_WRITE_PROTECTED,
            libc::ENOMEM | libc::EAGAIN => Status::NAMESPACE_NOT_READY,
            _ if io_type == IoType::Read => Status::UNRECOVERED_READ_ERROR,
            _ if io_type == IoType::Write => Status::WRITE_FAULT,
            _ => Status::INTERNAL_ERROR,
        },
    }
}

fn submit(
    conn: &Conn,
    slot: u16,
    ns: &super::conn::CachedNs,
    t: IoType,
    off: u64,
    n: u64,
    buf: IoBuf,
) {
    let mut io = match conn.take_io() {
        Some(mut io) => {
            io.reset(t, off, n);
            io
        }
        None => BdevIo::new(t, off, n, IoBuf::None),
    };
    io.buf = buf;
    conn.io_started();
    ns.channel.submit(io, conn.rc(), slot as u64);
}

/// Starts one I/O command; its response comes from [`completed`].
pub fn execute(conn: &Conn, slot: u16) {
    let Some((opcode, nsid, slba, blocks, sgl_len, sgl_kind, cdw10, cdw11)) =
        conn.with_request(slot, |r| {
            let c = r.command();
            let sgl = c.sgl();
            (
                c.opcode(),
                c.nsid(),
                c.starting_lba(),
                c.block_count() as u64,
                sgl.length,
                sgl.kind(),
                c.cdw10(),
                c.cdw11(),
            )
        })
    else {
        return;
    };
    let Some(ns) = conn.namespace(nsid) else {
        return conn.respond(slot, Status::INVALID_NAMESPACE_OR_FORMAT, 0);
    };
    let in_range = |off: u64, n: u64| off.checked_add(n).is_some_and(|end| end <= ns.num_blocks);
    match opcode {
        op::READ | op::WRITE | op::COMPARE => {
            if !in_range(slba, blocks) {
                return conn.respond(slot, Status::LBA_OUT_OF_RANGE, 0);
            }
            let len = blocks * ns.block_size as u64;
            if len > conn.opts.max_io_size as u64 {
                return conn.respond(slot, Status::INVALID_FIELD, 0);
            }
            if sgl_len as u64 != len {
                return conn.respond(slot, Status::DATA_SGL_LENGTH_INVALID, 0);
            }
            if opcode == op::WRITE && ns.read_only() {
                return conn.respond(slot, Status::NAMESPACE_WRITE_PROTECTED, 0);
            }
            if opcode == op::READ {
                if !matches!(sgl_kind, SglKind::TransportDataBlock { .. }) {
                    return conn.respond(slot, Status::SGL_DESCRIPTOR_TYPE_INVALID, 0);
                }
                match DmaBuf::alloc(len as usize) {
                    Some(buf) => {
                        submit(conn, slot, &ns, IoType::Read, slba, blocks, IoBuf::Dma(buf))
                    }
                    None => {
                        let weak = conn.rc();
                        DmaBuf::alloc_or_wait(
                            len as usize,
                            Box::new(move |buf| {
                                if weak.is_closing() {
                                    return;
                                }
                                if let Some(ns) = weak.namespace(nsid) {
                                    submit(
                                        &weak,
                                        slot,
                                        &ns,
                                        IoType::Read,
                                        slba,
                                        blocks,
                                        IoBuf::Dma(buf),
                                    );
                                }
                            }),
                        );
                    }
                }
                return;
            }
            let Some(Some(buf)) = conn.with_request(slot, |r| r.buf.take()) else {
                return conn.respond(slot, Status::DATA_TRANSFER_ERROR, 0);
            };
            let t = if opcode == op::WRITE {
                IoType::Write
            } else {
                IoType::Compare
            };
            submit(conn, slot, &ns, t, slba, blocks, IoBuf::Dma(buf));
        }
        op::FLUSH => {
            if ns.channel.entry().bdev.io_type_supported(IoType::Flush) {
                submit(conn, slot, &ns, IoType::Flush, 0, 0, IoBuf::None);
            } else {
                conn.respond(slot, Status::SUCCESS, 0);
            }
        }
        op::WRITE_ZEROES => {
            if !in_range(slba, blocks) {
                return conn.respond(slot, Status::LBA_OUT_OF_RANGE, 0);
            }
            if ns.read_only() {
                return conn.respond(slot, Status::NAMESPACE_WRITE_PROTECTED, 0);
            }
            submit(
                conn,
                slot,
                &ns,
                IoType::WriteZeroes,
                slba,
                blocks,
                IoBuf::None,
            );
        }
        op::DATASET_MANAGEMENT => dataset_management(conn, slot, &ns, cdw10, cdw11),
        _ => conn.respond(slot, Status::INVALID_OPCODE, 0),
    }
}

/// Deallocate ranges become unmaps, one bdev I/O per range; the command completes when all
/// have. Other attributes are hints we may ignore.
fn dataset_management(conn: &Conn, slot: u16, ns: &super::conn::CachedNs, cdw10: u32, cdw11: u32) {
    let count = (cdw10 & 0xFF) as usize + 1;
    let deallocate = cdw11 & (1 << 2) != 0;
    let Some(Some(ranges)) = conn.with_request(slot, |r| {
        let data = r.buf.as_ref()?.as_slice();
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let e = data.get(i * 16..i * 16 + 16)?;
            let len = u32::from_le_bytes([e[4], e[5], e[6], e[7]]) as u64;
            let slba = u64::from_le_bytes([e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15]]);
            out.push((slba, len));
        }
        Some(out)
    }) else {
        return conn.respond(slot, Status::DATA_SGL_LENGTH_INVALID, 0);
    };
    if !deallocate {
        return conn.respond(slot, Status::SUCCESS, 0);
    }
    if ns.read_only() {
        return conn.respond(slot, Status::NAMESPACE_WRITE_PROTECTED, 0);
    }
    let ranges: Vec<(u64, u64)> = ranges.into_iter().filter(|&(_, n)| n > 0).collect();
    if ranges
        .iter()
        .any(|&(s, n)| s.checked_add(n).is_none_or(|e| e > ns.num_blocks))
    {
        return conn.respond(slot, Status::LBA_OUT_OF_RANGE, 0);
    }
    if ranges.is_empty() || !ns.channel.entry().bdev.io_type_supported(IoType::Unmap) {
        return conn.respond(slot, Status::SUCCESS, 0);
    }
    conn.with_request(slot, |r| r.pending = ranges.len() as u32);
    for (s, n) in ranges {
        submit(conn, slot, ns, IoType::Unmap, s, n, IoBuf::None);
    }
}

/// A bdev I/O of command `slot` finished.
pub fn completed(conn: &Conn, io: Box<BdevIo>, slot: u16) {
    if conn.is_closing() {
        return conn.io_finished(io);
    }
    let status = to_status(io.status, io.io_type);
    match io.io_type {
        IoType::Read if status.is_success() => {
            conn.respond_data(slot, TxSeg::Io(io), Status::SUCCESS, 0);
            conn.io_finished_keep_buffer();
        }
        IoType::Unmap => {
            let done = conn.with_request(slot, |r| {
                r.pending = r.pending.saturating_sub(1);
                if !status.is_success() && r.status.is_success() {
                    r.status = status;
                }
                (r.pending == 0).then_some(r.status)
            });
            conn.io_finished(io);
            if let Some(Some(s)) = done {
                conn.respond(slot, s, 0);
            }
        }
        _ => {
            conn.io_finished(io);
            conn.respond(slot, status, 0);
        }
    }
}
