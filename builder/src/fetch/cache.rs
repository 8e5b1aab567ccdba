//! The image cache: `<dir>/images/<download-sha256>.img` + `.json` metadata,
//! `<dir>/partial/<download-sha256>.img.xz.part` for resumable downloads and
//! `<dir>/locks/<download-sha256>.lock`. An entry exists once its metadata exists;
//! the image is renamed into place (after fsync) before the metadata is written,
//! so an entry is always complete and verified.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FetchError;
use super::lock::Lock;

/// A complete, verified image in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedImage {
    /// The decompressed image.
    pub path: PathBuf,
    /// sha256 of the decompressed image (verified against `extract_sha256` when published).
    pub sha256: String,
    /// Size of the decompressed image in bytes.
    pub size: u64,
    /// sha256 of the `.img.xz` download (the cache key).
    pub download_sha256: String,
    /// Debian codename ("bookworm", "trixie"), or "unknown" for a `--url` download
    /// whose file name does not say.
    pub release: String,
    /// Release date (YYYY-MM-DD), or empty when unknown.
    pub release_date: String,
    /// Name in the OS list (or the file name for `--url`).
    pub name: String,
    /// Where it was downloaded from.
    pub url: String,
    /// Imager's `init_format` when the OS list gave one.
    #[serde(default)]
    pub init_format: Option<String>,
    /// When it entered the cache (seconds since the Unix epoch).
    pub fetched_at: u64,
    /// The image creator's `.bmap` stored beside the image (`<key>.bmap`); the image
    /// has holes exactly at its unmapped ranges. `None`: no bmap, the image is dense.
    #[serde(default)]
    pub bmap: Option<PathBuf>,
    /// Where the bmap was downloaded from.
    #[serde(default)]
    pub bmap_url: Option<String>,
}

/// What `prune` removed.
#[derive(Debug, Default, Serialize)]
pub struct Pruned {
    /// Entries removed.
    pub removed: Vec<CachedImage>,
    /// Leftover files removed (abandoned partial downloads, temp files, orphans).
    pub leftovers: Vec<PathBuf>,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The default cache directory: `$PIIMG_CACHE`, else `$XDG_CACHE_HOME/piimg`,
    /// else `~/.cache/piimg`.
    pub fn default_dir() -> Result<PathBuf, FetchError> {
        let nonempty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(d) = nonempty("PIIMG_CACHE") {
            return Ok(PathBuf::from(d));
        }
        if let Some(d) = nonempty("XDG_CACHE_HOME") {
            return Ok(PathBuf::from(d).join("piimg"));
        }
        if let Some(h) = nonempty("HOME") {
            return Ok(PathBuf::from(h).join(".cache").join("piimg"));
        }
        Err(FetchError::NoCacheDir)
    }

    /// A handle on the cache at `dir` (nothing is created until something is written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }

    /// Where the image with download hash `key` lives once cached.
    pub(crate) fn image_path(&self, key: &str) -> PathBuf {
        self.images_dir().join(format!("{key}.img"))
    }

    /// Where the bmap of the image with download hash `key` lives once cached.
    pub(crate) fn bmap_path(&self, key: &str) -> PathBuf {
        self.images_dir().join(format!("{key}.bmap"))
    }

    fn meta_path(&self, key: &str) -> PathBuf {
        self.images_dir().join(format!("{key}.json"))
    }

    /// The resumable partial download of `key`.
    pub(crate) fn partial_path(&self, key: &str) -> PathBuf {
        self.dir.join("partial").join(format!("{key}.img.xz.part"))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{key}.lock"))
    }

    /// Creates the directories.
    pub(crate) fn create(&self) -> Result<(), FetchError> {
        for d in ["images", "partial", "locks"] {
            let p = self.dir.join(d);
            fs::create_dir_all(&p)
                .map_err(|e| FetchError::io("creating cache directory", &p, e))?;
        }
        Ok(())
    }

    /// Locks `key`; calls `waiting` first if someone else holds the lock.
    pub(crate) fn lock(&self, key: &str, waiting: impl FnOnce()) -> Result<Lock, FetchError> {
        let p = self.lock_path(key);
        let io = |e| FetchError::io("locking", &p, e);
        match Lock::try_acquire(&p).map_err(io)? {
            Some(l) => Ok(l),
            None => {
                waiting();
                Lock::acquire(&p).map_err(|e| FetchError::io("locking", &p, e))
            }
        }
    }

    /// The entry with download hash `key`, if cached.
    pub fn get(&self, key: &str) -> Result<Option<CachedImage>, FetchError> {
        let meta = self.meta_path(key);
        if !meta.exists() {
            return Ok(None);
        }
        self.load(&meta).map(Some)
    }

