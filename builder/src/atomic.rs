//! Outputs that appear whole or not at all: write to a temp file beside the
//! destination, fsync it, rename it over the destination, fsync the directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file being written that becomes visible at its destination only on [`commit`](Self::commit).
///
/// Dropped without a commit (error, panic), the temp file is removed and the
/// destination is untouched.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
}

impl AtomicFile {
    /// Starts a new file for `dest` with permission bits `mode` (e.g. `0o600`).
    pub fn create(dest: &Path, mode: u32) -> io::Result<Self> {
        let dir = parent_dir(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        remove_stale(dir, &name);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .permissions(std::fs::Permissions::from_mode(mode))
            .tempfile_in(dir)?;
        // Held while the temp file is open: it tells a later run this file is in use.
        flock(tmp.as_file(), libc::LOCK_EX | libc::LOCK_NB)?;
        // tempfile applies the umask-free mode only on some platforms: make sure.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Path of the temp file (for tools that need a path while it is being written).
    pub fn temp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Destination this file will be renamed to.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Flushes, fsyncs, renames over the destination and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        self.tmp.as_file_mut().flush()?;
        self.tmp.as_file().sync_all()?;
        self.tmp.persist(&self.dest).map_err(|e| e.error)?;
        sync_dir(parent_dir(&self.dest))
    }
}

/// Writes `bytes` to `dest` atomically with permission bits `mode`.
pub fn write_atomic(dest: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create(dest, mode)?;
    f.file().write_all(bytes)?;
    f.commit()
}

/// Creates `path` exclusively (fails if it exists) with `mode`, writes and fsyncs it.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    sync_dir(parent_dir(path))
}

/// Removes the temp files earlier killed runs left for `dest` ([`AtomicFile::create`]
/// does this for the file it starts; a command calls it for every output it owns,
/// as an interrupted run may stop before reaching some of them).
pub fn remove_stale_temps(dest: &Path) {
    if let Some(name) = dest.file_name() {
        remove_stale(parent_dir(dest), &name.to_string_lossy());
    }
}

/// Removes temp files of earlier runs for the destination `name` in `dir` (this
/// module's `.NAME.XXXXXX.partial` pattern) that no process holds: what a killed
/// run (SIGKILL, power cut) left behind. Best effort: a file that cannot be checked
/// or removed stays.
fn remove_stale(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        let Some(middle) = file_name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".partial"))
        else {
            continue;
        };
        // tempfile's random part: letters and digits only, so `.a.img.x.partial` of
        // a destination `a.img.x` is never taken for one of `a.img`'s.
        if middle.is_empty() || !middle.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let path = e.path();
        if let Ok(f) = File::open(&path)
            && flock(&f, libc::LOCK_EX | libc::LOCK_NB).is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// fsyncs a directory so a rename or create in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        std::fs::write(&dest, b"old").unwrap();
        write_atomic(&dest, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn drop_without_commit_leaves_destination_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.img");
        std::fs::write(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest, 0o600).unwrap();
            f.file().write_all(b"half").unwrap();
        }
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_killed_run_s_temp_file_is_removed_one_in_use_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("node.img");
        // What a SIGKILLed build leaves: a temp file nobody holds.
        let stale = dir.path().join(".node.img.Ab12Cd.partial");
        std::fs::write(&stale, b"half an image").unwrap();
        // Another destination's temp file, and an unrelated file.
        let other = dir.path().join(".node.img.bmap.Xy34Zw.partial");
        std::fs::write(&other, b"x").unwrap();
        let mine = dir.path().join("notes.partial");
        std::fs::write(&mine, b"x").unwrap();
        let live = AtomicFile::create(&dest, 0o600).unwrap();
        assert!(!stale.exists(), "the stale temp file is still there");
        assert!(other.exists() && mine.exists());
        // A second run while the first is writing keeps the first's temp file.
        let second = AtomicFile::create(&dest, 0o600).unwrap();
        assert!(live.temp_path().exists());
        drop(second);
        live.commit().unwrap();
        assert!(dest.exists());
    }

    #[test]
    fn write_new_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        write_new(&p, b"1", 0o600).unwrap();
        assert_eq!(
            write_new(&p, b"2", 0o600).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"1");
    }
}
