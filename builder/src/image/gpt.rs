//! GUID partition tables (Pi 5 NVMe users convert to GPT), read with the `gpt` crate.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::table::{Partition, PartitionTable, SECTOR, Scheme, gpt_kind};

/// A GPT read from an image, with a note when the primary header was unusable.
#[derive(Debug)]
pub struct GptRead {
    /// The partitions.
    pub table: PartitionTable,
    /// Set when the primary header was bad and the backup header was used.
    pub warning: Option<String>,
}

/// Reads the GPT of `disk`. A damaged primary header (bad CRC, bad signature) falls
/// back to the backup header at the end of the disk, with a warning.
pub fn read(disk: File) -> Result<GptRead, String> {
    check_header_in_use(&disk)?;
    let gpt = gpt::GptConfig::new()
        .writable(false)
        .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
        .open_from_device(disk)
        .map_err(|e| {
            format!("the protective MBR announces a GPT but neither GPT header is usable: {e}")
        })?;
    let warning = match (gpt.primary_header(), gpt.backup_header()) {
        (Err(primary), Ok(backup)) => Some(format!(
            "the primary GPT header (LBA 1) is damaged ({primary}); using the backup header \
             at LBA {}. Repair the table with `sgdisk -e` or `gdisk` before flashing",
            backup.current_lba
        )),
        (Ok(_), Err(backup)) => Some(format!(
            "the backup GPT header is damaged ({backup}); the primary header is fine"
        )),
        _ => None,
    };
    let mut partitions = Vec::new();
    for (i, p) in gpt.partitions().iter().filter(|(_, p)| p.is_used()) {
        let type_guid = p.part_type_guid.guid.to_string().to_uppercase();
        let start = p.first_lba.checked_mul(SECTOR);
        let size = p
            .last_lba
            .checked_add(1)
            .and_then(|end| end.checked_sub(p.first_lba))
            .and_then(|n| n.checked_mul(SECTOR));
        let (Some(start), Some(size)) = (start, size) else {
            return Err(format!(
                "partition {i} has an impossible sector range {}..={}",
                p.first_lba, p.last_lba
            ));
        };
        partitions.push(Partition {
            index: *i,
            start,
            size,
            kind: gpt_kind(&type_guid),
            type_code: type_guid,
            partuuid: p.part_guid.to_string().to_lowercase(),
            name: p.name.clone(),
        });
    }
    if partitions.is_empty() {
        return Err("the GPT has no partitions".into());
    }
    Ok(GptRead {
        table: PartitionTable {
            scheme: Scheme::Gpt {
                disk_guid: gpt.guid().to_string().to_lowercase(),
            },
            partitions,
        },
        warning,
    })
}

/// The only partition entry size the `gpt` crate reads (it asserts it, a panic on any
/// other) and the one Linux accepts: block/partitions/efi.c, `is_gpt_valid()`, fails
/// "GUID Partition Entry Size check" unless it is `sizeof(gpt_entry)`, 128.
const ENTRY_SIZE: u32 = 128;

/// Largest partition entry array read. Linux's `is_gpt_valid()` refuses arrays larger
/// than `KMALLOC_MAX_SIZE` ("GUID Partition Entry Array Size too large"; 4 MiB with
/// 4 KiB pages); a larger count only makes the `gpt` crate read entries for minutes.
const MAX_ENTRY_ARRAY: u64 = 4 << 20;

/// Checks the entry size and count of the header the `gpt` crate will use before it
/// sees them: the primary header (LBA 1) when its signature and CRC are good, else the
/// backup at the disk's last LBA (as `gpt` 4.1's `open_from_device` picks them).
fn check_header_in_use(disk: &File) -> Result<(), String> {
    let mut dev = disk;
    let len = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("cannot size the disk: {e}"))?;
    let mut candidates = vec![SECTOR];
    if len >= 3 * SECTOR {
        candidates.push((len - SECTOR) / SECTOR * SECTOR);
    }
    for offset in candidates {
        let mut hdr = [0u8; 92];
        if disk.read_exact_at(&mut hdr, offset).is_err() || &hdr[..8] != b"EFI PART" {
            continue;
        }
        let stored = u32::from_le_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
        hdr[16..20].fill(0);
        let mut crc = flate2::Crc::new();
        crc.update(&hdr);
        if crc.sum() != stored {
            continue;
        }
        let lba = offset / SECTOR;
        let num = u32::from_le_bytes([hdr[80], hdr[81], hdr[82], hdr[83]]);
        let size = u32::from_le_bytes([hdr[84], hdr[85], hdr[86], hdr[87]]);
        if size != ENTRY_SIZE {
            return Err(format!(
                "the GPT header at LBA {lba} gives a partition entry size of {size} bytes \
                 (byte {}); GPT entries are {ENTRY_SIZE} bytes, so the table is damaged",
                offset + 84
            ));
        }
        if u64::from(num) * u64::from(size) > MAX_ENTRY_ARRAY {
            return Err(format!(
                "the GPT header at LBA {lba} announces {num} partition entries (byte {}), \
                 more than the {} Linux reads, so the table is damaged",
                offset + 80,
                MAX_ENTRY_ARRAY / u64::from(ENTRY_SIZE)
            ));
        }
        return Ok(());
    }
    Ok(())
}
