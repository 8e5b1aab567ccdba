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
    /// Whether `/etc/sudoers.d/010_pi-nopasswd` ships.
    pub nopasswd_sudo: bool,
    /// Whether `userconfig.service` is enabled.
    pub userconfig_service: bool,
}

/// All facts.
#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    /// Disk layout.
    pub layout: Layout,
    /// Release vintages by name.
    pub vintages: BTreeMap<String, Vintage>,
    /// What `flash` erases first.
    pub flash_erase: FlashErase,
    /// Where a `.bmap` is looked for.
    pub bmap_lookup: BmapLookup,
}

/// The partition structures `flash` erases before writing (`[flash_erase]`).
#[derive(Debug, Clone, Deserialize)]
pub struct FlashErase {
    /// Where the facts come from.
    pub source: String,
    /// Bytes at the card's start holding an MBR and a primary GPT (with entries).
    pub head_bytes: u64,
    /// Bytes at the card's end holding a backup GPT (with entries).
    pub tail_bytes: u64,
}

/// How bmaptool finds an image's block map (`[bmap_lookup]`).
#[derive(Debug, Clone, Deserialize)]
pub struct BmapLookup {
    /// Where the rule comes from.
    pub source: String,
    /// Appended to the image path.
    pub suffix: String,
    /// Whether extensions are then taken off one by one and the suffix tried again.
    pub strip_extensions: bool,
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
        assert!(!f.flash_erase.source.is_empty() && !f.bmap_lookup.source.is_empty());
        // The erase covers a GPT with 128 entries in 4096-byte sectors: 34 sectors.
        assert!(f.flash_erase.head_bytes >= 34 * 4096 && f.flash_erase.tail_bytes >= 33 * 4096);
        for (name, v) in &f.vintages {
            assert!(!v.source.is_empty(), "{name} has no source");
        }
    }
}
