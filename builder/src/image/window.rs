//! A cached, copy-on-write view of an image file for the FAT driver.
//!
//! Reads go through a block cache (fatfs issues many tiny reads; on the Trixie layout
//! with 512-byte clusters that is ~10x slower uncached). Writes never touch the file:
//! they land in dirty blocks in memory until [`Overlay::flush`] writes them all and
//! fsyncs. So a change that fails half-way (a full FAT, a bug) is simply dropped and
//! the image stays exactly as it was.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Cache block size: fatfs reads are small and clustered, 64 KiB amortises syscalls.
const BLOCK: u64 = 64 * 1024;
/// Clean blocks kept before the cache is dropped (32 MiB).
const MAX_CLEAN: usize = 512;

/// The shared state: the file, clean cached blocks, and pending (dirty) blocks.
#[derive(Debug)]
pub struct Overlay {
    file: Arc<File>,
    len: u64,
    clean: HashMap<u64, Box<[u8]>>,
    dirty: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    /// A view of `file`, which is `len` bytes long.
    pub fn new(file: Arc<File>, len: u64) -> Self {
        Self {
            file,
            len,
            clean: HashMap::new(),
            dirty: BTreeMap::new(),
        }
    }

    /// True when changes are pending.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Drops every pending change.
    pub fn discard(&mut self) {
        self.dirty.clear();
    }

    /// Writes every pending block to the file and fsyncs it.
    pub fn flush(&mut self) -> io::Result<()> {
        for (&index, data) in &self.dirty {
            let start = index * BLOCK;
            let n = (self.len - start).min(BLOCK) as usize;
            self.file.write_all_at(&data[..n], start)?;
        }
        self.file.sync_all()?;
        let dirty = std::mem::take(&mut self.dirty);
        for (index, data) in dirty {
            self.clean.insert(index, data);
        }
        Ok(())
    }

    fn load(&mut self, index: u64) -> io::Result<()> {
        if self.dirty.contains_key(&index) || self.clean.contains_key(&index) {
            return Ok(());
        }
        if self.clean.len() >= MAX_CLEAN {
            self.clean.clear();
        }
        let start = index * BLOCK;
        let n = (self.len.saturating_sub(start)).min(BLOCK) as usize;
        let mut data = vec![0u8; BLOCK as usize].into_boxed_slice();
        self.file.read_exact_at(&mut data[..n], start)?;
        self.clean.insert(index, data);
        Ok(())
    }

    fn block(&self, index: u64) -> Option<&[u8]> {
        self.dirty
            .get(&index)
            .or_else(|| self.clean.get(&index))
            .map(|b| &b[..])
    }

    /// Reads `buf.len()` bytes at absolute offset `pos` (short at end of file).
    pub fn read_at(&mut self, pos: u64, buf: &mut [u8]) -> io::Result<usize> {
        if pos >= self.len {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - pos) as usize;
        let mut done = 0;
        while done < want {
            let at = pos + done as u64;
            let index = at / BLOCK;
            let off = (at % BLOCK) as usize;
            self.load(index)?;
            let block = self
                .block(index)
                .ok_or_else(|| io::Error::other("cache block vanished"))?;
            let n = (want - done).min(BLOCK as usize - off);
            buf[done..done + n].copy_from_slice(&block[off..off + n]);
            done += n;
        }
        Ok(want)
    }

    /// Calls `each(pos, bytes)` for the parts of `[start, end)` that may hold non-zero
    /// bytes as this view reads them, in ascending order, one cache block (or less, at
    /// the ends) at a time: staged blocks, and blocks where the file may hold data
    /// (`sparse::nonzero_candidates`). Everything else reads as zeros.
    pub fn for_each_nonzero_block(
        &mut self,
        start: u64,
        end: u64,
        mut each: impl FnMut(u64, &[u8]),
    ) -> io::Result<()> {
        let end = end.min(self.len);
        if start >= end {
            return Ok(());
        }
        let data = crate::sparse::nonzero_candidates(&self.file, start, end)?;
        let mut next = data.iter().peekable();
        for index in start / BLOCK..=(end - 1) / BLOCK {
            let (lo, hi) = ((index * BLOCK).max(start), ((index + 1) * BLOCK).min(end));
            while next.peek().is_some_and(|r| r.end <= lo) {
                next.next();
            }
            let has_data = next.peek().is_some_and(|r| r.start < hi);
            if !has_data && !self.dirty.contains_key(&index) {
                continue;
            }
            self.load(index)?;
            let block = self
                .block(index)
                .ok_or_else(|| io::Error::other("cache block vanished"))?;
            let from = (lo - index * BLOCK) as usize;
            each(lo, &block[from..from + (hi - lo) as usize]);
        }
        Ok(())
    }

