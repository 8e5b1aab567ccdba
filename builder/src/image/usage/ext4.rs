//! Which bytes of an ext2/3/4 file system matter, from its own metadata (the
//! superblock, group descriptors and bitmaps, parsed here: ext4-view does not expose
//! them). The rules, from the Linux kernel and e2fsprogs:
//!
//! - block 0 (the superblock, and what precedes it) and the group descriptor table
//!   with its reserved GDT blocks; their backups in groups 0, 1 and powers of 3, 5
//!   and 7 with `sparse_super`, in every group without it
//!   (fs/ext4/balloc.c `ext4_bg_has_super`, `ext4_num_base_meta_clusters`);
//! - each group's block bitmap unless the group is BLOCK_UNINIT, and its inode
//!   bitmap unless INODE_UNINIT, both only honoured with a group-descriptor
//!   checksum feature (`ext4_has_group_desc_csum`): the kernel builds such bitmaps
//!   in memory (balloc.c `ext4_init_block_bitmap`, ialloc.c
//!   `ext4_read_inode_bitmap`), e2fsprogs too (lib/ext2fs/rw_bitmaps.c);
//! - each group's inode table: all of it when the group is ITABLE_ZEROED (the
//!   kernel's lazy init skips it, ialloc.c `ext4_init_inode_table`, and it trusts
//!   unused inodes read as zero) or without a group-descriptor checksum; otherwise
//!   its first `inodes_per_group - itable_unused` inodes (what the kernel and
//!   e2fsck read, lib/ext2fs/inode.c `get_next_blockgroup`);
//! - every block an initialised block bitmap marks in use: file data, directories,
//!   extent blocks, the journal (whole), the resize inode, flex_bg metadata.
//!
//! Features that move metadata elsewhere (meta_bg, sparse_super2, bigalloc, an
//! exclude bitmap) or that piimg does not know are not guessed at: the caller maps
//! the whole partition.

use super::disk::{Disk, Verdict};
use super::ranges::Ranges;
use crate::image::ImageError;

const MAGIC: u16 = 0xEF53;
/// A larger group descriptor table (~1M groups) is not one piimg maps block by block.
const MAX_GDT_BYTES: u64 = 64 << 20;

const COMPAT_EXCLUDE_BITMAP: u32 = 0x100;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

const INCOMPAT_64BIT: u32 = 0x80;

const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// The rules in upstream.toml `[blockmap.ext4]`: backup groups, group flags and the
/// incompat features whose on-disk layout this reader handles (filetype, recover,
/// extents, 64bit, mmp, flex_bg, ea_inode, csum_seed, largedir, inline_data,
/// encrypt, casefold: fs/ext4/ext4.h `EXT4_FEATURE_INCOMPAT_*`).
fn rules() -> &'static crate::upstream::Ext4MapRules {
    &crate::upstream::facts().blockmap.ext4
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// True when the 1024-byte superblock `sb` (read at byte 1024) carries ext2/3/4's
/// magic number.
pub(super) fn looks_like_ext(sb: &[u8]) -> bool {
    sb.len() >= 1024 && le16(sb, 0x38) == MAGIC
}

/// The superblock fields the map needs.
#[derive(Debug, Clone, Copy)]
struct Super {
    block_size: u64,
    blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inode_size: u64,
    desc_size: u64,
    groups: u64,
    reserved_gdt: u64,
    sparse_super: bool,
    group_csum: bool,
}

impl Super {
    fn gdt_blocks(&self) -> u64 {
        (self.groups * self.desc_size).div_ceil(self.block_size)
    }

    fn itable_blocks(&self) -> u64 {
        (self.inodes_per_group * self.inode_size).div_ceil(self.block_size)
    }

