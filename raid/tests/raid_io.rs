//! RAID bdevs on real reactors: data placement per level, degraded mirrors, claims,
//! configuring arrays, rebuild, and the RPC surface.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{error, malloc, BdevIo, IoBuf, IoDone, IoStatus, IoType};
use oxstor_raid::rpc::{self, BdevRaidCreateParams};
use oxstor_reactor::runtime::Reply;
use oxstor_reactor::DmaBuf;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{mk_malloc, raid_info, rt};

fn io(
    core: usize,
    entry: &Arc<BdevEntry>,
    t: IoType,
    off: u64,
    n: u64,
    data: Option<Vec<u8>>,
) -> (IoStatus, Vec<u8>) {
    rt();
    blocking::io(
        core,
        entry,
        t,
        off,
        n,
        data.as_deref(),
        Duration::from_secs(10),
    )
    .expect("I/O never completed")
}

fn write(core: usize, e: &Arc<BdevEntry>, off: u64, data: &[u8]) {
    let bs = e.bdev.geometry().block_size as usize;
    let n = (data.len() / bs) as u64;
    let st = io(core, e, IoType::Write, off, n, Some(data.to_vec())).0;
    assert_eq!(st, IoStatus::Success, "write {off}+{n} to {}", e.name());
}

fn read(core: usize, e: &Arc<BdevEntry>, off: u64, n: u64) -> Vec<u8> {
    let (st, data) = io(core, e, IoType::Read, off, n, None);
    assert_eq!(st, IoStatus::Success, "read {off}+{n} from {}", e.name());
    data
}

