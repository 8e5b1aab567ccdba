//! The profile as written in TOML: serde types that reject unknown keys.
//!
//! A profile describes one cluster: `[cluster]`, `[network]`, `[k3s]`, `[access]`,
//! optional `[hardware]` options and one `[[nodes]]` table per node. Defaults live
//! here; cross-field rules live in [`super::validate`].

use super::net::Ipv4Cidr;
use piimg_contract::Role;
use piimg_contract::storage::{DiskBus, SdWear};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// Default etcd snapshot schedule: every six hours.
pub const DEFAULT_SNAPSHOT_SCHEDULE: &str = "0 */6 * * *";
/// Default number of etcd snapshots kept.
pub const DEFAULT_SNAPSHOT_RETENTION: u32 = 10;

/// A whole cluster profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Cluster identity.
    pub cluster: Cluster,
    /// The LAN every node lives on.
    pub network: Network,
    /// k3s settings.
    pub k3s: K3s,
    /// Admin access.
    pub access: Access,
    /// Cluster-wide hardware options.
    #[serde(default)]
    pub hardware: HardwareOptions,
    /// Optional add-ons deployed on the servers.
    #[serde(default)]
    pub addons: Addons,
    /// `[storage]`: SD-card wear mitigation and PCIe options.
    #[serde(default)]
    pub storage: StorageOptions,
    /// The Wi-Fi network the nodes join (with `network.interface = "wlan0"`).
    #[serde(default)]
    pub wifi: Option<Wifi>,
    /// The nodes, in the order written.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// `[locale]`: time zone, locale and keyboard layout of every node.
    #[serde(default)]
    pub locale: Option<super::day_one::Locale>,
    /// `[packages]`: Debian packages every node installs before k3s.
    #[serde(default)]
    pub packages: super::day_one::Packages,
    /// `[[files]]`: files laid onto every node's root file system.
    #[serde(default)]
    pub files: Vec<super::day_one::FileEntry>,
    /// `[[run_once]]`: scripts every node runs once, in order, before k3s.
    #[serde(default)]
    pub run_once: Vec<super::day_one::RunOnceEntry>,
    /// The file this profile was loaded from (empty when parsed from text).
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[cluster]`: name and identity of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name (also names the secrets).
    pub name: String,
    /// DNS domain for `/etc/hosts` entries (`node.domain`), if any.
    #[serde(default)]
    pub domain: Option<String>,
    /// The server that may initialise a brand-new cluster (default: the first server).
    #[serde(default)]
    pub bootstrap: Option<String>,
    /// Directory (relative to the profile) whose templates override `overlays/` file by file.
    #[serde(default)]
    pub overlay_dir: Option<PathBuf>,
}

/// `[network]`: the LAN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The LAN, e.g. `192.168.86.0/24`.
    pub cidr: Ipv4Cidr,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolvers, in order.
    pub dns: Vec<IpAddr>,
    /// Interface to configure (default `eth0`; `wlan0` needs `[wifi]`).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// DNS search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

fn default_interface() -> String {
    "eth0".to_string()
}

/// `[k3s]`: version and cluster-wide k3s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    /// Pinned k3s release tag, e.g. `v1.31.4+k3s1`.
    #[serde(default)]
    pub version: Option<String>,
    /// A release channel; rejected by validation (re-flashed nodes must run the same k3s).
    #[serde(default)]
    pub channel: Option<String>,
    /// Control-plane virtual IP (kube-vip), if any.
    #[serde(default)]
    pub vip: Option<Ipv4Addr>,
    /// Extra TLS SANs for the API server certificate.
    #[serde(default)]
    pub tls_san: Vec<String>,
    /// Packaged components to disable (e.g. `servicelb`, `traefik`).
    #[serde(default)]
    pub disable: Vec<String>,
    /// etcd snapshot cron schedule.
    #[serde(default = "default_schedule")]
    pub etcd_snapshot_schedule: String,
    /// etcd snapshots to keep.
    #[serde(default = "default_retention")]
    pub etcd_snapshot_retention: u32,
    /// Extra `config.yaml` settings for servers, each `key=value`.
    #[serde(default)]
    pub server_args: Vec<String>,
    /// Extra `config.yaml` settings for agents, each `key=value`.
    #[serde(default)]
    pub agent_args: Vec<String>,
    /// Extra kubelet arguments for every node, each `key=value`.
    #[serde(default)]
    pub kubelet_args: Vec<String>,
    /// Directory (relative to the profile) of k3s airgap files to bundle on every card.
    #[serde(default)]
    pub airgap_dir: Option<PathBuf>,
    /// Seconds the bootstrap server's first card keeps probing every other server
    /// and the VIP before it initialises a new cluster (any of them answering with
    /// this cluster's CA makes it join instead).
    #[serde(default = "default_init_window")]
    pub init_window_seconds: u64,
    /// Validity in days of each server card's node-cleaner certificate (issued at
    /// build time; a rebuild issues a new one).
    #[serde(default = "default_node_cleaner_days")]
    pub node_cleaner_days: u32,
    /// `[k3s.etcd_s3]`: where servers also send their etcd snapshots (off the card).
    #[serde(default)]
    pub etcd_s3: Option<EtcdS3>,
}

/// `[k3s.etcd_s3]`: an S3-compatible bucket (AWS, MinIO, …) for etcd snapshots.
/// The access and secret key live in the secrets directory, never in the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdS3 {
    /// Host (and port) of the S3 API, without a scheme, e.g. `minio.lan:9000`.
    #[serde(default = "default_s3_endpoint")]
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// Folder inside the bucket (e.g. the cluster name), if any.
    #[serde(default)]
    pub folder: Option<String>,
    /// Bucket region.
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// PEM CA bundle the endpoint's certificate is checked against (a self-hosted
    /// MinIO); relative paths are relative to the profile.
    #[serde(default)]
    pub endpoint_ca: Option<PathBuf>,
    /// Plain HTTP instead of HTTPS.
    #[serde(default)]
    pub insecure: bool,
    /// HTTPS without checking the certificate.
    #[serde(default)]
    pub skip_ssl_verify: bool,
}

/// k3s's default `etcd-s3-endpoint`.
pub const DEFAULT_S3_ENDPOINT: &str = "s3.amazonaws.com";
/// k3s's default `etcd-s3-region`.
pub const DEFAULT_S3_REGION: &str = "us-east-1";

fn default_s3_endpoint() -> String {
    DEFAULT_S3_ENDPOINT.to_string()
}

fn default_s3_region() -> String {
    DEFAULT_S3_REGION.to_string()
}

/// `[storage]`: cluster-wide storage options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageOptions {
    /// SD-card wear mitigation on nodes whose root is on an SD card (`minimal` by
    /// default, `off` leaves the OS as it is).
    #[serde(default = "default_sd_wear")]
    pub sd_wear: SdWear,
    /// Pi 5 with an NVMe disk: run the PCIe connector at Gen 3 (`dtparam=pciex1_gen=3`;
    /// the board is certified for Gen 2 only).
    #[serde(default)]
    pub pcie_gen3: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            sd_wear: default_sd_wear(),
            pcie_gen3: false,
        }
    }
}

fn default_sd_wear() -> SdWear {
    SdWear::Minimal
}

/// kubelet `image-gc-high-threshold` that `sd_wear = "minimal"` sets: image garbage
/// collection starts at 70 % disk use (kubelet's default is 85 %).
pub const SD_IMAGE_GC_HIGH: u8 = 70;
/// kubelet `image-gc-low-threshold` that `sd_wear = "minimal"` sets: it frees down
/// to 50 % (kubelet's default is 80 %).
pub const SD_IMAGE_GC_LOW: u8 = 50;

/// Default of `k3s.init_window_seconds`: five minutes, long enough for a switch port,
/// a power cut or the other servers' k3s to come back.
pub const DEFAULT_INIT_WINDOW_SECS: u64 = 300;
/// Default of `k3s.node_cleaner_days`: one year.
pub const DEFAULT_NODE_CLEANER_DAYS: u32 = 365;

fn default_init_window() -> u64 {
    DEFAULT_INIT_WINDOW_SECS
}

fn default_node_cleaner_days() -> u32 {
    DEFAULT_NODE_CLEANER_DAYS
}

fn default_schedule() -> String {
    DEFAULT_SNAPSHOT_SCHEDULE.to_string()
}

fn default_retention() -> u32 {
    DEFAULT_SNAPSHOT_RETENTION
}

/// `[addons]`: optional add-ons laid on every server card as k3s HelmChart manifests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addons {
    /// cert-manager.
    #[serde(default)]
    pub cert_manager: bool,
    /// Prometheus + Grafana (kube-prometheus-stack).
    #[serde(default)]
    pub monitoring: bool,
}

/// `[wifi]`: the wireless network every node joins (Raspberry Pi OS's `wlan0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    /// The network's SSID (1 to 32 bytes).
    pub ssid: String,
    /// The WPA passphrase (8 to 63 printable ASCII characters) or the 64-hex PSK;
    /// only the PSK derived from it goes on a card.
    pub psk: String,
    /// Regulatory domain: ISO 3166 alpha-2 country code, e.g. `GB`.
    pub country: String,
    /// The network does not broadcast its SSID.
    #[serde(default)]
    pub hidden: bool,
}

