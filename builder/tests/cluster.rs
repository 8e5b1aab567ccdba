//! `piimg status` and `piimg kubeconfig` against a TLS stand-in of k3s's API on
//! 127.0.x.y (certificates from the cluster's own CA), through the built binary.
//! The kubeconfig's certificate is checked with openssl and used with curl.

#[path = "cluster_support/standin.rs"]
mod standin;

use piimg::pki::ClusterCa;
use piimg::profile::secrets::{ClusterSecrets, SecretsOptions};
use serde_json::{Value, json};
use standin::{Mode, Standin, World, member, node};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

const VERSION: &str = "v1.31.4+k3s1";

/// A third octet per lab, so parallel tests never share an address.
static NEXT_NET: AtomicU8 = AtomicU8::new(0);

/// A profile (3 servers, 1 agent, optionally a VIP) on 127.0.N.0/24, its secrets,
/// and a stand-in serving some of its addresses.
struct Lab {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    profile: PathBuf,
    net: u8,
    ca: ClusterCa,
    standin: Option<Standin>,
}

const SERVERS: [(&str, u8); 3] = [("s1", 11), ("s2", 12), ("s3", 13)];
const AGENT: (&str, u8) = ("w1", 21);
const VIP: u8 = 10;

impl Lab {
    fn new(vip: bool) -> Lab {
        let net = 100 + NEXT_NET.fetch_add(1, Ordering::SeqCst) + (std::process::id() % 50) as u8;
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let profile = root.join("lab.toml");
        let mut text = format!(
            r#"[cluster]
name = "lab"
[network]
cidr = "127.0.{net}.0/24"
gateway = "127.0.{net}.1"
dns = ["127.0.{net}.1"]
[k3s]
version = "{VERSION}"
{vip_line}
[access]
admin_user = "pi"
ssh_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 test@piimg"]
"#,
            vip_line = if vip {
                format!("vip = \"127.0.{net}.{VIP}\"")
            } else {
                String::new()
            }
        );
        for (name, host) in SERVERS {
            text.push_str(&format!(
                "[[nodes]]\nname = \"{name}\"\nip = \"127.0.{net}.{host}\"\nrole = \"server\"\nhardware = \"pi5-8gb\"\n"
            ));
        }
        text.push_str(&format!(
            "[[nodes]]\nname = \"{}\"\nip = \"127.0.{net}.{}\"\nrole = \"agent\"\nhardware = \"pi4-8gb\"\n[nodes.labels]\nzone = \"shelf\"\n",
            AGENT.0, AGENT.1
        ));
        std::fs::write(&profile, text).expect("profile");
        let secrets =
            ClusterSecrets::open_or_create(&profile, SecretsOptions::default()).expect("secrets");
        let ca = ClusterCa::open_or_create(secrets.dir(), "lab").expect("ca");
        Lab {
            _tmp: tmp,
            root,
            profile,
            net,
            ca,
            standin: None,
        }
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, self.net, host)
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.root.join("lab.secrets/k3s-token"))
            .expect("token")
            .trim()
            .to_string()
    }

    /// Serves the given hosts (last octets) in their modes.
    fn serve(&mut self, hosts: &[(u8, Mode)]) {
        let addrs: Vec<(Ipv4Addr, Mode)> = hosts.iter().map(|(h, m)| (self.ip(*h), *m)).collect();
        self.standin = Some(standin::start(self.ca.dir(), &self.token(), &addrs));
    }

    fn port(&self) -> u16 {
        self.standin.as_ref().expect("stand-in").port
    }

    /// The cluster exactly as planned: every node joined and Ready with its card's
    /// labels, one etcd member per server, s1 holding the VIP.
    fn healthy_world(&self) -> World {
        let mut nodes = Vec::new();
        let mut members = Vec::new();
        for (i, (name, host)) in SERVERS.iter().enumerate() {
            let m = format!("{name}-{:08x}", 0x1a2b3c00 + i);
            let labels = json!({"piimg.io/board": "pi5", "piimg.io/hardware-class": "pi5-8gb", "piimg.io/ram-mb": "8192"});
            let ip = self.ip(*host).to_string();
            nodes.push(node(name, &ip, VERSION, true, &labels, Some(&m)));
            members.push(member(0x8e9e05c52164694d + i as u64, &m, &ip));
        }
        let labels = json!({"piimg.io/board": "pi4", "piimg.io/hardware-class": "pi4-8gb", "piimg.io/ram-mb": "8192", "zone": "shelf"});
        nodes.push(node(
            AGENT.0,
            &self.ip(AGENT.1).to_string(),
            VERSION,
            true,
            &labels,
            None,
        ));
        World {
            nodes,
            members,
            lease_holder: Some("s1".into()),
            version: VERSION.into(),
        }
    }

    fn set_world(&self, w: World) {
        *self
            .standin
            .as_ref()
            .expect("stand-in")
            .world
            .lock()
            .expect("world") = w;
    }

    fn piimg(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_piimg"));
        cmd.current_dir(&self.root)
            .env_remove("PIIMG_PROFILE")
            .env_remove("KUBECONFIG")
            .env("HOME", self.root.join("home"))
            .args(args)
            .arg("--profile")
            .arg(&self.profile);
        if let Some(s) = &self.standin {
            cmd.env("PIIMG_API_PORT", s.port.to_string());
        }
        cmd.output().expect("run piimg")
    }

    fn status_json(&self, extra: &[&str]) -> (i32, Value, String) {
        let mut args = vec!["--json", "status"];
        if !extra.contains(&"--timeout") {
            args.extend_from_slice(&["--timeout", "2"]);
        }
        args.extend_from_slice(extra);
        let out = self.piimg(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let doc: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}):\n{stdout}\n{stderr}"));
        (out.status.code().unwrap_or(-1), doc, stderr)
    }
}