/// Reads a whole member directly (claimed bdevs still open for reads).
fn read_member(name: &str) -> Vec<u8> {
    let e = registry::open(name, false).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let bs = e.bdev.geometry().block_size as u64;
    let step = (128 * 1024 / bs).max(1);
    let mut out = Vec::new();
    let mut off = 0;
    while off < blocks {
        let n = step.min(blocks - off);
        out.extend(read(0, &e, off, n));
        off += n;
    }
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

/// A malloc bdev wrapped in an error bdev; returns the error bdev's name.
fn mk_error_member(name: &str, blocks: u64, bs: u32) -> String {
    mk_malloc(name, blocks, bs);
    error::create(serde_json::from_value(json!({"base_name": name})).unwrap()).unwrap()
}

fn inject(name: &str, io_type: &str, num: u32) {
    error::inject(
        &serde_json::from_value(json!({
            "name": name, "io_type": io_type, "error_type": "failure", "num": num
        }))
        .unwrap(),
    )
    .unwrap();
}

fn create(params: Value) -> Result<String, oxstor_bdev::BdevError> {
    rpc::create(serde_json::from_value(params).expect("params decode"))
}

fn delete(name: &str) {
    rpc::delete(serde_json::from_value(json!({ "name": name })).unwrap()).unwrap();
}

fn in_category(name: &str, category: &str) -> bool {
    let v =
        rpc::get_bdevs(serde_json::from_value(json!({ "category": category })).unwrap()).unwrap();
    v.as_array().unwrap().iter().any(|r| r["name"] == name)
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn block(data: &[u8], b: u64, bs: usize) -> &[u8] {
    &data[b as usize * bs..(b as usize + 1) * bs]
}

#[test]
fn raid0_stripes_data_across_members_from_both_cores() {
    rt();
    let bs = 512usize;
    for m in ["R0a", "R0b", "R0c"] {
        mk_malloc(m, 256, 512);
    }
    create(
        json!({"name": "R0", "raid_level": "raid0", "strip_size_kb": 4,
                  "base_bdevs": ["R0a", "R0b", "R0c"]}),
    )
    .unwrap();
    let e = registry::open("R0", true).unwrap();
    let g = e.bdev.geometry();
    assert_eq!(
        (g.block_size, g.num_blocks, g.optimal_io_boundary),
        (512, 768, 8)
    );
    assert_eq!(e.bdev.product_name(), "Raid Volume");
    assert_eq!(e.bdev.module(), "raid");

    // Two regions crossing many strips, written from different cores.
    let a = pattern(100 * bs, 1);
    let b = pattern(200 * bs, 2);
    write(0, &e, 5, &a);
    write(1, &e, 300, &b);
    assert!(read(1, &e, 5, 100) == a);
    assert!(read(0, &e, 300, 200) == b);

    // Block k of the array lives on member (k/8)%3 at ((k/8)/3)*8 + k%8.
    let members: Vec<Vec<u8>> = ["R0a", "R0b", "R0c"]
        .iter()
        .map(|m| read_member(m))
        .collect();
    let mut image = vec![0u8; 768 * bs];
    image[5 * bs..105 * bs].copy_from_slice(&a);
    image[300 * bs..500 * bs].copy_from_slice(&b);
    for k in 0..768u64 {
        let (strip, within) = (k / 8, k % 8);
        let (m, moff) = ((strip % 3) as usize, (strip / 3) * 8 + within);
        assert!(
            block(&members[m], moff, bs) == block(&image, k, bs),
            "array block {k} is not at member {m} block {moff}"
        );
    }

    // Unmap and write-zeroes fan out per member; flush reaches every member.
    assert_eq!(io(0, &e, IoType::Unmap, 10, 50, None).0, IoStatus::Success);
    assert_eq!(
        io(1, &e, IoType::WriteZeroes, 350, 30, None).0,
        IoStatus::Success
    );
    assert_eq!(io(0, &e, IoType::Flush, 0, 768, None).0, IoStatus::Success);
    image[10 * bs..60 * bs].fill(0);
    image[350 * bs..380 * bs].fill(0);
    let whole: Vec<u8> = (0..6)
        .flat_map(|i| read(i % 2, &e, i as u64 * 128, 128))
        .collect();
    assert!(
        whole == image,
        "unmap/write_zeroes cleared the wrong blocks"
    );

    // raid0 has no redundancy: removing a member is refused.
    let err =
        rpc::remove_base_bdev(serde_json::from_value(json!({"name": "R0b"})).unwrap()).unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert!(err.to_string().contains("would lose data"), "{err}");
    delete("R0");
    for m in ["R0a", "R0b", "R0c"] {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn concat_spans_members_of_different_sizes() {
    rt();
    let bs = 512usize;
    let sizes = [("Ca", 100u64), ("Cb", 60), ("Cc", 200)];
    for (m, n) in sizes {
        mk_malloc(m, n, 512);
    }
    create(json!({"name": "Cat", "raid_level": "concat", "base_bdevs": ["Ca", "Cb", "Cc"]}))
        .unwrap();
    let e = registry::open("Cat", true).unwrap();
    assert_eq!(e.bdev.geometry().num_blocks, 360);
    // Crosses both member boundaries (100 and 160).
    let a = pattern(80 * bs, 5);
    write(1, &e, 90, &a);
    let b = pattern(150 * bs, 6);
    write(0, &e, 200, &b);
    assert!(read(0, &e, 90, 80) == a);
    assert!(read(1, &e, 200, 150) == b);
    let mut image = vec![0u8; 360 * bs];
    image[90 * bs..170 * bs].copy_from_slice(&a);
    image[200 * bs..350 * bs].copy_from_slice(&b);
    let members: Vec<Vec<u8>> = sizes.iter().map(|(m, _)| read_member(m)).collect();
    let starts = [0u64, 100, 160, 360];
    for k in 0..360u64 {
        let m = (0..3).find(|&m| k < starts[m + 1]).unwrap();
        assert!(block(&members[m], k - starts[m], bs) == block(&image, k, bs));
    }
    assert_eq!(io(0, &e, IoType::Unmap, 95, 70, None).0, IoStatus::Success);
    image[95 * bs..165 * bs].fill(0);
    assert!(read(1, &e, 0, 200) == image[..200 * bs]);
    assert!(read(0, &e, 200, 160) == image[200 * bs..]);
    delete("Cat");
    for (m, _) in sizes {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn raid1_writes_every_copy_and_survives_a_failing_member() {
    rt();
    let bs = 512usize;
    let m: Vec<String> = ["M1a", "M1b", "M1c"]
        .iter()
        .map(|n| mk_error_member(n, 300, 512))
        .collect();
    create(json!({"name": "Mirror", "raid_level": "1", "base_bdevs": m})).unwrap();
    let e = registry::open("Mirror", true).unwrap();
    assert_eq!(e.bdev.geometry().num_blocks, 300);
    assert_eq!(e.bdev.geometry().optimal_io_boundary, 0);
    let a = pattern(64 * bs, 9);
    write(0, &e, 0, &a);
    write(1, &e, 150, &a);
    for name in ["M1a", "M1b", "M1c"] {
        let data = read_member(name);
        assert!(
            data[..64 * bs] == a[..] && data[150 * bs..214 * bs] == a[..],
            "{name}"
        );
    }

    // M1b fails every write from now on: the array marks it faulty and carries on.
    inject("EE_M1b", "write", 1000);
    let b = pattern(64 * bs, 10);
    write(1, &e, 64, &b);
    write(0, &e, 220, &b);
    let v = raid_info("Mirror");
    assert_eq!(v["state"], "online");
    assert_eq!(v["num_base_bdevs_operational"], 2);
    assert_eq!(v["base_bdevs_list"][1]["is_configured"], false);
    assert!(read(0, &e, 0, 64) == a);
    assert!(read(1, &e, 64, 64) == b);
    assert!(read(0, &e, 220, 64) == b);

    // A read error on one copy is retried on another; that copy is marked faulty too.
    inject("EE_M1a", "read", 1);
    assert!(read(0, &e, 64, 64) == b);
    assert!(read(1, &e, 150, 64) == a);
    assert_eq!(raid_info("Mirror")["num_base_bdevs_operational"], 1);

    // Removing the last in-service copy would lose data.
    let rm = |n: &str| rpc::remove_base_bdev(serde_json::from_value(json!({"name": n})).unwrap());
    assert_eq!(rm("EE_M1c").unwrap_err().errno(), libc::EINVAL);
    // Removing a failed member is fine, and frees its claim.
    rm("EE_M1b").unwrap();
    assert!(registry::open("EE_M1b", true).is_ok());
    let v = raid_info("Mirror");
    assert_eq!(v["num_base_bdevs_discovered"], 2);
    assert_eq!(v["base_bdevs_list"][1]["name"], Value::Null);
    delete("Mirror");
    for n in ["M1a", "M1b", "M1c"] {
        error::delete(&format!("EE_{n}")).unwrap();
        malloc::delete(n).unwrap();
    }
}

/// Where copy `copy` of raid10 (near 2) array block `k` lives: (member, member block).
fn raid10_place(k: u64, copy: u64, n: u64, strip: u64) -> (usize, u64) {
    let idx = 2 * (k / strip) + copy;
    ((idx % n) as usize, (idx / n) * strip + k % strip)
}

#[test]
fn raid10_near2_places_two_copies_and_survives_a_failed_member() {
    rt();
    let bs = 512usize;
    for n in [4u64, 3] {
        let names: Vec<String> = (0..n)
            .map(|i| mk_error_member(&format!("T{n}_{i}"), 256, 512))
            .collect();
        let raid = format!("R10_{n}");
        create(
            json!({"name": raid, "raid_level": "raid10", "strip_size_kb": 4,
                      "base_bdevs": names}),
        )
        .unwrap();
        let e = registry::open(&raid, true).unwrap();
        let blocks = 32 * n / 2 * 8;
        assert_eq!(e.bdev.geometry().num_blocks, blocks);
        let image = pattern(blocks as usize * bs, n as u8);
        let mut off = 0;
        while off < blocks {
            let len = 100.min(blocks - off);
            let data = &image[off as usize * bs..(off + len) as usize * bs];
            write((off % 2) as usize, &e, off, data);
            off += len;
        }
        let members: Vec<Vec<u8>> = names.iter().map(|m| read_member(m)).collect();
        for k in 0..blocks {
            for copy in 0..2 {
                let (m, moff) = raid10_place(k, copy, n, 8);
                assert!(
                    block(&members[m], moff, bs) == block(&image, k, bs),
                    "raid10 n={n}: copy {copy} of block {k} not at member {m} block {moff}"
                );
            }
        }

        // Member 1 fails writes; new data still lands and reads back.
        inject(&names[1], "write", 100_000);
        let mut image = image;
        let fresh = pattern(120 * bs, 77);
        write(1, &e, 20, &fresh);
        image[20 * bs..140 * bs].copy_from_slice(&fresh);
        let back: Vec<u8> = (0..blocks.div_ceil(128))
            .flat_map(|i| {
                let off = i * 128;
                read((i % 2) as usize, &e, off, 128.min(blocks - off))
            })
            .collect();
        assert!(back == image, "raid10 n={n} degraded read-back differs");
        let v = raid_info(&raid);
        assert_eq!(v["num_base_bdevs_operational"], n - 1);
        assert_eq!(v["state"], "online");
        // Member 0 shares chunks with member 1: removing it would lose data.
        let rm =
            |n: &str| rpc::remove_base_bdev(serde_json::from_value(json!({ "name": n })).unwrap());
        assert_eq!(rm(&names[0]).unwrap_err().errno(), libc::EINVAL);
        delete(&raid);
        for i in 0..n {
            error::delete(&names[i as usize]).unwrap();
            malloc::delete(&format!("T{n}_{i}")).unwrap();
        }
    }
}

#[test]
fn claims_hold_members_until_delete() {
    rt();
    mk_malloc("Cl0", 64, 4096);
    mk_malloc("Cl1", 64, 4096);
    create(json!({"name": "ClR", "raid_level": "raid1", "base_bdevs": ["Cl0", "Cl1"]})).unwrap();
    let err = registry::open("Cl0", true)
        .err()
        .expect("claimed member opened for write");
    assert_eq!(err.errno(), libc::EBUSY);
    assert!(
        registry::open("Cl1", false).is_ok(),
        "reads of a member stay possible"
    );
    assert_eq!(malloc::delete("Cl1").unwrap_err().errno(), libc::EBUSY);
    // A member of one array cannot join another.
    let e = create(
        json!({"name": "ClR2", "raid_level": "raid0", "strip_size_kb": 64,
                          "base_bdevs": ["Cl0"]}),
    )
    .unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY);
    assert_eq!(
        create(json!({"name": "ClR", "raid_level": "concat", "base_bdevs": ["X"]}))
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    delete("ClR");
    assert!(registry::lookup("ClR").is_err());
    assert!(raid_info("ClR").is_null());
    assert!(registry::open("Cl0", true).is_ok());
    let e = rpc::delete(serde_json::from_value(json!({"name": "ClR"})).unwrap()).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV);
    malloc::delete("Cl0").unwrap();
    malloc::delete("Cl1").unwrap();
}

#[test]
fn configuring_until_members_appear_and_get_bdevs_shape() {
    rt();
    mk_malloc("CfgA", 128, 512);
    create(
        json!({"name": "CfgR", "raid_level": "raid1", "base_bdevs": ["CfgA", "CfgB"],
                  "uuid": "0f0e0d0c-0b0a-4908-8706-050403020100"}),
    )
    .unwrap();
    assert!(
        registry::lookup("CfgR").is_err(),
        "not a bdev until assembled"
    );
    assert!(in_category("CfgR", "configuring"));
    assert!(!in_category("CfgR", "online"));
    let v = raid_info("CfgR");
    assert_eq!(v["state"], "configuring");
    assert_eq!(v["num_base_bdevs"], 2);
    assert_eq!(v["num_base_bdevs_discovered"], 1);
    assert_eq!(v["base_bdevs_list"][1]["name"], "CfgB");
    assert_eq!(v["base_bdevs_list"][1]["is_configured"], false);
    assert_eq!(v["base_bdevs_list"][0]["is_configured"], true);

    mk_malloc("CfgB", 100, 512);
    rpc::examine();
    let e = registry::lookup("CfgR").expect("online after its last member appeared");
    assert_eq!(
        e.bdev.geometry().num_blocks,
        100,
        "the smallest member sets the size"
    );
    let v = raid_info("CfgR");
    for key in [
        "name",
        "uuid",
        "strip_size_kb",
        "state",
        "raid_level",
        "superblock",
        "num_base_bdevs",
        "num_base_bdevs_discovered",
        "num_base_bdevs_operational",
        "base_bdevs_list",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["uuid"], "0f0e0d0c-0b0a-4908-8706-050403020100");
    assert_eq!(v["state"], "online");
    assert_eq!(v["raid_level"], "raid1");
    assert_eq!(v["superblock"], false);
    assert_eq!(v["strip_size_kb"], 0);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    for b in v["base_bdevs_list"].as_array().unwrap() {
        for key in ["name", "uuid", "is_configured", "data_offset", "data_size"] {
            assert!(b.get(key).is_some(), "missing {key} in {b}");
        }
        assert_eq!(b["data_size"], 100);
        assert_eq!(b["is_configured"], true);
    }
    assert_eq!(e.bdev.driver_info()["raid_level"], "raid1");
    let bad = rpc::get_bdevs(serde_json::from_value(json!({"category": "bogus"})).unwrap());
    assert_eq!(bad.unwrap_err().errno(), libc::EINVAL);

    // Without calling examine: the first reactor's poller assembles it.
    create(
        json!({"name": "CfgR0", "raid_level": "raid0", "strip_size_kb": 8,
                  "base_bdevs": ["CfgC"]}),
    )
    .unwrap();
    mk_malloc("CfgC", 64, 512);
    wait_for("the examine poller", || registry::lookup("CfgR0").is_ok());
    delete("CfgR0");
    delete("CfgR");
    // Deleting a configuring array releases what it claimed.
    create(json!({"name": "CfgR2", "raid_level": "raid1", "base_bdevs": ["CfgA", "CfgZ"]}))
        .unwrap();
    assert!(registry::open("CfgA", true).is_err());
    delete("CfgR2");
    assert!(registry::open("CfgA", true).is_ok());
    for m in ["CfgA", "CfgB", "CfgC"] {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn create_parameters_are_checked() {
    rt();
    mk_malloc("Pa", 64, 512);
    mk_malloc("Pb", 64, 4096);
    let err = |p: Value| create(p).unwrap_err();
    let e = err(
        json!({"name": "P", "raid_level": "raid5", "strip_size_kb": 64,
                       "base_bdevs": ["Pa", "Pb", "Pc"]}),
    );
    // raid5 exists now (raid_parity.rs); mixed block sizes are still refused.
    assert!(e.to_string().contains("different block sizes"), "{e}");
    // Superblocks are supported (raid_superblock.rs); their name field has a limit.
    let e = err(
        json!({"name": "P".repeat(65), "raid_level": "raid1", "base_bdevs": ["Pa", "Pc"],
                       "superblock": true}),
    );
    assert!(e.to_string().contains("at most 64 bytes"), "{e}");
    assert_eq!(
        err(json!({"name": "P", "raid_level": "raid0", "base_bdevs": ["Pa"]})).errno(),
        libc::EINVAL
    );
    assert_eq!(
        err(
            json!({"name": "P", "raid_level": "raid0", "strip_size_kb": 3,
                   "base_bdevs": ["Pa"]})
        )
        .errno(),
        libc::EINVAL
    );
    assert_eq!(
        err(json!({"name": "P", "raid_level": "raid1", "base_bdevs": ["Pa"]})).errno(),
        libc::EINVAL
    );
    assert_eq!(
        err(json!({"name": "P", "raid_level": "raid1", "base_bdevs": ["Pa", "Pa"]})).errno(),
        libc::EINVAL
    );
    assert_eq!(
        err(json!({"name": "P", "raid_level": "raid7", "base_bdevs": ["Pa"]})).errno(),
        libc::EINVAL
    );
    // Mixed block sizes are refused, and the claims taken so far are released.
    let e = err(json!({"name": "P", "raid_level": "raid1", "base_bdevs": ["Pa", "Pb"]}));
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(registry::open("Pa", true).is_ok() && registry::open("Pb", true).is_ok());
    assert!(raid_info("P").is_null());
    // Strip below the block size.
    let e = err(
        json!({"name": "P", "raid_level": "raid0", "strip_size_kb": 2,
                       "base_bdevs": ["Pb"]}),
    );
    assert_eq!(e.errno(), libc::EINVAL);
    // Unknown fields are refused by the decoder.
    let bad: Result<BdevRaidCreateParams, _> = serde_json::from_value(
        json!({"name": "P", "raid_level": "raid1", "base_bdevs": ["Pa"], "bogus": 1}),
    );
    assert!(bad.is_err());
    // The deprecated alias works.
    create(json!({"name": "P", "raid_level": "0", "strip_size": 16, "base_bdevs": ["Pb"]}))
        .unwrap();
    assert_eq!(raid_info("P")["strip_size_kb"], 16);
    delete("P");
    malloc::delete("Pa").unwrap();
    malloc::delete("Pb").unwrap();
}

#[test]
fn config_call_recreates_the_same_array() {
    rt();
    mk_malloc("Sa", 128, 512);
    mk_malloc("Sb", 128, 512);
    create(
        json!({"name": "Saved", "raid_level": "raid10", "strip_size_kb": 8,
                  "base_bdevs": ["Sa", "Sb"]}),
    )
    .unwrap();
    let e = registry::lookup("Saved").unwrap();
    let call = e.bdev.config_call().unwrap();
    assert_eq!(call.method, "bdev_raid_create");
    let (uuid, blocks) = (e.bdev.uuid().to_string(), e.bdev.geometry().num_blocks);
    let params: BdevRaidCreateParams = serde_json::from_value(call.params).unwrap();
    delete("Saved");
    rpc::create(params).unwrap();
    let e = registry::lookup("Saved").unwrap();
    assert_eq!(e.bdev.uuid(), uuid);
    assert_eq!(e.bdev.geometry().num_blocks, blocks);
    delete("Saved");
    malloc::delete("Sa").unwrap();
    malloc::delete("Sb").unwrap();
}

#[test]
fn raid1_rebuilds_a_new_member_while_writes_continue() {
    rt();
    let bs = 512usize;
    let blocks = 8192u64;
    mk_malloc("RbA", blocks, 512);
    mk_malloc("RbB", blocks, 512);
    create(json!({"name": "Rb", "raid_level": "raid1", "base_bdevs": ["RbA", "RbB"]})).unwrap();
    let e = registry::open("Rb", true).unwrap();
    let mut image = pattern(blocks as usize * bs, 40);
    for i in 0..blocks / 256 {
        let off = i * 256;
        write(
            (i % 2) as usize,
            &e,
            off,
            &image[off as usize * bs..(off + 256) as usize * bs],
        );
    }
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "RbB"})).unwrap()).unwrap();
    assert_eq!(raid_info("Rb")["num_base_bdevs_operational"], 1);
    // Writes while degraded only reach RbA.
    let d = pattern(16 * bs, 41);
    write(0, &e, 4000, &d);
    image[4000 * bs..4016 * bs].copy_from_slice(&d);

    // The new member sits behind a delay bdev so the rebuild takes a while.
    mk_malloc("RbC", blocks, 512);
    oxstor_bdev::delay::create(
        serde_json::from_value(json!({
            "base_bdev_name": "RbC", "name": "RbSlow",
            "avg_read_latency": 0, "p99_read_latency": 0,
            "avg_write_latency": 3000, "p99_write_latency": 3000
        }))
        .unwrap(),
    )
    .unwrap();
    let add = |raid: &str, base: &str| {
        rpc::add_base_bdev(
            serde_json::from_value(json!({"raid_bdev": raid, "base_bdev": base})).unwrap(),
        )
    };
    add("Rb", "RbSlow").unwrap();
    let v = raid_info("Rb");
    assert_eq!(v["process"]["type"], "rebuild", "{v}");
    assert_eq!(v["process"]["target"], "RbSlow");
    // No free slot while the new member rebuilds: RbB becomes a hot spare.
    add("Rb", "RbB").unwrap();
    let v = raid_info("Rb");
    assert_eq!(v["base_bdevs_list"][2]["name"], "RbB", "{v}");
    assert_eq!(v["base_bdevs_list"][2]["state"], "spare", "{v}");

    // Keep writing from both cores, all over the array, until the rebuild is done.
    let mut x = 12345u64;
    let mut writes = 0;
    while raid_info("Rb")["process"].is_object() || writes < 8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Every other write aims at the window being copied right now.
        let progress = raid_info("Rb")["process"]["progress"]["blocks"].as_u64();
        let off = match progress {
            Some(p) if writes % 2 == 0 => (p + x % 200).min(blocks - 8),
            _ => x % (blocks - 8),
        };
        let d = pattern(8 * bs, writes as u8);
        write(writes % 2, &e, off, &d);
        image[off as usize * bs..(off + 8) as usize * bs].copy_from_slice(&d);
        writes += 1;
        assert!(writes < 100_000, "rebuild never finished");
    }
    wait_for("rebuild", || raid_info("Rb")["process"].is_null());
    let v = raid_info("Rb");
    assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
    assert_eq!(v["base_bdevs_list"][1]["name"], "RbSlow");
    assert!(
        read_member("RbA") == image,
        "source differs after {writes} writes"
    );
    assert!(
        read_member("RbC") == image,
        "rebuilt member differs after {writes} writes"
    );
    // Reads now may go to either copy and agree.
    assert!(read(1, &e, 0, 256) == image[..256 * bs]);
    delete("Rb");
    oxstor_bdev::delay::delete("RbSlow").unwrap();
    for m in ["RbA", "RbB", "RbC"] {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn raid10_rebuild_fills_a_removed_slot() {
    rt();
    let bs = 512usize;
    let n = 4u64;
    for i in 0..n {
        mk_malloc(&format!("Tr{i}"), 256, 512);
    }
    let names: Vec<String> = (0..n).map(|i| format!("Tr{i}")).collect();
    create(json!({"name": "Tr", "raid_level": "10", "strip_size_kb": 4, "base_bdevs": names}))
        .unwrap();
    let e = registry::open("Tr", true).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let mut image = pattern(blocks as usize * bs, 3);
    for i in 0..blocks / 128 {
        let off = i * 128;
        write(
            (i % 2) as usize,
            &e,
            off,
            &image[off as usize * bs..(off + 128) as usize * bs],
        );
    }
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "Tr2"})).unwrap()).unwrap();
    let d = pattern(40 * bs, 8);
    write(1, &e, 60, &d);
    image[60 * bs..100 * bs].copy_from_slice(&d);
    mk_malloc("TrNew", 300, 512);
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": "Tr", "base_bdev": "TrNew"})).unwrap(),
    )
    .unwrap();
    wait_for("raid10 rebuild", || {
        let v = raid_info("Tr");
        v["process"].is_null() && v["num_base_bdevs_operational"] == 4
    });
    let rebuilt = read_member("TrNew");
    for k in 0..blocks {
        for copy in 0..2 {
            let (m, moff) = raid10_place(k, copy, n, 8);
            if m == 2 {
                assert!(
                    block(&rebuilt, moff, bs) == block(&image, k, bs),
                    "block {k}"
                );
            }
        }
    }
    // The rebuilt member now serves reads: fail its partner's reads... by removing it.
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "Tr3"})).unwrap()).unwrap();
    let back: Vec<u8> = (0..blocks / 128)
        .flat_map(|i| read(0, &e, i * 128, 128))
        .collect();
    assert!(back == image);
    delete("Tr");
    for m in ["Tr0", "Tr1", "Tr2", "Tr3", "TrNew"] {
        malloc::delete(m).unwrap();
    }
}

