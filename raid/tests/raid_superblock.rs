//! RAID superblocks on real reactors: written at create, arrays reassembled from them after a
//! simulated restart, and corrupt or foreign superblocks refused with their reason.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{error, malloc, uring, IoStatus, IoType};
use oxstor_raid::layout::RaidLevel;
use oxstor_raid::persist;
use oxstor_raid::rpc;
use oxstor_raid::superblock::{MemberEntry, MemberState, Superblock, OFFSET_DONE, SUPERBLOCK_LEN};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

mod common;
use common::{mk_malloc, mk_uring, raid_info, rt, serial};

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
    mk_uring("sbu0", &files[0], 512);
    mk_uring("sbu1", &files[1], 512);
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
    mk_uring("sbu0", &files[0], 512);
    persist::examine_all();
    // One copy would do for a clean mirror, but the array waits for the member it last ran
    // with rather than start degraded and turn it stale.
    assert!(registry::lookup("sbr1").is_err());
    mk_uring("sbu1", &files[1], 512);
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

fn mk_error(base: &str) -> String {
    error::create(serde_json::from_value(json!({"base_name": base})).unwrap()).unwrap()
}

fn add_base(raid: &str, base: &str, spare: bool) {
    rpc::add_base_bdev(
        serde_json::from_value(json!({"raid_bdev": raid, "base_bdev": base, "spare": spare}))
            .unwrap(),
    )
    .unwrap();
}

fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn base_states(info: &Value) -> Vec<(String, String)> {
    info["base_bdevs_list"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("").to_string(),
                        m["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The member-table entry of `uuid` in a superblock.
fn entry_of(sb: &Superblock, uuid: [u8; 16]) -> Option<&MemberEntry> {
    sb.members.iter().find(|m| m.uuid == uuid)
}

/// The uring bdevs under one array's files, with error bdevs over the slot members.
struct SpareRig {
    dir: std::path::PathBuf,
    /// uring names of the slot members (the array uses `EE_<name>`).
    members: Vec<String>,
    spare: String,
}

impl SpareRig {
    fn new(tag: &str, members: usize) -> SpareRig {
        let dir = std::env::temp_dir().join(format!("oxstor-raid-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = (0..members).map(|i| format!("{tag}_u{i}")).collect();
        for name in names.iter().chain(std::iter::once(&format!("{tag}_spare"))) {
            let file = std::fs::File::create(dir.join(format!("{name}.img"))).unwrap();
            file.set_len(8 << 20).unwrap();
        }
        SpareRig {
            dir,
            members: names,
            spare: format!("{tag}_spare"),
        }
    }

    fn attach_member(&self, i: usize) {
        let name = &self.members[i];
        mk_uring(name, &self.dir.join(format!("{name}.img")), 512);
        mk_error(name);
    }

    fn attach_spare(&self) {
        mk_uring(
            &self.spare,
            &self.dir.join(format!("{}.img", self.spare)),
            512,
        );
    }

    /// Deletes the bdevs (not the files), as a daemon restart would lose them.
    fn detach(&self) {
        for name in &self.members {
            let _ = error::delete(&format!("EE_{name}"));
            let _ = uring::delete(name);
        }
        let _ = uring::delete(&self.spare);
    }
}

impl Drop for SpareRig {
    fn drop(&mut self) {
        self.detach();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A hot spare of a superblock raid5 is recorded in every superblock (its own names it a
/// spare), comes back as a spare after restarts (found with the members, and found after
/// the array already runs), takes a failed member's slot by itself, and keeps its member
/// uuid in the slot.
#[test]
fn superblock_spare_survives_restart_and_takes_over() {
    let _s = serial();
    rt();
    let rig = SpareRig::new("sps", 3);
    let members: Vec<String> = rig.members.iter().map(|m| format!("EE_{m}")).collect();
    for i in 0..3 {
        rig.attach_member(i);
    }
    rig.attach_spare();
    rpc::create(
        serde_json::from_value(json!({
            "name": "sps5", "raid_level": "raid5", "strip_size_kb": 64,
            "base_bdevs": members, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    add_base("sps5", &rig.spare, true);
    let spare_sb = persist::read_superblock(&rig.spare).expect("the spare has a superblock");
    let own = spare_sb.own().expect("own entry").clone();
    assert_eq!(own.slot, None);
    assert_eq!(own.state, MemberState::Spare);
    assert_eq!(spare_sb.member_count, 3);
    assert_eq!(spare_sb.members.len(), 4);
    for m in &members {
        let sb = persist::read_superblock(m).unwrap();
        assert_eq!(sb.array_uuid, spare_sb.array_uuid);
        assert_eq!(
            entry_of(&sb, own.uuid).map(|e| (e.slot, e.state)),
            Some((None, MemberState::Spare)),
            "{m} lists the spare"
        );
    }
    let raid = registry::lookup("sps5").unwrap();
    let data = pattern(256 * 512, 11);
    io(&raid, IoType::Write, 300, 256, Some(data.clone()));

    // Restart 1: the spare appears among the members and is assembled with them.
    rpc::delete(serde_json::from_value(json!({"name": "sps5"})).unwrap()).unwrap();
    assert!(persist::read_superblock(&rig.spare).unwrap().clean);
    rig.detach();
    rig.attach_spare();
    rig.attach_member(0);
    rig.attach_member(1);
    persist::examine_all();
    assert!(registry::lookup("sps5").is_err(), "waits for member 2");
    rig.attach_member(2);
    persist::examine_all();
    let info = raid_info("sps5");
    assert_eq!(info["state"], "online", "{info:#}");
    assert_eq!(
        base_states(&info).last().cloned(),
        Some((rig.spare.clone(), "spare".to_string())),
        "{info:#}"
    );
    assert_eq!(info["num_base_bdevs"], 3, "a spare is no slot: {info:#}");
    assert_eq!(info["stale_base_bdevs"], json!([]), "{info:#}");
    assert!(persist::refusal(&rig.spare).is_none());

    // Restart 2: the spare appears after the array already runs, and joins it.
    rpc::delete(serde_json::from_value(json!({"name": "sps5"})).unwrap()).unwrap();
    rig.detach();
    for i in 0..3 {
        rig.attach_member(i);
    }
    persist::examine_all();
    assert_eq!(base_states(&raid_info("sps5")).len(), 3);
    rig.attach_spare();
    persist::examine_all();
    let info = raid_info("sps5");
    assert_eq!(
        base_states(&info).last().cloned(),
        Some((rig.spare.clone(), "spare".to_string())),
        "{info:#}"
    );
    let sb = persist::read_superblock(&members[0]).unwrap();
    assert_eq!(
        entry_of(&sb, own.uuid).map(|e| e.state),
        Some(MemberState::Spare),
        "the spare keeps its uuid across restarts"
    );

    // A member fails under I/O: the spare takes its slot and is rebuilt.
    error::inject(
        &serde_json::from_value(json!({
            "name": members[1], "io_type": "all", "error_type": "failure", "num": 1_000_000
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup("sps5").unwrap();
    io(&raid, IoType::Write, 0, 384, Some(pattern(384 * 512, 5)));
    wait_for("the spare to be rebuilt into slot 1", 30, || {
        let info = raid_info("sps5");
        info.get("process").is_none()
            && base_states(&info)
                == [
                    (members[0].clone(), "online".to_string()),
                    (rig.spare.clone(), "online".to_string()),
                    (members[2].clone(), "online".to_string()),
                ]
    });
    let mut expected = pattern(384 * 512, 5);
    expected.extend_from_slice(&data[(384 - 300) * 512..]);
    assert_eq!(io(&raid, IoType::Read, 0, 556, None), expected);
    // The superblocks name it the slot's member, by the uuid it had as a spare.
    wait_for("the superblocks to record the rebuilt spare", 10, || {
        persist::read_superblock(&rig.spare).is_ok_and(|sb| {
            sb.own().map(|m| (m.slot, m.state)) == Some((Some(1), MemberState::Active))
                && sb.own().map(|m| m.uuid) == Some(own.uuid)
        })
    });
    let sb = persist::read_superblock(&members[0]).unwrap();
    assert_eq!(
        entry_of(&sb, own.uuid).map(|e| (e.slot, e.state)),
        Some((Some(1), MemberState::Active))
    );
    assert_eq!(sb.members.len(), 3, "no spare left in the table");

    rpc::delete(serde_json::from_value(json!({"name": "sps5", "clear_sb": true})).unwrap())
        .unwrap();
}

/// Removing a hot spare drops it from every member's table and clears its own superblock,
/// so after a restart it is neither a spare nor refused as a stale member.
#[test]
fn superblock_spare_removal_is_recorded() {
    let _s = serial();
    rt();
    let rig = SpareRig::new("spr", 2);
    let members: Vec<String> = rig.members.iter().map(|m| format!("EE_{m}")).collect();
    for i in 0..2 {
        rig.attach_member(i);
    }
    rig.attach_spare();
    rpc::create(
        serde_json::from_value(json!({
            "name": "spr1", "raid_level": "raid1", "base_bdevs": members, "superblock": true
        }))
        .unwrap(),
    )
    .unwrap();
    add_base("spr1", &rig.spare, true);
    let spare_uuid = persist::read_superblock(&rig.spare)
        .unwrap()
        .own()
        .unwrap()
        .uuid;
    assert!(entry_of(&persist::read_superblock(&members[0]).unwrap(), spare_uuid).is_some());

    rpc::remove_base_bdev(serde_json::from_value(json!({"name": rig.spare})).unwrap()).unwrap();
    assert!(registry::lookup(&rig.spare).unwrap().claimed_by().is_none());
    let reason = persist::read_superblock(&rig.spare).unwrap_err();
    assert!(reason.contains("no oxstor RAID superblock"), "{reason}");
    for m in &members {
        let sb = persist::read_superblock(m).unwrap();
        assert!(entry_of(&sb, spare_uuid).is_none(), "{m} still lists it");
        assert_eq!(sb.members.len(), 2);
    }
    let info = raid_info("spr1");
    assert_eq!(base_states(&info).len(), 2, "{info:#}");

    // Restart: the array comes back with its two members, the former spare stays free.
    rpc::delete(serde_json::from_value(json!({"name": "spr1"})).unwrap()).unwrap();
    rig.detach();
    rig.attach_spare();
    rig.attach_member(0);
    rig.attach_member(1);
    persist::examine_all();
    let info = raid_info("spr1");
    assert_eq!(info["state"], "online", "{info:#}");
    assert_eq!(base_states(&info).len(), 2, "{info:#}");
    assert!(registry::lookup(&rig.spare).unwrap().claimed_by().is_none());
    let reason = persist::refusal(&rig.spare).unwrap_or_default();
    assert!(
        reason.is_empty() || reason.contains("no oxstor RAID superblock"),
        "{reason}"
    );

    rpc::delete(serde_json::from_value(json!({"name": "spr1", "clear_sb": true})).unwrap())
        .unwrap();
}

/// md kicks a member that missed updates and rebuilds it: after a restart, a member that was
/// out of the array (its slot recorded missing) rejoins its slot by itself and gets only what
/// it missed; a member the array recorded as faulty stays out, with its reason.
#[test]
fn stale_member_rejoins_after_restart_and_gets_only_what_it_missed() {
    let _s = serial();
    rt();
    let dir = std::env::temp_dir().join(format!("oxstor-raid-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files: Vec<_> = (0..3).map(|i| dir.join(format!("s{i}.img"))).collect();
    for f in &files {
        std::fs::File::create(f).unwrap().set_len(16 << 20).unwrap();
    }
    let names = ["stu0", "stu1", "stu2"];
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, 512);
    }
    let failing = mk_error("stu2");
    // Small bitmap regions, so "what it missed" is much less than the member.
    oxstor_raid::intent::set_chunk_bytes(256 << 10);
    rpc::create(
        serde_json::from_value(json!({
            "name": "str1", "raid_level": "raid1", "superblock": true,
            "base_bdevs": ["stu0", "stu1", failing]
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup("str1").unwrap();
    let old = pattern(256 * 512, 5);
    io(&raid, IoType::Write, 0, 256, Some(old.clone()));

    // stu1 leaves (its slot is recorded missing); the third member fails under a write
    // (recorded faulty).
    rpc::remove_base_bdev(serde_json::from_value(json!({"name": "stu1"})).unwrap()).unwrap();
    error::inject(
        &serde_json::from_value(json!({
            "name": failing, "io_type": "write", "error_type": "failure", "num": 1_000_000
        }))
        .unwrap(),
    )
    .unwrap();
    // While both are away, 64 KiB change, far from the old data.
    let new = pattern(128 * 512, 9);
    let at = 20_000;
    io(&raid, IoType::Write, at, 128, Some(new.clone()));
    wait_for("the failed member to be marked", 10, || {
        base_states(&raid_info("str1"))[2].1 != "online"
    });
    drop(raid);

    // Restart over the same files (the third member without its error bdev).
    rpc::delete(serde_json::from_value(json!({"name": "str1"})).unwrap()).unwrap();
    error::delete(&failing).unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    for (n, f) in names.iter().zip(&files) {
        mk_uring(n, f, 512);
    }
    persist::examine_all();
    let raid = registry::lookup("str1").expect("array reassembled");
    wait_for("the stale member's rebuild", 30, || {
        let info = raid_info("str1");
        info.get("process").is_none() && info.get("last_rebuild").is_some()
    });
    let info = raid_info("str1");
    let states = base_states(&info);
    assert_eq!(
        states[1],
        ("stu1".to_string(), "online".to_string()),
        "{info:#}"
    );
    assert_eq!(info["last_rebuild"]["full"], false, "{info:#}");
    let copied = info["last_rebuild"]["bytes_copied"].as_u64().unwrap();
    assert!(
        (64 << 10..=4 << 20).contains(&copied),
        "copied {copied} bytes: the region written while away, not the 15 MiB member"
    );
    // The faulty member stays out, and says why.
    assert_ne!(states[2].0, "stu2", "{info:#}");
    let why = persist::refusal("stu2").unwrap_or_default();
    assert!(why.contains("stale"), "refusal of stu2: {why}");
    // stu1 holds the new data at its data offset, and still the old.
    let member = registry::lookup("stu1").unwrap();
    assert_eq!(io(&member, IoType::Read, 2048 + at, 128, None), new);
    assert_eq!(io(&member, IoType::Read, 2048, 256, None), old);
    assert_eq!(io(&raid, IoType::Read, at, 128, None), new);
    drop((raid, member));

    rpc::delete(serde_json::from_value(json!({"name": "str1", "clear_sb": true})).unwrap())
        .unwrap();
    oxstor_raid::intent::set_chunk_bytes(oxstor_raid::bitmap::DEFAULT_CHUNK_BYTES);
    for n in names {
        let _ = uring::delete(n);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn set_rebuild_rate(window_kb: u64, mb_s: u64) {
    oxstor_raid::rebuild::set_options(oxstor_raid::rebuild::BdevRaidSetOptionsParams {
        process_window_size_kb: Some(window_kb),
        process_max_bandwidth_mb_sec: Some(mb_s),
        ..Default::default()
    })
    .unwrap();
}

fn read_all(entry: &Arc<BdevEntry>, off: u64, blocks: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks as usize * 512);
    let mut at = 0;
    while at < blocks {
        let len = 2048.min(blocks - at);
        out.extend(io(entry, IoType::Read, off + at, len, None));
        at += len;
    }
    out
}

/// An interrupted rebuild records its progress in the target's superblock while it runs
/// (md's recovery_offset) and, after a restart, resumes there instead of starting over; the
/// writes that reached the target below the checkpoint while it rebuilt are kept.
///
/// `prepare` makes the array start rebuilding `target` (a uring member over the rig's
/// files) with the rate capped.
fn rebuild_resumes_from_checkpoint(
    tag: &str,
    level: &str,
    members: usize,
    prepare: impl FnOnce(&str, &[String]),
    target: usize,
) {
    let _s = serial();
    rt();
    let dir = std::env::temp_dir().join(format!("oxstor-raid-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names: Vec<String> = (0..=members).map(|i| format!("{tag}_u{i}")).collect();
    let file = |n: &String| dir.join(format!("{n}.img"));
    for n in &names {
        std::fs::File::create(file(n))
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        mk_uring(n, &file(n), 512);
    }
    let raid_name = format!("{tag}_r");
    rpc::create(
        serde_json::from_value(json!({
            "name": raid_name, "raid_level": level, "superblock": true,
            "strip_size_kb": 64, "base_bdevs": names[..members]
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup(&raid_name).unwrap();
    let array_blocks = raid.bdev.geometry().num_blocks;
    let old = pattern(array_blocks as usize * 512, 11);
    for (i, piece) in old.chunks(2048 * 512).enumerate() {
        let blocks = (piece.len() / 512) as u64;
        io(
            &raid,
            IoType::Write,
            i as u64 * 2048,
            blocks,
            Some(piece.to_vec()),
        );
    }

    persist::set_checkpoint_period(Duration::from_millis(200));
    set_rebuild_rate(64, 1);
    prepare(&raid_name, &names);
    let target_name = &names[target];
    let member_blocks = (7 << 20) / 512;
    let mut checkpoint = 0;
    wait_for("a checkpoint past 40% of the rebuild", 9, || {
        let info = raid_info(&raid_name);
        let percent = info["process"]["progress"]["percent"].as_u64().unwrap_or(0);
        let sb = persist::read_superblock(target_name).unwrap();
        checkpoint = sb.recovery_offset;
        percent >= 40 && checkpoint != OFFSET_DONE && checkpoint * 100 / member_blocks >= 25
    });
    let sb = persist::read_superblock(target_name).unwrap();
    assert_eq!(sb.own().unwrap().state, MemberState::Rebuilding);
    assert!(
        checkpoint > 0 && checkpoint < member_blocks,
        "checkpoint {checkpoint} of {member_blocks}"
    );
    // A write below the checkpoint reaches the target now, and is not copied again later.
    let fresh = pattern(64 * 512, 23);
    let fresh_at = checkpoint / 4;
    io(&raid, IoType::Write, fresh_at, 64, Some(fresh.clone()));
    drop(raid);

    // Restart: the clean teardown records the latest checkpoint.
    rpc::delete(serde_json::from_value(json!({"name": raid_name})).unwrap()).unwrap();
    let sb = persist::read_superblock(target_name).unwrap();
    assert!(sb.clean);
    let resume_at = sb.recovery_offset;
    assert!(
        (checkpoint..member_blocks).contains(&resume_at),
        "{resume_at} not in {checkpoint}..{member_blocks}"
    );
    for n in &names {
        uring::delete(n).unwrap();
    }
    for n in &names {
        mk_uring(n, &file(n), 512);
    }
    persist::examine_all();
    let raid = registry::lookup(&raid_name).expect("array reassembled");
    let mut progress = 0;
    wait_for("the resumed rebuild to report progress", 5, || {
        let info = raid_info(&raid_name);
        progress = info["process"]["progress"]["blocks"].as_u64().unwrap_or(0);
        progress > 0
    });
    assert!(
        progress >= resume_at / 128 * 128,
        "progress {progress} below the checkpoint {resume_at}: it started over"
    );
    set_rebuild_rate(1024, 0);
    wait_for("the resumed rebuild to finish", 20, || {
        let info = raid_info(&raid_name);
        info.get("process").is_none() && info.get("last_rebuild").is_some()
    });
    let info = raid_info(&raid_name);
    assert!(
        base_states(&info).iter().all(|(_, s)| s == "online"),
        "{info:#}"
    );
    let copied = info["last_rebuild"]["bytes_copied"].as_u64().unwrap();
    let left = (member_blocks - resume_at) * 512;
    assert!(
        copied <= left + (64 << 10) && copied + (64 << 10) >= left,
        "copied {copied} bytes, {left} were left after the checkpoint"
    );

    // Every byte of the array reads back, and the target holds what its partner holds.
    let mut expect = old;
    expect[fresh_at as usize * 512..][..fresh.len()].copy_from_slice(&fresh);
    assert!(
        read_all(&raid, 0, array_blocks) == expect,
        "array data differs"
    );
    let partner = (0..members).find(|&m| m != target).unwrap();
    let tgt = registry::lookup(target_name).unwrap();
    let other = registry::lookup(&names[partner]).unwrap();
    if level == "raid1" {
        assert!(
            read_all(&tgt, 2048, member_blocks) == read_all(&other, 2048, member_blocks),
            "the rebuilt member differs from its mirror"
        );
    } else {
        // Without another member its strips are rebuilt from the target's: the array
        // reads back right only if the target is.
        rpc::remove_base_bdev(serde_json::from_value(json!({"name": names[partner]})).unwrap())
            .unwrap();
        assert!(
            read_all(&raid, 0, array_blocks) == expect,
            "array data differs without {}",
            names[partner]
        );
    }
    wait_for("the superblock to say the target is current", 5, || {
        let sb = persist::read_superblock(target_name).unwrap();
        sb.recovery_offset == OFFSET_DONE && sb.own().unwrap().state == MemberState::Active
    });
    drop((raid, tgt, other));

    rpc::delete(serde_json::from_value(json!({"name": raid_name, "clear_sb": true})).unwrap())
        .unwrap();
    persist::set_checkpoint_period(Duration::from_secs(5));
    for n in &names {
        let _ = uring::delete(n);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid1_rebuild_resumes_from_checkpoint_after_restart() {
    // A healthy raid1 grows to a third copy, rebuilt from the others.
    rebuild_resumes_from_checkpoint(
        "ckp1",
        "raid1",
        2,
        |raid, names| add_base(raid, &names[2], false),
        2,
    );
}

#[test]
fn raid5_rebuild_resumes_from_checkpoint_after_restart() {
    // A member leaves and a new device takes its slot.
    rebuild_resumes_from_checkpoint(
        "ckp5",
        "raid5",
        3,
        |raid, names| {
            rpc::remove_base_bdev(serde_json::from_value(json!({"name": names[1]})).unwrap())
                .unwrap();
            add_base(raid, &names[3], false);
        },
        3,
    );
}

#[test]
fn raid10_rebuild_resumes_from_checkpoint_after_restart() {
    // Slot 1 (the partner of slot 0) is replaced by a new device.
    rebuild_resumes_from_checkpoint(
        "ckp10",
        "raid10",
        4,
        |raid, names| {
            rpc::remove_base_bdev(serde_json::from_value(json!({"name": names[1]})).unwrap())
                .unwrap();
            add_base(raid, &names[4], false);
        },
        4,
    );
}

/// A raid5 that crashed (superblocks dirty) and came back without a member does not start by
/// itself, as in md: its parity may be torn. md's `start_dirty_degraded` starts it, and the
/// data the crash did not tear reads back, the missing member's strips from parity.
#[test]
fn dirty_degraded_raid5_waits_for_start_dirty_degraded() {
    let _s = serial();
    rt();
    let dir = std::env::temp_dir().join(format!("oxstor-raid-dd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["ddu0", "ddu1", "ddu2"];
    let files: Vec<_> = names.iter().map(|n| dir.join(format!("{n}.img"))).collect();
    for (n, f) in names.iter().zip(&files) {
        std::fs::File::create(f).unwrap().set_len(8 << 20).unwrap();
        mk_uring(n, f, 512);
    }
    rpc::create(
        serde_json::from_value(json!({
            "name": "dd5", "raid_level": "raid5", "strip_size_kb": 64, "superblock": true,
            "base_bdevs": names
        }))
        .unwrap(),
    )
    .unwrap();
    let raid = registry::lookup("dd5").unwrap();
    let blocks = raid.bdev.geometry().num_blocks;
    let data = pattern(blocks as usize * 512, 17);
    for (i, piece) in data.chunks(2048 * 512).enumerate() {
        let n = (piece.len() / 512) as u64;
        io(
            &raid,
            IoType::Write,
            i as u64 * 2048,
            n,
            Some(piece.to_vec()),
        );
    }
    drop(raid);
    // The members as a crash leaves them: written through (O_DIRECT), superblocks dirty.
    let crashed: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!persist::read_superblock("ddu0").unwrap().clean);
    rpc::delete(serde_json::from_value(json!({"name": "dd5"})).unwrap()).unwrap();
    for n in names {
        uring::delete(n).unwrap();
    }
    for (f, bytes) in files.iter().zip(&crashed).take(2) {
        std::fs::write(f, bytes).unwrap();
    }
    // It comes back without ddu2.
    for (n, f) in names.iter().zip(&files).take(2) {
        mk_uring(n, f, 512);
    }
    persist::examine_all();
    assert!(
        registry::lookup("dd5").is_err(),
        "a dirty degraded raid5 must not start by itself"
    );
    rpc::set_options(oxstor_raid::rebuild::BdevRaidSetOptionsParams {
        start_dirty_degraded: Some(true),
        ..Default::default()
    })
    .unwrap();
    let raid = registry::lookup("dd5").expect("started by start_dirty_degraded");
    let info = raid_info("dd5");
    assert_eq!(info["state"], "online", "{info:#}");
    assert_eq!(info["num_base_bdevs_operational"], 2, "{info:#}");
    assert!(read_all(&raid, 0, blocks) == data, "data differs");
    drop(raid);

    rpc::set_options(oxstor_raid::rebuild::BdevRaidSetOptionsParams {
        start_dirty_degraded: Some(false),
        ..Default::default()
    })
    .unwrap();
    rpc::delete(serde_json::from_value(json!({"name": "dd5", "clear_sb": true})).unwrap()).unwrap();
    for n in names.iter().take(2) {
        let _ = uring::delete(n);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
