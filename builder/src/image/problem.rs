//! What can be wrong with a base image before a build (found by `image::sanity`),
//! each problem with where it is and the fix.

/// One thing wrong with a base image; the message names the partition, its byte
/// offset and the fix (the image path is added by [`ImageError::Sanity`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A partition holds the FAT boot file system but its table entry says otherwise.
    #[error(
        "partition {index} (at byte {offset}) holds the FAT boot file system but the \
         partition table types it {type_code}, not a FAT type; the Pi firmware would \
         not find its boot files — retype it (`sfdisk --part-type IMAGE {index} {fat_type}`) \
         or fetch a fresh image"
    )]
    BootNotTypedFat {
        /// Partition number.
        index: u32,
        /// Byte offset of the partition.
        offset: u64,
        /// The type it has (`0x83`, or a GPT type GUID).
        type_code: String,
        /// The type it should have (`c`, or the GPT basic-data GUID).
        fat_type: &'static str,
    },
    /// cmdline.txt's `root=PARTUUID=` names no partition of this disk.
    #[error(
        "the base's cmdline.txt points at PARTUUID {partuuid} but the disk id is {disk} \
         (partitions {partuuids}); this card would not find its root — fix root= in \
         cmdline.txt or fetch a fresh image"
    )]
    RootPartuuidElsewhere {
        /// The PARTUUID cmdline.txt names.
        partuuid: String,
        /// The disk identifier (MBR) or GUID (GPT).
        disk: String,
        /// The PARTUUIDs the disk does have.
        partuuids: String,
    },
    /// cmdline.txt's `root=PARTUUID=` names a partition that is not the root.
    #[error(
        "the base's cmdline.txt points root= at PARTUUID {partuuid}, partition {index} (at \
         byte {offset}), but the ext4 root is partition {root_index} (PARTUUID \
         {root_partuuid}); this card would not boot — fix root= in cmdline.txt or fetch a \
         fresh image"
    )]
    RootPartuuidNotRoot {
        /// The PARTUUID cmdline.txt names.
        partuuid: String,
        /// The partition it names.
        index: u32,
        /// Its byte offset.
        offset: u64,
        /// The root partition's number.
        root_index: u32,
        /// The root partition's PARTUUID.
        root_partuuid: String,
    },
    /// cmdline.txt is missing, or has no `root=`.
    #[error(
        "the boot partition (partition {index} at byte {offset}) {what}; the card would not \
         boot — fetch a fresh image"
    )]
    Cmdline {
        /// Boot partition number.
        index: u32,
        /// Its byte offset.
        offset: u64,
        /// "has no cmdline.txt", "has a cmdline.txt without root=".
        what: String,
    },
    /// A reserved entry of a FAT (entry 0: media byte; entry 1: end of chain) is wrong.
    #[error(
        "boot partition (partition {index} at byte {offset}): FAT {fat} entry {entry} is \
         0x{found:08x}, expected 0x{expected:08x} ({what}); the FAT is damaged — repair it \
         (`fsck.vfat -a` on the partition) or fetch a fresh image"
    )]
    FatReservedEntry {
        /// Boot partition number.
        index: u32,
        /// Its byte offset.
        offset: u64,
        /// Which FAT copy (1-based).
        fat: u64,
        /// Entry 0 or 1.
        entry: u32,
        /// The value found (28 bits).
        found: u32,
        /// The value expected.
        expected: u32,
        /// What the entry should hold.
        what: String,
    },
    /// The cluster chain of a file or directory a card needs is damaged.
    #[error(
        "boot partition (partition {index} at byte {offset}): the cluster chain of {file} is \
         damaged: {reason}; repair it (`fsck.vfat -a` on the partition) or fetch a fresh image"
    )]
    FatChain {
        /// Boot partition number.
        index: u32,
        /// Its byte offset.
        offset: u64,
        /// The file (or "the root directory").
        file: String,
        /// What is wrong, with cluster numbers.
        reason: String,
    },
    /// The copies of the FAT differ.
    #[error(
        "boot partition (partition {index} at byte {offset}): FAT 1 and FAT {other} differ \
         (first at byte {byte} of the FAT, the entry of cluster {cluster}); one of them is \
         damaged — repair it (`fsck.vfat -a` on the partition) or fetch a fresh image"
    )]
    FatsDiffer {
        /// Boot partition number.
        index: u32,
        /// Its byte offset.
        offset: u64,
        /// The copy that differs from the first (1-based).
        other: u64,
        /// Byte offset of the first difference inside the FAT.
        byte: u64,
        /// The cluster whose entry differs.
        cluster: u64,
    },
}
