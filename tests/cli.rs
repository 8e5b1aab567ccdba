//! The `piimg` binary as users run it: global flags and error reporting.

use std::process::Command;

fn piimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_piimg"))
}

#[test]
fn version_names_the_tool() {
    let out = piimg().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim(), format!("piimg {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_subcommand_fails_with_usage() {
    let out = piimg().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("unrecognized subcommand 'frobnicate'"),
        "{err}"
    );
}
