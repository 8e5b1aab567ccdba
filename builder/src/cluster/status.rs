//! The live cluster compared with the plan: per planned node whether it joined, is
//! Ready, has the planned role, address, k3s version and labels; nodes the plan does
//! not know; etcd members that no longer belong to a server; who holds the VIP; and
//! which servers did not answer, with the reason. The cluster matches the plan when
//! there is no problem at all.

use super::endpoints::Endpoint;
use super::k8s;
use super::live::{Live, Probe};
use crate::plan::NodePlan;
use piimg_contract::Role;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Cluster name.
    pub cluster: String,
    /// True when the live cluster matches the plan (no problems).
    pub matches: bool,
    /// Every difference, one line each, naming the node, member or server.
    pub problems: Vec<String>,
    /// Where the node list came from (`name (https://IP:PORT)`), if any server answered.
    pub api_via: Option<String>,
    /// Each server's API.
    pub servers: Vec<ServerRow>,
    /// The VIP, when the profile has one.
    pub vip: Option<VipRow>,
    /// One row per planned node, in profile order.
    pub nodes: Vec<NodeRow>,
    /// Nodes in the cluster the profile does not plan.
    pub unexpected: Vec<UnexpectedNode>,
    /// etcd's members.
    pub etcd: EtcdReport,
}

/// One server's API.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRow {
    /// Node name.
    pub name: String,
    /// `https://IP:PORT`.
    pub url: String,
    /// The API server version it reported, if it answered.
    pub version: Option<String>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// The control-plane VIP.
#[derive(Debug, Clone, Serialize)]
pub struct VipRow {
    /// The VIP.
    pub ip: Ipv4Addr,
    /// `https://VIP:PORT`.
    pub url: String,
    /// Whether the API answered on it.
    pub answers: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    /// The node holding kube-vip's lease (the one announcing the VIP).
    pub holder: Option<String>,
}

/// One planned node, planned against live.
#[derive(Debug, Clone, Serialize)]
pub struct NodeRow {
    /// Node name.
    pub name: String,
    /// Planned role.
    pub role: Role,
    /// Role the cluster gives it (k3s labels servers control-plane), if joined.
    pub live_role: Option<Role>,
    /// Whether the node is in the cluster (`None`: unknown, no node list).
    pub joined: Option<bool>,
    /// Whether its Ready condition is True (`None`: not joined or unknown).
    pub ready: Option<bool>,
    /// Ready's reason and message when not Ready.
    pub ready_detail: Option<String>,
    /// Planned address (`None`: the node takes a DHCP lease).
    pub ip: Option<Ipv4Addr>,
    /// The InternalIP it reports.
    pub reported_ip: Option<String>,
    /// Pinned k3s version (empty when the profile pins none).
    pub version: String,
    /// k3s version its kubelet reports.
    pub running_version: Option<String>,
    /// Planned board (`piimg.io/board`).
    pub board: String,
    /// Planned labels that are missing or different, `key=planned (found)`.
    pub label_problems: Vec<String>,
    /// This node's problems.
    pub problems: Vec<String>,
}

/// A node the profile does not plan.
#[derive(Debug, Clone, Serialize)]
pub struct UnexpectedNode {
    /// Node name.
    pub name: String,
    /// Its InternalIP.
    pub ip: Option<String>,
    /// Its k3s version.
    pub version: String,
    /// Whether it is Ready.
    pub ready: bool,
}

/// etcd's member list, judged.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdReport {
    /// The server whose `/db/info` answered.
    pub via: Option<String>,
    /// Why no server gave the member list.
    pub error: Option<String>,
    /// The members.
    pub members: Vec<MemberRow>,
}

/// One etcd member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberRow {
    /// Member id, hex (as etcdctl prints it).
    pub id: String,
    /// Member name.
    pub name: String,
    /// The node it belongs to (from its name).
    pub node: String,
    /// Host of its peer URL.
    pub peer: Option<String>,
    /// Whether it is a learner.
    pub learner: bool,
    /// True when no current server runs it.
    pub stale: bool,
    /// What is wrong with it.
    pub problem: Option<String>,
}

fn endpoint_text(ep: &Endpoint) -> String {
    format!("{} ({})", ep.name, ep.url())
}

