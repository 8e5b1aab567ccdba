//! The FAT32 boot partition, read and edited in place through a window onto the image.
//!
//! Every change is staged in memory (see [`super::window`]) and reaches the image only
//! on [`BootFs::commit`], which unmounts fatfs (updating FSInfo), writes the changed
//! blocks and fsyncs. A change that cannot fit fails before anything is staged; any
//! other failure discards everything staged. Either way the partition stays exactly as
//! it was.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fatfs::{FileSystem, FsOptions};
use fscommon::StreamSlice;
use serde::Serialize;

use super::error::ImageError;
use super::fat_damage::{damage, damage_of};
use super::fat_guard;
use super::fat_raw::{Geometry, RawFat, short_name_bytes};
use super::fat_time::Timestamp;
use super::fat_tree;
use super::table::Partition;
use super::window::{Overlay, OverlayCursor};

type Fs = FileSystem<StreamSlice<OverlayCursor>>;
type Dir<'a> = fatfs::Dir<'a, StreamSlice<OverlayCursor>>;

/// One entry of a boot-partition directory listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FatEntry {
    /// Long file name.
    pub name: String,
    /// True for a directory.
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

/// One change of a batch applied with [`BootFs::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace a file (parent directories are created).
    Write {
        /// Path inside the partition, `/`-separated.
        path: String,
        /// The complete new contents.
        data: Vec<u8>,
    },
    /// Remove a file or an empty directory if it exists.
    Remove {
        /// Path inside the partition, `/`-separated.
        path: String,
    },
}

/// The boot partition of an [`super::Image`], opened for reading and (on an image
/// opened with `open_rw`) staged writing.
pub struct BootFs {
    fs: Option<Fs>,
    overlay: Arc<Mutex<Overlay>>,
    image: PathBuf,
    partition: Partition,
    geometry: Geometry,
    time: Timestamp,
    writable: bool,
    poisoned: AtomicBool,
}

impl std::fmt::Debug for BootFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootFs")
            .field("image", &self.image)
            .field("partition", &self.partition.index)
            .field("time", &self.time)
            .field("writable", &self.writable)
            .finish_non_exhaustive()
    }
}

impl BootFs {
    /// Opens the FAT file system of `partition` through `overlay`.
    pub(crate) fn open(
        overlay: Arc<Mutex<Overlay>>,
        image: &Path,
        partition: &Partition,
        time: Timestamp,
        writable: bool,
    ) -> Result<Self, ImageError> {
        let not_fat = |reason: String| ImageError::NotFat {
            path: image.to_path_buf(),
            index: partition.index,
            offset: partition.start,
            reason,
        };
        let mut sector = [0u8; 512];
        {
            let mut ov = lock(&overlay, image)?;
            let n = ov
                .read_at(partition.start, &mut sector)
                .map_err(|e| ImageError::io(image, "reading the boot sector", e))?;
            if n < sector.len() {
                return Err(not_fat("the partition is shorter than one sector".into()));
            }
        }
        let geometry = Geometry::parse(&sector, partition.size).map_err(not_fat)?;
        let window = StreamSlice::new(
            OverlayCursor::new(overlay.clone()),
            partition.start,
            partition.end(),
        )
        .map_err(|e| ImageError::io(image, "opening the boot partition", e))?;
        let options = FsOptions::new()
            .update_accessed_date(false)
            .time_provider(time.provider());
        let fs = fat_guard::catch(|| FileSystem::new(window, options))
            .map_err(|e| not_fat(e.to_string()))?
            .map_err(|e| not_fat(e.to_string()))?;
        Ok(Self {
            fs: Some(fs),
            overlay,
            image: image.to_path_buf(),
            partition: partition.clone(),
            geometry,
            time,
            writable,
            poisoned: AtomicBool::new(false),
        })
    }

    /// The partition this file system lives in.
    pub fn partition(&self) -> &Partition {
        &self.partition
    }

    /// The timestamp stamped on everything this handle writes.
    pub fn timestamp(&self) -> Timestamp {
        self.time
    }

    /// Bytes per cluster (2048 on Bookworm's layout, 512 on Trixie's).
    pub fn cluster_size(&self) -> u64 {
        self.geometry.cluster_size()
    }

