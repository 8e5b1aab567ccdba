//! The cluster PKI checked with independent tools: openssl verifies the chains and
//! computes the DER/sha256 k3s's token hash must match; YAML of the RBAC is parsed.

mod support;

use piimg::pki::ca::{ClusterCa, node_cleaner_user, required_files};
use piimg::pki::manifests::Addons;
use piimg::pki::token::secure_agent_token;
use piimg::pki::{HaOptions, PkiError, ca_hash, files_for_node, node_password, secure_token};
use piimg::plan::*;
use piimg_contract::{NODE_CLEANER_CERT, Role};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use support::plan::node_plan as plan;

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn der_sha256(dir: &Path, pem_file: &str) -> String {
    hex::encode(Sha256::digest(openssl(
        dir,
        &["x509", "-in", pem_file, "-outform", "der"],
    )))
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_restored_ca_open_to_other_users_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tmp.path().join("secrets");
    ClusterCa::open_or_create(&secrets, "homelab").unwrap();
    let key = secrets.join("ca/root-ca.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = ClusterCa::open(&secrets).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{} is accessible by other users (mode 0644); run `chmod 600 {}`",
            key.display(),
            key.display()
        )
    );
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let etcd = secrets.join("ca/etcd");
    fs::set_permissions(&etcd, fs::Permissions::from_mode(0o755)).unwrap();
    let err = ClusterCa::open(&secrets).unwrap_err().to_string();
    assert!(err.contains("(mode 0755); run `chmod 700"), "{err}");
    fs::set_permissions(&etcd, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(ClusterCa::open(&secrets).unwrap().is_some());
}

