//! Decompressing readers for the compressed images `flash` streams: `.xz` (liblzma,
//! multi-threaded for one stream), `.zst` (ruzstd, every frame of the file) and `.gz`
//! (flate2, every member). Each checks its format's integrity data as it goes.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

use super::content::Compression;

/// A reader of the decompressed bytes of `file` from its start. `xz_streams` is the
/// number of `.xz` streams (see [`super::xz_size`]).
pub fn decoder<'a>(
    file: &'a File,
    compression: Compression,
    xz_streams: u32,
) -> io::Result<Box<dyn Read + 'a>> {
    let mut f = file;
    f.seek(SeekFrom::Start(0))?;
    let input = BufReader::with_capacity(1 << 20, file);
    Ok(match compression {
        Compression::None => Box::new(input),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_stream(
            input,
            xz_stream(xz_streams)?,
        )),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(ZstdFrames::new(input)?),
    })
}

fn xz_stream(streams: u32) -> io::Result<liblzma::stream::Stream> {
    use liblzma::stream::{CONCATENATED, Stream};
    if streams > 1 {
        Stream::new_stream_decoder(u64::MAX, CONCATENATED)
    } else {
        crate::fetch::decompress::mt_xz_decoder()
    }
    .map_err(|e| io::Error::other(format!("cannot start the xz decoder: {e}")))
}

/// Counts the decompressed bytes of `file` by decoding it once (formats whose headers
/// do not reliably record the size: gzip's ISIZE is modulo 2^32 and per member, a
/// zstd frame's content size is optional and there may be several frames).
pub fn count(file: &File, compression: Compression) -> io::Result<u64> {
    io::copy(&mut decoder(file, compression, 1)?, &mut io::sink())
}

/// Every zstd frame of a file in turn (`zstd` writes one, `cat a.zst b.zst` more;
/// skippable frames are passed over by the frame decoder).
struct ZstdFrames<R: BufRead> {
    dec: Option<StreamingDecoder<R, FrameDecoder>>,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(input: R) -> io::Result<Self> {
        let dec = StreamingDecoder::new(input).map_err(zstd_err)?;
        Ok(Self { dec: Some(dec) })
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: another one may follow.
            let Some(done) = self.dec.take() else {
                return Ok(0);
            };
            let (mut input, frames) = done.into_parts();
            // ruzstd leaves the frame's content checksum (XXH64, low 32 bits) to us.
            if let (Some(want), Some(got)) = (
                frames.get_checksum_from_data(),
                frames.get_calculated_checksum(),
            ) && want != got
            {
                return Err(zstd_err(format!(
                    "content checksum mismatch ({got:08x}, the frame says {want:08x}): the data is corrupt"
                )));
            }
            if input.fill_buf()?.is_empty() {
                return Ok(0);
            }
            self.dec = Some(StreamingDecoder::new_with_decoder(input, frames).map_err(zstd_err)?);
        }
    }
}

fn zstd_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(bytes: &[u8]) -> File {
        let mut t = tempfile::tempfile().unwrap();
        t.write_all(bytes).unwrap();
        t
    }

    #[test]
    fn gzip_members_are_all_read_and_counted() {
        let mut out = Vec::new();
        for part in [&b"hello "[..], &b"world"[..]] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            out.extend(e.finish().unwrap());
        }
        let f = file_of(&out);
        assert_eq!(count(&f, Compression::Gzip).unwrap(), 11);
        let mut s = String::new();
        decoder(&f, Compression::Gzip, 1)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello world");
        // A corrupted member fails (CRC32), it is not silently short.
        let mut bad = out.clone();
        let k = bad.len() - 12;
        bad[k] ^= 0xff;
        assert!(count(&file_of(&bad), Compression::Gzip).is_err());
    }

    fn zst(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn zstd_frames_are_all_read_and_checksums_checked() {
        let a = vec![1u8; 300_000];
        let b = b"second frame".to_vec();
        let mut both = zst(&a);
        let first_len = both.len();
        both.extend(zst(&b));
        let f = file_of(&both);
        let mut out = Vec::new();
        decoder(&f, Compression::Zstd, 0)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), a.len() + b.len());
        assert!(out[..a.len()] == a[..] && out[a.len()..] == b[..]);
        assert_eq!(count(&f, Compression::Zstd).unwrap(), out.len() as u64);
        // The first frame's content checksum (its last 4 bytes) damaged.
        let mut bad = both.clone();
        bad[first_len - 1] ^= 0xff;
        let e = count(&file_of(&bad), Compression::Zstd).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn concatenated_xz_streams_are_all_read() {
        let xz = |d: &[u8]| {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(d).unwrap();
            e.finish().unwrap()
        };
        let mut both = xz(b"one ");
        both.extend(xz(b"two"));
        let f = file_of(&both);
        let size = super::super::xz_size::xz_size(&f, both.len() as u64).unwrap();
        assert_eq!(size.streams, 2);
        let mut s = String::new();
        decoder(&f, Compression::Xz, size.streams)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "one two");
    }
}
