//! Profile → one [`NodePlan`] per node: everything a card needs to know about its
//! node, resolved (keys read, defaults applied, join targets chosen). The card
//! module renders a `NodePlan` into files; it never looks at the profile itself.
//!
//! [`plan()`] turns a validated profile and the cluster's secrets into these plans;
//! the types are the interface between the profile and the card halves.

use crate::profile::customize::{self, CustomizeError};
use crate::profile::hardware;
use crate::profile::keys::{self, KeyError, KeySources};
use crate::profile::model::HardwareOptions;
use crate::profile::secrets::{ClusterSecrets, ClusterState};
use crate::profile::{Findings, Profile, validate};
use crate::storage::{self, NodeStorage};
use piimg_contract::customize::Customize;
use piimg_contract::join_order::join_order;
use piimg_contract::{Network, Role};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

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
    /// Network of this node (static address or DHCP, Wi-Fi when the profile has it).
    pub network: Network,
    /// The Wi-Fi PSK as 64 hex digits (derived from the profile's passphrase); a
    /// secret, so never serialised with the plan.
    #[serde(skip_serializing)]
    pub wifi_psk: Option<String>,
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
    /// Boot device, data disk, SD-wear level and the bootloader setting they need.
    pub storage: NodeStorage,
    /// Time zone, locale, keyboard, packages, root files and run-once scripts
    /// (`source` files already read).
    pub customize: Customize,
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

impl Hardware {
    /// `class` with the profile's hardware options applied.
    pub fn of(class: &hardware::HardwareClass, opts: &HardwareOptions) -> Self {
        Hardware {
            class: class.id.to_string(),
            board: class.board.to_string(),
            ram_mb: class.ram_mb,
            config_txt: class.config_txt(opts),
            config_txt_all: class.config_txt_all(opts),
            kubelet_args: class.kubelet_args(),
        }
    }
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
    /// The admin's crypt(3) password hash for console login (a secret: never
    /// serialised with the plan); `None` keeps the password locked.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
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
    /// Extra `config.yaml` settings for this node's role, each `key=value`
    /// (profile `k3s.server_args` / `k3s.agent_args`; a repeated key means a list).
    pub extra_args: Vec<String>,
    /// Extra kubelet args (profile + hardware defaults).
    pub kubelet_args: Vec<String>,
    /// Directory of airgap files to bundle on the card (k3s-arm64, install.sh,
    /// k3s-airgap-images-arm64.tar.zst), if the profile asks for it.
    pub airgap_dir: Option<std::path::PathBuf>,
    /// Servers: where etcd snapshots also go (`[k3s.etcd_s3]`); the credentials come
    /// from the secrets directory, never through the plan.
    pub etcd_s3: Option<EtcdS3Plan>,
}

/// A server's off-card etcd snapshot target (`[k3s.etcd_s3]`, resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EtcdS3Plan {
    /// S3 host (and port), no scheme.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Folder in the bucket, if any.
    pub folder: Option<String>,
    /// Region.
    pub region: String,
    /// CA bundle on the build machine the endpoint is checked against, if any.
    pub endpoint_ca: Option<std::path::PathBuf>,
    /// Plain HTTP.
    pub insecure: bool,
    /// HTTPS without certificate checks.
    pub skip_ssl_verify: bool,
}

impl EtcdS3Plan {
    /// Where snapshots go, in words: `s3://bucket/folder at endpoint`.
    pub fn describe(&self) -> String {
        let scheme = if self.insecure { "http" } else { "https" };
        let folder = self
            .folder
            .as_deref()
            .map(|f| format!("/{f}"))
            .unwrap_or_default();
        format!(
            "s3://{}{folder} at {scheme}://{} ({})",
            self.bucket, self.endpoint, self.region
        )
    }
}

