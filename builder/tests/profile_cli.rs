//! `piimg init`, `validate` and `plan` as users run them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ED_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDaZHaCdoVEb1zwLI5CNGewvIXbUN372synbuJpT30X8";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn reference_text() -> String {
    std::fs::read_to_string(repo_root().join("profiles/homelab.toml")).unwrap()
}

/// The binary with a clean environment: its own HOME, no profile override.
fn piimg(cwd: &Path, home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_piimg"));
    c.current_dir(cwd)
        .env("HOME", home)
        .env_remove("PIIMG_PROFILE")
        .env_remove("PIIMG_GITHUB_KEYS_URL");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A scratch dir holding `profiles/homelab.toml` with `content`, and an empty HOME.
fn scratch(content: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles")).unwrap();
    std::fs::write(dir.path().join("profiles/homelab.toml"), content).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let root = dir.path().to_path_buf();
    (dir, root, home)
}

#[test]
fn validate_reference_profile_from_a_fresh_clone() {
    // Default path, relative to the current directory; HOME has no keys at all.
    let home = tempfile::tempdir().unwrap();
    let out = piimg(&repo_root(), home.path())
        .arg("validate")
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stdout)
            .contains("profiles/homelab.toml: ok — cluster homelab, 8 nodes (3 servers)")
    );
    assert!(text(&out.stdout).contains("3 warning(s)"));
    assert!(text(&out.stderr).contains("warning: nodes: embedded etcd on SD cards"));
    // The reference profile validates, and says its key file is missing.
    assert!(
        text(&out.stderr).contains(&format!(
            "warning: access.ssh_key_files[0]: cannot read {}/.ssh/id_ed25519.pub: No such file or directory (os error 2); build and flash refuse to run without it; `ssh-keygen -t ed25519` creates ~/.ssh/id_ed25519.pub; or list another key file, an inline key (ssh_keys) or github_users in [access]\n",
            home.path().display()
        )),
        "{}",
        text(&out.stderr)
    );
    // The same in JSON, where every warning goes: the document keeps its shape.
    let out = piimg(&repo_root(), home.path())
        .args(["--json", "validate"])
        .output()
        .unwrap();
    ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["errors"], serde_json::json!([]));
    assert_eq!(doc["warnings"][0]["field"], "access.ssh_key_files[0]");
    assert!(
        doc["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "cannot read {}/.ssh/id_ed25519.pub:",
                home.path().display()
            )),
        "{doc}"
    );
    // With the key in HOME, the warning is gone.
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::write(
        home.path().join(".ssh/id_ed25519.pub"),
        format!("{ED_KEY} me\n"),
    )
    .unwrap();
    let out = piimg(&repo_root(), home.path())
        .arg("validate")
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stdout).contains("2 warning(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains("ssh_key"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_of_the_reference_profile_without_a_key_warns_and_plans() {
    let home = tempfile::tempdir().unwrap();
    let warning = format!(
        "warning: access.ssh_key_files[0]: cannot read {}/.ssh/id_ed25519.pub: No such file or directory (os error 2); build and flash refuse to run without it;",
        home.path().display()
    );
    let out = piimg(&repo_root(), home.path())
        .arg("plan")
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains(&warning),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).starts_with("cluster homelab"),
        "{}",
        text(&out.stdout)
    );
    // --json: the same document as with a key, the warning on stderr with the others.
    let out = piimg(&repo_root(), home.path())
        .args(["--json", "plan"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains(&warning),
        "{}",
        text(&out.stderr)
    );
    let without: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::create_dir(home.path().join(".ssh")).unwrap();
    std::fs::write(
        home.path().join(".ssh/id_ed25519.pub"),
        format!("{ED_KEY} me\n"),
    )
    .unwrap();
    let out = piimg(&repo_root(), home.path())
        .args(["--json", "plan"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        !text(&out.stderr).contains("ssh_key"),
        "{}",
        text(&out.stderr)
    );
    let with: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(without, with);
}

#[test]
fn validate_reports_every_error_and_fails() {
    let bad = reference_text()
        .replacen("name = \"pi5-worker-1\"", "name = \"Bad_Name\"", 1)
        .replacen("192.168.86.34", "192.168.86.255", 1);
    let (_d, root, home) = scratch(&bad);
    let out = piimg(&root, &home)
        .args(["validate", "--profile", "profiles/homelab.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("error: nodes[3].name: \"Bad_Name\" is not a valid hostname"),
        "{err}"
    );
    assert!(err.contains("error: nodes[4] (pi5-worker-2).ip: 192.168.86.255 is the broadcast address of 192.168.86.0/24"), "{err}");
    assert!(
        err.contains("error: profiles/homelab.toml has 2 error(s)"),
        "{err}"
    );

    // The same as JSON, via PIIMG_PROFILE.
    let out = piimg(&root, &home)
        .env("PIIMG_PROFILE", root.join("profiles/homelab.toml"))
        .args(["--json", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"].as_array().unwrap().len(), 2);
    assert_eq!(doc["errors"][0]["field"], "nodes[3].name");
    // The key file missing from the empty HOME, the servers' etcd on SD cards, and
    // their snapshots only there (no [k3s.etcd_s3]).
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 3);
    assert_eq!(doc["warnings"][0]["field"], "access.ssh_key_files[0]");
    assert_eq!(doc["warnings"][1]["field"], "nodes");
    assert_eq!(doc["warnings"][2]["field"], "k3s.etcd_s3");
}

#[test]
fn unknown_key_error_points_at_the_line() {
    let bad = reference_text().replacen("admin_user", "admin_usr", 1);
    let line = bad
        .lines()
        .position(|l| l.starts_with("admin_usr"))
        .unwrap()
        + 1;
    let (_d, root, home) = scratch(&bad);
    let out = piimg(&root, &home).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: profiles/homelab.toml:{line}:1: unknown key `admin_usr`, did you mean `admin_user`? (valid: admin_user, password_login, ssh_keys, ssh_key_files, github_users, password_hash)"
        )
    );
}

