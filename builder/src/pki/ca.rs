//! The cluster CA, generated once into `<secrets>/ca/` in the layout of k3s's
//! `contrib/util/generate-custom-ca-certs.sh`: a self-signed root, an intermediate
//! signed by it, and five leaf CAs signed by the intermediate, each with its
//! `<name>.crt` bundle (leaf + intermediate + root), plus `service.key`.
//!
//! Each server card also gets its own node-cleaner client certificate
//! ([`ClusterCa::node_cleaner_for`]), signed by client-ca at build time with a bounded
//! validity, never stored: a rebuild issues a fresh one.
//!
//! Every CA certificate carries a SubjectKeyIdentifier and an AuthorityKeyIdentifier
//! (the root's equals its own SKID), which is what k3s's `hashCA` needs to find the
//! root of the `server-ca.crt` bundle. Keys are ECDSA P-256 (what the k3s script uses
//! for the leaf CAs; rcgen with ring cannot generate RSA). The root and intermediate
//! keys never leave the secrets directory.
//!
//! An existing CA directory is always reused, and an incomplete one is an error:
//! a new CA for an existing cluster would split it.

use super::{PkiError, io_err};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The CA directory inside the secrets directory.
pub const CA_DIR: &str = "ca";

/// The leaf CAs k3s uses, as paths below `server/tls` without extension.
pub const LEAF_CAS: [&str; 5] = [
    "server-ca",
    "client-ca",
    "request-header-ca",
    "etcd/peer-ca",
    "etcd/server-ca",
];

/// Prefix of the Kubernetes user (certificate CN) of each server's node-cleaner
/// identity; the node name follows (see [`node_cleaner_user`]).
pub const NODE_CLEANER_USER_PREFIX: &str = "system:piimg:node-cleaner:";

/// The Kubernetes user of `node`'s node-cleaner certificate (its CN): the generated
/// RBAC lets exactly this user get and delete exactly that node's Node.
pub fn node_cleaner_user(node: &str) -> String {
    format!("{NODE_CLEANER_USER_PREFIX}{node}")
}

