//! Validation: every problem of a profile at once, each naming its field.
//!
//! Field paths look like `k3s.vip` or `nodes[5] (pi4-worker-1).ip`, so a message
//! names both the TOML location and the node.

use super::hardware::{self, AGENT_WARN_RAM_MB, SERVER_MIN_RAM_MB};
use super::keys::{self, KeyError};
use super::model::{EtcdS3, Node, Profile, SD_IMAGE_GC_HIGH, SD_IMAGE_GC_LOW, Storage};
use super::suggest;
use super::{password, wifi};
use piimg_contract::Role;
use piimg_contract::storage::{DiskBus, SdWear};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

/// One problem (or warning) about one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Where: `network.gateway`, `nodes[3] (pi5-worker-1).ip`, …
    pub field: String,
    /// What is wrong, with a hint.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Everything validation found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    /// Problems that stop a build.
    pub errors: Vec<Finding>,
    /// Things worth knowing that do not stop a build.
    pub warnings: Vec<Finding>,
}

impl Findings {
    /// True when there is no error.
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Finding {
            field: field.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Finding {
            field: field.into(),
            message: message.into(),
        });
    }
}

/// Keys piimg writes into k3s's config.yaml itself; a profile may not set them.
const MANAGED_K3S_KEYS: &[&str] = &[
    "token",
    "token-file",
    "server",
    "cluster-init",
    "node-name",
    "node-ip",
    "node-label",
    "node-taint",
    "tls-san",
    "disable",
    "kubelet-arg",
    "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention",
];

/// Packaged components k3s's `--disable` accepts.
pub const K3S_COMPONENTS: &[&str] = &[
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
];

/// Checks `profile` and returns every error and warning (reads key files; no network).
pub fn validate(profile: &Profile) -> Findings {
    let mut f = Findings::default();
    cluster(profile, &mut f);
    network(profile, &mut f);
    k3s(profile, &mut f);
    access(profile, &mut f);
    nodes(profile, &mut f);
    storage(profile, &mut f);
    wifi_section(profile, &mut f);
    for p in super::customize::check::check(profile) {
        if p.warning {
            f.warn(p.field, p.message);
        } else {
            f.error(p.field, p.message);
        }
    }
    f
}

/// `nodes[i] (name).field`.
fn node_field(i: usize, node: &Node, field: &str) -> String {
    format!("nodes[{i}] ({}).{field}", node.name)
}

/// RFC 1123 label, lowercase (Kubernetes node names are lowercase).
pub fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_domain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_hostname)
}

fn cluster(p: &Profile, f: &mut Findings) {
    if !is_hostname(&p.cluster.name) {
        f.error(
            "cluster.name",
            format!(
                "\"{}\" is not a valid name (lowercase letters, digits and '-', at most 63 characters)",
                p.cluster.name
            ),
        );
    }
    if let Some(d) = &p.cluster.domain {
        if !is_domain(d) {
            f.error(
                "cluster.domain",
                format!("\"{d}\" is not a valid DNS domain"),
            );
        }
    }
    if let Some(name) = &p.cluster.bootstrap {
        match p.node(name) {
            None => {
                let hint = suggest::nearest(name, p.servers().map(|n| n.name.as_str()))
                    .map(|s| format!(", did you mean \"{s}\"?"))
                    .unwrap_or_default();
                f.error(
                    "cluster.bootstrap",
                    format!("\"{name}\" is not a node of this profile{hint}"),
                );
            }
            Some(n) if n.role != Role::Server => f.error(
                "cluster.bootstrap",
                format!("\"{name}\" is an agent; the bootstrap node must be a server"),
            ),
            Some(_) => {}
        }
    }
    if let Some(dir) = &p.cluster.overlay_dir {
        let dir = p.resolve_path(dir);
        if !dir.is_dir() {
            f.error(
                "cluster.overlay_dir",
                format!("{} is not a directory", dir.display()),
            );
        }
    }
}

