//! The reference profile (`profiles/homelab.toml`) as the tests use it. Its key
//! comes from `ssh_key_files = ["~/.ssh/id_ed25519.pub"]`, so no test may lean on
//! the machine's own `~/.ssh`: a test running `piimg` gives it a [`KeyHome`] as
//! `HOME`; a test loading the profile in its own process (whose `HOME` it cannot
//! change) uses [`text`], where the key file is a generated one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The key file the reference profile lists, as written there.
pub const KEY_FILE: &str = "~/.ssh/id_ed25519.pub";

/// `profiles/homelab.toml` of this checkout.
pub fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/homelab.toml")
}

/// The reference profile exactly as shipped (its key file under `~`).
pub fn shipped_text() -> String {
    std::fs::read_to_string(path()).unwrap()
}

/// The reference profile with its key file in `home` instead of `~`.
pub fn text_with_home(home: &Path) -> String {
    let shipped = shipped_text();
    let line = format!("ssh_key_files = [\"{KEY_FILE}\"]");
    assert!(
        shipped.contains(&line),
        "the reference profile lists {KEY_FILE}"
    );
    let file = home.join(".ssh/id_ed25519.pub");
    shipped.replacen(
        &line,
        &format!("ssh_key_files = [\"{}\"]", file.display()),
        1,
    )
}

/// The reference profile with a generated key file (made once, kept under cargo's
/// CARGO_TARGET_TMPDIR), for tests that load it in-process.
pub fn text() -> String {
    text_with_home(&shared_home().path)
}

/// The HOME behind [`text`]: `reference-home` in CARGO_TARGET_TMPDIR, made once
/// (atomically, so test binaries running at once agree on it) and then reused.
pub fn shared_home() -> &'static KeyHome {
    static HOME: OnceLock<KeyHome> = OnceLock::new();
    HOME.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let path = tmp.join("reference-home");
        let read = || std::fs::read_to_string(path.join(".ssh/id_ed25519.pub")).ok();
        if read().is_none() {
            let fresh = KeyHome::in_dir(tmp);
            let made = fresh.dir.expect("a fresh home").keep();
            // Another test binary may have won the race: then its home is the one.
            if std::fs::rename(&made, &path).is_err() {
                std::fs::remove_dir_all(&made).unwrap();
            }
        }
        let key = read()
            .expect("the shared home holds a key")
            .trim()
            .to_string();
        KeyHome {
            dir: None,
            path,
            key,
        }
    })
}

/// A HOME holding `.ssh/id_ed25519.pub` with a freshly generated ed25519 public key
/// (removed on drop, but for [`shared_home`]'s).
pub struct KeyHome {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    /// The public key line in the file.
    pub key: String,
}

impl KeyHome {
    /// A new HOME in the system's temp directory.
    pub fn new() -> KeyHome {
        KeyHome::in_dir(&std::env::temp_dir())
    }

    fn in_dir(parent: &Path) -> KeyHome {
        std::fs::create_dir_all(parent).unwrap();
        let dir = tempfile::Builder::new()
            .prefix("home-")
            .tempdir_in(parent)
            .unwrap();
        let key = generated_key();
        std::fs::create_dir(dir.path().join(".ssh")).unwrap();
        std::fs::write(dir.path().join(".ssh/id_ed25519.pub"), format!("{key}\n")).unwrap();
        KeyHome {
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            key,
        }
    }

    /// The directory to pass as `HOME`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An OpenSSH ed25519 public key line with 32 random bytes as the key: what
/// `ssh-keygen -t ed25519` writes to `id_ed25519.pub` (the private half is never
/// made; piimg only reads the public one).
fn generated_key() -> String {
    use std::io::Read;
    let mut point = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut point)
        .unwrap();
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], &point] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    format!("ssh-ed25519 {} test@piimg-tests", base64(&blob))
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
