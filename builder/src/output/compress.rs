//! `.img.xz`: multi-threaded xz (multi-block, like pi-gen's `xz -T0`), so the result
//! also decompresses in parallel.

use liblzma::stream::{Action, Check, MtStreamBuilder, Status, Stream};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

const CHUNK: usize = 4 << 20;

/// Compresses all of `src` into `dst` with `threads` worker threads (0 = one per
/// CPU) at xz preset `preset`, calling `progress(bytes_consumed)` as the encoder
/// takes input — holes included, which are fed as zeros without reading them.
///
/// The liblzma stream is driven directly rather than through `XzEncoder`: that
/// writer's `Drop` finishes the stream, so an interrupted compression would first
/// compress everything still queued (tens of seconds at `-6` on one thread).
/// Dropping a bare `Stream` ends it at once (`lzma_end` stops the workers).
/// Output is the same as before: timeouts only change when calls return.
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
    let mut enc = Encoder {
        stream: MtStreamBuilder::new()
            .threads(threads)
            .preset(preset)
            .check(Check::Crc64)
            // A call waiting on busy workers returns after this, so Ctrl-C is
            // seen within it even mid-block (liblzma's lzma_mt.timeout).
            .timeout_ms(100)
            .encoder()
            .map_err(|e| io::Error::other(format!("xz encoder: {e}")))?,
        out: Vec::with_capacity(OUT_BUF),
        dst,
    };
    let len = src.metadata()?.len();
    let extents = crate::sparse::data_extents(src, len)?;
    let mut buf = vec![0u8; CHUNK];
    let zeros = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for crate::sparse::ByteRange { start, end } in extents {
        while pos < start {
            let k = (start - pos).min(CHUNK as u64) as usize;
            enc.feed(&zeros[..k])?;
            pos += k as u64;
            progress(pos);
        }
        while pos < end {
            let k = ((end - pos) as usize).min(CHUNK);
            src.read_exact_at(&mut buf[..k], pos)?;
            enc.feed(&buf[..k])?;
            pos += k as u64;
            progress(pos);
        }
    }
    while pos < len {
        let k = (len - pos).min(CHUNK as u64) as usize;
        enc.feed(&zeros[..k])?;
        pos += k as u64;
        progress(pos);
    }
    enc.finish()
}

/// Output buffer of the encoder: what one `process` call may produce.
const OUT_BUF: usize = 1 << 20;

/// A liblzma encoder stream writing to `dst`, checking for Ctrl-C between calls.
struct Encoder<'a> {
    stream: Stream,
    out: Vec<u8>,
    dst: &'a mut File,
}

impl Encoder<'_> {
    /// Hands all of `input` to the encoder, writing what it produces.
    fn feed(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            crate::interrupt::check()?;
            let before = self.stream.total_in();
            self.stream
                .process_vec(input, &mut self.out, Action::Run)
                .map_err(io::Error::other)?;
            input = &input[(self.stream.total_in() - before) as usize..];
            self.drain()?;
        }
        Ok(())
    }

    /// Ends the stream and writes the rest.
    fn finish(mut self) -> io::Result<()> {
        loop {
            crate::interrupt::check()?;
            let status = self
                .stream
                .process_vec(&[], &mut self.out, Action::Finish)
                .map_err(io::Error::other)?;
            self.drain()?;
            if status == Status::StreamEnd {
                return self.dst.flush();
            }
        }
    }

    fn drain(&mut self) -> io::Result<()> {
        self.dst.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }
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
        let mut seen = Vec::new();
        xz(&File::open(&p).unwrap(), &mut out, 2, 1, &mut |n| {
            seen.push(n)
        })
        .unwrap();
        // Progress counts input consumed, holes included, up to the whole length.
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert!(seen.len() > 2, "{seen:?}");
        assert_eq!(seen.last(), Some(&(9 << 20)));
        let mut d = liblzma::read::XzDecoder::new_multi_decoder(
            File::open(dir.path().join("a.img.xz")).unwrap(),
        );
        let mut back = Vec::new();
        d.read_to_end(&mut back).unwrap();
        assert_eq!(back, std::fs::read(&p).unwrap());
    }
}