/// Why `ip` cannot be a host address on this LAN, if it cannot.
fn address_problem(p: &Profile, ip: Ipv4Addr, is_vip: bool) -> Option<String> {
    let net = &p.network.cidr;
    if !net.contains(ip) {
        Some(format!("{ip} is outside the network {net}"))
    } else if ip == net.network() {
        Some(format!("{ip} is the network address of {net}"))
    } else if ip == net.broadcast() {
        Some(format!("{ip} is the broadcast address of {net}"))
    } else if ip == p.network.gateway {
        Some(format!("{ip} is the gateway"))
    } else if !is_vip && p.k3s.vip == Some(ip) {
        Some(format!("{ip} is the control-plane VIP (k3s.vip)"))
    } else {
        None
    }
}

fn network(p: &Profile, f: &mut Findings) {
    let net = &p.network.cidr;
    let gw = p.network.gateway;
    if !net.contains(gw) {
        f.error(
            "network.gateway",
            format!("{gw} is outside the network {net}"),
        );
    } else if gw == net.network() || gw == net.broadcast() {
        f.error(
            "network.gateway",
            format!("{gw} is the network or broadcast address of {net}"),
        );
    }
    if p.network.dns.is_empty() {
        f.error(
            "network.dns",
            "no resolver; list at least one (e.g. the gateway)",
        );
    }
    if p.network.interface.is_empty()
        || p.network.interface.len() > 15
        || p.network.interface.contains(['/', ' '])
    {
        f.error(
            "network.interface",
            format!(
                "\"{}\" is not an interface name (like eth0)",
                p.network.interface
            ),
        );
    }
    for (i, s) in p.network.search.iter().enumerate() {
        if !is_domain(s) {
            f.error(
                format!("network.search[{i}]"),
                format!("\"{s}\" is not a valid DNS domain"),
            );
        }
    }
    if let Some(vip) = p.k3s.vip {
        if let Some(why) = address_problem(p, vip, true) {
            f.error("k3s.vip", why);
        }
    }
}

