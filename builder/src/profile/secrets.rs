//! Cluster secrets, kept apart from the profile, and the cluster's issuance record.
//!
//! Next to `profiles/homelab.toml` live:
//! - `homelab.secrets/` (mode 0700, git-ignored): `k3s-token` (0600), the server
//!   token; `k3s-agent-token` (0600), the token worker cards carry instead (k3s's
//!   `agent-token`: with it a node can join as an agent only, never as a server, and
//!   cannot read the bootstrap data); and, added by other modules through [`ClusterSecrets::write_secret_file`], CA material. It
//!   also keeps a copy of the state below.
//! - `homelab.state.toml` (not secret, meant to be committed): cluster id, the
//!   token's SHA-256 fingerprint, which nodes' cards were issued and whether the
//!   bootstrap server's card was. It is how a fresh clone without the secrets
//!   knows the cluster already exists and refuses to mint a new token.

use crate::atomic;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The token secret's file inside the secrets directory.
pub const TOKEN_FILE: &str = "k3s-token";
/// The agent token's file inside the secrets directory. Clusters created before it
/// existed have none: their workers keep using the server token (see
/// [`ClusterSecrets::agent_token_secret`]).
pub const AGENT_TOKEN_FILE: &str = "k3s-agent-token";
/// The S3 access key for `[k3s.etcd_s3]` inside the secrets directory (written by
/// the user, 0600).
pub const ETCD_S3_ACCESS_KEY_FILE: &str = "etcd-s3-access-key";
/// The S3 secret key for `[k3s.etcd_s3]` inside the secrets directory (0600).
pub const ETCD_S3_SECRET_KEY_FILE: &str = "etcd-s3-secret-key";
/// The copy of the cluster state inside the secrets directory.
pub const STATE_COPY_FILE: &str = "state.toml";
/// Where the token lives on every k3s server (the way back when the secrets are lost).
pub const SERVER_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";

/// Secrets directory of the profile at `profile_path` (`homelab.toml` → `homelab.secrets`).
pub fn secrets_dir(profile_path: &Path) -> PathBuf {
    sibling(profile_path, "secrets")
}

/// Lock file of the profile at `profile_path` (`homelab.toml` → `homelab.secrets.lock`):
/// held while secrets are created and while the issuance record is updated.
pub fn lock_path(profile_path: &Path) -> PathBuf {
    sibling(profile_path, "secrets.lock")
}

/// Exclusive hold on a cluster's secrets (see [`lock`]); released when dropped, or by
/// the kernel when the process dies.
#[derive(Debug)]
pub struct SecretsLock {
    _lock: crate::fetch::lock::Lock,
}

/// Takes the lock of the profile at `profile_path`, so that concurrent first builds
/// create the secrets once and then all use them. Calls `on_wait` with the lock's
/// path first when another piimg process holds it, then waits.
pub fn lock(profile_path: &Path, on_wait: impl FnOnce(&Path)) -> Result<SecretsLock, SecretsError> {
    use crate::fetch::lock::Lock;
    let path = lock_path(profile_path);
    let held = match Lock::try_acquire(&path).map_err(io_err(&path))? {
        Some(l) => l,
        None => {
            on_wait(&path);
            Lock::acquire(&path).map_err(io_err(&path))?
        }
    };
    Ok(SecretsLock { _lock: held })
}

/// State file of the profile at `profile_path` (`homelab.toml` → `homelab.state.toml`).
pub fn state_path(profile_path: &Path) -> PathBuf {
    sibling(profile_path, "state.toml")
}

fn sibling(profile_path: &Path, ext: &str) -> PathBuf {
    let stem = profile_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "profile".to_string());
    let name = format!("{stem}.{ext}");
    match profile_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(name),
        _ => PathBuf::from(name),
    }
}

