//! DOS/MBR partition tables (what Raspberry Pi OS ships), read with `mbrman`.

use std::io::{Read, Seek};

use super::table::{Partition, PartitionTable, SECTOR, Scheme, mbr_kind};

/// The 32-bit disk identifier at byte 440 of the MBR (the PARTUUID prefix).
pub fn disk_id(sector0: &[u8]) -> u32 {
    let mut id = [0u8; 4];
    id.copy_from_slice(&sector0[440..444]);
    u32::from_le_bytes(id)
}

/// True when the MBR holds a GPT protective entry (type 0xEE).
pub fn is_protective(sector0: &[u8]) -> bool {
    (0..4).any(|i| sector0[446 + i * 16 + 4] == 0xee)
}

/// Reads the MBR (and any logical partitions) of `disk`; `sector0` is its first sector.
/// Returns a description of what is wrong on failure.
pub fn read<D: Read + Seek>(disk: &mut D, sector0: &[u8]) -> Result<PartitionTable, String> {
    for i in 0..4 {
        let boot = sector0[446 + i * 16];
        if boot != 0x00 && boot != 0x80 {
            return Err(format!(
                "the MBR's partition entry {} has boot flag 0x{boot:02x} (must be 0x00 or 0x80), \
                 so byte 0 is not a partition table",
                i + 1
            ));
        }
        // mbrman panics (an unwrap in its alignment guess) when every used entry starts
        // at sector 0; such an entry would overlay the table itself, so name it here.
        let entry = &sector0[446 + i * 16..446 + (i + 1) * 16];
        let lba = u32::from_le_bytes([entry[8], entry[9], entry[10], entry[11]]);
        if entry[4] != 0 && lba == 0 {
            return Err(format!(
                "the MBR's partition entry {} (type 0x{:02x}) starts at sector 0, on top of the \
                 partition table itself (byte {}), so the table is damaged",
                i + 1,
                entry[4],
                446 + i * 16 + 8
            ));
        }
    }
    let mbr = mbrman::MBR::read_from(disk, SECTOR as u32)
        .map_err(|e| format!("cannot read the MBR partition table: {e}"))?;
    let id = disk_id(sector0);
    let partitions = mbr
        .iter()
        .filter(|(_, p)| p.is_used())
        .map(|(i, p)| Partition {
            index: i as u32,
            start: u64::from(p.starting_lba) * SECTOR,
            size: u64::from(p.sectors) * SECTOR,
            kind: mbr_kind(p.sys),
            type_code: format!("0x{:02x}", p.sys),
            partuuid: format!("{id:08x}-{i:02x}"),
            name: String::new(),
        })
        .collect::<Vec<_>>();
    if partitions.is_empty() {
        return Err("the MBR has no partitions".into());
    }
    Ok(PartitionTable {
        scheme: Scheme::Mbr { disk_id: id },
        partitions,
    })
}