#[test]
fn ca_is_created_private_in_k3s_layout_and_reused_never_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tmp.path().join("secrets");
    // A leftover of a crashed create is removed, never used.
    fs::create_dir_all(secrets.join(".ca.partial-1")).unwrap();
    fs::write(secrets.join(".ca.partial-1/root-ca.key"), "stale").unwrap();
    fs::set_permissions(&secrets, fs::Permissions::from_mode(0o700)).unwrap();
    let ca = ClusterCa::open_or_create(&secrets, "homelab").unwrap();
    assert!(!secrets.join(".ca.partial-1").exists());
    let dir = secrets.join("ca");
    assert_eq!(mode(&secrets), 0o700);
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("etcd")), 0o700);
    for rel in required_files() {
        assert_eq!(mode(&dir.join(&rel)), 0o600, "{rel}");
    }
    // Chains verify with openssl, and every leaf CA bundle is leaf + intermediate + root.
    for leaf in [
        "server-ca",
        "client-ca",
        "request-header-ca",
        "etcd/peer-ca",
        "etcd/server-ca",
    ] {
        let out = openssl(
            &dir,
            &[
                "verify",
                "-CAfile",
                "root-ca.pem",
                "-untrusted",
                "intermediate-ca.pem",
                &format!("{leaf}.pem"),
            ],
        );
        assert!(String::from_utf8_lossy(&out).contains(": OK"));
        let bundle = fs::read_to_string(dir.join(format!("{leaf}.crt"))).unwrap();
        let parts = [
            format!("{leaf}.pem"),
            "intermediate-ca.pem".into(),
            "root-ca.pem".into(),
        ]
        .map(|f| fs::read_to_string(dir.join(f)).unwrap());
        assert_eq!(bundle, parts.concat());
    }
    // SKID/AKID: the root's AKID is its own SKID; the intermediate's is the root's.
    let ext = |f: &str| {
        String::from_utf8(openssl(
            &dir,
            &[
                "x509",
                "-in",
                f,
                "-noout",
                "-ext",
                "subjectKeyIdentifier,authorityKeyIdentifier,basicConstraints",
            ],
        ))
        .unwrap()
    };
    // (SKID, AKID) as openssl prints them, whatever the extension order.
    let ids = |t: &str| -> (String, String) {
        let after = |label: &str| {
            let mut it = t.lines();
            it.find(|l| l.contains(label));
            it.next()
                .unwrap_or("")
                .trim()
                .trim_start_matches("keyid:")
                .to_string()
        };
        (
            after("Subject Key Identifier"),
            after("Authority Key Identifier"),
        )
    };
    let root = ext("root-ca.pem");
    let int = ext("intermediate-ca.pem");
    assert!(root.contains("CA:TRUE") && int.contains("CA:TRUE"));
    let (r, i) = (ids(&root), ids(&int));
    assert!(r.0.len() > 40, "{root}");
    assert_eq!(r.0, r.1, "root AKID must equal its SKID: {root}");
    assert!(i.0.len() > 40 && i.0 != r.0, "{int}");
    assert_eq!(i.1, r.0, "intermediate AKID must be the root SKID: {int}");
    // A server's node-cleaner certificate is a client certificate of client-ca with
    // the user naming the node as CN, valid from now for the given days.
    let (crt, key) = ca.node_cleaner_for("pi5-master-2", 30).unwrap();
    let nc = tmp.path().join("nc");
    fs::create_dir_all(&nc).unwrap();
    fs::write(nc.join("node-cleaner.crt"), &crt).unwrap();
    fs::write(nc.join("node-cleaner.key"), &key).unwrap();
    fs::copy(dir.join("client-ca.crt"), nc.join("client-ca.crt")).unwrap();
    let out = openssl(
        &nc,
        &[
            "verify",
            "-CAfile",
            "client-ca.crt",
            "-purpose",
            "sslclient",
            "node-cleaner.crt",
        ],
    );
    assert!(String::from_utf8_lossy(&out).contains(": OK"));
    openssl(&nc, &["pkey", "-in", "node-cleaner.key", "-noout"]);
    let subj = String::from_utf8(openssl(
        &nc,
        &["x509", "-in", "node-cleaner.crt", "-noout", "-subject"],
    ))
    .unwrap();
    assert!(
        subj.contains(&format!("CN = {}", node_cleaner_user("pi5-master-2"))),
        "{subj}"
    );
    // -checkend: still valid in 29 days, expired in 31.
    let checkend = |days: u64| {
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-in", "node-cleaner.crt", "-checkend"])
            .arg((days * 86400).to_string())
            .current_dir(&nc)
            .status()
            .unwrap()
            .success()
    };
    assert!(checkend(29) && !checkend(31));
    assert!(
        !dir.join("node-cleaner.crt").exists(),
        "no shared identity in the CA"
    );
    // Valid from 2025-01-01, so a Pi whose clock lags the build machine still verifies it.
    for f in ["root-ca.pem", "intermediate-ca.pem", "server-ca.pem"] {
        let out =
            String::from_utf8(openssl(&dir, &["x509", "-in", f, "-noout", "-startdate"])).unwrap();
        assert_eq!(out.trim(), "notBefore=Jan  1 00:00:00 2025 GMT", "{f}");
    }
    // service.key is a private key openssl reads.
    openssl(&dir, &["pkey", "-in", "service.key", "-noout"]);

    // Reused, byte for byte.
    let again = ClusterCa::open_or_create(&secrets, "homelab").unwrap();
    assert_eq!(again.server_ca_bundle(), ca.server_ca_bundle());
    assert!(matches!(
        ClusterCa::create(&secrets, "homelab"),
        Err(PkiError::Invalid { .. })
    ));
    // Incomplete: a clear error, and nothing regenerated.
    fs::remove_file(dir.join("client-ca.key")).unwrap();
    let err = ClusterCa::open_or_create(&secrets, "homelab")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster CA incomplete, client-ca.key is missing; restore it from a backup"),
        "{err}"
    );
    assert!(!dir.join("client-ca.key").exists());
}

#[test]
fn token_hash_of_the_generated_bundle_is_the_der_of_its_root() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&tmp.path().join("s"), "homelab").unwrap();
    let want = der_sha256(ca.dir(), "root-ca.pem");
    assert_eq!(ca_hash(ca.server_ca_bundle().as_bytes()).unwrap(), want);
    assert_eq!(
        secure_token(ca.server_ca_bundle().as_bytes(), "s3cret").unwrap(),
        format!("K10{want}::server:s3cret")
    );
    let bundle = ca.server_ca_bundle().as_bytes();
    for (bad, why) in [
        ("", "is empty"),
        ("K10ab::server:x", "contains `::`"),
        ("a b", "whitespace"),
    ] {
        let err = secure_token(bundle, bad).unwrap_err().to_string();
        assert!(
            err.starts_with("token secret ") && err.contains(why),
            "{err}"
        );
        assert!(err.contains("not a whole token"), "{err}");
    }
}

fn openssl_ca(dir: &Path) {
    let cnf = "[v3_ca]\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid:always\nbasicConstraints = critical, CA:true\nkeyUsage = critical, digitalSignature, keyEncipherment, keyCertSign\n";
    fs::write(dir.join("ca.cnf"), cnf).unwrap();
    for k in ["root", "int", "other"] {
        openssl(
            dir,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                &format!("{k}.key"),
            ],
        );
    }
    for (k, cn) in [("root", "/CN=test-root"), ("other", "/CN=other-root")] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &format!("{k}.key"),
                "-subj",
                cn,
                "-days",
                "30",
                "-config",
                "ca.cnf",
                "-extensions",
                "v3_ca",
                "-out",
                &format!("{k}.pem"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "int.key",
            "-subj",
            "/CN=test-int",
            "-config",
            "ca.cnf",
            "-out",
            "int.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ca.cnf",
            "-extensions",
            "v3_ca",
            "-out",
            "int.pem",
        ],
    );
}

