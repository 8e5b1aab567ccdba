//! What the flash target is and whether writing to it is safe.
//!
//! Every fact comes from a [`SystemView`] (sysfs root, mountinfo, swaps) so tests can
//! pose "this loop device is the system disk" without going near a real disk.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where the kernel's facts about block devices are read from.
#[derive(Debug, Clone)]
pub struct SystemView {
    /// sysfs mount point (`/sys`).
    pub sysfs: PathBuf,
    /// The mount table in mountinfo format (`/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
    /// The active swap areas (`/proc/swaps`).
    pub swaps: PathBuf,
}

impl SystemView {
    /// The running system's view.
    pub fn host() -> Self {
        Self {
            sysfs: PathBuf::from("/sys"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            swaps: PathBuf::from("/proc/swaps"),
        }
    }
}

/// Mount points whose disk runs the system.
const SYSTEM_MOUNTS: &[&str] = &["/", "/boot", "/boot/firmware", "/boot/efi", "/usr", "/var"];

/// What kind of thing the target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    /// A whole-disk block device.
    BlockDevice,
    /// A regular file (only with `--force-file`).
    File,
}

/// Facts about a target that passed the safety checks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    /// Path as given by the user.
    pub path: PathBuf,
    /// Path with symlinks resolved (what is opened).
    pub resolved: PathBuf,
    /// Block device or file.
    pub kind: TargetKind,
    /// Kernel name (`sdb`, `mmcblk0`, `loop3`); empty for files.
    pub name: String,
    /// Vendor and model from sysfs, when known.
    pub model: Option<String>,
    /// Capacity in bytes (file: current length).
    pub size: u64,
    /// Removable media (sysfs `removable`, or an SD card behind an MMC host).
    pub removable: bool,
}

/// What the user allowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetPolicy {
    /// Allow a non-removable disk.
    pub force: bool,
    /// Allow a regular file as target (created if missing).
    pub force_file: bool,
}

/// Why a target was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The path does not exist.
    #[error("{0}: no such device (hint: list disks with `lsblk -d -o NAME,SIZE,MODEL,RM`)")]
    Missing(PathBuf),
    /// Not a block device (and files not allowed).
    #[error("{0}: not a block device (to write into a regular file, pass --force-file)")]
    NotBlockDevice(PathBuf),
    /// A partition, not a whole disk.
    #[error("{path}: is partition {name} of /dev/{disk}; give the whole disk /dev/{disk}")]
    Partition {
        /// The path given.
        path: PathBuf,
        /// Partition name.
        name: String,
        /// Its disk.
        disk: String,
    },
    /// A partition (or the disk) runs the system.
    #[error("{path}: holds the running system (/dev/{part} is {what}); refusing to overwrite it")]
    SystemDisk {
        /// The path given.
        path: PathBuf,
        /// Which member.
        part: String,
        /// "mounted at /" or "active swap".
        what: String,
    },
    /// A partition (or the disk) is mounted.
    #[error(
        "{path}: /dev/{part} is mounted at {mount_point}; unmount it first (`umount {mount_point}`)"
    )]
    Mounted {
        /// The path given.
        path: PathBuf,
        /// Which member.
        part: String,
        /// Where.
        mount_point: String,
    },
    /// Another device (LVM, md, dm-crypt) holds the disk or a partition.
    #[error(
        "{path}: /dev/{part} is held by {holder} (LVM, RAID or encryption in use); release it first"
    )]
    Held {
        /// The path given.
        path: PathBuf,
        /// Which member.
        part: String,
        /// Holder device name.
        holder: String,
    },
    /// Read-only device (write-protect switch).
    #[error("{0}: is read-only (SD card write-protect switch?)")]
    ReadOnly(PathBuf),
    /// The image does not fit.
    #[error("{path}: too small: {size} bytes, the image needs {needed} bytes")]
    TooSmall {
        /// The path given.
        path: PathBuf,
        /// Device size.
        size: u64,
        /// Image size.
        needed: u64,
    },
    /// Not removable and `--force` not given.
    #[error(
        "{0}: is not a removable disk (an internal drive?); pass --force if you really mean it"
    )]
    NotRemovable(PathBuf),
    /// The facts could not be read.
    #[error("{path}: cannot inspect {what}: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// What was being read.
        what: String,
        /// OS error.
        source: io::Error,
    },
}

/// One member of the target disk: the disk itself or one of its partitions.
#[derive(Debug)]
struct Member {
    name: String,
    devno: (u32, u32),
    sysdir: PathBuf,
}

