//! One node's image: copy the base into a temp file in the output directory, lay the
//! card onto its boot partition, map it (`.bmap`), optionally compress it, and only
//! then rename everything into place. Until that rename, `NAME.img` is whatever it
//! was before (or absent).

use super::apply::{ApplyError, BootPartition, apply_card};
use super::blockmap::{BlockMapError, fs_blocks, scan_split};
use super::copy::{CopyMethod, copy_sparse};
use crate::atomic::AtomicFile;
use crate::bmap::{BLOCK_SIZE, Bmap};
use crate::card::Card;
use crate::image::{BootFs, Change, Image, ImageError, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to write one image.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Also write `NAME.img.xz`.
    pub xz: bool,
    /// xz worker threads (0: one per CPU).
    pub xz_threads: u32,
    /// xz preset (0-9).
    pub xz_preset: u32,
    /// Try a reflink copy first.
    pub reflink: bool,
    /// Compute the SHA-256 of the whole image (one more read of it).
    pub sha256: bool,
    /// The base image's file-system map split at the boot partition's bounds
    /// (checksums to reuse).
    pub base_map: Option<std::sync::Arc<Bmap>>,
}

/// What was written for one node.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// Node name.
    pub node: String,
    /// `out/NAME.img`.
    pub path: PathBuf,
    /// `out/NAME.img.bmap`.
    pub bmap: PathBuf,
    /// `out/NAME.img.xz` with `--xz`.
    pub xz: Option<PathBuf>,
    /// SHA-256 of the image, when asked for.
    pub sha256: Option<String>,
    /// Image size in bytes.
    pub size: u64,
    /// Bytes the `.bmap` maps (what the image's file systems need).
    pub mapped_bytes: u64,
    /// How the base was copied.
    pub copy: CopyMethod,
    /// Seconds per phase.
    #[serde(rename = "seconds")]
    pub timings: Timings,
}

/// Seconds spent per phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    /// Copying the base.
    pub copy: f64,
    /// Writing the card into the boot partition (incl. fsync).
    pub card: f64,
    /// Mapping and hashing (`.bmap`).
    pub bmap: f64,
    /// Hashing the whole image (with `sha256`).
    pub sha256: f64,
    /// Compressing (with `--xz`).
    pub xz: f64,
    /// Final fsync and rename of the outputs.
    pub sync: f64,
}

/// Why an image could not be written; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Reading, writing or renaming a file failed.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// The image engine refused (not a disk image, no FAT, full...).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The card does not fit this boot partition.
    #[error("{}: {source}", path.display())]
    Card {
        /// The base image.
        path: PathBuf,
        /// The cause.
        source: ApplyError,
    },
}

fn io_err(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError::Io { path, what, source }
}

/// The boot partition's byte span `(start, end)` in `image`.
pub fn boot_span(image: &Image) -> Result<(u64, u64), ImageError> {
    let p = image.boot_partition()?;
    Ok((p.start, p.start + p.size))
}

/// Block numbers where `.bmap` ranges are cut so checksums outside the boot
/// partition can be reused from the base.
pub fn cuts(span: (u64, u64)) -> Vec<u64> {
    vec![span.0 / BLOCK_SIZE, span.1.div_ceil(BLOCK_SIZE)]
}

