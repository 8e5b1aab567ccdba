//! HA on loopback: every node is a real agent process with its own `--root` and its
//! own 127.0.0.x address; cards carry the real CA, token, node password and
//! node-cleaner identity made by the builder's pki. k3s is played by a STAND-IN
//! (piimg-test-support's standin/standin_k3s.py, Python's ssl module): it serves /ping, /cacerts,
//! /db/info behind server basic auth and Nodes behind client certificates on the
//! node's address. Nothing here runs or claims to run real k3s.

use piimg::pki::manifests::Addons;
use piimg::pki::{ClusterCa, HaOptions, files_for_node, node_password};
use piimg::plan::*;
use piimg_contract::*;
use piimg_test_support::files::put;
use piimg_test_support::standin::{self, StandinNode};
use piimg_test_support::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The agent binary under test (firstboot/src/main.rs, built in this package).
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot-host");

const SECRET: &str = "4f6c2a9e1d7b3c58a0e2f4b6d8c1a3e5";
const AGENT_SECRET: &str = "a9e1d7b3c58a0e2f4b6d8c1a3e54f6c2";
const VIP: &str = "127.0.0.10";

#[derive(Debug, Clone, Copy)]
struct Spec {
    name: &'static str,
    ip: &'static str,
    role: Role,
    bootstrap: bool,
}

const fn server(name: &'static str, ip: &'static str, bootstrap: bool) -> Spec {
    Spec {
        name,
        ip,
        role: Role::Server,
        bootstrap,
    }
}
const fn agent(name: &'static str, ip: &'static str) -> Spec {
    Spec {
        name,
        ip,
        role: Role::Agent,
        bootstrap: false,
    }
}

/// The reference cluster (3 servers, 5 agents), on loopback.
const REFERENCE: [Spec; 8] = [
    server("pi5-master-1", "127.0.0.11", true),
    server("pi5-master-2", "127.0.0.12", false),
    server("pi5-master-3", "127.0.0.13", false),
    agent("pi5-worker-1", "127.0.0.21"),
    agent("pi5-worker-2", "127.0.0.22"),
    agent("pi4-worker-1", "127.0.0.23"),
    agent("pi4-worker-2", "127.0.0.24"),
    agent("pi4-worker-3", "127.0.0.25"),
];
const SERVERS: [Spec; 3] = [REFERENCE[0], REFERENCE[1], REFERENCE[2]];

/// A port free on every address the tests use, never handed to two clusters of this
/// test process (they run in parallel on the same 127.0.0.x addresses).
fn free_port() -> u16 {
    let addrs: Vec<&str> = std::iter::once(VIP)
        .chain(REFERENCE.iter().map(|s| s.ip))
        .collect();
    net::free_port(&addrs)
}

