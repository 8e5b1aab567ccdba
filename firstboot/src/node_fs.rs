//! The one door to the node's files: node paths (`/etc/hostname`) resolved under
//! `--root`, card paths (`cmdline.txt`) under `--boot`, every change atomic (see
//! [`fsx`]) and printed instead of made under `--dry-run`.

use crate::error::{Error, io};
use crate::fsx;
use crate::log::would;
use std::path::{Path, PathBuf};

/// The node's root filesystem and boot partition as a step may touch them.
#[derive(Debug, Clone)]
pub struct NodeFs {
    root: PathBuf,
    boot: PathBuf,
    dry: bool,
}

impl NodeFs {
    /// The node at `root` with its boot partition at `boot`; `dry` prints changes.
    pub fn new(root: PathBuf, boot: PathBuf, dry: bool) -> Self {
        NodeFs { root, boot, dry }
    }

    /// A node path (e.g. `/etc/hostname`) resolved under `--root`.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    /// A boot-partition path (e.g. `piimg/node.json`) resolved under `--boot`.
    pub fn card_path(&self, rel: &str) -> PathBuf {
        self.boot.join(rel)
    }

    /// The boot partition's root (for messages).
    pub fn boot(&self) -> &Path {
        &self.boot
    }

    /// True under `--dry-run`.
    pub fn dry(&self) -> bool {
        self.dry
    }

    /// True if the node path exists (a dangling symlink does not).
    pub fn exists(&self, node_path: &str) -> bool {
        self.path(node_path).exists()
    }

    /// Reads a node file; `None` if it does not exist.
    pub fn read(&self, node_path: &str) -> Result<Option<String>, Error> {
        read_opt(&self.path(node_path), node_path)
    }

    /// Reads a node file's bytes (it must exist).
    pub fn read_bytes(&self, node_path: &str) -> Result<Vec<u8>, Error> {
        std::fs::read(self.path(node_path)).map_err(io(node_path))
    }

    /// Where node symlink `node_path` points; `None` if it is not a symlink.
    pub fn read_link(&self, node_path: &str) -> Option<PathBuf> {
        std::fs::read_link(self.path(node_path)).ok()
    }

    /// Reads a card file; `None` if it does not exist.
    pub fn read_card(&self, rel: &str) -> Result<Option<String>, Error> {
        read_opt(&self.card_path(rel), rel)
    }