/// Compares `live` with `plans` (one per planned node); `vip` is the profile's VIP.
pub fn compare(cluster: &str, plans: &[NodePlan], live: &Live, vip: Option<Ipv4Addr>) -> Report {
    let facts = &crate::upstream::facts().k3s;
    let mut problems = Vec::new();

    let servers: Vec<ServerRow> = live.servers.iter().map(server_row).collect();
    for (row, probe) in servers.iter().zip(&live.servers) {
        if let Some(e) = &row.error {
            problems.push(format!(
                "server {}: API at {}:{} does not answer: {e}",
                row.name, probe.endpoint.ip, probe.endpoint.port
            ));
        }
    }

    let live_nodes: Option<BTreeMap<&str, &k8s::Node>> = live
        .nodes
        .as_ref()
        .ok()
        .map(|l| l.iter().map(|n| (n.metadata.name.as_str(), n)).collect());
    if let Err(e) = &live.nodes {
        problems.push(format!("cannot list the cluster's nodes: {e}"));
    }

    let mut nodes = Vec::new();
    for plan in plans {
        let row = node_row(plan, live_nodes.as_ref(), &facts.control_plane_label);
        problems.extend(row.problems.iter().map(|p| format!("{}: {p}", row.name)));
        nodes.push(row);
    }

    let mut unexpected = Vec::new();
    if let Some(map) = &live_nodes {
        for (name, n) in map {
            if plans.iter().any(|p| p.name == *name) {
                continue;
            }
            let ready = n.ready().is_some_and(|c| c.status == "True");
            problems.push(format!(
                "{name}: in the cluster but not in the profile (IP {}, {})",
                n.internal_ip().unwrap_or("?"),
                if ready { "Ready" } else { "not Ready" }
            ));
            unexpected.push(UnexpectedNode {
                name: name.to_string(),
                ip: n.internal_ip().map(str::to_string),
                version: n.status.node_info.kubelet_version.clone(),
                ready,
            });
        }
    }

    let etcd = etcd_report(plans, live, live_nodes.as_ref(), &mut problems);

    let vip_row = vip.map(|ip| {
        let probe = live.vip.as_ref();
        let error = probe.and_then(|p| p.result.as_ref().err().map(|e| e.to_string()));
        if let Some(e) = &error {
            problems.push(format!("VIP {ip}: API does not answer: {e}"));
        }
        let holder = match &live.vip_holder {
            Some(Ok(h)) => h.clone(),
            Some(Err(e)) => {
                problems.push(format!("VIP {ip}: cannot read kube-vip's lease: {e}"));
                None
            }
            None => None,
        };
        match &holder {
            None if live.vip_holder.as_ref().is_some_and(Result::is_ok) => problems.push(format!(
                "VIP {ip}: no node holds kube-vip's lease (kube-vip not running?)"
            )),
            // The holder is kube-vip's identity, which is not necessarily a node
            // name: only a node known not to be a planned server is wrong for sure.
            Some(h)
                if live_nodes
                    .as_ref()
                    .is_some_and(|l| l.contains_key(h.as_str()))
                    && !plans.iter().any(|p| p.name == *h && p.role == Role::Server) =>
            {
                problems.push(format!(
                    "VIP {ip}: held by {h}, which the profile does not plan as a server"
                ))
            }
            _ => {}
        }
        VipRow {
            ip,
            url: probe.map(|p| p.endpoint.url()).unwrap_or_default(),
            answers: probe.is_some_and(|p| p.result.is_ok()),
            error,
            holder,
        }
    });

    Report {
        cluster: cluster.to_string(),
        matches: problems.is_empty(),
        problems,
        api_via: live.api_via.as_ref().map(endpoint_text),
        servers,
        vip: vip_row,
        nodes,
        unexpected,
        etcd,
    }
}

fn server_row(p: &Probe) -> ServerRow {
    ServerRow {
        name: p.endpoint.name.clone(),
        url: p.endpoint.url(),
        version: p.result.as_ref().ok().cloned(),
        error: p.result.as_ref().err().map(|e| e.to_string()),
    }
}

fn node_row(
    plan: &NodePlan,
    live: Option<&BTreeMap<&str, &k8s::Node>>,
    control_plane_label: &str,
) -> NodeRow {
    let board = plan
        .k3s
        .labels
        .get(crate::profile::hardware::LABEL_BOARD)
        .cloned()
        .unwrap_or_else(|| plan.hardware.board.clone());
    let mut row = NodeRow {
        name: plan.name.clone(),
        role: plan.role,
        live_role: None,
        joined: None,
        ready: None,
        ready_detail: None,
        ip: plan.network.address,
        reported_ip: None,
        version: plan.k3s.version.clone(),
        running_version: None,
        board,
        label_problems: Vec::new(),
        problems: Vec::new(),
    };
    let Some(live) = live else {
        return row;
    };
    let Some(node) = live.get(plan.name.as_str()) else {
        row.joined = Some(false);
        row.problems.push("has not joined the cluster".into());
        return row;
    };
    row.joined = Some(true);
    let ready = node.ready();
    row.ready = Some(ready.is_some_and(|c| c.status == "True"));
    if row.ready == Some(false) {
        let detail = match ready {
            Some(c) => format!(
                "Ready={}{}{}",
                c.status,
                if c.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.reason)
                },
                if c.message.is_empty() {
                    String::new()
                } else {
                    format!(": {}", c.message)
                }
            ),
            None => "reports no Ready condition".into(),
        };
        row.problems.push(format!("not Ready: {detail}"));
        row.ready_detail = Some(detail);
    }
    let live_role = if node
        .metadata
        .labels
        .get(control_plane_label)
        .is_some_and(|v| v == "true")
    {
        Role::Server
    } else {
        Role::Agent
    };
    row.live_role = Some(live_role);
    if live_role != plan.role {
        row.problems.push(format!(
            "runs as {} but is planned as {}",
            role_name(live_role),
            role_name(plan.role)
        ));
    }
    row.reported_ip = node.internal_ip().map(str::to_string);
    match &row.reported_ip {
        None => row.problems.push(format!(
            "reports no InternalIP (planned {})",
            planned_ip(plan)
        )),
        Some(ip)
            if plan.network.address.is_some()
                && ip.parse::<Ipv4Addr>().ok() != plan.network.address =>
        {
            row.problems
                .push(format!("reports IP {ip}, planned {}", planned_ip(plan)))
        }
        Some(_) => {}
    }
    let running = node.status.node_info.kubelet_version.clone();
    if !plan.k3s.version.is_empty() && running != plan.k3s.version {
        row.problems.push(format!(
            "runs k3s {}, pinned {}",
            if running.is_empty() { "?" } else { &running },
            plan.k3s.version
        ));
    }
    row.running_version = Some(running);
    for (key, want) in &plan.k3s.labels {
        match node.metadata.labels.get(key) {
            Some(have) if have == want => {}
            Some(have) => row
                .label_problems
                .push(format!("{key}={want} (found {have})")),
            None => row.label_problems.push(format!("{key}={want} (missing)")),
        }
    }
    if !row.label_problems.is_empty() {
        row.problems
            .push(format!("labels differ: {}", row.label_problems.join(", ")));
    }
    row
}

