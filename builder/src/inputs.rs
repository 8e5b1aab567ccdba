//! What a card was built from, as digests: the profile's settings for its node, the
//! cluster's identity, the base image and piimg itself. `build` records them in the
//! card's manifest; `flash IMAGE` warns when the profile's settings for the image's
//! node changed since (a node whose IP changed must not get its old IP);
//! [`Inputs::changes`] names what changed.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::profile::Profile;
use crate::profile::secrets::ClusterState;
use piimg_contract::Role;

/// Digests of everything a card was built from, one per kind of input, so a
/// difference can say which kind changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The profile's settings that reach this node's card (cluster-wide settings,
    /// the node itself, every server it may join), key files and overlay files
    /// included.
    pub profile: String,
    /// The cluster's identity: cluster id and token fingerprint.
    pub secrets: String,
    /// The base image: its SHA-256 when known, else its file name and size.
    pub base: String,
    /// piimg's version and the first-boot agent it embeds.
    pub piimg: String,
}

/// One kind of input that differs between a card and the current build inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changed {
    /// The profile's settings for the node.
    Profile,
    /// The cluster secrets (a new cluster, restored or replaced secrets).
    Secrets,
    /// The base image.
    Base,
    /// piimg or its agent.
    Piimg,
}

impl fmt::Display for Changed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Changed::Profile => "the profile's settings for this node changed",
            Changed::Secrets => "the cluster secrets changed",
            Changed::Base => "the base image changed",
            Changed::Piimg => "piimg (or its first-boot agent) changed",
        })
    }
}

impl Inputs {
    /// The digests of a build of `node` from `profile` on the base identified as
    /// `base` ([`BaseId`]'s text) now.
    pub fn current(
        profile: &Profile,
        node: &str,
        state: &ClusterState,
        base: String,
        agent: &[u8],
    ) -> Inputs {
        Inputs {
            profile: profile_digest(profile, node),
            secrets: secrets_digest(state),
            base,
            piimg: piimg_digest(agent),
        }
    }

    /// The kinds of input in which `self` (what a card was built from) differs from
    /// `now`.
    pub fn changes(&self, now: &Inputs) -> Vec<Changed> {
        let mut out = Vec::new();
        if self.profile != now.profile {
            out.push(Changed::Profile);
        }
        if self.secrets != now.secrets {
            out.push(Changed::Secrets);
        }
        if self.base != now.base {
            out.push(Changed::Base);
        }
        if self.piimg != now.piimg {
            out.push(Changed::Piimg);
        }
        out
    }
}

/// How a base image is identified in [`Inputs::base`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseId {
    /// A verified image from the cache, by the SHA-256 of its uncompressed bytes.
    Sha256(String),
    /// A file given with `--base`, by name and size (hashing gigabytes on every
    /// flash would cost more than a rebuild).
    File {
        /// File name without directories.
        name: String,
        /// Size in bytes.
        size: u64,
    },
}

impl BaseId {
    /// The id of the `--base` file at `path`.
    pub fn of_file(path: &Path) -> std::io::Result<BaseId> {
        let size = std::fs::metadata(path)?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(BaseId::File { name, size })
    }
}

impl fmt::Display for BaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseId::Sha256(h) => write!(f, "sha256:{h}"),
            BaseId::File { name, size } => write!(f, "file:{name}:{size}"),
        }
    }
}