/// Writes `card` onto a copy of `base` as `out_dir/NAME.img` (0600), with
/// `NAME.img.bmap` and optionally `NAME.img.xz`; `manifest` goes to the card's
/// manifest path. `progress(bytes)` follows the copy (and compression).
pub fn write_image(
    base: &Path,
    card: &Card,
    extra_files: &BTreeMap<String, Vec<u8>>,
    out_dir: &Path,
    opts: &WriteOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<Written, WriteError> {
    let mut t = Timings::default();
    std::fs::create_dir_all(out_dir).map_err(io_err(out_dir, "creating the output directory"))?;
    let dest = out_dir.join(format!("{}.img", card.node));
    let src = File::open(base).map_err(io_err(base, "opening the base image"))?;
    let size = src
        .metadata()
        .map_err(io_err(base, "reading the base image's size"))?
        .len();

    // 1. Copy.
    let clock = Instant::now();
    let mut img =
        AtomicFile::create(&dest, 0o600).map_err(io_err(&dest, "creating a temp file"))?;
    let tmp_path = img.temp_path().to_path_buf();
    // Hashing reads the whole copy right away: keep it cached for that.
    let copy = copy_sparse(&src, img.file(), opts.reflink, opts.sha256, &mut |d| {
        progress("copy", d, size)
    })
    .map_err(io_err(&tmp_path, "copying the base image"))?;
    t.copy = clock.elapsed().as_secs_f64();

    // 2. The card, into the boot partition only.
    let clock = Instant::now();
    let span = lay_card(&tmp_path, base, card, extra_files)?;
    t.card = clock.elapsed().as_secs_f64();

    // 3. The block map, reusing the base's checksums outside the boot partition.
    let clock = Instant::now();
    let file = img.file();
    let mapped = fs_blocks(&tmp_path).map_err(|e| match e {
        BlockMapError::Image(e) => WriteError::Image(e),
        BlockMapError::Io { what, source, .. } => WriteError::Io {
            path: tmp_path.clone(),
            what,
            source,
        },
    })?;
    let map = scan_split(
        file,
        &mapped,
        &cuts(span),
        opts.base_map.as_deref(),
        Some(span),
    )
    .map_err(io_err(&tmp_path, "hashing the image's block map"))?;
    let bmap_path = out_dir.join(format!("{}.img.bmap", card.node));
    let mut bmap_file = AtomicFile::create(&bmap_path, 0o644)
        .map_err(io_err(&bmap_path, "creating a temp file"))?;
    io::Write::write_all(bmap_file.file(), map.to_xml().as_bytes())
        .map_err(io_err(&bmap_path, "writing"))?;
    t.bmap = clock.elapsed().as_secs_f64();

    // 4. Optional whole-image hash.
    let clock = Instant::now();
    let sha256 = if opts.sha256 {
        Some(sha256_file(file, size).map_err(io_err(&tmp_path, "hashing the image"))?)
    } else {
        None
    };
    t.sha256 = clock.elapsed().as_secs_f64();

    // 5. Optional xz.
    let clock = Instant::now();
    let xz_path = out_dir.join(format!("{}.img.xz", card.node));
    let xz = if opts.xz {
        let mut xz = AtomicFile::create(&xz_path, 0o600)
            .map_err(io_err(&xz_path, "creating a temp file"))?;
        super::compress::xz(
            img.file(),
            xz.file(),
            opts.xz_threads,
            opts.xz_preset,
            &mut |d| progress("xz", d, size),
        )
        .map_err(io_err(&xz_path, "compressing"))?;
        Some(xz)
    } else {
        None
    };
    t.xz = clock.elapsed().as_secs_f64();

    // 6. Everything complete: into place, the image first.
    crate::interrupt::check().map_err(io_err(&dest, "finishing"))?;
    let clock = Instant::now();
    img.commit().map_err(io_err(&dest, "renaming into place"))?;
    bmap_file
        .commit()
        .map_err(io_err(&bmap_path, "renaming into place"))?;
    let xz = match xz {
        Some(x) => {
            x.commit()
                .map_err(io_err(&xz_path, "renaming into place"))?;
            Some(xz_path)
        }
        None => None,
    };
    t.sync = clock.elapsed().as_secs_f64();
    Ok(Written {
        node: card.node.clone(),
        path: dest,
        bmap: bmap_path,
        xz,
        sha256,
        size,
        mapped_bytes: map.mapped_bytes(),
        copy,
        timings: t,
    })
}

/// Lays `card` (and `extra_files`) onto the boot partition of the copy of `base` at
/// `path`, stamped with the card's build time, and commits it; the one way a card gets
/// into an image (`build`'s files and `flash --node`'s cards alike). Returns the boot
/// partition's byte span.
pub fn lay_card(
    path: &Path,
    base: &Path,
    card: &Card,
    extra_files: &BTreeMap<String, Vec<u8>>,
) -> Result<(u64, u64), WriteError> {
    let image = Image::open_rw(path)?;
    let span = boot_span(&image)?;
    let time = Timestamp::from_unix(i64::try_from(card.build_time).unwrap_or(i64::MAX));
    let mut boot = Fat(image.boot_at(time)?);
    apply_card(&mut boot, card, extra_files).map_err(|source| WriteError::Card {
        path: base.to_path_buf(),
        source,
    })?;
    boot.0.commit()?;
    Ok(span)
}

/// SHA-256 of the first `len` bytes of `file` (holes read as zeros).
pub fn sha256_file(file: &File, len: u64) -> io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut off = 0u64;
    while off < len {
        crate::interrupt::check()?;
        let k = ((len - off) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..k], off)?;
        h.update(&buf[..k]);
        off += k as u64;
    }
    Ok(hex::encode(h.finalize()))
}

/// The image engine's FAT boot partition as the card's [`BootPartition`].
struct Fat(BootFs);

impl BootPartition for Fat {
    type Error = ImageError;

    fn read_file(&mut self, path: &str) -> Result<Option<Vec<u8>>, ImageError> {
        self.0.read(path)
    }

    fn list_files(&mut self, dir: &str) -> Result<Vec<String>, ImageError> {
        Ok(self.0.walk(dir)?.into_iter().map(|(p, _)| p).collect())
    }

    fn apply_changes(
        &mut self,
        writes: &BTreeMap<String, Vec<u8>>,
        removes: &[String],
    ) -> Result<(), ImageError> {
        let changes: Vec<Change> = removes
            .iter()
            .map(|p| Change::Remove { path: p.clone() })
            .chain(writes.iter().map(|(p, d)| Change::Write {
                path: p.clone(),
                data: d.clone(),
            }))
            .collect();
        self.0.apply(&changes)
    }
}
