//! A Raspberry Pi OS-shaped root tree and boot partition in a temp dir, with a card
//! as `piimg build` writes it. k3s and its installer are STAND-INS (shell scripts that
//! record how they were called); no test here runs real k3s.
#![allow(dead_code)]

use piimg_contract::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const HOOK: [&str; 3] = [
    "systemd.run=/boot/firmware/piimg/piimg-firstboot",
    "systemd.run_success_action=reboot",
    "systemd.unit=kernel-command-line.target",
];
pub const CMDLINE_BASE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=0ddba11e-02 rootfstype=ext4 fsck.repair=yes rootwait quiet cgroup_memory=1 cgroup_enable=memory";
pub const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly admin@laptop";
pub const TOKEN: &str = "K10abc::server:s3cret";
pub const KEYFILE: &str = "/etc/NetworkManager/system-connections/piimg-eth0.nmconnection";
pub const UNIT: &str = "[Unit]\nDescription=piimg first boot, phase 2\nWants=network-online.target\nAfter=network-online.target time-sync.target\n\n[Service]\nType=oneshot\nExecStart=/usr/local/sbin/piimg-firstboot\nRemainAfterExit=yes\n# A node still waiting for a peer when the agent's join timeout ends exits non-zero:\n# try again (systemd >= 245 allows on-failure for Type=oneshot; bookworm has 252).\nRestart=on-failure\nRestartSec=30\n\n[Install]\nWantedBy=multi-user.target\n";

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub boot: PathBuf,
    /// Where the stand-in installer and k3s record their calls (outside the root).
    pub log: PathBuf,
    /// A small file standing in for the agent binary to install.
    pub self_exe: PathBuf,
}

fn put(path: &Path, text: &str, mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn node_config(role: Role, bootstrap: bool, boot: BootHook) -> NodeConfig {
    NodeConfig {
        contract_version: CONTRACT_VERSION,
        cluster: "homelab".into(),
        node_name: if bootstrap { "pi5-master-1".into() } else { "pi4-worker-1".into() },
        domain: Some("lan".into()),
        role,
        bootstrap,
        servers: vec![ServerRef { name: "pi5-master-1".into(), ip: "127.0.0.1".parse().unwrap() }],
        vip: None,
        network: Network {
            interface: "eth0".into(),
            mac: None,
            address: "192.168.86.31".parse().unwrap(),
            prefix_len: 24,
            gateway: "192.168.86.1".parse().unwrap(),
            dns: vec!["192.168.86.1".parse().unwrap()],
            search: vec!["lan".into()],
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
            },
            RootFile {
                path: "/etc/ssh/sshd_config.d/50-piimg.conf".into(),
                mode: 0o644,
                content: "PasswordAuthentication no\nKbdInteractiveAuthentication no\n".into(),
            },
            RootFile { path: format!("/etc/systemd/system/{AGENT_UNIT}"), mode: 0o644, content: UNIT.into() },
        ],
        ha: Ha { first_bring_up: bootstrap, ..Ha::default() },
    }
}

pub fn bookworm_hook() -> BootHook {
    BootHook::SystemdRun {
        cmdline_args: HOOK.iter().map(|s| s.to_string()).collect(),
    }
}