/// Inspects `path` and checks it is safe to write an image of `image_size` bytes to.
pub fn inspect(
    path: &Path,
    image_size: u64,
    view: &SystemView,
    policy: TargetPolicy,
) -> Result<Target, Refusal> {
    let io_err = |what: &str, source: io::Error| Refusal::Io {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if policy.force_file {
                return Ok(file_target(path, path.to_path_buf(), 0));
            }
            return Err(Refusal::Missing(path.to_path_buf()));
        }
        Err(e) => return Err(io_err("the path", e)),
    };
    let resolved = fs::canonicalize(path).map_err(|e| io_err("the path", e))?;
    if !meta.file_type().is_block_device() {
        if meta.is_file() && policy.force_file {
            return Ok(file_target(path, resolved, meta.len()));
        }
        return Err(Refusal::NotBlockDevice(path.to_path_buf()));
    }

    let rdev = meta.rdev();
    let devno = (major(rdev), minor(rdev));
    let link = view
        .sysfs
        .join(format!("dev/block/{}:{}", devno.0, devno.1));
    let sysdir = fs::canonicalize(&link).map_err(|e| io_err(&link.display().to_string(), e))?;
    let name = file_name(&sysdir);
    if sysdir.join("partition").exists() {
        let disk = sysdir.parent().map(file_name).unwrap_or_else(|| "?".into());
        return Err(Refusal::Partition {
            path: path.to_path_buf(),
            name,
            disk,
        });
    }

    let mut members = vec![Member {
        name: name.clone(),
        devno,
        sysdir: sysdir.clone(),
    }];
    members.extend(partitions(&sysdir));

    // Holders: LVM, md, dm-crypt.
    for m in &members {
        if let Ok(rd) = fs::read_dir(m.sysdir.join("holders")) {
            if let Some(h) = rd.flatten().next() {
                return Err(Refusal::Held {
                    path: path.to_path_buf(),
                    part: m.name.clone(),
                    holder: h.file_name().to_string_lossy().into_owned(),
                });
            }
        }
    }

    // Mounts: the system's first, then any.
    let mountinfo = fs::read_to_string(&view.mountinfo)
        .map_err(|e| io_err(&view.mountinfo.display().to_string(), e))?;
    let mounts: Vec<(String, String)> = parse_mountinfo(&mountinfo)
        .into_iter()
        .filter_map(|m| member_of(&members, m.devno, &m.source).map(|n| (n, m.mount_point)))
        .collect();
    if let Some((part, mp)) = mounts
        .iter()
        .find(|(_, mp)| SYSTEM_MOUNTS.contains(&mp.as_str()))
    {
        return Err(Refusal::SystemDisk {
            path: path.to_path_buf(),
            part: part.clone(),
            what: format!("mounted at {mp}"),
        });
    }

    // Swap counts as the running system.
    let swaps = fs::read_to_string(&view.swaps)
        .map_err(|e| io_err(&view.swaps.display().to_string(), e))?;
    for swap in parse_swaps(&swaps) {
        let devno = fs::metadata(&swap)
            .ok()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| (major(m.rdev()), minor(m.rdev())));
        if let Some(part) = member_of(&members, devno, &swap) {
            return Err(Refusal::SystemDisk {
                path: path.to_path_buf(),
                part,
                what: format!("active swap ({swap})"),
            });
        }
    }
    if let Some((part, mp)) = mounts.into_iter().next() {
        return Err(Refusal::Mounted {
            path: path.to_path_buf(),
            part,
            mount_point: mp,
        });
    }

    if read_trim(&sysdir.join("ro")).as_deref() == Some("1") {
        return Err(Refusal::ReadOnly(path.to_path_buf()));
    }
    let size = read_trim(&sysdir.join("size"))
        .and_then(|s| s.parse::<u64>().ok())
        .map(|sectors| sectors * 512)
        .ok_or_else(|| {
            io_err(
                "its size",
                io::Error::new(io::ErrorKind::InvalidData, "no sysfs size"),
            )
        })?;
    if size < image_size {
        return Err(Refusal::TooSmall {
            path: path.to_path_buf(),
            size,
            needed: image_size,
        });
    }
    let removable = is_removable(&sysdir, &name);
    if !removable && !policy.force {
        return Err(Refusal::NotRemovable(path.to_path_buf()));
    }
    let model = [
        read_trim(&sysdir.join("device/vendor")),
        read_trim(&sysdir.join("device/model")),
        read_trim(&sysdir.join("device/name")),
        read_trim(&sysdir.join("loop/backing_file")).map(|f| format!("loop over {f}")),
    ]
    .into_iter()
    .flatten()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join(" ");
    Ok(Target {
        path: path.to_path_buf(),
        resolved,
        kind: TargetKind::BlockDevice,
        name,
        model: (!model.is_empty()).then_some(model),
        size,
        removable,
    })
}