    /// Records a write of `buf` at absolute offset `pos` (in memory only).
    pub fn write_at(&mut self, pos: u64, buf: &[u8]) -> io::Result<usize> {
        if pos + buf.len() as u64 > self.len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("write at byte {pos} runs past the end of the image"),
            ));
        }
        let mut done = 0;
        while done < buf.len() {
            let at = pos + done as u64;
            let index = at / BLOCK;
            let off = (at % BLOCK) as usize;
            let n = (buf.len() - done).min(BLOCK as usize - off);
            if !self.dirty.contains_key(&index) {
                if off == 0 && n == BLOCK as usize {
                    self.clean.remove(&index);
                    self.dirty
                        .insert(index, vec![0u8; BLOCK as usize].into_boxed_slice());
                } else {
                    self.load(index)?;
                    let data = self
                        .clean
                        .remove(&index)
                        .ok_or_else(|| io::Error::other("cache block vanished"))?;
                    self.dirty.insert(index, data);
                }
            }
            let block = self
                .dirty
                .get_mut(&index)
                .ok_or_else(|| io::Error::other("cache block vanished"))?;
            block[off..off + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        Ok(buf.len())
    }
}

/// A `Read + Write + Seek` cursor over a shared [`Overlay`], positioned in whole-file
/// bytes (wrap it in `fscommon::StreamSlice` to get a partition window).
#[derive(Debug, Clone)]
pub struct OverlayCursor {
    shared: Arc<Mutex<Overlay>>,
    pos: u64,
}

impl OverlayCursor {
    /// A cursor at byte 0 of `shared`.
    pub fn new(shared: Arc<Mutex<Overlay>>) -> Self {
        Self { shared, pos: 0 }
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, Overlay>> {
        self.shared
            .lock()
            .map_err(|_| io::Error::other("image cache lock poisoned"))
    }
}

impl Read for OverlayCursor {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.lock()?.read_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for OverlayCursor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.lock()?.write_at(self.pos, buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Pending blocks are written only by Overlay::flush (the commit).
        Ok(())
    }
}

impl Seek for OverlayCursor {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let len = self.lock()?.len;
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "seek before start of image")
        })?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<Mutex<Overlay>>) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        let file = Arc::new(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(tmp.path())
                .unwrap(),
        );
        let len = bytes.len() as u64;
        (tmp, Arc::new(Mutex::new(Overlay::new(file, len))))
    }

    #[test]
    fn writes_stay_in_memory_until_flush() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let (tmp, shared) = overlay(&data);
        let mut c = OverlayCursor::new(shared.clone());
        c.seek(SeekFrom::Start(65_530)).unwrap();
        c.write_all(b"0123456789ABCDEF").unwrap();
        // The file is untouched...
        assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
        // ...but reads see the change, across the block boundary.
        let mut back = [0u8; 16];
        c.seek(SeekFrom::Start(65_530)).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"0123456789ABCDEF");
        shared.lock().unwrap().flush().unwrap();
        let on_disk = std::fs::read(tmp.path()).unwrap();
        assert_eq!(&on_disk[65_530..65_546], b"0123456789ABCDEF");
        assert_eq!(&on_disk[..65_530], &data[..65_530]);
        assert_eq!(&on_disk[65_546..], &data[65_546..]);
    }

    #[test]
    fn nonzero_blocks_cover_the_file_data_and_the_staged_blocks() {
        let data = vec![0u8; 1 << 20];
        let (tmp, shared) = overlay(&data);
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .unwrap()
            .write_all_at(&[3u8; 10], 300_000)
            .unwrap();
        let mut c = OverlayCursor::new(shared.clone());
        c.seek(SeekFrom::Start(700_000)).unwrap();
        c.write_all(&[9u8; 4]).unwrap();
        let (start, end) = (100_000, 900_000);
        let mut seen = vec![0u8; (end - start) as usize];
        let mut last = start;
        shared
            .lock()
            .unwrap()
            .for_each_nonzero_block(start, end, |pos, bytes| {
                assert!(pos >= last && pos + bytes.len() as u64 <= end);
                last = pos + bytes.len() as u64;
                let at = (pos - start) as usize;
                seen[at..at + bytes.len()].copy_from_slice(bytes);
            })
            .unwrap();
        let mut all = vec![0u8; (end - start) as usize];
        c.seek(SeekFrom::Start(start)).unwrap();
        c.read_exact(&mut all).unwrap();
        assert_eq!(seen, all, "every non-zero byte, staged ones included");
    }

    #[test]
    fn discard_forgets_changes_and_short_last_block_reads() {
        let data = vec![7u8; 70_000];
        let (tmp, shared) = overlay(&data);
        let mut c = OverlayCursor::new(shared.clone());
        c.seek(SeekFrom::Start(69_990)).unwrap();
        c.write_all(&[1u8; 10]).unwrap();
        assert!(c.write_all(&[1u8; 1]).is_err(), "past the end must fail");
        shared.lock().unwrap().discard();
        shared.lock().unwrap().flush().unwrap();
        assert_eq!(std::fs::read(tmp.path()).unwrap(), data);
        let mut rest = Vec::new();
        c.seek(SeekFrom::Start(69_000)).unwrap();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, vec![7u8; 1000]);
    }
}