/// `[access]`: the admin user and its SSH keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// Admin login name.
    pub admin_user: String,
    /// Allow SSH password login (off by default).
    #[serde(default)]
    pub password_login: bool,
    /// OpenSSH public-key lines given inline.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Public-key files (`~` is the home directory; relative paths are relative to the profile).
    #[serde(default)]
    pub ssh_key_files: Vec<String>,
    /// GitHub users whose public keys (`https://github.com/<user>.keys`) are fetched at build time.
    #[serde(default)]
    pub github_users: Vec<String>,
    /// The admin's password as a crypt(3) hash (`$y$…` yescrypt or `$6$…`
    /// sha512-crypt) for console login; without it the password stays locked.
    #[serde(default)]
    pub password_hash: Option<String>,
}

/// `[hardware]`: options applied to every node's hardware class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareOptions {
    /// Boot Pi 5 boards with the 4 KiB-page kernel (`kernel=kernel8.img`); on by default.
    #[serde(default = "yes")]
    pub pi5_4k_pages: bool,
    /// Turn Wi-Fi off (`dtoverlay=disable-wifi`).
    #[serde(default)]
    pub disable_wifi: bool,
    /// Turn Bluetooth off (`dtoverlay=disable-bt`).
    #[serde(default)]
    pub disable_bluetooth: bool,
}

