//! The cluster profile: loading, validation rules, SSH keys, secrets and the plan.

use piimg::plan::{self, FirstBootAction};
use piimg::profile::secrets::{ClusterSecrets, SecretsError, SecretsOptions};
use piimg::profile::{self, Profile};
use piimg_contract::Role;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

mod support;

use support::reference;

fn reference_path() -> PathBuf {
    reference::path()
}

/// The reference profile with its key file in a generated HOME, not this machine's.
fn reference_text() -> String {
    reference::text()
}

fn reference() -> Profile {
    let mut p = profile::parse(&reference_text(), &reference_path()).unwrap();
    p.path = reference_path();
    p
}

#[test]
fn reference_profile_validates_clean() {
    let p = reference();
    let f = profile::validate(&p);
    assert!(f.errors.is_empty(), "{:#?}", f.errors);
    // Two warnings: the servers' etcd on SD cards, and their snapshots only there
    // (no [k3s.etcd_s3]).
    assert_eq!(f.warnings.len(), 2, "{:#?}", f.warnings);
    assert!(
        f.warnings[0]
            .message
            .starts_with("embedded etcd on SD cards (pi5-master-1, pi5-master-2, pi5-master-3)")
    );
    assert_eq!(f.warnings[0].field, "nodes");
    assert_eq!(f.warnings[1].field, "k3s.etcd_s3");
    // Its one key is the one in the key file.
    let keys = piimg::profile::keys::resolve(&p, piimg::profile::keys::KeySources::Local).unwrap();
    assert_eq!(keys, [reference::shared_home().key.clone()]);
}

#[test]
fn reference_profile_without_its_key_file_warns_and_still_plans() {
    use piimg::profile::keys::{self, KeyError, KeySources};
    let home = tempfile::tempdir().unwrap();
    let mut p = profile::parse(&reference::text_with_home(home.path()), &reference_path()).unwrap();
    p.path = reference_path();
    let missing = home.path().join(".ssh/id_ed25519.pub");
    let f = profile::validate(&p);
    assert!(f.errors.is_empty(), "{:#?}", f.errors);
    assert_eq!(f.warnings.len(), 3, "{:#?}", f.warnings);
    assert_eq!(f.warnings[0].field, "access.ssh_key_files[0]");
    assert_eq!(
        f.warnings[0].message,
        format!(
            "cannot read {}: No such file or directory (os error 2); build and flash refuse to run without it; `ssh-keygen -t ed25519` creates ~/.ssh/id_ed25519.pub; or list another key file, an inline key (ssh_keys) or github_users in [access]",
            missing.display()
        )
    );
    // What build refuses with, and what validate and plan go on without.
    assert_eq!(
        keys::resolve(&p, KeySources::Local).unwrap_err(),
        KeyError::KeyFile {
            index: 0,
            path: missing.clone(),
            reason: "No such file or directory (os error 2)".into()
        }
    );
    assert_eq!(
        keys::resolve_readable(&p, KeySources::Local).unwrap(),
        Vec::<String>::new()
    );
    // A directory where the file should be cannot be read either.
    std::fs::create_dir_all(&missing).unwrap();
    let f = profile::validate(&p);
    assert!(f.errors.is_empty(), "{:#?}", f.errors);
    assert!(
        f.warnings[0].message.starts_with(&format!(
            "cannot read {}: Is a directory",
            missing.display()
        )),
        "{}",
        f.warnings[0].message
    );
}

#[test]
fn reference_profile_describes_the_homelab() {
    let p = reference();
    let nodes: Vec<(&str, Ipv4Addr, Role, &str)> = p
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.ip.unwrap(), n.role, n.hardware.as_str()))
        .collect();
    let ip = |d| Ipv4Addr::new(192, 168, 86, d);
    assert_eq!(
        nodes,
        [
            ("pi5-master-1", ip(33), Role::Server, "pi5-8gb"),
            ("pi5-master-2", ip(29), Role::Server, "pi5-8gb"),
            ("pi5-master-3", ip(30), Role::Server, "pi5-8gb"),
            ("pi5-worker-1", ip(32), Role::Agent, "pi5-8gb"),
            ("pi5-worker-2", ip(34), Role::Agent, "pi5-8gb"),
            ("pi4-worker-1", ip(27), Role::Agent, "pi4-2gb"),
            ("pi4-worker-2", ip(26), Role::Agent, "pi4-2gb"),
            ("pi4-worker-3", ip(23), Role::Agent, "pi4-2gb"),
        ]
    );
    assert_eq!(p.network.cidr.to_string(), "192.168.86.0/24");
    assert_eq!(p.network.gateway, ip(1));
    assert_eq!(p.network.dns.len(), 2);
    assert_eq!(p.network.dns[0], std::net::IpAddr::V4(ip(1)));
}

/// A copy of the reference profile in a fresh directory (so secrets land there).
fn scratch(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homelab.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_are_private_reused_and_kept_out_of_the_profile() {
    let (dir, path) = scratch(&reference_text());
    let s1 = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert!(s1.created());
    let token = s1.token_secret().to_string();
    assert_eq!(token.len(), 64, "256 random bits, hex");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(s1.dir(), dir.path().join("homelab.secrets"));
    assert_eq!(mode(s1.dir()), 0o700);
    for entry in std::fs::read_dir(s1.dir()).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    drop(s1);

    let s2 = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert!(!s2.created());
    assert_eq!(s2.token_secret(), token, "second run reuses the token");

    // The token appears nowhere outside the secrets directory.
    assert_eq!(std::fs::read_to_string(&path).unwrap(), reference_text());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(!text.contains(&token), "token leaked into {}", p.display());
        }
    }
    // The state file next to the profile records the fingerprint, not the token.
    let state = std::fs::read_to_string(dir.path().join("homelab.state.toml")).unwrap();
    assert!(state.contains(&piimg::profile::secrets::fingerprint(&token)));
}

#[test]
fn repo_never_tracks_secrets() {
    // `git check-ignore` is the authority on what the repository would pick up.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The live secrets, secrets moved aside by --new-cluster, and the temp dir a
    // crash could leave behind while creating them.
    for path in [
        "profiles/homelab.secrets/k3s-token",
        "profiles/homelab.old-1764000000.secrets/k3s-token",
        "profiles/.piimg-Ab12Cd.tmp.secrets/k3s-token",
    ] {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(["check-ignore", "-q", "--no-index", path])
            .status()
            .unwrap();
        assert!(out.success(), "{path} must be git-ignored");
    }
}

