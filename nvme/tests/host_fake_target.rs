//! The host bdev against a scripted fake controller, for the protocol paths our own target
//! never takes: a small MAXH2CDATA (several H2CData PDUs per R2T), read data in several
//! C2HData PDUs sent out of order with a separate CapsuleResp, a C2HTermReq, and a garbage
//! PDU that the host must answer with an H2CTermReq.

use oxstor_bdev::registry;
use oxstor_bdev::{BdevIo, IoBuf, IoDone, IoStatus, IoType};
use oxstor_nvme::host;
use oxstor_nvme::pdu::{
    encode_capsule_resp, CommonHeader, DataPdu, IcResp, Negotiated, Pdu, PduHeader, R2t, Role,
    TermReq, COMMON_HEADER_LEN,
};
use oxstor_nvme::spec::command::SglKind;
use oxstor_nvme::spec::completion::{Completion, Status};
use oxstor_nvme::spec::fabrics::{fabrics_type, PropertyGet, PropertySet};
use oxstor_nvme::spec::identify::{
    encode_active_namespace_list, IdentifyController, IdentifyNamespace, IDENTIFY_DATA_LEN,
};
use oxstor_nvme::spec::opcodes::{admin as admin_op, io as io_op};
use oxstor_nvme::spec::registers::{
    offset as reg, Cap, Cc, Csts, ShutdownNotification, ShutdownStatus,
};
use oxstor_reactor::runtime::Reply;
use oxstor_reactor::{CoreMask, DmaBuf, Runtime, RuntimeConfig};
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NQN: &str = "nqn.2024-01.io.oxstor:fake";
const MAX_H2C: u32 = 4096;
const BLOCKS: u64 = 2048;
/// A read of this LBA makes the fake send a C2HTermReq.
const TERM_LBA: u64 = 999;
/// A write to this LBA makes the fake send an invalid PDU.
const GARBAGE_LBA: u64 = 998;

#[derive(Default)]
struct Fake {
    disk: Mutex<Vec<u8>>,
    h2c_pdus: AtomicUsize,
    c2h_pdus: AtomicUsize,
    host_term: Mutex<Option<(u16, u32)>>,
    cc: Mutex<u32>,
}

fn read_pdu(s: &mut TcpStream, neg: &Negotiated) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut h = vec![0u8; COMMON_HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let layout = CommonHeader::parse(&h).ok()?.layout(neg).ok()?;
    h.resize(layout.header_with_digest_len(), 0);
    s.read_exact(&mut h[COMMON_HEADER_LEN..]).ok()?;
    let mut rest = vec![0u8; layout.bytes_after_header()];
    s.read_exact(&mut rest).ok()?;
    let p = layout.padding_len();
    Some((h, rest[p..p + layout.data_len].to_vec()))
}

fn resp(s: &mut TcpStream, neg: &Negotiated, c: Completion) {
    let mut b = [0u8; 64];
    let n = encode_capsule_resp(&c, neg, &mut b).unwrap();
    s.write_all(&b[..n]).unwrap();
}

fn c2h(s: &mut TcpStream, neg: &Negotiated, cid: u16, off: u32, data: &[u8], flags: (bool, bool)) {
    let mut b = vec![0u8; 128];
    let n = DataPdu {
        cccid: cid,
        ttag: 0,
        data_offset: off,
        data_len: data.len() as u32,
        last: flags.0,
        success: flags.1,
    }
    .encode_c2h(neg, &mut b)
    .unwrap();
    b.truncate(n);
    b.extend_from_slice(data);
    s.write_all(&b).unwrap();
}