fn problems(doc: &Value) -> Vec<String> {
    doc["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .map(|p| p.as_str().expect("text").to_string())
        .collect()
}

fn all_hosts(vip: bool) -> Vec<(u8, Mode)> {
    let mut v: Vec<(u8, Mode)> = SERVERS.iter().map(|(_, h)| (*h, Mode::Serve)).collect();
    if vip {
        v.push((VIP, Mode::Serve));
    }
    v
}

#[test]
fn a_cluster_as_planned_matches_with_exit_0() {
    let mut lab = Lab::new(true);
    lab.serve(&all_hosts(true));
    lab.set_world(lab.healthy_world());
    let (code, doc, stderr) = lab.status_json(&[]);
    assert_eq!(problems(&doc), Vec::<String>::new(), "{stderr}");
    assert_eq!(code, 0);
    assert_eq!(doc["matches"], json!(true));
    assert_eq!(doc["vip"]["holder"], json!("s1"));
    assert_eq!(doc["etcd"]["members"].as_array().expect("members").len(), 3);
    let nodes = doc["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        assert_eq!(n["joined"], json!(true), "{n}");
        assert_eq!(n["ready"], json!(true), "{n}");
        assert_eq!(n["running_version"], json!(VERSION), "{n}");
    }
    assert_eq!(nodes[3]["live_role"], json!("agent"));
    assert_eq!(nodes[0]["live_role"], json!("server"));
    // The table says the same.
    let out = lab.piimg(&["status", "--timeout", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("the cluster matches the plan"), "{text}");
    assert!(
        text.contains("VIP 127.0.") && text.contains("held by s1"),
        "{text}"
    );
    // The VIP held by a worker, or by nobody (no lease object): both named.
    for (holder, expected) in [
        (
            Some("w1"),
            "held by w1, which the profile does not plan as a server",
        ),
        (None, "no node holds kube-vip's lease"),
    ] {
        let mut w = lab.healthy_world();
        w.lease_holder = holder.map(str::to_string);
        lab.set_world(w);
        let (code, doc, _) = lab.status_json(&[]);
        let found = problems(&doc);
        assert_eq!(code, 1, "{found:?}");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(&format!("VIP {}: ", lab.ip(VIP))) && found[0].contains(expected),
            "{found:?}"
        );
    }
    lab.set_world(lab.healthy_world());
    // --quiet: nothing but the exit code.
    let out = lab.piimg(&["--quiet", "status", "--timeout", "2"]);
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn every_difference_from_the_plan_is_reported_with_exit_1() {
    let mut lab = Lab::new(false);
    lab.serve(&all_hosts(false));
    let healthy = lab.healthy_world();
    let find = |w: &mut World, name: &str| -> usize {
        w.nodes
            .iter()
            .position(|n| n["metadata"]["name"] == json!(name))
            .expect("node")
    };
    type Change = Box<dyn Fn(&mut World)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "a node missing",
            Box::new(move |w: &mut World| {
                let i = find(w, "w1");
                w.nodes.remove(i);
            }),
            "w1: has not joined the cluster",
        ),
        (
            "a node not Ready",
            Box::new(move |w: &mut World| {
                let i = find(w, "s2");
                w.nodes[i]["status"]["conditions"][3]["status"] = json!("False");
                w.nodes[i]["status"]["conditions"][3]["reason"] = json!("KubeletNotReady");
            }),
            "s2: not Ready: Ready=False (KubeletNotReady)",
        ),
        (
            "version drift",
            Box::new(move |w: &mut World| {
                let i = find(w, "s3");
                w.nodes[i]["status"]["nodeInfo"]["kubeletVersion"] = json!("v1.30.8+k3s1");
            }),
            "s3: runs k3s v1.30.8+k3s1, pinned v1.31.4+k3s1",
        ),
        (
            "a stale etcd member",
            Box::new(|w: &mut World| {
                // s2 was re-imaged: its Node now names a new member; the old one stayed.
                let ip = w.nodes[1]["status"]["addresses"][0]["address"].clone();
                w.nodes[1]["metadata"]["annotations"]["etcd.k3s.cattle.io/node-name"] =
                    json!("s2-feedbeef");
                w.members
                    .push(member(0x77, "s2-feedbeef", ip.as_str().expect("ip")));
            }),
            "etcd member s2-1a2b3c01 (8e9e05c52164694e): stale: node s2 now runs member s2-feedbeef",
        ),
        (
            "two members for one server whose Node names neither",
            Box::new(|w: &mut World| {
                let ip = w.nodes[0]["status"]["addresses"][0]["address"].clone();
                w.nodes[0]["metadata"]["annotations"]
                    .as_object_mut()
                    .expect("annotations")
                    .remove("etcd.k3s.cattle.io/node-name");
                w.members
                    .push(member(0x78, "s1-deadbeef", ip.as_str().expect("ip")));
            }),
            "s1: 2 etcd members (s1-1a2b3c00, s1-deadbeef); all but the one it runs are stale",
        ),
        (
            "an unexpected node",
            Box::new(|w: &mut World| {
                w.nodes.push(node(
                    "old-pi",
                    "127.0.0.99",
                    VERSION,
                    true,
                    &json!({}),
                    None,
                ));
            }),
            "old-pi: in the cluster but not in the profile (IP 127.0.0.99, Ready)",
        ),
        (
            "a wrong IP",
            Box::new(move |w: &mut World| {
                let i = find(w, "w1");
                w.nodes[i]["status"]["addresses"][0]["address"] = json!("127.0.0.77");
            }),
            "w1: reports IP 127.0.0.77, planned 127.0.",
        ),
        (
            "a missing board label",
            Box::new(move |w: &mut World| {
                let i = find(w, "w1");
                w.nodes[i]["metadata"]["labels"]
                    .as_object_mut()
                    .expect("labels")
                    .remove("piimg.io/board");
            }),
            "w1: labels differ: piimg.io/board=pi4 (missing)",
        ),
    ];
    for (what, change, expected) in cases {
        let mut w = healthy.clone();
        change(&mut w);
        lab.set_world(w);
        let (code, doc, stderr) = lab.status_json(&[]);
        let found = problems(&doc);
        assert_eq!(code, 1, "{what}: {found:?} {stderr}");
        assert_eq!(doc["matches"], json!(false), "{what}");
        assert_eq!(
            found.len(),
            1,
            "{what}: exactly one difference expected: {found:?}"
        );
        assert!(
            found[0].starts_with(expected),
            "{what}: expected `{expected}…`, got {found:?}"
        );
    }
    // The table names them too, with the exit code.
    let mut w = healthy.clone();
    w.nodes.remove(3);
    lab.set_world(w);
    let out = lab.piimg(&["status", "--timeout", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("1 difference(s) from the plan") && text.contains("w1: has not joined"),
        "{text}"
    );
}

#[test]
fn a_server_that_never_answers_is_reported_within_the_timeout() {
    let mut lab = Lab::new(false);
    lab.serve(&[(11, Mode::Serve), (12, Mode::Hang), (13, Mode::Serve)]);
    lab.set_world(lab.healthy_world());
    let started = Instant::now();
    let (code, doc, _) = lab.status_json(&[]);
    let took = started.elapsed();
    assert_eq!(code, 1);
    let found = problems(&doc);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("server s2: API at 127.0.")
            && found[0].ends_with("does not answer: no answer within 2 s"),
        "{found:?}"
    );
    assert_eq!(doc["servers"][1]["error"], json!("no answer within 2 s"));
    // Servers are asked in parallel, each request bounded: one timeout, not a hang.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    // A server with nothing listening: refused, named.
    let mut lab = Lab::new(false);
    lab.serve(&[(11, Mode::Serve), (13, Mode::Serve)]);
    lab.set_world(lab.healthy_world());
    let (code, doc, _) = lab.status_json(&[]);
    assert_eq!(code, 1);
    assert!(
        doc["servers"][1]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("connection refused")),
        "{}",
        doc["servers"]
    );
}

