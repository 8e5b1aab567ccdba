//! The image engine against Raspberry Pi OS-shaped images from scripts/mkimage, checked
//! with independent tools (sfdisk, fsck.vfat, e2fsck, mtools, debugfs).

mod support;

use std::path::Path;

use piimg::image::{Arch, Change, FirstBoot, Image, ImageError, PartitionKind, Scheme, Timestamp};
use support::*;

const RELEASES: [&str; 2] = ["bookworm", "trixie"];
const T0: i64 = 1_700_000_000; // 2023-11-14 22:13:20 UTC

fn err_text(e: ImageError) -> String {
    e.to_string()
}

#[test]
fn mbr_table_matches_sfdisk_for_both_releases() {
    for release in RELEASES {
        let img = image(release, &[]);
        let image = Image::open(&img.path).unwrap();
        let (label_id, parts) = sfdisk(&img.path);
        let Scheme::Mbr { disk_id } = image.table().scheme else {
            panic!("expected MBR");
        };
        assert_eq!(format!("0x{disk_id:08x}"), label_id);
        assert_eq!(image.table().partitions.len(), parts.len());
        for (i, (ours, theirs)) in image.table().partitions.iter().zip(&parts).enumerate() {
            assert_eq!(ours.index as usize, i + 1);
            assert_eq!((ours.start, ours.size), (theirs.start, theirs.size));
            assert_eq!(ours.partuuid, format!("{disk_id:08x}-{:02}", i + 1));
        }
        let boot = image.boot_partition().unwrap();
        assert_eq!(boot.kind, PartitionKind::Fat);
        assert_eq!(boot.start, 8 << 20, "boot starts at 8 MiB");
        assert_eq!(boot.size, 512 << 20, "boot is 512 MiB");
        let root = image.root_partition().unwrap();
        assert_eq!(root.kind, PartitionKind::Linux);
        assert_eq!(root.start % (8 << 20), 0, "root is 8 MiB aligned");
        assert!(image.warnings().is_empty());
    }
}

#[test]
fn gpt_partuuids_are_partition_guids() {
    let img = image("bookworm", &["--gpt"]);
    let image = Image::open(&img.path).unwrap();
    let (label_id, parts) = sfdisk(&img.path);
    match &image.table().scheme {
        Scheme::Gpt { disk_guid } => assert_eq!(disk_guid, &label_id),
        other => panic!("expected GPT, got {other:?}"),
    }
    for (ours, theirs) in image.table().partitions.iter().zip(&parts) {
        assert_eq!((ours.start, ours.size), (theirs.start, theirs.size));
        assert_eq!(Some(ours.partuuid.clone()), theirs.uuid);
    }
    assert_eq!(image.boot_partition().unwrap().name, "bootfs");
    assert_eq!(
        image.root().unwrap().release().unwrap().codename,
        "bookworm"
    );
    // The generator put the GPT PARTUUIDs into cmdline.txt.
    let cmdline = mtype(&img.path, 1, "cmdline.txt").unwrap();
    let root_uuid = &image.root_partition().unwrap().partuuid;
    assert!(
        String::from_utf8(cmdline)
            .unwrap()
            .contains(&format!("root=PARTUUID={root_uuid}"))
    );
}

#[test]
fn boot_partition_reads_what_mtools_reads() {
    for release in RELEASES {
        let img = image(release, &[]);
        let image = Image::open(&img.path).unwrap();
        let boot = image.boot().unwrap();
        assert_eq!(boot.label().unwrap(), "bootfs");
        for f in [
            "cmdline.txt",
            "config.txt",
            "kernel8.img",
            "overlays/README",
        ] {
            assert_eq!(
                boot.read(f).unwrap(),
                mtype(&img.path, 1, f),
                "{release} {f}"
            );
        }
        assert_eq!(boot.read("no-such-file").unwrap(), None);
        let names: Vec<String> = boot
            .list("/")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.contains(&"config.txt".to_string()), "{names:?}");
        let has_cloud = names.contains(&"user-data".to_string());
        assert_eq!(has_cloud, release == "trixie", "{names:?}");
        let expected_cluster = if release == "trixie" { 512 } else { 2048 };
        assert_eq!(boot.cluster_size(), expected_cluster);
    }
}

#[test]
fn release_facts_for_both_releases() {
    for release in RELEASES {
        let img = image(release, &[]);
        let image = Image::open(&img.path).unwrap();
        let root = image.root().unwrap();
        assert_eq!(root.label(), "rootfs");
        let r = root.release().unwrap();
        assert_eq!(r.codename, release);
        assert_eq!(r.version_id, if release == "trixie" { "13" } else { "12" });
        assert_eq!(r.arch, Arch::Arm64);
        assert!(
            r.arch_evidence.contains("/usr/bin/env"),
            "{}",
            r.arch_evidence
        );
        let mechanism = if release == "trixie" {
            FirstBoot::CloudInit
        } else {
            FirstBoot::SystemdRun
        };
        assert_eq!(r.first_boot, Some(mechanism));
        assert!(r.network_manager);
        assert_eq!(r.default_user().unwrap().name, "pi");
        assert!(r.users.iter().any(|u| u.name == "root" && u.uid == 0));
    }
}

/// Writes, overwrites (shorter), creates nested directories and removes, then checks
/// the result with fsck.vfat, mtools and e2fsck, and that the root is untouched.
#[test]
fn edits_in_place_are_fsck_clean_and_readable_by_mtools() {
    for release in RELEASES {
        let img = image(release, &[]);
        let (root_start, root_size) = partition(&img.path, 2);
        let root_hash = sha256_range(&img.path, root_start, root_size);
        let node_json = br#"{"node":"cp-1"}"#.to_vec();
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        {
            let image = Image::open_rw(&img.path).unwrap();
            let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
            boot.write("piimg/node.json", &node_json).unwrap();
            boot.write("piimg/airgap/k3s-airgap-images-arm64.tar", &big)
                .unwrap();
            boot.write("cmdline.txt", b"console=tty1 root=PARTUUID=x-02\n")
                .unwrap();
            boot.write("firstrun.sh", b"#!/bin/bash\nexit 0\n").unwrap();
            assert!(boot.remove("issue.txt").unwrap());
            assert!(!boot.remove("issue.txt").unwrap());
            // The handle sees its own staged changes.
            assert_eq!(
                boot.read("piimg/node.json").unwrap(),
                Some(node_json.clone())
            );
            boot.commit().unwrap();
        }
        assert_fat_clean(&img.path, 1);
        assert_eq!(mtype(&img.path, 1, "piimg/node.json").unwrap(), node_json);
        assert_eq!(
            mtype(&img.path, 1, "piimg/airgap/k3s-airgap-images-arm64.tar").unwrap(),
            big
        );
        assert_eq!(
            mtype(&img.path, 1, "cmdline.txt").unwrap(),
            b"console=tty1 root=PARTUUID=x-02\n"
        );
        assert_eq!(mtype(&img.path, 1, "issue.txt"), None);
        let listing = mdir(&img.path, 1, "piimg").unwrap();
        assert!(listing.contains("node.json"), "{listing}");
        assert_ext4_clean(&img.path, 2);
        assert_eq!(
            sha256_range(&img.path, root_start, root_size),
            root_hash,
            "root changed"
        );
        // Reopened, piimg reads back what it wrote.
        let image = Image::open(&img.path).unwrap();
        let boot = image.boot().unwrap();
        assert_eq!(boot.read("piimg/node.json").unwrap(), Some(node_json));
        let files = boot.walk("piimg").unwrap();
        assert_eq!(
            files,
            vec![
                (
                    "piimg/airgap/k3s-airgap-images-arm64.tar".to_string(),
                    300_000
                ),
                ("piimg/node.json".to_string(), 15),
            ]
        );
    }
}