/// A k3s release tag: `v<major>.<minor>.<patch>+k3s<n>` (optionally `-rc<n>`).
pub fn is_k3s_version(v: &str) -> bool {
    let Some(rest) = v.strip_prefix('v') else {
        return false;
    };
    let Some((semver, build)) = rest.split_once('+') else {
        return false;
    };
    let core = semver.split('-').next().unwrap_or_default();
    let nums: Vec<&str> = core.split('.').collect();
    nums.len() == 3
        && nums
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && build
            .strip_prefix("k3s")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn args(list: &[String], field: &str, managed: bool, f: &mut Findings) {
    for (i, a) in list.iter().enumerate() {
        let key = a
            .split('=')
            .next()
            .unwrap_or_default()
            .trim_start_matches("--");
        if !a.contains('=') || key.is_empty() {
            f.error(format!("{field}[{i}]"), format!("\"{a}\" is not key=value"));
        } else if managed && key.starts_with("etcd-s3") {
            f.error(
                format!("{field}[{i}]"),
                format!(
                    "\"{key}\" comes from [k3s.etcd_s3] (its keys from the secrets directory); set it there"
                ),
            );
        } else if managed && MANAGED_K3S_KEYS.contains(&key) {
            f.error(
                format!("{field}[{i}]"),
                format!("\"{key}\" is set by piimg; use the matching profile setting instead"),
            );
        }
    }
}

fn k3s(p: &Profile, f: &mut Findings) {
    let k = &p.k3s;
    if k.channel.is_some() {
        f.error(
            "k3s.channel",
            "channels are not supported; pin k3s.version (e.g. \"v1.31.4+k3s1\") so every node and every re-flash runs the same k3s",
        );
    }
    match &k.version {
        None if k.channel.is_none() => f.error(
            "k3s.version",
            "missing; pin a k3s release, e.g. version = \"v1.31.4+k3s1\"",
        ),
        Some(v) if !is_k3s_version(v) => f.error(
            "k3s.version",
            format!("\"{v}\" is not a k3s release tag (like \"v1.31.4+k3s1\")"),
        ),
        _ => {}
    }
    if k.etcd_snapshot_schedule.split_whitespace().count() != 5 {
        f.error(
            "k3s.etcd_snapshot_schedule",
            format!(
                "\"{}\" is not a 5-field cron schedule (like \"0 */6 * * *\")",
                k.etcd_snapshot_schedule
            ),
        );
    }
    if !(30..=3600).contains(&k.init_window_seconds) {
        f.error(
            "k3s.init_window_seconds",
            "must be between 30 and 3600 (seconds the bootstrap card waits for its peers before it initialises; default 300)",
        );
    }
    if !(1..=3650).contains(&k.node_cleaner_days) {
        f.error(
            "k3s.node_cleaner_days",
            "must be between 1 and 3650 (validity of each server's node-cleaner certificate; default 365)",
        );
    }
    if k.etcd_snapshot_retention == 0 {
        f.error("k3s.etcd_snapshot_retention", "must be at least 1");
    }
    for (i, s) in k.tls_san.iter().enumerate() {
        if s.is_empty() || s.contains(char::is_whitespace) {
            f.error(
                format!("k3s.tls_san[{i}]"),
                format!("\"{s}\" is not a host name or IP"),
            );
        }
    }
    for (i, c) in k.disable.iter().enumerate() {
        if !K3S_COMPONENTS.contains(&c.as_str()) {
            let hint = suggest::nearest(c, K3S_COMPONENTS.iter().copied())
                .map(|s| format!(", did you mean \"{s}\"?"))
                .unwrap_or_default();
            f.error(
                format!("k3s.disable[{i}]"),
                format!(
                    "\"{c}\" is not a k3s packaged component{hint} (known: {})",
                    K3S_COMPONENTS.join(", ")
                ),
            );
        }
    }
    args(&k.server_args, "k3s.server_args", true, f);
    args(&k.agent_args, "k3s.agent_args", true, f);
    args(&k.kubelet_args, "k3s.kubelet_args", false, f);
    if let Some(dir) = &k.airgap_dir {
        let dir = p.resolve_path(dir);
        for file in ["k3s-arm64", "install.sh"] {
            if !dir.join(file).is_file() {
                f.error("k3s.airgap_dir", format!("{} has no {file}", dir.display()));
            }
        }
    }
}

/// A Linux login name as Debian's adduser accepts by default.
fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_github_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 39
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
}

fn access(p: &Profile, f: &mut Findings) {
    let a = &p.access;
    if a.admin_user == "root" {
        f.error(
            "access.admin_user",
            "must not be root; name an ordinary admin user (it gets sudo)",
        );
    } else if !is_user_name(&a.admin_user) {
        f.error(
            "access.admin_user",
            format!(
                "\"{}\" is not a valid user name (lowercase letters, digits, '-' and '_', starting with a letter, at most 32 characters)",
                a.admin_user
            ),
        );
    }
    let mut good = 0;
    for (i, line) in a.ssh_keys.iter().enumerate() {
        match keys::parse_key_line(line) {
            // Counted as a key so the reference profile validates; build and flash
            // refuse it (`keys::for_card`).
            Ok(_) if keys::is_placeholder(line) => {
                good += 1;
                f.warn(
                    format!("access.ssh_keys[{i}]"),
                    format!(
                        "the reference profile's placeholder key (comment {}…): nobody can log in with it, so build and flash refuse it; replace it with your public key, e.g. ssh_key_files = [\"~/.ssh/id_ed25519.pub\"]",
                        keys::PLACEHOLDER_MARK
                    ),
                );
            }
            Ok(_) => good += 1,
            Err(e) => f.error(format!("access.ssh_keys[{i}]"), e.to_string()),
        }
    }
    for i in 0..a.ssh_key_files.len() {
        let field = format!("access.ssh_key_files[{i}]");
        match keys::read_listed_file(p, i) {
            Ok(k) => good += k.len(),
            // Counted as a key so the reference profile (`~/.ssh/id_ed25519.pub`)
            // can be explored on a machine without one; build and flash refuse it.
            Err(KeyError::KeyFile { path, reason, .. }) => {
                good += 1;
                f.warn(
                    field,
                    format!(
                        "cannot read {}: {reason}; build and flash refuse to run without it; {}",
                        path.display(),
                        keys::KEY_FILE_HINT
                    ),
                );
            }
            Err(e) => f.error(field, e.to_string()),
        }
    }
    for (i, user) in a.github_users.iter().enumerate() {
        if is_github_user(user) {
            good += 1;
        } else {
            f.error(
                format!("access.github_users[{i}]"),
                format!("\"{user}\" is not a GitHub user name"),
            );
        }
    }
    let bad = f
        .errors
        .iter()
        .any(|e| e.field.starts_with("access.ssh_") || e.field.starts_with("access.github_"));
    if good == 0 && !bad {
        f.error("access", KeyError::None.to_string());
    }
    if let Some(hash) = &a.password_hash {
        if let Some(why) = password::problem(hash) {
            f.error("access.password_hash", why);
        }
    }
    if a.password_login {
        f.warn(
            "access.password_login",
            "SSH password login is on; keys alone are safer",
        );
    }
}

