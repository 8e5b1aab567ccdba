//! Storage on the node: the data disk on real loop devices (blank → formatted, a
//! foreign file system refused untouched, this node's disk reused after a re-image,
//! another node's disk refused) and SD-wear on a Raspberry Pi OS-shaped root.
//!
//! Loop devices need root and `losetup`; without them these tests FAIL unless
//! `PIIMG_SKIP_LOOP_TESTS=1` says to skip them.

use piimg_contract::storage::{DATA_DISK_LABEL, DataDisk, DiskBus, K3S_DATA_DIR, SdWear};
use piimg_contract::*;
use piimg_firstboot::exec::Exec;
use piimg_firstboot::node_fs::NodeFs;
use piimg_firstboot::runner::{Output, RecordingRunner};
use piimg_firstboot::steps::sd_wear;
use piimg_test_support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");
const MIB: u64 = 1 << 20;

/// A scratch loop device (with partition scanning) over a file; detached on drop.
struct Loop {
    dev: String,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    /// A loop device over `mib` MiB of zeros, or `None` when loop tests are skipped.
    fn new(mib: u64) -> Option<Loop> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        fs::File::create(&file).unwrap().set_len(mib * MIB).unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(&file)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Loop {
                dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
                file,
                _dir: dir,
            }),
            other => {
                let why = match other {
                    Ok(o) => stderr(&o),
                    Err(e) => e.to_string(),
                };
                if std::env::var("PIIMG_SKIP_LOOP_TESTS").as_deref() == Ok("1") {
                    eprintln!("SKIPPED (PIIMG_SKIP_LOOP_TESTS=1): losetup: {why}");
                    None
                } else {
                    panic!(
                        "losetup failed ({why}); these tests need root and loop devices (PIIMG_SKIP_LOOP_TESTS=1 skips them)"
                    )
                }
            }
        }
    }

    fn part1(&self) -> String {
        format!("{}p1", self.dev)
    }

    /// The whole disk's bytes, read through the loop device.
    fn bytes(&self) -> Vec<u8> {
        fs::read(&self.dev).unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = &self.file;
    }
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    assert!(o.status.success(), "{program} {args:?}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn blkid_tag(dev: &str, tag: &str) -> String {
    run_ok("blkid", &["-p", "-s", tag, "-o", "value", dev])
        .trim()
        .to_string()
}

/// A card of `role` with a USB data disk, on a root whose kernel command line names
/// `dev` as the data disk (the emulator/test seam).
fn data_disk_node(role: Role, dev: &str) -> Fixture {
    let mut cfg = node_config(role, role == Role::Server, bookworm_hook());
    cfg.storage.data_disk = Some(DataDisk {
        bus: DiskBus::Usb,
        label: DATA_DISK_LABEL.into(),
        mount_point: K3S_DATA_DIR.into(),
    });
    let f = Fixture::new(AGENT.as_ref(), &cfg);
    files::put(
        &f.path("/proc/cmdline"),
        &format!("{CMDLINE_BASE} piimg.data_disk={dev}\n"),
        0o644,
    );
    files::put(
        &f.path("/etc/fstab"),
        "proc  /proc  proc  defaults  0  0\nPARTUUID=0ddba11e-02  /  ext4  defaults,noatime  0  1\n",
        0o644,
    );
    f
}

fn step_message(f: &Fixture, step: &str) -> String {
    f.status()
        .steps
        .iter()
        .rev()
        .find(|r| r.name == step)
        .map(|r| r.message.clone())
        .unwrap_or_else(|| panic!("no {step} step in {:?}", f.status()))
}

/// Runs the agent until it fails; returns the failed step's message.
fn run_until_failure(f: &Fixture) -> String {
    for _ in 0..3 {
        let out = f.run(&[]);
        if !out.status.success() {
            let st = f.status();
            assert_eq!(st.result, StepResult::Error, "{st:?}");
            return st.message;
        }
    }
    panic!("the agent did not fail: {:?}", f.status());
}

