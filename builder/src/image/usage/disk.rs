//! What the file-system readers share: positioned reads of the image that fail with a
//! named error, and the verdict a reader returns for one partition.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::ranges::Ranges;
use crate::image::ImageError;

/// What a file-system reader decided about one partition.
pub(super) enum Verdict {
    /// A FAT file system and the bytes it needs.
    Fat { bits: u8, ranges: Ranges },
    /// An ext2/3/4 file system and the bytes it needs.
    Ext4 { ranges: Ranges },
    /// Not understood: map the whole partition.
    Whole(String),
}

/// Positioned reads of the image that fail with a named error, never short.
pub(super) struct Disk<'a> {
    /// The image file.
    pub(super) file: &'a File,
    /// Its path, for errors.
    pub(super) path: &'a Path,
    /// Its size in bytes.
    pub(super) size: u64,
}

impl Disk<'_> {
    /// Reads `buf.len()` bytes at `offset`; `what` names them in the error.
    pub(super) fn read(&self, offset: u64, buf: &mut [u8], what: &str) -> Result<(), ImageError> {
        let end = offset.saturating_add(buf.len() as u64);
        if end > self.size {
            return Err(ImageError::io(
                self.path,
                format!("{what} at byte {offset}"),
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("the image ends at byte {}", self.size),
                ),
            ));
        }
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.error(offset, what, e))
    }

    /// The error of a failed read of `what` at `offset`.
    pub(super) fn error(&self, offset: u64, what: &str, e: std::io::Error) -> ImageError {
        ImageError::io(self.path, format!("{what} at byte {offset}"), e)
    }
}