#[test]
fn token_hash_follows_k3s_rule_for_bundles_made_by_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    openssl_ca(d);
    let read = |f: &str| fs::read(d.join(f)).unwrap();
    // One self-signed certificate: sha256 of the PEM bytes as served.
    let single = read("root.pem");
    assert_eq!(
        ca_hash(&single).unwrap(),
        hex::encode(Sha256::digest(&single))
    );
    // intermediate + root: sha256 of the root's DER.
    let bundle = [read("int.pem"), read("root.pem")].concat();
    let want = der_sha256(d, "root.pem");
    assert_eq!(ca_hash(&bundle).unwrap(), want);
    assert_ne!(want, hex::encode(Sha256::digest(&bundle)));
    // Text around the PEM blocks (as in `openssl x509 -text` output) does not matter.
    let noisy = [
        b"# bundle\n".to_vec(),
        read("int.pem"),
        b"junk\n".to_vec(),
        read("root.pem"),
    ]
    .concat();
    assert_eq!(ca_hash(&noisy).unwrap(), want);
    // A bundle whose first certificate does not chain to the others: raw bytes.
    let unrelated = [read("int.pem"), read("other.pem")].concat();
    assert_eq!(
        ca_hash(&unrelated).unwrap(),
        hex::encode(Sha256::digest(&unrelated))
    );
    // Same for a second certificate that is the intermediate itself (not a root).
    let no_root = [read("int.pem"), read("int.pem")].concat();
    assert_eq!(
        ca_hash(&no_root).unwrap(),
        hex::encode(Sha256::digest(&no_root))
    );
    // No certificate at all is an error, like k3s.
    let err = ca_hash(b"not a certificate").unwrap_err().to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
}

#[test]
fn node_passwords_are_deterministic_hmacs() {
    let a = node_password("s3cret", "pi4-worker-1");
    assert_eq!(a, node_password("s3cret", "pi4-worker-1"));
    assert_ne!(a, node_password("s3cret", "pi4-worker-2"));
    assert_ne!(a, node_password("other", "pi4-worker-1"));
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("printf %s 'piimg-node-password:pi4-worker-1' | openssl dgst -sha256 -mac HMAC -macopt key:s3cret -r")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.split_whitespace().next(), Some(a.as_str()));
}

