//! `piimg flash` against loop devices created (and detached) here and against image
//! files: the written card, every refusal, fault injection, and interop with
//! `bmaptool copy` and `dd`. Never touches a real disk of the machine: the "system
//! disk" cases inject their facts (mountinfo, swaps, sysfs) around a loop device.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use piimg::bmap::Bmap;
use piimg::flash::{
    self, CardState, FaultInjection, FlashError, FlashOptions, MapOrigin, Refusal, Source,
    SystemView, TargetPolicy, target,
};
use piimg::image::{Image, usage};
use piimg::progress::{OutputMode, Reporter};

mod support;

use support::loopdev::{Loop, loop_available, run};

const MIB: u64 = 1 << 20;
const FORCE: TargetPolicy = TargetPolicy {
    force: true,
    force_file: false,
};

// ---------------------------------------------------------------- helpers

/// Deterministic incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes an MBR at sector 0 of `f` (an image of `size` bytes): disk id 0x12345678,
/// one partition from 1 MiB to the end, so the image engine takes it. Its type is
/// 0xda ("non-FS data"): its bytes are noise, no file system a map could read, so a
/// file-system map can only keep it whole.
fn put_mbr(f: &File, size: u64) {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    let e = &mut s[446..462];
    e[4] = 0xda;
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&((size / 512 - 2048) as u32).to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xaa;
    f.write_at(&s, 0).unwrap();
}

/// The image's file-system block map, as flash writes it without a `.bmap`.
fn used(image: &Path) -> Vec<(u64, u64)> {
    usage::used_ranges(&Image::open(image).unwrap()).unwrap()
}

fn used_bytes(image: &Path) -> u64 {
    used(image).iter().map(|(a, b)| b - a).sum()
}

/// Whether `sfdisk -d` finds a partition table on `dev`.
fn sfdisk_finds_table(dev: &Path) -> bool {
    Command::new("sfdisk")
        .arg("-d")
        .arg(dev)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A 24 MiB sparse disk image: an MBR at 0, data in the first MiB after it, a 5 MiB
/// run crossing 4 MiB boundaries, scattered blocks, and a tail.
fn make_image(path: &Path) -> u64 {
    let size = 24 * MIB;
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    put_mbr(&f, size);
    f.write_at(&noise(8192, 2), 512 * 1024).unwrap();
    f.write_at(&noise(5 * MIB as usize + 4096, 3), 3 * MIB)
        .unwrap();
    f.write_at(&noise(4096, 4), 13 * MIB).unwrap();
    f.write_at(&noise(70_000, 5), 17 * MIB + 8192).unwrap();
    f.write_at(&noise(4096, 6), size - 4096).unwrap();
    f.sync_all().unwrap();
    size
}

/// A file of `size` bytes filled with 0xAA, so untouched bytes are recognisable.
fn make_backing(path: &Path, size: u64) {
    fs::write(path, vec![0xAAu8; size as usize]).unwrap();
}

/// A mount, unmounted on drop (declare after the `Loop` so it drops first).
struct Mount {
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn quiet() -> Reporter {
    Reporter::new(OutputMode::Quiet)
}

fn read_dev(path: &Path, len: u64) -> Vec<u8> {
    let f = File::open(path).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// Asserts `a` and `b` agree on every range of `image`'s file-system block map.
fn assert_equal_on_mapped(image: &Path, a: &[u8], b: &[u8]) {
    let map = used(image);
    assert!(!map.is_empty());
    for (start, end) in map {
        let r = start as usize..end as usize;
        assert!(a[r.clone()] == b[r], "differ in used range {start}..{end}");
    }
}

/// A generated image and a loop device over a card-sized backing file full of 0xAA;
/// `None` when loop-device tests are knowingly skipped (see [`loop_available`]).
/// Fields drop in order: the loop device is detached before its files go.
struct Rig {
    lo: Loop,
    backing: PathBuf,
    image: PathBuf,
    size: u64,
    dir: tempfile::TempDir,
}

fn loop_rig(card: u64) -> Option<Rig> {
    if !loop_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    let size = make_image(&image);
    let backing = dir.path().join("card.bin");
    make_backing(&backing, card);
    let lo = Loop::new(&backing);
    Some(Rig {
        lo,
        backing,
        image,
        size,
        dir,
    })
}

fn flash_to(
    image: &Path,
    dev: &Path,
    policy: TargetPolicy,
    opts: FlashOptions,
) -> Result<flash::FlashReport, FlashError> {
    let (src, _warnings) = Source::open(image)?;
    let t = target::inspect(dev, src.image_size, &SystemView::host(), policy)?;
    flash::flash(&src, &t, &opts, &quiet()).map_err(|f| f.error)
}

fn piimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_piimg"))
}

// ---------------------------------------------------------------- success

#[test]
fn flashes_a_loop_device_only_mapped_ranges_and_verifies() {
    let Some(Rig {
        dir: _dir,
        image,
        size,
        lo,
        ..
    }) = loop_rig(32 * MIB)
    else {
        return;
    };

    let report = flash_to(&image, &lo.dev, FORCE, FlashOptions::default()).unwrap();
    assert!(report.verified);
    assert_eq!(report.map, MapOrigin::FileSystems);
    let mapped = used_bytes(&image);
    assert_eq!(report.mapped_bytes, mapped);
    assert_eq!(report.bytes_written, mapped);
    assert!(report.direct_io, "loop devices take O_DIRECT");

    let card = read_dev(&lo.dev, 32 * MIB);
    let img = fs::read(&image).unwrap();
    assert_equal_on_mapped(&image, &img, &card);
    // Bytes outside the map were not written: past the image the card keeps its old
    // contents, except its last MiB, erased first (a previous OS's backup GPT).
    let tail = (32 * MIB - MIB) as usize;
    assert!(card[size as usize..tail].iter().all(|&b| b == 0xAA));
    assert!(card[tail..].iter().all(|&b| b == 0));
    let map = used(&image);
    let outside = (MIB..size)
        .step_by(4096)
        .find(|&o| map.iter().all(|&(a, b)| o < a || o >= b));
    if let Some(o) = outside {
        assert_eq!(
            card[o as usize], 0xAA,
            "byte {o} outside the map was written"
        );
    }
}

#[test]
fn uses_the_bmap_next_to_the_image() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let map_path = dir.path().join("node.img.bmap");
    Bmap::scan_path(&image).unwrap().write(&map_path).unwrap();
    let out = dir.path().join("card.img");
    let file_policy = TargetPolicy {
        force: false,
        force_file: true,
    };
    let report = flash_to(&image, &out, file_policy, FlashOptions::default()).unwrap();
    assert_eq!(report.map, MapOrigin::BmapAndFileSystems(map_path));
    assert!(report.verified);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&image).unwrap());
}