/// Every file a complete CA directory holds.
pub fn required_files() -> Vec<String> {
    let mut v: Vec<String> = [
        "root-ca.pem",
        "root-ca.key",
        "intermediate-ca.pem",
        "intermediate-ca.key",
        "service.key",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for leaf in LEAF_CAS {
        for ext in ["pem", "crt", "key"] {
            v.push(format!("{leaf}.{ext}"));
        }
    }
    v
}

/// The cluster CA as loaded from (or just written to) the secrets directory.
#[derive(Debug, Clone)]
pub struct ClusterCa {
    dir: PathBuf,
    files: BTreeMap<String, String>,
}

impl ClusterCa {
    /// Loads `<secrets_dir>/ca`, or generates it if the directory does not exist.
    pub fn open_or_create(secrets_dir: &Path, cluster: &str) -> Result<Self, PkiError> {
        match Self::open(secrets_dir)? {
            Some(ca) => Ok(ca),
            None => Self::create(secrets_dir, cluster),
        }
    }

    /// Loads `<secrets_dir>/ca`; `None` if it does not exist, an error if incomplete.
    pub fn open(secrets_dir: &Path) -> Result<Option<Self>, PkiError> {
        let dir = secrets_dir.join(CA_DIR);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&dir)(e)),
            Ok(_) => {}
        }
        owner_only(&dir, 0o700)?;
        owner_only(&dir.join("etcd"), 0o700)?;
        let mut files = BTreeMap::new();
        for rel in required_files() {
            let path = dir.join(&rel);
            // Every file is written 0600; the keys among them must stay so.
            if path.exists() {
                owner_only(&path, 0o600)?;
            }
            match fs::read_to_string(&path) {
                Ok(text) => {
                    files.insert(rel, text);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(PkiError::Incomplete { dir, missing: rel });
                }
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        let ca = ClusterCa { dir, files };
        // Fail early on a damaged bundle rather than on the Pi.
        super::token::ca_hash(ca.server_ca_bundle().as_bytes()).map_err(|_| PkiError::Invalid {
            path: ca.dir.join("server-ca.crt"),
            what: "holds no PEM certificate; restore the secrets directory from a backup".into(),
        })?;
        Ok(Some(ca))
    }

    /// Generates a new CA into `<secrets_dir>/ca` (which must not exist), atomically:
    /// everything is written to a temp directory that is renamed into place.
    pub fn create(secrets_dir: &Path, cluster: &str) -> Result<Self, PkiError> {
        let dir = secrets_dir.join(CA_DIR);
        if dir.exists() {
            return Err(PkiError::Invalid {
                path: dir,
                what: "a cluster CA already exists; it is never replaced (start over with a new secrets directory)".into(),
            });
        }
        if !secrets_dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(secrets_dir)
                .map_err(io_err(secrets_dir))?;
        }
        // A crash during an earlier create leaves a partial directory: never used, removed.
        if let Ok(entries) = fs::read_dir(secrets_dir) {
            for e in entries.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!(".{CA_DIR}.partial-"))
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let files = generate(cluster)?;
        let tmp = secrets_dir.join(format!(".{CA_DIR}.partial-{}", std::process::id()));
        let result = write_tree(&tmp, &files).and_then(|()| {
            fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
            crate::atomic::sync_dir(secrets_dir).map_err(io_err(secrets_dir))
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result?;
        Ok(ClusterCa { dir, files })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file of the CA directory by relative name (e.g. `client-ca.crt`).
    pub fn file(&self, rel: &str) -> Option<&str> {
        self.files.get(rel).map(String::as_str)
    }

    /// `server-ca.crt`: the bundle k3s serves at `/cacerts` and hashes for the token.
    pub fn server_ca_bundle(&self) -> &str {
        self.file("server-ca.crt").unwrap_or_default()
    }

    /// The files k3s expects in `/var/lib/rancher/k3s/server/tls` before its first
    /// start, as (path relative to `server/tls`, content): every leaf CA's bundle and
    /// key, and `service.key`. The root and intermediate keys are not among them.
    pub fn k3s_tls_files(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for leaf in LEAF_CAS {
            for ext in ["crt", "key"] {
                let rel = format!("{leaf}.{ext}");
                out.push((rel.clone(), self.file(&rel).unwrap_or_default()));
            }
        }
        out.push((
            "service.key".into(),
            self.file("service.key").unwrap_or_default(),
        ));
        out
    }

    /// A new node-cleaner client certificate for server `node` (CN
    /// [`node_cleaner_user`]), signed by client-ca (which k3s's API server trusts
    /// for client certificates, pkg/daemons/control/deps/deps.go `genClientCerts`),
    /// valid from now for `days` days, and its key: (certificate PEM, key PEM).
    pub fn node_cleaner_for(&self, node: &str, days: u32) -> Result<(String, String), PkiError> {
        let path = self.dir.join("client-ca.pem");
        let key_pem = self.file("client-ca.key").unwrap_or_default();
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Invalid {
            path: self.dir.join("client-ca.key"),
            what: format!("not a usable CA key ({e}); restore the secrets directory from a backup"),
        })?;
        let issuer = Issuer::from_ca_cert_pem(self.file("client-ca.pem").unwrap_or_default(), &key)
            .map_err(|e| PkiError::Invalid {
                path,
                what: format!(
                    "not a usable CA certificate ({e}); restore the secrets directory from a backup"
                ),
            })?;
        let now = time::OffsetDateTime::now_utc();
        client_cert(
            &node_cleaner_user(node),
            &issuer,
            now - time::Duration::days(1),
            now + time::Duration::days(i64::from(days)),
        )
    }
}

/// Refuses `path` when group or others have any access to it (a restored backup
/// with 0644 keys would hand the cluster's CA to every local user).
fn owner_only(path: &Path, want: u32) -> Result<(), PkiError> {
    let mode = match fs::metadata(path) {
        Ok(m) => m.permissions().mode() & 0o7777,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    };
    if mode & 0o077 != 0 {
        return Err(PkiError::Permissions {
            path: path.to_path_buf(),
            mode,
            want,
        });
    }
    Ok(())
}

fn write_tree(tmp: &Path, files: &BTreeMap<String, String>) -> Result<(), PkiError> {
    for sub in [tmp.to_path_buf(), tmp.join("etcd")] {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&sub)
            .map_err(io_err(&sub))?;
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).map_err(io_err(&sub))?;
    }
    for (rel, text) in files {
        let path = tmp.join(rel);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        use std::io::Write;
        f.write_all(text.as_bytes()).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))?;
    }
    for sub in [tmp.join("etcd"), tmp.to_path_buf()] {
        crate::atomic::sync_dir(&sub).map_err(io_err(&sub))?;
    }
    Ok(())
}