    fn group_first(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    fn group_len(&self, g: u64) -> u64 {
        (self.blocks - self.group_first(g)).min(self.blocks_per_group)
    }

    /// fs/ext4/balloc.c `ext4_bg_has_super`: group 0, and with sparse_super only
    /// groups 0, 1 and powers of 3, 5 and 7.
    fn has_super(&self, g: u64) -> bool {
        if g <= 1 || !self.sparse_super {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        rules().backup_group_powers.iter().any(|&base| {
            let mut p = base;
            while p < g {
                p *= base;
            }
            p == g
        })
    }
}

/// The superblock `sb` of a file system in a `part_size`-byte partition, or why it
/// is one piimg does not map block by block.
fn parse(sb: &[u8], part_size: u64) -> Result<Super, String> {
    let log = le32(sb, 0x18);
    if log > 6 {
        return Err(format!("block size 2^(10+{log}) (superblock offset 0x18)"));
    }
    let block_size = 1024u64 << log;
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    let known = rules().incompat_known_mask;
    if incompat & !known != 0 {
        return Err(format!(
            "incompatible features {:#x} (meta_bg, journal_dev or unknown)",
            incompat & !known
        ));
    }
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        return Err("bigalloc".into());
    }
    if compat & COMPAT_SPARSE_SUPER2 != 0 {
        return Err("sparse_super2".into());
    }
    if compat & COMPAT_EXCLUDE_BITMAP != 0 {
        return Err("exclude_bitmap".into());
    }
    let is64 = incompat & INCOMPAT_64BIT != 0;
    let blocks = u64::from(le32(sb, 0x4))
        | if is64 {
            u64::from(le32(sb, 0x150)) << 32
        } else {
            0
        };
    let first_data_block = u64::from(le32(sb, 0x14));
    if first_data_block != u64::from(block_size == 1024) {
        return Err(format!(
            "first data block {first_data_block} with {block_size}-byte blocks (offset 0x14)"
        ));
    }
    if blocks <= first_data_block || blocks.saturating_mul(block_size) > part_size {
        return Err(format!(
            "{blocks} blocks of {block_size} bytes do not fit the {part_size}-byte partition \
             (offset 0x4)"
        ));
    }
    let blocks_per_group = u64::from(le32(sb, 0x20));
    if blocks_per_group == 0 || blocks_per_group > 8 * block_size {
        return Err(format!("{blocks_per_group} blocks per group (offset 0x20)"));
    }
    if u64::from(le32(sb, 0x24)) != blocks_per_group {
        return Err("clusters per group differ from blocks per group (offset 0x24)".into());
    }
    let inodes_per_group = u64::from(le32(sb, 0x28));
    if inodes_per_group == 0 || inodes_per_group > 8 * block_size {
        return Err(format!("{inodes_per_group} inodes per group (offset 0x28)"));
    }
    let inode_size = if le32(sb, 0x4C) == 0 {
        128
    } else {
        u64::from(le16(sb, 0x58))
    };
    if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
        return Err(format!("inode size {inode_size} (offset 0x58)"));
    }
    let desc_size = if is64 { u64::from(le16(sb, 0xFE)) } else { 32 };
    // fs/ext4/super.c: a 64bit file system has descriptors of at least 64 bytes.
    if desc_size < if is64 { 64 } else { 32 }
        || !desc_size.is_power_of_two()
        || desc_size > block_size
    {
        return Err(format!("group descriptor size {desc_size} (offset 0xFE)"));
    }
    let groups = (blocks - first_data_block).div_ceil(blocks_per_group);
    // fs/ext4/super.c `ext4_fill_super` refuses a file system whose inode count is
    // not groups * inodes_per_group.
    let inodes = u64::from(le32(sb, 0x0));
    if inodes != groups * inodes_per_group {
        return Err(format!(
            "{inodes} inodes but {groups} groups of {inodes_per_group} (offset 0x0)"
        ));
    }
    let sup = Super {
        block_size,
        blocks,
        first_data_block,
        blocks_per_group,
        inodes_per_group,
        inode_size,
        desc_size,
        groups,
        reserved_gdt: u64::from(le16(sb, 0xCE)),
        sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
        group_csum: ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
    };
    if sup.gdt_blocks() * block_size > MAX_GDT_BYTES {
        return Err(format!(
            "{groups} groups of {blocks_per_group} blocks (offset 0x20): a descriptor table \
             of {} blocks",
            sup.gdt_blocks()
        ));
    }
    if 1 + sup.gdt_blocks() + sup.reserved_gdt > blocks_per_group
        || first_data_block + 1 + sup.gdt_blocks() > blocks
    {
        return Err(format!(
            "{} group descriptor and {} reserved GDT blocks do not fit a group",
            sup.gdt_blocks(),
            sup.reserved_gdt
        ));
    }
    Ok(sup)
}

/// One group descriptor's fields.
#[derive(Debug, Clone, Copy)]
struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    itable_unused: u64,
}

fn group(d: &[u8], is64: bool) -> Group {
    let hi = |at: usize| {
        if is64 {
            u64::from(le32(d, at)) << 32
        } else {
            0
        }
    };
    Group {
        block_bitmap: u64::from(le32(d, 0x0)) | hi(0x20),
        inode_bitmap: u64::from(le32(d, 0x4)) | hi(0x24),
        inode_table: u64::from(le32(d, 0x8)) | hi(0x28),
        flags: le16(d, 0x12),
        itable_unused: u64::from(le16(d, 0x1C))
            | if is64 {
                u64::from(le16(d, 0x32)) << 16
            } else {
                0
            },
    }
}

