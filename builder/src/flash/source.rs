//! What to write: a disk image (raw, or `.xz`/`.zst`/`.gz` decompressed as it
//! streams) and the byte ranges of it a card must hold.
//!
//! A raw image is opened through the image engine ([`Image::open`]: an MBR or GPT with
//! at least one partition inside the file) and its ranges are the file systems' block
//! map ([`usage::used_ranges`]), united with its `.bmap`'s ranges when a `.bmap` that
//! belongs to it is found (a foreign tool's `.bmap` may leave out zero-filled
//! metadata; only the `.bmap`'s ranges carry checksums). A compressed image is checked
//! from its first decompressed bytes, then decompressed once into an unnamed sparse
//! temporary file next to it ([`unpack`]) and mapped like a raw image. When that file
//! cannot be made (no space), it is streamed and written whole, every byte, as Imager
//! does: a stream's file systems cannot be mapped, and its `.bmap`'s ranges alone are
//! not enough when another tool made it (bmaptool maps a sparse file's holes, and
//! zero-filled metadata may be a hole); its `.bmap`'s checksums are still checked.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::bmap::{self, Bmap};
use crate::image::{Image, ImageError, usage};

use super::FlashError;
use super::content::{self, Compression};
use super::decode;
use super::ranges;
pub use super::ranges::SourceRange;
use super::unpack::{self, UnpackError};
use super::xz_size::xz_size;

/// Where the ranges to write came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum MapOrigin {
    /// The file systems' block map of the image (no usable `.bmap`).
    #[serde(rename = "file-systems")]
    FileSystems,
    /// A `.bmap`'s ranges united with the file systems' block map.
    #[serde(rename = "bmap+file-systems")]
    BmapAndFileSystems(PathBuf),
    /// Every byte of a compressed image, its `.bmap`'s checksums checked on the way.
    #[serde(rename = "whole-image+bmap")]
    WholeImageWithBmap(PathBuf),
    /// Every byte: a compressed image without a usable `.bmap`.
    #[serde(rename = "whole-image")]
    WholeImage,
}

/// An open image and the ranges to write.
#[derive(Debug)]
pub struct Source {
    /// The image path.
    pub path: PathBuf,
    /// How the file is compressed.
    pub compression: Compression,
    /// The open file (compressed for a compressed image).
    file: File,
    /// Number of concatenated `.xz` streams (0 for other formats).
    xz_streams: u32,
    /// True when `file` is read through a decoder (a compressed image streamed);
    /// false for a raw image and a compressed one decompressed to a temporary file.
    stream: bool,
    /// True when a compressed image was decompressed into a temporary file first.
    pub decompressed_first: bool,
    /// Image size in bytes (uncompressed).
    pub image_size: u64,
    /// Ranges to write, sorted and disjoint.
    pub ranges: Vec<SourceRange>,
    /// Where `ranges` came from.
    pub origin: MapOrigin,
}

/// Bytes of a compressed image decompressed up front to check it is a disk image:
/// the MBR, a GPT header and its entries (LBA 0..34 of 512 or 4096-byte sectors).
const PROBE: u64 = 1 << 20;

impl Source {
    /// Opens `image`, checks it is a disk image and finds the ranges to write. Problems
    /// with a `.bmap` (unreadable, another image's) are returned as warnings.
    pub fn open(image: &Path) -> Result<(Source, Vec<String>), FlashError> {
        let img_err = |source| FlashError::Image {
            path: image.to_path_buf(),
            source,
        };
        let file = File::open(image).map_err(img_err)?;
        let meta = file.metadata().map_err(img_err)?;
        if !meta.is_file() {
            return Err(not_image(image, "it is not a regular file"));
        }
        let mut head = vec![0u8; meta.len().min(PROBE) as usize];
        file.read_exact_at(&mut head, 0).map_err(img_err)?;
        let compression = content::compression(&head).map_err(|format| FlashError::NotAnImage {
            path: image.to_path_buf(),
            what: format!(
                "it is {format}-compressed; flash reads raw images, .xz, .zst and .gz (decompress it first)"
            ),
        })?;
        match compression {
            Compression::None => Self::open_raw(image, file, &head),
            c => Self::open_compressed(image, file, meta.len(), c),
        }
    }

    fn open_raw(path: &Path, file: File, head: &[u8]) -> Result<(Source, Vec<String>), FlashError> {
        let image = Image::open(path).map_err(|e| classify(path, head, "", e))?;
        if image.table().partitions.is_empty() {
            return Err(not_image(path, "its partition table holds no partition"));
        }
        let image_size = image.size();
        let mut warnings: Vec<String> = image.warnings().to_vec();
        let (map, origin) = map_raw(path, &image, &mut warnings)?;
        Ok((
            Source {
                path: path.to_path_buf(),
                compression: Compression::None,
                file,
                xz_streams: 0,
                stream: false,
                decompressed_first: false,
                image_size,
                ranges: map,
                origin,
            },
            warnings,
        ))
    }