impl Fixture {
    pub fn new(cfg: &NodeConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let boot = root.join("boot/firmware");
        let log = dir.path().join("standin.log");
        let self_exe = dir.path().join("agent-bin");
        put(
            &self_exe,
            "#!/bin/sh\n# stand-in for the agent binary\n",
            0o755,
        );
        let r = |p: &str| root.join(p);
        put(
            &r("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\npi:x:1000:1000:,,,:/home/pi:/bin/bash\n",
            0o644,
        );
        put(
            &r("etc/shadow"),
            "root:*:19000:0:99999:7:::\npi:$y$j9T$fakehash:19000:0:99999:7:::\n",
            0o640,
        );
        put(
            &r("etc/group"),
            "root:x:0:\nadm:x:4:pi\nsudo:x:27:pi\nvideo:x:44:pi\npi:x:1000:\n",
            0o644,
        );
        put(
            &r("etc/gshadow"),
            "root:*::\nadm:*::pi\nsudo:*::pi\nvideo:*::pi\npi:!::\n",
            0o640,
        );
        put(&r("etc/subuid"), "pi:100000:65536\n", 0o644);
        put(&r("etc/subgid"), "pi:100000:65536\n", 0o644);
        put(&r("etc/hostname"), "raspberrypi\n", 0o644);
        put(
            &r("etc/hosts"),
            "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n\n127.0.1.1\t\traspberrypi\n",
            0o644,
        );
        put(
            &r("etc/sudoers.d/010_pi-nopasswd"),
            "pi ALL=(ALL) NOPASSWD: ALL\n",
            0o440,
        );
        put(
            &r("etc/ssh/sshd_config.d/rename_user.conf"),
            "Banner /usr/share/userconf-pi/sshd_banner\n",
            0o644,
        );
        put(&r("home/pi/.bashrc"), "# bashrc\n", 0o644);
        for unit in ["ssh.service", "getty@.service", "userconfig.service"] {
            put(&r(&format!("lib/systemd/system/{unit}")), "[Unit]\n", 0o644);
        }
        fs::create_dir_all(r("etc/systemd/system/multi-user.target.wants")).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/userconfig.service",
            r("etc/systemd/system/multi-user.target.wants/userconfig.service"),
        )
        .unwrap();
        put(
            &r("proc/net/route"),
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0156A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n",
            0o644,
        );
        put(
            &r("sys/fs/cgroup/cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
            0o644,
        );
        put(&r("run/systemd/timesync/synchronized"), "", 0o644);
        // The card.
        let hook: Vec<&str> = match &cfg.boot {
            BootHook::SystemdRun { .. } => HOOK.to_vec(),
            BootHook::CloudInit { .. } => vec![],
        };
        put(
            &boot.join("cmdline.txt"),
            &format!("{CMDLINE_BASE} {}\n", hook.join(" ")).replace(" \n", "\n"),
            0o755,
        );
        put(&boot.join(NODE_CONFIG_FILE), &cfg.to_json(), 0o755);
        let secrets = CardSecrets {
            contract_version: CONTRACT_VERSION,
            token: TOKEN.into(),
            agent_token: None,
            node_password: Some("0123456789abcdef".into()),
            files: vec![],
        };
        put(&boot.join(SECRETS_FILE), &secrets.to_json(), 0o755);
        // The status slots, preallocated as `piimg build` does.
        fs::write(
            boot.join(status_slots::STATUS_SLOTS_FILE),
            vec![0u8; status_slots::SLOTS_FILE_SIZE],
        )
        .unwrap();
        let log_s = log.display();
        put(
            &boot.join("piimg/airgap/k3s-arm64"),
            &format!(
                "#!/bin/sh\n# STAND-IN for k3s: records its arguments, reports the node Ready\necho \"k3s $*\" >> {log_s}\necho True\n"
            ),
            0o755,
        );
        put(
            &boot.join("piimg/airgap/install.sh"),
            &format!(
                "#!/bin/sh\n# STAND-IN for k3s install.sh: records environment and arguments\n{{ echo \"installer args: $*\"; env | grep -E '^(INSTALL_K3S|K3S_)' | sort; }} >> {log_s}\n"
            ),
            0o755,
        );
        put(
            &boot.join("piimg/airgap/k3s-airgap-images-arm64.tar.zst"),
            "not really images",
            0o755,
        );
        Fixture {
            dir,
            root,
            boot,
            log,
            self_exe,
        }
    }

    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    pub fn read(&self, node_path: &str) -> String {
        fs::read_to_string(self.path(node_path)).unwrap_or_else(|e| panic!("{node_path}: {e}"))
    }

    pub fn mode(&self, node_path: &str) -> u32 {
        fs::metadata(self.path(node_path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    pub fn owner(&self, node_path: &str) -> (u32, u32) {
        let m = fs::metadata(self.path(node_path)).unwrap();
        (m.uid(), m.gid())
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_piimg-firstboot"));
        c.arg("--root")
            .arg(&self.root)
            .arg("--self")
            .arg(&self.self_exe);
        c.env_remove("JOURNAL_STREAM")
            .env_remove(piimg_firstboot::agent::CRASH_ENV);
        c.args([
            "--network-timeout",
            "2",
            "--clock-timeout",
            "1",
            "--join-timeout",
            "2",
            "--ready-timeout",
            "2",
        ]);
        c
    }

    pub fn run(&self, extra: &[&str]) -> Output {
        self.cmd().args(extra).output().unwrap()
    }

    /// Runs until provisioning is complete (at most `max` runs), panicking on failure.
    pub fn run_to_completion(&self, max: usize) {
        for _ in 0..max {
            let out = self.run(&[]);
            assert!(
                out.status.success(),
                "agent failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            if self.status().complete {
                return;
            }
        }
        panic!("not complete after {max} runs: {:?}", self.status());
    }

    pub fn status(&self) -> AgentStatus {
        card_status(&self.boot).expect("no valid status report on the card")
    }

    /// Every file, link and directory under the root (path → mode, owner, content or
    /// link target), minus the agent's own timestamped bookkeeping.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out.remove("/var/lib/piimg/state.json");
        out.remove("/boot/firmware/piimg/status.slots");
        out
    }
}

/// The newest valid report in the card's status slots under `boot`, if any.
pub fn card_status(boot: &Path) -> Option<AgentStatus> {
    let bytes = fs::read(boot.join(status_slots::STATUS_SLOTS_FILE)).ok()?;
    let slots = status_slots::read(&bytes);
    let newest = slots.newest()?;
    Some(AgentStatus::from_json(&String::from_utf8_lossy(&newest.payload)).unwrap())
}

fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let rel = format!("/{}", p.strip_prefix(base).unwrap().display());
        let m = fs::symlink_metadata(&p).unwrap();
        let head = format!(
            "{:o} {}:{}",
            m.permissions().mode() & 0o7777,
            m.uid(),
            m.gid()
        );
        if m.file_type().is_symlink() {
            out.insert(
                rel,
                format!("link -> {}", fs::read_link(&p).unwrap().display()),
            );
        } else if m.is_dir() {
            out.insert(rel.clone(), format!("dir {head}"));
            walk(base, &p, out);
        } else {
            out.insert(
                rel,
                format!(
                    "{head}\n{}",
                    String::from_utf8_lossy(&fs::read(&p).unwrap())
                ),
            );
        }
    }
}

/// The first user as each Raspberry Pi OS vintage's pi-gen leaves it (official image:
/// no FIRST_USER_PASS, no PUBKEY_SSH_FIRST_USER, no PASSWORDLESS_SUDO), laid over a
/// [`Fixture`]'s root. Mirrors the `[vintages.*]` tables of builder/src/upstream.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vintage {
    /// pi-gen bookworm: `adduser --disabled-password` (shell /bin/bash), sys-mods'
    /// 010_pi-nopasswd, userconfig.service enabled.
    Bookworm,
    /// pi-gen arm64 2025-10-01: as Bookworm, plus cloud-init having applied its
    /// default user `pi` (90-cloud-init-users) before the agent runs.
    Trixie2025,
    /// pi-gen arm64 since 2026-02-16: `adduser --disabled-login` (shell
    /// /usr/sbin/nologin), no 010_pi-nopasswd, userconfig.service enabled.
    Trixie2026,
}

