//! Step `data-disk`: k3s's data on its own disk (`storage.data_disk`), mounted by
//! UUID before the join decision and k3s.
//!
//! Which disk: NVMe → the `nvme*` disk, USB → the `sd*` disk whose sysfs path runs
//! through a USB controller; never the disk the root is on. Exactly one must match.
//! Emulators and tests name it instead with [`OVERRIDE_ARG`] on the kernel command
//! line (the boot disk is still refused).
//!
//! What is on it decides what happens, and nothing else:
//! - **blank** (the first and last MiB all zeros: no partition table, no file-system
//!   signature; see [`block::read_edges`]): GPT with one partition, `mkfs.ext4 -L
//!   <label> -U <a UUID the agent picks>` with piimg's marker file ([`MARKER`]:
//!   cluster and node) in its root, all under a [`DiskLock`] so that udev does not
//!   re-read the table (and pull the partition away) meanwhile;
//! - GPT, partition 1 ext4 with the card's label and a marker naming **this node of
//!   this cluster**: reused as it is (a re-imaged node keeps its k3s data);
//! - **anything else** (another node's marker, no marker, another file system or
//!   table, unknown bytes): refused untouched, the step fails naming what it found.
//!
//! The disk is then mounted by UUID through /etc/fstab with `nofail` (the boot does
//! not wait for it: a missing disk does not hang the boot) and k3s's units get
//! `RequiresMountsFor=`: k3s waits for the disk up to systemd's device timeout
//! (`DefaultDeviceTimeoutSec`, 90 s unless the system sets another; a fixed
//! `x-systemd.device-timeout=` would override a slower system's own setting) and
//! does not start on the SD card without it.

use crate::block;
use crate::disk_lock::DiskLock;
use crate::error::Error;
use crate::exec::Exec;
use crate::node_fs::NodeFs;
use crate::runner::Cmd;
use crate::steps::boot_device;
use crate::time::{now, rfc3339};
use piimg_contract::NODE_CONFIG_FILE;
use piimg_contract::storage::{DataDisk, DiskBus};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Kernel command-line argument naming the data disk's device (emulators, tests).
pub const OVERRIDE_ARG: &str = "piimg.data_disk";
/// piimg's marker file in the root of a data disk it formatted.
pub const MARKER: &str = ".piimg-data-disk";
/// First line of a marker.
pub const MARKER_MAGIC: &str = "piimg-data-disk 1";
/// The data disk's mount options in /etc/fstab.
pub const MOUNT_OPTIONS: &str = "defaults,noatime,nofail";
/// The drop-in that makes k3s's units require the mount.
pub const K3S_DROPIN: &str = "10-piimg-data-disk.conf";

/// Where the agent assembles the marker before `mkfs.ext4 -d` copies it in.
const SEED_DIR: &str = "/var/lib/piimg/data-disk-seed";

/// What is on the disk, decided from its bytes, blkid and the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Blank,
    /// GPT partition 1 carries piimg's partition name (the label) but no finished
    /// file system: a format that a power cut interrupted.
    Interrupted(String),
    Ours {
        uuid: String,
        marker: String,
    },
}

/// Step `data-disk`: finds, checks, formats or reuses, and mounts the data disk.
pub fn prepare(
    disk: &DataDisk,
    cluster: &str,
    node: &str,
    fs: &NodeFs,
    exec: &Exec,
) -> Result<String, Error> {
    check_card(disk)?;
    let (dev, how) = find(disk.bus, fs)?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut lines = Vec::new();
    let uuid = match examine(&dev, disk, cluster, node, exec)? {
        Found::Ours { uuid, marker } => {
            lines.push(format!(
                "data disk {dev} ({how}): piimg's disk of node {node} ({}), reused without formatting",
                marker.lines().filter(|l| l.contains('=')).collect::<Vec<_>>().join(", ")
            ));
            uuid
        }
        found @ (Found::Blank | Found::Interrupted(_)) => {
            let busy = block::mounted_from(&mounts, &dev);
            if !busy.is_empty() {
                return Err(Error::failed(format!(
                    "data disk {dev}: blank but mounted ({}); refusing to format it",
                    busy.join(", ")
                )));
            }
            let uuid = format(&dev, disk, cluster, node, fs, exec)?;
            let was = match found {
                Found::Interrupted(why) => format!("held an interrupted piimg format ({why})"),
                _ => "was blank".into(),
            };
            lines.push(format!(
                "data disk {dev} ({how}): {was}; formatted GPT + ext4 '{}' UUID={uuid}, marked for node {node} of cluster {cluster}",
                disk.label
            ));
            uuid
        }
    };
    lines.push(mount(&uuid, disk, fs, exec)?);
    Ok(lines.join("\n"))
}