#[test]
fn missing_secrets_of_an_existing_cluster_is_a_clear_error() {
    let (dir, path) = scratch(&reference_text());
    let mut s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.mark_issued("pi5-master-1", true).unwrap();
    drop(s);
    std::fs::remove_dir_all(dir.path().join("homelab.secrets")).unwrap();

    let err = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap_err();
    assert!(matches!(err, SecretsError::Missing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("homelab.secrets is missing"), "{msg}");
    assert!(msg.contains("cards issued: pi5-master-1"), "{msg}");
    assert!(msg.contains("/var/lib/rancher/k3s/server/token"), "{msg}");
    assert!(msg.contains("--new-cluster"), "{msg}");
    assert!(
        !dir.path().join("homelab.secrets").exists(),
        "no silent new token"
    );
}

#[test]
fn token_recovered_from_a_server_reopens_the_cluster() {
    let (dir, path) = scratch(&reference_text());
    let mut s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.mark_issued("pi5-master-1", true).unwrap();
    let token = s.token_secret().to_string();
    let agent = s.agent_token_secret().unwrap().to_string();
    drop(s);
    let secrets = dir.path().join("homelab.secrets");
    std::fs::remove_dir_all(&secrets).unwrap();

    // The way out the error names: copy the server's token file.
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tok = secrets.join("k3s-token");
    std::fs::write(&tok, format!("K10{}::server:{token}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The cluster has an agent token too (the state says so): never a new one, the
    // error names where to copy it from.
    let err = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap_err();
    assert!(matches!(err, SecretsError::NoAgentToken { .. }), "{err:?}");
    assert!(
        err.to_string().contains(
            "copy the `agent-token:` value from /etc/rancher/k3s/config.yaml on any server into"
        ),
        "{err}"
    );
    assert!(!secrets.join("k3s-agent-token").exists());
    let agent_file = secrets.join("k3s-agent-token");
    std::fs::write(&agent_file, format!("{agent}\n")).unwrap();
    std::fs::set_permissions(&agent_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert_eq!(s.token_secret(), token);
    assert_eq!(s.agent_token_secret(), Some(agent.as_str()));
    assert!(s.bootstrap_issued());
    assert!(s.issued("pi5-master-1"));
    drop(s);
    // The copied file is kept as the user put it, and keeps working.
    let copied = std::fs::read_to_string(&tok).unwrap();
    assert!(copied.starts_with("K10"));
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert_eq!(s.token_secret(), token);
    assert_eq!(std::fs::read_to_string(&tok).unwrap(), copied);
    assert_eq!(mode(&dir.path().join("homelab.secrets/state.toml")), 0o600);
}

#[test]
fn secrets_of_another_cluster_are_refused() {
    let (dir, path) = scratch(&reference_text());
    let mut s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.mark_issued("pi5-worker-1", false).unwrap();
    drop(s);
    let tok = dir.path().join("homelab.secrets/k3s-token");
    std::fs::write(&tok, "not-the-same-token").unwrap();
    std::fs::remove_file(dir.path().join("homelab.secrets/state.toml")).unwrap();
    let err = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap_err();
    assert!(matches!(err, SecretsError::Mismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("belong to another cluster"));
}

#[test]
fn loose_permissions_are_refused_with_the_fix() {
    let (dir, path) = scratch(&reference_text());
    drop(ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap());
    let tok = dir.path().join("homelab.secrets/k3s-token");
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is accessible by other users (mode 0644); run `chmod 600 {}`",
            tok.display(),
            tok.display()
        )
    );
}

#[test]
fn new_cluster_moves_old_secrets_aside_and_starts_over() {
    let (dir, path) = scratch(&reference_text());
    let mut s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.mark_issued("pi5-master-1", true).unwrap();
    let old = s.token_secret().to_string();
    drop(s);
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions { new_cluster: true }).unwrap();
    assert!(s.created());
    assert_ne!(s.token_secret(), old);
    assert!(!s.bootstrap_issued());
    let aside = s.moved_aside().unwrap();
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with(".secrets")
    );
    assert_eq!(
        std::fs::read_to_string(aside.join("k3s-token")).unwrap(),
        old
    );
    drop(dir);
}

#[test]
fn extra_secret_files_are_private() {
    let (_dir, path) = scratch(&reference_text());
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.write_secret_file("tls/server-ca.key", b"KEY").unwrap();
    assert_eq!(mode(&s.dir().join("tls")), 0o700);
    assert_eq!(mode(&s.dir().join("tls/server-ca.key")), 0o600);
    assert_eq!(
        s.read_secret_file("tls/server-ca.key").unwrap().unwrap(),
        b"KEY"
    );
    assert_eq!(s.read_secret_file("nope").unwrap(), None);
}

#[test]
fn plan_of_a_fresh_cluster_initialises_once() {
    let (_dir, path) = scratch(&reference_text());
    let p = profile::load(&path).unwrap();
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    assert_eq!(plans.len(), 8);
    let ip = |d| Ipv4Addr::new(192, 168, 86, d);
    let inits: Vec<&str> = plans
        .iter()
        .filter(|n| n.first_boot == FirstBootAction::InitCluster)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(inits, ["pi5-master-1"]);
    assert_eq!(
        plans[1].first_boot,
        FirstBootAction::JoinServers {
            via: vec![ip(33), ip(30)]
        }
    );
    assert_eq!(
        plans[7].first_boot,
        FirstBootAction::JoinAgent {
            via: vec![ip(33), ip(29), ip(30)]
        }
    );
    let m1 = &plans[0];
    assert!(m1.bootstrap);
    assert_eq!(m1.profile, "homelab");
    assert_eq!(m1.k3s.version, "v1.31.4+k3s1");
    assert_eq!(
        m1.k3s.etcd_snapshot_schedule.as_deref(),
        Some("0 */6 * * *")
    );
    assert_eq!(m1.k3s.etcd_snapshot_retention, Some(10));
    assert_eq!(m1.hardware.config_txt, ["kernel=kernel8.img"]);
    assert_eq!(m1.k3s.labels["piimg.io/board"], "pi5");
    assert_eq!(m1.k3s.labels["piimg.io/hardware-class"], "pi5-8gb");
    assert_eq!(m1.k3s.labels["piimg.io/ram-mb"], "8192");
    assert_eq!(m1.access.admin_user, "pi");
    assert_eq!(m1.access.ssh_authorized_keys.len(), 1);
    assert_eq!(m1.network.prefix_len, 24);
    let w = &plans[5];
    assert_eq!(w.name, "pi4-worker-1");
    assert_eq!(w.k3s.labels["piimg.io/board"], "pi4");
    assert!(
        w.k3s
            .kubelet_args
            .iter()
            .any(|a| a.starts_with("eviction-hard="))
    );
    assert!(w.hardware.config_txt.is_empty());
    assert_eq!(w.k3s.etcd_snapshot_schedule, None);
}

#[test]
fn after_the_bootstrap_card_was_issued_nobody_initialises() {
    let (_dir, path) = scratch(&reference_text());
    let p = profile::load(&path).unwrap();
    let mut s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.mark_issued("pi5-master-1", true).unwrap();
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert!(s.bootstrap_issued());
    let plans = plan::plan(&p, &s).unwrap();
    let ip = |d| Ipv4Addr::new(192, 168, 86, d);
    assert_eq!(
        plans[0].first_boot,
        FirstBootAction::JoinServers {
            via: vec![ip(29), ip(30)]
        }
    );
    assert!(
        plans
            .iter()
            .all(|n| n.first_boot != FirstBootAction::InitCluster)
    );
}

#[test]
fn vip_goes_first_and_into_tls_san() {
    let text = reference_text().replace("# vip = \"192.168.86.40\"", "vip = \"192.168.86.40\"");
    let (_dir, path) = scratch(&text);
    let p = profile::load(&path).unwrap();
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    let ip = |d| Ipv4Addr::new(192, 168, 86, d);
    assert_eq!(plans[0].k3s.tls_san, ["192.168.86.40"]);
    assert_eq!(
        plans[3].first_boot,
        FirstBootAction::JoinAgent {
            via: vec![ip(40), ip(33), ip(29), ip(30)]
        }
    );
    assert_eq!(
        plan::reflash_action(&plans[0]),
        FirstBootAction::JoinServers {
            via: vec![ip(40), ip(29), ip(30)]
        }
    );
    assert!(plans[3].k3s.tls_san.is_empty());
}

// ---------------------------------------------------------------------------
// Validation: one test per rule, each checking the exact message.

/// Validates the reference profile after replacing `from` with `to` (which must occur).
fn findings_after(edits: &[(&str, &str)]) -> profile::Findings {
    let mut text = reference_text();
    for (from, to) in edits {
        assert!(
            text.contains(from),
            "edit target {from:?} not in the reference profile"
        );
        text = text.replacen(from, to, 1);
    }
    let p = profile::parse(&text, Path::new("edited.toml")).unwrap();
    profile::validate(&p)
}

fn errors_after(edits: &[(&str, &str)]) -> Vec<String> {
    findings_after(edits)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// The warnings of the reference profile after `edits`.
fn warnings_after(edits: &[(&str, &str)]) -> Vec<String> {
    findings_after(edits)
        .warnings
        .iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn rule_hostname_must_be_rfc1123() {
    assert_eq!(
        errors_after(&[("name = \"pi5-worker-1\"", "name = \"Pi5_Worker\"")]),
        [
            "nodes[3].name: \"Pi5_Worker\" is not a valid hostname (RFC 1123: lowercase letters, digits and '-', 1-63 characters, no leading or trailing '-')"
        ]
    );
}

#[test]
fn rule_hostnames_unique() {
    assert_eq!(
        errors_after(&[("name = \"pi5-worker-2\"", "name = \"pi5-worker-1\"")]),
        ["nodes[4].name: \"pi5-worker-1\" is already the name of nodes[3]"]
    );
}

#[test]
fn rule_ips_unique() {
    assert_eq!(
        errors_after(&[("192.168.86.34", "192.168.86.32")]),
        [
            "nodes[4] (pi5-worker-2).ip: 192.168.86.32 is already the address of nodes[3] (pi5-worker-1)"
        ]
    );
}

#[test]
fn rule_ip_inside_cidr() {
    assert_eq!(
        errors_after(&[("192.168.86.34", "10.0.0.34")]),
        ["nodes[4] (pi5-worker-2).ip: 10.0.0.34 is outside the network 192.168.86.0/24"]
    );
}

#[test]
fn rule_ip_not_network_address() {
    assert_eq!(
        errors_after(&[("192.168.86.34", "192.168.86.0")]),
        ["nodes[4] (pi5-worker-2).ip: 192.168.86.0 is the network address of 192.168.86.0/24"]
    );
}

#[test]
fn rule_ip_not_broadcast() {
    assert_eq!(
        errors_after(&[("192.168.86.34", "192.168.86.255")]),
        ["nodes[4] (pi5-worker-2).ip: 192.168.86.255 is the broadcast address of 192.168.86.0/24"]
    );
}

#[test]
fn rule_ip_not_gateway() {
    assert_eq!(
        errors_after(&[("ip = \"192.168.86.34\"", "ip = \"192.168.86.1\"")]),
        ["nodes[4] (pi5-worker-2).ip: 192.168.86.1 is the gateway"]
    );
}

#[test]
fn rule_ip_not_vip() {
    assert_eq!(
        errors_after(&[("# vip = \"192.168.86.40\"", "vip = \"192.168.86.34\""),]),
        ["nodes[4] (pi5-worker-2).ip: 192.168.86.34 is the control-plane VIP (k3s.vip)"]
    );
}

#[test]
fn rule_vip_inside_cidr() {
    assert_eq!(
        errors_after(&[("# vip = \"192.168.86.40\"", "vip = \"10.0.0.40\"")]),
        ["k3s.vip: 10.0.0.40 is outside the network 192.168.86.0/24"]
    );
    assert_eq!(
        errors_after(&[("# vip = \"192.168.86.40\"", "vip = \"192.168.86.1\"")]),
        ["k3s.vip: 192.168.86.1 is the gateway"]
    );
}

#[test]
fn rule_gateway_inside_cidr() {
    assert_eq!(
        errors_after(&[("gateway = \"192.168.86.1\"", "gateway = \"192.168.1.1\"")]),
        ["network.gateway: 192.168.1.1 is outside the network 192.168.86.0/24"]
    );
}

#[test]
fn rule_at_least_one_server() {
    let errors = errors_after(&[
        ("bootstrap = \"pi5-master-1\"\n", ""),
        (
            "ip = \"192.168.86.33\"\nrole = \"server\"",
            "ip = \"192.168.86.33\"\nrole = \"agent\"",
        ),
        (
            "ip = \"192.168.86.29\"\nrole = \"server\"",
            "ip = \"192.168.86.29\"\nrole = \"agent\"",
        ),
        (
            "ip = \"192.168.86.30\"\nrole = \"server\"",
            "ip = \"192.168.86.30\"\nrole = \"agent\"",
        ),
    ]);
    assert_eq!(
        errors,
        ["nodes: no server; at least one node needs role = \"server\""]
    );
}

#[test]
fn rule_even_server_count_is_an_error() {
    assert_eq!(
        errors_after(&[(
            "ip = \"192.168.86.32\"\nrole = \"agent\"",
            "ip = \"192.168.86.32\"\nrole = \"server\""
        )]),
        [
            "nodes: 4 servers with embedded etcd: an even count risks split brain (etcd needs a majority); use 3 or 5"
        ]
    );
}

#[test]
fn rule_single_server_warns_no_ha() {
    let edits = [
        (
            "ip = \"192.168.86.29\"\nrole = \"server\"",
            "ip = \"192.168.86.29\"\nrole = \"agent\"",
        ),
        (
            "ip = \"192.168.86.30\"\nrole = \"server\"",
            "ip = \"192.168.86.30\"\nrole = \"agent\"",
        ),
    ];
    assert!(errors_after(&edits).is_empty());
    assert!(
        warnings_after(&edits).contains(&"nodes: 1 server: no HA (the control plane and etcd have a single point of failure; use 3 servers for HA)".to_string())
    );
}

#[test]
fn rule_servers_need_2gb() {
    assert_eq!(
        errors_after(&[(
            "ip = \"192.168.86.30\"\nrole = \"server\"\nhardware = \"pi5-8gb\"",
            "ip = \"192.168.86.30\"\nrole = \"server\"\nhardware = \"pi4-1gb\""
        )]),
        [
            "nodes[2] (pi5-master-3).role: a server needs at least 2 GB of RAM, but pi4-1gb has 1024 MB; make this node an agent"
        ]
    );
}

#[test]
fn rule_bootstrap_must_be_a_server_of_the_profile() {
    assert_eq!(
        errors_after(&[(
            "bootstrap = \"pi5-master-1\"",
            "bootstrap = \"pi5-worker-1\""
        )]),
        ["cluster.bootstrap: \"pi5-worker-1\" is an agent; the bootstrap node must be a server"]
    );
    assert_eq!(
        errors_after(&[(
            "bootstrap = \"pi5-master-1\"",
            "bootstrap = \"pi5-mastr-1\""
        )]),
        [
            "cluster.bootstrap: \"pi5-mastr-1\" is not a node of this profile, did you mean \"pi5-master-1\"?"
        ]
    );
}

#[test]
fn rule_exactly_one_bootstrap_defaults_to_first_server() {
    let (_dir, path) = scratch(&reference_text().replace("bootstrap = \"pi5-master-1\"\n", ""));
    let p = profile::load(&path).unwrap();
    assert_eq!(p.bootstrap().unwrap().name, "pi5-master-1");
    let (_dir2, path2) = scratch(&reference_text().replace(
        "bootstrap = \"pi5-master-1\"",
        "bootstrap = \"pi5-master-3\"",
    ));
    let p = profile::load(&path2).unwrap();
    let s = ClusterSecrets::open_or_create(&path2, SecretsOptions::default()).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    let boots: Vec<&str> = plans
        .iter()
        .filter(|n| n.bootstrap)
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(boots, ["pi5-master-3"]);
    assert_eq!(plans[2].first_boot, FirstBootAction::InitCluster);
    assert_eq!(
        plans[2].servers[0].0, "pi5-master-3",
        "bootstrap server listed first"
    );
}

/// The reference profile's `ssh_key_files = [...]` line (as [`reference_text`] has it).
fn key_files_line() -> String {
    reference_text()
        .lines()
        .find(|l| l.starts_with("ssh_key_files = ["))
        .expect("the reference profile lists a key file")
        .to_string()
}

#[test]
fn rule_ssh_keys_must_parse() {
    let line = key_files_line();
    let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8";
    let swapped = good.replace("ssh-ed25519 ", "ssh-rsa ");
    let inline = |key: &str| format!("ssh_keys = [\"{key}\"]");
    assert!(errors_after(&[(&line, &inline(good))]).is_empty());
    assert_eq!(
        errors_after(&[(&line, &inline(&swapped))]),
        ["access.ssh_keys[0]: key data is a `ssh-ed25519` key but the line says `ssh-rsa`"]
    );
    assert_eq!(
        errors_after(&[(&line, &inline("ssh-ed25519 not*base64"))]),
        ["access.ssh_keys[0]: key data is not valid base64"]
    );
}

#[test]
fn rule_the_old_placeholder_key_warns() {
    // Profiles copied from an older reference profile may still carry its
    // placeholder key, whose private half nobody holds: build and flash refuse it.
    let placeholder = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 REPLACE-ME-placeholder@piimg";
    let f = findings_after(&[(
        &key_files_line(),
        &format!("ssh_keys = [\"{placeholder}\"]"),
    )]);
    assert!(f.errors.is_empty(), "{:#?}", f.errors);
    assert_eq!(f.warnings[0].field, "access.ssh_keys[0]");
    assert!(
        f.warnings[0]
            .message
            .contains("placeholder key (comment REPLACE-ME…): nobody can log in with it, so build and flash refuse it"),
        "{}",
        f.warnings[0].message
    );
}

#[test]
fn rule_at_least_one_ssh_key() {
    let text = reference_text().replacen(&key_files_line(), "ssh_keys = []", 1);
    let p = profile::parse(&text, Path::new("x.toml")).unwrap();
    let errors: Vec<String> = profile::validate(&p)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        [
            "access: no SSH key: add one to access.ssh_keys, access.ssh_key_files or access.github_users"
        ]
    );
}

#[test]
fn rule_other_key_types_parse() {
    let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFRbdk4k7xldg+zfCyhP7cnpr7VBIJQidjiCt0/Ujacj6qN1wzBk2k6XcKKFIpDiOgkKJbWWhJE3MvUSLUzpGik= t";
    assert_eq!(
        piimg::profile::keys::parse_key_line(ecdsa).unwrap().kind,
        "ecdsa-sha2-nistp256"
    );
    // An ecdsa blob declared as another curve is refused.
    let wrong = ecdsa.replace("ecdsa-sha2-nistp256 ", "ecdsa-sha2-nistp384 ");
    assert!(piimg::profile::keys::parse_key_line(&wrong).is_err());
}

#[test]
fn rule_agents_under_1gb_warn() {
    let w = warnings_after(&[(
        "ip = \"192.168.86.23\"\nrole = \"agent\"\nhardware = \"pi4-2gb\"",
        "ip = \"192.168.86.23\"\nrole = \"agent\"\nhardware = \"pizero2w-512mb\"",
    )]);
    assert!(
        w.contains(&"nodes[7] (pi4-worker-3).hardware: an agent with 512 MB of RAM (pizero2w-512mb) leaves little room for workloads after k3s itself".to_string()),
        "{w:#?}"
    );
}

#[test]
fn rule_etcd_on_sd_cards_warns_and_can_be_silenced() {
    assert_eq!(
        warnings_after(&[]),
        [
            "nodes: embedded etcd on SD cards (pi5-master-1, pi5-master-2, pi5-master-3) is slow and wears the cards; boot these servers from a USB or NVMe disk (storage = \"usb\" or \"nvme\") or give them a data disk for k3s (data_disk = \"usb\" or \"nvme\")",
            NO_S3_WARNING,
        ]
    );
    let nvme = |ip: &str| {
        (
            format!("ip = \"{ip}\"\nrole = \"server\""),
            format!("ip = \"{ip}\"\nstorage = \"nvme\"\nrole = \"server\""),
        )
    };
    let e: Vec<(String, String)> = ["192.168.86.33", "192.168.86.29", "192.168.86.30"]
        .iter()
        .map(|ip| nvme(ip))
        .collect();
    let edits: Vec<(&str, &str)> = e.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(warnings_after(&edits), [NO_S3_WARNING]);
    // A data disk takes etcd off the card too: only the SD servers left are named.
    let data_disk = [(
        "ip = \"192.168.86.33\"\nrole = \"server\"",
        "ip = \"192.168.86.33\"\ndata_disk = \"usb\"\nrole = \"server\"",
    )];
    assert!(
        warnings_after(&data_disk)[0]
            .starts_with("nodes: embedded etcd on SD cards (pi5-master-2, pi5-master-3) is slow"),
        "{:?}",
        warnings_after(&data_disk)
    );
}

/// The reference cluster's snapshots stay on its servers' cards.
const NO_S3_WARNING: &str = "k3s.etcd_s3: 3 servers keep their etcd snapshots only on their own disks; add [k3s.etcd_s3] (an S3 or MinIO bucket) so a snapshot survives the disk that dies";

#[test]
fn rule_unknown_hardware_class_suggests() {
    assert_eq!(
        errors_after(&[("hardware = \"pi4-2gb\"", "hardware = \"pi4-2g\"")]),
        [
            "nodes[5] (pi4-worker-1).hardware: unknown hardware class \"pi4-2g\", did you mean \"pi4-2gb\"? (known: pi5-16gb, pi5-8gb, pi5-4gb, pi5-2gb, pi4-8gb, pi4-4gb, pi4-2gb, pi4-1gb, pizero2w-512mb)"
        ]
    );
}

#[test]
fn rule_k3s_version_pinned() {
    assert_eq!(
        errors_after(&[("version = \"v1.31.4+k3s1\"", "version = \"1.31\"")]),
        ["k3s.version: \"1.31\" is not a k3s release tag (like \"v1.31.4+k3s1\")"]
    );
    assert_eq!(
        errors_after(&[("version = \"v1.31.4+k3s1\"", "channel = \"stable\"")]),
        [
            "k3s.channel: channels are not supported; pin k3s.version (e.g. \"v1.31.4+k3s1\") so every node and every re-flash runs the same k3s"
        ]
    );
}

#[test]
fn rule_labels_taints_mac_and_args() {
    let errors = errors_after(&[(
        "name = \"pi5-worker-2\"",
        "name = \"pi5-worker-2\"\nmac = \"dc:a6:32\"\ntaints = [\"gpu=yes\"]\nlabels = { \"piimg.io/board\" = \"x\" }\nkubelet_args = [\"max-pods\"]",
    )]);
    assert_eq!(
        errors,
        [
            "nodes[4] (pi5-worker-2).mac: \"dc:a6:32\" is not a MAC address (like dc:a6:32:01:02:03)",
            "nodes[4] (pi5-worker-2).labels: \"piimg.io/board\" is set by piimg from the hardware class; use another prefix",
            "nodes[4] (pi5-worker-2).taints[0]: \"gpu=yes\" is not a taint (key[=value]:NoSchedule|PreferNoSchedule|NoExecute)",
            "nodes[4] (pi5-worker-2).kubelet_args[0]: \"max-pods\" is not key=value",
        ]
    );
    assert_eq!(
        errors_after(&[(
            "disable = []",
            "disable = []\nserver_args = [\"token=abc\"]"
        )]),
        ["k3s.server_args[0]: \"token\" is set by piimg; use the matching profile setting instead"]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = errors_after(&[
        ("name = \"pi5-worker-1\"", "name = \"Bad_Name\""),
        ("192.168.86.34", "10.1.1.1"),
        ("version = \"v1.31.4+k3s1\"", "version = \"latest\""),
        ("admin_user = \"pi\"", "admin_user = \"root\""),
    ]);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    assert!(errors.iter().any(|e| e.starts_with("nodes[3].name:")));
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("nodes[4] (pi5-worker-2).ip:"))
    );
    assert!(errors.iter().any(|e| e.starts_with("k3s.version:")));
    assert!(
        errors.iter().any(|e| e
            == "access.admin_user: must not be root; name an ordinary admin user (it gets sudo)")
    );
}

// ---------------------------------------------------------------------------
// Loading: unknown keys, types.

#[test]
fn unknown_key_names_the_nearest_valid_one_with_position() {
    let text = reference_text().replacen("hardware = \"pi4-2gb\"", "hardwre = \"pi4-2gb\"", 1);
    let line = text.lines().position(|l| l.starts_with("hardwre")).unwrap() + 1;
    let (_dir, path) = scratch(&text);
    let err = profile::load(&path).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:{line}:1: unknown key `hardwre`, did you mean `hardware`? (valid: name, ip, dhcp, role, hardware, labels, taints, mac, storage, data_disk, kubelet_args)",
            path.display()
        )
    );
}