#[test]
fn stale_bmap_costs_nothing_the_card_needs() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    Bmap::scan_path(&image)
        .unwrap()
        .write(&dir.path().join("node.img.bmap"))
        .unwrap();
    // The image changes after its map was made (same holes, other bytes): the
    // checksum of that range fails, the file systems' map still covers the card.
    File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .write_at(b"changed", 3 * MIB + 100)
        .unwrap();
    let out = dir.path().join("card.img");
    make_backing(&out, 24 * MIB);
    let policy = TargetPolicy {
        force: false,
        force_file: true,
    };
    let report = flash_to(&image, &out, policy, FlashOptions::default()).unwrap();
    assert!(report.verified);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("does not match the image in its range at byte 3145728"),
        "{:?}",
        report.warnings
    );
    let card = fs::read(&out).unwrap();
    assert_equal_on_mapped(&image, &fs::read(&image).unwrap(), &card);
    assert_eq!(&card[(3 * MIB + 100) as usize..][..7], b"changed");
}

#[test]
fn broken_or_foreign_bmap_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let map_path = dir.path().join("node.img.bmap");
    fs::write(&map_path, "<bmap version=\"2.0\">").unwrap();
    let (src, warnings) = Source::open(&image).unwrap();
    assert_eq!(src.origin, MapOrigin::FileSystems);
    assert!(warnings[0].contains("node.img.bmap"), "{warnings:?}");
    assert!(warnings[0].contains("ignoring it"), "{warnings:?}");

    // A valid map of another image size.
    let other = dir.path().join("other.img");
    File::create(&other).unwrap().set_len(MIB).unwrap();
    Bmap::scan_path(&other).unwrap().write(&map_path).unwrap();
    let (src, warnings) = Source::open(&image).unwrap();
    assert_eq!(src.origin, MapOrigin::FileSystems);
    assert!(
        warnings[0].contains("is for an image of 1048576 bytes"),
        "{warnings:?}"
    );
}

#[test]
fn cli_flashes_a_file_with_json_summary() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let out = dir.path().join("card.img");
    let o = piimg()
        .args(["--json", "flash", "--force-file"])
        .arg(&image)
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mapped = used_bytes(&image);
    assert_eq!(v["bytes_written"], mapped);
    assert_eq!(v["bytes_verified"], mapped);
    assert_eq!(v["verified"], true);
    assert_eq!(v["map"], "file-systems");
    assert_eq!(v["compression"], "none");
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(fs::read(&out).unwrap(), fs::read(&image).unwrap());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn cli_node_without_a_profile_says_so_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    let o = piimg()
        .current_dir(dir.path())
        .env_remove("PIIMG_PROFILE")
        .args(["flash", "--node", "node-a", "--force-file", "--yes"])
        .arg(&card)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // The card is composed from the profile's node: without a profile there is none.
    assert!(err.contains("profile"), "{err}");
    assert!(!card.exists());
    // --out belonged to the old out/NAME.img path: it is gone, not silently ignored.
    let o = piimg()
        .current_dir(dir.path())
        .args(["flash", "--node", "node-a", "--out", "out"])
        .arg(&card)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

// ---------------------------------------------------------------- refusals

#[test]
fn mounted_device_is_refused() {
    if !loop_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let backing = dir.path().join("card.bin");
    File::create(&backing).unwrap().set_len(64 * MIB).unwrap();
    let lo = Loop::new(&backing);
    run("mkfs.ext4", &["-q", "-F", lo.dev.to_str().unwrap()]);
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    run("mount", &[lo.dev.to_str().unwrap(), mnt.to_str().unwrap()]);
    let _m = Mount { dir: mnt.clone() };
    let before = read_dev(&lo.dev, MIB * 2);

    let err = flash_to(&image, &lo.dev, FORCE, FlashOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, FlashError::Refused(Refusal::Mounted { mount_point, .. }) if Path::new(mount_point) == mnt),
        "{msg}"
    );
    assert!(msg.contains("is mounted at"), "{msg}");
    assert!(msg.contains(&lo.name()), "{msg}");

    // The CLI says the same and writes nothing.
    let o = piimg()
        .args(["flash", "--yes", "--force"])
        .arg(&image)
        .arg(&lo.dev)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is mounted at"));
    assert_eq!(read_dev(&lo.dev, MIB * 2), before);
}

#[test]
fn too_small_device_is_refused() {
    let Some(Rig {
        dir: _dir,
        image,
        size,
        backing,
        lo,
        ..
    }) = loop_rig(16 * MIB)
    else {
        return;
    };
    let err = flash_to(&image, &lo.dev, FORCE, FlashOptions::default()).unwrap_err();
    assert!(
        matches!(err, FlashError::Refused(Refusal::TooSmall { size: s, needed, .. }) if s == 16 * MIB && needed == size),
        "{err}"
    );
    assert!(err.to_string().contains("too small"), "{err}");
    assert!(fs::read(&backing).unwrap().iter().all(|&b| b == 0xAA));
}