fn check_card(disk: &DataDisk) -> Result<(), Error> {
    let label_ok = !disk.label.is_empty()
        && disk.label.len() <= 16
        && disk
            .label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !label_ok {
        return Err(Error::failed(format!(
            "{NODE_CONFIG_FILE}: storage.data_disk.label {:?} must be 1-16 characters of A-Z a-z 0-9 - _ .",
            disk.label
        )));
    }
    let mp = &disk.mount_point;
    if !mp.starts_with('/')
        || mp == "/"
        || mp.split('/').any(|c| c == ".." || c == ".")
        || mp.contains(char::is_whitespace)
    {
        return Err(Error::failed(format!(
            "{NODE_CONFIG_FILE}: storage.data_disk.mount_point {mp:?} must be an absolute directory other than / without spaces or `..`"
        )));
    }
    Ok(())
}

fn bus_name(bus: DiskBus) -> &'static str {
    match bus {
        DiskBus::Usb => "usb",
        DiskBus::Nvme => "nvme",
    }
}

/// The data disk's device and how it was found.
fn find(bus: DiskBus, fs: &NodeFs) -> Result<(String, String), Error> {
    let root = boot_device::root_disk(fs).ok();
    let cmdline = fs.read("/proc/cmdline")?.unwrap_or_default();
    if let Some(named) = block::cmdline_value(&cmdline, OVERRIDE_ARG) {
        let real = std::fs::canonicalize(named)
            .map_err(|e| Error::failed(format!("{OVERRIDE_ARG}={named}: {e}")))?;
        let name = real.file_name().map(|n| n.to_string_lossy().into_owned());
        if let (Some(r), Some(n)) = (&root, &name) {
            if *n == r.disk || block::disk_of_partition(n).as_deref() == Some(r.disk.as_str()) {
                return Err(Error::failed(format!(
                    "{OVERRIDE_ARG}={named} is the boot disk {} (the root is on {}); refusing it",
                    r.disk, r.partition
                )));
            }
        }
        return Ok((
            real.to_string_lossy().into_owned(),
            format!("named by {OVERRIDE_ARG}= on the kernel command line"),
        ));
    }
    let candidates: Vec<String> = fs
        .names_in("/sys/block")
        .into_iter()
        .filter(|n| root.as_ref().is_none_or(|r| r.disk != *n))
        .filter(|n| match bus {
            DiskBus::Nvme => block::DiskKind::of(n) == block::DiskKind::Nvme,
            DiskBus::Usb => {
                block::DiskKind::of(n) == block::DiskKind::Scsi
                    && fs
                        .read_link(&format!("/sys/block/{n}"))
                        .is_some_and(|t| t.to_string_lossy().contains("/usb"))
            }
        })
        .collect();
    let what = match bus {
        DiskBus::Nvme => "NVMe disk (/sys/block/nvme*)",
        DiskBus::Usb => "USB disk (/sys/block/sd* on a USB controller)",
    };
    let boot = root.as_ref().map_or(String::new(), |r| {
        format!(", not counting the boot disk {}", r.disk)
    });
    match candidates.as_slice() {
        [one] => Ok((
            format!("/dev/{one}"),
            format!("the only {} disk{boot}", bus_name(bus)),
        )),
        [] => Err(Error::failed(format!(
            "no {what} found{boot}; connect the data disk (storage.data_disk.bus = {}) and the agent tries again",
            bus_name(bus)
        ))),
        many => Err(Error::failed(format!(
            "several {what}s ({}){boot}: leave only the data disk connected while the node provisions",
            many.join(", ")
        ))),
    }
}

/// `blkid -p -o export DEV` as a map; empty when blkid finds nothing (exit 2).
fn blkid(dev: &str, exec: &Exec) -> Result<BTreeMap<String, String>, Error> {
    let out = exec.run(&Cmd::new("blkid", &["-p", "-o", "export", dev]))?;
    match out.code {
        Some(0) => Ok(out
            .stdout
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()),
        Some(2) => Ok(BTreeMap::new()),
        _ => Err(Error::failed(format!(
            "`blkid -p -o export {dev}` failed: {}",
            out.last_words()
        ))),
    }
}

