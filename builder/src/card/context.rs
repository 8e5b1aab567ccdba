//! The data every overlay template sees: `plan` (the node's [`NodePlan`]) and `card`
//! (values derived from it that templates should not have to compute).

use crate::plan::NodePlan;
use piimg_contract::{
    AGENT_FILE, AGENT_INSTALL_PATH, AGENT_UNIT, BOOT_MOUNT, PHASE1_DONE_FILE, Role,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// Template data: `{{plan.…}}` and `{{card.…}}`.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateData<'a> {
    /// The node's resolved plan.
    pub plan: &'a NodePlan,
    /// Derived values.
    pub card: CardValues,
}

/// Values derived from the plan for the templates.
#[derive(Debug, Clone, Serialize)]
pub struct CardValues {
    /// `server` or `agent`.
    pub role: &'static str,
    /// True for servers.
    pub is_server: bool,
    /// The node's static address, e.g. `192.168.86.31`; empty with DHCP.
    pub address: String,
    /// Address with prefix, e.g. `192.168.86.31/24`; empty with DHCP.
    pub address_cidr: String,
    /// True when the interface takes a DHCP lease instead of a static address.
    pub dhcp: bool,
    /// The Wi-Fi PSK (64 hex digits) when the node joins Wi-Fi, else empty. Only the
    /// templates that end up in secret places use it (the Bookworm keyfile, moved to
    /// the card's secrets; Trixie's network-config, which the agent scrubs).
    pub wifi_psk: String,
    /// `name.domain`, or the name when there is no domain.
    pub fqdn: String,
    /// All DNS resolvers as strings.
    pub dns: Vec<String>,
    /// The IPv4 resolvers only (for the NetworkManager `[ipv4]` section).
    pub dns_ipv4: Vec<String>,
    /// TLS SANs for servers: the node's address, name and the plan's extra SANs (VIP included).
    pub tls_san: Vec<String>,
    /// Node labels as `key=value`, sorted.
    pub labels: Vec<String>,
    /// The agent on the running system's boot partition (`/boot/firmware/piimg/piimg-firstboot`).
    pub agent_path: String,
    /// Where phase 1 installs the agent.
    pub agent_install_path: &'static str,
    /// The phase-2 unit's name.
    pub agent_unit: &'static str,
    /// The agent's "phase 1 handed off" file (user-data re-arms runcmd until it exists).
    pub phase1_done_file: &'static str,
    /// cloud-init's semaphores that user-data deletes to re-arm runcmd (upstream.toml).
    pub runcmd_semaphores: String,
    /// NetworkManager connection id.
    pub keyfile_id: String,
    /// NetworkManager connection UUID, stable per cluster and node.
    pub keyfile_uuid: String,
    /// cloud-init instance id (unique per build); empty before it is known.
    pub instance_id: String,
    /// The plan's extra `key=value` settings as config.yaml entries (a repeated key
    /// becomes a list), in first-seen key order.
    pub extra_config: Vec<ConfigEntry>,
    /// Servers with `[k3s.etcd_s3]` and a CA bundle: where the card puts the bundle
    /// on the node (`etcd-s3-endpoint-ca`).
    pub etcd_s3_endpoint_ca: Option<&'static str>,
}

/// Where a server card puts the S3 endpoint's CA bundle on the node.
pub const ETCD_S3_CA_PATH: &str = "/etc/rancher/k3s/etcd-s3-ca.pem";

/// One extra k3s `config.yaml` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigEntry {
    /// The key, e.g. `flannel-backend`.
    pub key: String,
    /// True when the key was given more than once (rendered as a YAML list).
    pub list: bool,
    /// The values as YAML scalars (quoted unless a plain number or boolean).
    pub values: Vec<String>,
}

/// `key=value` lines (a bare `key` means `true`) as config entries.
pub fn config_entries(args: &[String]) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = Vec::new();
    for a in args {
        let (k, v) = a.split_once('=').unwrap_or((a.as_str(), "true"));
        let (k, v) = (k.trim(), v.trim());
        let scalar = if v == "true"
            || v == "false"
            || (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) && !v.starts_with('0'))
        {
            v.to_string()
        } else {
            serde_json::to_string(v).unwrap_or_default()
        };
        match out.iter_mut().find(|e| e.key == k) {
            Some(e) => {
                e.list = true;
                e.values.push(scalar);
            }
            None => out.push(ConfigEntry {
                key: k.to_string(),
                list: false,
                values: vec![scalar],
            }),
        }
    }
    out
}

