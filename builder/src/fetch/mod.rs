//! Downloading, verifying and caching the official Raspberry Pi OS Lite image.
//!
//! One pass over the data: the download is streamed into the resumable partial
//! file, the download hasher and the multi-threaded xz decoder at once; the
//! decoder's output is hashed and written (densely) to a temp file that is renamed
//! into the cache only when both hashes match. When the image has a `.bmap` (Imager's
//! `bmap_url`, or `--bmap-url`), its mapped ranges' sha256 are checked on the same
//! pass and holes are punched exactly at its unmapped ranges; without one the cached
//! image stays dense (zero blocks may matter). See [`fetch`] and [`ensure_base`].

mod cache;
pub(crate) mod decompress;
mod download;
mod error;
mod holes;
mod http;
pub(crate) mod lock;
mod os_list;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::MultiProgress;
use serde::Serialize;

pub use cache::{Cache, CachedImage, Pruned};
pub use error::FetchError;
pub use http::NetOptions;
pub use os_list::{DEFAULT_OS_LIST_URL, ImageEntry, ReleaseChoice, lite_arm64_file, parse_sha256};

use crate::progress::{OutputMode, Reporter};

/// Largest OS list document we accept (the real one is ~100 KiB).
const OS_LIST_LIMIT: u64 = 32 << 20;

/// Where the image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Look it up in an Imager OS list at this URL.
    OsList {
        /// URL of the OS list JSON.
        url: String,
    },
    /// A given `.img.xz` URL and its sha256 (no extract hash to check).
    Direct {
        /// URL of the `.img.xz`.
        url: String,
        /// Its sha256 (lowercase hex).
        sha256: String,
    },
    /// A `.img.xz` already on disk (downloaded by other means) and its sha256.
    File {
        /// Path of the `.img.xz`.
        path: PathBuf,
        /// Its sha256 (lowercase hex).
        sha256: String,
    },
}

/// Options of a fetch (and of [`ensure_base`]).
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where the image comes from.
    pub source: Source,
    /// Which release to pick from the OS list (and, offline, from the cache).
    pub release: ReleaseChoice,
    /// The cache directory.
    pub cache_dir: PathBuf,
    /// Forbid network access: only the cache is consulted.
    pub offline: bool,
    /// Timeouts and retries.
    pub net: NetOptions,
    /// The image's `.bmap` for a direct (`--url`/`--file`) source; OS list entries
    /// carry their own `bmap_url`.
    pub bmap_url: Option<String>,
}

impl FetchOptions {
    /// Defaults: the OS list from `$PIIMG_OS_LIST_URL` or Imager's URL, the latest
    /// release, the default cache directory ([`Cache::default_dir`]), online.
    pub fn from_env() -> Result<Self, FetchError> {
        let url = std::env::var("PIIMG_OS_LIST_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_OS_LIST_URL.to_string());
        Ok(Self {
            source: Source::OsList { url },
            release: ReleaseChoice::Latest,
            cache_dir: Cache::default_dir()?,
            offline: false,
            net: NetOptions::default(),
            bmap_url: None,
        })
    }
}

/// The result of [`fetch`].
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    /// The cached image.
    pub image: CachedImage,
    /// False when it was in the cache already (nothing downloaded).
    pub downloaded: bool,
    /// Bytes of the download reused from an interrupted earlier run.
    pub resumed_from: u64,
    /// Bytes received over the network in this run.
    pub download_size: u64,
}

/// The newest cached verified image that fits `opts` (release, or the `--sha256`
/// of a direct source), fetching it if there is none. With `opts.offline` the
/// network is never used and a missing image is an error saying how to get it.
pub fn ensure_base(opts: &FetchOptions, out: &Reporter) -> Result<CachedImage, FetchError> {
    if let Some(img) = cached_match(opts)? {
        return Ok(img);
    }
    if opts.offline {
        return Err(offline_error(opts));
    }
    fetch(opts, out).map(|f| f.image)
}

fn cached_match(opts: &FetchOptions) -> Result<Option<CachedImage>, FetchError> {
    let cache = Cache::new(&opts.cache_dir);
    match &opts.source {
        Source::Direct { sha256, .. } | Source::File { sha256, .. } => {
            cache.get(&parse_sha256(sha256).unwrap_or_default())
        }
        Source::OsList { .. } => Ok(cache
            .list()?
            .into_iter()
            .find(|i| opts.release.accepts(&i.release))),
    }
}

fn offline_error(opts: &FetchOptions) -> FetchError {
    let (wanted, fetch_args) = match (&opts.source, &opts.release) {
        (Source::Direct { url, sha256 }, _) => (
            format!(" with download sha256 {sha256}"),
            format!(" --url {url} --sha256 {sha256}"),
        ),
        (Source::File { path, sha256 }, _) => (
            format!(" with download sha256 {sha256}"),
            format!(" --file {} --sha256 {sha256}", path.display()),
        ),
        (_, ReleaseChoice::Latest) => (String::new(), String::new()),
        (_, ReleaseChoice::Named(n)) => (format!(" for release {n}"), format!(" --release {n}")),
    };
    FetchError::Offline {
        cache: opts.cache_dir.clone(),
        wanted,
        fetch_args,
    }
}

