//! Step `boot-device`: which disk the root file system came from, reported in the
//! status and checked against the card's `storage.boot_device`.
//!
//! The root is found the way the kernel was told: `/proc/cmdline`'s `root=`
//! (`PARTUUID=` as Raspberry Pi OS writes it, through `/dev/disk/by-partuuid/`, or a
//! `/dev/...` path), then the disk that partition belongs to. A mismatch only warns:
//! the node works from any disk, the operator should know it is not the planned one.

use crate::block::{self, DiskKind};
use crate::error::Error;
use crate::node_fs::NodeFs;
use piimg_contract::storage::BootDevice;

/// The disk the root file system is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDisk {
    /// The root partition's kernel name (e.g. `mmcblk0p2`).
    pub partition: String,
    /// Its disk's kernel name (e.g. `mmcblk0`).
    pub disk: String,
}

impl RootDisk {
    /// The kind of disk it is.
    pub fn kind(&self) -> DiskKind {
        DiskKind::of(&self.disk)
    }
}

/// The root's disk from `/proc/cmdline`; `Err` says why it cannot be told.
pub fn root_disk(fs: &NodeFs) -> Result<RootDisk, String> {
    let cmdline = fs
        .read("/proc/cmdline")
        .map_err(|e| e.to_string())?
        .ok_or("/proc/cmdline is missing")?;
    let root = block::cmdline_value(&cmdline, "root").ok_or("/proc/cmdline has no root=")?;
    let partition = if let Some(uuid) = root.strip_prefix("PARTUUID=") {
        let link = format!("/dev/disk/by-partuuid/{}", uuid.to_ascii_lowercase());
        let target = fs
            .read_link(&link)
            .ok_or_else(|| format!("root={root}: {link} does not exist"))?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{link} points nowhere"))?
    } else if let Some(dev) = root.strip_prefix("/dev/") {
        dev.rsplit('/').next().unwrap_or(dev).to_string()
    } else {
        return Err(format!("root={root} is neither PARTUUID= nor a /dev path"));
    };
    let disk = block::disk_of_partition(&partition)
        .ok_or_else(|| format!("root partition {partition} has no partition number"))?;
    Ok(RootDisk { partition, disk })
}

/// The boot device a disk kind stands for on a Raspberry Pi, if any.
pub fn boot_device_of(kind: DiskKind) -> Option<BootDevice> {
    match kind {
        DiskKind::Sd => Some(BootDevice::Sd),
        DiskKind::Nvme => Some(BootDevice::Nvme),
        DiskKind::Scsi => Some(BootDevice::Usb),
        DiskKind::Virtio | DiskKind::Loop | DiskKind::Other => None,
    }
}

fn name(b: BootDevice) -> &'static str {
    match b {
        BootDevice::Sd => "sd",
        BootDevice::Usb => "usb",
        BootDevice::Nvme => "nvme",
    }
}

/// Step `boot-device`: reports the root's disk; warns (never fails) when it is not
/// the card's `boot_device` or cannot be told.
pub fn report(planned: BootDevice, fs: &NodeFs) -> Result<String, Error> {
    let msg = match root_disk(fs) {
        Err(why) => format!(
            "boot device unknown ({why}); the card plans boot_device = {}",
            name(planned)
        ),
        Ok(rd) => {
            let found = boot_device_of(rd.kind());
            let head = format!(
                "root on /dev/{} of disk {} ({})",
                rd.partition,
                rd.disk,
                rd.kind().describe()
            );
            if found == Some(planned) {
                format!("{head}, as planned (boot_device = {})", name(planned))
            } else {
                let m = format!(
                    "{head}, but the card plans boot_device = {}: this node booted from another disk than its profile says",
                    name(planned)
                );
                crate::log::warn(&m);
                format!("warning: {m}")
            }
        }
    };
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cmdline: &str, link: Option<(&str, &str)>) -> (tempfile::TempDir, NodeFs) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let fs = NodeFs::new(root.clone(), root.join("boot/firmware"), false);
        fs.put("/proc/cmdline", 0o644, cmdline.as_bytes(), None)
            .unwrap();
        if let Some((uuid, target)) = link {
            fs.link(target, &format!("/dev/disk/by-partuuid/{uuid}"))
                .unwrap();
        }
        (dir, fs)
    }

    #[test]
    fn the_root_partuuid_leads_to_its_disk_and_a_mismatch_warns() {
        let (_d, fs) = node(
            "console=tty1 root=PARTUUID=0DDBA11E-02 rootwait\n",
            Some(("0ddba11e-02", "../../nvme0n1p2")),
        );
        let rd = root_disk(&fs).unwrap();
        assert_eq!(
            (rd.partition.as_str(), rd.disk.as_str()),
            ("nvme0n1p2", "nvme0n1")
        );
        let ok = report(BootDevice::Nvme, &fs).unwrap();
        assert!(ok.contains("as planned (boot_device = nvme)"), "{ok}");
        let warn = report(BootDevice::Sd, &fs).unwrap();
        assert!(warn.starts_with("warning: root on /dev/nvme0n1p2 of disk nvme0n1 (NVMe), but the card plans boot_device = sd"), "{warn}");
    }

    #[test]
    fn a_dev_path_works_and_an_unknown_root_is_said_not_failed() {
        let (_d, fs) = node("root=/dev/mmcblk0p2 rw\n", None);
        assert!(report(BootDevice::Sd, &fs).unwrap().contains("as planned"));
        let (_d, fs) = node("root=PARTUUID=abc-02\n", None);
        let m = report(BootDevice::Usb, &fs).unwrap();
        assert!(m.starts_with("boot device unknown (root=PARTUUID=abc-02: /dev/disk/by-partuuid/abc-02 does not exist)"), "{m}");
    }
}
