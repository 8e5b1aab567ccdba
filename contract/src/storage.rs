//! Where a node boots from, where k3s keeps its data, and how the node spares its SD card.
//!
//! The builder fills [`Storage`] from the profile (`storage`, `data_disk`,
//! `[storage] sd_wear`); the agent acts on it: it reports the boot device it found,
//! prepares and mounts the data disk before k3s starts, and applies the SD-wear
//! settings, listing each change in its status.

use serde::{Deserialize, Serialize};

/// The k3s data directory a data disk is mounted at (k3s's default `data-dir`).
pub const K3S_DATA_DIR: &str = "/var/lib/rancher/k3s";

/// The file-system label piimg gives a data disk it formats (ext4 labels hold 16 bytes).
pub const DATA_DISK_LABEL: &str = "piimg-data";

/// A node's storage as the card describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The disk the node boots from (the card's image is written to it).
    #[serde(default)]
    pub boot_device: BootDevice,
    /// A separate disk for k3s's data while the node boots from its SD card.
    #[serde(default)]
    pub data_disk: Option<DataDisk>,
    /// How much the agent does to reduce writes to an SD card.
    #[serde(default)]
    pub sd_wear: SdWear,
}

/// The disk a node boots from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootDevice {
    /// The SD card slot.
    #[default]
    Sd,
    /// A USB mass-storage disk.
    Usb,
    /// An NVMe SSD on the Pi 5's PCIe connector.
    Nvme,
}

/// The bus a data disk is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// USB mass storage.
    Usb,
    /// NVMe.
    Nvme,
}

/// k3s's data on its own disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDisk {
    /// Where the disk is attached.
    pub bus: DiskBus,
    /// File-system label the agent gives the disk and recognises it by
    /// (e.g. [`DATA_DISK_LABEL`]); the node it belongs to is recorded on the disk itself.
    pub label: String,
    /// Where it is mounted before k3s starts (e.g. [`K3S_DATA_DIR`]).
    pub mount_point: String,
}

/// SD-card wear mitigation level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SdWear {
    /// Leave the OS as it is.
    #[default]
    Off,
    /// journald with a small cap, no Bookworm swap file, `noatime` and a longer
    /// `commit=` on the root, `/tmp` on tmpfs, apt caches cleaned.
    Minimal,
}
