//! The ext4 root partition, read-only, through positioned reads at the partition's
//! offset (`ext4-view`). Nothing here can write to the image.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use super::error::ImageError;
use super::release::{self, Release};
use super::table::Partition;

/// ext4's superblock magic (0xEF53) sits 1080 bytes into the partition.
const MAGIC_OFFSET: u64 = 1024 + 56;

/// Largest file [`RootFs::read`] reads whole: piimg reads configuration files
/// (os-release, passwd, dpkg's status, cloud-init's configs; a few MiB at most).
pub const MAX_READ: u64 = 64 << 20;

/// Positioned reads of one partition of the image file.
struct PartitionReader {
    file: Arc<File>,
    start: u64,
    size: u64,
}

impl Ext4Read for PartitionReader {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        let end = start_byte
            .checked_add(dst.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                format!(
                    "read of {} bytes at byte {start_byte} runs past the end of the partition \
                     ({} bytes)",
                    dst.len(),
                    self.size
                )
            })?;
        debug_assert!(end <= self.size);
        self.file.read_exact_at(dst, self.start + start_byte)?;
        Ok(())
    }
}

/// Refuses a superblock whose block count runs past the partition, before ext4-view
/// sizes its block group table from it (an absurd count aborted the process on an
/// allocation). The kernel refuses the same at mount: fs/ext4/super.c,
/// `ext4_check_geometry()`, "bad geometry: block count exceeds size of device".
/// Block count and size are read as ext4-view 1.0 reads them (`superblock.rs`:
/// `s_blocks_count_hi << 32 | s_blocks_count_lo` at 0x150/0x4, `1024 << s_log_block_size`
/// at 0x18); fields it rejects itself are left to it.
fn check_geometry(file: &File, partition: &Partition) -> Result<(), String> {
    let mut sb = [0u8; 1024];
    if partition.size < 2048 || file.read_exact_at(&mut sb, partition.start + 1024).is_err() {
        return Ok(());
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let blocks = (u64::from(u32_at(0x150)) << 32) | u64::from(u32_at(0x4));
    let Some(block_size) = 2u64.checked_pow(u32_at(0x18).saturating_add(10)) else {
        return Ok(());
    };
    match blocks.checked_mul(block_size) {
        Some(bytes) if bytes <= partition.size => Ok(()),
        _ => Err(format!(
            "the superblock says {blocks} blocks of {block_size} bytes (bytes 1028 and 1360 \
             of the partition), more than the partition's {} bytes: bad geometry, the file \
             system or the partition table is damaged",
            partition.size
        )),
    }
}

/// The root file system of an [`super::Image`] (read-only).
pub struct RootFs {
    fs: Ext4,
    image: PathBuf,
    partition: Partition,
}

impl std::fmt::Debug for RootFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootFs")
            .field("image", &self.image)
            .field("partition", &self.partition.index)
            .finish_non_exhaustive()
    }
}

impl RootFs {
    /// Opens the ext4 file system of `partition` in `file`.
    pub(crate) fn open(
        file: Arc<File>,
        image: &Path,
        partition: &Partition,
    ) -> Result<Self, ImageError> {
        let not_ext4 = |reason: String| ImageError::NotExt4 {
            path: image.to_path_buf(),
            index: partition.index,
            offset: partition.start,
            reason,
        };
        let mut magic = [0u8; 2];
        if partition.size < MAGIC_OFFSET + 2 {
            return Err(not_ext4("the partition is too small".into()));
        }
        file.read_exact_at(&mut magic, partition.start + MAGIC_OFFSET)
            .map_err(|e| ImageError::io(image, "reading the root superblock", e))?;
        if magic != [0x53, 0xef] {
            return Err(not_ext4(format!(
                "no ext2/3/4 superblock magic 0xEF53 at byte 1080 (found 0x{:02X}{:02X})",
                magic[1], magic[0]
            )));
        }
        check_geometry(&file, partition).map_err(not_ext4)?;
        let reader = PartitionReader {
            file,
            start: partition.start,
            size: partition.size,
        };
        let fs = Ext4::load(Box::new(reader)).map_err(|e| not_ext4(e.to_string()))?;
        Ok(Self {
            fs,
            image: image.to_path_buf(),
            partition: partition.clone(),
        })
    }

