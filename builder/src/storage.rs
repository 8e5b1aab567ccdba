//! Where a node boots from, where k3s keeps its data and how the node spares its SD
//! card: every storage decision, made once from the profile for one node. The plan
//! records the result ([`NodeStorage`]); the card copies [`NodeStorage::card`] into
//! `node.json` and places [`config_txt`]'s lines under the board's section.

use crate::profile::model::{Node, Storage as BootDisk, StorageOptions};
use crate::upstream;
use piimg_contract::storage::{
    BootDevice, DATA_DISK_LABEL, DataDisk, DiskBus, K3S_DATA_DIR, SdWear, Storage,
};
use serde::Serialize;

pub use crate::profile::model::{SD_IMAGE_GC_HIGH, SD_IMAGE_GC_LOW};

/// A node's storage, resolved (the default: SD boot, no data disk, SD-wear off).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeStorage {
    /// What the card tells the agent (`NodeConfig.storage`).
    pub card: Storage,
    /// The bootloader setting the board needs to boot from its disk; `None` for SD
    /// boot (every board's default order tries the SD card first).
    pub boot_order: Option<BootOrder>,
}

/// The EEPROM bootloader configuration a board needs for its boot device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootOrder {
    /// `BOOT_ORDER=` value, e.g. `0xf416`; `None` on boards without an EEPROM
    /// bootloader (they try USB when no SD card is inserted).
    pub boot_order: Option<String>,
    /// Extra EEPROM lines, e.g. `PCIE_PROBE=1` for NVMe adapters that are not HAT+.
    pub extra: Vec<String>,
    /// How to set it, in words.
    pub how: String,
}

/// The contract's boot device for the profile's `storage`.
pub fn boot_device(disk: BootDisk) -> BootDevice {
    match disk {
        BootDisk::Sd => BootDevice::Sd,
        BootDisk::Usb => BootDevice::Usb,
        BootDisk::Nvme => BootDevice::Nvme,
    }
}

/// `node`'s storage on `board` with the profile's `[storage]` options: SD-booting
/// nodes get the profile's `sd_wear` (default minimal), nodes booting from a disk
/// none; a data disk is mounted at k3s's data directory.
pub fn resolve(node: &Node, board: &str, opts: &StorageOptions) -> NodeStorage {
    let boot = boot_device(node.storage);
    let card = Storage {
        boot_device: boot,
        data_disk: node.data_disk.map(|bus| DataDisk {
            bus,
            label: DATA_DISK_LABEL.to_string(),
            mount_point: K3S_DATA_DIR.to_string(),
        }),
        sd_wear: if boot == BootDevice::Sd {
            opts.sd_wear
        } else {
            SdWear::Off
        },
    };
    NodeStorage {
        boot_order: boot_order(board, boot),
        card,
    }
}

/// The bootloader setting `board` needs to boot from `device` (`None` for SD).
pub fn boot_order(board: &str, device: BootDevice) -> Option<BootOrder> {
    let f = &upstream::facts().boot;
    let eeprom = f.eeprom_boards.iter().any(|b| b == board);
    let edit =
        "on the node (booted once from any SD card): `sudo rpi-eeprom-config --edit`, reboot";
    match device {
        BootDevice::Sd => None,
        BootDevice::Usb if eeprom => Some(BootOrder {
            boot_order: Some(f.usb_first.clone()),
            extra: Vec::new(),
            how: format!(
                "BOOT_ORDER={} (USB first, then SD) {edit}; without it the board boots USB only when no SD card is inserted",
                f.usb_first
            ),
        }),
        BootDevice::Usb => Some(BootOrder {
            boot_order: None,
            extra: Vec::new(),
            how: "no EEPROM bootloader: remove the SD card and the board boots from USB"
                .to_string(),
        }),
        BootDevice::Nvme => Some(BootOrder {
            boot_order: Some(f.nvme_first.clone()),
            extra: vec![f.pcie_probe.clone()],
            how: format!(
                "BOOT_ORDER={} (NVMe, then SD, then USB) and, for an adapter that is not a HAT+, {} {edit}",
                f.nvme_first, f.pcie_probe
            ),
        }),
    }
}

/// config.txt lines for the board's own section: a Pi 5 with an NVMe disk (boot or
/// data) gets its PCIe connector enabled, at Gen 3 when the profile asks for it.
pub fn config_txt(board: &str, storage: &Storage, opts: &StorageOptions) -> Vec<String> {
    let f = &upstream::facts().boot;
    let nvme = storage.boot_device == BootDevice::Nvme
        || storage
            .data_disk
            .as_ref()
            .is_some_and(|d| d.bus == DiskBus::Nvme);
    let mut lines = Vec::new();
    if nvme && f.nvme_boot_boards.iter().any(|b| b == board) {
        lines.push(f.pcie_enable.clone());
        if opts.pcie_gen3 {
            lines.push(f.pcie_gen3.clone());
        }
    }
    lines
}

