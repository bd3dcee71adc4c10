//! RAID superblocks on real reactors: written at create, arrays reassembled from them after a
//! simulated restart, and corrupt or foreign superblocks refused with their reason.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{malloc, uring, IoStatus, IoType};
use oxstor_raid::layout::RaidLevel;
use oxstor_raid::persist;
use oxstor_raid::rpc;
use oxstor_raid::superblock::{MemberEntry, MemberState, Superblock, OFFSET_DONE, SUPERBLOCK_LEN};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{rt, serial};

fn io(entry: &Arc<BdevEntry>, t: IoType, off: u64, n: u64, data: Option<Vec<u8>>) -> Vec<u8> {
    rt();
    let (st, data) = blocking::io(
        1,
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
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect()
}

fn mk_malloc(name: &str, blocks: u64, bs: u32) {
    malloc::create(
        serde_json::from_value(json!({"name": name, "num_blocks": blocks, "block_size": bs}))
            .unwrap(),
    )
    .unwrap();
}

fn mk_uring(name: &str, path: &std::path::Path) {
    uring::create(
        serde_json::from_value(
            json!({"name": name, "filename": path.to_str().unwrap(), "block_size": 512}),
        )
        .unwrap(),
    )
    .unwrap();
}

fn raid_info(name: &str) -> Value {
    let all = rpc::get_bdevs(serde_json::from_value(json!({"category": "all"})).unwrap()).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn superblock_create_restart_reassembles_with_data() {
    let _s = serial();
    rt();
    let dir = std::env::temp_dir().join(format!("oxstor-raid-sb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<_> = (0..2).map(|i| dir.join(format!("m{i}.img"))).collect();
    for f in &files {
        let file = std::fs::File::create(f).unwrap();
        file.set_len(8 << 20).unwrap();
    }
    mk_uring("sbu0", &files[0]);
    mk_uring("sbu1", &files[1]);
    let uuid = "12345678-9abc-4def-8123-456789abcdef";
    rpc::create(
        serde_json::from_value(json!({
            "name": "sbr1", "raid_level": "raid1", "base_bdevs": ["sbu0", "sbu1"],
            "uuid": uuid, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup("sbr1").unwrap();
    // 8 MiB members minus the 1 MiB superblock area.
    assert_eq!(raid.bdev.geometry().num_blocks, (7 << 20) / 512);
    let info = raid_info("sbr1");
    assert_eq!(info["superblock"], true);
    assert_eq!(info["base_bdevs_list"][0]["data_offset"], 2048);
    assert!(raid.bdev.config_call().is_none());
    // Each member carries a superblock naming its slot; the array runs, so it is dirty.
    for (slot, m) in ["sbu0", "sbu1"].iter().enumerate() {
        let sb = persist::read_superblock(m).unwrap();
        assert_eq!(sb.name, "sbr1");
        assert_eq!(sb.own_entry, slot as u32);
        assert_eq!(sb.level, RaidLevel::Raid1);
        assert_eq!(sb.array_blocks, (7 << 20) / 512);
        assert!(!sb.clean);
    }
    let data = pattern(64 * 512, 3);
    io(&raid, IoType::Write, 100, 64, Some(data.clone()));
    // The data lands after the superblock area on the member.
    let member = registry::lookup("sbu0").unwrap();
    assert_eq!(io(&member, IoType::Read, 2048 + 100, 64, None), data);
    let events_before = persist::read_superblock("sbu0").unwrap().events;

    // "Restart": the array and its members go away, the members come back over the files.
    rpc::delete(serde_json::from_value(json!({"name": "sbr1"})).unwrap()).unwrap();
    let sb = persist::read_superblock("sbu0").unwrap();
    assert!(sb.clean, "delete marks the superblocks clean");
    assert!(sb.events > events_before);
    uring::delete("sbu0").unwrap();
    uring::delete("sbu1").unwrap();
    mk_uring("sbu0", &files[0]);
    persist::examine_all();
    // One copy would do for a clean mirror, but the array waits for the member it last ran
    // with rather than start degraded and turn it stale.
    assert!(registry::lookup("sbr1").is_err());
    mk_uring("sbu1", &files[1]);
    persist::examine_all();
    let raid = registry::lookup("sbr1").expect("array reassembled");
    assert_eq!(raid.bdev.uuid(), uuid);
    assert_eq!(raid.bdev.geometry().num_blocks, (7 << 20) / 512);
    assert_eq!(io(&raid, IoType::Read, 100, 64, None), data);
    let info = raid_info("sbr1");
    assert_eq!(info["state"], "online");
    assert!(persist::read_superblock("sbu1").unwrap().events > sb.events);

    rpc::delete(serde_json::from_value(json!({"name": "sbr1", "clear_sb": true})).unwrap())
        .unwrap();
    assert!(
        persist::read_superblock("sbu0").is_err(),
        "clear_sb zeroes it"
    );
    uring::delete("sbu0").unwrap();
    uring::delete("sbu1").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Writes a superblock (encoded by `raid::superblock`) to block 0 of a bdev.
fn put_sb(name: &str, bytes: &[u8]) {
    let e = registry::lookup(name).unwrap();
    let bs = e.bdev.geometry().block_size as usize;
    let blocks = SUPERBLOCK_LEN.div_ceil(bs);
    let mut data = vec![0u8; blocks * bs];
    data[..bytes.len()].copy_from_slice(bytes);
    io(&e, IoType::Write, 0, blocks as u64, Some(data));
}

fn crafted(uuid: u8, own: u32, events: u64) -> Superblock {
    Superblock {
        array_uuid: [uuid; 16],
        name: format!("craft{uuid}"),
        level: RaidLevel::Raid1,
        strip_blocks: 1,
        block_size: 512,
        member_count: 2,
        array_blocks: 2048,
        events,
        resync_offset: OFFSET_DONE,
        recovery_offset: OFFSET_DONE,
        members: (0..2)
            .map(|slot| MemberEntry {
                slot: Some(slot),
                state: MemberState::Active,
                uuid: [uuid ^ (slot as u8 + 1); 16],
                data_offset_blocks: 2048,
                data_size_blocks: 2048,
            })
            .collect(),
        own_entry: own,
        bitmap: None,
        clean: true,
        update_time: 0,
    }
}

fn encode(sb: &Superblock) -> [u8; SUPERBLOCK_LEN] {
    let mut out = [0u8; SUPERBLOCK_LEN];
    sb.encode(&mut out).unwrap();
    out
}

#[test]
fn corrupt_and_foreign_superblocks_are_refused_with_reason() {
    let _s = serial();
    rt();
    for n in [
        "cr_magic", "cr_crc", "cr_a0", "cr_a1", "cr_b0", "cr_s0", "cr_s1",
    ] {
        mk_malloc(n, 4096, 512);
    }
    let mut bad_magic = encode(&crafted(0x11, 0, 5));
    bad_magic[0] = b'X';
    put_sb("cr_magic", &bad_magic);
    let mut bad_crc = encode(&crafted(0x11, 0, 5));
    bad_crc[200] ^= 0xff; // inside the used length: the crc no longer matches
    put_sb("cr_crc", &bad_crc);
    // A healthy array 0x22 (two members) and a different array (0x33) that claims the same
    // name: the second is refused as a mixed-up array.
    put_sb("cr_a0", &encode(&crafted(0x22, 0, 7)));
    put_sb("cr_a1", &encode(&crafted(0x22, 1, 7)));
    let mut other = crafted(0x33, 0, 9);
    other.name = "craft34".into();
    put_sb("cr_b0", &encode(&other));
    // Array 0x44: member 1 missed updates (events 3 < 8) and must be left out.
    put_sb("cr_s0", &encode(&crafted(0x44, 0, 8)));
    put_sb("cr_s1", &encode(&crafted(0x44, 1, 3)));
    persist::examine_all();

    let reason = persist::refusal("cr_magic").unwrap();
    assert!(reason.contains("no oxstor RAID superblock"), "{reason}");
    let reason = persist::refusal("cr_crc").unwrap();
    assert!(reason.contains("checksum mismatch"), "{reason}");
    assert!(registry::lookup("cr_magic").unwrap().claimed_by().is_none());
    assert!(registry::lookup("cr_crc").unwrap().claimed_by().is_none());

    // 0x22 assembled from its two members.
    let raid = registry::lookup("craft34").expect("array 0x22 assembled");
    assert_eq!(raid.bdev.geometry().num_blocks, 2048);
    assert_eq!(raid_info("craft34")["num_base_bdevs_discovered"], 2);
    // ... which makes 0x33, with the same name, a mixed array.
    assert!(registry::lookup("cr_b0").unwrap().claimed_by().is_none());
    let reason = persist::refusal("cr_b0").unwrap();
    assert!(reason.contains("mixed arrays"), "{reason}");

    // 0x44 runs degraded from its current member; the stale one is reported, unclaimed.
    let info = raid_info("craft68");
    assert_eq!(info["state"], "online", "{info}");
    assert_eq!(info["num_base_bdevs_operational"], 1, "{info}");
    assert_eq!(info["stale_base_bdevs"][0]["name"], "cr_s1", "{info}");
    assert!(registry::lookup("cr_s1").unwrap().claimed_by().is_none());
    let reason = persist::refusal("cr_s1").unwrap();
    assert!(reason.contains("stale member: events 3"), "{reason}");
    // Its superblock on the current member moved on.
    assert!(persist::read_superblock("cr_s0").unwrap().events > 8);

    rpc::delete(serde_json::from_value(json!({"name": "craft34"})).unwrap()).unwrap();
    rpc::delete(serde_json::from_value(json!({"name": "craft68"})).unwrap()).unwrap();
    for n in [
        "cr_magic", "cr_crc", "cr_a0", "cr_a1", "cr_b0", "cr_s0", "cr_s1",
    ] {
        malloc::delete(n).unwrap();
    }
}