/// Finds the image (OS list or direct URL) and makes sure it is in the cache:
/// returns the cached entry if present, else downloads, verifies and caches it.
/// Respects `opts.offline` like [`ensure_base`].
pub fn fetch(opts: &FetchOptions, out: &Reporter) -> Result<Fetched, FetchError> {
    if opts.offline {
        return match cached_match(opts)? {
            Some(image) => Ok(Fetched {
                image,
                downloaded: false,
                resumed_from: 0,
                download_size: 0,
            }),
            None => Err(offline_error(opts)),
        };
    }
    let http = http::Http::new(&opts.net)?;
    let mut entry = match &opts.source {
        Source::OsList { url } => find_in_os_list(&http, url, &opts.release, out)?,
        Source::Direct { url, sha256 } => direct_entry(url, sha256)?,
        Source::File { path, sha256 } => {
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            direct_entry(&format!("file://{}", abs.display()), sha256)?
        }
    };
    if opts.bmap_url.is_some() {
        entry.bmap_url.clone_from(&opts.bmap_url);
    }
    let cache = Cache::new(&opts.cache_dir);
    cache.create()?;
    let key = entry.download_sha256.clone();
    let _lock = cache.lock(&key, || {
        out.info(format!(
            "waiting for another piimg fetching {} into {}",
            entry.url,
            cache.dir().display()
        ))
    })?;
    if let Some(image) = cache.get(&key)? {
        out.info(format!(
            "{} is cached: {}",
            image.name,
            image.path.display()
        ));
        return Ok(Fetched {
            image,
            downloaded: false,
            resumed_from: 0,
            download_size: 0,
        });
    }
    cache.remove_stale_temps(&key);
    let partial = cache.partial_path(&key);
    let local = match &opts.source {
        Source::File { path, .. } => Some(path.as_path()),
        _ => None,
    };
    match download_and_cache(&http, &cache, &entry, &partial, local, out) {
        Ok(f) => {
            let _ = std::fs::remove_file(&partial);
            Ok(f)
        }
        Err(e) => {
            if e.poisons_partial() {
                let _ = std::fs::remove_file(&partial);
            }
            Err(e)
        }
    }
}