#[test]
fn non_removable_disk_needs_force() {
    let Some(Rig {
        dir: _dir,
        image,
        lo,
        ..
    }) = loop_rig(32 * MIB)
    else {
        return;
    };
    let err = flash_to(
        &image,
        &lo.dev,
        TargetPolicy::default(),
        FlashOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a removable disk"), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
}

/// A view of the host whose mount table or swap list is replaced.
fn injected(dir: &Path, mountinfo: Option<String>, swaps: Option<String>) -> SystemView {
    let mut v = SystemView::host();
    if let Some(m) = mountinfo {
        let p = dir.join("mountinfo");
        fs::write(&p, m).unwrap();
        v.mountinfo = p;
    }
    if let Some(s) = swaps {
        let p = dir.join("swaps");
        fs::write(&p, s).unwrap();
        v.swaps = p;
    }
    v
}

#[test]
fn system_disk_is_refused_via_injected_facts() {
    if !loop_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("card.bin");
    make_backing(&backing, 32 * MIB);
    let lo = Loop::new(&backing);
    let (maj, min) = lo.devno();
    let real = fs::read_to_string("/proc/self/mountinfo").unwrap();

    for mp in ["/", "/boot", "/boot/firmware"] {
        let line = format!("999 1 {maj}:{min} / {mp} rw,relatime - ext4 /dev/root rw\n");
        let view = injected(dir.path(), Some(format!("{real}{line}")), None);
        let err = target::inspect(&lo.dev, MIB, &view, FORCE).unwrap_err();
        assert!(
            matches!(&err, Refusal::SystemDisk { what, .. } if *what == format!("mounted at {mp}")),
            "{err}"
        );
        assert!(
            err.to_string().contains("holds the running system"),
            "{err}"
        );
    }

    // Matched by source name too, when the device number says nothing.
    let line = format!("999 1 0:999 / / rw - ext4 /dev/{} rw\n", lo.name());
    let view = injected(dir.path(), Some(line), None);
    assert!(matches!(
        target::inspect(&lo.dev, MIB, &view, FORCE),
        Err(Refusal::SystemDisk { .. })
    ));

    // Active swap on the device.
    let swaps = format!(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n{}  partition\t32764\t0\t-2\n",
        lo.dev.display()
    );
    let view = injected(dir.path(), None, Some(swaps));
    let err = target::inspect(&lo.dev, MIB, &view, FORCE).unwrap_err();
    assert!(err.to_string().contains("active swap"), "{err}");

    // The real view accepts the same device.
    target::inspect(&lo.dev, MIB, &SystemView::host(), FORCE).unwrap();
}

/// A fake sysfs in which the loop device's number leads to `disk_rel` (relative to
/// the fake root), for facts a loop device cannot really have.
fn fake_sysfs(root: &Path, lo: &Loop, disk_rel: &str, files: &[(&str, &str)]) -> SystemView {
    let (maj, min) = lo.devno();
    let disk = root.join(disk_rel);
    fs::create_dir_all(&disk).unwrap();
    for (name, text) in files {
        let p = disk.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fs::create_dir_all(root.join("dev/block")).unwrap();
    std::os::unix::fs::symlink(&disk, root.join(format!("dev/block/{maj}:{min}"))).unwrap();
    let mut v = SystemView::host();
    v.sysfs = root.to_path_buf();
    v
}

#[test]
fn held_partition_and_facts_from_sysfs() {
    if !loop_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("card.bin");
    make_backing(&backing, 32 * MIB);
    let lo = Loop::new(&backing);

    // A partition of the disk is an LVM physical volume.
    let root = dir.path().join("sys1");
    let view = fake_sysfs(
        &root,
        &lo,
        "devices/block/sdx",
        &[
            ("dev", "8:16"),
            ("size", "65536"),
            ("removable", "1"),
            ("sdx1/partition", "1"),
            ("sdx1/dev", "8:17"),
            ("sdx1/holders/dm-0", ""),
        ],
    );
    let err = target::inspect(&lo.dev, MIB, &view, TargetPolicy::default()).unwrap_err();
    assert!(
        matches!(&err, Refusal::Held { part, holder, .. } if part == "sdx1" && holder == "dm-0"),
        "{err}"
    );

    // A partition given instead of the disk.
    let root = dir.path().join("sys2");
    let view = fake_sysfs(&root, &lo, "devices/block/sdx/sdx2", &[("partition", "2")]);
    let err = target::inspect(&lo.dev, MIB, &view, TargetPolicy::default()).unwrap_err();
    assert!(
        err.to_string().contains("give the whole disk /dev/sdx"),
        "{err}"
    );

    // A removable SD card reader: accepted without --force, facts shown.
    let root = dir.path().join("sys3");
    let view = fake_sysfs(
        &root,
        &lo,
        "devices/block/sdy",
        &[
            ("dev", "8:32"),
            ("size", "62333952"),
            ("removable", "1"),
            ("ro", "0"),
            ("device/vendor", "Generic "),
            ("device/model", "SD Reader\n"),
        ],
    );
    let t = target::inspect(&lo.dev, MIB, &view, TargetPolicy::default()).unwrap();
    assert!(t.removable);
    assert_eq!(t.size, 62333952 * 512);
    assert_eq!(t.model.as_deref(), Some("Generic SD Reader"));
    assert_eq!(t.name, "sdy");

    // Write-protected.
    let root = dir.path().join("sys4");
    let view = fake_sysfs(
        &root,
        &lo,
        "devices/block/sdz",
        &[("size", "65536"), ("removable", "1"), ("ro", "1")],
    );
    let err = target::inspect(&lo.dev, MIB, &view, TargetPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");
}

#[test]
fn cli_refuses_without_tty_or_yes_and_non_block_targets() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let card = dir.path().join("card.img");
    make_backing(&card, MIB);

    let o = piimg()
        .arg("flash")
        .arg(&image)
        .arg(&card)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a block device"), "{err}");
    assert!(err.contains("--force-file"), "{err}");

    let o = piimg()
        .args(["flash", "--force-file"])
        .arg(&image)
        .arg(&card)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("stdin is not a terminal; pass --yes"), "{err}");
    assert!(fs::read(&card).unwrap().iter().all(|&b| b == 0xAA));
}

// ---------------------------------------------------------------- faults

#[test]
fn flipped_byte_is_detected_with_its_offset() {
    let Some(Rig {
        dir: _dir,
        image,
        lo,
        ..
    }) = loop_rig(32 * MIB)
    else {
        return;
    };
    let flip = 17 * MIB + 8192 + 12345;
    let opts = FlashOptions {
        verify: true,
        faults: FaultInjection {
            flip_byte_at: Some(flip),
            stop_after_bytes: None,
        },
    };
    let err = flash_to(&image, &lo.dev, FORCE, opts).unwrap_err();
    assert!(
        matches!(err, FlashError::VerifyMismatch { offset, .. } if offset == flip),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!("at byte {flip}")),
        "{err}"
    );
    // Found while writing, before the partition table went out: the old one was
    // erased first, so the card has none.
    let card = read_dev(&lo.dev, MIB);
    assert!(card.iter().all(|&b| b == 0), "first MiB not erased");
    assert!(!sfdisk_finds_table(&lo.dev));

    // In the first MiB too (written last).
    let opts = FlashOptions {
        verify: true,
        faults: FaultInjection {
            flip_byte_at: Some(100),
            stop_after_bytes: None,
        },
    };
    let (src, _) = Source::open(&image).unwrap();
    let t = target::inspect(&lo.dev, src.image_size, &SystemView::host(), FORCE).unwrap();
    let failure = flash::flash(&src, &t, &opts, &quiet()).unwrap_err();
    assert!(
        matches!(
            failure.error,
            FlashError::VerifyMismatch { offset: 100, .. }
        ),
        "{failure}"
    );
    // The table had been written: it is erased again.
    assert_eq!(failure.card, CardState::NoTable);
    assert!(read_dev(&lo.dev, MIB).iter().all(|&b| b == 0));
    assert!(!sfdisk_finds_table(&lo.dev));
}

