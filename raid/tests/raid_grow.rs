//! Growing a raid1 (2 -> 3 copies) with `bdev_raid_add_base_bdev` on real reactors: the new
//! slot is rebuilt online while reads and writes run (reads never touch it before it is
//! rebuilt), every copy ends up identical, the superblocks describe three members, and the
//! array reassembles with three members after a restart.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{malloc, uring, IoStatus, IoType};
use oxstor_raid::persist;
use oxstor_raid::rebuild::{self, BdevRaidSetOptionsParams};
use oxstor_raid::rpc;
use oxstor_raid::superblock::MemberState;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{mk_uring, raid_info, rt, serial};

const BS: usize = 512;
/// Blocks of the 1 MiB superblock area before the data on each member.
const DATA_OFFSET: u64 = 2048;

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

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn states(v: &Value) -> Vec<String> {
    v["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["state"].as_str().unwrap_or("").to_string())
        .collect()
}

fn add(raid: &str, base: &str, spare: bool) -> Result<(), oxstor_bdev::BdevError> {
    let mut p = json!({"raid_bdev": raid, "base_bdev": base});
    if spare {
        p["spare"] = json!(true);
    }
    rpc::add_base_bdev(serde_json::from_value(p).unwrap())
}

fn set_options(window_kb: u64, mb_s: u64) {
    rebuild::set_options(BdevRaidSetOptionsParams {
        process_window_size_kb: Some(window_kb),
        process_max_bandwidth_mb_sec: Some(mb_s),
        ..Default::default()
    })
    .unwrap();
}

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A member's data area (after the superblock area), read directly.
fn member_data(name: &str, blocks: u64) -> Vec<u8> {
    let e = registry::lookup(name).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < blocks {
        let n = 2048.min(blocks - pos);
        out.extend(io(0, &e, IoType::Read, DATA_OFFSET + pos, n, None));
        pos += n;
    }
    out
}

/// Random reads (verified against the image) and writes (recorded in it) from both cores.
struct Load {
    image: Vec<u8>,
    x: u64,
}

impl Load {
    fn step(&mut self, raid: &Arc<BdevEntry>, i: u64) {
        let total = (self.image.len() / BS) as u64;
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        let n = 1 + self.x % 48;
        let off = (self.x >> 8) % (total - n);
        let core = (i % 2) as usize;
        let range = off as usize * BS..(off + n) as usize * BS;
        if i.is_multiple_of(3) {
            let d = pattern(range.len(), i as u8);
            io(core, raid, IoType::Write, off, n, Some(d.clone()));
            self.image[range].copy_from_slice(&d);
        } else {
            let got = io(core, raid, IoType::Read, off, n, None);
            assert!(
                got == self.image[range],
                "array blocks {off}+{n} read back wrong (op {i})"
            );
        }
    }

    fn check_all(&self, raid: &Arc<BdevEntry>, what: &str) {
        let total = (self.image.len() / BS) as u64;
        let mut off = 0;
        while off < total {
            let n = 1000.min(total - off);
            let got = io((off / 1000 % 2) as usize, raid, IoType::Read, off, n, None);
            assert!(
                got == self.image[off as usize * BS..][..n as usize * BS],
                "{what}: blocks {off}+{n}"
            );
            off += n;
        }
    }
}

#[test]
fn raid1_grows_from_two_to_three_copies_and_reassembles() {
    let _g = serial();
    rt();
    oxstor_raid::intent::set_chunk_bytes(64 * 1024);
    let dir = std::env::temp_dir().join(format!("oxstor-raid-grow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["grw0", "grw1", "grw2"];
    let files: Vec<_> = names.iter().map(|n| dir.join(format!("{n}.img"))).collect();
    for (i, f) in files.iter().enumerate() {
        // The new member starts out full of garbage: a read served from it before it is
        // rebuilt cannot go unnoticed.
        let fill = if i == 2 { 0xee } else { 0 };
        std::fs::write(f, vec![fill; 8 << 20]).unwrap();
    }
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, BS as u32);
    }
    rpc::create(
        serde_json::from_value(json!({
            "name": "Grow1", "raid_level": "raid1", "base_bdevs": ["grw0", "grw1"],
            "uuid": "52345678-9abc-4def-8123-456789abcdef", "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::open("Grow1", true).unwrap();
    let blocks = raid.bdev.geometry().num_blocks;
    let mut load = Load {
        image: pattern(blocks as usize * BS, 3),
        x: 0x9e37_79b9_7f4a_7c15,
    };
    let mut off = 0;
    while off < blocks {
        let n = 256.min(blocks - off);
        let d = load.image[off as usize * BS..][..n as usize * BS].to_vec();
        io(1, &raid, IoType::Write, off, n, Some(d));
        off += n;
    }
    let events_before = persist::read_superblock("grw0").unwrap().events;

    // Slow, small windows: the load runs before, inside and after the windows copied.
    set_options(16, 4);
    add("Grow1", "grw2", false).unwrap();
    let v = raid_info("Grow1");
    assert_eq!(v["num_base_bdevs"], 3, "{v:#}");
    assert_eq!(v["base_bdevs_list"][2]["name"], "grw2", "{v:#}");
    assert_eq!(v["process"]["type"], "rebuild", "{v:#}");
    assert_eq!(v["process"]["target"], "grw2", "{v:#}");
    assert_eq!(states(&v), ["online", "online", "rebuilding"], "{v:#}");
    // Every member's superblock now lists three slots, with events moved on.
    for n in names {
        let sb = persist::read_superblock(n).unwrap();
        assert_eq!(sb.member_count, 3, "{n}");
        assert!(sb.events > events_before, "{n}: events {}", sb.events);
    }
    assert!(persist::read_superblock("grw2").unwrap().recovery_offset != u64::MAX);

    let mut ops = 0u64;
    let mut progress_seen = false;
    loop {
        let v = raid_info("Grow1");
        if v["process"].is_null() {
            break;
        }
        progress_seen |= v["process"]["progress"]["blocks"].as_u64().unwrap_or(0) > 0;
        assert!(ops < 1_000_000, "rebuild never finished: {v:#}");
        for _ in 0..16 {
            load.step(&raid, ops);
            ops += 1;
        }
    }
    set_options(rebuild::DEFAULT_WINDOW_KB, 0);
    eprintln!("raid1 grow: {ops} reads/writes ran alongside the rebuild");
    assert!(progress_seen, "no rebuild progress was reported");
    // The 4 MiB/s cap keeps the rebuild going for seconds: at least one batch ran.
    assert!(ops >= 16, "only {ops} I/Os during the rebuild");
    let v = raid_info("Grow1");
    assert_eq!(v["state"], "online", "{v:#}");
    assert_eq!(v["num_base_bdevs_operational"], 3, "{v:#}");
    assert_eq!(states(&v), ["online"; 3], "{v:#}");
    assert_eq!(v["last_rebuild"]["full"], true, "{v:#}");
    load.check_all(&raid, "grown");

    let data: Vec<Vec<u8>> = names.iter().map(|n| member_data(n, blocks)).collect();
    assert!(data[0] == load.image, "grw0 differs from what was written");
    assert!(data[1] == data[0], "grw1 differs from grw0");
    assert!(data[2] == data[0], "the new member grw2 differs from grw0");
    // The rebuilt member alone serves everything.
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "grw0"})).unwrap()).unwrap();
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "grw1"})).unwrap()).unwrap();
    load.check_all(&raid, "only the new member left");
    add("Grow1", "grw0", false).unwrap();
    add("Grow1", "grw1", false).unwrap();
    wait_for("both members back", 60, || {
        let v = raid_info("Grow1");
        v["process"].is_null() && v["num_base_bdevs_operational"] == 3
    });
    assert_eq!(raid_info("Grow1")["num_base_bdevs"], 3);
    wait_for("every superblock to say active", 10, || {
        names.iter().all(|n| {
            persist::read_superblock(n).is_ok_and(|sb| {
                sb.member_count == 3 && sb.members.iter().all(|m| m.state == MemberState::Active)
            })
        })
    });

    // Restart: the array goes away cleanly, its members re-appear, examine reassembles it.
    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "Grow1"})).unwrap()).unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, BS as u32);
    }
    persist::examine_all();
    let raid = registry::open("Grow1", true).expect("array reassembled");
    let v = raid_info("Grow1");
    assert_eq!(v["num_base_bdevs"], 3, "{v:#}");
    assert_eq!(v["num_base_bdevs_operational"], 3, "{v:#}");
    assert_eq!(states(&v), ["online"; 3], "{v:#}");
    load.check_all(&raid, "reassembled");
    // The superblock array is not replayed from save_config (examine rebuilds it).
    assert!(raid.bdev.config_call().is_none());

    drop(raid);
    rpc::delete(serde_json::from_value(json!({"name": "Grow1", "clear_sb": true})).unwrap())
        .unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid1_without_superblock_grows_and_saves_three_members() {
    let _g = serial();
    rt();
    for n in ["gm0", "gm1", "gm2", "gm3"] {
        malloc::create(
            serde_json::from_value(json!({"name": n, "num_blocks": 4096, "block_size": BS}))
                .unwrap(),
        )
        .unwrap();
    }
    rpc::create(
        serde_json::from_value(
            json!({"name": "Grow2", "raid_level": "raid1", "base_bdevs": ["gm0", "gm1"]}),
        )
        .unwrap(),
    )
    .unwrap();
    let raid = registry::open("Grow2", true).unwrap();
    let image = pattern(4096 * BS, 9);
    io(0, &raid, IoType::Write, 0, 4096, Some(image.clone()));
    add("Grow2", "gm2", false).unwrap();
    wait_for("the new copy", 30, || {
        let v = raid_info("Grow2");
        v["process"].is_null() && v["num_base_bdevs_operational"] == 3
    });
    // No slot to fill, and asked for: a hot spare, not a fourth copy.
    add("Grow2", "gm3", true).unwrap();
    let v = raid_info("Grow2");
    assert_eq!(v["num_base_bdevs"], 3, "{v:#}");
    assert_eq!(states(&v), ["online", "online", "online", "spare"], "{v:#}");
    let call = raid.bdev.config_call().expect("save_config entry");
    assert_eq!(call.method, "bdev_raid_create");
    assert_eq!(call.params["base_bdevs"], json!(["gm0", "gm1", "gm2"]));
    assert_eq!(call.params["raid_level"], "raid1");
    let gm2 = registry::lookup("gm2").unwrap();
    assert!(io(1, &gm2, IoType::Read, 0, 4096, None) == image);
    // The new copy alone holds the data.
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "gm0"})).unwrap()).unwrap();
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "gm1"})).unwrap()).unwrap();
    assert!(io(1, &raid, IoType::Read, 0, 4096, None) == image);
    assert_eq!(raid_info("Grow2")["num_base_bdevs"], 3);
    drop((raid, gm2));
    rpc::delete(serde_json::from_value(json!({"name": "Grow2"})).unwrap()).unwrap();
    for n in ["gm0", "gm1", "gm2", "gm3"] {
        malloc::delete(n).unwrap();
    }
}