/// Digest of what reaches `node`'s card from `profile`: every cluster-wide
/// setting, the node's own entry, every server's (the join targets), the contents
/// of the key files and of the overlay directory (a file that cannot be read
/// counts as its error, so a later fix changes the digest too).
pub fn profile_digest(profile: &Profile, node: &str) -> String {
    let mut view = profile.clone();
    view.nodes
        .retain(|n| n.name == node || n.role == Role::Server);
    let mut h = Sha256::new();
    // Serialising plain profile data to JSON cannot fail; an empty string would
    // still be a stable digest.
    h.update(serde_json::to_vec(&view).unwrap_or_default());
    for file in &profile.access.ssh_key_files {
        hash_file(&mut h, &profile.resolve_path(Path::new(file)));
    }
    if let Some(dir) = &profile.cluster.overlay_dir {
        hash_tree(&mut h, &profile.resolve_path(dir));
    }
    // `[[files]]` and `[[run_once]]` sources: their bytes reach every card.
    let sources = profile.files.iter().filter_map(|f| f.source.as_deref());
    for src in sources.chain(profile.run_once.iter().filter_map(|r| r.source.as_deref())) {
        hash_file(&mut h, &profile.resolve_path(src));
    }
    if let Some(dir) = &profile.k3s.airgap_dir {
        hash_listing(&mut h, &profile.resolve_path(dir));
    }
    if let Some(s3) = &profile.k3s.etcd_s3 {
        if let Some(ca) = &s3.endpoint_ca {
            hash_file(&mut h, &profile.resolve_path(ca));
        }
        // Server cards carry the S3 keys: new keys make them stale. Only a digest
        // of each key file enters this digest.
        if profile.node(node).is_some_and(|n| n.role == Role::Server) {
            let dir = crate::profile::secrets::secrets_dir(&profile.path);
            for name in [
                crate::profile::secrets::ETCD_S3_ACCESS_KEY_FILE,
                crate::profile::secrets::ETCD_S3_SECRET_KEY_FILE,
            ] {
                hash_file(&mut h, &dir.join(name));
            }
        }
    }
    hex::encode(h.finalize())
}

/// Digest of the cluster's identity (not of the secrets themselves): cluster id,
/// token fingerprint and, when the cluster has one, the agent token's (worker cards
/// carry it, so adding one to an older cluster makes its cards stale).
pub fn secrets_digest(state: &ClusterState) -> String {
    let mut h = Sha256::new();
    h.update(state.cluster_id.as_bytes());
    h.update([0]);
    h.update(state.token_sha256.as_bytes());
    if let Some(agent) = &state.agent_token_sha256 {
        h.update([0]);
        h.update(agent.as_bytes());
    }
    hex::encode(h.finalize())
}

/// piimg's version and the SHA-256 of the agent binary it puts on cards.
pub fn piimg_digest(agent: &[u8]) -> String {
    format!(
        "{}+agent.{}",
        env!("CARGO_PKG_VERSION"),
        &hex::encode(Sha256::digest(agent))[..16]
    )
}

fn hash_file(h: &mut Sha256, path: &Path) {
    h.update(path.as_os_str().as_encoded_bytes());
    match std::fs::read(path) {
        Ok(bytes) => {
            h.update(b"\0ok\0");
            h.update(Sha256::digest(&bytes));
        }
        Err(e) => h.update(format!("\0err:{:?}\0", e.kind()).as_bytes()),
    }
}

/// Every regular file below `dir` by relative path and content, in name order.
fn hash_tree(h: &mut Sha256, dir: &Path) {
    let mut files = Vec::new();
    collect(dir, dir, &mut files, 0);
    files.sort();
    for rel in files {
        h.update(rel.as_bytes());
        hash_file(h, &dir.join(&rel));
    }
}

