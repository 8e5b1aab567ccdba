//! Builds the first-boot agent (a static aarch64 musl binary) and hands it to the
//! builder to embed, so `cargo build` alone yields a `piimg` that can write complete
//! cards. Set `PIIMG_AGENT_BIN=/path/to/piimg-firstboot` to embed a prebuilt agent.
//!
//! On a fresh machine the aarch64 musl standard library may be missing: when rustup
//! manages the toolchain, the build adds the target itself (`rustup target add`), so a
//! plain `cargo build` on a fresh clone needs no manual step.

use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const AGENT_TARGET: &str = "aarch64-unknown-linux-musl";

fn main() {
    println!("cargo:rerun-if-changed=../firstboot/src");
    println!("cargo:rerun-if-changed=../firstboot/Cargo.toml");
    println!("cargo:rerun-if-changed=../contract/src");
    println!("cargo:rerun-if-changed=../contract/Cargo.toml");
    println!("cargo:rerun-if-changed=../Cargo.lock");
    println!("cargo:rerun-if-env-changed=PIIMG_AGENT_BIN");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("piimg-firstboot");

    if let Some(prebuilt) = env::var_os("PIIMG_AGENT_BIN") {
        let prebuilt = PathBuf::from(prebuilt);
        println!("cargo:rerun-if-changed={}", prebuilt.display());
        if let Err(e) = std::fs::copy(&prebuilt, &dest) {
            panic!("PIIMG_AGENT_BIN={}: {e}", prebuilt.display());
        }
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let workspace = manifest_dir
        .parent()
        .expect("builder/ sits in the workspace")
        .to_path_buf();
    // A target dir of its own: the outer cargo holds the lock on the main one.
    let target_dir = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("agent");

    ensure_target_installed();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--package",
            "piimg-firstboot",
            "--bin",
            "piimg-firstboot",
        ])
        .args(["--profile", "agent", "--target", AGENT_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld")
        .stdout(Stdio::null());
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    if !status.success() {
        panic!(
            "building the first-boot agent for {AGENT_TARGET} failed (see above). \
             Is the target installed? `rustup target add {AGENT_TARGET}`; \
             or point PIIMG_AGENT_BIN at a prebuilt piimg-firstboot."
        );
    }
    let built = target_dir
        .join(AGENT_TARGET)
        .join("agent")
        .join("piimg-firstboot");
    if let Err(e) = std::fs::copy(&built, &dest) {
        panic!("copying {} to {}: {e}", built.display(), dest.display());
    }
}

/// Adds the agent's Rust target through rustup when the toolchain lacks it.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = sysroot
        .as_ref()
        .is_some_and(|root| root.join("lib/rustlib").join(AGENT_TARGET).is_dir());
    if installed {
        return;
    }
    println!(
        "cargo:warning=adding Rust target {AGENT_TARGET} for the on-card agent (rustup target add)"
    );
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", AGENT_TARGET]);
    // Ask for the toolchain cargo is running, not rustup's default.
    if let Some(tc) = env::var_os("RUSTUP_TOOLCHAIN") {
        rustup.arg("--toolchain").arg(tc);
    }
    match rustup.stdout(Stdio::null()).status() {
        Ok(s) if s.success() => {}
        // The cargo build below fails with the full hint; nothing more to say here.
        _ => println!(
            "cargo:warning=could not add {AGENT_TARGET} with rustup; install it by hand or set PIIMG_AGENT_BIN"
        ),
    }
}