#[test]
fn written_files_carry_the_given_timestamp() {
    let img = image("trixie", &[]);
    let image = Image::open_rw(&img.path).unwrap();
    let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
    boot.write("piimg/manifest.json", b"{}").unwrap();
    boot.commit().unwrap();
    let (start, _) = partition(&img.path, 1);
    let out = std::process::Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{start}", img.path.display()))
        .arg("::/piimg")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("manifest.json")).unwrap();
    assert!(
        line.contains("2023-11-14") && line.contains("22:13"),
        "{text}"
    );
    let dir_line = String::from_utf8_lossy(
        &std::process::Command::new("mdir")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{start}", img.path.display()))
            .arg("::/")
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .find(|l| l.to_lowercase().split_whitespace().any(|w| w == "piimg"))
    .unwrap()
    .to_string();
    assert!(
        dir_line.contains("<DIR>") && dir_line.contains("2023-11-14"),
        "{dir_line}"
    );
}

#[test]
fn same_inputs_give_identical_boot_partitions() {
    let mut hashes = Vec::new();
    for _ in 0..2 {
        let img = image("bookworm", &[]);
        let image = Image::open_rw(&img.path).unwrap();
        let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
        boot.apply(&[
            Change::Write {
                path: "piimg/node.json".into(),
                data: b"{}".to_vec(),
            },
            Change::Write {
                path: "user-data".into(),
                data: b"#cloud-config\n".to_vec(),
            },
        ])
        .unwrap();
        boot.commit().unwrap();
        hashes.push(sha256_file(&img.path));
    }
    assert_eq!(hashes[0], hashes[1]);
}

#[test]
fn uncommitted_changes_never_reach_the_image() {
    let img = image("trixie", &[]);
    let before = sha256_file(&img.path);
    {
        let image = Image::open_rw(&img.path).unwrap();
        let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
        boot.write("piimg/node.json", b"{}").unwrap();
        boot.write("cmdline.txt", b"changed").unwrap();
        assert!(boot.has_changes());
        // dropped without commit
    }
    assert_eq!(sha256_file(&img.path), before);
}

#[test]
fn many_files_on_the_trixie_layout() {
    let img = image("trixie", &[]);
    let image = Image::open_rw(&img.path).unwrap();
    let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
    let changes: Vec<Change> = (0..300)
        .map(|i| Change::Write {
            path: format!("piimg/files/file-with-a-long-name-{i:03}.yaml"),
            data: format!("n: {i}\n").into_bytes(),
        })
        .collect();
    boot.apply(&changes).unwrap();
    boot.commit().unwrap();
    assert_fat_clean(&img.path, 1);
    assert_eq!(
        mtype(&img.path, 1, "piimg/files/file-with-a-long-name-299.yaml").unwrap(),
        b"n: 299\n"
    );
    let listing = mdir(&img.path, 1, "piimg/files").unwrap();
    assert_eq!(
        listing.lines().filter(|l| l.contains("file-with")).count(),
        300
    );
}

#[test]
fn read_only_image_refuses_writes() {
    let img = image("bookworm", &[]);
    let image = Image::open(&img.path).unwrap();
    let mut boot = image.boot().unwrap();
    let e = err_text(boot.write("x.txt", b"x").unwrap_err());
    assert!(e.contains("opened read-only"), "{e}");
}

#[test]
fn bad_paths_are_refused() {
    let img = image("bookworm", &[]);
    let image = Image::open_rw(&img.path).unwrap();
    let mut boot = image.boot().unwrap();
    for (path, want) in [
        ("../etc/passwd", "'..'"),
        ("a/<b>", "cannot store"),
        ("/", "root directory"),
    ] {
        let e = err_text(boot.write(path, b"x").unwrap_err());
        assert!(e.contains(want), "{path}: {e}");
    }
}