impl FirstBootAction {
    /// The action in words, e.g. `join servers via 192.168.86.29, 192.168.86.30`.
    pub fn describe(&self) -> String {
        let list = |via: &[Ipv4Addr]| {
            via.iter()
                .map(|ip| ip.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Self::InitCluster => "init cluster (cluster-init)".to_string(),
            Self::JoinServers { via } => format!("join as server via {}", list(via)),
            Self::JoinAgent { via } => format!("join as agent via {}", list(via)),
        }
    }
}

/// Why no plan could be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The profile has validation errors.
    #[error("the profile has {} error(s):\n  {}", .0.errors.len(), .0.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid(Findings),
    /// SSH keys could not be resolved.
    #[error("SSH keys: {0}")]
    Keys(#[from] KeyError),
    /// A `[[files]]` or `[[run_once]]` source could not be read.
    #[error(transparent)]
    Customize(#[from] CustomizeError),
}

/// One [`NodePlan`] per node of `profile`, in profile order: validates the profile,
/// resolves SSH keys (fetching GitHub users' keys) and decides each card's first boot
/// from the cluster state kept with `secrets`.
pub fn plan(profile: &Profile, secrets: &ClusterSecrets) -> Result<Vec<NodePlan>, PlanError> {
    check(profile)?;
    let keys = keys::resolve(profile, KeySources::All)?;
    let custom = customize::resolve(profile)?;
    Ok(resolve(profile, secrets.state(), keys, custom))
}

fn check(profile: &Profile) -> Result<(), PlanError> {
    let findings = validate(profile);
    if findings.is_ok() {
        Ok(())
    } else {
        Err(PlanError::Invalid(findings))
    }
}

/// Like [`plan()`] with already resolved `ssh_keys` and an explicit cluster `state`
/// (used by `piimg plan`, which neither fetches keys nor creates secrets).
///
/// First boot: agents join via the VIP (if any) then every server; servers join via
/// the VIP then the other servers; only the bootstrap server initialises, and only
/// while `state` says its card was never issued — or when it is the only server,
/// which has no peer to join.
pub fn plan_with(
    profile: &Profile,
    state: &ClusterState,
    ssh_keys: Vec<String>,
) -> Result<Vec<NodePlan>, PlanError> {
    check(profile)?;
    let custom = customize::resolve(profile)?;
    Ok(resolve(profile, state, ssh_keys, custom))
}

/// The plans of a validated profile.
fn resolve(
    profile: &Profile,
    state: &ClusterState,
    ssh_keys: Vec<String>,
    custom: Customize,
) -> Vec<NodePlan> {
    let bootstrap = profile
        .bootstrap()
        .map(|n| n.name.clone())
        .unwrap_or_default();
    // Bootstrap server first, then the other servers in profile order.
    // validate() guarantees every server has a static address.
    let mut servers: Vec<(String, Ipv4Addr)> = profile
        .servers()
        .filter_map(|n| Some((n.name.clone(), n.ip?)))
        .collect();
    servers.sort_by_key(|(name, _)| *name != bootstrap);
    let vip = profile.k3s.vip;
    let via_except = |me: &str| via(vip, &servers, me);
    let access = Access {
        admin_user: profile.access.admin_user.clone(),
        ssh_authorized_keys: ssh_keys,
        password_login: profile.access.password_login,
        password_hash: profile.access.password_hash.clone(),
    };
    let wifi = profile.wifi.as_ref().map(|w| piimg_contract::Wifi {
        ssid: w.ssid.clone(),
        country: w.country.clone(),
        hidden: w.hidden,
    });
    // validate() guarantees the PSK derives.
    let wifi_psk = profile
        .wifi
        .as_ref()
        .and_then(|w| crate::profile::wifi::psk_hex(&w.ssid, &w.psk).ok());
    let mut out = Vec::with_capacity(profile.nodes.len());
    for node in &profile.nodes {
        // validate() guarantees every class is known.
        let Some(class) = hardware::class(&node.hardware) else {
            continue;
        };
        let mut hw = Hardware::of(class, &profile.hardware);
        let node_storage = storage::resolve(node, class.board, &profile.storage);
        hw.config_txt.extend(storage::config_txt(
            class.board,
            &node_storage.card,
            &profile.storage,
        ));
        let is_bootstrap = node.name == bootstrap;
        let first_boot = match node.role {
            Role::Agent => FirstBootAction::JoinAgent {
                via: via_except(""),
            },
            Role::Server if may_start_cluster(is_bootstrap, state, servers.len()) => {
                FirstBootAction::InitCluster
            }
            Role::Server => FirstBootAction::JoinServers {
                via: via_except(&node.name),
            },
        };
        let server = node.role == Role::Server;
        let mut labels = hw_labels(class);
        labels.extend(node.labels.clone());
        let mut tls_san: Vec<String> = Vec::new();
        if server {
            for san in vip
                .iter()
                .map(|v| v.to_string())
                .chain(profile.k3s.tls_san.iter().cloned())
            {
                if !tls_san.contains(&san) {
                    tls_san.push(san);
                }
            }
        }
        let kubelet_args = merge_args([
            &hw.kubelet_args,
            &storage::kubelet_args(node_storage.card.sd_wear),
            &profile.k3s.kubelet_args,
            &node.kubelet_args,
        ]);
        out.push(NodePlan {
            cluster: profile.cluster.name.clone(),
            profile: profile.name(),
            name: node.name.clone(),
            domain: profile.cluster.domain.clone(),
            role: node.role,
            bootstrap: is_bootstrap,
            first_boot,
            network: Network {
                interface: profile.network.interface.clone(),
                mac: node.mac.clone(),
                address: node.ip,
                prefix_len: profile.network.cidr.prefix_len(),
                gateway: profile.network.gateway,
                dns: profile.network.dns.clone(),
                search: profile.network.search.clone(),
                wifi: wifi.clone(),
            },
            wifi_psk: wifi_psk.clone(),
            hardware: hw,
            access: access.clone(),
            k3s: NodeK3s {
                version: profile.k3s.version.clone().unwrap_or_default(),
                vip,
                tls_san,
                disable: if server {
                    profile.k3s.disable.clone()
                } else {
                    Vec::new()
                },
                etcd_snapshot_schedule: server.then(|| profile.k3s.etcd_snapshot_schedule.clone()),
                etcd_snapshot_retention: server.then_some(profile.k3s.etcd_snapshot_retention),
                labels,
                taints: node.taints.clone(),
                extra_args: if server {
                    profile.k3s.server_args.clone()
                } else {
                    profile.k3s.agent_args.clone()
                },
                kubelet_args,
                airgap_dir: profile
                    .k3s
                    .airgap_dir
                    .as_deref()
                    .map(|d| profile.resolve_path(d)),
                etcd_s3: if server {
                    profile.k3s.etcd_s3.as_ref().map(|s| EtcdS3Plan {
                        endpoint: s.endpoint.clone(),
                        bucket: s.bucket.clone(),
                        folder: s.folder.clone(),
                        region: s.region.clone(),
                        endpoint_ca: s.endpoint_ca.as_deref().map(|p| profile.resolve_path(p)),
                        insecure: s.insecure,
                        skip_ssl_verify: s.skip_ssl_verify,
                    })
                } else {
                    None
                },
            },
            servers: servers.clone(),
            overlay_dir: profile
                .cluster
                .overlay_dir
                .as_deref()
                .map(|d| profile.resolve_path(d)),
            storage: node_storage,
            customize: custom.clone(),
        });
    }
    out
}

/// THE rule of who may start a new cluster (everything else asks
/// [`NodePlan::starts_cluster`]): only the bootstrap server, and only while `state`
/// (the one record of issued cards, `ClusterSecrets::bootstrap_issued`) says no
/// bootstrap card was issued yet — or when it is the cluster's only server, which has
/// no peer to join.
fn may_start_cluster(is_bootstrap: bool, state: &ClusterState, server_count: usize) -> bool {
    is_bootstrap && (!state.bootstrap_issued || server_count == 1)
}

impl NodePlan {
    /// Whether this node's card may initialise a new cluster (`cluster-init`, the CA
    /// files, a first bring-up): decided once, by the plan, in its `first_boot`.
    pub fn starts_cluster(&self) -> bool {
        self.role == Role::Server
            && self.bootstrap
            && matches!(self.first_boot, FirstBootAction::InitCluster)
    }
}

fn hw_labels(class: &hardware::HardwareClass) -> BTreeMap<String, String> {
    class.labels()
}

/// Merges `key=value` argument lists; a later list overrides an earlier one key by key
/// (keeping the earlier position), so profile settings beat hardware defaults.
fn merge_args<'a>(lists: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<String> {
    let key = |a: &str| a.split('=').next().unwrap_or_default().to_string();
    let mut out: Vec<String> = Vec::new();
    for arg in lists.into_iter().flatten() {
        match out.iter_mut().find(|o| key(o) == key(arg)) {
            Some(slot) => *slot = arg.clone(),
            None => out.push(arg.clone()),
        }
    }
    out
}

/// The IPs node `me` joins through, in order ([`piimg_contract::join_order`]: the VIP
/// first, then the other servers).
fn via(vip: Option<Ipv4Addr>, servers: &[(String, Ipv4Addr)], me: &str) -> Vec<Ipv4Addr> {
    join_order(vip, servers.iter().map(|(n, ip)| (n.as_str(), *ip)), me)
        .into_iter()
        .map(|t| t.ip)
        .collect()
}

/// What re-flashing this node's card would do once the cluster is up: the bootstrap
/// server joins its peers instead of initialising (unless it is the only server);
/// every other node does what its first boot does.
pub fn reflash_action(plan: &NodePlan) -> FirstBootAction {
    match &plan.first_boot {
        FirstBootAction::InitCluster if plan.servers.len() > 1 => FirstBootAction::JoinServers {
            via: via(plan.k3s.vip, &plan.servers, &plan.name),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_args_override_earlier_by_key() {
        let hw = vec![
            "system-reserved=cpu=200m".to_string(),
            "max-pods=110".to_string(),
        ];
        let prof = vec!["max-pods=50".to_string()];
        assert_eq!(
            merge_args([&hw, &prof]),
            ["system-reserved=cpu=200m", "max-pods=50"]
        );
    }
}
