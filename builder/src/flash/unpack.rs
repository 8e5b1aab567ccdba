//! Decompressing an image once into an unnamed sparse temporary file, so its file
//! systems can be mapped ([`crate::image::usage::used_ranges`]) like a raw image's and
//! only what the card needs is written. The file is created with O_TMPFILE (it has no
//! name, so it disappears with the process even when killed, and it holds the node's
//! secrets only while piimg runs); all-zero blocks are left as holes, so it takes the
//! disk space of the image's data, not its size.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Block size of the zero check (holes are punched at this granularity).
const BLOCK: usize = 4096;
/// Read size from the decoder.
const CHUNK: usize = 4 << 20;

/// The decompressed image in an unnamed temporary file.
#[derive(Debug)]
pub struct Unpacked {
    /// The file, `size` bytes long, sparse where the image is zero.
    pub file: File,
    /// A path that opens the same file (`/proc/self/fd/N`) for the image engine.
    pub path: PathBuf,
}

/// Why unpacking failed.
#[derive(Debug)]
pub enum UnpackError {
    /// The compressed data is corrupt or its size is not the one announced.
    Data(io::Error),
    /// The temporary file could not be made or written (no space, read-only).
    Local(io::Error),
}

/// Decompresses `dec` (exactly `size` bytes expected) into an unnamed file in `dir`.
pub fn unpack(dec: &mut dyn Read, size: u64, dir: &Path) -> Result<Unpacked, UnpackError> {
    use UnpackError::{Data, Local};
    let file = tempfile::tempfile_in(dir).map_err(Local)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos: u64 = 0;
    loop {
        let n = read_full(dec, &mut buf).map_err(Data)?;
        if n == 0 {
            break;
        }
        if pos + n as u64 > size {
            return Err(Data(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the decompressed data goes on past {size} bytes, the size its header or index gives"
                ),
            )));
        }
        write_nonzero(&file, &buf[..n], pos).map_err(Local)?;
        pos += n as u64;
    }
    if pos != size {
        return Err(Data(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the decompressed data ends at byte {pos}, before its size of {size} bytes: the file is truncated"
            ),
        )));
    }
    file.set_len(size).map_err(Local)?;
    use std::os::unix::io::AsRawFd;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok(Unpacked { file, path })
}

/// Reads until `buf` is full or the end.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes the runs of non-zero blocks of `data` (at `offset`), skipping zero blocks.
fn write_nonzero(f: &File, data: &[u8], offset: u64) -> io::Result<()> {
    let mut run: Option<usize> = None;
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let zero = block.iter().all(|&b| b == 0);
        match (zero, run) {
            (false, None) => run = Some(i * BLOCK),
            (true, Some(start)) => {
                f.write_all_at(&data[start..i * BLOCK], offset + start as u64)?;
                run = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run {
        f.write_all_at(&data[start..], offset + start as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_become_holes_and_the_bytes_are_the_same() {
        let mut data = vec![0u8; 5 * CHUNK / 2];
        data[10] = 1;
        data[CHUNK + 5000] = 2;
        let last = data.len() - 1;
        data[last] = 3;
        let dir = tempfile::tempdir().unwrap();
        let u = unpack(&mut &data[..], data.len() as u64, dir.path()).unwrap();
        let mut back = vec![0u8; data.len()];
        u.file.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data);
        use std::os::unix::fs::MetadataExt;
        let m = u.file.metadata().unwrap();
        assert!(
            m.blocks() * 512 < 64 * 1024,
            "{} bytes allocated",
            m.blocks() * 512
        );
        assert_eq!(std::fs::metadata(&u.path).unwrap().len(), data.len() as u64);
        // Shorter or longer than announced: refused.
        let short = unpack(&mut &data[..], data.len() as u64 + 1, dir.path());
        assert!(matches!(short, Err(UnpackError::Data(_))), "{short:?}");
        let long = unpack(&mut &data[..], data.len() as u64 - 1, dir.path());
        assert!(matches!(long, Err(UnpackError::Data(_))), "{long:?}");
        let nowhere = unpack(
            &mut &data[..],
            data.len() as u64,
            &dir.path().join("missing"),
        );
        assert!(matches!(nowhere, Err(UnpackError::Local(_))), "{nowhere:?}");
    }
}
