//! Checks of a base image before anything is built from it, each problem named for
//! what it is: a boot partition the MBR types as Linux, a cmdline.txt whose
//! `root=PARTUUID=` names no partition of this disk, damaged FAT tables (reserved
//! entries, the cluster chains of the files a card edits), FAT copies that differ.
//!
//! Without these, a broken base gives a message about something else, or a card
//! that does not boot. `build` refuses the first problem ([`check`]); `inspect`
//! shows every one as a warning ([`findings`]).
//!
//! FAT32 layout: Microsoft "FAT: General Overview of On-Disk Format" 1.03 (entry 0
//! holds the media byte in its low 8 bits, the rest set; entry 1 an end-of-chain mark
//! whose bits 27/26 are the clean-shutdown/no-error flags); the Linux driver
//! (fs/fat/fatent.c) and dosfstools' fsck.fat check the same.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;

use super::Image;
use super::error::ImageError;
use super::fat_raw::Geometry;
use super::fat_table::{self, LazyFat};
pub use super::problem::Problem;
use super::table::{Partition, PartitionKind, Scheme};

/// FAT32 entries use the low 28 bits.
const FAT32_MASK: u32 = 0x0fff_ffff;
/// Entry values at or above this end a chain.
const FAT32_EOC: u32 = 0x0fff_fff8;
/// The bad-cluster mark.
const FAT32_BAD: u32 = 0x0fff_fff7;
/// FAT[1]'s clean-shutdown and no-hard-error flags (ignored when checking it).
const FAT32_FLAGS: u32 = 0x0c00_0000;
/// GPT's "Microsoft basic data" type, what Raspberry Pi GPT images give the boot partition.
const GPT_BASIC_DATA: &str = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7";
/// The files every card reads and rewrites in the root directory (8.3 names).
const CARD_FILES: [(&str, &[u8; 11]); 2] = [
    ("cmdline.txt", b"CMDLINE TXT"),
    ("config.txt", b"CONFIG  TXT"),
];