#[test]
fn root_dir_tree_is_used_and_fstab_gets_partuuids() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("root");
    for d in ["etc/cloud", "usr/bin", "usr/sbin", "var/lib/dpkg"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(
        tree.join("etc/cloud/cloud.cfg"),
        "datasource_list: [ NoCloud, None ]\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("etc/os-release"),
        "PRETTY_NAME=\"Custom Debian\"\nVERSION_CODENAME=trixie\nVERSION_ID=\"13\"\nID=debian\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(tree.join("etc/fstab"), "# from the tree\n").unwrap();
    std::fs::write(tree.join("usr/bin/cloud-init"), "#!/usr/bin/python3\n").unwrap();
    // Take an arm64 ELF from a generated image so the tree is realistic.
    let donor = image("trixie", &[]);
    let env = debugfs_cat(&donor.path, 2, "/usr/bin/env");
    std::fs::write(tree.join("usr/bin/env"), env).unwrap();
    let out = dir.path().join("custom.img");
    let o = run_mkimage(&[
        "--release",
        "trixie",
        "--out",
        out.to_str().unwrap(),
        "--root-dir",
        tree.to_str().unwrap(),
        "--disk-id",
        "0xDEADBEEF",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let image = Image::open(&out).unwrap();
    assert_eq!(
        image.table().scheme,
        Scheme::Mbr {
            disk_id: 0xdead_beef
        }
    );
    let r = image.root().unwrap().release().unwrap();
    assert_eq!(r.pretty_name, "Custom Debian");
    assert_eq!(r.default_user().unwrap().name, "alice");
    assert_eq!(r.first_boot, Some(FirstBoot::CloudInit));
    assert!(!r.network_manager);
    let fstab = String::from_utf8(debugfs_cat(&out, 2, "/etc/fstab")).unwrap();
    assert!(
        fstab.contains("PARTUUID=deadbeef-01  /boot/firmware"),
        "{fstab}"
    );
    assert!(fstab.contains("PARTUUID=deadbeef-02  /"), "{fstab}");
    // The caller's tree was not modified.
    assert_eq!(
        std::fs::read_to_string(tree.join("etc/fstab")).unwrap(),
        "# from the tree\n"
    );
    assert_ext4_clean(&out, 2);
    assert_fat_clean(&out, 1);
}

#[test]
fn generated_images_are_clean_and_shaped_like_pi_gen() {
    for release in RELEASES {
        let img = image(release, &[]);
        assert_fat_clean(&img.path, 1);
        assert_ext4_clean(&img.path, 2);
        let (_, parts) = sfdisk(&img.path);
        assert_eq!(parts[0].kind, "c");
        assert_eq!(parts[1].kind, "83");
        let cmdline = String::from_utf8(mtype(&img.path, 1, "cmdline.txt").unwrap()).unwrap();
        assert_eq!(cmdline.lines().count(), 1);
        let image = Image::open(&img.path).unwrap();
        let root_uuid = &image.root_partition().unwrap().partuuid;
        assert!(cmdline.contains(&format!("root=PARTUUID={root_uuid} rootfstype=ext4")));
        if release == "trixie" {
            assert!(cmdline.trim_end().ends_with("rootwait resize"), "{cmdline}");
            let meta = String::from_utf8(mtype(&img.path, 1, "meta-data").unwrap()).unwrap();
            assert!(meta.contains("instance_id: rpios-image"));
        } else {
            assert!(cmdline.contains("init=/usr/lib/raspberrypi-sys-mods/firstboot"));
        }
        let fstab = String::from_utf8(debugfs_cat(&img.path, 2, "/etc/fstab")).unwrap();
        let boot_uuid = &image.boot_partition().unwrap().partuuid;
        assert!(fstab.contains(&format!("PARTUUID={boot_uuid}  /boot/firmware  vfat")));
        // ext4 features as pi-gen sets them.
        let (start, _) = partition(&img.path, 2);
        let out = std::process::Command::new("dumpe2fs")
            .arg("-h")
            .arg(format!("{}?offset={start}", img.path.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let features = text
            .lines()
            .find(|l| l.starts_with("Filesystem features"))
            .unwrap();
        assert!(
            !features.contains("64bit") && !features.contains("huge_file"),
            "{features}"
        );
        assert!(features.contains("metadata_csum"), "{features}");
    }
}

// ------------------------------------------------------------------ bad input

fn open_err(path: &Path) -> String {
    err_text(Image::open(path).unwrap_err())
}

#[test]
fn empty_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.img");
    std::fs::write(&p, b"").unwrap();
    let e = open_err(&p);
    assert!(
        e.contains("empty.img") && e.contains("empty (0 bytes)"),
        "{e}"
    );
}

#[test]
fn text_file_is_not_a_disk_image() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "hello\n".repeat(200)).unwrap();
    let e = open_err(&p);
    assert!(
        e.contains("not a disk image") && e.contains("0x55AA"),
        "{e}"
    );
    let tiny = dir.path().join("tiny.img");
    std::fs::write(&tiny, b"abc").unwrap();
    let e = open_err(&tiny);
    assert!(e.contains("only 3 bytes"), "{e}");
}

#[test]
fn bare_file_systems_are_named() {
    let img = image("bookworm", &[]);
    let dir = tempfile::tempdir().unwrap();
    let (start, size) = partition(&img.path, 1);
    let fat = extract(&img.path, start, size, dir.path());
    let e = open_err(&fat);
    assert!(e.contains("bare FAT file system"), "{e}");
    let (start, size) = partition(&img.path, 2);
    let ext = extract(&img.path, start, size, dir.path());
    let e = open_err(&ext);
    assert!(e.contains("bare ext2/3/4 file system"), "{e}");
}

#[test]
fn truncated_image_is_refused() {
    let img = image("bookworm", &[]);
    let len = std::fs::metadata(&img.path).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    f.set_len(len - (100 << 20)).unwrap();
    let e = open_err(&img.path);
    assert!(e.contains("partition 2 ends at byte"), "{e}");
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn compressed_images_are_named_with_a_hint() {
    let img = image("bookworm", &[]);
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head.img");
    std::fs::write(&head, &std::fs::read(&img.path).unwrap()[..1 << 20]).unwrap();
    for (tool, args, format) in [
        ("xz", vec!["-k", "-T1"], "xz"),
        ("zstd", vec!["-q", "-k"], "zstd"),
        ("gzip", vec!["-k"], "gzip"),
    ] {
        let status = std::process::Command::new(tool)
            .args(&args)
            .arg(&head)
            .status()
            .unwrap();
        assert!(status.success());
        let ext = match format {
            "xz" => "xz",
            "zstd" => "zst",
            _ => "gz",
        };
        let p = dir.path().join(format!("head.img.{ext}"));
        let e = open_err(&p);
        assert!(e.contains(&format!("{format}-compressed")), "{e}");
        assert!(e.contains("piimg fetch"), "{e}");
        assert!(e.contains(&format!("head.img.{ext}")), "{e}");
    }
}

/// Sets MBR partition entry `n`'s (1-based) type byte.
fn set_mbr_type(path: &Path, n: usize, code: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&[code], (446 + (n - 1) * 16 + 4) as u64)
        .unwrap();
}

#[test]
fn no_fat_partition_is_refused() {
    let img = image("bookworm", &[]);
    set_mbr_type(&img.path, 1, 0x83);
    let image = Image::open(&img.path).unwrap();
    let e = err_text(image.boot().unwrap_err());
    assert!(e.contains("no FAT boot partition"), "{e}");
}

#[test]
fn fat_partition_without_fat_is_refused() {
    use std::os::unix::fs::FileExt;
    for release in RELEASES {
        let img = image(release, &[]);
        let (start, _) = partition(&img.path, 1);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&img.path)
            .unwrap();
        f.write_all_at(&[0u8; 512], start).unwrap();
        let image = Image::open(&img.path).unwrap();
        let e = err_text(image.boot().unwrap_err());
        assert!(
            e.contains("partition 1 (at byte 8388608) is typed FAT but holds no FAT file system"),
            "{e}"
        );
        // garbage that has a signature but nonsense fields
        let mut junk = [0xffu8; 512];
        junk[510] = 0x55;
        junk[511] = 0xaa;
        f.write_all_at(&junk, start).unwrap();
        let e = err_text(Image::open(&img.path).unwrap().boot().unwrap_err());
        assert!(e.contains("bytes per sector"), "{e}");
    }
}

#[test]
fn root_that_is_not_ext4_is_refused() {
    use std::os::unix::fs::FileExt;
    let img = image("trixie", &[]);
    let (start, _) = partition(&img.path, 2);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    f.write_all_at(&[0u8; 4096], start).unwrap();
    let image = Image::open(&img.path).unwrap();
    let e = err_text(image.root().unwrap_err());
    assert!(
        e.contains("partition 2") && e.contains("is not an ext4 file system"),
        "{e}"
    );
    assert!(e.contains("0xEF53"), "{e}");
}

#[test]
fn armhf_and_x86_roots_are_refused() {
    for (arch, name) in [("armhf", "armhf"), ("amd64", "amd64")] {
        let img = image("bookworm", &["--arch", arch]);
        let image = Image::open(&img.path).unwrap();
        let root = image.root().unwrap();
        let e = err_text(root.release().unwrap_err());
        assert!(e.contains(&format!("root file system is {name}")), "{e}");
        assert!(e.contains("/usr/bin/env") && e.contains("arm64"), "{e}");
        // detect_release still reports what it is (for inspect).
        assert_eq!(root.detect_release().unwrap().arch.to_string(), name);
    }
}

#[test]
fn overlapping_partitions_are_refused() {
    use std::os::unix::fs::FileExt;
    let img = image("bookworm", &[]);
    // Move partition 2's start into partition 1.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&img.path)
        .unwrap();
    f.write_all_at(&(16384u32 + 1000).to_le_bytes(), 446 + 16 + 8)
        .unwrap();
    let e = open_err(&img.path);
    assert!(e.contains("partitions 1") && e.contains("overlap"), "{e}");
}

#[test]
fn gpt_with_bad_primary_header_falls_back_to_backup() {
    use std::os::unix::fs::FileExt;
    let img = image("trixie", &["--gpt"]);
    let good = Image::open(&img.path).unwrap().table().clone();
    // Flip a byte inside the primary header (LBA 1), breaking its CRC.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img.path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, 512 + 60).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], 512 + 60).unwrap();
    let image = Image::open(&img.path).unwrap();
    assert_eq!(image.table().partitions, good.partitions);
    let w = image.warnings().join("\n");
    assert!(
        w.contains("primary GPT header") && w.contains("backup header"),
        "{w}"
    );
    assert_eq!(image.root().unwrap().release().unwrap().codename, "trixie");
}

#[test]
fn full_fat_leaves_the_partition_exactly_as_before() {
    for release in RELEASES {
        let img = image(release, &[]);
        let (start, size) = partition(&img.path, 1);
        let image = Image::open_rw(&img.path).unwrap();
        // Fill most of the space first (committed), then overflow it.
        let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
        let free = boot.free_bytes().unwrap();
        boot.write("filler.bin", &vec![0x5a; (free - (4 << 20)) as usize])
            .unwrap();
        boot.commit().unwrap();
        let before = sha256_range(&img.path, start, size);

        let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
        let e = boot
            .apply(&[
                Change::Write {
                    path: "piimg/small.json".into(),
                    data: b"{}".to_vec(),
                },
                Change::Write {
                    path: "piimg/airgap/images.tar".into(),
                    data: vec![1u8; 8 << 20],
                },
            ])
            .unwrap_err();
        let text = err_text(e);
        assert!(text.contains("boot partition is full"), "{text}");
        assert!(text.contains("nothing was written"), "{text}");
        // The handle is still usable and nothing was staged.
        assert!(!boot.has_changes());
        boot.commit().unwrap();
        assert_eq!(sha256_range(&img.path, start, size), before, "{release}");
        assert_fat_clean(&img.path, 1);
    }
}

#[test]
fn failed_change_poisons_the_handle_and_stages_nothing() {
    let img = image("bookworm", &[]);
    let before = sha256_file(&img.path);
    let image = Image::open_rw(&img.path).unwrap();
    let mut boot = image.boot().unwrap();
    boot.write("piimg/a.txt", b"a").unwrap();
    // A directory in the way of a file write fails after the space check.
    let e = err_text(boot.write("piimg", b"x").unwrap_err());
    assert!(e.contains("a directory is in the way"), "{e}");
    let e = err_text(boot.commit().unwrap_err());
    assert!(e.contains("nothing was written"), "{e}");
    assert_eq!(sha256_file(&img.path), before);
}

#[test]
fn mkimage_fill_is_real_data_and_bad_arguments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fill.img");
    let o = run_mkimage(&[
        "--release",
        "bookworm",
        "--out",
        out.to_str().unwrap(),
        "--fill-mib",
        "16",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fill = debugfs_cat(&out, 2, "/piimg-fill.bin");
    assert_eq!(fill.len(), 16 << 20);
    assert!(
        fill.iter().filter(|&&b| b == 0).count() < fill.len() / 64,
        "not random data"
    );
    assert_ext4_clean(&out, 2);

    for (args, want) in [
        (
            vec!["--release", "sid"],
            "--release must be bookworm or trixie",
        ),
        (
            vec!["--release", "trixie", "--arch", "riscv64"],
            "--arch must be",
        ),
        (
            vec!["--release", "trixie", "--disk-id", "xyz"],
            "--disk-id must be 8 hex digits",
        ),
    ] {
        let mut full = args.clone();
        full.extend(["--out", out.to_str().unwrap()]);
        let o = run_mkimage(&full);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }
}

/// A tiny deterministic generator (xorshift64*), so a failing case can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn damaged_fat_gives_errors_never_a_panic() {
    use std::os::unix::fs::FileExt;
    for release in RELEASES {
        let img = image(release, &[]);
        let (start, _) = partition(&img.path, 1);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img.path)
            .unwrap();
        let mut bs = [0u8; 512];
        file.read_exact_at(&mut bs, start).unwrap();
        let sector = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
        let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
        let fats = u64::from(bs[16]);
        let fat_sectors = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]]));
        let fat = start + reserved * sector;
        let data = fat + fats * fat_sectors * sector;
        // Where the damage goes: the used start of the first FAT (the cluster chains
        // of the files mkimage wrote) and the start of the data area (root directory,
        // subdirectories, file data).
        let regions = [(fat, 64 * 1024u64), (data, 256 * 1024u64)];
        let originals: Vec<Vec<u8>> = regions
            .iter()
            .map(|&(at, len)| {
                let mut v = vec![0u8; len as usize];
                file.read_exact_at(&mut v, at).unwrap();
                v
            })
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ release.len() as u64);
        let (mut ok, mut errors, mut caught) = (0, 0, 0);
        for round in 0..120 {
            for (&(at, _), orig) in regions.iter().zip(&originals) {
                file.write_all_at(orig, at).unwrap();
            }
            for _ in 0..1 + rng.below(24) {
                let (at, len) = regions[rng.below(2) as usize];
                let mut b = [0u8; 4];
                b.copy_from_slice(&rng.next().to_le_bytes()[..4]);
                let n = 1 + rng.below(4) as usize;
                file.write_all_at(&b[..n], at + rng.below(len - 4)).unwrap();
            }
            // Everything a build or inspect does with a boot partition; any panic
            // fails the test, every failure must be an error naming the image.
            let outcome = (|| -> Result<(), ImageError> {
                let image = Image::open_rw(&img.path)?;
                let mut boot = image.boot_at(Timestamp::from_unix(T0))?;
                boot.label()?;
                boot.free_bytes()?;
                for (path, _) in boot.walk("/")? {
                    boot.read(&path)?;
                }
                boot.list("/")?;
                boot.apply(&[
                    Change::Write {
                        path: "piimg/node.json".into(),
                        data: vec![b'x'; 5000],
                    },
                    Change::Write {
                        path: "cmdline.txt".into(),
                        data: b"console=serial0,115200 root=PARTUUID=x-02\n".to_vec(),
                    },
                ])?;
                boot.commit()
            })();
            match outcome {
                Ok(()) => ok += 1,
                // A garbage name that walk() listed is refused as a path argument.
                Err(e @ ImageError::BadPath { .. }) => {
                    assert!(!e.to_string().contains('\n'), "{e}");
                    errors += 1;
                }
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        text.contains(&*img.path.to_string_lossy()) && !text.contains('\n'),
                        "{release} round {round}: error does not name the image on one line: {text}"
                    );
                    caught += usize::from(text.contains("fatfs gave up"));
                    errors += 1;
                }
            }
        }
        assert_eq!(ok + errors, 120);
        eprintln!(
            "{release}: 120 damaged boot partitions: {ok} edited, {errors} refused with an error \
             ({caught} of them fatfs panics turned into errors)"
        );
    }
}

