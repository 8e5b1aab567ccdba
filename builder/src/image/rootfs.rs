//! The ext4 root partition, read-only, through positioned reads at the partition's
//! offset (`ext4-view`). Nothing here can write to the image.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ext4_view::{Ext4, Ext4Error, Ext4Read};

use super::error::ImageError;
use super::journal;
use super::table::Partition;

/// ext4's superblock magic (0xEF53) sits 1080 bytes into the partition.
const MAGIC_OFFSET: u64 = 1024 + 56;

/// Largest file [`RootFs::read`] reads whole: piimg reads configuration files
/// (os-release, passwd, dpkg's status, cloud-init's configs; a few MiB at most).
pub const MAX_READ: u64 = 64 << 20;

/// Largest directory piimg searches or lists: ext4-view walks a directory's blocks one
/// by one for each lookup, and a damaged extent tree can map the same block again and
/// again, so a directory claiming hundreds of MiB costs seconds per lookup and
/// gigabytes per listing. The directories piimg reads (`/etc`, `/usr/bin`,
/// `/var/lib/dpkg`, cloud-init's) are a few dozen KiB; 1 MiB holds at most ~87 000
/// names (12 bytes each at least).
pub const MAX_DIR_BYTES: u64 = 1 << 20;

/// Longest symlink target piimg follows: Linux's PATH_MAX (include/uapi/linux/limits.h),
/// which no symlink the kernel creates exceeds (fs/namei.c, fs/ext4/namei.c
/// ext4_symlink: at most one block).
pub const MAX_SYMLINK_BYTES: u64 = 4096;

/// Most symlinks followed for one path: Linux's MAXSYMLINKS (include/linux/namei.h).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// Positioned reads of one partition of the image file, through the in-memory journal
/// replay when the file system needs recovery.
struct PartitionReader {
    file: Arc<File>,
    start: u64,
    size: u64,
    recovery: Option<Recovery>,
}

/// What a file system that was not cleanly unmounted is read through.
struct Recovery {
    /// File-system block size.
    block_size: u64,
    /// Blocks whose newest committed copy is in the journal.
    blocks: HashMap<u64, journal::Copy>,
    /// The primary superblock (bytes 1024..2048) as read through the journal, with
    /// `needs_recovery` cleared so ext4-view reads the replayed state as it is.
    superblock: Option<Box<[u8; 1024]>>,
}