#[test]
fn each_card_gets_what_its_role_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&tmp.path().join("s"), "homelab").unwrap();
    let opts = HaOptions {
        addons: Addons {
            cert_manager: true,
            monitoring: true,
        },
        agent_token_secret: Some("ag3nt".into()),
        ..HaOptions::default()
    };
    let vip = Some("192.168.86.40");
    let boot = files_for_node(
        &plan("pi5-master-1", Role::Server, true, vip),
        &ca,
        "s3cret",
        &opts,
    )
    .unwrap();
    let paths =
        |v: &[piimg_contract::RootFile]| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
    let sp = paths(&boot.secret_files);
    for f in [
        "server-ca.crt",
        "server-ca.key",
        "client-ca.crt",
        "client-ca.key",
        "request-header-ca.crt",
        "request-header-ca.key",
        "etcd/peer-ca.crt",
        "etcd/peer-ca.key",
        "etcd/server-ca.crt",
        "etcd/server-ca.key",
        "service.key",
    ] {
        assert!(
            sp.contains(&format!("/var/lib/rancher/k3s/server/tls/{f}")),
            "{f}: {sp:?}"
        );
    }
    assert!(
        !boot
            .secret_files
            .iter()
            .any(|f| f.content == ca.file("root-ca.key").unwrap()
                || f.content == ca.file("intermediate-ca.key").unwrap())
    );
    assert!(boot.secret_files.iter().all(|f| f.mode == 0o600));
    assert!(boot.ha.first_bring_up && boot.ha.node_cleaner.is_some());
    assert_eq!(boot.ha.init_window_secs, 300);
    assert_eq!(boot.agent_token.as_deref(), Some("ag3nt"));
    assert_eq!(
        boot.ha.cluster_ca_pem.as_deref(),
        Some(ca.server_ca_bundle())
    );
    assert!(boot.token.starts_with(&format!(
        "K10{}::server:s3cret",
        boot.ha.cluster_ca_sha256.clone().unwrap()
    )));
    // A rebuilt bootstrap card (bring-up already issued, so the plan has it join):
    // no CA, may not initialise.
    let mut rebuilt_plan = plan("pi5-master-1", Role::Server, true, vip);
    rebuilt_plan.first_boot = FirstBootAction::JoinServers { via: vec![] };
    let rebuilt = files_for_node(&rebuilt_plan, &ca, "s3cret", &opts).unwrap();
    assert!(!rebuilt.ha.first_bring_up);
    assert_eq!(rebuilt.ha.init_window_secs, 0);
    // A single-server cluster's first card has no peer to wait for.
    let mut single = plan("pi5-master-1", Role::Server, true, vip);
    single.servers.truncate(1);
    let alone = files_for_node(&single, &ca, "s3cret", &opts).unwrap();
    assert!(alone.ha.first_bring_up);
    assert_eq!(alone.ha.init_window_secs, 0);
    assert!(
        !paths(&rebuilt.secret_files)
            .iter()
            .any(|p| p.contains("/server/tls/"))
    );
    // Other servers: node cleaner + identical manifests, no CA.
    let s2 = files_for_node(
        &plan("pi5-master-2", Role::Server, false, vip),
        &ca,
        "s3cret",
        &opts,
    )
    .unwrap();
    assert_eq!(
        paths(&s2.secret_files),
        [NODE_CLEANER_CERT, "/var/lib/piimg/node-cleaner.key"]
    );
    assert_eq!(s2.files, boot.files);
    assert_eq!(s2.token, boot.token);
    assert_eq!(s2.agent_token.as_deref(), Some("ag3nt"));
    // Each server its own identity.
    assert_ne!(
        s2.secret_files[0].content,
        boot.secret_files
            .iter()
            .find(|f| f.path == NODE_CLEANER_CERT)
            .unwrap()
            .content
    );
    let names = paths(&s2.files);
    assert_eq!(
        names,
        [
            "/var/lib/rancher/k3s/server/manifests/piimg-node-cleaner-rbac.yaml",
            "/var/lib/rancher/k3s/server/manifests/piimg-kube-vip-rbac.yaml",
            "/var/lib/rancher/k3s/server/manifests/piimg-kube-vip.yaml",
            "/var/lib/rancher/k3s/server/manifests/piimg-cert-manager.yaml",
            "/var/lib/rancher/k3s/server/manifests/piimg-kube-prometheus-stack.yaml",
        ]
    );
    // Agents: only token and node password.
    let a = files_for_node(
        &plan("pi4-worker-1", Role::Agent, false, vip),
        &ca,
        "s3cret",
        &opts,
    )
    .unwrap();
    assert!(a.secret_files.is_empty() && a.files.is_empty() && a.ha.node_cleaner.is_none());
    assert_eq!(a.node_password, node_password("s3cret", "pi4-worker-1"));
    // An agent carries the agent token, never the server token.
    assert_eq!(
        a.token,
        secure_agent_token(ca.server_ca_bundle().as_bytes(), "ag3nt").unwrap()
    );
    assert!(a.token.ends_with("::node:ag3nt") && !a.token.contains("s3cret"));
    assert_eq!(a.agent_token, None);
    // A cluster created before agent tokens: agents keep the server token.
    let old = files_for_node(
        &plan("pi4-worker-1", Role::Agent, false, vip),
        &ca,
        "s3cret",
        &HaOptions {
            agent_token_secret: None,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(old.token, boot.token);
    // Without a VIP there is no kube-vip.
    let novip = files_for_node(
        &plan("pi5-master-2", Role::Server, false, None),
        &ca,
        "s3cret",
        &HaOptions::default(),
    )
    .unwrap();
    assert_eq!(
        paths(&novip.files),
        ["/var/lib/rancher/k3s/server/manifests/piimg-node-cleaner-rbac.yaml"]
    );
}

fn docs(text: &str) -> Vec<serde_yaml_ng::Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde_yaml_ng::Value::deserialize(d).unwrap())
        .collect()
}

