//! Raspberry Pi OS vintages: the first user, its sudo rules and the wizard as each
//! release's pi-gen leaves them, laid over a [`Fixture`]'s root.

use crate::files::put;
use crate::fixture::Fixture;
use std::fs;

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
        fs::create_dir_all(self.path("/root")).unwrap();
        fs::create_dir_all(self.path("/run/sshd")).unwrap();
        // What shadow-utils' pwck/grpck expect of a whole root: shells and homes
        // that exist, every account and group in the shadow files.
        let files: [(&str, &str, u32); 5] = [
            ("/usr/sbin/nologin", "#!/bin/sh\nexit 1\n", 0o755),
            ("/bin/bash", "#!/bin/sh\n# stand-in for bash\n", 0o755),
            (
                "/etc/shadow",
                "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\npi:!:19000:0:99999:7:::\n",
                0o640,
            ),
            (
                "/etc/group",
                "root:x:0:\nadm:x:4:pi\nsudo:x:27:pi\nvideo:x:44:pi\nnogroup:x:65534:\npi:x:1000:\n",
                0o644,
            ),
            (
                "/etc/gshadow",
                "root:*::\nadm:*::pi\nsudo:*::pi\nvideo:*::pi\nnogroup:*::\npi:!::\n",
                0o640,
            ),
        ];
        for (path, text, mode) in files {
            put(&self.path(path), text, mode);
        }
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
