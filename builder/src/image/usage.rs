//! Which bytes of a disk image matter: the block map derived from the file systems
//! (partition tables, FAT metadata and allocated clusters, ext4 metadata and
//! allocated blocks), never from the file's holes. A hole is a property of how the
//! file was copied (`cp --sparse=always`, `xz -d`, tmpfs), not of the data: zero-filled
//! metadata (free parts of a FAT, a journal superblock, zeroed inode tables) must
//! still reach a card that held something else before.

mod disk;
mod ext4;
mod fat;
mod ranges;

use serde::Serialize;

use super::{Image, ImageError, PartitionKind};
use disk::{Disk, Verdict};
use ranges::Ranges;

/// Byte ranges `[start, end)` of `image` whose contents a card must hold for every
/// file system on it to be exactly the image's, sorted, disjoint and merged. Bytes
/// outside them are don't-care: a card may keep whatever it held before there.
pub fn used_ranges(image: &Image) -> Result<Vec<(u64, u64)>, ImageError> {
    Ok(usage(image)?.ranges)
}

/// The block map of an image with how each partition was mapped.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// What [`used_ranges`] returns.
    pub ranges: Vec<(u64, u64)>,
    /// One entry per partition, in table order.
    pub partitions: Vec<PartitionUsage>,
}

impl Usage {
    /// Bytes the ranges cover.
    pub fn used_bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }
}

/// How one partition's bytes were mapped.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionUsage {
    /// 1-based partition number.
    pub index: u32,
    /// What decided its map.
    pub mapping: Mapping,
    /// Bytes of the partition the map keeps.
    pub used_bytes: u64,
}

/// What a partition's map was derived from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Mapping {
    /// A FAT file system of `bits` (12, 16 or 32) bit entries.
    Fat {
        /// FAT entry width.
        bits: u8,
    },
    /// An ext2/3/4 file system.
    Ext4,
    /// The whole partition, because piimg does not fully understand it.
    Whole {
        /// Why (unknown contents, an unsupported feature, a damaged structure).
        reason: String,
    },
}

/// The block map of `image`: everything outside partitions, and per partition what
/// its file system needs (the whole partition when it is not one piimg knows).
pub fn usage(image: &Image) -> Result<Usage, ImageError> {
    let disk = Disk {
        file: &image.file,
        path: &image.path,
        size: image.size,
    };
    let mut all = Ranges::new();
    // Everything outside partitions: tables, gaps, the backup GPT.
    let mut parts: Vec<(u64, u64)> = image
        .table
        .partitions
        .iter()
        .map(|p| (p.start, p.end().min(image.size)))
        .collect();
    parts.sort_unstable();
    let mut pos = 0;
    for &(s, e) in &parts {
        all.add(pos, s.max(pos));
        pos = pos.max(e);
    }
    all.add(pos, image.size);

    let mut partitions = Vec::new();
    for p in &image.table.partitions {
        let size = p.end().min(image.size) - p.start;
        let verdict = if p.kind == PartitionKind::Extended {
            Verdict::Whole("an extended-partition container".into())
        } else {
            sniff_and_map(&disk, p.start, size)?
        };
        let (mapping, ranges) = match verdict {
            Verdict::Fat { bits, ranges } => (Mapping::Fat { bits }, ranges),
            Verdict::Ext4 { ranges } => (Mapping::Ext4, ranges),
            Verdict::Whole(reason) => {
                let mut r = Ranges::new();
                r.add_len(p.start, size);
                (Mapping::Whole { reason }, r)
            }
        };
        let ranges = ranges.merged();
        let used_bytes = ranges.iter().map(|(s, e)| e - s).sum();
        for (s, e) in ranges {
            // A reader bug must never map bytes of a neighbour: clamp to the partition.
            all.add(s.max(p.start), e.min(p.start + size));
        }
        partitions.push(PartitionUsage {
            index: p.index,
            mapping,
            used_bytes,
        });
    }
    Ok(Usage {
        ranges: all.merged(),
        partitions,
    })
}

/// Recognises the file system at `start` by its own signature (not the type code,
/// which may lie) and maps it.
fn sniff_and_map(disk: &Disk<'_>, start: u64, size: u64) -> Result<Verdict, ImageError> {
    if size < 2048 {
        return Ok(Verdict::Whole(format!("only {size} bytes")));
    }
    let mut head = vec![0u8; 2048];
    disk.read(start, &mut head, "reading the start of a partition")?;
    if fat::looks_like_fat(&head[..512]) {
        fat::used(disk, start, size)
    } else if ext4::looks_like_ext(&head[1024..]) {
        ext4::used(disk, start, size)
    } else {
        Ok(Verdict::Whole(
            "no FAT or ext4 file system recognised".into(),
        ))
    }
}
