//! `.img.xz`: multi-threaded xz (multi-block, like pi-gen's `xz -T0`), so the result
//! also decompresses in parallel.

use liblzma::stream::{Check, MtStreamBuilder};
use liblzma::write::XzEncoder;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

const CHUNK: usize = 4 << 20;

/// Compresses all of `src` into `dst` with `threads` worker threads (0 = one per
/// CPU) at xz preset `preset`, calling `progress(bytes_read)`. Holes are fed as
/// zeros without reading them.
pub fn xz(
    src: &File,
    dst: &mut File,
    threads: u32,
    preset: u32,
    progress: &mut dyn FnMut(u64),
) -> io::Result<()> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
    } else {
        threads
    };
    let stream = MtStreamBuilder::new()
        .threads(threads)
        .preset(preset)
        .check(Check::Crc64)
        .encoder()
        .map_err(|e| io::Error::other(format!("xz encoder: {e}")))?;
    let mut enc = XzEncoder::new_stream(&mut *dst, stream);
    let len = src.metadata()?.len();
    let extents = crate::sparse::data_extents(src, len)?;
    let mut buf = vec![0u8; CHUNK];
    let zeros = vec![0u8; CHUNK];
    let mut pos = 0u64;
    let feed_zeros = |enc: &mut XzEncoder<&mut File>, mut n: u64| -> io::Result<()> {
        while n > 0 {
            super::interrupt::check()?;
            let k = n.min(CHUNK as u64) as usize;
            enc.write_all(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    };
    for crate::sparse::ByteRange { start, end } in extents {
        feed_zeros(&mut enc, start - pos)?;
        let mut off = start;
        while off < end {
            super::interrupt::check()?;
            let k = ((end - off) as usize).min(CHUNK);
            src.read_exact_at(&mut buf[..k], off)?;
            enc.write_all(&buf[..k])?;
            off += k as u64;
            progress(off);
        }
        pos = end;
    }
    feed_zeros(&mut enc, len - pos)?;
    progress(len);
    enc.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trips_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.img");
        let f = File::create(&p).unwrap();
        f.set_len(9 << 20).unwrap();
        f.write_all_at(b"hello", 5 << 20).unwrap();
        let mut out = File::create(dir.path().join("a.img.xz")).unwrap();
        xz(&File::open(&p).unwrap(), &mut out, 2, 1, &mut |_| {}).unwrap();
        let mut d = liblzma::read::XzDecoder::new_multi_decoder(
            File::open(dir.path().join("a.img.xz")).unwrap(),
        );
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, std::fs::read(&p).unwrap());
    }
}
