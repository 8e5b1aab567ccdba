//! SSH public keys: parsing and checking OpenSSH key lines, and gathering them
//! from the profile's three sources (inline, files, GitHub users).

use super::model::{Access, Profile};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable overriding `https://github.com` as the base URL of `<user>.keys`.
pub const GITHUB_KEYS_URL_ENV: &str = "PIIMG_GITHUB_KEYS_URL";
/// Default base URL of GitHub users' public keys.
pub const GITHUB_KEYS_URL: &str = "https://github.com";

/// Key types accepted in authorized_keys lines.
pub const KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// Smallest RSA modulus accepted, in bits.
pub const RSA_MIN_BITS: usize = 2048;

/// A problem with one key or key source.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The line is not `TYPE BASE64 [COMMENT]`.
    #[error(
        "not an OpenSSH public key line (expected `TYPE BASE64 [COMMENT]`, e.g. `ssh-ed25519 AAAA… me@host`)"
    )]
    Shape,
    /// A private key was given where a public one belongs.
    #[error("this is a PRIVATE key: give the public key (the .pub file) instead")]
    Private,
    /// The key type is not one piimg accepts.
    #[error("unsupported key type `{0}` (use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa)")]
    Type(String),
    /// The key data is not base64.
    #[error("key data is not valid base64")]
    Base64,
    /// The key data is shorter than its type requires.
    #[error("key data is truncated or malformed for {0}")]
    Malformed(String),
    /// The type inside the key data differs from the line's type.
    #[error("key data is a `{inner}` key but the line says `{outer}`")]
    TypeMismatch {
        /// Type written on the line.
        outer: String,
        /// Type embedded in the key data.
        inner: String,
    },
    /// An RSA key below [`RSA_MIN_BITS`].
    #[error("RSA key of {0} bits is too weak (at least 2048 bits)")]
    WeakRsa(usize),
    /// `~` used but HOME unset.
    #[error("cannot expand `~` in {0}: HOME is not set")]
    NoHome(String),
    /// A key file could not be read.
    #[error("cannot read {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key in a file is bad.
    #[error("{path} line {line}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with it.
        source: Box<KeyError>,
    },
    /// A key file listed in `access.ssh_key_files` cannot be read (missing,
    /// unreadable): `build` and `flash` refuse, `validate` and `plan` warn.
    #[error("access.ssh_key_files[{index}]: cannot read {}: {reason}; {KEY_FILE_HINT}", .path.display())]
    KeyFile {
        /// Its index in `access.ssh_key_files`.
        index: usize,
        /// The file, `~` expanded.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file holds no key.
    #[error("{0} holds no public key")]
    EmptyFile(PathBuf),
    /// Fetching a GitHub user's keys failed.
    #[error("cannot fetch SSH keys of GitHub user `{user}` from {url}: {reason}")]
    Fetch {
        /// GitHub user.
        user: String,
        /// URL tried.
        url: String,
        /// Why.
        reason: String,
    },
    /// A GitHub user has no usable keys.
    #[error("GitHub user `{user}` has no usable SSH keys at {url}")]
    NoGithubKeys {
        /// GitHub user.
        user: String,
        /// URL tried.
        url: String,
    },
    /// No key at all after resolving every source.
    #[error("no SSH key: add one to access.ssh_keys, access.ssh_key_files or access.github_users")]
    None,
    /// `--offline` with keys only from `github_users`, which need the network.
    #[error(
        "no SSH key without the network: access.github_users' keys are fetched at build time, which --offline does not do; add access.ssh_keys or access.ssh_key_files, or build without --offline"
    )]
    OfflineGithubOnly,
    /// The reference profile's placeholder key: nobody holds its private half.
    #[error(
        "access.ssh_keys[{0}] is the reference profile's placeholder key (comment {PLACEHOLDER_MARK}…): nobody can log in with it; replace it with your public key, e.g. ssh_key_files = [\"~/.ssh/id_ed25519.pub\"]"
    )]
    Placeholder(usize),
}

