//! The `user` step on root trees laid out like each Raspberry Pi OS vintage: the
//! profile's admin can log in (login shell, keys, sudo without a password, password
//! locked) whether it is the image's first user kept, the first user renamed, or a
//! new user; the userconfig wizard is cancelled. passwd/shadow/group/gshadow are
//! checked with shadow-utils' own `pwck -r`/`grpck -r` (read-only, chrooted into the
//! tree), besides the exact lines.

use piimg_contract::*;
use piimg_firstboot::steps::sudoers;
use piimg_test_support::vintage::Vintage;
use piimg_test_support::*;
use std::fs;
use std::path::Path;
use std::process::Command;

/// The agent binary under test.
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");

fn cfg(admin: &str, boot: BootHook) -> NodeConfig {
    let mut c = node_config(Role::Server, true, boot);
    c.admin.user = admin.into();
    c
}

/// Runs phase 1 (which holds the user step) and checks it finished.
fn provision(f: &Fixture) {
    let out = f.run(&[]);
    assert!(out.status.success(), "agent failed: {}", stderr(&out));
    let user = f.status().steps.into_iter().find(|s| s.name == "user");
    assert!(
        user.as_ref().is_some_and(|s| s.result == StepResult::Ok),
        "user step not done: {user:?}"
    );
}

