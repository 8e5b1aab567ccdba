//! The agent binary against a temp root tree and boot dir: phase 1, phase 2, reruns,
//! dry runs and bad input. k3s and its installer are stand-ins (see piimg-test-support).

use piimg_contract::*;
use piimg_test_support::*;
use std::fs;

/// The agent binary under test.
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");

#[test]
fn phase1_lays_down_identity_and_hands_off() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    let out = f.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // NetworkManager keyfile and sshd drop-in from node.json files, with modes.
    assert_eq!(f.mode(KEYFILE), 0o600);
    assert!(
        f.read(KEYFILE)
            .contains("address1=192.168.86.31/24,192.168.86.1")
    );
    assert_eq!(
        f.read("/etc/ssh/sshd_config.d/50-piimg.conf"),
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    );
    // Hostname and exactly one 127.0.1.1 line.
    assert_eq!(f.read("/etc/hostname"), "pi5-master-1\n");
    let hosts = f.read("/etc/hosts");
    assert_eq!(
        hosts
            .lines()
            .filter(|l| l.starts_with("127.0.1.1"))
            .collect::<Vec<_>>(),
        ["127.0.1.1\tpi5-master-1.lan pi5-master-1"]
    );
    assert!(hosts.contains("127.0.0.1\tlocalhost"));
    // uid 1000 renamed like userconf-pi, password locked, home moved.
    assert!(
        f.read("/etc/passwd")
            .contains("admin:x:1000:1000:,,,:/home/admin:/bin/bash\n")
    );
    assert!(!f.read("/etc/passwd").contains("pi:"));
    assert!(f.read("/etc/shadow").contains("admin:!$y$j9T$fakehash:"));
    assert_eq!(f.mode("/etc/shadow"), 0o640);
    assert!(
        f.read("/etc/group").contains("admin:x:1000:\n")
            && f.read("/etc/group").contains("sudo:x:27:admin\n")
    );
    assert!(f.read("/etc/gshadow").contains("sudo:*::admin\n"));
    assert_eq!(f.read("/etc/subuid"), "admin:100000:65536\n");
    assert_eq!(
        f.read("/etc/sudoers.d/010_pi-nopasswd"),
        "admin ALL=(ALL) NOPASSWD: ALL\n"
    );
    assert!(f.path("/home/admin/.bashrc").exists() && !f.path("/home/pi").exists());
    assert!(!f.path("/etc/ssh/sshd_config.d/rename_user.conf").exists());
    assert!(
        fs::symlink_metadata(
            f.path("/etc/systemd/system/multi-user.target.wants/userconfig.service")
        )
        .is_err()
    );
    assert_eq!(
        fs::read_link(f.path("/etc/systemd/system/getty.target.wants/getty@tty1.service"))
            .unwrap()
            .to_str(),
        Some("/lib/systemd/system/getty@.service")
    );
    // authorized_keys 0600 in a 0700 dir, owned by the admin.
    assert_eq!(
        f.read("/home/admin/.ssh/authorized_keys"),
        format!("{KEY}\n")
    );
    assert_eq!(f.mode("/home/admin/.ssh/authorized_keys"), 0o600);
    assert_eq!(f.mode("/home/admin/.ssh"), 0o700);
    assert_eq!(f.owner("/home/admin/.ssh/authorized_keys"), (1000, 1000));
    // ssh enabled like `systemctl enable ssh`.
    assert_eq!(
        fs::read_link(f.path("/etc/systemd/system/multi-user.target.wants/ssh.service"))
            .unwrap()
            .to_str(),
        Some("/lib/systemd/system/ssh.service")
    );
    assert_eq!(
        fs::read_link(f.path("/etc/systemd/system/sshd.service"))
            .unwrap()
            .to_str(),
        Some("/lib/systemd/system/ssh.service")
    );
    // Agent installed and its unit enabled.
    assert_eq!(
        fs::read(f.path(AGENT_INSTALL_PATH)).unwrap(),
        fs::read(&f.self_exe).unwrap()
    );
    assert_eq!(f.mode(AGENT_INSTALL_PATH), 0o755);
    assert_eq!(f.read("/etc/systemd/system/piimg-firstboot.service"), UNIT);
    assert_eq!(
        fs::read_link(
            f.path("/etc/systemd/system/multi-user.target.wants/piimg-firstboot.service")
        )
        .unwrap()
        .to_str(),
        Some("/etc/systemd/system/piimg-firstboot.service")
    );
    // cmdline.txt: one line, hook gone, every other argument (cgroup flags too) kept.
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        format!("{CMDLINE_BASE}\n")
    );
    // Secrets moved off the card; node password pre-seeded.
    assert!(!f.boot.join(SECRETS_FILE).exists());
    assert_eq!(f.mode("/var/lib/piimg/secrets.json"), 0o600);
    assert_eq!(f.mode("/var/lib/piimg"), 0o700);
    assert!(f.read("/var/lib/piimg/secrets.json").contains(TOKEN));
    assert_eq!(f.read("/etc/rancher/node/password"), "0123456789abcdef\n");
    assert_eq!(f.mode("/etc/rancher/node/password"), 0o600);
    // Status on the card; phase 2 not started.
    let st = f.status();
    assert_eq!(
        (st.step.as_str(), st.result, st.complete),
        ("handoff", StepResult::Ok, false)
    );
    assert_eq!(st.steps.len(), 13); // with locale, user-files, boot-device and sd-wear
    assert!(!f.path("/etc/rancher/k3s/config.yaml").exists());
}