    /// Names of the regular files directly in a node directory (none if unreadable).
    pub fn files_in(&self, node_dir: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path(node_dir)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// Names of every entry (files, links, directories) in a node directory, sorted
    /// (none if unreadable).
    pub fn names_in(&self, node_dir: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.path(node_dir)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writes a node file atomically with `mode` and `owner`; `true` if it changed.
    pub fn put(
        &self,
        node_path: &str,
        mode: u32,
        data: &[u8],
        owner: Option<(u32, u32)>,
    ) -> Result<bool, Error> {
        if self.dry {
            would(&format!(
                "write {node_path} (mode {mode:04o}, {} bytes)",
                data.len()
            ));
            return Ok(true);
        }
        fsx::write_atomic(&self.path(node_path), data, mode, owner).map_err(io(node_path))
    }

    /// Rewrites a node file keeping its mode and owner.
    pub fn put_like(&self, node_path: &str, data: &[u8], default_mode: u32) -> Result<bool, Error> {
        if self.dry {
            would(&format!("rewrite {node_path} ({} bytes)", data.len()));
            return Ok(true);
        }
        fsx::write_like(&self.path(node_path), data, default_mode).map_err(io(node_path))
    }

    /// Writes a card file atomically.
    pub fn put_card(&self, rel: &str, data: &[u8]) -> Result<bool, Error> {
        if self.dry {
            would(&format!("write card {rel} ({} bytes)", data.len()));
            return Ok(true);
        }
        fsx::write_card(&self.card_path(rel), data).map_err(io(rel))
    }

    /// Copies a card file to a node path atomically with `mode`, owned by root.
    pub fn copy_from_card(&self, rel: &str, dest: &str, mode: u32) -> Result<(), Error> {
        if self.dry {
            would(&format!("copy card {rel} to {dest} (mode {mode:04o})"));
            return Ok(());
        }
        fsx::copy_atomic(&self.card_path(rel), &self.path(dest), mode)
            .map_err(io(format!("copying card {rel} to {dest}")))
    }

    /// Creates a node directory with mode and owner.
    pub fn mkdir(
        &self,
        node_path: &str,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), Error> {
        if self.dry {
            would(&format!("create directory {node_path} (mode {mode:04o})"));
            return Ok(());
        }
        fsx::ensure_dir(&self.path(node_path), mode, owner).map_err(io(node_path))
    }

    /// Points node symlink `link` at `target`.
    pub fn link(&self, target: &str, link: &str) -> Result<bool, Error> {
        if self.dry {
            would(&format!("link {link} -> {target}"));
            return Ok(true);
        }
        fsx::symlink(target, &self.path(link)).map_err(io(link))
    }

    /// Moves a node file or directory to a new node path.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), Error> {
        if self.dry {
            would(&format!("move {from} to {to}"));
            return Ok(());
        }
        std::fs::rename(self.path(from), self.path(to)).map_err(io(from))
    }

    /// Removes a node file or symlink.
    pub fn rm(&self, node_path: &str) -> Result<bool, Error> {
        if self.dry {
            if self.path(node_path).symlink_metadata().is_ok() {
                would(&format!("remove {node_path}"));
            }
            return Ok(true);
        }
        fsx::remove(&self.path(node_path)).map_err(io(node_path))
    }

    /// Overwrites a node file with zeros and deletes it; `false` if it was not there.
    pub fn scrub(&self, node_path: &str) -> Result<bool, Error> {
        if self.dry {
            would(&format!("zero and delete {node_path}"));
            return Ok(true);
        }
        fsx::scrub(&self.path(node_path)).map_err(io(node_path))
    }

    /// Overwrites a card file with zeros and deletes it; `false` if it was not there.
    pub fn scrub_card(&self, rel: &str) -> Result<bool, Error> {
        if self.dry {
            would(&format!("zero and delete card {rel}"));
            return Ok(true);
        }
        fsx::scrub(&self.card_path(rel)).map_err(io(rel))
    }
}

fn read_opt(path: &Path, shown: &str) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(shown)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_dry_run_changes_nothing_and_a_real_one_writes_under_root_and_boot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let boot = root.join("boot/firmware");
        let dry = NodeFs::new(root.clone(), boot.clone(), true);
        assert!(dry.put("/etc/hostname", 0o644, b"pi\n", None).unwrap());
        dry.mkdir("/var/lib/piimg", 0o700, None).unwrap();
        dry.put_card("cmdline.txt", b"quiet\n").unwrap();
        dry.link("/lib/x", "/etc/y").unwrap();
        assert!(!root.exists());

        let fs = NodeFs::new(root.clone(), boot.clone(), false);
        assert!(fs.put("/etc/hostname", 0o640, b"pi\n", None).unwrap());
        assert!(!fs.put("/etc/hostname", 0o640, b"pi\n", None).unwrap());
        let meta = std::fs::metadata(root.join("etc/hostname")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(fs.read("/etc/hostname").unwrap().as_deref(), Some("pi\n"));
        assert_eq!(fs.read("/etc/missing").unwrap(), None);
        assert!(fs.put_card("piimg/secrets.json", b"token").unwrap());
        assert_eq!(
            std::fs::read(boot.join("piimg/secrets.json")).unwrap(),
            b"token"
        );
        assert!(fs.scrub_card("piimg/secrets.json").unwrap());
        assert!(!boot.join("piimg/secrets.json").exists());
        assert!(!fs.scrub_card("piimg/secrets.json").unwrap());
        let e = fs.read_bytes("/etc/missing").unwrap_err().to_string();
        assert!(e.starts_with("/etc/missing: "), "{e}");
    }
}