fn describe(tags: &BTreeMap<String, String>) -> String {
    let get = |k: &str| tags.get(k).map(String::as_str);
    match (get("PTTYPE"), get("TYPE")) {
        (Some(pt), _) => format!("a {pt} partition table"),
        (None, Some(t)) => format!(
            "a {t} file system{}",
            get("LABEL").map_or(String::new(), |l| format!(" labelled '{l}'"))
        ),
        (None, None) => "no signature blkid knows".into(),
    }
}

fn refuse(dev: &str, found: &str) -> Error {
    Error::failed(format!(
        "data disk {dev} holds {found}: not blank and not this node's piimg data disk, so it was left untouched. \
         If its contents may go, erase it (wipefs -a {dev}) and the agent formats it on its next try; \
         otherwise connect another disk or remove data_disk from the node's profile"
    ))
}

fn examine(
    dev: &str,
    disk: &DataDisk,
    cluster: &str,
    node: &str,
    exec: &Exec,
) -> Result<Found, Error> {
    let edges = block::read_edges(Path::new(dev))
        .map_err(|e| Error::failed(format!("data disk {dev}: cannot read it: {e}")))?;
    if edges.blank() {
        return Ok(Found::Blank);
    }
    if exec.dry() {
        crate::log::would(&format!("examine {dev} (not blank) with blkid and debugfs"));
        return Ok(Found::Ours {
            uuid: "UUID-OF-THE-DISK".into(),
            marker: String::new(),
        });
    }
    let whole = blkid(dev, exec)?;
    if whole.get("PTTYPE").map(String::as_str) != Some("gpt") {
        let what = describe(&whole);
        let at = edges.first_nonzero.unwrap_or(0);
        return Err(refuse(
            dev,
            &if whole.is_empty() {
                format!("data ({what}; first non-zero byte at offset {at})")
            } else {
                what
            },
        ));
    }
    let part = block::partition_path(dev, 1);
    let tags = if wait_for_partition(dev, &part, exec)? {
        blkid(&part, exec)?
    } else {
        BTreeMap::new()
    };
    let label = tags.get("LABEL").map(String::as_str);
    // sfdisk names the partition after the label first, mkfs.ext4 writes the marker
    // last: a partition of that name without a file system is our own unfinished work.
    let our_partition = tags.get("PART_ENTRY_NAME") == Some(&disk.label);
    if our_partition && !tags.contains_key("TYPE") {
        return Ok(Found::Interrupted(format!(
            "partition '{}' without a file system",
            disk.label
        )));
    }
    if tags.get("TYPE").map(String::as_str) != Some("ext4") || label != Some(disk.label.as_str()) {
        return Err(refuse(
            dev,
            &format!(
                "a gpt partition table whose first partition has {}",
                describe(&tags)
            ),
        ));
    }
    let out = exec.run(&Cmd::new(
        "debugfs",
        &["-R", &format!("cat /{MARKER}"), &part],
    ))?;
    let marker = out.stdout;
    let field = |k: &str| {
        marker
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(str::trim)
    };
    if marker.lines().next() != Some(MARKER_MAGIC) {
        if our_partition {
            return Ok(Found::Interrupted(format!(
                "ext4 '{}' without piimg's marker",
                disk.label
            )));
        }
        return Err(refuse(
            dev,
            &format!(
                "an ext4 file system labelled '{}' without piimg's marker /{MARKER}",
                disk.label
            ),
        ));
    }
    match (field("cluster"), field("node")) {
        (Some(c), Some(n)) if c == cluster && n == node => Ok(Found::Ours {
            uuid: tags.get("UUID").cloned().unwrap_or_default(),
            marker,
        }),
        (c, n) => Err(refuse(
            dev,
            &format!(
                "piimg's data disk of node {} of cluster {} (this is node {node} of cluster {cluster})",
                n.unwrap_or("?"),
                c.unwrap_or("?")
            ),
        )),
    }
}