/// kubelet arguments for `sd_wear`: image garbage collection thresholds that keep a
/// small card from filling up with images.
pub fn kubelet_args(sd_wear: SdWear) -> Vec<String> {
    match sd_wear {
        SdWear::Off => Vec::new(),
        SdWear::Minimal => vec![
            format!("image-gc-high-threshold={SD_IMAGE_GC_HIGH}"),
            format!("image-gc-low-threshold={SD_IMAGE_GC_LOW}"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(storage: BootDisk, data_disk: Option<DiskBus>) -> Node {
        Node {
            name: "n".into(),
            ip: "10.0.0.2".parse().expect("ip"),
            role: piimg_contract::Role::Server,
            hardware: "pi5-8gb".into(),
            labels: Default::default(),
            taints: Vec::new(),
            mac: None,
            storage,
            data_disk,
            kubelet_args: Vec::new(),
        }
    }

    #[test]
    fn sd_nodes_spare_their_card_disk_nodes_do_not() {
        let opts = StorageOptions::default();
        let sd = resolve(&node(BootDisk::Sd, None), "pi5", &opts);
        assert_eq!(
            sd.card,
            Storage {
                boot_device: BootDevice::Sd,
                data_disk: None,
                sd_wear: SdWear::Minimal,
            }
        );
        assert_eq!(sd.boot_order, None);
        let off = StorageOptions {
            sd_wear: SdWear::Off,
            ..opts
        };
        assert_eq!(
            resolve(&node(BootDisk::Sd, None), "pi5", &off).card.sd_wear,
            SdWear::Off
        );
        let nvme = resolve(&node(BootDisk::Nvme, None), "pi5", &opts);
        assert_eq!(nvme.card.boot_device, BootDevice::Nvme);
        assert_eq!(nvme.card.sd_wear, SdWear::Off);
        let data = resolve(&node(BootDisk::Sd, Some(DiskBus::Usb)), "pi4", &opts);
        assert_eq!(
            data.card.data_disk,
            Some(DataDisk {
                bus: DiskBus::Usb,
                label: "piimg-data".into(),
                mount_point: "/var/lib/rancher/k3s".into(),
            })
        );
        assert_eq!(
            data.card.sd_wear,
            SdWear::Minimal,
            "the root is still on SD"
        );
    }

    #[test]
    fn boot_orders_per_board_and_device() {
        let nvme = boot_order("pi5", BootDevice::Nvme).expect("nvme");
        assert_eq!(nvme.boot_order.as_deref(), Some("0xf416"));
        assert_eq!(nvme.extra, ["PCIE_PROBE=1"]);
        assert!(
            nvme.how.contains("rpi-eeprom-config --edit"),
            "{}",
            nvme.how
        );
        let usb4 = boot_order("pi4", BootDevice::Usb).expect("usb");
        assert_eq!(usb4.boot_order.as_deref(), Some("0xf14"));
        assert!(usb4.extra.is_empty());
        let zero = boot_order("pi02", BootDevice::Usb).expect("zero");
        assert_eq!(zero.boot_order, None);
        assert!(zero.how.contains("remove the SD card"), "{}", zero.how);
        assert_eq!(boot_order("pi5", BootDevice::Sd), None);
    }

    #[test]
    fn pcie_lines_only_for_a_pi5_with_nvme() {
        let opts = StorageOptions::default();
        let gen3 = StorageOptions {
            pcie_gen3: true,
            ..opts
        };
        let boot = resolve(&node(BootDisk::Nvme, None), "pi5", &opts).card;
        assert_eq!(config_txt("pi5", &boot, &opts), ["dtparam=pciex1"]);
        assert_eq!(
            config_txt("pi5", &boot, &gen3),
            ["dtparam=pciex1", "dtparam=pciex1_gen=3"]
        );
        let data = resolve(&node(BootDisk::Sd, Some(DiskBus::Nvme)), "pi5", &opts).card;
        assert_eq!(config_txt("pi5", &data, &opts), ["dtparam=pciex1"]);
        let usb = resolve(&node(BootDisk::Usb, Some(DiskBus::Usb)), "pi5", &gen3).card;
        assert!(config_txt("pi5", &usb, &gen3).is_empty());
        assert!(config_txt("pi4", &boot, &gen3).is_empty());
    }

    #[test]
    fn image_gc_thresholds_only_when_sparing_the_card() {
        assert_eq!(
            kubelet_args(SdWear::Minimal),
            ["image-gc-high-threshold=70", "image-gc-low-threshold=50"]
        );
        assert!(kubelet_args(SdWear::Off).is_empty());
    }
}