/// Refuses `image` as a base on its first problem (see [`findings`]).
pub fn check(image: &Image) -> Result<(), ImageError> {
    match findings(image).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Every problem of `image` as a base, in the order: partition types, FAT tables,
/// cmdline.txt (read only from a FAT that passed). Parts that cannot be read at all
/// are left to the readers that need them (they name their own errors).
pub fn findings(image: &Image) -> Vec<ImageError> {
    let wrap = |problem: Problem| ImageError::Sanity {
        image: image.path().to_path_buf(),
        problem,
    };
    let mut out: Vec<ImageError> = Vec::new();
    for p in &image.table().partitions {
        if p.kind == PartitionKind::Fat || p.kind == PartitionKind::Extended {
            continue;
        }
        if holds_fat(image, p) {
            out.push(wrap(Problem::BootNotTypedFat {
                index: p.index,
                offset: p.start,
                type_code: p.type_code.clone(),
                fat_type: match image.table().scheme {
                    Scheme::Mbr { .. } => "c",
                    Scheme::Gpt { .. } => GPT_BASIC_DATA,
                },
            }));
        }
    }
    let Ok(boot) = image.boot_partition() else {
        return out;
    };
    match fat_problems(image, boot) {
        Ok(problems) => out.extend(problems.into_iter().map(wrap)),
        Err(e) => out.push(e),
    }
    if out.is_empty() {
        out.extend(cmdline_problem(image, boot).map(wrap));
    }
    out
}

/// True when partition `p` starts with a FAT boot sector.
fn holds_fat(image: &Image, p: &Partition) -> bool {
    let mut bs = [0u8; 512];
    if image.file.read_exact_at(&mut bs, p.start).is_err() {
        return false;
    }
    let named = &bs[82..87] == b"FAT32" || &bs[54..57] == b"FAT";
    named && Geometry::parse(&bs, p.size).is_ok()
}

/// The FAT problems of the boot partition; `Ok(empty)` also when it is not FAT32
/// (fatfs then names the problem when the partition is opened).
fn fat_problems(image: &Image, boot: &Partition) -> Result<Vec<Problem>, ImageError> {
    let read = |off: u64, buf: &mut [u8]| {
        image
            .file
            .read_exact_at(buf, boot.start + off)
            .map_err(|e| ImageError::io(image.path(), "reading the boot partition's FAT", e))
    };
    let mut bs = [0u8; 512];
    read(0, &mut bs)?;
    let Ok(geo) = Geometry::parse(&bs, boot.size) else {
        return Ok(Vec::new());
    };
    if !geo.is_fat32() {
        return Ok(Vec::new());
    }
    let (index, offset) = (boot.index, boot.start);
    let media = bs[21];
    let fat_len = geo.fat_sectors * geo.bytes_per_sector;
    let fat_at = |n: u64| boot.start + geo.reserved_sectors * geo.bytes_per_sector + n * fat_len;
    let fat_err = |e| ImageError::io(image.path(), "reading the boot partition's FAT", e);
    // FAT 1 is read only where a chain goes; the copies are compared where they hold
    // data (fat_table: holes read as zeros).
    let mut first = LazyFat::new(&image.file, fat_at(0), fat_len);
    let mut problems = Vec::new();
    let entry = |fat: &mut LazyFat<'_>, n: u64| -> Result<u32, ImageError> {
        Ok(fat.u32_at(n * 4).map_err(fat_err)? & FAT32_MASK)
    };
    let reserved = |fat_no: u64,
                    fat: &mut LazyFat<'_>,
                    problems: &mut Vec<Problem>|
     -> Result<(), ImageError> {
        let e0 = entry(fat, 0)?;
        let want0 = 0x0fff_ff00 | u32::from(media);
        if e0 != want0 {
            problems.push(Problem::FatReservedEntry {
                index,
                offset,
                fat: fat_no,
                entry: 0,
                found: e0,
                expected: want0,
                what: format!("the boot sector's media byte 0x{media:02x}, all other bits set"),
            });
        }
        let e1 = entry(fat, 1)?;
        if e1 | FAT32_FLAGS < FAT32_EOC {
            problems.push(Problem::FatReservedEntry {
                index,
                offset,
                fat: fat_no,
                entry: 1,
                found: e1,
                expected: FAT32_MASK,
                what: "an end-of-chain mark".into(),
            });
        }
        Ok(())
    };
    reserved(1, &mut first, &mut problems)?;
    for n in 2..=geo.fats {
        let differs = fat_table::first_difference(&image.file, fat_at(0), fat_at(n - 1), fat_len)
            .map_err(fat_err)?;
        if let Some(byte) = differs {
            reserved(
                n,
                &mut LazyFat::new(&image.file, fat_at(n - 1), fat_len),
                &mut problems,
            )?;
            problems.push(Problem::FatsDiffer {
                index,
                offset,
                other: n,
                byte,
                cluster: byte / 4,
            });
        }
    }
    // The chains a card needs: the root directory's, and those of the files it edits.
    let clusters = geo.clusters();
    let cluster_size = geo.cluster_size();
    let data_start = (geo.reserved_sectors + geo.fats * geo.fat_sectors) * geo.bytes_per_sector;
    let mut chain = |first_cluster: u32| -> Result<Result<Vec<u32>, String>, ImageError> {
        let mut out = Vec::new();
        // A loop is found where it closes, not after walking it a million times.
        let mut seen = HashSet::new();
        let mut c = first_cluster;
        loop {
            if c < 2 || u64::from(c) >= clusters + 2 {
                return Ok(Err(format!(
                    "cluster {c} is out of range (the file system has clusters 2..{})",
                    clusters + 2
                )));
            }
            out.push(c);
            if !seen.insert(c) {
                return Ok(Err(format!("the chain loops (through cluster {c})")));
            }
            let next = entry(&mut first, u64::from(c))?;
            match next {
                0 => {
                    return Ok(Err(format!(
                        "cluster {c} is marked free but the chain goes on"
                    )));
                }
                FAT32_BAD => return Ok(Err(format!("cluster {c} leads to a bad-cluster mark"))),
                n if n >= FAT32_EOC => return Ok(Ok(out)),
                n => c = n,
            }
        }
    };
    let root_chain = match chain(geo.root_cluster)? {
        Ok(c) => c,
        Err(reason) => {
            problems.push(Problem::FatChain {
                index,
                offset,
                file: "the root directory".into(),
                reason,
            });
            return Ok(problems);
        }
    };
    let mut dir = vec![0u8; cluster_size as usize];
    let mut entries: Vec<[u8; 32]> = Vec::new();
    'dir: for c in &root_chain {
        read(data_start + (u64::from(*c) - 2) * cluster_size, &mut dir)?;
        for e in dir.chunks_exact(32) {
            if e[0] == 0 {
                break 'dir;
            }
            let mut a = [0u8; 32];
            a.copy_from_slice(e);
            entries.push(a);
        }
    }
    for (name, short) in CARD_FILES {
        let Some(e) = entries
            .iter()
            .find(|e| e[0] != 0xe5 && e[11] & 0x18 == 0 && &e[..11] == short)
        else {
            continue;
        };
        let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
        let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
        let size = u64::from(u32::from_le_bytes([e[28], e[29], e[30], e[31]]));
        let start = hi << 16 | lo;
        if size == 0 && start == 0 {
            continue;
        }
        let reason = match chain(start)? {
            Err(r) => Some(r),
            Ok(c) if c.len() as u64 != size.div_ceil(cluster_size) => Some(format!(
                "it has {} cluster(s) but its {size} bytes need {}",
                c.len(),
                size.div_ceil(cluster_size)
            )),
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            problems.push(Problem::FatChain {
                index,
                offset,
                file: name.to_string(),
                reason,
            });
        }
    }
    Ok(problems)
}