#[test]
fn unknown_table_and_bad_value_are_located() {
    let text = reference_text().replacen("[network]", "[netwrk]", 1);
    let line = text.lines().position(|l| l == "[netwrk]").unwrap() + 1;
    let err = profile::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("p.toml:{line}:"))
            && err.contains("unknown key `netwrk`, did you mean `network`?"),
        "{err}"
    );
    let text = reference_text().replacen("role = \"agent\"", "role = \"agnet\"", 1);
    let err = profile::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown value `agnet`, did you mean `agent`? (valid: server, agent)"),
        "{err}"
    );
    let text = reference_text().replacen("192.168.86.0/24", "192.168.86.7/24", 1);
    let err = profile::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has host bits set; did you mean 192.168.86.0/24?"),
        "{err}"
    );
}

#[test]
fn missing_profile_file_is_named() {
    let err = profile::load(Path::new("/nonexistent/x.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read profile /nonexistent/x.toml:"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// SSH key sources.

const ED_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8";
const EC_KEY: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBFRbdk4k7xldg+zfCyhP7cnpr7VBIJQidjiCt0/Ujacj6qN1wzBk2k6XcKKFIpDiOgkKJbWWhJE3MvUSLUzpGik=";

/// A GitHub stand-in on 127.0.0.1: `/<user>.keys` answers from `users`, else 404.
fn keys_server(users: Vec<(&'static str, String)>) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
            let body = users
                .iter()
                .find(|(u, _)| path == format!("/{u}.keys"))
                .map(|(_, b)| b.clone());
            let (status, body) = match body {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", "Not Found".to_string()),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn github_keys_come_from_the_keys_url() {
    use piimg::profile::keys::{KeyError, fetch_keys_from};
    let base = keys_server(vec![
        ("alice", format!("{ED_KEY}\nnot a key\n{EC_KEY}\n")),
        ("empty", String::new()),
    ]);
    let keys = fetch_keys_from(&format!("{base}/alice.keys"), "alice").unwrap();
    let lines: Vec<&str> = keys.iter().map(|k| k.line.as_str()).collect();
    assert_eq!(
        lines,
        [
            format!("{ED_KEY} github:alice"),
            format!("{EC_KEY} github:alice")
        ]
    );
    let err = fetch_keys_from(&format!("{base}/bob.keys"), "bob").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "cannot fetch SSH keys of GitHub user `bob` from {base}/bob.keys: HTTP 404 Not Found"
        )
    );
    let err = fetch_keys_from(&format!("{base}/empty.keys"), "empty").unwrap_err();
    assert!(matches!(err, KeyError::NoGithubKeys { .. }), "{err}");
}

#[test]
fn key_files_resolve_relative_to_the_profile() {
    let text = reference_text().replacen(
        &key_files_line(),
        &format!("ssh_key_files = [\"keys/admin.pub\"]\nssh_keys = [\"{ED_KEY} inline\"]"),
        1,
    );
    let (dir, path) = scratch(&text);
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(
        dir.path().join("keys/admin.pub"),
        format!("# my keys\n{EC_KEY} me@laptop\n\n{ED_KEY} dup\n"),
    )
    .unwrap();
    let p = profile::load(&path).unwrap();
    assert!(profile::validate(&p).is_ok());
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    // Inline key first, then the file's ecdsa key; the file's copy of the inline key is dropped.
    let keys = &plans[0].access.ssh_authorized_keys;
    assert_eq!(keys.len(), 2, "{keys:#?}");
    assert!(keys[0].starts_with(ED_KEY));
    assert_eq!(keys[1], format!("{EC_KEY} me@laptop"));

    // A bad line in a key file is named with file and line.
    std::fs::write(
        dir.path().join("keys/admin.pub"),
        format!("{EC_KEY}\nssh-ed25519 ***\n"),
    )
    .unwrap();
    let errors: Vec<String> = profile::validate(&p)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        [format!(
            "access.ssh_key_files[0]: {}/keys/admin.pub line 2: key data is not valid base64",
            dir.path().display()
        )]
    );
}

#[test]
fn rule_disable_names_packaged_components() {
    assert_eq!(
        errors_after(&[("disable = []", "disable = [\"traefik\", \"servicelbb\"]")]),
        [
            "k3s.disable[1]: \"servicelbb\" is not a k3s packaged component, did you mean \"servicelb\"? (known: coredns, servicelb, traefik, local-storage, metrics-server, runtimes)"
        ]
    );
}

#[test]
fn secrets_dir_without_token_names_the_way_out() {
    let (dir, path) = scratch(&reference_text());
    drop(ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap());
    let tok = dir.path().join("homelab.secrets/k3s-token");
    std::fs::remove_file(&tok).unwrap();
    let err = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is missing: restore it from your backup, or copy /var/lib/rancher/k3s/server/token from any server of the cluster into it (mode 0600)",
            tok.display()
        )
    );
    assert!(!tok.exists(), "no silent new token");
}