#[test]
fn cli_env_seam_flips_in_debug_builds() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let card = dir.path().join("card.img");
    let flip = 3 * MIB + 5;
    let o = piimg()
        .args(["flash", "--force-file", "--yes"])
        .arg(&image)
        .arg(&card)
        .env("PIIMG_FLASH_TEST_FLIP_OFFSET", flip.to_string())
        .output()
        .unwrap();
    if cfg!(debug_assertions) {
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!("differs from the image at byte {flip}")),
            "{err}"
        );
        assert!(
            err.contains("the card has no partition table now")
                && err.contains("run the same command again"),
            "{err}"
        );
        assert!(!sfdisk_finds_table(&card));
    } else {
        assert!(o.status.success(), "release builds ignore the test seam");
    }
}

#[test]
fn interrupted_write_leaves_the_first_mib_unwritten() {
    let Some(Rig {
        dir: _dir,
        image,
        lo,
        ..
    }) = loop_rig(32 * MIB)
    else {
        return;
    };
    let opts = FlashOptions {
        verify: true,
        faults: FaultInjection {
            flip_byte_at: None,
            stop_after_bytes: Some(2 * MIB),
        },
    };
    let err = flash_to(&image, &lo.dev, FORCE, opts).unwrap_err();
    assert!(matches!(err, FlashError::Interrupted { .. }), "{err}");
    let card = read_dev(&lo.dev, 32 * MIB);
    assert!(
        card[..MIB as usize].iter().all(|&b| b == 0),
        "first MiB not erased"
    );
    // ...while data after it was written.
    let img = fs::read(&image).unwrap();
    let r = (3 * MIB) as usize..(4 * MIB) as usize;
    assert_eq!(card[r.clone()], img[r]);
}

/// A 200 MiB sparse image spanning several 64 MiB verify windows: a run crossing the
/// end of the first MiB, a run crossing a window boundary, and a block far out.
fn make_windowed_image(path: &Path) -> u64 {
    let size = 200 * MIB;
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_at(&noise(3 * MIB as usize, 7), 0).unwrap();
    put_mbr(&f, size);
    f.write_at(&noise(8 * MIB as usize, 8), 62 * MIB).unwrap();
    f.write_at(&noise(4096, 9), 150 * MIB).unwrap();
    f.sync_all().unwrap();
    size
}

#[test]
fn read_back_overlaps_writing_and_a_bad_window_stops_before_the_partition_table() {
    if !loop_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    let size = make_windowed_image(&image);
    let img = fs::read(&image).unwrap();
    // A flipped byte in a window (in a run crossing a window boundary, and in the
    // part past the first MiB of a run starting in it) is found while writing: the
    // flash stops with its offset and the partition table is never written.
    for flip in [65 * MIB + 3, 2 * MIB + 1] {
        let backing = dir.path().join("card.bin");
        make_backing(&backing, size);
        let lo = Loop::new(&backing);
        let opts = FlashOptions {
            verify: true,
            faults: FaultInjection {
                flip_byte_at: Some(flip),
                stop_after_bytes: None,
            },
        };
        let err = flash_to(&image, &lo.dev, FORCE, opts).unwrap_err();
        assert!(
            matches!(err, FlashError::VerifyMismatch { offset, .. } if offset == flip),
            "{err}"
        );
        let card = read_dev(&lo.dev, size);
        assert!(
            card[..MIB as usize].iter().all(|&b| b == 0),
            "first MiB written despite a bad window"
        );
        assert!(!sfdisk_finds_table(&lo.dev));
    }

    let backing = dir.path().join("card.bin");
    make_backing(&backing, size);
    let lo = Loop::new(&backing);
    let report = flash_to(&image, &lo.dev, FORCE, FlashOptions::default()).unwrap();
    let mapped = used_bytes(&image);
    assert!(report.verified);
    assert_eq!(report.bytes_written, mapped);
    assert_eq!(report.bytes_verified, mapped);
    let card = read_dev(&lo.dev, size);
    assert_equal_on_mapped(&image, &img, &card);
}

/// A 96 MiB image of 48 small runs (64 KiB, every 1.5 MiB) after a first-MiB run:
/// more chunks per 64 MiB span than one verify window may hold.
fn make_fragmented_image(path: &Path) -> u64 {
    let size = 96 * MIB;
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.write_at(&noise(MIB as usize, 20), 0).unwrap();
    put_mbr(&f, size);
    for k in 0..48u64 {
        f.write_at(&noise(64 << 10, 21 + k), MIB + k * 1536 * 1024)
            .unwrap();
    }
    f.sync_all().unwrap();
    size
}

#[test]
fn many_small_runs_verify_in_bounded_windows() {
    if !loop_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    let size = make_fragmented_image(&image);
    // Its .bmap keeps the 48 runs as separate (checksummed) ranges, however coarse the
    // file systems' map is.
    Bmap::scan_path(&image)
        .unwrap()
        .write(&dir.path().join("node.img.bmap"))
        .unwrap();
    let img = fs::read(&image).unwrap();
    // The written buffers are kept until their window is compared: with more runs
    // than a window holds, windows split by count and buffers recycle (no stall).
    let backing = dir.path().join("card.bin");
    make_backing(&backing, size);
    let lo = Loop::new(&backing);
    let report = flash_to(&image, &lo.dev, FORCE, FlashOptions::default()).unwrap();
    let mapped = used_bytes(&image);
    assert!(report.verified);
    assert_eq!(report.bytes_verified, mapped);
    assert_equal_on_mapped(&image, &img, &read_dev(&lo.dev, size));

    // A flip in the 40th run (a late window) is named exactly; no partition table.
    let flip = MIB + 39 * 1536 * 1024 + 777;
    let backing2 = dir.path().join("card2.bin");
    make_backing(&backing2, size);
    let lo2 = Loop::new(&backing2);
    let opts = FlashOptions {
        verify: true,
        faults: FaultInjection {
            flip_byte_at: Some(flip),
            stop_after_bytes: None,
        },
    };
    let err = flash_to(&image, &lo2.dev, FORCE, opts).unwrap_err();
    assert!(
        matches!(err, FlashError::VerifyMismatch { offset, range_len, .. }
            if offset == flip && range_len == 64 << 10),
        "{err}"
    );
    let card = read_dev(&lo2.dev, MIB);
    assert!(card.iter().all(|&b| b == 0), "first MiB written");
}

