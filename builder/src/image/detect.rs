//! Detecting what OS a root file system holds: its [`Release`] (os-release, users,
//! architecture) and the first-boot mechanisms it supports.

use super::error::ImageError;
use super::first_boot;
use super::release::{
    Release, detect_arch, parse_os_release, parse_passwd, require_supported_arch,
};
use super::rootfs::RootFs;
use crate::upstream;

impl RootFs {
    /// What OS this root holds, refusing anything but arm64 (see [`Release`]).
    pub fn release(&self) -> Result<Release, ImageError> {
        let r = self.detect_release()?;
        require_supported_arch(self.image_path(), &r)?;
        Ok(r)
    }

    /// What OS this root holds, whatever its architecture (for `inspect`).
    pub fn detect_release(&self) -> Result<Release, ImageError> {
        detect(self)
    }
}

/// Reads the release facts from `root`.
pub fn detect(root: &RootFs) -> Result<Release, ImageError> {
    let image = root.image_path();
    let fail = |reason: String| ImageError::Release {
        image: image.to_path_buf(),
        reason,
    };
    let os_release = match root.read_text("/etc/os-release")? {
        Some(t) => t,
        None => root.read_text("/usr/lib/os-release")?.ok_or_else(|| {
            fail(
                "neither /etc/os-release nor /usr/lib/os-release exists; is this a Debian root?"
                    .into(),
            )
        })?,
    };
    let fields = parse_os_release(&os_release);
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut codename = get("VERSION_CODENAME");
    if codename.is_empty() {
        // Older files only say VERSION="12 (bookworm)".
        let version = get("VERSION");
        if let (Some(a), Some(b)) = (version.find('('), version.find(')')) {
            codename = version[a + 1..b].trim().to_string();
        }
    }
    if codename.is_empty() {
        return Err(fail(
            "/etc/os-release has no VERSION_CODENAME (expected bookworm or trixie)".into(),
        ));
    }
    let (arch, arch_evidence) = detect_arch(root)?;
    let facts = upstream::facts();
    let (first_boot_support, first_boot_missing) = first_boot::support(root, &codename, facts)?;
    let network_manager = root.exists("/usr/sbin/NetworkManager")?;
    let users = root
        .read_text("/etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let mut release = Release {
        codename,
        version_id: get("VERSION_ID"),
        pretty_name: get("PRETTY_NAME"),
        id: get("ID"),
        arch,
        arch_evidence,
        first_boot: None,
        first_boot_support,
        first_boot_missing,
        nopasswd_sudo: root.exists(&facts.first_boot.sudoers_nopasswd)?,
        userconfig_service: root.exists(&facts.first_boot.userconfig_service)?,
        network_manager,
        users,
    };
    release.first_boot = first_boot::choose(image, &release, None).ok();
    Ok(release)
}