/// `[wifi]` and how it meets `network.interface` and `hardware.disable_wifi`.
fn wifi_section(p: &Profile, f: &mut Findings) {
    let wlan = p.network.interface.starts_with("wlan");
    let Some(w) = &p.wifi else {
        if wlan {
            f.error(
                "network.interface",
                format!(
                    "\"{}\" is a Wi-Fi interface but the profile has no [wifi]; add [wifi] with ssid, psk and country, or use interface = \"eth0\"",
                    p.network.interface
                ),
            );
        }
        return;
    };
    if p.hardware.disable_wifi {
        f.error(
            "hardware.disable_wifi",
            "turns the radio off, but [wifi] asks the nodes to join a Wi-Fi network; drop one of them",
        );
    }
    if !wlan {
        f.error(
            "network.interface",
            format!(
                "\"{}\" is not a Wi-Fi interface, but [wifi] is set: piimg configures one interface; set interface = \"wlan0\" to use Wi-Fi, or remove [wifi]",
                p.network.interface
            ),
        );
    }
    if let Err(e) = wifi::check_ssid(&w.ssid) {
        f.error("wifi.ssid", e.to_string());
    }
    if let Err(e) = wifi::psk_hex(&w.ssid, &w.psk) {
        f.error("wifi.psk", e.to_string());
    }
    if let Err(e) = wifi::check_country(&w.country) {
        f.error("wifi.country", e.to_string());
    }
}

fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_label_key(k: &str) -> bool {
    match k.rsplit_once('/') {
        Some((prefix, name)) => is_domain(prefix) && !prefix.is_empty() && is_label_name(name),
        None => is_label_name(k),
    }
}

fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_label_name(v)
}