#[test]
fn phase2_installs_k3s_from_the_card_and_disables_itself() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    assert!(f.run(&[]).status.success());
    // A K3S_ variable in the environment must not reach the installer.
    let out = f.cmd().env("K3S_TOKEN", "leaked").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let cfg = f.read("/etc/rancher/k3s/config.yaml");
    assert_eq!(f.mode("/etc/rancher/k3s/config.yaml"), 0o600);
    assert_eq!(
        cfg,
        format!(
            "node-name: pi5-master-1\nnode-ip: 192.168.86.31\ntls-san:\n  - 192.168.86.31\n# added by piimg-firstboot\ntoken: \"{TOKEN}\"\ncluster-init: true\n"
        )
    );
    assert_eq!(
        f.read("/usr/local/bin/k3s"),
        fs::read_to_string(f.boot.join("piimg/airgap/k3s-arm64")).unwrap()
    );
    assert_eq!(f.mode("/usr/local/bin/k3s"), 0o755);
    assert!(
        f.path("/var/lib/rancher/k3s/agent/images/k3s-airgap-images-arm64.tar.zst")
            .exists()
    );
    let log = fs::read_to_string(&f.log).unwrap();
    let installer: Vec<&str> = log.lines().filter(|l| !l.starts_with("k3s ")).collect();
    assert_eq!(
        installer,
        [
            "installer args: ",
            "INSTALL_K3S_EXEC=server",
            "INSTALL_K3S_SKIP_DOWNLOAD=true",
            "INSTALL_K3S_SKIP_START=true",
            "INSTALL_K3S_VERSION=v1.31.4+k3s1",
        ],
        "{log}"
    );
    let kubectl = format!(
        "k3s kubectl --kubeconfig {} get node pi5-master-1 -o jsonpath={{.status.conditions[?(@.type==\"Ready\")].status}}",
        f.path("/etc/rancher/k3s/k3s.yaml").display()
    );
    assert!(log.contains(&kubectl), "{log}");
    // Scrubbed and disabled; status complete.
    assert!(!f.path("/var/lib/piimg/secrets.json").exists());
    assert!(
        fs::symlink_metadata(
            f.path("/etc/systemd/system/multi-user.target.wants/piimg-firstboot.service")
        )
        .is_err()
    );
    let st = f.status();
    assert!(
        st.complete && st.step == "complete" && st.result == StepResult::Ok,
        "{st:?}"
    );
    assert_eq!(st.steps.len(), 26);
    // Another boot: nothing runs, nothing changes.
    let before = f.snapshot();
    let out = f.run(&[]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("already complete"));
    assert_eq!(f.snapshot(), before);
}

#[test]
fn agent_role_joins_the_bootstrap_server_and_checks_with_the_kubelet_kubeconfig() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Agent, false, bookworm_hook()),
    );
    // Stand-in for the bootstrap server's https://IP:6443/ping: openssl s_server -WWW
    // serving a file named `ping` on loopback with a throwaway self-signed cert.
    let server = standin::PingServer::start(&f.dir.path().join("srv"));
    let port = server.port;
    assert!(f.run(&[]).status.success());
    let out = f.run(&["--api-port", &port.to_string(), "--join-timeout", "20"]);
    drop(server);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg = f.read("/etc/rancher/k3s/config.yaml");
    assert!(
        cfg.ends_with(&format!(
            "token: \"{TOKEN}\"\nserver: \"https://127.0.0.1:{port}\"\n"
        )),
        "{cfg}"
    );
    let log = fs::read_to_string(&f.log).unwrap();
    assert!(log.contains("INSTALL_K3S_EXEC=agent"), "{log}");
    assert!(
        log.contains("/var/lib/rancher/k3s/agent/kubelet.kubeconfig get node pi4-worker-1"),
        "{log}"
    );
}

