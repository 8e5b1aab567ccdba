//! What each card gets of the cluster's PKI and HA setup.
//!
//! | card | secret files (`CardSecrets.files`) | files (`NodeConfig.files`) |
//! |---|---|---|
//! | bootstrap, first bring-up | CA bundles + keys and `service.key` in `server/tls` | |
//! | every server | its own node-cleaner cert + key | server manifests (identical on all) |
//! | every server | (node password, server token, agent token) | |
//! | every server, with `[k3s.etcd_s3]` | the S3 credentials drop-in | |
//! | every agent | (node password, agent token only) | |

use super::ca::ClusterCa;
use super::ca::NODE_CLEANER_USER_PREFIX;
use super::{PkiError, node_password, token};
use crate::card::Templates;
use crate::card::manifests::{Addons, MANIFESTS_DIR, ManifestInputs, server_manifests};
use crate::plan::NodePlan;
use crate::profile::secrets::S3Credentials;
use piimg_contract::{Ha, NODE_CLEANER_CERT, NODE_CLEANER_KEY, NodeCleaner, Role, RootFile};

/// Where k3s looks for (custom) CA files before its first start.
pub const K3S_TLS_DIR: &str = "/var/lib/rancher/k3s/server/tls";

/// Cluster-wide HA choices that are not in the [`NodePlan`].
#[derive(Debug, Clone)]
pub struct HaOptions {
    /// `false` forbids a first bring-up the plan allows (a card built for a test of a
    /// re-flash); it can never allow one. Whether a card may start the cluster is the
    /// plan's decision ([`NodePlan::starts_cluster`]); `true` (the default) leaves it.
    pub first_bring_up: bool,
    /// Add-ons laid on every server card.
    pub addons: Addons,
    /// The cluster's agent token secret (`None` for clusters created before piimg
    /// made one: their agents keep the server token).
    pub agent_token_secret: Option<String>,
    /// How long a first-bring-up card probes its peers before it initialises.
    pub init_window_secs: u64,
    /// Validity of each server's node-cleaner certificate, in days (issued now).
    pub node_cleaner_days: u32,
    /// The S3 credentials server cards carry when their plan sends etcd snapshots
    /// to S3 (`[k3s.etcd_s3]`); never given to agents.
    pub etcd_s3: Option<S3Credentials>,
}

impl Default for HaOptions {
    fn default() -> Self {
        HaOptions {
            first_bring_up: true,
            addons: Addons::default(),
            agent_token_secret: None,
            init_window_secs: DEFAULT_INIT_WINDOW_SECS,
            node_cleaner_days: DEFAULT_NODE_CLEANER_DAYS,
            etcd_s3: None,
        }
    }
}

/// Defaults of [`HaOptions::init_window_secs`] and [`HaOptions::node_cleaner_days`]:
/// the profile's.
pub use crate::profile::model::{DEFAULT_INIT_WINDOW_SECS, DEFAULT_NODE_CLEANER_DAYS};

/// The PKI/HA part of one card.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFiles {
    /// The secure join token (`CardSecrets.token`): the server token on servers, the
    /// agent token on agents (when the cluster has one).
    pub token: String,
    /// Servers: the agent token secret for `agent-token:` (`CardSecrets.agent_token`).
    pub agent_token: Option<String>,
    /// The pre-seeded node password (`CardSecrets.node_password`).
    pub node_password: String,
    /// Secret files, mode 0600 (append to `CardSecrets.files`).
    pub secret_files: Vec<RootFile>,
    /// Non-secret files (append to `NodeConfig.files`).
    pub files: Vec<RootFile>,
    /// `NodeConfig.ha`.
    pub ha: Ha,
}

/// Tells what node `plan` gets: see the module table.
pub fn files_for_node(
    plan: &NodePlan,
    ca: &ClusterCa,
    token_secret: &str,
    opts: &HaOptions,
) -> Result<NodeFiles, PkiError> {
    let bundle = ca.server_ca_bundle();
    let hash = token::ca_hash(bundle.as_bytes())?;
    let server = plan.role == Role::Server;
    // Whether this card brings the cluster up is the plan's decision.
    let init = plan.starts_cluster() && opts.first_bring_up;
    let mut secret_files = Vec::new();
    let mut files = Vec::new();
    if init {
        for (rel, content) in ca.k3s_tls_files() {
            secret_files.push(RootFile {
                path: format!("{K3S_TLS_DIR}/{rel}"),
                mode: 0o600,
                content: content.to_string(),
                owner: None,
            });
        }
    }
    let mut node_cleaner = None;
    let servers: Vec<String> = plan.servers.iter().map(|(n, _)| n.clone()).collect();
    if server {
        let (cert, key) = ca.node_cleaner_for(&plan.name, opts.node_cleaner_days)?;
        secret_files.push(RootFile {
            path: NODE_CLEANER_CERT.into(),
            mode: 0o600,
            content: cert,
            owner: None,
        });
        secret_files.push(RootFile {
            path: NODE_CLEANER_KEY.into(),
            mode: 0o600,
            content: key,
            owner: None,
        });
        if plan.k3s.etcd_s3.is_some() {
            let creds = opts.etcd_s3.as_ref().ok_or(PkiError::NoEtcdS3Credentials)?;
            secret_files.push(super::etcd_s3::credentials_drop_in(creds));
        }
        node_cleaner = Some(NodeCleaner {
            cert: NODE_CLEANER_CERT.into(),
            key: NODE_CLEANER_KEY.into(),
        });
        // The manifests are card templates: the profile's overlay replaces them.
        let templates = match plan.overlay_dir.as_deref() {
            Some(dir) => Templates::with_overlay(dir)?,
            None => Templates::builtin(),
        };
        let manifests = server_manifests(&ManifestInputs {
            vip: plan.k3s.vip,
            node_cleaner_user_prefix: NODE_CLEANER_USER_PREFIX,
            servers: &servers,
            interface: &plan.network.interface,
            addons: &opts.addons,
            templates: &templates,
        })?;
        for (name, content) in manifests {
            files.push(RootFile {
                path: format!("{MANIFESTS_DIR}/{name}"),
                mode: 0o600,
                content,
                owner: None,
            });
        }
    }
    let (token, agent_token) = match (server, opts.agent_token_secret.as_deref()) {
        (true, agent) => (
            token::secure_token(bundle.as_bytes(), token_secret)?,
            agent.map(str::to_string),
        ),
        (false, Some(agent)) => (token::secure_agent_token(bundle.as_bytes(), agent)?, None),
        (false, None) => (token::secure_token(bundle.as_bytes(), token_secret)?, None),
    };
    Ok(NodeFiles {
        token,
        agent_token,
        node_password: node_password(token_secret, &plan.name),
        secret_files,
        files,
        ha: Ha {
            cluster_ca_pem: Some(bundle.to_string()),
            cluster_ca_sha256: Some(hash),
            first_bring_up: init,
            // A single-server cluster has no peer to wait for.
            init_window_secs: if init && plan.servers.len() > 1 {
                opts.init_window_secs
            } else {
                0
            },
            node_cleaner,
        },
    })
}