#[test]
fn a_blank_disk_is_formatted_reused_after_a_reimage_and_refused_to_another_node() {
    let Some(disk) = Loop::new(64) else { return };
    // 1. Blank: GPT, one ext4 partition with the label and the marker, in fstab by UUID.
    let f = data_disk_node(Role::Server, &disk.dev);
    f.run_to_completion(3);
    let msg = step_message(&f, "data-disk");
    assert!(
        msg.contains("was blank; formatted GPT + ext4 'piimg-data'"),
        "{msg}"
    );
    assert_eq!(blkid_tag(&disk.dev, "PTTYPE"), "gpt");
    let part = disk.part1();
    assert_eq!(blkid_tag(&part, "TYPE"), "ext4");
    assert_eq!(blkid_tag(&part, "LABEL"), DATA_DISK_LABEL);
    let uuid = blkid_tag(&part, "UUID");
    run_ok("e2fsck", &["-f", "-n", &part]);
    let marker = run_ok("debugfs", &["-R", "cat /.piimg-data-disk", &part]);
    assert!(
        marker.starts_with("piimg-data-disk 1\ncluster=homelab\nnode=pi5-master-1\n"),
        "{marker}"
    );
    let fstab = f.read("/etc/fstab");
    assert!(
        fstab.contains(&format!(
            "UUID={uuid}  /var/lib/rancher/k3s  ext4  defaults,noatime,nofail  0  2\n"
        )),
        "{fstab}"
    );
    assert!(
        fstab.starts_with("proc  /proc"),
        "the OS's lines stay: {fstab}"
    );
    assert_eq!(
        f.read("/etc/systemd/system/k3s.service.d/10-piimg-data-disk.conf"),
        "# piimg: k3s's data lives on the data disk: no k3s without it.\n[Unit]\nRequiresMountsFor=/var/lib/rancher/k3s\n"
    );
    // The file system mounts and holds the marker (mounted here by the test).
    let mnt = tempfile::tempdir().unwrap();
    run_ok("mount", &["-o", "ro", &part, &mnt.path().to_string_lossy()]);
    let seen = fs::read_to_string(mnt.path().join(".piimg-data-disk"));
    run_ok("umount", &[&mnt.path().to_string_lossy()]);
    assert_eq!(seen.unwrap(), marker);
    let formatted = disk.bytes();

    // 2. The same node re-imaged (a fresh root): its disk is reused, not formatted.
    let again = data_disk_node(Role::Server, &disk.dev);
    again.run_to_completion(3);
    let msg = step_message(&again, "data-disk");
    assert!(msg.contains("piimg's disk of node pi5-master-1"), "{msg}");
    assert!(msg.contains("reused without formatting"), "{msg}");
    assert!(again.read("/etc/fstab").contains(&format!("UUID={uuid} ")));
    assert!(
        disk.bytes() == formatted,
        "a reused disk must not be written"
    );

    // 3. Another node's card: refused, untouched.
    let other = data_disk_node(Role::Agent, &disk.dev);
    let err = run_until_failure(&other);
    assert!(
        err.contains("holds piimg's data disk of node pi5-master-1 of cluster homelab (this is node pi4-worker-1 of cluster homelab)"),
        "{err}"
    );
    assert!(err.contains("left untouched"), "{err}");
    assert!(
        disk.bytes() == formatted,
        "another node's disk must not be written"
    );
    assert!(!other.read("/etc/fstab").contains("/var/lib/rancher/k3s"));
}

