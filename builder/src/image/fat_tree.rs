//! Walking a FAT directory tree through fatfs without trusting it to end: every
//! directory listing stops at FAT's own size limit ([`MAX_DIR_ENTRIES`]), and a
//! recursive walk knows each directory by its first cluster (read by [`RawFat`];
//! fatfs 0.3.6 does not expose it), so an entry leading back up the tree, or to a
//! directory already listed, is named, not followed.
//!
//! fatfs follows whatever the disk says: a directory whose cluster chain loops lists
//! the same entries forever, and a directory entry with cluster 0 opens the root
//! again. A walk of such a tree repeated the root's files 32 levels deep, doubling
//! at each level, until the fuzzer's 2 GB limit stopped it.

use std::collections::HashSet;
use std::io;

use fatfs::{Dir, DirEntry, ReadWriteSeek};

use super::fat_damage::damage;
use super::fat_raw::{MAX_DIR_ENTRIES, RawEntry, RawFat, short_name_bytes};

/// Deepest directory a walk descends into (FAT paths are never this deep).
const MAX_DEPTH: usize = 32;

/// An entry found by [`find`], with the 8.3 names of its path's components as stored.
pub(crate) type Found<'a, T> = (DirEntry<'a, T>, Vec<[u8; 11]>);

/// The entries of `dir` as fatfs lists them, but at most [`MAX_DIR_ENTRIES`]: one
/// more is a [`super::fat_damage::Damage`] error (the directory's chain loops), after which it ends.
pub(crate) fn entries<'a, T: ReadWriteSeek>(
    dir: &Dir<'a, T>,
) -> impl Iterator<Item = io::Result<DirEntry<'a, T>>> {
    let mut inner = dir.iter();
    let mut count = 0usize;
    std::iter::from_fn(move || {
        if count > MAX_DIR_ENTRIES {
            return None;
        }
        let next = inner.next()?;
        count += 1;
        if count > MAX_DIR_ENTRIES {
            return Some(Err(damage(format!(
                "a directory lists more than {MAX_DIR_ENTRIES} entries, FAT's limit \
                 (its cluster chain loops)"
            ))));
        }
        Some(next)
    })
}

/// The entry at `parts` below the root directory `root` (case-insensitive, as FAT
/// is), if any, with the 8.3 names of the path's components as stored. Each directory
/// on the way has its chain checked by `raw` before fatfs lists it (fatfs follows a
/// looping chain without end, also through entries it skips, where [`entries`]
/// cannot count).
pub(crate) fn find<'a, T: ReadWriteSeek>(
    raw: &RawFat<'_>,
    root: &Dir<'a, T>,
    parts: &[String],
) -> io::Result<Option<Found<'a, T>>> {
    let mut current = root.clone();
    let mut key = raw.root_key();
    let mut shorts = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let on_disk = raw.dir_entries(key)?;
        let mut found = None;
        for e in entries(&current) {
            let e = e?;
            if e.file_name().eq_ignore_ascii_case(part) {
                found = Some(e);
                break;
            }
        }
        let Some(e) = found else {
            return Ok(None);
        };
        let short = short_name_bytes(e.short_file_name_as_bytes());
        shorts.push(short);
        if i + 1 == parts.len() {
            return Ok(Some((e, shorts)));
        }
        if !e.is_dir() {
            return Ok(None);
        }
        key = raw.dir_key(dir_cluster(&on_disk, &short, part)?);
        current = e.to_dir();
    }
    Ok(None)
}

/// The first cluster of directory `short` (named `path` in errors) among `on_disk`.
fn dir_cluster(on_disk: &[RawEntry], short: &[u8; 11], path: &str) -> io::Result<u32> {
    match the_entry(on_disk, short, path)? {
        Some(e) if e.is_dir() => Ok(e.cluster),
        _ => Err(damage(format!(
            "directory '{path}' has no 8.3 entry that reads back (a damaged name)"
        ))),
    }
}

