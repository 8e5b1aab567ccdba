//! The shipped build (static aarch64 musl, `--profile agent`) runs under qemu-user
//! (binfmt) against a temp root: `--dry-run`, then a real phase 1.

use piimg_contract::Role;
use piimg_test_support::*;
use std::path::PathBuf;
use std::process::Command;

/// The agent binary under test.
const AGENT: &str = env!("CARGO_BIN_EXE_piimg-firstboot");

fn agent_binary() -> PathBuf {
    let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = ws.join("target/agent");
    let out = Command::new(env!("CARGO"))
        .current_dir(&ws)
        .args([
            "build",
            "--package",
            "piimg-firstboot",
            "--bin",
            "piimg-firstboot",
            "--profile",
            "agent",
            "--target",
            "aarch64-unknown-linux-musl",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join("aarch64-unknown-linux-musl/agent/piimg-firstboot")
}

#[test]
fn aarch64_musl_build_runs_under_qemu_user() {
    let bin = agent_binary();
    let size = std::fs::metadata(&bin).unwrap().len();
    assert!(size <= 3 * 1024 * 1024, "agent is {size} bytes, over 3 MiB");
    let file = Command::new("file")
        .arg(&bin)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !file.is_empty() {
        assert!(
            file.contains("ARM aarch64") && file.contains("statically linked"),
            "{file}"
        );
    }
    let f = Fixture::new(
        AGENT.as_ref(),
        &node_config(Role::Server, true, bookworm_hook()),
    );
    let before = f.snapshot();
    let run = |extra: &[&str]| {
        Command::new(&bin)
            .arg("--root")
            .arg(&f.root)
            .args(extra)
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap()
    };
    let out = run(&["--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("would write card cmdline.txt"));
    assert_eq!(f.snapshot(), before);
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(f.read("/etc/hostname"), "pi5-master-1\n");
    // It installed itself: the aarch64 binary, byte for byte.
    assert_eq!(
        std::fs::read(f.path("/usr/local/sbin/piimg-firstboot")).unwrap(),
        std::fs::read(&bin).unwrap()
    );
    assert_eq!(f.status().step, "handoff");
}
