//! The file-system block map (`piimg::image::usage`) and the `.bmap` that `build`
//! writes from it, checked with independent tools: a "used card" (a file of 0xFF
//! bytes) gets only the mapped bytes of an image, then `fsck.vfat -n`, `e2fsck -fn`
//! and the file trees extracted with mtools / debugfs must equal the original's.

mod support;

use piimg::image::Image;
use piimg::image::usage::{self, Mapping};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

/// A FAT file system of `mib` MiB made with `mkfs.vfat ARGS`, holding a small tree,
/// a large file that is then deleted, and returns (path, deleted bytes).
fn make_fat(dir: &Path, mib: u64, args: &[&str]) -> (PathBuf, u64) {
    let p = dir.join("fat.part");
    let _ = std::fs::remove_file(&p);
    run(Command::new("mkfs.vfat")
        .args(args)
        .args(["-n", "BOOTFS", "-C"])
        .arg(&p)
        .arg((mib * 1024).to_string()));
    let src = dir.join("fat-src");
    std::fs::create_dir_all(src.join("overlays")).unwrap();
    std::fs::write(src.join("config.txt"), b"arm_64bit=1\n").unwrap();
    std::fs::write(src.join("kernel8.img"), noise(300_000, 1)).unwrap();
    std::fs::write(src.join("overlays/a.dtbo"), noise(5_000, 2)).unwrap();
    std::fs::write(src.join("empty.txt"), b"").unwrap();
    let deleted = (mib * MIB / 3).min(32 * MIB);
    std::fs::write(dir.join("big.bin"), noise(deleted as usize, 3)).unwrap();
    let img = format!("{}", p.display());
    let mtools = |args: &[&str]| {
        run(Command::new(args[0])
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(&args[1..]));
    };
    mtools(&[
        "mcopy",
        "-i",
        &img,
        dir.join("big.bin").to_str().unwrap(),
        "::/big.bin",
    ]);
    mtools(&[
        "mcopy",
        "-s",
        "-i",
        &img,
        &format!("{}/config.txt", src.display()),
        &format!("{}/kernel8.img", src.display()),
        &format!("{}/overlays", src.display()),
        &format!("{}/empty.txt", src.display()),
        "::/",
    ]);
    mtools(&["mdel", "-i", &img, "::/big.bin"]);
    (p, deleted)
}

/// An ext4 file system of `mib` MiB made with `mkfs.ext4 ARGS -d TREE`, whose large
/// file is then deleted with debugfs; returns (path, deleted bytes).
fn make_ext4(dir: &Path, mib: u64, args: &[&str]) -> (PathBuf, u64) {
    let p = dir.join("ext4.part");
    let _ = std::fs::remove_file(&p);
    let tree = dir.join("ext4-src");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(tree.join("etc/os-release"), b"ID=debian\n").unwrap();
    std::fs::write(tree.join("usr/bin/tool"), noise(200_000, 4)).unwrap();
    for i in 0..50 {
        std::fs::write(
            tree.join(format!("etc/f{i}")),
            noise(100 + i * 37, 5 + i as u64),
        )
        .unwrap();
    }
    let deleted = (mib * MIB / 3).min(32 * MIB);
    std::fs::write(tree.join("big.bin"), noise(deleted as usize, 9)).unwrap();
    run(Command::new("mkfs.ext4")
        .env("E2FSPROGS_FAKE_TIME", "1700000000")
        .args(["-q", "-F", "-L", "rootfs"])
        .args(args)
        .arg("-d")
        .arg(&tree)
        .arg(&p)
        .arg(format!("{mib}M")));
    run(Command::new("debugfs")
        .args(["-w", "-R", "rm /big.bin"])
        .arg(&p));
    (p, deleted)
}

