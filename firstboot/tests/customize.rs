//! The day-one customisation steps (`locale`, `user-files`, `packages`, `run-once`)
//! run by the agent binary against a temp root: what they write, how they fail, and
//! that the next run resumes where they stopped. apt-get is a STAND-IN on PATH.

use piimg_contract::customize::{Customize, FileOwner, Locale, RunOnce};
use piimg_contract::*;
use piimg_test_support::files::put;
use piimg_test_support::*;
use std::fs;
use std::path::Path;

/// The agent binary under test.
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");

fn fixture(customize: Customize) -> Fixture {
    let mut cfg = node_config(Role::Server, true, bookworm_hook());
    cfg.customize = customize;
    Fixture::new(AGENT.as_ref(), &cfg)
}

fn step(f: &Fixture, name: &str) -> StepRecord {
    f.status()
        .steps
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status record {name}: {:?}", f.status()))
}

/// A Raspberry Pi OS-like locale setup: tzdata, glibc's SUPPORTED list, the
/// commented locale.gen, Bookworm's /etc/timezone, a keyboard file and a cached keymap.
fn lay_out_locale_files(f: &Fixture) {
    put(
        &f.path("/usr/share/zoneinfo/Europe/Berlin"),
        "TZif2 stand-in",
        0o644,
    );
    put(
        &f.path("/usr/share/zoneinfo/Etc/UTC"),
        "TZif2 stand-in",
        0o644,
    );
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", f.path("/etc/localtime")).unwrap();
    put(&f.path("/etc/timezone"), "Etc/UTC\n", 0o644);
    put(
        &f.path("/usr/share/i18n/SUPPORTED"),
        "de_DE.UTF-8 UTF-8\nde_DE ISO-8859-1\nen_GB.UTF-8 UTF-8\n",
        0o644,
    );
    put(
        &f.path("/etc/locale.gen"),
        "# This file lists locales\n# de_DE.UTF-8 UTF-8\n# en_GB.UTF-8 UTF-8\n",
        0o644,
    );
    put(&f.path("/etc/default/locale"), "LANG=en_GB.UTF-8\n", 0o644);
    put(
        &f.path("/etc/default/keyboard"),
        "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"gb\"\nXKBVARIANT=\"extd\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n",
        0o644,
    );
    put(
        &f.path("/etc/console-setup/cached_UTF-8_del.kmap.gz"),
        "old",
        0o644,
    );
}

fn berlin() -> Customize {
    Customize {
        locale: Some(Locale {
            timezone: Some("Europe/Berlin".into()),
            locale: Some("de_DE.UTF-8".into()),
            keyboard: Some("de".into()),
        }),
        ..Customize::default()
    }
}

