//! Reading FAT tables straight from the image file (not through fatfs), touching only
//! the bytes the file holds. A FAT is mostly zeros (free clusters): in a sparse image
//! (a base copied with holes, a card piimg wrote, the fuzzers' disks) those are holes,
//! which read as zeros and need neither reading nor comparing, so the work follows
//! what the table holds, not its size (4 MiB per copy on the Trixie layout).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::sparse::nonzero_candidates;

/// Bytes read, scanned or compared at a time.
const CHUNK: u64 = 64 * 1024;
/// Bytes [`LazyFat`] reads and keeps at a time.
const BLOCK: u64 = 4096;

/// One FAT copy whose entries are read block by block when first asked for: a chain
/// walk touches a few blocks, not the whole table.
pub(crate) struct LazyFat<'a> {
    file: &'a File,
    start: u64,
    len: u64,
    blocks: HashMap<u64, Box<[u8]>>,
}

impl<'a> LazyFat<'a> {
    /// The table of `len` bytes at byte `start` of `file`.
    pub(crate) fn new(file: &'a File, start: u64, len: u64) -> Self {
        Self {
            file,
            start,
            len,
            blocks: HashMap::new(),
        }
    }

    /// The little-endian 32-bit word at byte `at` of the table (FAT32 entry `n` is at
    /// `4 * n`); an error past the table's end.
    pub(crate) fn u32_at(&mut self, at: u64) -> io::Result<u32> {
        if at.checked_add(4).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("byte {at} is past the FAT's {} bytes", self.len),
            ));
        }
        let (index, within) = (at / BLOCK, (at % BLOCK) as usize);
        if within + 4 <= BLOCK as usize {
            let b = &self.block(index)?[within..within + 4];
            return Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        let mut out = [0u8; 4];
        for (i, b) in out.iter_mut().enumerate() {
            let pos = at + i as u64;
            *b = self.block(pos / BLOCK)?[(pos % BLOCK) as usize];
        }
        Ok(u32::from_le_bytes(out))
    }

    /// Block `index` of the table, read on first use.
    fn block(&mut self, index: u64) -> io::Result<&[u8]> {
        if !self.blocks.contains_key(&index) {
            let first = index * BLOCK;
            let mut data = vec![0u8; (self.len - first).min(BLOCK) as usize];
            self.file.read_exact_at(&mut data, self.start + first)?;
            self.blocks.insert(index, data.into_boxed_slice());
        }
        self.blocks
            .get(&index)
            .map(|b| &b[..])
            .ok_or_else(|| io::Error::other("FAT block vanished from the cache"))
    }
}

/// Calls `each(offset, bytes)` for the parts of the `len` bytes at `start` of `file`
/// that may be non-zero, in ascending order, `offset` counted from `start`. Every part
/// starts at a multiple of `align` bytes from `start` and, but at the end, is a
/// multiple of `align` long (so no FAT entry is split when `align` holds a whole
/// number of entries: 8 entries take 12, 16 or 32 bytes). All other bytes are zeros.
pub(crate) fn for_each_nonzero_part(
    file: &File,
    start: u64,
    len: u64,
    align: u64,
    mut each: impl FnMut(u64, &[u8]),
) -> io::Result<()> {
    let align = align.max(1);
    let chunk = (CHUNK / align).max(1) * align;
    let mut buf = vec![0u8; chunk as usize];
    let mut done = 0u64; // relative offset up to which everything has been handed out
    for r in nonzero_candidates(file, start, start.saturating_add(len))? {
        let from = ((r.start - start) / align * align).max(done);
        let to = (r.end - start)
            .div_ceil(align)
            .saturating_mul(align)
            .min(len);
        let mut pos = from;
        while pos < to {
            let n = (to - pos).min(chunk) as usize;
            file.read_exact_at(&mut buf[..n], start + pos)?;
            each(pos, &buf[..n]);
            pos += n as u64;
        }
        done = done.max(to);
    }
    Ok(())
}

