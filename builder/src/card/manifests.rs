//! Auto-deployed server manifests (k3s applies every file in
//! `/var/lib/rancher/k3s/server/manifests` and does not sync that directory between
//! servers, so every server card carries the same set): the node-cleaner RBAC, the
//! kube-vip RBAC and DaemonSet when the profile has a VIP, and the HelmChart add-ons.
//!
//! They are card templates like any other ([`Templates`]): `overlays/manifests/`
//! (built in), replaced file by file by a profile's overlay (`<overlay>/manifests/…`).

use super::CardError;
use super::templates::Templates;
use serde_json::json;
use std::net::Ipv4Addr;

/// Where the manifest templates are, among the card's templates.
pub const MANIFESTS_TEMPLATES: &str = "manifests";

/// Where k3s picks up auto-deploy manifests.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";

/// kube-vip image tag (pinned; bump deliberately).
pub const KUBE_VIP_VERSION: &str = "v0.8.7";
/// cert-manager chart version (pinned).
pub const CERT_MANAGER_VERSION: &str = "v1.16.2";
/// kube-prometheus-stack chart version (pinned).
pub const KUBE_PROMETHEUS_STACK_VERSION: &str = "66.3.1";

/// Optional add-ons laid on every server card.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Addons {
    /// cert-manager (HelmChart).
    pub cert_manager: bool,
    /// Prometheus + Grafana (kube-prometheus-stack HelmChart).
    pub monitoring: bool,
}

/// What the server manifests depend on.
#[derive(Debug, Clone)]
pub struct ManifestInputs<'a> {
    /// Control-plane VIP (kube-vip is deployed only with one).
    pub vip: Option<Ipv4Addr>,
    /// The Kubernetes user-name prefix of the servers' node-cleaner certificates
    /// (`pki::ca::NODE_CLEANER_USER_PREFIX`).
    pub node_cleaner_user_prefix: &'a str,
    /// Every server's node name: each gets its own node-cleaner Role and binding.
    pub servers: &'a [String],
    /// Interface kube-vip announces the VIP on.
    pub interface: &'a str,
    /// Add-ons to deploy.
    pub addons: &'a Addons,
    /// The card's templates (the manifests among them).
    pub templates: &'a Templates,
}

/// Template `name` under `manifests/` rendered with `data`.
fn render(
    templates: &Templates,
    name: &str,
    data: &serde_json::Value,
) -> Result<String, CardError> {
    templates.render(&format!("{MANIFESTS_TEMPLATES}/{name}"), data)
}

/// Indents a values overlay for a `valuesContent: |-` block.
fn indent(values: &str) -> String {
    values
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("    {l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The server manifests as (file name in [`MANIFESTS_DIR`], content), in a fixed order.
pub fn server_manifests(inp: &ManifestInputs) -> Result<Vec<(String, String)>, CardError> {
    let ov = inp.templates;
    let mut out = vec![(
        "piimg-node-cleaner-rbac.yaml".to_string(),
        render(
            ov,
            "node-cleaner-rbac.yaml",
            &json!({ "user_prefix": inp.node_cleaner_user_prefix, "servers": inp.servers }),
        )?,
    )];
    if let Some(vip) = inp.vip {
        let data = json!({
            "vip": vip.to_string(),
            "interface": inp.interface,
            "kube_vip_version": KUBE_VIP_VERSION,
        });
        out.push((
            "piimg-kube-vip-rbac.yaml".into(),
            render(ov, "kube-vip-rbac.yaml", &data)?,
        ));
        out.push((
            "piimg-kube-vip.yaml".into(),
            render(ov, "kube-vip.yaml", &data)?,
        ));
    }
    let charts = [
        (
            inp.addons.cert_manager,
            "cert-manager",
            CERT_MANAGER_VERSION,
        ),
        (
            inp.addons.monitoring,
            "kube-prometheus-stack",
            KUBE_PROMETHEUS_STACK_VERSION,
        ),
    ];
    for (on, chart, version) in charts {
        if !on {
            continue;
        }
        let values = ov.text(&format!("{MANIFESTS_TEMPLATES}/values/{chart}.yaml"))?;
        let data = json!({ "version": version, "values": indent(values) });
        out.push((
            format!("piimg-{chart}.yaml"),
            render(ov, &format!("{chart}.yaml"), &data)?,
        ));
    }
    Ok(out)
}