    fn fs(&self) -> Result<&Fs, ImageError> {
        match &self.fs {
            Some(fs) if !self.poisoned.load(Ordering::Relaxed) => Ok(fs),
            _ => Err(ImageError::Poisoned {
                path: self.image.clone(),
            }),
        }
    }

    fn fat_err(&self, op: &'static str, path: &str, source: io::Error) -> ImageError {
        if let Some(d) = damage_of(&source) {
            return ImageError::FatDamaged {
                image: self.image.clone(),
                op,
                path: path.to_string(),
                reason: d.0.clone(),
            };
        }
        ImageError::Fat {
            image: self.image.clone(),
            op,
            path: path.to_string(),
            source,
        }
    }

    /// Runs fatfs code `f` for `op` on `path`; a panic inside it poisons this handle
    /// (staged changes discarded) and becomes [`ImageError::Fat`].
    fn guarded<T>(
        &self,
        op: &'static str,
        path: &str,
        f: impl FnOnce() -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        fat_guard::catch(f).unwrap_or_else(|e| {
            self.poisoned.store(true, Ordering::Relaxed);
            if let Ok(mut ov) = self.overlay.lock() {
                ov.discard();
            }
            Err(self.fat_err(op, path, e))
        })
    }

    /// The volume label (`bootfs` on Raspberry Pi OS), from the root directory entry
    /// if present, else from the boot sector.
    pub fn label(&self) -> Result<String, ImageError> {
        self.guarded("read the volume label", "/", || {
            let fs = self.fs()?;
            let from_root = fs
                .read_volume_label_from_root_dir()
                .map_err(|e| self.fat_err("read the volume label", "/", e))?;
            Ok(from_root
                .unwrap_or_else(|| fs.volume_label())
                .trim_end()
                .to_string())
        })
    }

    /// A warning when the volume is marked dirty, i.e. it was not cleanly unmounted (a
    /// card pulled from a Pi that lost power): the boot sector's state byte bit 0 (as
    /// Linux's vfat sets it) or, on FAT32, bit 0x08000000 of FAT[1] clear (Microsoft's
    /// FAT specification, "FAT[1]" ClnShutBitMask); fatfs 0.3 reads both
    /// (`FileSystem::read_status_flags`) and opens such a volume as it is.
    pub fn dirty_warning(&self) -> Result<Option<String>, ImageError> {
        self.guarded("read the volume's status flags", "/", || {
            let flags = self
                .fs()?
                .read_status_flags()
                .map_err(|e| self.fat_err("read the volume's status flags", "/", e))?;
            Ok(flags.dirty().then(|| {
                format!(
                    "partition {} (the FAT boot partition) was not cleanly unmounted (its dirty \
                     bit is set: the Pi was probably switched off without a shutdown); it was \
                     read as it is: a file written just before the cut may be incomplete \
                     (`fsck.vfat` on the partition repairs it)",
                    self.partition.index
                )
            }))
        })
    }

    /// Free bytes (whole free clusters), staged changes included. On FAT32 counted
    /// from FAT 1 by piimg ([`RawFat::free_clusters`], where the table holds data)
    /// rather than taken from FSInfo, which is only a hint (fatfs counts entry by entry
    /// through 4-byte reads when the hint is unusable, e.g. on a volume not cleanly
    /// unmounted: a million reads on the Trixie layout); FAT12/16 through fatfs.
    pub fn free_bytes(&self) -> Result<u64, ImageError> {
        self.guarded("count free clusters", "/", || {
            let fs = self.fs()?;
            if self.geometry.is_fat32() {
                let free = self
                    .raw()
                    .free_clusters()
                    .map_err(|e| self.fat_err("count free clusters", "/", e))?;
                return Ok(free * self.cluster_size());
            }
            let stats = fs
                .stats()
                .map_err(|e| self.fat_err("count free clusters", "/", e))?;
            Ok(u64::from(stats.free_clusters()) * u64::from(stats.cluster_size()))
        })
    }

    /// Total bytes of the data area (from the boot sector's geometry, as fatfs reads it).
    pub fn total_bytes(&self) -> Result<u64, ImageError> {
        self.fs()?;
        Ok(self.geometry.clusters() * self.cluster_size())
    }

