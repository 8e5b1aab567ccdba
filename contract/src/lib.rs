//! The card contract: what `piimg build` writes onto a boot partition for the agent.
//!
//! This crate is the ONE definition the builder and the agent use. The builder serialises
//! [`NodeConfig`] and [`CardSecrets`] to JSON on the boot partition; the agent
//! deserialises them. Every struct rejects unknown fields and carries
//! [`CONTRACT_VERSION`], so a builder and an agent that disagree fail loudly
//! instead of silently ignoring each other.
//!
//! Secrets live in a separate file ([`SECRETS_FILE`]) so the agent can scrub them
//! from the (world-readable, FAT) boot partition as soon as it has moved them into
//! the root filesystem, while the non-secret [`NodeConfig`] stays for `piimg inspect`.

pub mod join_order;
pub mod rfc3339;

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};

pub mod customize;
pub mod status_slots;
pub mod storage;

/// Version of the card contract; bump on any incompatible change.
pub const CONTRACT_VERSION: u32 = 2;

/// Where Raspberry Pi OS (Bookworm and later) mounts the boot partition.
pub const BOOT_MOUNT: &str = "/boot/firmware";
/// Directory on the boot partition that holds everything piimg puts there.
pub const CARD_DIR: &str = "piimg";
/// The node's configuration, relative to the boot partition root.
pub const NODE_CONFIG_FILE: &str = "piimg/node.json";
/// The node's secrets, relative to the boot partition root; scrubbed by the agent.
pub const SECRETS_FILE: &str = "piimg/secrets.json";
/// The agent binary, relative to the boot partition root.
pub const AGENT_FILE: &str = "piimg/piimg-firstboot";
/// The agent's progress report, relative to the boot partition root.
pub const STATUS_FILE: &str = "piimg/status.json";
/// The build manifest (who built this card, from what), relative to the boot partition root.
pub const MANIFEST_FILE: &str = "piimg/manifest.json";
/// Directory for bundled k3s airgap files, relative to the boot partition root.
pub const AIRGAP_DIR: &str = "piimg/airgap";
/// Where phase 1 installs the agent on the root filesystem.
pub const AGENT_INSTALL_PATH: &str = "/usr/local/sbin/piimg-firstboot";
/// The systemd unit (rendered by the builder into [`NodeConfig::files`]) that runs phase 2.
pub const AGENT_UNIT: &str = "piimg-firstboot.service";
/// Written once phase 1 has handed off on a cloud-init image: until it exists, the
/// card's user-data re-arms cloud-init's once-per-instance `runcmd` on every boot, so
/// a power cut or a failed step in phase 1 is resumed on the next boot.
pub const PHASE1_DONE_FILE: &str = "/var/lib/piimg/phase1-done";
/// The agent's persisted state machine on the root filesystem.
pub const STATE_FILE: &str = "/var/lib/piimg/state.json";
/// Where a server card's limited node-cleaner client certificate lands (a secret file).
pub const NODE_CLEANER_CERT: &str = "/var/lib/piimg/node-cleaner.crt";
/// Where a server card's node-cleaner key lands (a secret file, 0600).
pub const NODE_CLEANER_KEY: &str = "/var/lib/piimg/node-cleaner.key";
/// Where the agent keeps the pinned cluster CA bundle it hands to curl.
pub const PINNED_CA_FILE: &str = "/var/lib/piimg/cluster-ca.crt";

/// Everything the agent needs to provision one node, minus secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Must equal [`CONTRACT_VERSION`].
    pub contract_version: u32,
    /// Cluster name from the profile.
    pub cluster: String,
    /// Node name; also the hostname and the k3s node name.
    pub node_name: String,
    /// DNS domain of the cluster (for /etc/hosts), if any.
    pub domain: Option<String>,
    /// Server (control plane) or agent (worker).
    pub role: Role,
    /// True on the bootstrap server (the first server unless the profile names one).
    /// It initialises a cluster only if [`Ha::first_bring_up`] is also true.
    pub bootstrap: bool,
    /// All control-plane servers, bootstrap server first.
    pub servers: Vec<ServerRef>,
    /// Control-plane virtual IP, if the profile has one.
    pub vip: Option<Ipv4Addr>,
    /// Static network settings for the wired interface.
    pub network: Network,
    /// Admin login.
    pub admin: Admin,
    /// How to install and configure k3s.
    pub k3s: K3s,
    /// How this card's first boot is triggered (depends on the OS release).
    pub boot: BootHook,
    /// Non-secret files the agent lays onto the root filesystem (rendered by the builder).
    pub files: Vec<RootFile>,
    /// How this node finds and trusts its cluster (CA pinning, first bring-up,
    /// stale-member removal).
    #[serde(default)]
    pub ha: Ha,
    /// Boot device, data disk and SD-wear settings.
    #[serde(default)]
    pub storage: storage::Storage,
    /// Time zone, locale, keyboard, packages, root files and run-once scripts.
    #[serde(default)]
    pub customize: customize::Customize,
}