/// Why the secrets could not be opened or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A secret file or the directory is open to other users.
    #[error("{path} is accessible by other users (mode {mode:04o}); run `chmod {want:o} {path}`")]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// The mode it should have.
        want: u32,
    },
    /// The secrets directory exists but has no token file.
    #[error(
        "{path} is missing: restore it from your backup, or copy {SERVER_TOKEN_PATH} from any server of the cluster into it (mode 0600)"
    )]
    NoToken {
        /// The token file.
        path: PathBuf,
    },
    /// The token file holds no usable token.
    #[error(
        "{path} does not hold a k3s token (expected the token secret, or the `K10…::server:…` token copied from a server's {SERVER_TOKEN_PATH})"
    )]
    BadToken {
        /// The token file.
        path: PathBuf,
    },
    /// The cluster has an agent token (the state records its fingerprint) but the
    /// secrets directory lost it: server cards without it would reset the password
    /// every worker presents.
    #[error(
        "{path} is missing, but {state} records that this cluster has an agent token (fingerprint {recorded}): \
         copy the `agent-token:` value from /etc/rancher/k3s/config.yaml on any server into {path} (mode 0600)"
    )]
    NoAgentToken {
        /// The agent token file.
        path: PathBuf,
        /// The state file.
        state: PathBuf,
        /// The fingerprint the state records.
        recorded: String,
    },
    /// The agent token file is not the one the state records.
    #[error(
        "{path} does not match the agent token recorded in {state} (fingerprint {found} ≠ {recorded}): \
         restore the right file (the `agent-token:` value in /etc/rancher/k3s/config.yaml on any server)"
    )]
    AgentTokenMismatch {
        /// The agent token file.
        path: PathBuf,
        /// The state file.
        state: PathBuf,
        /// Fingerprint of the file.
        found: String,
        /// Fingerprint the state records.
        recorded: String,
    },
    /// `[k3s.etcd_s3]` is set but a credential file is missing or empty.
    #[error(
        "{path} is missing or empty, but the profile has [k3s.etcd_s3]: write the bucket's {what} into it \
         (one line, mode 0600; `{ETCD_S3_ACCESS_KEY_FILE}` and `{ETCD_S3_SECRET_KEY_FILE}` live beside the k3s token), \
         or remove [k3s.etcd_s3]"
    )]
    NoEtcdS3Credential {
        /// The credential file.
        path: PathBuf,
        /// `access key` or `secret key`.
        what: &'static str,
    },
    /// A credential file holds more than one line or whitespace inside the key.
    #[error("{path}: not a single key (whitespace inside); write the {what} alone on one line")]
    BadEtcdS3Credential {
        /// The credential file.
        path: PathBuf,
        /// `access key` or `secret key`.
        what: &'static str,
    },
    /// A state file cannot be parsed.
    #[error("{path}: {message}")]
    BadState {
        /// The state file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// The secrets are gone but the cluster exists.
    #[error(
        "the secrets directory {dir} is missing, but {state} records that cluster `{cluster}` exists (cards issued: {issued}). \
         Restore {dir} from your backup, or recover the token: create {dir} (mode 0700) and copy {SERVER_TOKEN_PATH} \
         from any server into {dir}/{TOKEN_FILE} (mode 0600) and, if the servers' /etc/rancher/k3s/config.yaml has `agent-token:`, \
         its value into {dir}/{AGENT_TOKEN_FILE} (mode 0600). Only to really start a new cluster (every node re-flashed) pass --new-cluster"
    )]
    Missing {
        /// The missing secrets directory.
        dir: PathBuf,
        /// The state file that says the cluster exists.
        state: PathBuf,
        /// Cluster id from the state.
        cluster: String,
        /// Nodes whose cards were issued, comma-separated.
        issued: String,
    },
    /// The secrets belong to a different cluster than the state file records.
    #[error(
        "the token in {dir} does not match the cluster recorded in {state} (fingerprint {found} ≠ {recorded}): \
         these secrets belong to another cluster. Restore the right secrets directory, or pass --new-cluster to start over"
    )]
    Mismatch {
        /// Secrets directory.
        dir: PathBuf,
        /// State file.
        state: PathBuf,
        /// Fingerprint of the token found.
        found: String,
        /// Fingerprint the state records.
        recorded: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SecretsError + '_ {
    move |source| SecretsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cluster's non-secret record: identity and which cards were issued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    /// Random id of this cluster, fixed when its secrets were created.
    pub cluster_id: String,
    /// SHA-256 (hex) of the token secret, to tell clusters apart without the secret.
    pub token_sha256: String,
    /// SHA-256 (hex) of the agent token secret, when the cluster has one (cards
    /// built before it was added to the secrets are then stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token_sha256: Option<String>,
    /// True once the bootstrap server's card has been issued: from then on no card
    /// may initialise a cluster.
    #[serde(default)]
    pub bootstrap_issued: bool,
    /// When the bootstrap server's first card was issued (RFC 3339, UTC); absent in
    /// records written before piimg kept it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_issued_at: Option<String>,
    /// Nodes whose cards were issued.
    #[serde(default)]
    pub issued: BTreeSet<String>,
}

