//! Block devices as the kernel names them: which disk a partition belongs to, what
//! kind of disk a name is, a partition's device name, and whether a disk is blank.
//!
//! Device paths are the running kernel's (`/dev/...`), also when the agent works on
//! a tree under `--root`: host tests hand it loop devices.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// How many bytes at each end of a disk decide whether it is blank: partition
/// tables (MBR, GPT and its backup at the end) and file-system signatures
/// (ext4, FAT, XFS, btrfs, swap, LVM, RAID metadata at the end) all live there.
pub const EDGE_BYTES: u64 = 1 << 20;

/// The kind of disk a kernel block device name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskKind {
    /// `mmcblk*`: the SD card slot (or eMMC).
    Sd,
    /// `nvme*n*`: an NVMe SSD.
    Nvme,
    /// `sd*`: a SCSI-class disk; on a Raspberry Pi a USB mass-storage disk.
    Scsi,
    /// `vd*`: a virtio disk (an emulator, never a Raspberry Pi).
    Virtio,
    /// `loop*`: a loop device (tests).
    Loop,
    /// Anything else.
    Other,
}

impl DiskKind {
    /// The kind of disk `name` (e.g. `mmcblk0`, `nvme0n1`, `sda`) is.
    pub fn of(name: &str) -> DiskKind {
        if name.starts_with("mmcblk") {
            DiskKind::Sd
        } else if name.starts_with("nvme") {
            DiskKind::Nvme
        } else if name.starts_with("sd") {
            DiskKind::Scsi
        } else if name.starts_with("vd") {
            DiskKind::Virtio
        } else if name.starts_with("loop") {
            DiskKind::Loop
        } else {
            DiskKind::Other
        }
    }

    /// A short description for status lines.
    pub fn describe(self) -> &'static str {
        match self {
            DiskKind::Sd => "SD card",
            DiskKind::Nvme => "NVMe",
            DiskKind::Scsi => "USB/SCSI disk",
            DiskKind::Virtio => "virtio disk (emulator)",
            DiskKind::Loop => "loop device",
            DiskKind::Other => "unknown kind of disk",
        }
    }
}

/// The disk a partition name belongs to: `mmcblk0p2` → `mmcblk0`, `nvme0n1p2` →
/// `nvme0n1`, `sda2` → `sda`, `vda2` → `vda`. `None` when `name` has no partition
/// number (a whole disk).
pub fn disk_of_partition(name: &str) -> Option<String> {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() == name.len() || base.is_empty() {
        return None;
    }
    // Disks whose names end in a digit (mmcblk0, nvme0n1, loop3) separate the
    // partition number with `p`; the others (sda, vdb) append it.
    let digit_named = ["mmcblk", "nvme", "loop", "nbd", "md"]
        .iter()
        .any(|p| name.starts_with(p));
    if digit_named {
        base.strip_suffix('p')
            .filter(|d| d.ends_with(|c: char| c.is_ascii_digit()))
            .map(String::from)
    } else {
        Some(base.to_string())
    }
}

/// The device path of partition `n` of disk `dev`: `/dev/sdb` → `/dev/sdb1`,
/// `/dev/nvme0n1` → `/dev/nvme0n1p1`, `/dev/loop3` → `/dev/loop3p1`.
pub fn partition_path(dev: &str, n: u32) -> String {
    if dev.ends_with(|c: char| c.is_ascii_digit()) {
        format!("{dev}p{n}")
    } else {
        format!("{dev}{n}")
    }
}

/// What the first and last [`EDGE_BYTES`] of a disk hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edges {
    /// The disk's size in bytes.
    pub size: u64,
    /// Offset of the first non-zero byte found, if any.
    pub first_nonzero: Option<u64>,
}

impl Edges {
    /// True when both ends are all zeros.
    pub fn blank(&self) -> bool {
        self.first_nonzero.is_none()
    }
}

