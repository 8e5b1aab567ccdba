//! Which bytes of a FAT12/16/32 file system matter: the reserved sectors (boot sector,
//! FSInfo, backup boot sector), every FAT copy in full, the FAT12/16 root directory
//! region and every allocated cluster (FAT entry != 0). Free clusters are don't-care:
//! no FAT driver reads a cluster its FAT marks free.
//!
//! Geometry and type determination follow Microsoft's "FAT: General Overview of
//! On-Disk Format" (the rules dosfstools' `fsck.fat` and Linux `fs/fat/inode.c`
//! `fat_fill_super` apply: the type is decided by the cluster count alone).

use super::disk::{Disk, Verdict};
use super::ranges::Ranges;
use crate::image::ImageError;
use crate::image::fat_table;

/// A FAT larger than this is not a boot partition piimg maps: take it whole.
const MAX_FAT_BYTES: u64 = 256 << 20;

/// The BPB fields the map needs.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved_sectors: u64,
    fats: u64,
    fat_sectors: u64,
    root_dir_sectors: u64,
    clusters: u64,
    bits: u8,
}

impl Geometry {
    fn data_start(&self) -> u64 {
        (self.reserved_sectors + self.fats * self.fat_sectors + self.root_dir_sectors)
            * self.bytes_per_sector
    }

    fn cluster_bytes(&self) -> u64 {
        self.sectors_per_cluster * self.bytes_per_sector
    }
}

/// True when `sector0` looks like a FAT boot sector (jump instruction, sane BPB,
/// 0x55AA): the test `fs/fat/inode.c` and blkid make before trusting a BPB.
pub(super) fn looks_like_fat(sector0: &[u8]) -> bool {
    sector0.len() >= 512
        && sector0[510] == 0x55
        && sector0[511] == 0xAA
        && matches!(sector0[0], 0xEB | 0xE9)
        && parse(sector0, u64::MAX).is_ok()
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// The geometry of the BPB in `b` for a partition of `part_size` bytes, or why it is
/// not one piimg understands.
fn parse(b: &[u8], part_size: u64) -> Result<Geometry, String> {
    let bytes_per_sector = le16(b, 0x0B);
    if !matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096) {
        return Err(format!("bytes per sector {bytes_per_sector} (offset 0x0B)"));
    }
    let sectors_per_cluster = u64::from(b[0x0D]);
    if sectors_per_cluster == 0 || !sectors_per_cluster.is_power_of_two() {
        return Err(format!(
            "sectors per cluster {sectors_per_cluster} (offset 0x0D)"
        ));
    }
    let reserved_sectors = le16(b, 0x0E);
    if reserved_sectors == 0 {
        return Err("0 reserved sectors (offset 0x0E)".into());
    }
    let fats = u64::from(b[0x10]);
    if fats == 0 || fats > 4 {
        return Err(format!("{fats} FAT copies (offset 0x10)"));
    }
    let root_entries = le16(b, 0x11);
    let total_sectors = match le16(b, 0x13) {
        0 => le32(b, 0x20),
        n => n,
    };
    let fat_sectors = match le16(b, 0x16) {
        0 => le32(b, 0x24),
        n => n,
    };
    if fat_sectors == 0 || total_sectors == 0 {
        return Err("FAT size or total sectors is 0".into());
    }
    let root_dir_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let meta = reserved_sectors + fats * fat_sectors + root_dir_sectors;
    if meta >= total_sectors {
        return Err(format!(
            "metadata ({meta} sectors) fills the whole file system ({total_sectors} sectors)"
        ));
    }
    if total_sectors.saturating_mul(bytes_per_sector) > part_size {
        return Err(format!(
            "the file system ({total_sectors} sectors of {bytes_per_sector} bytes) is larger \
             than its partition ({part_size} bytes)"
        ));
    }
    let clusters = (total_sectors - meta) / sectors_per_cluster;
    // FAT type by cluster count (upstream.toml [blockmap.fat]).
    let rules = &crate::upstream::facts().blockmap.fat;
    let bits = if clusters <= rules.fat12_max_clusters {
        12
    } else if clusters <= rules.fat16_max_clusters {
        16
    } else {
        32
    };
    if bits == 32 && root_entries != 0 {
        return Err(format!(
            "FAT32 with {root_entries} root entries (offset 0x11)"
        ));
    }
    if bits != 32 && root_entries == 0 {
        return Err(format!("FAT{bits} without a root directory (offset 0x11)"));
    }
    // The FAT must have an entry for every cluster (plus the two reserved ones).
    let needed = ((clusters + 2) * u64::from(bits)).div_ceil(8);
    if fat_sectors * bytes_per_sector < needed {
        return Err(format!(
            "a FAT of {} bytes cannot hold {} clusters",
            fat_sectors * bytes_per_sector,
            clusters
        ));
    }
    Ok(Geometry {
        bytes_per_sector,
        sectors_per_cluster,
        reserved_sectors,
        fats,
        fat_sectors,
        root_dir_sectors,
        clusters,
        bits,
    })
}