    fn open_compressed(
        path: &Path,
        file: File,
        len: u64,
        compression: Compression,
    ) -> Result<(Source, Vec<String>), FlashError> {
        let name = format_name(compression);
        let unreadable = |reason: String| FlashError::NotAnImage {
            path: path.to_path_buf(),
            what: format!("it is {name} data that cannot be read: {reason}"),
        };
        // The card size check needs the uncompressed size before anything is written:
        // .xz records it in its indexes; .zst and .gz are decoded once to count it.
        let (image_size, xz_streams) = if compression == Compression::Xz {
            let size = xz_size(&file, len).map_err(unreadable)?;
            (size.uncompressed, size.streams)
        } else {
            let n = decode::count(&file, compression).map_err(|e| unreadable(e.to_string()))?;
            (n, 0)
        };
        // The first decompressed bytes, laid into a sparse file of the image's size, go
        // through the same checks as a raw image before the card is touched.
        let mut head = Vec::new();
        decode::decoder(&file, compression, xz_streams)
            .and_then(|dec| dec.take(PROBE.min(image_size)).read_to_end(&mut head))
            .map_err(|e| unreadable(e.to_string()))?;
        let probe_io = |source| FlashError::Image {
            path: path.to_path_buf(),
            source,
        };
        let probe = tempfile::tempfile().map_err(probe_io)?;
        probe.set_len(image_size).map_err(probe_io)?;
        probe.write_all_at(&head, 0).map_err(probe_io)?;
        let probe_path = PathBuf::from(format!("/proc/self/fd/{}", probe.as_raw_fd()));
        let prefix = format!("it is {name} data whose content is not a disk image: ");
        let image = Image::open(&probe_path).map_err(|e| classify(path, &head, &prefix, e))?;
        if image.table().partitions.is_empty() {
            return Err(not_image(
                path,
                &format!("{prefix}its partition table holds no partition"),
            ));
        }
        drop(image);
        drop(probe);
        let mut warnings = Vec::new();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let unpacked = decode::decoder(&file, compression, xz_streams)
            .map_err(UnpackError::Data)
            .and_then(|mut dec| unpack::unpack(&mut *dec, image_size, dir));
        match unpacked {
            Ok(u) => {
                let image = Image::open(&u.path).map_err(|e| classify(path, &head, &prefix, e))?;
                let (map, origin) = map_raw(path, &image, &mut warnings)?;
                return Ok((
                    Source {
                        path: path.to_path_buf(),
                        compression,
                        file: u.file,
                        xz_streams,
                        stream: false,
                        decompressed_first: true,
                        image_size,
                        ranges: map,
                        origin,
                    },
                    warnings,
                ));
            }
            Err(UnpackError::Data(e)) => return Err(unreadable(e.to_string())),
            Err(UnpackError::Local(e)) => warnings.push(format!(
                "cannot decompress {} into a temporary file in {} to map its file systems ({e}); writing every byte of it instead",
                path.display(),
                dir.display()
            )),
        }
        let whole = [(0, image_size)];
        let (map, origin) = match find_bmap(path, image_size, &mut warnings) {
            Some((map_path, b)) => (
                ranges::union(&bmap_ranges(&b), &whole),
                MapOrigin::WholeImageWithBmap(map_path),
            ),
            None => (ranges::union(&[], &whole), MapOrigin::WholeImage),
        };
        Ok((
            Source {
                path: path.to_path_buf(),
                compression,
                file,
                xz_streams,
                stream: true,
                decompressed_first: false,
                image_size,
                ranges: map,
                origin,
            },
            warnings,
        ))
    }

    /// Total bytes in the ranges.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }

    /// True when the image's bytes can be read at any offset (a raw image, or one
    /// decompressed into a temporary file); false for a stream.
    pub(crate) fn is_raw(&self) -> bool {
        !self.stream
    }

    /// A reader of the image's (decompressed) bytes, read in increasing offsets.
    pub(crate) fn reader(&self) -> Result<ImageReader<'_>, FlashError> {
        Ok(match self.compression {
            c if self.stream => ImageReader::Stream {
                dec: decode::decoder(&self.file, c, self.xz_streams)
                    .map_err(|e| read_err(&self.path, 0, e))?,
                pos: 0,
            },
            _ => ImageReader::Raw(&self.file),
        })
    }
}

/// The image's bytes: positional reads of a raw file, or a decompressing stream that
/// only moves forward.
pub(crate) enum ImageReader<'a> {
    /// A raw image.
    Raw(&'a File),
    /// A decompressed stream at byte `pos`.
    Stream {
        /// The decoder.
        dec: Box<dyn Read + 'a>,
        /// Bytes already produced.
        pos: u64,
    },
}

