//! The little of FAT32's on-disk format piimg handles itself: checking a boot sector
//! before handing it to fatfs (garbage must give an error, not a panic), and repairing
//! the first cluster of a directory fatfs 0.3.6 just created.
//!
//! fatfs 0.3.6 `create_dir` writes long-name entries before `.` and `..` and points
//! `..` at the root's cluster number instead of 0; `fsck.vfat` flags both and
//! Raspberry Pi OS fscks the boot partition at boot. [`fix_new_dir`] rewrites the new
//! directory's cluster so it starts with correct `.` and `..` entries, as mkfs/mtools
//! and the Linux driver write them.

use std::io;
use std::sync::{Arc, Mutex};

use super::fat_damage::damage;
use super::fat_time::Timestamp;
use super::window::Overlay;

/// Most entries one FAT directory may hold (Microsoft's FAT specification: "a
/// directory may not be larger than 65 536 32-byte entries"; Linux's vfat driver,
/// fs/fat/fat.h `FAT_MAX_DIR_ENTRIES`, enforces the same).
pub(crate) const MAX_DIR_ENTRIES: usize = 65_536;

/// Size of one directory entry.
const ENTRY: usize = 32;
const ATTR_DIRECTORY: u8 = 0x10;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_LFN: u8 = 0x0f;

/// The layout numbers of a FAT file system, from its boot sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per sector.
    pub bytes_per_sector: u64,
    /// Sectors per cluster.
    pub sectors_per_cluster: u64,
    /// Reserved sectors before the first FAT.
    pub reserved_sectors: u64,
    /// Number of FATs.
    pub fats: u64,
    /// Sectors per FAT.
    pub fat_sectors: u64,
    /// Sectors in the volume.
    pub total_sectors: u64,
    /// Root directory entries (0 on FAT32).
    pub root_entries: u64,
    /// First cluster of the root directory (FAT32).
    pub root_cluster: u32,
}

impl Geometry {
    /// Parses and sanity-checks a boot sector of a partition `partition_size` bytes long.
    pub fn parse(bs: &[u8], partition_size: u64) -> Result<Self, String> {
        if bs.len() < 512 {
            return Err("the partition is smaller than one sector".into());
        }
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
        let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
        if bs[510] != 0x55 || bs[511] != 0xaa {
            return Err("no boot sector signature 0x55AA at bytes 510..512".into());
        }
        let bytes_per_sector = u16_at(11);
        if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
            return Err(format!("bytes per sector is {bytes_per_sector}"));
        }
        let sectors_per_cluster = u64::from(bs[13]);
        if !sectors_per_cluster.is_power_of_two() {
            return Err(format!("sectors per cluster is {sectors_per_cluster}"));
        }
        let reserved_sectors = u16_at(14);
        let fats = u64::from(bs[16]);
        if reserved_sectors == 0 || fats == 0 || fats > 4 {
            return Err(format!(
                "{reserved_sectors} reserved sectors and {fats} FATs"
            ));
        }
        let root_entries = u16_at(17);
        let total_sectors = match u16_at(19) {
            0 => u64::from(u32_at(32)),
            n => n,
        };
        let fat_sectors = match u16_at(22) {
            0 => u64::from(u32_at(36)),
            n => n,
        };
        if total_sectors == 0 || fat_sectors == 0 {
            return Err("the sector or FAT size is 0".into());
        }
        if total_sectors * bytes_per_sector > partition_size {
            return Err(format!(
                "the file system says it is {} bytes but the partition is {partition_size}",
                total_sectors * bytes_per_sector
            ));
        }
        let geo = Self {
            bytes_per_sector,
            sectors_per_cluster,
            reserved_sectors,
            fats,
            fat_sectors,
            total_sectors,
            root_entries,
            root_cluster: u32_at(44),
        };
        if geo.first_data_sector() >= total_sectors {
            return Err("the FATs fill the whole volume".into());
        }
        Ok(geo)
    }

    /// Bits per FAT entry: 12, 16 or 32 (by cluster count, as the specification
    /// defines the type).
    pub fn fat_bits(&self) -> u32 {
        match self.clusters() {
            c if c < 4085 => 12,
            c if c < 65_525 => 16,
            _ => 32,
        }
    }

    /// Bytes per cluster.
    pub fn cluster_size(&self) -> u64 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    fn root_dir_sectors(&self) -> u64 {
        (self.root_entries * ENTRY as u64).div_ceil(self.bytes_per_sector)
    }

    fn first_data_sector(&self) -> u64 {
        self.reserved_sectors + self.fats * self.fat_sectors + self.root_dir_sectors()
    }

    /// Number of data clusters.
    pub fn clusters(&self) -> u64 {
        (self.total_sectors - self.first_data_sector()) / self.sectors_per_cluster
    }

    /// True for FAT32 (by cluster count, as the specification defines it).
    pub fn is_fat32(&self) -> bool {
        self.clusters() >= 65_525
    }

    /// Byte offset (from the partition start) of `cluster`.
    fn cluster_offset(&self, cluster: u32) -> u64 {
        (self.first_data_sector() + (u64::from(cluster) - 2) * self.sectors_per_cluster)
            * self.bytes_per_sector
    }
}

