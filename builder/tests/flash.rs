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
/// one Linux partition from 1 MiB to the end, so the image engine takes it.
fn put_mbr(f: &File, size: u64) {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    let e = &mut s[446..462];
    e[4] = 0x83;
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

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} must be installed (scripts/setup): {e}");
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether loop devices can be made here; prints why not when they cannot.
fn loop_available() -> bool {
    let ok = Command::new("losetup")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        // Skipping silently would let CI pass without the loop-device tests.
        assert!(
            std::env::var_os("PIIMG_SKIP_LOOP_TESTS").is_some(),
            "losetup is not installed: run scripts/setup (util-linux), or set \
             PIIMG_SKIP_LOOP_TESTS=1 to skip the loop-device flash tests knowingly"
        );
        eprintln!("SKIPPED (PIIMG_SKIP_LOOP_TESTS): loop-device flash tests");
    }
    ok
}

/// A loop device over a backing file, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(backing: &Path) -> Loop {
        let dev = run("losetup", &["-f", "--show", backing.to_str().unwrap()]);
        Loop {
            dev: PathBuf::from(dev),
        }
    }

    fn devno(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = fs::metadata(&self.dev).unwrap().rdev();
        (libc::major(rdev), libc::minor(rdev))
    }

    fn name(&self) -> String {
        self.dev.file_name().unwrap().to_string_lossy().into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
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
fn cli_node_flashes_out_dir_image_or_says_why_it_cannot_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let outdir = dir.path().join("out");
    fs::create_dir(&outdir).unwrap();
    let card = dir.path().join("card.img");
    let o = piimg()
        .args([
            "flash",
            "--node",
            "node-a",
            "--force-file",
            "--yes",
            "--out",
        ])
        .arg(&outdir)
        .arg(&card)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    // No image yet: flash builds it first, and says so when that cannot work (here:
    // no profile in the working directory).
    assert!(
        err.contains("building node-a's image before flashing it"),
        "{err}"
    );
    assert!(!card.exists());
    assert!(!outdir.join("node-a.img").exists());

    make_image(&outdir.join("node-a.img"));
    let o = piimg()
        .args([
            "-q",
            "flash",
            "--node",
            "node-a",
            "--force-file",
            "--yes",
            "--out",
        ])
        .arg(&outdir)
        .arg(&card)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        fs::read(&card).unwrap(),
        fs::read(outdir.join("node-a.img")).unwrap()
    );
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