/// A disk image: MBR, partitions at 1 MiB alignment holding `parts` (type, file).
fn make_disk(dir: &Path, parts: &[(&str, &Path)]) -> PathBuf {
    let disk = dir.join("disk.img");
    let mut script = String::from("label: dos\nlabel-id: 0x1234abcd\n");
    let mut at = MIB;
    let mut places = Vec::new();
    for (kind, file) in parts {
        let len = std::fs::metadata(file).unwrap().len();
        script.push_str(&format!(
            "start={}, size={}, type={kind}\n",
            at / 512,
            len / 512
        ));
        places.push((at, *file));
        at += len.div_ceil(MIB) * MIB;
    }
    File::create(&disk).unwrap().set_len(at + MIB).unwrap();
    let mut sf = Command::new("sfdisk")
        .arg("--no-reread")
        .arg("-q")
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(sf.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    assert!(sf.wait().unwrap().success());
    for (at, file) in places {
        run(Command::new("dd")
            .arg(format!("if={}", file.display()))
            .arg(format!("of={}", disk.display()))
            .args([
                "bs=1M",
                "conv=notrunc,sparse",
                "oflag=seek_bytes",
                "status=none",
            ])
            .arg(format!("seek={at}")));
    }
    disk
}

/// A card of the image's size that held something else (every byte 0xFF), with only
/// `ranges` of `image` written onto it.
fn used_card(image: &Path, ranges: &[(u64, u64)], out: &Path) {
    let size = std::fs::metadata(image).unwrap().len();
    let card = File::create(out).unwrap();
    let ff = vec![0xFFu8; MIB as usize];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(MIB);
        card.write_all_at(&ff[..n as usize], at).unwrap();
        at += n;
    }
    let src = File::open(image).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for &(s, e) in ranges {
        let mut at = s;
        while at < e {
            let n = (e - at).min(MIB) as usize;
            src.read_exact_at(&mut buf[..n], at).unwrap();
            card.write_all_at(&buf[..n], at).unwrap();
            at += n as u64;
        }
    }
    card.sync_all().unwrap();
}

/// The FAT partition `n`'s tree, copied out with `mcopy -s`.
fn fat_tree(image: &Path, n: usize, out: &Path) {
    let (start, _) = support::partition(image, n);
    std::fs::create_dir_all(out).unwrap();
    run(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-s", "-n", "-i"])
        .arg(format!("{}@@{start}", image.display()))
        .arg("::/")
        .arg(out));
}

/// The ext4 partition `n`'s tree, copied out with `debugfs -R 'rdump / DIR'`.
fn ext4_tree(image: &Path, n: usize, out: &Path) {
    let (start, _) = support::partition(image, n);
    std::fs::create_dir_all(out).unwrap();
    let text = run(Command::new("debugfs")
        .arg("-R")
        .arg(format!("rdump / {}", out.display()))
        .arg(format!("{}?offset={start}", image.display())));
    assert!(!text.contains("error"), "{text}");
}

/// How many 512-byte sectors within `ranges` of `image` hold a sector of `content`.
fn sectors_of(image: &Path, ranges: &[(u64, u64)], content: &[u8]) -> u64 {
    let wanted: std::collections::HashSet<&[u8]> = content.chunks_exact(512).collect();
    let f = File::open(image).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut found = 0;
    for &(s, e) in ranges {
        let mut at = s;
        while at < e {
            let n = ((e - at).min(MIB) as usize) / 512 * 512;
            if n == 0 {
                break;
            }
            f.read_exact_at(&mut buf[..n], at).unwrap();
            found += buf[..n]
                .chunks_exact(512)
                .filter(|c| wanted.contains(c))
                .count() as u64;
            at += n as u64;
        }
    }
    found
}

fn same_tree(a: &Path, b: &Path) {
    run(Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(a)
        .arg(b));
}

