//! Everything that can go wrong reading or editing a disk image, one variant per
//! cause a caller (or a user) can act on.

use std::io;
use std::path::PathBuf;

/// Errors of the image engine. Every message names the file (and where useful the
/// partition, offset or path inside it) and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// An I/O call on the image file failed.
    #[error("{}: {action}: {source}", .path.display())]
    Io {
        /// The image file.
        path: PathBuf,
        /// What piimg was doing.
        action: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The file has no bytes at all.
    #[error("{}: the file is empty (0 bytes), not a disk image", .path.display())]
    Empty {
        /// The image file.
        path: PathBuf,
    },
    /// A compressed file was given where a raw disk image is needed.
    #[error(
        "{}: this is a {format}-compressed file, not a raw disk image; decompress it first \
         (`{tool}`) or let `piimg fetch` download, verify and decompress the base image", .path.display())]
    Compressed {
        /// The image file.
        path: PathBuf,
        /// `xz`, `zstd`, `gzip`, ...
        format: &'static str,
        /// A command line that decompresses it.
        tool: String,
    },
    /// No MBR or GPT partition table.
    #[error("{}: not a disk image: {reason}", .path.display())]
    NotADiskImage {
        /// The image file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// The partition table itself is inconsistent (overlap, past the end, bad GPT).
    #[error("{}: bad partition table: {reason}", .path.display())]
    BadTable {
        /// The image file.
        path: PathBuf,
        /// What is wrong, with partition numbers and byte offsets.
        reason: String,
    },
    /// No partition of a FAT type (the Raspberry Pi boot partition).
    #[error(
        "{}: no FAT boot partition (MBR type 0x0c/0x0b/0x0e/0x06 or GPT basic-data/EFI); \
         is this a Raspberry Pi OS image?", .path.display())]
    NoBootPartition {
        /// The image file.
        path: PathBuf,
    },
    /// No Linux partition after the boot partition.
    #[error(
        "{}: no Linux root partition (MBR type 0x83 or a GPT Linux type); \
         is this a Raspberry Pi OS image?", .path.display())]
    NoRootPartition {
        /// The image file.
        path: PathBuf,
    },
    /// The boot partition's bytes are not a FAT file system.
    #[error(
        "{}: partition {index} (at byte {offset}) is typed FAT but holds no FAT file \
         system: {reason}; the image may be damaged — fetch a fresh copy", .path.display())]
    NotFat {
        /// The image file.
        path: PathBuf,
        /// Partition number (1-based).
        index: u32,
        /// Byte offset of the partition in the image.
        offset: u64,
        /// What the check found.
        reason: String,
    },
    /// The root partition's bytes are not ext4.
    #[error(
        "{}: partition {index} (at byte {offset}) is not an ext4 file system: {reason}; \
         piimg needs Raspberry Pi OS's ext4 root", .path.display())]
    NotExt4 {
        /// The image file.
        path: PathBuf,
        /// Partition number (1-based).
        index: u32,
        /// Byte offset of the partition in the image.
        offset: u64,
        /// What the check found.
        reason: String,
    },
    /// The root partition holds ext4 (its superblock magic is there) that could not be
    /// opened.
    #[error(
        "{}: partition {index} (at byte {offset}) holds an ext4 file system piimg cannot \
         read: {reason}; `e2fsck -fn` on the partition shows what is wrong with it", .path.display())]
    Ext4Unreadable {
        /// The image file.
        path: PathBuf,
        /// Partition number (1-based).
        index: u32,
        /// Byte offset of the partition in the image.
        offset: u64,
        /// What ext4-view reported.
        reason: String,
    },
    /// A FAT operation failed.
    #[error("{}: boot partition: {op} '{path}': {source}", .image.display())]
    Fat {
        /// The image file.
        image: PathBuf,
        /// What was being done (`read`, `write`, `create directory`, ...).
        op: &'static str,
        /// Path inside the boot partition.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A FAT structure piimg had to follow is damaged (a cluster chain that loops or
    /// leaves the volume, a directory tree that loops, a directory over FAT's limit):
    /// named instead of followed without end.
    #[error(
        "{}: boot partition: {op} '{path}': the FAT file system is damaged: {reason}; \
         run fsck.vfat on the partition or use a fresh image", .image.display())]
    FatDamaged {
        /// The image file.
        image: PathBuf,
        /// What was being done (`read`, `list`, ...).
        op: &'static str,
        /// Path inside the boot partition.
        path: String,
        /// What is damaged.
        reason: String,
    },
    /// Not enough free space on the boot partition; nothing was written.
    #[error(
        "{}: boot partition is full: writing '{path}' needs {needed} bytes but only {free} \
         are free; nothing was written (remove files from the card or bundle less)", .image.display())]
    FatFull {
        /// The image file.
        image: PathBuf,
        /// Path (or first path of a batch) inside the boot partition.
        path: String,
        /// Bytes the change needs (whole clusters).
        needed: u64,
        /// Bytes free.
        free: u64,
    },
    /// A path inside the boot partition is not acceptable.
    #[error("boot partition path '{path}': {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A write was attempted on an image opened read-only.
    #[error("{}: opened read-only; open it with Image::open_rw to change it", .path.display())]
    ReadOnly {
        /// The image file.
        path: PathBuf,
    },
    /// An earlier change failed, so the pending changes were discarded.
    #[error(
        "{}: an earlier change to the boot partition failed; its pending changes were \
         discarded and nothing was written", .path.display())]
    Poisoned {
        /// The image file.
        path: PathBuf,
    },
    /// Reading the ext4 root failed.
    #[error("{}: root partition: {path}: {reason}", .image.display())]
    Ext4 {
        /// The image file.
        image: PathBuf,
        /// Path inside the root file system.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The root file system is not a Raspberry Pi OS-like Debian root.
    #[error("{}: root partition: {reason}", .image.display())]
    Release {
        /// The image file.
        image: PathBuf,
        /// What was missing or unexpected.
        reason: String,
    },
    /// The root is built for an architecture piimg does not support.
    #[error(
        "{}: the root file system is {arch} ({evidence}); piimg supports only \
         Raspberry Pi OS Lite arm64 (64-bit) — use the arm64 image", .image.display())]
    UnsupportedArch {
        /// The image file.
        image: PathBuf,
        /// Debian architecture name (`armhf`, `amd64`, ...).
        arch: String,
        /// Which file told us.
        evidence: String,
    },
    /// The OS-list `init_format` is not one piimg knows.
    #[error(
        "{}: the OS list gives init_format \"{init_format}\", which piimg does not know \
         (known: {known}); update piimg, or pass the image with --base so its root decides", .image.display())]
    UnknownInitFormat {
        /// The image file.
        image: PathBuf,
        /// The value from the OS list.
        init_format: String,
        /// The formats piimg knows.
        known: String,
    },
    /// The OS-list `init_format` names a mechanism the root shows no evidence of.
    #[error(
        "{}: the OS list gives init_format \"{init_format}\" ({mechanism}) but the root \
         partition has {missing}; found: {found} — the cached image may not be the one the \
         list describes: remove it (`piimg cache prune --keep 0`) and fetch again", .image.display())]
    InitFormatContradiction {
        /// The image file.
        image: PathBuf,
        /// The value from the OS list.
        init_format: String,
        /// The mechanism it implies.
        mechanism: &'static str,
        /// What the root lacks.
        missing: String,
        /// The mechanisms the root does support, with evidence.
        found: String,
    },
    /// The root has no first-boot mechanism piimg writes cards for on its release.
    #[error(
        "{}: root partition ({codename}): piimg cannot run its first-boot agent: {reason}; \
         found: {found} — use an official Raspberry Pi OS Lite (64-bit) image", .image.display())]
    UnsupportedFirstBoot {
        /// The image file.
        image: PathBuf,
        /// Debian codename of the root.
        codename: String,
        /// Why no mechanism can be used.
        reason: String,
        /// The mechanisms the root does support, with evidence.
        found: String,
    },
    /// A check of the base image before building failed (see `image::sanity`).
    #[error("{}: {problem}", .image.display())]
    Sanity {
        /// The image file.
        image: PathBuf,
        /// The problem, where and the fix.
        problem: super::problem::Problem,
    },
}

impl ImageError {
    /// An [`ImageError::Io`] for `path` while doing `action`.
    pub(crate) fn io(path: &std::path::Path, action: impl Into<String>, source: io::Error) -> Self {
        ImageError::Io {
            path: path.to_path_buf(),
            action: action.into(),
            source,
        }
    }
}
