//! Test cards: the node configuration and secrets `piimg build` would put on a card
//! for the reference cluster's bootstrap server or a worker, built in one place so
//! no test file copies a `NodeConfig` literal.

use piimg_contract::*;

/// The `systemd.run=` hook the builder appends to cmdline.txt on Bookworm.
pub const HOOK: [&str; 3] = [
    "systemd.run=/boot/firmware/piimg/piimg-firstboot",
    "systemd.run_success_action=reboot",
    "systemd.unit=kernel-command-line.target",
];
/// cmdline.txt as Raspberry Pi OS ships it, with piimg's cgroup flags.
pub const CMDLINE_BASE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=0ddba11e-02 rootfstype=ext4 fsck.repair=yes rootwait quiet cgroup_memory=1 cgroup_enable=memory";
/// The admin's (fake) SSH key.
pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly admin@laptop";
/// The (fake) join token on test cards.
pub const TOKEN: &str = "K10abc::server:s3cret";
/// The NetworkManager keyfile the builder renders.
pub const KEYFILE: &str = "/etc/NetworkManager/system-connections/piimg-eth0.nmconnection";
/// The phase-2 unit the builder renders.
pub const UNIT: &str = "[Unit]\nDescription=piimg first boot, phase 2\nWants=network-online.target\nAfter=network-online.target time-sync.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/piimg-firstboot\nRemainAfterExit=yes\n# A node still waiting for a peer when the agent's join timeout ends exits non-zero:\n# try again (systemd >= 245 allows on-failure for Type=oneshot; bookworm has 252).\nRestart=on-failure\nRestartSec=30\n\n[Install]\nWantedBy=multi-user.target\n";

/// The node password on test cards.
pub const NODE_PASSWORD: &str = "0123456789abcdef";

/// The card of the reference cluster's bootstrap server (`bootstrap`) or a worker,
/// one server (`pi5-master-1` on 127.0.0.1), airgap k3s on the card.
pub fn node_config(role: Role, bootstrap: bool, boot: BootHook) -> NodeConfig {
    NodeConfig {
        contract_version: CONTRACT_VERSION,
        cluster: "homelab".into(),
        node_name: if bootstrap { "pi5-master-1".into() } else { "pi4-worker-1".into() },
        domain: Some("lan".into()),
        role,
        bootstrap,
        servers: vec![ServerRef { name: "pi5-master-1".into(), ip: "127.0.0.1".parse().expect("literal address") }],
        vip: None,
        network: Network {
            interface: "eth0".into(),
            mac: None,
            address: Some("192.168.86.31".parse().expect("literal address")),
            prefix_len: 24,
            gateway: "192.168.86.1".parse().expect("literal address"),
            dns: vec!["192.168.86.1".parse().expect("literal address")],
            search: vec!["lan".into()],
            wifi: None,
        },
        admin: Admin { user: "admin".into(), ssh_authorized_keys: vec![KEY.into()], password_login: false },
        k3s: K3s {
            version: "v1.31.4+k3s1".into(),
            config_yaml: "node-name: pi5-master-1\nnode-ip: 192.168.86.31\ntls-san:\n  - 192.168.86.31\n".into(),
            airgap: Some(Airgap {
                binary: "piimg/airgap/k3s-arm64".into(),
                install_script: "piimg/airgap/install.sh".into(),
                images: Some("piimg/airgap/k3s-airgap-images-arm64.tar.zst".into()),
            }),
        },
        boot,
        files: vec![
            RootFile {
                path: KEYFILE.into(),
                mode: 0o600,
                content: "[connection]\nid=piimg-eth0\ntype=ethernet\ninterface-name=eth0\n\n[ipv4]\nmethod=manual\naddress1=192.168.86.31/24,192.168.86.1\ndns=192.168.86.1;\n".into(),
                owner: None,
            },
            RootFile {
                path: "/etc/ssh/sshd_config.d/50-piimg.conf".into(),
                mode: 0o644,
                content: "PasswordAuthentication no\nKbdInteractiveAuthentication no\n".into(),
                owner: None,
            },
            RootFile { path: format!("/etc/systemd/system/{AGENT_UNIT}"), mode: 0o644, content: UNIT.into(), owner: None },
        ],
        ha: Ha { first_bring_up: bootstrap, ..Ha::default() },
        storage: Default::default(),
        customize: Default::default(),
    }
}

/// The Bookworm boot hook ([`HOOK`] in cmdline.txt).
pub fn bookworm_hook() -> BootHook {
    BootHook::SystemdRun {
        cmdline_args: HOOK.iter().map(|s| s.to_string()).collect(),
    }
}

/// The Trixie boot hook (cloud-init NoCloud).
pub fn cloud_init_hook() -> BootHook {
    BootHook::CloudInit {
        instance_id: "piimg-1".into(),
    }
}

/// The card's secrets: [`TOKEN`], [`NODE_PASSWORD`], no agent token, no files.
pub fn card_secrets() -> CardSecrets {
    CardSecrets {
        contract_version: CONTRACT_VERSION,
        token: TOKEN.into(),
        agent_token: None,
        node_password: Some(NODE_PASSWORD.into()),
        files: vec![],
        password_hash: None,
    }
}

/// Server references for `(name, ip)` pairs.
pub fn server_refs(servers: &[(&str, &str)]) -> Vec<ServerRef> {
    servers
        .iter()
        .map(|(name, ip)| ServerRef {
            name: (*name).into(),
            ip: ip.parse().expect("literal address"),
        })
        .collect()
}