/// How to get a key file that cannot be read, or to do without it.
pub const KEY_FILE_HINT: &str = "`ssh-keygen -t ed25519` creates ~/.ssh/id_ed25519.pub; or list another key file, an inline key (ssh_keys) or github_users in [access]";

/// What marks a key line as a placeholder to replace: its comment starts with this
/// (older copies of profiles/homelab.toml carry `… REPLACE-ME-placeholder@piimg`).
pub const PLACEHOLDER_MARK: &str = "REPLACE-ME";

/// True when `line`'s comment marks it as a placeholder ([`PLACEHOLDER_MARK`]).
pub fn is_placeholder(line: &str) -> bool {
    line.split_whitespace()
        .nth(2)
        .is_some_and(|c| c.starts_with(PLACEHOLDER_MARK))
}

/// Refuses a profile whose inline keys include a placeholder ([`is_placeholder`]).
pub fn no_placeholder(profile: &Profile) -> Result<(), KeyError> {
    match profile
        .access
        .ssh_keys
        .iter()
        .position(|l| is_placeholder(l))
    {
        Some(i) => Err(KeyError::Placeholder(i)),
        None => Ok(()),
    }
}

/// The keys a card may be built with: none of the inline keys is a placeholder, and
/// `keys` (resolved from `sources`) is not empty.
pub fn for_card(
    profile: &Profile,
    keys: Vec<String>,
    sources: KeySources,
) -> Result<Vec<String>, KeyError> {
    no_placeholder(profile)?;
    if keys.is_empty() {
        return Err(
            if sources == KeySources::Local && !profile.access.github_users.is_empty() {
                KeyError::OfflineGithubOnly
            } else {
                KeyError::None
            },
        );
    }
    Ok(keys)
}

/// A checked OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Key type, e.g. `ssh-ed25519`.
    pub kind: String,
    /// The normalised line: `TYPE BASE64 [COMMENT]` with single spaces.
    pub line: String,
}

/// Parses and checks one authorized_keys line (no options prefix).
pub fn parse_key_line(line: &str) -> Result<PublicKey, KeyError> {
    let line = line.trim();
    if line.contains("PRIVATE KEY") {
        return Err(KeyError::Private);
    }
    let mut parts = line.split_whitespace();
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return Err(KeyError::Shape);
    };
    let comment: Vec<&str> = parts.collect();
    if !KEY_TYPES.contains(&kind) {
        if kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-") {
            return Err(KeyError::Type(kind.to_string()));
        }
        return Err(KeyError::Shape);
    }
    let blob = base64_decode(data).ok_or(KeyError::Base64)?;
    check_blob(kind, &blob)?;
    let mut out = format!("{kind} {data}");
    if !comment.is_empty() {
        out.push(' ');
        out.push_str(&comment.join(" "));
    }
    Ok(PublicKey {
        kind: kind.to_string(),
        line: out,
    })
}