#[test]
fn locale_sets_time_zone_locale_and_keyboard_like_raspi_config() {
    let f = fixture(berlin());
    lay_out_locale_files(&f);
    let out = f.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_link(f.path("/etc/localtime")).unwrap().to_str(),
        Some("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(f.read("/etc/timezone"), "Europe/Berlin\n");
    assert_eq!(
        f.read("/etc/locale.gen"),
        "# This file lists locales\nde_DE.UTF-8 UTF-8\n# en_GB.UTF-8 UTF-8\n"
    );
    assert_eq!(f.read("/etc/default/locale"), "LANG=de_DE.UTF-8\n");
    assert_eq!(
        f.read("/etc/default/keyboard"),
        "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"de\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"\"\n\nBACKSPACE=\"guess\"\n"
    );
    assert!(
        !f.path("/etc/console-setup/cached_UTF-8_del.kmap.gz")
            .exists()
    );
    let rec = step(&f, "locale");
    assert_eq!(rec.result, StepResult::Ok);
    assert!(
        rec.message.contains("time zone Europe/Berlin"),
        "{}",
        rec.message
    );
    // No locale-gen in this root: said so, not an error.
    assert!(rec.message.contains("not generated"), "{}", rec.message);
}

#[test]
fn a_trixie_root_without_etc_timezone_and_keyboard_gets_the_link_and_pi_gens_file() {
    let f = fixture(berlin());
    lay_out_locale_files(&f);
    fs::remove_file(f.path("/etc/timezone")).unwrap();
    fs::remove_file(f.path("/etc/default/keyboard")).unwrap();
    assert!(f.run(&[]).status.success());
    assert!(!f.path("/etc/timezone").exists());
    assert_eq!(
        fs::read_link(f.path("/etc/localtime")).unwrap().to_str(),
        Some("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert!(
        f.read("/etc/default/keyboard")
            .contains("XKBLAYOUT=\"de\"\n")
    );
}

#[test]
fn a_time_zone_the_node_lacks_fails_the_step_and_the_next_run_resumes() {
    let mut c = berlin();
    if let Some(l) = c.locale.as_mut() {
        l.timezone = Some("America/Nuuk".into());
    }
    let f = fixture(c);
    lay_out_locale_files(&f);
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .contains("timezone America/Nuuk: /usr/share/zoneinfo/America/Nuuk does not exist"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        (f.status().step.as_str(), f.status().result),
        ("locale", StepResult::Error)
    );
    assert_eq!(f.read("/etc/hostname"), "pi5-master-1\n");
    put(&f.path("/usr/share/zoneinfo/America/Nuuk"), "TZif2", 0o644);
    let out = f.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(step(&f, "locale").result, StepResult::Ok);
    assert_eq!(f.read("/etc/timezone"), "America/Nuuk\n");
}

fn file(path: &str, mode: u32, content: &str, owner: Option<(&str, Option<&str>)>) -> RootFile {
    RootFile {
        path: path.into(),
        mode,
        content: content.into(),
        owner: owner.map(|(u, g)| FileOwner {
            user: u.into(),
            group: g.map(String::from),
        }),
    }
}

#[test]
fn user_files_land_with_mode_and_the_admin_as_owner_after_the_rename() {
    let f = fixture(Customize {
        files: vec![
            file("/etc/motd", 0o644, "welcome\n", None),
            file(
                "/home/admin/notes/todo.txt",
                0o640,
                "milk\n",
                Some(("admin", None)),
            ),
            file(
                "/etc/admin-group.conf",
                0o660,
                "x\n",
                Some(("root", Some("sudo"))),
            ),
        ],
        ..Customize::default()
    });
    let out = f.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(f.read("/etc/motd"), "welcome\n");
    assert_eq!((f.mode("/etc/motd"), f.owner("/etc/motd")), (0o644, (0, 0)));
    // `pi` (uid 1000) became `admin` in the user step, before this one.
    assert_eq!(f.read("/home/admin/notes/todo.txt"), "milk\n");
    assert_eq!(f.mode("/home/admin/notes/todo.txt"), 0o640);
    assert_eq!(f.owner("/home/admin/notes/todo.txt"), (1000, 1000));
    assert_eq!(f.owner("/etc/admin-group.conf"), (0, 27));
    assert_eq!(f.mode("/etc/admin-group.conf"), 0o660);
    let rec = step(&f, "user-files");
    assert!(
        rec.message.starts_with("3 file(s), 3 written"),
        "{}",
        rec.message
    );
}

#[test]
fn an_unknown_owner_fails_naming_file_and_owner() {
    let f = fixture(Customize {
        files: vec![file(
            "/etc/app.conf",
            0o600,
            "k=v\n",
            Some(("grafana", None)),
        )],
        ..Customize::default()
    });
    let out = f.run(&[]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains(
            "customize.files[0] (/etc/app.conf): owner \"grafana\" is not a user of this node"
        ),
        "{e}"
    );
    assert_eq!(f.status().step, "user-files");
    assert!(!f.path("/etc/app.conf").exists());
}

/// A STAND-IN apt-get in `dir`: logs each call with DEBIAN_FRONTEND to `log`, and
/// answers `update` from `mode_file` (`offline`: the fetch failure apt prints
/// without a network, exit 0 as apt-get update does; anything else: success).
fn fake_apt(dir: &Path, log: &Path, mode_file: &Path) {
    put(
        &dir.join("apt-get"),
        &format!(
            r#"#!/bin/sh
echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> {log}
if [ "$(cat {mode} 2>/dev/null)" = offline ]; then
  case " $* " in
    *" update "*)
      echo "Err:1 http://deb.debian.org/debian bookworm InRelease"
      echo "  Temporary failure resolving 'deb.debian.org'"
      echo "W: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'" >&2
      echo "W: Some index files failed to download. They have been ignored, or old ones used instead." >&2
      exit 0 ;;
  esac
fi
case " $* " in
  *" nosuchpkg "*) echo "E: Unable to locate package nosuchpkg" >&2; exit 100 ;;
  *" install "*)
    if [ "$(cat {mode} 2>/dev/null)" = interrupted ]; then
      echo "E: dpkg was interrupted, you must manually run 'dpkg --configure -a' to correct the problem." >&2
      exit 100
    fi ;;
esac
exit 0
"#,
            log = log.display(),
            mode = mode_file.display()
        ),
        0o755,
    );
    put(
        &dir.join("dpkg"),
        &format!(
            "#!/bin/sh\necho \"dpkg $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND\" >> {log}\necho online > {mode}\n",
            log = log.display(),
            mode = mode_file.display()
        ),
        0o755,
    );
}