impl ImageReader<'_> {
    /// Fills `buf` from byte `offset`; a stream skips forward to it (never back).
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            ImageReader::Raw(f) => f.read_exact_at(buf, offset),
            ImageReader::Stream { dec, pos } => {
                skip_to(dec, pos, offset)?;
                dec.read_exact(buf).map_err(|e| eof_hint(e, *pos))?;
                *pos += buf.len() as u64;
                Ok(())
            }
        }
    }

    /// Reads a stream to its end, which must be at `size`: the decoder checks the
    /// integrity of everything (index, checks) only there.
    pub fn finish(&mut self, size: u64) -> io::Result<()> {
        if let ImageReader::Stream { dec, pos } = self {
            skip_to(dec, pos, size)?;
            let mut extra = [0u8; 1];
            if dec.read(&mut extra)? != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the decompressed data goes on past {size} bytes, the size its index gives"
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn skip_to(dec: &mut Box<dyn Read + '_>, pos: &mut u64, offset: u64) -> io::Result<()> {
    if offset < *pos {
        return Err(io::Error::other(format!(
            "a compressed image is read forward only (at byte {pos}, asked for {offset})"
        )));
    }
    let want = offset - *pos;
    let got = io::copy(&mut dec.by_ref().take(want), &mut io::sink())?;
    *pos += got;
    if got < want {
        return Err(eof_hint(io::ErrorKind::UnexpectedEof.into(), *pos));
    }
    Ok(())
}

fn eof_hint(e: io::Error, pos: u64) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the decompressed data ends early, near byte {pos}: the file is truncated"),
        )
    } else {
        e
    }
}

fn format_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "raw",
        Compression::Xz => "xz",
        Compression::Zstd => "zstd",
        Compression::Gzip => "gzip",
    }
}

fn read_err(path: &Path, offset: u64, source: io::Error) -> FlashError {
    FlashError::ImageRead {
        path: path.to_path_buf(),
        offset,
        source,
    }
}

fn not_image(path: &Path, what: &str) -> FlashError {
    FlashError::NotAnImage {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

/// The image engine's refusal, as flash words it.
fn classify(path: &Path, head: &[u8], prefix: &str, e: ImageError) -> FlashError {
    match e {
        ImageError::Io { source, .. } => FlashError::Image {
            path: path.to_path_buf(),
            source,
        },
        other => FlashError::NotAnImage {
            path: path.to_path_buf(),
            what: format!("{prefix}{}", content::describe(head, &other)),
        },
    }
}

/// The ranges of a raw (or decompressed) `image` found at `path`: its file systems'
/// block map, united with its `.bmap`'s ranges when it has one.
fn map_raw(
    path: &Path,
    image: &Image,
    warnings: &mut Vec<String>,
) -> Result<(Vec<SourceRange>, MapOrigin), FlashError> {
    let used = usage::used_ranges(image).map_err(|e| FlashError::Map {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(match find_bmap(path, image.size(), warnings) {
        Some((map_path, b)) => (
            ranges::union(&bmap_ranges(&b), &used),
            MapOrigin::BmapAndFileSystems(map_path),
        ),
        None => (ranges::union(&[], &used), MapOrigin::FileSystems),
    })
}

/// The `.bmap`'s byte ranges, with their checksums.
fn bmap_ranges(b: &Bmap) -> Vec<SourceRange> {
    b.ranges
        .iter()
        .map(|r| {
            let (offset, len) = bmap::byte_span(r.first, r.last, b.block_size, b.image_size);
            SourceRange {
                offset,
                len,
                sha256: Some(r.sha256),
            }
        })
        .filter(|r| r.len > 0)
        .collect()
}

/// The first `.bmap` of [`bmap_candidates`] that parses and is for an image of
/// `image_size` bytes; a warning for each one found that is not.
fn find_bmap(image: &Path, image_size: u64, warnings: &mut Vec<String>) -> Option<(PathBuf, Bmap)> {
    for map_path in bmap_candidates(image) {
        if !map_path.is_file() {
            continue;
        }
        match Bmap::load(&map_path) {
            Ok(b) if b.image_size == image_size => return Some((map_path, b)),
            Ok(b) => warnings.push(format!(
                "{} is for an image of {} bytes, {} has {}; ignoring it",
                map_path.display(),
                b.image_size,
                image.display(),
                image_size
            )),
            Err(e) => warnings.push(format!("{}: {e}; ignoring it", map_path.display())),
        }
    }
    None
}

/// Where bmaptool looks for an image's map (`upstream.toml` `[bmap_lookup]`):
/// `IMAGE.bmap`, then with one extension after another taken off (`X.img.xz` →
/// `X.img.xz.bmap`, `X.img.bmap`, `X.bmap`).
pub fn bmap_candidates(image: &Path) -> Vec<PathBuf> {
    let rule = &crate::upstream::facts().bmap_lookup;
    let mut out = Vec::new();
    let mut p = image.to_path_buf();
    loop {
        let mut with = p.as_os_str().to_owned();
        with.push(&rule.suffix);
        out.push(PathBuf::from(with));
        if !rule.strip_extensions || p.extension().is_none() {
            return out;
        }
        p.set_extension("");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmap_candidates_follow_bmaptool() {
        let c = bmap_candidates(Path::new("/o/n1.img.xz"));
        let want: Vec<PathBuf> = ["/o/n1.img.xz.bmap", "/o/n1.img.bmap", "/o/n1.bmap"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(c, want);
    }
}
