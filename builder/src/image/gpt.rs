//! GUID partition tables (Pi 5 NVMe users convert to GPT), read with the `gpt` crate.

use std::fs::File;

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
