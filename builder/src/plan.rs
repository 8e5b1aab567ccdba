//! Profile → one [`NodePlan`] per node: everything a card needs to know about its
//! node, resolved (keys read, defaults applied, join targets chosen). The card
//! module renders a `NodePlan` into files; it never looks at the profile itself.
//!
//! `plan()` (profile → plans) lives with the profile work; these types are the
//! interface between the two halves.

use piimg_firstboot::contract::Role;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// Everything one node's card needs, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodePlan {
    /// Cluster name (profile `cluster.name`).
    pub cluster: String,
    /// Profile name (file stem), recorded in the card's manifest.
    pub profile: String,
    /// Node name = hostname = k3s node name.
    pub name: String,
    /// Cluster DNS domain, if any (hosts entries: `name.domain`).
    pub domain: Option<String>,
    /// Server or agent.
    pub role: Role,
    /// True on the one server allowed to initialise a new cluster.
    pub bootstrap: bool,
    /// What this card does on first boot, in words (for `piimg plan`).
    pub first_boot: FirstBootAction,
    /// Static network of this node.
    pub network: NodeNetwork,
    /// Hardware class, resolved with its defaults.
    pub hardware: Hardware,
    /// Admin user and keys (keys already resolved to OpenSSH public-key lines).
    pub access: Access,
    /// k3s settings for this node.
    pub k3s: NodeK3s,
    /// All servers of the cluster (bootstrap first): name and IP.
    pub servers: Vec<(String, Ipv4Addr)>,
    /// Optional profile overlay directory overriding `overlays/` file by file.
    pub overlay_dir: Option<std::path::PathBuf>,
}

/// What a card will do when it boots for the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum FirstBootAction {
    /// Bootstrap server of a cluster never brought up: `cluster-init`.
    InitCluster,
    /// Server joining (or re-joining) through any of these servers.
    JoinServers {
        /// Server IPs tried in order (VIP first when there is one).
        via: Vec<Ipv4Addr>,
    },
    /// Agent joining through any of these servers.
    JoinAgent {
        /// Server IPs tried in order (VIP first when there is one).
        via: Vec<Ipv4Addr>,
    },
}

/// Static IPv4 settings of the node's wired interface.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeNetwork {
    /// Interface name (e.g. `eth0`).
    pub interface: String,
    /// Optional MAC to bind the connection to.
    pub mac: Option<String>,
    /// Node address.
    pub address: Ipv4Addr,
    /// LAN prefix length.
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolvers in order.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
}

/// A node's hardware class with its defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hardware {
    /// Class id, e.g. `pi5-8gb`.
    pub class: String,
    /// Board, e.g. `pi5` or `pi4` (also the config.txt section name).
    pub board: String,
    /// RAM in MiB.
    pub ram_mb: u32,
    /// config.txt lines for this board, placed under `[board]` (e.g. `kernel=kernel8.img`).
    pub config_txt: Vec<String>,
    /// config.txt lines for all boards, placed under `[all]` (e.g. `dtoverlay=disable-wifi`).
    pub config_txt_all: Vec<String>,
    /// Extra kubelet arguments (reservations, eviction thresholds) for small boards.
    pub kubelet_args: Vec<String>,
}

/// Admin access to the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Access {
    /// Admin login name.
    pub admin_user: String,
    /// OpenSSH public-key lines.
    pub ssh_authorized_keys: Vec<String>,
    /// SSH password login (off by default).
    pub password_login: bool,
}

/// k3s settings for one node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeK3s {
    /// Pinned k3s version, e.g. `v1.31.4+k3s1`.
    pub version: String,
    /// Control-plane virtual IP, if any.
    pub vip: Option<Ipv4Addr>,
    /// Extra TLS SANs (servers; VIP already included when set).
    pub tls_san: Vec<String>,
    /// Disabled packaged components (servers), e.g. `servicelb`.
    pub disable: Vec<String>,
    /// etcd snapshot cron schedule (servers).
    pub etcd_snapshot_schedule: Option<String>,
    /// etcd snapshots to keep (servers).
    pub etcd_snapshot_retention: Option<u32>,
    /// Node labels (including the hardware-class labels).
    pub labels: BTreeMap<String, String>,
    /// Node taints, `key=value:Effect`.
    pub taints: Vec<String>,
    /// Extra `config.yaml` keys for this node's role, as YAML-ready scalars or lists.
    pub extra_args: Vec<String>,
    /// Extra kubelet args (profile + hardware defaults).
    pub kubelet_args: Vec<String>,
    /// Directory of airgap files to bundle on the card (k3s-arm64, install.sh,
    /// k3s-airgap-images-arm64.tar.zst), if the profile asks for it.
    pub airgap_dir: Option<std::path::PathBuf>,
}
