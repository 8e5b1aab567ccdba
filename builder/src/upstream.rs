//! Upstream facts (Raspberry Pi OS, pi-gen, Imager) the builder relies on, read from
//! `upstream.toml` beside this file, where each fact names its source. Test-image
//! scripts read the same file, so the tests' bases follow the same rules.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The facts file as embedded at build time.
pub const FACTS_TOML: &str = include_str!("upstream.toml");

/// pi-gen's disk layout.
#[derive(Debug, Clone, Deserialize)]
pub struct Layout {
    /// Where the facts come from.
    pub source: String,
    /// Partition table kind (`msdos`).
    pub partition_table: String,
    /// Partition alignment in bytes.
    pub align_bytes: u64,
    /// Boot partition size in bytes.
    pub boot_size_bytes: u64,
    /// MBR type byte of the boot partition.
    pub boot_type: u8,
    /// FAT label of the boot partition.
    pub boot_label: String,
    /// MBR type byte of the root partition.
    pub root_type: u8,
    /// ext4 label of the root partition.
    pub root_label: String,
    /// `mkfs.ext4 -O` argument pi-gen uses.
    pub root_mkfs_features: String,
}

/// What one release vintage of Raspberry Pi OS Lite ships.
#[derive(Debug, Clone, Deserialize)]
pub struct Vintage {
    /// Where the facts come from.
    pub source: String,
    /// Debian codename.
    pub codename: String,
    /// Imager's `init_format` for it.
    pub init_format: String,
    /// `mkdosfs -s` of the boot partition.
    pub bootfs_sectors_per_cluster: u32,
    /// The first user's login name.
    pub first_user: String,
    /// The first user's login shell.
    pub first_user_shell: String,
    /// The first user's supplementary groups.
    pub first_user_groups: Vec<String>,
    /// Whether `/etc/sudoers.d/010_pi-nopasswd` ships.
    pub nopasswd_sudo: bool,
    /// Whether `userconfig.service` is enabled.
    pub userconfig_service: bool,
    /// How cloud-init finds its NoCloud seed: empty (no cloud-init), `seedfrom`
    /// (`file:///boot/firmware`) or `fs_label` (`bootfs`).
    pub cloud_init_datasource: String,
    /// Whether template `user-data`/`meta-data`/`network-config` are on the boot partition.
    pub cloud_init_seed_on_bootfs: bool,
    /// Lines of config.txt's `[pi5]` section; empty when the release has none.
    pub config_txt_pi5: Vec<String>,
}

/// All facts.
#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    /// Disk layout.
    pub layout: Layout,
    /// Release vintages by name.
    pub vintages: BTreeMap<String, Vintage>,
}

/// The embedded facts, parsed once. The file is part of the binary and checked by a
/// unit test, so a parse failure is a build defect, not user input.
pub fn facts() -> &'static Facts {
    static FACTS: OnceLock<Facts> = OnceLock::new();
    FACTS.get_or_init(|| {
        toml::from_str(FACTS_TOML).unwrap_or_else(|e| panic!("builder/src/upstream.toml: {e}"))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_facts_file_parses_and_names_its_sources() {
        let f = super::facts();
        assert!(!f.layout.source.is_empty());
        assert!(f.vintages.len() >= 3);
        for (name, v) in &f.vintages {
            assert!(!v.source.is_empty(), "{name} has no source");
        }
    }

    #[test]
    fn vintages_are_consistent() {
        let f = super::facts();
        for name in ["bookworm", "trixie-2025-10", "trixie-2026"] {
            let v = &f.vintages[name];
            assert!(
                [1, 2, 4, 8].contains(&v.bootfs_sectors_per_cluster),
                "{name}"
            );
            assert!(v.first_user_shell.starts_with('/'), "{name}");
            assert!(v.first_user_groups.iter().any(|g| g == "sudo"), "{name}");
            // cloud-init is Trixie's; its datasource style says how the seed is found.
            let cloud = v.codename == "trixie";
            assert_eq!(!v.cloud_init_datasource.is_empty(), cloud, "{name}");
            assert!(
                ["", "seedfrom", "fs_label"].contains(&v.cloud_init_datasource.as_str()),
                "{name}"
            );
            assert!(!v.cloud_init_seed_on_bootfs || cloud, "{name}");
        }
        // The case users hit: the current Trixie first user cannot log in as shipped.
        assert_eq!(
            f.vintages["trixie-2026"].first_user_shell,
            "/usr/sbin/nologin"
        );
        assert!(!f.vintages["trixie-2026"].nopasswd_sudo);
    }
}