impl CardValues {
    /// Derives the values for `plan`.
    pub fn new(plan: &NodePlan) -> Self {
        let net = &plan.network;
        let address = net.address.map(|a| a.to_string()).unwrap_or_default();
        let mut tls_san: Vec<String> = net.address.iter().map(|a| a.to_string()).collect();
        tls_san.push(plan.name.clone());
        if let Some(d) = &plan.domain {
            tls_san.push(format!("{}.{d}", plan.name));
        }
        for s in &plan.k3s.tls_san {
            if !tls_san.contains(s) {
                tls_san.push(s.clone());
            }
        }
        if let Some(vip) = plan.k3s.vip {
            let v = vip.to_string();
            if !tls_san.contains(&v) {
                tls_san.push(v);
            }
        }
        Self {
            role: match plan.role {
                Role::Server => "server",
                Role::Agent => "agent",
            },
            is_server: plan.role == Role::Server,
            address_cidr: net
                .address
                .map(|a| format!("{a}/{}", net.prefix_len))
                .unwrap_or_default(),
            address,
            dhcp: net.address.is_none(),
            wifi_psk: plan.wifi_psk.clone().unwrap_or_default(),
            fqdn: match &plan.domain {
                Some(d) if !d.is_empty() => format!("{}.{d}", plan.name),
                _ => plan.name.clone(),
            },
            dns: net.dns.iter().map(IpAddr::to_string).collect(),
            dns_ipv4: net
                .dns
                .iter()
                .filter(|a| a.is_ipv4())
                .map(IpAddr::to_string)
                .collect(),
            tls_san,
            labels: plan
                .k3s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            agent_path: format!("{BOOT_MOUNT}/{AGENT_FILE}"),
            agent_install_path: AGENT_INSTALL_PATH,
            agent_unit: AGENT_UNIT,
            phase1_done_file: PHASE1_DONE_FILE,
            runcmd_semaphores: crate::upstream::facts()
                .first_boot
                .cloud_init_runcmd_semaphores
                .join(" "),
            keyfile_id: format!("piimg-{}", net.interface),
            keyfile_uuid: stable_uuid(&format!("{}/{}/{}", plan.cluster, plan.name, net.interface)),
            instance_id: String::new(),
            extra_config: config_entries(&plan.k3s.extra_args),
            etcd_s3_endpoint_ca: plan
                .k3s
                .etcd_s3
                .as_ref()
                .and_then(|s| s.endpoint_ca.as_ref())
                .map(|_| ETCD_S3_CA_PATH),
        }
    }
}

/// A UUID (version 5 layout) derived from `seed`, so rebuilding gives the same one.
pub fn stable_uuid(seed: &str) -> String {
    let h = Sha256::digest(format!("piimg-uuid:{seed}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_args_become_yaml_entries() {
        let e = config_entries(&[
            "flannel-backend=wireguard-native".into(),
            "secrets-encryption=true".into(),
            "kube-apiserver-arg=a=b".into(),
            "kube-apiserver-arg=c=d".into(),
            "etcd-snapshot-retention=7".into(),
        ]);
        assert_eq!(e[0].values, ["\"wireguard-native\""]);
        assert_eq!(e[1].values, ["true"]);
        assert!(e[2].list);
        assert_eq!(e[2].values, ["\"a=b\"", "\"c=d\""]);
        assert_eq!(e[3].values, ["7"]);
    }

    #[test]
    fn stable_uuid_is_stable_and_well_formed() {
        let a = stable_uuid("homelab/pi5-master-1/eth0");
        assert_eq!(a, stable_uuid("homelab/pi5-master-1/eth0"));
        assert_ne!(a, stable_uuid("homelab/pi5-master-2/eth0"));
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, [8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "5");
    }
}