impl Default for HardwareOptions {
    fn default() -> Self {
        Self {
            pi5_4k_pages: true,
            disable_wifi: false,
            disable_bluetooth: false,
        }
    }
}

fn yes() -> bool {
    true
}

/// The disk a node boots from and keeps its root file system on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// An SD card (the default).
    #[default]
    Sd,
    /// A USB disk (SSD through a USB adapter).
    Usb,
    /// An NVMe SSD on the Pi 5's PCIe connector.
    Nvme,
}

/// `[[nodes]]`: one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// Node name = hostname = k3s node name.
    pub name: String,
    /// Static IPv4 address (exactly one of `ip` and `dhcp`).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Take the address from DHCP instead of a static `ip` (agents only).
    #[serde(default)]
    pub dhcp: bool,
    /// `server` or `agent`.
    pub role: Role,
    /// Hardware class, e.g. `pi5-8gb` (see [`super::hardware::CLASSES`]).
    pub hardware: String,
    /// Extra node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Node taints, `key=value:Effect`.
    #[serde(default)]
    pub taints: Vec<String>,
    /// MAC address to bind the network connection to.
    #[serde(default)]
    pub mac: Option<String>,
    /// The disk the node boots from (the card image is flashed to it).
    #[serde(default)]
    pub storage: Storage,
    /// A disk for k3s's data while the node boots from its SD card.
    #[serde(default)]
    pub data_disk: Option<DiskBus>,
    /// Extra kubelet arguments for this node, each `key=value`.
    #[serde(default)]
    pub kubelet_args: Vec<String>,
}

impl Profile {
    /// Profile name: the file stem (`homelab` for `profiles/homelab.toml`).
    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.cluster.name.clone())
    }

    /// Directory relative paths in the profile are resolved against.
    pub fn base_dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// `p` resolved against [`base_dir`](Self::base_dir) when relative.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The servers, in profile order.
    pub fn servers(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Server)
    }

    /// The bootstrap server: the one named by `cluster.bootstrap`, else the first server.
    pub fn bootstrap(&self) -> Option<&Node> {
        match &self.cluster.bootstrap {
            Some(name) => self
                .nodes
                .iter()
                .find(|n| &n.name == name && n.role == Role::Server),
            None => self.servers().next(),
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
