//! The build manifest: which profile, node, piimg version and base image produced a
//! card. `piimg build` writes it to the boot partition ([`MANIFEST_FILE`]);
//! `piimg inspect` shows it.

use std::collections::BTreeMap;

use piimg_contract::MANIFEST_FILE;
use serde::{Deserialize, Serialize};

use crate::image::{BootFs, ImageError};
use crate::inputs::Inputs;

/// Version of the manifest format; bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

/// The base image a card was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// File name of the base image (no directories: they are machine-specific).
    pub file: String,
    /// SHA-256 of the uncompressed image, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Who built a card, from what. Unknown fields are tolerated when reading, so an
/// older `piimg inspect` can read a newer manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`] of the writer.
    pub manifest_version: u32,
    /// The profile the card was built from (as named on the command line).
    pub profile: String,
    /// Cluster name from the profile.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// Version of piimg that built it.
    pub piimg_version: String,
    /// Build time, RFC 3339 UTC, from `SOURCE_DATE_EPOCH` when set.
    pub built_at: String,
    /// The base image.
    pub base_image: BaseImage,
    /// Release codename of the base image (`bookworm`, `trixie`).
    pub release: String,
    /// SHA-256 of each template used, by template name.
    #[serde(default)]
    pub template_hashes: BTreeMap<String, String>,
    /// Digests of what the card was built from (absent in cards of older piimg
    /// versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
}

/// A manifest file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid manifest JSON.
    #[error("{MANIFEST_FILE}: not a valid piimg manifest: {0}")]
    Parse(#[from] serde_json::Error),
    /// Reading or writing the boot partition failed.
    #[error(transparent)]
    Image(#[from] ImageError),
}

impl Manifest {
    /// Pretty JSON with a trailing newline (stable field order: reproducible).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses manifest JSON.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Reads [`MANIFEST_FILE`] from a boot partition; `None` when the card has none
    /// (not built by piimg).
    pub fn read_from(boot: &BootFs) -> Result<Option<Self>, ManifestError> {
        match boot.read(MANIFEST_FILE)? {
            Some(bytes) => Ok(Some(Self::from_json(&String::from_utf8_lossy(&bytes))?)),
            None => Ok(None),
        }
    }

    /// Stages [`MANIFEST_FILE`] on a boot partition (call `commit` to write it).
    pub fn write_to(&self, boot: &mut BootFs) -> Result<(), ImageError> {
        boot.write(MANIFEST_FILE, self.to_json().as_bytes())
    }
}

/// `secs` since the Unix epoch as RFC 3339 UTC (the one formatter: [`crate::date`]).
pub use crate::date::rfc3339_utc;

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            manifest_version: MANIFEST_VERSION,
            profile: "profiles/homelab.toml".into(),
            cluster: "homelab".into(),
            node: "cp-1".into(),
            piimg_version: "0.1.0".into(),
            built_at: rfc3339_utc(1_700_000_000),
            base_image: BaseImage {
                file: "2025-05-13-raspios-bookworm-arm64-lite.img".into(),
                sha256: Some("ab".repeat(32)),
            },
            release: "bookworm".into(),
            template_hashes: BTreeMap::from([("firstrun.sh".into(), "cd".repeat(32))]),
            inputs: Some(Inputs {
                profile: "p".into(),
                secrets: "s".into(),
                base: "sha256:ab".into(),
                piimg: "0.1.0+agent.00".into(),
            }),
        }
    }

    #[test]
    fn round_trips_and_tolerates_unknown_fields() {
        let m = sample();
        let json = m.to_json();
        assert_eq!(Manifest::from_json(&json).unwrap(), m);
        let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["future_field"] = serde_json::json!(42);
        assert_eq!(Manifest::from_json(&v.to_string()).unwrap(), m);
    }

    #[test]
    fn garbage_is_a_named_error() {
        let e = Manifest::from_json("{not json").unwrap_err().to_string();
        assert!(
            e.contains("piimg/manifest.json: not a valid piimg manifest"),
            "{e}"
        );
    }

    #[test]
    fn rfc3339() {
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
    }
}