// ---------------------------------------------------------------- interop

#[test]
fn card_equals_bmaptool_copy_and_dd() {
    if !loop_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("node.img");
    make_image(&image);
    let map = dir.path().join("node.img.bmap");
    Bmap::scan_path(&image).unwrap().write(&map).unwrap();
    let cards: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("card{i}.bin"));
            make_backing(&p, 32 * MIB);
            p
        })
        .collect();
    let loops: Vec<Loop> = cards.iter().map(|p| Loop::new(p)).collect();

    let o = piimg()
        .args(["-q", "flash", "--yes", "--force"])
        .arg(&image)
        .arg(&loops[0].dev)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            map.to_str().unwrap(),
            image.to_str().unwrap(),
            loops[1].dev.to_str().unwrap(),
        ],
    );
    run(
        "dd",
        &[
            &format!("if={}", image.display()),
            &format!("of={}", loops[2].dev.display()),
            "bs=4M",
            "conv=fsync",
            "status=none",
        ],
    );
    let ours = read_dev(&loops[0].dev, 32 * MIB);
    let bmaptool = read_dev(&loops[1].dev, 32 * MIB);
    let dd = read_dev(&loops[2].dev, 32 * MIB);
    // bmaptool writes the .bmap's ranges (the file's data), we write them and the
    // file systems' map: equal wherever either wrote.
    for (off, len) in Bmap::load(&map).unwrap().extents() {
        let r = off as usize..(off + len) as usize;
        assert!(
            ours[r.clone()] == bmaptool[r.clone()],
            "bmaptool differs at {off}"
        );
        assert!(ours[r.clone()] == dd[r], "dd differs at {off}");
    }
    assert_equal_on_mapped(&image, &ours, &dd);
}

// ---------------------------------------------------------------- used cards

/// Raspberry Pi OS-shaped images from `scripts/mkimage`: the one to flash (Bookworm,
/// MBR) and an older card's (Trixie, GPT with its backup header in the last sectors,
/// another disk id and layout, a little larger so it can be the card itself).
struct UsedCardImages {
    new: support::TestImage,
    old: support::TestImage,
}

fn used_card_images() -> UsedCardImages {
    card_images(&[], &[])
}

/// [`used_card_images`] with `--fill-mib` data in both roots (the older one more), so
/// a flash writes hundreds of MiB whatever the map: time to signal it mid-write.
fn big_card_images() -> UsedCardImages {
    card_images(&["--fill-mib", "200"], &["--fill-mib", "260"])
}

fn card_images(new_args: &[&str], old_args: &[&str]) -> UsedCardImages {
    let new = support::image("bookworm", new_args);
    let mut old_all = vec!["--gpt", "--disk-id", "0badc0de"];
    old_all.extend_from_slice(old_args);
    let old = support::image("trixie", &old_all);
    let (n, o) = (file_len(&new.path), file_len(&old.path));
    assert!(
        o >= n,
        "the older image ({o}) must be able to hold the new one ({n})"
    );
    UsedCardImages { new, old }
}

fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// A card backing file holding the older image (sparse copy).
fn old_card(old: &Path, dest: &Path) {
    let st = Command::new("cp")
        .args(["--sparse=always"])
        .arg(old)
        .arg(dest)
        .status()
        .unwrap();
    assert!(st.success());
}

/// A card backing file of `len` bytes every one of which is 0xFF (an erased flash
/// medium), written densely.
fn ff_card(dest: &Path, len: u64) {
    use std::io::Write;
    let mut f = File::create(dest).unwrap();
    let block = vec![0xFFu8; 4 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.sync_all().unwrap();
}

/// The label id `sfdisk --json` reads on `dev`.
fn label_id(dev: &Path) -> String {
    support::sfdisk(dev).0
}

/// Asserts the card holds no partition table any tool would use: `sfdisk -d` finds
/// none, and its first and last 34 sectors (MBR, primary and backup GPT) are zero.
fn assert_no_table(card: &Path, len: u64) {
    assert!(
        !sfdisk_finds_table(card),
        "sfdisk -d still finds a table on {}",
        card.display()
    );
    let f = File::open(card).unwrap();
    let mut b = vec![0u8; 34 * 512];
    f.read_exact_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0), "first sectors not erased");
    f.read_exact_at(&mut b, len - 34 * 512).unwrap();
    assert!(b.iter().all(|&x| x == 0), "backup GPT not erased");
}

#[test]
fn interrupted_flash_leaves_a_used_card_without_any_table() {
    if !loop_available() {
        return;
    }
    let imgs = used_card_images();
    let card_len = file_len(&imgs.old.path);
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("card.bin");
    // Before any data, after the first chunk, a third and two thirds of the way
    // (relative to what the map says to write, however large that is).
    let mapped = Source::open(&imgs.new.path).unwrap().0.mapped_bytes();
    assert!(mapped > 8 * MIB, "{mapped}");
    for stop in [0, MIB, mapped / 3, mapped * 2 / 3] {
        old_card(&imgs.old.path, &backing);
        let lo = Loop::new(&backing);
        assert!(sfdisk_finds_table(&lo.dev), "the old card has its GPT");
        let (src, _) = Source::open(&imgs.new.path).unwrap();
        let t = target::inspect(&lo.dev, src.image_size, &SystemView::host(), FORCE).unwrap();
        let opts = FlashOptions {
            verify: true,
            faults: FaultInjection {
                flip_byte_at: None,
                stop_after_bytes: Some(stop),
            },
        };
        let failure = flash::flash(&src, &t, &opts, &quiet()).unwrap_err();
        assert!(
            matches!(failure.error, FlashError::Interrupted { .. }),
            "{failure}"
        );
        assert_eq!(failure.card, CardState::NoTable);
        let msg = failure.to_string();
        assert!(
            msg.contains("the card has no partition table now")
                && msg.contains("run the same command again"),
            "{msg}"
        );
        assert_no_table(&lo.dev, card_len);
        drop(lo);
    }
}