/// Names and sizes of the files directly in `dir` (k3s airgap binaries are large:
/// their size stands in for their content).
fn hash_listing(h: &mut Sha256, dir: &Path) {
    let mut entries: Vec<(String, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file()
                .then(|| (e.file_name().to_string_lossy().into_owned(), m.len()))
        })
        .collect();
    entries.sort();
    for (name, size) in entries {
        h.update(format!("{name}\0{size}\0").as_bytes());
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>, depth: usize) {
    // Overlay trees are shallow; the bound only guards against symlink loops.
    if depth > 16 {
        return;
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => collect(root, &p, out, depth + 1),
            Ok(_) => {
                if let Ok(rel) = p.strip_prefix(root) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"
[cluster]
name = "lab"
[network]
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
dns = ["10.0.0.1"]
[k3s]
[access]
admin_user = "ops"
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2kP1KCNa0EvSf0y8lD5Y0uV6fw7q1w0b6fPpC5xr0X test"]
[[nodes]]
name = "s1"
ip = "10.0.0.11"
role = "server"
hardware = "pi5"
[[nodes]]
name = "w1"
ip = "10.0.0.21"
role = "agent"
hardware = "pi4"
[[nodes]]
name = "w2"
ip = "10.0.0.22"
role = "agent"
hardware = "pi4"
"#;

    fn profile(text: &str) -> Profile {
        crate::profile::parse(text, Path::new("lab.toml")).expect("test profile parses")
    }

    #[test]
    fn a_node_sees_its_own_settings_and_the_servers_not_other_agents() {
        let p = profile(PROFILE);
        let w1 = profile_digest(&p, "w1");
        assert_eq!(w1, profile_digest(&p, "w1"), "stable");
        let other_agent = profile(&PROFILE.replace("10.0.0.22", "10.0.0.23"));
        assert_eq!(w1, profile_digest(&other_agent, "w1"));
        let own_ip = profile(&PROFILE.replace("10.0.0.21", "10.0.0.31"));
        assert_ne!(w1, profile_digest(&own_ip, "w1"));
        let server_ip = profile(&PROFILE.replace("10.0.0.11", "10.0.0.12"));
        assert_ne!(w1, profile_digest(&server_ip, "w1"));
        let cluster_wide = profile(&PROFILE.replace("admin_user = \"ops\"", "admin_user = \"pi\""));
        assert_ne!(w1, profile_digest(&cluster_wide, "w1"));
    }

    #[test]
    fn s3_keys_and_ca_make_server_cards_stale_not_agent_cards() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lab.toml");
        let text = PROFILE.replace(
            "[access]",
            "[k3s.etcd_s3]\nbucket = \"lab\"\nendpoint_ca = \"ca.pem\"\n[access]",
        );
        let mut p = crate::profile::parse(&text, &path).expect("parses");
        p.path = path.clone();
        std::fs::write(dir.path().join("ca.pem"), "one").expect("ca");
        let secrets = dir.path().join("lab.secrets");
        std::fs::create_dir(&secrets).expect("dir");
        std::fs::write(secrets.join("etcd-s3-secret-key"), "k1").expect("key");
        let (s1, w1) = (profile_digest(&p, "s1"), profile_digest(&p, "w1"));
        std::fs::write(secrets.join("etcd-s3-secret-key"), "k2").expect("key");
        assert_ne!(
            s1,
            profile_digest(&p, "s1"),
            "a server card carries the keys"
        );
        assert_eq!(w1, profile_digest(&p, "w1"), "an agent card does not");
        std::fs::write(dir.path().join("ca.pem"), "two").expect("ca");
        assert_ne!(
            w1,
            profile_digest(&p, "w1"),
            "the CA bundle is in the profile's settings"
        );
    }

    #[test]
    fn key_file_contents_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("k.pub");
        std::fs::write(&key, "ssh-ed25519 AAAA one").expect("write key");
        let mut p = profile(PROFILE);
        p.access.ssh_key_files = vec![key.display().to_string()];
        let before = profile_digest(&p, "s1");
        std::fs::write(&key, "ssh-ed25519 AAAA two").expect("rewrite key");
        assert_ne!(before, profile_digest(&p, "s1"));
    }

    #[test]
    fn changes_name_each_kind() {
        let p = profile(PROFILE);
        let state = ClusterState {
            cluster_id: "c1".into(),
            token_sha256: "t1".into(),
            ..Default::default()
        };
        let base = BaseId::Sha256("ab".into()).to_string();
        let built = Inputs::current(&p, "s1", &state, base.clone(), b"agent");
        assert!(built.changes(&built.clone()).is_empty());
        let mut issued = state.clone();
        issued.bootstrap_issued = true;
        issued.issued.insert("s1".into());
        assert!(
            built
                .changes(&Inputs::current(&p, "s1", &issued, base.clone(), b"agent"))
                .is_empty(),
            "issuing cards does not make the card just built stale"
        );
        let now = Inputs::current(
            &profile(&PROFILE.replace("10.0.0.11", "10.0.0.12")),
            "s1",
            &ClusterState {
                cluster_id: "c2".into(),
                ..state.clone()
            },
            BaseId::File {
                name: "x.img".into(),
                size: 1,
            }
            .to_string(),
            b"agent2",
        );
        assert_eq!(
            built.changes(&now),
            [
                Changed::Profile,
                Changed::Secrets,
                Changed::Base,
                Changed::Piimg
            ]
        );
        let with_agent_token = ClusterState {
            agent_token_sha256: Some("a1".into()),
            ..state.clone()
        };
        assert_eq!(
            built.changes(&Inputs::current(
                &p,
                "s1",
                &with_agent_token,
                base.clone(),
                b"agent"
            )),
            [Changed::Secrets],
            "an agent token added to the secrets makes older cards stale"
        );
        assert_eq!(
            Changed::Profile.to_string(),
            "the profile's settings for this node changed"
        );
    }
}