    /// The partition this file system lives in.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// The image file.
    pub fn image_path(&self) -> &Path {
        &self.image
    }

    /// The file system label (`rootfs` on Raspberry Pi OS).
    pub fn label(&self) -> String {
        self.fs.label().display().to_string()
    }

    fn err(&self, path: &str, e: Ext4Error) -> ImageError {
        ImageError::Ext4 {
            image: self.image.clone(),
            path: path.to_string(),
            reason: e.to_string(),
        }
    }

    /// The contents of the file at absolute `path` (symlinks followed), or `None` if it
    /// does not exist.
    /// A file larger than [`MAX_READ`] is an error: ext4-view allocates the inode's
    /// size up front, so a damaged size would abort the process.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        match self.fs.metadata(path) {
            Ok(meta) if meta.len() > MAX_READ => {
                return Err(ImageError::Ext4 {
                    image: self.image.clone(),
                    path: path.to_string(),
                    reason: format!(
                        "its inode says it holds {} bytes, more than the {MAX_READ} piimg \
                         reads whole from a root (the configuration files it reads are far \
                         smaller; is the root damaged?)",
                        meta.len()
                    ),
                });
            }
            Err(Ext4Error::NotFound) => return Ok(None),
            Err(e) => return Err(self.err(path, e)),
            Ok(_) => {}
        }
        match self.fs.read(path) {
            Ok(data) => Ok(Some(data)),
            Err(Ext4Error::NotFound) => Ok(None),
            Err(e) => Err(self.err(path, e)),
        }
    }

    /// The file at `path` as UTF-8 text (lossy), or `None` if it does not exist.
    pub fn read_text(&self, path: &str) -> Result<Option<String>, ImageError> {
        Ok(self
            .read(path)?
            .map(|d| String::from_utf8_lossy(&d).into_owned()))
    }

    /// Up to `len` bytes from the start of the file at `path`, or `None` if missing.
    pub fn read_head(&self, path: &str, len: usize) -> Result<Option<Vec<u8>>, ImageError> {
        let mut file = match self.fs.open(path) {
            Ok(f) => f,
            Err(Ext4Error::NotFound) => return Ok(None),
            Err(e) => return Err(self.err(path, e)),
        };
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match file.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => {
                    return Err(ImageError::Ext4 {
                        image: self.image.clone(),
                        path: path.to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        buf.truncate(got);
        Ok(Some(buf))
    }

    /// True when something exists at `path` (symlinks followed).
    pub fn exists(&self, path: &str) -> Result<bool, ImageError> {
        self.fs.exists(path).map_err(|e| self.err(path, e))
    }

    /// Names in the directory at `path`, or `None` if it does not exist.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>, ImageError> {
        let iter = match self.fs.read_dir(path) {
            Ok(it) => it,
            Err(Ext4Error::NotFound) => return Ok(None),
            Err(e) => return Err(self.err(path, e)),
        };
        let mut out = Vec::new();
        for e in iter {
            let e = e.map_err(|e| self.err(path, e))?;
            let name = e.file_name().display().to_string();
            if name != "." && name != ".." {
                out.push(name);
            }
        }
        out.sort();
        Ok(Some(out))
    }

    /// What OS this root holds, refusing anything but arm64 (see [`Release`]).
    pub fn release(&self) -> Result<Release, ImageError> {
        let r = self.detect_release()?;
        release::require_supported_arch(&self.image, &r)?;
        Ok(r)
    }

    /// What OS this root holds, whatever its architecture (for `inspect`).
    pub fn detect_release(&self) -> Result<Release, ImageError> {
        release::detect(self)
    }
}