    /// The contents of the file at `path`, or `None` if it does not exist. The file's
    /// cluster chain is checked first (in range, no loop, long enough for its size),
    /// so a damaged entry claiming up to 4 GiB reads no more than the volume holds.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        self.guarded("read", path, || {
            let parts = split(path)?;
            let fs = self.fs()?;
            let Some((entry, shorts)) = fat_tree::find(&self.raw(), &fs.root_dir(), &parts)
                .map_err(|e| self.fat_err("read", path, e))?
            else {
                return Ok(None);
            };
            if entry.is_dir() {
                return Err(self.fat_err(
                    "read",
                    path,
                    io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
                ));
            }
            let len = entry.len();
            if len > 0 {
                self.check_file_chain(&shorts, len)
                    .map_err(|e| self.fat_err("read", path, e))?;
            }
            let mut data = Vec::with_capacity(len.min(64 << 20) as usize);
            entry
                .to_file()
                .take(len)
                .read_to_end(&mut data)
                .map_err(|e| self.fat_err("read", path, e))?;
            Ok(Some(data))
        })
    }

    /// Checks that the file at `shorts` (8.3 names from the root), `len` bytes long,
    /// has a cluster chain of its own that holds them: in range, without a loop.
    fn check_file_chain(&self, shorts: &[[u8; 11]], len: u64) -> io::Result<()> {
        let raw = self.raw();
        let Some((name, parents)) = shorts.split_last() else {
            return Ok(());
        };
        let parent = raw.dir_cluster(parents)?;
        let on_disk = raw.dir_entries(parent)?;
        let Some(entry) = fat_tree::the_entry(&on_disk, name, "the file")?.filter(|e| !e.is_dir())
        else {
            return Err(damage("the file has no 8.3 entry that reads back".into()));
        };
        let chain = if entry.cluster == 0 {
            Vec::new()
        } else {
            raw.chain(entry.cluster)?
        };
        let holds = chain.len() as u64 * self.cluster_size();
        if holds < len {
            return Err(damage(format!(
                "the file claims {len} bytes but its cluster chain holds {} cluster(s), \
                 {holds} bytes",
                chain.len()
            )));
        }
        Ok(())
    }

    /// Raw access to this partition's FAT structures (staged changes included).
    fn raw(&self) -> RawFat<'_> {
        RawFat::new(&self.overlay, self.partition.start, self.geometry)
    }

    /// True when a file or directory exists at `path`.
    pub fn exists(&self, path: &str) -> Result<bool, ImageError> {
        self.guarded("look up", path, || {
            let parts = split(path)?;
            let fs = self.fs()?;
            Ok(find(&self.raw(), &fs.root_dir(), &parts)
                .map_err(|e| self.fat_err("look up", path, e))?
                .is_some())
        })
    }

    /// The entries of directory `dir` (`""` or `/` for the root), without `.`/`..`,
    /// in on-disk order; `None` if it does not exist.
    pub fn list(&self, dir: &str) -> Result<Option<Vec<FatEntry>>, ImageError> {
        self.guarded("list", dir, || {
            let parts = split_allow_root(dir)?;
            let fs = self.fs()?;
            let root = fs.root_dir();
            let raw = self.raw();
            let d = if parts.is_empty() {
                raw.dir_entries(raw.root_key())
                    .map_err(|e| self.fat_err("list", dir, e))?;
                root
            } else {
                match fat_tree::find(&raw, &root, &parts)
                    .map_err(|e| self.fat_err("list", dir, e))?
                {
                    Some((e, shorts)) if e.is_dir() => {
                        // fatfs lists the directory's chain as the FAT says: check it.
                        raw.dir_cluster(&shorts)
                            .and_then(|c| raw.dir_entries(c))
                            .map_err(|e| self.fat_err("list", dir, e))?;
                        e.to_dir()
                    }
                    Some(_) => {
                        return Err(self.fat_err(
                            "list",
                            dir,
                            io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
                        ));
                    }
                    None => return Ok(None),
                }
            };
            let mut out = Vec::new();
            for e in fat_tree::entries(&d) {
                let e = e.map_err(|err| self.fat_err("list", dir, err))?;
                let name = e.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                out.push(FatEntry {
                    is_dir: e.is_dir(),
                    size: if e.is_dir() { 0 } else { e.len() },
                    name,
                });
            }
            Ok(Some(out))
        })
    }

    /// Every file under `dir`, recursively, as (path, size), paths `/`-separated and
    /// sorted. Names are taken as stored, so a damaged directory still lists; a tree
    /// that loops (a directory entry pointing at the root or an ancestor) or a
    /// directory over FAT's size limit is [`ImageError::FatDamaged`].
    pub fn walk(&self, dir: &str) -> Result<Vec<(String, u64)>, ImageError> {
        self.guarded("list", dir, || {
            let parts = split_allow_root(dir)?;
            let fs = self.fs()?;
            let root = fs.root_dir();
            let raw = self.raw();
            let (start, cluster) = if parts.is_empty() {
                (root, raw.root_key())
            } else {
                match fat_tree::find(&raw, &root, &parts)
                    .map_err(|e| self.fat_err("list", dir, e))?
                {
                    Some((e, shorts)) if e.is_dir() => {
                        let cluster = raw
                            .dir_cluster(&shorts)
                            .map_err(|e| self.fat_err("list", dir, e))?;
                        (e.to_dir(), cluster)
                    }
                    _ => return Ok(Vec::new()),
                }
            };
            let mut out = fat_tree::walk(&raw, parts.join("/"), start, cluster)
                .map_err(|e| self.fat_err("list", dir, e))?;
            out.sort();
            Ok(out)
        })
    }

    /// Creates or replaces the file at `path` with `data`, creating parent directories.
    /// Fails with [`ImageError::FatFull`] before changing anything if it cannot fit.
    pub fn write(&mut self, path: &str, data: &[u8]) -> Result<(), ImageError> {
        self.apply(&[Change::Write {
            path: path.to_string(),
            data: data.to_vec(),
        }])
    }

    /// Removes the file (or empty directory) at `path`; `false` if there was none.
    pub fn remove(&mut self, path: &str) -> Result<bool, ImageError> {
        let existed = self.exists(path)?;
        self.apply(&[Change::Remove {
            path: path.to_string(),
        }])?;
        Ok(existed)
    }

    /// Applies `changes` in order as one batch: if the batch cannot fit, nothing is
    /// staged and [`ImageError::FatFull`] is returned; if a change fails midway, all
    /// staged changes are discarded and this handle refuses further use.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), ImageError> {
        if !self.writable {
            return Err(ImageError::ReadOnly {
                path: self.image.clone(),
            });
        }
        let mut parsed = Vec::with_capacity(changes.len());
        for c in changes {
            match c {
                Change::Write { path, data } => parsed.push((split(path)?, Some(&data[..]))),
                Change::Remove { path } => parsed.push((split(path)?, None)),
            }
        }
        self.guarded("check free space for", "/", || self.check_space(&parsed))?;
        for (parts, data) in &parsed {
            let op = if data.is_some() { "write" } else { "remove" };
            let result = self.guarded(op, &parts.join("/"), || match data {
                Some(data) => self.write_one(parts, data),
                None => self.remove_one(parts),
            });
            if let Err(e) = result {
                self.poison();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Bytes the batch needs beyond what it frees, in whole clusters, checked against
    /// the free space. Conservative: each new entry may grow its directory a cluster.
    fn check_space(&self, changes: &[(Vec<String>, Option<&[u8]>)]) -> Result<(), ImageError> {
        let cs = self.cluster_size();
        let fs = self.fs()?;
        let root = fs.root_dir();
        let mut need: u64 = 0;
        let mut freed: u64 = 0;
        let mut new_dirs: Vec<Vec<String>> = Vec::new();
        let mut first_path = String::new();
        for (parts, data) in changes {
            let path = parts.join("/");
            let existing =
                find(&self.raw(), &root, parts).map_err(|e| self.fat_err("look up", &path, e))?;
            let old = existing
                .as_ref()
                .filter(|e| e.is_file())
                .map(|e| e.len().div_ceil(cs) * cs)
                .unwrap_or(0);
            match data {
                Some(data) => {
                    if first_path.is_empty() {
                        first_path = path.clone();
                    }
                    need += (data.len() as u64).div_ceil(cs) * cs;
                    freed += old;
                    if existing.is_none() {
                        // a new entry (and its long-name entries) may need a new cluster
                        need += cs;
                    }
                    for i in 1..parts.len() {
                        let dir = parts[..i].to_vec();
                        let exists = find(&self.raw(), &root, &dir)
                            .map_err(|e| self.fat_err("look up", &path, e))?
                            .is_some();
                        if !exists && !new_dirs.contains(&dir) {
                            new_dirs.push(dir);
                            need += 2 * cs;
                        }
                    }
                }
                None => freed += old,
            }
        }
        let free = self.free_bytes()?;
        if need > free + freed {
            return Err(ImageError::FatFull {
                image: self.image.clone(),
                path: first_path,
                needed: need.saturating_sub(freed),
                free,
            });
        }
        Ok(())
    }

    fn write_one(&self, parts: &[String], data: &[u8]) -> Result<(), ImageError> {
        let path = parts.join("/");
        let (name, parents) = parts
            .split_last()
            .ok_or_else(|| bad_path(&path, "is empty"))?;
        for i in 0..parents.len() {
            self.ensure_dir(&parents[..=i])?;
        }
        let fs = self.fs()?;
        let mut dir = fs.root_dir();
        for p in parents {
            dir = dir
                .open_dir(p)
                .map_err(|e| self.fat_err("open directory", &path, e))?;
        }
        let root = fs.root_dir();
        match fat_tree::find(&self.raw(), &root, parts)
            .map_err(|e| self.fat_err("write", &path, e))?
        {
            Some((e, _)) if e.is_dir() => {
                return Err(self.fat_err(
                    "write",
                    &path,
                    io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
                ));
            }
            // fatfs frees the old chain as the FAT says: check it first.
            Some((_, shorts)) => self
                .check_file_chain(&shorts, 0)
                .map_err(|e| self.fat_err("write", &path, e))?,
            None => {}
        }
        let mut file = dir
            .create_file(name)
            .map_err(|e| self.fat_err("create", &path, e))?;
        file.truncate()
            .map_err(|e| self.fat_err("truncate", &path, e))?;
        file.write_all(data)
            .map_err(|e| self.fat_err("write", &path, e))?;
        file.flush().map_err(|e| self.fat_err("write", &path, e))?;
        Ok(())
    }

    /// Creates directory `parts` if missing, with `.`/`..` as fsck.vfat expects.
    fn ensure_dir(&self, parts: &[String]) -> Result<(), ImageError> {
        let path = parts.join("/");
        let fs = self.fs()?;
        let root = fs.root_dir();
        match find(&self.raw(), &root, parts).map_err(|e| self.fat_err("look up", &path, e))? {
            Some(e) if e.is_dir() => return Ok(()),
            Some(_) => {
                return Err(self.fat_err(
                    "create directory",
                    &path,
                    io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
                ));
            }
            None => {}
        }
        if !self.geometry.is_fat32() {
            return Err(self.fat_err(
                "create directory",
                &path,
                io::Error::other("creating directories is supported on FAT32 only"),
            ));
        }
        root.create_dir(&path)
            .map_err(|e| self.fat_err("create directory", &path, e))?;
        // Find each component's short name, then repair the new directory's cluster.
        let mut shorts = Vec::with_capacity(parts.len());
        for i in 0..parts.len() {
            let entry = find(&self.raw(), &root, &parts[..=i])
                .map_err(|e| self.fat_err("create directory", &path, e))?
                .ok_or_else(|| {
                    self.fat_err(
                        "create directory",
                        &path,
                        io::Error::other("directory vanished after creation"),
                    )
                })?;
            shorts.push(short_name_bytes(entry.short_file_name_as_bytes()));
        }
        self.raw()
            .fix_new_dir(&shorts, self.time)
            .map_err(|e| self.fat_err("create directory", &path, e))
    }

    fn remove_one(&self, parts: &[String]) -> Result<(), ImageError> {
        let path = parts.join("/");
        let fs = self.fs()?;
        let root = fs.root_dir();
        let raw = self.raw();
        let Some((entry, shorts)) =
            fat_tree::find(&raw, &root, parts).map_err(|e| self.fat_err("remove", &path, e))?
        else {
            return Ok(());
        };
        // fatfs lists a directory (to see it is empty) and frees a chain as the FAT
        // says: check them first.
        let checked = if entry.is_dir() {
            raw.dir_cluster(&shorts)
                .and_then(|c| raw.dir_entries(c))
                .map(drop)
        } else {
            self.check_file_chain(&shorts, 0)
        };
        checked.map_err(|e| self.fat_err("remove", &path, e))?;
        root.remove(&path)
            .map_err(|e| self.fat_err("remove", &path, e))
    }

    fn poison(&mut self) {
        self.poisoned.store(true, Ordering::Relaxed);
        if let Ok(mut ov) = self.overlay.lock() {
            ov.discard();
        }
    }

    /// True when changes are staged but not yet committed.
    pub fn has_changes(&self) -> bool {
        self.overlay.lock().map(|o| o.is_dirty()).unwrap_or(false)
    }

    /// Unmounts the file system (fatfs updates FSInfo and clears its dirty flag), writes
    /// every staged block to the image and fsyncs it. On a read-only image this only
    /// checks that nothing was staged.
    pub fn commit(mut self) -> Result<(), ImageError> {
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(ImageError::Poisoned {
                path: self.image.clone(),
            });
        }
        if let Some(fs) = self.fs.take() {
            fat_guard::catch(|| fs.unmount())
                .and_then(|r| r)
                .map_err(|e| ImageError::io(&self.image, "unmounting the boot partition", e))?;
        }
        let mut ov = lock(&self.overlay, &self.image)?;
        if !ov.is_dirty() {
            return Ok(());
        }
        if !self.writable {
            ov.discard();
            return Err(ImageError::ReadOnly {
                path: self.image.clone(),
            });
        }
        ov.flush()
            .map_err(|e| ImageError::io(&self.image, "writing the boot partition", e))
    }
}