/// The card check: the map is sorted and disjoint, each file system was mapped by
/// its reader (not taken whole) and without the deleted file, and a used card with
/// only the mapped bytes is clean with the same trees.
fn check(disk: &Path, fat_bits: u8, fat_deleted: u64, ext_deleted: u64) {
    let image = Image::open(disk).unwrap();
    let u = usage::usage(&image).unwrap();
    for w in u.ranges.windows(2) {
        assert!(w[0].1 < w[1].0, "ranges overlap or touch: {:?}", u.ranges);
    }
    assert_eq!(u.partitions[0].mapping, Mapping::Fat { bits: fat_bits });
    assert_eq!(u.partitions[1].mapping, Mapping::Ext4);
    let parts = &image.table().partitions;
    for (p, deleted) in parts.iter().zip([fat_deleted, ext_deleted]) {
        let used = u.partitions[p.index as usize - 1].used_bytes;
        assert!(
            used + deleted <= p.size,
            "partition {}: {used} of {} bytes mapped, but {deleted} were deleted",
            p.index,
            p.size
        );
    }
    // The deleted files' data is still in the image (free blocks), and none of it
    // is mapped.
    for (n, deleted, seed) in [(1usize, fat_deleted, 3u64), (2, ext_deleted, 9)] {
        let p = &parts[n - 1];
        let mut r = Vec::new();
        for &(s, e) in &u.ranges {
            let (s, e) = (s.max(p.start), e.min(p.end()));
            if s < e {
                r.push((s, e));
            }
        }
        let everything = [(p.start, p.end())];
        let content = noise(deleted as usize, seed);
        let in_image = sectors_of(disk, &everything, &content);
        assert!(
            in_image * 512 >= deleted * 9 / 10,
            "partition {n}: only {in_image} sectors of the deleted file are left in the image"
        );
        assert_eq!(
            sectors_of(disk, &r, &content),
            0,
            "partition {n}: the map holds sectors of a deleted file"
        );
    }
    // Everything outside partitions is mapped (the MBR, the gaps, the tail).
    assert_eq!(u.ranges[0].0, 0);
    assert!(u.ranges.last().unwrap().1 == image.size());
    drop(image);

    let dir = tempfile::tempdir().unwrap();
    let card = dir.path().join("card.img");
    used_card(disk, &u.ranges, &card);
    support::assert_fat_clean(&card, 1);
    support::assert_ext4_clean(&card, 2);
    fat_tree(disk, 1, &dir.path().join("fat-a"));
    fat_tree(&card, 1, &dir.path().join("fat-b"));
    same_tree(&dir.path().join("fat-a"), &dir.path().join("fat-b"));
    ext4_tree(disk, 2, &dir.path().join("ext-a"));
    ext4_tree(&card, 2, &dir.path().join("ext-b"));
    same_tree(&dir.path().join("ext-a"), &dir.path().join("ext-b"));
    assert!(dir.path().join("ext-b/etc/f49").exists());
    assert!(
        journal(&card, 2) == journal(disk, 2),
        "the card's journal differs"
    );
    assert!(!dir.path().join("ext-b/big.bin").exists());
}

#[test]
fn fat32_s1_and_ext4_with_flex_bg_survive_a_used_card() {
    let dir = tempfile::tempdir().unwrap();
    let (fat, fd) = make_fat(dir.path(), 64, &["-F", "32", "-s", "1"]);
    let (ext, ed) = make_ext4(dir.path(), 96, &[]);
    check(
        &make_disk(dir.path(), &[("c", &fat), ("83", &ext)]),
        32,
        fd,
        ed,
    );
}

#[test]
fn fat32_s4_and_ext4_without_flex_bg_survive_a_used_card() {
    let dir = tempfile::tempdir().unwrap();
    let (fat, fd) = make_fat(dir.path(), 300, &["-F", "32", "-s", "4"]);
    let (ext, ed) = make_ext4(dir.path(), 300, &["-O", "^flex_bg,^64bit,^huge_file"]);
    check(
        &make_disk(dir.path(), &[("c", &fat), ("83", &ext)]),
        32,
        fd,
        ed,
    );
}

#[test]
fn fat16_and_ext4_with_lazily_initialised_inode_tables_survive_a_used_card() {
    let dir = tempfile::tempdir().unwrap();
    let (fat, fd) = make_fat(dir.path(), 32, &["-F", "16"]);
    // No discard: no group is flagged ITABLE_ZEROED, so only each table's used part
    // is mapped.
    let (ext, ed) = make_ext4(
        dir.path(),
        300,
        &["-E", "nodiscard,lazy_itable_init=1", "-O", "^flex_bg"],
    );
    check(
        &make_disk(dir.path(), &[("e", &fat), ("83", &ext)]),
        16,
        fd,
        ed,
    );
}

