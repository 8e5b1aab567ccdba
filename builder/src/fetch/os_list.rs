//! Raspberry Pi Imager's OS list: find "Raspberry Pi OS Lite (64-bit)" in it.
//!
//! The list (`os_list_imagingutility_v4.json`) is a tree: `os_list` entries either
//! describe an image (`url`, `image_download_sha256`, `extract_sha256`, sizes,
//! `release_date`, `init_format`) or a submenu with inline `subitems` or a
//! `subitems_url` pointing at another list. Lite arm64 images are recognised by
//! their file name, `<date>-raspios-<release>-arm64-lite.img.xz`, which is stable
//! across the current entry and the "Raspberry Pi OS (other)" submenu where older
//! releases (Legacy) live.

use serde_json::Value;

use super::FetchError;

/// The URL Raspberry Pi Imager reads its OS list from (rpi-imager `src/config.h`, `OSLIST_URL`).
pub const DEFAULT_OS_LIST_URL: &str =
    "https://downloads.raspberrypi.com/os_list_imagingutility_v4.json";

/// Which release to pick among the Lite arm64 images of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseChoice {
    /// The newest image (by release date).
    Latest,
    /// The newest image of a Debian codename ("bookworm", "trixie").
    Named(String),
}

impl ReleaseChoice {
    /// Parses `latest` or a lowercase Debian codename.
    pub fn parse(s: &str) -> Result<Self, FetchError> {
        if s == "latest" {
            return Ok(Self::Latest);
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()) {
            return Ok(Self::Named(s.to_string()));
        }
        Err(FetchError::Invalid(format!(
            "--release {s:?}: expected `latest` or a Debian codename such as `bookworm` or `trixie`"
        )))
    }

    /// True when an image of `release` satisfies this choice.
    pub fn accepts(&self, release: &str) -> bool {
        match self {
            Self::Latest => true,
            Self::Named(n) => n == release,
        }
    }

    /// " for release X", or empty for latest (for messages).
    pub fn describe(&self) -> String {
        match self {
            Self::Latest => String::new(),
            Self::Named(n) => format!(" for release {n}"),
        }
    }
}

/// One Lite arm64 image as the OS list describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Display name, e.g. "Raspberry Pi OS Lite (64-bit)".
    pub name: String,
    /// Download URL of the `.img.xz`.
    pub url: String,
    /// Debian codename parsed from the file name.
    pub release: String,
    /// `release_date` (YYYY-MM-DD).
    pub release_date: String,
    /// sha256 of the `.img.xz` (lowercase hex).
    pub download_sha256: String,
    /// Size of the `.img.xz`, if given.
    pub download_size: Option<u64>,
    /// sha256 of the decompressed image (lowercase hex).
    pub extract_sha256: String,
    /// Size of the decompressed image, if given.
    pub extract_size: Option<u64>,
    /// Imager's `init_format` (`systemd`, `cloudinit-rpi`, ...), if given.
    pub init_format: Option<String>,
    /// Imager's `bmap_url`: the image creator's block map (which ranges matter), if given.
    pub bmap_url: Option<String>,
}

/// A Lite arm64 image found in a list, not yet validated.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    release: String,
    date: String,
    value: Value,
}

/// What one list document holds: Lite arm64 candidates and submenus to fetch.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub candidates: Vec<Candidate>,
    pub subitem_urls: Vec<String>,
}

/// Parses one list document (the top level, or one fetched via `subitems_url`).
pub(crate) fn scan(url: &str, body: &[u8]) -> Result<Scan, FetchError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| FetchError::OsList {
        url: url.to_string(),
        reason: format!("not valid JSON: {e}"),
    })?;
    let items = match &doc {
        Value::Object(map) => match map.get("os_list") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(FetchError::OsList {
                    url: url.to_string(),
                    reason: "no `os_list` array at the top level (is this an Imager OS list?)"
                        .into(),
                });
            }
        },
        Value::Array(items) => items,
        _ => {
            return Err(FetchError::OsList {
                url: url.to_string(),
                reason: "expected a JSON object with an `os_list` array".into(),
            });
        }
    };
    let mut scan = Scan::default();
    walk(items, 0, &mut scan);
    Ok(scan)
}

fn walk(items: &[Value], depth: usize, scan: &mut Scan) {
    if depth > 8 {
        return;
    }
    for item in items {
        let Value::Object(map) = item else { continue };
        if let Some(Value::Array(sub)) = map.get("subitems") {
            walk(sub, depth + 1, scan);
        }
        if let Some(Value::String(u)) = map.get("subitems_url") {
            scan.subitem_urls.push(u.clone());
        }
        let Some(Value::String(u)) = map.get("url") else {
            continue;
        };
        let name = map.get("name").and_then(Value::as_str).unwrap_or("");
        if let Some((date, release)) = lite_arm64_file(u)
            && name.contains("Lite")
        {
            let date = map
                .get("release_date")
                .and_then(Value::as_str)
                .unwrap_or(&date)
                .to_string();
            scan.candidates.push(Candidate {
                release,
                date,
                value: item.clone(),
            });
        }
    }
}

/// `(date, release)` when `url`'s file name is `<date>-raspios-<release>-arm64-lite.img.xz`.
pub fn lite_arm64_file(url: &str) -> Option<(String, String)> {
    let file = url.rsplit('/').next()?;
    let stem = file.strip_suffix("-arm64-lite.img.xz")?;
    // stem = YYYY-MM-DD-raspios-<release>
    let (date, rest) = stem.split_at_checked(10)?;
    let release = rest.strip_prefix("-raspios-")?;
    let date_ok = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if date_ok && !release.is_empty() && release.bytes().all(|b| b.is_ascii_lowercase()) {
        Some((date.to_string(), release.to_string()))
    } else {
        None
    }
}