impl PartitionReader {
    /// Reads `dst.len()` bytes at `start_byte`, block by block through the replay.
    fn read_replayed(&self, start_byte: u64, dst: &mut [u8]) -> std::io::Result<()> {
        let Some(r) = &self.recovery else {
            return self.file.read_exact_at(dst, self.start + start_byte);
        };
        let end = start_byte + dst.len() as u64;
        let mut pos = start_byte;
        while pos < end {
            let block = pos / r.block_size;
            let within = pos % r.block_size;
            let n = (r.block_size - within).min(end - pos) as usize;
            let at = (pos - start_byte) as usize;
            let out = &mut dst[at..at + n];
            match r.blocks.get(&block) {
                Some(copy) => {
                    self.file
                        .read_exact_at(out, self.start + copy.offset + within)?;
                    if copy.escaped && within < 4 {
                        // The journal stored this block with its magic escaped
                        // (fs/jbd2/recovery.c: JBD2_FLAG_ESCAPE).
                        let magic = 0xC03B_3998u32.to_be_bytes();
                        for (i, b) in out.iter_mut().enumerate().take(4 - within as usize) {
                            *b = magic[within as usize + i];
                        }
                    }
                }
                None => self.file.read_exact_at(out, self.start + pos)?,
            }
            pos += n as u64;
        }
        if let Some(sb) = &r.superblock {
            let (lo, hi) = (start_byte.max(1024), end.min(2048));
            if lo < hi {
                dst[(lo - start_byte) as usize..(hi - start_byte) as usize]
                    .copy_from_slice(&sb[(lo - 1024) as usize..(hi - 1024) as usize]);
            }
        }
        Ok(())
    }
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
        self.read_replayed(start_byte, dst)?;
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
    warnings: Vec<String>,
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
        check_geometry(&file, partition).map_err(|reason| ImageError::Ext4Unreadable {
            path: image.to_path_buf(),
            index: partition.index,
            offset: partition.start,
            reason,
        })?;
        let mut sb = vec![0u8; 1024];
        if partition.size < 2048 {
            return Err(not_ext4(
                "the partition is too small for a superblock".into(),
            ));
        }
        file.read_exact_at(&mut sb, partition.start + 1024)
            .map_err(|e| ImageError::io(image, "reading the root superblock", e))?;
        let needs_recovery = journal::le32(&sb, journal::sb::FEATURE_COMPAT)
            & journal::sb::COMPAT_HAS_JOURNAL
            != 0
            && journal::le32(&sb, journal::sb::FEATURE_INCOMPAT) & journal::sb::INCOMPAT_RECOVER
                != 0;
        let mut warnings = Vec::new();
        let mut reader = PartitionReader {
            file: file.clone(),
            start: partition.start,
            size: partition.size,
            recovery: None,
        };
        if needs_recovery {
            let (recovery, warning) = recover(&file, partition, &sb);
            reader.recovery = Some(recovery);
            let mut patched = [0u8; 1024];
            reader
                .read_replayed(1024, &mut patched)
                .map_err(|e| ImageError::io(image, "reading the root superblock", e))?;
            journal::without_recovery_flag(&mut patched);
            if let Some(r) = reader.recovery.as_mut() {
                r.superblock = Some(Box::new(patched));
            }
            warnings.push(warning);
        }
        let fs = Ext4::load(Box::new(reader)).map_err(|e| ImageError::Ext4Unreadable {
            path: image.to_path_buf(),
            index: partition.index,
            offset: partition.start,
            reason: e.to_string(),
        })?;
        Ok(Self {
            fs,
            image: image.to_path_buf(),
            partition: partition.clone(),
            warnings,
        })
    }

    /// Things worth telling the user about how the file system was read (one line: it
    /// was not cleanly unmounted and how its journal was used).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
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

    /// Refuses `path` when resolving it would read something a damaged root can make
    /// huge: a directory it is looked up through (and, with `itself`, `path` when it
    /// is a directory) larger than [`MAX_DIR_BYTES`], a symlink on the way (the last
    /// component included) whose target claims more than [`MAX_SYMLINK_BYTES`] (ext4-view
    /// allocates a symlink's size before reading it), or more than [`MAX_SYMLINK_HOPS`]
    /// symlinks. The path is resolved here the way the kernel does, one component at a
    /// time from the root, so every lookup searches only directories already checked.
    /// Other problems are left to the call that follows, which names them.
    fn check_dirs(&self, path: &str, itself: bool) -> Result<(), ImageError> {
        let too_big = |at: String, reason: String| ImageError::Ext4 {
            image: self.image.clone(),
            path: at,
            reason,
        };
        let join = |parts: &[String]| format!("/{}", parts.join("/"));
        let check_dir = |parts: &[String]| -> Result<(), ImageError> {
            match self.fs.symlink_metadata(join(parts).as_str()) {
                Ok(m) if m.is_dir() && m.len() > MAX_DIR_BYTES => Err(too_big(
                    join(parts),
                    format!(
                        "the directory claims {} bytes, more than the {MAX_DIR_BYTES} \
                         piimg searches (the directories it reads are far smaller; is the \
                         root damaged?)",
                        m.len()
                    ),
                )),
                _ => Ok(()),
            }
        };
        let mut todo: std::collections::VecDeque<String> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(part) = todo.pop_front() {
            match part.as_str() {
                "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            check_dir(&resolved)?;
            resolved.push(part);
            let here = join(&resolved);
            let meta = match self.fs.symlink_metadata(here.as_str()) {
                Ok(m) => m,
                Err(_) => return Ok(()),
            };
            if !meta.file_type().is_symlink() {
                continue;
            }
            if meta.len() > MAX_SYMLINK_BYTES {
                return Err(too_big(
                    here,
                    format!(
                        "the symlink claims a {}-byte target, more than the {MAX_SYMLINK_BYTES} \
                         a path may have (is the root damaged?)",
                        meta.len()
                    ),
                ));
            }
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(too_big(
                    path.to_string(),
                    format!("more than {MAX_SYMLINK_HOPS} symlinks on the way (a loop?)"),
                ));
            }
            let Ok(target) = self.fs.read_link(here.as_str()) else {
                return Ok(());
            };
            let target = target.display().to_string();
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            for p in target.split('/').filter(|p| !p.is_empty()).rev() {
                todo.push_front(p.to_string());
            }
        }
        if itself {
            check_dir(&resolved)?;
        }
        Ok(())
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
    /// size up front, so a damaged size would abort the process. So is a directory on
    /// the way larger than [`MAX_DIR_BYTES`] (here and in every lookup below).
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        self.check_dirs(path, false)?;
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
        self.check_dirs(path, false)?;
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
        self.check_dirs(path, false)?;
        self.fs.exists(path).map_err(|e| self.err(path, e))
    }

    /// Names in the directory at `path`, or `None` if it does not exist; a directory
    /// larger than [`MAX_DIR_BYTES`] is an error.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>, ImageError> {
        self.check_dirs(path, true)?;
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
}