#[test]
fn unreachable_join_target_is_named_in_the_error_and_the_status() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Agent, false, bookworm_hook()),
    );
    assert!(f.run(&[]).status.success());
    let port = net::free_port(&["127.0.0.1"]);
    let out = f.run(&["--api-port", &port.to_string(), "--join-timeout", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let want = [
        "no healthy server to join after 1 s".to_string(),
        format!("no route to 127.0.0.1:{port} ("),
    ];
    let st = f.status();
    assert_eq!((st.step.as_str(), st.result), ("join", StepResult::Error));
    for w in &want {
        assert!(stderr(&out).contains(w), "{}", stderr(&out));
        assert!(st.message.contains(w), "{}", st.message);
    }
}

#[test]
fn missing_memory_cgroup_fails_with_the_k3s_hint_then_resumes() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    fs::write(
        f.path("/sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu io pids\n",
    )
    .unwrap();
    assert!(f.run(&[]).status.success());
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("\"cgroup_memory=1 cgroup_enable=memory\" to your linux cmdline"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        (f.status().step.as_str(), f.status().result),
        ("cgroup", StepResult::Error)
    );
    fs::write(
        f.path("/sys/fs/cgroup/cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    f.run_to_completion(1);
}

#[test]
fn trixie_cloud_init_card_keeps_cmdline_and_does_not_reboot() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, cloud_init_hook()),
    );
    let cmdline = fs::read_to_string(f.boot.join("cmdline.txt")).unwrap();
    f.run_to_completion(2);
    assert_eq!(
        fs::read_to_string(f.boot.join("cmdline.txt")).unwrap(),
        cmdline
    );
    assert!(
        f.status()
            .steps
            .iter()
            .any(|s| s.name == "unhook" && s.message.contains("cloud-init"))
    );
}

#[test]
fn a_trixie_card_marks_phase1_done_only_once_handoff_is_saved() {
    // The card's user-data re-arms cloud-init's runcmd on every boot until this file
    // exists: it must not appear before phase 1 has really handed off.
    use piimg_contract::PHASE1_DONE_FILE;
    use piimg_firstboot::agent::{CRASH_ENV, CRASH_EXIT};
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, cloud_init_hook()),
    );
    for cut in ["user:after", "handoff:unsaved"] {
        let out = f.cmd().env(CRASH_ENV, cut).output().unwrap();
        assert_eq!(out.status.code(), Some(CRASH_EXIT), "{cut}");
        assert!(
            !f.path(PHASE1_DONE_FILE).exists(),
            "{PHASE1_DONE_FILE} written before the handoff was saved ({cut})"
        );
    }
    let out = f.run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(f.status().steps.iter().any(|s| s.name == "handoff"));
    assert!(f.read(PHASE1_DONE_FILE).starts_with("phase 1 handed off"));
    // A Bookworm card (its cmdline.txt hook is removed instead) gets no such file.
    let b = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    b.run(&[]);
    assert!(b.status().steps.iter().any(|s| s.name == "handoff"));
    assert!(!b.path(PHASE1_DONE_FILE).exists());
}

#[test]
fn empty_ssh_host_keys_left_by_a_power_cut_are_made_again() {
    // cloud-init made the keys seconds before the plug was pulled: the files exist,
    // their data never reached the card, and cloud-init makes keys once per instance.
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, cloud_init_hook()),
    );
    for kind in ["rsa", "ecdsa", "ed25519"] {
        let key = f.path(&format!("/etc/ssh/ssh_host_{kind}_key"));
        fs::create_dir_all(key.parent().unwrap()).unwrap();
        fs::write(&key, "").unwrap();
        fs::write(key.with_extension("pub"), "").unwrap();
    }
    let out = f.run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = f.status();
    let msg = &st.steps.iter().find(|s| s.name == "ssh").unwrap().message;
    assert!(
        msg.contains("host key(s) ssh_host_ecdsa_key, ssh_host_ed25519_key, ssh_host_rsa_key were empty or damaged"),
        "{msg}"
    );
    for kind in ["rsa", "ecdsa", "ed25519"] {
        let key = f.path(&format!("/etc/ssh/ssh_host_{kind}_key"));
        let o = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{kind}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let public = fs::read_to_string(key.with_extension("pub")).unwrap();
        assert!(
            public.starts_with(
                &String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            "{kind}: {public}"
        );
    }
    // Good keys are left alone.
    let before = fs::read(f.path("/etc/ssh/ssh_host_ed25519_key")).unwrap();
    let g = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, cloud_init_hook()),
    );
    fs::create_dir_all(g.path("/etc/ssh")).unwrap();
    fs::write(g.path("/etc/ssh/ssh_host_ed25519_key"), &before).unwrap();
    g.run(&[]);
    assert_eq!(
        fs::read(g.path("/etc/ssh/ssh_host_ed25519_key")).unwrap(),
        before
    );
    let st = g.status();
    let msg = &st.steps.iter().find(|s| s.name == "ssh").unwrap().message;
    assert!(!msg.contains("host key"), "{msg}");
}