fn gen_err(what: &str) -> impl FnOnce(rcgen::Error) -> PkiError + '_ {
    move |source| PkiError::Generate {
        what: what.to_string(),
        source,
    }
}

fn ca_params(cn: String, days: i64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = not_before();
    p.not_after = now + time::Duration::days(days);
    p
}

/// 2025-01-01: a Pi without an RTC may boot with a clock well behind the build
/// machine's, and k3s's token hash check (Go's `Verify`) fails on a CA that is not yet
/// valid; the agent never runs with a clock before this date.
fn not_before() -> time::OffsetDateTime {
    rcgen::date_time_ymd(2025, 1, 1)
}

/// Generates every file of a CA directory (in memory).
fn generate(cluster: &str) -> Result<BTreeMap<String, String>, PkiError> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut files = BTreeMap::new();

    let root_key = KeyPair::generate().map_err(gen_err("root CA key"))?;
    let root_params = ca_params(format!("piimg-{cluster}-root-ca@{stamp}"), 7300);
    let root_cert = root_params
        .self_signed(&root_key)
        .map_err(gen_err("root CA"))?;
    let root_pem = root_cert.pem();
    let root = Issuer::new(root_params, &root_key);

    let int_key = KeyPair::generate().map_err(gen_err("intermediate CA key"))?;
    let int_params = ca_params(format!("piimg-{cluster}-intermediate-ca@{stamp}"), 3700);
    let int_cert = int_params
        .signed_by(&int_key, &root)
        .map_err(gen_err("intermediate CA"))?;
    let int_pem = int_cert.pem();
    let intermediate = Issuer::new(int_params, &int_key);

    files.insert("root-ca.pem".into(), root_pem.clone());
    files.insert("root-ca.key".into(), root_key.serialize_pem());
    files.insert("intermediate-ca.pem".into(), int_pem.clone());
    files.insert("intermediate-ca.key".into(), int_key.serialize_pem());

    for leaf in LEAF_CAS {
        let what = format!("{leaf} CA");
        let key = KeyPair::generate().map_err(gen_err(&what))?;
        let params = ca_params(format!("k3s-{}@{stamp}", leaf.replace('/', "-")), 3650);
        let cert = params
            .signed_by(&key, &intermediate)
            .map_err(gen_err(&what))?;
        let pem = cert.pem();
        let bundle = format!("{pem}{int_pem}{root_pem}");
        files.insert(format!("{leaf}.pem"), pem);
        files.insert(format!("{leaf}.crt"), bundle);
        files.insert(format!("{leaf}.key"), key.serialize_pem());
    }

    let service = KeyPair::generate().map_err(gen_err("service account key"))?;
    files.insert("service.key".into(), service.serialize_pem());
    Ok(files)
}

/// A client certificate for Kubernetes user `cn` (no groups) signed by `issuer`,
/// valid from `not_before` to `not_after`: (certificate PEM, key PEM).
fn client_cert(
    cn: &str,
    issuer: &Issuer<'_, &KeyPair>,
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(gen_err(cn))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    p.not_before = not_before;
    p.not_after = not_after;
    let cert = p.signed_by(&key, issuer).map_err(gen_err(cn))?;
    Ok((cert.pem(), key.serialize_pem()))
}
