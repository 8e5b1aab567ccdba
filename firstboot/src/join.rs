//! How this node joins the cluster: the seam the HA join logic (issue 7) replaces.
//!
//! [`JoinPolicy::decide`] returns a [`Join`]; the agent persists it in the state file
//! and the `k3s-config` step turns it into `cluster-init: true` or `server: <url>`.

use crate::contract::{NodeConfig, Role};
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
}

impl Join {
    /// The `server:` URL, if joining.
    pub fn url(&self) -> Option<String> {
        match self {
            Join::ClusterInit => None,
            Join::Server { ip, port } => Some(format!("https://{ip}:{port}")),
        }
    }
}

/// Decides how a node joins. Implementations may probe the network.
pub trait JoinPolicy {
    /// The join for this node, or a specific reason why none can be chosen yet.
    fn decide(&self, cfg: &NodeConfig, port: u16) -> Result<Join, String>;
}

/// The static rule of issue 6: the bootstrap server initialises; other servers join
/// the bootstrap server (the first of `servers`); agents join the VIP if there is
/// one, else the bootstrap server.
#[derive(Debug, Default)]
pub struct StaticJoin;

impl JoinPolicy for StaticJoin {
    fn decide(&self, cfg: &NodeConfig, port: u16) -> Result<Join, String> {
        if cfg.role == Role::Server && cfg.bootstrap {
            return Ok(Join::ClusterInit);
        }
        if let (Role::Agent, Some(vip)) = (cfg.role, cfg.vip) {
            return Ok(Join::Server { ip: vip, port });
        }
        let target = cfg
            .servers
            .iter()
            .find(|s| s.name != cfg.node_name)
            .ok_or_else(|| {
                format!(
                    "node.json: servers lists no server other than {} to join, and this node is not the bootstrap server",
                    cfg.node_name
                )
            })?;
        Ok(Join::Server {
            ip: target.ip,
            port,
        })
    }
}