/// Picks the newest candidate `choice` accepts and validates its fields.
pub(crate) fn select(
    url: &str,
    candidates: &[Candidate],
    choice: &ReleaseChoice,
) -> Result<Option<ImageEntry>, FetchError> {
    let best = candidates
        .iter()
        .filter(|c| choice.accepts(&c.release))
        .max_by(|a, b| a.date.cmp(&b.date));
    best.map(|c| entry(url, c)).transpose()
}

/// "trixie (2025-10-01), bookworm (2025-05-13)" or "none", for messages.
pub(crate) fn describe(candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "none".into();
    }
    let mut seen: Vec<String> = candidates
        .iter()
        .map(|c| format!("{} ({})", c.release, c.date))
        .collect();
    seen.sort();
    seen.dedup();
    seen.join(", ")
}

fn entry(list_url: &str, c: &Candidate) -> Result<ImageEntry, FetchError> {
    let name = c
        .value
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let bad = |field: &str, what: &str| FetchError::OsList {
        url: list_url.to_string(),
        reason: format!("entry {name:?}: field `{field}` {what}"),
    };
    let sha = |field: &str| -> Result<String, FetchError> {
        let v = c
            .value
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(field, "is missing or not a string"))?;
        parse_sha256(v).ok_or_else(|| bad(field, "is not a 64-digit hex sha256"))
    };
    let size = |field: &str| -> Result<Option<u64>, FetchError> {
        match c.value.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| bad(field, "is not a non-negative integer")),
        }
    };
    Ok(ImageEntry {
        url: c
            .value
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        release: c.release.clone(),
        release_date: c.date.clone(),
        download_sha256: sha("image_download_sha256")?,
        download_size: size("image_download_size")?,
        extract_sha256: sha("extract_sha256")?,
        extract_size: size("extract_size")?,
        init_format: c
            .value
            .get("init_format")
            .and_then(Value::as_str)
            .map(str::to_string),
        bmap_url: c
            .value
            .get("bmap_url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string),
        name,
    })
}

/// Lowercase `s` when it is a sha256 in hex (64 hex digits), else `None`.
pub fn parse_sha256(s: &str) -> Option<String> {
    let s = s.trim();
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lite_arm64_file_names() {
        assert_eq!(
            lite_arm64_file(
                "https://downloads.raspberrypi.com/raspios_lite_arm64/images/raspios_lite_arm64-2025-05-13/2025-05-13-raspios-bookworm-arm64-lite.img.xz"
            ),
            Some(("2025-05-13".into(), "bookworm".into()))
        );
        assert_eq!(
            lite_arm64_file("http://x/2025-05-13-raspios-bookworm-armhf-lite.img.xz"),
            None
        );
        assert_eq!(
            lite_arm64_file("http://x/2025-05-13-raspios-bookworm-arm64.img.xz"),
            None
        );
        assert_eq!(
            lite_arm64_file("http://x/20a5-05-13-raspios-bookworm-arm64-lite.img.xz"),
            None
        );
    }

    #[test]
    fn release_choice_parses() {
        assert_eq!(
            ReleaseChoice::parse("latest").unwrap(),
            ReleaseChoice::Latest
        );
        assert_eq!(
            ReleaseChoice::parse("trixie").unwrap(),
            ReleaseChoice::Named("trixie".into())
        );
        let err = ReleaseChoice::parse("Trixie 13").unwrap_err().to_string();
        assert!(err.contains("--release"), "{err}");
    }

    #[test]
    fn selects_newest_of_release_and_reports_bad_fields() {
        let doc = serde_json::json!({"os_list": [
            {"name": "Raspberry Pi OS (other)", "subitems": [
                {"name": "Raspberry Pi OS Lite (64-bit)", "url": "http://h/2025-10-01-raspios-trixie-arm64-lite.img.xz",
                 "release_date": "2025-10-01", "image_download_sha256": "A".repeat(64),
                 "extract_sha256": "b".repeat(64), "image_download_size": 5, "extract_size": 9},
                {"name": "Raspberry Pi OS (Legacy, 64-bit) Lite", "url": "http://h/2025-05-13-raspios-bookworm-arm64-lite.img.xz",
                 "release_date": "2025-05-13", "image_download_sha256": "zz", "extract_sha256": "b".repeat(64)},
                {"name": "Raspberry Pi OS (32-bit) Lite", "url": "http://h/2025-10-01-raspios-trixie-armhf-lite.img.xz"}
            ]},
            {"name": "Other", "subitems_url": "http://h/other.json"}
        ]});
        let s = scan("L", doc.to_string().as_bytes()).unwrap();
        assert_eq!(s.candidates.len(), 2);
        assert_eq!(s.subitem_urls, vec!["http://h/other.json".to_string()]);
        let e = select("L", &s.candidates, &ReleaseChoice::Latest)
            .unwrap()
            .unwrap();
        assert_eq!(e.release, "trixie");
        assert_eq!(e.download_sha256, "a".repeat(64));
        assert_eq!(e.extract_size, Some(9));
        let err = select("L", &s.candidates, &ReleaseChoice::Named("bookworm".into()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("image_download_sha256"), "{err}");
        assert!(err.contains("Legacy"), "{err}");
        assert!(
            select("L", &s.candidates, &ReleaseChoice::Named("bullseye".into()))
                .unwrap()
                .is_none()
        );
        assert_eq!(
            describe(&s.candidates),
            "bookworm (2025-05-13), trixie (2025-10-01)"
        );
    }
}
