//! The partition table of a disk image, whichever scheme wrote it, and the checks every
//! table must pass before piimg trusts an offset from it.

use serde::Serialize;

/// Bytes per logical sector in every table piimg reads.
pub const SECTOR: u64 = 512;

/// Which partitioning scheme the image uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Scheme {
    /// DOS/MBR; `disk_id` is the 32-bit identifier at byte 440 (PARTUUID prefix).
    Mbr {
        /// Disk identifier (little-endian u32 at byte 440); JSON: 8 hex digits.
        #[serde(serialize_with = "hex_u32")]
        disk_id: u32,
    },
    /// GUID partition table.
    Gpt {
        /// The disk GUID, lowercase hyphenated.
        disk_guid: String,
    },
}

fn hex_u32<S: serde::Serializer>(v: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{v:08x}"))
}

/// What a partition's type code says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionKind {
    /// A FAT type (MBR 0x0b/0x0c/0x0e/0x06/0x04/0x01, GPT basic data or EFI system).
    Fat,
    /// A Linux file system type (MBR 0x83, GPT Linux filesystem/root).
    Linux,
    /// An extended-partition container (MBR 0x05/0x0f/0x85).
    Extended,
    /// Anything else.
    Other,
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// 1-based partition number, as in `/dev/mmcblk0p<index>`.
    pub index: u32,
    /// Start in bytes from the beginning of the image.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// What the type code says.
    pub kind: PartitionKind,
    /// The raw type: `0x0c` for MBR, the type GUID for GPT.
    pub type_code: String,
    /// The PARTUUID Linux and the Pi firmware see (`<diskid>-01` or the partition GUID).
    pub partuuid: String,
    /// GPT partition name (empty for MBR).
    pub name: String,
}

impl Partition {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// A validated partition table: no overlaps, nothing past the end of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionTable {
    /// The scheme and its disk identifier.
    pub scheme: Scheme,
    /// Partitions in table order.
    pub partitions: Vec<Partition>,
}

impl PartitionTable {
    /// The first FAT-typed partition (the Raspberry Pi boot partition).
    pub fn boot(&self) -> Option<&Partition> {
        self.partitions
            .iter()
            .find(|p| p.kind == PartitionKind::Fat)
    }

    /// The first Linux-typed partition after the boot partition (the root).
    pub fn root(&self) -> Option<&Partition> {
        let after = self.boot().map(|b| b.index).unwrap_or(0);
        self.partitions
            .iter()
            .find(|p| p.kind == PartitionKind::Linux && p.index > after)
            .or_else(|| {
                self.partitions
                    .iter()
                    .find(|p| p.kind == PartitionKind::Linux)
            })
    }

    /// Checks that every partition is non-empty, lies inside `image_size` bytes and
    /// overlaps no other; returns what is wrong otherwise.
    pub fn check(&self, image_size: u64) -> Result<(), String> {
        for p in &self.partitions {
            if p.size == 0 {
                return Err(format!("partition {} has size 0", p.index));
            }
            if p.end() > image_size {
                return Err(format!(
                    "partition {} ends at byte {} but the image is only {} bytes \
                     (truncated download or copy?)",
                    p.index,
                    p.end(),
                    image_size
                ));
            }
        }
        let mut sorted: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| p.kind != PartitionKind::Extended)
            .collect();
        sorted.sort_by_key(|p| p.start);
        for pair in sorted.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.start < a.end() {
                return Err(format!(
                    "partitions {} (bytes {}..{}) and {} (bytes {}..{}) overlap",
                    a.index,
                    a.start,
                    a.end(),
                    b.index,
                    b.start,
                    b.end()
                ));
            }
        }
        Ok(())
    }
}

/// The kind of an MBR partition type byte.
pub fn mbr_kind(code: u8) -> PartitionKind {
    match code {
        0x01 | 0x04 | 0x06 | 0x0b | 0x0c | 0x0e | 0xef => PartitionKind::Fat,
        0x83 => PartitionKind::Linux,
        0x05 | 0x0f | 0x85 => PartitionKind::Extended,
        _ => PartitionKind::Other,
    }
}

/// The kind of a GPT partition type GUID (uppercase or lowercase).
pub fn gpt_kind(type_guid: &str) -> PartitionKind {
    match type_guid.to_ascii_uppercase().as_str() {
        // Microsoft basic data, EFI system partition.
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7" | "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" => {
            PartitionKind::Fat
        }
        // Linux filesystem, Linux root (arm64), Linux root (x86-64), Linux root (arm).
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        | "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"
        | "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
        | "69DAD710-2CE4-4E3C-B16C-21A1D49ABED3" => PartitionKind::Linux,
        _ => PartitionKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(index: u32, start: u64, size: u64) -> Partition {
        Partition {
            index,
            start,
            size,
            kind: PartitionKind::Linux,
            type_code: "0x83".into(),
            partuuid: format!("x-{index:02}"),
            name: String::new(),
        }
    }

    fn table(parts: Vec<Partition>) -> PartitionTable {
        PartitionTable {
            scheme: Scheme::Mbr { disk_id: 1 },
            partitions: parts,
        }
    }

    #[test]
    fn adjacent_partitions_pass() {
        let t = table(vec![part(1, 512, 1024), part(2, 1536, 512)]);
        assert_eq!(t.check(2048), Ok(()));
    }

    #[test]
    fn overlap_is_named() {
        let t = table(vec![part(1, 512, 1024), part(2, 1024, 512)]);
        let err = t.check(4096).unwrap_err();
        assert!(
            err.contains("partitions 1 (bytes 512..1536) and 2"),
            "{err}"
        );
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn past_the_end_is_named() {
        let t = table(vec![part(1, 512, 1024)]);
        let err = t.check(1000).unwrap_err();
        assert!(err.contains("partition 1 ends at byte 1536"), "{err}");
        assert!(err.contains("only 1000 bytes"), "{err}");
    }

    #[test]
    fn kinds_from_codes() {
        assert_eq!(mbr_kind(0x0c), PartitionKind::Fat);
        assert_eq!(mbr_kind(0x83), PartitionKind::Linux);
        assert_eq!(mbr_kind(0x07), PartitionKind::Other);
        assert_eq!(
            gpt_kind("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"),
            PartitionKind::Fat
        );
        assert_eq!(
            gpt_kind("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            PartitionKind::Linux
        );
    }
}