/// The HA part of the card: what the join decision needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    /// The cluster's server CA bundle (`server-ca.crt`) exactly as k3s serves it at
    /// `/cacerts`. When set, the agent joins only servers that serve these bytes and
    /// whose TLS certificate chains to it; `None` disables pinning.
    pub cluster_ca_pem: Option<String>,
    /// k3s's hash of that bundle (the `<ca-hash>` of the secure token), for messages.
    pub cluster_ca_sha256: Option<String>,
    /// True only on the bootstrap card of a first-ever bring-up: the one card allowed
    /// to initialise a cluster, and only if no server of it answers during
    /// [`Ha::init_window_secs`]. A rebuilt bootstrap card has `false` and waits for a
    /// peer instead.
    pub first_bring_up: bool,
    /// How long (seconds) a first-bring-up card keeps probing every peer and the VIP
    /// before it initialises; any peer serving this cluster's CA within the window
    /// makes it join instead. `0` (cards built before this setting) means one round.
    #[serde(default)]
    pub init_window_secs: u64,
    /// Server cards: the limited client identity that may remove this node's stale
    /// Node before it re-joins (files come from [`CardSecrets::files`]).
    pub node_cleaner: Option<NodeCleaner>,
}

/// Paths on the node of the node-cleaner client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeCleaner {
    /// PEM client certificate (CN `system:piimg:node-cleaner`), e.g. [`NODE_CLEANER_CERT`].
    pub cert: String,
    /// PEM private key, e.g. [`NODE_CLEANER_KEY`].
    pub key: String,
}

/// Node role in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// k3s server (control plane, embedded etcd).
    Server,
    /// k3s agent (worker).
    Agent,
}

/// A control-plane server the node may join through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRef {
    /// Node name of the server.
    pub name: String,
    /// Its static IP address.
    pub ip: Ipv4Addr,
}

/// IPv4 configuration of the node's interface: a static address, or DHCP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Interface name to configure (e.g. `eth0`, or `wlan0` with [`Network::wifi`]).
    pub interface: String,
    /// Optional MAC address to bind the connection to.
    pub mac: Option<String>,
    /// The node's static address; `None`: the interface takes a DHCP lease (the
    /// prefix, gateway and resolvers below are then the LAN's, for messages only).
    pub address: Option<Ipv4Addr>,
    /// Prefix length of the LAN (e.g. 24).
    pub prefix_len: u8,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// DNS resolvers, in order.
    pub dns: Vec<IpAddr>,
    /// DNS search domains.
    pub search: Vec<String>,
    /// The Wi-Fi network, when the node joins one (its PSK is a secret and never
    /// in `node.json`).
    #[serde(default)]
    pub wifi: Option<Wifi>,
}

/// The Wi-Fi network a node joins (non-secret part).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wifi {
    /// The network's SSID.
    pub ssid: String,
    /// The regulatory domain (ISO 3166 alpha-2, e.g. `GB`) the radio transmits under.
    pub country: String,
    /// True when the network does not broadcast its SSID.
    #[serde(default)]
    pub hidden: bool,
}

/// The admin user and how it logs in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Login name.
    pub user: String,
    /// OpenSSH public keys, one per entry.
    pub ssh_authorized_keys: Vec<String>,
    /// Whether SSH password login stays enabled (off by default).
    pub password_login: bool,
}

/// How k3s is installed and configured on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3s {
    /// Pinned k3s version (e.g. `v1.31.4+k3s1`); the installer is fetched for this tag only.
    pub version: String,
    /// `config.yaml` content rendered by the builder, without token, `server:` or
    /// `cluster-init:` (the agent adds those when it decides how to join).
    pub config_yaml: String,
    /// Airgap files bundled on the card, if any.
    pub airgap: Option<Airgap>,
}

/// k3s airgap files on the card, relative to the boot partition root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Airgap {
    /// The `k3s-arm64` binary.
    pub binary: String,
    /// The k3s `install.sh` script.
    pub install_script: String,
    /// The images tarball (`k3s-airgap-images-arm64.tar.zst`), if bundled.
    pub images: Option<String>,
}

/// The first-boot trigger the builder installed; the agent undoes it when done.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BootHook {
    /// Bookworm: `systemd.run=` arguments appended to cmdline.txt; the agent removes
    /// exactly these arguments after phase 1.
    SystemdRun {
        /// The exact cmdline.txt arguments that were added for the hook.
        cmdline_args: Vec<String>,
    },
    /// Trixie: cloud-init NoCloud files on the boot partition start the agent.
    CloudInit {
        /// The instance id written to `meta-data` (unique per build).
        instance_id: String,
    },
}