struct Cluster {
    tmp: tempfile::TempDir,
    state: PathBuf,
    port: u16,
    ca: ClusterCa,
    /// `HaOptions::init_window_secs` of the cards built next (short: most tests
    /// bring a cluster up from nothing, where the bootstrap card waits it out).
    init_window: std::cell::Cell<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(&tmp.path().join("secrets"), "homelab").unwrap();
        Cluster {
            state: tmp.path().join("cluster-state"),
            tmp,
            port: free_port(),
            ca,
            init_window: std::cell::Cell::new(2),
        }
    }

    fn plan(&self, s: &Spec) -> NodePlan {
        NodePlan {
            cluster: "homelab".into(),
            profile: "homelab".into(),
            name: s.name.into(),
            domain: None,
            role: s.role,
            bootstrap: s.bootstrap,
            first_boot: FirstBootAction::InitCluster,
            network: Network {
                interface: "eth0".into(),
                mac: None,
                address: Some(s.ip.parse().unwrap()),
                prefix_len: 8,
                gateway: "127.0.0.1".parse().unwrap(),
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
                ssh_authorized_keys: vec![KEY.into()],
                password_login: false,
                password_hash: None,
            },
            k3s: NodeK3s {
                version: "v1.31.4+k3s1".into(),
                vip: Some(VIP.parse().unwrap()),
                tls_san: vec![VIP.into()],
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
            servers: SERVERS
                .iter()
                .map(|s| (s.name.to_string(), s.ip.parse().unwrap()))
                .collect(),
            overlay_dir: None,
            storage: Default::default(),
            customize: Default::default(),
        }
    }

    /// Builds the card for `s` like `piimg build` would, and runs phase 1 on it.
    fn node(&self, s: Spec, first_bring_up: bool) -> Node {
        let nf = files_for_node(
            &self.plan(&s),
            &self.ca,
            SECRET,
            &HaOptions {
                first_bring_up,
                addons: Addons::default(),
                agent_token_secret: Some(AGENT_SECRET.into()),
                init_window_secs: self.init_window.get(),
                node_cleaner_days: 365,
                etcd_s3: None,
            },
        )
        .unwrap();
        let mut cfg = node_config(s.role, s.bootstrap, bookworm_hook());
        cfg.node_name = s.name.into();
        let servers: Vec<(&str, &str)> = SERVERS.iter().map(|s| (s.name, s.ip)).collect();
        cfg.servers = server_refs(&servers);
        cfg.vip = Some(VIP.parse().unwrap());
        cfg.network.address = Some(s.ip.parse().unwrap());
        cfg.k3s.config_yaml = format!("node-name: {}\nnode-ip: {}\n", s.name, s.ip);
        cfg.files.extend(nf.files.clone());
        cfg.ha = nf.ha.clone();
        let fx = Fixture::new(AGENT.as_ref(), &cfg);
        let secrets = CardSecrets {
            contract_version: CONTRACT_VERSION,
            token: nf.token.clone(),
            agent_token: nf.agent_token.clone(),
            node_password: Some(nf.node_password.clone()),
            files: nf.secret_files.clone(),
            password_hash: None,
        };
        put(&fx.boot.join(SECRETS_FILE), &secrets.to_json(), 0o755);
        standin::cluster_k3s(
            &fx.boot,
            StandinNode {
                root: &fx.root,
                name: s.name,
                ip: s.ip,
                port: self.port,
                cluster: &self.state,
            },
        );
        let systemctl = fx.dir.path().join("systemctl");
        standin::systemctl(&systemctl, &fx.root, &fx.log);
        let out = fx.run(&[]);
        assert!(
            out.status.success(),
            "{}: phase 1: {}",
            s.name,
            String::from_utf8_lossy(&out.stderr)
        );
        Node {
            fx,
            spec: s,
            systemctl,
            port: self.port,
            token: nf.token,
        }
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(self.state.join("state.json")).unwrap()).unwrap()
    }

    fn events(&self) -> Vec<String> {
        self.state()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect()
    }

    fn inits(&self) -> Vec<String> {
        self.state()["inits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect()
    }

    fn members(&self) -> Vec<String> {
        self.state()["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Brings `nodes` up at once (phase 2 of every agent in parallel); all must finish.
    fn bring_up(&self, nodes: &[&Node]) {
        let children: Vec<(&Node, Child)> = nodes.iter().map(|n| (*n, n.phase2(30))).collect();
        for (n, c) in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}: {}\n{}",
                n.spec.name,
                String::from_utf8_lossy(&out.stderr),
                self.log_of(n)
            );
            assert!(n.fx.status().complete, "{}", n.spec.name);
        }
    }

    fn log_of(&self, n: &Node) -> String {
        format!(
            "stand-in log: {}\nevents: {:?}",
            fs::read_to_string(n.fx.path("/var/log/standin-k3s.log")).unwrap_or_default(),
            fs::read_to_string(self.state.join("state.json")).unwrap_or_default()
        )
    }
}

struct Node {
    fx: Fixture,
    spec: Spec,
    systemctl: PathBuf,
    port: u16,
    token: String,
}

impl Node {
    fn cmd(&self, join_timeout: u64) -> Command {
        let mut c = self.fx.cmd();
        c.args([
            "--api-port",
            &self.port.to_string(),
            "--join-timeout",
            &join_timeout.to_string(),
            "--ready-timeout",
            "20",
            "--systemctl",
        ])
        .arg(&self.systemctl);
        c
    }

    fn phase2(&self, join_timeout: u64) -> Child {
        self.cmd(join_timeout)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn run(&self, join_timeout: u64) -> Output {
        self.cmd(join_timeout).output().unwrap()
    }

    fn k3s_config(&self) -> String {
        fs::read_to_string(self.fx.path("/etc/rancher/k3s/config.yaml")).unwrap_or_default()
    }

    /// The stand-in's pid, if it is running (checked against /proc so a reused pid
    /// of another process is never signalled).
    fn standin_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.fx.path("/run/standin-k3s.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        (cmdline.contains("standin_k3s.py")
            && cmdline.contains(&self.fx.root.display().to_string()))
        .then_some(pid)
    }

    fn answers(&self) -> bool {
        let addr = format!("{}:{}", self.spec.ip, self.port).parse().unwrap();
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    }

    /// Powers the node's k3s off (the stand-in server stops answering).
    fn stop(&self) {
        if let Some(pid) = self.standin_pid() {
            // SAFETY: kill(2) on a pid verified above to be our stand-in.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let t = Instant::now();
        while self.answers() && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!self.answers(), "{} still answers", self.spec.name);
    }