fn download_and_cache(
    http: &http::Http,
    cache: &Cache,
    entry: &ImageEntry,
    partial: &std::path::Path,
    local: Option<&std::path::Path>,
    out: &Reporter,
) -> Result<Fetched, FetchError> {
    out.info(format!(
        "fetching {} ({}, {}) from {}",
        entry.name, entry.release, entry.release_date, entry.url
    ));
    let multi = MultiProgress::new();
    if out.mode() != OutputMode::Human {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let dl_bar = multi.add(out.bytes(entry.download_size.unwrap_or(0), "download"));
    let xz_bar = multi.add(out.bytes(entry.extract_size.unwrap_or(0), "decompress"));
    let bmap = match &entry.bmap_url {
        Some(u) => Some(fetch_bmap(http, u, entry.extract_size)?),
        None => {
            out.info(format!(
                "no .bmap published for {}: caching the image dense (build, copy and flash \
                 will write every block; that is the safe choice)",
                entry.name
            ));
            None
        }
    };
    let spec = decompress::DecoderSpec {
        dest: cache.image_path(&entry.download_sha256),
        url: entry.url.clone(),
        cache: cache.dir().to_path_buf(),
        need: decompress::SpaceNeed::new(entry.download_size, entry.extract_size),
        bar: xz_bar.clone(),
        bmap: bmap.as_ref().map(|(b, _)| Arc::clone(b)),
    };
    let job = download::Job {
        http,
        url: &entry.url,
        expected_size: entry.download_size,
        partial,
        spec: &spec,
        bar: &dl_bar,
        out,
    };
    let dl = match local {
        Some(path) => download::read_local(path, &spec, &dl_bar)?,
        None => download::download(&job)?,
    };
    dl_bar.finish_and_clear();
    if dl.sha256 != entry.download_sha256 {
        return Err(FetchError::DownloadMismatch {
            url: entry.url.clone(),
            expected: entry.download_sha256.clone(),
            actual: dl.sha256,
        });
    }
    let mut decoded = dl.decoder.finish()?;
    if !entry.extract_sha256.is_empty() && decoded.sha256 != entry.extract_sha256 {
        return Err(FetchError::ExtractMismatch {
            url: entry.url.clone(),
            expected: entry.extract_sha256.clone(),
            actual: decoded.sha256,
            size: decoded.size,
        });
    }
    let bmap_url = entry.bmap_url.clone().unwrap_or_default();
    if let Some((b, _)) = &bmap {
        if b.image_size != decoded.size {
            return Err(FetchError::Bmap {
                url: bmap_url,
                reason: format!(
                    "it describes a {}-byte image but {} decompressed to {} bytes \
                     (is it the bmap of another image?)",
                    b.image_size, entry.url, decoded.size
                ),
            });
        }
        if let Some(m) = decoded.range_mismatch.take() {
            return Err(FetchError::BmapMismatch {
                url: entry.url.clone(),
                bmap_url,
                range: format!(
                    "blocks {}..={} (bytes {}..{}) sha256 expected {}, actual {}",
                    m.first, m.last, m.offset, m.end, m.expected, m.actual
                ),
            });
        }
        holes::punch(decoded.file.file(), &holes::unmapped(b)).map_err(|e| {
            FetchError::io(
                "punching holes at the bmap's unmapped ranges in",
                decoded.file.temp_path(),
                e,
            )
        })?;
    }
    let image = CachedImage {
        path: spec.dest.clone(),
        sha256: decoded.sha256.clone(),
        size: decoded.size,
        download_sha256: entry.download_sha256.clone(),
        release: entry.release.clone(),
        release_date: entry.release_date.clone(),
        name: entry.name.clone(),
        url: entry.url.clone(),
        init_format: entry.init_format.clone(),
        fetched_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        bmap: bmap
            .as_ref()
            .map(|_| cache.bmap_path(&entry.download_sha256)),
        bmap_url: entry.bmap_url.clone(),
    };
    cache.commit(
        decoded.file,
        &image,
        bmap.as_ref().map(|(_, xml)| xml.as_slice()),
    )?;
    out.info(format!(
        "cached {} ({} bytes)",
        image.path.display(),
        image.size
    ));
    Ok(Fetched {
        image,
        downloaded: true,
        resumed_from: dl.resumed_from,
        download_size: dl.size - dl.resumed_from,
    })
}

fn direct_entry(url: &str, sha256: &str) -> Result<ImageEntry, FetchError> {
    let sha = parse_sha256(sha256).ok_or_else(|| {
        FetchError::Invalid(format!(
            "--sha256 {sha256:?}: expected the 64-digit hex sha256 of the .img.xz"
        ))
    })?;
    let file = url.rsplit('/').next().unwrap_or(url).to_string();
    let (date, release) = lite_arm64_file(url).unwrap_or_default();
    Ok(ImageEntry {
        name: file,
        url: url.to_string(),
        release: if release.is_empty() {
            "unknown".into()
        } else {
            release
        },
        release_date: date,
        download_sha256: sha,
        download_size: None,
        extract_sha256: String::new(),
        extract_size: None,
        init_format: None,
        bmap_url: None,
    })
}

/// Largest `.bmap` we accept (a real one is a few hundred KiB at most).
const BMAP_LIMIT: u64 = 64 << 20;

/// Downloads and parses the `.bmap` at `url` (its own checksum is verified by the
/// parser); checks its image size against the OS list's `extract_size` if known.
fn fetch_bmap(
    http: &http::Http,
    url: &str,
    extract_size: Option<u64>,
) -> Result<(Arc<crate::bmap::Bmap>, Vec<u8>), FetchError> {
    let body = http.get_small(url, BMAP_LIMIT)?;
    let bad = |reason: String| FetchError::Bmap {
        url: url.to_string(),
        reason,
    };
    let text = std::str::from_utf8(&body).map_err(|e| bad(format!("not UTF-8 text: {e}")))?;
    let bmap = crate::bmap::Bmap::parse(text).map_err(|e| bad(e.to_string()))?;
    if let Some(size) = extract_size
        && size != bmap.image_size
    {
        return Err(bad(format!(
            "it describes a {}-byte image but the OS list's extract_size is {size} \
             (is it the bmap of another image?)",
            bmap.image_size
        )));
    }
    Ok((Arc::new(bmap), body))
}

/// Reads the OS list at `url` and picks the Lite arm64 image `choice` asks for,
/// following `subitems_url` submenus when the inline entries have none.
pub(crate) fn find_in_os_list(
    http: &http::Http,
    url: &str,
    choice: &ReleaseChoice,
    out: &Reporter,
) -> Result<ImageEntry, FetchError> {
    let body = http.get_small(url, OS_LIST_LIMIT)?;
    let top = os_list::scan(url, &body)?;
    let mut all = top.candidates;
    if let Some(e) = os_list::select(url, &all, choice)? {
        return Ok(e);
    }
    // Breadth-first through submenus published as separate documents.
    let mut queue: Vec<(String, usize)> = top.subitem_urls.into_iter().map(|u| (u, 1)).collect();
    let mut seen = std::collections::HashSet::new();
    while let Some((sub, depth)) = (!queue.is_empty()).then(|| queue.remove(0)) {
        if depth > 3 || !seen.insert(sub.clone()) || seen.len() > 64 {
            continue;
        }
        let scanned = http
            .get_small(&sub, OS_LIST_LIMIT)
            .and_then(|b| os_list::scan(&sub, &b));
        let s = match scanned {
            Ok(s) => s,
            Err(e) => {
                out.warn(format!("skipping submenu: {e}"));
                continue;
            }
        };
        if let Some(e) = os_list::select(&sub, &s.candidates, choice)? {
            return Ok(e);
        }
        all.extend(s.candidates);
        queue.extend(s.subitem_urls.into_iter().map(|u| (u, depth + 1)));
    }
    Err(FetchError::NoLiteImage {
        url: url.to_string(),
        wanted: choice.describe(),
        found: os_list::describe(&all),
    })
}
