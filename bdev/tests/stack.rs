//! The bdev layer on real reactors: split, claims, stacking, uring on a file, error injection.

use oxstor_bdev::blocking;
use oxstor_bdev::registry::{self, BdevEntry};
use oxstor_bdev::{delay, error, malloc, null, uring, IoStatus, IoType};
use oxstor_reactor::{CoreMask, Handle, Runtime, RuntimeConfig};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One runtime for the whole test binary: the bdev registry is process-wide.
fn rt() -> Handle {
    static RT: OnceLock<Mutex<Runtime>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        let rt = Runtime::start(RuntimeConfig {
            cores: CoreMask::from_cores(vec![0, 1]).unwrap(),
            ..Default::default()
        })
        .unwrap();
        registry::set_runtime(Some(rt.handle()));
        Mutex::new(rt)
    });
    rt.lock().unwrap().handle()
}

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

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn split_on_optimal_boundary_and_max_transfer_keeps_data_in_place() {
    rt();
    malloc::create(
        serde_json::from_value(serde_json::json!({
            "name": "SplitMalloc", "num_blocks": 1024, "block_size": 512, "optimal_io_boundary": 8
        }))
        .unwrap(),
    )
    .unwrap();
    let e = registry::open("SplitMalloc", true).unwrap();
    // 300 blocks from block 5: crosses many 8-block boundaries and the 128 KiB transfer cap.
    let data = pattern(300 * 512, 3);
    assert_eq!(
        io(0, &e, IoType::Write, 5, 300, Some(data.clone())).0,
        IoStatus::Success
    );
    let (st, back) = io(1, &e, IoType::Read, 5, 300, None);
    assert_eq!(st, IoStatus::Success);
    assert!(back == data, "data read back differs from data written");
    let s = registry::iostat(&e);
    assert_eq!(s.write.ops, 1, "a split write counts once at the top");
    assert_eq!(s.read.bytes, 300 * 512);
    // Out of range and wrong buffer sizes fail cleanly.
    assert_eq!(
        io(0, &e, IoType::Read, 1020, 8, None).0,
        IoStatus::Failed(libc::EINVAL)
    );
    let short = Some(vec![0u8; 512]);
    assert_eq!(
        io(0, &e, IoType::Write, 0, 2, short).0,
        IoStatus::Failed(libc::EINVAL)
    );
    malloc::delete("SplitMalloc").unwrap();
}

#[test]
fn claims_protect_members_and_stacking_forwards_io() {
    rt();
    malloc::create(
        serde_json::from_value(serde_json::json!({
            "name": "Base0", "num_blocks": 256, "block_size": 4096
        }))
        .unwrap(),
    )
    .unwrap();
    delay::create(
        serde_json::from_value(serde_json::json!({
            "base_bdev_name": "Base0", "name": "Slow0",
            "avg_read_latency": 2000, "p99_read_latency": 2000,
            "avg_write_latency": 1000, "p99_write_latency": 1000
        }))
        .unwrap(),
    )
    .unwrap();
    assert!(
        registry::open("Base0", true).is_err(),
        "a claimed bdev must not open for writes"
    );
    let err = malloc::delete("Base0").unwrap_err();
    assert_eq!(err.errno(), libc::EBUSY);
    let slow = registry::open("Slow0", true).unwrap();
    let data = pattern(4096, 9);
    let t = Instant::now();
    assert_eq!(
        io(0, &slow, IoType::Write, 3, 1, Some(data.clone())).0,
        IoStatus::Success
    );
    let (st, back) = io(0, &slow, IoType::Read, 3, 1, None);
    assert!(
        t.elapsed() >= Duration::from_micros(3000),
        "delay bdev did not delay"
    );
    assert_eq!(st, IoStatus::Success);
    assert!(back == data);
    let base_stat = registry::iostat(&registry::lookup("Base0").unwrap());
    assert_eq!(base_stat.read.ops, 1, "the read reached the base bdev");
    delay::delete("Slow0").unwrap();
    malloc::delete("Base0").unwrap();
    assert!(registry::lookup("Base0").is_err());
}

