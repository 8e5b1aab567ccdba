//! Test helpers: Raspberry Pi OS-shaped images made by `scripts/mkimage` (no root, no
//! loop mounts), and independent checks of what piimg wrote (sfdisk, fsck.vfat,
//! e2fsck, mtools) so tests do not grade our code with our code.
//!
//! Use from a test file with `mod support;`.
#![allow(dead_code)]

pub mod loopdev;
pub mod plan;
pub mod reference;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace's `scripts/mkimage`.
pub fn mkimage_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mkimage")
}

/// A test image in its own temporary directory (removed on drop).
pub struct TestImage {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The image file.
    pub path: PathBuf,
}

/// A Raspberry Pi OS-shaped image of `release` (`bookworm`/`trixie`) made with
/// `scripts/mkimage` and the extra `args`. Images with the same arguments are made
/// once per test process and copied (sparse) for each caller, who may modify theirs.
pub fn image(release: &str, args: &[&str]) -> TestImage {
    let template = template(release, args);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{release}.img"));
    let status = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(&template)
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "cp of the template image failed");
    TestImage { dir, path }
}

/// Runs `scripts/mkimage` directly (no template cache) and returns its output.
pub fn run_mkimage(args: &[&str]) -> std::process::Output {
    Command::new(mkimage_script()).args(args).output().unwrap()
}

fn template(release: &str, args: &[&str]) -> PathBuf {
    static TEMPLATES: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let key = format!("{release} {}", args.join(" "));
    let map = TEMPLATES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = map.get(&key) {
        return p.clone();
    }
    let dir = DIR.get_or_init(template_dir);
    let out = dir.join(format!("t{}.img", map.len()));
    let mut full = vec!["--release", release, "--out"];
    let out_s = out.to_str().unwrap().to_string();
    full.push(&out_s);
    full.extend_from_slice(args);
    let o = run_mkimage(&full);
    assert!(
        o.status.success(),
        "mkimage {full:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    map.insert(key, out.clone());
    out
}

/// This process's template directory under `CARGO_TARGET_TMPDIR`. A static is never
/// dropped, so directories of test processes that have exited are removed here.
fn template_dir() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(base) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("piimg-templates-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("piimg-templates-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A partition as `sfdisk --json` reports it (independent of piimg's parser).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfPart {
    /// Start in bytes.
    pub start: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type (`c`, `83` or a GUID).
    pub kind: String,
    /// PARTUUID per sfdisk (GPT only; MBR ones derive from the label id).
    pub uuid: Option<String>,
}

/// The partitions and label id of `image` according to `sfdisk --json`.
pub fn sfdisk(image: &Path) -> (String, Vec<SfPart>) {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &v["partitiontable"];
    let sector = t["sectorsize"].as_u64().unwrap_or(512);
    let parts = t["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| SfPart {
            start: p["start"].as_u64().unwrap() * sector,
            size: p["size"].as_u64().unwrap() * sector,
            kind: p["type"].as_str().unwrap().to_string(),
            uuid: p["uuid"].as_str().map(|s| s.to_lowercase()),
        })
        .collect();
    (t["id"].as_str().unwrap().to_lowercase(), parts)
}

/// Byte offset and size of partition `n` (1-based) per sfdisk.
pub fn partition(image: &Path, n: usize) -> (u64, u64) {
    let (_, parts) = sfdisk(image);
    (parts[n - 1].start, parts[n - 1].size)
}

/// Copies `len` bytes at `offset` of `image` into a new sparse file in `dir`
/// (fsck.vfat has no offset option).
pub fn extract(image: &Path, offset: u64, len: u64, dir: &Path) -> PathBuf {
    let out_path = dir.join(format!("part-{offset}.img"));
    let status = Command::new("dd")
        .arg(format!("if={}", image.display()))
        .arg(format!("of={}", out_path.display()))
        .args([
            "bs=1M",
            "iflag=skip_bytes,count_bytes",
            "conv=sparse",
            "status=none",
        ])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}"))
        .status()
        .unwrap();
    assert!(status.success(), "dd failed");
    // conv=sparse leaves a trailing hole short: make the length exact.
    File::options()
        .write(true)
        .open(&out_path)
        .unwrap()
        .set_len(len)
        .unwrap();
    out_path
}

