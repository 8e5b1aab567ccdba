//! One node's plan for tests that render cards or PKI files without a profile: the
//! reference cluster's three servers (192.168.86.31-33) and a pi5, as the plan would
//! resolve them for a cluster whose bootstrap card was never issued.

use piimg::plan::{Access, FirstBootAction, Hardware, NodeK3s, NodePlan};
use piimg_contract::{Network, Role};
use std::collections::BTreeMap;

/// The plan of node `name` (`bootstrap`: the cluster's bootstrap server) with the
/// control-plane `vip`, if any.
pub fn node_plan(name: &str, role: Role, bootstrap: bool, vip: Option<&str>) -> NodePlan {
    NodePlan {
        cluster: "homelab".into(),
        profile: "homelab".into(),
        name: name.into(),
        domain: None,
        role,
        bootstrap,
        // As the plan decides for a cluster whose bootstrap card was never issued.
        first_boot: match role {
            Role::Server if bootstrap => FirstBootAction::InitCluster,
            Role::Server => FirstBootAction::JoinServers { via: vec![] },
            Role::Agent => FirstBootAction::JoinAgent { via: vec![] },
        },
        network: Network {
            interface: "eth0".into(),
            mac: None,
            address: Some("192.168.86.33".parse().unwrap()),
            prefix_len: 24,
            gateway: "192.168.86.1".parse().unwrap(),
            dns: vec![],
            search: vec![],
            wifi: None,
        },
        wifi_psk: None,
        hardware: Hardware {
            class: "pi5-8gb".into(),
            board: "pi5".into(),
            ram_mb: 8192,
            config_txt: vec![],
            config_txt_all: vec![],
            kubelet_args: vec![],
        },
        access: Access {
            admin_user: "admin".into(),
            ssh_authorized_keys: vec![],
            password_login: false,
            password_hash: None,
        },
        k3s: NodeK3s {
            version: "v1.31.4+k3s1".into(),
            vip: vip.map(|v| v.parse().unwrap()),
            tls_san: vec![],
            disable: vec![],
            etcd_snapshot_schedule: None,
            etcd_snapshot_retention: None,
            labels: BTreeMap::new(),
            taints: vec![],
            extra_args: vec![],
            kubelet_args: vec![],
            airgap_dir: None,
            etcd_s3: None,
        },
        servers: ["pi5-master-1", "pi5-master-2", "pi5-master-3"]
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    n.to_string(),
                    format!("192.168.86.{}", 31 + i).parse().unwrap(),
                )
            })
            .collect(),
        overlay_dir: None,
        storage: Default::default(),
        customize: Default::default(),
    }
}
