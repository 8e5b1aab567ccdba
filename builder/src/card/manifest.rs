//! The build manifest on the boot partition ([`contract::MANIFEST_FILE`]): who built
//! this card, from what, with which templates. `piimg inspect` shows it.
//!
//! (The interfaces note puts this type at `piimg::manifest`; it lives with the card
//! until the image branch's own manifest module lands, so the two can be merged.)

use super::Card;
use piimg_firstboot::contract;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The base image a card was built on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseImage {
    /// File name of the base image.
    pub file: String,
    /// SHA-256 of the base image, when known (the fetch cache verifies it).
    pub sha256: Option<String>,
}

/// The OS release of the base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRelease {
    /// Debian codename.
    pub codename: String,
    /// `PRETTY_NAME` from os-release.
    pub pretty_name: String,
    /// First-boot mechanism used on this card (`systemd-run` or `cloud-init`).
    pub first_boot: String,
}

/// `piimg/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`contract::CONTRACT_VERSION`] of the card.
    pub contract_version: u32,
    /// Profile name.
    pub profile: String,
    /// Cluster name.
    pub cluster: String,
    /// Node name.
    pub node: String,
    /// Version of piimg that built the card.
    pub piimg_version: String,
    /// Build time, RFC 3339 UTC (SOURCE_DATE_EPOCH when set).
    pub built_at: String,
    /// The base image.
    pub base_image: BaseImage,
    /// The base image's OS.
    pub release: ManifestRelease,
    /// SHA-256 of every template used, by name.
    pub template_hashes: BTreeMap<String, String>,
}

impl Manifest {
    /// The manifest of `card`, built on `base_file` (with `base_sha256` if known).
    pub fn for_card(
        card: &Card,
        pretty_name: &str,
        base_file: &str,
        base_sha256: Option<&str>,
    ) -> Self {
        Self {
            contract_version: contract::CONTRACT_VERSION,
            profile: card.profile.clone(),
            cluster: card.cluster.clone(),
            node: card.node.clone(),
            piimg_version: env!("CARGO_PKG_VERSION").to_string(),
            built_at: rfc3339(card.build_time),
            base_image: BaseImage {
                file: base_file.to_string(),
                sha256: base_sha256.map(str::to_string),
            },
            release: ManifestRelease {
                codename: card.os.codename.clone(),
                pretty_name: pretty_name.to_string(),
                first_boot: match card.os.first_boot {
                    super::FirstBoot::SystemdRun => "systemd-run".into(),
                    super::FirstBoot::CloudInit => "cloud-init".into(),
                },
            },
            template_hashes: card.template_hashes.clone(),
        }
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Parses `manifest.json`.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