/// Whether the disk `name` at `sysdir` is removable media: sysfs `removable`, or an SD
/// card behind an MMC host. In debug builds a loop device whose backing file lies
/// under `PIIMG_FLASH_TEST_REMOVABLE_UNDER` counts too (the tests' stand-in cards).
pub fn is_removable(sysdir: &Path, name: &str) -> bool {
    if read_trim(&sysdir.join("removable")).as_deref() == Some("1")
        || (name.starts_with("mmcblk")
            && read_trim(&sysdir.join("device/type")).as_deref() == Some("SD"))
    {
        return true;
    }
    if !cfg!(debug_assertions) {
        return false;
    }
    let Some(dir) = std::env::var_os("PIIMG_FLASH_TEST_REMOVABLE_UNDER") else {
        return false;
    };
    read_trim(&sysdir.join("loop/backing_file"))
        .is_some_and(|f| !dir.is_empty() && Path::new(&f).starts_with(&dir))
}

fn file_target(path: &Path, resolved: PathBuf, size: u64) -> Target {
    Target {
        path: path.to_path_buf(),
        resolved,
        kind: TargetKind::File,
        name: String::new(),
        model: None,
        size,
        removable: false,
    }
}

/// Partitions of the disk at `sysdir` (sub-directories with a `partition` file).
fn partitions(sysdir: &Path) -> Vec<Member> {
    let Ok(rd) = fs::read_dir(sysdir) else {
        return Vec::new();
    };
    let mut out: Vec<Member> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("partition").exists())
        .filter_map(|p| {
            let devno = read_trim(&p.join("dev")).and_then(|s| parse_devno(&s))?;
            Some(Member {
                name: file_name(&p),
                devno,
                sysdir: p,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The member `devno` or `/dev/NAME` refers to, if any.
fn member_of(members: &[Member], devno: Option<(u32, u32)>, source: &str) -> Option<String> {
    let base = source.strip_prefix("/dev/").unwrap_or("");
    members
        .iter()
        .find(|m| Some(m.devno) == devno || (!base.is_empty() && m.name == base))
        .map(|m| m.name.clone())
}

struct MountEntry {
    devno: Option<(u32, u32)>,
    mount_point: String,
    source: String,
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                devno: parse_devno(fields.get(2)?),
                mount_point: unescape(fields.get(4)?),
                source: unescape(fields.get(sep + 2).unwrap_or(&"")),
            })
        })
        .collect()
}

fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// Undoes the kernel's octal escaping of spaces etc. (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_devno(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn read_trim(p: &Path) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn major(rdev: u64) -> u32 {
    libc::major(rdev as libc::dev_t)
}

fn minor(rdev: u64) -> u32 {
    libc::minor(rdev as libc::dev_t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_fields_and_escapes() {
        let text = "36 35 7:3 / /mnt/my\\040card rw,noatime shared:1 - ext4 /dev/loop3p2 rw\n\
                    22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].devno, Some((7, 3)));
        assert_eq!(m[0].mount_point, "/mnt/my card");
        assert_eq!(m[0].source, "/dev/loop3p2");
    }

    #[test]
    fn swaps_skip_header() {
        let text = "Filename\tType\tSize\tUsed\tPriority\n/dev/sdz2   partition\t1\t0\t-2\n";
        assert_eq!(parse_swaps(text), vec!["/dev/sdz2".to_string()]);
    }

    #[test]
    fn missing_and_non_block_targets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let view = SystemView::host();
        let missing = dir.path().join("nope");
        let err = inspect(&missing, 1, &view, TargetPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("no such device"), "{err}");
        let file = dir.path().join("card.img");
        fs::write(&file, b"x").unwrap();
        let err = inspect(&file, 1, &view, TargetPolicy::default()).unwrap_err();
        assert!(err.to_string().contains("not a block device"), "{err}");
        assert!(err.to_string().contains("--force-file"), "{err}");
        let t = inspect(
            &file,
            1,
            &view,
            TargetPolicy {
                force_file: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(t.kind, TargetKind::File);
    }
}
