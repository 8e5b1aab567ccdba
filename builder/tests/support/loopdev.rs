//! Scratch loop devices for the flash tests: made over test files, detached on drop.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `cmd args`, failing the test (naming the command) unless it succeeds;
/// returns its trimmed stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("{cmd} must be installed (scripts/setup): {e}");
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether loop devices can be made here. Without losetup this fails the test
/// (skipping silently would let CI pass without the loop-device tests) unless
/// PIIMG_SKIP_LOOP_TESTS is set.
pub fn loop_available() -> bool {
    let ok = Command::new("losetup")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("PIIMG_SKIP_LOOP_TESTS").is_some(),
            "losetup is not installed: run scripts/setup (util-linux), or set \
             PIIMG_SKIP_LOOP_TESTS=1 to skip the loop-device flash tests knowingly"
        );
        eprintln!("SKIPPED (PIIMG_SKIP_LOOP_TESTS): loop-device flash tests");
    }
    ok
}

/// A loop device over a backing file, detached on drop.
pub struct Loop {
    /// `/dev/loopN`.
    pub dev: PathBuf,
}

impl Loop {
    /// A loop device over `backing`.
    pub fn new(backing: &Path) -> Loop {
        Self::with(backing, &[])
    }

    /// A loop device over `backing`, with extra `losetup` options (e.g. `--read-only`).
    pub fn with(backing: &Path, extra: &[&str]) -> Loop {
        let mut args = vec!["-f", "--show"];
        args.extend_from_slice(extra);
        args.push(backing.to_str().expect("test paths are UTF-8"));
        Loop {
            dev: PathBuf::from(run("losetup", &args)),
        }
    }

    /// Its device number (major, minor).
    pub fn devno(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let rdev = fs::metadata(&self.dev).expect("loop device").rdev();
        (libc::major(rdev), libc::minor(rdev))
    }

    /// `loopN`.
    pub fn name(&self) -> String {
        self.dev
            .file_name()
            .expect("a device path")
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}
