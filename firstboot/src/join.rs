//! How this node joins the cluster: the outcome of the join decision ([`Join`]), as
//! the state file keeps it and the `k3s-config` step renders it. The decision itself
//! is made by a [`JoinPolicy`](crate::join_policy::JoinPolicy).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The outcome of the join decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Join {
    /// Initialise a brand-new cluster (`cluster-init: true`).
    ClusterInit,
    /// Join through this server.
    Server {
        /// The server's address.
        ip: Ipv4Addr,
        /// Its supervisor/API port (6443).
        port: u16,
    },
    /// etcd data exists: start as before (k3s ignores `cluster-init`/`server`).
    Existing,
}

impl Join {
    /// The `server:` URL, if joining.
    pub fn url(&self) -> Option<String> {
        match self {
            Join::Server { ip, port } => Some(format!("https://{ip}:{port}")),
            Join::ClusterInit | Join::Existing => None,
        }
    }
}
