//! The disks that hold media now, from sysfs: what the card-swap loop compares after
//! each uevent to see which card was just inserted.

use std::fs;
use std::path::PathBuf;

use super::target::{SystemView, is_removable};

/// A whole disk with media in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medium {
    /// Kernel name (`sdb`, `mmcblk0`, `loop3`).
    pub name: String,
    /// Its device node (`/dev/NAME`).
    pub path: PathBuf,
    /// Capacity in bytes.
    pub size: u64,
    /// Removable media (see [`is_removable`]).
    pub removable: bool,
}

/// Every disk of `view` whose capacity is not zero (an empty card reader and a
/// detached loop device have none).
pub fn with_media(view: &SystemView) -> Vec<Medium> {
    let Ok(rd) = fs::read_dir(view.sysfs.join("block")) else {
        return Vec::new();
    };
    let mut out: Vec<Medium> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let sysdir = fs::canonicalize(e.path()).ok()?;
            let size = fs::read_to_string(sysdir.join("size"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()?
                * 512;
            (size > 0).then(|| Medium {
                path: PathBuf::from("/dev").join(&name),
                removable: is_removable(&sysdir, &name),
                name,
                size,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