/// Checks the wire-format key data against the declared type.
fn check_blob(kind: &str, blob: &[u8]) -> Result<(), KeyError> {
    let bad = || KeyError::Malformed(kind.to_string());
    let mut r = Wire(blob);
    let inner = r.string().ok_or_else(bad)?;
    let inner = String::from_utf8_lossy(inner).into_owned();
    if inner != kind {
        return Err(KeyError::TypeMismatch {
            outer: kind.to_string(),
            inner,
        });
    }
    match kind {
        "ssh-ed25519" | "sk-ssh-ed25519@openssh.com" => {
            if r.string().ok_or_else(bad)?.len() != 32 {
                return Err(bad());
            }
        }
        "ssh-rsa" => {
            let _e = r.string().ok_or_else(bad)?;
            let n = r.string().ok_or_else(bad)?;
            let n: Vec<u8> = n.iter().copied().skip_while(|b| *b == 0).collect();
            let bits = n
                .first()
                .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
            if bits < RSA_MIN_BITS {
                return Err(KeyError::WeakRsa(bits));
            }
        }
        _ => {
            // ecdsa-sha2-<curve>[@…]: curve name, then the point.
            let curve = r.string().ok_or_else(bad)?;
            let want = kind
                .trim_start_matches("sk-")
                .trim_start_matches("ecdsa-sha2-")
                .split('@')
                .next()
                .unwrap_or_default();
            if curve != want.as_bytes() || r.string().ok_or_else(bad)?.is_empty() {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// Reader of SSH wire-format length-prefixed strings.
struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    fn string(&mut self) -> Option<&'a [u8]> {
        let len = u32::from_be_bytes(self.0.get(..4)?.try_into().ok()?) as usize;
        let s = self.0.get(4..4 + len)?;
        self.0 = &self.0[4 + len..];
        Some(s)
    }
}

/// Decodes standard base64 (with optional `=` padding).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

/// Expands a leading `~` to `$HOME`; relative paths are taken relative to `base`.
pub fn expand_path(path: &str, base: &Path) -> Result<PathBuf, KeyError> {
    let home = || {
        std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| KeyError::NoHome(path.to_string()))
    };
    if path == "~" {
        return home();
    }
    if let Some(rest) = path.strip_prefix("~/") {
        return Ok(home()?.join(rest));
    }
    let p = Path::new(path);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    })
}

/// Reads every key of a public-key file (blank lines and `#` comments skipped).
pub fn read_key_file(path: &Path) -> Result<Vec<PublicKey>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|e| KeyError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let keys = parse_key_lines(&text).map_err(|(line, e)| KeyError::InFile {
        path: path.to_path_buf(),
        line,
        source: Box::new(e),
    })?;
    if keys.is_empty() {
        return Err(KeyError::EmptyFile(path.to_path_buf()));
    }
    Ok(keys)
}

/// Parses several key lines; an error carries the 1-based line number.
fn parse_key_lines(text: &str) -> Result<Vec<PublicKey>, (usize, KeyError)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| parse_key_line(l).map_err(|e| (i + 1, e)))
        .collect()
}

/// The URL GitHub serves `user`'s public keys at (honouring [`GITHUB_KEYS_URL_ENV`]).
pub fn github_keys_url(user: &str) -> String {
    let base = std::env::var(GITHUB_KEYS_URL_ENV)
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| GITHUB_KEYS_URL.to_string());
    format!("{}/{user}.keys", base.trim_end_matches('/'))
}

/// Fetches `user`'s public keys from GitHub (or [`GITHUB_KEYS_URL_ENV`]); each line
/// without a comment gets the comment `github:<user>`. Lines that are not valid keys
/// are skipped; none left is an error.
pub fn fetch_github_keys(user: &str) -> Result<Vec<PublicKey>, KeyError> {
    fetch_keys_from(&github_keys_url(user), user)
}

/// Fetches `user`'s public keys from `url` (see [`fetch_github_keys`]).
pub fn fetch_keys_from(url: &str, user: &str) -> Result<Vec<PublicKey>, KeyError> {
    let url = url.to_string();
    let fail = |reason: String| KeyError::Fetch {
        user: user.to_string(),
        url: url.clone(),
        reason,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let resp = client.get(&url).send().map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let mut body = String::new();
    resp.take(1 << 20)
        .read_to_string(&mut body)
        .map_err(|e| fail(e.to_string()))?;
    let keys: Vec<PublicKey> = body
        .lines()
        .filter_map(|l| parse_key_line(l).ok())
        .map(|mut k| {
            if k.line.split_whitespace().count() == 2 {
                k.line = format!("{} github:{user}", k.line);
            }
            k
        })
        .collect();
    if keys.is_empty() {
        return Err(KeyError::NoGithubKeys {
            user: user.to_string(),
            url,
        });
    }
    Ok(keys)
}

/// Where resolved keys may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySources {
    /// Inline keys and key files only (no network).
    Local,
    /// Also fetch GitHub users' keys.
    All,
}