fn is_taint(t: &str) -> bool {
    let Some((kv, effect)) = t.rsplit_once(':') else {
        return false;
    };
    let key = kv
        .split_once('=')
        .map_or(kv, |(k, v)| if is_label_value(v) { k } else { "" });
    is_label_key(key) && ["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect)
}

fn is_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn nodes(p: &Profile, f: &mut Findings) {
    if p.nodes.is_empty() {
        f.error("nodes", "no nodes; add a [[nodes]] table per machine");
        return;
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, usize> = HashMap::new();
    let mut macs: HashMap<String, usize> = HashMap::new();
    let mut sd_servers = Vec::new();
    for (i, n) in p.nodes.iter().enumerate() {
        if !is_hostname(&n.name) {
            f.error(
                format!("nodes[{i}].name"),
                format!(
                    "\"{}\" is not a valid hostname (RFC 1123: lowercase letters, digits and '-', 1-63 characters, no leading or trailing '-')",
                    n.name
                ),
            );
        } else if let Some(j) = names.insert(&n.name, i) {
            f.error(
                format!("nodes[{i}].name"),
                format!("\"{}\" is already the name of nodes[{j}]", n.name),
            );
        }
        match (n.ip, n.dhcp) {
            (Some(_), true) => f.error(
                node_field(i, n, "dhcp"),
                "both ip and dhcp = true; give the node exactly one of them",
            ),
            (None, false) => f.error(
                node_field(i, n, "ip"),
                "missing; give the node a static ip = \"a.b.c.d\" or dhcp = true (agents only)",
            ),
            (None, true) if n.role == Role::Server => f.error(
                node_field(i, n, "dhcp"),
                "a server needs a fixed address (the other nodes join through it, and the VIP and TLS SANs name it); give it ip = \"a.b.c.d\" (a DHCP reservation is fine) or make it an agent",
            ),
            _ => {}
        }
        if let Some(ip) = n.ip {
            if let Some(j) = ips.get(&ip) {
                f.error(
                    node_field(i, n, "ip"),
                    format!(
                        "{ip} is already the address of nodes[{j}] ({})",
                        p.nodes[*j].name
                    ),
                );
            } else {
                ips.insert(ip, i);
                if let Some(why) = address_problem(p, ip, false) {
                    f.error(node_field(i, n, "ip"), why);
                }
            }
        }
        match hardware::class(&n.hardware) {
            None => {
                let hint = suggest::nearest(&n.hardware, hardware::class_ids())
                    .map(|s| format!(", did you mean \"{s}\"?"))
                    .unwrap_or_default();
                let known: Vec<&str> = hardware::class_ids().collect();
                f.error(
                    node_field(i, n, "hardware"),
                    format!(
                        "unknown hardware class \"{}\"{hint} (known: {})",
                        n.hardware,
                        known.join(", ")
                    ),
                );
            }
            Some(c) if n.role == Role::Server && c.ram_mb < SERVER_MIN_RAM_MB => f.error(
                node_field(i, n, "role"),
                format!(
                    "a server needs at least 2 GB of RAM, but {} has {} MB; make this node an agent",
                    c.id, c.ram_mb
                ),
            ),
            Some(c) if n.role == Role::Agent && c.ram_mb < AGENT_WARN_RAM_MB => f.warn(
                node_field(i, n, "hardware"),
                format!(
                    "an agent with {} MB of RAM ({}) leaves little room for workloads after k3s itself",
                    c.ram_mb, c.id
                ),
            ),
            Some(_) => {}
        }
        // etcd lives in k3s's data directory: on the SD card unless the node boots
        // from a disk or keeps that directory on a data disk.
        if n.role == Role::Server && n.storage == Storage::Sd && n.data_disk.is_none() {
            sd_servers.push(n.name.as_str());
        }
        if let Some(mac) = &n.mac {
            if !is_mac(mac) {
                f.error(
                    node_field(i, n, "mac"),
                    format!("\"{mac}\" is not a MAC address (like dc:a6:32:01:02:03)"),
                );
            } else if let Some(j) = macs.insert(mac.to_ascii_lowercase(), i) {
                f.error(
                    node_field(i, n, "mac"),
                    format!(
                        "{mac} is already the MAC of nodes[{j}] ({})",
                        p.nodes[j].name
                    ),
                );
            }
        }
        for (k, v) in &n.labels {
            if !is_label_key(k) {
                f.error(
                    node_field(i, n, "labels"),
                    format!("\"{k}\" is not a valid label key"),
                );
            } else if k.starts_with("piimg.io/") {
                f.error(
                    node_field(i, n, "labels"),
                    format!("\"{k}\" is set by piimg from the hardware class; use another prefix"),
                );
            }
            if !is_label_value(v) {
                f.error(
                    node_field(i, n, "labels"),
                    format!("\"{v}\" (label {k}) is not a valid label value"),
                );
            }
        }
        for (j, t) in n.taints.iter().enumerate() {
            if !is_taint(t) {
                f.error(
                    node_field(i, n, &format!("taints[{j}]")),
                    format!(
                        "\"{t}\" is not a taint (key[=value]:NoSchedule|PreferNoSchedule|NoExecute)"
                    ),
                );
            }
        }
        args(&n.kubelet_args, &node_field(i, n, "kubelet_args"), false, f);
    }
    let servers = p.servers().count();
    match servers {
        0 => f.error("nodes", "no server; at least one node needs role = \"server\""),
        1 => f.warn(
            "nodes",
            "1 server: no HA (the control plane and etcd have a single point of failure; use 3 servers for HA)",
        ),
        n if n % 2 == 0 => f.error(
            "nodes",
            format!("{n} servers with embedded etcd: an even count risks split brain (etcd needs a majority); use 3 or 5"),
        ),
        _ => {}
    }
    if !sd_servers.is_empty() {
        f.warn(
            "nodes",
            format!(
                "embedded etcd on SD cards ({}) is slow and wears the cards; boot these servers from a USB or NVMe disk (storage = \"usb\" or \"nvme\") or give them a data disk for k3s (data_disk = \"usb\" or \"nvme\")",
                sd_servers.join(", ")
            ),
        );
    }
}

// ---- storage: boot device, data disk, [storage], [k3s.etcd_s3] ----

/// Board names in messages.
fn board_name(board: &str) -> &str {
    match board {
        "pi5" => "Raspberry Pi 5",
        "pi4" => "Raspberry Pi 4",
        "pi02" => "Raspberry Pi Zero 2 W",
        other => other,
    }
}

fn storage(p: &Profile, f: &mut Findings) {
    let boot = &crate::upstream::facts().boot;
    let can = |list: &[String], board: &str| list.iter().any(|b| b == board);
    let mut pi5_nvme = false;
    for (i, n) in p.nodes.iter().enumerate() {
        let Some(class) = hardware::class(&n.hardware) else {
            continue;
        };
        let board = class.board;
        match n.storage {
            Storage::Nvme if !can(&boot.nvme_boot_boards, board) => f.error(
                node_field(i, n, "storage"),
                format!(
                    "a {} cannot boot from NVMe (only a Raspberry Pi 5 has the PCIe connector); put the SSD in a USB adapter and use storage = \"usb\"",
                    board_name(board)
                ),
            ),
            Storage::Usb if !can(&boot.usb_boot_boards, board) => f.error(
                node_field(i, n, "storage"),
                format!(
                    "a {} cannot boot from USB; use storage = \"sd\"",
                    board_name(board)
                ),
            ),
            Storage::Nvme => pi5_nvme = true,
            _ => {}
        }
        match (n.data_disk, n.storage) {
            (None, _) => {}
            (Some(_), Storage::Usb | Storage::Nvme) => f.error(
                node_field(i, n, "data_disk"),
                format!(
                    "this node boots from its {} disk, which already holds k3s's data; data_disk is for nodes that boot from their SD card (remove one of the two)",
                    storage_name(n.storage)
                ),
            ),
            (Some(DiskBus::Nvme), Storage::Sd) if !can(&boot.nvme_boot_boards, board) => f.error(
                node_field(i, n, "data_disk"),
                format!(
                    "a {} has no PCIe connector for an NVMe SSD; put it in a USB adapter and use data_disk = \"usb\"",
                    board_name(board)
                ),
            ),
            (Some(DiskBus::Nvme), Storage::Sd) => pi5_nvme = true,
            (Some(DiskBus::Usb), Storage::Sd) => {}
        }
    }
    image_gc(p, f);
    if p.storage.pcie_gen3 && !pi5_nvme {
        f.warn(
            "storage.pcie_gen3",
            "no Raspberry Pi 5 node has an NVMe disk (storage or data_disk = \"nvme\"): it changes nothing",
        );
    }
    if p.nodes.iter().any(|n| n.data_disk.is_some()) {
        let data_dir = |list: &[String]| {
            list.iter()
                .any(|a| a.trim_start_matches("--").starts_with("data-dir="))
        };
        for (field, list) in [
            ("k3s.server_args", &p.k3s.server_args),
            ("k3s.agent_args", &p.k3s.agent_args),
        ] {
            if data_dir(list) {
                f.error(
                    field,
                    format!(
                        "data-dir moves k3s's data off the nodes' data disks (mounted at {}); remove it",
                        piimg_contract::storage::K3S_DATA_DIR
                    ),
                );
            }
        }
    }
    match &p.k3s.etcd_s3 {
        Some(s3) => etcd_s3(p, s3, f),
        None if p.servers().count() > 1 => f.warn(
            "k3s.etcd_s3",
            format!(
                "{} servers keep their etcd snapshots only on their own disks; add [k3s.etcd_s3] (an S3 or MinIO bucket) so a snapshot survives the disk that dies",
                p.servers().count()
            ),
        ),
        None => {}
    }
}

/// The last `key=<integer>` of `list`, if any.
fn int_arg(list: &[String], key: &str) -> Option<i64> {
    list.iter().rev().find_map(|a| {
        a.trim_start_matches("--")
            .strip_prefix(key)?
            .strip_prefix('=')?
            .trim()
            .parse()
            .ok()
    })
}

/// kubelet refuses to start unless 0 <= image-gc-low < image-gc-high <= 100; the
/// values a node ends up with come from `sd_wear` (SD nodes), then `k3s.kubelet_args`,
/// then the node's own `kubelet_args`.
fn image_gc(p: &Profile, f: &mut Findings) {
    let facts = &crate::upstream::facts().k3s_storage;
    let (high_key, low_key) = ("image-gc-high-threshold", "image-gc-low-threshold");
    for (i, n) in p.nodes.iter().enumerate() {
        let spared = n.storage == Storage::Sd && p.storage.sd_wear == SdWear::Minimal;
        let (mut high, mut low) = if spared {
            (i64::from(SD_IMAGE_GC_HIGH), i64::from(SD_IMAGE_GC_LOW))
        } else {
            (
                i64::from(facts.kubelet_image_gc_high_default),
                i64::from(facts.kubelet_image_gc_low_default),
            )
        };
        let mut from = "kubelet's defaults";
        for (field, list) in [
            ("k3s.kubelet_args", &p.k3s.kubelet_args),
            ("kubelet_args", &n.kubelet_args),
        ] {
            if let Some(v) = int_arg(list, high_key) {
                high = v;
                from = field;
            }
            if let Some(v) = int_arg(list, low_key) {
                low = v;
                from = field;
            }
        }
        if !(0..=100).contains(&high) || !(0..=100).contains(&low) || low >= high {
            f.error(
                node_field(i, n, "kubelet_args"),
                format!(
                    "this node's kubelet would get {high_key}={high} and {low_key}={low} (last set in {from}{}); kubelet refuses to start unless 0 <= low < high <= 100",
                    if spared {
                        format!(
                            ", over sd_wear = \"minimal\"'s {SD_IMAGE_GC_HIGH}/{SD_IMAGE_GC_LOW}"
                        )
                    } else {
                        String::new()
                    }
                ),
            );
        }
    }
}

fn storage_name(s: Storage) -> &'static str {
    match s {
        Storage::Sd => "SD",
        Storage::Usb => "USB",
        Storage::Nvme => "NVMe",
    }
}

/// An S3 bucket name: 3-63 lowercase letters, digits, '.' and '-', starting and
/// ending with a letter or digit.
fn is_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn etcd_s3(p: &Profile, s3: &EtcdS3, f: &mut Findings) {
    if !is_bucket(&s3.bucket) {
        f.error(
            "k3s.etcd_s3.bucket",
            format!(
                "\"{}\" is not an S3 bucket name (3-63 lowercase letters, digits, '.' and '-')",
                s3.bucket
            ),
        );
    }
    let e = &s3.endpoint;
    if e.contains("://") {
        f.error(
            "k3s.etcd_s3.endpoint",
            format!(
                "\"{e}\": give host[:port] without a scheme (k3s uses HTTPS; insecure = true for plain HTTP)"
            ),
        );
    } else if e.is_empty() || e.contains(['/', ' ', '\t']) {
        f.error(
            "k3s.etcd_s3.endpoint",
            format!("\"{e}\" is not host[:port], e.g. \"minio.lan:9000\""),
        );
    }
    if let Some(folder) = &s3.folder {
        if folder.is_empty()
            || folder.split('/').any(str::is_empty)
            || folder.contains(char::is_whitespace)
        {
            f.error(
                "k3s.etcd_s3.folder",
                format!(
                    "\"{folder}\" is not a folder (no leading, trailing or double '/', no spaces), e.g. \"{}\"",
                    p.cluster.name
                ),
            );
        }
    }
    if s3.region.is_empty() || s3.region.contains(char::is_whitespace) {
        f.error(
            "k3s.etcd_s3.region",
            format!("\"{}\" is not a region (like \"us-east-1\")", s3.region),
        );
    }
    if let Some(ca) = &s3.endpoint_ca {
        let path = p.resolve_path(ca);
        match std::fs::read_to_string(&path) {
            Err(e) => f.error(
                "k3s.etcd_s3.endpoint_ca",
                format!("{}: {e}", path.display()),
            ),
            Ok(text) if !text.contains("-----BEGIN CERTIFICATE-----") => f.error(
                "k3s.etcd_s3.endpoint_ca",
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            ),
            Ok(_) if s3.insecure => f.error(
                "k3s.etcd_s3.endpoint_ca",
                "a CA bundle is for HTTPS, but insecure = true turns HTTPS off; remove one",
            ),
            Ok(_) if s3.skip_ssl_verify => f.warn(
                "k3s.etcd_s3.skip_ssl_verify",
                "certificates are not checked, so endpoint_ca is not used; drop skip_ssl_verify",
            ),
            Ok(_) => {}
        }
    }
    if s3.insecure {
        f.warn(
            "k3s.etcd_s3.insecure",
            "snapshots (every cluster secret in them) and the S3 keys travel over plain HTTP",
        );
    } else if s3.skip_ssl_verify && s3.endpoint_ca.is_none() {
        f.warn(
            "k3s.etcd_s3.skip_ssl_verify",
            "the endpoint's certificate is not checked; give its CA as endpoint_ca instead",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_rfc1123_lowercase() {
        assert!(is_hostname("pi5-master-1"));
        assert!(!is_hostname("Pi5"));
        assert!(!is_hostname("-a"));
        assert!(!is_hostname("a_b"));
        assert!(!is_hostname(&"a".repeat(64)));
    }

    #[test]
    fn k3s_versions_are_release_tags() {
        assert!(is_k3s_version("v1.31.4+k3s1"));
        assert!(is_k3s_version("v1.32.0-rc1+k3s2"));
        assert!(!is_k3s_version("1.31.4+k3s1"));
        assert!(!is_k3s_version("v1.31+k3s1"));
        assert!(!is_k3s_version("stable"));
    }

    #[test]
    fn taints_and_labels() {
        assert!(is_taint("dedicated=edge:NoSchedule"));
        assert!(is_taint("gpu:NoExecute"));
        assert!(!is_taint("gpu=yes"));
        assert!(!is_taint("gpu=yes:Sometimes"));
        assert!(is_label_key("example.com/zone"));
        assert!(!is_label_key("bad key"));
        assert!(is_mac("dc:a6:32:01:02:0f"));
        assert!(!is_mac("dc:a6:32:01:02"));
    }
}
