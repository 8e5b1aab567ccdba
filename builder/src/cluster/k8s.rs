//! The JSON shapes piimg reads from a cluster: Kubernetes core/v1 `NodeList`,
//! coordination/v1 `Lease`, `/version` (apimachinery `version.Info`) and k3s's
//! `/db/info` (pkg/etcd/etcd.go `Members`, a list of etcd's `etcdserverpb.Member`).
//! Only the fields piimg uses are typed; everything is optional, as in the API.

use serde::Deserialize;
use std::collections::BTreeMap;

/// `GET /api/v1/nodes`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeList {
    /// The nodes.
    #[serde(default)]
    pub items: Vec<Node>,
}

/// A core/v1 Node.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Node {
    /// Name, labels, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Addresses, conditions, node info.
    #[serde(default)]
    pub status: NodeStatus,
}

/// The part of `metadata` piimg reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// The part of a Node's `status` piimg reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeStatus {
    /// `InternalIP`, `Hostname`, … addresses.
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
    /// `Ready`, `MemoryPressure`, … conditions.
    #[serde(default)]
    pub conditions: Vec<NodeCondition>,
    /// Versions the kubelet reports.
    #[serde(default, rename = "nodeInfo")]
    pub node_info: NodeSystemInfo,
}

/// One of a Node's addresses.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeAddress {
    /// `InternalIP`, `ExternalIP`, `Hostname`, …
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The address.
    #[serde(default)]
    pub address: String,
}

/// One of a Node's conditions.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeCondition {
    /// `Ready`, …
    #[serde(default, rename = "type")]
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    #[serde(default)]
    pub status: String,
    /// Machine-readable reason (e.g. `KubeletNotReady`, `NodeStatusUnknown`).
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
}

/// The part of `status.nodeInfo` piimg reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeSystemInfo {
    /// The kubelet's version; k3s reports its own release (`v1.31.4+k3s1`).
    #[serde(default, rename = "kubeletVersion")]
    pub kubelet_version: String,
}

impl Node {
    /// The first `InternalIP` address.
    pub fn internal_ip(&self) -> Option<&str> {
        self.status
            .addresses
            .iter()
            .find(|a| a.kind == "InternalIP")
            .map(|a| a.address.as_str())
    }

    /// The `Ready` condition, if the node reports one.
    pub fn ready(&self) -> Option<&NodeCondition> {
        self.status.conditions.iter().find(|c| c.kind == "Ready")
    }
}

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VersionInfo {
    /// e.g. `v1.31.4+k3s1`.
    #[serde(default, rename = "gitVersion")]
    pub git_version: String,
}

/// A coordination.k8s.io/v1 Lease.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Lease {
    /// Holder and timings.
    #[serde(default)]
    pub spec: LeaseSpec,
}

/// The part of a Lease's spec piimg reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LeaseSpec {
    /// Who holds the lease (kube-vip: the node name).
    #[serde(default, rename = "holderIdentity")]
    pub holder_identity: Option<String>,
}

/// k3s's `/db/info` answer.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Members {
    /// etcd's member list.
    #[serde(default)]
    pub members: Vec<Member>,
}

/// One etcd member as etcd's protobuf JSON encodes it (Go's encoding/json with the
/// generated tags: `ID`, `name`, `peerURLs`, `clientURLs`, `isLearner`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Member {
    /// Member id.
    #[serde(default, rename = "ID")]
    pub id: u64,
    /// `<node name>-<8 characters>`; empty while a member was added but never started.
    #[serde(default)]
    pub name: String,
    /// Peer URLs (`https://IP:2380`).
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    /// A learner (not yet voting).
    #[serde(default, rename = "isLearner")]
    pub is_learner: bool,
}

impl Member {
    /// The node name k3s derived the member name from: everything before the last
    /// `-` when the suffix has k3s's length (etcd.go `setName`), else the whole name.
    pub fn node_name(&self) -> &str {
        let len = crate::upstream::facts().k3s.etcd_member_suffix_len;
        match self.name.rsplit_once('-') {
            Some((node, suffix)) if suffix.len() == len && !node.is_empty() => node,
            _ => &self.name,
        }
    }

    /// The host of the first peer URL.
    pub fn peer_host(&self) -> Option<&str> {
        let url = self.peer_urls.first()?;
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let host = rest.split('/').next().unwrap_or(rest);
        Some(match host.rsplit_once(':') {
            Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
            None => host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_shapes() {
        let nodes: NodeList = serde_json::from_str(
            r#"{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[
              {"metadata":{"name":"s1","labels":{"node-role.kubernetes.io/control-plane":"true"},
                "annotations":{"etcd.k3s.cattle.io/node-name":"s1-0a1b2c3d"}},
               "status":{"addresses":[{"type":"InternalIP","address":"10.0.0.11"},{"type":"Hostname","address":"s1"}],
                 "conditions":[{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status"}],
                 "nodeInfo":{"kubeletVersion":"v1.31.4+k3s1","architecture":"arm64"}}}]}"#,
        )
        .expect("NodeList");
        let n = &nodes.items[0];
        assert_eq!(n.internal_ip(), Some("10.0.0.11"));
        assert_eq!(n.ready().map(|c| c.status.as_str()), Some("True"));
        assert_eq!(n.status.node_info.kubelet_version, "v1.31.4+k3s1");
        let m: Members = serde_json::from_str(
            r#"{"members":[{"ID":17212345678901234567,"name":"pi5-master-1-0a1b2c3d","peerURLs":["https://10.0.0.11:2380"],"clientURLs":["https://10.0.0.11:2379"]},{"ID":5,"peerURLs":["https://[fd00::1]:2380"],"isLearner":true}]}"#,
        )
        .expect("Members");
        assert_eq!(m.members[0].id, 17212345678901234567);
        assert_eq!(m.members[0].node_name(), "pi5-master-1");
        assert_eq!(m.members[0].peer_host(), Some("10.0.0.11"));
        assert_eq!(m.members[1].node_name(), "");
        assert_eq!(m.members[1].peer_host(), Some("fd00::1"));
        assert!(m.members[1].is_learner);
    }
}
