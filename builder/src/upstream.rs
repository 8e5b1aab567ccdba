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

/// One of Imager's OS-list `init_format`s.
#[derive(Debug, Clone, Deserialize)]
pub struct InitFormat {
    /// Where the facts come from.
    pub source: String,
    /// What piimg does for it (`systemd-run`, `cloud-init`), empty when unsupported.
    pub mechanism: String,
    /// Files Imager writes on the boot partition for it.
    pub boot_files: Vec<String>,
    /// Paths on the root that must all exist for the OS to read those files.
    pub root_evidence: Vec<String>,
    /// Releases the end-to-end test boots with this mechanism.
    pub tested_codenames: Vec<String>,
}

/// What makes each first-boot mechanism work on a root.
#[derive(Debug, Clone, Deserialize)]
pub struct FirstBootFacts {
    /// Where the facts come from.
    pub source: String,
    /// Oldest systemd whose `systemd-run-generator` honours `systemd.run=`.
    pub systemd_run_min_systemd: u32,
    /// The generator that turns `systemd.run=` into a unit.
    pub systemd_run_generator: String,
    /// raspberrypi-sys-mods' `init=` first-boot script.
    pub sysmods_firstboot: String,
    /// Releases whose cmdline.txt runs that script (and so need it).
    pub sysmods_firstboot_codenames: Vec<String>,
    /// cloud-init configuration: files, and directories of `*.cfg` files.
    pub cloud_init_configs: Vec<String>,
    /// The passwordless-sudo drop-in for the first user.
    pub sudoers_nopasswd: String,
    /// The link that enables `userconfig.service`.
    pub userconfig_service: String,
    /// cloud-init's once-per-instance semaphores of `runcmd` (writes the script) and
    /// `scripts_user` (runs it); written before the module runs, so a cut leaves them.
    pub cloud_init_runcmd_semaphores: Vec<String>,
}

/// FAT rules of the file-system block map.
#[derive(Debug, Clone, Deserialize)]
pub struct FatMapRules {
    /// Where the rules come from.
    pub source: String,
    /// What must be kept, in words.
    pub rules: String,
    /// Most clusters a FAT12 file system has.
    pub fat12_max_clusters: u64,
    /// Most clusters a FAT16 file system has.
    pub fat16_max_clusters: u64,
}

/// ext2/3/4 rules of the file-system block map.
#[derive(Debug, Clone, Deserialize)]
pub struct Ext4MapRules {
    /// Where the rules come from.
    pub source: String,
    /// What must be kept, in words.
    pub rules: String,
    /// With sparse_super, groups 0, 1 and powers of these hold superblock backups.
    pub backup_group_powers: Vec<u64>,
    /// Group descriptor flag: inode bitmap and table not initialised.
    pub bg_inode_uninit: u16,
    /// Group descriptor flag: block bitmap not initialised.
    pub bg_block_uninit: u16,
    /// Group descriptor flag: inode table zeroed.
    pub bg_itable_zeroed: u16,
    /// Incompat feature bits the map understands.
    pub incompat_known_mask: u32,
}

/// The block map's rules per file system.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockMapRules {
    /// FAT12/16/32.
    pub fat: FatMapRules,
    /// ext2/3/4.
    pub ext4: Ext4MapRules,
}

/// All facts.
#[derive(Debug, Clone, Deserialize)]
pub struct Facts {
    /// Disk layout.
    pub layout: Layout,
    /// Release vintages by name.
    pub vintages: BTreeMap<String, Vintage>,
    /// Imager's `init_format`s by name.
    pub init_formats: BTreeMap<String, InitFormat>,
    /// What each first-boot mechanism needs on the root.
    pub first_boot: FirstBootFacts,
    /// What a card must hold per file system.
    pub blockmap: BlockMapRules,
    /// What `flash` erases first.
    pub flash_erase: FlashErase,
    /// Where a `.bmap` is looked for.
    pub bmap_lookup: BmapLookup,
    /// k3s behaviour piimg relies on (`[k3s]`).
    pub k3s: K3sFacts,
    /// How card insertions are seen and cards ejected (`[card_events]`).
    pub card_events: CardEvents,
    /// Booting from USB or NVMe (`[boot]`).
    pub boot: BootFacts,
    /// k3s settings rendered for storage (`[k3s_storage]`).
    pub k3s_storage: K3sStorageFacts,
    /// Wi-Fi as Imager and Raspberry Pi OS do it (`[wifi]`).
    pub wifi: WifiFacts,
}

/// How `flash --swap` sees cards being inserted and ejects them (`[card_events]`).
#[derive(Debug, Clone, Deserialize)]
pub struct CardEvents {
    /// Where the facts come from.
    pub source: String,
    /// The netlink protocol of kernel uevents.
    pub netlink_kobject_uevent: i32,
    /// The multicast group the kernel sends them to.
    pub kernel_group: u32,
    /// The ioctl that ejects a SCSI disk's medium.
    pub eject_ioctl: u64,
}