fn format(
    dev: &str,
    disk: &DataDisk,
    cluster: &str,
    node: &str,
    fs: &NodeFs,
    exec: &Exec,
) -> Result<String, Error> {
    let marker = format!(
        "{MARKER_MAGIC}\ncluster={cluster}\nnode={node}\nformatted_at={}\n",
        rfc3339(now())
    );
    fs.mkdir(SEED_DIR, 0o755, Some((0, 0)))?;
    fs.put(
        &format!("{SEED_DIR}/{MARKER}"),
        0o644,
        marker.as_bytes(),
        Some((0, 0)),
    )?;
    let uuid = new_uuid()?;
    let part = block::partition_path(dev, 1);
    let seed = fs.path(SEED_DIR).to_string_lossy().into_owned();
    {
        // Held from the table to the file system: udev leaves the disk alone meanwhile.
        let _lock = if exec.dry() {
            None
        } else {
            Some(DiskLock::take(dev)?)
        };
        exec.run_ok(
            &Cmd::new("sfdisk", &["--quiet", "--wipe", "always", dev])
                .stdin(format!("label: gpt\ntype=L, name={}\n", disk.label)),
        )?;
        if !exec.dry() && !wait_for_partition(dev, &part, exec)? {
            return Err(Error::failed(format!(
                "data disk {dev}: partitioned, but {part} did not appear within 10 s"
            )));
        }
        exec.run_ok(&Cmd::new(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-L",
                &disk.label,
                "-U",
                &uuid,
                "-d",
                &seed,
                &part,
            ],
        ))?;
    }
    fs.rm(&format!("{SEED_DIR}/{MARKER}"))?;
    if !exec.dry() {
        confirm_uuid(dev, &part, &uuid, exec)?;
    }
    Ok(uuid)
}