/// The bytes of the ext2/3/4 file system at `start` (`size` bytes) that matter.
pub(super) fn used(disk: &Disk<'_>, start: u64, size: u64) -> Result<Verdict, ImageError> {
    let mut sb = vec![0u8; 1024];
    disk.read(start + 1024, &mut sb, "reading the ext4 superblock")?;
    let s = match parse(&sb, size) {
        Ok(s) => s,
        Err(reason) => return Ok(Verdict::Whole(format!("ext4 superblock: {reason}"))),
    };
    let bs = s.block_size;
    let mut gdt = vec![0u8; (s.gdt_blocks() * bs) as usize];
    disk.read(
        start + (s.first_data_block + 1) * bs,
        &mut gdt,
        "reading the ext4 group descriptors",
    )?;
    let groups: Vec<Group> = (0..s.groups as usize)
        .map(|g| group(&gdt[g * s.desc_size as usize..], s.desc_size >= 64))
        .collect();

    let mut r = Ranges::new();
    let blocks = |r: &mut Ranges, first: u64, count: u64| {
        r.add_len(start + first * bs, count * bs);
    };
    // Block 0 holds the superblock (4 KiB blocks) or the boot block (1 KiB).
    blocks(&mut r, 0, s.first_data_block + 1);
    let in_fs = |b: u64, n: u64| b >= s.first_data_block && b.saturating_add(n) <= s.blocks;
    for (g, d) in groups.iter().enumerate() {
        let g = g as u64;
        if s.has_super(g) {
            blocks(
                &mut r,
                s.group_first(g),
                1 + s.gdt_blocks() + s.reserved_gdt,
            );
        }
        let itb = s.itable_blocks();
        for (what, at, n) in [
            ("block bitmap", d.block_bitmap, 1),
            ("inode bitmap", d.inode_bitmap, 1),
            ("inode table", d.inode_table, itb),
        ] {
            if !in_fs(at, n) {
                return Ok(Verdict::Whole(format!(
                    "group {g}: the {what} at block {at} lies outside the file system"
                )));
            }
        }
        let flags = rules();
        let uninit = |flag: u16| s.group_csum && d.flags & flag != 0;
        if !uninit(flags.bg_inode_uninit) {
            blocks(&mut r, d.inode_bitmap, 1);
        }
        let table = if !s.group_csum || d.flags & flags.bg_itable_zeroed != 0 {
            itb
        } else {
            if d.itable_unused > s.inodes_per_group {
                return Ok(Verdict::Whole(format!(
                    "group {g}: {} unused inodes of {} per group",
                    d.itable_unused, s.inodes_per_group
                )));
            }
            ((s.inodes_per_group - d.itable_unused) * s.inode_size).div_ceil(bs)
        };
        blocks(&mut r, d.inode_table, table);
        if uninit(flags.bg_block_uninit) {
            // balloc.c `ext4_init_block_bitmap` computes this bitmap from the
            // group's sb/GDT backup and its own bitmaps and inode table when they
            // lie inside it: all mapped above (every group's metadata is mapped
            // wherever it lies, a superset). The bitmap block itself is don't-care.
            continue;
        }
        blocks(&mut r, d.block_bitmap, 1);
        let mut bitmap = vec![0u8; bs as usize];
        disk.read(
            start + d.block_bitmap * bs,
            &mut bitmap,
            "reading an ext4 block bitmap",
        )?;
        mark_used(
            &mut r,
            &bitmap,
            s.group_len(g),
            |bit| start + (s.group_first(g) + bit) * bs,
            bs,
        );
    }
    Ok(Verdict::Ext4 { ranges: r })
}

/// Adds the blocks whose bits are set among the first `len` bits of `bitmap`;
/// `byte_of(bit)` is the block's byte offset in the image.
fn mark_used(r: &mut Ranges, bitmap: &[u8], len: u64, byte_of: impl Fn(u64) -> u64, bs: u64) {
    let mut bit = 0u64;
    while bit < len {
        let byte = bitmap[(bit / 8) as usize];
        if bit % 8 == 0 && bit + 8 <= len && (byte == 0 || byte == 0xFF) {
            if byte == 0xFF {
                r.add_len(byte_of(bit), 8 * bs);
            }
            bit += 8;
            continue;
        }
        if byte >> (bit % 8) & 1 == 1 {
            r.add_len(byte_of(bit), bs);
        }
        bit += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_superblock_groups_follow_sparse_super() {
        let s = Super {
            block_size: 4096,
            blocks: 1 << 30,
            first_data_block: 0,
            blocks_per_group: 32768,
            inodes_per_group: 8192,
            inode_size: 256,
            desc_size: 64,
            groups: 32768,
            reserved_gdt: 0,
            sparse_super: true,
            group_csum: true,
        };
        let with: Vec<u64> = (0..400).filter(|&g| s.has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125, 243, 343]);
        let dense = Super {
            sparse_super: false,
            ..s
        };
        assert!((0..50).all(|g| dense.has_super(g)));
    }

    #[test]
    fn bitmap_bits_become_block_ranges() {
        let mut r = Ranges::new();
        // Bits 0-7 (0xFF), 9, then 16..=23 but only the first 20 bits count.
        mark_used(&mut r, &[0xFF, 0b10, 0xFF], 20, |b| b * 10, 10);
        assert_eq!(r.merged(), [(0, 80), (90, 100), (160, 200)]);
    }
}