impl ClusterState {
    /// True once any card was issued (a cluster may be running with this token).
    pub fn cluster_exists(&self) -> bool {
        self.bootstrap_issued || !self.issued.is_empty()
    }

    fn merge(&mut self, other: &ClusterState) {
        self.bootstrap_issued |= other.bootstrap_issued;
        // The earliest record wins: it is the first card's date.
        match (&self.bootstrap_issued_at, &other.bootstrap_issued_at) {
            (Some(a), Some(b)) if b < a => self.bootstrap_issued_at = Some(b.clone()),
            (None, Some(b)) => self.bootstrap_issued_at = Some(b.clone()),
            _ => {}
        }
        self.issued.extend(other.issued.iter().cloned());
        if self.cluster_id.is_empty() {
            self.cluster_id = other.cluster_id.clone();
        }
    }
}

const STATE_HEADER: &str = "# piimg cluster state: not secret, safe (and useful) to commit.\n\
# It records that this cluster exists and which cards were issued, so a checkout\n\
# without the secrets directory refuses to mint a new token. Written by piimg.\n";

fn read_state(path: &Path) -> Result<Option<ClusterState>, SecretsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| SecretsError::BadState {
                path: path.to_path_buf(),
                message: e.message().to_string(),
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn state_text(state: &ClusterState) -> String {
    // Serialising this plain struct cannot fail.
    format!(
        "{STATE_HEADER}{}",
        toml::to_string(state).unwrap_or_default()
    )
}

/// The cluster state as recorded next to the profile at `profile_path` (merged with
/// the copy in its secrets directory, if readable), without creating or changing
/// anything; `None` when no cluster was ever set up for this profile.
pub fn peek_state(profile_path: &Path) -> Result<Option<ClusterState>, SecretsError> {
    let public = read_state(&state_path(profile_path))?;
    let copy = read_state(&secrets_dir(profile_path).join(STATE_COPY_FILE)).unwrap_or(None);
    Ok(match (public, copy) {
        (Some(mut a), Some(b)) => {
            a.merge(&b);
            Some(a)
        }
        (a, b) => a.or(b),
    })
}

/// How to open the secrets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecretsOptions {
    /// Start a new cluster: move existing secrets aside (`NAME.old-<time>.secrets/`)
    /// and create fresh ones, forgetting which cards were issued.
    pub new_cluster: bool,
}

/// The cluster's secrets and issuance state, opened from the directory next to a profile.
#[derive(Debug)]
pub struct ClusterSecrets {
    profile_path: PathBuf,
    dir: PathBuf,
    state_path: PathBuf,
    token: String,
    agent_token: Option<String>,
    state: ClusterState,
    created: bool,
    moved_aside: Option<PathBuf>,
}