#[test]
fn token_copied_from_a_server_without_any_state_means_the_cluster_exists() {
    // No state anywhere (never committed), but a full token from a running server:
    // the bootstrap card must not initialise a second cluster.
    let (dir, path) = scratch(&reference_text());
    let secrets = dir.path().join("homelab.secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tok = secrets.join("k3s-token");
    std::fs::write(&tok, format!("K10{}::server:0123abcd\n", "cd".repeat(32))).unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert_eq!(s.token_secret(), "0123abcd");
    assert!(s.bootstrap_issued());
    let p = profile::load(&path).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    assert!(
        plans
            .iter()
            .all(|n| n.first_boot != FirstBootAction::InitCluster)
    );
    // The state is now recorded next to the profile for the next checkout.
    let state = std::fs::read_to_string(dir.path().join("homelab.state.toml")).unwrap();
    assert!(state.contains("bootstrap_issued = true"), "{state}");
}

#[test]
fn rule_macs_unique() {
    assert_eq!(
        errors_after(&[
            (
                "name = \"pi5-worker-1\"",
                "name = \"pi5-worker-1\"\nmac = \"dc:a6:32:00:00:01\""
            ),
            (
                "name = \"pi5-worker-2\"",
                "name = \"pi5-worker-2\"\nmac = \"DC:A6:32:00:00:01\""
            ),
        ]),
        [
            "nodes[4] (pi5-worker-2).mac: DC:A6:32:00:00:01 is already the MAC of nodes[3] (pi5-worker-1)"
        ]
    );
}

#[test]
fn rule_a_profile_needs_nodes() {
    let text = reference_text();
    let cut = text.find("# Control plane:").unwrap();
    let text = text[..cut].replace("bootstrap = \"pi5-master-1\"\n", "");
    let p = profile::parse(&text, Path::new("x.toml")).unwrap();
    let errors: Vec<String> = profile::validate(&p)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(
        errors,
        ["nodes: no nodes; add a [[nodes]] table per machine"]
    );
}

#[test]
fn single_server_always_initialises_and_says_so() {
    let text = reference_text()
        .replacen(
            "ip = \"192.168.86.29\"\nrole = \"server\"",
            "ip = \"192.168.86.29\"\nrole = \"agent\"",
            1,
        )
        .replacen(
            "ip = \"192.168.86.30\"\nrole = \"server\"",
            "ip = \"192.168.86.30\"\nrole = \"agent\"",
            1,
        );
    let (_dir, path) = scratch(&text);
    let p = profile::load(&path).unwrap();
    let mut s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    s.mark_issued("pi5-master-1", true).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    // With no peer to join, re-flashing the only server can only start a new cluster.
    assert_eq!(plans[0].first_boot, FirstBootAction::InitCluster);
    assert_eq!(
        plan::reflash_action(&plans[0]),
        FirstBootAction::InitCluster
    );
    assert_eq!(
        plans[1].first_boot,
        FirstBootAction::JoinAgent {
            via: vec![Ipv4Addr::new(192, 168, 86, 33)]
        }
    );
}

#[test]
fn airgap_and_overlay_dirs_resolve_against_the_profile() {
    let text = reference_text()
        .replace(
            "etcd_snapshot_retention = 10",
            "etcd_snapshot_retention = 10\nairgap_dir = \"airgap\"",
        )
        .replace(
            "domain = \"home.arpa\"",
            "domain = \"home.arpa\"\noverlay_dir = \"my-overlay\"",
        );
    let (dir, path) = scratch(&text);
    let p = profile::load(&path).unwrap();
    let errors: Vec<String> = profile::validate(&p)
        .errors
        .iter()
        .map(|e| e.to_string())
        .collect();
    let d = dir.path().display();
    assert_eq!(
        errors,
        [
            format!("cluster.overlay_dir: {d}/my-overlay is not a directory"),
            format!("k3s.airgap_dir: {d}/airgap has no k3s-arm64"),
            format!("k3s.airgap_dir: {d}/airgap has no install.sh"),
        ]
    );
    std::fs::create_dir(dir.path().join("my-overlay")).unwrap();
    std::fs::create_dir(dir.path().join("airgap")).unwrap();
    std::fs::write(dir.path().join("airgap/k3s-arm64"), b"bin").unwrap();
    std::fs::write(dir.path().join("airgap/install.sh"), b"sh").unwrap();
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    assert_eq!(
        plans[0].k3s.airgap_dir.as_deref(),
        Some(dir.path().join("airgap").as_path())
    );
    assert_eq!(
        plans[0].overlay_dir.as_deref(),
        Some(dir.path().join("my-overlay").as_path())
    );
}

#[test]
fn profile_kubelet_args_override_hardware_defaults() {
    let text = reference_text().replace(
        "etcd_snapshot_retention = 10",
        "etcd_snapshot_retention = 10\nkubelet_args = [\"eviction-hard=memory.available<300Mi\", \"max-pods=60\"]",
    );
    let (_dir, path) = scratch(&text);
    let p = profile::load(&path).unwrap();
    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    let plans = plan::plan(&p, &s).unwrap();
    let pi4 = &plans[5].k3s.kubelet_args;
    assert_eq!(
        pi4,
        &[
            "system-reserved=cpu=200m,memory=256Mi",
            "kube-reserved=cpu=200m,memory=256Mi",
            "eviction-hard=memory.available<300Mi",
            // [storage] sd_wear = "minimal" (the default) on an SD node.
            "image-gc-high-threshold=70",
            "image-gc-low-threshold=50",
            "max-pods=60",
        ]
    );
    // The hardware's own list stays the class default.
    assert_eq!(plans[5].hardware.kubelet_args.len(), 3);
    assert_eq!(
        plans[0].k3s.kubelet_args,
        [
            "image-gc-high-threshold=70",
            "image-gc-low-threshold=50",
            "eviction-hard=memory.available<300Mi",
            "max-pods=60"
        ]
    );
}

#[test]
fn addons_default_off_parse_and_reject_unknown_keys() {
    // The reference profile spells them out, off.
    assert_eq!(reference().addons, profile::model::Addons::default());
    let text = reference_text().replacen("[addons]\n", "", 1);
    let text =
        text.replacen("cert_manager = false\n", "", 1)
            .replacen("monitoring = false\n", "", 1);
    let p = profile::parse(&text, Path::new("p.toml")).unwrap();
    assert!(!p.addons.cert_manager && !p.addons.monitoring);
    let text = reference_text().replacen("monitoring = false", "monitoring = true", 1);
    let p = profile::parse(&text, Path::new("p.toml")).unwrap();
    assert!(p.addons.monitoring && !p.addons.cert_manager);

    let text = reference_text().replacen("monitoring = false", "monitorng = true", 1);
    let line = text
        .lines()
        .position(|l| l.starts_with("monitorng"))
        .unwrap()
        + 1;
    let err = profile::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("p.toml:{line}:"))
            && err.contains(
                "unknown key `monitorng`, did you mean `monitoring`? (valid: cert_manager, monitoring)"
            ),
        "{err}"
    );
}