// ------------------------------------------------------------- base sanity checks

/// `piimg::image::sanity::check` of `path` as one line, or `None` when it passes.
fn sanity(path: &Path) -> Option<String> {
    let image = Image::open(path).unwrap();
    let e = piimg::image::sanity::check(&image).err()?.to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    Some(e)
}

/// Writes `bytes` at `offset` of `path` (damage made as data).
fn poke(path: &Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

/// Byte offsets in the image of entry `cluster` of each FAT copy of partition 1,
/// from its boot sector (reserved sectors, FAT count and size).
fn fat_entry(path: &Path, cluster: u32) -> Vec<u64> {
    let (start, _) = partition(path, 1);
    let data = std::fs::read(path).unwrap();
    let bs = &data[start as usize..start as usize + 512];
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fats = u64::from(bs[16]);
    let fat_len = u64::from(u32::from_le_bytes([bs[36], bs[37], bs[38], bs[39]])) * bps;
    (0..fats)
        .map(|n| start + reserved * bps + n * fat_len + u64::from(cluster) * 4)
        .collect()
}

/// The first cluster of `file` on partition 1 per mtools' `mshowfat` ("<20>" or "<20-21>").
fn first_cluster(path: &Path, file: &str) -> u32 {
    let (start, _) = partition(path, 1);
    let out = std::process::Command::new("mshowfat")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{start}", path.display()))
        .arg(format!("::/{file}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let inner = text
        .split('<')
        .nth(1)
        .unwrap()
        .split(['>', '-'])
        .next()
        .unwrap();
    inner.trim().parse().unwrap()
}

/// Replaces cmdline.txt on the boot partition through the image engine.
fn write_cmdline(path: &Path, text: &str) {
    let image = Image::open_rw(path).unwrap();
    let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
    boot.write("cmdline.txt", text.as_bytes()).unwrap();
    boot.commit().unwrap();
    assert_eq!(mtype(path, 1, "cmdline.txt").unwrap(), text.as_bytes());
}

#[test]
fn clean_bases_pass_the_sanity_checks_also_after_an_edit() {
    for release in RELEASES {
        let img = image(release, &[]);
        assert_eq!(sanity(&img.path), None, "{release}");
        let image = Image::open_rw(&img.path).unwrap();
        let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
        boot.write("piimg/a/b.txt", &vec![0x5a; 70_000]).unwrap();
        boot.commit().unwrap();
        assert_fat_clean(&img.path, 1);
        assert_eq!(sanity(&img.path), None, "{release} after an edit");
    }
}

#[test]
fn boot_partition_typed_linux_is_named() {
    let img = image("bookworm", &[]);
    let o = std::process::Command::new("sfdisk")
        .args(["-q", "--part-type"])
        .arg(&img.path)
        .args(["1", "83"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sfdisk(&img.path).1[0].kind, "83");
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(&format!(
            "{}: partition 1 (at byte 8388608) holds the FAT boot file system but the \
             partition table types it 0x83, not a FAT type",
            img.path.display()
        )),
        "{e}"
    );
    assert!(e.contains("sfdisk --part-type IMAGE 1 c`"), "{e}");

    // GPT: a Linux-typed partition holding the FAT gets the basic-data GUID as the fix.
    let img = image("trixie", &["--gpt"]);
    let o = std::process::Command::new("sfdisk")
        .args(["-q", "--part-type"])
        .arg(&img.path)
        .args(["1", "0FC63DAF-8483-4772-8E79-3D69D8477DE4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains("partition 1 (at byte 8388608) holds the FAT boot file system")
            && e.contains("sfdisk --part-type IMAGE 1 EBD0A0A2-B9E5-4433-87C0-68B6B72699C7`"),
        "{e}"
    );
}

#[test]
fn cmdline_root_partuuid_of_another_disk_or_partition_is_named() {
    let img = image("bookworm", &[]);
    let rest = "rootfstype=ext4 fsck.repair=yes rootwait quiet";
    write_cmdline(
        &img.path,
        &format!("console=tty1 root=PARTUUID=1234abcd-02 {rest}\n"),
    );
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(
            "the base's cmdline.txt points at PARTUUID 1234abcd-02 but the disk id is 5e3da3da \
             (partitions 5e3da3da-01, 5e3da3da-02); this card would not find its root"
        ),
        "{e}"
    );

    write_cmdline(
        &img.path,
        &format!("console=tty1 root=PARTUUID=5E3DA3DA-01 {rest}\n"),
    );
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(
            "points root= at PARTUUID 5e3da3da-01, partition 1 (at byte 8388608), but the \
             ext4 root is partition 2 (PARTUUID 5e3da3da-02)"
        ),
        "{e}"
    );

    write_cmdline(&img.path, &format!("console=tty1 {rest}\n"));
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains("boot partition (partition 1 at byte 8388608) has a cmdline.txt without a root= argument"),
        "{e}"
    );

    // Upper-case hex and other root= forms are fine.
    write_cmdline(&img.path, &format!("root=PARTUUID=5E3DA3DA-02 {rest}\n"));
    assert_eq!(sanity(&img.path), None);
    write_cmdline(&img.path, &format!("root=/dev/mmcblk0p2 {rest}\n"));
    assert_eq!(sanity(&img.path), None);
}

#[test]
fn damaged_fat_reserved_entries_are_named() {
    let img = image("trixie", &[]);
    let entry0 = fat_entry(&img.path, 0);
    assert_eq!(entry0.len(), 2, "two FATs");
    // Media byte 0xF0 in both FATs while the boot sector says 0xF8.
    for &o in &entry0 {
        poke(&img.path, o, &0x0fff_fff0u32.to_le_bytes());
    }
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(
            "boot partition (partition 1 at byte 8388608): FAT 1 entry 0 is 0x0ffffff0, \
             expected 0x0ffffff8 (the boot sector's media byte 0xf8"
        ),
        "{e}"
    );
    assert!(e.contains("fsck.vfat -a"), "{e}");
    for &o in &entry0 {
        poke(&img.path, o, &0x0fff_fff8u32.to_le_bytes());
    }
    assert_eq!(sanity(&img.path), None, "restored");

    // No end-of-chain mark in entry 1 (its clean/error flags alone are fine).
    for &o in &fat_entry(&img.path, 1) {
        poke(&img.path, o, &0x03ff_ffffu32.to_le_bytes());
    }
    assert_eq!(sanity(&img.path), None, "dirty flags are not damage");
    for &o in &fat_entry(&img.path, 1) {
        poke(&img.path, o, &0u32.to_le_bytes());
    }
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains("FAT 1 entry 1 is 0x00000000, expected 0x0fffffff (an end-of-chain mark)"),
        "{e}"
    );
}

