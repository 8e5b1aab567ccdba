//! What each fuzz target does with its input. Included by path from the piimg
//! crate's regression test, so it uses nothing but `piimg`, `piimg_contract` and std.
//!
//! The image targets read their input as a *sparse disk*: a fuzzer cannot mutate a
//! 700 MiB image, but the parsers only look at a few hundred KiB of it. The encoding:
//!
//! ```text
//! u32 LE   disk size in 512-byte sectors (capped at MAX_DISK)
//! repeated chunks:
//!   u32 LE first sector of the chunk
//!   u16 LE byte length n
//!   n bytes (fewer if the input ends first)
//! ```
//!
//! Everything not covered by a chunk reads as zeros (a hole). `scripts/fuzz` makes
//! the seeds from `scripts/mkimage` images (non-zero sectors only).
//!
//! Every function here must return, never panic or hang, whatever the input: piimg's
//! own code names the problem as an error. Assertions only check piimg's promises
//! (e.g. a `.bmap` piimg writes parses back to the same map).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use piimg::bmap::Bmap;
use piimg::image::{self, Image, Timestamp};
use piimg_contract::{AgentStatus, CardSecrets, NodeConfig};

/// Bytes per sector of the sparse disk encoding.
pub const SECTOR: u64 = 512;

/// Largest disk the encoding makes (real Raspberry Pi OS images are about 2.7 GB):
/// larger ones only make the fuzzer time out on reads of zeros.
pub const MAX_DISK: u64 = 4 << 30;

/// A file for the image targets to materialise their input in: in `/dev/shm` when it
/// exists (no disk I/O per execution), else the temporary directory; one per process.
pub fn scratch_file() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("piimg-fuzz-{}.img", std::process::id()))
}

/// Writes the sparse disk `data` describes to `path` (replacing it). `None` when the
/// file cannot be written (a problem of the host, not of the input).
pub fn materialise(data: &[u8], path: &Path) -> Option<()> {
    let file: File = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ok()?;
    let Some((head, mut rest)) = data.split_first_chunk::<4>() else {
        return Some(());
    };
    let size = (u64::from(u32::from_le_bytes(*head)) * SECTOR).min(MAX_DISK);
    while let Some((hdr, tail)) = rest.split_first_chunk::<6>() {
        let sector = u64::from(u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]));
        let len = usize::from(u16::from_le_bytes([hdr[4], hdr[5]])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        let offset = sector * SECTOR;
        if offset < size {
            let keep = (size - offset).min(bytes.len() as u64) as usize;
            file.write_all_at(&bytes[..keep], offset).ok()?;
        }
        rest = next;
    }
    file.set_len(size).ok()?;
    Some(())
}

/// Partition tables: the sniffing, MBR and GPT readers and the table's checks, which
/// is all [`Image::open`] does before any file system is touched.
pub fn table(data: &[u8], scratch: &Path) {
    if materialise(data, scratch).is_none() {
        return;
    }
    if let Ok(img) = Image::open(scratch) {
        let _ = img.boot_partition();
        let _ = img.root_partition();
        let _ = img.table().check(img.size());
    }
}

/// The FAT32 engine: open the boot partition, its label and free space, list and
/// walk it, read files, run the base sanity checks (boot sector, FAT tables and
/// chains), then write a small file into the (scratch) copy, commit and read it back.
pub fn fat(data: &[u8], scratch: &Path) {
    if materialise(data, scratch).is_none() {
        return;
    }
    let Ok(img) = Image::open_rw(scratch) else {
        return;
    };
    let _ = image::sanity::findings(&img);
    let Ok(mut boot) = img.boot_at(Timestamp::from_unix(1_700_000_000)) else {
        return;
    };
    let _ = boot.label();
    let _ = boot.free_bytes();
    let _ = boot.total_bytes();
    let _ = boot.list("/");
    let _ = boot.walk("/");
    let _ = boot.read("cmdline.txt");
    let _ = boot.read("config.txt");
    let _ = boot.exists("piimg/node.json");
    if boot
        .write("piimg/fuzz.txt", b"written by the fuzzer\n")
        .is_ok()
        && boot.commit().is_ok()
    {
        if let Ok(boot) = img.boot() {
            let _ = boot.read("piimg/fuzz.txt");
        }
    }
}

/// The ext4 facts reader: release, architecture, users, first-boot mechanism.
pub fn ext4(data: &[u8], scratch: &Path) {
    if materialise(data, scratch).is_none() {
        return;
    }
    let Ok(img) = Image::open(scratch) else {
        return;
    };
    let Ok(root) = img.root() else {
        return;
    };
    let _ = root.label();
    let _ = root.list("/etc");
    let _ = root.read_text("/etc/os-release");
    if let Ok(release) = root.release() {
        let _ = release.default_user();
        let _ = image::require_supported_arch(scratch, &release);
        let _ = image::choose_first_boot(scratch, &release, None);
        let _ = image::choose_first_boot(scratch, &release, Some("cloudinit-rpi"));
    }
}

/// The image engine as a whole, as `inspect`, `build` and `flash` meet a file: open,
/// the sanity findings, the file-system block map, the boot partition's tree and the
/// root's release.
pub fn image(data: &[u8], scratch: &Path) {
    if materialise(data, scratch).is_none() {
        return;
    }
    let Ok(img) = Image::open(scratch) else {
        return;
    };
    let _ = image::sanity::findings(&img);
    let _ = image::usage::usage(&img);
    if let Ok(boot) = img.boot() {
        let _ = boot.walk("/");
        let _ = boot.read("cmdline.txt");
    }
    if let Ok(root) = img.root() {
        let _ = root.release();
    }
}

/// `.bmap` parsing; a map that parses must survive piimg's own write-and-read-back.
pub fn bmap(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(map) = Bmap::parse(text) else {
        return;
    };
    let _ = map.extents().count();
    let _ = map.mapped_bytes();
    let _ = map.blocks_count();
    let again = Bmap::parse(&map.to_xml());
    assert!(
        matches!(&again, Ok(m) if *m == map),
        "a parsed bmap does not read back from piimg's own XML: {again:?}"
    );
}

/// The card contract: node.json, secrets.json and status.json; what parses must
/// serialise to JSON that parses to the same value.
pub fn contract(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(node) = NodeConfig::from_json(text) {
        let again = NodeConfig::from_json(&node.to_json());
        assert!(
            matches!(&again, Ok(n) if *n == node),
            "node.json: {again:?}"
        );
    }
    if let Ok(secrets) = CardSecrets::from_json(text) {
        let again = CardSecrets::from_json(&secrets.to_json());
        assert!(matches!(&again, Ok(s) if *s == secrets), "secrets.json");
    }
    if let Ok(status) = AgentStatus::from_json(text) {
        let again = AgentStatus::from_json(&status.to_json());
        assert!(
            matches!(&again, Ok(s) if *s == status),
            "status.json: {again:?}"
        );
    }
}