/// Starts `piimg flash` of `image` to the file `card`, waits until it has erased the
/// card's table (sector 0 all zero) and is still running, then sends `sig`.
fn signal_mid_flash(image: &Path, card: &Path, sig: libc::c_int) -> std::process::Output {
    let child = piimg()
        .args(["flash", "--force-file", "--yes"])
        .arg(image)
        .arg(card)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let f = File::open(card).unwrap();
    let mut sector = [0u8; 512];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        f.read_exact_at(&mut sector, 0).unwrap();
        if sector.iter().all(|&b| b == 0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "piimg never erased the card"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Let it write some data first.
    std::thread::sleep(std::time::Duration::from_millis(50));
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling our own child, which has not been waited for (its pid is ours).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0);
    child.wait_with_output().unwrap()
}

#[test]
fn sigkill_mid_write_leaves_no_table() {
    let imgs = big_card_images();
    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    old_card(&imgs.old.path, &card);
    assert!(sfdisk_finds_table(&card));
    let o = signal_mid_flash(&imgs.new.path, &card, libc::SIGKILL);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGKILL),
        "it finished first: {o:?}"
    );
    assert_no_table(&card, file_len(&imgs.old.path));
}

#[test]
fn sigint_and_sigterm_stop_the_flash_with_130_and_say_the_card_has_no_table() {
    let imgs = big_card_images();
    let dir = tempfile::tempdir().unwrap();
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let card = dir.path().join("card.img");
        old_card(&imgs.old.path, &card);
        let o = signal_mid_flash(&imgs.new.path, &card, sig);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(130), "signal {sig}: {err}");
        assert!(err.contains("flash stopped by a signal"), "{err}");
        assert!(
            err.contains("the card has no partition table now")
                && err.contains("run the same command again"),
            "{err}"
        );
        assert_no_table(&card, file_len(&imgs.old.path));
    }
}

#[test]
fn only_disk_images_are_flashed() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    fs::write(p("notes.img"), "hello, this is not a disk\n").unwrap();
    fs::write(
        p("passwd.img"),
        "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",
    )
    .unwrap();
    fs::write(p("random.img"), noise(256 << 10, 99)).unwrap();
    fs::write(p("empty.img"), b"").unwrap();
    File::create(p("fs.img")).unwrap().set_len(8 * MIB).unwrap();
    run("mkfs.ext4", &["-q", "-F", p("fs.img").to_str().unwrap()]);
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(b"just some text, compressed\n").unwrap();
    fs::write(p("text.img.xz"), e.finish().unwrap()).unwrap();
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(&vec![0u8; 4 << 20]).unwrap();
    fs::write(p("zeros.img.xz"), e.finish().unwrap()).unwrap();
    let good = {
        let img = p("good.img");
        make_image(&img);
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(&fs::read(&img).unwrap()).unwrap();
        let mut bytes = e.finish().unwrap();
        bytes.truncate(bytes.len() - 20);
        fs::write(p("truncated.img.xz"), bytes).unwrap();
        img
    };
    let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst.extend_from_slice(&noise(100, 3));
    fs::write(p("x.img.zst"), zst).unwrap();
    fs::write(p("x.img.bz2"), b"BZh91AY&SY").unwrap();

    let cases = [
        ("notes.img", "not a disk image: it is a text file"),
        ("passwd.img", "not a disk image: it is a text file"),
        (
            "random.img",
            "not a disk image: it is binary data without a partition table",
        ),
        ("empty.img", "not a disk image: it is an empty file"),
        (
            "fs.img",
            "not a disk image: it is a bare ext2/3/4 file system",
        ),
        (
            "text.img.xz",
            "not a disk image: it is xz data whose content is not a disk image: it is a text file",
        ),
        (
            "zeros.img.xz",
            "not a disk image: it is xz data whose content is not a disk image: it is binary data",
        ),
        (
            "truncated.img.xz",
            "not a disk image: it is xz data that cannot be read",
        ),
        (
            "x.img.zst",
            "not a disk image: it is zstd data that cannot be read",
        ),
        ("x.img.bz2", "not a disk image: it is bzip2-compressed"),
    ];
    for (name, want) in cases {
        let card = p("card.img");
        let o = piimg()
            .args(["flash", "--force-file", "--yes"])
            .arg(p(name))
            .arg(&card)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(&format!("{}: {want}", p(name).display())),
            "{name}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{name}: one line: {err}");
        assert!(
            err.contains("nothing was written to the card"),
            "{name}: {err}"
        );
        assert!(!card.exists(), "{name}: the card was created");
    }
    // The good image next to them flashes.
    let card = p("card.img");
    let o = piimg()
        .args(["-q", "flash", "--force-file", "--yes"])
        .arg(&good)
        .arg(&card)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// What sits next to the image as its block map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MapCase {
    /// `bmaptool create`'s map of the image (a foreign tool's: holes left out).
    With,
    /// None.
    Without,
    /// An unparsable one (cut in the middle).
    Corrupt,
    /// Another image's of the same size: its checksums do not match.
    Foreign,
}

/// What a used card held before the flash.
#[derive(Debug, Clone, Copy)]
enum Prefill {
    /// 0xFF everywhere (an erased NAND).
    Ff,
    /// An older image (GPT, other layout and disk id).
    OldImage,
}

fn stdout_to(cmd: &mut Command, dest: &Path) {
    let st = cmd.stdout(File::create(dest).unwrap()).status().unwrap();
    assert!(st.success(), "{cmd:?}");
}