/// Counts completions of a batch and answers once all are in.
struct Batch {
    left: std::cell::Cell<usize>,
    failed: std::cell::Cell<usize>,
    reply: RefCell<Option<Reply<usize>>>,
}

impl IoDone for Batch {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if !io.status.is_success() {
            self.failed.set(self.failed.get() + 1);
        }
        self.left.set(self.left.get() - 1);
        if self.left.get() == 0 {
            if let Some(r) = self.reply.borrow_mut().take() {
                r.send(self.failed.get());
            }
        }
    }
}

#[test]
fn raid1_reads_go_to_the_least_busy_copy() {
    rt();
    for m in ["LbA", "LbB"] {
        mk_malloc(m, 1024, 512);
    }
    create(json!({"name": "Lb", "raid_level": "raid1", "base_bdevs": ["LbA", "LbB"]})).unwrap();
    let e = registry::open("Lb", true).unwrap();
    // 64 reads submitted at once on one core: each goes to the copy with fewer blocks
    // outstanding, so both copies serve about half.
    let entry = e.clone();
    let failed = rt()
        .call_on(0, move |reply| {
            let ch = entry.channel().unwrap();
            let done = Rc::new(Batch {
                left: std::cell::Cell::new(64),
                failed: std::cell::Cell::new(0),
                reply: RefCell::new(Some(reply)),
            });
            for i in 0..64u64 {
                let buf = IoBuf::Dma(DmaBuf::alloc(8 * 512).unwrap());
                ch.submit(BdevIo::new(IoType::Read, i * 8, 8, buf), done.clone(), 0);
            }
        })
        .recv_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(failed, 0);
    let a = registry::iostat(&registry::lookup("LbA").unwrap()).read.ops;
    let b = registry::iostat(&registry::lookup("LbB").unwrap()).read.ops;
    assert_eq!(a + b, 64);
    assert!(a >= 16 && b >= 16, "reads not balanced: {a} vs {b}");
    delete("Lb");
    for m in ["LbA", "LbB"] {
        malloc::delete(m).unwrap();
    }
}

