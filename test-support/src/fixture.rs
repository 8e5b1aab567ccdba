//! A Raspberry Pi OS-shaped root tree and boot partition in a temp dir, with a card
//! as `piimg build` writes it, and the agent binary under test run against it. k3s
//! and its installer are STAND-INS (shell scripts that record how they were called);
//! nothing here runs real k3s.

use crate::files::put;
use crate::node::{CMDLINE_BASE, HOOK, card_secrets};
use crate::standin;
use piimg_contract::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A node's root tree and boot partition in a temp dir, and the agent binary that
/// provisions it.
pub struct Fixture {
    /// The temp dir holding everything (removed on drop).
    pub dir: tempfile::TempDir,
    /// The node's root filesystem (`--root`).
    pub root: PathBuf,
    /// Its boot partition (`<root>/boot/firmware`).
    pub boot: PathBuf,
    /// The agent binary [`Fixture::cmd`] runs.
    pub agent: PathBuf,
    /// Where the stand-in installer and k3s record their calls (outside the root).
    pub log: PathBuf,
    /// A small file standing in for the agent binary to install.
    pub self_exe: PathBuf,
}

impl Fixture {
    /// A Raspberry Pi OS-shaped root (first user `pi`, userconf-pi's wizard enabled,
    /// a default route, the memory cgroup, a synchronised clock) with `cfg`'s card,
    /// [`card_secrets`] and STAND-IN airgap k3s files on its boot partition; `agent`
    /// is the agent binary to run against it.
    pub fn new(agent: &Path, cfg: &NodeConfig) -> Fixture {
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
        put(&boot.join(SECRETS_FILE), &card_secrets().to_json(), 0o755);
        // The status slots, preallocated as `piimg build` does.
        fs::write(
            boot.join(status_slots::STATUS_SLOTS_FILE),
            vec![0u8; status_slots::SLOTS_FILE_SIZE],
        )
        .unwrap();
        standin::airgap_k3s(&boot, &log);
        Fixture {
            dir,
            root,
            boot,
            agent: agent.to_path_buf(),
            log,
            self_exe,
        }
    }

    /// A node path resolved under the root.
    pub fn path(&self, node_path: &str) -> PathBuf {
        self.root.join(node_path.trim_start_matches('/'))
    }

    /// A node file's text (panics naming the file when it cannot be read).
    pub fn read(&self, node_path: &str) -> String {
        fs::read_to_string(self.path(node_path)).unwrap_or_else(|e| panic!("{node_path}: {e}"))
    }

    /// A node file's permission bits.
    pub fn mode(&self, node_path: &str) -> u32 {
        fs::metadata(self.path(node_path))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    /// A node file's owner and group.
    pub fn owner(&self, node_path: &str) -> (u32, u32) {
        let m = fs::metadata(self.path(node_path)).unwrap();
        (m.uid(), m.gid())
    }

    /// The agent on this root with short bounds, outside the journal and without
    /// inherited test hooks (`PIIMG_FIRSTBOOT_*`).
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.agent);
        c.arg("--root")
            .arg(&self.root)
            .arg("--self")
            .arg(&self.self_exe);
        c.env_remove("JOURNAL_STREAM");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PIIMG_FIRSTBOOT_") {
                c.env_remove(key);
            }
        }
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

    /// Runs the agent once with `extra` arguments.
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

    /// The card's status as the agent last wrote it.
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

/// Records every entry under `dir` (relative to `base`) into `out`.
/// The newest valid status report in a card's status slots, if any.
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
