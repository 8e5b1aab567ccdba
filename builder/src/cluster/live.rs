//! What a running cluster says about itself, asked of its servers in parallel so
//! that the slowest answer bounds the wait (each request has its own timeout):
//! every server's `/version`, then the node list, the etcd members (`/db/info`) and
//! the VIP's lease from the first endpoint that answered (the VIP first).

use super::api::{ApiClient, ApiError};
use super::endpoints::Endpoint;
use super::k8s;

/// kube-vip's leader-election lease in `kube-system`: piimg's manifest sets
/// `vip_leasename` to it (overlays/manifests/kube-vip.yaml). Its holder is kube-vip's
/// node name (`vip_nodename`, kube-vip pkg/kubevip/config_environment.go); piimg's
/// manifest does not set it, and which default kube-vip then uses (its host name,
/// which on a piimg card is the node name) was not verified against kube-vip's
/// source, so status shows the holder as reported and judges it only when it names
/// a node that is not a planned server.
pub const VIP_LEASE: &str = "plndr-cp-lock";

/// One endpoint's answer to `/version`.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The endpoint asked.
    pub endpoint: Endpoint,
    /// The API server version it reported, or why it did not answer.
    pub result: Result<String, ApiError>,
}

/// Everything read from the cluster.
#[derive(Debug, Clone)]
pub struct Live {
    /// Each server's probe, in profile order.
    pub servers: Vec<Probe>,
    /// The VIP's probe, when the profile has one.
    pub vip: Option<Probe>,
    /// The endpoint the node list and the lease were read from.
    pub api_via: Option<Endpoint>,
    /// The nodes, or why they could not be listed.
    pub nodes: Result<Vec<k8s::Node>, ApiError>,
    /// The endpoint `/db/info` answered on.
    pub etcd_via: Option<Endpoint>,
    /// The etcd members, or why no server gave them.
    pub members: Result<Vec<k8s::Member>, ApiError>,
    /// The VIP lease's holder (`None`: nobody holds it), when the profile has a VIP.
    pub vip_holder: Option<Result<Option<String>, ApiError>>,
}

/// Asks every endpoint's `/version` at once; the answers in the same order.
pub fn probe(client: &ApiClient, endpoints: &[Endpoint]) -> Vec<Probe> {
    std::thread::scope(|s| {
        let handles: Vec<_> = endpoints
            .iter()
            .map(|ep| {
                s.spawn(move || Probe {
                    endpoint: ep.clone(),
                    result: client
                        .get::<k8s::VersionInfo>(ep, "/version")
                        .map(|v| v.git_version),
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(endpoints)
            .map(|(h, ep)| {
                h.join().unwrap_or_else(|_| Probe {
                    endpoint: ep.clone(),
                    result: Err(ApiError::new("the probe thread failed")),
                })
            })
            .collect()
    })
}

/// Asks `vip` and `servers` (see the module doc).
pub fn gather(client: &ApiClient, vip: Option<&Endpoint>, servers: &[Endpoint]) -> Live {
    let all: Vec<Endpoint> = vip.into_iter().chain(servers.iter()).cloned().collect();
    let probes = probe(client, &all);
    let mut probes = probes.into_iter();
    let vip_probe = vip.and_then(|_| probes.next());
    let server_probes: Vec<Probe> = probes.collect();
    let answering: Vec<&Endpoint> = vip_probe
        .iter()
        .chain(server_probes.iter())
        .filter(|p| p.result.is_ok())
        .map(|p| &p.endpoint)
        .collect();
    let none = || ApiError::new("no server answered");
    let (api_via, nodes) = match answering.first() {
        Some(ep) => (
            Some((*ep).clone()),
            client
                .get::<k8s::NodeList>(ep, "/api/v1/nodes")
                .map(|l| l.items),
        ),
        None => (None, Err(none())),
    };
    let vip_holder = vip.map(|_| match &api_via {
        Some(ep) => client
            .get::<k8s::Lease>(
                ep,
                &format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{VIP_LEASE}"),
            )
            .map(|l| l.spec.holder_identity.filter(|h| !h.is_empty()))
            .or_else(|e| match e.status {
                // No lease object: kube-vip never took the lead.
                Some(404) => Ok(None),
                _ => Err(e),
            }),
        None => Err(none()),
    });
    // /db/info is each server's own supervisor: ask the answering servers in turn.
    let mut etcd_via = None;
    let mut members = Err(none());
    for p in server_probes.iter().filter(|p| p.result.is_ok()) {
        match client.db_info(&p.endpoint) {
            Ok(m) => {
                etcd_via = Some(p.endpoint.clone());
                members = Ok(m.members);
                break;
            }
            Err(e) => members = Err(ApiError::new(format!("{}: {e}", p.endpoint.name))),
        }
    }
    Live {
        servers: server_probes,
        vip: vip_probe,
        api_via,
        nodes,
        etcd_via,
        members,
        vip_holder,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lease_is_the_one_piimgs_kube_vip_manifest_names() {
        let manifest = include_str!("../../../overlays/manifests/kube-vip.yaml");
        assert!(
            manifest.contains(&format!(
                "{{ name: vip_leasename, value: {} }}",
                super::VIP_LEASE
            )),
            "kube-vip.yaml no longer names the lease {}",
            super::VIP_LEASE
        );
    }
}
