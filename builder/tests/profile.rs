//! The cluster profile: loading, validation rules, SSH keys, secrets and the plan.

use piimg::plan::{self, FirstBootAction};
use piimg::profile::secrets::{ClusterSecrets, SecretsError, SecretsOptions};
use piimg::profile::{self, Profile};
use piimg_firstboot::contract::Role;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn reference_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/homelab.toml")
}

fn reference_text() -> String {
    std::fs::read_to_string(reference_path()).unwrap()
}

fn reference() -> Profile {
    profile::load(&reference_path()).unwrap()
}

#[test]
fn reference_profile_validates_clean() {
    let p = reference();
    let f = profile::validate(&p);
    assert!(f.errors.is_empty(), "{:#?}", f.errors);
    // The only warning: the servers' etcd lives on SD cards.
    assert_eq!(f.warnings.len(), 1, "{:#?}", f.warnings);
    assert!(
        f.warnings[0]
            .message
            .starts_with("embedded etcd on SD cards (pi5-master-1, pi5-master-2, pi5-master-3)")
    );
}

#[test]
fn reference_profile_describes_the_homelab() {
    let p = reference();
    let nodes: Vec<(&str, Ipv4Addr, Role, &str)> = p
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.ip, n.role, n.hardware.as_str()))
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
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["check-ignore", "-q", "profiles/homelab.secrets/k3s-token"])
        .status()
        .unwrap();
    assert!(
        out.success(),
        "profiles/homelab.secrets/ must be git-ignored"
    );
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
    drop(s);
    let secrets = dir.path().join("homelab.secrets");
    std::fs::remove_dir_all(&secrets).unwrap();

    // The way out the error names: copy the server's token file.
    std::fs::create_dir(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    let tok = secrets.join("k3s-token");
    std::fs::write(&tok, format!("K10{}::server:{token}\n", "ab".repeat(32))).unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();

    let s = ClusterSecrets::open_or_create(&path, SecretsOptions::default()).unwrap();
    assert_eq!(s.token_secret(), token);
    assert!(s.bootstrap_issued());
    assert!(s.issued("pi5-master-1"));
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