/// The keys of `access.ssh_key_files[index]` (`~` expanded, relative to the
/// profile); a file that cannot be read is a [`KeyError::KeyFile`].
pub fn read_listed_file(profile: &Profile, index: usize) -> Result<Vec<PublicKey>, KeyError> {
    let Some(file) = profile.access.ssh_key_files.get(index) else {
        return Ok(Vec::new());
    };
    read_key_file(&expand_path(file, profile.base_dir())?).map_err(|e| match e {
        KeyError::File { path, reason } => KeyError::KeyFile {
            index,
            path,
            reason,
        },
        other => other,
    })
}

/// Every key of the profile's `[access]`, checked and de-duplicated, in order:
/// inline, files, then GitHub users (only with [`KeySources::All`]).
pub fn resolve(profile: &Profile, sources: KeySources) -> Result<Vec<String>, KeyError> {
    resolve_with(profile, sources, false)
}

/// Like [`resolve`], but a key file that cannot be read ([`KeyError::KeyFile`]) is
/// left out, and no key at all is no error when one was: what `validate` and
/// `plan` use, which only warn about such a file.
pub fn resolve_readable(profile: &Profile, sources: KeySources) -> Result<Vec<String>, KeyError> {
    resolve_with(profile, sources, true)
}

fn resolve_with(
    profile: &Profile,
    sources: KeySources,
    skip_unreadable: bool,
) -> Result<Vec<String>, KeyError> {
    let access: &Access = &profile.access;
    let mut out: Vec<String> = Vec::new();
    let mut push = |k: PublicKey| {
        let body = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        if !out.iter().any(|o| body(o) == body(&k.line)) {
            out.push(k.line);
        }
    };
    for line in &access.ssh_keys {
        push(parse_key_line(line)?);
    }
    let mut skipped = false;
    for index in 0..access.ssh_key_files.len() {
        match read_listed_file(profile, index) {
            Ok(keys) => keys.into_iter().for_each(&mut push),
            Err(KeyError::KeyFile { .. }) if skip_unreadable => skipped = true,
            Err(e) => return Err(e),
        }
    }
    if sources == KeySources::All {
        for user in &access.github_users {
            for k in fetch_github_keys(user)? {
                push(k);
            }
        }
    }
    if out.is_empty() && !skipped && (sources == KeySources::All || access.github_users.is_empty())
    {
        return Err(KeyError::None);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 user@host";

    #[test]
    fn accepts_a_real_ed25519_line() {
        let k = parse_key_line(ED).unwrap();
        assert_eq!(k.kind, "ssh-ed25519");
        assert_eq!(k.line, ED);
    }

    #[test]
    fn rejects_type_mismatch_and_garbage() {
        let swapped = ED.replacen("ssh-ed25519", "ssh-rsa", 1);
        assert_eq!(
            parse_key_line(&swapped).unwrap_err(),
            KeyError::TypeMismatch {
                outer: "ssh-rsa".into(),
                inner: "ssh-ed25519".into()
            }
        );
        assert_eq!(
            parse_key_line("ssh-ed25519 !!!!").unwrap_err(),
            KeyError::Base64
        );
        assert_eq!(parse_key_line("hello").unwrap_err(), KeyError::Shape);
        assert_eq!(
            parse_key_line("ssh-dss AAAA").unwrap_err(),
            KeyError::Type("ssh-dss".into())
        );
        assert_eq!(
            parse_key_line("-----BEGIN OPENSSH PRIVATE KEY-----").unwrap_err(),
            KeyError::Private
        );
        // Valid base64, but too short for an ed25519 key.
        assert_eq!(
            parse_key_line("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAAQ==").unwrap_err(),
            KeyError::Malformed("ssh-ed25519".into())
        );
    }

    #[test]
    fn base64_round_trips_known_vectors() {
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert!(base64_decode("T").is_none());
    }

    #[test]
    fn tilde_expands_to_home_and_relative_to_base() {
        let base = Path::new("/profiles");
        assert_eq!(expand_path("/k.pub", base).unwrap(), Path::new("/k.pub"));
        assert_eq!(
            expand_path("k.pub", base).unwrap(),
            Path::new("/profiles/k.pub")
        );
    }
}