/// Reads the first and last [`EDGE_BYTES`] of `dev` (read-only) and reports the
/// first non-zero byte. A disk is *blank* when there is none: no partition table
/// and no file-system signature can hide there.
pub fn read_edges(dev: &Path) -> io::Result<Edges> {
    let mut f = File::open(dev)?;
    let size = f.seek(SeekFrom::End(0))?;
    let head = EDGE_BYTES.min(size);
    let tail_start = size.saturating_sub(EDGE_BYTES).max(head);
    let mut first_nonzero = None;
    for (start, len) in [(0, head), (tail_start, size - tail_start)] {
        if first_nonzero.is_some() || len == 0 {
            continue;
        }
        f.seek(SeekFrom::Start(start))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        first_nonzero = buf.iter().position(|&b| b != 0).map(|i| start + i as u64);
    }
    Ok(Edges {
        size,
        first_nonzero,
    })
}

/// The value of `key=` on a kernel command line (the last one wins, as in the kernel).
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .filter_map(|a| a.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

/// The mount sources in `/proc/self/mounts` text that are `dev` or one of its
/// partitions (a disk in use must never be formatted).
pub fn mounted_from(mounts: &str, dev: &str) -> Vec<String> {
    mounts
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|src| {
            *src == dev
                || src
                    .strip_prefix(dev)
                    .is_some_and(|rest| rest.trim_start_matches('p').parse::<u32>().is_ok())
        })
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_map_to_their_disks_and_back() {
        for (part, disk) in [
            ("mmcblk0p2", "mmcblk0"),
            ("nvme0n1p2", "nvme0n1"),
            ("sda2", "sda"),
            ("vda2", "vda"),
            ("loop7p1", "loop7"),
        ] {
            assert_eq!(disk_of_partition(part).as_deref(), Some(disk), "{part}");
            let n = part.chars().last().and_then(|c| c.to_digit(10)).unwrap();
            assert_eq!(
                partition_path(&format!("/dev/{disk}"), n),
                format!("/dev/{part}")
            );
        }
        for whole in ["mmcblk0", "nvme0n1", "sda", "loop7", ""] {
            assert_eq!(disk_of_partition(whole), None, "{whole}");
        }
        assert_eq!(DiskKind::of("mmcblk0"), DiskKind::Sd);
        assert_eq!(DiskKind::of("nvme0n1"), DiskKind::Nvme);
        assert_eq!(DiskKind::of("sdb"), DiskKind::Scsi);
        assert_eq!(DiskKind::of("vdb"), DiskKind::Virtio);
    }

    #[test]
    fn cmdline_values_and_mounts() {
        let c = "console=tty1 root=PARTUUID=0ddba11e-02 rootwait root=PARTUUID=abc-02";
        assert_eq!(cmdline_value(c, "root"), Some("PARTUUID=abc-02"));
        assert_eq!(cmdline_value(c, "piimg.data_disk"), None);
        let m = "/dev/sda1 / ext4 rw 0 0\n/dev/sdb2 /x ext4 rw 0 0\n/dev/sdbb1 /y ext4 rw 0 0\n";
        assert_eq!(mounted_from(m, "/dev/sdb"), ["/dev/sdb2"]);
        assert!(mounted_from(m, "/dev/sdc").is_empty());
    }

    #[test]
    fn a_zero_file_is_blank_and_a_byte_at_either_end_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk");
        let size = 3 * EDGE_BYTES;
        std::fs::write(&p, vec![0u8; size as usize]).unwrap();
        assert!(read_edges(&p).unwrap().blank());
        let mut bytes = vec![0u8; size as usize];
        bytes[(size - 1) as usize] = 1;
        bytes[(EDGE_BYTES + 5) as usize] = 1; // the middle does not count
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_edges(&p).unwrap().first_nonzero, Some(size - 1));
        bytes[510] = 0x55;
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(read_edges(&p).unwrap().first_nonzero, Some(510));
    }
}