#[test]
fn fat12_and_ext4_with_1k_blocks_and_64bit_survive_a_used_card() {
    let dir = tempfile::tempdir().unwrap();
    let (fat, fd) = make_fat(dir.path(), 4, &["-F", "12"]);
    let (ext, ed) = make_ext4(dir.path(), 64, &["-b", "1024", "-O", "64bit,metadata_csum"]);
    check(
        &make_disk(dir.path(), &[("1", &fat), ("83", &ext)]),
        12,
        fd,
        ed,
    );
}

/// The non-zero 4 KiB blocks of `image`: what a map made from the holes of a
/// `cp --sparse=always` copy holds.
fn nonzero_blocks(image: &Path) -> Vec<(u64, u64)> {
    let data = std::fs::read(image).unwrap();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, b) in data.chunks(4096).enumerate() {
        if b.iter().any(|&x| x != 0) {
            let s = i as u64 * 4096;
            match out.last_mut() {
                Some(l) if l.1 == s => l.1 = s + b.len() as u64,
                _ => out.push((s, s + b.len() as u64)),
            }
        }
    }
    out
}

#[test]
fn a_map_of_non_zero_blocks_corrupts_a_used_card_and_the_checks_see_it() {
    // The failure the file-system map prevents, and proof the checks above can fail.
    let dir = tempfile::tempdir().unwrap();
    let (fat, _) = make_fat(dir.path(), 64, &["-F", "32", "-s", "1"]);
    let (ext, _) = make_ext4(dir.path(), 96, &[]);
    let disk = make_disk(dir.path(), &[("c", &fat), ("83", &ext)]);
    let card = dir.path().join("card.img");
    used_card(&disk, &nonzero_blocks(&disk), &card);
    let (fat_ok, fat_text) = support::fsck_vfat(&card, 1);
    assert!(
        !fat_ok,
        "fsck.vfat passed a FAT with 0xFF in its free entries:\n{fat_text}"
    );
    // e2fsck -fn does not read a clean journal's unused blocks, but the kernel
    // writes and replays them: the journal must be the image's, byte for byte.
    assert_ne!(journal(&card, 2), journal(&disk, 2));
}

/// The ext4 journal (inode 8) of partition `n`, read by debugfs.
fn journal(image: &Path, n: usize) -> Vec<u8> {
    let j = support::debugfs_cat(image, n, "<8>");
    assert!(
        j.len() >= MIB as usize,
        "no journal read: {} bytes",
        j.len()
    );
    j
}

#[test]
fn unknown_or_damaged_file_systems_are_mapped_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (fat, _) = make_fat(dir.path(), 64, &["-F", "32", "-s", "1"]);
    let (ext, _) = make_ext4(dir.path(), 32, &["-O", "bigalloc", "-C", "16384"]);
    let raw = dir.path().join("raw.part");
    std::fs::write(&raw, noise(4 * MIB as usize, 11)).unwrap();
    let disk = make_disk(dir.path(), &[("c", &fat), ("83", &ext), ("da", &raw)]);
    let image = Image::open(&disk).unwrap();
    let (fat_at, fat_size) = {
        let p = &image.table().partitions[0];
        (p.start, p.size)
    };
    let u = usage::usage(&image).unwrap();
    assert!(matches!(u.partitions[0].mapping, Mapping::Fat { bits: 32 }));
    for (i, what) in [(1, "bigalloc"), (2, "no FAT or ext4")] {
        let p = &image.table().partitions[i];
        match &u.partitions[i].mapping {
            Mapping::Whole { reason } => assert!(reason.contains(what), "{reason}"),
            m => panic!("partition {} mapped as {m:?}", p.index),
        }
        assert_eq!(u.partitions[i].used_bytes, p.size);
    }
    drop(image);
    // Damage the FAT's sectors-per-cluster (0x0D): the whole partition, named.
    let f = File::options().write(true).open(&disk).unwrap();
    f.write_all_at(&[3], fat_at + 0x0D).unwrap();
    // Damage the ext4 inode count (superblock offset 0x0): whole, named.
    let ext_at = support::partition(&disk, 2).0;
    f.write_all_at(&[0xFF, 0xFF, 0xFF, 0x7F], ext_at + 1024)
        .unwrap();
    drop(f);
    let image = Image::open(&disk).unwrap();
    let u = usage::usage(&image).unwrap();
    // A FAT whose BPB does not parse is no longer recognised as FAT at all.
    assert!(matches!(u.partitions[0].mapping, Mapping::Whole { .. }));
    assert_eq!(u.partitions[0].used_bytes, fat_size);
    assert!(
        matches!(&u.partitions[1].mapping, Mapping::Whole { reason } if reason.contains("bigalloc") || reason.contains("inodes"))
    );
    let _ = ext;
}

