//! Disk images as data: partition tables (MBR, GPT), the FAT32 boot partition edited
//! in place, the ext4 root read-only. No root, no loop mounts.
//!
//! ```no_run
//! use piimg::image::{Image, Timestamp};
//! # fn main() -> Result<(), piimg::image::ImageError> {
//! let image = Image::open_rw(std::path::Path::new("node.img"))?;
//! let release = image.root()?.release()?;
//! let mut boot = image.boot_at(Timestamp::from_unix(1_700_000_000))?;
//! boot.write("piimg/node.json", b"{}")?;
//! boot.commit()?;
//! # let _ = release; Ok(()) }
//! ```

mod detect;
mod elf;
mod error;
mod fat;
mod fat_damage;
mod fat_guard;
mod fat_raw;
mod fat_table;
pub(crate) mod fat_time;
mod fat_tree;
mod first_boot;
mod gpt;
mod journal;
mod mbr;
mod mechanism;
mod problem;
mod release;
mod rootfs;
pub mod sanity;
mod sniff;
mod table;
pub mod usage;
mod vintage;
mod window;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use elf::Arch;
pub use error::ImageError;
pub use fat::{BootFs, Change, FatEntry};
pub use fat_time::Timestamp;
pub use first_boot::{FirstBoot, Mechanism, Supported, choose as choose_first_boot};
pub use release::{Release, User, require_supported_arch};
pub use rootfs::RootFs;
pub use table::{Partition, PartitionKind, PartitionTable, SECTOR, Scheme};
pub use vintage::{BootEvidence, VintageMatch, vintage};

use sniff::Sniffed;
use window::Overlay;

/// Bytes read from the start of the file to recognise it (covers a GPT header and an
/// ext4 superblock at byte 1024 for the "bare file system" hint).
const HEAD: usize = 4096;

/// An opened disk image (a file or a block device) with a validated partition table.
#[derive(Debug)]
pub struct Image {
    path: PathBuf,
    file: Arc<File>,
    size: u64,
    table: PartitionTable,
    writable: bool,
    warnings: Vec<String>,
}

impl Image {
    /// Opens `path` read-only (works on block devices).
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        Self::open_with(path, false)
    }

    /// Opens `path` for editing the boot partition. The root partition is never written.
    pub fn open_rw(path: &Path) -> Result<Self, ImageError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, writable: bool) -> Result<Self, ImageError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| ImageError::io(path, "opening the image", e))?;
        if file
            .metadata()
            .map_err(|e| ImageError::io(path, "reading file metadata", e))?
            .is_dir()
        {
            return Err(ImageError::NotADiskImage {
                path: path.to_path_buf(),
                reason: "it is a directory".into(),
            });
        }
        // Seeking to the end also sizes block devices, whose metadata length is 0.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|e| ImageError::io(path, "finding the image size", e))?;
        if size == 0 {
            return Err(ImageError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut head = vec![0u8; (size as usize).min(HEAD)];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| ImageError::io(path, "reading the first sector", e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        match sniff::sniff(&head, &name) {
            Some(Sniffed::Compressed { format, tool }) => {
                return Err(ImageError::Compressed {
                    path: path.to_path_buf(),
                    format,
                    tool,
                });
            }
            Some(Sniffed::Other(what)) => {
                return Err(ImageError::NotADiskImage {
                    path: path.to_path_buf(),
                    reason: what.to_string(),
                });
            }
            None => {}
        }
        if !sniff::has_boot_signature(&head) {
            return Err(ImageError::NotADiskImage {
                path: path.to_path_buf(),
                reason: if size < 512 {
                    format!("it is only {size} bytes, smaller than one sector")
                } else {
                    "no MBR signature 0x55AA at bytes 510..512, so no partition table".into()
                },
            });
        }
        let mut warnings = Vec::new();
        let table = if mbr::is_protective(&head) {
            let dev = file
                .try_clone()
                .map_err(|e| ImageError::io(path, "duplicating the file handle", e))?;
            let read = gpt::read(dev).map_err(|reason| ImageError::BadTable {
                path: path.to_path_buf(),
                reason,
            })?;
            warnings.extend(read.warning);
            read.table
        } else {
            mbr::read(&mut file, &head).map_err(|reason| ImageError::NotADiskImage {
                path: path.to_path_buf(),
                reason,
            })?
        };
        table.check(size).map_err(|reason| ImageError::BadTable {
            path: path.to_path_buf(),
            reason,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file: Arc::new(file),
            size,
            table,
            writable,
            warnings,
        })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when opened with [`Image::open_rw`].
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The validated partition table.
    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// Things worth telling the user that did not stop the image from opening (e.g. a
    /// damaged primary GPT header that was replaced by the backup).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The boot (first FAT-typed) partition.
    pub fn boot_partition(&self) -> Result<&Partition, ImageError> {
        self.table
            .boot()
            .ok_or_else(|| ImageError::NoBootPartition {
                path: self.path.clone(),
            })
    }

    /// The root (first Linux-typed) partition.
    pub fn root_partition(&self) -> Result<&Partition, ImageError> {
        self.table
            .root()
            .ok_or_else(|| ImageError::NoRootPartition {
                path: self.path.clone(),
            })
    }

    /// The boot partition's file system; writes are stamped 1980-01-01 00:00:00.
    pub fn boot(&self) -> Result<BootFs, ImageError> {
        self.boot_at(Timestamp::dos_epoch())
    }

    /// The boot partition's file system; everything written is stamped `time` (take it
    /// from `SOURCE_DATE_EPOCH` for reproducible builds).
    pub fn boot_at(&self, time: Timestamp) -> Result<BootFs, ImageError> {
        let part = self.boot_partition()?;
        let overlay = Arc::new(Mutex::new(Overlay::new(self.file.clone(), self.size)));
        BootFs::open(overlay, &self.path, part, time, self.writable)
    }

    /// The root partition's ext4 file system (read-only).
    pub fn root(&self) -> Result<RootFs, ImageError> {
        let part = self.root_partition()?;
        RootFs::open(self.file.clone(), &self.path, part)
    }
}
