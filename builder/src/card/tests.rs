use super::*;
use crate::plan::{Access, FirstBootAction, Hardware, NodeK3s};
use piimg_contract::Network;
use piimg_contract::Role;

pub(crate) fn plan() -> NodePlan {
    NodePlan {
        cluster: "homelab".into(),
        profile: "homelab".into(),
        name: "pi5-master-1".into(),
        domain: Some("lan".into()),
        role: Role::Server,
        bootstrap: true,
        first_boot: FirstBootAction::InitCluster,
        network: Network {
            interface: "eth0".into(),
            mac: None,
            address: Some("192.168.86.31".parse().unwrap()),
            prefix_len: 24,
            gateway: "192.168.86.1".parse().unwrap(),
            dns: vec!["192.168.86.1".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            search: vec!["lan".into()],
            wifi: None,
        },
        wifi_psk: None,
        hardware: Hardware {
            class: "pi5-8gb".into(),
            board: "pi5".into(),
            ram_mb: 8192,
            config_txt: vec!["kernel=kernel8.img".into()],
            config_txt_all: vec!["dtoverlay=disable-wifi".into()],
            kubelet_args: vec![],
        },
        access: Access {
            admin_user: "admin".into(),
            ssh_authorized_keys: vec![
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake admin@laptop".into(),
            ],
            password_login: false,
            password_hash: None,
        },
        k3s: NodeK3s {
            version: "v1.31.4+k3s1".into(),
            vip: Some("192.168.86.30".parse().unwrap()),
            tls_san: vec!["k8s.lan".into()],
            disable: vec!["servicelb".into()],
            etcd_snapshot_schedule: Some("0 */6 * * *".into()),
            etcd_snapshot_retention: Some(10),
            labels: [("piimg.io/class".to_string(), "pi5-8gb".to_string())].into(),
            taints: vec![],
            extra_args: vec![
                "flannel-backend=wireguard-native".into(),
                "kube-apiserver-arg=a=b".into(),
                "kube-apiserver-arg=c=d".into(),
            ],
            kubelet_args: vec!["system-reserved=memory=256Mi".into()],
            airgap_dir: None,
            etcd_s3: None,
        },
        servers: vec![
            ("pi5-master-1".into(), "192.168.86.31".parse().unwrap()),
            ("pi5-master-2".into(), "192.168.86.32".parse().unwrap()),
        ],
        overlay_dir: None,
        storage: Default::default(),
        customize: Default::default(),
    }
}

fn secrets() -> NodeSecrets {
    NodeSecrets {
        token: "K10abc::server:s3cret".into(),
        node_password: Some("00ff".into()),
        ..Default::default()
    }
}

fn os(fb: FirstBoot) -> Os {
    Os {
        codename: match fb {
            FirstBoot::SystemdRun => "bookworm".into(),
            FirstBoot::CloudInit => "trixie".into(),
        },
        first_boot: fb,
    }
}

fn card(fb: FirstBoot, t: u64) -> Card {
    render(
        &plan(),
        &secrets(),
        &NodeHa::default(),
        &os(fb),
        &Templates::builtin(),
        b"agent",
        RenderOptions { build_time: t },
    )
    .unwrap()
}

fn text(card: &Card, path: &str) -> String {
    match &card.files[path] {
        Content::Bytes(b) => String::from_utf8(b.clone()).unwrap(),
        Content::Host(p) => panic!("{path} is a host file {}", p.display()),
    }
}

#[test]
fn bookworm_card_has_the_hook_the_agent_removes_and_the_keyfile() {
    let c = card(FirstBoot::SystemdRun, 1_700_000_000);
    let BootHook::SystemdRun { cmdline_args } = &c.node_config.boot else {
        panic!("{:?}", c.node_config.boot)
    };
    assert_eq!(
        cmdline_args,
        &[
            "systemd.run=/boot/firmware/piimg/piimg-firstboot",
            "systemd.run_success_action=reboot",
            "systemd.unit=kernel-command-line.target",
        ]
    );
    let base = b"console=tty1 root=PARTUUID=0ddba11e-02 rootwait quiet\n";
    let once = c.cmdline.apply(base).unwrap();
    assert_eq!(
        once,
        "console=tty1 root=PARTUUID=0ddba11e-02 rootwait quiet cgroup_memory=1 cgroup_enable=memory systemd.run=/boot/firmware/piimg/piimg-firstboot systemd.run_success_action=reboot systemd.unit=kernel-command-line.target\n"
    );
    assert_eq!(c.cmdline.apply(once.as_bytes()).unwrap(), once);
    // That the agent's unhook removes exactly this hook: tests/integration (card_agent).
    let keyfile = c
        .node_config
        .files
        .iter()
        .find(|f| f.path == "/etc/NetworkManager/system-connections/piimg-eth0.nmconnection")
        .unwrap();
    assert_eq!(keyfile.mode, 0o600);
    assert!(
        keyfile
            .content
            .contains("address1=192.168.86.31/24,192.168.86.1\n")
    );
    assert!(keyfile.content.contains("dns=192.168.86.1;1.1.1.1;\n"));
    assert!(!c.files.contains_key("user-data"));
    let unit = c
        .node_config
        .files
        .iter()
        .find(|f| f.path == "/etc/systemd/system/piimg-firstboot.service")
        .unwrap();
    assert!(
        unit.content
            .contains("ExecStart=/usr/local/sbin/piimg-firstboot\n")
    );
    let sshd = c
        .node_config
        .files
        .iter()
        .find(|f| f.path == SSHD_DROP_IN)
        .unwrap();
    assert!(sshd.content.contains("PasswordAuthentication no\n"));
}

#[test]
fn trixie_card_has_cloud_init_files_and_a_matching_instance_id() {
    let c = card(FirstBoot::CloudInit, 1_700_000_000);
    let BootHook::CloudInit { instance_id } = &c.node_config.boot else {
        panic!("{:?}", c.node_config.boot)
    };
    assert!(
        instance_id.starts_with("piimg-pi5-master-1-"),
        "{instance_id}"
    );
    let meta = text(&c, "meta-data");
    assert!(
        meta.contains(&format!("instance-id: {instance_id}\n")),
        "{meta}"
    );
    let out = c
        .cmdline
        .apply(b"root=PARTUUID=1-02 rootwait resize ds=nocloud;i=rpi-imager-1\n")
        .unwrap();
    assert_eq!(
        out,
        format!(
            "root=PARTUUID=1-02 rootwait resize cgroup_memory=1 cgroup_enable=memory ds=nocloud;i={instance_id}\n"
        )
    );
    let ud = text(&c, "user-data");
    assert!(ud.starts_with("#cloud-config\n"), "{ud}");
    assert!(ud.contains("hostname: \"pi5-master-1\"\n"), "{ud}");
    assert!(
        ud.contains("- [\"/boot/firmware/piimg/piimg-firstboot\"]"),
        "{ud}"
    );
    let net = text(&c, "network-config");
    assert!(net.contains("- 192.168.86.31/24\n"), "{net}");
    assert!(net.contains("via: 192.168.86.1\n"), "{net}");
    // cloud-init renders the network on Trixie: no second keyfile from the agent.
    assert!(
        !c.node_config
            .files
            .iter()
            .any(|f| f.path.starts_with(NM_KEYFILE_DIR))
    );
}

#[test]
fn instance_id_is_reproducible_and_changes_with_the_build_time() {
    let a = card(FirstBoot::CloudInit, 1_700_000_000);
    let b = card(FirstBoot::CloudInit, 1_700_000_000);
    let c = card(FirstBoot::CloudInit, 1_700_000_001);
    assert_eq!(a.node_config, b.node_config);
    assert_eq!(a.files, b.files);
    assert_ne!(a.node_config.boot, c.node_config.boot);
}

#[test]
fn contract_files_parse_back_with_the_agents_parser() {
    let c = card(FirstBoot::SystemdRun, 1);
    let cfg = NodeConfig::from_json(&text(&c, piimg_contract::NODE_CONFIG_FILE)).unwrap();
    assert_eq!(cfg, c.node_config);
    let s = CardSecrets::from_json(&text(&c, piimg_contract::SECRETS_FILE)).unwrap();
    assert_eq!(s.token, "K10abc::server:s3cret");
    assert_eq!(c.files[AGENT_FILE], Content::Bytes(b"agent".to_vec()));
    // The status slots are preallocated and hold no report: the agent's writer fills
    // them in place.
    let slots = c.files[piimg_contract::status_slots::STATUS_SLOTS_FILE]
        .bytes()
        .unwrap();
    assert_eq!(slots.len(), piimg_contract::status_slots::SLOTS_FILE_SIZE);
    assert_eq!(
        piimg_contract::status_slots::read(&slots),
        piimg_contract::status_slots::SlotsRead::default()
    );
    // That the agent accepts the rendered k3s config: tests/integration (card_agent).
}

#[test]
fn k3s_config_is_yaml_with_the_nodes_settings() {
    let c = card(FirstBoot::SystemdRun, 1);
    let y = &c.node_config.k3s.config_yaml;
    assert!(y.contains("node-name: \"pi5-master-1\"\n"), "{y}");
    assert!(y.contains("node-ip: \"192.168.86.31\"\n"), "{y}");
    assert!(y.contains("  - \"192.168.86.30\"\n"), "VIP in tls-san: {y}");
    assert!(y.contains("etcd-snapshot-retention: 10\n"), "{y}");
    assert!(
        y.contains("node-label:\n  - \"piimg.io/class=pi5-8gb\"\n"),
        "{y}"
    );
    assert!(!y.lines().any(|l| l.starts_with("token")), "{y}");
    assert!(y.contains("flannel-backend: \"wireguard-native\"\n"), "{y}");
    assert!(
        y.contains("kube-apiserver-arg:\n  - \"a=b\"\n  - \"c=d\"\n"),
        "{y}"
    );
}

#[test]
fn config_txt_edit_comes_from_the_hardware_class() {
    let c = card(FirstBoot::SystemdRun, 1);
    assert_eq!(
        c.config_txt.sections,
        [
            ("pi5".to_string(), vec!["kernel=kernel8.img".to_string()]),
            (
                "all".to_string(),
                vec!["dtoverlay=disable-wifi".to_string()]
            ),
        ]
    );
}

#[test]
fn missing_airgap_binary_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("install.sh"), "#!/bin/sh\n").unwrap();
    let mut p = plan();
    p.k3s.airgap_dir = Some(dir.path().to_path_buf());
    let err = render(
        &p,
        &secrets(),
        &NodeHa::default(),
        &os(FirstBoot::SystemdRun),
        &Templates::builtin(),
        b"a",
        RenderOptions { build_time: 1 },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("k3s-arm64 is missing"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn airgap_files_go_to_the_card_and_into_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["k3s-arm64", "install.sh"] {
        std::fs::write(dir.path().join(f), f).unwrap();
    }
    let mut p = plan();
    p.k3s.airgap_dir = Some(dir.path().to_path_buf());
    let c = render(
        &p,
        &secrets(),
        &NodeHa::default(),
        &os(FirstBoot::SystemdRun),
        &Templates::builtin(),
        b"a",
        RenderOptions { build_time: 1 },
    )
    .unwrap();
    assert_eq!(
        c.files["piimg/airgap/k3s-arm64"],
        Content::Host(dir.path().join("k3s-arm64"))
    );
    let air = c.node_config.k3s.airgap.unwrap();
    assert_eq!(air.binary, "piimg/airgap/k3s-arm64");
    assert_eq!(air.images, None);
}

#[test]
fn overlay_extra_may_not_replace_managed_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    std::fs::write(dir.path().join("boot/user-data"), "#cloud-config\n").unwrap();
    let t = Templates::with_overlay(dir.path()).unwrap();
    let err = render(
        &plan(),
        &secrets(),
        &NodeHa::default(),
        &os(FirstBoot::CloudInit),
        &t,
        b"a",
        RenderOptions { build_time: 1 },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("\"user-data\""), "{err}");
    assert!(err.contains("piimg writes itself"), "{err}");
}

#[test]
fn overlay_override_changes_the_output_and_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("common")).unwrap();
    std::fs::write(
        dir.path().join("common/cmdline.txt.hbs"),
        "cgroup_memory=1 cgroup_enable=memory usbcore.autosuspend=-1\n",
    )
    .unwrap();
    let t = Templates::with_overlay(dir.path()).unwrap();
    let c = render(
        &plan(),
        &secrets(),
        &NodeHa::default(),
        &os(FirstBoot::SystemdRun),
        &t,
        b"a",
        RenderOptions { build_time: 1 },
    )
    .unwrap();
    assert!(
        c.cmdline
            .append
            .contains(&"usbcore.autosuspend=-1".to_string())
    );
    assert_ne!(
        c.template_hashes["common/cmdline.txt.hbs"],
        card(FirstBoot::SystemdRun, 1).template_hashes["common/cmdline.txt.hbs"]
    );
}