#[test]
fn missing_default_profile_says_how_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = piimg(dir.path(), dir.path()).arg("plan").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no profile: no --profile"), "{err}");
    assert!(err.contains("piimg init"), "{err}");
}

#[test]
fn key_file_tilde_is_home() {
    // The reference profile lists ~/.ssh/id_ed25519.pub.
    let (_d, root, home) = scratch(&reference_text());
    let out = piimg(&root, &home).arg("validate").output().unwrap();
    ok(&out);
    assert!(
        text(&out.stderr).contains(&format!(
            "warning: access.ssh_key_files[0]: cannot read {}/.ssh/id_ed25519.pub:",
            home.display()
        )),
        "{}",
        text(&out.stderr)
    );
    // A key file that is there but holds no key is an error, not a warning.
    std::fs::create_dir(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519.pub"), "ssh-ed25519 ***\n").unwrap();
    let out = piimg(&root, &home).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "error: access.ssh_key_files[0]: {}/.ssh/id_ed25519.pub line 1: key data is not valid base64",
            home.display()
        )),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        home.join(".ssh/id_ed25519.pub"),
        format!("{ED_KEY} me@host\n"),
    )
    .unwrap();
    let out = piimg(&root, &home).arg("validate").output().unwrap();
    ok(&out);
    assert!(
        !text(&out.stderr).contains("ssh_key"),
        "{}",
        text(&out.stderr)
    );
}