/// Hands back where a completed I/O says it was, to check the forward path restores it.
struct OffsetProbe(RefCell<Option<Reply<(IoStatus, u64, u64)>>>);

impl IoDone for OffsetProbe {
    fn io_done(&self, io: Box<BdevIo>, _tag: u64) {
        if let Some(reply) = self.0.borrow_mut().take() {
            reply.send((io.status, io.offset_blocks, io.num_blocks));
        }
    }
}

fn probe(core: usize, e: &Arc<BdevEntry>, t: IoType, off: u64, n: u64) -> (IoStatus, u64, u64) {
    let e = e.clone();
    let bs = e.bdev.geometry().block_size as usize;
    rt().call_on(core, move |reply| {
        let buf = IoBuf::Dma(DmaBuf::zeroed(n as usize * bs).unwrap());
        let probe = Rc::new(OffsetProbe(RefCell::new(Some(reply))));
        e.channel()
            .unwrap()
            .submit(BdevIo::new(t, off, n, buf), probe, 0);
    })
    .recv_timeout(Duration::from_secs(10))
    .expect("I/O never completed")
}

fn ops(name: &str, t: IoType) -> u64 {
    let s = registry::iostat(&registry::open(name, false).unwrap());
    match t {
        IoType::Read => s.read.ops,
        _ => s.write.ops,
    }
}

