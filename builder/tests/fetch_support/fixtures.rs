//! Test images compressed the way pi-gen does (`xz -T0`, multi-block) and Imager OS
//! lists pointing at the loopback server.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::server::Server;

/// A raw image, its .xz, and both hashes.
pub struct Image {
    pub raw: Vec<u8>,
    pub xz: Vec<u8>,
    pub raw_sha: String,
    pub xz_sha: String,
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// 8 MiB: 1 MiB of noise, 2 MiB of zeros (a hole), 5 MiB of text; the noise differs per seed.
fn make(seed: u64) -> Image {
    let mut raw = Vec::with_capacity(8 << 20);
    let mut x = seed | 1;
    while raw.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        raw.extend_from_slice(&x.to_le_bytes());
    }
    raw.resize(3 << 20, 0);
    let mut line = 0u64;
    while raw.len() < 8 << 20 {
        raw.extend_from_slice(
            format!("line {line} of seed {seed}: lorem ipsum dolor\n").as_bytes(),
        );
        line += 1;
    }
    raw.truncate(8 << 20);
    let xz = xz_multiblock(&raw);
    Image {
        raw_sha: sha(&raw),
        xz_sha: sha(&xz),
        raw,
        xz,
    }
}

/// `xz -T0 --block-size=512KiB`: many blocks, like the official images.
pub fn xz_multiblock(raw: &[u8]) -> Vec<u8> {
    let mut child = Command::new("xz")
        .args(["-T0", "--block-size=512KiB", "-3", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("xz (xz-utils) is needed for the fetch tests");
    let mut stdin = child.stdin.take().unwrap();
    let raw = raw.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&raw));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

pub fn trixie() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| make(0x7121e))
}

pub fn bookworm() -> &'static Image {
    static I: OnceLock<Image> = OnceLock::new();
    I.get_or_init(|| make(0xb00c))
}

pub const TRIXIE_PATH: &str = "/raspios_lite_arm64/images/raspios_lite_arm64-2026-10-01/2026-10-01-raspios-trixie-arm64-lite.img.xz";
pub const BOOKWORM_PATH: &str = "/raspios_oldstable_lite_arm64/images/raspios_oldstable_lite_arm64-2025-05-13/2025-05-13-raspios-bookworm-arm64-lite.img.xz";

/// An Imager OS list entry for `img` served at `path`.
pub fn entry(
    server: &Server,
    name: &str,
    path: &str,
    date: &str,
    img: &Image,
) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "description": "A port of Debian with no desktop environment",
        "url": server.url(path),
        "icon": "https://downloads.raspberrypi.com/raspios_lite_arm64/Raspberry_Pi_OS_(64-bit).png",
        "release_date": date,
        "extract_size": img.raw.len(),
        "extract_sha256": img.raw_sha,
        "image_download_size": img.xz.len(),
        "image_download_sha256": img.xz_sha,
        "init_format": "cloudinit-rpi",
        "devices": ["pi5-64bit", "pi4-64bit", "pi3-64bit"],
        "architecture": "armv8",
    })
}

/// Serves both images and an OS list shaped like Imager's: a desktop entry, the
/// current Lite inside "Raspberry Pi OS (other)", and the Legacy (bookworm) Lite
/// behind a `subitems_url`. Returns the list URL.
pub fn standard(server: &Server) -> String {
    server.put(TRIXIE_PATH, trixie().xz.clone());
    server.put(BOOKWORM_PATH, bookworm().xz.clone());
    let legacy = serde_json::json!({"os_list": [
        entry(server, "Raspberry Pi OS (Legacy, 64-bit) Lite", BOOKWORM_PATH, "2025-05-13", bookworm())
    ]});
    server.put("/legacy.json", legacy.to_string().into_bytes());
    let list = serde_json::json!({
        "imager": {"latest_version": "2.0.0"},
        "os_list": [
            {"name": "Raspberry Pi OS (64-bit)", "url": server.url("/2026-10-01-raspios-trixie-arm64.img.xz"),
             "release_date": "2026-10-01", "extract_sha256": "0".repeat(64),
             "image_download_sha256": "0".repeat(64)},
            {"name": "Raspberry Pi OS (other)", "subitems": [
                entry(server, "Raspberry Pi OS Lite (64-bit)", TRIXIE_PATH, "2026-10-01", trixie()),
                {"name": "Raspberry Pi OS Lite (32-bit)", "url": server.url("/2026-10-01-raspios-trixie-armhf-lite.img.xz")},
                {"name": "Raspberry Pi OS (Legacy)", "subitems_url": server.url("/legacy.json")}
            ]},
            {"name": "Use custom", "url": ""}
        ]
    });
    server.put("/os_list.json", list.to_string().into_bytes());
    server.url("/os_list.json")
}
