//! The NVMe/TCP host bdev against the in-process NVMe/TCP target, and the target against a
//! raw, misbehaving client.
//!
//! One runtime (2 reactors) and one listening port serve every test; each test makes its own
//! malloc bdev and subsystem, so the tests can run in parallel. After every bad-PDU case a
//! well-behaved host must still do I/O ([`assert_target_healthy`]).

use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{delay, malloc, BdevIo, IoBuf, IoDone, IoStatus, IoType};
use oxstor_nvme::host::{self, AttachParams};
use oxstor_nvme::pdu::{
    encode_capsule_cmd, CommonHeader, DataPdu, IcReq, Negotiated, Pdu, PduHeader, Role,
    COMMON_HEADER_LEN,
};
use oxstor_nvme::spec::command::{CommandBuilder, SglDescriptor};
use oxstor_nvme::spec::completion::{Completion, Status};
use oxstor_nvme::spec::fabrics::{Connect, ConnectDataFields, PropertySet, CNTLID_DYNAMIC};
use oxstor_nvme::spec::opcodes::{admin as admin_op, io as io_op};
use oxstor_nvme::spec::registers::{offset as reg, Cc};
use oxstor_nvme::target::{controller, rpc, TransportOptions};
use oxstor_reactor::runtime::Reply;
use oxstor_reactor::{CoreMask, DmaBuf, Handle, Runtime, RuntimeConfig};
use serde_json::json;
use std::cell::RefCell;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
const BS: u64 = 512;
const NUM_BLOCKS: u64 = 8192; // 4 MiB

/// The runtime and the target's listening port, shared by every test.
fn env() -> (Handle, u16) {
    static ENV: OnceLock<(Mutex<Runtime>, u16)> = OnceLock::new();
    let (rt, port) = ENV.get_or_init(|| {
        let rt = Runtime::start(RuntimeConfig {
            cores: CoreMask::from_cores(vec![0, 1]).unwrap(),
            ..Default::default()
        })
        .unwrap();
        registry::set_runtime(Some(rt.handle()));
        rpc::create_transport(TransportOptions::tcp_defaults()).unwrap();
        // A port the kernel just handed out and nobody holds: free unless we lose a race.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // An empty subsystem keeps the listener up whatever the tests delete.
        rpc::create_subsystem(
            serde_json::from_value(json!({"nqn": "nqn.2024-01.io.oxstor:anchor"})).unwrap(),
        )
        .unwrap();
        rpc::add_listener(
            serde_json::from_value(json!({"nqn": "nqn.2024-01.io.oxstor:anchor",
                "listen_address": {"trtype": "tcp", "traddr": "127.0.0.1",
                "trsvcid": port.to_string()}}))
            .unwrap(),
        )
        .unwrap();
        (Mutex::new(rt), port)
    });
    (rt.lock().unwrap().handle(), *port)
}

fn rt() -> Handle {
    env().0
}

