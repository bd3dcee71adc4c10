//! `bdev_raid_scrub` (md's check/repair) on real reactors: mirrors and parity arrays whose
//! members were corrupted behind the array's back (array deleted, member written directly,
//! array recreated over the same members), then checked, repaired and checked again.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{malloc, IoStatus, IoType};
use oxstor_raid::rpc;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{mk_malloc, raid_info, rt, serial};

const BS: usize = 512;

fn io(
    core: usize,
    entry: &Arc<BdevEntry>,
    t: IoType,
    off: u64,
    n: u64,
    data: Option<Vec<u8>>,
) -> Vec<u8> {
    rt();
    let (st, data) = blocking::io(
        core,
        entry,
        t,
        off,
        n,
        data.as_deref(),
        Duration::from_secs(10),
    )
    .expect("I/O never completed");
    assert_eq!(st, IoStatus::Success, "{t:?} {off}+{n} on {}", entry.name());
    data
}

fn write(e: &Arc<BdevEntry>, off: u64, data: &[u8]) {
    io(
        0,
        e,
        IoType::Write,
        off,
        (data.len() / BS) as u64,
        Some(data.to_vec()),
    );
}

fn read_all(name: &str) -> Vec<u8> {
    let e = registry::open(name, false).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let mut out = Vec::new();
    let mut off = 0;
    while off < blocks {
        let n = 256.min(blocks - off);
        out.extend(io(0, &e, IoType::Read, off, n, None));
        off += n;
    }
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn delete(name: &str) {
    rpc::delete(serde_json::from_value(json!({ "name": name })).unwrap()).unwrap();
    wait_for("delete", || {
        raid_info(name).is_null() && registry::lookup(name).is_err()
    });
}

/// Runs a scrub to the end; returns its final `scrub` entry.
fn scrub(name: &str, action: &str) -> Value {
    rpc::scrub(serde_json::from_value(json!({"name": name, "action": action})).unwrap()).unwrap();
    wait_for("scrub", || raid_info(name)["scrub"]["done"] == true);
    let s = raid_info(name)["scrub"].clone();
    assert_eq!(s["action"], action, "{s}");
    assert!(s.get("error").is_none(), "{s}");
    assert_eq!(s["progress_percent"], 100, "{s}");
    s
}

/// Creates `params`, fills the array with a pattern, deletes it, overwrites `corrupt`
/// (member, block) directly, recreates the array.
fn fill_and_corrupt(params: Value, corrupt: &[(&str, u64)]) -> Vec<u8> {
    let name = params["name"].as_str().unwrap().to_string();
    rpc::create(serde_json::from_value(params.clone()).unwrap()).unwrap();
    let e = registry::open(&name, true).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let image = pattern(blocks as usize * BS, 77);
    for off in (0..blocks).step_by(64) {
        let n = 64.min(blocks - off);
        write(&e, off, &image[off as usize * BS..(off + n) as usize * BS]);
    }
    drop(e);
    delete(&name);
    for &(m, b) in corrupt {
        let me = registry::open(m, true).unwrap();
        write(&me, b, &vec![0xA5u8; BS]);
    }
    rpc::create(serde_json::from_value(params).unwrap()).unwrap();
    image
}

#[test]
fn raid1_check_repair_check() {
    let _s = serial();
    rt();
    for m in ["S1a", "S1b", "S1c"] {
        mk_malloc(m, 2048, BS as u32);
    }
    let params = json!({"name": "S1", "raid_level": "raid1", "base_bdevs": ["S1a", "S1b", "S1c"]});
    let image = fill_and_corrupt(
        params,
        &[("S1b", 5), ("S1b", 1000), ("S1c", 1000), ("S1c", 2047)],
    );
    // Block 1000 differs on two copies: one mismatched block.
    assert_eq!(scrub("S1", "check")["mismatch_cnt"], 3);
    assert_ne!(read_all("S1b"), image, "check must not repair");
    assert_eq!(scrub("S1", "repair")["mismatch_cnt"], 3);
    assert!(read_all("S1b") == image && read_all("S1c") == image);
    assert_eq!(scrub("S1", "check")["mismatch_cnt"], 0);
    // Bad requests.
    let bad = |v: Value| rpc::scrub(serde_json::from_value(v).unwrap()).is_err();
    assert!(bad(json!({"name": "S1", "action": "fix"})));
    assert!(bad(json!({"name": "nope", "action": "check"})));
    delete("S1");
    for m in ["S1a", "S1b", "S1c"] {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn raid1_check_with_writes_running_finds_nothing() {
    let _s = serial();
    rt();
    for m in ["S2a", "S2b"] {
        mk_malloc(m, 32768, BS as u32);
    }
    rpc::create(
        serde_json::from_value(
            json!({"name": "S2", "raid_level": "raid1", "base_bdevs": ["S2a", "S2b"]}),
        )
        .unwrap(),
    )
    .unwrap();
    let e = registry::open("S2", true).unwrap();
    rpc::scrub(serde_json::from_value(json!({"name": "S2", "action": "check"})).unwrap()).unwrap();
    let mut x = 99u64;
    let mut n = 0;
    while raid_info("S2")["scrub"]["done"] != true || n < 16 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % (32768 - 8);
        io(
            (n % 2) as usize,
            &e,
            IoType::Write,
            off,
            8,
            Some(pattern(8 * BS, n as u8)),
        );
        n += 1;
    }
    assert_eq!(raid_info("S2")["scrub"]["mismatch_cnt"], 0);
    assert!(read_all("S2a") == read_all("S2b"));
    drop(e);
    delete("S2");
    for m in ["S2a", "S2b"] {
        malloc::delete(m).unwrap();
    }
}

fn parity_case(
    name: &str,
    level: &str,
    members: usize,
    corrupt_blocks: &[(usize, u64)],
    expect: u64,
) {
    let names: Vec<String> = (0..members).map(|i| format!("{name}m{i}")).collect();
    for m in &names {
        mk_malloc(m, 2048, BS as u32);
    }
    let params =
        json!({"name": name, "raid_level": level, "strip_size_kb": 4, "base_bdevs": names});
    let corrupt: Vec<(&str, u64)> = corrupt_blocks
        .iter()
        .map(|&(m, b)| (names[m].as_str(), b))
        .collect();
    fill_and_corrupt(params, &corrupt);
    assert_eq!(scrub(name, "check")["mismatch_cnt"], expect);
    assert_eq!(scrub(name, "repair")["mismatch_cnt"], expect);
    assert_eq!(scrub(name, "check")["mismatch_cnt"], 0);
    // After the repair the array survives losing any member: parity matches the data.
    let e = registry::open(name, false).unwrap();
    let before = read_all(name);
    drop(e);
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": names[0]})).unwrap()).unwrap();
    assert!(
        read_all(name) == before,
        "degraded reads differ after repair"
    );
    delete(name);
    for m in &names {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn raid5_check_repair_check() {
    let _s = serial();
    rt();
    // 8-block strips: blocks 3, 20 (second stripe) and 2040 (last stripe) of various
    // members, plus two blocks in the same row of one stripe on different members
    // (one mismatched row).
    parity_case(
        "S5",
        "raid5",
        4,
        &[(0, 3), (1, 20), (3, 2040), (2, 100), (3, 100)],
        4,
    );
}

#[test]
fn raid6_check_repair_check() {
    let _s = serial();
    rt();
    parity_case("S6", "raid6", 5, &[(0, 3), (4, 20), (2, 2047)], 3);
}

#[test]
fn raid1_created_degraded_then_filled_by_add_base_bdev() {
    let _s = serial();
    rt();
    for m in ["Dg0", "Dg1"] {
        mk_malloc(m, 4096, BS as u32);
    }
    let create = |v: Value| rpc::create(serde_json::from_value(v).unwrap());
    // Not enough members, or a superblock, are refused.
    assert!(create(json!({"name": "Dg", "raid_level": "raid1", "base_bdevs": ["", ""]})).is_err());
    assert!(create(
        json!({"name": "Dg", "raid_level": "raid0", "strip_size_kb": 4, "base_bdevs": ["Dg0", ""]})
    )
    .is_err());
    assert!(create(
        json!({"name": "Dg", "raid_level": "raid1", "base_bdevs": ["Dg0", ""], "superblock": true})
    )
    .is_err());
    create(json!({"name": "Dg", "raid_level": "raid1", "base_bdevs": ["Dg0", ""]})).unwrap();
    let v = raid_info("Dg");
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs"], 2, "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 1, "{v}");
    assert_eq!(v["base_bdevs_list"][1]["state"], "missing", "{v}");
    let e = registry::open("Dg", true).unwrap();
    assert_eq!(e.bdev.geometry().num_blocks, 4096);
    let image = pattern(4096 * BS, 5);
    for off in (0..4096u64).step_by(128) {
        write(
            &e,
            off,
            &image[off as usize * BS..(off + 128) as usize * BS],
        );
    }
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": "Dg", "base_bdev": "Dg1"})).unwrap(),
    )
    .unwrap();
    wait_for("rebuild", || {
        let v = raid_info("Dg");
        v["process"].is_null() && v["num_base_bdevs_operational"] == 2
    });
    let v = raid_info("Dg");
    assert_eq!(v["base_bdevs_list"][1]["name"], "Dg1", "{v}");
    assert_eq!(v["base_bdevs_list"][1]["state"], "online", "{v}");
    assert!(read_all("Dg1") == image);
    assert_eq!(scrub("Dg", "check")["mismatch_cnt"], 0);
    drop(e);
    delete("Dg");
    for m in ["Dg0", "Dg1"] {
        malloc::delete(m).unwrap();
    }
}

#[test]
fn raid5_created_degraded_then_rebuilt() {
    let _s = serial();
    rt();
    let names = ["Dp0", "Dp1", "Dp2", "Dp3"];
    for m in names {
        mk_malloc(m, 2048, BS as u32);
    }
    rpc::create(
        serde_json::from_value(
            json!({"name": "Dp", "raid_level": "raid5", "strip_size_kb": 4,
            "base_bdevs": ["Dp0", "", "Dp2", "Dp3"]}),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(raid_info("Dp")["num_base_bdevs_operational"], 3);
    let e = registry::open("Dp", true).unwrap();
    let blocks = e.bdev.geometry().num_blocks;
    let image = pattern(blocks as usize * BS, 9);
    for off in (0..blocks).step_by(24) {
        let n = 24.min(blocks - off);
        write(&e, off, &image[off as usize * BS..(off + n) as usize * BS]);
    }
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": "Dp", "base_bdev": "Dp1"})).unwrap(),
    )
    .unwrap();
    wait_for("rebuild", || {
        let v = raid_info("Dp");
        v["process"].is_null() && v["num_base_bdevs_operational"] == 4
    });
    assert_eq!(scrub("Dp", "check")["mismatch_cnt"], 0);
    assert!(read_all("Dp") == image);
    drop(e);
    delete("Dp");
    for m in names {
        malloc::delete(m).unwrap();
    }
}