/// The problem with cmdline.txt's `root=`, if any.
fn cmdline_problem(image: &Image, boot: &Partition) -> Option<Problem> {
    let (index, offset) = (boot.index, boot.start);
    let fs = image.boot().ok()?;
    let text = match fs.read("cmdline.txt") {
        Ok(Some(t)) => String::from_utf8_lossy(&t).into_owned(),
        Ok(None) => {
            return Some(Problem::Cmdline {
                index,
                offset,
                what: "has no cmdline.txt".into(),
            });
        }
        Err(_) => return None,
    };
    let Some(root) = text
        .split_whitespace()
        .find_map(|a| a.strip_prefix("root="))
    else {
        return Some(Problem::Cmdline {
            index,
            offset,
            what: "has a cmdline.txt without a root= argument".into(),
        });
    };
    let partuuid = root.strip_prefix("PARTUUID=")?.to_ascii_lowercase();
    let table = image.table();
    let named = table
        .partitions
        .iter()
        .find(|p| p.partuuid.eq_ignore_ascii_case(&partuuid));
    let root_part = table.root();
    match (named, root_part) {
        (None, _) => Some(Problem::RootPartuuidElsewhere {
            partuuid,
            disk: match &table.scheme {
                Scheme::Mbr { disk_id } => format!("{disk_id:08x}"),
                Scheme::Gpt { disk_guid } => disk_guid.clone(),
            },
            partuuids: table
                .partitions
                .iter()
                .map(|p| p.partuuid.clone())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        (Some(p), Some(r)) if p.index != r.index => Some(Problem::RootPartuuidNotRoot {
            partuuid,
            index: p.index,
            offset: p.start,
            root_index: r.index,
            root_partuuid: r.partuuid.clone(),
        }),
        _ => None,
    }
}