#[test]
fn error_bdev_fails_the_requested_count_then_recovers() {
    rt();
    null::create(
        serde_json::from_value(serde_json::json!({
            "name": "ErrBase", "num_blocks": 128, "block_size": 512
        }))
        .unwrap(),
    )
    .unwrap();
    let name =
        error::create(serde_json::from_value(serde_json::json!({"base_name": "ErrBase"})).unwrap())
            .unwrap();
    assert_eq!(name, "EE_ErrBase");
    error::inject(
        &serde_json::from_value(serde_json::json!({
            "name": "EE_ErrBase", "io_type": "write", "error_type": "failure", "num": 2
        }))
        .unwrap(),
    )
    .unwrap();
    let e = registry::open("EE_ErrBase", true).unwrap();
    let w = || io(0, &e, IoType::Write, 0, 1, Some(vec![1; 512])).0;
    assert_eq!(w(), IoStatus::Failed(libc::EIO));
    assert_eq!(w(), IoStatus::Failed(libc::EIO));
    assert_eq!(w(), IoStatus::Success);
    assert_eq!(
        io(0, &e, IoType::Read, 0, 1, None).0,
        IoStatus::Success,
        "reads were not targeted"
    );
    assert!(error::inject(
        &serde_json::from_value(serde_json::json!({
            "name": "EE_ErrBase", "io_type": "bogus", "error_type": "failure"
        }))
        .unwrap()
    )
    .is_err());
    error::delete("EE_ErrBase").unwrap();
    null::delete("ErrBase").unwrap();
}

#[test]
fn uring_bdev_reads_writes_flushes_and_unmaps_a_file() {
    rt();
    let dir = std::env::temp_dir().join(format!("oxstor-uring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    uring::create(
        serde_json::from_value(serde_json::json!({
            "name": "Uring0", "filename": path.to_str().unwrap(), "block_size": 4096
        }))
        .unwrap(),
    )
    .unwrap();
    let e = registry::open("Uring0", true).unwrap();
    assert_eq!(e.bdev.geometry().num_blocks, 1024);
    let data = pattern(8 * 4096, 77);
    assert_eq!(
        io(0, &e, IoType::Write, 100, 8, Some(data.clone())).0,
        IoStatus::Success
    );
    assert_eq!(io(0, &e, IoType::Flush, 0, 0, None).0, IoStatus::Success);
    let (st, back) = io(1, &e, IoType::Read, 100, 8, None);
    assert_eq!(st, IoStatus::Success);
    assert!(back == data);
    // The bytes are really in the file.
    let file = std::fs::read(&path).unwrap();
    assert!(file[100 * 4096..108 * 4096] == data[..]);
    assert_eq!(io(0, &e, IoType::Unmap, 100, 4, None).0, IoStatus::Success);
    let (_, back) = io(0, &e, IoType::Read, 100, 8, None);
    assert!(
        back[..4 * 4096].iter().all(|&b| b == 0),
        "unmapped range reads as zeroes"
    );
    assert!(back[4 * 4096..] == data[4 * 4096..]);
    uring::delete("Uring0").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn duplicate_names_and_bad_geometry_are_refused() {
    rt();
    let p = || {
        serde_json::from_value(
            serde_json::json!({"name": "Dup0", "num_blocks": 8, "block_size": 512}),
        )
        .unwrap()
    };
    null::create(p()).unwrap();
    assert_eq!(null::create(p()).unwrap_err().errno(), libc::EEXIST);
    null::delete("Dup0").unwrap();
    let bad = serde_json::from_value(
        serde_json::json!({"name": "Bad0", "num_blocks": 8, "block_size": 1000}),
    )
    .unwrap();
    assert_eq!(null::create(bad).unwrap_err().errno(), libc::EINVAL);
    let missing = serde_json::json!({"name": "X", "filename": "/nonexistent/file"});
    assert!(uring::create(serde_json::from_value(missing).unwrap()).is_err());
}