fn with_fake_apt(f: &Fixture, mode: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = f.dir.path().join("fakebin");
    let log = f.dir.path().join("apt.log");
    let mode_file = f.dir.path().join("apt.mode");
    fs::write(&mode_file, mode).unwrap();
    fake_apt(&bin, &log, &mode_file);
    (bin, log)
}

fn run_with_apt(f: &Fixture, bin: &Path) -> std::process::Output {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    f.cmd()
        .env("PATH", path)
        .args(["--apt-get", "apt-get", "--packages-timeout", "1"])
        .output()
        .unwrap()
}

#[test]
fn packages_are_installed_noninteractively_before_k3s() {
    let f = fixture(Customize {
        packages: vec!["open-iscsi".into(), "nfs-common".into()],
        ..Customize::default()
    });
    let (bin, log) = with_fake_apt(&f, "online");
    assert!(run_with_apt(&f, &bin).status.success());
    let out = run_with_apt(&f, &bin);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "{calls}");
    assert!(
        lines[0].ends_with(" update DEBIAN_FRONTEND=noninteractive"),
        "{calls}"
    );
    assert!(
        lines[1].contains("-y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install -- open-iscsi nfs-common DEBIAN_FRONTEND=noninteractive"),
        "{calls}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("-o DPkg::Lock::Timeout=120"))
    );
    let st = f.status();
    let names: Vec<&str> = st.steps.iter().map(|s| s.name.as_str()).collect();
    let at = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(at("packages") < at("k3s-install"), "{names:?}");
    assert!(
        step(&f, "packages")
            .message
            .starts_with("installed open-iscsi nfs-common")
    );
}

#[test]
fn offline_apt_fails_the_step_naming_the_mirror_and_the_next_run_installs() {
    let f = fixture(Customize {
        packages: vec!["vim".into()],
        ..Customize::default()
    });
    let (bin, log) = with_fake_apt(&f, "offline");
    assert!(run_with_apt(&f, &bin).status.success());
    let t = std::time::Instant::now();
    let out = run_with_apt(&f, &bin);
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "bounded");
    assert_eq!(out.status.code(), Some(1));
    let st = f.status();
    assert_eq!(
        (st.step.as_str(), st.result),
        ("packages", StepResult::Error)
    );
    assert!(
        st.message.starts_with("packages: apt could not reach http://deb.debian.org: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease"),
        "{}",
        st.message
    );
    assert!(
        st.message.ends_with("will retry on the next run"),
        "{}",
        st.message
    );
    assert!(!fs::read_to_string(&log).unwrap().contains(" install "));
    assert!(!f.path("/etc/rancher/k3s/config.yaml").exists());
    // The network is back: the next run resumes at `packages` and completes.
    fs::write(f.dir.path().join("apt.mode"), "online").unwrap();
    let out = run_with_apt(&f, &bin);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.status().complete);
    assert!(fs::read_to_string(&log).unwrap().contains("install -- vim"));
}