/// A GitHub stand-in on 127.0.0.1 serving one user's keys.
fn keys_server(user: &'static str, body: String) -> String {
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
            let hit = request.split_whitespace().nth(1) == Some(&format!("/{user}.keys"));
            let (status, body) = if hit {
                ("200 OK", body.as_str())
            } else {
                ("404 Not Found", "Not Found")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn github_users_are_fetched_from_the_override_url() {
    let only_github = {
        let line = "ssh_key_files = [\"~/.ssh/id_ed25519.pub\"]";
        assert!(reference_text().contains(line));
        reference_text().replacen(line, "github_users = [\"octo-cat\"]", 1)
    };
    let (_d, root, home) = scratch(&only_github);
    // Offline validation accepts the user (keys are fetched at build time).
    ok(&piimg(&root, &home).arg("validate").output().unwrap());

    let base = keys_server("octo-cat", format!("{ED_KEY}\n"));
    let out = piimg(&root, &home)
        .env("PIIMG_GITHUB_KEYS_URL", &base)
        .args(["validate", "--fetch-keys"])
        .output()
        .unwrap();
    ok(&out);
    assert!(
        text(&out.stdout).contains("1 SSH key(s) resolved"),
        "{}",
        text(&out.stdout)
    );

    let other = only_github.replace("octo-cat", "nobody");
    std::fs::write(root.join("profiles/homelab.toml"), other).unwrap();
    let out = piimg(&root, &home)
        .env("PIIMG_GITHUB_KEYS_URL", &base)
        .args(["validate", "--fetch-keys"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!(
            "error: access: cannot fetch SSH keys of GitHub user `nobody` from {base}/nobody.keys: HTTP 404 Not Found"
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_json_lists_every_node_and_its_first_boot() {
    let (_d, root, home) = scratch(&reference_text());
    let out = piimg(&root, &home)
        .args(["plan", "--json"])
        .output()
        .unwrap();
    ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["cluster"], "homelab");
    assert_eq!(doc["bootstrap_issued"], false);
    let nodes = doc["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 8);
    let m1 = &nodes[0];
    assert_eq!(m1["name"], "pi5-master-1");
    assert_eq!(m1["ip"], "192.168.86.33");
    assert_eq!(m1["role"], "server");
    assert_eq!(m1["hardware"], "pi5-8gb");
    assert_eq!(m1["first_boot"]["action"], "init-cluster");
    assert_eq!(
        m1["first_boot_text"],
        "init cluster (cluster-init) if no other server answers within 300 s (one that does is joined)"
    );
    assert_eq!(doc["init_window_seconds"], 300);
    assert_eq!(doc["node_cleaner_days"], 365);
    assert_eq!(
        doc["worker_token"], "agent",
        "a new cluster gets an agent token"
    );
    assert_eq!(m1["reflash"]["action"], "join-servers");
    assert_eq!(
        m1["reflash"]["via"],
        serde_json::json!(["192.168.86.29", "192.168.86.30"])
    );
    let m2 = &nodes[1];
    assert_eq!(m2["first_boot"]["action"], "join-servers");
    assert_eq!(
        m2["first_boot"]["via"],
        serde_json::json!(["192.168.86.33", "192.168.86.30"])
    );
    let w = &nodes[7];
    assert_eq!(w["name"], "pi4-worker-3");
    assert_eq!(w["hardware"], "pi4-2gb");
    assert_eq!(w["first_boot"]["action"], "join-agent");
    assert_eq!(
        w["first_boot"]["via"],
        serde_json::json!(["192.168.86.33", "192.168.86.29", "192.168.86.30"])
    );
    let inits = nodes
        .iter()
        .filter(|n| n["first_boot"]["action"] == "init-cluster")
        .count();
    assert_eq!(inits, 1);

    // Planning is read-only: no secrets, no state.
    assert!(!root.join("profiles/homelab.secrets").exists());
    assert!(!root.join("profiles/homelab.state.toml").exists());
}

#[test]
fn plan_follows_the_recorded_cluster_state() {
    let (_d, root, home) = scratch(&reference_text());
    let path = root.join("profiles/homelab.toml");
    let mut s =
        piimg::profile::secrets::ClusterSecrets::open_or_create(&path, Default::default()).unwrap();
    s.mark_issued("pi5-master-1", true).unwrap();
    drop(s);
    // Even with the secrets gone, the committed state keeps the plan honest (and warns).
    std::fs::remove_dir_all(root.join("profiles/homelab.secrets")).unwrap();
    let out = piimg(&root, &home)
        .args(["--json", "plan"])
        .output()
        .unwrap();
    ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["bootstrap_issued"], true);
    assert_eq!(doc["secrets_present"], false);
    assert_eq!(doc["nodes"][0]["issued"], true);
    assert_eq!(doc["nodes"][0]["first_boot"]["action"], "join-servers");
    assert!(text(&out.stderr).contains("homelab.secrets is missing but the cluster exists"));

    let out = piimg(&root, &home).arg("plan").output().unwrap();
    ok(&out);
    let table = text(&out.stdout);
    assert!(
        table.contains("cluster brought up before: no card initialises"),
        "{table}"
    );
    assert!(!table.contains("init cluster"), "{table}");
}

#[test]
fn init_writes_a_valid_profile_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519.pub"), format!("{ED_KEY} me\n")).unwrap();
    let out = piimg(dir.path(), &home)
        .args([
            "init",
            "--profile",
            "lab/lab.toml",
            "--name",
            "lab",
            "--cidr",
            "10.20.0.0/24",
            "--servers",
            "3",
            "--agents",
            "2",
            "--agent-hardware",
            "pi4-2gb",
            "--vip",
            "10.20.0.5",
        ])
        .output()
        .unwrap();
    ok(&out);
    let written = std::fs::read_to_string(dir.path().join("lab/lab.toml")).unwrap();
    assert!(
        written.contains("ssh_key_files = [\"~/.ssh/id_ed25519.pub\"]"),
        "{written}"
    );
    let p = piimg::profile::parse(&written, Path::new("lab.toml")).unwrap();
    assert_eq!(p.cluster.name, "lab");
    assert_eq!(p.nodes.len(), 5);
    assert_eq!(p.nodes[3].name, "lab-agent-1");
    assert_eq!(p.nodes[3].hardware, "pi4-2gb");
    assert_eq!(p.network.gateway.to_string(), "10.20.0.1");
    ok(&piimg(dir.path(), &home)
        .args(["validate", "-p", "lab/lab.toml"])
        .output()
        .unwrap());

    // A second init refuses and leaves the file alone.
    std::fs::write(dir.path().join("lab/lab.toml"), "# mine\n").unwrap();
    let out = piimg(dir.path(), &home)
        .args(["init", "--profile", "lab/lab.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: lab/lab.toml already exists; not overwriting it (choose another --profile)"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("lab/lab.toml")).unwrap(),
        "# mine\n"
    );
    // No temp files left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("lab")).unwrap().count(),
        1
    );
}

#[test]
fn init_with_a_key_file_not_there_yet_writes_the_profile_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let out = piimg(dir.path(), dir.path())
        .args(["init", "-p", "lab.toml", "--ssh-key-file", "keys/me.pub"])
        .output()
        .unwrap();
    ok(&out);
    assert!(dir.path().join("lab.toml").is_file());
    assert!(
        text(&out.stderr).contains(
            "warning: access.ssh_key_files[0]: cannot read ./keys/me.pub: No such file or directory (os error 2); build and flash refuse to run without it;"
        ) && text(&out.stderr).contains("(edit lab.toml before building)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn init_refuses_options_that_make_an_invalid_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = piimg(dir.path(), dir.path())
        .args([
            "init",
            "--profile",
            "x.toml",
            "--servers",
            "2",
            "--github-user",
            "me",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("nodes: 2 servers with embedded etcd: an even count risks split brain"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("x.toml").exists());
}

#[test]
fn tilde_without_home_is_a_clear_error() {
    // The reference profile lists ~/.ssh/id_ed25519.pub.
    let (_d, root, home) = scratch(&reference_text());
    let out = piimg(&root, &home)
        .env_remove("HOME")
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error: access.ssh_key_files[0]: cannot expand `~` in ~/.ssh/id_ed25519.pub: HOME is not set"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn plan_shows_a_dhcp_node_without_an_address() {
    let profile = reference_text().replacen("ip = \"192.168.86.23\"\n", "dhcp = true\n", 1);
    let (_d, root, home) = scratch(&profile);
    let out = piimg(&root, &home)
        .args(["plan", "--wide", "--profile", "profiles/homelab.toml"])
        .output()
        .unwrap();
    ok(&out);
    let stdout = text(&out.stdout);
    let row = stdout
        .lines()
        .find(|l| l.starts_with("pi4-worker-3"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(row.split_whitespace().nth(1), Some("dhcp"), "{row}");
    assert!(!row.contains("192.168.86.23"), "{row}");
    let out = piimg(&root, &home)
        .args(["--json", "plan", "--profile", "profiles/homelab.toml"])
        .output()
        .unwrap();
    ok(&out);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "pi4-worker-3")
        .unwrap();
    assert!(node["ip"].is_null(), "{node}");
}