/// Entry `n` of a FAT with `bits`-bit entries (FAT32 uses the low 28 bits).
fn entry(fat: &[u8], bits: u8, n: u64) -> u32 {
    let n = n as usize;
    match bits {
        12 => {
            let at = n + n / 2;
            let v = u16::from_le_bytes([fat[at], fat[at + 1]]);
            u32::from(if n % 2 == 0 { v & 0x0FFF } else { v >> 4 })
        }
        16 => u32::from(u16::from_le_bytes([fat[2 * n], fat[2 * n + 1]])),
        _ => {
            u32::from_le_bytes([fat[4 * n], fat[4 * n + 1], fat[4 * n + 2], fat[4 * n + 3]])
                & 0x0FFF_FFFF
        }
    }
}

/// The bytes of the FAT file system at `start` (`size` bytes) that matter.
pub(super) fn used(disk: &Disk<'_>, start: u64, size: u64) -> Result<Verdict, ImageError> {
    let mut sector0 = [0u8; 512];
    disk.read(start, &mut sector0, "reading the FAT boot sector")?;
    let g = match parse(&sector0, size) {
        Ok(g) => g,
        Err(reason) => return Ok(Verdict::Whole(format!("FAT boot sector: {reason}"))),
    };
    let fat_bytes = g.fat_sectors * g.bytes_per_sector;
    if fat_bytes > MAX_FAT_BYTES {
        return Ok(Verdict::Whole(format!("a FAT of {fat_bytes} bytes")));
    }
    let mut r = Ranges::new();
    // Reserved sectors, every FAT copy and the FAT12/16 root directory: one run.
    r.add_len(start, g.data_start());
    // A cluster is allocated when any FAT copy says so (the copies normally agree;
    // FAT32 may disable mirroring, and a union never maps less). Only the parts of a
    // copy the file holds are scanned (fat_table: holes read as zeros, free entries);
    // 8 entries take `bits` bytes, so parts aligned to `bits` split no entry.
    let needed = ((g.clusters + 2) * u64::from(g.bits)).div_ceil(8);
    let data = start + g.data_start();
    let cb = g.cluster_bytes();
    let bits = u64::from(g.bits);
    for copy in 0..g.fats {
        let at = start + (g.reserved_sectors + copy * g.fat_sectors) * g.bytes_per_sector;
        fat_table::for_each_nonzero_part(disk.file, at, needed, bits, |off, bytes| {
            let first = off * 8 / bits;
            let count = bytes.len() as u64 * 8 / bits;
            for n in first.max(2)..(first + count).min(g.clusters + 2) {
                if entry(bytes, g.bits, n - first) != 0 {
                    r.add_len(data + (n - 2) * cb, cb);
                }
            }
        })
        .map_err(|e| disk.error(at, "reading a FAT", e))?;
    }
    Ok(Verdict::Fat {
        bits: g.bits,
        ranges: r,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpb(
        bps: u16,
        spc: u8,
        reserved: u16,
        fats: u8,
        root: u16,
        total: u32,
        fatsz: u32,
    ) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        b[0] = 0xEB;
        b[0x0B..0x0D].copy_from_slice(&bps.to_le_bytes());
        b[0x0D] = spc;
        b[0x0E..0x10].copy_from_slice(&reserved.to_le_bytes());
        b[0x10] = fats;
        b[0x11..0x13].copy_from_slice(&root.to_le_bytes());
        b[0x20..0x24].copy_from_slice(&total.to_le_bytes());
        if root == 0 {
            b[0x24..0x28].copy_from_slice(&fatsz.to_le_bytes());
        } else {
            b[0x16..0x18].copy_from_slice(&(fatsz as u16).to_le_bytes());
        }
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }

    #[test]
    fn fat_type_follows_the_cluster_count() {
        let g = parse(&bpb(512, 4, 32, 2, 0, 1_048_576, 2048), u64::MAX).unwrap();
        assert_eq!(g.bits, 32);
        let g = parse(&bpb(512, 4, 1, 2, 512, 65_536, 64), u64::MAX).unwrap();
        assert_eq!(g.bits, 16);
        let g = parse(&bpb(512, 4, 1, 2, 512, 8192, 6), u64::MAX).unwrap();
        assert_eq!(g.bits, 12);
    }

    #[test]
    fn odd_geometry_is_refused_with_the_field() {
        let e = parse(&bpb(500, 4, 32, 2, 0, 1_048_576, 2048), u64::MAX).unwrap_err();
        assert!(e.contains("0x0B"), "{e}");
        let e = parse(&bpb(512, 3, 32, 2, 0, 1_048_576, 2048), u64::MAX).unwrap_err();
        assert!(e.contains("0x0D"), "{e}");
        let e = parse(&bpb(512, 4, 32, 2, 0, 1_048_576, 2), u64::MAX).unwrap_err();
        assert!(e.contains("cannot hold"), "{e}");
        let e = parse(&bpb(512, 4, 32, 2, 0, 1_048_576, 2048), 1 << 20).unwrap_err();
        assert!(e.contains("larger than its partition"), "{e}");
    }

    #[test]
    fn fat12_entries_unpack() {
        // Entries 0..4 = 0xFF8, 0xFFF, 0x003, 0x000 packed in 6 bytes.
        let fat = [0xF8, 0xFF, 0xFF, 0x03, 0x00, 0x00, 0];
        assert_eq!(entry(&fat, 12, 0), 0xFF8);
        assert_eq!(entry(&fat, 12, 1), 0xFFF);
        assert_eq!(entry(&fat, 12, 2), 0x003);
        assert_eq!(entry(&fat, 12, 3), 0x000);
    }
}