/// shadow-utils' consistency checks, read-only, on the tree (`-R` chroots into it).
fn shadow_utils_agree(root: &Path) {
    for tool in ["pwck", "grpck"] {
        let out = Command::new(tool)
            .arg("-r")
            .arg("-R")
            .arg(root)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e} (install the passwd package)"));
        assert!(
            out.status.success(),
            "{tool} -r finds problems in {}:\n{}{}",
            root.display(),
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
}

/// What every vintage must end with for a key-only admin `user` with uid 1000.
fn assert_admin_can_log_in(f: &Fixture, user: &str) {
    let p = f.passwd_entry(user);
    assert_eq!(p[2], "1000", "{user} keeps uid 1000: {p:?}");
    assert_eq!(p[5], format!("/home/{user}"));
    assert_eq!(p[6], "/bin/bash", "{user} needs a login shell: {p:?}");
    assert!(
        f.shadow_password(user).starts_with('!'),
        "password login is off: {user}'s password must be locked"
    );
    // The key, 0600 in 0700, owned by the user.
    let keys = format!("/home/{user}/.ssh/authorized_keys");
    assert_eq!(f.read(&keys), format!("{KEY}\n"));
    assert_eq!(f.mode(&keys), 0o600);
    assert_eq!(f.mode(&format!("/home/{user}/.ssh")), 0o700);
    assert_eq!(f.owner(&keys), (1000, 1000));
    // piimg's sudo rule, as sudo requires its files.
    assert_eq!(f.read(sudoers::DROP_IN), sudoers::rule(user));
    assert!(
        f.read(sudoers::DROP_IN)
            .lines()
            .any(|l| l == format!("{user} ALL=(ALL) NOPASSWD: ALL"))
    );
    assert_eq!(f.mode(sudoers::DROP_IN), 0o440);
    assert_eq!(f.owner(sudoers::DROP_IN), (0, 0));
    sudoers::check(sudoers::DROP_IN, &f.read(sudoers::DROP_IN)).unwrap();
    // In the sudo group too (the `%sudo` rule of /etc/sudoers).
    assert!(
        f.read("/etc/group").lines().any(|l| l.starts_with("sudo:")
            && l.rsplit(':').next().unwrap().split(',').any(|m| m == user)),
        "{user} not in group sudo:\n{}",
        f.read("/etc/group")
    );
    // The wizard is cancelled the way userconf-pi's cancel-rename does it.
    assert!(
        fs::symlink_metadata(
            f.path("/etc/systemd/system/multi-user.target.wants/userconfig.service")
        )
        .is_err(),
        "userconfig.service still enabled"
    );
    assert!(!f.path("/etc/ssh/sshd_config.d/rename_user.conf").exists());
    assert_eq!(
        fs::read_link(f.path("/etc/systemd/system/getty.target.wants/getty@tty1.service"))
            .unwrap()
            .to_str(),
        Some("/lib/systemd/system/getty@.service")
    );
    shadow_utils_agree(&f.root);
}

#[test]
fn trixie_2026_pi_kept_gets_a_shell_and_sudo() {
    // The case users hit: admin_user = "pi" on an image whose pi has nologin and no
    // sudo rule. cloud-init would skip the existing user; the agent must fix it.
    let f = Fixture::new(AGENT.as_ref(), &cfg("pi", cloud_init_hook()));
    f.lay_out_vintage(Vintage::Trixie2026);
    assert_eq!(f.passwd_entry("pi")[6], "/usr/sbin/nologin");
    provision(&f);
    assert_admin_can_log_in(&f, "pi");
    assert!(!f.path("/etc/sudoers.d/010_pi-nopasswd").exists());
    let msg = f
        .status()
        .steps
        .into_iter()
        .find(|s| s.name == "user")
        .unwrap()
        .message;
    assert!(
        msg.contains("user pi exists") && msg.contains("/usr/sbin/nologin -> /bin/bash"),
        "{msg}"
    );
}

#[test]
fn trixie_2026_first_user_renamed_gets_a_shell_and_sudo() {
    let f = Fixture::new(AGENT.as_ref(), &cfg("ops", cloud_init_hook()));
    f.lay_out_vintage(Vintage::Trixie2026);
    provision(&f);
    assert_admin_can_log_in(&f, "ops");
    assert!(!f.read("/etc/passwd").contains("pi:"));
    assert!(f.read("/etc/group").contains("ops:x:1000:\n"));
    assert!(f.read("/etc/gshadow").contains("sudo:*::ops\n"));
    assert!(f.path("/home/ops/.bashrc").exists() && !f.path("/home/pi").exists());
}

#[test]
fn trixie_2025_renamed_user_keeps_cloud_inits_rule_renamed() {
    // cloud-init's default user `pi` was handled before the agent ran: its rule in
    // 90-cloud-init-users follows the rename (as userconf does for 010_pi-nopasswd).
    let f = Fixture::new(AGENT.as_ref(), &cfg("ops", cloud_init_hook()));
    f.lay_out_vintage(Vintage::Trixie2025);
    provision(&f);
    assert_admin_can_log_in(&f, "ops");
    let ci = f.read("/etc/sudoers.d/90-cloud-init-users");
    assert!(
        ci.contains("\nops ALL=(ALL) NOPASSWD:ALL\n") && !ci.contains("\npi "),
        "{ci}"
    );
    assert_eq!(
        f.read("/etc/sudoers.d/010_pi-nopasswd"),
        "ops ALL=(ALL) NOPASSWD: ALL\n"
    );
}

#[test]
fn bookworm_renamed_user_can_log_in() {
    let f = Fixture::new(AGENT.as_ref(), &cfg("ops", bookworm_hook()));
    f.lay_out_vintage(Vintage::Bookworm);
    provision(&f);
    assert_admin_can_log_in(&f, "ops");
}

#[test]
fn a_new_admin_beside_the_first_user_can_log_in() {
    // No uid 1000 to rename: the admin is created with a shell, keys and sudo.
    let f = Fixture::new(AGENT.as_ref(), &cfg("ops", cloud_init_hook()));
    f.lay_out_vintage(Vintage::Trixie2026);
    fs::write(
        f.path("/etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\npi:x:1001:1000:,,,:/home/pi:/usr/sbin/nologin\n",
    )
    .unwrap();
    provision(&f);
    let p = f.passwd_entry("ops");
    assert_eq!(p[2], "1000");
    assert_eq!(p[6], "/bin/bash");
    assert_eq!(
        f.passwd_entry("pi")[6],
        "/usr/sbin/nologin",
        "pi is left alone"
    );
    assert_eq!(f.read(sudoers::DROP_IN), sudoers::rule("ops"));
    assert!(f.shadow_password("ops").starts_with('!'));
    assert_eq!(f.read("/home/ops/.ssh/authorized_keys"), format!("{KEY}\n"));
}

#[test]
fn an_existing_admin_without_a_shadow_line_gets_a_locked_one() {
    let f = Fixture::new(AGENT.as_ref(), &cfg("pi", cloud_init_hook()));
    f.lay_out_vintage(Vintage::Trixie2026);
    fs::write(
        f.path("/etc/shadow"),
        "root:*:19000:0:99999:7:::\nsshd:!:19000::::::\n",
    )
    .unwrap();
    provision(&f);
    assert_admin_can_log_in(&f, "pi");
}

#[test]
fn password_login_keeps_the_images_password() {
    let mut c = cfg("pi", cloud_init_hook());
    c.admin.password_login = true;
    c.files.retain(|r| !r.path.contains("sshd_config.d"));
    let f = Fixture::new(AGENT.as_ref(), &c);
    f.lay_out_vintage(Vintage::Trixie2026);
    let hash = "$y$j9T$abc$def";
    fs::write(
        f.path("/etc/shadow"),
        format!("root:*:19000:0:99999:7:::\npi:{hash}:19000:0:99999:7:::\n"),
    )
    .unwrap();
    provision(&f);
    assert_eq!(f.shadow_password("pi"), hash);
    assert_eq!(f.passwd_entry("pi")[6], "/bin/bash");
}

#[test]
fn a_second_run_changes_nothing() {
    for v in [Vintage::Bookworm, Vintage::Trixie2025, Vintage::Trixie2026] {
        let f = Fixture::new(AGENT.as_ref(), &cfg("ops", cloud_init_hook()));
        f.lay_out_vintage(v);
        provision(&f);
        let before = f.snapshot();
        // Forget the finished steps: the user step runs again on the provisioned tree.
        fs::remove_file(f.path(STATE_FILE)).unwrap();
        provision(&f);
        let after = f.snapshot();
        let changed: Vec<_> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .chain(after.keys().filter(|k| !before.contains_key(*k)).cloned())
            .filter(|k| !k.starts_with("/var/lib/piimg") && !k.starts_with("/usr/local/sbin"))
            .collect();
        assert!(changed.is_empty(), "{v:?}: a re-run changed {changed:?}");
    }
}

#[test]
fn sudoers_check_refuses_what_sudo_would_not_read_or_parse() {
    let ok = sudoers::rule("ops");
    assert!(sudoers::check(sudoers::DROP_IN, &ok).is_ok());
    for (path, text, why) in [
        ("/etc/sudoers.d/piimg.admin", ok.as_str(), "'.'"),
        ("/etc/sudoers.d/piimg-admin~", ok.as_str(), "'~'"),
        (sudoers::DROP_IN, "# only a comment\n", "no rule"),
        (sudoers::DROP_IN, "ops ALL=(ALL) ALL\n", "not a"),
        (
            sudoers::DROP_IN,
            "-x ALL=(ALL) NOPASSWD: ALL\n",
            "not a login",
        ),
        (
            sudoers::DROP_IN,
            "Root ALL=(ALL) NOPASSWD: ALL\n",
            "not a login",
        ),
    ] {
        let e = sudoers::check(path, text).unwrap_err();
        assert!(e.contains(why) && e.contains(path), "{path} {text:?}: {e}");
    }
}

#[test]
fn an_unusable_admin_name_is_refused_before_anything_is_written() {
    let f = Fixture::new(AGENT.as_ref(), &cfg("Bad Name", cloud_init_hook()));
    f.lay_out_vintage(Vintage::Trixie2026);
    let before = f.read("/etc/passwd");
    let out = f.run(&[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("admin.user"), "{}", stderr(&out));
    assert_eq!(f.read("/etc/passwd"), before);
    assert!(!f.path(sudoers::DROP_IN).exists());
}

#[test]
fn the_profiles_password_hash_becomes_the_admins_password() {
    // Console login with the profile's password: its hash in /etc/shadow, taken
    // from the card's secrets (never node.json); SSH password login stays off.
    const HASH: &str = "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$GmcwIgvdUC9qLWcKCi6gklUa1dM3ziD43YxYNURLKy0";
    let f = Fixture::new(AGENT.as_ref(), &cfg("ops", bookworm_hook()));
    f.lay_out_vintage(Vintage::Bookworm);
    let mut secrets = card_secrets();
    secrets.password_hash = Some(HASH.into());
    fs::write(f.boot.join(SECRETS_FILE), secrets.to_json()).unwrap();
    provision(&f);
    assert_eq!(f.shadow_password("ops"), HASH);
    assert!(
        f.read(piimg_firstboot::steps::ssh::SSHD_DROP_IN)
            .contains("PasswordAuthentication no"),
        "SSH password login follows password_login"
    );
    shadow_utils_agree(&f.root);
    // A rerun keeps it (idempotent).
    provision(&f);
    assert_eq!(f.shadow_password("ops"), HASH);
}