#[test]
fn each_servers_node_cleaner_may_only_get_and_delete_its_own_node() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&tmp.path().join("s"), "homelab").unwrap();
    let opts = HaOptions {
        addons: Addons {
            cert_manager: true,
            monitoring: true,
        },
        ..HaOptions::default()
    };
    let s = files_for_node(
        &plan("pi5-master-1", Role::Server, true, Some("192.168.86.40")),
        &ca,
        "x",
        &opts,
    )
    .unwrap();
    // Every manifest is valid YAML.
    let all: Vec<_> = s.files.iter().flat_map(|f| docs(&f.content)).collect();
    let list = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect()
    };
    for node in ["pi5-master-1", "pi5-master-2", "pi5-master-3"] {
        let user = node_cleaner_user(node);
        // Whatever binds this server's node-cleaner user...
        let bindings: Vec<_> = all
            .iter()
            .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
            .filter(|d| {
                d["subjects"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .any(|s| s["name"] == user.as_str())
            })
            .collect();
        assert_eq!(bindings.len(), 1, "{user}");
        let b = bindings[0];
        assert_eq!(b["subjects"].as_sequence().unwrap().len(), 1);
        assert_eq!(b["subjects"][0]["kind"], "User");
        assert_eq!(b["roleRef"]["kind"], "ClusterRole");
        let role_name = b["roleRef"]["name"].as_str().unwrap();
        // ...grants exactly get/delete on that one core Node, nothing else.
        let roles: Vec<_> = all
            .iter()
            .filter(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == role_name)
            .collect();
        assert_eq!(roles.len(), 1);
        let rules = roles[0]["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(list(&r["apiGroups"]), [""]);
        assert_eq!(list(&r["resources"]), ["nodes"]);
        assert_eq!(list(&r["resourceNames"]), [node]);
        let mut verbs = list(&r["verbs"]);
        verbs.sort();
        assert_eq!(verbs, ["delete", "get"]);
        assert!(r.get("nonResourceURLs").is_none());
        assert!(roles[0].get("aggregationRule").is_none());
    }
    // The role the old shared identity was bound to is emptied, and unbound.
    let legacy: Vec<_> = all
        .iter()
        .filter(|d| d["metadata"]["name"] == "piimg-node-cleaner")
        .collect();
    assert_eq!(legacy.len(), 1);
    assert_eq!(legacy[0]["kind"], "ClusterRole");
    assert!(legacy[0]["rules"].as_sequence().unwrap().is_empty());
    // HelmCharts are pinned and carry their values overlay; kube-vip runs ARP + leader election.
    let charts: Vec<_> = all.iter().filter(|d| d["kind"] == "HelmChart").collect();
    assert_eq!(charts.len(), 2);
    for c in &charts {
        let v = c["spec"]["version"].as_str().unwrap();
        assert!(
            !v.is_empty() && v.chars().next().unwrap().is_ascii_alphanumeric(),
            "{v}"
        );
        let values = docs(c["spec"]["valuesContent"].as_str().unwrap());
        assert!(values[0].as_mapping().is_some_and(|m| !m.is_empty()));
    }
    let ds = all.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let env = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap();
    let get = |k: &str| {
        env.iter()
            .find(|e| e["name"] == k)
            .map(|e| e["value"].as_str().unwrap().to_string())
    };
    assert_eq!(get("vip_arp").as_deref(), Some("true"));
    assert_eq!(get("vip_leaderelection").as_deref(), Some("true"));
    assert_eq!(get("cp_enable").as_deref(), Some("true"));
    assert_eq!(get("address").as_deref(), Some("192.168.86.40"));
    assert_eq!(get("vip_interface").as_deref(), Some("eth0"));
}

#[test]
fn a_broken_overlay_manifest_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(&tmp.path().join("s"), "homelab").unwrap();
    let overlay = tmp.path().join("overlay");
    fs::create_dir_all(overlay.join("manifests")).unwrap();
    fs::write(
        overlay.join("manifests/node-cleaner-rbac.yaml"),
        "name: {{no_such_value}}\n",
    )
    .unwrap();
    // The manifests are card templates: the profile's overlay replaces them.
    let mut p = plan("pi5-master-1", Role::Server, true, None);
    p.overlay_dir = Some(overlay.clone());
    let err = files_for_node(&p, &ca, "x", &HaOptions::default())
        .unwrap_err()
        .to_string();
    let file = overlay.join("manifests/node-cleaner-rbac.yaml");
    assert!(
        err.starts_with(&format!("server manifests: template {}: ", file.display()))
            && err.contains("no_such_value"),
        "{err}"
    );
    // A valid override replaces the built-in template file by file.
    fs::write(
        overlay.join("manifests/node-cleaner-rbac.yaml"),
        "# mine: {{user_prefix}}{{#each servers}} {{this}}{{/each}}\n",
    )
    .unwrap();
    let f = files_for_node(&p, &ca, "x", &HaOptions::default()).unwrap();
    assert_eq!(
        f.files[0].content,
        "# mine: system:piimg:node-cleaner: pi5-master-1 pi5-master-2 pi5-master-3\n"
    );
}