/// A file the agent writes into the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootFile {
    /// Absolute path on the node (e.g. `/etc/ssh/sshd_config.d/50-piimg.conf`).
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// File content.
    pub content: String,
    /// Owner by name, resolved on the node; `None` is root:root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<customize::FileOwner>,
}

/// Secrets for one node; lives in [`SECRETS_FILE`] until the agent scrubs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardSecrets {
    /// Must equal [`CONTRACT_VERSION`].
    pub contract_version: u32,
    /// The k3s join token (secure `K10…` form where the CA is known in advance):
    /// `K10<ca-hash>::server:<secret>` on server cards; on agent cards the agent token
    /// `K10<ca-hash>::node:<secret>` (the server token only for clusters created
    /// before piimg made an agent token).
    pub token: String,
    /// Server cards: k3s's `agent-token` secret (the same on every server), written to
    /// `config.yaml` next to `token`; `None` on agent cards and for older clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
    /// Pre-seeded /etc/rancher/node/password, so a re-imaged node is recognised.
    pub node_password: Option<String>,
    /// Secret files for the root filesystem (CA material, limited kubeconfig, the
    /// Wi-Fi keyfile), mode 0600.
    pub files: Vec<RootFile>,
    /// The admin's password as a crypt(3) hash (`$y$…` yescrypt or `$6$…`
    /// sha512-crypt) for console login; `None` keeps the password locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// Why a contract file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// The JSON did not parse or did not match the schema.
    #[error("{file}: not a valid piimg card file: {source}")]
    Parse {
        /// Which file on the card.
        file: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// Builder and agent speak different contract versions.
    #[error(
        "{file}: card contract version {found}, this agent speaks {expected}; rebuild the card with a matching piimg"
    )]
    Version {
        /// Which file on the card.
        file: &'static str,
        /// Version in the file.
        found: u32,
        /// Version of this build.
        expected: u32,
    },
}

impl NodeConfig {
    /// Parses `node.json` and checks the contract version.
    pub fn from_json(text: &str) -> Result<Self, ContractError> {
        let cfg: Self = serde_json::from_str(text).map_err(|source| ContractError::Parse {
            file: NODE_CONFIG_FILE,
            source,
        })?;
        check_version(NODE_CONFIG_FILE, cfg.contract_version)?;
        Ok(cfg)
    }

    /// Serialises to pretty JSON (stable field order).
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl CardSecrets {
    /// Parses `secrets.json` and checks the contract version.
    pub fn from_json(text: &str) -> Result<Self, ContractError> {
        let s: Self = serde_json::from_str(text).map_err(|source| ContractError::Parse {
            file: SECRETS_FILE,
            source,
        })?;
        check_version(SECRETS_FILE, s.contract_version)?;
        Ok(s)
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

fn check_version(file: &'static str, found: u32) -> Result<(), ContractError> {
    if found == CONTRACT_VERSION {
        Ok(())
    } else {
        Err(ContractError::Version {
            file,
            found,
            expected: CONTRACT_VERSION,
        })
    }
}

/// Outcome of one agent step, as reported in [`AgentStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepResult {
    /// The step is running now (or the agent died inside it).
    Running,
    /// The step finished.
    Ok,
    /// The step failed; the next run resumes here.
    Error,
}

/// One step's latest outcome in [`AgentStatus::steps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step name (e.g. `hostname`, `k3s-ready`).
    pub name: String,
    /// Latest outcome.
    pub result: StepResult,
    /// What happened, or why it failed.
    pub message: String,
    /// When this outcome was recorded (RFC 3339, UTC).
    pub at: String,
}

/// The agent's progress report on the card ([`STATUS_FILE`]), readable on any machine.
///
/// Written after every step. Unknown fields are tolerated so an older `piimg inspect`
/// can read a newer agent's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// [`CONTRACT_VERSION`] of the agent that wrote it.
    pub contract_version: u32,
    /// Node name from the card.
    pub node_name: String,
    /// Version of the agent binary.
    pub agent_version: String,
    /// The step last started (or `complete` once provisioning finished).
    pub step: String,
    /// Outcome of that step.
    pub result: StepResult,
    /// Human-readable message for that step.
    pub message: String,
    /// True once every step finished and the agent disabled itself.
    pub complete: bool,
    /// When the agent first ran on this card (RFC 3339, UTC; as the node's clock saw it).
    pub started_at: String,
    /// When this report was written (RFC 3339, UTC).
    pub updated_at: String,
    /// Latest outcome of every step reached so far, in run order, one entry per step.
    pub steps: Vec<StepRecord>,
}

impl AgentStatus {
    /// Parses `status.json`.
    pub fn from_json(text: &str) -> Result<Self, ContractError> {
        serde_json::from_str(text).map_err(|source| ContractError::Parse {
            file: STATUS_FILE,
            source,
        })
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
