//! Small filesystem helpers: atomic writes with mode and owner, symlinks, scrubbing.
//!
//! Every write goes to a temp file in the same directory, is fsynced, then renamed
//! over the target and the directory fsynced, so a power cut leaves either the old
//! or the new content, never a torn file. Writes that would not change anything are
//! skipped, which keeps every step idempotent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `data` to `path` atomically with `mode` (and `owner` if given).
///
/// Returns `false` when the file already had exactly this content, mode and owner.
pub fn write_atomic(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<bool> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        let same_owner = owner.is_none_or(|(u, g)| meta.uid() == u && meta.gid() == g);
        if meta.is_file()
            && meta.permissions().mode() & 0o7777 == mode
            && same_owner
            && fs::read(path)? == data
        {
            return Ok(false);
        }
    }
    write_tmp_and_rename(path, data, Some(mode), owner)?;
    Ok(true)
}

/// Writes `data` atomically keeping the existing file's mode and owner (for
/// /etc/passwd and friends); `default_mode` applies when the file is new.
pub fn write_like(path: &Path, data: &[u8], default_mode: u32) -> io::Result<bool> {
    match fs::metadata(path) {
        Ok(meta) => write_atomic(
            path,
            data,
            meta.permissions().mode() & 0o7777,
            Some((meta.uid(), meta.gid())),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            write_atomic(path, data, default_mode, None)
        }
        Err(e) => Err(e),
    }
}

/// Writes a file on the FAT boot partition atomically (no modes or owners there).
pub fn write_card(path: &Path, data: &[u8]) -> io::Result<bool> {
    if fs::read(path).ok().as_deref() == Some(data) {
        return Ok(false);
    }
    write_tmp_and_rename(path, data, None, None)?;
    Ok(true)
}

fn write_tmp_and_rename(
    path: &Path,
    data: &[u8],
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    replace_with(path, mode, owner, |f| f.write_all(data))
}

/// Replaces `path` by a temp file in its directory that `fill` writes, given `owner`
/// and `mode`, fsynced, renamed over it; the directory is fsynced after. The temp
/// file is removed on failure.
fn replace_with(
    path: &Path,
    mode: Option<u32>,
    owner: Option<(u32, u32)>,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent(path)?;
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.piimg-tmp", name.to_string_lossy()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        fill(&mut f)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        if let Some(mode) = mode {
            f.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// Creates `dir` (and parents) and sets its mode and owner.
pub fn ensure_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let meta = fs::metadata(dir)?;
    if meta.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    if let Some((uid, gid)) = owner.filter(|&(u, g)| meta.uid() != u || meta.gid() != g) {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Points `link` at `target`, replacing a different link; `false` if it already did.
pub fn symlink(target: &str, link: &Path) -> io::Result<bool> {
    if fs::read_link(link).is_ok_and(|existing| existing == Path::new(target)) {
        return Ok(false);
    }
    let dir = parent(link)?;
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.piimg-tmp",
        link.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link)?;
    sync_dir(dir);
    Ok(true)
}

/// Tries `flock(LOCK_EX | LOCK_NB)` on `file`: `Ok(true)` when taken (held until
/// the file is closed), `Ok(false)` when another open file holds it.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor the caller owns; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Removes a file or symlink; `false` if it was not there.
pub fn remove(path: &Path) -> io::Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => {
            if let Some(dir) = path.parent() {
                sync_dir(dir);
            }
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Overwrites a file with zeros, fsyncs, then deletes it; `false` if it was not there.
pub fn scrub(path: &Path) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    {
        let mut f = OpenOptions::new().write(true).open(path)?;
        let zeros = [0u8; 4096];
        let mut left = len;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
    }
    remove(path)
}

/// Best-effort fsync of a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))
}

/// Copies `src` to `dest` atomically (streaming) with `mode`, owned by root.
pub fn copy_atomic(src: &Path, dest: &Path, mode: u32) -> io::Result<()> {
    let mut input = File::open(src)?;
    replace_with(dest, Some(mode), None, |out| {
        io::copy(&mut input, out).map(drop)
    })
}