    fn load(&self, meta: &Path) -> Result<CachedImage, FetchError> {
        let bytes = fs::read(meta).map_err(|e| FetchError::io("reading", meta, e))?;
        let mut img: CachedImage =
            serde_json::from_slice(&bytes).map_err(|e| FetchError::Metadata {
                path: meta.to_path_buf(),
                reason: e.to_string(),
            })?;
        img.path = self.image_path(&img.download_sha256);
        if img.bmap.is_some() {
            let b = self.bmap_path(&img.download_sha256);
            if !b.is_file() {
                return Err(FetchError::Metadata {
                    path: meta.to_path_buf(),
                    reason: format!("its bmap {} is missing", b.display()),
                });
            }
            img.bmap = Some(b);
        }
        let len = fs::metadata(&img.path).map(|m| m.len()).ok();
        if len != Some(img.size) {
            return Err(FetchError::Metadata {
                path: meta.to_path_buf(),
                reason: format!(
                    "its image {} is missing or not {} bytes",
                    img.path.display(),
                    img.size
                ),
            });
        }
        Ok(img)
    }

    /// Every cached image, newest release first (then most recently fetched).
    pub fn list(&self) -> Result<Vec<CachedImage>, FetchError> {
        let dir = self.images_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(FetchError::io("reading cache directory", &dir, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| FetchError::io("reading cache directory", &dir, e))?;
            let p = ent.path();
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            out.push(self.load(&p)?);
        }
        out.sort_by(|a, b| (&b.release_date, b.fetched_at).cmp(&(&a.release_date, a.fetched_at)));
        Ok(out)
    }

    /// Commits a verified image: writes its bmap (if any), renames the temp file into
    /// place, then writes the metadata (the entry exists from that moment).
    pub(crate) fn commit(
        &self,
        file: crate::atomic::AtomicFile,
        img: &CachedImage,
        bmap_xml: Option<&[u8]>,
    ) -> Result<(), FetchError> {
        let dest = file.dest().to_path_buf();
        if let (Some(xml), Some(path)) = (bmap_xml, &img.bmap) {
            crate::atomic::write_atomic(path, xml, 0o644)
                .map_err(|e| FetchError::io("writing", path, e))?;
        }
        file.commit().map_err(|e| {
            if let Some(b) = &img.bmap {
                let _ = fs::remove_file(b);
            }
            if super::error::is_disk_full(&e) {
                FetchError::DiskFull {
                    what: "committing",
                    path: dest.clone(),
                    cache: self.dir.clone(),
                    need: format!("about {} MiB free", img.size.div_ceil(1 << 20)),
                }
            } else {
                FetchError::io("committing", &dest, e)
            }
        })?;
        let meta = self.meta_path(&img.download_sha256);
        let json = serde_json::to_vec_pretty(img).map_err(|e| FetchError::Metadata {
            path: meta.clone(),
            reason: e.to_string(),
        })?;
        crate::atomic::write_atomic(&meta, &json, 0o644).map_err(|e| {
            // Leave no image (or bmap) without metadata behind.
            let _ = fs::remove_file(&dest);
            if let Some(b) = &img.bmap {
                let _ = fs::remove_file(b);
            }
            FetchError::io("writing", &meta, e)
        })
    }

    /// Keeps the `keep` newest entries and removes the rest, plus leftovers of
    /// interrupted fetches (partial downloads, temp files) nobody is working on.
    pub fn prune(&self, keep: usize) -> Result<Pruned, FetchError> {
        let mut pruned = Pruned::default();
        for img in self.list()?.into_iter().skip(keep) {
            let Some(_lock) = self.try_lock(&img.download_sha256)? else {
                continue;
            };
            let meta = self.meta_path(&img.download_sha256);
            // Metadata first: the entry stops existing before its image goes.
            remove(&meta)?;
            remove(&img.path)?;
            remove(&self.bmap_path(&img.download_sha256))?;
            pruned.removed.push(img);
        }
        for sub in ["images", "partial"] {
            let dir = self.dir.join(sub);
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for ent in rd.flatten() {
                let p = ent.path();
                let name = ent.file_name().to_string_lossy().into_owned();
                let key: String = name
                    .trim_start_matches('.')
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect();
                // Partial downloads, AtomicFile temp files (".<key>.img.*.partial")
                // and images whose metadata never got written.
                let leftover = sub == "partial"
                    || name.starts_with('.')
                    || ((name.ends_with(".img") || name.ends_with(".bmap"))
                        && !self.meta_path(&key).exists());
                if !leftover || key.len() != 64 {
                    continue;
                }
                let Some(_lock) = self.try_lock(&key)? else {
                    continue;
                };
                remove(&p)?;
                pruned.leftovers.push(p);
            }
        }
        Ok(pruned)
    }

    /// Removes temp files an interrupted earlier fetch of `key` left in images/.
    pub(crate) fn remove_stale_temps(&self, key: &str) {
        let prefix = format!(".{key}.img.");
        if let Ok(rd) = fs::read_dir(self.images_dir()) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(ent.path());
                }
            }
        }
    }

    fn try_lock(&self, key: &str) -> Result<Option<Lock>, FetchError> {
        let p = self.lock_path(key);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(|e| FetchError::io("creating", parent, e))?;
        }
        Lock::try_acquire(&p).map_err(|e| FetchError::io("locking", &p, e))
    }
}

fn remove(p: &Path) -> Result<(), FetchError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FetchError::io("removing", p, e)),
    }
}