/// `n` random bytes from the OS, hex-encoded.
fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex::encode(buf))
}

/// SHA-256 fingerprint (hex) of a token secret.
pub fn fingerprint(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The secret part of a token file: the bare secret, or the part after
/// `::server:` of a full `K10<hash>::server:<secret>` token. `(secret, was_full)`.
pub(crate) fn parse_token(text: &str) -> Option<(String, bool)> {
    let t = text.trim();
    let (secret, full) = match t.split_once("::") {
        Some((_, rest)) => (rest.split_once(':').map(|(_, s)| s)?, true),
        None => (t, false),
    };
    let ok = !secret.is_empty() && secret.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    ok.then(|| (secret.to_string(), full))
}

fn check_mode(path: &Path, want: u32) -> Result<(), SecretsError> {
    let mode = std::fs::metadata(path)
        .map_err(io_err(path))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Permissions {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

impl ClusterSecrets {
    /// Opens the secrets of the profile at `profile_path`, creating them (new random
    /// token from the OS RNG) only when no cluster exists yet.
    ///
    /// Errors when the secrets directory is missing but the state file says cards
    /// were issued ([`SecretsError::Missing`]), or when they disagree.
    pub fn open_or_create(profile_path: &Path, opts: SecretsOptions) -> Result<Self, SecretsError> {
        let dir = secrets_dir(profile_path);
        let state_path = state_path(profile_path);
        let mut moved_aside = None;
        if opts.new_cluster && dir.exists() {
            let aside = sibling(profile_path, &format!("old-{}.secrets", unix_time()));
            std::fs::rename(&dir, &aside).map_err(io_err(&dir))?;
            moved_aside = Some(aside);
        }
        let public = if opts.new_cluster {
            None
        } else {
            read_state(&state_path)?
        };
        let mut secrets = if dir.exists() {
            Self::open(profile_path, dir, state_path, public)?
        } else {
            if let Some(state) = public.as_ref().filter(|s| s.cluster_exists()) {
                return Err(SecretsError::Missing {
                    dir,
                    state: state_path,
                    cluster: state.cluster_id.clone(),
                    issued: state.issued.iter().cloned().collect::<Vec<_>>().join(", "),
                });
            }
            Self::create(profile_path, dir, state_path)?
        };
        secrets.moved_aside = moved_aside;
        Ok(secrets)
    }

    fn open(
        profile_path: &Path,
        dir: PathBuf,
        state_path: PathBuf,
        public: Option<ClusterState>,
    ) -> Result<Self, SecretsError> {
        check_mode(&dir, 0o700)?;
        let token_path = dir.join(TOKEN_FILE);
        if !token_path.exists() {
            return Err(SecretsError::NoToken { path: token_path });
        }
        check_mode(&token_path, 0o600)?;
        let text = std::fs::read_to_string(&token_path).map_err(io_err(&token_path))?;
        let (token, was_full) = parse_token(&text).ok_or_else(|| SecretsError::BadToken {
            path: token_path.clone(),
        })?;
        let found = fingerprint(&token);
        let copy = read_state(&dir.join(STATE_COPY_FILE))?;
        for s in [&public, &copy].into_iter().flatten() {
            if !s.token_sha256.is_empty() && s.token_sha256 != found {
                return Err(SecretsError::Mismatch {
                    dir,
                    state: state_path,
                    found,
                    recorded: s.token_sha256.clone(),
                });
            }
        }
        let mut state = ClusterState::default();
        for s in [&public, &copy].into_iter().flatten() {
            state.merge(s);
        }
        if public.is_none() && copy.is_none() && was_full {
            // A token copied from a running server: that cluster was brought up.
            state.bootstrap_issued = true;
        }
        if state.cluster_id.is_empty() {
            state.cluster_id = random_hex(8).map_err(io_err(Path::new("/dev/urandom")))?;
        }
        state.token_sha256 = found;
        let agent_path = dir.join(AGENT_TOKEN_FILE);
        let recorded_agent = [&public, &copy]
            .into_iter()
            .flatten()
            .find_map(|s| s.agent_token_sha256.clone());
        let agent_token = if agent_path.exists() {
            check_mode(&agent_path, 0o600)?;
            let text = std::fs::read_to_string(&agent_path).map_err(io_err(&agent_path))?;
            let (secret, _) = parse_token(&text).ok_or_else(|| SecretsError::BadToken {
                path: agent_path.clone(),
            })?;
            let found = fingerprint(&secret);
            if let Some(recorded) = recorded_agent.filter(|r| *r != found) {
                return Err(SecretsError::AgentTokenMismatch {
                    path: agent_path,
                    state: state_path,
                    found,
                    recorded,
                });
            }
            Some(secret)
        } else if let Some(recorded) = recorded_agent.filter(|_| state.cluster_exists()) {
            return Err(SecretsError::NoAgentToken {
                path: agent_path,
                state: state_path,
                recorded,
            });
        } else if !state.cluster_exists() {
            // No card was issued yet: no server runs without an agent token, so one
            // can still be added safely.
            let secret = random_hex(32).map_err(io_err(Path::new("/dev/urandom")))?;
            atomic::write_new(&agent_path, secret.as_bytes(), 0o600)
                .map_err(io_err(&agent_path))?;
            Some(secret)
        } else {
            None
        };
        state.agent_token_sha256 = agent_token.as_deref().map(fingerprint);
        let me = Self {
            profile_path: profile_path.to_path_buf(),
            dir,
            state_path,
            token,
            agent_token,
            state,
            created: false,
            moved_aside: None,
        };
        // Bring both copies of the state up to date (e.g. after a restore); the token
        // file itself is left exactly as the user put it.
        if public.as_ref() != Some(&me.state) || copy.as_ref() != Some(&me.state) {
            me.save()?;
        }
        Ok(me)
    }

    fn create(
        profile_path: &Path,
        dir: PathBuf,
        state_path: PathBuf,
    ) -> Result<Self, SecretsError> {
        let urandom = Path::new("/dev/urandom");
        let token = random_hex(32).map_err(io_err(urandom))?;
        let agent_token = random_hex(32).map_err(io_err(urandom))?;
        let state = ClusterState {
            cluster_id: random_hex(8).map_err(io_err(urandom))?,
            token_sha256: fingerprint(&token),
            agent_token_sha256: Some(fingerprint(&agent_token)),
            ..ClusterState::default()
        };
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Build the directory under a temporary name, then rename it into place:
        // the secrets appear whole or not at all.
        // The `.secrets` suffix keeps even a crash leftover under `*.secrets/` in .gitignore.
        let tmp = tempfile::Builder::new()
            .prefix(".piimg-")
            .suffix(".tmp.secrets")
            .tempdir_in(&parent)
            .map_err(io_err(&parent))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(tmp.path()))?;
        let token_path = tmp.path().join(TOKEN_FILE);
        atomic::write_new(&token_path, token.as_bytes(), 0o600).map_err(io_err(&token_path))?;
        let agent_path = tmp.path().join(AGENT_TOKEN_FILE);
        atomic::write_new(&agent_path, agent_token.as_bytes(), 0o600)
            .map_err(io_err(&agent_path))?;
        let copy_path = tmp.path().join(STATE_COPY_FILE);
        atomic::write_new(&copy_path, state_text(&state).as_bytes(), 0o600)
            .map_err(io_err(&copy_path))?;
        std::fs::rename(tmp.path(), &dir).map_err(io_err(&dir))?;
        let _ = tmp.keep();
        atomic::sync_dir(&parent).map_err(io_err(&parent))?;
        atomic::write_atomic(&state_path, state_text(&state).as_bytes(), 0o644)
            .map_err(io_err(&state_path))?;
        Ok(Self {
            profile_path: profile_path.to_path_buf(),
            dir,
            state_path,
            token,
            agent_token: Some(agent_token),
            state,
            created: true,
            moved_aside: None,
        })
    }

    /// The k3s token secret (the `<secret>` of `K10<ca-hash>::server:<secret>`).
    pub fn token_secret(&self) -> &str {
        &self.token
    }

    /// The agent token secret (the `<secret>` of `K10<ca-hash>::node:<secret>`), or
    /// `None` for a cluster created before piimg made one: its servers run without
    /// `agent-token`, so k3s's node password is the server token's and workers must
    /// keep carrying the server token (adding an agent token to one rebuilt server
    /// would change the password every running worker uses).
    pub fn agent_token_secret(&self) -> Option<&str> {
        self.agent_token.as_deref()
    }

    /// The secrets directory (0700). Other modules keep their material here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The public state file next to the profile.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The cluster's issuance record.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> &str {
        &self.state.cluster_id
    }

    /// True if this call created the secrets (a new cluster).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Where `--new-cluster` moved the previous secrets, if it did.
    pub fn moved_aside(&self) -> Option<&Path> {
        self.moved_aside.as_deref()
    }

    /// True once the bootstrap server's card was issued: no card may initialise anymore.
    pub fn bootstrap_issued(&self) -> bool {
        self.state.bootstrap_issued
    }

    /// True if `node`'s card was issued before.
    pub fn issued(&self, node: &str) -> bool {
        self.state.issued.contains(node)
    }

    /// Records that `node`'s card was issued (call after its image is complete);
    /// `bootstrap` marks the bootstrap server's card. Persisted at once.
    /// Concurrent builds of the same cluster each add their nodes: the record is
    /// re-read and merged under the cluster's [`lock`].
    pub fn mark_issued(&mut self, node: &str, bootstrap: bool) -> Result<(), SecretsError> {
        let changed = self.state.issued.insert(node.to_string())
            | (bootstrap && !self.state.bootstrap_issued);
        self.state.bootstrap_issued |= bootstrap;
        if bootstrap && self.state.bootstrap_issued_at.is_none() {
            self.state.bootstrap_issued_at = Some(crate::date::rfc3339_now());
        }
        if changed {
            let _held = lock(&self.profile_path, |_| {})?;
            let on_disk = [
                read_state(&self.state_path)?,
                read_state(&self.dir.join(STATE_COPY_FILE))?,
            ];
            for s in on_disk.iter().flatten() {
                if s.token_sha256 == self.state.token_sha256 {
                    self.state.merge(s);
                }
            }
            self.save()?;
        }
        Ok(())
    }

    /// Reads a file from the secrets directory (`None` if absent).
    pub fn read_secret_file(&self, name: &str) -> Result<Option<Vec<u8>>, SecretsError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => {
                check_mode(&path, 0o600)?;
                Ok(Some(b))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// The S3 credentials `[k3s.etcd_s3]` needs, read from
    /// [`ETCD_S3_ACCESS_KEY_FILE`] and [`ETCD_S3_SECRET_KEY_FILE`] (0600, one line each).
    pub fn etcd_s3_credentials(&self) -> Result<S3Credentials, SecretsError> {
        let read = |name: &str, what: &'static str| -> Result<String, SecretsError> {
            let path = self.dir.join(name);
            let text = self
                .read_secret_file(name)?
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            if text.is_empty() {
                return Err(SecretsError::NoEtcdS3Credential { path, what });
            }
            if text.contains(char::is_whitespace) {
                return Err(SecretsError::BadEtcdS3Credential { path, what });
            }
            Ok(text)
        };
        Ok(S3Credentials {
            access_key: read(ETCD_S3_ACCESS_KEY_FILE, "access key")?,
            secret_key: read(ETCD_S3_SECRET_KEY_FILE, "secret key")?,
        })
    }

    /// Writes a file into the secrets directory atomically with mode 0600
    /// (`name` may contain subdirectories, created 0700).
    pub fn write_secret_file(&self, name: &str, bytes: &[u8]) -> Result<(), SecretsError> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err(parent))?;
            }
        }
        atomic::write_atomic(&path, bytes, 0o600).map_err(io_err(&path))
    }

    fn save(&self) -> Result<(), SecretsError> {
        let text = state_text(&self.state);
        let copy = self.dir.join(STATE_COPY_FILE);
        atomic::write_atomic(&copy, text.as_bytes(), 0o600).map_err(io_err(&copy))?;
        atomic::write_atomic(&self.state_path, text.as_bytes(), 0o644)
            .map_err(io_err(&self.state_path))
    }
}

