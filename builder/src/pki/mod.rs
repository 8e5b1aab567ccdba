//! The cluster's public-key infrastructure and the HA pieces built on it.
//!
//! - [`ca`]: the cluster CA, generated once into the secrets directory in the layout
//!   k3s accepts as custom CA certificates (root + intermediate, five leaf CAs,
//!   `service.key`), plus the limited `node-cleaner` client certificate.
//! - [`token`]: the secure join token `K10<ca-hash>::server:<secret>`, hashed exactly
//!   like k3s's `hashCA`.
//! - [`node_password`]: deterministic `/etc/rancher/node/password` per node.
//! - [`manifests`]: auto-deployed server manifests (kube-vip, RBAC, HelmChart add-ons),
//!   card templates rendered by `card::manifests`.
//! - [`etcd_s3`]: the S3 credentials drop-in server cards carry for `[k3s.etcd_s3]`.
//! - [`node_files`]: what each card gets of all this.

pub mod ca;
pub mod etcd_s3;
pub mod node_files;
pub mod node_password;
pub mod token;

pub use crate::card::manifests;
pub use ca::ClusterCa;
pub use node_files::{HaOptions, NodeFiles, files_for_node};
pub use node_password::node_password;
pub use token::{ca_hash, secure_token};

use std::path::PathBuf;

/// Why a PKI operation failed; every message names the file involved and a way out.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The CA directory exists but is incomplete; it is never regenerated silently.
    #[error(
        "{dir}: cluster CA incomplete, {missing} is missing; restore it from a backup of the secrets directory (regenerating would split the cluster)"
    )]
    Incomplete {
        /// The CA directory.
        dir: PathBuf,
        /// The first missing file, relative to `dir`.
        missing: String,
    },
    /// A certificate or key did not parse.
    #[error("{path}: {what}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A CA file or directory is open to other users.
    #[error("{path} is accessible by other users (mode {mode:04o}); run `chmod {want:o} {path}`")]
    Permissions {
        /// The file or directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// The mode it should have.
        want: u32,
    },
    /// A server's plan sends etcd snapshots to S3 but no credentials were handed over.
    #[error(
        "[k3s.etcd_s3] is set but no S3 credentials were given to the card (etcd-s3-access-key and etcd-s3-secret-key in the secrets directory)"
    )]
    NoEtcdS3Credentials,
    /// The CA bundle given for a token holds no certificate.
    #[error(
        "CA bundle holds no PEM certificate (k3s: data does not contain any valid RSA or ECDSA certificates)"
    )]
    NoCertificate,
    /// The token secret cannot form a k3s token.
    #[error(
        "token secret {0}; expected the <secret> part of K10<ca-hash>::server:<secret>, not a whole token"
    )]
    BadSecret(&'static str),
    /// Certificate generation failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: String,
        /// rcgen's complaint.
        #[source]
        source: rcgen::Error,
    },
    /// A manifest template did not render.
    #[error("server manifests: {0}")]
    Manifests(#[from] crate::card::CardError),
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> PkiError {
    let path = path.into();
    move |source| PkiError::Io { path, source }
}
