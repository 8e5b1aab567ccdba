//! What to write: the image file and its mapped ranges, from `IMAGE.bmap` when it is
//! there and belongs to the image, otherwise from SEEK_DATA/SEEK_HOLE.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::bmap::{self, Bmap};

use super::FlashError;

/// One mapped byte range of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRange {
    /// Byte offset in the image (and on the target).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Expected SHA256 (hex) from the `.bmap`, if one was used.
    pub sha256: Option<String>,
}

/// Where the mapped ranges came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapOrigin {
    /// A `.bmap` file next to the image.
    Bmap(PathBuf),
    /// The image's own holes (SEEK_DATA/SEEK_HOLE).
    Scan,
}

/// An open image and the ranges to write.
#[derive(Debug)]
pub struct Source {
    /// The image path.
    pub path: PathBuf,
    /// The open image.
    pub file: File,
    /// Image size in bytes.
    pub image_size: u64,
    /// Mapped ranges, sorted and disjoint.
    pub ranges: Vec<SourceRange>,
    /// Where `ranges` came from.
    pub origin: MapOrigin,
}

impl Source {
    /// Opens `image` and finds its mapped ranges. Problems with a `.bmap` (stale,
    /// unreadable) are returned as warnings and the image is scanned instead.
    pub fn open(image: &Path) -> Result<(Source, Vec<String>), FlashError> {
        let img_err = |source| FlashError::Image {
            path: image.to_path_buf(),
            source,
        };
        let file = File::open(image).map_err(img_err)?;
        let meta = file.metadata().map_err(img_err)?;
        if !meta.is_file() {
            return Err(img_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let image_size = meta.len();
        let mut warnings = Vec::new();
        for map_path in bmap_candidates(image) {
            if !map_path.exists() {
                continue;
            }
            match Bmap::load(&map_path) {
                Ok(b) if b.image_size == image_size => {
                    let ranges = b
                        .ranges
                        .iter()
                        .map(|r| {
                            let (offset, len) =
                                bmap::byte_span(r.first, r.last, b.block_size, b.image_size);
                            SourceRange {
                                offset,
                                len,
                                sha256: Some(r.sha256.clone()),
                            }
                        })
                        .filter(|r| r.len > 0)
                        .collect();
                    let source = Source {
                        path: image.to_path_buf(),
                        file,
                        image_size,
                        ranges,
                        origin: MapOrigin::Bmap(map_path),
                    };
                    return Ok((source, warnings));
                }
                Ok(b) => warnings.push(format!(
                    "{} is for an image of {} bytes, {} has {}; ignoring it and scanning the image",
                    map_path.display(),
                    b.image_size,
                    image.display(),
                    image_size
                )),
                Err(e) => warnings.push(format!(
                    "{}: {e}; ignoring it and scanning the image",
                    map_path.display()
                )),
            }
        }
        let ranges = bmap::mapped_block_ranges(&file, bmap::BLOCK_SIZE)
            .map_err(img_err)?
            .into_iter()
            .map(|(first, last)| {
                let (offset, len) = bmap::byte_span(first, last, bmap::BLOCK_SIZE, image_size);
                SourceRange {
                    offset,
                    len,
                    sha256: None,
                }
            })
            .filter(|r| r.len > 0)
            .collect();
        Ok((
            Source {
                path: image.to_path_buf(),
                file,
                image_size,
                ranges,
                origin: MapOrigin::Scan,
            },
            warnings,
        ))
    }

    /// Total bytes in the mapped ranges.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.len).sum()
    }
}

/// `X.img.bmap`, then `X.bmap` (bmaptool looks in both places).
fn bmap_candidates(image: &Path) -> Vec<PathBuf> {
    let mut with_suffix = image.as_os_str().to_owned();
    with_suffix.push(".bmap");
    let mut out = vec![PathBuf::from(with_suffix)];
    let replaced = image.with_extension("bmap");
    if replaced != out[0] && replaced != image {
        out.push(replaced);
    }
    out
}