#[test]
fn raid0_forwarded_io_returns_with_its_offset_and_counts_on_its_member() {
    rt();
    for m in ["Fw0", "Fw1", "Fw2", "Fw3"] {
        mk_malloc(m, 256, 512);
    }
    create(
        json!({"name": "FwA", "raid_level": "raid0", "strip_size_kb": 4,
                  "base_bdevs": ["Fw0", "Fw1"]}),
    )
    .unwrap();
    create(
        json!({"name": "FwB", "raid_level": "raid0", "strip_size_kb": 4,
                  "base_bdevs": ["Fw2", "Fw3"]}),
    )
    .unwrap();
    // An array over arrays: the inner forward cannot stack on the outer one and falls back
    // to a full submit, which must restore offsets just the same.
    create(
        json!({"name": "FwTop", "raid_level": "raid0", "strip_size_kb": 4,
                  "base_bdevs": ["FwA", "FwB"]}),
    )
    .unwrap();
    let a = registry::open("FwA", true);
    assert!(a.is_err(), "a member of FwTop must be claimed");
    let top = registry::open("FwTop", true).unwrap();

    // Strip 8 blocks: FwTop block 8 is FwB block 0, which is Fw2 block 0.
    let before: Vec<u64> = ["Fw0", "Fw1", "Fw2", "Fw3", "FwA", "FwB"]
        .iter()
        .map(|m| ops(m, IoType::Write))
        .collect();
    assert_eq!(
        probe(0, &top, IoType::Write, 9, 3),
        (IoStatus::Success, 9, 3)
    );
    let after: Vec<u64> = ["Fw0", "Fw1", "Fw2", "Fw3", "FwA", "FwB"]
        .iter()
        .map(|m| ops(m, IoType::Write))
        .collect();
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(delta, [0, 0, 1, 0, 0, 1], "writes counted per member");

    // Across strips: the generic layer splits, each child is forwarded, the parent comes
    // back whole at its own offset; reads from the other core too.
    for core in [0, 1] {
        assert_eq!(
            probe(core, &top, IoType::Read, 5, 40),
            (IoStatus::Success, 5, 40)
        );
    }
    // A read a member cannot serve fails and still comes back at its offset.
    inject_free_check(&top);
    delete("FwTop");
    delete("FwA");
    delete("FwB");
    for m in ["Fw0", "Fw1", "Fw2", "Fw3"] {
        malloc::delete(m).unwrap();
    }
}

/// Out-of-range I/O is refused by the array's own checks before any forward.
fn inject_free_check(top: &Arc<BdevEntry>) {
    let blocks = top.bdev.geometry().num_blocks;
    let (st, off, _) = probe(0, top, IoType::Read, blocks - 1, 2);
    assert_eq!((st, off), (IoStatus::Failed(libc::EINVAL), blocks - 1));
}