#[test]
fn init_window_and_node_cleaner_validity_default_and_are_bounded() {
    let p = reference();
    assert_eq!(p.k3s.init_window_seconds, 300);
    assert_eq!(p.k3s.node_cleaner_days, 365);
    // Omitted: the same defaults.
    let text = reference_text()
        .replace("init_window_seconds = 300\n", "")
        .replace("node_cleaner_days = 365\n", "");
    assert!(!text.contains("init_window_seconds"));
    let omitted = profile::parse(&text, &reference_path()).unwrap();
    assert_eq!(omitted.k3s.init_window_seconds, 300);
    assert_eq!(omitted.k3s.node_cleaner_days, 365);
    // Out of range: one error per field, naming it, with the default as a hint.
    let bad = reference_text()
        .replace("init_window_seconds = 300", "init_window_seconds = 5")
        .replace("node_cleaner_days = 365", "node_cleaner_days = 0");
    let f = profile::validate(&profile::parse(&bad, &reference_path()).unwrap());
    let errs: Vec<String> = f.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].starts_with("k3s.init_window_seconds: must be between 30 and 3600"),
        "{errs:#?}"
    );
    assert!(errs[0].contains("default 300"), "{errs:#?}");
    assert!(
        errs[1].starts_with("k3s.node_cleaner_days: must be between 1 and 3650"),
        "{errs:#?}"
    );
}