// ------------------------------------------------ build's .bmap, however laid out

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A loop device over a backing file, detached on drop (also when a test fails).
struct Loop(PathBuf);

impl Loop {
    fn new(backing: &Path) -> Loop {
        let dev = run(Command::new("losetup").arg("-f").arg("--show").arg(backing));
        Loop(PathBuf::from(dev.trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=3g", "tmpfs"])
            .arg(dir.path()));
        Tmpfs { dir }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn write_profile(dir: &Path) {
    std::fs::write(
        dir.join("lab.toml"),
        support::lab_profile(&["192.168.86.1"], "pi4-4gb"),
    )
    .unwrap();
}

/// `piimg build --node pi4-worker-1 --base BASE --out OUT`; returns the image path.
/// A worker: its card is byte-reproducible (a server's carries a node-cleaner
/// certificate signed afresh by each build).
fn build(env: &Path, base: &Path, out: &Path) -> PathBuf {
    run(Command::new(env!("CARGO_BIN_EXE_piimg"))
        .current_dir(env)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("PIIMG_CACHE", env.join("cache"))
        .env_remove("PIIMG_PROFILE")
        .args(["--quiet", "build", "--profile", "lab.toml", "--offline"])
        .args(["--node", "pi4-worker-1", "--base"])
        .arg(base)
        .arg("--out")
        .arg(out));
    out.join("pi4-worker-1.img")
}

#[test]
fn build_writes_the_same_bmap_however_the_base_and_output_are_laid_out() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs and attaching loop devices need root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_profile(d);
    // The base, three ways: dense, sparse, and decompressed by xz -d; all named
    // base.img (the card's manifest names its base).
    for way in ["dense", "sparse", "unxz"] {
        std::fs::create_dir(d.join(way)).unwrap();
    }
    let made = d.join("made.img");
    run(Command::new(support::mkimage_script())
        .args(["--release", "bookworm", "--out"])
        .arg(&made));
    let dense = d.join("dense/base.img");
    run(Command::new("cp")
        .arg("--sparse=never")
        .arg(&made)
        .arg(&dense));
    let sparse = d.join("sparse/base.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&made)
        .arg(&sparse));
    run(Command::new("xz").args(["-T0", "-1", "-k"]).arg(&made));
    let unxz = d.join("unxz/base.img");
    std::fs::rename(d.join("made.img.xz"), d.join("unxz/base.img.xz")).unwrap();
    run(Command::new("xz").arg("-d").arg(d.join("unxz/base.img.xz")));
    std::fs::remove_file(&made).unwrap();
    let blocks = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).unwrap().blocks()
    };
    assert!(
        blocks(&sparse) < blocks(&dense),
        "the sparse base is not sparser than the dense one"
    );

