//! DOS/MBR partition tables (what Raspberry Pi OS ships), read with `mbrman`.

use std::io::{Read, Seek, SeekFrom};

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
    check_logical_starts(disk, sector0)?;
    // mbrman decodes field by field: through a buffer that is one read per sector,
    // not dozens of tiny reads of the image.
    let mut buffered = std::io::BufReader::with_capacity(SECTOR as usize, disk);
    let mbr = mbrman::MBR::read_from(&mut buffered, SECTOR as u32)
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

/// The type codes mbrman follows as an extended partition (its `is_extended`).
const EXTENDED: [u8; 5] = [0x05, 0x0f, 0x85, 0xc5, 0xd5];

/// Walks the extended partition's EBR chain the way mbrman 0.6 does and names a
/// logical partition whose start overflows 32 bits: mbrman adds the EBR's position to
/// it unchecked (a panic in debug builds, a wrong start in release ones). Stops where
/// mbrman stops or fails (no 0x55AA, a bad boot flag, a chain that does not move on).
fn check_logical_starts<D: Read + Seek>(disk: &mut D, sector0: &[u8]) -> Result<(), String> {
    let entry = |sector: &[u8], i: usize| {
        let e = &sector[446 + i * 16..446 + (i + 1) * 16];
        let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        (e[0], e[4], lba)
    };
    let Some(ext_start) = (0..4)
        .map(|i| entry(sector0, i))
        .find(|&(_, sys, _)| EXTENDED.contains(&sys))
        .map(|(_, _, lba)| lba)
    else {
        return Ok(());
    };
    let mut relative = 0u32;
    let mut ebr = [0u8; 512];
    loop {
        let offset = (u64::from(ext_start) + u64::from(relative)) * SECTOR;
        let read = disk
            .seek(SeekFrom::Start(offset))
            .and_then(|_| disk.read_exact(&mut ebr));
        let (first, next) = (entry(&ebr, 0), entry(&ebr, 1));
        if read.is_err()
            || ebr[510..512] != [0x55, 0xaa]
            || ![first.0, next.0].iter().all(|&b| b == 0x00 || b == 0x80)
        {
            return Ok(());
        }
        let absolute = ext_start.checked_add(relative);
        if absolute.and_then(|a| a.checked_add(first.2)).is_none() {
            return Err(format!(
                "the logical partition described by the EBR at sector {} starts at sector \
                 {} + {}, beyond what an MBR can address (2^32 sectors), so the table is \
                 damaged",
                offset / SECTOR,
                u64::from(ext_start) + u64::from(relative),
                first.2
            ));
        }
        if next.2 == 0 || relative >= next.2 {
            return Ok(());
        }
        relative = next.2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a partition entry (type, first sector, sectors) into slot `i` of `sector`.
    fn entry(sector: &mut [u8], i: usize, sys: u8, lba: u32, sectors: u32) {
        let e = &mut sector[446 + i * 16..446 + (i + 1) * 16];
        e[4] = sys;
        e[8..12].copy_from_slice(&lba.to_le_bytes());
        e[12..16].copy_from_slice(&sectors.to_le_bytes());
    }

    #[test]
    fn logical_partitions_are_read_through_the_ebr_chain() {
        // Primary 1 (FAT32) at 2048, extended at 10240 holding two logical partitions.
        let mut disk = vec![0u8; 40_960 * SECTOR as usize];
        let sector = |disk: &mut Vec<u8>, lba: u64| {
            let at = (lba * SECTOR) as usize;
            disk[at + 510] = 0x55;
            disk[at + 511] = 0xaa;
            at
        };
        let at = sector(&mut disk, 0);
        disk[at + 440..at + 444].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        entry(&mut disk[at..at + 512], 0, 0x0c, 2048, 8192);
        entry(&mut disk[at..at + 512], 1, 0x05, 10_240, 30_000);
        // EBR 1 at 10240: logical 5 at +2048 (8192 sectors), next EBR at +12288.
        let at = sector(&mut disk, 10_240);
        entry(&mut disk[at..at + 512], 0, 0x83, 2048, 8192);
        entry(&mut disk[at..at + 512], 1, 0x05, 12_288, 10_240);
        // EBR 2 at 22528: logical 6 at +2048 (4096 sectors), the last.
        let at = sector(&mut disk, 22_528);
        entry(&mut disk[at..at + 512], 0, 0x83, 2048, 4096);
        let head = disk[..512].to_vec();
        let table = read(&mut std::io::Cursor::new(disk), &head).unwrap();
        let got: Vec<(u32, u64, u64)> = table
            .partitions
            .iter()
            .map(|p| (p.index, p.start / SECTOR, p.size / SECTOR))
            .collect();
        assert_eq!(
            got,
            [
                (1, 2048, 8192),
                (2, 10_240, 30_000),
                (5, 12_288, 8192),
                (6, 24_576, 4096)
            ]
        );
        assert_eq!(table.partitions[3].partuuid, "12345678-06");
    }
}