/// The one entry named `short` (named `path` in errors) among `on_disk`. Two entries
/// sharing an 8.3 name are a [`super::fat_damage::Damage`] error: fatfs and piimg's
/// own reader might take different ones, and only the one piimg checked is safe to
/// follow.
pub(crate) fn the_entry(
    on_disk: &[RawEntry],
    short: &[u8; 11],
    path: &str,
) -> io::Result<Option<RawEntry>> {
    let mut named = on_disk.iter().filter(|e| &e.short == short);
    let first = named.next().copied();
    if first.is_some() && named.next().is_some() {
        return Err(damage(format!(
            "'{path}': its directory holds two entries with the 8.3 name '{}'",
            String::from_utf8_lossy(short).trim_end()
        )));
    }
    Ok(first)
}

/// Every file below `start` (the directory at `prefix`, first cluster `start_cluster`
/// as [`RawFat::dir_key`] gives it), recursively, as (path, size) in no particular
/// order. A directory met twice (an entry pointing at the root or at an ancestor, or
/// two entries sharing one directory) is a [`super::fat_damage::Damage`] error, as is one whose chain is
/// damaged, so the walk reads each directory once: its work and its output are bounded
/// by the volume's real size.
pub(crate) fn walk<'a, T: ReadWriteSeek>(
    raw: &RawFat<'_>,
    prefix: String,
    start: Dir<'a, T>,
    start_cluster: u32,
) -> io::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::from([raw.dir_key(start_cluster)]);
    let mut stack = vec![(prefix, start, raw.dir_key(start_cluster), 0usize)];
    while let Some((prefix, dir, key, depth)) = stack.pop() {
        let on_disk = raw.dir_entries(key)?;
        for e in entries(&dir) {
            let e = e?;
            let name = e.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if !e.is_dir() {
                out.push((path, e.len()));
                continue;
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let short = short_name_bytes(e.short_file_name_as_bytes());
            let child = raw.dir_key(dir_cluster(&on_disk, &short, &path)?);
            if !seen.insert(child) {
                return Err(damage(format!(
                    "directory '{path}' leads to cluster {child}, a directory already \
                     listed: the directory tree loops or is cross-linked"
                )));
            }
            stack.push((path, e.to_dir(), child, depth + 1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs::{File, OpenOptions};
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use fatfs::{FatType, FormatVolumeOptions};
    use fscommon::StreamSlice;

    use crate::image::{Image, ImageError};

    /// Where the FAT32 partition of [`card`] starts.
    const START: u64 = 2048 * 512;
    /// Its size: 81 920 clusters of 512 bytes, enough for FAT32.
    const SIZE: u64 = 40 << 20;

    /// A disk with one FAT32 partition (512-byte clusters) holding `top.txt`,
    /// `a/b/deep.txt` and the 30 files of `full/` (which fill its two clusters).
    fn card(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("disk.img");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        file.set_len(START + SIZE).unwrap();
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0x0c;
        mbr[446 + 8..446 + 12].copy_from_slice(&2048u32.to_le_bytes());
        mbr[446 + 12..446 + 16].copy_from_slice(&((SIZE / 512) as u32).to_le_bytes());
        mbr[510..].copy_from_slice(&[0x55, 0xaa]);
        file.write_all_at(&mbr, 0).unwrap();
        let options = FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .bytes_per_cluster(512);
        fatfs::format_volume(
            StreamSlice::new(&file, START, START + SIZE).unwrap(),
            options,
        )
        .unwrap();
        let image = Image::open_rw(&path).unwrap();
        let mut boot = image.boot().unwrap();
        boot.write("TOP.TXT", b"top\n").unwrap();
        boot.write("A/B/DEEP.TXT", b"deep\n").unwrap();
        for i in 0..30 {
            boot.write(&format!("FULL/F{i:02}.TXT"), b"x").unwrap();
        }
        boot.commit().unwrap();
        path
    }

    /// Raw views of the card's FAT32 volume, for damaging it.
    struct Raw {
        file: File,
        fat: u64,
        data: u64,
        root: u32,
    }

    impl Raw {
        fn new(path: &Path) -> Self {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap();
            let mut bs = [0u8; 512];
            file.read_exact_at(&mut bs, START).unwrap();
            let u16_at = |o: usize| u64::from(u16::from_le_bytes([bs[o], bs[o + 1]]));
            let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]);
            assert_eq!(
                (u16_at(11), bs[13]),
                (512, 1),
                "512-byte sectors and clusters"
            );
            let fat = START + u16_at(14) * 512;
            let data = fat + u64::from(bs[16]) * u64::from(u32_at(36)) * 512;
            Self {
                file,
                fat,
                data,
                root: u32_at(44),
            }
        }

        fn cluster_at(&self, c: u32) -> u64 {
            self.data + u64::from(c - 2) * 512
        }

        /// Byte offset and first cluster of the entry `short` in the directory whose
        /// (single) cluster is `dir`.
        fn entry(&self, dir: u32, short: &[u8; 11]) -> (u64, u32) {
            let mut buf = [0u8; 512];
            self.file
                .read_exact_at(&mut buf, self.cluster_at(dir))
                .unwrap();
            let i = buf
                .chunks_exact(32)
                .position(|e| &e[..11] == short)
                .unwrap_or_else(|| panic!("{short:?} not in cluster {dir}"));
            let e = &buf[i * 32..i * 32 + 32];
            let hi = u32::from(u16::from_le_bytes([e[20], e[21]]));
            let lo = u32::from(u16::from_le_bytes([e[26], e[27]]));
            (self.cluster_at(dir) + i as u64 * 32, hi << 16 | lo)
        }

        /// Makes the entry at `at` a directory starting at `cluster`.
        fn make_dir(&self, at: u64, cluster: u32) {
            self.file.write_all_at(&[0x10], at + 11).unwrap();
            self.file
                .write_all_at(&((cluster >> 16) as u16).to_le_bytes(), at + 20)
                .unwrap();
            self.file
                .write_all_at(&(cluster as u16).to_le_bytes(), at + 26)
                .unwrap();
        }

        fn set_fat(&self, cluster: u32, next: u32) {
            let at = self.fat + u64::from(cluster) * 4;
            self.file.write_all_at(&next.to_le_bytes(), at).unwrap();
        }
    }

    fn damaged(e: ImageError) -> String {
        assert!(matches!(e, ImageError::FatDamaged { .. }), "{e:?}");
        let text = e.to_string();
        assert_eq!(text.lines().count(), 1, "{text}");
        text
    }

    #[test]
    fn an_undamaged_tree_walks_whole() {
        let dir = tempfile::tempdir().unwrap();
        let image = Image::open(&card(dir.path())).unwrap();
        let boot = image.boot().unwrap();
        let all = boot.walk("/").unwrap();
        assert_eq!(all.len(), 32, "{all:?}");
        assert!(all.contains(&("A/B/DEEP.TXT".into(), 5)), "{all:?}");
        assert_eq!(boot.walk("A").unwrap(), [("A/B/DEEP.TXT".into(), 5)]);
        assert_eq!(boot.list("FULL").unwrap().unwrap().len(), 30);
    }

    /// The fuzzer's out-of-memory input in small: a directory entry with cluster 0
    /// opens the root again; one pointing at an ancestor loops the same way.
    #[test]
    fn a_directory_entry_pointing_up_the_tree_is_a_named_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = card(dir.path());
        let raw = Raw::new(&path);
        let (top, _) = raw.entry(raw.root, b"TOP     TXT");
        raw.make_dir(top, 0);
        let image = Image::open(&path).unwrap();
        let e = damaged(image.boot().unwrap().walk("/").unwrap_err());
        assert!(e.contains("list '/'"), "{e}");
        let root = raw.root;
        assert!(
            e.contains(&format!(
                "directory 'TOP.TXT' leads to cluster {root}, a directory already listed: \
                 the directory tree loops"
            )),
            "{e}"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = card(dir.path());
        let raw = Raw::new(&path);
        let (_, a) = raw.entry(raw.root, b"A          ");
        let (_, b) = raw.entry(a, b"B          ");
        let (deep, _) = raw.entry(b, b"DEEP    TXT");
        raw.make_dir(deep, a);
        let image = Image::open(&path).unwrap();
        let boot = image.boot().unwrap();
        for start in ["/", "A"] {
            let e = damaged(boot.walk(start).unwrap_err());
            assert!(
                e.contains(&format!(
                    "directory 'A/B/DEEP.TXT' leads to cluster {a}, a directory"
                )),
                "{e}"
            );
        }
    }

    /// A file claiming 4 GiB whose chain loops through its one cluster: fatfs would
    /// read it round and round into a 4 GiB buffer.
    #[test]
    fn a_file_whose_chain_loops_is_named_not_read_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = card(dir.path());
        let raw = Raw::new(&path);
        let (top, c) = raw.entry(raw.root, b"TOP     TXT");
        raw.file
            .write_all_at(&u32::MAX.to_le_bytes(), top + 28)
            .unwrap();
        let image = Image::open(&path).unwrap();
        let e = damaged(image.boot().unwrap().read("TOP.TXT").unwrap_err());
        assert!(
            e.contains(
                "the file claims 4294967295 bytes but its cluster chain holds 1 cluster(s), \
                 512 bytes"
            ),
            "{e}"
        );
        raw.set_fat(c, c);
        let e = damaged(image.boot().unwrap().read("TOP.TXT").unwrap_err());
        assert!(
            e.contains(&format!("a cluster chain loops (through cluster {c})")),
            "{e}"
        );
    }

    /// A directory whose chain loops lists its entries again and again, and a loop
    /// through deleted entries only kept fatfs inside one call to `next`: every
    /// directory fatfs lists has its chain checked first.
    #[test]
    fn a_directory_whose_chain_loops_is_named_before_fatfs_lists_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = card(dir.path());
        let raw = Raw::new(&path);
        let (_, full) = raw.entry(raw.root, b"FULL       ");
        let mut next = [0u8; 4];
        raw.file
            .read_exact_at(&mut next, raw.fat + u64::from(full) * 4)
            .unwrap();
        let second = u32::from_le_bytes(next);
        assert!(
            (3..0x0fff_fff8).contains(&second),
            "two clusters: {second:#x}"
        );
        raw.set_fat(second, full);
        let image = Image::open_rw(&path).unwrap();
        let looped = format!("a cluster chain loops (through cluster {full})");
        let mut boot = image.boot().unwrap();
        let e = damaged(boot.list("FULL").unwrap_err());
        assert!(e.contains(&looped), "{e}");
        let e = damaged(boot.walk("/").unwrap_err());
        assert!(e.contains(&looped), "{e}");
        let e = damaged(boot.read("FULL/NONE.TXT").unwrap_err());
        assert!(e.contains(&looped), "{e}");
        let e = damaged(boot.write("FULL/NEW.TXT", b"x").unwrap_err());
        assert!(e.contains(&looped), "{e}");
        // Every entry deleted: fatfs skips them all, round and round.
        for c in [full, second] {
            for i in 0..16 {
                raw.file
                    .write_all_at(&[0xe5], raw.cluster_at(c) + i * 32)
                    .unwrap();
            }
        }
        let boot = image.boot().unwrap();
        let e = damaged(boot.list("FULL").unwrap_err());
        assert!(e.contains(&looped), "{e}");
        assert!(!boot.exists("FULL/F00.TXT").is_ok_and(|found| found));
    }

    /// Two entries sharing an 8.3 name: fatfs may follow the one piimg did not check.
    #[test]
    fn two_entries_with_one_short_name_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = card(dir.path());
        let raw = Raw::new(&path);
        let (full, _) = raw.entry(raw.root, b"FULL       ");
        raw.file.write_all_at(b"A          ", full).unwrap();
        let image = Image::open(&path).unwrap();
        let boot = image.boot().unwrap();
        for e in [
            boot.walk("/").unwrap_err(),
            boot.read("A/B/DEEP.TXT").unwrap_err(),
        ] {
            let e = damaged(e);
            assert!(e.contains("two entries with the 8.3 name 'A'"), "{e}");
        }
    }
}