    let tmpfs = Tmpfs::new();
    let mut bmaps = Vec::new();
    let mut first: Option<PathBuf> = None;
    for base in [&dense, &sparse, &unxz] {
        for (i, root) in [d, tmpfs.dir.path()].into_iter().enumerate() {
            let name = base
                .parent()
                .and_then(Path::file_name)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let out = root.join(format!("out-{name}-{i}"));
            let img = build(d, base, &out);
            let bmap = std::fs::read_to_string(img.with_extension("img.bmap")).unwrap();
            bmaps.push((format!("{name} on {}", ["disk", "tmpfs"][i]), bmap));
            match &first {
                None => {
                    let keep = d.join("node.img");
                    run(Command::new("cp")
                        .arg("--sparse=always")
                        .arg(&img)
                        .arg(&keep));
                    first = Some(keep);
                }
                Some(keep) => assert_eq!(
                    support::sha256_file(&img),
                    support::sha256_file(keep),
                    "the images differ"
                ),
            }
            std::fs::remove_dir_all(&out).unwrap();
        }
    }
    for (what, b) in &bmaps[1..] {
        assert!(
            b == &bmaps[0].1,
            "the .bmap of {what} differs from {}",
            bmaps[0].0
        );
    }
    drop(tmpfs);

    // bmaptool copy onto a used card (a loop device over a 0xFF-filled file).
    let img = first.unwrap();
    let bmap = d.join("node.img.bmap");
    std::fs::write(&bmap, &bmaps[0].1).unwrap();
    let card = d.join("card.bin");
    used_card(&img, &[], &card);
    {
        let lo = Loop::new(&card);
        run(Command::new("bmaptool")
            .args(["-q", "copy", "--bmap"])
            .arg(&bmap)
            .arg(&img)
            .arg(&lo.0));
    }
    support::assert_fat_clean(&card, 1);
    support::assert_ext4_clean(&card, 2);
    fat_tree(&img, 1, &d.join("fat-a"));
    fat_tree(&card, 1, &d.join("fat-b"));
    same_tree(&d.join("fat-a"), &d.join("fat-b"));
    ext4_tree(&img, 2, &d.join("ext-a"));
    ext4_tree(&card, 2, &d.join("ext-b"));
    same_tree(&d.join("ext-a"), &d.join("ext-b"));
    assert!(
        journal(&card, 2) == journal(&img, 2),
        "the card's journal differs"
    );
    // The map is what the file systems need, less than the whole image.
    let size = std::fs::metadata(&img).unwrap().len();
    let mapped = piimg::bmap::Bmap::load(&bmap).unwrap().mapped_bytes();
    assert!(mapped < size / 2, "{mapped} of {size} bytes mapped");
}

#[test]
fn the_base_map_is_the_file_system_map_and_is_cached_by_file_identity() {
    use piimg::bmap::BLOCK_SIZE;
    use piimg::output::blockmap;
    let dir = tempfile::tempdir().unwrap();
    let (fat, _) = make_fat(dir.path(), 64, &["-F", "32", "-s", "1"]);
    let (ext, _) = make_ext4(dir.path(), 96, &[]);
    let disk = make_disk(dir.path(), &[("c", &fat), ("83", &ext)]);
    let cache = dir.path().join("cache");
    let cuts = [MIB / BLOCK_SIZE, 65 * MIB / BLOCK_SIZE];
    let map = blockmap::base_map(&disk, &cuts, Some(&cache)).unwrap();
    // The same blocks as the file-system map, split at the cuts.
    let used = usage::used_ranges(&Image::open(&disk).unwrap()).unwrap();
    let want: u64 = used
        .iter()
        .map(|&(s, e)| (e.div_ceil(BLOCK_SIZE) - s / BLOCK_SIZE) * BLOCK_SIZE)
        .sum();
    assert_eq!(map.mapped_bytes(), want);
    assert!(map.ranges.iter().any(|r| r.first == cuts[0]));
    assert!(map.ranges.iter().any(|r| r.first == cuts[1]));
    // Served from the cache the second time: one file, the same map.
    assert_eq!(blockmap::base_map(&disk, &cuts, Some(&cache)).unwrap(), map);
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 1);
    // Each range's checksum is the SHA-256 of its bytes (sha256sum agrees).
    let size = std::fs::metadata(&disk).unwrap().len();
    for r in map.ranges.iter().take(5) {
        let (off, len) = piimg::bmap::byte_span(r.first, r.last, BLOCK_SIZE, size);
        assert_eq!(r.sha256.to_string(), support::sha256_range(&disk, off, len));
    }
    // A changed base is mapped again, not served from the cache.
    std::thread::sleep(std::time::Duration::from_millis(20));
    run(Command::new("mdel")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{}", disk.display(), MIB))
        .arg("::/kernel8.img"));
    let again = blockmap::base_map(&disk, &cuts, Some(&cache)).unwrap();
    assert!(again.mapped_bytes() < map.mapped_bytes());
}