#[test]
fn out_of_range_chain_of_a_card_file_is_named() {
    let img = image("bookworm", &[]);
    let c = first_cluster(&img.path, "config.txt");
    for &o in &fat_entry(&img.path, c) {
        poke(&img.path, o, &0x0fff_fff0u32.to_le_bytes());
    }
    let (ok, fsck) = fsck_vfat(&img.path, 1);
    assert!(!ok, "fsck.vfat sees the damage too:\n{fsck}");
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(
            "boot partition (partition 1 at byte 8388608): the cluster chain of config.txt is \
             damaged: cluster 268435440 is out of range (the file system has clusters 2.."
        ),
        "{e}"
    );

    // A chain shorter than the file's size.
    let img = image("trixie", &[]);
    let c = first_cluster(&img.path, "config.txt");
    assert!(
        mtype(&img.path, 1, "config.txt").unwrap().len() > 512,
        "spans clusters"
    );
    for &o in &fat_entry(&img.path, c) {
        poke(&img.path, o, &0x0fff_ffffu32.to_le_bytes());
    }
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains("the cluster chain of config.txt is damaged: it has 1 cluster(s) but its"),
        "{e}"
    );
}

#[test]
fn differing_fat_copies_are_named() {
    let img = image("bookworm", &[]);
    // A free cluster far from anything in use, marked used in FAT 2 only.
    let cluster = 60_000;
    let offsets = fat_entry(&img.path, cluster);
    poke(&img.path, offsets[1], &0x0fff_ffffu32.to_le_bytes());
    let (_, fsck) = fsck_vfat(&img.path, 1);
    assert!(fsck.to_lowercase().contains("differ"), "fsck.vfat:\n{fsck}");
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(&format!(
            "FAT 1 and FAT 2 differ (first at byte {} of the FAT, the entry of cluster {cluster})",
            cluster * 4
        )),
        "{e}"
    );
}