#[test]
fn a_package_apt_does_not_know_fails_at_once() {
    let f = fixture(Customize {
        packages: vec!["nosuchpkg".into()],
        ..Customize::default()
    });
    let (bin, _) = with_fake_apt(&f, "online");
    assert!(run_with_apt(&f, &bin).status.success());
    let out = run_with_apt(&f, &bin);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        f.status()
            .message
            .contains("exited with 100: E: Unable to locate package nosuchpkg"),
        "{}",
        f.status().message
    );
}

#[test]
fn run_once_scripts_run_in_order_once_each_and_a_failure_resumes_at_that_script() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let gate = dir.path().join("gate");
    let f = fixture(Customize {
        run_once: vec![
            RunOnce {
                name: "first".into(),
                script: format!("echo first >> {}\necho hello from first\n", trace.display()),
                timeout_secs: None,
            },
            RunOnce {
                name: "second".into(),
                script: format!(
                    "#!/bin/sh\necho second >> {t}\nif [ ! -e {g} ]; then echo 'gate closed' >&2; exit 3; fi\necho done\n",
                    t = trace.display(),
                    g = gate.display()
                ),
                timeout_secs: None,
            },
        ],
        ..Customize::default()
    });
    assert!(f.run(&[]).status.success());
    // Under --root, scripts run only when asked.
    let out = f.run(&["--phase", "2", "--dry-run"]);
    assert!(out.status.success());
    assert!(!trace.exists());
    let out = f.run(&["--run-scripts"]);
    assert_eq!(out.status.code(), Some(1));
    let st = f.status();
    assert_eq!(
        (st.step.as_str(), st.result),
        ("run-once", StepResult::Error)
    );
    assert_eq!(
        st.message,
        "run-once script second exited with 3: gate closed; it runs again on the next run"
    );
    let first = step(&f, "run-once:first");
    assert_eq!(
        (first.result, first.message.as_str()),
        (StepResult::Ok, "exit 0: hello from first")
    );
    assert_eq!(step(&f, "run-once:second").result, StepResult::Error);
    assert_eq!(fs::read_to_string(&trace).unwrap(), "first\nsecond\n");
    assert_eq!(f.mode("/var/lib/piimg/run-once/second"), 0o700);
    // Fixed: the next run resumes at `second`; `first` does not run again.
    fs::write(&gate, "").unwrap();
    let out = f.run(&["--run-scripts"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(f.status().complete);
    assert_eq!(
        fs::read_to_string(&trace).unwrap(),
        "first\nsecond\nsecond\n"
    );
    assert_eq!(step(&f, "run-once:second").message, "exit 0: done");
    assert!(
        step(&f, "run-once")
            .message
            .starts_with("1 script(s) ran (second), 1 had run before")
    );
    let state = f.read("/var/lib/piimg/state.json");
    assert!(
        state.contains("\"run_once_done\": [\n    \"first\",\n    \"second\"\n  ]"),
        "{state}"
    );
    // Complete: another run changes nothing and runs nothing.
    assert!(f.run(&["--run-scripts"]).status.success());
    assert_eq!(
        fs::read_to_string(&trace).unwrap(),
        "first\nsecond\nsecond\n"
    );
}

/// True when process `pid` no longer runs (gone, or a zombie nobody reaped yet).
fn gone(pid: &str) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_script_that_hangs_is_killed_with_its_children_at_its_timeout_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("child.pid");
    let gate = dir.path().join("network-up");
    let trace = dir.path().join("trace");
    let f = fixture(Customize {
        run_once: vec![
            RunOnce {
                name: "wait-for-net".into(),
                // Waits for a network that never comes, with a child doing the same.
                script: format!(
                    "echo try >> {t}\nif [ -e {g} ]; then echo up; exit 0; fi\n\
                     sleep 300 & echo $! > {c}\necho waiting for the network\nwait\n",
                    t = trace.display(),
                    g = gate.display(),
                    c = child.display()
                ),
                timeout_secs: Some(1),
            },
            RunOnce {
                name: "after".into(),
                script: format!("echo after >> {}\n", trace.display()),
                timeout_secs: None,
            },
        ],
        ..Customize::default()
    });
    assert!(f.run(&[]).status.success());
    let start = std::time::Instant::now();
    let out = f.run(&["--run-scripts"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
    let st = f.status();
    assert_eq!(
        (st.step.as_str(), st.result),
        ("run-once", StepResult::Error)
    );
    assert_eq!(
        st.message,
        "run-once script wait-for-net did not finish within 1 s (killed with its child processes); it runs again on the next run"
    );
    let rec = step(&f, "run-once:wait-for-net");
    assert_eq!(
        (rec.result, rec.message.as_str()),
        (
            StepResult::Error,
            "killed after 1 s: waiting for the network"
        )
    );
    let pid = fs::read_to_string(&child).unwrap();
    assert!(
        gone(pid.trim()),
        "the script's child {} survived",
        pid.trim()
    );
    assert_eq!(fs::read_to_string(&trace).unwrap(), "try\n");
    let state: serde_json::Value =
        serde_json::from_str(&f.read("/var/lib/piimg/state.json")).unwrap();
    assert_eq!(state["run_once_done"], serde_json::json!([]), "{state}");
    // The network is up: the next run runs the script again, then the next one.
    fs::write(&gate, "").unwrap();
    let out = f.run(&["--run-scripts"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&trace).unwrap(), "try\ntry\nafter\n");
    assert_eq!(step(&f, "run-once:wait-for-net").message, "exit 0: up");
}

#[test]
fn a_script_that_completed_before_a_crash_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let f = fixture(Customize {
        run_once: vec![RunOnce {
            name: "count".into(),
            script: format!("echo ran >> {}\n", trace.display()),
            timeout_secs: None,
        }],
        ..Customize::default()
    });
    assert!(f.run(&[]).status.success());
    // The power goes out after the step's work, before the run loop saved the state.
    let out = f
        .cmd()
        .arg("--run-scripts")
        .env("PIIMG_FIRSTBOOT_CRASH", "run-once:unsaved")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(137));
    let out = f.run(&["--run-scripts"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&trace).unwrap(), "ran\n");
}

#[test]
fn an_install_a_power_cut_interrupted_is_finished_with_dpkg_configure_first() {
    let f = fixture(Customize {
        packages: vec!["vim".into()],
        ..Customize::default()
    });
    let (bin, log) = with_fake_apt(&f, "interrupted");
    assert!(run_with_apt(&f, &bin).status.success());
    let out = run_with_apt(&f, &bin);
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = fs::read_to_string(&log).unwrap();
    let kinds: Vec<&str> = calls
        .lines()
        .map(|l| {
            if l.starts_with("dpkg --configure -a DEBIAN_FRONTEND=noninteractive") {
                "dpkg"
            } else if l.contains(" update ") {
                "update"
            } else {
                "install"
            }
        })
        .collect();
    assert_eq!(
        kinds,
        ["update", "install", "dpkg", "update", "install"],
        "{calls}"
    );
    assert!(step(&f, "packages").message.contains("attempt 2"));
}