/// Copies the FAT partition 1 and the ext4 partition 2 of `disk` out with mtools and
/// debugfs into `dir/fat`, `dir/ext4`.
fn dump_trees(disk: &Path, dir: &Path) {
    let (fat, _) = support::partition(disk, 1);
    let (root, _) = support::partition(disk, 2);
    fs::create_dir_all(dir.join("fat")).unwrap();
    fs::create_dir_all(dir.join("ext4")).unwrap();
    let o = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-m", "-i"])
        .arg(format!("{}@@{fat}", disk.display()))
        .arg("::/*")
        .arg(dir.join("fat"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "mcopy: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", dir.join("ext4").display()))
        .arg(format!("{}?offset={root}", disk.display()))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debugfs: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Asserts the card's partition table, file systems and file trees are the image's.
fn assert_card_is_image(image: &Path, card: &Path, what: &str) {
    assert_eq!(label_id(card), label_id(image), "{what}: partition table");
    let (ok, text) = support::fsck_vfat(card, 1);
    assert!(ok, "{what}: fsck.vfat -n:\n{text}");
    let (ok, text) = support::e2fsck(card, 2);
    assert!(ok, "{what}: e2fsck -fn:\n{text}");
    let dir = tempfile::tempdir().unwrap();
    dump_trees(image, &dir.path().join("image"));
    dump_trees(card, &dir.path().join("card"));
    let o = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(dir.path().join("image"))
        .arg(dir.path().join("card"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{what}: file trees differ:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Flashes the image raw and `.xz`, with each kind of block map, to a loop device over
/// a card prefilled as `prefill`, and checks each card with independent tools.
fn flash_matrix(prefill: Prefill) {
    if !loop_available() {
        return;
    }
    let imgs = used_card_images();
    let card_len = file_len(&imgs.old.path);
    let dir = tempfile::tempdir().unwrap();
    let raw = &imgs.new.path;
    let maps = dir.path().join("maps");
    fs::create_dir(&maps).unwrap();
    let good_map = maps.join("good.bmap");
    run(
        "bmaptool",
        &[
            "create",
            "-o",
            good_map.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    );
    let corrupt_map = maps.join("corrupt.bmap");
    let text = fs::read(&good_map).unwrap();
    fs::write(&corrupt_map, &text[..text.len() / 2]).unwrap();
    // Another image of the same size: another disk id in the MBR, so the checksum of
    // the range holding sector 0 differs.
    let other = maps.join("other.img");
    old_card(raw, &other);
    File::options()
        .write(true)
        .open(&other)
        .unwrap()
        .write_at(&[0xde, 0xad, 0xbe, 0xef], 440)
        .unwrap();
    let foreign_map = maps.join("foreign.bmap");
    run(
        "bmaptool",
        &[
            "create",
            "-o",
            foreign_map.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );

    let compressed = maps.join("node.img.xz");
    stdout_to(
        Command::new("xz").args(["-T0", "-1", "-c"]).arg(raw),
        &compressed,
    );
    let cases = [
        MapCase::With,
        MapCase::Without,
        MapCase::Corrupt,
        MapCase::Foreign,
    ];
    for xz in [false, true] {
        for case in cases {
            let what = format!("{prefill:?} card, {case:?} map, xz: {xz}");
            let d = dir.path().join(format!("{case:?}-{xz}"));
            fs::create_dir(&d).unwrap();
            let image = if xz {
                let p = d.join("node.img.xz");
                fs::copy(&compressed, &p).unwrap();
                p
            } else {
                let p = d.join("node.img");
                old_card(raw, &p);
                p
            };
            // Where bmaptool would look: X.img.xz.bmap, X.img.bmap, X.bmap.
            let map_at = match (case, xz) {
                (MapCase::Without, _) => None,
                (MapCase::With, true) => Some((d.join("node.img.xz.bmap"), &good_map)),
                (MapCase::With, false) => Some((d.join("node.img.bmap"), &good_map)),
                (MapCase::Corrupt, _) => Some((d.join("node.img.bmap"), &corrupt_map)),
                (MapCase::Foreign, _) => Some((d.join("node.bmap"), &foreign_map)),
            };
            if let Some((to, from)) = &map_at {
                fs::copy(from, to).unwrap();
            }
            let backing = d.join("card.bin");
            match prefill {
                Prefill::Ff => ff_card(&backing, card_len),
                Prefill::OldImage => old_card(&imgs.old.path, &backing),
            }
            let lo = Loop::new(&backing);
            let o = piimg()
                .args(["--json", "flash", "--yes", "--force"])
                .arg(&image)
                .arg(&lo.dev)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{what}: {err}");
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["verified"], true, "{what}");
            let map_path = map_at.as_ref().map(|(p, _)| p.display().to_string());
            // A compressed image is decompressed once and mapped like a raw one.
            let want_map = match case {
                MapCase::With | MapCase::Foreign => {
                    serde_json::json!({ "bmap+file-systems": map_path })
                }
                _ => serde_json::json!("file-systems"),
            };
            assert_eq!(v["decompressed_first"], xz, "{what}");
            assert_eq!(v["map"], want_map, "{what}");
            match case {
                MapCase::Foreign => {
                    assert!(err.contains("does not match the image"), "{what}: {err}")
                }
                MapCase::Corrupt => assert!(err.contains("ignoring it"), "{what}: {err}"),
                _ => assert!(!err.contains("warning"), "{what}: {err}"),
            }
            assert_card_is_image(raw, &lo.dev, &what);
            drop(lo);
            fs::remove_file(&backing).unwrap();
        }
    }
}

#[test]
fn every_map_case_raw_and_xz_makes_a_working_card_over_0xff() {
    flash_matrix(Prefill::Ff);
}

#[test]
fn every_map_case_raw_and_xz_makes_a_working_card_over_an_older_image() {
    flash_matrix(Prefill::OldImage);
}

#[test]
fn zstd_and_gzip_images_make_a_working_card() {
    if !loop_available() {
        return;
    }
    let imgs = used_card_images();
    let raw = &imgs.new.path;
    let dir = tempfile::tempdir().unwrap();
    for (tool, ext) in [("zstd", "zst"), ("gzip", "gz")] {
        let image = dir.path().join(format!("node.img.{ext}"));
        let mut cmd = Command::new(tool);
        cmd.args(["-1", "-c"]).arg(raw);
        stdout_to(&mut cmd, &image);
        let backing = dir.path().join("card.bin");
        ff_card(&backing, file_len(&imgs.old.path));
        let lo = Loop::new(&backing);
        let o = piimg()
            .args(["--json", "flash", "--yes", "--force"])
            .arg(&image)
            .arg(&lo.dev)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["compression"], if ext == "zst" { "zstd" } else { "gzip" });
        assert_eq!(v["map"], "file-systems");
        assert_eq!(v["decompressed_first"], true);
        assert_eq!(v["image_size"], file_len(raw));
        assert_card_is_image(raw, &lo.dev, tool);
        drop(lo);

        // Corrupt in the middle: refused before the card is touched, or stopped
        // before the table; either way the card has no table afterwards.
        let mut bytes = fs::read(&image).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 64] {
            *b ^= 0x5a;
        }
        fs::write(&image, &bytes).unwrap();
        let lo = Loop::new(&backing);
        let o = piimg()
            .args(["flash", "--yes", "--force"])
            .arg(&image)
            .arg(&lo.dev)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{tool}: corrupt data was flashed");
        assert!(
            err.contains("cannot be read") || err.contains("the card has no partition table now"),
            "{tool}: {err}"
        );
    }
}

/// A card file holding an "older" MBR table (another disk id) and 0xAA elsewhere.
fn old_mbr_card(path: &Path, len: u64) {
    make_backing(path, len);
    let f = File::options().write(true).open(path).unwrap();
    put_mbr(&f, len);
    f.write_at(&[0xca, 0xfe, 0xf0, 0x0d], 440).unwrap();
    f.sync_all().unwrap();
    assert!(sfdisk_finds_table(path));
}

/// `make_image`'s image as `.xz`, damaged in the middle of its compressed data
/// (after the first MiB's worth: the noise is incompressible) with its index intact.
fn corrupt_xz_of(img: &Path, dest: &Path) {
    use std::io::Write;
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
    e.write_all(&fs::read(img).unwrap()).unwrap();
    let mut xz = e.finish().unwrap();
    let at = xz.len() * 3 / 4;
    for b in &mut xz[at..at + 32] {
        *b ^= 0xff;
    }
    fs::write(dest, &xz).unwrap();
}

#[test]
fn corrupt_xz_data_is_refused_before_the_card_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let size = make_image(&img);
    let image = dir.path().join("node.img.xz");
    corrupt_xz_of(&img, &image);
    let card = dir.path().join("card.img");
    old_mbr_card(&card, size);
    let before = fs::read(&card).unwrap();
    let o = piimg()
        .args(["flash", "--force-file", "--yes"])
        .arg(&image)
        .arg(&card)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("it is xz data that cannot be read"), "{err}");
    assert!(err.contains("nothing was written to the card"), "{err}");
    assert!(fs::read(&card).unwrap() == before, "the card changed");
}

#[test]
fn without_room_to_decompress_an_xz_image_is_streamed_whole_and_corruption_leaves_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let size = make_image(&img);
    // The .xz sits on a tmpfs with no room for its decompressed copy.
    let small = Tmpfs::new(8);
    let good = small.dir.path().join("good.img.xz");
    stdout_to(Command::new("xz").args(["-0", "-c"]).arg(&img), &good);
    let card = dir.path().join("card.img");
    old_mbr_card(&card, size);
    let o = piimg()
        .args(["--json", "flash", "--force-file", "--yes"])
        .arg(&good)
        .arg(&card)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("writing every byte of it instead"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["map"], "whole-image");
    assert_eq!(v["decompressed_first"], false);
    assert_eq!(v["bytes_written"], size);
    assert!(fs::read(&card).unwrap() == fs::read(&img).unwrap());

    // Corrupt data is found mid-stream, after the card's table was erased.
    fs::remove_file(&good).unwrap();
    let bad = small.dir.path().join("bad.img.xz");
    corrupt_xz_of(&img, &bad);
    old_mbr_card(&card, size);
    let o = piimg()
        .args(["flash", "--force-file", "--yes"])
        .arg(&bad)
        .arg(&card)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("cannot read image"), "{err}");
    assert!(
        err.contains("the card has no partition table now")
            && err.contains("run the same command again"),
        "{err}"
    );
    assert_no_table(&card, size);
}