/// One connection of the fake controller (admin or I/O queue alike).
fn serve(mut s: TcpStream, fake: Arc<Fake>) {
    let mut neg = Negotiated::initial(Role::Controller);
    // cid -> (byte offset on disk, length, bytes received)
    let mut writes: HashMap<u16, (usize, usize, usize)> = HashMap::new();
    while let Some((h, data)) = read_pdu(&mut s, &neg) {
        let Ok(pdu) = Pdu::parse(&h, &neg) else {
            return;
        };
        match pdu.header {
            PduHeader::IcReq(req) => {
                let r = IcResp {
                    pfv: 0,
                    cpda: 0,
                    header_digest: req.header_digest,
                    data_digest: req.data_digest,
                    max_h2c_data: MAX_H2C,
                };
                let mut b = [0u8; 128];
                let n = r.encode(&mut b).unwrap();
                s.write_all(&b[..n]).unwrap();
                neg = Negotiated::from_exchange(Role::Controller, &req, &r, 8192);
            }
            PduHeader::H2cTermReq(t) => {
                *fake.host_term.lock().unwrap() = Some((t.fes, t.fei));
                return;
            }
            PduHeader::H2cData(d) => {
                fake.h2c_pdus.fetch_add(1, Ordering::Relaxed);
                assert!(d.data_len <= MAX_H2C, "H2CData larger than MAXH2CDATA");
                let Some(w) = writes.get_mut(&d.cccid) else {
                    return;
                };
                assert_eq!(d.data_offset as usize, w.2, "H2CData out of order");
                let at = w.0 + d.data_offset as usize;
                fake.disk.lock().unwrap()[at..at + data.len()].copy_from_slice(&data);
                w.2 += data.len();
                assert_eq!(d.last, w.2 == w.1, "LAST_PDU on the wrong PDU");
                if w.2 == w.1 {
                    writes.remove(&d.cccid);
                    resp(&mut s, &neg, Completion::new(d.cccid, Status::SUCCESS));
                }
            }
            PduHeader::CapsuleCmd(cmd) => {
                let cid = cmd.cid();
                let ok = Completion::new(cid, Status::SUCCESS);
                match (cmd.opcode(), cmd.fabrics_type()) {
                    (_, Some(fabrics_type::CONNECT)) => {
                        resp(&mut s, &neg, Completion { dw0: 1, ..ok })
                    }
                    (_, Some(fabrics_type::PROPERTY_GET)) => {
                        let get = PropertyGet::from_command(&cmd).unwrap();
                        let cc = Cc::from_bits(*fake.cc.lock().unwrap());
                        let value = match get.offset {
                            reg::CAP => Cap {
                                max_queue_entries: 31,
                                contiguous_queues_required: true,
                                timeout_500ms: 2,
                                command_sets: 1,
                                ..Cap::default()
                            }
                            .to_bits(),
                            reg::CSTS => Csts {
                                ready: cc.enable,
                                shutdown: if cc.shutdown == ShutdownNotification::None {
                                    ShutdownStatus::Normal
                                } else {
                                    ShutdownStatus::Complete
                                },
                                ..Csts::default()
                            }
                            .to_bits() as u64,
                            _ => 0,
                        };
                        resp(&mut s, &neg, ok.with_result_u64(value));
                    }
                    (_, Some(fabrics_type::PROPERTY_SET)) => {
                        let set = PropertySet::from_command(&cmd).unwrap();
                        if set.offset == reg::CC {
                            *fake.cc.lock().unwrap() = set.value as u32;
                        }
                        resp(&mut s, &neg, ok);
                    }
                    (admin_op::IDENTIFY, None) if cmd.nsid() != 1 || cmd.identify_cns() != 0 => {
                        let mut buf = Box::new([0u8; IDENTIFY_DATA_LEN]);
                        match cmd.identify_cns() {
                            1 => IdentifyController {
                                mdts: 5,
                                ioccsz: 260,
                                controller_id: 1,
                                serial_number: "FAKE0001".into(),
                                model_number: "fake controller".into(),
                                subsystem_nqn: NQN.into(),
                                ..Default::default()
                            }
                            .encode_into(&mut buf),
                            2 => encode_active_namespace_list(&[1], 0, &mut buf),
                            _ => {}
                        }
                        c2h(&mut s, &neg, cid, 0, &buf[..], (true, true));
                    }
                    (admin_op::IDENTIFY, None) => {
                        let buf = IdentifyNamespace {
                            size_blocks: BLOCKS,
                            capacity_blocks: BLOCKS,
                            block_size_shift: 9,
                            ..Default::default()
                        }
                        .encode();
                        c2h(&mut s, &neg, cid, 0, &buf[..], (true, true));
                    }
                    (admin_op::SET_FEATURES, None) => resp(
                        &mut s,
                        &neg,
                        Completion {
                            dw0: 1 | (1 << 16),
                            ..ok
                        },
                    ),
                    (admin_op::KEEP_ALIVE, None) => resp(&mut s, &neg, ok),
                    (io_op::READ, None) if cmd.starting_lba() == TERM_LBA => {
                        let mut b = [0u8; 128];
                        let t = TermReq { fes: 6, fei: 0 };
                        let n = t.encode(Role::Controller, &h, &mut b).unwrap();
                        s.write_all(&b[..n]).unwrap();
                        return;
                    }
                    (io_op::READ, None) => {
                        let at = cmd.starting_lba() as usize * 512;
                        let len = cmd.block_count() as usize * 512;
                        let data = fake.disk.lock().unwrap()[at..at + len].to_vec();
                        // 1 KiB PDUs, last offset first: DATAO decides where data goes.
                        let chunks: Vec<usize> = (0..len).step_by(1024).collect();
                        for (i, &off) in chunks.iter().rev().enumerate() {
                            let end = (off + 1024).min(len);
                            fake.c2h_pdus.fetch_add(1, Ordering::Relaxed);
                            let last = i + 1 == chunks.len();
                            c2h(
                                &mut s,
                                &neg,
                                cid,
                                off as u32,
                                &data[off..end],
                                (last, false),
                            );
                        }
                        resp(&mut s, &neg, ok);
                    }
                    (io_op::WRITE, None) if cmd.starting_lba() == GARBAGE_LBA => {
                        s.write_all(&[0x7F, 0, 8, 0, 8, 0, 0, 0]).unwrap();
                    }
                    (io_op::WRITE, None) => {
                        let at = cmd.starting_lba() as usize * 512;
                        let len = cmd.block_count() as usize * 512;
                        if let SglKind::InCapsule { .. } = cmd.sgl().kind() {
                            fake.disk.lock().unwrap()[at..at + len].copy_from_slice(&data);
                            resp(&mut s, &neg, ok);
                            continue;
                        }
                        writes.insert(cid, (at, len, 0));
                        let mut b = [0u8; 64];
                        let r = R2t {
                            cccid: cid,
                            ttag: cid ^ 0x5555,
                            offset: 0,
                            len: len as u32,
                        };
                        let n = r.encode(&neg, &mut b).unwrap();
                        s.write_all(&b[..n]).unwrap();
                    }
                    _ => resp(&mut s, &neg, Completion::new(cid, Status::INVALID_OPCODE)),
                }
            }
            _ => return,
        }
    }
}

