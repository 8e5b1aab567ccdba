//! Replays every input the fuzzers (`fuzz/`, `scripts/fuzz`) found a bug with, through
//! the very same calls the fuzz targets make, under plain `cargo test` on stable: each
//! must now end in a result or a named error, never a panic or a hang.
//!
//! Inputs live in `fuzz/regressions/<target>/`, one file each, named for the bug.

use std::path::{Path, PathBuf};

#[allow(dead_code)] // scratch_file is for the fuzzers; the tests use a temp dir
#[path = "../../fuzz/src/harness.rs"]
mod harness;

/// The regression inputs of `target`, sorted by name.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"));
    files.sort();
    files
}

/// Runs `body` on each of `target`'s inputs; a panic names the input that caused it.
fn replay(target: &str, body: impl Fn(&[u8], &Path)) -> usize {
    let dir = tempfile::tempdir().expect("a temp dir");
    let scratch = dir.path().join("disk.img");
    let files = inputs(target);
    for file in &files {
        let data = std::fs::read(file).expect("a readable regression input");
        let name = file.display().to_string();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&data, &scratch)));
        assert!(outcome.is_ok(), "{target}: {name} panics again");
    }
    files.len()
}

#[test]
fn table_inputs_are_errors_not_panics() {
    replay("table", harness::table);
}

#[test]
fn fat_inputs_are_errors_not_panics() {
    replay("fat", harness::fat);
}

#[test]
fn ext4_inputs_are_errors_not_panics() {
    replay("ext4", harness::ext4);
}

#[test]
fn image_inputs_are_errors_not_panics() {
    replay("image", harness::image);
}

#[test]
fn bmap_inputs_are_errors_not_panics() {
    replay("bmap", |data, _| harness::bmap(data));
}

#[test]
fn contract_inputs_are_errors_not_panics() {
    replay("contract", |data, _| harness::contract(data));
}

/// The sparse disk encoding the image targets (and so the saved inputs) use puts each
/// chunk at its sector and the rest reads as zeros: an MBR built from it opens with the
/// partition written into it.
#[test]
fn sparse_disk_encoding_places_chunks_at_their_sectors() {
    let mut mbr = [0u8; 512];
    // Partition 1: type 0x0c (FAT32 LBA) at sector 2048, 4096 sectors.
    mbr[446 + 4] = 0x0c;
    mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
    mbr[446 + 12..446 + 16].copy_from_slice(&4096u32.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    let mut data = 8192u32.to_le_bytes().to_vec(); // 4 MiB disk
    data.extend_from_slice(&0u32.to_le_bytes());
    data.extend_from_slice(&512u16.to_le_bytes());
    data.extend_from_slice(&mbr);
    data.extend_from_slice(&100u32.to_le_bytes()); // a chunk at sector 100
    data.extend_from_slice(&3u16.to_le_bytes());
    data.extend_from_slice(b"abc");

    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("disk.img");
    harness::materialise(&data, &path).expect("written");
    let bytes = std::fs::read(&path).expect("readable");
    assert_eq!(bytes.len(), 8192 * 512);
    assert_eq!(&bytes[..512], &mbr[..]);
    assert_eq!(&bytes[100 * 512..100 * 512 + 3], b"abc");
    assert!(bytes[512..100 * 512].iter().all(|&b| b == 0));
    let image = piimg::image::Image::open(&path).expect("an MBR disk");
    let boot = image.boot_partition().expect("a FAT partition");
    assert_eq!((boot.start, boot.size), (2048 * 512, 4096 * 512));
}

/// The root of the ext4 regression input `name`, materialised in `dir`.
fn regression_root(name: &str, dir: &Path) -> piimg::image::RootFs {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions/ext4")
        .join(name);
    let data = std::fs::read(path).expect("the regression input");
    let disk = dir.join("disk.img");
    harness::materialise(&data, &disk).expect("written");
    let image = piimg::image::Image::open(&disk).expect("an MBR disk");
    image.root().expect("an ext4 root")
}

/// The ext4 target's peak RSS: `/etc` of these roots is a directory whose extent
/// tree maps one 4 KiB block of 300 names again and again (an index node of 340
/// entries all naming one leaf of 340 one-block extents all naming that block;
/// `fuzz/regressions/ext4/dir-extents.md`). With an inode size of 473 MB, listing it
/// took 2 GB until libFuzzer's out-of-memory stop (52 s), and every lookup in `/etc`
/// walked 115 600 blocks; with 8 MiB, an execution of the ext4 target took 0.4 s. Now a
/// directory over 1 MiB is refused before it is searched or listed.
#[test]
fn a_directory_whose_extents_repeat_is_a_named_error_not_gigabytes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, size) in [
        ("dir-extents-repeat-one-block", 473_497_600),
        ("dir-8-mib-of-one-block", 8_388_608),
    ] {
        let root = regression_root(name, dir.path());
        for e in [
            root.list("/etc").expect_err("refused").to_string(),
            root.read("/etc/os-release")
                .expect_err("refused")
                .to_string(),
            root.exists("/etc/passwd").expect_err("refused").to_string(),
        ] {
            assert!(
                e.contains(&format!(
                    "/etc: the directory claims {size} bytes, more than the 1048576"
                )),
                "{name}: {e}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert!(root.exists("/").expect("the root is small"));
    }
}

/// The `fat` target's out-of-memory input (`dir-entries-at-cluster-0-reopen-the-root`):
/// the boot partition's root holds directory entries with cluster 0, which fatfs opens
/// as the root again, so `walk("/")` listed the root's files again at each of 32
/// levels, doubling each time, until libFuzzer's 2 GB limit. Its FAT is all zeros, so
/// the root's own chain is now refused first; `-root-chain-intact` is the same input
/// with the root's FAT entry an end-of-chain mark, where the second entry leading to
/// one directory is named.
#[test]
fn a_directory_entry_reopening_the_root_is_a_named_error_not_gigabytes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    for (name, reason, root_lists) in [
        (
            "dir-entries-at-cluster-0-reopen-the-root",
            "cluster 2 is in a cluster chain but marked free",
            false,
        ),
        (
            "dir-entries-at-cluster-0-root-chain-intact",
            "leads to cluster 22382, a directory already listed: the directory tree loops",
            true,
        ),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/regressions/fat")
            .join(name);
        let data = std::fs::read(path).expect("the regression input");
        let disk = dir.path().join("disk.img");
        harness::materialise(&data, &disk).expect("written");
        let image = piimg::image::Image::open(&disk).expect("an MBR disk");
        let boot = image.boot().expect("a FAT boot partition");
        let e = boot.walk("/").expect_err("refused").to_string();
        assert!(
            e.contains("list '/': the FAT file system is damaged: "),
            "{name}: {e}"
        );
        assert!(e.contains(reason), "{name}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        match boot.list("/") {
            Ok(list) if root_lists => assert_eq!(list.map(|l| l.len()), Some(11)),
            Err(e) if !root_lists => assert!(e.to_string().contains(reason), "{e}"),
            other => panic!("{name}: list: {other:?}"),
        }
    }
}