impl Fixture {
    /// Rewrites the first user, its sudo rules and the wizard as `v` ships them.
    pub fn lay_out_vintage(&self, v: Vintage) {
        let shell = if v == Vintage::Trixie2026 {
            "/usr/sbin/nologin"
        } else {
            "/bin/bash"
        };
        put(
            &self.path("/etc/passwd"),
            &format!(
                "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\npi:x:1000:1000:,,,:/home/pi:{shell}\n"
            ),
            0o644,
        );
        // adduser without a password leaves useradd's locked '!' (written below).
        let nopasswd = self.path("/etc/sudoers.d/010_pi-nopasswd");
        if v == Vintage::Trixie2026 {
            fs::remove_file(&nopasswd).unwrap();
        }
        if v == Vintage::Trixie2025 {
            put(
                &self.path("/etc/sudoers.d/90-cloud-init-users"),
                "# Created by cloud-init v. 25.2 on Thu, 02 Oct 2025 10:00:00 +0000\n\n# User rules for pi\npi ALL=(ALL) NOPASSWD:ALL\n",
                0o440,
            );
        }
        put(
            &self.path("/usr/sbin/nologin"),
            "#!/bin/sh\nexit 1\n",
            0o755,
        );
        // What shadow-utils' pwck/grpck expect of a whole root: shells and homes
        // that exist, every account and group in the shadow files.
        put(
            &self.path("/bin/bash"),
            "#!/bin/sh\n# stand-in for bash\n",
            0o755,
        );
        fs::create_dir_all(self.path("/root")).unwrap();
        fs::create_dir_all(self.path("/run/sshd")).unwrap();
        put(
            &self.path("/etc/shadow"),
            "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\npi:!:19000:0:99999:7:::\n",
            0o640,
        );
        put(
            &self.path("/etc/group"),
            "root:x:0:\nadm:x:4:pi\nsudo:x:27:pi\nvideo:x:44:pi\nnogroup:x:65534:\npi:x:1000:\n",
            0o644,
        );
        put(
            &self.path("/etc/gshadow"),
            "root:*::\nadm:*::pi\nsudo:*::pi\nvideo:*::pi\nnogroup:*::\npi:!::\n",
            0o640,
        );
    }

    /// The passwd line of `user`, split into its seven fields.
    pub fn passwd_entry(&self, user: &str) -> Vec<String> {
        self.read("/etc/passwd")
            .lines()
            .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
            .find(|f| f[0] == user)
            .unwrap_or_else(|| panic!("{user} not in /etc/passwd:\n{}", self.read("/etc/passwd")))
    }

    /// The shadow password field of `user`.
    pub fn shadow_password(&self, user: &str) -> String {
        self.read("/etc/shadow")
            .lines()
            .find(|l| l.split(':').next() == Some(user))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or_else(|| panic!("{user} not in /etc/shadow"))
            .to_string()
    }
}