    /// Powers the node's k3s on again (as after a reboot) and waits until it answers.
    fn start(&self) {
        let out = Command::new(&self.systemctl)
            .args(["start", "--no-block", "k3s.service"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let t = Instant::now();
        while !self.answers() && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.answers(), "{} does not answer", self.spec.name);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(pid) = self.standin_pid() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

fn joins_via(n: &Node) -> Option<String> {
    n.k3s_config().lines().find_map(|l| {
        l.strip_prefix("server: ")
            .map(|u| u.trim_matches('"').to_string())
    })
}

fn inits(n: &Node) -> bool {
    n.k3s_config().lines().any(|l| l == "cluster-init: true")
}

#[test]
fn fresh_bring_up_of_the_reference_cluster_initialises_exactly_once() {
    let c = Cluster::new();
    let nodes: Vec<Node> = REFERENCE.iter().map(|s| c.node(*s, true)).collect();
    c.bring_up(&nodes.iter().collect::<Vec<_>>());
    assert_eq!(c.inits(), ["pi5-master-1"]);
    assert!(inits(&nodes[0]) && joins_via(&nodes[0]).is_none());
    // It initialised only after its init window passed with no peer answering.
    let join_step = nodes[0]
        .fx
        .status()
        .steps
        .into_iter()
        .find(|s| s.name == "join")
        .unwrap();
    assert!(
        join_step
            .message
            .contains("no server answered during the 2 s window: initialising a new cluster"),
        "{}",
        join_step.message
    );
    for n in &nodes[1..] {
        assert!(!inits(n), "{}", n.spec.name);
        let url = joins_via(n).unwrap_or_else(|| panic!("{} joins nobody", n.spec.name));
        assert!(url.starts_with("https://127.0.0.1"), "{url}");
        assert!(
            c.events()
                .iter()
                .any(|e| e.starts_with(&format!("join {} via https://", n.spec.name)))
        );
        // The deterministic node password was pre-seeded.
        assert_eq!(
            n.fx.read("/etc/rancher/node/password").trim(),
            node_password(SECRET, n.spec.name)
        );
    }
    let mut members = c.members();
    members.sort();
    assert_eq!(members.len(), 3);
    for (m, s) in members
        .iter()
        .zip(["pi5-master-1-", "pi5-master-2-", "pi5-master-3-"])
    {
        assert!(m.starts_with(s) && m.len() == s.len() + 8, "{m}");
    }
    // The CA went only to the bootstrap server's card; the node-cleaner identity was
    // scrubbed after the join; every server has the same manifests.
    assert!(
        nodes[0]
            .fx
            .path("/var/lib/rancher/k3s/server/tls/server-ca.key")
            .exists()
    );
    for n in &nodes[..3] {
        assert!(!n.fx.path(NODE_CLEANER_KEY).exists() && !n.fx.path(NODE_CLEANER_CERT).exists());
        assert_eq!(
            n.fx.read("/var/lib/rancher/k3s/server/manifests/piimg-node-cleaner-rbac.yaml"),
            nodes[0]
                .fx
                .read("/var/lib/rancher/k3s/server/manifests/piimg-node-cleaner-rbac.yaml")
        );
        assert_eq!(n.fx.mode("/etc/rancher/k3s/config.yaml"), 0o600);
    }
    assert!(
        !nodes[3]
            .fx
            .path("/var/lib/rancher/k3s/server/manifests")
            .exists()
    );
}

#[test]
fn bootstrap_rebuilt_while_others_run_joins_and_does_not_initialise() {
    let c = Cluster::new();
    let servers: Vec<Node> = SERVERS.iter().map(|s| c.node(*s, true)).collect();
    c.bring_up(&servers.iter().collect::<Vec<_>>());
    // Re-image pi5-master-1: the builder knows its bootstrap card was issued before.
    servers[0].stop();
    let rebuilt = c.node(SERVERS[0], false);
    assert!(
        !rebuilt
            .fx
            .path("/var/lib/rancher/k3s/server/tls/server-ca.key")
            .exists()
    );
    c.bring_up(&[&rebuilt]);
    assert_eq!(c.inits(), ["pi5-master-1"], "a second cluster was created");
    assert!(!inits(&rebuilt));
    assert_eq!(
        joins_via(&rebuilt).as_deref(),
        Some(format!("https://127.0.0.12:{}", c.port).as_str())
    );
    let ev = c.events();
    let del = ev
        .iter()
        .position(|e| e == "delete-node pi5-master-1 by system:piimg:node-cleaner:pi5-master-1")
        .unwrap();
    let gone = ev
        .iter()
        .position(|e| e == "member-removed pi5-master-1")
        .unwrap();
    let join = ev
        .iter()
        .rposition(|e| e.starts_with("join pi5-master-1 via"))
        .unwrap();
    assert!(del < gone && gone < join, "{ev:?}");
    assert_eq!(
        c.members()
            .iter()
            .filter(|m| m.starts_with("pi5-master-1-"))
            .count(),
        1
    );
}

#[test]
fn bootstrap_rebuilt_while_all_others_are_down_waits_and_never_initialises() {
    let c = Cluster::new();
    let servers: Vec<Node> = SERVERS.iter().map(|s| c.node(*s, true)).collect();
    c.bring_up(&servers.iter().collect::<Vec<_>>());
    for s in &servers {
        s.stop();
    }
    let rebuilt = c.node(SERVERS[0], false);
    // While it waits, the card's status says so and why.
    let child = rebuilt.phase2(3);
    let t = Instant::now();
    let waiting = loop {
        if let Some(st) = card_status(&rebuilt.fx.boot) {
            if st.step == "join" && st.message.starts_with("waiting (") {
                break st;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no waiting status");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(waiting.result, StepResult::Running);
    assert!(
        waiting.message.contains("this bootstrap card was rebuilt"),
        "{}",
        waiting.message
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = rebuilt.fx.status();
    assert_eq!((st.step.as_str(), st.result), ("join", StepResult::Error));
    for want in [
        "no healthy server to join after 3 s",
        "this bootstrap card was rebuilt (not a first bring-up): it never initialises a cluster and waits for a running server to join",
        &format!("no route to {VIP}:{}", c.port),
        &format!("no route to 127.0.0.12:{}", c.port),
    ] {
        assert!(st.message.contains(want), "{want:?} not in {}", st.message);
    }
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("step join: waiting ("), "{log}");
    assert!(
        rebuilt.k3s_config().is_empty(),
        "wrote a k3s config while waiting"
    );
    assert!(rebuilt.standin_pid().is_none() && !rebuilt.answers());
    assert_eq!(c.inits(), ["pi5-master-1"]);
    // A peer returns (pi5-master-3 reboots): the next run joins it.
    servers[2].start();
    let out = rebuilt.run(30);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log_of(&rebuilt)
    );
    assert_eq!(
        joins_via(&rebuilt).as_deref(),
        Some(format!("https://127.0.0.13:{}", c.port).as_str())
    );
    assert_eq!(c.inits(), ["pi5-master-1"]);
    assert!(rebuilt.fx.status().complete);
}

#[test]
fn a_rebuilt_worker_presents_the_same_node_password_and_is_accepted() {
    let c = Cluster::new();
    let spec = REFERENCE[5];
    let nodes: Vec<Node> = [SERVERS[0], spec]
        .iter()
        .map(|s| c.node(*s, true))
        .collect();
    c.bring_up(&nodes.iter().collect::<Vec<_>>());
    let first = nodes[1].fx.read("/etc/rancher/node/password");
    let rebuilt = c.node(spec, true);
    c.bring_up(&[&rebuilt]);
    assert_eq!(rebuilt.fx.read("/etc/rancher/node/password"), first);
    assert_eq!(rebuilt.fx.mode("/etc/rancher/node/password"), 0o600);
    assert!(
        c.events()
            .iter()
            .any(|e| e.starts_with("join pi4-worker-1 via")
                && e.ends_with("(known node, password matches)"))
    );
    // Without the pre-seeded password (k3s would make a random one) it is refused.
    let other = c.node(spec, true);
    let mut s = CardSecrets::from_json(&other.fx.read("/var/lib/piimg/secrets.json")).unwrap();
    s.node_password = Some("0123456789abcdef0123456789abcdef".into());
    fs::write(other.fx.path("/var/lib/piimg/secrets.json"), s.to_json()).unwrap();
    fs::write(
        other.fx.path("/etc/rancher/node/password"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let out = other
        .cmd(10)
        .args(["--ready-timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        c.events()
            .iter()
            .any(|e| e.contains("refused pi4-worker-1: Node password rejected"))
    );
}

#[test]
fn a_rebuilt_server_removes_its_stale_member_with_the_limited_identity_then_joins() {
    let c = Cluster::new();
    let servers: Vec<Node> = SERVERS.iter().map(|s| c.node(*s, true)).collect();
    c.bring_up(&servers.iter().collect::<Vec<_>>());
    let old: Vec<String> = c
        .members()
        .into_iter()
        .filter(|m| m.starts_with("pi5-master-3-"))
        .collect();
    assert_eq!(old.len(), 1);
    servers[2].stop();
    // A card whose token is not this cluster's: /db/info refuses the server
    // credentials before anything is deleted.
    let wrong = c.node(SERVERS[2], true);
    let mut s = CardSecrets::from_json(&wrong.fx.read("/var/lib/piimg/secrets.json")).unwrap();
    s.token = s.token.replace(SECRET, "not-the-secret");
    fs::write(wrong.fx.path("/var/lib/piimg/secrets.json"), s.to_json()).unwrap();
    assert_eq!(wrong.run(5).status.code(), Some(1));
    let msg = wrong.fx.status().message;
    assert!(
        msg.contains(&format!("https://127.0.0.11:{}/db/info refused the server credentials (HTTP 401): the card's token is not this cluster's", c.port)),
        "{msg}"
    );
    assert!(!wrong.fx.path("/var/lib/piimg/server-auth.curl").exists());
    assert!(
        !c.events().iter().any(|e| e.starts_with("delete-node")),
        "a card with a wrong token changed the cluster"
    );
    // A card whose node-cleaner identity went missing says so.
    let lost = c.node(SERVERS[2], true);
    fs::remove_file(lost.fx.path(NODE_CLEANER_KEY)).unwrap();
    assert_eq!(lost.run(5).status.code(), Some(1));
    let msg = lost.fx.status().message;
    assert!(
        msg.contains("/var/lib/piimg/node-cleaner.key: missing; the card's secrets should have put the node-cleaner identity there (rebuild the card)"),
        "{msg}"
    );
    let rebuilt = c.node(SERVERS[2], true);
    assert!(rebuilt.fx.path(NODE_CLEANER_KEY).exists());
    assert_eq!(rebuilt.fx.mode(NODE_CLEANER_KEY), 0o600);
    c.bring_up(&[&rebuilt]);
    let ev = c.events();
    let del = ev
        .iter()
        .position(|e| e == "delete-node pi5-master-3 by system:piimg:node-cleaner:pi5-master-3")
        .unwrap();
    let gone = ev
        .iter()
        .position(|e| e == "member-removed pi5-master-3")
        .unwrap();
    let join = ev
        .iter()
        .rposition(|e| e.starts_with("join pi5-master-3 via"))
        .unwrap();
    assert!(del < gone && gone < join, "{ev:?}");
    assert!(
        !ev.iter().any(|e| e.contains("duplicate node name")),
        "{ev:?}"
    );
    let now: Vec<String> = c
        .members()
        .into_iter()
        .filter(|m| m.starts_with("pi5-master-3-"))
        .collect();
    assert_eq!(now.len(), 1);
    assert_ne!(now, old);
    // The identity is gone from the node once it joined; the basic-auth file too.
    assert!(!rebuilt.fx.path(NODE_CLEANER_KEY).exists());
    assert!(!rebuilt.fx.path("/var/lib/piimg/server-auth.curl").exists());
    let join_step = rebuilt
        .fx
        .status()
        .steps
        .into_iter()
        .find(|s| s.name == "join")
        .unwrap();
    assert!(
        join_step
            .message
            .contains("joining through https://127.0.0.11:"),
        "{}",
        join_step.message
    );
}

#[test]
fn a_server_presenting_a_different_ca_is_refused_and_the_status_says_why() {
    let c = Cluster::new();
    // Another cluster's server answers on pi5-master-1's address.
    let other = Cluster {
        state: c.tmp.path().join("other-state"),
        tmp: tempfile::tempdir().unwrap(),
        port: c.port,
        ca: ClusterCa::create(&c.tmp.path().join("other-secrets"), "other").unwrap(),
        init_window: std::cell::Cell::new(2),
    };
    let foreign = other.node(SERVERS[0], true);
    other.bring_up(&[&foreign]);
    assert!(foreign.answers());
    let joiner = c.node(SERVERS[1], true);
    let out = joiner.run(2);
    assert_eq!(out.status.code(), Some(1));
    let st = joiner.fx.status();
    assert_eq!((st.step.as_str(), st.result), ("join", StepResult::Error));
    let want = format!(
        "pi5-master-1 (127.0.0.11:{}) presents a different cluster CA: its /cacerts is not the bundle this card pins (k3s CA hash {}); join refused",
        c.port,
        piimg::pki::ca_hash(c.ca.server_ca_bundle().as_bytes()).unwrap()
    );
    assert!(st.message.contains(&want), "{}", st.message);
    assert!(joiner.k3s_config().is_empty());
    assert!(!other.events().iter().any(|e| e.contains("pi5-master-2")));
    assert!(
        !c.state.join("state.json").exists(),
        "the joiner's k3s was started"
    );
}

fn curl(node_cleaner: (&Path, &Path), ca: &Path, method: &str, url: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
            "-X",
            method,
            "--cacert",
        ])
        .arg(ca)
        .arg("--cert")
        .arg(node_cleaner.0)
        .arg("--key")
        .arg(node_cleaner.1)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .unwrap_or_else(|e| {
            panic!(
                "{method} {url}: {e}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn yaml_docs(text: &str) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .collect()
}

fn strs(v: &serde_yaml_ng::Value) -> Vec<&str> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect()
}

/// The subject, validity end and issuer of a PEM certificate, by openssl.
fn openssl_x509(pem_file: &Path, what: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", what, "-in"])
        .arg(pem_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn each_servers_node_cleaner_may_only_get_and_delete_its_own_node() {
    let c = Cluster::new();
    let first: Vec<Node> = [SERVERS[0], SERVERS[1]]
        .iter()
        .map(|s| c.node(*s, true))
        .collect();
    c.bring_up(&first.iter().collect::<Vec<_>>());
    // The RBAC every server card carries: per server one ClusterRole allowing get and
    // delete of that node's Node only, bound to that node's user; the name the old
    // shared identity was bound to holds no rules.
    let text = first[0]
        .fx
        .read("/var/lib/rancher/k3s/server/manifests/piimg-node-cleaner-rbac.yaml");
    let docs = yaml_docs(&text);
    let legacy = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "piimg-node-cleaner")
        .unwrap();
    assert!(legacy["rules"].as_sequence().unwrap().is_empty());
    assert!(!docs.iter().any(
        |d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == "piimg-node-cleaner"
    ));
    for s in SERVERS {
        let name = format!("piimg-node-cleaner-{}", s.name);
        let role = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no ClusterRole {name}"));
        let rules = role["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(strs(&rules[0]["apiGroups"]), [""]);
        assert_eq!(strs(&rules[0]["resources"]), ["nodes"]);
        assert_eq!(strs(&rules[0]["resourceNames"]), [s.name]);
        assert_eq!(strs(&rules[0]["verbs"]), ["get", "delete"]);
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "ClusterRoleBinding" && d["metadata"]["name"] == name.as_str())
            .unwrap();
        assert_eq!(binding["roleRef"]["name"], name.as_str());
        let user = format!("system:piimg:node-cleaner:{}", s.name);
        assert_eq!(binding["subjects"][0]["name"], user.as_str());
    }
    // A rebuilt pi5-master-2 card (phase 1 only: its identity is on its root now).
    let card = c.node(SERVERS[1], true);
    let (crt, key) = (
        card.fx.path(NODE_CLEANER_CERT),
        card.fx.path(NODE_CLEANER_KEY),
    );
    let id = (crt.as_path(), key.as_path());
    // Its certificate names the node and is valid for a year from now (openssl).
    assert!(
        openssl_x509(&crt, "-subject").contains("CN = system:piimg:node-cleaner:pi5-master-2"),
        "{}",
        openssl_x509(&crt, "-subject")
    );
    let end = openssl_x509(&crt, "-enddate");
    let year = time_of(end.trim_start_matches("notAfter="));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((year - now - 365 * 86400).abs() < 3600, "{end}");
    // Another server's card got another identity.
    let other = c.node(SERVERS[2], true);
    assert_ne!(
        fs::read(&crt).unwrap(),
        fs::read(other.fx.path(NODE_CLEANER_CERT)).unwrap()
    );
    // The stand-in authorises by evaluating the manifests above.
    let ca = c.ca.dir().join("server-ca.crt");
    let base = format!("https://127.0.0.11:{}", c.port);
    let node = |n: &str| format!("{base}/api/v1/nodes/{n}");
    assert_eq!(curl(id, &ca, "GET", &node("pi5-master-2")), 200);
    for (method, url) in [
        ("PATCH", node("pi5-master-2")),
        ("PUT", node("pi5-master-2")),
        ("GET", node("pi5-master-1")),
        ("DELETE", node("pi5-master-1")),
        ("PATCH", node("pi5-master-1")),
        ("GET", format!("{base}/api/v1/nodes")),
        ("POST", format!("{base}/api/v1/nodes")),
        (
            "GET",
            format!("{base}/api/v1/namespaces/kube-system/secrets/k3s-serving"),
        ),
    ] {
        assert_eq!(curl(id, &ca, method, &url), 403, "{method} {url}");
    }
    let ev = c.events();
    assert!(
        ev.iter()
            .any(|e| e
                == "forbidden system:piimg:node-cleaner:pi5-master-2 patch /nodes/pi5-master-2"),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e
                == "forbidden system:piimg:node-cleaner:pi5-master-2 delete /nodes/pi5-master-1"),
        "{ev:?}"
    );
    assert!(!ev.iter().any(|e| e.starts_with("delete-node pi5-master-1")));
    assert_eq!(curl(id, &ca, "DELETE", &node("pi5-master-2")), 200);
    assert!(
        c.events()
            .iter()
            .any(|e| e == "delete-node pi5-master-2 by system:piimg:node-cleaner:pi5-master-2")
    );
}

/// Seconds since the epoch of an openssl date (`Dec  1 05:00:00 2027 GMT`), by `date`.
fn time_of(openssl_date: &str) -> i64 {
    let out = Command::new("date")
        .args(["-u", "-d", openssl_date, "+%s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{openssl_date}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_cards_token_pins_the_root_of_the_served_bundle_like_k3s() {
    let c = Cluster::new();
    let n = c.node(REFERENCE[3], true);
    // Independently: split the bundle, DER of its last (root) certificate via openssl.
    let bundle = c.ca.server_ca_bundle();
    let certs: Vec<&str> = bundle
        .split_inclusive("-----END CERTIFICATE-----\n")
        .collect();
    assert_eq!(certs.len(), 3);
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("root.pem"), certs[2]).unwrap();
    let der = Command::new("openssl")
        .args(["x509", "-in", "root.pem", "-outform", "der"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(der.status.success());
    let sha = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(&der.stdout)?;
            ch.wait_with_output()
        })
        .unwrap();
    let hash = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    // A worker card carries the agent token; a server card the server token.
    assert_eq!(n.token, format!("K10{hash}::node:{AGENT_SECRET}"));
    let server = c.node(SERVERS[1], true);
    assert_eq!(server.token, format!("K10{hash}::server:{SECRET}"));
    let cfg = NodeConfig::from_json(&fs::read_to_string(n.fx.boot.join(NODE_CONFIG_FILE)).unwrap())
        .unwrap();
    assert_eq!(cfg.ha.cluster_ca_sha256.as_deref(), Some(hash.as_str()));
    assert_eq!(cfg.ha.cluster_ca_pem.as_deref(), Some(bundle));
}

/// The VIP as kube-vip would hold it: a second stand-in for `holder`'s k3s, answering
/// on the VIP address (its serving certificate names the VIP, as tls-san does).
struct Vip {
    child: Child,
}

impl Vip {
    fn up(c: &Cluster, holder: &Node) -> Vip {
        let child = Command::new("python3")
            .arg(standin::standin_k3s_py())
            .args(["serve", "--role", "server", "--root"])
            .arg(&holder.fx.root)
            .args(["--ip", VIP, "--port", &c.port.to_string(), "--cluster"])
            .arg(&c.state)
            .args(["--node", holder.spec.name, "--pidfile"])
            .arg(c.tmp.path().join("vip.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("{VIP}:{}", c.port).parse().unwrap();
        let t = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "VIP stand-in does not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Vip { child }
    }
}

impl Drop for Vip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn agents_join_through_the_vip_first_then_any_healthy_server() {
    let c = Cluster::new();
    let boot = c.node(SERVERS[0], true);
    c.bring_up(&[&boot]);
    let vip = Vip::up(&c, &boot);
    let a = c.node(REFERENCE[3], true);
    c.bring_up(&[&a]);
    assert_eq!(
        joins_via(&a).as_deref(),
        Some(format!("https://{VIP}:{}", c.port).as_str())
    );
    // The VIP is gone (say its holder is being re-imaged): the next server in turn.
    drop(vip);
    let b = c.node(REFERENCE[4], true);
    c.bring_up(&[&b]);
    assert_eq!(
        joins_via(&b).as_deref(),
        Some(format!("https://127.0.0.11:{}", c.port).as_str())
    );
    assert_eq!(c.inits(), ["pi5-master-1"]);
}

/// `curl -u user:password URL` against a stand-in; the HTTP status.
fn curl_basic(ca: &Path, user: &str, password: &str, url: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--noproxy",
            "*",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("-u")
        .arg(format!("{user}:{password}"))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let t = fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                todo.push(p);
            } else if t.is_file() {
                let bytes = fs::read(&p).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                    out.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn a_worker_card_holds_no_server_token_and_cannot_fetch_bootstrap_data_with_what_it_holds() {
    let c = Cluster::new();
    let boot = c.node(SERVERS[0], true);
    c.bring_up(&[&boot]);
    // The server runs with both tokens.
    let server_cfg = boot.k3s_config();
    assert!(
        server_cfg.contains(&format!("agent-token: \"{AGENT_SECRET}\"\n")),
        "{server_cfg}"
    );
    let w = c.node(REFERENCE[3], true);
    // Nothing the worker's card put on its boot partition or root holds the server
    // token's secret, before and after it joined.
    assert_eq!(files_containing(&w.fx.root, SECRET), Vec::<PathBuf>::new());
    assert!(
        w.token.ends_with(&format!("::node:{AGENT_SECRET}")),
        "{}",
        w.token
    );
    c.bring_up(&[&w]);
    assert!(
        c.events()
            .iter()
            .any(|e| e.starts_with("join pi5-worker-1 via https://"))
    );
    let cfg = w.k3s_config();
    assert!(cfg.contains(&format!("token: \"{}\"\n", w.token)), "{cfg}");
    assert!(!cfg.contains("agent-token"), "{cfg}");
    assert_eq!(files_containing(&w.fx.root, SECRET), Vec::<PathBuf>::new());
    // With what it holds, the bootstrap data (CA keys) and etcd's member list stay
    // closed, under either user name; the server token opens them (the stand-in's
    // endpoint works).
    let ca = c.ca.dir().join("server-ca.crt");
    let base = format!("https://127.0.0.11:{}", c.port);
    let bootstrap = format!("{base}/v1-k3s/server-bootstrap");
    for user in ["node", "server"] {
        assert_eq!(
            curl_basic(&ca, user, AGENT_SECRET, &bootstrap),
            401,
            "{user}"
        );
        assert_eq!(
            curl_basic(&ca, user, AGENT_SECRET, &format!("{base}/db/info")),
            401
        );
    }
    assert_eq!(curl_basic(&ca, "server", SECRET, &bootstrap), 200);
    // A worker card whose agent token is not the cluster's is refused.
    let wrong = c.node(REFERENCE[4], true);
    let mut s = CardSecrets::from_json(&wrong.fx.read("/var/lib/piimg/secrets.json")).unwrap();
    s.token = s.token.replace(AGENT_SECRET, "not-the-agent-secret");
    fs::write(wrong.fx.path("/var/lib/piimg/secrets.json"), s.to_json()).unwrap();
    let out = wrong
        .cmd(10)
        .args(["--ready-timeout", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        c.events()
            .iter()
            .any(|e| e == "refused pi5-worker-2: token password wrong")
    );
}

/// Makes the stand-in's API answer `codes` (in order) before its real answers.
fn api_faults(c: &Cluster, codes: &[u16]) {
    let path = c.state.join("state.json");
    let mut st: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    st["faults"] = serde_json::json!(codes);
    fs::write(&path, st.to_string()).unwrap();
}

#[test]
fn a_join_that_meets_503_then_403_then_success_completes_in_one_run_of_the_step() {
    let c = Cluster::new();
    let servers: Vec<Node> = [SERVERS[0], SERVERS[2]]
        .iter()
        .map(|s| c.node(*s, true))
        .collect();
    c.bring_up(&servers.iter().collect::<Vec<_>>());
    servers[1].stop();
    let rebuilt = c.node(SERVERS[2], true);
    // The API is still starting (503), then RBAC is not applied yet (403).
    api_faults(&c, &[503, 403]);
    let out = rebuilt.run(30);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log_of(&rebuilt)
    );
    assert!(rebuilt.fx.status().complete, "one run completes");
    let ev = c.events();
    let at = |want: &str| {
        ev.iter()
            .position(|e| e == want)
            .unwrap_or_else(|| panic!("{want:?} not in {ev:?}"))
    };
    let f503 = at("fault 503 GET /api/v1/nodes/pi5-master-3");
    let f403 = at("fault 403 GET /api/v1/nodes/pi5-master-3");
    let del = at("delete-node pi5-master-3 by system:piimg:node-cleaner:pi5-master-3");
    let join = ev
        .iter()
        .rposition(|e| e.starts_with("join pi5-master-3 via"))
        .unwrap();
    assert!(f503 < f403 && f403 < del && del < join, "{ev:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("HTTP 503 apiserver not ready; retrying"),
        "{log}"
    );
    assert!(
        log.contains("HTTP 403 forbidden: RBAC not applied yet; retrying"),
        "{log}"
    );

    // An API that never becomes ready: the step gives up within the join timeout and
    // says what it tried.
    let stuck = c.node(SERVERS[2], true);
    api_faults(&c, &[503; 200]);
    assert_eq!(stuck.run(3).status.code(), Some(1));
    let st = stuck.fx.status();
    assert_eq!((st.step.as_str(), st.result), ("join", StepResult::Error));
    assert!(
        st.message.contains(&format!(
            "GET https://127.0.0.11:{}/api/v1/nodes/pi5-master-3: no usable answer after 3 s",
            c.port
        )) && st
            .message
            .contains("tried: HTTP 503 apiserver not ready (×"),
        "{}",
        st.message
    );
}

#[test]
fn a_first_bootstrap_card_whose_peers_come_up_two_minutes_late_joins_instead_of_initialising() {
    // Takes a little over two minutes: the peers really are away that long.
    let c = Cluster::new();
    let servers: Vec<Node> = SERVERS.iter().map(|s| c.node(*s, true)).collect();
    c.bring_up(&servers.iter().collect::<Vec<_>>());
    assert_eq!(c.inits(), ["pi5-master-1"]);
    // Power cut: every server is away. pi5-master-1's FIRST image is flashed again
    // (a spare card, an old file in out/): it is allowed to initialise.
    for s in &servers {
        s.stop();
    }
    c.init_window.set(180);
    let again = c.node(SERVERS[0], true);
    let cfg =
        NodeConfig::from_json(&fs::read_to_string(again.fx.boot.join(NODE_CONFIG_FILE)).unwrap())
            .unwrap();
    assert!(cfg.ha.first_bring_up);
    assert_eq!(cfg.ha.init_window_secs, 180);
    let t0 = Instant::now();
    let child = again.phase2(30);
    // While the window runs, the card's status says what it waits for.
    let waiting = loop {
        if let Some(st) = card_status(&again.fx.boot) {
            if st.step == "join" && st.message.starts_with("first bring-up: no server") {
                break st;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no waiting status");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        waiting.message.contains(
            "first bring-up: no server of cluster homelab answered yet"
        ) && waiting.message.contains("of the 3 min window); initialising a new cluster when the window ends unless one does"),
        "{}",
        waiting.message
    );
    // The other servers come back two minutes later.
    std::thread::sleep(Duration::from_secs(120).saturating_sub(t0.elapsed()));
    assert!(
        c.inits() == ["pi5-master-1"],
        "initialised before the window ended"
    );
    servers[1].start();
    servers[2].start();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.log_of(&again)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(180),
        "joined within the window"
    );
    assert!(again.fx.status().complete);
    assert_eq!(c.inits(), ["pi5-master-1"], "a second cluster was created");
    assert!(!inits(&again));
    let via = joins_via(&again).unwrap();
    assert!(
        via == format!("https://127.0.0.12:{}", c.port)
            || via == format!("https://127.0.0.13:{}", c.port),
        "{via}"
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("answers with this cluster's CA after")
            && log.contains("joining it instead of initialising"),
        "{log}"
    );
    // It removed its own stale member with its own identity, then joined.
    let ev = c.events();
    let del = ev
        .iter()
        .position(|e| e == "delete-node pi5-master-1 by system:piimg:node-cleaner:pi5-master-1")
        .unwrap_or_else(|| panic!("{ev:?}"));
    let join = ev
        .iter()
        .rposition(|e| e.starts_with("join pi5-master-1 via"))
        .unwrap();
    assert!(del < join, "{ev:?}");
}