/// Runs `fsck.vfat -n` on partition `n` of `image`; returns (clean, output).
pub fn fsck_vfat(image: &Path, n: usize) -> (bool, String) {
    let (start, size) = partition(image, n);
    let dir = tempfile::tempdir().unwrap();
    let part = extract(image, start, size, dir.path());
    let out = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&part)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts `fsck.vfat -n` finds nothing wrong with partition `n`.
pub fn assert_fat_clean(image: &Path, n: usize) {
    let (ok, text) = fsck_vfat(image, n);
    assert!(ok, "fsck.vfat -n failed on partition {n}:\n{text}");
    let lower = text.to_lowercase();
    for bad in [
        "dirty bit",
        "free cluster summary",
        "contains",
        "invalid",
        "bad ",
    ] {
        assert!(
            !lower.contains(bad),
            "fsck.vfat complained ({bad}):\n{text}"
        );
    }
}

/// Runs `e2fsck -fn` on partition `n` of `image` (via e2fsprogs' `?offset=`).
pub fn e2fsck(image: &Path, n: usize) -> (bool, String) {
    let (start, _) = partition(image, n);
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={start}", image.display()))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Asserts `e2fsck -fn` finds nothing wrong with partition `n`.
pub fn assert_ext4_clean(image: &Path, n: usize) {
    let (ok, text) = e2fsck(image, n);
    assert!(ok, "e2fsck -fn failed on partition {n}:\n{text}");
}

/// A file read from FAT partition `n` with mtools' `mtype`; `None` if mtype fails.
pub fn mtype(image: &Path, n: usize, file: &str) -> Option<Vec<u8>> {
    let (start, _) = partition(image, n);
    let out = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{start}", image.display()))
        .arg(format!("::/{}", file.trim_start_matches('/')))
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// `mdir -b` (bare listing) of a directory of FAT partition `n`.
pub fn mdir(image: &Path, n: usize, dir: &str) -> Option<String> {
    let (start, _) = partition(image, n);
    let out = Command::new("mdir")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-b")
        .arg("-i")
        .arg(format!("{}@@{start}", image.display()))
        .arg(format!("::/{}", dir.trim_start_matches('/')))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `debugfs -R "cat PATH"` on partition `n`.
pub fn debugfs_cat(image: &Path, n: usize, path: &str) -> Vec<u8> {
    let (start, _) = partition(image, n);
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(format!("{}?offset={start}", image.display()))
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// SHA-256 (hex) of `len` bytes at `offset` of `path`, computed by coreutils'
/// `sha256sum` (fast even in debug builds, and independent of our code).
pub fn sha256_range(path: &Path, offset: u64, len: u64) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"tail -c +"$(($2 + 1))" "$1" | head -c "$3" | sha256sum"#)
        .arg("sh")
        .arg(path)
        .arg(offset.to_string())
        .arg(len.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// SHA-256 of a whole file (`sha256sum`).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Copies a `len`-byte file of zeros to `dest` on FAT partition `n` with mtools'
/// `mcopy` (fills a partition quickly, independent of our writer).
pub fn mcopy_zeros(image: &Path, n: usize, dest: &str, len: u64) {
    let (start, _) = partition(image, n);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("zeros");
    File::create(&src).unwrap().set_len(len).unwrap();
    let out = Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@{start}", image.display()))
        .arg(&src)
        .arg(format!("::/{}", dest.trim_start_matches('/')))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An SSH public key for test profiles (no one holds its private key).
pub const TEST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 test@piimg";

/// The two-node test cluster `lab` (server pi5-master-1 .31, agent pi4-worker-1 .41 of
/// `worker_hardware`) with these DNS resolvers, as profile TOML.
pub fn lab_profile(dns: &[&str], worker_hardware: &str) -> String {
    let dns = dns
        .iter()
        .map(|d| format!("{d:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"[cluster]
name = "lab"
domain = "lan"

[network]
cidr = "192.168.86.0/24"
gateway = "192.168.86.1"
dns = [{dns}]

[k3s]
version = "v1.31.4+k3s1"

[access]
admin_user = "admin"
ssh_keys = ["{TEST_KEY}"]

[hardware]
pi5_4k_pages = true

[[nodes]]
name = "pi5-master-1"
ip = "192.168.86.31"
role = "server"
hardware = "pi5-8gb"

[[nodes]]
name = "pi4-worker-1"
ip = "192.168.86.41"
role = "agent"
hardware = "{worker_hardware}"
"#
    )
}
