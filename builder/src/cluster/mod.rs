//! Reaching a running cluster from the workstation, with nothing but the profile and
//! its secrets directory (no SSH):
//!
//! - [`access`]: the cluster CA and server token, opened read-only (never created).
//! - [`endpoints`]: where each server's API answers (node IP or VIP, and the port).
//! - [`api`]: the TLS client, pinned to the cluster's server CA, with bounded timeouts.
//! - [`k8s`]: the Kubernetes and k3s JSON shapes piimg reads.
//! - [`kubeconfig`]: short-lived admin client certificates and kubeconfig files.
//! - [`merge`]: adding a context to an existing kubeconfig, keeping every other one.
//! - [`live`]: what the servers answer, gathered in parallel.
//! - [`status`]: the live cluster compared with the plan.
//! - [`report`]: that comparison as a table.

pub mod access;
pub mod api;
pub mod endpoints;
pub mod k8s;
pub mod kubeconfig;
pub mod live;
pub mod merge;
pub mod report;
pub mod status;

use std::path::PathBuf;

/// Why the cluster could not be reached or a kubeconfig not be written; every
/// message names the file or server involved and a way out.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The secrets directory is gone but the state file says the cluster exists.
    #[error(
        "the secrets directory {dir} is missing, but {state} records that cluster `{cluster}` exists (cards issued: {issued}): \
         piimg needs the cluster CA in it to reach the cluster. Restore {dir} from your backup \
         (until then, /etc/rancher/k3s/k3s.yaml on any server is an admin kubeconfig)"
    )]
    SecretsMissing {
        /// The missing secrets directory.
        dir: PathBuf,
        /// The state file that says the cluster exists.
        state: PathBuf,
        /// Cluster id from the state.
        cluster: String,
        /// Nodes whose cards were issued, comma-separated.
        issued: String,
    },
    /// No cluster was ever set up for this profile.
    #[error(
        "no cluster secrets at {dir}: no card was built for this profile yet, so there is no cluster to reach \
         (build the cards with `piimg build --all` and boot them first)"
    )]
    NoCluster {
        /// The secrets directory that does not exist.
        dir: PathBuf,
    },
    /// The secrets directory exists but holds no CA.
    #[error(
        "{dir} holds no cluster CA (ca/): restore the secrets directory from your backup \
         (until then, /etc/rancher/k3s/k3s.yaml on any server is an admin kubeconfig)"
    )]
    NoCa {
        /// The secrets directory.
        dir: PathBuf,
    },
    /// The CA directory could not be used.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// The secrets or state could not be read.
    #[error(transparent)]
    Secrets(#[from] crate::profile::secrets::SecretsError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A client certificate could not be made.
    #[error("issuing {what}: {message}")]
    Issue {
        /// Which certificate.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// The TLS client could not be set up from the CA files.
    #[error(
        "{path}: cannot be used for TLS ({message}); restore the secrets directory from your backup"
    )]
    Tls {
        /// The CA or key file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A profile setting that says where the API listens is unusable.
    #[error("{field}: {message}")]
    Setting {
        /// The profile field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// An existing kubeconfig cannot be merged into.
    #[error("{path}: {message}; fix or move it, or write a separate file with --out")]
    BadKubeconfig {
        /// The kubeconfig.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// No server answered, so there is no URL to put in the kubeconfig.
    #[error(
        "no server answered, so the kubeconfig has no server to point at:\n  {reasons}\n\
         Boot the servers (or check the network), or name the URL with --server https://HOST:PORT"
    )]
    NoServer {
        /// One line per server with the reason it did not answer.
        reasons: String,
    },
}

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let path = path.into();
    move |source| ClusterError::Io { path, source }
}