// ------------------------------------------------ first-boot mechanism, from evidence

/// Runs debugfs commands read-write on the root (partition 2): the root as data.
fn debugfs_w(path: &Path, cmds: &[String]) {
    let (start, _) = partition(path, 2);
    let mut child = std::process::Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(format!("{}?offset={start}", path.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(cmds.join("\n").as_bytes()).unwrap();
    }
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(
        o.status.success() && !text.contains("not found") && !text.contains("error"),
        "debugfs {cmds:?}: {text}"
    );
    assert_ext4_clean(path, 2);
}

/// debugfs commands that put `content` at `path` on the root (removing the file
/// there first when `replace`).
fn debugfs_put(dir: &Path, path: &str, content: &str, replace: bool) -> Vec<String> {
    let local = dir.join(path.replace('/', "_"));
    std::fs::write(&local, content).unwrap();
    let mut cmds = Vec::new();
    if replace {
        cmds.push(format!("rm {path}"));
    }
    cmds.push(format!("write {} {path}", local.display()));
    cmds
}

fn release_of(path: &Path) -> piimg::image::Release {
    Image::open(path)
        .unwrap()
        .root()
        .unwrap()
        .release()
        .unwrap()
}

fn choose(path: &Path, init_format: Option<&str>) -> Result<FirstBoot, String> {
    piimg::image::choose_first_boot(path, &release_of(path), init_format).map_err(|e| {
        let e = e.to_string();
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        e
    })
}

#[test]
fn os_list_init_format_must_agree_with_the_root() {
    let trixie = image("trixie", &[]);
    let bookworm = image("bookworm", &[]);
    assert_eq!(choose(&trixie.path, None), Ok(FirstBoot::CloudInit));
    assert_eq!(
        choose(&trixie.path, Some("cloudinit-rpi")),
        Ok(FirstBoot::CloudInit)
    );
    // Trixie 2025-10 was listed as "systemd": its root has systemd 257 and cloud-init;
    // piimg uses the mechanism it tests on Trixie.
    assert_eq!(
        choose(&trixie.path, Some("systemd")),
        Ok(FirstBoot::CloudInit)
    );
    assert_eq!(choose(&bookworm.path, None), Ok(FirstBoot::SystemdRun));
    assert_eq!(
        choose(&bookworm.path, Some("systemd")),
        Ok(FirstBoot::SystemdRun)
    );

    let e = choose(&bookworm.path, Some("cloudinit-rpi")).unwrap_err();
    assert!(
        e.contains(
            "the OS list gives init_format \"cloudinit-rpi\" (cloud-init) but the root \
             partition has no cloud-init (/usr/bin/cloud-init); found: systemd-run (systemd 252"
        ),
        "{e}"
    );
    assert!(e.contains("piimg cache prune"), "{e}");
    let e = choose(&trixie.path, Some("rpi-preseed")).unwrap_err();
    assert!(
        e.contains("init_format \"rpi-preseed\" (rpi-preseed) but the root partition has no /usr/lib/rpi-preseed/rpi-preseed"),
        "{e}"
    );
    let e = choose(&trixie.path, Some("systemd-boot")).unwrap_err();
    assert!(
        e.contains(
            "init_format \"systemd-boot\", which piimg does not know (known: cloudinit, \
             cloudinit-rpi, none, rpi-preseed, systemd)"
        ),
        "{e}"
    );
    for none in ["none", ""] {
        let e = choose(&trixie.path, Some(none)).unwrap_err();
        assert!(
            e.contains("init_format \"none\": the image takes no first-boot customisation"),
            "{e}"
        );
    }
}

#[test]
fn trixie_without_cloud_init_is_refused_not_given_the_bookworm_hook() {
    let img = image("trixie", &[]);
    debugfs_w(&img.path, &["rm /usr/bin/cloud-init".to_string()]);
    let r = release_of(&img.path);
    assert_eq!(r.first_boot, None);
    let e = choose(&img.path, None).unwrap_err();
    assert!(
        e.contains(
            "root partition (trixie): piimg cannot run its first-boot agent: none of its \
             first-boot mechanisms is one piimg uses on trixie (piimg uses cloud-init on \
             trixie, systemd-run on bookworm); no cloud-init (/usr/bin/cloud-init)"
        ),
        "{e}"
    );
    assert!(e.contains("found: systemd-run (systemd 257"), "{e}");
    let e = choose(&img.path, Some("cloudinit-rpi")).unwrap_err();
    assert!(e.contains("has no cloud-init (/usr/bin/cloud-init)"), "{e}");
}

#[test]
fn cloud_init_without_a_nocloud_datasource_is_refused() {
    let img = image("trixie", &[]);
    debugfs_w(
        &img.path,
        &[
            "rm /etc/cloud/cloud.cfg".to_string(),
            "rm /etc/cloud/cloud.cfg.d/99_raspberry-pi.cfg".to_string(),
        ],
    );
    let e = choose(&img.path, None).unwrap_err();
    assert!(
        e.contains(
            "cloud-init is installed (/usr/bin/cloud-init) but no NoCloud datasource is \
             configured in /etc/cloud/cloud.cfg or /etc/cloud/cloud.cfg.d"
        ),
        "{e}"
    );

    // A commented-out NoCloud does not count; a datasource section in cloud.cfg.d does.
    let dir = tempfile::tempdir().unwrap();
    debugfs_w(
        &img.path,
        &debugfs_put(
            dir.path(),
            "/etc/cloud/cloud.cfg.d/50-x.cfg",
            "# datasource_list: [ NoCloud ]\n",
            false,
        ),
    );
    assert!(choose(&img.path, None).is_err());
    debugfs_w(
        &img.path,
        &debugfs_put(
            dir.path(),
            "/etc/cloud/cloud.cfg.d/50-x.cfg",
            "datasource:\n  NoCloud:\n    seedfrom: file:///boot/firmware\n",
            true,
        ),
    );
    assert_eq!(choose(&img.path, None), Ok(FirstBoot::CloudInit));
    let r = release_of(&img.path);
    assert!(
        r.first_boot_support[0]
            .evidence
            .contains(&"NoCloud datasource in /etc/cloud/cloud.cfg.d/50-x.cfg".to_string()),
        "{:?}",
        r.first_boot_support
    );
}

#[test]
fn rpi_preseed_images_are_refused_with_what_was_found() {
    let img = image("trixie", &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmds = vec![
        "rm /usr/bin/cloud-init".to_string(),
        "mkdir /usr/lib/rpi-preseed".to_string(),
    ];
    cmds.extend(debugfs_put(
        dir.path(),
        "/usr/lib/rpi-preseed/rpi-preseed",
        "#!/bin/sh\n",
        false,
    ));
    debugfs_w(&img.path, &cmds);
    let e = choose(&img.path, None).unwrap_err();
    assert!(
        e.contains("found: rpi-preseed (/usr/lib/rpi-preseed/rpi-preseed); systemd-run"),
        "{e}"
    );
    let e = choose(&img.path, Some("rpi-preseed")).unwrap_err();
    assert!(
        e.contains(
            "the OS list gives init_format \"rpi-preseed\" (Imager writes rpi-preseed.toml); \
             piimg writes no cards for it"
        ),
        "{e}"
    );
}

#[test]
fn bookworm_hook_needs_sys_mods_firstboot_and_systemd_240() {
    let img = image("bookworm", &[]);
    debugfs_w(
        &img.path,
        &["rm /usr/lib/raspberrypi-sys-mods/firstboot".to_string()],
    );
    let e = choose(&img.path, None).unwrap_err();
    assert!(
        e.contains(
            "no /usr/lib/raspberrypi-sys-mods/firstboot (raspberrypi-sys-mods), which \
             bookworm's cmdline.txt runs before any systemd.run= hook"
        ),
        "{e}"
    );

    let img = image("bookworm", &[]);
    let dir = tempfile::tempdir().unwrap();
    let status = "Package: dpkg\nStatus: install ok installed\nArchitecture: arm64\nVersion: 1.22.6\n\n\
                  Package: systemd\nStatus: install ok installed\nArchitecture: arm64\nVersion: 239-1\n";
    debugfs_w(
        &img.path,
        &debugfs_put(dir.path(), "/var/lib/dpkg/status", status, true),
    );
    let e = choose(&img.path, None).unwrap_err();
    assert!(
        e.contains(
            "systemd 239 (dpkg: systemd 239-1) is older than 240, the first with systemd.run="
        ),
        "{e}"
    );
    // A dpkg status without systemd and no generator: no systemd.run=, never a guess.
    let full: String = (0..60)
        .map(|i| format!("Package: pkg{i}\nStatus: install ok installed\nVersion: 1\n\n"))
        .collect();
    debugfs_w(
        &img.path,
        &debugfs_put(dir.path(), "/var/lib/dpkg/status", &full, true),
    );
    let e = choose(&img.path, None).unwrap_err();
    assert!(
        e.contains("dpkg records no systemd and there is no /usr/lib/systemd/system-generators/systemd-run-generator"),
        "{e}"
    );
    let status = status.replace("239-1", "252.38-1~deb12u1");
    debugfs_w(
        &img.path,
        &debugfs_put(dir.path(), "/var/lib/dpkg/status", &status, true),
    );
    assert_eq!(choose(&img.path, None), Ok(FirstBoot::SystemdRun));
    let r = release_of(&img.path);
    assert_eq!(
        r.first_boot_support[0].evidence[0],
        "systemd 252 (dpkg: systemd 252.38-1~deb12u1)"
    );
}

// ------------------------------------------------------- `piimg build` refuses bases

const LAB_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 test@piimg";

/// A one-node profile `lab.toml` in a new temp dir.
fn lab() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("lab.toml"),
        format!(
            "[cluster]\nname = \"lab\"\n\n[network]\ncidr = \"192.168.86.0/24\"\n\
             gateway = \"192.168.86.1\"\ndns = [\"192.168.86.1\"]\n\n[k3s]\nversion = \"v1.31.4+k3s1\"\n\n\
             [access]\nadmin_user = \"admin\"\nssh_keys = [\"{LAB_KEY}\"]\n\n\
             [[nodes]]\nname = \"cp-1\"\nip = \"192.168.86.31\"\nrole = \"server\"\n\
             hardware = \"pi5-8gb\"\n"
        ),
    )
    .unwrap();
    dir
}