/// Does what systemd-udevd does when a program closes a disk it wrote to
/// (`synthesize_change`): open the whole disk, try `flock(LOCK_EX|LOCK_NB)`, and only
/// with the lock re-read the partition table (`BLKRRPART`), which removes and re-adds
/// the partition devices. It waits until sfdisk's GPT and the partition's device are
/// there (the moment mkfs.ext4 is about to use it), then tries every few milliseconds
/// until one re-read succeeds (or `stop`); returns whether it did.
fn udev_like_reread(
    dev: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<bool> {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::Ordering;
    const BLKRRPART: libc::c_ulong = 0x125f; // _IO(0x12, 95), linux/fs.h
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(mut f) = fs::File::open(&dev) {
                let mut sig = [0u8; 8];
                let gpt = f.seek(SeekFrom::Start(512)).is_ok()
                    && f.read_exact(&mut sig).is_ok()
                    && &sig == b"EFI PART"
                    && Path::new(&format!("{dev}p1")).exists();
                // SAFETY: flock and ioctl on a descriptor this thread owns.
                if gpt
                    && unsafe {
                        libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0
                            && libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) == 0
                    }
                {
                    return true;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        false
    })
}

#[test]
fn a_format_survives_udev_rereading_the_partition_table() {
    // The agent locks the disk from sfdisk to mkfs.ext4 (udevd's block-device locking
    // protocol) and names the file system's UUID itself: a re-read meanwhile neither
    // pulls the partition from under mkfs.ext4 nor leaves fstab without a UUID.
    let Some(disk) = Loop::new(64) else { return };
    let f = data_disk_node(Role::Server, &disk.dev);
    f.run(&[]); // phase 1
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let udev = udev_like_reread(disk.dev.clone(), stop.clone());
    let out = f.run(&[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        udev.join().unwrap(),
        "the udev stand-in never re-read the table"
    );
    let msg = step_message(&f, "data-disk");
    assert!(
        msg.contains("was blank; formatted GPT + ext4 'piimg-data'"),
        "{msg}\n{}",
        stderr(&out)
    );
    // A kernel without a GPT parser (this test machine's) drops the partitions on the
    // stand-in's re-read and leaves them to user space, as the agent does: partx.
    let _ = Command::new("partx").args(["--update", &disk.dev]).status();
    let part = disk.part1();
    let mut uuid = String::new();
    for _ in 0..50 {
        let o = Command::new("blkid")
            .args(["-p", "-s", "UUID", "-o", "value", &part])
            .output()
            .unwrap();
        uuid = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if !uuid.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!uuid.is_empty(), "blkid reads no UUID on {part}");
    assert!(
        msg.contains(&format!("UUID={uuid}")),
        "{msg} (blkid: {uuid})"
    );
    assert!(
        f.read("/etc/fstab")
            .contains(&format!("UUID={uuid}  /var/lib/rancher/k3s"))
    );
    run_ok("e2fsck", &["-f", "-n", &part]);
}

/// `sfdisk DEV` with `script` on stdin.
fn sfdisk(dev: &str, script: &str) {
    let o = Command::new("sfdisk")
        .args(["--quiet", dev])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = Command::new("partx").args(["--update", dev]).status();
}

#[test]
fn a_format_cut_short_is_done_again() {
    // A power cut after sfdisk named the partition, before mkfs.ext4 finished.
    let Some(disk) = Loop::new(32) else { return };
    sfdisk(&disk.dev, "label: gpt\ntype=L, name=piimg-data\n");
    let f = data_disk_node(Role::Server, &disk.dev);
    f.run_to_completion(3);
    let msg = step_message(&f, "data-disk");
    assert!(
        msg.contains("held an interrupted piimg format (partition 'piimg-data' without a file system); formatted GPT + ext4"),
        "{msg}"
    );
    assert_eq!(blkid_tag(&disk.part1(), "LABEL"), DATA_DISK_LABEL);
    run_ok("e2fsck", &["-f", "-n", &disk.part1()]);
}

#[test]
fn a_disk_with_other_data_is_refused_untouched() {
    // A whole-disk ext4 file system of someone else's.
    let Some(disk) = Loop::new(32) else { return };
    run_ok("mkfs.ext4", &["-q", "-F", "-L", "backup", &disk.dev]);
    let before = disk.bytes();
    let f = data_disk_node(Role::Server, &disk.dev);
    let err = run_until_failure(&f);
    assert_eq!(f.status().step, "data-disk");
    assert!(
        err.starts_with(&format!(
            "data disk {} holds a ext4 file system labelled 'backup'",
            disk.dev
        )),
        "{err}"
    );
    assert!(err.contains(&format!("wipefs -a {}", disk.dev)), "{err}");
    assert!(disk.bytes() == before, "the foreign disk was written");

    // A GPT disk whose partition is not piimg's (no file system on it).
    let Some(gpt) = Loop::new(32) else { return };
    sfdisk(&gpt.dev, "label: gpt\ntype=L, name=backups\n");
    let before = gpt.bytes();
    let f = data_disk_node(Role::Server, &gpt.dev);
    let err = run_until_failure(&f);
    assert!(
        err.contains(
            "holds a gpt partition table whose first partition has no signature blkid knows"
        ),
        "{err}"
    );
    assert!(gpt.bytes() == before);

    // Bytes blkid does not know, past the first MiB's zeros: not blank either.
    let Some(junk) = Loop::new(16) else { return };
    let mut bytes = vec![0u8; (16 * MIB) as usize];
    bytes[(15 * MIB + 7) as usize] = 0x5a;
    fs::write(&junk.file, &bytes).unwrap();
    let f = data_disk_node(Role::Server, &junk.dev);
    let err = run_until_failure(&f);
    assert!(
        err.contains(&format!(
            "no signature blkid knows; first non-zero byte at offset {}",
            15 * MIB + 7
        )),
        "{err}"
    );
    assert!(junk.bytes() == bytes);
}

fn sd_wear_root(trixie: bool) -> (tempfile::TempDir, NodeFs) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let put = |p: &str, text: &str| files::put(&root.join(p.trim_start_matches('/')), text, 0o644);
    put(
        "/etc/fstab",
        "proc            /proc           proc    defaults          0       0\nPARTUUID=0ddba11e-01  /boot/firmware  vfat    defaults          0       2\nPARTUUID=0ddba11e-02  /               ext4    defaults,noatime  0       1\n",
    );
    put("/var/cache/apt/archives/curl_8.deb", "deb");
    put("/var/cache/apt/archives/lock", "");
    put("/var/cache/apt/pkgcache.bin", "bin");
    if trixie {
        put("/usr/lib/systemd/system/tmp.mount", "[Mount]\nWhat=tmpfs\n");
        put(
            "/usr/lib/systemd/system-generators/rpi-swap-generator",
            "#!/bin/sh\n",
        );
    } else {
        put(
            "/usr/share/systemd/tmp.mount",
            "[Mount]\nWhat=tmpfs\nWhere=/tmp\n[Install]\nWantedBy=local-fs.target\n",
        );
        put("/lib/systemd/system/dphys-swapfile.service", "[Service]\n");
        put("/etc/dphys-swapfile", "CONF_SWAPSIZE=512\n");
        put("/var/swap", "swap");
        fs::create_dir_all(root.join("etc/systemd/system/multi-user.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/dphys-swapfile.service",
            root.join("etc/systemd/system/multi-user.target.wants/dphys-swapfile.service"),
        )
        .unwrap();
    }
    let fs = NodeFs::new(root.clone(), root.join("boot/firmware"), false);
    (dir, fs)
}

fn tree(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if m.file_type().is_symlink() {
                out.push((rel, format!("-> {}", fs::read_link(&p).unwrap().display())));
            } else if m.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    rel,
                    String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sd_wear_minimal_on_bookworm_lists_each_change_and_reruns_as_already_so() {
    let (dir, fs) = sd_wear_root(false);
    let runner = RecordingRunner::new(|_| Output::ok(""));
    let exec = Exec::new(&runner, false, false);
    let msg = sd_wear::apply(SdWear::Minimal, &fs, &exec).unwrap();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(
        lines,
        [
            "sd_wear = minimal:",
            "journald: Storage=volatile, RuntimeMaxUse=64M (/etc/systemd/journald.conf.d/60-piimg-sd-wear.conf, from the next boot)",
            "swap: dphys-swapfile masked, /var/swap removed",
            "root: noatime,commit=600 in /etc/fstab",
            "/tmp: tmpfs (tmp.mount enabled, from the next boot)",
            "apt: package cache cleaned (2 file(s) removed)",
        ]
    );
    let r = dir.path();
    let journald =
        fs::read_to_string(r.join("etc/systemd/journald.conf.d/60-piimg-sd-wear.conf")).unwrap();
    assert!(journald.contains("[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\n"));
    assert_eq!(
        fs::read_link(r.join("etc/systemd/system/dphys-swapfile.service")).unwrap(),
        Path::new("/dev/null")
    );
    assert!(!r.join("var/swap").exists());
    assert!(
        fs::symlink_metadata(
            r.join("etc/systemd/system/multi-user.target.wants/dphys-swapfile.service")
        )
        .is_err()
    );
    assert!(fs::read_to_string(r.join("etc/fstab")).unwrap().contains(
        "PARTUUID=0ddba11e-02  /               ext4    defaults,noatime,commit=600  0       1\n"
    ));
    assert_eq!(
        fs::read_link(r.join("etc/systemd/system/local-fs.target.wants/tmp.mount")).unwrap(),
        Path::new("/etc/systemd/system/tmp.mount")
    );
    assert!(
        !r.join("var/cache/apt/archives/curl_8.deb").exists()
            && r.join("var/cache/apt/archives/lock").exists()
    );
    assert!(
        runner.calls().is_empty(),
        "under --root nothing live runs: {:?}",
        runner.calls()
    );

    // Rerun: nothing changes, every line says so.
    let before = tree(r);
    let again = sd_wear::apply(SdWear::Minimal, &fs, &exec).unwrap();
    assert_eq!(tree(r), before);
    assert!(
        again.contains("60-piimg-sd-wear.conf, already so)"),
        "{again}"
    );
    assert!(
        again.contains("swap: dphys-swapfile already masked, /var/swap absent"),
        "{again}"
    );
    assert!(
        again.contains("root: noatime,commit=600 in /etc/fstab, already so"),
        "{again}"
    );
    assert!(
        again.contains("/tmp: tmpfs (tmp.mount enabled, already so)"),
        "{again}"
    );
    assert!(again.contains("(0 file(s) removed)"), "{again}");

    // Live: the swap file is switched off first and the root remounted.
    let (_d2, fs2) = sd_wear_root(false);
    files::put(
        &_d2.path().join("proc/swaps"),
        "Filename\tType\tSize\tUsed\tPriority\n/var/swap\tfile\t524284\t0\t-2\n",
        0o644,
    );
    let live = Exec::new(&runner, false, true);
    sd_wear::apply(SdWear::Minimal, &fs2, &live).unwrap();
    assert_eq!(
        runner.calls(),
        ["swapoff /var/swap", "mount -o remount,noatime,commit=600 /"]
    );
}

#[test]
fn sd_wear_minimal_on_trixie_keeps_zram_and_tmpfs_and_off_changes_nothing() {
    let (dir, fs) = sd_wear_root(true);
    let runner = RecordingRunner::new(|_| Output::ok(""));
    let exec = Exec::new(&runner, false, false);
    let before = tree(dir.path());
    assert_eq!(
        sd_wear::apply(SdWear::Off, &fs, &exec).unwrap(),
        "sd_wear = off: nothing changed"
    );
    assert_eq!(tree(dir.path()), before);
    let msg = sd_wear::apply(SdWear::Minimal, &fs, &exec).unwrap();
    assert!(
        msg.contains("\nswap: no dphys-swapfile, rpi-swap's zram swap left as is\n"),
        "{msg}"
    );
    assert!(
        msg.contains("\n/tmp: tmpfs already (systemd's tmp.mount)\n"),
        "{msg}"
    );
    assert!(!dir.path().join("etc/systemd/system/tmp.mount").exists());
}