/// Booting from a USB or NVMe disk (`[boot]`): EEPROM boot orders and config.txt lines.
#[derive(Debug, Clone, Deserialize)]
pub struct BootFacts {
    /// Where the facts come from.
    pub source: String,
    /// What an empty `BOOT_ORDER` means (SD, then USB).
    pub default_order: String,
    /// `BOOT_ORDER` trying USB first, then SD.
    pub usb_first: String,
    /// `BOOT_ORDER` trying NVMe first, then SD, then USB.
    pub nvme_first: String,
    /// The EEPROM line that makes a Pi 5 bootloader probe non-HAT+ PCIe adapters.
    pub pcie_probe: String,
    /// config.txt line enabling the Pi 5 PCIe connector.
    pub pcie_enable: String,
    /// config.txt line forcing PCIe Gen 3.
    pub pcie_gen3: String,
    /// Boards with an EEPROM bootloader (a `BOOT_ORDER`).
    pub eeprom_boards: Vec<String>,
    /// Boards that boot from USB mass storage.
    pub usb_boot_boards: Vec<String>,
    /// Boards that boot from NVMe on their own PCIe connector.
    pub nvme_boot_boards: Vec<String>,
}

/// k3s settings rendered for storage (`[k3s_storage]`).
#[derive(Debug, Clone, Deserialize)]
pub struct K3sStorageFacts {
    /// Where the facts come from.
    pub source: String,
    /// Directory of `config.yaml` drop-ins k3s reads after `config.yaml`.
    pub config_drop_in_dir: String,
    /// k3s's default `data-dir`.
    pub data_dir: String,
    /// Every `etcd-s3*` config key (set through `[k3s.etcd_s3]` only).
    pub etcd_s3_keys: Vec<String>,
    /// kubelet's default `image-gc-high-threshold` (percent).
    pub kubelet_image_gc_high_default: u8,
    /// kubelet's default `image-gc-low-threshold` (percent).
    pub kubelet_image_gc_low_default: u8,
}

/// Wi-Fi as Raspberry Pi Imager and Raspberry Pi OS do it (`[wifi]`); only what the
/// code reads is typed here.
#[derive(Debug, Clone, Deserialize)]
pub struct WifiFacts {
    /// Where the facts come from.
    pub source: String,
    /// The cmdline.txt argument (without the country) that sets the regulatory domain.
    pub regdom_cmdline_arg: String,
    /// PBKDF2 iterations of a WPA passphrase.
    pub psk_pbkdf2_iterations: u32,
    /// Length of the derived PSK in bytes.
    pub psk_bytes: usize,
}

/// k3s behaviour piimg relies on (`[k3s]`); only what the code reads is typed here.
#[derive(Debug, Clone, Deserialize)]
pub struct K3sFacts {
    /// Where the token/RBAC facts come from.
    pub source: String,
    /// Where the cluster-access facts below come from.
    pub cluster_access_source: String,
    /// The role `/db/info` (and the bootstrap data) requires.
    pub bootstrap_data_role: String,
    /// The port the supervisor and the proxied Kubernetes API listen on by default.
    pub api_port: u16,
    /// The `config.yaml` key that moves that port.
    pub api_port_arg: String,
    /// CN of k3s's own admin client certificate.
    pub admin_user: String,
    /// Organization (Kubernetes group) of k3s's own admin client certificate.
    pub admin_group: String,
    /// Path of the etcd member list on the supervisor port.
    pub db_info_path: String,
    /// Length of the random suffix after `<node name>-` in an etcd member's name.
    pub etcd_member_suffix_len: usize,
    /// Node annotation naming the etcd member the node runs.
    pub etcd_node_name_annotation: String,
    /// Node annotation giving that member's address.
    pub etcd_node_address_annotation: String,
    /// Label k3s puts on every server's Node.
    pub control_plane_label: String,
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
        for (name, i) in &f.init_formats {
            assert!(!i.source.is_empty(), "init format {name} has no source");
        }
        for v in f.vintages.values() {
            assert!(
                f.init_formats.contains_key(&v.init_format),
                "vintage init_format {} is not an [init_formats] table",
                v.init_format
            );
        }
        assert!(!f.first_boot.source.is_empty());
        assert!(!f.blockmap.fat.source.is_empty());
        assert!(!f.blockmap.ext4.source.is_empty());
        assert!(!f.k3s.source.is_empty() && !f.k3s.cluster_access_source.is_empty());
        assert_eq!(f.k3s.api_port, 6443);
        assert_eq!(f.k3s.admin_group, "system:masters");
        assert!(f.k3s.db_info_path.starts_with('/'));
        assert!(!f.boot.source.is_empty() && !f.k3s_storage.source.is_empty());
        for order in [&f.boot.default_order, &f.boot.usb_first, &f.boot.nvme_first] {
            assert!(
                order.starts_with("0x") && u32::from_str_radix(&order[2..], 16).is_ok(),
                "{order}"
            );
        }
        assert_eq!(
            f.k3s_storage.data_dir,
            piimg_contract::storage::K3S_DATA_DIR
        );
        assert!(!f.wifi.source.is_empty());
        assert!(f.wifi.regdom_cmdline_arg.ends_with('='));
        assert_eq!(f.wifi.psk_bytes, 32);
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