/// `piimg build --node cp-1 --offline` in `dir`, with the cache in `dir/cache`.
fn build(dir: &Path, base: Option<&Path>) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_piimg"));
    c.current_dir(dir)
        .env("SOURCE_DATE_EPOCH", T0.to_string())
        .env("PIIMG_CACHE", dir.join("cache"))
        .env_remove("PIIMG_PROFILE")
        .args(["--quiet", "build", "--profile", "lab.toml", "--offline"])
        .args(["--node", "cp-1"]);
    if let Some(b) = base {
        c.arg("--base").arg(b);
    }
    c.output().unwrap()
}

#[test]
fn build_refuses_a_broken_base_before_creating_anything() {
    let dir = lab();
    let img = image("bookworm", &[]);
    // Start from a card that builds, then break one FAT copy.
    let o = build(dir.path(), Some(&img.path));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(dir.path().join("lab.secrets")).unwrap();
    std::fs::remove_dir_all(dir.path().join("out")).unwrap();
    let offsets = fat_entry(&img.path, 60_000);
    poke(&img.path, offsets[1], &0x0fff_ffffu32.to_le_bytes());
    let o = build(dir.path(), Some(&img.path));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "error: {}: boot partition (partition 1 at byte 8388608): FAT 1 and FAT 2 differ",
            img.path.display()
        )),
        "{err}"
    );
    assert!(
        !dir.path().join("lab.secrets").exists(),
        "no secrets created"
    );
    assert!(!dir.path().join("out").exists(), "nothing built");
}