#[test]
fn status_without_any_server_says_why_per_server() {
    let mut lab = Lab::new(false);
    lab.serve(&[(11, Mode::Hang)]);
    let (code, doc, _) = lab.status_json(&["--timeout", "1"]);
    assert_eq!(code, 1);
    let found = problems(&doc);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server s1:") && p.ends_with("no answer within 1 s")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("server s2:") && p.contains("connection refused")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("cannot list the cluster's nodes")),
        "{found:?}"
    );
    assert_eq!(doc["nodes"][0]["joined"], Value::Null);
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn b64(v: &Value) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 field"))
        .expect("base64");
    String::from_utf8(bytes).expect("PEM")
}

fn read_kubeconfig(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("kubeconfig");
    serde_yaml_ng::from_str(&text).expect("YAML")
}

/// `notAfter=…` of `openssl x509` as unix seconds (via `date`, an independent parser).
fn openssl_date(text: &str, key: &str) -> i64 {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {text}"));
    let out = Command::new("date")
        .args(["-u", "-d", line, "+%s"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("seconds")
}

#[test]
fn the_kubeconfig_chains_to_the_cluster_ca_for_the_days_asked_and_works() {
    let mut lab = Lab::new(false);
    // s1 is down: the first server that answers is s2.
    lab.serve(&[(12, Mode::Serve), (13, Mode::Serve)]);
    lab.set_world(lab.healthy_world());
    let file = lab.root.join("out/admin.yaml");
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let out = lab.piimg(&[
        "kubeconfig",
        "--out",
        file.to_str().expect("utf-8"),
        "--valid",
        "3",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("export KUBECONFIG={}", file.display())),
        "{text}"
    );
    let mode = std::fs::metadata(&file).expect("file").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let kc = read_kubeconfig(&file);
    let server = kc["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server");
    assert_eq!(server, format!("https://{}:{}", lab.ip(12), lab.port()));
    assert_eq!(kc["current-context"], json!("lab"));

    let scratch = lab.root.join("check");
    std::fs::create_dir_all(&scratch).expect("scratch");
    let cert = scratch.join("admin.crt");
    let key = scratch.join("admin.key");
    let ca_file = scratch.join("ca.crt");
    std::fs::write(
        &cert,
        b64(&kc["users"][0]["user"]["client-certificate-data"]),
    )
    .expect("cert");
    std::fs::write(&key, b64(&kc["users"][0]["user"]["client-key-data"])).expect("key");
    std::fs::write(
        &ca_file,
        b64(&kc["clusters"][0]["cluster"]["certificate-authority-data"]),
    )
    .expect("ca");
    let ca = |f: &str| lab.ca.dir().join(f).to_string_lossy().to_string();
    let p = |f: &Path| f.to_string_lossy().to_string();
    // Chains to the cluster's root through client-ca and the intermediate …
    let (ok, why) = openssl(&[
        "verify",
        "-CAfile",
        &ca("root-ca.pem"),
        "-untrusted",
        &ca("client-ca.crt"),
        &p(&cert),
    ]);
    assert!(ok, "{why}");
    // … is signed by client-ca itself, not by server-ca.
    let (ok, why) = openssl(&[
        "verify",
        "-partial_chain",
        "-CAfile",
        &ca("client-ca.pem"),
        &p(&cert),
    ]);
    assert!(ok, "{why}");
    let (ok, _) = openssl(&[
        "verify",
        "-partial_chain",
        "-CAfile",
        &ca("server-ca.pem"),
        &p(&cert),
    ]);
    assert!(!ok, "a client certificate that server-ca verifies");
    let (ok, info) = openssl(&[
        "x509",
        "-in",
        &p(&cert),
        "-noout",
        "-subject",
        "-startdate",
        "-enddate",
        "-ext",
        "extendedKeyUsage",
    ]);
    assert!(ok, "{info}");
    assert!(
        info.contains("O = system:masters") && info.contains("CN = system:admin"),
        "{info}"
    );
    assert!(info.contains("TLS Web Client Authentication"), "{info}");
    let not_after = openssl_date(&info, "notAfter=");
    let after = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        not_after >= before + 3 * 86400 && not_after <= after + 3 * 86400,
        "notAfter {not_after} is not 3 days from now ({before}..{after})"
    );
    let not_before = openssl_date(&info, "notBefore=");
    assert!(
        not_before <= before && not_before >= before - 3600,
        "{info}"
    );
    // The CA data verifies the server: curl, with nothing but the kubeconfig's files.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--cacert",
            &p(&ca_file),
            "--cert",
            &p(&cert),
            "--key",
            &p(&key),
        ])
        .arg(format!("{server}/api/v1/nodes"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).expect("NodeList");
    assert_eq!(list["kind"], json!("NodeList"));

    // --json names the file, never the key.
    let out = lab.piimg(&[
        "--json",
        "kubeconfig",
        "--out",
        file.to_str().expect("utf-8"),
        "--valid",
        "1",
    ]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(doc["valid_days"], json!(1));
    assert_eq!(doc["server_from"], json!("s2"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
    // --server is written as given; TLS only.
    let out = lab.piimg(&[
        "kubeconfig",
        "--out",
        file.to_str().expect("utf-8"),
        "--server",
        "https://k3s.lab.example:6443/",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        read_kubeconfig(&file)["clusters"][0]["cluster"]["server"],
        json!("https://k3s.lab.example:6443")
    );
    let out = lab.piimg(&[
        "kubeconfig",
        "--out",
        file.to_str().expect("utf-8"),
        "--server",
        "http://k3s.lab.example:6443",
    ]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("expected an https:// URL")
    );
    // Validity is bounded.
    let out = lab.piimg(&[
        "kubeconfig",
        "--out",
        file.to_str().expect("utf-8"),
        "--valid",
        "4000",
    ]);
    assert!(!out.status.success());
}

#[test]
fn the_kubeconfig_points_at_the_vip_when_there_is_one() {
    let lab = Lab::new(true);
    // Nothing answers, yet the VIP is the stable address: it is written as is.
    let out = lab.piimg(&["kubeconfig", "--api-port", "6443"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("does not answer yet") && err.contains("points at it anyway"),
        "{err}"
    );
    let file = lab.root.join("lab.secrets/kubeconfig");
    let kc = read_kubeconfig(&file);
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        json!(format!("https://{}:6443", lab.ip(VIP)))
    );
    assert_eq!(
        std::fs::metadata(&file).expect("file").permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn no_server_answering_is_a_clear_error_naming_each_server() {
    let mut lab = Lab::new(false);
    lab.serve(&[(11, Mode::Hang)]);
    let out = lab.piimg(&["kubeconfig", "--timeout", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no server answered")
            && err.contains("s1 (https://")
            && err.contains("no answer within 1 s"),
        "{err}"
    );
    assert!(
        err.contains("s2 (https://")
            && err.contains("connection refused")
            && err.contains("--server"),
        "{err}"
    );
    assert!(!lab.root.join("lab.secrets/kubeconfig").exists());
}

#[test]
fn merge_adds_a_context_and_keeps_the_others() {
    let mut lab = Lab::new(false);
    lab.serve(&all_hosts(false));
    let home = lab.root.join("home");
    std::fs::create_dir_all(home.join(".kube")).expect("home");
    let config = home.join(".kube/config");
    let theirs = "apiVersion: v1\nkind: Config\npreferences: {}\ncurrent-context: work\nclusters:\n- name: work\n  cluster:\n    server: https://work.example:6443\nusers:\n- name: work\n  user:\n    token: abc\ncontexts:\n- name: work\n  context:\n    cluster: work\n    user: work\n    namespace: prod\n";
    std::fs::write(&config, theirs).expect("config");
    for _ in 0..2 {
        let out = lab.piimg(&["kubeconfig", "--merge"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("kubectl --context lab get nodes"));
    }
    let kc = read_kubeconfig(&config);
    let names = |k: &str| -> Vec<String> {
        kc[k]
            .as_array()
            .expect(k)
            .iter()
            .map(|e| e["name"].as_str().expect("name").to_string())
            .collect()
    };
    assert_eq!(names("contexts"), ["work", "lab"]);
    assert_eq!(names("clusters"), ["work", "lab"]);
    assert_eq!(names("users"), ["work", "lab-admin"]);
    assert_eq!(kc["current-context"], json!("work"));
    assert_eq!(kc["contexts"][0]["context"]["namespace"], json!("prod"));
    assert_eq!(kc["users"][0]["user"]["token"], json!("abc"));
    assert!(kc.get("preferences").is_some());
    assert_eq!(
        std::fs::metadata(&config)
            .expect("config")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // --merge alone writes no other file.
    assert!(!lab.root.join("lab.secrets/kubeconfig").exists());

    // KUBECONFIG naming two files, none existing: kubectl writes the last.
    let (a, b) = (lab.root.join("k/a"), lab.root.join("k/b"));
    let out = Command::new(env!("CARGO_BIN_EXE_piimg"))
        .env("HOME", &home)
        .env("KUBECONFIG", std::env::join_paths([&a, &b]).expect("paths"))
        .env("PIIMG_API_PORT", lab.port().to_string())
        .args(["kubeconfig", "--merge", "--context", "lab2"])
        .arg("--profile")
        .arg(&lab.profile)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!a.exists());
    let kc = read_kubeconfig(&b);
    assert_eq!(kc["current-context"], json!("lab2"));
    // A file that is not a kubeconfig is refused and left alone.
    std::fs::write(&config, "- just\n- a list\n").expect("write");
    let out = lab.piimg(&["kubeconfig", "--merge"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(".kube/config: is not a kubeconfig"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        "- just\n- a list\n"
    );
}

#[test]
fn both_refuse_clearly_without_the_secrets() {
    let lab = Lab::new(false);
    // The cluster exists (a card was issued), but its secrets are gone.
    let secrets = lab.root.join("lab.secrets");
    let state = std::fs::read_to_string(lab.root.join("lab.state.toml")).expect("state");
    std::fs::write(
        lab.root.join("lab.state.toml"),
        state.replace("bootstrap_issued = false", "bootstrap_issued = true"),
    )
    .expect("state");
    std::fs::rename(&secrets, lab.root.join("moved-away")).expect("move");
    for cmd in ["kubeconfig", "status"] {
        let out = lab.piimg(&[cmd]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(
            err.contains("lab.secrets is missing")
                && err.contains("exists")
                && err.contains("Restore"),
            "{cmd}: {err}"
        );
        assert!(!secrets.exists(), "{cmd} created the secrets directory");
    }
    // A profile never built: nothing to reach.
    let fresh = tempfile::tempdir().expect("tempdir");
    let profile = fresh.path().join("new.toml");
    std::fs::copy(&lab.profile, &profile).expect("copy");
    let out = Command::new(env!("CARGO_BIN_EXE_piimg"))
        .arg("kubeconfig")
        .arg("--profile")
        .arg(&profile)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no card was built for this profile yet"),
        "{err}"
    );
    assert!(!fresh.path().join("new.secrets").exists());
}

#[test]
fn watch_redraws_during_a_bring_up_until_it_matches() {
    let mut lab = Lab::new(false);
    lab.serve(&all_hosts(false));
    let healthy = lab.healthy_world();
    // The worker's card is still booting.
    let mut booting = healthy.clone();
    booting.nodes.truncate(3);
    lab.set_world(booting);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_piimg"));
    cmd.env("PIIMG_API_PORT", lab.port().to_string())
        .args([
            "--json",
            "status",
            "--watch",
            "--interval",
            "1",
            "--timeout",
            "2",
        ])
        .arg("--profile")
        .arg(&lab.profile)
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    // Never let a watch that does not end hang the test run.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = child.id() as libc::pid_t;
    let watchdog = done.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(60));
        if !watchdog.load(Ordering::SeqCst) {
            // SAFETY: kill(2) on our own child's pid, which has not been waited for.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first: Value =
        serde_json::from_str(&lines.next().expect("a round").expect("read")).expect("JSON line");
    assert_eq!(first["matches"], json!(false));
    assert_eq!(problems(&first), ["w1: has not joined the cluster"]);
    // The worker joins: the next rounds see it and the watch ends with 0.
    lab.set_world(healthy);
    let mut last = first;
    for line in lines {
        last = serde_json::from_str(&line.expect("read")).expect("JSON line");
    }
    let status = child.wait().expect("wait");
    done.store(true, Ordering::SeqCst);
    assert!(status.success(), "{status}: {last}");
    assert_eq!(last["matches"], json!(true));
}

#[test]
fn the_kubeconfig_can_go_to_standard_output() {
    let mut lab = Lab::new(false);
    lab.serve(&all_hosts(false));
    let out = lab.piimg(&["kubeconfig", "--out", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kc: Value = serde_yaml_ng::from_slice(&out.stdout).expect("stdout is the kubeconfig");
    assert_eq!(kc["kind"], json!("Config"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("valid until"));
    assert!(!lab.root.join("lab.secrets/kubeconfig").exists());
    let out = lab.piimg(&["--json", "kubeconfig", "--out", "-"]);
    assert!(!out.status.success());
}

#[test]
fn a_dhcp_agent_matches_whatever_address_its_lease_gave_it() {
    let mut lab = Lab::new(false);
    let text = std::fs::read_to_string(&lab.profile).expect("profile");
    let planned = format!("ip = \"{}\"\nrole = \"agent\"", lab.ip(AGENT.1));
    assert!(text.contains(&planned));
    std::fs::write(
        &lab.profile,
        text.replace(&planned, "dhcp = true\nrole = \"agent\""),
    )
    .expect("profile");
    lab.serve(&all_hosts(false));
    let mut w = lab.healthy_world();
    w.lease_holder = None;
    // The lease gave w1 another address than the static one it had before.
    let agent = w.nodes.last().expect("agent").clone();
    let moved = serde_json::to_string(&agent)
        .expect("json")
        .replace(&lab.ip(AGENT.1).to_string(), &lab.ip(99).to_string());
    *w.nodes.last_mut().expect("agent") = serde_json::from_str(&moved).expect("node");
    lab.set_world(w);
    let (code, doc, stderr) = lab.status_json(&[]);
    assert_eq!(problems(&doc), Vec::<String>::new(), "{stderr}");
    assert_eq!(code, 0);
    let w1 = &doc["nodes"][3];
    assert_eq!(w1["name"], json!("w1"));
    assert_eq!(w1["ip"], Value::Null, "{w1}");
    assert_eq!(w1["reported_ip"], json!(lab.ip(99).to_string()), "{w1}");
    // The table shows `dhcp` as the planned address.
    let out = lab.piimg(&["status", "--timeout", "2"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("w1") && l.contains("dhcp")),
        "{table}"
    );
}