/// Replays the journal of a root that needs recovery, in memory; says how it went.
fn recover(file: &File, partition: &Partition, sb: &[u8]) -> (Recovery, String) {
    let block_size = 1024u64 << journal::le32(sb, journal::sb::LOG_BLOCK_SIZE).min(6);
    let what = format!(
        "partition {} (the ext4 root) was not cleanly unmounted (needs_recovery: the Pi \
         was probably switched off without a shutdown)",
        partition.index
    );
    let part = journal::Part {
        file,
        start: partition.start,
        size: partition.size,
    };
    let (blocks, how) = match journal::replay(&part, sb) {
        Ok(r) if r.transactions == 0 => (
            r.blocks,
            "its journal holds no committed transaction, so it was read as it is".to_string(),
        ),
        Ok(r) => {
            let how = format!(
                "its journal was replayed in memory, read-only ({} committed transaction(s), \
                 {} block(s)); the card was not changed{}",
                r.transactions,
                r.blocks.len(),
                if r.fast_commit {
                    "; its fast-commit blocks were not replayed, so the last seconds before \
                     the cut may be missing"
                } else {
                    ""
                }
            );
            (r.blocks, how)
        }
        Err(reason) => (
            HashMap::new(),
            format!(
                "its journal could not be replayed ({reason}), so it was read as it is, best \
                 effort: the newest changes may be missing"
            ),
        ),
    };
    (
        Recovery {
            block_size,
            blocks,
            superblock: None,
        },
        format!("{what}; {how}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::table::PartitionKind;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    /// An ext4 file (mkfs.ext4 -d) holding etc/os-release and symlinks to it: relative,
    /// absolute, through a directory link and `..`, and a loop.
    fn root_with_links() -> (tempfile::TempDir, RootFs) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).expect("mkdir");
        std::fs::write(tree.join("etc/os-release"), "ID=debian\n").expect("write");
        symlink("etc/os-release", tree.join("rel")).expect("symlink");
        symlink("/etc/os-release", tree.join("abs")).expect("symlink");
        symlink("etc", tree.join("e")).expect("symlink");
        symlink("e/../e/./os-release", tree.join("dots")).expect("symlink");
        symlink("loop-b", tree.join("loop-a")).expect("symlink");
        symlink("loop-a", tree.join("loop-b")).expect("symlink");
        let img = dir.path().join("root.img");
        let out = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&tree)
            .arg(&img)
            .arg("8M")
            .output()
            .expect("mkfs.ext4 (e2fsprogs) must be installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let size = std::fs::metadata(&img).expect("stat").len();
        let part = Partition {
            index: 2,
            start: 0,
            size,
            kind: PartitionKind::Linux,
            type_code: "0x83".into(),
            partuuid: String::new(),
            name: String::new(),
        };
        let file = Arc::new(File::open(&img).expect("open"));
        let fs = RootFs::open(file, &img, &part).expect("an ext4 root");
        (dir, fs)
    }

    #[test]
    fn symlinks_are_followed_like_the_kernel_and_a_loop_is_a_named_error() {
        let (_dir, fs) = root_with_links();
        for path in ["/etc/os-release", "/rel", "/abs", "/e/os-release", "/dots"] {
            assert_eq!(
                fs.read_text(path).expect(path).as_deref(),
                Some("ID=debian\n"),
                "{path}"
            );
        }
        assert_eq!(fs.read_text("/e/missing").expect("missing"), None);
        let err = fs.read("/loop-a").expect_err("a symlink loop").to_string();
        assert!(err.contains("more than 40 symlinks on the way"), "{err}");
    }
}