#[test]
fn build_refuses_a_cached_base_whose_os_list_init_format_contradicts_its_root() {
    let dir = lab();
    let img = image("bookworm", &[]);
    let key = "ab".repeat(32);
    let images = dir.path().join("cache/images");
    std::fs::create_dir_all(&images).unwrap();
    let cached = images.join(format!("{key}.img"));
    std::fs::copy(&img.path, &cached).unwrap();
    let meta = |init_format: &str| {
        serde_json::json!({
            "path": cached,
            "sha256": "cd".repeat(32),
            "size": std::fs::metadata(&cached).unwrap().len(),
            "download_sha256": key,
            "release": "bookworm",
            "release_date": "2025-05-13",
            "name": "Raspberry Pi OS Lite (64-bit)",
            "url": "http://127.0.0.1/2025-05-13-raspios-bookworm-arm64-lite.img.xz",
            "init_format": init_format,
            "fetched_at": 1_700_000_000u64,
        })
        .to_string()
    };
    std::fs::write(images.join(format!("{key}.json")), meta("cloudinit-rpi")).unwrap();
    let o = build(dir.path(), None);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "the OS list gives init_format \"cloudinit-rpi\" (cloud-init) but the root \
             partition has no cloud-init"
        ),
        "{err}"
    );
    assert!(!dir.path().join("out").exists(), "nothing built");

    // The format the list gives for Bookworm builds.
    std::fs::write(images.join(format!("{key}.json")), meta("systemd")).unwrap();
    let o = build(dir.path(), None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cmdline =
        String::from_utf8(mtype(&dir.path().join("out/cp-1.img"), 1, "cmdline.txt").unwrap())
            .unwrap();
    assert!(cmdline.contains("systemd.run="), "{cmdline}");
}

/// (used, total) clusters of partition 1 as `fsck.vfat -n` counts them ("A/B clusters").
fn fsck_clusters(path: &Path) -> (u64, u64) {
    let (_, text) = fsck_vfat(path, 1);
    let words: Vec<&str> = text.split_whitespace().collect();
    let counts = words
        .windows(2)
        .find_map(|w| w[1].starts_with("clusters").then_some(w[0]))
        .unwrap_or_else(|| panic!("no cluster count in:\n{text}"));
    let (used, total) = counts.split_once('/').unwrap();
    (used.parse().unwrap(), total.parse().unwrap())
}

#[test]
fn free_space_is_counted_from_the_fat_as_fsck_counts_it_also_on_a_dirty_volume() {
    for release in RELEASES {
        let img = image(release, &[]);
        let image = Image::open_rw(&img.path).unwrap();
        let mut boot = image.boot_at(Timestamp::from_unix(T0)).unwrap();
        let cs = boot.cluster_size();
        let (used, total) = fsck_clusters(&img.path);
        let before = boot.free_bytes().unwrap();
        assert_eq!(before, (total - used) * cs, "{release}");
        assert_eq!(boot.total_bytes().unwrap(), total * cs, "{release}");
        // Staged changes count before the commit.
        boot.write("big.bin", &vec![1u8; 70_000]).unwrap();
        let staged = boot.free_bytes().unwrap();
        assert_eq!(before - staged, 70_000u64.div_ceil(cs) * cs, "{release}");
        boot.commit().unwrap();
        let (used, total) = fsck_clusters(&img.path);
        assert_eq!((total - used) * cs, staged, "{release}");

        // FAT[1] without its clean-shutdown bit: FSInfo's count is no longer used.
        for &o in &fat_entry(&img.path, 1) {
            poke(&img.path, o, &0x07ff_ffffu32.to_le_bytes());
        }
        let image = Image::open(&img.path).unwrap();
        let boot = image.boot().unwrap();
        assert!(boot.dirty_warning().unwrap().is_some(), "{release}");
        assert_eq!(boot.free_bytes().unwrap(), staged, "{release}");
    }
}

#[test]
fn a_looping_chain_of_a_card_file_is_named_where_it_closes() {
    let img = image("trixie", &[]);
    let c = first_cluster(&img.path, "config.txt");
    // The file's first cluster points back at itself.
    for &o in &fat_entry(&img.path, c) {
        poke(&img.path, o, &c.to_le_bytes());
    }
    let e = sanity(&img.path).expect("refused");
    assert!(
        e.contains(&format!(
            "the cluster chain of config.txt is damaged: the chain loops (through cluster {c})"
        )),
        "{e}"
    );
}