type IoReply = Reply<(IoStatus, Vec<u8>)>;

struct Answer(RefCell<Option<IoReply>>);

impl IoDone for Answer {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if let Some(r) = self.0.borrow_mut().take() {
            r.send((io.status, io.buf.as_slice().to_vec()));
        }
    }
}

fn io(
    rt: &oxstor_reactor::Handle,
    core: usize,
    bdev: &str,
    t: IoType,
    off: u64,
    data: &[u8],
) -> (IoStatus, Vec<u8>) {
    let entry = registry::lookup(bdev).unwrap();
    let data = data.to_vec();
    let rx = rt.call_on(core, move |reply| {
        let mut b = DmaBuf::zeroed(data.len()).unwrap();
        if t == IoType::Write {
            b.as_mut_slice().copy_from_slice(&data);
        }
        let n = data.len() as u64 / 512;
        entry.channel().unwrap().submit(
            BdevIo::new(t, off, n, IoBuf::Dma(b)),
            Rc::new(Answer(RefCell::new(Some(reply)))),
            0,
        );
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("I/O never completed")
}

#[test]
fn host_against_a_scripted_controller() {
    let rt = Runtime::start(RuntimeConfig {
        cores: CoreMask::from_cores(vec![0, 1]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    registry::set_runtime(Some(rt.handle()));
    let h = rt.handle();
    let fake = Arc::new(Fake {
        disk: Mutex::new(vec![0u8; BLOCKS as usize * 512]),
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let f = fake.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let f = f.clone();
            std::thread::spawn(move || serve(s, f));
        }
    });

    let bdevs = host::attach(
        serde_json::from_value(json!({
            "name": "Fake", "trtype": "tcp", "traddr": "127.0.0.1",
            "trsvcid": port.to_string(), "subnqn": NQN
        }))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(bdevs, vec!["Faken1".to_string()]);
    let info = host::get_controllers(Some("Fake"));
    assert_eq!(info[0]["ctrlrs"][0]["num_io_queues"], 2);

    // 16 KiB write: one R2T answered by four 4 KiB H2CData PDUs.
    let data: Vec<u8> = (0..16384u32).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(
        io(&h, 0, "Faken1", IoType::Write, 8, &data).0,
        IoStatus::Success
    );
    assert_eq!(fake.h2c_pdus.load(Ordering::Relaxed), 4);
    assert!(fake.disk.lock().unwrap()[8 * 512..8 * 512 + 16384] == data[..]);
    // Read back: sixteen 1 KiB C2HData PDUs in reverse order, then a CapsuleResp.
    let (st, back) = io(&h, 1, "Faken1", IoType::Read, 8, &data);
    assert_eq!(st, IoStatus::Success);
    assert!(back == data, "DATAO not honoured");
    assert_eq!(fake.c2h_pdus.load(Ordering::Relaxed), 16);
    // A 4 KiB write goes in the capsule (IOCCSZ 260 = 4 KiB of data).
    assert_eq!(
        io(&h, 1, "Faken1", IoType::Write, 100, &data[..4096]).0,
        IoStatus::Success
    );
    assert_eq!(fake.h2c_pdus.load(Ordering::Relaxed), 4);

    // An invalid PDU: the host answers with an H2CTermReq (invalid PDU type, FEI 0) and
    // fails the I/O; the queue is dead afterwards.
    let (st, _) = io(&h, 1, "Faken1", IoType::Write, GARBAGE_LBA, &data[..4096]);
    assert_eq!(st, IoStatus::Failed(libc::EIO));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.host_term.lock().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "no H2CTermReq");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(*fake.host_term.lock().unwrap(), Some((1, 0)));
    assert_eq!(
        io(&h, 1, "Faken1", IoType::Read, 0, &data[..512]).0,
        IoStatus::Failed(libc::ENXIO)
    );

    // A C2HTermReq from the controller fails the I/O on the other queue.
    let (st, _) = io(&h, 0, "Faken1", IoType::Read, TERM_LBA, &data[..512]);
    assert_eq!(st, IoStatus::Failed(libc::EIO));
    assert_eq!(
        io(&h, 0, "Faken1", IoType::Read, 0, &data[..512]).0,
        IoStatus::Failed(libc::ENXIO)
    );

    host::detach("Fake").unwrap();
    assert!(Cc::from_bits(*fake.cc.lock().unwrap()).shutdown == ShutdownNotification::Normal);
    rt.shutdown();
}
