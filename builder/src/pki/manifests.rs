//! Auto-deployed server manifests (k3s applies every file in
//! `/var/lib/rancher/k3s/server/manifests` and does not sync that directory between
//! servers, so every server card carries the same set): the node-cleaner RBAC, the
//! kube-vip RBAC and DaemonSet when the profile has a VIP, and the HelmChart add-ons.
//!
//! Templates live in `overlays/manifests/` (embedded at build time); a profile's
//! overlay directory may replace any of them file by file (`<overlay>/manifests/…`).

use super::PkiError;
use super::ca::NODE_CLEANER_USER_PREFIX;
use handlebars::Handlebars;
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::Path;

/// Where k3s picks up auto-deploy manifests.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";

/// kube-vip image tag (pinned; bump deliberately).
pub const KUBE_VIP_VERSION: &str = "v0.8.7";
/// cert-manager chart version (pinned).
pub const CERT_MANAGER_VERSION: &str = "v1.16.2";
/// kube-prometheus-stack chart version (pinned).
pub const KUBE_PROMETHEUS_STACK_VERSION: &str = "66.3.1";

const EMBEDDED: &[(&str, &str)] = &[
    (
        "node-cleaner-rbac.yaml",
        include_str!("../../../overlays/manifests/node-cleaner-rbac.yaml"),
    ),
    (
        "kube-vip-rbac.yaml",
        include_str!("../../../overlays/manifests/kube-vip-rbac.yaml"),
    ),
    (
        "kube-vip.yaml",
        include_str!("../../../overlays/manifests/kube-vip.yaml"),
    ),
    (
        "cert-manager.yaml",
        include_str!("../../../overlays/manifests/cert-manager.yaml"),
    ),
    (
        "kube-prometheus-stack.yaml",
        include_str!("../../../overlays/manifests/kube-prometheus-stack.yaml"),
    ),
    (
        "values/cert-manager.yaml",
        include_str!("../../../overlays/manifests/values/cert-manager.yaml"),
    ),
    (
        "values/kube-prometheus-stack.yaml",
        include_str!("../../../overlays/manifests/values/kube-prometheus-stack.yaml"),
    ),
];

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
    /// Every server's node name: each gets its own node-cleaner Role and binding.
    pub servers: &'a [String],
    /// Interface kube-vip announces the VIP on.
    pub interface: &'a str,
    /// Add-ons to deploy.
    pub addons: &'a Addons,
    /// A profile overlay directory whose `manifests/` overrides the templates.
    pub overlay_dir: Option<&'a Path>,
}

fn template(name: &str, overlay: Option<&Path>) -> Result<String, PkiError> {
    if let Some(dir) = overlay {
        let path = dir.join("manifests").join(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => return Ok(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(super::io_err(path)(e)),
        }
    }
    EMBEDDED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| t.to_string())
        .ok_or_else(|| PkiError::Template {
            name: name.into(),
            what: "no such template".into(),
        })
}

fn render(
    name: &str,
    overlay: Option<&Path>,
    data: &serde_json::Value,
) -> Result<String, PkiError> {
    let text = template(name, overlay)?;
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.render_template(&text, data)
        .map_err(|e| PkiError::Template {
            name: name.into(),
            what: e.to_string(),
        })
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
pub fn server_manifests(inp: &ManifestInputs) -> Result<Vec<(String, String)>, PkiError> {
    let ov = inp.overlay_dir;
    let mut out = vec![(
        "piimg-node-cleaner-rbac.yaml".to_string(),
        render(
            "node-cleaner-rbac.yaml",
            ov,
            &json!({ "user_prefix": NODE_CLEANER_USER_PREFIX, "servers": inp.servers }),
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
            render("kube-vip-rbac.yaml", ov, &data)?,
        ));
        out.push((
            "piimg-kube-vip.yaml".into(),
            render("kube-vip.yaml", ov, &data)?,
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
        let values = template(&format!("values/{chart}.yaml"), ov)?;
        let data = json!({ "version": version, "values": indent(&values) });
        out.push((
            format!("piimg-{chart}.yaml"),
            render(&format!("{chart}.yaml"), ov, &data)?,
        ));
    }
    Ok(out)
}