#[test]
fn dry_run_prints_actions_and_changes_nothing() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    let before = f.snapshot();
    let out = f.run(&["--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("would write {KEYFILE} (mode 0600,")),
        "{text}"
    );
    assert!(
        text.contains("would zero and delete card piimg/secrets.json"),
        "{text}"
    );
    assert!(text.contains("would write card cmdline.txt"), "{text}");
    assert_eq!(f.snapshot(), before);
    assert!(card_status(&f.boot).is_none());
    let out = f.run(&["--dry-run", "--phase", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would run INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION=v1.31.4+k3s1 INSTALL_K3S_EXEC=server INSTALL_K3S_SKIP_START=true sh "), "{text}");
    assert_eq!(f.snapshot(), before);
}

#[test]
fn a_newer_contract_is_refused_with_a_clear_error() {
    let mut cfg = node_config(Role::Server, true, bookworm_hook());
    cfg.contract_version = CONTRACT_VERSION + 1;
    let f = Fixture::new(AGENT.as_ref(), &cfg);
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "piimg/node.json: card contract version {}, this agent speaks {CONTRACT_VERSION}; rebuild the card",
            CONTRACT_VERSION + 1
        )),
        "{}",
        stderr(&out)
    );
    let out = f.run(&["--phase", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--phase: \"3\" is not 1 or 2"));
}

#[test]
fn a_fresh_root_without_uid_1000_gets_a_new_admin_user() {
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    fs::write(f.path("/etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    fs::write(f.path("/etc/group"), "root:x:0:\nsudo:x:27:\n").unwrap();
    fs::create_dir_all(f.path("/etc/skel")).unwrap();
    fs::write(f.path("/etc/skel/.profile"), "# profile\n").unwrap();
    assert!(f.run(&[]).status.success());
    assert!(f.run(&[]).status.success());
    assert_eq!(
        f.read("/etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000:,,,:/home/admin:/bin/bash\n"
    );
    assert_eq!(
        f.read("/etc/group"),
        "root:x:0:\nsudo:x:27:admin\nadmin:x:1000:\n"
    );
    assert!(
        f.read("/etc/shadow")
            .lines()
            .any(|l| l.starts_with("admin:!:"))
    );
    assert_eq!(f.read("/home/admin/.profile"), "# profile\n");
    assert_eq!(f.owner("/home/admin/.profile"), (1000, 1000));
}

#[test]
fn the_status_command_shows_the_newest_valid_slot_and_names_a_torn_one() {
    use piimg_contract::status_slots::{self, HEADER_SIZE, SLOT_SIZE, STATUS_SLOTS_FILE};
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    let out = f.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = f.boot.join(STATUS_SLOTS_FILE);
    let bytes = fs::read(&path).unwrap();
    assert_eq!(
        bytes.len(),
        status_slots::SLOTS_FILE_SIZE,
        "written in place"
    );
    let slots = status_slots::read(&bytes);
    assert!(slots.problems.is_empty(), "{:?}", slots.problems);
    let (newest, older) = (&slots.valid[0], &slots.valid[1]);
    assert_eq!(newest.sequence, older.sequence + 1);
    let shown = f.run(&["status"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.ends_with(&*String::from_utf8_lossy(&newest.payload)),
        "{text}"
    );

    // A cut in the middle of the newest write: its payload is half old, half new.
    let mut torn = bytes.clone();
    let at = newest.slot * SLOT_SIZE + HEADER_SIZE + 10;
    torn[at..at + 8].copy_from_slice(b"XXXXXXXX");
    fs::write(&path, &torn).unwrap();
    let shown = f.run(&["status"]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.ends_with(&*String::from_utf8_lossy(&older.payload)),
        "{text}"
    );
    assert!(
        stderr(&shown).contains(&format!("write {} is torn", newest.sequence)),
        "{}",
        stderr(&shown)
    );
}