/// One short-name entry of a directory, as [`RawFat::dir_entries`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEntry {
    /// The 11-byte 8.3 name as stored.
    pub short: [u8; 11],
    /// The attribute byte.
    pub attr: u8,
    /// The first cluster (0 for an empty file, or for `..` pointing at the root).
    pub cluster: u32,
}

impl RawEntry {
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.attr & ATTR_DIRECTORY != 0
    }
}

/// Raw access to one FAT partition through the overlay (writing: FAT32 only).
pub struct RawFat<'a> {
    overlay: &'a Arc<Mutex<Overlay>>,
    start: u64,
    geo: Geometry,
}

impl<'a> RawFat<'a> {
    /// Raw access to the partition at byte `start` with layout `geo`.
    pub fn new(overlay: &'a Arc<Mutex<Overlay>>, start: u64, geo: Geometry) -> Self {
        Self {
            overlay,
            start,
            geo,
        }
    }

    /// Free clusters of a FAT32 volume: FAT 1's entries for clusters 2.. whose low 28
    /// bits are 0, as this view reads them (staged changes included). Only the parts
    /// of the table that may hold data are looked at (a free entry is zeros, a hole
    /// of a sparse image), 64 bytes compared at a time. An error when the table is too
    /// short for the volume's clusters.
    pub fn free_clusters(&self) -> io::Result<u64> {
        let clusters = self.geo.clusters();
        let fat_len = self.geo.fat_sectors * self.geo.bytes_per_sector;
        let needed = (clusters + 2) * 4;
        if needed > fat_len {
            return Err(io::Error::other(format!(
                "a FAT of {fat_len} bytes cannot hold the entries of {clusters} clusters"
            )));
        }
        let fat = self.start + self.geo.reserved_sectors * self.geo.bytes_per_sector;
        let mut used = 0u64;
        let mut ov = self
            .overlay
            .lock()
            .map_err(|_| io::Error::other("image cache lock poisoned"))?;
        ov.for_each_nonzero_block(fat, fat + needed, |pos, bytes| {
            // Blocks start at multiples of 64 KiB and the FAT at a sector: whole entries.
            let first = (pos - fat) / 4;
            for (i, group) in bytes.chunks(64).enumerate() {
                if group == &[0u8; 64][..group.len()] {
                    continue;
                }
                for (j, e) in group.chunks_exact(4).enumerate() {
                    let n = first + (i * 16 + j) as u64;
                    if n >= 2 && u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & 0x0fff_ffff != 0 {
                        used += 1;
                    }
                }
            }
        })?;
        Ok(clusters.saturating_sub(used))
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut ov = self
            .overlay
            .lock()
            .map_err(|_| io::Error::other("image cache lock poisoned"))?;
        let n = ov.read_at(self.start + offset, buf)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "FAT structure runs past the end of the image",
            ));
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        let mut ov = self
            .overlay
            .lock()
            .map_err(|_| io::Error::other("image cache lock poisoned"))?;
        ov.write_at(self.start + offset, buf).map(|_| ())
    }

    fn check_cluster(&self, cluster: u32) -> io::Result<()> {
        if cluster < 2 || u64::from(cluster) >= self.geo.clusters() + 2 {
            return Err(damage(format!(
                "cluster number {cluster} is out of range (the volume has clusters 2..{})",
                self.geo.clusters() + 2
            )));
        }
        Ok(())
    }

    /// What identifies a directory: its first cluster, the root's one for the root (0
    /// on FAT12/16, whose root directory is no cluster). An entry pointing at cluster 0
    /// means the root, as `..` of the root's children does.
    pub fn dir_key(&self, cluster: u32) -> u32 {
        if cluster == 0 {
            self.root_key()
        } else {
            cluster
        }
    }

    /// The root directory's [`Self::dir_key`].
    pub fn root_key(&self) -> u32 {
        if self.geo.is_fat32() {
            self.geo.root_cluster
        } else {
            0
        }
    }

    /// The clusters of the chain starting at `first` (FAT12, FAT16 or FAT32), checked
    /// cluster by cluster: a number outside the volume, a free or bad-cluster mark and a
    /// loop are [`super::fat_damage::Damage`] errors, so the result is never longer than the volume.
    pub fn chain(&self, first: u32) -> io::Result<Vec<u32>> {
        let mut out = Vec::new();
        // A loop is found where it closes, not after walking it a million times.
        let mut seen = std::collections::HashSet::new();
        let mut c = first;
        loop {
            self.check_cluster(c)?;
            out.push(c);
            if !seen.insert(c) {
                return Err(damage(format!(
                    "a cluster chain loops (through cluster {c})"
                )));
            }
            match self.next_cluster(c)? {
                None => return Ok(out),
                Some(0) => {
                    return Err(damage(format!(
                        "cluster {c} is in a cluster chain but marked free"
                    )));
                }
                Some(next) => c = next,
            }
        }
    }

    /// The FAT entry of cluster `c`: the next cluster, or `None` at an end-of-chain mark.
    fn next_cluster(&self, c: u32) -> io::Result<Option<u32>> {
        let fat = self.geo.reserved_sectors * self.geo.bytes_per_sector;
        let c64 = u64::from(c);
        let mut e = [0u8; 4];
        let (next, eoc) = match self.geo.fat_bits() {
            32 => {
                self.read(fat + c64 * 4, &mut e)?;
                (u32::from_le_bytes(e) & 0x0fff_ffff, 0x0fff_fff8)
            }
            16 => {
                self.read(fat + c64 * 2, &mut e[..2])?;
                (u32::from(u16::from_le_bytes([e[0], e[1]])), 0xfff8)
            }
            _ => {
                self.read(fat + c64 + c64 / 2, &mut e[..2])?;
                let v = u32::from(u16::from_le_bytes([e[0], e[1]]));
                (if c % 2 == 1 { v >> 4 } else { v & 0x0fff }, 0x0ff8)
            }
        };
        Ok((next < eoc).then_some(next))
    }

    /// The short-name entries of the directory starting at `dir_cluster` (0 or the
    /// root's cluster: the root directory) in on-disk order, up to its end mark;
    /// deleted, long-name and volume-label entries left out. A directory longer than
    /// [`MAX_DIR_ENTRIES`] slots, or whose chain is damaged, is a [`super::fat_damage::Damage`] error.
    pub fn dir_entries(&self, dir_cluster: u32) -> io::Result<Vec<RawEntry>> {
        let fixed_root = dir_cluster == 0 && !self.geo.is_fat32();
        let (areas, area_len): (Vec<u64>, u64) = if fixed_root {
            // FAT12/16: the root directory is a fixed area before the data clusters.
            let at = (self.geo.reserved_sectors + self.geo.fats * self.geo.fat_sectors)
                * self.geo.bytes_per_sector;
            (vec![at], self.geo.root_entries * ENTRY as u64)
        } else {
            let first = if dir_cluster == 0 {
                self.geo.root_cluster
            } else {
                dir_cluster
            };
            let chain = self.chain(first)?;
            let cs = self.geo.cluster_size();
            if chain.len() as u64 * cs > (MAX_DIR_ENTRIES * ENTRY) as u64 {
                return Err(damage(format!(
                    "a directory's cluster chain holds {} bytes, more than the {} a FAT \
                     directory may have ({MAX_DIR_ENTRIES} entries)",
                    chain.len() as u64 * cs,
                    MAX_DIR_ENTRIES * ENTRY
                )));
            }
            let areas = chain.iter().map(|&c| self.geo.cluster_offset(c)).collect();
            (areas, cs)
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; area_len as usize];
        for at in areas {
            self.read(at, &mut buf)?;
            for e in buf.chunks_exact(ENTRY) {
                match e[0] {
                    0x00 => return Ok(out),
                    0xe5 => continue,
                    _ => {}
                }
                let attr = e[11];
                if attr & ATTR_LFN == ATTR_LFN || attr & ATTR_VOLUME != 0 {
                    continue;
                }
                let hi = if self.geo.is_fat32() {
                    u32::from(u16::from_le_bytes([e[20], e[21]]))
                } else {
                    0
                };
                let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
                let mut short = [0u8; 11];
                short.copy_from_slice(&e[..11]);
                out.push(RawEntry {
                    short,
                    attr,
                    cluster: hi << 16 | lo,
                });
            }
        }
        Ok(out)
    }

    /// First cluster of the entry named `short` (11-byte 8.3 form) in the directory
    /// starting at `dir_cluster`.
    fn lookup(&self, dir_cluster: u32, short: &[u8; 11]) -> io::Result<Option<u32>> {
        Ok(self
            .dir_entries(dir_cluster)?
            .into_iter()
            .find(|e| &e.short == short)
            .map(|e| e.cluster))
    }

    /// First cluster of the directory at `path` (8.3 names from the root); the root
    /// itself for an empty path.
    pub fn dir_cluster(&self, path: &[[u8; 11]]) -> io::Result<u32> {
        let mut c = self.root_key();
        for (i, name) in path.iter().enumerate() {
            c = self.lookup(c, name)?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("directory component {} not found", i + 1),
                )
            })?;
        }
        Ok(c)
    }

    /// Rewrites the just-created, empty directory at `path` (8.3 names from the root) so
    /// its first cluster holds exactly `.` and `..` (cluster 0 when the parent is the
    /// root) stamped with `time`, and every other entry slot is free.
    pub fn fix_new_dir(&self, path: &[[u8; 11]], time: Timestamp) -> io::Result<()> {
        let Some((_, parent_path)) = path.split_last() else {
            return Err(io::Error::other("cannot rewrite the root directory"));
        };
        let parent = self.dir_cluster(parent_path)?;
        let own = self.dir_cluster(path)?;
        let dotdot = if parent_path.is_empty() { 0 } else { parent };
        let cs = self.geo.cluster_size() as usize;
        let chain = self.chain(own)?;
        let mut first = vec![0u8; cs];
        first[..ENTRY].copy_from_slice(&dot_entry(b".          ", own, time));
        first[ENTRY..2 * ENTRY].copy_from_slice(&dot_entry(b"..         ", dotdot, time));
        self.write(self.geo.cluster_offset(own), &first)?;
        let zero = vec![0u8; cs];
        for &c in &chain[1..] {
            self.write(self.geo.cluster_offset(c), &zero)?;
        }
        Ok(())
    }
}