fn port() -> u16 {
    env().1
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A subsystem exporting a fresh malloc bdev on the shared port; returns (nqn, malloc name).
fn subsystem(allow_any_host: bool) -> (String, String) {
    let (_, port) = env();
    let bdev = malloc::create(
        serde_json::from_value(json!({
            "name": unique("HostMalloc"), "num_blocks": NUM_BLOCKS, "block_size": BS
        }))
        .unwrap(),
    )
    .unwrap();
    let nqn = unique("nqn.2024-01.io.oxstor:host-test-");
    subsystem_for(&nqn, &bdev, allow_any_host, port);
    (nqn, bdev)
}

fn subsystem_for(nqn: &str, bdev: &str, allow_any_host: bool, port: u16) {
    rpc::create_subsystem(
        serde_json::from_value(json!({"nqn": nqn, "allow_any_host": allow_any_host})).unwrap(),
    )
    .unwrap();
    rpc::add_ns(
        serde_json::from_value(json!({"nqn": nqn, "namespace": {"bdev_name": bdev}})).unwrap(),
    )
    .unwrap();
    rpc::add_listener(
        serde_json::from_value(json!({"nqn": nqn, "listen_address": {
            "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
            "trsvcid": port.to_string()}}))
        .unwrap(),
    )
    .unwrap();
}

fn attach_params(name: &str, nqn: &str, extra: serde_json::Value) -> AttachParams {
    let mut p = json!({
        "name": name, "trtype": "tcp", "adrfam": "ipv4", "traddr": "127.0.0.1",
        "trsvcid": port().to_string(), "subnqn": nqn,
    });
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(p).unwrap()
}

fn attach(nqn: &str, extra: serde_json::Value) -> (String, String) {
    let name = unique("Nvme");
    let bdevs = host::attach(attach_params(&name, nqn, extra)).expect("attach");
    assert_eq!(bdevs, vec![format!("{name}n1")]);
    (name.clone(), bdevs[0].clone())
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

/// Runs one I/O on reactor `core` and waits for it (a hang is a test failure, not a wait).
fn io(
    core: usize,
    bdev: &str,
    t: IoType,
    off: u64,
    n: u64,
    data: Option<&[u8]>,
) -> (IoStatus, Vec<u8>) {
    let entry = registry::lookup(bdev).unwrap();
    io_entry(core, &entry, t, off, n, data)
}

fn io_entry(
    core: usize,
    entry: &Arc<BdevEntry>,
    t: IoType,
    off: u64,
    n: u64,
    data: Option<&[u8]>,
) -> (IoStatus, Vec<u8>) {
    let entry = entry.clone();
    let data = data.map(<[u8]>::to_vec);
    let rx = rt().call_on(core, move |reply| {
        let bs = entry.bdev.geometry().block_size as usize;
        let buf = if t.has_data() {
            let len = data.as_ref().map_or(n as usize * bs, Vec::len);
            let mut b = DmaBuf::zeroed(len).unwrap();
            if let Some(d) = data {
                b.as_mut_slice().copy_from_slice(&d);
            }
            IoBuf::Dma(b)
        } else {
            IoBuf::None
        };
        match entry.channel() {
            Ok(ch) => ch.submit(
                BdevIo::new(t, off, n, buf),
                Rc::new(Answer(RefCell::new(Some(reply)))),
                0,
            ),
            Err(e) => panic!("no channel: {e}"),
        }
    });
    rx.recv_timeout(TIMEOUT).expect("I/O never completed")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn write_read(core: usize, bdev: &str, off: u64, len: usize, seed: u8) {
    let data = pattern(len, seed);
    let n = len as u64 / BS;
    let (st, _) = io(core, bdev, IoType::Write, off, n, Some(&data));
    assert_eq!(
        st,
        IoStatus::Success,
        "write of {len} bytes at {off} on core {core}"
    );
    let (st, back) = io(core, bdev, IoType::Read, off, n, None);
    assert_eq!(
        st,
        IoStatus::Success,
        "read of {len} bytes at {off} on core {core}"
    );
    assert!(
        back == data,
        "data read back differs ({len} bytes at {off})"
    );
}

/// A controller attached once and used after every bad-PDU case to show the target still
/// serves well-behaved hosts.
fn assert_target_healthy() {
    static CANARY: OnceLock<String> = OnceLock::new();
    let bdev = CANARY.get_or_init(|| {
        let (nqn, _) = subsystem(true);
        attach(&nqn, json!({})).1
    });
    for core in 0..2 {
        write_read(core, bdev, 16 * core as u64, 4096, 0x5A + core as u8);
    }
    // And a fresh connection is accepted too.
    let mut c = Raw::connect();
    c.ic_req(false, false);
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// The host bdev

#[test]
fn write_and_read_in_capsule_r2t_and_split_from_both_cores() {
    let (nqn, malloc_name) = subsystem(true);
    let (name, bdev) = attach(&nqn, json!({}));
    let entry = registry::lookup(&bdev).unwrap();
    let g = entry.bdev.geometry();
    assert_eq!((g.block_size, g.num_blocks), (BS as u32, NUM_BLOCKS));
    assert_eq!(entry.bdev.module(), "nvme");
    // The target derives the NGUID from the malloc bdev's UUID; we expose it as ours.
    let malloc = registry::lookup(&malloc_name).unwrap();
    assert_eq!(entry.bdev.uuid(), malloc.bdev.uuid());

    for core in 0..2 {
        let base = 1024 * core as u64;
        write_read(core, &bdev, base, 4096, 1 + core as u8); // in-capsule
        write_read(core, &bdev, base + 64, 128 * 1024, 3 + core as u8); // R2T + C2HData
        write_read(core, &bdev, base + 512, 256 * 1024, 5 + core as u8); // split: windows
    }
    // The data really is on the target's disk.
    let (st, on_disk) = io_entry(0, &malloc, IoType::Read, 1024 + 64, 256, None);
    assert_eq!(st, IoStatus::Success);
    assert!(on_disk == pattern(128 * 1024, 4));
    // Reading from one core what the other wrote.
    let (st, back) = io(1, &bdev, IoType::Read, 64, 256, None);
    assert_eq!(st, IoStatus::Success);
    assert!(back == pattern(128 * 1024, 3));

    // Both reactors have their own I/O queue on the target.
    let ctrls = controller::of_subsystem(&nqn);
    assert_eq!(ctrls.len(), 1);
    assert_eq!(ctrls[0].io_queue_count(), 2);

    let info = host::get_controllers(Some(&name));
    assert_eq!(info[0]["name"], name);
    assert_eq!(info[0]["ctrlrs"][0]["trid"]["subnqn"], nqn);
    assert_eq!(info[0]["ctrlrs"][0]["num_io_queues"], 2);
    assert_eq!(host::get_controllers(Some("nope")), json!([]));
    host::detach(&name).unwrap();
}

#[test]
fn many_concurrent_ios_fill_the_queue_and_all_complete() {
    let (nqn, _) = subsystem(true);
    let (name, bdev) = attach(&nqn, json!({"io_queue_size": 8}));
    let entry = registry::lookup(&bdev).unwrap();
    // 64 I/Os at once on a queue of 7 slots: the rest wait for slots, none is lost.
    let rx = rt().call_on(0, move |reply| {
        struct Count(RefCell<(usize, usize, Option<Reply<usize>>)>);
        impl IoDone for Count {
            fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
                let mut c = self.0.borrow_mut();
                c.0 += 1;
                if io.status == IoStatus::Success {
                    c.1 += 1;
                }
                if c.0 == 64 {
                    let ok = c.1;
                    if let Some(r) = c.2.take() {
                        r.send(ok);
                    }
                }
            }
        }
        let done = Rc::new(Count(RefCell::new((0, 0, Some(reply)))));
        let ch = entry.channel().unwrap();
        for i in 0..64u64 {
            let (t, len) = match i % 4 {
                0 => (IoType::Write, 4096),
                1 => (IoType::Write, 64 * 1024),
                2 => (IoType::Read, 4096),
                _ => (IoType::Read, 64 * 1024),
            };
            let mut b = DmaBuf::zeroed(len).unwrap();
            b.as_mut_slice().fill(i as u8);
            let io = BdevIo::new(t, i * 128, len as u64 / BS, IoBuf::Dma(b));
            ch.submit(io, done.clone(), i);
        }
    });
    assert_eq!(rx.recv_timeout(TIMEOUT).unwrap(), 64);
    host::detach(&name).unwrap();
}

#[test]
fn flush_write_zeroes_unmap_and_compare() {
    let (nqn, _) = subsystem(true);
    let (name, bdev) = attach(&nqn, json!({}));
    let entry = registry::lookup(&bdev).unwrap();
    for t in [
        IoType::Flush,
        IoType::WriteZeroes,
        IoType::Unmap,
        IoType::Compare,
    ] {
        assert!(entry.bdev.io_type_supported(t), "{t:?} should be supported");
    }
    let data = pattern(64 * 1024, 9);
    write_read(0, &bdev, 256, data.len(), 9);
    assert_eq!(io(1, &bdev, IoType::Flush, 0, 0, None).0, IoStatus::Success);

    // Compare: equal data succeeds, different data is a miscompare (in-capsule and R2T).
    assert_eq!(
        io(0, &bdev, IoType::Compare, 256, 8, Some(&data[..4096])).0,
        IoStatus::Success
    );
    assert_eq!(
        io(1, &bdev, IoType::Compare, 256, 128, Some(&data)).0,
        IoStatus::Success
    );
    let mut other = data.clone();
    other[5000] ^= 1;
    assert_eq!(
        io(1, &bdev, IoType::Compare, 256, 128, Some(&other)).0,
        IoStatus::Miscompare
    );

    // Write Zeroes over the middle, Unmap over the end (malloc unmaps to zeroes).
    assert_eq!(
        io(0, &bdev, IoType::WriteZeroes, 256 + 8, 8, None).0,
        IoStatus::Success
    );
    assert_eq!(
        io(1, &bdev, IoType::Unmap, 256 + 64, 64, None).0,
        IoStatus::Success
    );
    let (st, back) = io(0, &bdev, IoType::Read, 256, 128, None);
    assert_eq!(st, IoStatus::Success);
    let mut expect = data.clone();
    expect[4096..8192].fill(0);
    expect[32 * 1024..].fill(0);
    assert!(back == expect, "write zeroes / unmap left the wrong bytes");

    // A Write Zeroes bigger than one command (NLB is 16 bits) is issued in pieces.
    write_read(0, &bdev, 0, 4096, 77);
    assert_eq!(
        io(0, &bdev, IoType::WriteZeroes, 0, NUM_BLOCKS, None).0,
        IoStatus::Success
    );
    let (_, back) = io(0, &bdev, IoType::Read, 0, 8, None);
    assert!(back.iter().all(|&b| b == 0));
    host::detach(&name).unwrap();
}

#[test]
fn reading_past_the_end_fails_instead_of_hanging() {
    let (nqn, _) = subsystem(true);
    let (name, bdev) = attach(&nqn, json!({}));
    let (st, _) = io(0, &bdev, IoType::Read, NUM_BLOCKS - 4, 8, None);
    assert_eq!(st, IoStatus::Failed(libc::EINVAL));
    let (st, _) = io(1, &bdev, IoType::Read, NUM_BLOCKS, 1, None);
    assert_eq!(st, IoStatus::Failed(libc::EINVAL));
    // The wire path too: the target answers LBA Out of Range, which the host maps to EINVAL.
    let (_admin, mut q) = Raw::io_queue(&nqn, false);
    let c = q.read(NUM_BLOCKS - 1, 2, 7);
    assert!(c.status.same_code(Status::LBA_OUT_OF_RANGE), "{c:?}");
    // The last block is fine.
    write_read(0, &bdev, NUM_BLOCKS - 8, 4096, 11);
    host::detach(&name).unwrap();
}

#[test]
fn digests_on_both_headers_and_data() {
    let (nqn, _) = subsystem(true);
    let (name, bdev) = attach(&nqn, json!({"hdgst": true, "ddgst": true}));
    for core in 0..2 {
        write_read(core, &bdev, 100, 4096, 21);
        write_read(core, &bdev, 2000, 128 * 1024, 22);
    }
    assert_eq!(
        io(0, &bdev, IoType::Unmap, 2000, 8, None).0,
        IoStatus::Success
    );
    host::detach(&name).unwrap();
}

#[test]
fn detach_is_clean() {
    let (nqn, malloc_name) = subsystem(true);
    let (name, bdev) = attach(&nqn, json!({}));
    write_read(0, &bdev, 0, 4096, 31);
    write_read(1, &bdev, 8, 4096, 32);
    assert_eq!(controller::of_subsystem(&nqn).len(), 1);
    host::detach(&name).unwrap();
    assert!(registry::lookup(&bdev).is_err(), "bdev still registered");
    assert!(!host::controller_names().contains(&name));
    // The target saw the shutdown and the closed queues.
    wait_until("the target to drop the controller", || {
        controller::of_subsystem(&nqn).is_empty()
    });
    assert!(host::detach(&name).is_err(), "second detach must fail");
    // The namespace is intact and can be attached again.
    let (st, _) = io(0, &malloc_name, IoType::Read, 0, 8, None);
    assert_eq!(st, IoStatus::Success);
    let (name2, bdev2) = attach(&nqn, json!({}));
    let (st, back) = io(1, &bdev2, IoType::Read, 0, 8, None);
    assert_eq!(st, IoStatus::Success);
    assert!(back == pattern(4096, 31));
    host::detach(&name2).unwrap();
}

#[test]
fn keep_alive_keeps_a_short_kato_controller_alive() {
    let (nqn, _) = subsystem(true);
    // KATO 1 s: the target drops a silent controller after 1.5 s.
    let (name, bdev) = attach(&nqn, json!({"keep_alive_timeout_ms": 1000}));
    assert_eq!(controller::of_subsystem(&nqn)[0].kato_ms(), 1000);
    // Letting time pass is the point of this test, not a synchronisation shortcut.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(
        controller::of_subsystem(&nqn).len(),
        1,
        "controller expired"
    );
    write_read(0, &bdev, 0, 4096, 71);
    write_read(1, &bdev, 8, 4096, 72);
    assert_eq!(
        host::get_controllers(Some(&name))[0]["ctrlrs"][0]["state"],
        "enabled"
    );
    host::detach(&name).unwrap();
}

#[test]
fn attaching_twice_under_one_name_is_refused() {
    let (nqn, _) = subsystem(true);
    let (name, _) = attach(&nqn, json!({}));
    let err = host::attach(attach_params(&name, &nqn, json!({}))).unwrap_err();
    assert_eq!(err.errno(), libc::EEXIST, "{err}");
    host::detach(&name).unwrap();
}

#[test]
fn host_not_allowed_is_refused_with_a_clear_error() {
    let (nqn, _) = subsystem(false);
    rpc::add_host(
        serde_json::from_value(json!({"nqn": nqn, "host": "nqn.2024-01.io.oxstor:someone-else"}))
            .unwrap(),
    )
    .unwrap();
    let name = unique("Denied");
    let err = host::attach(attach_params(
        &name,
        &nqn,
        json!({"hostnqn": "nqn.2024-01.io.oxstor:intruder"}),
    ))
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Connect Invalid Host"), "unclear error: {msg}");
    assert!(msg.contains("nqn.2024-01.io.oxstor:intruder"), "{msg}");
    assert_eq!(err.errno(), libc::EACCES);
    assert!(registry::lookup(&format!("{name}n1")).is_err());
    assert!(host::get_controllers(Some(&name)) == json!([]));
    // The allowed host gets in.
    let allowed = unique("Allowed");
    let ok = host::attach(attach_params(
        &allowed,
        &nqn,
        json!({"hostnqn": "nqn.2024-01.io.oxstor:someone-else"}),
    ))
    .unwrap();
    write_read(0, &ok[0], 0, 4096, 41);
    host::detach(&allowed).unwrap();
    // A subsystem that does not exist is refused too.
    let err = host::attach(attach_params(
        &unique("Nowhere"),
        "nqn.2024-01.io.oxstor:no-such-subsystem",
        json!({}),
    ))
    .unwrap_err();
    assert!(
        err.to_string().contains("Connect Invalid Parameters"),
        "{err}"
    );
}

#[test]
fn target_going_away_fails_outstanding_io_with_eio_then_enxio() {
    let (_, port) = env();
    let base = malloc::create(
        serde_json::from_value(json!({
            "name": unique("SlowBase"), "num_blocks": NUM_BLOCKS, "block_size": BS
        }))
        .unwrap(),
    )
    .unwrap();
    let slow = delay::create(
        serde_json::from_value(json!({
            "base_bdev_name": base, "name": unique("Slow"),
            "avg_read_latency": 2_000_000, "p99_read_latency": 2_000_000,
            "avg_write_latency": 0, "p99_write_latency": 0
        }))
        .unwrap(),
    )
    .unwrap();
    let nqn = unique("nqn.2024-01.io.oxstor:going-away-");
    subsystem_for(&nqn, &slow, true, port);
    let (name, bdev) = attach(&nqn, json!({}));
    write_read(0, &bdev, 0, 4096, 51); // the read takes 2 s: fine
                                       // Start a read that will be outstanding when the target drops the connection.
    let entry = registry::lookup(&bdev).unwrap();
    let (submitted_tx, submitted) = std::sync::mpsc::channel();
    let rx = rt().call_on(1, move |reply| {
        let ch = entry.channel().unwrap();
        let buf = IoBuf::Dma(DmaBuf::zeroed(4096).unwrap());
        ch.submit(
            BdevIo::new(IoType::Read, 0, 8, buf),
            Rc::new(Answer(RefCell::new(Some(reply)))),
            0,
        );
        let _ = submitted_tx.send(());
    });
    submitted.recv_timeout(TIMEOUT).unwrap();
    wait_until("the read to reach the slow bdev", || {
        rpc::get_stats()["poll_groups"]
            .as_array()
            .is_some_and(|g| g.iter().any(|g| g["pending_bdev_io"].as_u64() > Some(0)))
    });
    rpc::delete_subsystem(serde_json::from_value(json!({"nqn": nqn})).unwrap()).unwrap();
    let (st, _) = rx.recv_timeout(TIMEOUT).expect("outstanding I/O hung");
    assert_eq!(st, IoStatus::Failed(libc::EIO));
    let (st, _) = io(1, &bdev, IoType::Read, 0, 8, None);
    assert_eq!(st, IoStatus::Failed(libc::ENXIO));
    // Detach still cleans up even though the target is gone.
    host::detach(&name).unwrap();
    assert!(registry::lookup(&bdev).is_err());
}

#[test]
fn transport_id_string_attaches() {
    let (nqn, _) = subsystem(true);
    let name = unique("Perf");
    let trid = format!(
        "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{} subnqn:{nqn}",
        port()
    );
    let p = host::parse_transport_id(&trid, &name).unwrap();
    let bdevs = host::attach(p).unwrap();
    assert_eq!(bdevs, vec![format!("{name}n1")]);
    write_read(1, &bdevs[0], 40, 8192, 61);
    host::detach(&name).unwrap();
}

// ---------------------------------------------------------------------------------------
// A raw client that misbehaves on purpose

struct Raw {
    s: TcpStream,
    neg: Negotiated,
    cid: u16,
}

const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6c1f1a4e-2b9d-4c2a-8e8f-0a1b2c3d4e5f";

enum Got {
    Pdu(Vec<u8>, Vec<u8>),
    Closed,
}

impl Raw {
    fn connect() -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port())).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            neg: Negotiated::initial(Role::Host),
            cid: 1,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn ic_req_bytes(hdgst: bool, ddgst: bool) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        IcReq {
            pfv: 0,
            hpda: 0,
            header_digest: hdgst,
            data_digest: ddgst,
            max_r2t: 0,
        }
        .encode(&mut b)
        .unwrap();
        b
    }

    fn ic_req(&mut self, hdgst: bool, ddgst: bool) {
        let b = Self::ic_req_bytes(hdgst, ddgst);
        self.send(&b);
        let Got::Pdu(h, _) = self.recv() else {
            panic!("no ICResp")
        };
        let PduHeader::IcResp(resp) = Pdu::parse(&h, &self.neg).unwrap().header else {
            panic!("not an ICResp")
        };
        assert_eq!((resp.header_digest, resp.data_digest), (hdgst, ddgst));
        let req = IcReq {
            pfv: 0,
            hpda: 0,
            header_digest: hdgst,
            data_digest: ddgst,
            max_r2t: 0,
        };
        self.neg = Negotiated::from_exchange(Role::Host, &req, &resp, 8192);
    }

    /// Reads one PDU (header incl. digest, data without padding/digest), or sees EOF.
    fn recv(&mut self) -> Got {
        let mut h = vec![0u8; COMMON_HEADER_LEN];
        match self.s.read_exact(&mut h) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Got::Closed,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Got::Closed,
            Err(e) => panic!("read failed (timeout?): {e}"),
        }
        let layout = CommonHeader::parse(&h).unwrap().layout(&self.neg).unwrap();
        h.resize(layout.header_with_digest_len(), 0);
        self.s.read_exact(&mut h[COMMON_HEADER_LEN..]).unwrap();
        let mut rest = vec![0u8; layout.bytes_after_header()];
        self.s.read_exact(&mut rest).unwrap();
        let p = layout.padding_len();
        let data = rest[p..p + layout.data_len].to_vec();
        Got::Pdu(h, data)
    }

    /// Expects a C2HTermReq with `fes` (and `fei` if given), then the connection closing.
    fn expect_term(&mut self, fes: u16, fei: Option<u32>) {
        let Got::Pdu(h, _) = self.recv() else {
            panic!("connection closed without a C2HTermReq")
        };
        let PduHeader::C2hTermReq(t) = Pdu::parse(&h, &self.neg).unwrap().header else {
            panic!("expected C2HTermReq, got {:?}", Pdu::parse(&h, &self.neg))
        };
        assert_eq!(t.fes, fes, "FES");
        if let Some(fei) = fei {
            assert_eq!(t.fei, fei, "FEI");
        }
        assert!(
            matches!(self.recv(), Got::Closed),
            "still open after C2HTermReq"
        );
    }

    fn next_cid(&mut self) -> u16 {
        self.cid += 1;
        self.cid
    }

    fn capsule(&mut self, sqe: &[u8; 64], data: &[u8]) {
        let mut b = vec![0u8; 256];
        let n = encode_capsule_cmd(sqe, data.len(), &self.neg, &mut b).unwrap();
        b.truncate(n);
        b.extend_from_slice(data);
        if self.neg.data_digest && !data.is_empty() {
            b.extend_from_slice(&oxstor_nvme::pdu::data_digest(data).to_le_bytes());
        }
        self.send(&b);
    }

    fn response(&mut self) -> Completion {
        loop {
            let Got::Pdu(h, _) = self.recv() else {
                panic!("closed while waiting for a response")
            };
            match Pdu::parse(&h, &self.neg).unwrap().header {
                PduHeader::CapsuleResp(c) => return c,
                PduHeader::C2hData(d) if d.success => {
                    return Completion::new(d.cccid, Status::SUCCESS)
                }
                PduHeader::C2hData(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn command(&mut self, b: CommandBuilder, data: &[u8]) -> Completion {
        let cid = self.next_cid();
        let sgl = if data.is_empty() {
            SglDescriptor::transport_data_block(0)
        } else {
            SglDescriptor::in_capsule(0, data.len() as u32)
        };
        let sqe = b.cid(cid).sgl(sgl).build();
        self.capsule(&sqe, data);
        let c = self.response();
        assert_eq!(c.cid, cid);
        c
    }

    fn fabrics_connect(&mut self, nqn: &str, qid: u16, cntlid: u16) -> Completion {
        let data = ConnectDataFields {
            host_id: [7; 16],
            cntlid,
            subsystem_nqn: nqn,
            host_nqn: HOSTNQN,
        }
        .encode()
        .unwrap();
        let cid = self.next_cid();
        let sqe = Connect {
            record_format: 0,
            queue_id: qid,
            sq_size: 31,
            attributes: 0,
            keep_alive_timeout_ms: if qid == 0 { 30_000 } else { 0 },
        }
        .build(cid);
        self.capsule(&sqe, &data);
        self.response()
    }

    /// An enabled controller's admin queue and one I/O queue (qid 1) on it.
    fn io_queue(nqn: &str, digests: bool) -> (Raw, Raw) {
        let mut admin = Raw::connect();
        admin.ic_req(digests, digests);
        let c = admin.fabrics_connect(nqn, 0, CNTLID_DYNAMIC);
        assert!(c.status.is_success(), "admin connect: {c:?}");
        let cntlid = c.dw0 as u16;
        let cid = admin.next_cid();
        let cc = Cc {
            enable: true,
            io_sq_entry_size: 6,
            io_cq_entry_size: 4,
            ..Cc::default()
        };
        let sqe = PropertySet {
            attributes: 0,
            offset: reg::CC,
            value: cc.to_bits() as u64,
        }
        .build(cid);
        admin.capsule(&sqe, &[]);
        assert!(admin.response().status.is_success());
        let mut io = Raw::connect();
        io.ic_req(digests, digests);
        let c = io.fabrics_connect(nqn, 1, cntlid);
        assert!(c.status.is_success(), "I/O connect: {c:?}");
        (admin, io)
    }

    /// A Read of `blocks` at `lba`; returns its completion (data is checked by length).
    fn read(&mut self, lba: u64, blocks: u32, _seed: u8) -> Completion {
        let cid = self.next_cid();
        let sqe = CommandBuilder::nvm_io(io_op::READ, 1, lba, blocks)
            .cid(cid)
            .sgl(SglDescriptor::transport_data_block(blocks * BS as u32))
            .build();
        self.capsule(&sqe, &[]);
        let mut got = 0usize;
        loop {
            let Got::Pdu(h, data) = self.recv() else {
                panic!("closed during a read")
            };
            match Pdu::parse(&h, &self.neg).unwrap().header {
                PduHeader::C2hData(d) => {
                    got += data.len();
                    if d.success {
                        assert_eq!(got, (blocks as u64 * BS) as usize);
                        return Completion::new(d.cccid, Status::SUCCESS);
                    }
                }
                PduHeader::CapsuleResp(c) => {
                    assert_eq!(c.cid, cid);
                    return c;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn nqn_for_raw() -> String {
    static NQN: OnceLock<String> = OnceLock::new();
    NQN.get_or_init(|| subsystem(true).0).clone()
}

#[test]
fn bad_pfv_in_icreq_is_terminated_fes1_fei8() {
    let mut c = Raw::connect();
    let mut b = Raw::ic_req_bytes(false, false);
    b[8] = 1; // PFV
    c.send(&b);
    c.expect_term(1, Some(8));
    assert_target_healthy();
}

#[test]
fn capsule_before_icreq_is_terminated() {
    let mut c = Raw::connect();
    let sqe = CommandBuilder::new(admin_op::IDENTIFY)
        .cid(1)
        .cdw10(1)
        .build();
    c.capsule(&sqe, &[]);
    c.expect_term(2, None); // PDU sequence error
    assert_target_healthy();
}

#[test]
fn oversized_plen_is_terminated() {
    let mut c = Raw::connect();
    c.ic_req(false, false);
    let sqe = CommandBuilder::nvm_io(io_op::WRITE, 1, 0, 8)
        .cid(2)
        .sgl(SglDescriptor::in_capsule(0, 4096))
        .build();
    let mut b = vec![0u8; 128];
    let n = encode_capsule_cmd(&sqe, 4096, &c.neg, &mut b).unwrap();
    b.truncate(n);
    b[4..8].copy_from_slice(&(72u32 + 64 * 1024 * 1024).to_le_bytes()); // PLEN: 64 MiB
    c.send(&b);
    c.expect_term(5, Some(4)); // data transfer limit exceeded, at PLEN
    assert_target_healthy();
}

#[test]
fn header_digest_mismatch_is_terminated_fes3() {
    let mut c = Raw::connect();
    c.ic_req(true, false);
    let sqe = CommandBuilder::new(admin_op::IDENTIFY)
        .cid(3)
        .cdw10(1)
        .build();
    let mut b = vec![0u8; 128];
    let n = encode_capsule_cmd(&sqe, 0, &c.neg, &mut b).unwrap();
    b.truncate(n);
    assert_eq!(n, 76, "header digest present");
    b[75] ^= 0xFF;
    c.send(&b);
    c.expect_term(3, None);
    assert_target_healthy();
}

#[test]
fn h2c_data_with_unknown_ttag_is_terminated() {
    let nqn = nqn_for_raw();
    let (_admin, mut q) = Raw::io_queue(&nqn, false);
    let sqe = CommandBuilder::nvm_io(io_op::WRITE, 1, 0, 16)
        .cid(9)
        .sgl(SglDescriptor::transport_data_block(8192))
        .build();
    q.capsule(&sqe, &[]);
    let Got::Pdu(h, _) = q.recv() else {
        panic!("no R2T")
    };
    let PduHeader::R2t(r2t) = Pdu::parse(&h, &q.neg).unwrap().header else {
        panic!("expected R2T")
    };
    assert_eq!((r2t.cccid, r2t.offset, r2t.len), (9, 0, 8192));
    let pdu = DataPdu {
        cccid: 9,
        ttag: r2t.ttag.wrapping_add(100),
        data_offset: 0,
        data_len: 4096,
        last: true,
        success: false,
    };
    let mut b = vec![0u8; 128];
    let n = pdu.encode_h2c(&q.neg, &mut b).unwrap();
    b.truncate(n);
    b.extend_from_slice(&[0xAB; 4096]);
    q.send(&b);
    q.expect_term(1, Some(10)); // invalid field: TTAG
    assert_target_healthy();
}

#[test]
fn h2c_data_past_the_transfer_is_terminated() {
    let nqn = nqn_for_raw();
    let (_admin, mut q) = Raw::io_queue(&nqn, false);
    let sqe = CommandBuilder::nvm_io(io_op::WRITE, 1, 0, 8)
        .cid(10)
        .sgl(SglDescriptor::transport_data_block(4096))
        .build();
    q.capsule(&sqe, &[]);
    let Got::Pdu(h, _) = q.recv() else {
        panic!("no R2T")
    };
    let PduHeader::R2t(r2t) = Pdu::parse(&h, &q.neg).unwrap().header else {
        panic!("expected R2T")
    };
    let pdu = DataPdu {
        cccid: 10,
        ttag: r2t.ttag,
        data_offset: 0,
        data_len: 8192,
        last: true,
        success: false,
    };
    let mut b = vec![0u8; 128];
    let n = pdu.encode_h2c(&q.neg, &mut b).unwrap();
    b.truncate(n);
    b.extend_from_slice(&[0xCD; 8192]);
    q.send(&b);
    q.expect_term(4, None); // data transfer out of range
    assert_target_healthy();
}

#[test]
fn unknown_io_opcode_gets_invalid_opcode_and_the_queue_stays_up() {
    let nqn = nqn_for_raw();
    let (_admin, mut q) = Raw::io_queue(&nqn, false);
    let c = q.command(CommandBuilder::new(0x7E).nsid(1), &[]);
    assert!(c.status.same_code(Status::INVALID_OPCODE), "{c:?}");
    let c = q.read(0, 8, 0);
    assert!(c.status.is_success(), "{c:?}");
    assert_target_healthy();
}

#[test]
fn command_before_connect_gets_an_error_status() {
    let mut c = Raw::connect();
    c.ic_req(false, false);
    let resp = c.command(CommandBuilder::new(admin_op::IDENTIFY).cdw10(1), &[]);
    assert!(
        resp.status.same_code(Status::COMMAND_SEQUENCE_ERROR),
        "{resp:?}"
    );
    let resp = c.command(CommandBuilder::nvm_io(io_op::READ, 1, 0, 1), &[]);
    assert!(!resp.status.is_success(), "{resp:?}");
    // Still up: Connect now works.
    let r = c.fabrics_connect(&nqn_for_raw(), 0, CNTLID_DYNAMIC);
    assert!(r.status.is_success(), "{r:?}");
    assert_target_healthy();
}

#[test]
fn connections_dropped_mid_pdu_leave_the_target_alive() {
    // Half a common header.
    let mut c = Raw::connect();
    c.send(&Raw::ic_req_bytes(false, false)[..5]);
    drop(c);
    // Half a CapsuleCmd header.
    let mut c = Raw::connect();
    c.ic_req(false, false);
    let sqe = CommandBuilder::new(admin_op::IDENTIFY).cid(1).build();
    let mut b = vec![0u8; 128];
    let n = encode_capsule_cmd(&sqe, 0, &c.neg, &mut b).unwrap();
    c.send(&b[..n / 2]);
    drop(c);
    // In-capsule data cut short, and H2C data cut short, on a real I/O queue.
    let nqn = nqn_for_raw();
    let (admin, mut q) = Raw::io_queue(&nqn, false);
    let sqe = CommandBuilder::nvm_io(io_op::WRITE, 1, 0, 8)
        .cid(11)
        .sgl(SglDescriptor::in_capsule(0, 4096))
        .build();
    let mut b = vec![0u8; 128];
    let n = encode_capsule_cmd(&sqe, 4096, &q.neg, &mut b).unwrap();
    b.truncate(n);
    b.extend_from_slice(&[1; 100]);
    q.send(&b);
    drop(q);
    drop(admin);
    let (admin, mut q) = Raw::io_queue(&nqn, false);
    let sqe = CommandBuilder::nvm_io(io_op::WRITE, 1, 0, 256)
        .cid(12)
        .sgl(SglDescriptor::transport_data_block(128 * 1024))
        .build();
    q.capsule(&sqe, &[]);
    let Got::Pdu(h, _) = q.recv() else {
        panic!("no R2T")
    };
    let PduHeader::R2t(r2t) = Pdu::parse(&h, &q.neg).unwrap().header else {
        panic!("expected R2T")
    };
    let pdu = DataPdu {
        cccid: 12,
        ttag: r2t.ttag,
        data_offset: 0,
        data_len: 128 * 1024,
        last: true,
        success: false,
    };
    let mut b = vec![0u8; 128];
    let n = pdu.encode_h2c(&q.neg, &mut b).unwrap();
    b.truncate(n);
    b.extend_from_slice(&[2; 70000]);
    q.send(&b);
    drop(q);
    drop(admin);
    assert_target_healthy();
}

#[test]
fn data_digest_mismatch_fails_only_that_command() {
    let nqn = nqn_for_raw();
    let (_admin, mut q) = Raw::io_queue(&nqn, true);
    let data = vec![0x5Au8; BS as usize];
    let cid = q.next_cid();
    let sqe = CommandBuilder::nvm_io(io_op::WRITE, 1, 3, 1)
        .cid(cid)
        .sgl(SglDescriptor::in_capsule(0, BS as u32))
        .build();
    let mut b = vec![0u8; 256];
    let n = encode_capsule_cmd(&sqe, data.len(), &q.neg, &mut b).unwrap();
    b.truncate(n);
    b.extend_from_slice(&data);
    let wrong = oxstor_nvme::pdu::data_digest(&data) ^ 0xdead_beef;
    b.extend_from_slice(&wrong.to_le_bytes());
    q.send(&b);
    let c = q.response();
    assert_eq!(c.cid, cid);
    assert!(
        c.status.same_code(Status::TRANSIENT_TRANSPORT_ERROR),
        "a corrupted write must not be executed: {c:?}"
    );
    // The queue carries on; a good command still works.
    let c = q.read(3, 1, 0);
    assert!(c.status.is_success(), "{c:?}");
    assert_target_healthy();
}

#[test]
fn a_silent_host_loses_its_controller_when_keep_alive_lapses() {
    let nqn = nqn_for_raw();
    let mut admin = Raw::connect();
    admin.ic_req(false, false);
    let data = ConnectDataFields {
        host_id: [9; 16],
        cntlid: CNTLID_DYNAMIC,
        subsystem_nqn: &nqn,
        host_nqn: HOSTNQN,
    }
    .encode()
    .unwrap();
    let cid = admin.next_cid();
    let sqe = Connect {
        record_format: 0,
        queue_id: 0,
        sq_size: 31,
        attributes: 0,
        keep_alive_timeout_ms: 1000,
    }
    .build(cid);
    admin.capsule(&sqe, &data);
    assert!(admin.response().status.is_success());
    // No Keep Alive from us: within KATO plus the target's slack, it closes the queue.
    let started = Instant::now();
    admin
        .s
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut byte = [0u8; 1];
    let n = std::io::Read::read(&mut admin.s, &mut byte).unwrap_or(0);
    assert_eq!(n, 0, "the target closed the connection");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
    assert_target_healthy();
}
