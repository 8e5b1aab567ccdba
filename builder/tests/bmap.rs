//! Interop of `piimg::bmap` with bmap-tools: `bmaptool copy` accepts our maps and
//! checks our range checksums; our parser reads what `bmaptool create` writes.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use piimg::bmap::Bmap;

/// A 6 MiB sparse image with data scattered over a few ranges and an odd tail.
fn sample_image(path: &Path) {
    let f = File::create(path).unwrap();
    let size = (6 << 20) + 1234;
    f.set_len(size).unwrap();
    let pattern = |n: usize, seed: u8| -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    };
    f.write_at(&pattern(512, 1), 0).unwrap();
    f.write_at(&pattern(3 * 4096 + 17, 2), 1 << 20).unwrap();
    f.write_at(&pattern(70_000, 3), 4 << 20).unwrap();
    f.write_at(&pattern(100, 4), size - 100).unwrap();
    f.sync_all().unwrap();
}

fn bmaptool(args: &[&str]) -> std::process::Output {
    Command::new("bmaptool")
        .args(args)
        .output()
        .expect("bmaptool must be installed (scripts/setup installs bmap-tools)")
}

fn equal_on(bmap: &Bmap, a: &Path, b: &Path) {
    let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
    for (off, len) in bmap.extents() {
        let r = off as usize..(off + len) as usize;
        assert!(a[r.clone()] == b[r], "differs in range at {off}+{len}");
    }
}

#[test]
fn bmaptool_copy_accepts_our_bmap() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    sample_image(&img);
    let bmap = Bmap::scan_path(&img).unwrap();
    assert!(bmap.ranges.len() >= 4, "{bmap:?}");
    let map = dir.path().join("x.img.bmap");
    bmap.write(&map).unwrap();

    let target = dir.path().join("target");
    fs::write(&target, vec![0xAAu8; 7 << 20]).unwrap();
    let out = bmaptool(&[
        "copy",
        "--bmap",
        map.to_str().unwrap(),
        img.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    equal_on(&bmap, &img, &target);
    // bmaptool truncates a regular-file target to the image size.
    assert_eq!(fs::metadata(&target).unwrap().len(), bmap.image_size);
}

#[test]
fn bmaptool_copy_checks_our_range_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    sample_image(&img);
    let bmap = Bmap::scan_path(&img).unwrap();
    let map = dir.path().join("x.img.bmap");
    bmap.write(&map).unwrap();
    // Change one mapped byte after the map was made.
    let f = fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_at(&[0xFF], (4 << 20) + 10).unwrap();
    let target = dir.path().join("target");
    let out = bmaptool(&[
        "copy",
        "--bmap",
        map.to_str().unwrap(),
        img.to_str().unwrap(),
        target.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn we_read_bmaptool_create_output() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    sample_image(&img);
    let map = dir.path().join("theirs.bmap");
    let out = bmaptool(&["create", "-o", map.to_str().unwrap(), img.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = Bmap::load(&map).unwrap();
    let ours = Bmap::scan_path(&img).unwrap();
    assert_eq!(theirs, ours);

    // And a bmaptool file edited by hand fails its BmapFileChecksum.
    let text = fs::read_to_string(&map).unwrap();
    let edited = text.replacen("<BlockSize> 4096", "<BlockSize> 8192", 1);
    assert_ne!(edited, text);
    let err = Bmap::parse(&edited).unwrap_err().to_string();
    assert!(err.contains("BmapFileChecksum mismatch"), "{err}");
}

#[test]
fn load_names_the_missing_file() {
    let err = Bmap::load(Path::new("/nonexistent/x.bmap"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/x.bmap"), "{err}");
}