/// The S3 access and secret key of `[k3s.etcd_s3]`: only server cards carry them,
/// in a 0600 k3s config drop-in that the agent scrubs from the boot partition.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// `etcd-s3-access-key`.
    pub access_key: String,
    /// `etcd-s3-secret-key`.
    pub secret_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Seconds since the epoch (for naming moved-aside secrets).
fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_accepts_bare_and_full_tokens() {
        assert_eq!(parse_token("abc123\n"), Some(("abc123".into(), false)));
        assert_eq!(
            parse_token("K10deadbeef::server:s3cret\n"),
            Some(("s3cret".into(), true))
        );
        assert_eq!(parse_token("   \n"), None);
        assert_eq!(parse_token("K10x::nouser"), None);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn a_new_cluster_gets_an_agent_token_an_issued_one_never_gains_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let profile = tmp.path().join("lab.toml");
        let s =
            ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("create");
        let agent = s.agent_token_secret().expect("agent token").to_string();
        assert_eq!(agent.len(), 64);
        assert_ne!(agent, s.token_secret());
        let file = tmp.path().join("lab.secrets").join(AGENT_TOKEN_FILE);
        assert_eq!(std::fs::read_to_string(&file).expect("agent file"), agent);
        assert_eq!(mode(&file), 0o600);
        drop(s);
        // Reopened: the same.
        let s = ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("open");
        assert_eq!(s.agent_token_secret(), Some(agent.as_str()));
        // Secrets from before agent tokens, no card issued yet: one is added.
        std::fs::remove_file(&file).expect("rm");
        let again =
            ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("open");
        let added = again.agent_token_secret().expect("added").to_string();
        assert_ne!(added, agent);
        assert_eq!(mode(&file), 0o600);
        drop(again);
        // Once a card was issued, a lost agent token is an error naming the way back
        // (the state recorded it), and a different one is refused.
        drop(s);
        ClusterSecrets::open_or_create(&profile, SecretsOptions::default())
            .expect("open")
            .mark_issued("w1", false)
            .expect("mark");
        let kept = std::fs::read_to_string(&file).expect("agent file");
        std::fs::remove_file(&file).expect("rm");
        let err = ClusterSecrets::open_or_create(&profile, SecretsOptions::default())
            .expect_err("lost agent token");
        assert!(
            err.to_string()
                .contains("records that this cluster has an agent token")
                && err
                    .to_string()
                    .contains("copy the `agent-token:` value from /etc/rancher/k3s/config.yaml"),
            "{err}"
        );
        assert!(!file.exists(), "never replaced by a new one");
        crate::atomic::write_new(&file, b"another", 0o600).expect("write");
        let err = ClusterSecrets::open_or_create(&profile, SecretsOptions::default())
            .expect_err("another agent token");
        assert!(
            err.to_string()
                .contains("does not match the agent token recorded"),
            "{err}"
        );
        std::fs::remove_file(&file).expect("rm");
        crate::atomic::write_new(&file, kept.as_bytes(), 0o600).expect("restore");
        ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("restored");
        // A cluster whose record has no agent token (made before piimg made one):
        // a missing agent token stays missing.
        for f in [
            state_path(&profile),
            tmp.path().join("lab.secrets").join(STATE_COPY_FILE),
        ] {
            let text = std::fs::read_to_string(&f).expect("state");
            let text: String = text
                .lines()
                .filter(|l| !l.starts_with("agent_token_sha256"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&f, text).expect("write state");
        }
        std::fs::remove_file(&file).expect("rm");
        let old =
            ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("open");
        assert_eq!(old.agent_token_secret(), None);
        assert!(!file.exists());
        // An agent token file open to others is refused like the token.
        std::fs::write(&file, "abc").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = ClusterSecrets::open_or_create(&profile, SecretsOptions::default())
            .expect_err("0644 agent token");
        assert!(err.to_string().contains("run `chmod 600"), "{err}");
    }

    #[test]
    fn the_first_bootstrap_cards_date_is_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let profile = tmp.path().join("lab.toml");
        let mut s =
            ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("create");
        assert_eq!(s.state().bootstrap_issued_at, None);
        s.mark_issued("s1", true).expect("mark");
        let at = s.state().bootstrap_issued_at.clone().expect("date");
        assert!(
            time::OffsetDateTime::parse(&at, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{at}"
        );
        let text = std::fs::read_to_string(state_path(&profile)).expect("state");
        assert!(
            text.contains(&format!("bootstrap_issued_at = \"{at}\"")),
            "{text}"
        );
        // The earliest of two records wins.
        let mut a = s.state().clone();
        let b = ClusterState {
            bootstrap_issued_at: Some("2020-01-01T00:00:00Z".into()),
            ..a.clone()
        };
        a.merge(&b);
        assert_eq!(
            a.bootstrap_issued_at.as_deref(),
            Some("2020-01-01T00:00:00Z")
        );
    }

    #[test]
    fn etcd_s3_credentials_come_from_two_owner_only_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let profile = tmp.path().join("lab.toml");
        let s =
            ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("create");
        let dir = tmp.path().join("lab.secrets");
        let err = s.etcd_s3_credentials().expect_err("none yet").to_string();
        assert!(
            err.contains(&format!("{}", dir.join(ETCD_S3_ACCESS_KEY_FILE).display()))
                && err.contains("write the bucket's access key into it"),
            "{err}"
        );
        crate::atomic::write_new(&dir.join(ETCD_S3_ACCESS_KEY_FILE), b"AKIA1\n", 0o600)
            .expect("write");
        let err = s
            .etcd_s3_credentials()
            .expect_err("no secret key")
            .to_string();
        assert!(
            err.contains(ETCD_S3_SECRET_KEY_FILE) && err.contains("secret key"),
            "{err}"
        );
        crate::atomic::write_new(&dir.join(ETCD_S3_SECRET_KEY_FILE), b"two words\n", 0o600)
            .expect("write");
        let err = s.etcd_s3_credentials().expect_err("two words").to_string();
        assert!(err.contains("not a single key"), "{err}");
        std::fs::write(dir.join(ETCD_S3_SECRET_KEY_FILE), "s3cr3t/+x\n").expect("write");
        let c = s.etcd_s3_credentials().expect("both");
        assert_eq!(c.access_key, "AKIA1");
        assert_eq!(c.secret_key, "s3cr3t/+x");
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "Debug hides the secret key"
        );
        std::fs::set_permissions(
            dir.join(ETCD_S3_SECRET_KEY_FILE),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let err = s.etcd_s3_credentials().expect_err("0644").to_string();
        assert!(err.contains("run `chmod 600"), "{err}");
    }

    #[test]
    fn paths_sit_next_to_the_profile() {
        let p = Path::new("profiles/homelab.toml");
        assert_eq!(secrets_dir(p), Path::new("profiles/homelab.secrets"));
        assert_eq!(state_path(p), Path::new("profiles/homelab.state.toml"));
        assert_eq!(secrets_dir(Path::new("x.toml")), Path::new("x.secrets"));
    }
}