/// A random (version 4) UUID for the new file system: chosen here, so fstab never
/// depends on reading it back while udev is still busy with the disk.
fn new_uuid() -> Result<String, Error> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::failed(format!("/dev/urandom: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// Waits (up to 10 s, through udev's events for the new file system) until blkid
/// reads `uuid` from `part`: the file system the fstab entry names is really there.
fn confirm_uuid(dev: &str, part: &str, uuid: &str, exec: &Exec) -> Result<(), Error> {
    let start = Instant::now();
    let _ = exec.run(&Cmd::new("udevadm", &["settle", "--timeout=5"]));
    loop {
        let seen = if wait_for_partition(dev, part, exec)? {
            blkid(part, exec)?.remove("UUID")
        } else {
            None
        };
        if seen.as_deref() == Some(uuid) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(Error::failed(format!(
                "data disk {dev}: after mkfs.ext4 -U {uuid}, blkid reads {} on {part}",
                seen.map_or("no UUID".into(), |u| format!("UUID {u}"))
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits up to 10 s for partition device `part` of `dev` (udev creates it). When the
/// kernel did not list it from the table itself (a kernel without that table type's
/// parser), `partx --update` adds it from user space. `true` once it exists.
fn wait_for_partition(dev: &str, part: &str, exec: &Exec) -> Result<bool, Error> {
    let start = Instant::now();
    let mut asked = false;
    while !Path::new(part).exists() {
        if start.elapsed() > Duration::from_secs(10) {
            return Ok(false);
        }
        if !asked {
            asked = true;
            let _ = exec.run(&Cmd::new("udevadm", &["settle", "--timeout=5"]));
            if !Path::new(part).exists() {
                let _ = exec.run(&Cmd::new("partx", &["--update", dev]));
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(true)
}

/// /etc/fstab with one entry mounting `uuid` at `mount_point` (any other entry for
/// that mount point and piimg's earlier comment replaced).
pub fn fstab_with_data_disk(fstab: &str, uuid: &str, mount_point: &str) -> String {
    let comment = "# piimg: data disk (storage.data_disk); a missing disk does not stop the boot";
    let mut out: String = fstab
        .lines()
        .filter(|l| {
            *l != comment
                && (l.trim_start().starts_with('#')
                    || l.split_whitespace().nth(1) != Some(mount_point))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(&format!(
        "{comment}\nUUID={uuid}  {mount_point}  ext4  {MOUNT_OPTIONS}  0  2\n"
    ));
    out
}

fn mount(uuid: &str, disk: &DataDisk, fs: &NodeFs, exec: &Exec) -> Result<String, Error> {
    let mp = disk.mount_point.as_str();
    let fstab = fs.read("/etc/fstab")?.unwrap_or_default();
    fs.put_like(
        "/etc/fstab",
        fstab_with_data_disk(&fstab, uuid, mp).as_bytes(),
        0o644,
    )?;
    let dropin = format!(
        "# piimg: k3s's data lives on the data disk: no k3s without it.\n[Unit]\nRequiresMountsFor={mp}\n"
    );
    for unit in ["k3s.service", "k3s-agent.service"] {
        fs.put(
            &format!("/etc/systemd/system/{unit}.d/{K3S_DROPIN}"),
            0o644,
            dropin.as_bytes(),
            Some((0, 0)),
        )?;
    }
    fs.mkdir(mp, 0o755, Some((0, 0)))?;
    let mut now_mounted = "";
    if exec.live() || exec.dry() {
        exec.run_ok(&Cmd::new("systemctl", &["daemon-reload"]))?;
        let found = exec.run(&Cmd::new(
            "findmnt",
            &["-n", "-o", "UUID", "--mountpoint", mp],
        ))?;
        if found.stdout.trim() != uuid {
            exec.run_ok(&Cmd::new("mount", &[mp]))?;
        }
        let after = exec.run(&Cmd::new(
            "findmnt",
            &["-n", "-o", "UUID", "--mountpoint", mp],
        ))?;
        if !exec.dry() && after.stdout.trim() != uuid {
            return Err(Error::failed(format!(
                "data disk UUID={uuid} is not mounted at {mp} after `mount {mp}` (findmnt: {:?})",
                after.stdout.trim()
            )));
        }
        now_mounted = ", mounted now";
    }
    Ok(format!(
        "{mp}: UUID={uuid} in /etc/fstab ({MOUNT_OPTIONS}){now_mounted}; k3s.service and k3s-agent.service require it ({K3S_DROPIN})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fstab_entry_is_added_once_and_replaces_an_old_one() {
        let base = "PARTUUID=abc-02  /  ext4  defaults,noatime  0  1\n";
        let one = fstab_with_data_disk(base, "1111", "/var/lib/rancher/k3s");
        assert!(one.starts_with(base));
        assert!(
            one.ends_with("UUID=1111  /var/lib/rancher/k3s  ext4  defaults,noatime,nofail  0  2\n"),
            "{one}"
        );
        assert_eq!(
            fstab_with_data_disk(&one, "1111", "/var/lib/rancher/k3s"),
            one
        );
        let two = fstab_with_data_disk(&one, "2222", "/var/lib/rancher/k3s");
        assert_eq!(two.matches("/var/lib/rancher/k3s").count(), 1);
        assert!(two.contains("UUID=2222"));
    }

    #[test]
    fn a_bad_label_or_mount_point_is_refused_naming_the_field() {
        let d = |label: &str, mp: &str| DataDisk {
            bus: DiskBus::Usb,
            label: label.into(),
            mount_point: mp.into(),
        };
        assert!(check_card(&d("piimg-data", "/var/lib/rancher/k3s")).is_ok());
        let e = check_card(&d("a label", "/x")).unwrap_err().to_string();
        assert!(e.contains("storage.data_disk.label"), "{e}");
        let e = check_card(&d("ok", "/")).unwrap_err().to_string();
        assert!(e.contains("storage.data_disk.mount_point"), "{e}");
        assert!(check_card(&d("ok", "/a/../b")).is_err());
    }

    #[test]
    fn usb_and_nvme_disks_are_found_in_sysfs_never_the_boot_disk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let fs = NodeFs::new(root.clone(), root.join("boot/firmware"), false);
        fs.put("/proc/cmdline", 0o644, b"root=PARTUUID=aa-02\n", None)
            .unwrap();
        fs.link("../../sda2", "/dev/disk/by-partuuid/aa-02")
            .unwrap();
        let usb = "../devices/platform/axi/1000120000.pcie/1f00300000.usb/xhci-hcd.1/usb4/4-1/4-1:1.0/host0/target0:0:0/0:0:0:0/block/";
        fs.link(&format!("{usb}sda"), "/sys/block/sda").unwrap();
        fs.link(
            "../devices/platform/emmc2bus/fe340000.mmc/mmc_host/mmc0/mmc0:aaaa/block/mmcblk0",
            "/sys/block/mmcblk0",
        )
        .unwrap();
        // The boot disk is the only USB disk: none left.
        let e = find(DiskBus::Usb, &fs).unwrap_err().to_string();
        assert!(e.starts_with("no USB disk"), "{e}");
        assert!(e.contains("not counting the boot disk sda"), "{e}");
        fs.link(&format!("{usb}sdb"), "/sys/block/sdb").unwrap();
        fs.link(
            "../devices/platform/soc/ata1/host1/target1:0:0/1:0:0:0/block/sdc",
            "/sys/block/sdc",
        )
        .unwrap();
        assert_eq!(find(DiskBus::Usb, &fs).unwrap().0, "/dev/sdb");
        fs.link(&format!("{usb}sdd"), "/sys/block/sdd").unwrap();
        let e = find(DiskBus::Usb, &fs).unwrap_err().to_string();
        assert!(
            e.contains("several USB disk") && e.contains("sdb, sdd"),
            "{e}"
        );
        fs.link(
            "../devices/platform/axi/1000110000.pcie/nvme/nvme0/nvme0n1",
            "/sys/block/nvme0n1",
        )
        .unwrap();
        assert_eq!(find(DiskBus::Nvme, &fs).unwrap().0, "/dev/nvme0n1");
    }
}