/// A tmpfs of `mib` MiB mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m"),
                "tmpfs",
                dir.path().to_str().unwrap(),
            ],
        );
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn write_error_mid_flash_leaves_no_table() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("node.img");
    let size = make_image(&img);
    // The card is a sparse file on a tmpfs too small for the image: writes fail
    // with ENOSPC part-way, as a dying card fails with EIO.
    let fs_ = Tmpfs::new(8);
    let card = fs_.dir.path().join("card.img");
    {
        let f = File::create(&card).unwrap();
        f.set_len(size).unwrap();
        put_mbr(&f, size);
        f.write_at(&[0xca, 0xfe, 0xf0, 0x0d], 440).unwrap();
    }
    assert!(sfdisk_finds_table(&card));
    let (src, _) = Source::open(&img).unwrap();
    let policy = TargetPolicy {
        force: false,
        force_file: true,
    };
    let t = target::inspect(&card, src.image_size, &SystemView::host(), policy).unwrap();
    let failure = flash::flash(&src, &t, &FlashOptions::default(), &quiet()).unwrap_err();
    assert!(
        matches!(failure.error, FlashError::Write { .. }),
        "{failure}"
    );
    assert_eq!(failure.card, CardState::NoTable, "{failure}");
    assert!(
        failure
            .to_string()
            .contains("the card has no partition table now")
    );
    assert!(!sfdisk_finds_table(&card));
    let f = File::open(&card).unwrap();
    let mut s0 = [0u8; 512];
    f.read_exact_at(&mut s0, 0).unwrap();
    assert!(s0.iter().all(|&b| b == 0));
}

#[test]
fn piimg_build_xz_output_with_its_bmap_flashes_to_a_working_card() {
    if !loop_available() {
        return;
    }
    let base = support::image("bookworm", &[]);
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("lab.toml"),
        support::lab_profile(&["192.168.86.1"], "pi4-2gb"),
    )
    .unwrap();
    let o = piimg()
        .current_dir(dir.path())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("PIIMG_CACHE", dir.path().join("cache"))
        .env_remove("PIIMG_PROFILE")
        .args([
            "-q",
            "build",
            "--profile",
            "lab.toml",
            "--offline",
            "--base",
        ])
        .arg(&base.path)
        .args(["--node", "pi4-worker-1", "--xz"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "build: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = dir.path().join("out");
    let xz = out.join("pi4-worker-1.img.xz");
    let map = out.join("pi4-worker-1.img.bmap");
    assert!(
        xz.is_file() && map.is_file(),
        "build --xz wrote .img.xz and .img.bmap"
    );
    // Keep the raw image for the comparison, away from the .xz.
    let raw = dir.path().join("raw.img");
    fs::rename(out.join("pi4-worker-1.img"), &raw).unwrap();

    let backing = dir.path().join("card.bin");
    ff_card(&backing, file_len(&raw) + 8 * MIB);
    let lo = Loop::new(&backing);
    let o = piimg()
        .args(["--json", "flash", "--yes", "--force"])
        .arg(&xz)
        .arg(&lo.dev)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["compression"], "xz");
    assert_eq!(
        v["map"],
        serde_json::json!({ "bmap+file-systems": map.display().to_string() })
    );
    assert_eq!(
        v["warnings"],
        serde_json::json!([]),
        "its own .bmap matches"
    );
    assert_card_is_image(&raw, &lo.dev, "build --xz");
}