/// A `.`/`..` directory entry pointing at `cluster`.
fn dot_entry(name: &[u8; 11], cluster: u32, time: Timestamp) -> [u8; ENTRY] {
    let (t, d) = time.dos_words();
    let mut e = [0u8; ENTRY];
    e[..11].copy_from_slice(name);
    e[11] = ATTR_DIRECTORY;
    e[14..16].copy_from_slice(&t.to_le_bytes());
    e[16..18].copy_from_slice(&d.to_le_bytes());
    e[18..20].copy_from_slice(&d.to_le_bytes());
    e[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    e[22..24].copy_from_slice(&t.to_le_bytes());
    e[24..26].copy_from_slice(&d.to_le_bytes());
    e[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
    e
}

/// The 11-byte on-disk form of a short name as fatfs displays it (`NAME.EXT`).
pub fn short_name_bytes(display: &[u8]) -> [u8; 11] {
    let mut out = [b' '; 11];
    let (name, ext) = match display.iter().position(|&b| b == b'.') {
        Some(dot) if dot > 0 => (&display[..dot], &display[dot + 1..]),
        _ => (display, &[][..]),
    };
    for (o, &b) in out[..8].iter_mut().zip(name) {
        *o = b;
    }
    for (o, &b) in out[8..].iter_mut().zip(ext) {
        *o = b;
    }
    if out[0] == 0xe5 {
        out[0] = 0x05;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_round_trip() {
        assert_eq!(&short_name_bytes(b"PIIMG"), b"PIIMG      ");
        assert_eq!(&short_name_bytes(b"AIRGAP~1.D"), b"AIRGAP~1D  ");
        assert_eq!(&short_name_bytes(b"CONFIG.TXT"), b"CONFIG  TXT");
    }

    #[test]
    fn garbage_boot_sectors_are_refused() {
        let mut bs = vec![0u8; 512];
        assert!(
            Geometry::parse(&bs, 1 << 20)
                .unwrap_err()
                .contains("0x55AA")
        );
        bs[510] = 0x55;
        bs[511] = 0xaa;
        assert!(
            Geometry::parse(&bs, 1 << 20)
                .unwrap_err()
                .contains("bytes per sector")
        );
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 3;
        assert!(
            Geometry::parse(&bs, 1 << 20)
                .unwrap_err()
                .contains("sectors per cluster")
        );
    }
}