/// A node's planned address in words: the static IP, or `dhcp`.
fn planned_ip(plan: &NodePlan) -> String {
    plan.network
        .address
        .map_or_else(|| "dhcp".to_string(), |ip| ip.to_string())
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Server => "server",
        Role::Agent => "agent",
    }
}

fn etcd_report(
    plans: &[NodePlan],
    live: &Live,
    live_nodes: Option<&BTreeMap<&str, &k8s::Node>>,
    problems: &mut Vec<String>,
) -> EtcdReport {
    let facts = &crate::upstream::facts().k3s;
    let members = match &live.members {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("cannot read the etcd members (/db/info): {e}"));
            return EtcdReport {
                via: None,
                error: Some(e.to_string()),
                members: Vec::new(),
            };
        }
    };
    let planned_server = |name: &str| {
        plans
            .iter()
            .find(|p| p.name == name && p.role == Role::Server)
    };
    let mut rows = Vec::new();
    for m in members {
        let node = m.node_name().to_string();
        let peer = m.peer_host().map(str::to_string);
        let live_node = live_nodes.and_then(|l| l.get(node.as_str()));
        let claimed =
            live_node.and_then(|n| n.metadata.annotations.get(&facts.etcd_node_name_annotation));
        let (stale, problem) = if m.name.is_empty() {
            (
                true,
                Some(format!(
                    "added but never started (peer {})",
                    peer.as_deref().unwrap_or("?")
                )),
            )
        } else if let Some(other) = claimed.filter(|c| **c != m.name) {
            (
                true,
                Some(format!(
                    "stale: node {node} now runs member {other} (re-imaged?)"
                )),
            )
        } else if live_nodes.is_some() && live_node.is_none() {
            (
                true,
                Some(format!("stale: there is no node {node} in the cluster")),
            )
        } else if let Some(plan) = planned_server(&node) {
            match &peer {
                Some(p) if p.parse::<Ipv4Addr>().ok() != plan.network.address => (
                    false,
                    Some(format!("peer address {p}, planned {}", planned_ip(plan))),
                ),
                _ => (false, None),
            }
        } else {
            (
                false,
                Some(format!(
                    "belongs to {node}, which the profile does not plan as a server"
                )),
            )
        };
        if let Some(p) = &problem {
            problems.push(format!(
                "etcd member {} ({:x}): {p}",
                display_name(&m.name),
                m.id
            ));
        }
        rows.push(MemberRow {
            id: format!("{:x}", m.id),
            name: m.name.clone(),
            node,
            peer,
            learner: m.is_learner,
            stale,
            problem,
        });
    }
    for plan in plans.iter().filter(|p| p.role == Role::Server) {
        let joined = live_nodes.is_some_and(|l| l.contains_key(plan.name.as_str()));
        let current: Vec<&str> = rows
            .iter()
            .filter(|r| r.node == plan.name && !r.stale)
            .map(|r| r.name.as_str())
            .collect();
        if joined && current.is_empty() {
            problems.push(format!("{}: has no etcd member", plan.name));
        }
        // Without the Node's annotation naming its member, two members of one node
        // cannot be told apart: all but one are stale, which one is not known.
        if current.len() > 1 {
            problems.push(format!(
                "{}: {} etcd members ({}); all but the one it runs are stale",
                plan.name,
                current.len(),
                current.join(", ")
            ));
        }
    }
    EtcdReport {
        via: live.etcd_via.as_ref().map(endpoint_text),
        error: None,
        members: rows,
    }
}

fn display_name(name: &str) -> &str {
    if name.is_empty() { "(unnamed)" } else { name }
}