#[test]
fn damaged_ext4_metadata_maps_whole_or_errs_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (fat, _) = make_fat(dir.path(), 64, &["-F", "32", "-s", "1"]);
    let (ext, _) = make_ext4(dir.path(), 96, &[]);
    let disk = make_disk(dir.path(), &[("c", &fat), ("83", &ext)]);
    let (at, size) = support::partition(&disk, 2);
    let pristine = std::fs::read(&disk).unwrap();
    let f = File::options().write(true).open(&disk).unwrap();
    // Group 0's block bitmap pointer (the first descriptor, in the block after the
    // superblock's) far outside the file system: the whole partition, naming the group.
    let bs = 1024u64 << pristine[(at + 1024 + 0x18) as usize];
    let gdt = if bs == 1024 { 2048 } else { bs };
    f.write_all_at(&0x7FFF_FFF0u32.to_le_bytes(), at + gdt)
        .unwrap();
    let u = usage::usage(&Image::open(&disk).unwrap()).unwrap();
    match &u.partitions[1].mapping {
        Mapping::Whole { reason } => {
            assert!(
                reason.contains("group 0") && reason.contains("block bitmap"),
                "{reason}"
            )
        }
        m => panic!("mapped as {m:?}"),
    }
    assert_eq!(u.partitions[1].used_bytes, size);
    // Random damage to the superblock and descriptors: a verdict or a named error,
    // never a panic, and never a range outside the image.
    let image_size = pristine.len() as u64;
    for seed in 0..200u64 {
        let head = at as usize..at as usize + 8192;
        f.write_all_at(&pristine[head], at).unwrap();
        let n = noise(16, seed);
        for k in 0..4 {
            let off = 1024 + (u64::from(n[2 * k]) << 8 | u64::from(n[2 * k + 1])) % 7168;
            f.write_all_at(&[n[8 + k]], at + off).unwrap();
        }
        if let Ok(u) = usage::usage(&Image::open(&disk).unwrap()) {
            assert!(u.ranges.iter().all(|&(s, e)| s < e && e <= image_size));
        }
    }
}

#[test]
fn a_gpt_image_keeps_both_tables_and_its_file_systems_on_a_used_card() {
    let img = support::image("trixie", &["--gpt"]);
    let image = Image::open(&img.path).unwrap();
    let u = usage::usage(&image).unwrap();
    assert_eq!(u.partitions[0].mapping, Mapping::Fat { bits: 32 });
    assert_eq!(u.partitions[1].mapping, Mapping::Ext4);
    // The backup GPT lives in the last 33 sectors, outside every partition.
    assert_eq!(u.ranges.last().unwrap().1, image.size());
    assert!(u.used_bytes() < image.size() / 2);
    let card = img.dir.path().join("card.img");
    used_card(&img.path, &u.ranges, &card);
    drop(image);
    let dump = |p: &Path| {
        run(Command::new("sfdisk").arg("-d").arg(p)).replace(&p.display().to_string(), "DISK")
    };
    assert_eq!(dump(&card), dump(&img.path));
    // The backup table itself, byte for byte.
    let size = std::fs::metadata(&card).unwrap().len();
    assert_eq!(
        support::sha256_range(&card, size - 33 * 512, 33 * 512),
        support::sha256_range(&img.path, size - 33 * 512, 33 * 512)
    );
    let verify = run(Command::new("sfdisk").arg("--verify").arg(&card));
    assert!(verify.contains("No errors detected"), "{verify}");
    support::assert_fat_clean(&card, 1);
    support::assert_ext4_clean(&card, 2);
}