impl Drop for BootFs {
    fn drop(&mut self) {
        // Without a commit nothing staged may reach the image: drop fatfs's handle
        // (its own Drop may stage an FSInfo update) and forget the staged blocks.
        if let Some(fs) = self.fs.take() {
            // A damaged file system may make fatfs's own Drop panic; not here.
            let _ = fat_guard::catch(|| drop(fs));
        }
        if let Ok(mut ov) = self.overlay.lock() {
            ov.discard();
        }
    }
}

fn lock<'a>(
    overlay: &'a Arc<Mutex<Overlay>>,
    image: &Path,
) -> Result<MutexGuard<'a, Overlay>, ImageError> {
    overlay.lock().map_err(|_| {
        ImageError::io(
            image,
            "locking the image cache",
            io::Error::other("poisoned"),
        )
    })
}

fn bad_path(path: &str, reason: &'static str) -> ImageError {
    ImageError::BadPath {
        path: path.to_string(),
        reason,
    }
}

/// Splits a boot-partition path into components, refusing empty, `.`/`..` and names
/// FAT cannot hold.
fn split(path: &str) -> Result<Vec<String>, ImageError> {
    let parts = split_allow_root(path)?;
    if parts.is_empty() {
        return Err(bad_path(path, "names the root directory, not a file"));
    }
    Ok(parts)
}

fn split_allow_root(path: &str) -> Result<Vec<String>, ImageError> {
    let mut out = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            return Err(bad_path(path, "must not contain '.' or '..' components"));
        }
        if part.len() > 255 {
            return Err(bad_path(path, "has a component longer than 255 bytes"));
        }
        if part
            .chars()
            .any(|c| c.is_control() || "\\:*?\"<>|".contains(c))
        {
            return Err(bad_path(
                path,
                "contains a character FAT cannot store (\\ : * ? \" < > | or a control character)",
            ));
        }
        out.push(part.to_string());
    }
    Ok(out)
}

/// The entry at `parts` below the root directory `root` (case-insensitive, as FAT
/// is), if any; see [`fat_tree::find`].
fn find<'a>(
    raw: &RawFat<'_>,
    root: &Dir<'a>,
    parts: &[String],
) -> io::Result<Option<fatfs::DirEntry<'a, StreamSlice<OverlayCursor>>>> {
    Ok(fat_tree::find(raw, root, parts)?.map(|(entry, _)| entry))
}