// ---------------------------------------------------------------------------
// Day one: Wi-Fi, DHCP, the password hash.
// ---------------------------------------------------------------------------

const WIFI: &str =
    "[wifi]\nssid = \"lab net\"\npsk = \"correct horse\"\ncountry = \"GB\"\n\n[hardware]";

#[test]
fn rule_wifi_keys_are_checked_all_at_once() {
    let errs = errors_after(&[
        ("interface = \"eth0\"", "interface = \"wlan0\""),
        (
            "[hardware]",
            "[wifi]\nssid = \"\"\npsk = \"short\"\ncountry = \"uk\"\n\n[hardware]",
        ),
    ]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(
        errs[0],
        "wifi.ssid: SSID of 0 bytes; an SSID has 1 to 32 bytes"
    );
    assert!(
        errs[1].starts_with("wifi.psk: neither a WPA passphrase (8 to 63 printable ASCII characters) nor a 64-digit hex PSK (it has 5 characters)"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("wifi.country: \"uk\" is not an ISO 3166 alpha-2 country code"),
        "{}",
        errs[2]
    );
}

#[test]
fn rule_wifi_meets_interface_and_disable_wifi() {
    assert_eq!(
        errors_after(&[("interface = \"eth0\"", "interface = \"wlan0\"")]),
        [
            "network.interface: \"wlan0\" is a Wi-Fi interface but the profile has no [wifi]; add [wifi] with ssid, psk and country, or use interface = \"eth0\""
        ]
    );
    assert_eq!(
        errors_after(&[("[hardware]", WIFI)]),
        [
            "network.interface: \"eth0\" is not a Wi-Fi interface, but [wifi] is set: piimg configures one interface; set interface = \"wlan0\" to use Wi-Fi, or remove [wifi]"
        ]
    );
    assert_eq!(
        errors_after(&[
            ("interface = \"eth0\"", "interface = \"wlan0\""),
            ("[hardware]", WIFI),
            (
                "pi5_4k_pages = true",
                "pi5_4k_pages = true\ndisable_wifi = true"
            ),
        ]),
        [
            "hardware.disable_wifi: turns the radio off, but [wifi] asks the nodes to join a Wi-Fi network; drop one of them"
        ]
    );
    assert!(
        errors_after(&[
            ("interface = \"eth0\"", "interface = \"wlan0\""),
            ("[hardware]", WIFI),
        ])
        .is_empty()
    );
}

#[test]
fn rule_password_hash_shape() {
    let with = |h: &str| {
        errors_after(&[(
            "password_login = false",
            &format!("password_login = false\npassword_hash = {h:?}"),
        )])
    };
    assert!(with("$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1").is_empty());
    assert!(
        with("$y$j9T$F5Jx5fExrKuPp53xLKQ..1$GmcwIgvdUC9qLWcKCi6gklUa1dM3ziD43YxYNURLKy0")
            .is_empty()
    );
    assert_eq!(
        with("raspberry"),
        [
            "access.password_hash: not a crypt(3) hash (a plain password is never accepted); make one with `mkpasswd -m yescrypt` (package whois) or `openssl passwd -6`"
        ]
    );
    assert_eq!(
        with("$1$abc$def"),
        [
            "access.password_hash: scheme $1$ is not accepted (only yescrypt $y$ and sha512-crypt $6$); make one with `mkpasswd -m yescrypt` (package whois) or `openssl passwd -6`"
        ]
    );
}

#[test]
fn rule_exactly_one_of_ip_and_dhcp_and_no_dhcp_server() {
    assert_eq!(
        errors_after(&[("ip = \"192.168.86.23\"\n", "dhcp = true\n")]),
        Vec::<String>::new()
    );
    assert_eq!(
        errors_after(&[("ip = \"192.168.86.23\"\n", "")]),
        [
            "nodes[7] (pi4-worker-3).ip: missing; give the node a static ip = \"a.b.c.d\" or dhcp = true (agents only)"
        ]
    );
    assert_eq!(
        errors_after(&[(
            "ip = \"192.168.86.23\"\n",
            "ip = \"192.168.86.23\"\ndhcp = true\n"
        )]),
        [
            "nodes[7] (pi4-worker-3).dhcp: both ip and dhcp = true; give the node exactly one of them"
        ]
    );
    let errs = errors_after(&[("ip = \"192.168.86.29\"\n", "dhcp = true\n")]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("nodes[1] (pi5-master-2).dhcp: a server needs a fixed address"),
        "{}",
        errs[0]
    );
}

#[test]
fn dhcp_agent_plans_without_an_address_and_servers_keep_theirs() {
    let text = reference_text().replacen("ip = \"192.168.86.23\"\n", "dhcp = true\n", 1);
    let p = profile::parse(&text, Path::new("dhcp.toml")).unwrap();
    let plans = plan::plan_with(
        &p,
        &Default::default(),
        vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 me@host".into()],
    )
    .unwrap();
    let w3 = plans.iter().find(|n| n.name == "pi4-worker-3").unwrap();
    assert_eq!(w3.network.address, None);
    assert_eq!(w3.servers.len(), 3);
    assert!(
        plans
            .iter()
            .filter(|n| n.role == Role::Server)
            .all(|n| n.network.address.is_some())
    );
}

#[test]
fn wifi_plan_carries_the_derived_psk_not_the_passphrase() {
    let text = reference_text()
        .replacen("interface = \"eth0\"", "interface = \"wlan0\"", 1)
        .replacen("[hardware]", WIFI, 1);
    let p = profile::parse(&text, Path::new("wifi.toml")).unwrap();
    let plans = plan::plan_with(&p, &Default::default(), vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8 me@host".into()]).unwrap();
    let psk = plans[0].wifi_psk.clone().unwrap();
    // Independent derivation: Python's hashlib (PBKDF2-HMAC-SHA1, 4096, 32 bytes).
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys; print(hashlib.pbkdf2_hmac('sha1', sys.argv[1].encode(), sys.argv[2].encode(), 4096, 32).hex())",
            "correct horse",
            "lab net",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), psk);
    // The plan as serialised (instance id, `plan --json`) has neither the key nor the passphrase.
    let json = serde_json::to_string(&plans[0]).unwrap();
    assert!(
        !json.contains(&psk) && !json.contains("correct horse"),
        "{json}"
    );
    assert_eq!(plans[0].network.wifi.as_ref().unwrap().country, "GB");
}
