//! The seam that makes the join decision ([`JoinPolicy`], shipped as
//! [`HaJoin`](crate::ha_join::HaJoin)), what a policy may read, write and run while it
//! decides ([`JoinEnv`]), and the order it tries servers in ([`peers`]).

use crate::error::Error;
use crate::exec::Exec;
use crate::join::Join;
use crate::node_fs::NodeFs;
use crate::peer::Peer;
use crate::progress::Progress;
use crate::secrets::SecretStore;
use piimg_contract::NodeConfig;
use piimg_contract::join_order::join_order;
use std::time::Duration;

/// What a join policy works with: the card (read), the node's files (the pinned CA
/// and a short-lived credentials file are written; etcd data and the node-cleaner
/// identity are read), curl through the program door, the secrets (the token), and
/// the card status for its progress.
pub struct JoinEnv<'a> {
    /// The card's node configuration.
    pub cfg: &'a NodeConfig,
    /// The servers' supervisor/API port.
    pub api_port: u16,
    /// Bound on waiting for a server to answer.
    pub join_timeout: Duration,
    /// The node's files.
    pub fs: &'a NodeFs,
    /// Runs curl.
    pub exec: &'a Exec<'a>,
    /// The node's secrets.
    pub secrets: &'a SecretStore<'a>,
    /// Reports what the decision waits for.
    pub progress: &'a Progress<'a>,
}

/// Decides how a node joins. Implementations may probe the network and report
/// progress on the card while they wait.
pub trait JoinPolicy {
    /// The join for this node, or a specific reason why none can be chosen.
    fn decide(&self, env: &JoinEnv) -> Result<Join, Error>;
}

/// The join targets in order: the VIP first, then every server but this node.
pub fn peers(cfg: &NodeConfig, port: u16) -> Vec<Peer> {
    // A server listed under this node's own address is this node, whatever its name.
    let others = cfg
        .servers
        .iter()
        .filter(|s| Some(s.ip) != cfg.network.address)
        .map(|s| (s.name.as_str(), s.ip));
    join_order(cfg.vip, others, &cfg.node_name)
        .into_iter()
        .map(|t| Peer {
            label: t.name.map_or_else(|| "VIP".to_string(), str::to_string),
            ip: t.ip,
            port,
        })
        .collect()
}