/// The first byte at which the `len` bytes at `a` and those at `b` of `file` differ,
/// counted from `a` and `b`, or `None` when they are equal.
pub(crate) fn first_difference(file: &File, a: u64, b: u64, len: u64) -> io::Result<Option<u64>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for base in [a, b] {
        for r in nonzero_candidates(file, base, base.saturating_add(len))? {
            ranges.push((r.start - base, r.end - base));
        }
    }
    // Outside the union of both copies' data both read as zeros.
    ranges.sort_unstable();
    let mut x = vec![0u8; CHUNK as usize];
    let mut y = vec![0u8; CHUNK as usize];
    let mut done = 0u64;
    for (s, e) in ranges {
        let mut pos = s.max(done);
        while pos < e {
            let n = (e - pos).min(CHUNK) as usize;
            file.read_exact_at(&mut x[..n], a + pos)?;
            file.read_exact_at(&mut y[..n], b + pos)?;
            if x[..n] != y[..n] {
                let i = x[..n].iter().zip(&y[..n]).position(|(p, q)| p != q);
                return Ok(i.map(|i| pos + i as u64));
            }
            pos += n as u64;
        }
        done = done.max(e);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file of `len` bytes with `parts` (offset, bytes) written into it.
    fn sparse(len: u64, parts: &[(u64, &[u8])]) -> File {
        let f = tempfile::tempfile().unwrap();
        f.set_len(len).unwrap();
        for (at, bytes) in parts {
            f.write_all_at(bytes, *at).unwrap();
        }
        f
    }

    #[test]
    fn lazy_entries_read_across_blocks_and_stop_at_the_end() {
        let f = sparse(1 << 20, &[(100_000 + 4094, &[1, 2, 3, 4])]);
        let mut fat = LazyFat::new(&f, 100_000, 8192);
        assert_eq!(fat.u32_at(4094).unwrap(), 0x0403_0201);
        assert_eq!(fat.u32_at(0).unwrap(), 0);
        assert_eq!(fat.u32_at(8188).unwrap(), 0);
        assert!(fat.u32_at(8189).is_err());
        assert!(fat.u32_at(u64::MAX - 1).is_err());
    }

    #[test]
    fn nonzero_parts_hold_every_nonzero_byte_aligned() {
        let len = 3 << 20;
        let f = sparse(
            8 << 20,
            &[(4096 + 5, &[7; 3]), ((2 << 20) + 1, &[9; 200_000])],
        );
        let mut seen = vec![0u8; len as usize];
        let mut last_end = 0;
        for_each_nonzero_part(&f, 4096, len, 12, |off, bytes| {
            assert_eq!(off % 12, 0, "aligned start");
            assert!(off >= last_end, "ascending, no overlap");
            assert!(off + bytes.len() as u64 == len || bytes.len() % 12 == 0);
            seen[off as usize..off as usize + bytes.len()].copy_from_slice(bytes);
            last_end = off + bytes.len() as u64;
        })
        .unwrap();
        let mut all = vec![0u8; len as usize];
        f.read_exact_at(&mut all, 4096).unwrap();
        assert_eq!(seen, all, "every non-zero byte was handed out");
    }

    #[test]
    fn first_difference_finds_the_earliest_byte_also_against_a_hole() {
        let len = 1 << 20;
        let (a, b) = (0, 2 << 20);
        let f = sparse(4 << 20, &[(a + 10, &[1; 4]), (b + 10, &[1; 4])]);
        assert_eq!(first_difference(&f, a, b, len).unwrap(), None);
        f.write_all_at(&[5], b + 700_000).unwrap();
        assert_eq!(first_difference(&f, a, b, len).unwrap(), Some(700_000));
        f.write_all_at(&[6], a + 300_000).unwrap();
        assert_eq!(first_difference(&f, a, b, len).unwrap(), Some(300_000));
        f.write_all_at(&[2], b + 12).unwrap();
        assert_eq!(first_difference(&f, a, b, len).unwrap(), Some(12));
    }
}
